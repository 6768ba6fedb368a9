"""KPI routes: OEE, the six big losses and ISO 22400-2 KPIs of an asset."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request

from shopfloor.analytics import ISO22400_KPIS, LOSSES, OEE_KPIS, iso22400, losses, oee
from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._deps import (
    Ctx,
    Cursor,
    Limit,
    Range,
    check_path,
    decode_cursor,
    encode_cursor,
    next_link,
    page_limit,
    require,
)
from shopfloor.api._problems import ProblemError, problem_responses
from shopfloor.api._schemas import KpiDefinition, KpiTable

__all__ = ["router"]

router = APIRouter(tags=["kpi"], responses=problem_responses(401, 403, 404, 422))

Reader = Annotated[TokenInfo, Depends(require(Scope.read))]
KpiName = Literal["oee", "losses", "iso22400"]

_DEFINITIONS: dict[str, list[KpiDefinition]] = {
    "oee": [KpiDefinition(name=k.name, formula=k.formula, unit=k.unit) for k in OEE_KPIS],
    "iso22400": [KpiDefinition(name=k.name, formula=k.formula, unit=k.unit) for k in ISO22400_KPIS],
    "losses": [
        KpiDefinition(name=loss.name, formula=f"{loss.category}: {loss.rule}", unit="s")
        for loss in LOSSES
    ],
}


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for k, v in row.items()
    }


@router.get("/kpi/{kpi}", response_model=KpiTable, summary="OEE, losses or ISO 22400 KPIs")
async def kpi_table(
    kpi: KpiName,
    request: Request,
    ctx: Ctx,
    token: Reader,
    rng: Range,
    asset: Annotated[
        str, Query(description="Equipment, cell, line, area or site path.", min_length=1)
    ],
    by: Annotated[
        Literal["shift", "hour", "day"] | None,
        Query(description="One row per shift, hour or day (site-local clock)."),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> KpiTable:
    """KPI rows of an asset over ``[start, end)`` (end clipped to the factory's now), per window.

    ``oee``: availability, performance, quality, OEE (ISO 22400-2) with their time base;
    ``losses``: the six big losses in seconds and as a share of planned busy time;
    ``iso22400``: MTBF, MTTR, utilisation efficiency, throughput, scrap ratio, NEE.
    A line's output is its last producing station's, its rate its bottleneck's.
    """
    asset = asset.strip("/")
    check_path(token, asset)
    try:
        ctx.factory.asset(asset)
    except KeyError:
        raise ProblemError("not-found", f"no asset {asset!r}") from None
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    end = min(rng.end, ctx.now())
    if end <= rng.start:
        raise ProblemError("invalid-request", "the range lies in the future: nothing to compute")
    fn = {"oee": oee, "losses": losses, "iso22400": iso22400}[kpi]
    try:
        table: pa.Table = await fn(ctx.historian, ctx.factory, asset, rng.start, end, by)
    except ValueError as exc:
        raise ProblemError("not-supported", str(exc)) from None
    pos = decode_cursor(cursor, ("offset",))
    offset = int(pos["offset"]) if pos else 0
    rows = [_json_row(r) for r in table.slice(offset, n).to_pylist()]
    nxt = encode_cursor({"offset": offset + n}) if offset + n < table.num_rows else None
    return KpiTable(
        asset=asset,
        kpi=kpi,
        start=rng.start,
        end=end,
        by=by,
        definitions=_DEFINITIONS[kpi],
        rows=rows,
        next_cursor=nxt,
        next=next_link(request, nxt),
    )

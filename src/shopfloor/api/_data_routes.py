"""Routes of the measured data: history (raw and downsampled) and latest values.

Histories are answered as columns (``ts``, ``quality``, ``value`` or the bucket aggregates)
built from the historian's Arrow tables with compute kernels and serialised straight to
JSON, without a pydantic object per sample.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._catalog import signal_catalog, subtree_mask
from shopfloor.api._deps import (
    ApiContext,
    Ctx,
    Cursor,
    Limit,
    Range,
    bucket_width,
    check_path,
    decode_cursor,
    encode_cursor,
    next_link,
    page_limit,
    require,
)
from shopfloor.api._problems import ProblemError, problem_responses
from shopfloor.api._schemas import BucketHistory, LatestOut, Page, RawHistory
from shopfloor.edge.batch import TS_TYPE
from shopfloor.errors import UnknownSignalError

__all__ = ["SignalMeta", "iso_column", "json_values", "router", "signal_meta"]

router = APIRouter(tags=["data"], responses=problem_responses(401, 403, 404, 422))

Reader = Annotated[TokenInfo, Depends(require(Scope.read))]

NUMERIC: Final = frozenset({"float", "int", "bool"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_VALUE_COLUMNS: Final = ("v_float", "v_int", "v_bool", "v_str")


def _us(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def iso_column(column: pa.Array | pa.ChunkedArray) -> list[str | None]:
    """Timestamps as RFC 3339 strings (UTC, microseconds), computed by Arrow."""
    return pc.strftime(column.cast(TS_TYPE), format="%Y-%m-%dT%H:%M:%SZ").to_pylist()  # type: ignore[no-any-return]


def json_values(column: pa.Array | pa.ChunkedArray, data_type: str) -> list[Any]:
    """Values as JSON-ready Python values: non-finite floats null, ``json`` signals parsed."""
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
    values: list[Any] = column.to_pylist()
    if data_type == "json":
        return [None if v is None else _parse_json(v) for v in values]
    return values


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class SignalMeta:
    """What a history needs of a signal: its type, unit and whether the historian has it."""

    __slots__ = ("data_type", "path", "stored", "unit")

    def __init__(self, path: str, data_type: str, unit: str | None, stored: bool) -> None:
        self.path = path
        self.data_type = data_type
        self.unit = unit
        self.stored = stored


async def signal_meta(ctx: ApiContext, path: str) -> SignalMeta:
    """The signal ``path`` (404 when neither the model nor the historian knows it)."""
    stored = await ctx.historian.signals()
    rows = stored.filter(pc.equal(stored.column("path"), path)).to_pylist()
    if rows:
        return SignalMeta(path, str(rows[0]["data_type"]), rows[0]["unit"], True)
    try:
        s = ctx.factory.signal(path)
    except KeyError:
        raise ProblemError("not-found", f"no signal {path!r}") from None
    return SignalMeta(path, s.data_type, s.unit, False)


def _dumps(body: dict[str, Any]) -> Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Response(content=text, media_type="application/json")


@router.get(
    "/history/{signal:path}",
    response_model=RawHistory | BucketHistory,
    summary="History of a signal, raw or downsampled",
)
async def history(
    signal: str,
    request: Request,
    ctx: Ctx,
    token: Reader,
    rng: Range,
    bucket: Annotated[
        str | None,
        Query(
            description="Downsample into epoch-aligned buckets of this width (any width: "
            "500ms, 10s, 15m, 1h, 1d, PT15M); raw samples when absent."
        ),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    """Raw samples (``ts, quality, value``) or buckets (``first, last, min, max, avg, count``).

    Raw pages hold up to ``limit`` samples; downsampled pages span up to ``limit`` buckets
    (only non-empty buckets are listed). Numeric signals only for buckets.
    """
    signal = signal.strip("/")
    check_path(token, signal, "signal")
    n = page_limit(limit, ctx.limits.samples_default, ctx.limits.samples_max)
    width = bucket_width(bucket)
    meta = await signal_meta(ctx, signal)
    head: dict[str, Any] = {
        "signal": signal,
        "data_type": meta.data_type,
        "unit": meta.unit,
        "start": rng.start.isoformat(),
        "end": rng.end.isoformat(),
    }
    if width is None:
        body, nxt = await _raw_page(ctx, meta, rng.start, rng.end, n, cursor)
    else:
        body, nxt = await _bucket_page(ctx, meta, rng.start, rng.end, width, n, cursor)
    return _dumps({**head, **body, "next_cursor": nxt, "next": next_link(request, nxt)})


async def _raw_page(
    ctx: ApiContext, meta: SignalMeta, start: datetime, end: datetime, n: int, cursor: str | None
) -> tuple[dict[str, Any], str | None]:
    pos = decode_cursor(cursor, ("ts", "skip"))
    s, skip = (start, 0) if pos is None else (_from_us(int(pos["ts"])), int(pos["skip"]))
    if not meta.stored:
        return {"ts": [], "quality": [], "value": []}, None
    full = await ctx.historian.read_raw(meta.path, s, end, limit=n + 1 + skip)
    page = full.slice(skip, n)
    nxt = None
    if full.num_rows > skip + n:
        ts_us = full.column("ts").cast(pa.int64())
        resume = ts_us[skip + n].as_py()
        # Samples may share a timestamp: count those this page (and earlier ones) returned.
        done = int(pc.sum(pc.equal(ts_us.slice(0, skip + n), resume)).as_py() or 0)
        nxt = encode_cursor({"ts": resume, "skip": done})
    body = {
        "ts": iso_column(page.column("ts")),
        "quality": page.column("quality").to_pylist(),
        "value": json_values(page.column("value"), meta.data_type),
    }
    return body, nxt


async def _bucket_page(
    ctx: ApiContext,
    meta: SignalMeta,
    start: datetime,
    end: datetime,
    width: timedelta,
    n: int,
    cursor: str | None,
) -> tuple[dict[str, Any], str | None]:
    if meta.data_type not in NUMERIC:
        raise ProblemError(
            "not-supported",
            f"{meta.path} is a {meta.data_type} signal: only float, int and bool signals can "
            "be downsampled; leave out 'bucket' for its raw samples",
        )
    b = width // timedelta(microseconds=1)
    if b <= 0:
        raise ProblemError("invalid-request", "the bucket must be at least 1 µs wide")
    buckets = math.ceil((_us(end) - _us(start)) / b)
    if buckets > ctx.limits.buckets_max:
        raise ProblemError(
            "too-large",
            f"{buckets:,} buckets of {width} between start and end; at most "
            f"{ctx.limits.buckets_max:,}: choose a wider bucket or a shorter range",
        )
    pos = decode_cursor(cursor, ("from",))
    s = start if pos is None else _from_us(int(pos["from"]))
    empty: dict[str, Any] = {"bucket_s": b / 1e6, "bucket": []}
    empty |= {k: [] for k in ("first", "last", "min", "max", "avg", "count")}
    if not meta.stored:
        return empty, None
    table: pa.Table | None = None
    page_end = end
    for _ in range(2):
        origin = (_us(s) // b) * b
        page_end = min(end, _from_us(origin + n * b))
        table = await ctx.historian.downsample(meta.path, s, page_end, width)
        if table.num_rows or page_end >= end:
            break
        # An empty stretch: jump to the bucket of the next sample instead of paging through.
        probe = await ctx.historian.read_raw(meta.path, page_end, end, limit=1)
        if probe.num_rows == 0:
            page_end = end
            break
        s = max(page_end, _from_us((_us(probe.column("ts")[0].as_py()) // b) * b))
    assert table is not None
    nxt = encode_cursor({"from": _us(page_end)}) if page_end < end else None
    body = {
        "bucket_s": b / 1e6,
        "bucket": iso_column(table.column("bucket")),
        **{k: json_values(table.column(k), "float") for k in ("first", "last", "min", "max")},
        "avg": json_values(table.column("avg"), "float"),
        "count": table.column("count").to_pylist(),
    }
    return body, nxt


@router.get("/latest", response_model=Page[LatestOut], summary="Latest values")
async def latest(
    request: Request,
    ctx: Ctx,
    token: Reader,
    under: Annotated[str | None, Query(description="Only signals of this asset subtree.")] = None,
    signal: Annotated[
        list[str] | None, Query(description="Only these signals (repeat the parameter).")
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[LatestOut]:
    """The newest sample of each signal within the token's subtrees, ordered by path."""
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    if signal:
        wanted = [s.strip("/") for s in signal]
        for s in wanted:
            check_path(token, s, "signal")
        try:
            table = await ctx.historian.latest(wanted)
        except UnknownSignalError as exc:
            known = ctx.catalog.column("path")
            missing = [s for s in wanted if not pc.any(pc.equal(known, s)).as_py()]
            if missing:
                raise ProblemError("not-found", str(exc)) from None
            stored = (await ctx.historian.signals()).column("path")
            present = [s for s in wanted if pc.any(pc.equal(stored, s)).as_py()]
            table = await ctx.historian.latest(present)
    else:
        table = await ctx.historian.latest(None)
    mask = subtree_mask(table.column("path"), token.subtrees)
    if under is not None:
        under = under.strip("/")
        check_path(token, under)
        mask = pc.and_(mask, subtree_mask(table.column("path"), [under]))
    pos = decode_cursor(cursor, ("after",))
    if pos is not None:
        mask = pc.and_(mask, pc.greater(table.column("path"), pa.scalar(str(pos["after"]))))
    table = table.filter(mask).sort_by("path").slice(0, n + 1)
    catalog = await signal_catalog(ctx.catalog, ctx.historian)
    idx = pc.index_in(table.column("path"), value_set=catalog.column("path"))
    types = pc.take(catalog.column("data_type"), idx).to_pylist()
    rows = table.to_pylist()
    items = []
    for row, data_type in zip(rows[:n], types, strict=False):
        raw = next((row[c] for c in _VALUE_COLUMNS if row[c] is not None), None)
        if isinstance(raw, float) and not math.isfinite(raw):
            raw = None
        value = _parse_json(raw) if data_type == "json" and isinstance(raw, str) else raw
        items.append(
            LatestOut(
                signal=row["path"],
                data_type=data_type or "float",
                ts=row["ts"],
                quality=int(row["quality"]),
                value=value,
            )
        )
    nxt = encode_cursor({"after": rows[n - 1]["path"]}) if len(rows) > n else None
    return Page[LatestOut](items=items, next_cursor=nxt, next=next_link(request, nxt))

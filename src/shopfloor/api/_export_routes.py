"""Exports: history (raw or downsampled) and events as CSV or Parquet files.

Tables are built and written by Arrow (``pyarrow.csv``, ``pyarrow.parquet``). Histories come
in long format, one row per sample or bucket with the signal's path in the first column.
"""

from __future__ import annotations

import io
import math
from typing import Annotated, Any, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._data_routes import NUMERIC, SignalMeta, signal_meta
from shopfloor.api._deps import Ctx, Range, bucket_width, check_path, require
from shopfloor.api._event_routes import event_rows
from shopfloor.api._problems import ProblemError, problem_responses
from shopfloor.edge.events import EVENT_SCHEMA

__all__ = ["router"]

router = APIRouter(tags=["exports"], responses=problem_responses(401, 403, 404, 422))

Reader = Annotated[TokenInfo, Depends(require(Scope.read))]
Format = Literal["csv", "parquet"]

_MEDIA: Final = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
_FILE_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "The file.",
        "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
    }
}


def _file(table: pa.Table, fmt: Format, name: str) -> Response:
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf, compression="zstd")
    else:
        # RFC 3339 timestamps rather than Arrow's "2025-01-01 00:00:00.000000Z".
        cols = [
            pc.strftime(c, format="%Y-%m-%dT%H:%M:%SZ") if pa.types.is_timestamp(c.type) else c
            for c in table.columns
        ]
        pacsv.write_csv(pa.table(cols, names=table.column_names), buf)
    return Response(
        content=buf.getvalue(),
        media_type=_MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


def _value_type(metas: list[SignalMeta]) -> pa.DataType:
    """One value type for every signal: theirs when shared, float64 for mixed numbers,
    else string."""
    types = {m.data_type for m in metas}
    arrow = {
        "float": pa.float64(),
        "int": pa.int64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "json": pa.string(),
    }
    if len(types) == 1:
        return arrow[types.pop()]
    if types <= NUMERIC:
        return pa.float64()
    return pa.string()


def _too_large(rows: int, limit: int) -> ProblemError:
    return ProblemError(
        "too-large",
        f"the export would hold more than {limit:,} rows (at least {rows:,}): narrow the time "
        "range, choose a wider bucket or fewer signals",
    )


@router.get(
    "/export/history",
    summary="Export history as CSV or Parquet",
    response_class=Response,
    responses=_FILE_RESPONSE,
)
async def export_history(
    ctx: Ctx,
    token: Reader,
    rng: Range,
    signal: Annotated[list[str], Query(description="Signals to export (repeat).", min_length=1)],
    fmt: Annotated[Format, Query(alias="format", description="File format.")] = "csv",
    bucket: Annotated[
        str | None, Query(description="Downsample into buckets of this width; raw when absent.")
    ] = None,
) -> Response:
    """Raw samples (``signal, ts, quality, value``) or buckets (``signal, bucket, first,
    last, min, max, avg, count``) of the signals over ``[start, end)``.

    ``value`` has the signals' shared type (float64 for a mix of numbers, text otherwise).
    """
    paths = [s.strip("/") for s in signal]
    for p in paths:
        check_path(token, p, "signal")
    width = bucket_width(bucket)
    metas = [await signal_meta(ctx, p) for p in paths]
    limit = ctx.limits.export_rows_max
    parts: list[pa.Table] = []
    total = 0
    if width is None:
        vtype = _value_type(metas)
        for m in metas:
            if not m.stored:
                continue
            t = await ctx.historian.read_raw(m.path, rng.start, rng.end, limit=limit - total + 1)
            total += t.num_rows
            if total > limit:
                raise _too_large(total, limit)
            value = t.column("value")
            if value.type != vtype:
                value = value.cast(vtype)
            parts.append(
                pa.table(
                    {
                        "signal": pa.array([m.path] * t.num_rows, pa.string()),
                        "ts": t.column("ts"),
                        "quality": t.column("quality"),
                        "value": value,
                    }
                )
            )
        schema = pa.schema(
            [("signal", pa.string()), ("ts", EVENT_SCHEMA.field("ts").type),
             ("quality", pa.uint8()), ("value", vtype)]
        )  # fmt: skip
    else:
        for m in metas:
            if m.data_type not in NUMERIC:
                raise ProblemError(
                    "not-supported", f"{m.path} is a {m.data_type} signal: it has no buckets"
                )
        buckets = math.ceil((rng.end - rng.start) / width)
        if buckets * len(metas) > limit:
            raise _too_large(buckets * len(metas), limit)
        vtype = pa.int64() if {m.data_type for m in metas} == {"int"} else pa.float64()
        for m in metas:
            if not m.stored:
                continue
            t = await ctx.historian.downsample(m.path, rng.start, rng.end, width)
            cols = {"signal": pa.array([m.path] * t.num_rows, pa.string())}
            cols |= {"bucket": t.column("bucket")}
            cols |= {k: t.column(k).cast(vtype) for k in ("first", "last", "min", "max")}
            cols |= {"avg": t.column("avg"), "count": t.column("count")}
            parts.append(pa.table(cols))
        schema = pa.schema(
            [("signal", pa.string()), ("bucket", EVENT_SCHEMA.field("ts").type)]
            + [(k, vtype) for k in ("first", "last", "min", "max")]
            + [("avg", pa.float64()), ("count", pa.int64())]
        )
    table = pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()
    return _file(table, fmt, "history")


@router.get(
    "/export/events",
    summary="Export events as CSV or Parquet",
    response_class=Response,
    responses=_FILE_RESPONSE,
)
async def export_events(
    ctx: Ctx,
    token: Reader,
    rng: Range,
    asset: Annotated[str | None, Query(description="Only events of this asset subtree.")] = None,
    kind: Annotated[list[str] | None, Query(description="Only these kinds (repeat).")] = None,
    fmt: Annotated[Format, Query(alias="format", description="File format.")] = "csv",
) -> Response:
    """Events overlapping ``[start, end)`` within the token's subtrees, oldest first
    (columns as the historian's events table; ``data`` is JSON text)."""
    limit = ctx.limits.export_rows_max
    rows = await event_rows(ctx, token, rng.start, rng.end, asset, kind, limit, None)
    if len(rows) > limit:
        raise _too_large(len(rows), limit)
    return _file(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA), fmt, "events")

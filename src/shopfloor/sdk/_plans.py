"""What each SDK call asks of the API, free of I/O: one plan per operation.

A plan is a generator that yields :class:`Request` objects and receives each one's
``httpx.Response``; it returns an Arrow table. The blocking :class:`~shopfloor.sdk.Client`
and the asyncio :class:`~shopfloor.sdk.AsyncClient` drive the same plans, so paging,
fallbacks and decoding are written once.

Histories and events are read as Parquet from the export routes (one request, types and
NaN kept). When the server refuses an export as too large, the plan falls back to the
paged JSON routes and follows their cursors until the last page.
"""

from __future__ import annotations

import io
import json
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias, TypeVar

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from shopfloor.edge.batch import TS_TYPE
from shopfloor.edge.events import EVENT_SCHEMA
from shopfloor.sdk._errors import ApiError, ProblemDetails

__all__ = [
    "Plan",
    "Request",
    "TimeLike",
    "check",
    "events_plan",
    "format_time",
    "history_plan",
    "kpi_plan",
    "latest_plan",
    "shared_values",
]

_T = TypeVar("_T")

TimeLike: TypeAlias = datetime | timedelta | str
"""A time: an aware ``datetime`` (naive ones are UTC), an offset from now (``timedelta``)
or any form the API reads (ISO 8601, ``now``, ``-1h``)."""

PARQUET: Final = "application/vnd.apache.parquet"
_NUMERIC: Final = frozenset({"float", "int", "bool"})
_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "json": pa.string(),
}


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request of a plan: a path under ``/api/v1`` and its query."""

    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    accept: str = "application/json"


Plan: TypeAlias = Generator[Request, httpx.Response, _T]
"""Yields requests, receives their responses, returns the result."""


def format_time(value: TimeLike) -> str:
    """``value`` as the API's ``start``/``end`` query text."""
    if isinstance(value, str):
        return value
    if isinstance(value, timedelta):
        us = round(value / timedelta(microseconds=1))
        return f"{'-' if us < 0 else '+'}{abs(us)}us"
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    raise TypeError(f"not a time: {value!r} (give a datetime, a timedelta or a string)")


def check(response: httpx.Response) -> httpx.Response:
    """``response`` when it is a success, else :class:`ApiError` with the server's problem."""
    if response.status_code < 400:
        return response
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text or None
    problem = ProblemDetails.from_json(body, response.status_code, response.reason_phrase)
    raise ApiError(problem, response.request.method, str(response.request.url))


def _too_large(response: httpx.Response) -> bool:
    if response.status_code != 422:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and str(body.get("type", "")).endswith("/too-large")


def _pages(
    path: str, params: list[tuple[str, str]], page_size: int | None
) -> Generator[Request, httpx.Response, list[dict[str, Any]]]:
    """Every page of a cursor-paged list (``next_cursor``), as decoded JSON bodies."""
    base = list(params) + ([("limit", str(page_size))] if page_size is not None else [])
    bodies: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = base + ([("cursor", cursor)] if cursor is not None else [])
        body = check((yield Request("GET", path, query))).json()
        bodies.append(body)
        cursor = body.get("next_cursor")
        if not cursor:
            return bodies


def _timestamps(values: Iterable[str | None]) -> pa.Array:
    """RFC 3339 strings as microsecond UTC timestamps."""
    return pa.array(list(values), pa.string()).cast(TS_TYPE)


def shared_values(values: Sequence[Any]) -> pa.Array:
    """Values of mixed signals as one Arrow column: their type when they share one, float64
    for a mix of numbers, otherwise text (JSON for anything that is not a string)."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if all(isinstance(v, int | float) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array(
        [v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string()
    )


def _value_type(data_types: Iterable[str]) -> pa.DataType:
    """The exports' rule: the signals' shared type, float64 for numbers, else text."""
    types = set(data_types)
    if len(types) == 1:
        return _ARROW_TYPES.get(types.pop(), pa.string())
    if types and types <= _NUMERIC:
        return pa.float64()
    return pa.string()


def _cast_values(values: list[Any], data_type: str, target: pa.DataType) -> pa.Array:
    if data_type == "json":
        values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
    array = pa.array(values, _ARROW_TYPES.get(data_type, pa.string()))
    return array if array.type == target else array.cast(target)


# ------------------------------------------------------------------ history

_RAW_SCHEMA: Final = [("signal", pa.string()), ("ts", TS_TYPE), ("quality", pa.uint8())]


def history_plan(
    signals: Sequence[str],
    since: TimeLike,
    until: TimeLike,
    bucket: str | timedelta | None,
    page_size: int | None,
) -> Plan[pa.Table]:
    """History of ``signals`` in long format (one row per sample or bucket)."""
    if not signals:
        raise ValueError("history needs at least one signal")
    width = _bucket(bucket)
    window = [("start", format_time(since)), ("end", format_time(until))]
    query = [("signal", s) for s in signals] + window + [("format", "parquet")]
    if width is not None:
        query.append(("bucket", width))
    response = yield Request("GET", "/export/history", query, accept=PARQUET)
    if not _too_large(response):
        return pq.read_table(io.BytesIO(check(response).content))
    # Too many rows for one file: page through each signal's JSON history instead.
    bodies: list[list[dict[str, Any]]] = []
    for s in signals:
        extra = [("bucket", width)] if width is not None else []
        bodies.append((yield from _pages(f"/history/{s}", window + extra, page_size)))
    types = [pages[0]["data_type"] for pages in bodies]
    if width is None:
        return _raw_table(signals, bodies, _value_type(types))
    return _bucket_table(signals, bodies, types)


def _bucket(bucket: str | timedelta | None) -> str | None:
    if bucket is None or isinstance(bucket, str):
        return bucket
    us = round(bucket / timedelta(microseconds=1))
    if us <= 0:
        raise ValueError(f"bucket must be positive, got {bucket}")
    return f"{us}us"


def _raw_table(
    signals: Sequence[str], bodies: list[list[dict[str, Any]]], vtype: pa.DataType
) -> pa.Table:
    parts = []
    for s, pages in zip(signals, bodies, strict=True):
        data_type = pages[0]["data_type"]
        ts = [t for p in pages for t in p["ts"]]
        parts.append(
            pa.table(
                {
                    "signal": pa.array([s] * len(ts), pa.string()),
                    "ts": _timestamps(ts),
                    "quality": pa.array([q for p in pages for q in p["quality"]], pa.uint8()),
                    "value": _cast_values([v for p in pages for v in p["value"]], data_type, vtype),
                }
            )
        )
    schema = pa.schema([*_RAW_SCHEMA, ("value", vtype)])
    return pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()


def _bucket_table(
    signals: Sequence[str], bodies: list[list[dict[str, Any]]], types: list[str]
) -> pa.Table:
    vtype = pa.int64() if set(types) == {"int"} else pa.float64()
    schema = pa.schema(
        [("signal", pa.string()), ("bucket", TS_TYPE)]
        + [(k, vtype) for k in ("first", "last", "min", "max")]
        + [("avg", pa.float64()), ("count", pa.int64())]
    )
    parts = []
    for s, pages in zip(signals, bodies, strict=True):
        starts = [b for p in pages for b in p["bucket"]]
        cols: dict[str, pa.Array] = {
            "signal": pa.array([s] * len(starts), pa.string()),
            "bucket": _timestamps(starts),
        }
        for k in ("first", "last", "min", "max", "avg"):
            cols[k] = pa.array([v for p in pages for v in p[k]], pa.float64())
        cols["count"] = pa.array([c for p in pages for c in p["count"]], pa.int64())
        parts.append(pa.table(cols))
    return pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()


# ------------------------------------------------------------------ latest values


def latest_plan(signals: Sequence[str] | None, page_size: int | None) -> Plan[pa.Table]:
    """The newest sample of each signal (all the token sees when ``signals`` is None)."""
    query = [("signal", s) for s in signals or ()]
    pages = yield from _pages("/latest", query, page_size)
    items = [item for page in pages for item in page["items"]]
    value = _typed([i["value"] for i in items], _value_type(i["data_type"] for i in items))
    return pa.table(
        {
            "signal": pa.array([i["signal"] for i in items], pa.string()),
            "data_type": pa.array([i["data_type"] for i in items], pa.string()),
            "ts": _timestamps(i["ts"] for i in items),
            "quality": pa.array([i["quality"] for i in items], pa.uint8()),
            "value": value,
        }
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _typed(values: list[Any], vtype: pa.DataType) -> pa.Array:
    """JSON values as an Arrow column of ``vtype`` (text: JSON for non-strings)."""
    if pa.types.is_string(vtype):
        return pa.array([None if v is None else _text(v) for v in values], pa.string())
    if pa.types.is_floating(vtype):
        return pa.array([None if v is None else float(v) for v in values], vtype)
    return pa.array(values, vtype)


# ------------------------------------------------------------------ KPIs

_KPI_TIMES: Final = ("window_start", "window_end")


def kpi_plan(
    kpi: str,
    asset: str,
    since: TimeLike,
    until: TimeLike,
    by: str | None,
    page_size: int | None,
) -> Plan[pa.Table]:
    """KPI rows of ``asset`` (``oee``, ``losses`` or ``iso22400``), one per window."""
    query = [("asset", asset), ("start", format_time(since)), ("end", format_time(until))]
    if by is not None:
        query.append(("by", by))
    pages = yield from _pages(f"/kpi/{kpi}", query, page_size)
    rows = [row for page in pages for row in page["rows"]]
    if not rows:
        return pa.table({"asset": pa.array([], pa.string())})
    table = pa.Table.from_pylist(rows)
    for name in _KPI_TIMES:
        if name in table.column_names and pa.types.is_string(table.column(name).type):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table.column(name).cast(TS_TYPE))
    return table


# ------------------------------------------------------------------ events


def events_plan(
    asset: str | None,
    kinds: Sequence[str] | None,
    since: TimeLike,
    until: TimeLike,
    page_size: int | None,
) -> Plan[pa.Table]:
    """Events overlapping the range, oldest first, as the historian's events table."""
    query = [("start", format_time(since)), ("end", format_time(until))]
    if asset is not None:
        query.append(("asset", asset))
    query += [("kind", k) for k in kinds or ()]
    response = yield Request("GET", "/export/events", [*query, ("format", "parquet")], PARQUET)
    if not _too_large(response):
        return pq.read_table(io.BytesIO(check(response).content)).cast(EVENT_SCHEMA)
    pages = yield from _pages("/events", query, page_size)
    items = [item for page in pages for item in page["items"]]
    cols: dict[str, Any] = {name: [item.get(name) for item in items] for name in EVENT_SCHEMA.names}
    cols["data"] = [None if d is None else json.dumps(d) for d in cols["data"]]
    arrays = [
        _timestamps(cols[f.name]) if f.type == TS_TYPE else pa.array(cols[f.name], f.type)
        for f in EVENT_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)

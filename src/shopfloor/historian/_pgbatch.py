"""What a PostgreSQL append sends, computed column-wise with NumPy.

A batch becomes three binary ``COPY`` streams: the samples themselves, the batch's own
rollup aggregates per granularity (per signal and minute; per signal and hour, made from the
minutes so that every hour summarises exactly its minutes), and the newest row of each
signal. The server then only merges small staging tables.

Aggregates follow the rollup semantics of every engine: samples whose quality is not bad
and whose value is not null; first/last by timestamp; NaN orders above every number (as in
PostgreSQL and DuckDB), so ``max`` keeps it and ``min`` ignores it unless all are NaN.
Integer sums travel as the sums of the high and low 32-bit halves of the values, which fit
in a bigint each and are put together exactly on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.historian._pgcopy import CopyColumn, PgType, encode_binary
from shopfloor.historian._pgsql import DAY, ROLLUPS

__all__ = ["SAMPLE_COLUMNS", "PreparedBatch", "aggregate", "coarsen", "prepare_batch"]

SAMPLE_COLUMNS: Final = ("signal_id", "ts", "quality", "v_float", "v_int", "v_bool", "v_str")
"""The ``samples`` columns, in ``COPY`` order."""

_SAMPLE_TYPES: Final[tuple[PgType, ...]] = (
    "int4",
    "int8",
    "int2",
    "float8",
    "int8",
    "bool",
    "text",
)

Aggregates = dict[str, np.ndarray]
"""Per (signal, bucket) aggregates, sorted by signal then bucket: ``signal_id, bucket,
first_ts, last_ts, first, last, min, max, count`` and ``sum`` (floats) or ``sum_hi`` and
``sum_lo`` (integers)."""


def _valid(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if column.null_count == 0:
        return np.ones(len(column), dtype=bool)
    return np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _filled(column: pa.ChunkedArray | pa.Array, dtype: Any) -> np.ndarray:
    typed = column.cast(pa.from_numpy_dtype(np.dtype(dtype)))
    return np.asarray(pc.fill_null(typed, 0).to_numpy(zero_copy_only=False))


def _groups(sid: np.ndarray, bucket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (inclusive) index of each run of equal ``(sid, bucket)``."""
    m = len(sid)
    change = np.ones(m, dtype=bool)
    change[1:] = (sid[1:] != sid[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(change)
    return starts, np.append(starts[1:], m) - 1


def aggregate(sid: np.ndarray, ts: np.ndarray, v: np.ndarray, step: int, kind: str) -> Aggregates:
    """Aggregates of values ``v`` (``kind`` ``float`` or ``int``) per ``step``-wide bucket."""
    bucket = ts - np.mod(ts, step)
    order = np.lexsort((ts, bucket, sid))
    sid, bucket, ts, v = sid[order], bucket[order], ts[order], v[order]
    starts, ends = _groups(sid, bucket)
    out = {
        "signal_id": sid[starts],
        "bucket": bucket[starts],
        "first_ts": ts[starts],
        "last_ts": ts[ends],
        "first": v[starts],
        "last": v[ends],
        "count": (ends - starts + 1).astype(np.int64),
    }
    if kind == "float":
        out["min"] = np.fmin.reduceat(v, starts)
        out["max"] = np.maximum.reduceat(v, starts)
        out["sum"] = np.add.reduceat(v, starts)
    else:
        out["min"] = np.minimum.reduceat(v, starts)
        out["max"] = np.maximum.reduceat(v, starts)
        out["sum_hi"] = np.add.reduceat(v >> 32, starts)
        out["sum_lo"] = np.add.reduceat(v & 0xFFFF_FFFF, starts)
    return out


def coarsen(a: Aggregates, step: int) -> Aggregates:
    """Aggregates of a finer granularity merged into ``step``-wide buckets."""
    bucket = a["bucket"] - np.mod(a["bucket"], step)
    starts, ends = _groups(a["signal_id"], bucket)
    out = {
        "signal_id": a["signal_id"][starts],
        "bucket": bucket[starts],
        "first_ts": a["first_ts"][starts],
        "last_ts": a["last_ts"][ends],
        "first": a["first"][starts],
        "last": a["last"][ends],
        "count": np.add.reduceat(a["count"], starts),
        "max": np.maximum.reduceat(a["max"], starts),
    }
    if "sum" in a:
        out["min"] = np.fmin.reduceat(a["min"], starts)
        out["sum"] = np.add.reduceat(a["sum"], starts)
    else:
        out["min"] = np.minimum.reduceat(a["min"], starts)
        out["sum_hi"] = np.add.reduceat(a["sum_hi"], starts)
        out["sum_lo"] = np.add.reduceat(a["sum_lo"], starts)
    return out


def _stage_columns(a: Aggregates) -> list[CopyColumn]:
    """Columns of a rollup staging table (``float`` columns, then the ``i_*`` ones)."""
    k = len(a["count"])
    keys = [
        CopyColumn("int4", pa.array(a["signal_id"])),
        CopyColumn("int8", pa.array(a["bucket"])),
        CopyColumn("int8", pa.array(a["first_ts"])),
        CopyColumn("int8", pa.array(a["last_ts"])),
    ]
    count = CopyColumn("int8", pa.array(a["count"]))
    if "sum" in a:
        floats = [CopyColumn("float8", pa.array(a[c])) for c in ("first", "last", "min", "max")]
        floats.append(CopyColumn("float8", pa.array(a["sum"])))
        return [*keys, *floats, *([CopyColumn("int8", pa.nulls(k, pa.int64()))] * 6), count]
    ints = [
        CopyColumn("int8", pa.array(a[c]))
        for c in ("first", "last", "min", "max", "sum_hi", "sum_lo")
    ]
    return [*keys, *([CopyColumn("float8", pa.nulls(k, pa.float64()))] * 5), *ints, count]


def _encode_stage(parts: list[Aggregates]) -> bytes | None:
    if not parts:
        return None
    columns = [_stage_columns(p) for p in parts]
    if len(columns) == 1:
        return encode_binary(columns[0])
    return encode_binary(
        [
            CopyColumn(cols[0].pg_type, pa.chunked_array([c.values for c in cols]))
            for cols in zip(*columns, strict=True)
        ]
    )


def _minute_aggregates(table: pa.Table, sid: np.ndarray, ts: np.ndarray) -> list[Aggregates]:
    """The batch's per-minute aggregates: one set for floats, one for ints and bools."""
    step = ROLLUPS["1m"].width
    good = _filled(table.column("quality"), np.int16) >= 64
    out: list[Aggregates] = []
    v_float = table.column("v_float")
    if v_float.null_count < len(v_float):
        mask = good & _valid(v_float)
        if mask.any():
            values = _filled(v_float, np.float64)[mask]
            out.append(aggregate(sid[mask], ts[mask], values, step, "float"))
    v_int, v_bool = table.column("v_int"), table.column("v_bool")
    if v_int.null_count < len(v_int) or v_bool.null_count < len(v_bool):
        int_valid, bool_valid = _valid(v_int), _valid(v_bool)
        mask = good & (int_valid | bool_valid)
        if mask.any():
            values = np.where(int_valid, _filled(v_int, np.int64), _filled(v_bool, np.int64))
            out.append(aggregate(sid[mask], ts[mask], values[mask], step, "int"))
    return out


def sample_columns(table: pa.Table) -> list[CopyColumn]:
    """The ``samples`` columns of a reading table, ready for :func:`encode_binary`."""
    ts = table.column("ts").cast(pa.int64())
    columns = [table.column("signal_id"), ts, *(table.column(c) for c in SAMPLE_COLUMNS[2:])]
    return [CopyColumn(t, c) for t, c in zip(_SAMPLE_TYPES, columns, strict=True)]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """The ``COPY`` streams of one append and the UTC days (since the epoch) it touches."""

    samples: bytes
    rollups: dict[str, bytes]
    """Staged aggregates by granularity (absent when the batch has nothing to aggregate)."""
    latest: bytes
    days: np.ndarray


def prepare_batch(table: pa.Table) -> PreparedBatch:
    """Encode a reading table for an append (CPU work: run it in a worker thread)."""
    sid = _filled(table.column("signal_id"), np.int32)
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    order = np.lexsort((ts, sid))
    by_signal = table.take(pa.array(order))
    newest_rows = np.ones(len(order), dtype=bool)
    newest_rows[:-1] = sid[order][1:] != sid[order][:-1]
    newest = by_signal.filter(pa.array(newest_rows))
    minutes = _minute_aggregates(table, sid, ts)
    rollups: dict[str, bytes] = {}
    for granularity, rollup in ROLLUPS.items():
        parts = minutes if granularity == "1m" else [coarsen(m, rollup.width) for m in minutes]
        data = _encode_stage(parts)
        if data is not None:
            rollups[granularity] = data
    return PreparedBatch(
        # in (signal, time) order: each signal's rows of a batch share heap pages, so reading
        # one signal touches few pages (and index insertion is a little faster)
        samples=encode_binary(sample_columns(by_signal)),
        rollups=rollups,
        latest=encode_binary(sample_columns(newest)),
        days=np.unique(np.floor_divide(ts, DAY)),
    )

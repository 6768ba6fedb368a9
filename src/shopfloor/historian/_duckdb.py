"""The embedded historian engine: one DuckDB file.

Layout (schema version 4; version 1 had no ``rollup_1h`` and no ``runs_1m``, the migration
builds them from ``rollup_1m`` and the samples; version 2 had no ``ingested_batches``,
version 3 no ``rollup_backlog``):

* ``signals`` — the catalog; ``signal_id`` comes from a sequence.
* ``samples`` — the narrow table ``(signal_id, ts, quality, v_float, v_int, v_bool, v_str)``.
  ``ts`` is a ``BIGINT`` of UTC microseconds: measured against ``TIMESTAMPTZ`` it inserts as
  fast and the bucket arithmetic of :meth:`DuckDBHistorian.downsample` runs a little faster
  on plain integers. Arrow timestamps are cast to and from int64 without copying.
* ``rollup_1m`` and ``rollup_1h`` (bucket column ``minute`` / ``hour``) — per signal and
  minute or hour: first/last (with their timestamps), min, max, sum and count of the samples
  that aggregates consider (quality not bad, value not null). Float signals use ``first,
  last, min, max, sum`` (DOUBLE); int and bool signals use the ``i_*`` columns (BIGINT,
  HUGEINT sum) so that int64 values stay exact. Maintained by *merging* (below): the
  per-minute aggregates of the samples appended since the last merge are computed once (a
  temporary table) and merged into both tables by one statement generalised over the
  granularity (``INSERT … ON CONFLICT DO UPDATE``), so late and out-of-order data stays
  correct and every hour summarises exactly its minutes (ties between duplicates are decided
  alike in both: time, then append order).
* ``runs_1m`` — for ``state`` and ``counter`` signals (:data:`RUN_KINDS`): the run-length
  encoding of each minute's samples (one row per run of equal value and quality, samples
  ordered by timestamp, quality, value), so that :meth:`DuckDBHistorian.read_changes`
  reads a month of 1 Hz machine states as a few ten thousand rows. On append, every minute
  a batch touches is encoded again from all its samples (one minute: at most a few dozen
  rows at 1 Hz), so late, out-of-order and duplicate data stay exact.
* ``latest`` — the newest sample of each signal, maintained by merging (reading it is then
  a lookup instead of a scan of every sample).
* ``rollup_backlog`` — at most one row: the time range of the samples appended but not yet
  merged into the rollups and ``latest``.
* ``ingested_batches`` — the ids of the bus batches :meth:`DuckDBHistorian.append_once`
  stored, recorded in the same transaction as their samples.
* ``events``, ``dead_letters`` and ``schema_version``.

Merging. An upsert costs about a microsecond per row, and at 1 Hz every sample touches its
own minute row, hour row and latest row, so merging on every append would upsert three rows
per sample. Instead an append adds its rows to ``pending`` (a temporary table without index)
and widens ``rollup_backlog``, both in the append's transaction; a *merge* folds all of
``pending`` into ``rollup_1m``, ``rollup_1h`` and ``latest`` — one upsert per signal and
minute (hour, signal) however many appends it covers — empties it and clears the backlog, in
one transaction. It runs when ``pending`` holds ``merge_rows`` rows or its oldest row is
``merge_s`` seconds old, before every read of rollups or latest values (``downsample``,
``rollups``, ``latest``), before retention and on close: every answer is the same as if each
append had been merged at once. After a crash ``pending`` is gone but the backlog is not:
opening the file recomputes the rollups of the backlog's minutes and hours from the samples
and merges its newest samples into ``latest``.

DuckDB calls block, so every operation runs on one connection in one dedicated worker
thread; operations are therefore serialised in the order they were awaited.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.edge.batch import TS_TYPE, ReadingBatch, to_us
from shopfloor.errors import HistorianError, UnknownSignalError
from shopfloor.historian.base import (
    CHANGES_COLUMNS,
    DEAD_LETTER_SCHEMA,
    DOWNSAMPLE_COLUMNS,
    EVENT_SCHEMA,
    ROLLUP_COLUMNS,
    Granularity,
    Historian,
    RetentionResult,
    SignalInfo,
    merge_runs,
)

__all__ = ["RUN_KINDS", "SCHEMA_VERSION", "DuckDBHistorian"]

SCHEMA_VERSION: Final = 4
"""Version of the table layout this module creates and reads."""

_MINUTE: Final = 60_000_000
"""One minute in microseconds: the finest rollup granularity."""
_HOUR: Final = 60 * _MINUTE
"""One hour in microseconds."""


@dataclass(frozen=True, slots=True)
class _Rollup:
    """A rollup table: its name, its bucket column and the bucket width in µs."""

    table: str
    key: str
    width: int


_ROLLUPS: Final[dict[str, _Rollup]] = {
    "1m": _Rollup("rollup_1m", "minute", _MINUTE),
    "1h": _Rollup("rollup_1h", "hour", _HOUR),
}
"""The rollup tables by granularity, finest first."""


def _floor_sql(expr: str, width: int) -> str:
    """SQL for ``floor(expr / width) * width``, correct for negative values too.

    (DuckDB's ``//`` and ``%`` truncate towards zero.)
    """
    return f"({expr} - (({expr} % {width}) + {width}) % {width})"


def _rollup_ddl(r: _Rollup) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {r.table} (
        signal_id INTEGER NOT NULL,
        {r.key} BIGINT NOT NULL,
        first_ts BIGINT NOT NULL,
        last_ts BIGINT NOT NULL,
        "first" DOUBLE,
        "last" DOUBLE,
        "min" DOUBLE,
        "max" DOUBLE,
        "sum" DOUBLE,
        i_first BIGINT,
        i_last BIGINT,
        i_min BIGINT,
        i_max BIGINT,
        i_sum HUGEINT,
        "count" BIGINT NOT NULL,
        PRIMARY KEY (signal_id, {r.key})
    )"""


RUN_KINDS: Final[frozenset[str]] = frozenset({"state", "counter"})
"""Signal kinds whose samples are also kept run-length encoded per minute (``runs_1m``)."""

_T = TypeVar("_T")

_CHECKPOINT_WAL: Final = "64MB"
"""WAL size at which DuckDB checkpoints on its own."""

log = logging.getLogger(__name__)

_DATA_TYPES: Final[frozenset[str]] = frozenset({"float", "int", "bool", "string", "json"})

_VALUE_COLUMN: Final[dict[str, str]] = {
    "float": "v_float",
    "int": "v_int",
    "bool": "v_bool",
    "string": "v_str",
    "json": "v_str",
}
"""The sample column that holds each data type's values."""

_COLUMNS: Final = ("v_float", "v_int", "v_bool", "v_str")
_COLUMN_INDEX: Final[dict[str, int]] = {t: _COLUMNS.index(c) for t, c in _VALUE_COLUMN.items()}
"""The index in :data:`_COLUMNS` of each data type's value column."""

_VALUE_TYPE: Final[dict[str, pa.DataType]] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "json": pa.string(),
}

# ---------------------------------------------------------------------------------------
# DDL

_DDL_V1: Final[tuple[str, ...]] = (
    "CREATE SEQUENCE IF NOT EXISTS signal_id_seq START 1",
    """CREATE TABLE IF NOT EXISTS signals (
        signal_id INTEGER PRIMARY KEY DEFAULT nextval('signal_id_seq'),
        path VARCHAR NOT NULL UNIQUE,
        data_type VARCHAR NOT NULL,
        unit VARCHAR,
        kind VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS samples (
        signal_id INTEGER NOT NULL,
        ts BIGINT NOT NULL,
        quality UTINYINT NOT NULL,
        v_float DOUBLE,
        v_int BIGINT,
        v_bool BOOLEAN,
        v_str VARCHAR
    )""",
    _rollup_ddl(_ROLLUPS["1m"]),
    """CREATE TABLE IF NOT EXISTS latest (
        signal_id INTEGER PRIMARY KEY,
        ts BIGINT NOT NULL,
        quality UTINYINT NOT NULL,
        v_float DOUBLE,
        v_int BIGINT,
        v_bool BOOLEAN,
        v_str VARCHAR
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        event_id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        asset VARCHAR NOT NULL,
        signal VARCHAR,
        ts TIMESTAMPTZ NOT NULL,
        end_ts TIMESTAMPTZ,
        code VARCHAR,
        severity SMALLINT,
        message VARCHAR,
        data VARCHAR
    )""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        received_at TIMESTAMPTZ NOT NULL,
        source VARCHAR NOT NULL,
        location VARCHAR,
        reason VARCHAR NOT NULL,
        payload BLOB
    )""",
)

# ---------------------------------------------------------------------------------------
# append

_INSERT_SAMPLES: Final = (
    "INSERT INTO samples SELECT signal_id, ts, quality, v_float, v_int, v_bool, v_str FROM _batch"
)

# Appends only add their rows to `pending` (a temporary table, no index) and widen the range
# in `rollup_backlog`; the rollups and latest values are merged from `pending` in bulk (see
# DuckDBHistorian: "merging"), one upsert per signal and minute for many appends.
_PENDING_DDL: Final = """CREATE OR REPLACE TEMP TABLE pending (
    signal_id INTEGER NOT NULL,
    ts BIGINT NOT NULL,
    quality UTINYINT NOT NULL,
    v_float DOUBLE,
    v_int BIGINT,
    v_bool BOOLEAN,
    v_str VARCHAR,
    seq BIGINT NOT NULL
)"""
_INSERT_PENDING: Final = (
    "INSERT INTO pending SELECT signal_id, ts, quality, v_float, v_int, v_bool, v_str, $seq "
    "FROM _batch"
)
_BACKLOG_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS rollup_backlog (lo BIGINT NOT NULL, hi BIGINT NOT NULL)"
)
_SET_BACKLOG: Final = "INSERT INTO rollup_backlog VALUES ($lo, $hi)"
_WIDEN_BACKLOG: Final = "UPDATE rollup_backlog SET lo = least(lo, $lo), hi = greatest(hi, $hi)"

_ORDER: Final = "(ts::HUGEINT * 4294967296 + {seq})"
"""The order of samples for first, last and latest: time, then append order (``seq``): of
duplicates on one timestamp the first appended is first, the last appended last and latest,
as when every append was merged on its own."""

# Per-minute aggregates of the samples in {source}, for the float and/or int columns: two
# variants, so that float signals (the common case) do not pay for the integer aggregates.
_ROLLUP_AGG: Final[dict[str, str]] = {
    "float": """arg_min(v, k) AS "first", arg_max(v, k) AS "last", min(v) AS "min",
       max(v) AS "max", sum(v) AS "sum", NULL::BIGINT AS i_first, NULL::BIGINT AS i_last,
       NULL::BIGINT AS i_min, NULL::BIGINT AS i_max, NULL::HUGEINT AS i_sum""",
    "int": """NULL::DOUBLE AS "first", NULL::DOUBLE AS "last", NULL::DOUBLE AS "min",
       NULL::DOUBLE AS "max", NULL::DOUBLE AS "sum", arg_min(v, k) AS i_first,
       arg_max(v, k) AS i_last, min(v) AS i_min, max(v) AS i_max, sum(v)::HUGEINT AS i_sum""",
}
_ROLLUP_VALUE: Final[dict[str, str]] = {
    "float": "v_float",
    "int": "coalesce(v_int, v_bool::BIGINT)",
}
_ROLLUP_WHERE: Final[dict[str, str]] = {
    "float": "v_float IS NOT NULL",
    "int": "(v_int IS NOT NULL OR v_bool IS NOT NULL)",
}

_MINUTES: Final = f"""
SELECT signal_id, minute, min(ts) AS first_ts, max(ts) AS last_ts, {{agg}}, count(*) AS "count"
FROM (
    SELECT signal_id, ts, {_floor_sql("ts", _MINUTE)} AS minute, {{value}} AS v, {{order}} AS k
    FROM {{source}}
    WHERE quality >= 64 AND {{where}}{{extra}}
)
GROUP BY signal_id, minute
"""

_STAGE: Final = "_minutes"
"""The temporary table of the pending samples' per-minute aggregates (rollup_1m's columns)."""


def minutes_sql(source: str = "pending", *, seq: str = "seq", where: str = "") -> str:
    """The per-minute aggregates (rollup_1m's columns) of the samples in ``source``.

    ``seq`` orders samples of equal timestamps (an SQL expression); ``where`` filters.
    """
    extra = f" AND {where}" if where else ""
    order = _ORDER.format(seq=seq)
    return " UNION ALL ".join(
        _MINUTES.format(
            agg=_ROLLUP_AGG[k],
            value=_ROLLUP_VALUE[k],
            where=_ROLLUP_WHERE[k],
            source=source,
            order=order,
            extra=extra,
        )
        for k in ("float", "int")
    )


# Aggregates of a finer granularity (the staged pending minutes, or rollup_1m itself when a
# migration or a retention run rebuilds hours) grouped into a rollup table's buckets. A group
# holds disjoint finer buckets, so first/last are decided by their timestamps without ties.
_BUCKETS: Final = """
SELECT signal_id, {bucket} AS b, min(first_ts) AS first_ts, max(last_ts) AS last_ts,
       arg_min("first", first_ts) AS "first", arg_max("last", last_ts) AS "last",
       min("min") AS "min", max("max") AS "max", sum("sum") AS "sum",
       arg_min(i_first, first_ts) AS i_first, arg_max(i_last, last_ts) AS i_last,
       min(i_min) AS i_min, max(i_max) AS i_max, sum(i_sum) AS i_sum, sum("count") AS "count"
FROM {source}{where}
GROUP BY signal_id, b
"""

# A stored bucket {t} combined with new aggregates {s} of the same bucket: the stored one
# keeps its first on equal timestamps and takes the new last.
_COMBINE_BUCKET: Final = """
    first_ts = least({t}.first_ts, {s}.first_ts),
    last_ts = greatest({t}.last_ts, {s}.last_ts),
    "first" = CASE WHEN {s}.first_ts < {t}.first_ts THEN {s}."first" ELSE {t}."first" END,
    "last" = CASE WHEN {s}.last_ts >= {t}.last_ts THEN {s}."last" ELSE {t}."last" END,
    "min" = least({t}."min", {s}."min"),
    "max" = greatest({t}."max", {s}."max"),
    "sum" = {t}."sum" + {s}."sum",
    i_first = CASE WHEN {s}.first_ts < {t}.first_ts THEN {s}.i_first ELSE {t}.i_first END,
    i_last = CASE WHEN {s}.last_ts >= {t}.last_ts THEN {s}.i_last ELSE {t}.i_last END,
    i_min = least({t}.i_min, {s}.i_min),
    i_max = greatest({t}.i_max, {s}.i_max),
    i_sum = {t}.i_sum + {s}.i_sum,
    "count" = {t}."count" + {s}."count"
"""

_MERGE_ROLLUP: Final = (
    "INSERT INTO {t} "
    + _BUCKETS
    + "ON CONFLICT (signal_id, {key}) DO UPDATE SET "
    + _COMBINE_BUCKET.replace("{s}", "excluded")
)

# The bulk merge of staged buckets (``_buckets``: a rollup table's columns, the bucket in
# ``b``) into a rollup table: an UPDATE joined with the buckets that are stored already and an
# INSERT of the others — about a third of the work of INSERT … ON CONFLICT per row. Both are
# limited to the staged buckets' range [$lo, $hi], which the tables' zone maps prune to.
_UPDATE_BUCKETS: Final = (
    "UPDATE {t} SET "
    + _COMBINE_BUCKET.replace("{s}", "s")
    + """FROM _buckets s
WHERE {t}.signal_id = s.signal_id AND {t}.{key} = s.b AND {t}.{key} >= $lo AND {t}.{key} <= $hi
"""
)
_INSERT_BUCKETS: Final = """
INSERT INTO {t} SELECT * FROM _buckets s WHERE NOT EXISTS (
    SELECT 1 FROM {t} r
    WHERE r.signal_id = s.signal_id AND r.{key} = s.b AND r.{key} >= $lo AND r.{key} <= $hi
)
"""


def merge_rollup_sql(
    rollup: _Rollup, *, source: str = _STAGE, source_key: str = "minute", where: str = ""
) -> str:
    """The merge of ``source``'s aggregates into ``rollup``'s table.

    ``source`` has rollup columns with the bucket in ``source_key``, of a granularity that
    divides ``rollup``'s; ``where`` (SQL) filters its rows.
    """
    return _MERGE_ROLLUP.format(
        t=rollup.table,
        key=rollup.key,
        bucket=_floor_sql(source_key, rollup.width),
        source=source,
        where=f" WHERE {where}" if where else "",
    )


_MINUTES_AS_BUCKETS: Final = f"""
SELECT signal_id, minute AS b, first_ts, last_ts, "first", "last", "min", "max", "sum", i_first,
       i_last, i_min, i_max, i_sum, "count"
FROM {_STAGE}
"""


def merge_buckets_sql(rollup: _Rollup) -> tuple[str, str, str]:
    """Stage ``_buckets`` from ``_minutes``, update the stored ones, insert the others."""
    if rollup.width == _MINUTE:  # the staged minutes are the buckets already
        buckets = _MINUTES_AS_BUCKETS
    else:
        bucket = _floor_sql("minute", rollup.width)
        buckets = _BUCKETS.format(bucket=bucket, source=_STAGE, where="")
    stage = "CREATE OR REPLACE TEMP TABLE _buckets AS " + buckets
    update = _UPDATE_BUCKETS.format(t=rollup.table, key=rollup.key)
    insert = _INSERT_BUCKETS.format(t=rollup.table, key=rollup.key)
    return stage, update, insert


_MERGE_INTO_ROLLUPS: Final[tuple[tuple[str, str, str], ...]] = tuple(
    merge_buckets_sql(r) for r in _ROLLUPS.values()
)

# ---------------------------------------------------------------------------------------
# runs: the run-length encoding of state and counter signals, per minute

_RUNS_DDL: Final = """CREATE TABLE IF NOT EXISTS runs_1m (
    signal_id INTEGER NOT NULL,
    minute BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    last_ts BIGINT NOT NULL,
    quality UTINYINT NOT NULL,
    v_float DOUBLE,
    v_int BIGINT,
    v_bool BOOLEAN,
    v_str VARCHAR,
    "count" BIGINT NOT NULL
)"""

_RUN_ORDER: Final = "ts, quality, v_float, v_int, v_bool, v_str"
"""The order of samples within a run encoding (ties of equal timestamps included)."""

_VALUES: Final = ("quality", "v_float", "v_int", "v_bool", "v_str")


def _differs(fn: str) -> str:
    """SQL: the sample differs from its ``lag`` or ``lead`` neighbour (true at the ends)."""
    parts = [f"{c} IS DISTINCT FROM {fn}({c}) OVER w" for c in _VALUES]
    return f"coalesce({fn}(ts) OVER w IS NULL OR " + " OR ".join(parts) + ", true)"


# The runs of every (signal, minute) of the samples in {source} (a FROM clause whose rows
# have the sample columns): heads and tails of runs are marked in one sorted window pass,
# then each head takes its tail's timestamp and row number (the next kept row, unless it
# is both).
_MINUTE_RUNS: Final = f"""
WITH marked AS (
    SELECT signal_id, minute, ts, quality, v_float, v_int, v_bool, v_str,
           row_number() OVER w AS rn,
           {{head}} AS head,
           {{tail}} AS tail
    FROM (
        SELECT signal_id, {_floor_sql("ts", _MINUTE)} AS minute, ts, quality,
               v_float, v_int, v_bool, v_str
        FROM {{source}}
    )
    WINDOW w AS (PARTITION BY signal_id, minute ORDER BY {_RUN_ORDER} NULLS LAST)
), ends AS (
    SELECT *,
           CASE WHEN tail THEN ts
                ELSE lead(ts) OVER (PARTITION BY signal_id, minute ORDER BY rn) END AS last_ts,
           CASE WHEN tail THEN rn
                ELSE lead(rn) OVER (PARTITION BY signal_id, minute ORDER BY rn) END AS last_rn
    FROM marked
    WHERE head OR tail
)
SELECT signal_id, minute, ts, last_ts, quality, v_float, v_int, v_bool, v_str,
       last_rn - rn + 1 AS "count"
FROM ends
WHERE head
"""


def minute_runs_sql(source: str) -> str:
    """The per-minute runs of the samples in ``source``."""
    return _MINUTE_RUNS.format(source=source, head=_differs("lag"), tail=_differs("lead"))


# On append: the (signal, minute) pairs of the batch's state and counter samples are
# encoded again from all their samples (the batch's rows are already in ``samples``).
_TOUCHED: Final = f"""
CREATE OR REPLACE TEMP TABLE _touched AS
SELECT DISTINCT signal_id, {_floor_sql("ts", _MINUTE)} AS minute
FROM _batch
WHERE list_contains($ids, signal_id)
"""
_TOUCHED_RANGE: Final = "SELECT min(minute), max(minute) FROM _touched"
_DELETE_TOUCHED_RUNS: Final = """
DELETE FROM runs_1m USING _touched t
WHERE runs_1m.signal_id = t.signal_id AND runs_1m.minute = t.minute
  AND runs_1m.minute >= $lo AND runs_1m.minute <= $hi
"""
_INSERT_TOUCHED_RUNS: Final = "INSERT INTO runs_1m " + minute_runs_sql(
    f"""samples s
        WHERE s.ts >= $lo AND s.ts < $hi + {_MINUTE}
          AND EXISTS (SELECT 1 FROM _touched t WHERE t.signal_id = s.signal_id
                      AND t.minute = {_floor_sql("s.ts", _MINUTE)})"""
)

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: _DDL_V1,
    2: (
        _rollup_ddl(_ROLLUPS["1h"]),
        merge_rollup_sql(_ROLLUPS["1h"], source="rollup_1m"),
        _RUNS_DDL,
        "INSERT INTO runs_1m "
        + minute_runs_sql(
            "samples WHERE signal_id IN (SELECT signal_id FROM signals "
            f"WHERE list_contains({sorted(RUN_KINDS)!r}, kind))"
        ),
    ),
    3: (
        "CREATE TABLE IF NOT EXISTS ingested_batches (batch_id VARCHAR PRIMARY KEY, "
        "ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(), rows BIGINT NOT NULL)",
    ),
    4: (_BACKLOG_DDL,),
}
"""Statements that bring the schema from version ``n - 1`` to ``n``."""

# The newest sample of each signal among {source}, merged into `latest`.
_NEWEST: Final = """
SELECT signal_id, max(ts) AS ts, arg_max_null(quality, k) AS quality,
       arg_max_null(v_float, k) AS v_float, arg_max_null(v_int, k) AS v_int,
       arg_max_null(v_bool, k) AS v_bool, arg_max_null(v_str, k) AS v_str
FROM (SELECT *, {order} AS k FROM {source})
GROUP BY signal_id
"""
_MERGE_LATEST: Final = (
    "INSERT INTO latest "
    + _NEWEST
    + """ON CONFLICT (signal_id) DO UPDATE SET
    ts = excluded.ts, quality = excluded.quality, v_float = excluded.v_float,
    v_int = excluded.v_int, v_bool = excluded.v_bool, v_str = excluded.v_str
WHERE excluded.ts >= latest.ts
"""
)
# The bulk form (as for the rollups): update the signals that have a latest row, insert the
# others.
_UPDATE_LATEST: Final = """
UPDATE latest SET ts = n.ts, quality = n.quality, v_float = n.v_float, v_int = n.v_int,
    v_bool = n.v_bool, v_str = n.v_str
FROM _newest n
WHERE latest.signal_id = n.signal_id AND n.ts >= latest.ts
"""
_INSERT_LATEST: Final = """
INSERT INTO latest SELECT * FROM _newest n
WHERE NOT EXISTS (SELECT 1 FROM latest l WHERE l.signal_id = n.signal_id)
"""


def merge_latest_sql(source: str = "pending", *, seq: str = "seq") -> str:
    """The merge of the newest sample per signal of ``source`` into ``latest``."""
    return _MERGE_LATEST.format(source=source, order=_ORDER.format(seq=seq))


# In bulk: the row number of each signal's newest pending row (one integer arg_max: much
# cheaper than carrying every column through the aggregate), then those rows.
_STAGE_NEWEST: Final = f"""
CREATE OR REPLACE TEMP TABLE _newest AS
SELECT signal_id, ts, quality, v_float, v_int, v_bool, v_str FROM pending
WHERE rowid IN (SELECT arg_max(rowid, {_ORDER.format(seq="seq")}) FROM pending GROUP BY signal_id)
"""


# ---------------------------------------------------------------------------------------
# downsample
#
# Parameters: $sid, $s, $e (range, µs), $b (bucket width, µs), $o (origin: a multiple of
# $b at or before $s, so every difference below is non-negative and DuckDB's truncating
# integer division is a floor). Bucket k starts at $o + k * $b, aligned to the epoch.

_RAW_PART: Final = """
SELECT (ts - $o) // $b AS k,
       min(ts) AS first_ts, arg_min(v, ts) AS "first",
       max(ts) AS last_ts, arg_max(v, ts) AS "last",
       min(v) AS mn, max(v) AS mx, sum(v) AS sm, count(*) AS n
FROM (
    SELECT ts, {value} AS v FROM samples
    WHERE signal_id = $sid AND ts >= $s AND ts < $e AND quality >= 64
      AND {value} IS NOT NULL {edge_filter}
)
GROUP BY k
"""

# Rows the rollups cannot answer: the partial minutes at either end of the range, and the
# minutes that contain a bucket boundary. The cheap first test keeps the rows within one
# minute of a boundary b (one modulo per row); the exact second test, evaluated only on
# those, keeps the rows whose minute is b's minute when b is not minute-aligned.
_EDGES: Final = f"""AND (ts < $s_full OR ts >= $e_full OR (
        (ts - $o + {_MINUTE}) % $b < {2 * _MINUTE}
        AND (ts - ((ts % {_MINUTE}) + {_MINUTE}) % {_MINUTE})
            = (ts - ((ts - $o + {_MINUTE}) % $b - {_MINUTE}))
              - (((ts - ((ts - $o + {_MINUTE}) % $b - {_MINUTE})) % {_MINUTE}) + {_MINUTE})
                % {_MINUTE}
        AND ((ts - ((ts - $o + {_MINUTE}) % $b - {_MINUTE})) % {_MINUTE}) <> 0))"""

# Bucket widths that are whole minutes have no straddling minutes: only the range edges.
_EDGES_ALIGNED: Final = "AND (ts < $s_full OR ts >= $e_full)"

# One rollup table's buckets in [lo, hi) that lie wholly inside one downsample bucket.
_ROLLUP_PART: Final = """
SELECT ({key} - $o) // $b AS k,
       min(first_ts) AS first_ts, arg_min({first}, first_ts) AS "first",
       max(last_ts) AS last_ts, arg_max({last}, last_ts) AS "last",
       min({min}) AS mn, max({max}) AS mx, sum({sum}) AS sm, sum("count") AS n
FROM {table}
WHERE signal_id = $sid AND {key} >= {lo} AND {key} < {hi}{extra}
GROUP BY k
"""

# Minutes wholly inside one bucket (always true when the width is whole minutes).
_MINUTE_INSIDE: Final = f" AND (minute - $o) // $b = (minute + {_MINUTE - 1} - $o) // $b"
# With hour rollups in use: the minutes of the whole hours [$h_s, $h_e) come from those.
_NOT_WHOLE_HOURS: Final = " AND NOT (minute >= $h_s AND minute < $h_e)"

_COMBINE: Final = """
SELECT ($o + k * $b) AS bucket,
       arg_min("first", first_ts) AS "first", arg_max("last", last_ts) AS "last",
       min(mn) AS "min", max(mx) AS "max", sum(sm)::DOUBLE / sum(n) AS "avg",
       sum(n)::BIGINT AS "count"
FROM ({parts})
GROUP BY k
ORDER BY k
"""

_RAW_ONLY: Final = """
SELECT ($o + k * $b) AS bucket, "first", "last", mn AS "min", mx AS "max",
       sm::DOUBLE / n AS "avg", n::BIGINT AS "count"
FROM ({raw})
ORDER BY k
"""

_DOWNSAMPLE_VALUE: Final[dict[str, str]] = {
    "float": "v_float",
    "int": "v_int",
    "bool": "v_bool::BIGINT",
}

_ROLLUP_COLUMNS: Final[dict[str, dict[str, str]]] = {
    "float": {"first": '"first"', "last": '"last"', "min": '"min"', "max": '"max"', "sum": '"sum"'},
    "int": {"first": "i_first", "last": "i_last", "min": "i_min", "max": "i_max", "sum": "i_sum"},
}
_ROLLUP_COLUMNS["bool"] = _ROLLUP_COLUMNS["int"]


def _floor(x: int, step: int) -> int:
    return (x // step) * step


def _ceil(x: int, step: int) -> int:
    return -((-x) // step) * step


def downsample_sql(data_type: str, *, use_rollups: bool, aligned: bool, hours: bool = False) -> str:
    """The downsample query for a numeric ``data_type`` (named parameters, see above).

    ``use_rollups`` combines ``rollup_1m`` with the raw rows of partial minutes; ``aligned``
    says the bucket width is a whole number of minutes (no minute straddles a boundary);
    ``hours`` (width a whole number of hours) takes the whole hours ``[$h_s, $h_e)`` from
    ``rollup_1h`` and only the minutes outside them from ``rollup_1m``.
    """
    value = _DOWNSAMPLE_VALUE[data_type]
    if not use_rollups:
        raw = _RAW_PART.format(value=value, edge_filter="")
        return _RAW_ONLY.format(raw=raw)
    raw = _RAW_PART.format(value=value, edge_filter=_EDGES_ALIGNED if aligned else _EDGES)
    columns = _ROLLUP_COLUMNS[data_type]
    minutes = _ROLLUP_PART.format(
        table="rollup_1m",
        key="minute",
        lo="$s_full",
        hi="$e_full",
        extra=_MINUTE_INSIDE + (_NOT_WHOLE_HOURS if hours else ""),
        **columns,
    )
    parts = [raw, minutes]
    if hours:
        parts.append(
            _ROLLUP_PART.format(
                table="rollup_1h", key="hour", lo="$h_s", hi="$h_e", extra="", **columns
            )
        )
    return _COMBINE.format(parts=" UNION ALL ".join(parts))


# read_changes: whole minutes from runs_1m (state and counter signals), the samples of the
# partial minutes at the range edges (of the whole range for other signals, or with a
# maximum gap) as runs of one; the caller joins the runs that continue.
_STORED_RUNS: Final = """
SELECT ts, last_ts, quality, {value} AS value, "count" FROM runs_1m
WHERE signal_id = $sid AND minute >= $s_full AND minute < $e_full
"""
_SAMPLES_AS_RUNS: Final = """
SELECT ts, ts AS last_ts, quality, {value} AS value, 1 AS "count" FROM samples
WHERE signal_id = $sid AND {where}
"""
_ALL: Final = "ts >= $s AND ts < $e"
_EDGES_ONLY: Final = "((ts >= $s AND ts < $s_full) OR (ts >= $e_full AND ts < $e))"


def read_changes_sql(column: str, *, stored: bool) -> str:
    """The runs of one signal, ``value`` from ``column``, in no particular order (see above).

    (Sorting is left to the caller: the rows mostly come in time order already, and checking
    that is cheaper than DuckDB's sort.)
    """
    sql = _SAMPLES_AS_RUNS.format(value=column, where=_EDGES_ONLY if stored else _ALL)
    if stored:
        sql += " UNION ALL " + _STORED_RUNS.format(value=column)
    return sql


_READ_ROLLUPS: Final = """
SELECT {key} AS bucket, first_ts, {first} AS "first", last_ts, {last} AS "last",
       {min} AS "min", {max} AS "max", {sum}::DOUBLE / "count" AS "avg", "count"
FROM {table}
WHERE signal_id = $sid AND {key} >= $s AND {key} < $e
ORDER BY {key}
"""


def _as_ts(column: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """int64 microseconds → :data:`TS_TYPE` (a zero-copy cast)."""
    return column.cast(pa.int64()).cast(TS_TYPE)


class DuckDBHistorian(Historian):
    """The :class:`~shopfloor.historian.base.Historian` on one DuckDB file (or in memory).

    ``path`` is a file path or ``":memory:"``; ``threads`` defaults to the CPU count.
    ``memory_limit`` (DuckDB's setting, e.g. ``"256MB"``; default: DuckDB's own, 80 % of the
    machine's memory) caps DuckDB's buffers: on an edge box that also runs the connectors
    it keeps the process small (measured at the reference ingest load: peak RSS 742 MB with
    ``256MB`` against 890–947 MB without, at the same rate). ``merge_rows`` and ``merge_s``
    say when appended samples are merged into the rollups and latest values at the latest
    (see the module documentation; reads merge first anyway).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        merge_rows: int = 1_000_000,
        merge_s: float = 10.0,
    ) -> None:
        self.path = str(path)
        self.threads = threads or os.cpu_count() or 1
        self.memory_limit = memory_limit
        self.merge_rows = merge_rows
        self.merge_s = merge_s
        self._con: duckdb.DuckDBPyConnection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._by_id: dict[int, tuple[str, str]] = {}
        self._by_path: dict[str, int] = {}
        self._runs: set[int] = set()
        self._columns = np.full(0, -1, np.int8)
        """Index of each signal id's value column in :data:`VALUE_COLUMNS` (-1: no signal)."""
        self._seq = 0
        self._pending_rows = 0
        self._pending_since = 0.0
        self._backlog: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"DuckDBHistorian({self.path!r})"

    # -- plumbing ---------------------------------------------------------------------

    async def _run(self, what: str, fn: Callable[[duckdb.DuckDBPyConnection], _T]) -> _T:
        """Run ``fn(connection)`` in the worker thread; DuckDB errors become HistorianError."""
        if self._con is None or self._executor is None:
            raise HistorianError(f"historian {self.path} is not open")
        con = self._con
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, con)
        except duckdb.Error as exc:
            raise HistorianError(f"{what} failed on {self.path}: {exc}") from exc

    @staticmethod
    def _transaction(con: duckdb.DuckDBPyConnection, fn: Callable[[], _T]) -> _T:
        con.execute("BEGIN TRANSACTION")
        try:
            result = fn()
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return result

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the database file and create or migrate the schema."""
        if self._con is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-historian")
        loop = asyncio.get_running_loop()
        try:
            con = await loop.run_in_executor(executor, self._connect)
        except duckdb.Error as exc:
            executor.shutdown(wait=False)
            raise HistorianError(f"cannot open historian {self.path}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._con, self._executor = con, executor
        await self._run("loading the signal catalog", self._load_catalog)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        config: dict[str, str | bool | int | float | list[str]] = {"threads": self.threads}
        if self.memory_limit is not None:
            config["memory_limit"] = self.memory_limit
        con = duckdb.connect(self.path, config=config)
        try:
            con.execute("SET TimeZone = 'UTC'")
            # a checkpoint rewrites the row groups every merge touched: fewer of them (the
            # default is 16 MB of WAL, a few seconds at 150,000 samples/s) cost less
            con.execute(f"SET checkpoint_threshold = '{_CHECKPOINT_WAL}'")
            self._migrate(con)
            self._recover(con)
            con.execute(_PENDING_DDL)
            self._pending_rows, self._backlog = 0, None
        except BaseException:
            con.close()
            raise
        return con

    @staticmethod
    def _recover(con: duckdb.DuckDBPyConnection) -> None:
        """Bring rollups and latest values up to the samples a crash left unmerged."""
        row = con.execute("SELECT min(lo), max(hi) FROM rollup_backlog").fetchone()
        if row is None or row[0] is None:
            return
        lo, hi = int(row[0]), int(row[1])
        m_lo, m_hi = _floor(lo, _MINUTE), _floor(hi, _MINUTE) + _MINUTE
        h_lo, h_hi = _floor(lo, _HOUR), _floor(hi, _HOUR) + _HOUR
        span = {"lo": m_lo, "hi": m_hi}

        def tx() -> None:
            con.execute("DELETE FROM rollup_1m WHERE minute >= $lo AND minute < $hi", span)
            where = "ts >= $lo AND ts < $hi"
            con.execute(
                "INSERT INTO rollup_1m " + minutes_sql("samples", seq="0", where=where), span
            )
            con.execute(
                "DELETE FROM rollup_1h WHERE hour >= $lo AND hour < $hi", {"lo": h_lo, "hi": h_hi}
            )
            hours = merge_rollup_sql(
                _ROLLUPS["1h"], source="rollup_1m", where="minute >= $lo AND minute < $hi"
            )
            con.execute(hours, {"lo": h_lo, "hi": h_hi})
            newest = f"(SELECT * FROM samples WHERE ts >= {lo} AND ts <= {hi})"
            con.execute(merge_latest_sql(newest, seq="0"))
            con.execute("DELETE FROM rollup_backlog")

        DuckDBHistorian._transaction(con, tx)

    @staticmethod
    def _migrate(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise HistorianError(
                f"the historian file has schema version {current}; this shopfloor reads "
                f"up to {SCHEMA_VERSION}"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            con.execute("BEGIN TRANSACTION")
            try:
                for stmt in _MIGRATIONS[version]:
                    con.execute(stmt)
                con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _load_catalog(self, con: duckdb.DuckDBPyConnection) -> None:
        rows = con.execute("SELECT signal_id, path, data_type, kind FROM signals").fetchall()
        self._by_id, self._by_path, self._runs = {}, {}, set()
        self._columns = np.full(0, -1, np.int8)
        self._learn(rows)

    def _learn(self, rows: Sequence[tuple[Any, Any, Any, Any]]) -> None:
        """Add ``(signal_id, path, data_type, kind)`` rows to the cached catalog."""
        if not rows:
            return
        ids = np.fromiter((int(r[0]) for r in rows), np.int64, len(rows))
        top = int(ids.max()) + 1
        if top > len(self._columns):
            grown = np.full(max(top, 2 * len(self._columns)), -1, np.int8)
            grown[: len(self._columns)] = self._columns
            self._columns = grown
        self._columns[ids] = [_COLUMN_INDEX[str(r[2])] for r in rows]
        for sid, path, data_type, kind in rows:
            self._by_id[int(sid)] = (str(path), str(data_type))
            self._by_path[str(path)] = int(sid)
            if kind in RUN_KINDS:
                self._runs.add(int(sid))

    async def close(self) -> None:
        """Checkpoint and close the file; the historian can be opened again."""
        con, executor = self._con, self._executor
        self._con = self._executor = None
        if con is None or executor is None:
            return
        loop = asyncio.get_running_loop()

        def work() -> None:
            try:
                self._merge(con)
            finally:
                con.close()

        try:
            await loop.run_in_executor(executor, work)
        except duckdb.Error as exc:
            raise HistorianError(f"closing historian {self.path} failed: {exc}") from exc
        finally:
            executor.shutdown(wait=True)

    # -- catalog ----------------------------------------------------------------------

    async def register_signals(self, signals: Sequence[SignalInfo]) -> dict[str, int]:
        """Add signals to the catalog (idempotent); return ``path -> signal_id``.

        One query finds the signals already there, one Arrow insert adds the others and
        returns their ids (150,000 signals take about a second).
        """
        for s in signals:
            if s.data_type not in _DATA_TYPES:
                raise HistorianError(f"signal {s.path}: unknown data type {s.data_type!r}")
        wanted = {s.path: s for s in signals}
        if not wanted:
            return {}
        table = pa.table(
            {
                "path": pa.array(list(wanted), pa.string()),
                "data_type": pa.array([s.data_type for s in wanted.values()], pa.string()),
                "unit": pa.array([s.unit for s in wanted.values()], pa.string()),
                "kind": pa.array([s.kind for s in wanted.values()], pa.string()),
            }
        )
        catalog = "SELECT signal_id, path, data_type, kind FROM signals"

        def work(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
            def tx() -> dict[str, int]:
                (known,) = con.execute("SELECT count(*) FROM signals").fetchone() or (0,)
                if int(known) != len(self._by_id):  # another connection added signals
                    self._load_catalog(con)
                found = con.execute(
                    f"{catalog} WHERE path IN (SELECT path FROM _wanted)"
                ).fetchall()
                clashes = [
                    f"{p} is {t}, not {wanted[p].data_type}"
                    for _, p, t, _ in found
                    if t != wanted[p].data_type
                ]
                if clashes:
                    raise HistorianError(
                        "signal(s) registered with another data type: " + "; ".join(clashes)
                    )
                self._learn(found)
                if len(found) < len(wanted):
                    added = con.execute(
                        "INSERT INTO signals (path, data_type, unit, kind) "
                        "SELECT * FROM _wanted WHERE path NOT IN (SELECT path FROM signals) "
                        "RETURNING signal_id, path, data_type, kind"
                    ).fetchall()
                    self._learn(added)
                return {p: self._by_path[p] for p in wanted}

            con.register("_wanted", table)
            try:
                return self._transaction(con, tx)
            except BaseException:
                self._load_catalog(con)  # what the rolled back transaction taught is void
                raise
            finally:
                con.unregister("_wanted")

        return await self._run("registering signals", work)

    async def signals(self) -> pa.Table:
        """The catalog: ``signal_id, path, data_type, unit, kind``, ordered by id."""
        return await self._run(
            "reading the catalog",
            lambda con: con.sql(
                "SELECT signal_id, path, data_type, unit, kind FROM signals ORDER BY signal_id"
            ).to_arrow_table(),
        )

    def _resolve(self, signal: str | int) -> tuple[int, str, str]:
        """``(signal_id, path, data_type)`` of a signal given by path or id."""
        if isinstance(signal, str):
            sid = self._by_path.get(signal)
            if sid is None:
                raise UnknownSignalError(f"unknown signal {signal!r}")
        else:
            sid = int(signal)
            if sid not in self._by_id:
                raise UnknownSignalError(f"unknown signal id {sid}")
        path, data_type = self._by_id[sid]
        return sid, path, data_type

    # -- samples ----------------------------------------------------------------------

    def _validate(self, table: pa.Table) -> None:
        """Every signal_id is in the catalog and every value sits in its type's column."""
        sid = np.asarray(table.column("signal_id").to_numpy(), np.int64)
        known = self._columns
        inside = (sid >= 0) & (sid < len(known))
        column = np.full(len(sid), -1, np.int8)
        column[inside] = known[sid[inside]]
        if (column < 0).any():
            unknown = np.unique(sid[column < 0])
            shown = ", ".join(str(int(i)) for i in unknown[:20])
            raise HistorianError(f"batch has {len(unknown)} unknown signal id(s): {shown}")
        problems: list[str] = []
        for k, name in enumerate(_COLUMNS):
            values = table.column(name)
            if values.null_count == len(values):
                continue
            valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), np.bool_)
            for i in np.unique(sid[valid & (column != k)]).tolist():
                path, data_type = self._by_id[int(i)]
                problems.append(
                    f"{path} (id {i}) is {data_type} but the batch has values in {name}"
                )
        if problems:
            raise HistorianError("type mismatch: " + "; ".join(problems))

    async def append(self, batch: ReadingBatch) -> int:
        """Store a batch, merge its rollups and latest values in one transaction."""
        n = len(batch)
        if n == 0:
            return 0
        await self._run("append", self._append_work(batch))
        return n

    async def append_once(
        self,
        batch_ids: Sequence[str],
        batch: ReadingBatch,
        dead_letters: pa.Table | None = None,
    ) -> bool:
        """Store readings, dead letters and ``batch_ids`` in one transaction, or nothing."""
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            raise HistorianError("append_once needs at least one batch id")
        letters = None
        if dead_letters is not None and dead_letters.num_rows:
            letters = _conform(dead_letters, DEAD_LETTER_SCHEMA, "dead letters")
        return await self._run("append", self._append_work(batch, ids, letters))

    async def stored_batches(self, batch_ids: Sequence[str]) -> set[str]:
        """Which of ``batch_ids`` :meth:`append_once` has stored."""
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return set()
        rows = await self._run(
            "stored_batches",
            lambda con: con.execute(
                "SELECT batch_id FROM ingested_batches WHERE list_contains($ids, batch_id)",
                {"ids": ids},
            ).fetchall(),
        )
        return {str(i) for (i,) in rows}

    def _append_work(
        self,
        batch: ReadingBatch,
        batch_ids: list[str] | None = None,
        dead_letters: pa.Table | None = None,
    ) -> Callable[[duckdb.DuckDBPyConnection], bool]:
        """The work of an append in the historian's thread: True when it stored the batch.

        With ``batch_ids`` nothing is stored (False) when one of them is recorded already;
        the connection is the only writer, so checking and recording cannot race.
        """
        table = batch.table
        n = int(table.num_rows)
        prepared = table.set_column(1, "ts", table.column("ts").cast(pa.int64()))
        if n:
            span = pc.min_max(prepared.column("ts"))
            lo, hi = int(span["min"].as_py()), int(span["max"].as_py())

        def work(con: duckdb.DuckDBPyConnection) -> bool:
            if n == 0:
                return self._transaction(con, lambda: record(con))
            self._validate(table)
            run_ids: list[int] = []
            if self._runs:
                ids = pc.unique(table.column("signal_id")).to_numpy()
                run_ids = sorted(int(i) for i in ids if int(i) in self._runs)
            con.register("_batch", prepared)
            try:

                def tx() -> bool:
                    if not record(con):
                        return False
                    con.execute(_INSERT_SAMPLES)
                    con.execute(_INSERT_PENDING, {"seq": self._seq + 1})
                    if run_ids:
                        self._encode_touched_minutes(con, run_ids)
                    backlog = self._backlog
                    if backlog is None:
                        con.execute(_SET_BACKLOG, {"lo": lo, "hi": hi})
                    elif lo < backlog[0] or hi > backlog[1]:
                        con.execute(_WIDEN_BACKLOG, {"lo": lo, "hi": hi})
                    return True

                stored = self._transaction(con, tx)
            finally:
                con.unregister("_batch")
            if stored:
                self._seq += 1
                if not self._pending_rows:
                    self._pending_since = time.monotonic()
                self._pending_rows += n
                b = self._backlog
                self._backlog = (lo, hi) if b is None else (min(lo, b[0]), max(hi, b[1]))
                age = time.monotonic() - self._pending_since
                if self._pending_rows >= self.merge_rows or age >= self.merge_s:
                    try:
                        self._merge(con)
                    except duckdb.Error as exc:  # the samples are stored: a read merges again
                        log.warning("merging rollups failed on %s: %s", self.path, exc)
            return stored

        def record(con: duckdb.DuckDBPyConnection) -> bool:
            """Record the batch ids and store the dead letters (in the transaction)."""
            if batch_ids:
                row = con.execute(
                    "SELECT count(*) FROM ingested_batches WHERE list_contains($ids, batch_id)",
                    {"ids": batch_ids},
                ).fetchone()
                if row and row[0]:
                    return False
                con.executemany(
                    "INSERT INTO ingested_batches (batch_id, rows) VALUES (?, ?)",
                    [(i, n) for i in batch_ids],
                )
            if dead_letters is not None:
                con.register("_letters", dead_letters)
                try:
                    con.execute("INSERT INTO dead_letters SELECT * FROM _letters")
                finally:
                    con.unregister("_letters")
            return True

        return work

    @staticmethod
    def _encode_touched_minutes(con: duckdb.DuckDBPyConnection, run_ids: list[int]) -> None:
        """Encode again every minute of ``runs_1m`` the batch has samples of ``run_ids`` in."""
        con.execute(_TOUCHED, {"ids": run_ids})
        (lo, hi), *_ = con.execute(_TOUCHED_RANGE).fetchall()
        bounds = {"lo": lo, "hi": hi}
        con.execute(_DELETE_TOUCHED_RUNS, bounds)
        con.execute(_INSERT_TOUCHED_RUNS, bounds)
        con.execute("DROP TABLE _touched")

    def _merge(self, con: duckdb.DuckDBPyConnection) -> None:
        """Merge ``pending`` into the rollups and latest values (module doc: merging)."""
        if not self._pending_rows:
            return

        def tx() -> None:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_STAGE} AS {minutes_sql()}")
            for stage, update, insert in _MERGE_INTO_ROLLUPS:
                con.execute(stage)
                (lo, hi), *_ = con.execute("SELECT min(b), max(b) FROM _buckets").fetchall()
                con.execute(update, {"lo": lo, "hi": hi})
                con.execute(insert, {"lo": lo, "hi": hi})
            con.execute(f"DROP TABLE {_STAGE}")
            con.execute("DROP TABLE _buckets")
            con.execute(_STAGE_NEWEST)
            con.execute(_UPDATE_LATEST)
            con.execute(_INSERT_LATEST)
            con.execute("DROP TABLE _newest")
            con.execute("DELETE FROM pending")
            con.execute("DELETE FROM rollup_backlog")

        self._transaction(con, tx)
        self._pending_rows, self._backlog = 0, None

    async def merge(self) -> None:
        """Merge the samples appended so far into the rollups and latest values now."""
        await self._run("merging rollups", self._merge)

    async def read_raw(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        *,
        limit: int | None = None,
    ) -> pa.Table:
        """Samples of one signal with ``start <= ts < end`` in time order."""
        sid, _, data_type = self._resolve(signal)
        column = _VALUE_COLUMN[data_type]
        s, e = to_us(start), to_us(end)
        sql = (
            f"SELECT ts, quality, {column} AS value FROM samples "
            "WHERE signal_id = $sid AND ts >= $s AND ts < $e ORDER BY ts"
        )
        params: dict[str, Any] = {"sid": sid, "s": s, "e": e}
        if limit is not None:
            sql += " LIMIT $limit"
            params["limit"] = max(0, int(limit))

        def work(con: duckdb.DuckDBPyConnection) -> pa.Table:
            t = con.sql(sql, params=params).to_arrow_table()
            return pa.table(
                {
                    "ts": _as_ts(t.column("ts")),
                    "quality": t.column("quality").cast(pa.uint8()),
                    "value": t.column("value").cast(_VALUE_TYPE[data_type]),
                }
            )

        return await self._run("read_raw", work)

    async def read_changes(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        *,
        max_gap: timedelta | None = None,
    ) -> pa.Table:
        """The samples of one signal in ``[start, end)`` run-length encoded, in SQL.

        See :meth:`Historian.read_changes`. For state and counter signals (and no
        ``max_gap``) the whole minutes come from the stored ``runs_1m``: a month of a 1 Hz
        machine state is a few ten thousand rows. Otherwise, and for the partial minutes at
        the range edges, the samples are read and encoded here.
        """
        sid, _, data_type = self._resolve(signal)
        column = _VALUE_COLUMN[data_type]
        s, e = to_us(start), to_us(end)
        gap = None if max_gap is None else max_gap // timedelta(microseconds=1)
        if gap is not None and gap < 0:
            raise HistorianError(f"max_gap must not be negative, got {max_gap}")
        params: dict[str, Any] = {"sid": sid, "s": s, "e": e}
        stored = sid in self._runs and gap is None and _ceil(s, _MINUTE) < _floor(e, _MINUTE)
        if stored:
            params["s_full"] = _ceil(s, _MINUTE)
            params["e_full"] = _floor(e, _MINUTE)
        sql = read_changes_sql(column, stored=stored)
        value_type = _VALUE_TYPE[data_type]

        def work(con: duckdb.DuckDBPyConnection) -> pa.Table:
            if e <= s:
                t = pa.table({c: pa.array([], pa.int64()) for c in CHANGES_COLUMNS})
            else:
                t = con.sql(sql, params=params).to_arrow_table().combine_chunks()
            t = merge_runs(_in_run_order(t), max_gap)  # timestamps still int64 µs
            return pa.table(
                {
                    "ts": _as_ts(t.column("ts")),
                    "last_ts": _as_ts(t.column("last_ts")),
                    "quality": t.column("quality").cast(pa.uint8()),
                    "value": t.column("value").cast(value_type),
                    "count": t.column("count").cast(pa.int64()),
                }
            )

        return await self._run("read_changes", work)

    async def downsample(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        bucket: timedelta,
    ) -> pa.Table:
        """Aggregate a numeric signal into epoch-aligned buckets (rollups + partial minutes).

        Minutes wholly inside one bucket and inside ``[start, end)`` come from
        ``rollup_1m`` — whole hours from ``rollup_1h`` when the width is a whole number of
        hours; only the rows of minutes that straddle a bucket boundary or a range edge are
        read raw. Buckets narrower than two minutes are computed from raw rows.
        """
        return await self._downsample(signal, start, end, bucket, use_rollups=True)

    async def downsample_raw(
        self, signal: str | int, start: datetime, end: datetime, bucket: timedelta
    ) -> pa.Table:
        """:meth:`downsample` computed from raw samples only (reference and benchmark)."""
        return await self._downsample(signal, start, end, bucket, use_rollups=False)

    async def _downsample(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        bucket: timedelta,
        *,
        use_rollups: bool,
    ) -> pa.Table:
        sid, path, data_type = self._resolve(signal)
        if data_type not in _DOWNSAMPLE_VALUE:
            raise HistorianError(f"cannot downsample {path}: it is a {data_type} signal")
        b = bucket // timedelta(microseconds=1)
        if b <= 0:
            raise HistorianError(f"bucket width must be positive, got {bucket}")
        s, e = to_us(start), to_us(end)
        out_type = pa.int64() if data_type == "int" else pa.float64()
        if e <= s:
            return _empty_downsample(out_type)
        use_rollups = use_rollups and b >= 2 * _MINUTE
        hours = use_rollups and b % _HOUR == 0
        params: dict[str, Any] = {"sid": sid, "s": s, "e": e, "b": b, "o": _floor(s, b)}
        if use_rollups:
            params["s_full"] = _ceil(s, _MINUTE)
            params["e_full"] = _floor(e, _MINUTE)
        if hours:
            params["h_s"] = _ceil(s, _HOUR)
            params["h_e"] = _floor(e, _HOUR)
        sql = downsample_sql(
            data_type, use_rollups=use_rollups, aligned=b % _MINUTE == 0, hours=hours
        )

        def work(con: duckdb.DuckDBPyConnection) -> pa.Table:
            if use_rollups:
                self._merge(con)
            t = con.sql(sql, params=params).to_arrow_table()
            return pa.table(
                {
                    "bucket": _as_ts(t.column("bucket")),
                    "first": t.column("first").cast(out_type),
                    "last": t.column("last").cast(out_type),
                    "min": t.column("min").cast(out_type),
                    "max": t.column("max").cast(out_type),
                    "avg": t.column("avg").cast(pa.float64()),
                    "count": t.column("count").cast(pa.int64()),
                }
            )

        return await self._run("downsample", work)

    async def rollups(
        self,
        signal: str | int,
        granularity: Granularity,
        start: datetime,
        end: datetime,
    ) -> pa.Table:
        """The stored per-minute or per-hour rollups of a numeric signal, read directly.

        Buckets whose start lies in ``[start, end)``, in order, with
        :data:`~shopfloor.historian.base.ROLLUP_COLUMNS`.
        """
        sid, path, data_type = self._resolve(signal)
        if data_type not in _DOWNSAMPLE_VALUE:
            raise HistorianError(f"{path} has no rollups: it is a {data_type} signal")
        rollup = _ROLLUPS.get(granularity)
        if rollup is None:
            raise HistorianError(
                f"unknown rollup granularity {granularity!r}; use one of {sorted(_ROLLUPS)}"
            )
        out_type = pa.int64() if data_type == "int" else pa.float64()
        sql = _READ_ROLLUPS.format(table=rollup.table, key=rollup.key, **_ROLLUP_COLUMNS[data_type])
        params = {"sid": sid, "s": to_us(start), "e": to_us(end)}

        def work(con: duckdb.DuckDBPyConnection) -> pa.Table:
            self._merge(con)
            t = con.sql(sql, params=params).to_arrow_table()
            value, ts = out_type, TS_TYPE
            kinds = (ts, ts, value, ts, value, value, value, pa.float64(), pa.int64())
            types = dict(zip(ROLLUP_COLUMNS, kinds, strict=True))
            return pa.table(
                {
                    name: _as_ts(t.column(name)) if typ == TS_TYPE else t.column(name).cast(typ)
                    for name, typ in types.items()
                }
            )

        return await self._run("rollups", work)

    async def latest(self, signals: Sequence[str | int] | None = None) -> pa.Table:
        """The newest sample of each signal (all signals with samples when ``None``)."""
        ids = None if signals is None else [self._resolve(s)[0] for s in signals]
        sql = (
            "SELECT l.signal_id, s.path, l.ts, l.quality, l.v_float, l.v_int, l.v_bool, "
            "l.v_str FROM latest l JOIN signals s USING (signal_id)"
        )
        params: dict[str, Any] = {}
        if ids is not None:
            sql += " WHERE list_contains($ids, l.signal_id)"
            params["ids"] = ids
        sql += " ORDER BY l.signal_id"

        def work(con: duckdb.DuckDBPyConnection) -> pa.Table:
            self._merge(con)
            t = con.sql(sql, params=params).to_arrow_table()
            return t.set_column(2, "ts", _as_ts(t.column("ts"))).set_column(
                3, "quality", t.column("quality").cast(pa.uint8())
            )

        return await self._run("latest", work)

    # -- events and dead letters ------------------------------------------------------

    async def append_events(self, events: pa.Table) -> int:
        """Store events; an existing ``event_id`` is replaced (the last one in a batch wins)."""
        table = _conform(events, EVENT_SCHEMA, "events")
        if table.num_rows == 0:
            return 0
        table = table.append_column("_pos", pa.array(range(table.num_rows), pa.int64()))
        names = ", ".join(f'"{f.name}"' for f in EVENT_SCHEMA)

        def work(con: duckdb.DuckDBPyConnection) -> int:
            con.register("_events", table)
            try:
                self._transaction(
                    con,
                    lambda: con.execute(
                        f"INSERT OR REPLACE INTO events SELECT {names} FROM _events "
                        "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _pos DESC) = 1"
                    ),
                )
            finally:
                con.unregister("_events")
            return int(table.num_rows)

        return await self._run("append_events", work)

    async def read_events(
        self,
        start: datetime,
        end: datetime,
        *,
        asset_prefix: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Events overlapping ``[start, end)``, oldest first.

        An event overlaps when it starts before ``end`` and is open, ends after ``start``,
        or starts inside the range. ``asset_prefix`` matches whole path segments.
        """
        sql = (
            "SELECT * FROM events WHERE ts < $end "
            "AND (ts >= $start OR end_ts IS NULL OR end_ts > $start)"
        )
        params: dict[str, Any] = {"start": start, "end": end}
        if asset_prefix is not None:
            prefix = asset_prefix.rstrip("/")
            sql += " AND (asset = $prefix OR starts_with(asset, $prefix_slash))"
            params["prefix"] = prefix
            params["prefix_slash"] = prefix + "/"
        if kinds is not None:
            sql += " AND list_contains($kinds, kind)"
            params["kinds"] = list(kinds)
        sql += " ORDER BY ts, event_id"
        if limit is not None:
            sql += " LIMIT $limit"
            params["limit"] = max(0, int(limit))
        return await self._run(
            "read_events",
            lambda con: con.sql(sql, params=params).to_arrow_table().cast(EVENT_SCHEMA),
        )

    async def append_dead_letters(self, letters: pa.Table) -> int:
        """Store dead letters (:data:`DEAD_LETTER_SCHEMA`)."""
        table = _conform(letters, DEAD_LETTER_SCHEMA, "dead letters")
        if table.num_rows == 0:
            return 0

        def work(con: duckdb.DuckDBPyConnection) -> int:
            con.register("_letters", table)
            try:
                con.execute("INSERT INTO dead_letters SELECT * FROM _letters")
            finally:
                con.unregister("_letters")
            return int(table.num_rows)

        return await self._run("append_dead_letters", work)

    async def read_dead_letters(
        self, since: datetime | None = None, *, limit: int | None = None
    ) -> pa.Table:
        """Dead letters received at or after ``since``, newest first."""
        sql = "SELECT * FROM dead_letters"
        params: dict[str, Any] = {}
        if since is not None:
            sql += " WHERE received_at >= $since"
            params["since"] = since
        sql += " ORDER BY received_at DESC"
        if limit is not None:
            sql += " LIMIT $limit"
            params["limit"] = max(0, int(limit))
        return await self._run(
            "read_dead_letters",
            lambda con: con.sql(sql, params=params).to_arrow_table().cast(DEAD_LETTER_SCHEMA),
        )

    # -- retention --------------------------------------------------------------------

    async def apply_retention(self, older_than: datetime) -> RetentionResult:
        """Delete data older than ``older_than``.

        Samples and minute rollups are cut at the minute that contains ``older_than``
        (floor); hour rollups before the cut are deleted and the hour containing the cut is
        rebuilt from its remaining minutes, so every remaining rollup still summarises
        exactly the remaining samples. Events are deleted when they ended before the cut,
        dead letters when received before it. ``rollups_deleted`` counts the rows removed
        from the rollup tables and ``runs_1m`` (a rebuilt hour is not counted).
        """
        cut = _floor(to_us(older_than), _MINUTE)
        hour = _floor(cut, _HOUR)
        rebuild = merge_rollup_sql(
            _ROLLUPS["1h"], source="rollup_1m", where="minute >= $lo AND minute < $hi"
        )

        def work(con: duckdb.DuckDBPyConnection) -> RetentionResult:
            def count(sql: str, param: Any) -> int:
                row = con.execute(sql, [param]).fetchone()
                return int(row[0]) if row else 0

            def tx() -> RetentionResult:
                samples = count("DELETE FROM samples WHERE ts < ?", cut)
                rollups = count("DELETE FROM rollup_1m WHERE minute < ?", cut)
                rollups += count("DELETE FROM rollup_1h WHERE hour < ?", cut)
                rollups += count("DELETE FROM runs_1m WHERE minute < ?", cut)
                if hour < cut:  # the minutes left of the cut hour make it up again
                    row = con.execute(rebuild, {"lo": hour, "hi": hour + _HOUR}).fetchone()
                    rollups -= int(row[0]) if row else 0
                count("DELETE FROM latest WHERE ts < ?", cut)
                events = count(
                    "DELETE FROM events WHERE end_ts IS NOT NULL AND end_ts < ?", older_than
                )
                letters = count("DELETE FROM dead_letters WHERE received_at < ?", older_than)
                count("DELETE FROM ingested_batches WHERE ingested_at < ?", older_than)
                return RetentionResult(samples, rollups, events, letters)

            self._merge(con)
            return self._transaction(con, tx)

        return await self._run("apply_retention", work)

    async def checkpoint(self) -> None:
        """Write the write-ahead log into the database file."""

        def work(con: duckdb.DuckDBPyConnection) -> None:
            self._merge(con)
            con.execute("CHECKPOINT")

        await self._run("checkpoint", work)


def _in_run_order(runs: pa.Table) -> pa.Table:
    """``runs`` ordered by first timestamp, quality, value (nulls last), as stored runs are.

    Strictly increasing timestamps already are that order (the usual case: no sort).
    """
    ts = np.asarray(runs.column("ts").cast(pa.int64()).to_numpy())
    if ts.size < 2 or bool((ts[1:] > ts[:-1]).all()):
        return runs
    keys = [(name, "ascending", "at_end") for name in ("ts", "quality", "value")]
    return runs.take(pc.sort_indices(runs, options=pc.SortOptions(sort_keys=keys)))


def _empty_downsample(value_type: pa.DataType) -> pa.Table:
    types = [TS_TYPE, value_type, value_type, value_type, value_type, pa.float64(), pa.int64()]
    return pa.schema(list(zip(DOWNSAMPLE_COLUMNS, types, strict=True))).empty_table()


def _conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """``table`` with ``schema``'s columns in order (missing nullable ones become null)."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise HistorianError(
                    f"{what}: column {field.name} has type {col.type}, expected {field.type}"
                ) from exc
        elif field.nullable:
            col = pa.nulls(table.num_rows, field.type)
        else:
            raise HistorianError(f"{what}: missing column {field.name}")
        if not field.nullable and col.null_count:
            raise HistorianError(f"{what}: column {field.name} has {col.null_count} null(s)")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)

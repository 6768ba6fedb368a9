"""Historian benchmark on PostgreSQL: the engine's appends against a raw binary ``COPY``.

The same readings as the DuckDB run (:mod:`shopfloor.bench.historian`), in fresh schemas of
the database the URL names (dropped afterwards):

* **raw** — the batches, binary-encoded beforehand, sent with ``COPY … FROM STDIN (FORMAT
  BINARY)`` into a plain table with the sample columns, one transaction per batch: what the
  server takes in at best. ``raw_indexed`` does the same into a table with the engine's
  ``(signal_id, ts)`` index (for reference: the index is part of what any historian pays);
* **append** — the same batches through :meth:`PostgresHistorian.append` (validation,
  encoding, day partitions, samples, minute and hour rollups and latest values in one
  transaction, via the async interface); ``append_ratio`` = append / raw;
* **downsample** — one signal at 1 Hz into 1,000 buckets with the rollup-based query, and
  the same query done on the raw samples.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

import psycopg
import pyarrow as pa
from psycopg import sql

from shopfloor.bench.historian import (
    APPEND_RATIO_TARGET,
    DOWNSAMPLE_MS_TARGET,
    YEAR_POINTS,
    HistorianBenchConfig,
    Progress,
    measure_downsample,
    reading_batches,
)
from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian._pgbatch import sample_columns
from shopfloor.historian._pgcopy import encode_binary
from shopfloor.historian._postgres import PostgresHistorian, parse_postgres_url
from shopfloor.historian.base import SignalInfo

__all__ = ["run_postgres_historian_bench"]

_RAW_DDL: Final = """CREATE TABLE {} (
    signal_id integer NOT NULL,
    ts bigint NOT NULL,
    quality smallint NOT NULL,
    v_float double precision,
    v_int bigint,
    v_bool boolean,
    v_str text
)"""


async def _raw_copy_rate(
    conninfo: str,
    schema: str,
    payloads: list[bytes],
    rows: int,
    *,
    indexed: bool,
    progress: Progress,
) -> float:
    table = sql.Identifier(schema, "raw_indexed" if indexed else "raw_samples")
    phase = "raw COPY (indexed)" if indexed else "raw COPY"
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(sql.SQL(_RAW_DDL).format(table))
        if indexed:
            await conn.execute(sql.SQL("CREATE INDEX ON {} (signal_id, ts)").format(table))
        query = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(table)
        t0 = time.perf_counter()
        for i, payload in enumerate(payloads):
            async with conn.transaction(), conn.cursor() as cur, cur.copy(query) as copy:
                await copy.write(payload)
            progress(phase, i + 1, len(payloads))
        return rows / (time.perf_counter() - t0)


async def _append_rate(
    url: str, signals: int, batches: list[pa.Table], progress: Progress
) -> float:
    async with PostgresHistorian.from_url(url) as h:
        await h.register_signals([SignalInfo(f"bench/s{i:05d}", "float") for i in range(signals)])
        wrapped = [ReadingBatch(b) for b in batches]
        rows = 0
        t0 = time.perf_counter()
        for i, batch in enumerate(wrapped):
            rows += await h.append(batch)
            progress("append", i + 1, len(wrapped))
        return rows / (time.perf_counter() - t0)


def _with_schema(url: str, schema: str) -> str:
    conninfo, options = parse_postgres_url(url)
    options["schema"] = schema
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{conninfo}{'&' if '?' in conninfo else '?'}{query}"


async def run_postgres_historian_bench(
    cfg: HistorianBenchConfig, url: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the benchmark against the PostgreSQL server of ``url`` and return the figures.

    Every table goes into fresh schemas named after the URL's ``schema`` (default
    ``shopfloor_bench``) and a random suffix; they are dropped at the end.
    """
    report = progress or (lambda phase, done, total: None)
    conninfo, options = parse_postgres_url(url)
    base = str(options.get("schema", "shopfloor_bench"))
    token = secrets.token_hex(4)
    schemas = {k: f"{base}_{token}_{k}" for k in ("raw", "append", "downsample")}
    batches = reading_batches(cfg.rows, cfg.signals, cfg.batch_rows)
    t0 = time.perf_counter()
    payloads = [encode_binary(sample_columns(b)) for b in batches]
    encode_rate = cfg.rows / (time.perf_counter() - t0)
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schemas["raw"])))
            cur = await conn.execute("SHOW server_version")
            row = await cur.fetchone()
            server_version = str(row[0]) if row else "?"
        raw = await _raw_copy_rate(
            conninfo, schemas["raw"], payloads, cfg.rows, indexed=False, progress=report
        )
        raw_indexed = await _raw_copy_rate(
            conninfo, schemas["raw"], payloads, cfg.rows, indexed=True, progress=report
        )
        del payloads
        append_url = _with_schema(url, schemas["append"])
        append = await _append_rate(append_url, cfg.signals, batches, report)
        async with PostgresHistorian.from_url(_with_schema(url, schemas["downsample"])) as h:
            down = await measure_downsample(h, h.downsample_raw, cfg, report, after_load=h.analyze)
            partitioning = h.partitioning
    finally:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            for schema in schemas.values():
                await conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    ratio = append / raw
    full_size = cfg.downsample_points >= YEAR_POINTS
    return {
        "engine": "postgresql",
        "rows": cfg.rows,
        "signals": cfg.signals,
        "batch_rows": cfg.batch_rows,
        "raw_rows_per_s": round(raw),
        "raw_indexed_rows_per_s": round(raw_indexed),
        "append_rows_per_s": round(append),
        "append_ratio": round(ratio, 3),
        "append_ratio_vs_indexed": round(append / raw_indexed, 3),
        "encode_rows_per_s": round(encode_rate),
        **down,
        "targets": {
            "append_ratio_min": APPEND_RATIO_TARGET,
            "downsample_ms_max": DOWNSAMPLE_MS_TARGET,
        },
        "append_ratio_pass": ratio >= APPEND_RATIO_TARGET,
        "downsample_pass": (down["downsample_ms"] <= DOWNSAMPLE_MS_TARGET) if full_size else None,
        "partitioning": partitioning,
        "postgresql_version": server_version,
        "psycopg_version": psycopg.__version__,
        "pyarrow_version": pa.__version__,
    }

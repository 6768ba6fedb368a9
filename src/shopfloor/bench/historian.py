"""Historian benchmark: append throughput against a plain DuckDB insert, and downsampling.

(The PostgreSQL engine's run, ``--store postgresql://…``, is in
:mod:`shopfloor.bench.historian_postgres`; it shares the data and the downsample timing.)

Three measurements in one run, each on its own temporary DuckDB file:

* **raw** — the Arrow batches inserted straight into a plain table with the same columns
  (``INSERT INTO t SELECT * FROM batch``): what DuckDB itself can do;
* **append** — the same batches through :meth:`DuckDBHistorian.append` (validation,
  samples, minute rollups and latest values in one transaction, via the async interface);
* **downsample** — one signal at 1 Hz (a year by default) into 1,000 buckets with the
  rollup-based query, and the same query done naively on the raw samples.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa

from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian._duckdb import DuckDBHistorian
from shopfloor.historian.base import Historian, SignalInfo

__all__ = [
    "APPEND_RATIO_TARGET",
    "DOWNSAMPLE_MS_TARGET",
    "YEAR_POINTS",
    "DownsampleFn",
    "HistorianBenchConfig",
    "Progress",
    "measure_downsample",
    "reading_batches",
    "run_historian_bench",
]

YEAR_POINTS: Final = 31_536_000
"""One year of one signal at 1 Hz."""

APPEND_RATIO_TARGET: Final = 0.5
"""``append_rows_per_s / raw_rows_per_s`` should reach at least this."""

DOWNSAMPLE_MS_TARGET: Final = 150.0
"""A year at 1 Hz into 1,000 buckets should take at most this (full size only)."""

T0: Final = datetime(2025, 1, 1, tzinfo=UTC)
_T0_US: Final = 1_735_689_600_000_000

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called as a phase advances."""


@dataclass(frozen=True, slots=True)
class HistorianBenchConfig:
    """Sizes of a historian benchmark run."""

    rows: int = 2_000_000
    signals: int = 100
    batch_rows: int = 100_000
    downsample_points: int = YEAR_POINTS
    buckets: int = 1000
    runs: int = 5


def reading_batches(rows: int, signals: int, batch_rows: int) -> list[pa.Table]:
    """``rows`` float readings of ``signals`` signals at 1 Hz, in time order, as batches."""
    rng = np.random.default_rng(42)
    per = -(-rows // signals)
    sid = np.tile(np.arange(1, signals + 1, dtype=np.int32), per)[:rows]
    ts = _T0_US + np.repeat(np.arange(per, dtype=np.int64), signals)[:rows] * 1_000_000
    values = np.cumsum(rng.normal(size=rows))
    table = ReadingBatch.from_columns(sid, ts, values).table
    return [table.slice(i, batch_rows) for i in range(0, rows, batch_rows)]


def _year_batches(points: int, signal_id: int, batch_rows: int) -> Iterator[pa.Table]:
    rng = np.random.default_rng(7)
    for start in range(0, points, batch_rows):
        n = min(batch_rows, points - start)
        ts = _T0_US + (start + np.arange(n, dtype=np.int64)) * 1_000_000
        values = 20.0 + rng.normal(size=n)
        yield ReadingBatch.from_columns(np.full(n, signal_id, np.int32), ts, values).table


def _raw_insert_rate(path: Path, batches: list[pa.Table], progress: Progress) -> float:
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "CREATE TABLE samples (signal_id INTEGER NOT NULL, ts TIMESTAMPTZ NOT NULL, "
            "quality UTINYINT NOT NULL, v_float DOUBLE, v_int BIGINT, v_bool BOOLEAN, "
            "v_str VARCHAR)"
        )
        rows = 0
        t0 = time.perf_counter()
        for i, batch in enumerate(batches):
            con.register("arrow_table", batch)
            con.execute("INSERT INTO samples SELECT * FROM arrow_table")
            con.unregister("arrow_table")
            rows += batch.num_rows
            progress("raw insert", i + 1, len(batches))
        return rows / (time.perf_counter() - t0)
    finally:
        con.close()


async def _append_rate(
    path: Path, signals: int, batches: list[pa.Table], progress: Progress
) -> float:
    async with DuckDBHistorian(path) as h:
        await h.register_signals([SignalInfo(f"bench/s{i:05d}", "float") for i in range(signals)])
        rows = 0
        wrapped = [ReadingBatch(b) for b in batches]
        t0 = time.perf_counter()
        for i, batch in enumerate(wrapped):
            rows += await h.append(batch)
            progress("append", i + 1, len(wrapped))
        return rows / (time.perf_counter() - t0)


DownsampleFn = Callable[[str, datetime, datetime, timedelta], Awaitable[pa.Table]]
"""A downsample method: ``(signal, start, end, bucket) -> table``."""


async def measure_downsample(
    h: Historian,
    raw_downsample: DownsampleFn,
    cfg: HistorianBenchConfig,
    progress: Progress,
    *,
    after_load: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    """Load the 1 Hz downsample signal into ``h``, call ``after_load`` (a checkpoint or an
    ANALYZE), then time ``h.downsample`` against ``raw_downsample`` (medians of the runs)."""
    ids = await h.register_signals([SignalInfo("bench/year", "float")])
    sid = ids["bench/year"]
    total = cfg.downsample_points
    done = 0
    for batch in _year_batches(total, sid, 1_000_000):
        done += await h.append(ReadingBatch(batch))
        progress("write downsample data", done, total)
    await after_load()
    end = T0 + timedelta(seconds=total)
    bucket = timedelta(seconds=max(1, total // cfg.buckets))

    async def timed(fn: Any, name: str) -> tuple[float, pa.Table]:
        runs: list[float] = []
        result = await fn("bench/year", T0, end, bucket)  # warm-up
        for k in range(cfg.runs):
            t = time.perf_counter()
            result = await fn("bench/year", T0, end, bucket)
            runs.append((time.perf_counter() - t) * 1000)
            progress(f"downsample ({name})", k + 1, cfg.runs)
        return statistics.median(runs), result

    ms, fast = await timed(h.downsample, "downsample")
    raw_ms, slow = await timed(raw_downsample, "downsample_raw")
    same = (
        fast.num_rows == slow.num_rows
        and fast.column("count").equals(slow.column("count"))
        and all(fast.column(c).equals(slow.column(c)) for c in ("first", "last", "min", "max"))
        and bool(
            np.allclose(fast.column("avg").to_numpy(), slow.column("avg").to_numpy(), rtol=1e-9)
        )
    )
    return {
        "downsample_points": total,
        "downsample_buckets": fast.num_rows,
        "downsample_bucket_s": bucket.total_seconds(),
        "downsample_ms": round(ms, 2),
        "downsample_raw_ms": round(raw_ms, 2),
        "downsample_matches_raw": same,
    }


async def run_historian_bench(
    cfg: HistorianBenchConfig, workdir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the benchmark in ``workdir`` (files are created there) and return the figures."""
    report = progress or (lambda phase, done, total: None)
    batches = reading_batches(cfg.rows, cfg.signals, cfg.batch_rows)
    raw = _raw_insert_rate(workdir / "raw.duckdb", batches, report)
    append = await _append_rate(workdir / "append.duckdb", cfg.signals, batches, report)
    async with DuckDBHistorian(workdir / "downsample.duckdb") as h:
        down = await measure_downsample(h, h.downsample_raw, cfg, report, after_load=h.checkpoint)
    ratio = append / raw
    full_size = cfg.downsample_points >= YEAR_POINTS
    return {
        "engine": "duckdb",
        "rows": cfg.rows,
        "signals": cfg.signals,
        "batch_rows": cfg.batch_rows,
        "raw_rows_per_s": round(raw),
        "append_rows_per_s": round(append),
        "append_ratio": round(ratio, 3),
        **down,
        "targets": {
            "append_ratio_min": APPEND_RATIO_TARGET,
            "downsample_ms_max": DOWNSAMPLE_MS_TARGET,
        },
        "append_ratio_pass": ratio >= APPEND_RATIO_TARGET,
        # The downsample target is defined for the full year; smaller runs are not judged.
        "downsample_pass": (down["downsample_ms"] <= DOWNSAMPLE_MS_TARGET) if full_size else None,
        "duckdb_version": duckdb.__version__,
        "pyarrow_version": pa.__version__,
    }

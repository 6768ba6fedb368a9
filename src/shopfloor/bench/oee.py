"""OEE benchmark: a line's OEE over 30 days of 1 Hz data, against a bare DuckDB scan.

One run on one temporary DuckDB file:

* **build** — the simulator's engine (:class:`~shopfloor.sim.FactorySimulation`) runs a line
  of four stations for ``days`` simulated days at 1 s ticks (three shifts Monday to Friday
  with breaks, a Saturday early shift, planned downtime, random faults, setups, idle waits,
  rejects); every tick writes every station's ``state``, ``good_count`` and
  ``reject_count`` — 1 Hz data, one sample per signal and second, unchanged values
  included — through :meth:`DuckDBHistorian.append` (rollups maintained), a day per batch;
* **oee** — :func:`shopfloor.analytics.oee` for the line over the whole range (one row),
  timed ``runs`` times: *cold* right after reopening the file (DuckDB's buffers empty, the
  OS page cache warm), *warm* on an open historian; the medians are reported;
* **baseline** — in the same run, a bare DuckDB aggregation of the same rows (count, min,
  max and sum per signal of the OEE's three signals over the range) on the same file.

The OEE row is checked against the simulator's ground truth (pieces and running time of
the line's last station) so that a fast wrong answer does not pass.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pyarrow as pa

from shopfloor.analytics import oee
from shopfloor.edge.batch import ReadingBatch, to_us
from shopfloor.historian._duckdb import DuckDBHistorian
from shopfloor.historian.base import SignalInfo
from shopfloor.model import Factory, parse_factory
from shopfloor.sim import STATES, FactorySimulation

__all__ = ["BENCH_FACTORY", "LINE", "OEE_MS_TARGET", "OeeBenchConfig", "run_oee_bench"]

OEE_MS_TARGET: Final = 100.0
"""A line's OEE over 30 days of 1 Hz data should take at most this (full size only)."""

FULL_DAYS: Final = 30.0
"""The size the target is defined for."""

LINE: Final = "acme/munich/body-shop/line-1"
"""The line whose OEE is timed."""

START: Final = datetime(2025, 3, 3, 5, tzinfo=ZoneInfo("Europe/Berlin"))
"""Tick 0: a Monday, 05:00 in Munich; the timed window starts with the early shift at 06:00
(30 days from it include the spring DST change)."""

LEAD_S: Final = 3600
"""Seconds of data before the timed window (its first state and counter values)."""

_SIGNALS: Final = ("state", "good_count", "reject_count")

BENCH_FACTORY: Final = """
types:
  - id: station
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, unit: H87, kind: counter}
      - {name: reject_count, data_type: int, unit: H87, kind: counter}
    attributes: {ideal_cycle_time_s: 20.0, mtbf_min: 90, mttr_min: 6, setup_min: 15,
                 reject_rate: 0.03, idle_rate_per_h: 2, idle_min: 1.5, slowdown: 0.1}
    states: {0: offline, 1: idle, 2: running, 3: starved, 4: blocked, 5: planned_stop,
             6: unplanned_stop, 7: setup}
connections:
  - {name: plc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
enterprise:
  id: acme
  sites:
  - id: munich
    timezone: Europe/Berlin
    calendar:
      shifts:
      - {name: early, start: "06:00", end: "14:00", days: [mon, tue, wed, thu, fri, sat]}
      - {name: late, start: "14:00", end: "22:00", days: [mon, tue, wed, thu, fri]}
      - {name: night, start: "22:00", end: "06:00", days: [mon, tue, wed, thu]}
      breaks:
      - {name: early break, start: "09:30", end: "10:00", shifts: [early]}
      - {name: late break, start: "18:00", end: "18:30", shifts: [late]}
      - {name: night break, start: "02:00", end: "02:30", shifts: [night]}
      planned_downtime:
      - {name: maintenance, start: "2025-03-12T06:00:00+01:00",
         end: "2025-03-12T10:00:00+01:00"}
    areas:
    - id: body-shop
      lines:
      - id: line-1
        equipment:
        - {id: press-1, type: station, connection: plc,
           bindings: {state: s1, good_count: g1, reject_count: r1},
           attributes: {ideal_cycle_time_s: 18.0, reject_rate: 0.01}}
        - {id: weld-1, type: station, connection: plc,
           bindings: {state: s2, good_count: g2, reject_count: r2},
           attributes: {ideal_cycle_time_s: 20.0}}
        - {id: weld-2, type: station, connection: plc,
           bindings: {state: s3, good_count: g3, reject_count: r3},
           attributes: {ideal_cycle_time_s: 19.0, mtbf_min: 60}}
        - {id: assemble-1, type: station, connection: plc,
           bindings: {state: s4, good_count: g4, reject_count: r4},
           attributes: {ideal_cycle_time_s: 21.0, reject_rate: 0.02}}
"""
"""The benchmark's factory: one line of four stations, the last one (21 s) its bottleneck."""

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called as a phase advances."""


@dataclass(frozen=True, slots=True)
class OeeBenchConfig:
    """Sizes of an OEE benchmark run."""

    days: float = FULL_DAYS
    runs: int = 5
    seed: int = 7
    batch_ticks: int = 86_400


@dataclass(frozen=True, slots=True)
class _Truth:
    """The simulator's own counts for the line's last station over the simulated range."""

    good: int
    reject: int
    running_s: float


async def _simulate(
    h: DuckDBHistorian, factory: Factory, cfg: OeeBenchConfig, progress: Progress
) -> tuple[int, int, _Truth]:
    """Run the simulator and store every signal at 1 Hz; return ticks, rows and the truth.

    The sample stamped ``START + k s`` holds the values after ``k`` ticks (tick 0: the
    initial state). The data begin :data:`LEAD_S` before the timed window (as in a
    historian that has older data), so the window ``[START + LEAD_S, + days)`` sees its
    ``ticks`` samples and the last one before it; the truth is what the simulator counted
    between the window's first and last sample.
    """
    sim = FactorySimulation.from_factory(factory, seed=cfg.seed, start=START)
    stations = [s.path for s in sim.stations]
    paths = [f"{p}/{name}" for p in stations for name in _SIGNALS]
    ids = await h.register_signals(
        [SignalInfo(p, "int", kind="state" if p.endswith("/state") else "counter") for p in paths]
    )
    index = {s.path: k for k, s in enumerate(sim.signals)}
    columns = np.array([index[p] for p in paths])
    # engine state index → the station's raw state code (what a PLC would publish)
    decode = {
        j: np.array(
            [int(sim.decode(int(columns[j]), float(x))) for x in range(len(STATES))], np.int64
        )
        for j, p in enumerate(paths)
        if p.endswith("/state")
    }
    sids = np.array([ids[p] for p in paths], dtype=np.int32)
    ticks = max(1, round(cfg.days * 86_400))
    total = LEAD_S + ticks
    start_us = to_us(START)
    last = stations[-1]
    at_start: tuple[dict[str, int], float] = ({"good": 0, "reject": 0}, 0.0)
    rows = done = 0
    while done < total:
        n = min(cfg.batch_ticks, total - done)
        values = np.empty((n, len(paths)), dtype=np.float64)
        for k in range(n):
            if done + k:
                sim.step()
            if done + k == LEAD_S:
                at_start = (sim.production(last), sim.running_seconds(last))
            values[k] = sim.snapshot()[columns]
        ts = start_us + (done + np.arange(n, dtype=np.int64)) * 1_000_000
        ints = np.rint(values).astype(np.int64)
        for j, codes in decode.items():
            ints[:, j] = codes[ints[:, j]]
        batch = ReadingBatch.from_columns(
            np.repeat(sids, n), np.tile(ts, len(paths)), ints.T.reshape(-1)
        )
        rows += await h.append(batch)
        done += n
        progress("simulate and write", done, total)
    prod, (before, run_before) = sim.production(last), at_start
    truth = _Truth(
        good=prod["good"] - before["good"],
        reject=prod["reject"] - before["reject"],
        running_s=sim.running_seconds(last) - run_before,
    )
    return ticks, rows, truth


def _baseline(path: Path, ids: list[int], s_us: int, e_us: int, runs: int) -> float:
    """Median ms of a bare DuckDB aggregation over the OEE's rows (warm)."""
    sql = (
        "SELECT signal_id, count(*), min(v_int), max(v_int), sum(v_int) FROM samples "
        "WHERE list_contains($ids, signal_id) AND ts >= $s AND ts < $e GROUP BY signal_id"
    )
    params = {"ids": ids, "s": s_us, "e": e_us}
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute(sql, params).fetchall()  # warm-up
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            con.execute(sql, params).fetchall()
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def _time_oee(
    path: Path, factory: Factory, start: datetime, end: datetime, cfg: OeeBenchConfig,
    progress: Progress,
) -> tuple[list[float], list[float], dict[str, Any]]:  # fmt: skip
    """Cold runs (each on a freshly opened file) and warm runs; the last result."""
    cold: list[float] = []
    warm: list[float] = []
    row: dict[str, Any] = {}
    for k in range(cfg.runs):
        async with DuckDBHistorian(path) as h:
            t = time.perf_counter()
            table = await oee(h, factory, LINE, start, end)
            cold.append((time.perf_counter() - t) * 1000)
        progress("oee (cold)", k + 1, cfg.runs)
    async with DuckDBHistorian(path) as h:
        table = await oee(h, factory, LINE, start, end)  # warm-up
        for k in range(cfg.runs):
            t = time.perf_counter()
            table = await oee(h, factory, LINE, start, end)
            warm.append((time.perf_counter() - t) * 1000)
            progress("oee (warm)", k + 1, cfg.runs)
    row = table.to_pylist()[0]
    return cold, warm, row


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _reusable(path: Path, cfg: OeeBenchConfig) -> tuple[int, int, float, _Truth] | None:
    """What an earlier build of the same size and seed left in ``path``, if it is there."""
    try:
        meta = json.loads(_meta_path(path).read_text())
    except (OSError, ValueError):
        return None
    if not path.exists() or (meta.get("days"), meta.get("seed")) != (cfg.days, cfg.seed):
        return None
    return int(meta["ticks"]), int(meta["rows"]), float(meta["build_s"]), _Truth(**meta["truth"])


async def run_oee_bench(
    cfg: OeeBenchConfig, workdir: Path, progress: Progress | None = None, *, reuse: bool = False
) -> dict[str, Any]:
    """Build the data in ``workdir`` (a DuckDB file is created there), time, return figures.

    With ``reuse``, a file an earlier run of the same size and seed left in ``workdir`` is
    timed again instead of being rebuilt (the build takes minutes at full size).
    """
    if cfg.days <= 0:
        raise ValueError(f"days must be positive, got {cfg.days}")
    if cfg.runs < 1:
        raise ValueError(f"runs must be at least 1, got {cfg.runs}")
    report = progress or (lambda phase, done, total: None)
    factory = parse_factory(BENCH_FACTORY)
    path = workdir / "oee.duckdb"
    built = _reusable(path, cfg) if reuse else None
    if built is None:
        for stale in (path, path.with_name(path.name + ".wal"), _meta_path(path)):
            stale.unlink(missing_ok=True)
        t0 = time.perf_counter()
        async with DuckDBHistorian(path) as h:
            ticks, rows, truth = await _simulate(h, factory, cfg, report)
            await h.checkpoint()
        build_s = time.perf_counter() - t0
        _meta_path(path).write_text(
            json.dumps(
                {"days": cfg.days, "seed": cfg.seed, "ticks": ticks, "rows": rows,
                 "build_s": build_s, "truth": dataclasses.asdict(truth)}
            )
        )  # fmt: skip
    else:
        ticks, rows, build_s, truth = built
    async with DuckDBHistorian(path) as h:
        catalog = (await h.signals()).to_pylist()
    start = START.astimezone(UTC) + timedelta(seconds=LEAD_S)
    end = start + timedelta(seconds=ticks)  # in UTC: 30 days may cross a DST change
    cold, warm, row = await _time_oee(path, factory, start, end, cfg, report)
    last = [r for r in catalog if r["path"].startswith(f"{LINE}/assemble-1/")]
    base_ms = _baseline(
        path, [int(r["signal_id"]) for r in last], to_us(start), to_us(end), cfg.runs
    )
    cold_ms, warm_ms = statistics.median(cold), statistics.median(warm)
    matches = (
        row["good"] == truth.good
        and row["reject"] == truth.reject
        and abs(row["actual_production_time_s"] - truth.running_s) <= 2.0
    )
    full_size = cfg.days >= FULL_DAYS
    return {
        "days": cfg.days,
        "ticks": ticks,
        "stations": len(catalog) // len(_SIGNALS),
        "signals": len(catalog),
        "rows": rows,
        "build_s": round(build_s, 1),
        "reused": built is not None,
        "oee_ms_cold": round(cold_ms, 2),
        "oee_ms_warm": round(warm_ms, 2),
        "oee_runs_ms_cold": [round(x, 2) for x in cold],
        "oee_runs_ms_warm": [round(x, 2) for x in warm],
        "baseline_scan_ms": round(base_ms, 2),
        "ratio_warm_to_baseline": round(warm_ms / base_ms, 2) if base_ms > 0 else None,
        "oee": row["oee"],
        "availability": row["availability"],
        "performance": row["performance"],
        "quality": row["quality"],
        "good": row["good"],
        "reject": row["reject"],
        "planned_busy_time_s": row["planned_busy_time_s"],
        "matches_simulator": matches,
        "simulator_good": truth.good,
        "simulator_reject": truth.reject,
        "simulator_running_s": truth.running_s,
        "actual_production_time_s": row["actual_production_time_s"],
        "target_ms_max": OEE_MS_TARGET,
        # judged on the cold median, at the full size only
        "pass": (cold_ms <= OEE_MS_TARGET) if full_size else None,
        "duckdb_version": duckdb.__version__,
        "pyarrow_version": pa.__version__,
    }

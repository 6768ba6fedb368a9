"""Shared by the export tests: one simulated week of the ACME Munich factory in DuckDB.

The simulator's engine (:class:`~shopfloor.sim.FactorySimulation`) runs the example
factory's 20 stations at one-minute ticks for seven days; every tick's snapshot of all 147
station signals goes into one NumPy matrix, which is written column by column (one
``ReadingBatch`` per signal, values decoded per distinct value, not per sample). The five
AGVs get NumPy-generated bool, float and string signals. Downtime events come from
:func:`shopfloor.analytics.record_downtime`. Two samples are special: a NaN temperature
and a sample of bad quality.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from shopfloor.analytics import record_downtime
from shopfloor.edge.batch import ReadingBatch, to_us
from shopfloor.export import kpi_assets
from shopfloor.historian import open_historian
from shopfloor.model import Factory, load_factory
from shopfloor.runtime import signal_infos
from shopfloor.sim import FactorySimulation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "acme-munich.yaml"
START = datetime(2025, 11, 17, tzinfo=UTC)  # a Monday
DAYS = 7
END = START + timedelta(days=DAYS)
TICK_S = 60
NAN_SIGNAL = "acme/munich/body-shop/line-1/cell-1/press-7/temperature"
BAD_SIGNAL = "acme/munich/body-shop/line-1/cell-1/press-7/hydraulic_pressure"


@dataclass(frozen=True)
class Week:
    """The historian URL, the factory and what was written."""

    url: str
    factory: Factory
    factory_file: Path
    start: datetime
    end: datetime
    samples: int
    signals: int


def _batches(factory: Factory, ids: dict[str, int]) -> tuple[list[ReadingBatch], int]:
    sim = FactorySimulation.from_factory(factory, seed=11, start=START, tick_s=TICK_S)
    ticks = DAYS * 86_400 // TICK_S
    snap = np.empty((ticks, len(sim.signals)), dtype=np.float64)
    for k in range(ticks):
        if k:
            sim.step()
        snap[k] = sim.snapshot()
    ts = to_us(START) + np.arange(ticks, dtype=np.int64) * TICK_S * 1_000_000
    batches = []
    for j, spec in enumerate(sim.signals):
        column = snap[:, j]
        quality = np.full(ticks, 192, dtype=np.uint8)
        if spec.data_type in ("string", "json") or spec.kind == "state":
            uniq, inverse = np.unique(column, return_inverse=True)
            decoded = [sim.decode(j, float(u)) for u in uniq]
            dtype = object if spec.data_type in ("string", "json") else np.int64
            values = np.array(decoded, dtype=dtype)[inverse]
        elif spec.data_type == "int":
            values = np.rint(column).astype(np.int64)
        else:
            values = column.copy()
        if spec.path == NAN_SIGNAL:
            values[100] = np.nan
        if spec.path == BAD_SIGNAL:
            quality[200] = 0
        batches.append(
            ReadingBatch.from_columns(np.full(ticks, ids[spec.path]), ts, values, quality)
        )
    # the AGVs: bool, float and string signals every 30 s
    rng = np.random.default_rng(5)
    n = DAYS * 86_400 // 30
    agv_ts = to_us(START) + np.arange(n, dtype=np.int64) * 30_000_000
    for agv in (a.path for a in factory.equipment() if a.type == "agv"):
        driving = rng.random(n) < 0.6
        battery = np.clip(100 - np.cumsum(rng.random(n) * 0.01), 0, 100)
        modes = np.array(["AUTOMATIC", "MANUAL", "SERVICE"], dtype=object)[
            (rng.random(n) * 3).astype(int)
        ]
        for name, values in (("driving", driving), ("battery_charge", battery),
                             ("operating_mode", modes)):  # fmt: skip
            batches.append(
                ReadingBatch.from_columns(np.full(n, ids[f"{agv}/{name}"]), agv_ts, values)
            )
    return batches, sum(len(b) for b in batches)


def build_week(tmp: Path) -> Week:
    """Fill a DuckDB historian under ``tmp`` with the simulated week."""
    factory = load_factory(EXAMPLE)
    url = f"duckdb:{tmp / 'week.duckdb'}"

    async def fill() -> tuple[int, int]:
        async with open_historian(url) as h:
            ids = await h.register_signals(signal_infos(factory))
            batches, rows = _batches(factory, ids)
            await h.append(ReadingBatch.concat(batches))
            for path in kpi_assets(factory):
                if factory.asset(path).level == "equipment":
                    await record_downtime(h, factory, path, START, END)
            return rows, len(batches)

    samples, signals = asyncio.run(fill())
    return Week(url, factory, EXAMPLE, START, END, samples, signals)


@pytest.fixture(scope="session")
def week(tmp_path_factory: pytest.TempPathFactory) -> Week:
    """One simulated week in a DuckDB file, built once per session."""
    return build_week(tmp_path_factory.mktemp("week"))


__all__ = ["BAD_SIGNAL", "END", "NAN_SIGNAL", "START", "Week", "build_week", "week"]

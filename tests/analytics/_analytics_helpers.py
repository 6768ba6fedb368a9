"""Shared by the analytics tests: a simulated day written into a DuckDB historian."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian import SignalInfo, open_historian
from shopfloor.model import Factory, parse_factory
from shopfloor.sim import STATES, FactorySimulation

FACTORY = """
types:
  - id: press
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, unit: H87, kind: counter}
      - {name: reject_count, data_type: int, unit: H87, kind: counter}
    attributes: {ideal_cycle_time_s: 20.0, mtbf_min: 45, mttr_min: 4, setup_min: 12,
                 reject_rate: 0.06, idle_rate_per_h: 3, idle_min: 1.5}
    states: {0: offline, 1: idle, 2: running, 3: starved, 4: blocked, 5: planned_stop,
             6: unplanned_stop, 7: setup, 9: unplanned_stop}
  - id: conveyor
    signals:
      - {name: state, data_type: int, kind: state}
    states: {0: offline, 1: idle, 2: running, 3: starved, 4: blocked, 5: planned_stop,
             6: unplanned_stop, 7: setup}
connections:
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4841"}
enterprise:
  id: acme
  sites:
  - id: munich
    timezone: Europe/Berlin
    calendar:
      shifts:
      - {name: early, start: "06:00", end: "14:00", days: [mon, tue, wed, thu, fri]}
      - {name: late, start: "14:00", end: "22:00", days: [mon, tue, wed, thu, fri]}
      breaks:
      - {name: early break, start: "09:30", end: "10:00", shifts: [early]}
      - {name: late break, start: "18:00", end: "18:30", shifts: [late]}
      planned_downtime:
      - name: service
        start: "2025-03-31T12:00:00+02:00"
        end: "2025-03-31T13:00:00+02:00"
        assets: [acme/munich/body-shop/line-1/cell-1/press-2]
    areas:
    - id: body-shop
      lines:
      - id: line-1
        cells:
        - id: cell-1
          equipment:
          - {id: press-1, type: press, connection: opc,
             bindings: {state: s1, good_count: g1, reject_count: r1},
             attributes: {ideal_cycle_time_s: 18.0}}
          - {id: press-2, type: press, connection: opc,
             bindings: {state: s2, good_count: g2, reject_count: r2}}
        equipment:
          - {id: conveyor-1, type: conveyor, connection: opc, bindings: {state: s3}}
"""

BERLIN = ZoneInfo("Europe/Berlin")
DAY_START = datetime(2025, 3, 31, 0, 0, tzinfo=BERLIN)  # a Monday, the day after DST began
TICK_S = 1.0
TICKS = 86_400


@dataclass(frozen=True)
class SimulatedDay:
    """The historian file, the factory and the simulator's ground truth after the day."""

    url: str
    factory: Factory
    factory_file: Path
    start: datetime
    end: datetime
    production: dict[str, dict[str, int]]
    running_s: dict[str, float]


def _changes(values: np.ndarray) -> np.ndarray:
    keep = np.ones(values.shape[0], dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return keep


@pytest.fixture(scope="session")
def simulated_day(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDay:
    """One simulated day at 1 s ticks; samples stamped with the simulated time of the tick."""
    factory = parse_factory(FACTORY)
    sim = FactorySimulation.from_factory(factory, seed=7, start=DAY_START, tick_s=TICK_S)
    paths = [s.path for s in sim.stations]
    ts = np.empty(TICKS + 1, dtype=np.int64)
    codes = np.empty((TICKS + 1, len(paths)), dtype=np.int64)
    good = np.zeros((TICKS + 1, len(paths)), dtype=np.int64)
    reject = np.zeros((TICKS + 1, len(paths)), dtype=np.int64)
    start_us = int(DAY_START.timestamp()) * 1_000_000
    for k in range(TICKS + 1):
        if k:
            sim.step()
        # the value after a tick is published at the simulated time of that tick
        ts[k] = start_us + round(sim.elapsed_s * 1_000_000)
        codes[k] = sim.state_codes()
        for j, p in enumerate(paths):
            prod = sim.production(p)
            good[k, j], reject[k, j] = prod["good"], prod["reject"]
    url = f"duckdb:{tmp_path_factory.mktemp('analytics') / 'day.duckdb'}"

    async def fill() -> None:
        async with open_historian(url) as h:
            infos = []
            for p in paths:
                infos.append(SignalInfo(f"{p}/state", "int", kind="state"))
                if factory.asset(p).type == "press":
                    infos.append(SignalInfo(f"{p}/good_count", "int", kind="counter"))
                    infos.append(SignalInfo(f"{p}/reject_count", "int", kind="counter"))
            ids = await h.register_signals(infos)
            batches = []
            for j, p in enumerate(paths):
                raw = {std: int(code) for code, std in reversed(factory.state_map(p).items())}
                raw_codes = np.array([raw[STATES[c]] for c in codes[:, j]], dtype=np.int64)
                keep = _changes(raw_codes)
                batches.append(
                    ReadingBatch.from_columns(
                        np.full(int(keep.sum()), ids[f"{p}/state"]), ts[keep], raw_codes[keep]
                    )
                )
                for name, arr in (("good_count", good), ("reject_count", reject)):
                    if f"{p}/{name}" in ids:
                        keep = _changes(arr[:, j])
                        batches.append(
                            ReadingBatch.from_columns(
                                np.full(int(keep.sum()), ids[f"{p}/{name}"]),
                                ts[keep],
                                arr[keep, j],
                            )
                        )
            await h.append(ReadingBatch.concat(batches))

    asyncio.run(fill())
    factory_file = tmp_path_factory.mktemp("factory") / "factory.yaml"
    factory_file.write_text(FACTORY)
    return SimulatedDay(
        url=url,
        factory=factory,
        factory_file=factory_file,
        start=DAY_START,
        end=sim.now + timedelta(seconds=TICK_S),
        production={p: sim.production(p) for p in paths},
        running_s={p: sim.running_seconds(p) for p in paths},
    )

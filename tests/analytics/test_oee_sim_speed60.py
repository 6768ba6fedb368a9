"""Acceptance, end to end: the simulator served over OPC UA at ×60 for one simulated shift,
ingested by the runtime into a DuckDB historian; the computed OEE equals the OEE recomputed
from the simulator's own counts within 0.5 percentage points. (About 8 minutes: slow.)"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shopfloor.analytics import oee
from shopfloor.historian import open_historian
from shopfloor.model import parse_factory
from shopfloor.runtime import Runtime
from shopfloor.sim import Simulator

LINE = "acme/munich/body-shop/line-1"
PRESSES = {f"{LINE}/press-1": 18.0, f"{LINE}/press-2": 20.0}


def _factory_yaml() -> str:
    equipment = []
    for path, ict in PRESSES.items():
        name = path.rsplit("/", 1)[1]
        bindings = ", ".join(
            f"{s}: 'ns=2;s={path}/{s}'" for s in ("state", "good_count", "reject_count")
        )
        equipment.append(
            f"        - {{id: {name}, type: press, connection: opc, bindings: {{{bindings}}},\n"
            f"           attributes: {{ideal_cycle_time_s: {ict}}}}}"
        )
    return (
        """
types:
  - id: press
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, kind: counter}
      - {name: reject_count, data_type: int, kind: counter}
    attributes: {ideal_cycle_time_s: 20.0, mtbf_min: 40, mttr_min: 4, setup_min: 12,
                 reject_rate: 0.05, idle_rate_per_h: 3, idle_min: 1.5}
    states: {0: offline, 1: idle, 2: running, 3: starved, 4: blocked, 5: planned_stop,
             6: unplanned_stop, 7: setup}
connections:
  # every change reported: at x60 a one-second sampling would see one value a minute
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4840",
     options: {publishing_interval_ms: 100, sampling_interval_ms: 0, queue_size: 1000}}
enterprise:
  id: acme
  sites:
  - id: munich
    timezone: UTC
    calendar:
      shifts:
      - {name: early, start: "06:00", end: "14:00"}
      breaks:
      - {name: lunch, start: "09:30", end: "10:00"}
    areas:
    - id: body-shop
      lines:
      - id: line-1
        equipment:
"""
        + "\n".join(equipment)
        + "\n"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SHIFT = (datetime(2025, 5, 5, 6, tzinfo=UTC), datetime(2025, 5, 5, 14, tzinfo=UTC))
PBT_S = 7.5 * 3600
TOLERANCE = 0.005  # 0.5 percentage points


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_one_shift_at_speed_60_matches_the_simulator(tmp_path: Path) -> None:
    factory = parse_factory(_factory_yaml())
    endpoints = {"opc": f"opc.tcp://127.0.0.1:{_free_port()}"}
    start = SHIFT[0] - timedelta(minutes=3)  # off shift: nothing runs before 06:00
    async with (
        Simulator(
            factory,
            speed=60,
            seed=11,
            start=start,
            endpoint_override=endpoints,
            publish_interval_s=1 / 60,  # every simulated second
        ) as sim,
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h,
        Runtime(factory, h, endpoint_override=endpoints) as rt,
    ):
        deadline = time.monotonic() + 900
        while sim.now < SHIFT[1] + timedelta(minutes=2):  # off shift again: nothing runs
            assert time.monotonic() < deadline, f"the simulation is at {sim.now} only"
            await asyncio.sleep(1.0)
        sim.pause()
        await sim.publish()
        expected = sim.counters()
        for _ in range(100):  # the last values reach the historian
            latest = {r["path"]: r["v_int"] for r in (await h.latest(list(expected))).to_pylist()}
            if latest == expected:
                break
            await asyncio.sleep(0.2)
        assert latest == expected
        truth = {p: (sim.engine.production(p), sim.engine.running_seconds(p)) for p in PRESSES}
        rows = {p: (await oee(h, factory, p, *SHIFT)).to_pylist()[0] for p in [*PRESSES, LINE]}
        assert rt.pipeline is not None
        assert rt.pipeline.stats.dead_letters == 0
    for path, ict in PRESSES.items():
        prod, running_s = truth[path]
        assert prod["cycles"] > 500, "the shift produced"
        row = rows[path]
        assert (row["good"], row["reject"]) == (prod["good"], prod["reject"])
        assert row["planned_busy_time_s"] == PBT_S
        a, p = running_s / PBT_S, ict * prod["cycles"] / running_s
        q = prod["good"] / prod["cycles"]
        assert abs(row["availability"] - a) <= TOLERANCE
        assert abs(row["performance"] - p) <= TOLERANCE
        assert row["quality"] == pytest.approx(q, rel=1e-12)
        assert abs(row["oee"] - ict * prod["good"] / PBT_S) <= TOLERANCE
        assert abs(row["oee"] - a * p * q) <= TOLERANCE
    # the line: its last station's output at its bottleneck's rate
    last, _ = truth[f"{LINE}/press-2"]
    assert abs(rows[LINE]["oee"] - 20.0 * last["good"] / PBT_S) <= TOLERANCE

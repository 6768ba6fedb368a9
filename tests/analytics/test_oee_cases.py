"""OEE on hand-computed cases (a shift with a break, a counter reset, states spanning the
window's edges, a machine offline all shift), stored change-only and at 1 Hz, as state and
counter signals (read from the per-minute runs) and as plain measurements (read raw); and a
property test on physically consistent random data: A × P × Q = OEE, each in [0, 1]."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.analytics import oee
from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian import SignalInfo, open_historian
from shopfloor.historian.base import Historian
from shopfloor.model import parse_factory

FACTORY = """
types:
  - id: m
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, kind: counter}
      - {name: reject_count, data_type: int, kind: counter}
    attributes: {ideal_cycle_time_s: 20.0}
    states: {0: offline, 1: idle, 2: running, 6: unplanned_stop, 7: setup}
connections:
  - {name: c, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4841"}
enterprise:
  id: e
  sites:
  - id: s
    timezone: UTC
    calendar:
      shifts:
      - {name: early, start: "06:00", end: "14:00", days: [mon, tue, wed, thu, fri]}
      breaks:
      - {name: lunch, start: "09:30", end: "10:00", shifts: [early]}
    areas:
    - id: a
      lines:
      - id: l
        equipment:
        - {id: m1, type: m, connection: c, bindings: {state: a, good_count: b, reject_count: c}}
        - {id: m2, type: m, connection: c, bindings: {state: d, good_count: e, reject_count: f}}
"""
M1, M2 = "e/s/a/l/m1", "e/s/a/l/m2"
DAY = datetime(2025, 5, 5, tzinfo=UTC)  # a Monday
SHIFT = (DAY + timedelta(hours=6), DAY + timedelta(hours=14))


def _at(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 3600 + int(m) * 60


# m1: set up from before the shift (spans the window's start), running, a 10 min fault,
# running through the lunch break, idle from 13:50 until after the shift (spans its end).
M1_STATE = [("05:50", 7), ("06:20", 2), ("09:00", 6), ("09:10", 2), ("13:50", 1), ("14:30", 1)]
# a reset to 0 at 09:05 (the counter then counts up to 20 by the next sample)
M1_GOOD = [("05:55", 1000), ("07:00", 1100), ("08:00", 1250), ("09:05", 20), ("11:00", 400)]
M1_GOOD += [("13:59", 700), ("14:30", 700)]
M1_REJECT = [("05:55", 5), ("12:00", 15), ("14:30", 15)]
# m2: offline (its raw code 0) from before the shift until after it, counters standing still
M2_STATE = [("05:00", 0), ("15:00", 0)]
M2_GOOD = [("05:00", 77), ("15:00", 77)]
M2_REJECT = [("05:00", 3), ("15:00", 3)]

PBT = 8 * 3600 - 30 * 60
APT = (_at("09:00") - _at("06:20")) + (_at("13:50") - _at("09:10")) - 30 * 60
GOOD = 100 + 150 + 20 + 380 + 300
REJECT = 10


def _series(points: list[tuple[str, int]], every_second: bool) -> tuple[np.ndarray, np.ndarray]:
    """Change-only samples, or one per second holding the last value (1 Hz data)."""
    t = np.array([_at(p) for p, _ in points], np.int64)
    v = np.array([x for _, x in points], np.int64)
    if not every_second:
        return t, v
    grid = np.arange(t[0], t[-1] + 1, dtype=np.int64)
    return grid, v[np.searchsorted(t, grid, side="right") - 1]


async def _store(h: Historian, kinds: bool, every_second: bool) -> None:
    names = {"state": "state", "good_count": "counter", "reject_count": "counter"}
    infos = [
        SignalInfo(f"{m}/{n}", "int", kind=k if kinds else "measurement")
        for m in (M1, M2)
        for n, k in names.items()
    ]
    ids = await h.register_signals(infos)
    data = {
        M1: {"state": M1_STATE, "good_count": M1_GOOD, "reject_count": M1_REJECT},
        M2: {"state": M2_STATE, "good_count": M2_GOOD, "reject_count": M2_REJECT},
    }
    day_us = int(DAY.timestamp()) * 1_000_000
    parts = []
    for m, signals in data.items():
        for name, points in signals.items():
            t, v = _series(points, every_second)
            sid = np.full(t.size, ids[f"{m}/{name}"])
            parts.append(ReadingBatch.from_columns(sid, day_us + t * 1_000_000, v))
    batch = ReadingBatch.concat(parts)
    # in two appends, the later one first: out of order
    half = batch.table.num_rows // 2
    await h.append(ReadingBatch(batch.table.slice(half)))
    await h.append(ReadingBatch(batch.table.slice(0, half)))


@pytest.mark.parametrize("kinds", [True, False], ids=["state-counter", "measurement"])
@pytest.mark.parametrize("every_second", [False, True], ids=["changes", "1hz"])
async def test_hand_computed_shift(kinds: bool, every_second: bool) -> None:
    factory = parse_factory(FACTORY)
    async with open_historian("duckdb::memory:") as h:
        await _store(h, kinds, every_second)
        m1 = (await oee(h, factory, M1, *SHIFT)).to_pylist()[0]
        m2 = (await oee(h, factory, M2, *SHIFT)).to_pylist()[0]
        by_hour = await oee(h, factory, M1, *SHIFT, by="hour")
    assert m1["planned_busy_time_s"] == PBT == 27_000
    assert m1["actual_production_time_s"] == APT == 24_600
    assert (m1["good"], m1["reject"], m1["produced"]) == (GOOD, REJECT, 960)
    assert m1["availability"] == pytest.approx(24_600 / 27_000)
    assert m1["performance"] == pytest.approx(20 * 960 / 24_600)
    assert m1["quality"] == pytest.approx(950 / 960)
    assert m1["oee"] == pytest.approx(20 * 950 / 27_000)
    assert m1["oee"] == pytest.approx(m1["availability"] * m1["performance"] * m1["quality"])
    # the lunch hour has 30 min of PBT; the reset is booked in the 09:00 hour
    hours = {r["window_start"].hour: r for r in by_hour.to_pylist()}
    assert hours[9]["planned_busy_time_s"] == 1800
    assert hours[9]["actual_production_time_s"] == 1800 - 600  # the fault from 09:00 to 09:10
    assert hours[9]["good"] == 20
    assert sum(r["good"] for r in hours.values()) == GOOD
    # offline all shift: planned time lost entirely, nothing produced
    assert (m2["planned_busy_time_s"], m2["actual_production_time_s"]) == (PBT, 0)
    assert (m2["availability"], m2["oee"]) == (0, 0)
    assert (m2["performance"], m2["quality"], m2["good"], m2["reject"]) == (None, None, 0, 0)


async def test_bad_quality_all_shift_is_offline() -> None:
    """Samples that say "running" but with bad quality prove nothing: offline."""
    factory = parse_factory(FACTORY)
    async with open_historian("duckdb::memory:") as h:
        sid = await h.register_signals([SignalInfo(f"{M2}/state", "int", kind="state")])
        t = np.arange(_at("05:00"), _at("15:00"), 60, dtype=np.int64)
        ts = int(DAY.timestamp()) * 1_000_000 + t * 1_000_000
        batch = ReadingBatch.from_columns(
            np.full(t.size, sid[f"{M2}/state"]), ts, np.full(t.size, 2)
        )
        quality = batch.table.schema.field("quality")
        bad = batch.table.set_column(2, quality, pa.array(np.full(t.size, 0x18), pa.uint8()))
        await h.append(ReadingBatch(bad))
        row = (await oee(h, factory, M2, *SHIFT)).to_pylist()[0]
    assert (row["planned_busy_time_s"], row["actual_production_time_s"], row["oee"]) == (PBT, 0, 0)


# ------------------------------------------------------------------ property test
ICT = 20


@st.composite
def _day(
    draw: st.DrawFn,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]:
    """Random states over 05:00–15:00 (minute resolution); pieces only while running within
    the planned time, one at most every ICT s of running: a physically possible machine."""
    t = _at("05:00")
    states: list[tuple[int, int]] = []
    while t < _at("15:00"):
        states.append((t, draw(st.sampled_from([0, 1, 2, 2, 2, 6, 7]))))
        t += 60 * draw(st.integers(1, 90))
    pbt = [(a, b) for a, b in ((_at("06:00"), _at("09:30")), (_at("10:00"), _at("14:00")))]
    good = [(_at("05:00"), draw(st.integers(0, 1000)))]
    reject = [(_at("05:00"), 0)]
    running_since = None
    for (a, code), (b, _) in zip(states, [*states[1:], (_at("15:00"), 0)], strict=True):
        for lo, hi in pbt:
            x, y = max(a, lo), min(b, hi)
            if code != 2 or y <= x:
                continue
            running_since = x
            while running_since + ICT <= y:
                running_since += ICT * draw(st.integers(1, 3))
                if running_since > y:
                    break
                if draw(st.integers(0, 9)) == 0:
                    reject.append((running_since, reject[-1][1] + 1))
                elif draw(st.integers(0, 30)) == 0:
                    good.append((running_since, 1))  # a reset: this piece counted from 0
                else:
                    good.append((running_since, good[-1][1] + 1))
    return states, good, reject


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(day=_day(), kinds=st.booleans())
def test_factors_multiply_to_oee_and_stay_in_range(
    day: tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]], kinds: bool
) -> None:
    states, good, reject = day
    factory = parse_factory(FACTORY)

    async def run() -> dict[str, float]:
        async with open_historian("duckdb::memory:") as h:
            kind = {"state": "state", "good_count": "counter", "reject_count": "counter"}
            ids = await h.register_signals(
                [
                    SignalInfo(f"{M1}/{n}", "int", kind=k if kinds else "measurement")
                    for n, k in kind.items()
                ]
            )
            day_us = int(DAY.timestamp()) * 1_000_000
            parts = []
            for name, points in (("state", states), ("good_count", good), ("reject_count", reject)):
                t = np.array([p for p, _ in points], np.int64)
                v = np.array([x for _, x in points], np.int64)
                parts.append(
                    ReadingBatch.from_columns(
                        np.full(t.size, ids[f"{M1}/{name}"]), day_us + t * 1_000_000, v
                    )
                )
            await h.append(ReadingBatch.concat(parts))
            return dict((await oee(h, factory, M1, *SHIFT)).to_pylist()[0])

    row = asyncio.run(run())
    a, p, q, total = row["availability"], row["performance"], row["quality"], row["oee"]
    assert a is not None
    assert total is not None
    assert 0 <= a <= 1
    assert 0 <= total <= 1
    if row["produced"]:
        assert p is not None
        assert q is not None
        assert 0 <= p <= 1 + 1e-12
        assert 0 <= q <= 1
        assert total == pytest.approx(a * p * q, rel=1e-12, abs=1e-15)
    elif row["actual_production_time_s"]:
        assert (p, q, total) == (0, None, 0)

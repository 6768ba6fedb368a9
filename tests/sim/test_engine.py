"""The pure engine: determinism, line coupling, calendars, counters, failure statistics."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shopfloor.sim import STATES, FactorySimulation, ShiftCalendar, SignalSpec, StationSpec

START = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)  # a Monday
TYPES = ("press", "welding-robot", "welding-robot", "conveyor", "press")


def line(n: int = 5, **attrs: object) -> list[StationSpec]:
    return [
        StationSpec.with_defaults(f"l1/s{i}", TYPES[i % len(TYPES)], line="l1", **attrs)
        for i in range(n)
    ]


def machine_signals(stations: list[StationSpec]) -> list[SignalSpec]:
    out: list[SignalSpec] = []
    for s in stations:
        for name, dtype, kind, unit, low, high in (
            ("state", "int", "state", None, None, None),
            ("good_count", "int", "counter", None, None, None),
            ("reject_count", "int", "counter", None, None, None),
            ("energy", "float", "counter", "KWH", None, None),
            ("temperature", "float", "measurement", "CEL", 0.0, 120.0),
            ("pressure", "float", "measurement", "BAR", 0.0, 250.0),
            ("pressure_setpoint", "float", "setpoint", "BAR", 0.0, 250.0),
        ):
            out.append(SignalSpec(f"{s.path}/{name}", s.path, name, dtype, kind, unit, low, high))
    return out


def trace(sim: FactorySimulation, ticks: int) -> tuple[np.ndarray, np.ndarray]:
    states = np.empty((ticks, len(sim.stations)), dtype=np.int64)
    snaps = np.empty((ticks, len(sim.signals)))
    for t in range(ticks):
        sim.step()
        states[t] = sim.state_codes()
        snaps[t] = sim.snapshot()
    return states, snaps


def test_same_seed_same_run_however_it_is_stepped() -> None:
    stations = line()
    a = FactorySimulation(stations, machine_signals(stations), seed=7, start=START)
    b = FactorySimulation(stations, machine_signals(stations), seed=7, start=START)
    states_a, snaps_a = trace(a, 4 * 3600)
    # the other one in uneven chunks: the result depends on ticks only
    sizes = [1, 17, 500, 3, 2000]
    done = 0
    while done < 4 * 3600:
        n = min(sizes[done % len(sizes)], 4 * 3600 - done)
        b.step(n)
        done += n
    assert np.array_equal(states_a[-1], b.state_codes())
    assert np.array_equal(snaps_a[-1], b.snapshot())
    assert a.counters() == b.counters()
    assert len({STATES[c] for c in np.unique(states_a)}) >= 4  # it does something


def test_another_seed_another_run() -> None:
    stations = line()
    a = FactorySimulation(stations, machine_signals(stations), seed=1, start=START)
    b = FactorySimulation(stations, machine_signals(stations), seed=2, start=START)
    a.advance(3600)
    b.advance(3600)
    assert a.counters() != b.counters()


def quiet(n: int = 5, **attrs: object) -> list[StationSpec]:
    """A line without random failures, waits or setups: only what a test injects."""
    base: dict[str, object] = {
        "mtbf_min": math.inf,
        "idle_rate_per_h": 0.0,
        "setup_min": 0.0,
        "buffer_capacity": 2,
    }
    base.update(attrs)
    return line(n, **base)


def test_fault_starves_downstream_and_blocks_upstream() -> None:
    stations = quiet(ideal_cycle_time_s=10.0, slowdown=0.0)
    sim = FactorySimulation(stations, seed=3, start=START)
    sim.advance(600)
    assert set(sim.states().values()) <= {"running", "blocked", "starved"}
    sim.inject_fault("l1/s2", 3600)
    assert sim.state_of("l1/s2") != "unplanned_stop"  # takes effect with the next tick
    sim.step()
    assert sim.state_of("l1/s2") == "unplanned_stop"
    # downstream: at most the parts in the buffer before it (and one in process) remain
    bound = (2 + 2) * 10 + 5
    for _t in range(bound):
        sim.step()
        if sim.state_of("l1/s3") == "starved" and sim.state_of("l1/s1") == "blocked":
            break
    else:
        pytest.fail(f"no starved/blocked within {bound} s: {sim.states()}")
    assert sim.buffer_level("l1/s2") == 0  # the buffer after the stopped station drained
    assert sim.buffer_level("l1/s1") == 2  # the buffer before it is full
    # the whole line behind backs up, the rest runs dry
    sim.advance(300)
    assert sim.state_of("l1/s0") == "blocked"
    assert sim.state_of("l1/s4") == "starved"
    # repaired: the line recovers
    sim.advance(3600)
    assert sim.state_of("l1/s2") != "unplanned_stop"
    sim.advance(120)
    assert "running" in sim.states().values()


def test_counters_monotonic_and_good_plus_reject_equals_cycles() -> None:
    stations = line(reject_rate=0.1)
    signals = machine_signals(stations)
    sim = FactorySimulation(stations, signals, seed=11, start=START)
    before = sim.counters()
    for _ in range(60):
        sim.advance(120)
        now = sim.counters()
        assert all(now[k] >= before[k] for k in now)
        before = now
    energy = [k for k, s in enumerate(signals) if s.name == "energy"]
    assert all(sim.snapshot()[k] > 0 for k in energy)
    for s in stations:
        p = sim.production(s.path)
        assert p["good"] + p["reject"] == p["cycles"]
        assert before[f"{s.path}/good_count"] == p["good"]
        assert before[f"{s.path}/reject_count"] == p["reject"]
        assert 0.05 < p["reject"] / p["cycles"] < 0.15
    # a downstream station never makes more than its upstream neighbour passed on good
    # plus the initial work in process (buffers start half full: 3 // 2 = 1 part)
    for up, down in itertools.pairwise(stations):
        assert sim.production(down.path)["cycles"] <= sim.production(up.path)["good"] + 1


def test_actual_cycle_time_follows_ideal_and_slowdown() -> None:
    (station,) = quiet(1, ideal_cycle_time_s=10.0, slowdown=0.1, reject_rate=0.0)
    sim = FactorySimulation([station], seed=5, start=START)
    sim.advance(10 * 3600)
    cycles = sim.production(station.path)["cycles"]
    mean = 10 * 3600 / cycles
    assert 10.5 < mean < 12.0  # 10 s × (1 + 0.1 mean slowdown) + tick rounding


def test_breaks_and_off_shift_from_the_calendar() -> None:
    cal = ShiftCalendar.from_spec(
        "Europe/Berlin",
        shifts=[{"name": "early", "start": "06:00", "end": "14:00", "days": ["mon", "tue"]}],
        breaks=[{"name": "lunch", "start": "10:00", "end": "10:30"}],
    )
    stations = quiet(3, calendar=cal, setup_min=5.0)
    signals = machine_signals(stations)
    start = datetime(2025, 1, 6, 4, 0, tzinfo=UTC)  # 05:00 in Berlin, before the shift
    sim = FactorySimulation(stations, signals, seed=1, start=start)
    sim.step()
    assert set(sim.states().values()) == {"offline"}
    sim.advance(3600 - 1)  # 06:00 Berlin: the shift starts with setup
    assert set(sim.states().values()) == {"setup"}
    sim.advance(5 * 60)
    assert "running" in sim.states().values()
    sim.advance(4 * 3600 - 5 * 60 + 1)  # 10:00:01 Berlin
    assert set(sim.states().values()) == {"planned_stop"}
    frozen = sim.counters()
    sim.advance(25 * 60)
    assert sim.counters() == frozen  # nothing produced during the break
    sim.advance(6 * 60)
    assert "running" in sim.states().values()
    sim.advance(4 * 3600)  # 14:31 Berlin: off shift
    assert set(sim.states().values()) == {"offline"}
    assert sim.now == start + timedelta(seconds=sim.elapsed_s)


def test_planned_downtime_and_night_shift_across_midnight() -> None:
    cal = ShiftCalendar.from_spec(
        "UTC",
        shifts=[{"name": "night", "start": "22:00", "end": "06:00", "days": ["mon"]}],
        downtime=[{"start": "2025-01-07T02:00:00+00:00", "end": "2025-01-07T03:00:00+00:00"}],
    )
    at = datetime(2025, 1, 6, 21, 59, 59, tzinfo=UTC)
    from shopfloor.sim._calendar import BREAK, OFF, WORK

    assert cal.status(at) == OFF
    assert cal.status(at + timedelta(seconds=1)) == WORK
    assert cal.status(datetime(2025, 1, 7, 1, 0, tzinfo=UTC)) == WORK  # Tuesday morning part
    assert cal.status(datetime(2025, 1, 7, 2, 30, tzinfo=UTC)) == BREAK
    assert cal.status(datetime(2025, 1, 7, 6, 0, tzinfo=UTC)) == OFF
    assert cal.status(datetime(2025, 1, 7, 23, 0, tzinfo=UTC)) == OFF  # not on Tuesday


def test_mtbf_and_mttr_respected_over_a_long_run() -> None:
    # 40 independent stations, 50 simulated hours each
    stations = [
        StationSpec(
            f"m{i}",
            "press",
            ideal_cycle_time_s=10.0,
            mtbf_min=60.0,
            mttr_min=6.0,
            idle_rate_per_h=0.0,
            setup_min=0.0,
        )
        for i in range(40)
    ]
    sim = FactorySimulation(stations, seed=2024, start=START, tick_s=2.0)
    sim.advance(50 * 3600)
    failures = sum(sim.production(s.path)["failures"] for s in stations)
    running_h = sum(sim.running_seconds(s.path) for s in stations) / 3600
    rate = failures / running_h  # expected 1 per operating hour
    assert failures > 1000
    assert 0.9 < rate < 1.1
    # availability ≈ MTBF / (MTBF + MTTR) = 60 / 66
    availability = running_h / (40 * 50)
    assert abs(availability - 60 / 66) < 0.03


def test_measurements_follow_state_and_setpoints() -> None:
    stations = quiet(1, reject_rate=0.0)
    signals = machine_signals(stations)
    sim = FactorySimulation(stations, signals, seed=9, start=START)
    sim.advance(4 * 3600)
    hot = sim.values()
    assert sim.state_of("l1/s0") == "running"
    assert hot["l1/s0/temperature"] > 60  # heated towards the running target (72 °C)
    assert hot["l1/s0/pressure"] == pytest.approx(150.0, rel=0.05)
    sim.set_setpoint("l1/s0/pressure_setpoint", 200.0)
    sim.advance(60)
    assert sim.values()["l1/s0/pressure"] == pytest.approx(200.0, rel=0.05)
    assert sim.values()["l1/s0/pressure_setpoint"] == 200.0
    sim.inject_fault("l1/s0", 3 * 3600)
    sim.advance(3 * 3600 - 10)
    cold = sim.values()
    assert cold["l1/s0/pressure"] < 10
    assert cold["l1/s0/temperature"] < 30  # cooled towards ambient
    assert cold["l1/s0/state"] == STATES.index("unplanned_stop")  # no state map: the index
    e0 = cold["l1/s0/energy"]
    sim.advance(600)
    assert sim.values()["l1/s0/energy"] > e0  # standby power still counts


def test_raw_state_codes_from_the_state_map() -> None:
    codes = {"running": 3, "idle": 1, "unplanned_stop": 9, "planned_stop": 5}
    (station,) = quiet(1, state_codes=codes)
    sig = SignalSpec("l1/s0/state", "l1/s0", "state", "int", "state")
    sim = FactorySimulation([station], [sig], start=START)
    sim.step()
    assert sim.values()["l1/s0/state"] == 3
    sim.inject_fault("l1/s0", 10)
    sim.step()
    assert sim.values()["l1/s0/state"] == 9
    assert FactorySimulation._raw_codes(station, "int")[STATES.index("starved")] == 1  # → idle


def test_many_stations_per_tick_is_cheap() -> None:
    stations = [
        StationSpec.with_defaults(f"l{i // 10}/s{i}", TYPES[i % 5], line=f"l{i // 10}")
        for i in range(3000)
    ]
    sim = FactorySimulation(stations, machine_signals(stations), seed=1, start=START)
    import time

    t0 = time.perf_counter()
    sim.step(100)
    per_tick = (time.perf_counter() - t0) / 100
    assert per_tick < 0.01  # 3,000 stations × 7 signals: well under 10 ms a tick


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        FactorySimulation([], start=datetime(2025, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="unique"):
        FactorySimulation([StationSpec("a"), StationSpec("a")])
    with pytest.raises(ValueError, match="unknown station"):
        FactorySimulation([StationSpec("a")], [SignalSpec("b/x", "b", "x")])
    sim = FactorySimulation([StationSpec("a")], start=START)
    with pytest.raises(KeyError):
        sim.inject_fault("nope", 1)

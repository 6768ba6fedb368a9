"""OEE, losses and downtime through a historian on random data, against per-second loops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shopfloor.analytics import downtime_events, losses, oee
from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian import SignalInfo, open_historian
from shopfloor.model import parse_factory

FACTORY = """
types:
  - id: m
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, kind: counter}
      - {name: reject_count, data_type: int, kind: counter}
    attributes: {ideal_cycle_time_s: 2.0}
    states: {1: idle, 2: running, 6: unplanned_stop, 7: setup, 5: planned_stop, 3: starved}
connections:
  - {name: c, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4841"}
enterprise:
  id: e
  sites:
  - id: s
    timezone: UTC
    calendar:
      breaks:
      - {name: tea, start: "00:20", end: "00:30"}
    areas:
    - id: a
      lines:
      - id: l
        equipment:
        - {id: m1, type: m, connection: c, bindings: {state: x, good_count: y, reject_count: z}}
"""
PATH = "e/s/a/l/m1"
T0 = datetime(2025, 5, 5, tzinfo=UTC)
CODES = {1: "idle", 2: "running", 6: "unplanned_stop", 7: "setup", 5: "planned_stop", 3: "starved"}


@pytest.mark.parametrize("seed", range(4))
async def test_random_day_matches_per_second_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    factory = parse_factory(FACTORY)
    horizon = 3600  # seconds of data, starting 10 min before the window
    n = 120
    state_ts = np.sort(rng.choice(horizon, n, replace=False))
    state_raw = rng.choice([1, 2, 2, 2, 6, 7, 5, 3, 99], n)
    count_ts = np.sort(rng.choice(horizon, 300, replace=False))
    good = np.cumsum(rng.integers(0, 3, 300))
    good[150:] -= good[150] - 4  # a reset to a small number
    reject = np.cumsum(rng.integers(0, 2, 300))
    url = "duckdb::memory:"
    lo, hi = 600, horizon  # the window in seconds since T0
    async with open_historian(url) as h:
        ids = await h.register_signals(
            [SignalInfo(f"{PATH}/{s}", "int") for s in ("state", "good_count", "reject_count")]
        )
        us = (T0.timestamp() * 1e6 + np.array([0])).astype(np.int64)[0]
        await h.append(
            ReadingBatch.concat(
                [
                    ReadingBatch.from_columns(
                        np.full(n, ids[f"{PATH}/state"]), us + state_ts * 10**6, state_raw
                    ),
                    ReadingBatch.from_columns(
                        np.full(300, ids[f"{PATH}/good_count"]), us + count_ts * 10**6, good
                    ),
                    ReadingBatch.from_columns(
                        np.full(300, ids[f"{PATH}/reject_count"]), us + count_ts * 10**6, reject
                    ),
                ]
            )
        )
        start, end = T0 + timedelta(seconds=lo), T0 + timedelta(seconds=hi)
        row = (await oee(h, factory, PATH, start, end)).to_pylist()[0]
        loss = {r["loss"]: r for r in (await losses(h, factory, PATH, start, end)).to_pylist()}
        events = await downtime_events(h, factory, PATH, start, end)

    # per-second reference
    def state_at(t: int) -> str:
        i = np.searchsorted(state_ts, t, side="right") - 1
        return "offline" if i < 0 else CODES.get(int(state_raw[i]), "offline")

    planned = [t for t in range(lo, hi) if not (20 * 60 <= t % 86400 < 30 * 60)]
    states = {t: state_at(t) for t in range(lo, hi)}
    apt = sum(states[t] == "running" for t in planned)

    def increments(v: np.ndarray) -> int:
        total = 0
        for k in range(1, len(v)):
            if lo <= count_ts[k] < hi:
                d = int(v[k] - v[k - 1])
                total += d if d >= 0 else int(v[k])
        return total

    g, r = increments(good), increments(reject)
    assert row["planned_busy_time_s"] == len(planned)
    assert row["actual_production_time_s"] == apt
    assert (row["good"], row["reject"]) == (g, r)
    assert row["availability"] == pytest.approx(apt / len(planned))
    assert row["performance"] == pytest.approx(2.0 * (g + r) / apt)
    assert row["quality"] == pytest.approx(g / (g + r))
    assert row["oee"] == pytest.approx(2.0 * g / len(planned))
    assert sum(x["seconds"] for x in loss.values()) == pytest.approx(len(planned) - 2.0 * g)
    assert loss["setup"]["seconds"] == sum(states[t] == "setup" for t in planned)
    stops = loss["breakdowns"]["seconds"] + loss["small_stops"]["seconds"]
    waits = loss["other_stops"]["seconds"]
    assert stops + waits + loss["setup"]["seconds"] == len(planned) - apt
    # downtime events cover every non-running second of the window once
    covered = 0.0
    for e in events.to_pylist():
        a = max(e["ts"], start)
        b = min(e["end_ts"] or end, end)
        covered += (b - a).total_seconds()
    assert covered == sum(s != "running" for s in states.values())


async def test_breakdowns_small_stops_and_startup_rejects() -> None:
    """Hand-made: a 60 s fault (small stop), a 400 s fault (breakdown), rejects after setup."""
    factory = parse_factory(
        FACTORY.replace('breaks:\n      - {name: tea, start: "00:20", end: "00:30"}', "breaks: []")
    )
    seq = [(0, 7), (300, 2), (400, 6), (460, 2), (1000, 6), (1400, 2), (3000, 1)]
    rejects = [(0, 0), (310, 1), (350, 2), (2000, 3)]
    goods = [(0, 0), (500, 100), (2500, 400)]
    async with open_historian("duckdb::memory:") as h:
        ids = await h.register_signals(
            [SignalInfo(f"{PATH}/{s}", "int") for s in ("state", "good_count", "reject_count")]
        )
        us = int(T0.timestamp()) * 10**6
        parts = []
        for name, data in (("state", seq), ("reject_count", rejects), ("good_count", goods)):
            ts = np.array([t for t, _ in data]) * 10**6 + us
            parts.append(
                ReadingBatch.from_columns(
                    np.full(len(data), ids[f"{PATH}/{name}"]), ts, np.array([v for _, v in data])
                )
            )
        await h.append(ReadingBatch.concat(parts))
        # the window starts after the first samples: the prior ones are looked back for
        table = await losses(h, factory, PATH, T0, T0 + timedelta(hours=1))
        late = await oee(h, factory, PATH, T0 + timedelta(seconds=320), T0 + timedelta(hours=1))
    by = {r["loss"]: r for r in table.to_pylist()}
    assert by["setup"]["seconds"] == 300
    assert (by["small_stops"]["seconds"], by["small_stops"]["events"]) == (60, 1)
    assert (by["breakdowns"]["seconds"], by["breakdowns"]["events"]) == (400, 1)
    assert by["other_stops"]["seconds"] == 600  # idle from 3000 s on
    assert by["startup_rejects"]["events"] == 2  # at 310 s and 350 s, < 600 s after setup
    assert by["production_rejects"]["events"] == 1
    assert by["startup_rejects"]["seconds"] == 2 * 2.0
    row = late.to_pylist()[0]
    assert row["actual_production_time_s"] == (400 - 320) + (1000 - 460) + (3000 - 1400)
    assert row["good"] == 400
    assert row["reject"] == 2


async def test_no_data_is_offline_with_zero_availability() -> None:
    factory = parse_factory(FACTORY)
    async with open_historian("duckdb::memory:") as h:
        row = (await oee(h, factory, PATH, T0, T0 + timedelta(hours=1))).to_pylist()[0]
    assert row["planned_busy_time_s"] == 3000
    assert row["actual_production_time_s"] == 0
    assert row["availability"] == 0
    assert row["performance"] is None
    assert row["quality"] is None
    assert row["oee"] == 0


async def test_a_fault_that_began_before_the_window_is_not_a_new_failure() -> None:
    from shopfloor.analytics import iso22400

    factory = parse_factory(FACTORY)
    async with open_historian("duckdb::memory:") as h:
        sid = (await h.register_signals([SignalInfo(f"{PATH}/state", "int")]))[f"{PATH}/state"]
        us = int(T0.timestamp()) * 10**6
        ts = np.array([0, 400, 500, 560]) * 10**6 + us
        await h.append(ReadingBatch.from_columns(np.full(4, sid), ts, np.array([6, 2, 6, 2])))
        inside = await iso22400(h, factory, PATH, T0, T0 + timedelta(seconds=900))
        later = await iso22400(
            h, factory, PATH, T0 + timedelta(seconds=100), T0 + timedelta(seconds=900)
        )
    assert inside.column("failures").to_pylist() == [2]
    assert later.column("failures").to_pylist() == [1]
    assert later.column("unplanned_stop_time_s").to_pylist() == [300 + 60]
    assert later.column("mttr_s").to_pylist() == [360.0]

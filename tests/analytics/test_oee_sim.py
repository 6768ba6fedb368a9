"""OEE of a simulated day against the simulator's ground truth."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from _analytics_helpers import TICK_S, SimulatedDay

from shopfloor.analytics import (
    LOSSES,
    Grouping,
    assign_reason,
    downtime_pareto,
    iso22400,
    losses,
    oee,
    record_downtime,
)
from shopfloor.historian import open_historian
from shopfloor.sim._calendar import WORK, ShiftCalendar

LINE = "acme/munich/body-shop/line-1"
P1 = f"{LINE}/cell-1/press-1"
P2 = f"{LINE}/cell-1/press-2"


def _reference_pbt(day: SimulatedDay, path: str) -> float:
    site = day.factory.site_of(path)
    cal = site.calendar
    downtime = [d for d in cal.planned_downtime if not d.assets or path in d.assets]
    ref = ShiftCalendar.from_spec(site.timezone, cal.shifts, cal.breaks, downtime)
    seconds = int((day.end - day.start).total_seconds())
    return float(sum(ref.status(day.start + timedelta(seconds=s)) == WORK for s in range(seconds)))


@pytest.mark.parametrize("path", [P1, P2])
async def test_station_oee_matches_simulation(simulated_day: SimulatedDay, path: str) -> None:
    day = simulated_day
    async with open_historian(day.url) as h:
        table = await oee(h, day.factory, path, day.start, day.end)
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    truth = day.production[path]
    assert row["actual_production_time_s"] == pytest.approx(day.running_s[path], abs=TICK_S)
    assert day.running_s[path] > 3600
    assert row["good"] == truth["good"]
    assert row["reject"] == truth["reject"]
    assert row["produced"] == truth["good"] + truth["reject"] == truth["cycles"]
    pbt = _reference_pbt(day, path)
    assert row["planned_busy_time_s"] == pytest.approx(pbt, abs=TICK_S)
    ict = day.factory.attributes(path)["ideal_cycle_time_s"]
    availability = day.running_s[path] / pbt
    performance = ict * truth["cycles"] / day.running_s[path]
    quality = truth["good"] / truth["cycles"]
    assert row["availability"] == pytest.approx(availability, rel=1e-3)
    assert row["performance"] == pytest.approx(performance, rel=1e-3)
    assert row["quality"] == pytest.approx(quality, rel=1e-12)
    assert row["oee"] == pytest.approx(availability * performance * quality, rel=1e-3)
    assert 0 < row["oee"] < 1


async def test_windows_add_up(simulated_day: SimulatedDay) -> None:
    day = simulated_day
    async with open_historian(day.url) as h:
        whole = (await oee(h, day.factory, P2, day.start, day.end)).to_pylist()[0]
        groupings: tuple[tuple[Grouping, int], ...] = (("hour", 25), ("shift", 2), ("day", 2))
        for by, n in groupings:
            t = await oee(h, day.factory, P2, day.start, day.end, by)
            assert t.num_rows == n
            if by == "shift":
                assert t.column("shift").to_pylist() == ["early", "late"]
            for col in ("planned_busy_time_s", "actual_production_time_s"):
                assert sum(t.column(col).to_pylist()) == pytest.approx(whole[col])
            if by != "shift":  # counts outside shifts are not in any shift window
                for col in ("good", "reject"):
                    assert sum(t.column(col).to_pylist()) == whole[col]


async def test_line_oee_uses_last_station_and_bottleneck(simulated_day: SimulatedDay) -> None:
    day = simulated_day
    async with open_historian(day.url) as h:
        line = (await oee(h, day.factory, LINE, day.start, day.end)).to_pylist()[0]
        last = (await oee(h, day.factory, P2, day.start, day.end)).to_pylist()[0]
        site = (await oee(h, day.factory, "acme/munich", day.start, day.end)).to_pylist()[0]
    assert line["good"] == last["good"]
    assert line["availability"] == pytest.approx(last["availability"])
    bottleneck = 20.0  # press-2's 20 s beats press-1's 18 s
    assert line["oee"] == pytest.approx(bottleneck * last["good"] / last["planned_busy_time_s"])
    assert site["oee"] == pytest.approx(line["oee"])


async def test_losses_reconcile_with_pbt(simulated_day: SimulatedDay) -> None:
    day = simulated_day
    async with open_historian(day.url) as h:
        table = await losses(h, day.factory, P1, day.start, day.end, "shift")
        kpis = await oee(h, day.factory, P1, day.start, day.end, "shift")
    assert table.num_rows == 2 * len(LOSSES)
    for shift, row in zip(["early", "late"], kpis.to_pylist(), strict=True):
        part = table.filter(pa.compute.equal(table.column("shift"), shift)).to_pylist()
        by = {r["loss"]: r for r in part}
        ict = 18.0
        assert sum(r["seconds"] for r in part) == pytest.approx(
            row["planned_busy_time_s"] - ict * row["good"], abs=1e-6
        )
        if shift == "early":  # the simulator sets up when a shift starts from off-shift
            assert by["setup"]["seconds"] > 0
        rejects = by["startup_rejects"]["events"] + by["production_rejects"]["events"]
        assert rejects == row["reject"]
        assert by["speed_loss"]["seconds"] == pytest.approx(
            row["actual_production_time_s"] - ict * row["produced"]
        )
        for r in part:
            assert r["share_of_pbt"] == pytest.approx(r["seconds"] / row["planned_busy_time_s"])


async def test_iso22400(simulated_day: SimulatedDay) -> None:
    day = simulated_day
    async with open_historian(day.url) as h:
        row = (await iso22400(h, day.factory, P1, day.start, day.end)).to_pylist()[0]
    truth = day.production[P1]
    assert row["failures"] >= 1
    assert abs(row["failures"] - truth["failures"]) <= 2  # a fault can start at a shift edge
    assert row["mtbf_s"] == pytest.approx(row["actual_production_time_s"] / row["failures"])
    assert row["mttr_s"] == pytest.approx(row["unplanned_stop_time_s"] / row["failures"])
    assert row["scrap_ratio"] == pytest.approx(truth["reject"] / truth["cycles"])
    assert row["first_pass_yield"] == pytest.approx(truth["good"] / truth["cycles"])
    assert 0 < row["nee"] <= 1


async def test_downtime_events_reasons_and_pareto(simulated_day: SimulatedDay) -> None:
    day = simulated_day
    async with open_historian(day.url) as h:
        events = await record_downtime(h, day.factory, P1, day.start, day.end)
        assert events.num_rows > 5
        assert set(events.column("code").to_pylist()) >= {"setup", "planned_stop", "offline"}
        assert "running" not in events.column("code").to_pylist()
        fault = next(e for e in events.to_pylist() if e["code"] == "unplanned_stop")
        updated = await assign_reason(h, fault["event_id"], "hydraulics", by="tester")
        assert json.loads(updated["data"])["reason"] == "hydraulics"
        # recording again keeps the reason and does not duplicate events
        await record_downtime(h, day.factory, P1, day.start, day.end)
        stored = await h.read_events(day.start, day.end, asset_prefix=P1, kinds=["downtime"])
        assert stored.num_rows == events.num_rows
        by_reason = await downtime_pareto(h, day.start, day.end, asset_prefix=P1)
        by_state = await downtime_pareto(h, day.start, day.end, asset_prefix=P1, by="state")
    keys = by_reason.column("key").to_pylist()
    assert "hydraulics" in keys
    assert "unassigned" in keys
    seconds = by_state.column("seconds").to_numpy()
    assert np.all(np.diff(seconds) <= 0)
    assert by_state.column("cumulative_share").to_pylist()[-1] == pytest.approx(1.0)
    total_s = (day.end - day.start).total_seconds()
    assert seconds.sum() == pytest.approx(total_s - day.running_s[P1], abs=2 * TICK_S)
    assert by_reason.column("seconds").to_numpy().sum() == pytest.approx(seconds.sum())

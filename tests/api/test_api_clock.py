"""The API's clock: what "now" means for data (relative times, the end of KPIs) and what
``/dashboard.json`` tells the page, with the wall clock replaced by a simulated one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from _api_helpers import M_LINE, M_PRESS, T0, T1, ApiData, factory_text, ts_us

from shopfloor.analytics import oee
from shopfloor.api import AuthStore, create_app
from shopfloor.cli._up import _DemoClock
from shopfloor.historian import Historian, open_historian
from shopfloor.model import parse_factory

NOW = T0 + timedelta(hours=1)
"""The simulated "now" of these tests: in the middle of the stored two hours."""
TEMP = f"{M_PRESS}/temperature"


@asynccontextmanager
async def _client(
    data: ApiData, clock: Callable[[], datetime] | None, speed: float = 1.0
) -> AsyncIterator[tuple[httpx.AsyncClient, Historian]]:
    factory = parse_factory(factory_text(), str(data.factory_file))
    async with AuthStore(data.auth_db) as auth, open_historian(data.db) as h:
        app = create_app(factory, h, auth, clock=clock, speed=speed)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {data.tokens['admin_all']}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as c:
            c.app = app  # type: ignore[attr-defined]
            yield c, h


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


async def test_relative_times_are_resolved_with_the_api_clock(api_data: ApiData) -> None:
    async with _client(api_data, lambda: NOW, speed=60) as (c, _):
        r = await c.get(f"/api/v1/history/{TEMP}", params={"start": "-10m"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert _at(body["start"]) == NOW - timedelta(minutes=10)
        assert _at(body["end"]) == NOW  # the default end: the clock's now
        # 1 Hz samples: exactly the 600 of the ten simulated minutes before NOW
        assert len(body["ts"]) == 600
        assert ts_us(body["ts"][0]) == ts_us((NOW - timedelta(minutes=10)).isoformat())
        assert ts_us(body["ts"][-1]) == ts_us((NOW - timedelta(seconds=1)).isoformat())
        # 'now' and a default start (one hour before the end) follow it too
        r = await c.get(f"/api/v1/history/{TEMP}", params={"end": "now", "bucket": "10m"})
        assert _at(r.json()["start"]) == T0
    # the same request on the wall clock finds nothing: the data lies years back
    async with _client(api_data, None) as (c, _):
        r = await c.get(f"/api/v1/history/{TEMP}", params={"start": "-10m"})
        assert r.status_code == 200, r.text
        assert r.json()["ts"] == []
        assert _at(r.json()["end"]) > T1


async def test_kpis_end_at_the_api_clock(api_data: ApiData) -> None:
    params = {"asset": M_LINE, "start": T0.isoformat(), "end": T1.isoformat()}
    async with _client(api_data, lambda: NOW) as (c, h):
        r = await c.get("/api/v1/kpi/oee", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert _at(body["end"]) == NOW  # clipped to the clock, not to the wall clock
        factory = parse_factory(factory_text(), str(api_data.factory_file))
        expected = (await oee(h, factory, M_LINE, T0, NOW)).to_pylist()
        assert len(body["rows"]) == len(expected) == 1
        assert body["rows"][0]["planned_busy_time_s"] == 3600.0
        assert body["rows"][0]["oee"] == pytest.approx(expected[0]["oee"])
        # a range after the clock's now lies in the future
        later = {**params, "start": (NOW + timedelta(minutes=5)).isoformat()}
        r = await c.get("/api/v1/kpi/oee", params=later)
        assert r.status_code == 422
        assert "future" in r.json()["detail"]
        # relative: the last 30 simulated minutes
        r = await c.get("/api/v1/kpi/oee", params={"asset": M_LINE, "start": "-30m"})
        assert r.status_code == 200, r.text
        assert r.json()["rows"][0]["planned_busy_time_s"] == 1800.0
    async with _client(api_data, None) as (c, _):
        r = await c.get("/api/v1/kpi/oee", params=params)
        assert _at(r.json()["end"]) == T1  # the wall clock is long past T1
        r = await c.get("/api/v1/kpi/oee", params=later)
        assert r.status_code == 200, r.text


async def test_dead_letters_since_stays_on_the_wall_clock(api_data: ApiData) -> None:
    """Dead letters are stamped when they arrive (wall clock), whatever the factory's time."""
    async with _client(api_data, lambda: NOW) as (c, _):
        r = await c.get("/api/v1/dead-letters", params={"since": "-1h"})
        assert r.status_code == 200, r.text
        assert r.json()["items"] == []  # stored at T0 + 30 min: within an hour of NOW only
        r = await c.get("/api/v1/dead-letters", params={"since": T0.isoformat()})
        assert len(r.json()["items"]) == 6


async def test_the_dashboard_is_told_the_clock_and_its_speed(api_data: ApiData) -> None:
    async with _client(api_data, lambda: NOW, speed=60) as (c, _):
        body = (await c.get("/dashboard.json")).json()
        assert body["now_ms"] == int(NOW.timestamp() * 1000)
        assert body["speed"] == 60
        # the clock may be replaced while the app serves (the demo's simulator starts later)
        ctx = c.app.state.ctx  # type: ignore[attr-defined]
        ctx.clock, ctx.speed = (lambda: T1), 3600.0
        body = (await c.get("/dashboard.json")).json()
        assert (body["now_ms"], body["speed"]) == (int(T1.timestamp() * 1000), 3600)
        r = await c.get("/api/v1/kpi/oee", params={"asset": M_LINE, "start": "-2h"})
        assert _at(r.json()["end"]) == T1
    async with _client(api_data, None) as (c, _):
        before = datetime.now(UTC)
        body = (await c.get("/dashboard.json")).json()
        after = datetime.now(UTC)
        assert body["speed"] == 1
        assert before.timestamp() * 1000 - 1 <= body["now_ms"] <= after.timestamp() * 1000 + 1


async def test_a_clock_must_be_aware_and_a_speed_positive(api_data: ApiData) -> None:
    factory = parse_factory(factory_text(), str(api_data.factory_file))
    async with AuthStore(api_data.auth_db) as auth, open_historian(api_data.db) as h:
        with pytest.raises(ValueError, match="timezone-aware"):
            create_app(factory, h, auth, clock=lambda: datetime(2025, 1, 6, 7))  # noqa: DTZ001
        with pytest.raises(ValueError, match="speed must be positive"):
            create_app(factory, h, auth, speed=0)


def test_the_demo_clock_switches_to_the_simulator_without_going_back() -> None:
    clock = _DemoClock()
    before = datetime.now(UTC)
    first = clock()
    assert before <= first <= datetime.now(UTC)  # the wall clock until the simulator runs
    # the simulator started a little earlier than now (its servers took a while)
    sim = [first - timedelta(seconds=3)]
    clock.follow(lambda: sim[0])
    assert clock() == first  # waits for the simulated time to catch up
    sim[0] = first + timedelta(minutes=10)
    assert clock() == first + timedelta(minutes=10)  # then tells it, ahead of the wall clock
    sim[0] = first + timedelta(minutes=11)
    assert clock() == sim[0]

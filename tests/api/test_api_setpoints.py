"""Setpoint writes: checked against the model, delivered over OPC UA to the simulator."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from _api_helpers import L_PRESS, M_PRESS, ApiData, factory_text, open_api

from shopfloor.api._problems import ProblemError
from shopfloor.api._setpoint_routes import check_setpoint
from shopfloor.historian import open_historian
from shopfloor.model import parse_factory
from shopfloor.runtime import Runtime
from shopfloor.sim import Simulator

FORCE = f"{M_PRESS}/force_setpoint"
SPEED = f"{M_PRESS}/speed_setpoint"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_values_are_checked_against_type_and_limits() -> None:
    f = parse_factory(factory_text())
    force, speed = f.signal(FORCE), f.signal(SPEED)
    assert check_setpoint(force, 1.5e6) == 1.5e6
    assert check_setpoint(force, 2) == 2.0
    assert check_setpoint(speed, 50) == 50
    assert check_setpoint(speed, 50.0) == 50
    rejected: list[tuple[Any, Any, str]] = [
        (force, True, "expected a number"),
        (force, "1e6", "expected a number"),
        (force, math.inf, "finite"),
        (force, 6e6, r"6000000.0 is above the signal.s high limit 5e\+06"),
        (force, -1, "below the signal's low limit 0"),
        (speed, 50.5, "expected an integer"),
        (speed, False, "expected an integer"),
        (speed, 101, "above the signal's high limit 100"),
        (f.signal(f"{M_PRESS}/temperature"), 20.0, "a measurement signal, not a setpoint"),
        (f.signal(f"{M_PRESS}/oee"), 0.5, "not a setpoint"),
    ]
    for signal, value, words in rejected:
        with pytest.raises(ProblemError, match=words) as info:
            check_setpoint(signal, value)
        assert info.value.status == 422
        assert signal.path in info.value.detail


async def test_a_server_without_runtime_answers_503(api_data: ApiData) -> None:
    async with open_api(api_data) as api:
        r = await api.client.post(
            f"/api/v1/setpoints/{FORCE}",
            json={"value": 1e6},
            headers=api.auth_header("operate_munich"),
        )
        assert r.status_code == 503
        body = r.json()
        assert body["type"] == "/api/v1/problems/runtime-unavailable"
        assert "--api-port" in body["detail"]
        # checks come first: a bad value is 422 even without a runtime
        r = await api.client.post(
            f"/api/v1/setpoints/{FORCE}",
            json={"value": "high"},
            headers=api.auth_header("operate_munich"),
        )
        assert r.status_code == 422
        assert r.json()["type"] == "/api/v1/problems/setpoint-rejected"
        r = await api.client.post(
            f"/api/v1/setpoints/{FORCE}",
            json={"velue": 1},
            headers=api.auth_header("operate_munich"),
        )
        assert r.status_code == 422
        assert r.json()["type"] == "/api/v1/problems/invalid-request"


@pytest.mark.timeout(120)
async def test_setpoints_reach_the_device_over_opcua(api_data: ApiData) -> None:
    factory = parse_factory(factory_text())
    munich = f"opc.tcp://127.0.0.1:{_free_port()}"
    nobody = f"opc.tcp://127.0.0.1:{_free_port()}"  # nothing listens here
    elsewhere = f"opc.tcp://127.0.0.1:{_free_port()}"
    async with (
        Simulator(
            factory,
            seed=3,
            start=datetime(2025, 1, 6, 7, tzinfo=UTC),
            paused=True,
            # Leipzig's simulated server listens elsewhere than the runtime looks.
            endpoint_override={"munich-opc": munich, "leipzig-opc": elsewhere},
        ) as sim,
        open_historian("duckdb::memory:") as h,
        Runtime(factory, h, endpoint_override={"munich-opc": munich, "leipzig-opc": nobody}) as rt,
        open_api(api_data, runtime=rt, historian=h) as api,
    ):
        deadline = time.monotonic() + 30
        munich_conn = next(c for c in rt.connectors if c.name == "munich-opc")
        while munich_conn.status.state != "connected":
            assert time.monotonic() < deadline, munich_conn.status
            await asyncio.sleep(0.1)
        headers = api.auth_header("operate_munich")
        before = sim.values()[FORCE]
        (last,) = await api.auth.audit_entries(limit=1)

        r = await api.client.post(
            f"/api/v1/setpoints/{FORCE}", json={"value": 1.5e6}, headers=headers
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["value"] == body["raw_value"] == 1.5e6
        assert (body["connection"], body["address"]) == ("munich-opc", f"ns=2;s={FORCE}")
        assert api.data.token_ids["operate_munich"] in body["by"]

        # an integer setpoint bound with scale 0.1: the device gets value / 0.1
        r = await api.client.post(f"/api/v1/setpoints/{SPEED}", json={"value": 42}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["raw_value"] == 420

        # out of limits: refused before anything is written
        r = await api.client.post(
            f"/api/v1/setpoints/{FORCE}", json={"value": 9e6}, headers=headers
        )
        assert r.status_code == 422
        assert "above the signal's high limit" in r.json()["detail"]

        await sim.run_for(1)
        values = sim.values()
        assert before != 1.5e6
        assert values[FORCE] == 1.5e6
        # the simulator serves raw values and reads writes back through the binding's scale
        assert values[SPEED] == 42

        # a device that is away: 502, naming the connection
        r = await api.client.post(
            f"/api/v1/setpoints/{L_PRESS}/force_setpoint",
            json={"value": 1e6},
            headers=api.auth_header("admin_all"),
        )
        assert r.status_code == 502, r.text
        assert r.json()["type"] == "/api/v1/problems/device-error"
        assert "leipzig-opc" in r.json()["detail"]

        writes = [e for e in await api.auth.audit_entries(after=last.seq) if e.method == "POST"]
        assert [w.status for w in writes] == [502, 422, 200, 200]
        assert writes[3].detail == {
            "action": "setpoint",
            "signal": FORCE,
            "value": 1.5e6,
            "raw_value": 1.5e6,
            "connection": "munich-opc",
            "address": f"ns=2;s={FORCE}",
        }
        assert writes[2].detail is not None
        assert writes[2].detail["raw_value"] == 420
        assert writes[1].detail is not None
        assert writes[1].detail["problem"]["title"] == "Setpoint rejected"
        ready = (await api.client.get("/api/v1/ready")).json()
        assert ready["runtime"] is True
        assert ready["connectors_total"] == 2

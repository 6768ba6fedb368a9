"""The AGV fleet simulator: graph, vehicle dynamics (no I/O), and its MQTT behaviour."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pytest

from shopfloor.connectors._vda5050_models import Connection, Factsheet, Order, State, Visualization
from shopfloor.sim._agv import AgvFleetSimulator, SimVehicle, hall_graph

HOST, PORT = "127.0.0.1", 1883


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


needs_broker = pytest.mark.skipif(
    not _broker_up(), reason=f"no MQTT broker (Mosquitto) listening on {HOST}:{PORT}"
)


def _vehicle(seed: int = 1, **kw: Any) -> SimVehicle:
    g = hall_graph()
    x, y = g.nodes["A1"]
    return SimVehicle("AGV-001", g, random.Random(seed), x=x, y=y, last_node_id="A1", **kw)


def _header() -> dict[str, Any]:
    return {
        "headerId": 0,
        "timestamp": datetime.now(UTC),
        "version": "2.0.0",
        "manufacturer": "m",
        "serialNumber": "AGV-001",
    }


def test_hall_graph_paths() -> None:
    g = hall_graph(3, 4, 5.0)
    assert g.nodes["A1"] == (0.0, 0.0)
    assert g.nodes["C4"] == (15.0, 10.0)
    assert g.path("A1", "C4")[0] == "A1"
    assert len(g.path("A1", "C4")) == 6
    assert g.path("CHG", "A2") == ["CHG", "A1", "A2"]
    assert g.nearest(14.0, 9.0) == "C4"


def test_runs_are_reproducible() -> None:
    def trace(seed: int) -> list[tuple[float, float, float, int]]:
        v = _vehicle(seed, obstacle_rate=0.05, mtbf_s=200.0, mttr_s=20.0)
        out = []
        for _ in range(3000):
            v.step(0.5)
            out.append((round(v.x, 6), round(v.y, 6), round(v.battery, 6), len(v.errors)))
        return out

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)


def test_battery_drains_while_driving_and_vehicle_goes_charging() -> None:
    v = _vehicle(5, obstacle_rate=0.0, mtbf_s=0.0)
    v.set_battery(30.0)
    charged = False
    for _ in range(20_000):
        v.step(0.5)
        if v.charging:
            charged = True
            assert v.last_node_id == "CHG"
            break
    assert charged
    low = v.battery
    assert low < 25.0
    peak = low
    while v.charging:
        v.step(0.5)
        peak = max(peak, v.battery)
    assert peak >= 95.0
    for _ in range(200):
        v.step(0.5)
    assert v.has_order or v.driving or v.traversed[-1] != "CHG"  # back to work


def test_obstacles_and_breakdowns_come_and_go() -> None:
    v = _vehicle(9, obstacle_rate=0.02, mtbf_s=300.0, mttr_s=30.0)
    seen: set[str] = set()
    fatal_steps = 0
    for _ in range(20_000):
        v.step(0.5)
        for e in v.errors:
            seen.add(f"{e['errorType']}:{e['errorLevel']}")
        fatal_steps += v.fatal
        if v.fatal:
            assert not v.driving
    assert {"obstacleDetected:WARNING", "driveFault:FATAL"} <= seen
    assert 0 < fatal_steps < 20_000
    for _ in range(2000):  # nothing is stuck forever
        v.mtbf_s = 0.0
        v.obstacle_rate = 0.0
        v.step(0.5)
    assert not v.errors


def test_order_update_is_stitched_and_instant_actions_reported() -> None:
    v = _vehicle(2, auto_orders=False, obstacle_rate=0.0, mtbf_s=0.0)
    g = v.graph

    def order(update: int, path: list[str], seq0: int, released: int) -> Order:
        return Order.model_validate(
            {
                **_header(),
                "orderId": "o",
                "orderUpdateId": update,
                "nodes": [
                    {"nodeId": n, "sequenceId": seq0 + 2 * i, "released": i < released}
                    for i, n in enumerate(path)
                ],
                "edges": [
                    {
                        "edgeId": g.edges[(a, b)],
                        "sequenceId": seq0 + 2 * i + 1,
                        "released": i + 1 < released,
                        "startNodeId": a,
                        "endNodeId": b,
                    }
                    for i, (a, b) in enumerate(itertools.pairwise(path))
                ],
            }
        )

    v.accept_order(order(0, ["A1", "A2", "A3"], 0, released=2))  # A3 is horizon
    for _ in range(100):
        v.step(0.5)
    assert v.last_node_id == "A2"
    assert not v.driving
    v.accept_order(order(1, ["A2", "A3", "A4"], 2, released=3))
    for _ in range(100):
        v.step(0.5)
    assert v.traversed == ["A1", "A2", "A3", "A4"]
    assert v.last_node_seq == 6
    v.accept_order(order(0, ["A4"], 6, released=1))  # lower update id
    assert any(e["errorType"] == "orderUpdateError" for e in v.errors)
    v.instant_action("c1", "cancelOrder")
    assert v.action_states[-1]["actionStatus"] == "FAILED"
    assert any(e["errorType"] == "noOrderToCancel" for e in v.errors)
    v.instant_action("p1", "startPause")
    assert v.paused
    assert v.action_states[-1] == {
        "actionId": "p1",
        "actionType": "startPause",
        "actionStatus": "FINISHED",
    }
    State.model_validate({**_header(), **v.state_body()})


def test_state_messages_validate() -> None:
    v = _vehicle(1, obstacle_rate=0.05, mtbf_s=100.0)
    for _ in range(500):
        v.step(0.5)
        State.model_validate({**_header(), **v.state_body()})
        Visualization.model_validate(
            {**_header(), "agvPosition": v.position(), "velocity": v.velocity()}
        )


@needs_broker
async def test_sim_on_the_broker() -> None:
    iface = f"uagv-test-{uuid.uuid4().hex[:8]}"
    got: dict[str, list[dict[str, Any]]] = {}
    retained: list[str] = []
    async with aiomqtt.Client(HOST, PORT) as spy:
        await spy.subscribe(f"{iface}/v2/#", qos=1)

        async def listen() -> None:
            async for m in spy.messages:
                if not isinstance(m.payload, bytes) or not m.payload:
                    continue
                parts = str(m.topic).split("/")
                got.setdefault(f"{parts[3]}/{parts[4]}", []).append(json.loads(m.payload))
                if m.retain:
                    retained.append(str(m.topic))

        async def until(key: str, cond: Any) -> None:
            async with asyncio.timeout(10):
                while not any(cond(b) for b in got.get(key, [])):  # noqa: ASYNC110 - a plain dict
                    await asyncio.sleep(0.02)

        listener = asyncio.create_task(listen())
        async with AgvFleetSimulator(
            2, HOST, PORT, iface, "v2", "Acme", seed=1, speed=10.0, state_hz=10.0
        ) as sim:
            await until("AGV-001/state", lambda b: True)
            await until("AGV-002/visualization", lambda b: True)
            await until("AGV-001/factsheet", lambda b: True)
            await until("AGV-001/connection", lambda b: b["connectionState"] == "ONLINE")
            Factsheet.model_validate(got["AGV-001/factsheet"][0])
            await sim.kill("AGV-002")
            await until("AGV-002/connection", lambda b: b["connectionState"] == "CONNECTIONBROKEN")
            assert sim.vehicles["AGV-001"].traversed  # auto orders: it drives
        await until("AGV-001/connection", lambda b: b["connectionState"] == "OFFLINE")
        listener.cancel()
    for key, bodies in got.items():
        model = {
            "state": State,
            "visualization": Visualization,
            "connection": Connection,
            "factsheet": Factsheet,
        }[key.split("/")[1]]
        for b in bodies:
            model.model_validate(b)
        ids = [b["headerId"] for b in bodies]
        assert ids == sorted(ids), key
    states = [b["headerId"] for b in got["AGV-001/state"]]
    assert states == list(range(states[0], states[0] + len(states)))
    conn = [b["headerId"] for b in got["AGV-002/connection"]]
    assert conn == [0, 1]  # ONLINE, then the Will continues the sequence

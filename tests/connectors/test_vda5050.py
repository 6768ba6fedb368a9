"""VDA 5050 connector: models against the spec's examples, and end to end against Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from shopfloor.connectors._vda5050_models import (
    Connection,
    Factsheet,
    InstantActions,
    Node,
    NodePosition,
    Order,
    State,
    Visualization,
)
from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.vda5050 import (
    VdaConnector,
    _Timeline,
    derive_state,
)
from shopfloor.edge.batch import RawBatch
from shopfloor.errors import ConnectorError
from shopfloor.historian.base import DEAD_LETTER_SCHEMA, EVENT_SCHEMA
from shopfloor.sim._agv import AgvFleetSimulator

HOST, PORT = "127.0.0.1", 1883
ENDPOINT = f"mqtt://{HOST}:{PORT}"

# --------------------------------------------------------------------------- spec examples
# Written after the examples and field tables of VDA 5050 2.0 (chapter 6) and 1.1.

STATE_EXAMPLE = {
    "headerId": 4711,
    "timestamp": "2017-04-15T11:40:03.12Z",
    "version": "2.0.0",
    "manufacturer": "Kuka",
    "serialNumber": "AGV-001",
    "orderId": "pur4711",
    "orderUpdateId": 0,
    "lastNodeId": "n1",
    "lastNodeSequenceId": 0,
    "nodeStates": [
        {
            "nodeId": "n2",
            "sequenceId": 2,
            "released": True,
            "nodePosition": {"x": 10.0, "y": 2.0, "mapId": "local"},
        }
    ],
    "edgeStates": [{"edgeId": "e1", "sequenceId": 1, "released": True}],
    "agvPosition": {
        "x": 4.5,
        "y": 2.0,
        "theta": 0.0,
        "mapId": "local",
        "positionInitialized": True,
        "localizationScore": 0.9,
        "deviationRange": 0.05,
    },
    "velocity": {"vx": 1.2, "vy": 0.0, "omega": 0.0},
    "loads": [
        {
            "loadId": "4711",
            "loadType": "EPAL",
            "loadPosition": "front",
            "boundingBoxReference": {"x": 0.0, "y": 0.0, "z": 0.2, "theta": 0.0},
            "loadDimensions": {"length": 1.2, "width": 0.8, "height": 1.0},
            "weight": 250,
        }
    ],
    "driving": True,
    "paused": False,
    "newBaseRequest": False,
    "distanceSinceLastNode": 4.5,
    "actionStates": [
        {"actionId": "a1", "actionType": "pick", "actionStatus": "FINISHED"},
        {"actionId": "a2", "actionType": "drop", "actionStatus": "WAITING"},
    ],
    "batteryState": {
        "batteryCharge": 76.5,
        "batteryVoltage": 47.1,
        "batteryHealth": 98,
        "charging": False,
        "reach": 2000,
    },
    "operatingMode": "AUTOMATIC",
    "errors": [
        {
            "errorType": "orderUpdateError",
            "errorReferences": [{"referenceKey": "orderId", "referenceValue": "pur4711"}],
            "errorDescription": "orderUpdateId lower than the current",
            "errorLevel": "WARNING",
        }
    ],
    "information": [{"infoType": "speed", "infoDescription": "slow zone", "infoLevel": "INFO"}],
    "safetyState": {"eStop": "NONE", "fieldViolation": False},
}

ORDER_EXAMPLE = {
    "headerId": 1,
    "timestamp": "2017-04-15T11:40:03.12Z",
    "version": "2.0.0",
    "manufacturer": "Kuka",
    "serialNumber": "AGV-001",
    "orderId": "1234",
    "orderUpdateId": 0,
    "nodes": [
        {
            "nodeId": "6",
            "sequenceId": 0,
            "released": True,
            "nodePosition": {"x": 0.0, "y": 0.0, "mapId": "local", "allowedDeviationXY": 0.1},
            "actions": [],
        },
        {
            "nodeId": "4",
            "sequenceId": 2,
            "released": True,
            "nodePosition": {"x": 5.0, "y": 0.0, "theta": 1.57, "mapId": "local"},
            "actions": [
                {
                    "actionType": "pick",
                    "actionId": "pick-1",
                    "blockingType": "HARD",
                    "actionParameters": [
                        {"key": "stationType", "value": "floor"},
                        {"key": "loadType", "value": "EPAL"},
                        {"key": "height", "value": 0.0},
                    ],
                }
            ],
        },
        {"nodeId": "7", "sequenceId": 4, "released": False, "actions": []},
    ],
    "edges": [
        {
            "edgeId": "e1",
            "sequenceId": 1,
            "released": True,
            "startNodeId": "6",
            "endNodeId": "4",
            "maxSpeed": 1.5,
            "rotationAllowed": True,
            "trajectory": {
                "degree": 1,
                "knotVector": [0, 0, 1, 1],
                "controlPoints": [{"x": 0.0, "y": 0.0}, {"x": 5.0, "y": 0.0, "weight": 1.0}],
            },
            "actions": [],
        },
        {
            "edgeId": "e3",
            "sequenceId": 3,
            "released": False,
            "startNodeId": "4",
            "endNodeId": "7",
            "actions": [],
        },
    ],
}

INSTANT_ACTIONS_EXAMPLE = {
    "headerId": 2,
    "timestamp": "2017-04-15T11:40:03.12Z",
    "version": "2.0.0",
    "manufacturer": "Kuka",
    "serialNumber": "AGV-001",
    "actions": [
        {"actionType": "startPause", "actionId": "p-1", "blockingType": "HARD"},
        {
            "actionType": "initPosition",
            "actionId": "i-1",
            "blockingType": "HARD",
            "actionParameters": [
                {"key": "x", "value": 1.0},
                {"key": "y", "value": 2.0},
                {"key": "theta", "value": 0.0},
                {"key": "mapId", "value": "local"},
                {"key": "lastNodeId", "value": "n1"},
            ],
        },
    ],
}

CONNECTION_EXAMPLE = {
    "headerId": 0,
    "timestamp": "2017-04-15T11:40:03.12Z",
    "version": "2.0.0",
    "manufacturer": "Kuka",
    "serialNumber": "AGV-001",
    "connectionState": "CONNECTIONBROKEN",
}

VISUALIZATION_EXAMPLE = {
    "headerId": 7,
    "timestamp": "2017-04-15T11:40:03.12Z",
    "version": "2.0.0",
    "manufacturer": "Kuka",
    "serialNumber": "AGV-001",
    "agvPosition": {"x": 1.0, "y": 2.0, "theta": -3.1, "mapId": "m", "positionInitialized": True},
    "velocity": {"vx": 0.5},
}

FACTSHEET_EXAMPLE = {
    "headerId": 0,
    "timestamp": "2017-04-15T11:40:03.12Z",
    "version": "2.0.0",
    "manufacturer": "Kuka",
    "serialNumber": "AGV-001",
    "typeSpecification": {
        "seriesName": "KMP 600",
        "agvKinematic": "OMNI",
        "agvClass": "CARRIER",
        "maxLoadMass": 600,
        "localizationTypes": ["NATURAL", "REFLECTOR"],
        "navigationTypes": ["AUTONOMOUS"],
    },
    "physicalParameters": {
        "speedMin": 0.01,
        "speedMax": 1.5,
        "accelerationMax": 0.5,
        "decelerationMax": 0.75,
        "heightMin": 0.3,
        "heightMax": 0.35,
        "width": 0.7,
        "length": 1.2,
    },
    "protocolLimits": {"maxStringLens": {}, "maxArrayLens": {}, "timing": {}},
    "protocolFeatures": {"optionalParameters": [], "agvActions": []},
    "agvGeometry": {},
    "loadSpecification": {},
}

STATE_V1_EXAMPLE = {
    **{k: v for k, v in STATE_EXAMPLE.items() if k != "information"},
    "version": "1.1.0",
    "informations": [{"infoType": "debug", "infoLevel": "DEBUG"}],
}


def test_models_parse_the_spec_examples() -> None:
    st = State.model_validate(STATE_EXAMPLE)
    assert st.batteryState.batteryCharge == 76.5
    assert st.timestamp == datetime(2017, 4, 15, 11, 40, 3, 120000, tzinfo=UTC)
    assert st.errors[0].errorReferences is not None
    assert st.errors[0].errorReferences[0].referenceValue == "pur4711"
    assert st.loads is not None
    assert st.loads[0].loadDimensions is not None
    order = Order.model_validate(ORDER_EXAMPLE)
    assert [n.nodeId for n in order.nodes] == ["6", "4", "7"]
    assert order.nodes[1].actions[0].actionParameters is not None
    assert order.edges[0].trajectory is not None
    ia = InstantActions.model_validate(INSTANT_ACTIONS_EXAMPLE)
    assert [a.actionType for a in ia.actions] == ["startPause", "initPosition"]
    assert Connection.model_validate(CONNECTION_EXAMPLE).connectionState == "CONNECTIONBROKEN"
    vis = Visualization.model_validate(VISUALIZATION_EXAMPLE)
    assert vis.velocity is not None
    assert vis.velocity.vx == 0.5
    fs = Factsheet.model_validate(FACTSHEET_EXAMPLE)
    assert fs.typeSpecification.seriesName == "KMP 600"
    v1 = State.model_validate(STATE_V1_EXAMPLE)
    assert v1.information is not None
    assert v1.information[0].infoLevel == "DEBUG"
    v1_actions = {**INSTANT_ACTIONS_EXAMPLE, "version": "1.1.0"}
    v1_actions["instantActions"] = v1_actions.pop("actions")
    assert len(InstantActions.model_validate(v1_actions).actions) == 2


def test_models_round_trip_with_spec_timestamps() -> None:
    order = Order.model_validate(ORDER_EXAMPLE)
    data = json.loads(order.to_json())
    assert data["timestamp"] == "2017-04-15T11:40:03.120Z"
    assert data["nodes"][1]["actions"][0]["actionParameters"][2] == {"key": "height", "value": 0.0}
    assert Order.model_validate(data) == order


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"batteryState": {"charging": False}}, "batteryState.batteryCharge"),
        ({"operatingMode": "TURBO"}, "operatingMode"),
        ({"errors": [{"errorType": "x", "errorLevel": "SEVERE"}]}, "errors.0.errorLevel"),
        ({"timestamp": "2017-04-15T11:40:03"}, "timestamp"),  # no time zone
        ({"safetyState": {"eStop": "NONE"}}, "safetyState.fieldViolation"),
    ],
)
def test_models_reject_violations(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        State.model_validate({**STATE_EXAMPLE, **patch})
    locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert field in locs


def test_settings_are_validated() -> None:
    with pytest.raises(ConnectorError, match="endpoint"):
        VdaConnector("f", "tcp://x:1", [])
    with pytest.raises(ConnectorError, match="major_version"):
        VdaConnector("f", ENDPOINT, [], {"major_version": "v3"})
    with pytest.raises(ConnectorError, match="unknown VDA 5050 option"):
        VdaConnector("f", ENDPOINT, [], {"colour": "red"})
    c = VdaConnector("f", "mqtts://broker.example", [], {"serial_numbers": ["A", "B"]})
    assert (c.settings.port, c.settings.tls) == (8883, True)
    assert c._subscriptions()[:2] == ["uagv/v2/+/A/state", "uagv/v2/+/A/connection"]


def _state(**kw: Any) -> State:
    return State.model_validate({**STATE_EXAMPLE, **kw})


def test_derive_state() -> None:
    assert derive_state(_state(), "ONLINE") == "running"
    assert derive_state(_state(driving=False, nodeStates=[]), None) == "idle"
    assert derive_state(_state(driving=False), "ONLINE") == "running"  # order nodes left
    fatal = [{"errorType": "x", "errorLevel": "FATAL"}]
    assert derive_state(_state(errors=fatal), "ONLINE") == "unplanned_stop"
    charging = {"batteryCharge": 20, "charging": True}
    assert derive_state(_state(batteryState=charging), "ONLINE") == "planned_stop"
    for mode in ("MANUAL", "SERVICE", "TEACHIN"):
        assert derive_state(_state(operatingMode=mode), "ONLINE") == "setup"
    assert derive_state(_state(), "CONNECTIONBROKEN") == "offline"
    assert derive_state(_state(errors=fatal), "OFFLINE") == "offline"
    assert derive_state(None, None) == "offline"


def test_timeline_matches_a_sampled_reference() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        times = np.cumsum(rng.uniform(0.1, 5.0, 40))
        values = rng.random(40) < 0.5
        tl = _Timeline()
        for t, v in zip(times, values, strict=True):
            tl.set(float(t), bool(v))
        now = float(times[-1] + rng.uniform(0, 5))
        window = float(rng.uniform(5, 80))
        busy, observed = tl.busy(now, window)
        grid = np.linspace(max(now - window, times[0]), now, 200_001)[:-1]
        idx = np.searchsorted(times, grid, side="right") - 1
        ref = values[idx].mean() * (now - max(now - window, times[0]))
        assert observed == pytest.approx(now - max(now - window, times[0]))
        assert busy == pytest.approx(ref, abs=observed * 1e-3)


# --------------------------------------------------------------------------- against the broker


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


needs_broker = pytest.mark.skipif(
    not _broker_up(), reason=f"no MQTT broker (Mosquitto) listening on {HOST}:{PORT}"
)


@pytest.fixture
def iface() -> str:
    return f"uagv-test-{uuid.uuid4().hex[:8]}"


class Harness:
    """A running connector and everything it delivered."""

    def __init__(self) -> None:
        self.c: VdaConnector
        self.rows: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.letters: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def sink(self, batch: RawBatch) -> None:
        self.rows.extend(batch.table.to_pylist())
        self.changed.set()

    async def event_sink(self, table: pa.Table) -> None:
        assert table.schema.equals(EVENT_SCHEMA)
        self.events.extend(table.to_pylist())
        self.changed.set()

    async def letter_sink(self, table: pa.Table) -> None:
        assert table.schema.equals(DEAD_LETTER_SCHEMA)
        self.letters.extend(table.to_pylist())
        self.changed.set()

    async def until(self, cond: Callable[[], Any], wait_s: float = 10.0) -> Any:
        async with asyncio.timeout(wait_s):
            while True:
                result = cond()
                if result:
                    return result
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self.changed.wait()

    def values(self, address: str) -> list[Any]:
        out = []
        for r in self.rows:
            if r["address"] == address:
                out.append(
                    next(
                        (r[c] for c in ("v_float", "v_int", "v_bool", "v_str") if r[c] is not None),
                        None,
                    )
                )
        return out

    def last(self, address: str) -> Any:
        vals = self.values(address)
        return vals[-1] if vals else None


async def _start(
    iface: str, points: list[str] | None = None, **opts: Any
) -> tuple[Harness, asyncio.Task[None]]:
    options = {"interface_name": iface, "flush_interval_ms": 20, **opts}
    if points is None:
        options.setdefault("auto_discover", True)
    h = Harness()
    connector = VdaConnector(
        "fleet",
        ENDPOINT,
        [PointSpec(p) for p in points or []],
        options,
        dead_letter_sink=h.letter_sink,
        event_sink=h.event_sink,
    )
    h.c = connector
    task = asyncio.create_task(connector.run(h.sink))
    await h.until(lambda: connector.status.state == "connected")
    return h, task


@pytest.fixture
async def harness(iface: str) -> AsyncIterator[Harness]:
    h, task = await _start(iface)
    try:
        yield h
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _sim(iface: str, **kw: Any) -> AgvFleetSimulator:
    defaults: dict[str, Any] = {
        "interface_name": iface,
        "speed": 8.0,
        "state_hz": 10.0,
        "seed": 42,
        "auto_orders": False,
        "obstacle_rate": 0.0,
        "mtbf_s": 0.0,
    }
    defaults.update(kw)
    n = defaults.pop("n_vehicles", 2)
    return AgvFleetSimulator(n, HOST, PORT, **defaults)


def _path_nodes(sim: AgvFleetSimulator, path: list[str]) -> tuple[list[Node], list[dict[str, Any]]]:
    g = sim.graph
    nodes = [
        Node(
            nodeId=n,
            sequenceId=2 * i,
            released=True,
            nodePosition=NodePosition(x=g.nodes[n][0], y=g.nodes[n][1], mapId=g.map_id),
        )
        for i, n in enumerate(path)
    ]
    edges = [
        {
            "edgeId": g.edges[(a, b)],
            "sequenceId": 2 * i + 1,
            "released": True,
            "startNodeId": a,
            "endNodeId": b,
        }
        for i, (a, b) in enumerate(itertools.pairwise(path))
    ]
    return nodes, edges


@needs_broker
async def test_rows_have_addresses_types_and_header_timestamps(
    harness: Harness, iface: str
) -> None:
    h = harness
    async with _sim(iface) as sim:
        await h.until(lambda: h.last("AGV-002/lastNodeId") is not None)
        assert sim.vehicles["AGV-001"].last_node_id == "A1"
        expected = {
            "AGV-001/batteryState.batteryCharge": float,
            "AGV-001/agvPosition.x": float,
            "AGV-001/agvPosition.theta": float,
            "AGV-001/agvPosition.mapId": str,
            "AGV-001/velocity.vx": float,
            "AGV-001/driving": bool,
            "AGV-001/paused": bool,
            "AGV-001/operatingMode": str,
            "AGV-001/batteryState.charging": bool,
            "AGV-001/safetyState.eStop": str,
            "AGV-001/safetyState.fieldViolation": bool,
            "AGV-001/orderId": str,
            "AGV-001/lastNodeId": str,
            "AGV-001/loads": int,
            "AGV-001/connectionState": str,
            "AGV-001/state": str,
            "AGV-001/_header_gaps": int,
        }
        await h.until(lambda: all(h.values(a) for a in expected))
        for address, typ in expected.items():
            assert isinstance(h.last(address), typ), address
        assert h.last("AGV-001/agvPosition.mapId") == "hall-1"
        assert h.last("AGV-001/connectionState") == "ONLINE"
        assert h.last("AGV-001/state") == "idle"
        assert h.last("AGV-001/_header_gaps") == 0
        assert {r["source"] for r in h.rows} == {"fleet"}
        assert h.c.factsheet("AGV-001") is not None
    # header timestamps: a state published by hand carries its own timestamp through
    async with aiomqtt.Client(HOST, PORT) as client:
        msg = {**STATE_EXAMPLE, "serialNumber": "AGV-009", "headerId": 0}
        msg["timestamp"] = "2024-05-01T10:00:00.123Z"
        await client.publish(f"{iface}/v2/Kuka/AGV-009/state", json.dumps(msg))
        await h.until(lambda: h.values("AGV-009/batteryState.batteryCharge"))
    row = next(r for r in h.rows if r["address"] == "AGV-009/batteryState.batteryCharge")
    assert row["ts"] == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert row["v_float"] == 76.5


@needs_broker
async def test_only_configured_points_are_emitted(iface: str) -> None:
    h, task = await _start(
        iface,
        points=["AGV-001/batteryState.batteryCharge", "_fleet/utilisation"],
        fleet_kpi_interval_s=0.2,
    )
    try:
        async with _sim(iface):
            await h.until(
                lambda: (
                    h.values("AGV-001/batteryState.batteryCharge")
                    and h.values("_fleet/utilisation")
                )
            )
        assert {r["address"] for r in h.rows} <= {
            "AGV-001/batteryState.batteryCharge",
            "_fleet/utilisation",
        }
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@needs_broker
async def test_derived_state_follows_the_vehicle(harness: Harness, iface: str) -> None:
    h = harness
    async with _sim(iface) as sim:
        v = sim.vehicles["AGV-001"]
        await h.until(lambda: h.last("AGV-001/state") == "idle")
        # driving an order → running, and back to idle at its end
        nodes, edges = _path_nodes(sim, ["A1", "A2", "A3"])
        await h.c.send_order("AGV-001", "o-1", nodes, edges)
        await h.until(lambda: h.last("AGV-001/state") == "running")
        await h.until(lambda: h.last("AGV-001/lastNodeId") == "A3")
        await h.until(lambda: h.last("AGV-001/state") == "idle")
        # charging → planned_stop
        await h.c.start_charging("AGV-001")
        await h.until(lambda: h.last("AGV-001/state") == "planned_stop")
        assert h.last("AGV-001/batteryState.charging") is True
        await h.c.instant_action("AGV-001", "stopCharging")
        await h.until(lambda: h.last("AGV-001/state") == "idle")
        # manual → setup
        v.set_operating_mode("MANUAL")
        await h.until(lambda: h.last("AGV-001/state") == "setup")
        v.set_operating_mode("AUTOMATIC")
        await h.until(lambda: h.last("AGV-001/state") == "idle")
        # FATAL error → unplanned_stop, with an event that starts and ends
        v.inject_error("driveFault", "FATAL", "motor overheated")
        await h.until(lambda: h.last("AGV-001/state") == "unplanned_stop")
        await h.until(lambda: h.events)
        start = h.events[0]
        assert (start["kind"], start["asset"], start["code"]) == (
            "agv_error",
            "AGV-001",
            "driveFault",
        )
        assert (start["severity"], start["message"], start["end_ts"]) == (
            4,
            "motor overheated",
            None,
        )
        assert json.loads(start["data"])["errorLevel"] == "FATAL"
        v.clear_error("driveFault")
        await h.until(lambda: h.last("AGV-001/state") == "idle")
        await h.until(lambda: len(h.events) == 2)
        end = h.events[1]
        assert end["event_id"] == start["event_id"]
        assert end["end_ts"] is not None
        assert end["end_ts"] >= start["ts"]
        # a broken connection → CONNECTIONBROKEN through the Will → offline
        await sim.kill("AGV-001")
        await h.until(lambda: h.last("AGV-001/connectionState") == "CONNECTIONBROKEN")
        await h.until(lambda: h.last("AGV-001/state") == "offline")
        assert h.last("AGV-002/state") == "idle"
    await h.until(lambda: h.last("AGV-002/connectionState") == "OFFLINE")
    assert h.last("AGV-002/state") == "offline"


@needs_broker
async def test_pause_stops_the_vehicle(harness: Harness, iface: str) -> None:
    h = harness
    async with _sim(iface, speed=2.0) as sim:
        await h.until(lambda: h.last("AGV-001/state") == "idle")
        nodes, edges = _path_nodes(sim, ["A1", "A2", "A3", "A4", "B4", "C4"])
        await h.c.send_order("AGV-001", "o-2", nodes, edges)
        await h.until(lambda: h.last("AGV-001/driving") is True)
        await h.c.write("AGV-001/pause", True)
        await h.until(
            lambda: h.last("AGV-001/paused") is True and h.last("AGV-001/driving") is False
        )
        v = sim.vehicles["AGV-001"]
        x = v.x
        await h.until(lambda: len(h.values("AGV-001/paused")) > 10)
        assert v.x == x
        assert not v.driving
        assert any(
            a["actionType"] == "startPause" and a["actionStatus"] == "FINISHED"
            for a in v.action_states
        )
        await h.c.write("AGV-001/resume", True)
        await h.until(
            lambda: h.last("AGV-001/paused") is False and h.last("AGV-001/driving") is True
        )
        await h.c.write("AGV-001/cancel_order", True)
        await h.until(
            lambda: h.last("AGV-001/driving") is False and h.last("AGV-001/state") == "idle"
        )


@needs_broker
async def test_order_is_driven_node_by_node(harness: Harness, iface: str) -> None:
    h = harness
    async with _sim(iface) as sim:
        await h.until(lambda: h.last("AGV-002/state") == "idle")
        start = sim.vehicles["AGV-002"].last_node_id
        path = sim.graph.path(start, "C4")
        nodes, edges = _path_nodes(sim, path)
        order = await h.c.send_order("AGV-002", "o-3", nodes, edges)
        assert order.headerId == 0
        await h.until(lambda: h.last("AGV-002/lastNodeId") == "C4", wait_s=20)
        seen = [
            n
            for i, n in enumerate(h.values("AGV-002/lastNodeId"))
            if i == 0 or n != h.values("AGV-002/lastNodeId")[i - 1]
        ]
        assert seen[-len(path) :] == path
        assert sim.vehicles["AGV-002"].traversed[-len(path) :] == path
        assert h.last("AGV-002/orderId") == "o-3"
        assert abs(h.last("AGV-002/agvPosition.x") - sim.graph.nodes["C4"][0]) < 0.1


@needs_broker
async def test_header_gaps_and_dead_letters(harness: Harness, iface: str) -> None:
    h = harness
    topic = f"{iface}/v2/Kuka/AGV-001/state"

    def msg(header_id: int, **kw: Any) -> str:
        return json.dumps({**STATE_EXAMPLE, "headerId": header_id, **kw})

    async with aiomqtt.Client(HOST, PORT) as client:
        for payload in (
            msg(0),
            msg(1),
            msg(3),  # 2 skipped
            b"{not json",
            msg(4, batteryState={"batteryCharge": "high", "charging": False}),
            msg(5, operatingMode=None),
            msg(6, batteryState={"batteryCharge": 12.5, "charging": False}),
        ):
            await client.publish(topic, payload, qos=1)
        await h.until(lambda: 12.5 in h.values("AGV-001/batteryState.batteryCharge"))
        await h.until(lambda: len(h.letters) == 3)
    # only headerId 2 went missing: the dead-lettered 4 and 5 arrived
    assert h.c.metrics.header_gaps[("AGV-001", "state")] == 1
    assert h.last("AGV-001/_header_gaps") == 1
    assert h.c.metrics.dead_letters_total == 3
    reasons = [r["reason"] for r in h.letters]
    assert "not JSON" in reasons[0]
    assert "batteryState.batteryCharge" in reasons[1]
    assert "operatingMode" in reasons[2]
    assert h.letters[0]["payload"] == b"{not json"
    assert h.letters[1]["location"] == topic
    assert h.c.status.state == "connected"


@needs_broker
async def test_header_gap_counted_only_for_valid_messages_in_sequence(
    harness: Harness, iface: str
) -> None:
    h = harness
    topic = f"{iface}/v2/Kuka/AGV-005/state"
    async with aiomqtt.Client(HOST, PORT) as client:
        for i in (10, 11, 12, 15):
            await client.publish(
                topic,
                json.dumps({**STATE_EXAMPLE, "serialNumber": "AGV-005", "headerId": i}),
                qos=1,
            )
        await h.until(
            lambda: h.c.metrics.messages_total >= 4 and h.last("AGV-005/_header_gaps") == 2
        )


@needs_broker
async def test_commands_have_sequenced_headers(harness: Harness, iface: str) -> None:
    h = harness
    got: list[tuple[str, dict[str, Any], int]] = []
    async with aiomqtt.Client(HOST, PORT) as spy:
        await spy.subscribe(f"{iface}/v2/Acme/AGV-007/+")

        async def listen() -> None:
            async for m in spy.messages:
                assert isinstance(m.payload, bytes)
                got.append((str(m.topic).rsplit("/", 1)[-1], json.loads(m.payload), m.qos))

        task = asyncio.create_task(listen())
        # a vehicle the connector knows (its manufacturer comes from its messages)
        await spy.publish(
            f"{iface}/v2/Acme/AGV-007/connection",
            json.dumps(
                {
                    **CONNECTION_EXAMPLE,
                    "manufacturer": "Acme",
                    "serialNumber": "AGV-007",
                    "connectionState": "ONLINE",
                }
            ),
        )
        await h.until(lambda: "AGV-007" in h.c.vehicles)
        await h.c.pause("AGV-007")
        await h.c.resume("AGV-007")
        await h.c.instant_action("AGV-007", "logReport", {"reason": "test"})
        await h.c.send_order(
            "AGV-007", "o", [{"nodeId": "A1", "sequenceId": 0, "released": True}], []
        )
        await h.c.write(
            "AGV-007/order",
            json.dumps(
                {
                    "orderId": "o",
                    "orderUpdateId": 1,
                    "nodes": [{"nodeId": "A1", "sequenceId": 0, "released": True}],
                }
            ),
        )
        await h.until(lambda: len([g for g in got if g[0] in ("order", "instantActions")]) == 5)
        task.cancel()
    ia = [(body, qos) for name, body, qos in got if name == "instantActions"]
    orders = [body for name, body, _ in got if name == "order"]
    assert [b["headerId"] for b, _ in ia] == [0, 1, 2]
    assert [b["headerId"] for b in orders] == [0, 1]
    assert [b["actions"][0]["actionType"] for b, _ in ia] == [
        "startPause",
        "stopPause",
        "logReport",
    ]
    assert ia[2][0]["actions"][0]["actionParameters"] == [{"key": "reason", "value": "test"}]
    for body, qos in ia:
        assert (body["version"], body["manufacturer"], body["serialNumber"], qos) == (
            "2.0.0",
            "Acme",
            "AGV-007",
            0,
        )
        assert body["timestamp"].endswith("Z")
        InstantActions.model_validate(body)
    assert orders[1]["orderUpdateId"] == 1
    with pytest.raises(ConnectorError, match="unknown command"):
        await h.c.write("AGV-007/fly", 1)
    with pytest.raises(ConnectorError, match="has not been seen"):
        await h.c.pause("AGV-404")


@needs_broker
async def test_version_1_1(iface: str) -> None:
    h, task = await _start(iface, major_version="v1")
    try:
        sent: list[dict[str, Any]] = []
        async with _sim(iface, major_version="v1") as sim, aiomqtt.Client(HOST, PORT) as spy:
            await spy.subscribe(f"{iface}/v1/+/AGV-001/instantActions")
            await h.until(lambda: h.last("AGV-001/state") == "idle")
            await h.c.pause("AGV-001")
            async with asyncio.timeout(5):
                async for m in spy.messages:
                    assert isinstance(m.payload, bytes)
                    sent.append(json.loads(m.payload))
                    break
            await h.until(lambda: h.last("AGV-001/paused") is True)
            assert sim.vehicles["AGV-001"].paused
        assert sent[0]["version"] == "1.1.0"
        assert all(r["address"].split("/")[0] in ("AGV-001", "AGV-002", "_fleet") for r in h.rows)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@needs_broker
async def test_fleet_kpis_are_plausible(iface: str) -> None:
    h, task = await _start(iface, fleet_kpi_interval_s=0.3)
    try:
        async with _sim(iface, n_vehicles=3, auto_orders=True, speed=10.0) as sim:
            await h.until(lambda: len(h.values("_fleet/utilisation")) >= 6, wait_s=15)
            sim.vehicles["AGV-003"].inject_error("driveFault", "FATAL")
            await h.until(lambda: h.last("_fleet/vehicles_available") == 2)
            await h.until(lambda: (h.last("_fleet/errors_per_hour") or 0) > 0)
        utilisation = list(h.values("_fleet/utilisation"))
        assert all(0.0 <= u <= 1.0 for u in utilisation)
        assert max(utilisation) > 0.2  # auto orders keep them busy
        hist = json.loads(h.values("_fleet/battery_histogram")[-1])
        assert len(hist) == 10
        assert sum(hist) <= 3
        assert sum(json.loads(h.values("_fleet/battery_histogram")[0])) == 3
        assert 3 in h.values("_fleet/vehicles_available")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_reconnects_with_backoff_when_broker_is_away() -> None:
    h = Harness()
    c = VdaConnector(
        "fleet", "mqtt://127.0.0.1:9", [], {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.1}
    )
    task = asyncio.create_task(c.run(h.sink))
    try:
        await h.until(lambda: c.status.reconnects >= 2)
        assert c.status.state == "disconnected"
        assert c.status.last_error
        offline = VdaConnector("x", "mqtt://127.0.0.1:9", [], {"manufacturer": "Acme"})
        with pytest.raises(ConnectorError, match="not connected"):
            await offline.pause("AGV-1")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert c.status.state == "stopped"

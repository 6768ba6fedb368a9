"""A simulated fleet of VDA 5050 AGVs driving orders through a hall, over MQTT.

:class:`AgvFleetSimulator` runs N vehicles, each with its own MQTT session (aiomqtt), on a
small grid graph of a hall (:func:`hall_graph`: named nodes ``A1``…, coordinates in metres,
one ``mapId``, a charger node ``CHG``). Each vehicle

* publishes ``connection`` ONLINE when it connects (QoS 1, retained), has
  ``CONNECTIONBROKEN`` as its MQTT Will and publishes OFFLINE on a clean stop;
* publishes its ``factsheet`` once (retained), ``state`` at ``state_hz`` and on events,
  ``visualization`` at twice that rate (QoS 0);
* accepts ``order`` (drives the released nodes, stitching order updates) and
  ``instantActions`` (``startPause``, ``stopPause``, ``cancelOrder``, ``startCharging``,
  ``stopCharging``, ``stateRequest``), reporting ``actionStates``;
* drains its battery while driving, goes to the charger when low (``auto_orders``), meets
  random obstacles (WARNING ``obstacleDetected``, cleared after a while) and breaks down
  (FATAL ``driveFault``, with exponential MTBF/MTTR).

Everything random comes from one seeded generator per vehicle and the simulated time step
per tick is fixed (``speed / tick rate``), so a run is reproducible given the same commands.
:meth:`AgvFleetSimulator.kill` closes a vehicle's socket without DISCONNECT so that the
broker publishes its Will.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
import socket
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiomqtt
from pydantic import ValidationError

from shopfloor.connectors._vda5050_models import VERSIONS, InstantActions, Order, format_timestamp

__all__ = ["AgvFleetSimulator", "HallGraph", "SimVehicle", "hall_graph"]

logger = logging.getLogger(__name__)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


_DRIVE_MODES = frozenset({"AUTOMATIC", "SEMIAUTOMATIC"})


@dataclass(frozen=True, slots=True)
class HallGraph:
    """A hall's roadmap: named nodes with coordinates (m), directed edges, a map id."""

    nodes: dict[str, tuple[float, float]]
    edges: dict[tuple[str, str], str]
    map_id: str = "hall-1"
    charger: str = "CHG"

    def neighbours(self, node: str) -> list[str]:
        """Nodes one edge away from ``node``."""
        return sorted(b for (a, b) in self.edges if a == node)

    def path(self, start: str, goal: str) -> list[str]:
        """Shortest path (in edges) from ``start`` to ``goal``, both included."""
        prev: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            n = queue.popleft()
            if n == goal:
                break
            for m in self.neighbours(n):
                if m not in prev:
                    prev[m] = n
                    queue.append(m)
        if goal not in prev:
            raise ValueError(f"no path from {start} to {goal}")
        out: list[str] = []
        cur: str | None = goal
        while cur is not None:
            out.append(cur)
            cur = prev[cur]
        return out[::-1]

    def nearest(self, x: float, y: float) -> str:
        """The node closest to ``(x, y)``."""
        return min(self.nodes, key=lambda n: math.dist(self.nodes[n], (x, y)))


def hall_graph(rows: int = 3, cols: int = 4, spacing: float = 5.0) -> HallGraph:
    """A grid hall: nodes ``A1``… (row letter, column number) ``spacing`` m apart, edges
    both ways between neighbours, and a charger ``CHG`` below ``A1``."""
    nodes: dict[str, tuple[float, float]] = {}
    for r in range(rows):
        for c in range(cols):
            nodes[f"{chr(65 + r)}{c + 1}"] = (c * spacing, r * spacing)
    nodes["CHG"] = (0.0, -spacing)
    edges: dict[tuple[str, str], str] = {}

    def link(a: str, b: str) -> None:
        edges[(a, b)] = f"{a}-{b}"
        edges[(b, a)] = f"{b}-{a}"

    for r in range(rows):
        for c in range(cols):
            n = f"{chr(65 + r)}{c + 1}"
            if c + 1 < cols:
                link(n, f"{chr(65 + r)}{c + 2}")
            if r + 1 < rows:
                link(n, f"{chr(65 + r + 1)}{c + 1}")
    link("CHG", "A1")
    return HallGraph(nodes=nodes, edges=edges)


@dataclass(slots=True)
class _Target:
    node_id: str
    sequence_id: int
    x: float
    y: float
    released: bool
    deviation: float
    action_ids: list[str]


@dataclass(slots=True)
class SimVehicle:
    """One simulated vehicle: its physical state and its order (read it in tests).

    Test hooks: :meth:`set_operating_mode`, :meth:`inject_error`, :meth:`clear_error`,
    :meth:`set_battery`.
    """

    serial: str
    graph: HallGraph
    rng: random.Random
    x: float = 0.0
    y: float = 0.0
    theta: float = 0.0
    battery: float = 100.0
    charging: bool = False
    paused: bool = False
    driving: bool = False
    operating_mode: str = "AUTOMATIC"
    order_id: str = ""
    order_update_id: int = 0
    last_node_id: str = ""
    last_node_seq: int = 0
    speed_mps: float = 1.0
    targets: list[_Target] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    action_states: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    traversed: list[str] = field(default_factory=list)
    # random behaviour (sim seconds)
    auto_orders: bool = True
    obstacle_rate: float = 1 / 120.0
    mtbf_s: float = 3600.0
    mttr_s: float = 300.0
    low_battery: float = 25.0
    drain_driving: float = 0.05
    drain_idle: float = 0.005
    charge_rate: float = 0.5
    _obstacle_left: float = 0.0
    _repair_left: float = 0.0
    _dwell_left: float = 0.0
    _charge_goal: bool = False
    _vx: float = 0.0
    dirty: bool = True

    # ----------------------------------------------------------------- test hooks

    def set_operating_mode(self, mode: str) -> None:
        """Switch the operating mode (MANUAL, SERVICE, TEACHIN stop driving)."""
        self.operating_mode = mode
        self.dirty = True

    def inject_error(
        self, error_type: str, level: str = "FATAL", description: str | None = None
    ) -> None:
        """Add an error (kept until :meth:`clear_error`)."""
        err: dict[str, Any] = {"errorType": error_type, "errorLevel": level}
        if description:
            err["errorDescription"] = description
        self.errors.append(err)
        self.dirty = True

    def clear_error(self, error_type: str) -> None:
        """Remove every error of ``error_type``."""
        self.errors = [e for e in self.errors if e["errorType"] != error_type]
        self.dirty = True

    def set_battery(self, charge: float) -> None:
        """Set the state of charge in percent."""
        self.battery = charge
        self.dirty = True

    @property
    def has_order(self) -> bool:
        """True while released nodes are left to traverse."""
        return any(t.released for t in self.targets)

    @property
    def fatal(self) -> bool:
        """True while a FATAL error is active."""
        return any(e["errorLevel"] == "FATAL" for e in self.errors)

    # ----------------------------------------------------------------- commands

    def _warn(self, error_type: str, description: str, refs: dict[str, str]) -> None:
        self.errors = [e for e in self.errors if e["errorType"] != error_type]
        self.errors.append(
            {
                "errorType": error_type,
                "errorLevel": "WARNING",
                "errorDescription": description,
                "errorReferences": [
                    {"referenceKey": k, "referenceValue": v} for k, v in refs.items()
                ],
            }
        )
        self.dirty = True

    def accept_order(self, order: Order) -> None:
        """Take an order (or an update of the current one) as the spec's Figure 8 says."""
        for kind in ("validationError", "orderError", "orderUpdateError"):
            self.clear_error(kind)
        if order.orderId == self.order_id:
            if order.orderUpdateId < self.order_update_id:
                self._warn(
                    "orderUpdateError",
                    "orderUpdateId lower than the current one",
                    {"orderId": order.orderId},
                )
                return
            if order.orderUpdateId == self.order_update_id:
                return  # the same order again: ignored
        targets: list[_Target] = []
        for node in order.nodes:
            if node.nodePosition is not None:
                x, y = node.nodePosition.x, node.nodePosition.y
                dev = node.nodePosition.allowedDeviationXY or 0.05
            elif node.nodeId in self.graph.nodes:
                x, y = self.graph.nodes[node.nodeId]
                dev = 0.05
            else:
                self._warn(
                    "orderError", f"node {node.nodeId} has no position", {"nodeId": node.nodeId}
                )
                return
            targets.append(
                _Target(
                    node.nodeId,
                    node.sequenceId,
                    x,
                    y,
                    node.released,
                    max(dev, 0.05),
                    [a.actionId for a in node.actions],
                )
            )
        edges = [e.model_dump(exclude_none=True) for e in order.edges]
        actions = [
            {"actionId": a.actionId, "actionType": a.actionType, "actionStatus": "WAITING"}
            for a in [a for n in order.nodes for a in n.actions]
            + [a for e in order.edges for a in e.actions]
        ]
        if order.orderId == self.order_id:  # update: stitch at the first node
            self.targets = [t for t in self.targets if t.released] + targets[1:]
            self.edges = [e for e in self.edges if e["released"]] + edges
            self.action_states += actions
        else:
            self.targets = targets
            self.edges = edges
            self.action_states = actions
        self.order_id = order.orderId
        self.order_update_id = order.orderUpdateId
        self._dwell_left = 0.0
        self.dirty = True

    def instant_action(self, action_id: str, action_type: str) -> None:
        """Run one instant action and record its actionState."""
        status = "FINISHED"
        result: str | None = None
        if action_type == "startPause":
            self.paused = True
        elif action_type == "stopPause":
            self.paused = False
        elif action_type == "cancelOrder":
            if self.has_order:
                self.targets = []
                self.edges = []
                for a in self.action_states:
                    if a["actionStatus"] in ("WAITING", "INITIALIZING", "RUNNING", "PAUSED"):
                        a["actionStatus"] = "FAILED"
            else:
                status = "FAILED"
                self._warn("noOrderToCancel", "no order to cancel", {"actionId": action_id})
        elif action_type == "startCharging":
            if self.driving:
                status, result = "FAILED", "vehicle is driving"
            else:
                self.charging = True
        elif action_type == "stopCharging":
            self.charging = False
            self._charge_goal = False
        elif action_type != "stateRequest":
            status, result = "FAILED", f"unknown actionType {action_type}"
        state: dict[str, Any] = {
            "actionId": action_id,
            "actionType": action_type,
            "actionStatus": status,
        }
        if result:
            state["resultDescription"] = result
        self.action_states.append(state)
        self.dirty = True

    # ----------------------------------------------------------------- dynamics

    def step(self, dt: float) -> None:
        """Advance the vehicle by ``dt`` simulated seconds."""
        rng = self.rng
        # breakdowns and repairs
        if self._repair_left > 0:
            self._repair_left -= dt
            if self._repair_left <= 0:
                self.clear_error("driveFault")
        # obstacles
        if self._obstacle_left > 0:
            self._obstacle_left -= dt
            if self._obstacle_left <= 0:
                self.clear_error("obstacleDetected")
        can_drive = (
            self.has_order
            and not self.paused
            and not self.charging
            and not self.fatal
            and self._obstacle_left <= 0
            and self.operating_mode in _DRIVE_MODES
        )
        was_driving = self.driving
        if can_drive:
            self._drive(dt)
            if self.driving:
                if self.mtbf_s > 0 and rng.random() < dt / self.mtbf_s:
                    self.inject_error("driveFault", "FATAL", "drive controller fault")
                    self._repair_left = rng.expovariate(1.0 / self.mttr_s)
                elif self.obstacle_rate > 0 and rng.random() < dt * self.obstacle_rate:
                    self._warn("obstacleDetected", "obstacle in the protective field", {})
                    self._obstacle_left = rng.uniform(2.0, 8.0)
                if self.fatal or self._obstacle_left > 0:
                    self.driving = False  # stops on the spot
                    self._vx = 0.0
        else:
            self.driving = False
            self._vx = 0.0
        if self.driving != was_driving:
            self.dirty = True
        # battery
        if self.charging:
            self.battery = min(100.0, self.battery + self.charge_rate * dt)
            if self.battery >= 100.0 or (self._charge_goal and self.battery >= 95.0):
                self.charging = False
                self._charge_goal = False
                self.dirty = True
        else:
            drain = self.drain_driving if self.driving else self.drain_idle
            self.battery = max(0.0, self.battery - drain * dt)
        if self.auto_orders:
            self._autonomy(dt)

    def _drive(self, dt: float) -> None:
        budget = self.speed_mps * dt
        self.driving = False
        self._vx = 0.0
        while budget > 0 and self.targets and self.targets[0].released:
            t = self.targets[0]
            dist = math.dist((self.x, self.y), (t.x, t.y))
            if dist <= t.deviation:
                self._traverse(t)
                continue
            self.theta = math.atan2(t.y - self.y, t.x - self.x)
            step = min(budget, dist)
            self.x += step * math.cos(self.theta)
            self.y += step * math.sin(self.theta)
            budget -= step
            self.driving = True
            self._vx = self.speed_mps
            if step >= dist - 1e-9:
                self.x, self.y = t.x, t.y
                self._traverse(t)

    def _traverse(self, t: _Target) -> None:
        self.targets.pop(0)
        self.last_node_id = t.node_id
        self.last_node_seq = t.sequence_id
        self.traversed.append(t.node_id)
        self.edges = [e for e in self.edges if e["sequenceId"] > t.sequence_id]
        for a in self.action_states:
            if a["actionId"] in t.action_ids:
                a["actionStatus"] = "FINISHED"
        if t.node_id == self.graph.charger and self._charge_goal:
            self.charging = True
        self.dirty = True

    def _autonomy(self, dt: float) -> None:
        if (
            self.has_order
            or self.charging
            or self.fatal
            or self.paused
            or self.operating_mode not in _DRIVE_MODES
        ):
            return
        if self._dwell_left > 0:
            self._dwell_left -= dt
            return
        here = self.last_node_id or self.graph.nearest(self.x, self.y)
        if self.battery < self.low_battery:
            goal = self.graph.charger
            self._charge_goal = True
        else:
            choices = [n for n in self.graph.nodes if n not in (here, self.graph.charger)]
            goal = self.rng.choice(sorted(choices))
        if goal == here:
            if self._charge_goal:
                self.charging = True
            return
        self._self_order(self.graph.path(here, goal))
        self._dwell_left = self.rng.expovariate(1 / 5.0)

    def _self_order(self, path: list[str]) -> None:
        g = self.graph
        order = Order.model_validate(
            {
                "headerId": 0,
                "timestamp": datetime.now(UTC),
                "version": "2.0.0",
                "manufacturer": "sim",
                "serialNumber": self.serial,
                "orderId": f"auto-{uuid.UUID(int=self.rng.getrandbits(128))}",
                "orderUpdateId": 0,
                "nodes": [
                    {
                        "nodeId": n,
                        "sequenceId": 2 * i,
                        "released": True,
                        "nodePosition": {"x": g.nodes[n][0], "y": g.nodes[n][1], "mapId": g.map_id},
                        "actions": [],
                    }
                    for i, n in enumerate(path)
                ],
                "edges": [
                    {
                        "edgeId": g.edges[(a, b)],
                        "sequenceId": 2 * i + 1,
                        "released": True,
                        "startNodeId": a,
                        "endNodeId": b,
                        "actions": [],
                    }
                    for i, (a, b) in enumerate(itertools.pairwise(path))
                ],
            }
        )
        self.accept_order(order)

    # ----------------------------------------------------------------- messages

    def position(self) -> dict[str, Any]:
        """``agvPosition``."""
        return {
            "x": round(self.x, 4),
            "y": round(self.y, 4),
            "theta": round(self.theta, 4),
            "mapId": self.graph.map_id,
            "positionInitialized": True,
        }

    def velocity(self) -> dict[str, Any]:
        """``velocity`` in vehicle coordinates."""
        return {"vx": self._vx, "vy": 0.0, "omega": 0.0}

    def state_body(self) -> dict[str, Any]:
        """The ``state`` message without its header."""
        return {
            "orderId": self.order_id,
            "orderUpdateId": self.order_update_id,
            "lastNodeId": self.last_node_id,
            "lastNodeSequenceId": self.last_node_seq,
            "nodeStates": [
                {
                    "nodeId": t.node_id,
                    "sequenceId": t.sequence_id,
                    "released": t.released,
                    "nodePosition": {"x": t.x, "y": t.y, "mapId": self.graph.map_id},
                }
                for t in self.targets
            ],
            "edgeStates": [
                {"edgeId": e["edgeId"], "sequenceId": e["sequenceId"], "released": e["released"]}
                for e in self.edges
            ],
            "agvPosition": self.position(),
            "velocity": self.velocity(),
            "loads": [],
            "driving": self.driving,
            "paused": self.paused,
            "newBaseRequest": False,
            "actionStates": [dict(a) for a in self.action_states],
            "batteryState": {
                "batteryCharge": round(self.battery, 3),
                "batteryVoltage": round(44.0 + 0.08 * self.battery, 2),
                "charging": self.charging,
                "reach": round(self.battery * 40.0, 1),
            },
            "operatingMode": self.operating_mode,
            "errors": [dict(e) for e in self.errors],
            "information": [],
            "safetyState": {
                "eStop": "NONE",
                "fieldViolation": self._obstacle_left > 0,
            },
        }


class _Link:
    """One vehicle's MQTT session and header counters."""

    def __init__(self, sim: AgvFleetSimulator, vehicle: SimVehicle) -> None:
        self.sim = sim
        self.vehicle = vehicle
        self.client: aiomqtt.Client | None = None
        self.killed = False
        self.headers: dict[str, int] = {}
        self.done = asyncio.Event()

    def topic(self, name: str) -> str:
        s = self.sim
        return f"{s.interface_name}/{s.major_version}/{s.manufacturer}/{self.vehicle.serial}/{name}"

    def message(self, topic: str, body: dict[str, Any]) -> bytes:
        header_id = self.headers.get(topic, -1) + 1
        self.headers[topic] = header_id
        return self.header_json(header_id, body)

    def header_json(self, header_id: int, body: dict[str, Any]) -> bytes:
        msg = {
            "headerId": header_id,
            "timestamp": format_timestamp(self.sim.clock()),
            "version": VERSIONS[self.sim.major_version],
            "manufacturer": self.sim.manufacturer,
            "serialNumber": self.vehicle.serial,
            **body,
        }
        return json.dumps(msg, separators=(",", ":")).encode()

    async def publish(self, name: str, body: dict[str, Any], *, qos: int = 0) -> None:
        client = self.client
        if client is None or self.killed:
            return
        retain = name in ("connection", "factsheet")
        await client.publish(self.topic(name), self.message(name, body), qos=qos, retain=retain)


class AgvFleetSimulator:
    """N simulated VDA 5050 vehicles on one broker, as an async context manager.

    ``speed`` multiplies simulated time (a vehicle drives ``speed`` × 1 m/s of wall time);
    ``state_hz`` is the state rate (visualization runs at twice it). ``auto_orders`` makes
    idle vehicles pick random destinations (and the charger when low) on their own; turn it
    off to drive them only with orders from the broker. ``obstacle_rate`` (per driving
    second), ``mtbf_s`` and ``mttr_s`` are in simulated seconds (0 turns them off).
    ``clock`` tells the time the message headers are stamped with (default the wall clock;
    a factory simulator's, so that the fleet's data goes with the factory's).
    """

    def __init__(
        self,
        n_vehicles: int = 3,
        host: str = "127.0.0.1",
        port: int = 1883,
        interface_name: str = "uagv",
        major_version: str = "v2",
        manufacturer: str = "ShopfloorSim",
        seed: int = 0,
        speed: float = 1.0,
        state_hz: float = 2.0,
        *,
        auto_orders: bool = True,
        obstacle_rate: float = 1 / 120.0,
        mtbf_s: float = 3600.0,
        mttr_s: float = 300.0,
        graph: HallGraph | None = None,
        clear_retained: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if major_version not in VERSIONS:
            raise ValueError(f"major_version {major_version!r} is not v2 or v1")
        if not 0 < state_hz <= 50:
            raise ValueError("state_hz must be within (0, 50]")
        self.host = host
        self.port = port
        self.interface_name = interface_name
        self.major_version = major_version
        self.manufacturer = manufacturer
        self.seed = seed
        self.speed = speed
        self.state_hz = state_hz
        self.clear_retained = clear_retained
        self.clock: Callable[[], datetime] = clock or _wall_clock
        """The time of the message headers (an aware datetime)."""
        self.graph = graph or hall_graph()
        self.vehicles: dict[str, SimVehicle] = {}
        starts = sorted(n for n in self.graph.nodes if n != self.graph.charger)
        for i in range(n_vehicles):
            serial = f"AGV-{i + 1:03d}"
            start = starts[i % len(starts)]
            x, y = self.graph.nodes[start]
            rng = random.Random(seed * 1_000_003 + i)
            self.vehicles[serial] = SimVehicle(
                serial=serial,
                graph=self.graph,
                rng=rng,
                x=x,
                y=y,
                battery=round(rng.uniform(60.0, 100.0), 1),
                last_node_id=start,
                auto_orders=auto_orders,
                obstacle_rate=obstacle_rate,
                mtbf_s=mtbf_s,
                mttr_s=mttr_s,
            )
        self._links = {s: _Link(self, v) for s, v in self.vehicles.items()}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def topic(self, serial: str, name: str) -> str:
        """The full topic ``name`` of vehicle ``serial``."""
        return self._links[serial].topic(name)

    async def __aenter__(self) -> AgvFleetSimulator:
        started = []
        for serial, link in self._links.items():
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run(link, ready), name=f"agv-sim[{serial}]")
            self._tasks.append(task)
            started.append(ready)
        try:
            await asyncio.gather(*started)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.clear_retained:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                async with aiomqtt.Client(self.host, self.port, timeout=5.0) as client:
                    for link in self._links.values():
                        for name in ("connection", "factsheet"):
                            await client.publish(link.topic(name), b"", qos=1, retain=True)

    async def kill(self, serial: str) -> None:
        """Break vehicle ``serial``'s connection without DISCONNECT (the broker sends its Will).

        The vehicle stays down until the simulator stops.
        """
        link = self._links[serial]
        link.killed = True
        client = link.client
        if client is not None:
            sock = client._client.socket()  # no public way to drop a session
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        await link.done.wait()

    # ----------------------------------------------------------------- per vehicle

    def _factsheet(self) -> dict[str, Any]:
        return {
            "typeSpecification": {
                "seriesName": "ShopfloorSim Carrier",
                "seriesDescription": "simulated unit-load carrier",
                "agvKinematic": "DIFF",
                "agvClass": "CARRIER",
                "maxLoadMass": 500,
                "localizationTypes": ["NATURAL"],
                "navigationTypes": ["VIRTUAL_LINE_GUIDED"],
            },
            "physicalParameters": {
                "speedMin": 0.01,
                "speedMax": 1.0,
                "accelerationMax": 0.5,
                "decelerationMax": 0.5,
                "heightMin": 0.3,
                "heightMax": 0.4,
                "width": 0.8,
                "length": 1.2,
            },
            "protocolLimits": {},
            "protocolFeatures": {"optionalParameters": [], "agvActions": []},
            "agvGeometry": {},
            "loadSpecification": {},
        }

    async def _run(self, link: _Link, ready: asyncio.Future[None]) -> None:
        v = link.vehicle
        # The Will is published by the broker; its headerId continues the connection topic's.
        will = aiomqtt.Will(
            link.topic("connection"),
            link.header_json(1, {"connectionState": "CONNECTIONBROKEN"}),
            qos=1,
            retain=True,
        )
        try:
            async with aiomqtt.Client(
                self.host,
                self.port,
                identifier=f"{self.interface_name}-{self.manufacturer}-{v.serial}",
                will=will,
                keepalive=5,
                timeout=5.0,
            ) as client:
                link.client = client
                await client.subscribe(link.topic("order"), qos=0)
                await client.subscribe(link.topic("instantActions"), qos=0)
                await link.publish("connection", {"connectionState": "ONLINE"}, qos=1)
                await link.publish("factsheet", self._factsheet(), qos=0)
                if not ready.done():
                    ready.set_result(None)
                try:
                    async with asyncio.TaskGroup() as tg:
                        receiver = tg.create_task(self._receive(link), name=f"{v.serial}.rx")
                        tg.create_task(self._tick(link), name=f"{v.serial}.tick")
                        await self._stop.wait()
                        # The ticker ends by itself at the stop flag: a cancellation can be
                        # lost inside a publish (asyncio.wait_for's race in Python 3.11).
                        receiver.cancel()
                    await link.publish("connection", {"connectionState": "OFFLINE"}, qos=1)
                except* aiomqtt.MqttError:
                    if not link.killed:
                        logger.warning("AGV simulator: %s lost its connection", v.serial)
        except aiomqtt.MqttError as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif not link.killed:
                logger.warning("AGV simulator: %s: %s", v.serial, exc)
        finally:
            link.client = None
            link.done.set()

    async def _receive(self, link: _Link) -> None:
        assert link.client is not None
        v = link.vehicle
        async for message in link.client.messages:
            payload = message.payload
            raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            name = str(message.topic).rsplit("/", 1)[-1]
            try:
                if name == "order":
                    v.accept_order(Order.model_validate_json(raw))
                elif name == "instantActions":
                    for action in InstantActions.model_validate_json(raw).actions:
                        v.instant_action(action.actionId, action.actionType)
            except ValidationError as exc:
                v._warn("validationError", str(exc).splitlines()[0], {"topic": name})

    async def _tick(self, link: _Link) -> None:
        v = link.vehicle
        vis_hz = 2 * self.state_hz
        dt_real = 1.0 / vis_hz
        dt_sim = dt_real * self.speed
        per_state = 2
        n = 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stop.is_set():
            v.step(dt_sim)
            await link.publish(
                "visualization", {"agvPosition": v.position(), "velocity": v.velocity()}
            )
            if v.dirty or n % per_state == 0:
                v.dirty = False
                await link.publish("state", v.state_body())
            n += 1
            next_at += dt_real
            await asyncio.sleep(max(0.0, next_at - loop.time()))

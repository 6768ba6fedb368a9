"""VDA 5050 connector: a master-control view of a fleet of AGVs over MQTT (aiomqtt).

One MQTT session per connection subscribes
``{interface_name}/{major_version}/{manufacturer}/{serial}/{state|connection|factsheet|visualization}``
and turns every message into readings, events and dead letters:

* **Readings** (one :class:`~shopfloor.edge.batch.RawBatch` row each) have the connection name
  as source, the address ``<serialNumber>/<json path>`` and the message header's
  ``timestamp`` (see :data:`STATE_ADDRESSES` for the list). A derived ``<serial>/state`` is
  the vehicle's standard machine state (:func:`derive_state`), ``<serial>/_header_gaps`` the
  number of missed ``headerId`` values (all topics), and ``_fleet/…`` the fleet KPIs. What
  the vehicle did not stamp (the fleet KPIs, a broken connection's Will) and the headers of
  the commands sent take the connector's
  :attr:`~shopfloor.connectors.base.Connector.clock`.
* **Events** (:data:`~shopfloor.historian.base.EVENT_SCHEMA`, ``kind="agv_error"``) for
  every error in the vehicle state: one row when it appears (``end_ts`` null) and the same
  ``event_id`` again with ``end_ts`` when it disappears.
* **Dead letters** (:data:`~shopfloor.edge.deadletter.DEAD_LETTER_SCHEMA`) for messages that
  are not JSON or do not validate against the spec's models; the reason names the field.

The connector also sends ``instantActions`` and ``order`` messages with their own
``headerId`` per vehicle and topic (:meth:`VdaConnector.instant_action`,
:meth:`VdaConnector.send_order`, :meth:`VdaConnector.write`). The spec recommends QoS 0 for
``order``, ``instantActions``, ``state``, ``visualization`` and ``factsheet``, QoS 1 for
``connection``; the connector follows it (``command_qos`` changes it for commands).

Endpoint: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``.

Connection options:

``interface_name`` (default ``uagv``), ``major_version`` (``v2`` default, or ``v1``)
    First topic levels.
``manufacturer`` (default ``+``), ``serial_numbers`` (list; default all, ``+``)
    Which vehicles to subscribe to.
``client_id``, ``username``, ``password``, ``keepalive_s`` (default 30)
    MQTT session.
``ca_certs``, ``certfile``, ``keyfile``, ``tls_insecure``
    TLS for ``mqtts://``.
``auto_discover`` (default false)
    Emit every address; otherwise only the addresses of the configured points.
``fleet_kpi_interval_s`` (default 10), ``utilisation_window_s`` (default 900)
    Period of the fleet KPI rows and their sliding window.
``command_qos`` (default 0)
    QoS of ``order`` and ``instantActions`` messages.
``flush_interval_ms`` (default 100), ``flush_rows`` (default 10000)
    Batching of readings, events and dead letters.
``reconnect_initial_s`` (default 0.5), ``reconnect_max_s`` (default 30)
    Reconnect backoff.

Writes (:meth:`VdaConnector.write`): ``<serial>/pause`` (true → ``startPause``, false →
``stopPause``), ``<serial>/resume`` (``stopPause``), ``<serial>/cancel_order``
(``cancelOrder``), ``<serial>/start_charging`` (``startCharging``),
``<serial>/stop_charging`` (``stopCharging``), ``<serial>/instant_action`` (value: an
actionType, or JSON ``{"actionType": …, "params": {…}}``) and ``<serial>/order`` (value:
JSON with ``orderId``, ``nodes``, ``edges``, optional ``orderUpdateId``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from shopfloor.connectors._vda5050_models import (
    VERSIONS,
    Action,
    ActionParameter,
    Connection,
    Edge,
    Factsheet,
    InstantActions,
    Node,
    Order,
    State,
    Visualization,
)
from shopfloor.connectors.base import (
    Backoff,
    BatchSink,
    Connector,
    PointInfo,
    PointSpec,
    TableSink,
)
from shopfloor.edge.batch import TS_TYPE, RawBatchBuilder, to_us
from shopfloor.edge.deadletter import DeadLetterBuilder
from shopfloor.edge.events import EVENT_SCHEMA
from shopfloor.errors import ConnectorError

__all__ = [
    "FLEET_ADDRESSES",
    "STATE_ADDRESSES",
    "VdaConnector",
    "VdaMetrics",
    "VdaSettings",
    "derive_state",
]

logger = logging.getLogger(__name__)


STATE_ADDRESSES: tuple[str, ...] = (
    "batteryState.batteryCharge",
    "batteryState.charging",
    "agvPosition.x",
    "agvPosition.y",
    "agvPosition.theta",
    "agvPosition.mapId",
    "velocity.vx",
    "velocity.vy",
    "velocity.omega",
    "driving",
    "paused",
    "operatingMode",
    "safetyState.eStop",
    "safetyState.fieldViolation",
    "orderId",
    "orderUpdateId",
    "lastNodeId",
    "lastNodeSequenceId",
    "loads",
    "errors",
    "connectionState",
    "state",
    "_header_gaps",
)
"""Per-vehicle addresses (after ``<serialNumber>/``) the connector emits."""

FLEET_ADDRESSES: tuple[str, ...] = (
    "_fleet/vehicles_available",
    "_fleet/utilisation",
    "_fleet/errors_per_hour",
    "_fleet/battery_histogram",
)
"""Fleet KPI addresses."""

# address (after "<serial>/") → signal name, data type, UN/CEFACT unit, kind
_SIGNALS: dict[str, tuple[str, str, str | None, str]] = {
    "batteryState.batteryCharge": ("battery_charge", "float", "P1", "measurement"),
    "batteryState.charging": ("charging", "bool", None, "state"),
    "agvPosition.x": ("position_x", "float", "MTR", "measurement"),
    "agvPosition.y": ("position_y", "float", "MTR", "measurement"),
    "agvPosition.theta": ("heading", "float", "C81", "measurement"),
    "agvPosition.mapId": ("map_id", "string", None, "state"),
    "velocity.vx": ("velocity", "float", "MTS", "measurement"),
    "velocity.vy": ("velocity_y", "float", "MTS", "measurement"),
    "velocity.omega": ("angular_velocity", "float", "2A", "measurement"),
    "driving": ("driving", "bool", None, "state"),
    "paused": ("paused", "bool", None, "state"),
    "operatingMode": ("operating_mode", "string", None, "state"),
    "safetyState.eStop": ("e_stop", "string", None, "state"),
    "safetyState.fieldViolation": ("field_violation", "bool", None, "state"),
    "orderId": ("order_id", "string", None, "state"),
    "orderUpdateId": ("order_update_id", "int", None, "state"),
    "lastNodeId": ("last_node_id", "string", None, "state"),
    "lastNodeSequenceId": ("last_node_sequence_id", "int", None, "state"),
    "loads": ("loads", "int", "H87", "measurement"),
    "errors": ("errors", "int", "H87", "measurement"),
    "connectionState": ("connection_state", "string", None, "state"),
    "state": ("state", "string", None, "state"),
    "_header_gaps": ("header_gaps", "int", "H87", "counter"),
}
_FLEET_SIGNALS: dict[str, tuple[str, str, str | None, str]] = {
    "_fleet/vehicles_available": ("vehicles_available", "int", "H87", "measurement"),
    "_fleet/utilisation": ("utilisation", "float", "P1", "measurement"),
    "_fleet/errors_per_hour": ("errors_per_hour", "float", "H87", "measurement"),
    "_fleet/battery_histogram": ("battery_histogram", "json", None, "measurement"),
}

_TOPICS = ("state", "connection", "factsheet", "visualization")
_MODELS: dict[str, type[State | Connection | Factsheet | Visualization]] = {
    "state": State,
    "connection": Connection,
    "factsheet": Factsheet,
    "visualization": Visualization,
}
_SEVERITY = {"WARNING": 2, "FATAL": 4}
_SETUP_MODES = frozenset({"MANUAL", "SERVICE", "TEACHIN"})
_OFFLINE = frozenset({"OFFLINE", "CONNECTIONBROKEN"})

StandardState = Literal["running", "idle", "unplanned_stop", "planned_stop", "setup", "offline"]


def derive_state(state: State | None, connection: str | None) -> StandardState:
    """The vehicle's standard machine state from its last ``state`` and ``connection``.

    In order of precedence: connection OFFLINE/CONNECTIONBROKEN → ``offline``; any FATAL
    error → ``unplanned_stop``; operatingMode MANUAL/SERVICE/TEACHIN → ``setup``; charging →
    ``planned_stop``; paused → ``idle``; driving or an order with nodes left → ``running``;
    otherwise ``idle``.
    """
    if connection in _OFFLINE:
        return "offline"
    if state is None:
        return "idle" if connection == "ONLINE" else "offline"
    if any(e.errorLevel == "FATAL" for e in state.errors):
        return "unplanned_stop"
    if state.operatingMode in _SETUP_MODES:
        return "setup"
    if state.batteryState.charging:
        return "planned_stop"
    if state.paused:
        return "idle"
    if state.driving or state.nodeStates:
        return "running"
    return "idle"


def _executing(state: State | None) -> bool:
    return state is not None and bool(state.driving or state.nodeStates) and not state.paused


@dataclass(frozen=True, slots=True)
class VdaSettings:
    """The connection options of a VDA 5050 connector, validated (see the module doc)."""

    host: str
    port: int
    tls: bool = False
    interface_name: str = "uagv"
    major_version: str = "v2"
    manufacturer: str = "+"
    serial_numbers: tuple[str, ...] = ()
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    auto_discover: bool = False
    fleet_kpi_interval_s: float = 10.0
    utilisation_window_s: float = 900.0
    command_qos: int = 0
    flush_interval_ms: float = 100.0
    flush_rows: int = 10_000
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    @property
    def version(self) -> str:
        """The ``version`` header of messages sent (``2.0.0`` or ``1.1.0``)."""
        return VERSIONS[self.major_version]

    @classmethod
    def from_options(cls, name: str, endpoint: str, options: Mapping[str, Any]) -> VdaSettings:
        """Validate ``endpoint`` and ``options``; errors name the connection."""
        where = f"connection {name!r}"
        parts = urlsplit(endpoint)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConnectorError(
                f"{where}: endpoint {endpoint!r} is not mqtt://host:port or mqtts://host:port"
            )
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConnectorError(f"{where}: endpoint {endpoint!r} has a bad port") from exc
        known = set(cls.__dataclass_fields__) - {"host", "port", "tls"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConnectorError(f"{where}: unknown VDA 5050 option(s) {', '.join(unknown)}")
        opts: dict[str, Any] = dict(options)
        major = str(opts.get("major_version", "v2"))
        if major not in VERSIONS:
            raise ConnectorError(f"{where}: major_version {major!r} is not v2 or v1")
        opts["major_version"] = major
        serials = opts.get("serial_numbers") or ()
        if isinstance(serials, str):
            serials = (serials,)
        opts["serial_numbers"] = tuple(str(s) for s in serials if str(s) != "+")
        try:
            for key in (
                "fleet_kpi_interval_s",
                "utilisation_window_s",
                "flush_interval_ms",
                "reconnect_initial_s",
                "reconnect_max_s",
            ):
                if key in opts:
                    opts[key] = float(opts[key])
            for key in ("keepalive_s", "command_qos", "flush_rows"):
                if key in opts:
                    opts[key] = int(opts[key])
        except (TypeError, ValueError) as exc:
            raise ConnectorError(f"{where}: {exc}") from exc
        if opts.get("command_qos", 0) not in (0, 1, 2):
            raise ConnectorError(f"{where}: command_qos must be 0, 1 or 2")
        for key in ("auto_discover", "tls_insecure"):
            if key in opts:
                opts[key] = bool(opts[key])
        for key in ("interface_name", "manufacturer"):
            if key in opts:
                opts[key] = str(opts[key])
                if not opts[key] or "/" in opts[key] or "#" in opts[key]:
                    raise ConnectorError(f"{where}: {key} {opts[key]!r} is not a topic level")
        return cls(host=parts.hostname, port=port, tls=tls, **opts)


@dataclass(slots=True)
class VdaMetrics:
    """Counters of one connector (beside :class:`~shopfloor.connectors.base.ConnectorStatus`).

    ``header_gaps`` counts missed ``headerId`` values per ``(serialNumber, topic)``.
    """

    messages_total: int = 0
    dead_letters_total: int = 0
    events_total: int = 0
    commands_total: int = 0
    header_gaps: dict[tuple[str, str], int] = field(default_factory=dict)

    def gaps_of(self, serial: str) -> int:
        """Missed headerIds of one vehicle over all its topics."""
        return sum(n for (s, _), n in self.header_gaps.items() if s == serial)


class _Timeline:
    """A boolean over time; integrates the share of ``True`` in a sliding window."""

    __slots__ = ("_changes", "_first")

    def __init__(self) -> None:
        self._changes: deque[tuple[float, bool]] = deque()
        self._first: float | None = None

    def set(self, t: float, value: bool) -> None:
        if self._first is None:
            self._first = t
        if not self._changes or self._changes[-1][1] != value:
            self._changes.append((t, value))

    def busy(self, now: float, window: float) -> tuple[float, float]:
        """Seconds ``True`` and seconds observed within ``[now - window, now]``."""
        if self._first is None:
            return 0.0, 0.0
        start = max(now - window, self._first)
        # forget changes older than the window, keeping the one in force at its start
        while len(self._changes) > 1 and self._changes[1][0] <= start:
            self._changes.popleft()
        busy = 0.0
        changes = list(self._changes)
        for i, (t, value) in enumerate(changes):
            t_end = changes[i + 1][0] if i + 1 < len(changes) else now
            lo, hi = max(t, start), min(t_end, now)
            if value and hi > lo:
                busy += hi - lo
        return busy, max(0.0, now - start)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class _Vehicle:
    serial: str
    manufacturer: str
    state: State | None = None
    connection: str | None = None
    derived: str | None = None
    factsheet: Factsheet | None = None
    errors: dict[str, tuple[str, int]] = field(default_factory=dict)  # key → (event id, ts)
    busy: _Timeline = field(default_factory=_Timeline)
    last_ts: int = 0  # newest header timestamp seen, µs


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiomqtt.MqttCodeError):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and the endpoint right?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _validation_reason(topic: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    suffix = f" (+{more} more)" if more > 0 else ""
    return f"{topic} does not validate: " + "; ".join(parts) + suffix


def _events_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Event rows (``ts``/``end_ts`` in µs) as an :data:`EVENT_SCHEMA` table."""
    columns = []
    for f in EVENT_SCHEMA:
        values = [r[f.name] for r in rows]
        if f.type == TS_TYPE:
            columns.append(pa.array(values, pa.int64()).cast(TS_TYPE))
        else:
            columns.append(pa.array(values, f.type))
    return pa.Table.from_arrays(columns, schema=EVENT_SCHEMA)


def _error_key(err: Any) -> str:
    refs = sorted((r.referenceKey, r.referenceValue) for r in err.errorReferences or ())
    return json.dumps([err.errorType, err.errorLevel, err.errorDescription, refs])


def _as_model(item: Any, model: type[BaseModel]) -> Any:
    """``item`` (a model, a dataclass or a mapping) as ``model``."""
    if isinstance(item, model):
        return item
    if isinstance(item, BaseModel):
        return model.model_validate(item.model_dump(exclude_none=True))
    if is_dataclass(item) and not isinstance(item, type):
        data = {k: v for k, v in asdict(item).items() if v is not None}
        return model.model_validate(data)
    return model.model_validate(item)


class VdaConnector(Connector):
    """Reads a fleet of VDA 5050 vehicles through an MQTT broker and sends them commands.

    ``dead_letter_sink`` receives dead-letter tables; without one, dead letters are logged
    (once per vehicle and topic) and counted in :attr:`metrics`. ``event_sink`` receives
    ``agv_error`` events; without one, events are only counted.
    """

    protocol = "vda5050"

    def __init__(
        self,
        name: str,
        endpoint: str,
        points: Sequence[PointSpec],
        options: Mapping[str, Any] | None = None,
        *,
        dead_letter_sink: TableSink | None = None,
        event_sink: TableSink | None = None,
    ) -> None:
        super().__init__(
            name,
            endpoint,
            points,
            options,
            dead_letter_sink=dead_letter_sink,
            event_sink=event_sink,
        )
        self.settings = VdaSettings.from_options(name, endpoint, self.options)
        self.metrics = VdaMetrics()
        self._wanted = frozenset(p.address for p in self.points)
        self._builder = RawBatchBuilder()
        self._letters = DeadLetterBuilder()
        self._events: list[dict[str, Any]] = []
        self._flush_now = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._vehicles: dict[str, _Vehicle] = {}
        self._last_header: dict[tuple[str, str], int] = {}
        self._sent_header: dict[tuple[str, str], int] = {}
        self._error_starts: deque[float] = deque()
        self._started = time.monotonic()
        self._logged_letters: set[tuple[str, str]] = set()

    # ----------------------------------------------------------------- public API

    @property
    def vehicles(self) -> list[str]:
        """Serial numbers of the vehicles seen so far."""
        return sorted(self._vehicles)

    def vehicle_state(self, serial: str) -> str | None:
        """The derived standard state of a vehicle (None if never seen)."""
        v = self._vehicles.get(serial)
        return v.derived if v else None

    def factsheet(self, serial: str) -> Factsheet | None:
        """The last factsheet a vehicle published."""
        v = self._vehicles.get(serial)
        return v.factsheet if v else None

    def _where(self) -> str:
        return f"connection {self.name!r} ({self.endpoint})"

    async def run(self, sink: BatchSink) -> None:
        """Subscribe and deliver batches until cancelled; reconnect on failures."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._flush_loop(sink), name=f"vda5050[{self.name}].flush")
                tg.create_task(self._kpi_loop(), name=f"vda5050[{self.name}].fleet-kpis")
                tg.create_task(self._supervise(), name=f"vda5050[{self.name}].supervisor")
        finally:
            self._client = None
            await self._flush(sink)
            self._set_state("stopped")

    def describe(self, address: str) -> PointInfo | None:
        """The signal behind an unbound address: ``<serial>/<path>`` or ``_fleet/<kpi>``.

        Vehicles are named by their serial number; the fleet KPIs belong to an asset named
        after the connection.
        """
        fleet = _FLEET_SIGNALS.get(address)
        if fleet is not None:
            return PointInfo(self.name, *fleet)
        serial, _, path = address.partition("/")
        known = _SIGNALS.get(path)
        if not serial or known is None:
            return None
        return PointInfo(serial, *known)

    async def write(self, address: str, value: Any) -> None:
        """Send a command to a vehicle; see the module documentation for the addresses."""
        serial, _, command = address.rpartition("/")
        if not serial:
            raise ConnectorError(f"{self._where()}: write {address}: not <serial>/<command>")
        simple = {
            "resume": "stopPause",
            "cancel_order": "cancelOrder",
            "start_charging": "startCharging",
            "stop_charging": "stopCharging",
        }
        if command == "pause":
            on = value.strip().lower() in ("1", "true", "on") if isinstance(value, str) else value
            await self.instant_action(serial, "startPause" if on else "stopPause")
        elif command in simple:
            await self.instant_action(serial, simple[command])
        elif command == "instant_action":
            spec = json.loads(value) if isinstance(value, str) and value.startswith("{") else value
            if isinstance(spec, Mapping):
                await self.instant_action(
                    serial, str(spec["actionType"]), dict(spec.get("params") or {})
                )
            else:
                await self.instant_action(serial, str(spec))
        elif command == "order":
            spec = json.loads(value) if isinstance(value, str) else value
            await self.send_order(
                serial,
                str(spec["orderId"]),
                spec["nodes"],
                spec.get("edges", []),
                order_update_id=int(spec.get("orderUpdateId", 0)),
            )
        else:
            raise ConnectorError(
                f"{self._where()}: write {address}: unknown command {command!r} (pause, "
                "resume, cancel_order, start_charging, stop_charging, instant_action, order)"
            )

    async def pause(self, serial: str) -> str:
        """Send ``startPause``; returns the actionId."""
        return await self.instant_action(serial, "startPause")

    async def resume(self, serial: str) -> str:
        """Send ``stopPause``; returns the actionId."""
        return await self.instant_action(serial, "stopPause")

    async def cancel_order(self, serial: str) -> str:
        """Send ``cancelOrder``; returns the actionId."""
        return await self.instant_action(serial, "cancelOrder")

    async def start_charging(self, serial: str) -> str:
        """Send ``startCharging``; returns the actionId."""
        return await self.instant_action(serial, "startCharging")

    async def instant_action(
        self,
        serial: str,
        action_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        blocking_type: Literal["NONE", "SOFT", "HARD"] = "HARD",
    ) -> str:
        """Send one instant action to ``serial``; returns its ``actionId`` (a UUID)."""
        action_id = str(uuid.uuid4())
        action = Action(
            actionType=action_type,
            actionId=action_id,
            blockingType=blocking_type,
            actionParameters=[ActionParameter(key=k, value=v) for k, v in (params or {}).items()]
            or None,
        )
        manufacturer = self._manufacturer_of(serial)
        msg = InstantActions(
            **self._header(serial, "instantActions", manufacturer), actions=[action]
        )
        await self._publish(serial, manufacturer, "instantActions", msg.to_json())
        return action_id

    async def send_order(
        self,
        serial: str,
        order_id: str,
        nodes: Sequence[Any],
        edges: Sequence[Any],
        order_update_id: int = 0,
    ) -> Order:
        """Send an ``order``; nodes and edges may be models, dataclasses or mappings.

        Returns the message sent. Validation errors raise :class:`ConnectorError`.
        """
        manufacturer = self._manufacturer_of(serial)
        try:
            order = Order(
                **self._header(serial, "order", manufacturer, advance=False),
                orderId=order_id,
                orderUpdateId=order_update_id,
                nodes=[_as_model(n, Node) for n in nodes],
                edges=[_as_model(e, Edge) for e in edges],
            )
        except ValidationError as exc:
            raise ConnectorError(f"{self._where()}: order {order_id!r}: {exc}") from exc
        self._advance_header(serial, "order")
        await self._publish(serial, manufacturer, "order", order.to_json())
        return order

    # ----------------------------------------------------------------- sending

    def _manufacturer_of(self, serial: str) -> str:
        v = self._vehicles.get(serial)
        if v is not None:
            return v.manufacturer
        if self.settings.manufacturer != "+":
            return self.settings.manufacturer
        raise ConnectorError(
            f"{self._where()}: vehicle {serial!r} has not been seen and no manufacturer is set"
        )

    def _header(
        self, serial: str, topic: str, manufacturer: str, *, advance: bool = True
    ) -> dict[str, Any]:
        key = (serial, topic)
        header_id = self._sent_header.get(key, -1) + 1
        if advance:
            self._sent_header[key] = header_id
        return {
            "headerId": header_id,
            "timestamp": _EPOCH + timedelta(microseconds=self.clock()),
            "version": self.settings.version,
            "manufacturer": manufacturer,
            "serialNumber": serial,
        }

    def _advance_header(self, serial: str, topic: str) -> None:
        key = (serial, topic)
        self._sent_header[key] = self._sent_header.get(key, -1) + 1

    async def _publish(self, serial: str, manufacturer: str, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            raise ConnectorError(f"{self._where()}: not connected; cannot send {topic}")
        s = self.settings
        full = f"{s.interface_name}/{s.major_version}/{manufacturer}/{serial}/{topic}"
        try:
            await client.publish(full, payload, qos=s.command_qos)
        except aiomqtt.MqttError as exc:
            raise ConnectorError(f"{self._where()}: sending {topic}: {_describe(exc)}") from exc
        self.metrics.commands_total += 1

    # ----------------------------------------------------------------- connection

    def _set_state(
        self, state: Literal["connected", "disconnected", "stopped"], error: str | None = None
    ) -> None:
        if self.status.set_state(state, error):
            if state == "connected":
                logger.info("VDA 5050 %s: connected", self._where())
            elif state == "disconnected":
                logger.warning("VDA 5050 %s: disconnected: %s", self._where(), error)

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.tls:
            return None
        ctx = ssl.create_default_context(cafile=s.ca_certs)
        if s.certfile:
            ctx.load_cert_chain(s.certfile, s.keyfile)
        if s.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _subscriptions(self) -> list[str]:
        s = self.settings
        serials = s.serial_numbers or ("+",)
        base = f"{s.interface_name}/{s.major_version}/{s.manufacturer}"
        return [f"{base}/{serial}/{topic}" for serial in serials for topic in _TOPICS]

    async def _supervise(self) -> None:
        s = self.settings
        backoff = Backoff(s.reconnect_initial_s, s.reconnect_max_s)
        first = True
        while True:
            if not first:
                self.status.reconnects += 1
            first = False
            try:
                await self._session(backoff)
            except aiomqtt.MqttError as exc:
                self._client = None
                self._set_state("disconnected", _describe(exc))
            except OSError as exc:  # e.g. TLS setup errors
                self._client = None
                self._set_state("disconnected", _describe(exc))
            await backoff.sleep()

    async def _session(self, backoff: Backoff) -> None:
        s = self.settings
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            keepalive=s.keepalive_s,
            tls_context=self._tls_context(),
            timeout=10.0,
        )
        async with client:
            for topic in self._subscriptions():
                await client.subscribe(topic, qos=1 if topic.endswith("/connection") else 0)
            self._client = client
            self._set_state("connected")
            backoff.reset()
            try:
                async for message in client.messages:
                    self._on_message(str(message.topic), bytes(message.payload or b""))
            finally:
                self._client = None

    # ----------------------------------------------------------------- messages

    def _emit(self, serial: str, path: str, ts: int, value: Any) -> None:
        address = f"{serial}/{path}"
        if self.settings.auto_discover or address in self._wanted:
            self._builder.append(self.name, address, ts, value)

    def _dead_letter(self, topic: str, serial: str, kind: str, reason: str, payload: bytes) -> None:
        self.metrics.dead_letters_total += 1
        self._letters.add(self.name, reason, location=topic, payload=payload)
        if self.dead_letter_sink is None and (serial, kind) not in self._logged_letters:
            self._logged_letters.add((serial, kind))
            logger.warning(
                "VDA 5050 %s: dead letter on %s: %s (further ones for this vehicle and topic "
                "are counted, not logged)",
                self._where(),
                topic,
                reason,
            )
        self._flush_now.set()

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.metrics.messages_total += 1
        parts = topic.split("/")
        if len(parts) != 5 or parts[4] not in _TOPICS:
            self._dead_letter(topic, "", "topic", f"unexpected topic {topic!r}", payload)
            return
        _, _, manufacturer, serial, kind = parts
        if not payload:
            return  # a retained message being cleared
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._dead_letter(topic, serial, kind, f"{kind} is not JSON: {exc}", payload)
            return
        model = _MODELS[kind]
        try:
            msg = model.model_validate(data)
        except ValidationError as exc:
            self._dead_letter(topic, serial, kind, _validation_reason(kind, exc), payload)
            header_id = data.get("headerId") if isinstance(data, dict) else None
            if isinstance(header_id, int) and not isinstance(header_id, bool):
                # it arrived, so it is no gap (readings from it are lost, but dead-lettered)
                self._check_header(serial, kind, header_id, self.clock())
            return
        if msg.serialNumber != serial:
            self._dead_letter(
                topic,
                serial,
                kind,
                f"{kind}: serialNumber {msg.serialNumber!r} differs from the topic's {serial!r}",
                payload,
            )
            return
        vehicle = self._vehicles.get(serial)
        if vehicle is None:
            vehicle = self._vehicles[serial] = _Vehicle(serial, manufacturer)
        vehicle.manufacturer = manufacturer
        ts = to_us(msg.timestamp)
        self._check_header(serial, kind, msg.headerId, ts)
        if isinstance(msg, State):
            self._on_state(vehicle, msg, ts)
        elif isinstance(msg, Connection):
            if ts <= vehicle.last_ts:
                # A CONNECTIONBROKEN Will carries the header written when the vehicle
                # connected; the broker sends it after the vehicle's last message, so it is
                # stamped on arrival (never before what the vehicle said last).
                ts = max(self.clock(), vehicle.last_ts + 1)
            vehicle.connection = msg.connectionState
            self._emit(serial, "connectionState", ts, msg.connectionState)
            self._update_derived(vehicle, ts)
        elif isinstance(msg, Visualization):
            self._position(serial, msg.agvPosition, msg.velocity, ts)
        else:
            vehicle.factsheet = msg
        vehicle.last_ts = max(vehicle.last_ts, ts)
        if len(self._builder) >= self.settings.flush_rows:
            self._flush_now.set()

    def _check_header(self, serial: str, kind: str, header_id: int, ts: int) -> None:
        key = (serial, kind)
        last = self._last_header.get(key)
        self._last_header[key] = header_id
        if last is None:
            self.metrics.header_gaps.setdefault(key, 0)
            self._emit(serial, "_header_gaps", ts, self.metrics.gaps_of(serial))
            return
        if header_id > last + 1:
            self.metrics.header_gaps[key] = self.metrics.header_gaps.get(key, 0) + (
                header_id - last - 1
            )
            self._emit(serial, "_header_gaps", ts, self.metrics.gaps_of(serial))
        # header_id <= last: a restarted vehicle (or a retained message seen again)

    def _position(self, serial: str, pos: Any, vel: Any, ts: int) -> None:
        if pos is not None:
            self._emit(serial, "agvPosition.x", ts, float(pos.x))
            self._emit(serial, "agvPosition.y", ts, float(pos.y))
            self._emit(serial, "agvPosition.theta", ts, float(pos.theta))
            self._emit(serial, "agvPosition.mapId", ts, pos.mapId)
        if vel is not None:
            for name in ("vx", "vy", "omega"):
                v = getattr(vel, name)
                if v is not None:
                    self._emit(serial, f"velocity.{name}", ts, float(v))

    def _on_state(self, vehicle: _Vehicle, st: State, ts: int) -> None:
        serial = vehicle.serial
        vehicle.state = st
        if vehicle.connection is None:
            vehicle.connection = "ONLINE"  # a vehicle that sends state is connected
        emit = self._emit
        emit(serial, "batteryState.batteryCharge", ts, float(st.batteryState.batteryCharge))
        emit(serial, "batteryState.charging", ts, st.batteryState.charging)
        self._position(serial, st.agvPosition, st.velocity, ts)
        emit(serial, "driving", ts, st.driving)
        if st.paused is not None:
            emit(serial, "paused", ts, st.paused)
        emit(serial, "operatingMode", ts, st.operatingMode)
        emit(serial, "safetyState.eStop", ts, st.safetyState.eStop)
        emit(serial, "safetyState.fieldViolation", ts, st.safetyState.fieldViolation)
        emit(serial, "orderId", ts, st.orderId)
        emit(serial, "orderUpdateId", ts, st.orderUpdateId)
        emit(serial, "lastNodeId", ts, st.lastNodeId)
        emit(serial, "lastNodeSequenceId", ts, st.lastNodeSequenceId)
        if st.loads is not None:
            emit(serial, "loads", ts, len(st.loads))
        emit(serial, "errors", ts, len(st.errors))
        self._track_errors(vehicle, st, ts)
        vehicle.busy.set(time.monotonic(), _executing(st))
        self._update_derived(vehicle, ts, force=True)

    def _update_derived(self, vehicle: _Vehicle, ts: int, *, force: bool = False) -> None:
        derived = derive_state(vehicle.state, vehicle.connection)
        if vehicle.connection in _OFFLINE:
            vehicle.busy.set(time.monotonic(), False)
        if force or derived != vehicle.derived:
            vehicle.derived = derived
            self._emit(vehicle.serial, "state", ts, derived)

    def _track_errors(self, vehicle: _Vehicle, st: State, ts: int) -> None:
        current = {_error_key(e): e for e in st.errors}
        for key, err in current.items():
            if key in vehicle.errors:
                continue
            event_id = str(uuid.uuid4())
            vehicle.errors[key] = (event_id, ts)
            self._error_starts.append(time.monotonic())
            self._events.append(self._event(vehicle.serial, event_id, ts, None, err))
        for key in [k for k in vehicle.errors if k not in current]:
            event_id, start = vehicle.errors.pop(key)
            err_type, level, description, refs = json.loads(key)
            self._events.append(
                {
                    "event_id": event_id,
                    "kind": "agv_error",
                    "asset": vehicle.serial,
                    "signal": None,
                    "ts": start,
                    "end_ts": ts,
                    "code": err_type,
                    "severity": _SEVERITY.get(level, 2),
                    "message": description,
                    "data": json.dumps(
                        {
                            "errorLevel": level,
                            "errorReferences": [
                                {"referenceKey": k, "referenceValue": v} for k, v in refs
                            ],
                        }
                    ),
                }
            )
        if self._events:
            self._flush_now.set()

    @staticmethod
    def _event(serial: str, event_id: str, ts: int, end_ts: int | None, err: Any) -> dict[str, Any]:
        refs = [r.model_dump() for r in err.errorReferences or ()]
        return {
            "event_id": event_id,
            "kind": "agv_error",
            "asset": serial,
            "signal": None,
            "ts": ts,
            "end_ts": end_ts,
            "code": err.errorType,
            "severity": _SEVERITY.get(err.errorLevel, 2),
            "message": err.errorDescription,
            "data": json.dumps({"errorLevel": err.errorLevel, "errorReferences": refs}),
        }

    # ----------------------------------------------------------------- fleet KPIs

    def fleet_kpis(self, now: float | None = None) -> dict[str, float | int | str]:
        """The fleet KPIs now (see :data:`FLEET_ADDRESSES`).

        ``vehicles_available``: vehicles online whose state is running or idle;
        ``utilisation``: share of observed vehicle time spent executing orders within
        ``utilisation_window_s``; ``errors_per_hour``: errors that began within the window,
        per hour of window; ``battery_histogram``: JSON list of 10 counts of battery charge
        per 10 % bin (100 % falls in the last).
        """
        now = time.monotonic() if now is None else now
        window = self.settings.utilisation_window_s
        available = sum(1 for v in self._vehicles.values() if v.derived in ("running", "idle"))
        busy = observed = 0.0
        for v in self._vehicles.values():
            b, o = v.busy.busy(now, window)
            busy += b
            observed += o
        while self._error_starts and self._error_starts[0] < now - window:
            self._error_starts.popleft()
        span = min(window, max(now - self._started, 1e-9))
        errors_per_hour = len(self._error_starts) * 3600.0 / span
        bins = [0] * 10
        for v in self._vehicles.values():
            if v.state is not None and v.connection not in _OFFLINE:
                charge = v.state.batteryState.batteryCharge
                bins[min(9, max(0, int(charge // 10)))] += 1
        return {
            "vehicles_available": available,
            "utilisation": busy / observed if observed > 0 else 0.0,
            "errors_per_hour": errors_per_hour,
            "battery_histogram": json.dumps(bins),
        }

    def _emit_kpis(self) -> None:
        ts = self.clock()
        for name, value in self.fleet_kpis().items():
            address = f"_fleet/{name}"
            if self.settings.auto_discover or address in self._wanted:
                self._builder.append(self.name, address, ts, value)
        self._flush_now.set()

    async def _kpi_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.fleet_kpi_interval_s)
            if self._vehicles:
                self._emit_kpis()

    # ----------------------------------------------------------------- delivery

    async def _flush_loop(self, sink: BatchSink) -> None:
        interval = self.settings.flush_interval_ms / 1000.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._flush_now.wait()
            self._flush_now.clear()
            await self._flush(sink)

    async def _flush(self, sink: BatchSink) -> None:
        if len(self._builder):
            batch = self._builder.build()
            self.status.values_total += len(batch)
            self.status.batches_total += 1
            await sink(batch)
        if self._events:
            rows, self._events = self._events, []
            self.metrics.events_total += len(rows)
            if self.event_sink is not None:
                table = _events_table(rows)
                await self.event_sink(table)
        if len(self._letters):
            letters = self._letters.build()
            if self.dead_letter_sink is not None:
                await self.dead_letter_sink(letters)

"""Sparkplug B 3.0 connector: a Primary Host Application over MQTT (aiomqtt).

One MQTT session per connection. The host

* connects with its Will on ``spBv1.0/STATE/{host_id}`` — JSON
  ``{"online": false, "timestamp": t}``, QoS 1, retained — then publishes
  ``{"online": true, "timestamp": t}`` (the same ``t``) there, retained, QoS 1, and subscribes
  ``spBv1.0/{group}/#`` for each configured group and its own STATE topic (should it ever see
  itself reported offline while connected, it publishes online again). On a clean stop it
  publishes the offline STATE itself before disconnecting;
* tracks every edge node session: NBIRTH (``seq`` 0, ``bdSeq`` metric) registers the node's
  metrics with name, datatype and alias, DBIRTH a device's; NDATA/DDATA resolve aliases;
  ``seq`` must go up by one (modulo 256) on every NDATA, DBIRTH, DDATA and DDEATH;
* asks for a rebirth (NCMD ``Node Control/Rebirth`` = true) on a ``seq`` gap, on data from a
  node or device that has not been born, and on an unknown metric or alias. A gap means
  messages were lost on the way (a broker drops QoS 0 messages for a subscriber that falls
  behind); the birth is still the node's current one — an alias only changes with a new
  NBIRTH — so the data after the gap, and until the answering birth arrives (an edge node
  stops sending data when it gets the request), is decoded with it and kept; the lost
  messages are counted in :attr:`SparkplugMetrics.seq_gaps_total`. Data from a node or
  device that is not born in this host session (never seen, after its death, or before its
  first birth since the host reconnected — the node may have been born again with other
  aliases meanwhile), and data naming an alias or metric its birth did not declare, cannot be
  decoded with certainty: dead letters with the reason until the next NBIRTH. Rebirth
  requests to one node are at most one per ``rebirth_interval_s``, and while one is not
  answered by an NBIRTH it is repeated only after ``rebirth_timeout_s`` (a host that falls
  behind would otherwise flood the edge nodes, and itself, with births);
* on NDEATH (only with the ``bdSeq`` of the current session — a stale NDEATH is ignored) and
  DDEATH emits one row per known metric of the node (and its devices) or of the device, with
  no value and quality ``BAD_NOT_CONNECTED``, at the death's time.

Rows (:class:`~shopfloor.edge.batch.RawBatch`): source is the connection name, address
``{group}/{edge}/{device}/{metric name}`` (``{group}/{edge}/{metric name}`` for node
metrics), ``ts`` the metric's timestamp, else the payload's, else the arrival time. Values:
integer types and DateTime (ms since the epoch) → int (a UInt64 beyond the int64 range → its
decimal string), Float/Double → float, Boolean → bool, String/Text/UUID → str, Bytes/File →
base64 str, arrays/DataSet/Template → JSON text. ``is_null`` → a row without value, quality
GOOD. Historical metrics (``is_historical``) are emitted like the others with their own
timestamps — the historian orders by time, so they do not displace newer values — and counted
in :attr:`SparkplugMetrics.historical_total`. ``bdSeq`` and the ``Node Control/…`` metrics are
rows like any other.

Data messages without a datatype per metric (as the specification recommends for NDATA and
DDATA) are read with the datatype of the birth. Simple data messages — every metric by name or
every one by alias, one scalar value each — take a columnar path
(:mod:`~shopfloor.connectors._sparkplug_columns`) that yields the same rows without decoding
metric by metric in Python; anything else is decoded in full.

Dead letters: undecodable payloads, unparseable topics, timestamps beyond the representable
range, and untrusted data (before birth, after a gap, unknown aliases) — the topic as
location, the raw payload bytes.

Writes (:meth:`SparkplugConnector.write`) take a row address and send NCMD (node metric) or
DCMD (device metric) with the metric's name, alias and datatype from its birth.

Endpoint: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``.

Connection options:

``host_id`` (default ``shopfloor-{connection name}``)
    The Primary Host id of the STATE topic.
``groups`` (list; default ``+``, all)
    Sparkplug group ids to subscribe to.
``client_id``, ``username``, ``password``, ``keepalive_s`` (default 30)
    MQTT session.
``ca_certs``, ``certfile``, ``keyfile``, ``tls_insecure``
    TLS for ``mqtts://``.
``auto_discover`` (default: true when no points are configured)
    Emit every metric; otherwise only the addresses of the configured points.
``rebirth_interval_s`` (default 2)
    Least time between two rebirth requests to the same edge node.
``rebirth_timeout_s`` (default 30)
    How long an unanswered rebirth request is awaited before the next one.
``flush_interval_ms`` (default 100), ``flush_rows`` (default 10000)
    Batching of readings and dead letters.
``reconnect_initial_s`` (default 0.5), ``reconnect_max_s`` (default 30)
    Reconnect backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
import pyarrow as pa

from shopfloor.connectors._sparkplug_columns import (
    WIRE_OF,
    DataColumns,
    DataPlan,
    parse_data,
    simple_count,
)
from shopfloor.connectors._sparkplug_payload import (
    ARRAY_TYPES,
    DataType,
    Metric,
    Payload,
    PayloadError,
    decode_payload,
    encode_payload,
    retyped,
    value_to_json,
)
from shopfloor.connectors.base import (
    Backoff,
    BatchSink,
    Connector,
    PointInfo,
    PointSpec,
    TableSink,
)
from shopfloor.edge.batch import Quality, RawBatch, RawBatchBuilder
from shopfloor.edge.deadletter import DeadLetterBuilder
from shopfloor.errors import ConnectorError

__all__ = ["SparkplugConnector", "SparkplugMetrics", "SparkplugSettings", "row_value"]

logger = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
REBIRTH_METRIC = "Node Control/Rebirth"
_NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
_DATA_TYPES = frozenset({"NDATA", "DDATA"})
_MAX_TS_MS = (1 << 63) // 1000 - 1  # the rows hold microseconds in an int64
_MAX_PLANS = 64  # cached metric sets per device (report-by-exception sends many)
_DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})
_INT_TYPES = frozenset(
    {
        DataType.Int8,
        DataType.Int16,
        DataType.Int32,
        DataType.Int64,
        DataType.UInt8,
        DataType.UInt16,
        DataType.UInt32,
        DataType.UInt64,
        DataType.DateTime,
    }
)
_INT64_MAX = (1 << 63) - 1
_FLOAT_TYPES = frozenset({DataType.Float, DataType.Double})
_STR_TYPES = frozenset(
    {DataType.String, DataType.Text, DataType.UUID, DataType.Bytes, DataType.File}
)


def _data_type(datatype: int) -> str:
    """The data model's type of a Sparkplug datatype (as :func:`row_value` stores it)."""
    if datatype in _INT_TYPES:
        return "int"
    if datatype in _FLOAT_TYPES:
        return "float"
    if datatype == DataType.Boolean:
        return "bool"
    if datatype in _STR_TYPES:
        return "string"
    return "json"


def _slug(text: str) -> str:
    """A metric name as a signal name (``Node Control/Rebirth`` → ``node-control-rebirth``)."""
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-") or "metric"


def row_value(metric: Metric) -> float | int | bool | str | None:
    """The value of a metric as stored in a raw row (see the module documentation)."""
    v = metric.value
    if metric.is_null or v is None:
        return None
    t = metric.datatype
    if t in _INT_TYPES and isinstance(v, int):
        return v if v <= _INT64_MAX else str(v)
    if t in (DataType.Float, DataType.Double):
        return float(v)
    if t == DataType.Boolean:
        return bool(v)
    if isinstance(v, str):
        return v
    if isinstance(v, bool | int | float) and t not in ARRAY_TYPES:
        return v if not isinstance(v, int) or v <= _INT64_MAX else str(v)
    text = value_to_json(v)
    # bytes render as a JSON string: store the bare base64 text
    return json.loads(text) if isinstance(v, bytes) else text


@dataclass(frozen=True, slots=True)
class SparkplugSettings:
    """The connection options of a Sparkplug host connector, validated (see the module doc)."""

    host: str
    port: int
    host_id: str
    tls: bool = False
    groups: tuple[str, ...] = ("+",)
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    auto_discover: bool | None = None
    rebirth_interval_s: float = 2.0
    rebirth_timeout_s: float = 30.0
    flush_interval_ms: float = 100.0
    flush_rows: int = 10_000
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    @classmethod
    def from_options(
        cls, name: str, endpoint: str, options: Mapping[str, Any]
    ) -> SparkplugSettings:
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
            raise ConnectorError(f"{where}: unknown Sparkplug option(s) {', '.join(unknown)}")
        opts: dict[str, Any] = dict(options)
        opts["host_id"] = str(opts.get("host_id") or f"shopfloor-{name}")
        groups = opts.get("groups") or ("+",)
        if isinstance(groups, str):
            groups = (groups,)
        opts["groups"] = tuple(str(g) for g in groups)
        for key, values in (("host_id", (opts["host_id"],)), ("groups", opts["groups"])):
            for v in values:
                bad = not v or "/" in v or "#" in v or ("+" in v and v != "+")
                if bad or (key == "host_id" and v == "+"):
                    raise ConnectorError(f"{where}: {key} {v!r} is not a topic level")
        try:
            for key in (
                "rebirth_interval_s",
                "rebirth_timeout_s",
                "flush_interval_ms",
                "reconnect_initial_s",
                "reconnect_max_s",
            ):
                if key in opts:
                    opts[key] = float(opts[key])
            for key in ("keepalive_s", "flush_rows"):
                if key in opts:
                    opts[key] = int(opts[key])
        except (TypeError, ValueError) as exc:
            raise ConnectorError(f"{where}: {exc}") from exc
        for key in ("auto_discover", "tls_insecure"):
            if opts.get(key) is not None:
                opts[key] = bool(opts[key])
        return cls(host=parts.hostname, port=port, tls=tls, **opts)


@dataclass(slots=True)
class SparkplugMetrics:
    """Counters of one host connector (beside :class:`~.base.ConnectorStatus`)."""

    messages_total: int = 0
    data_messages_total: int = 0
    """NDATA and DDATA messages received (trusted or not)."""
    births_total: int = 0
    deaths_total: int = 0
    stale_deaths_total: int = 0
    rebirth_requests_total: int = 0
    seq_gaps_total: int = 0
    """Sequence gaps: places where one or more messages of an edge node were lost."""
    messages_lost_total: int = 0
    """Messages missing at the gaps, from the ``seq`` distance (modulo 256)."""
    dead_letters_total: int = 0
    historical_total: int = 0
    commands_total: int = 0


@dataclass(frozen=True, slots=True)
class _Known:
    name: str
    datatype: int
    alias: int | None


@dataclass(slots=True)
class _Scope:
    """The metrics one birth declared (a node's own, or one device's)."""

    by_name: dict[str, _Known] = field(default_factory=dict)
    by_alias: dict[int, _Known] = field(default_factory=dict)
    alive: bool = True
    plans: dict[tuple[Any, ...], DataPlan | None] = field(default_factory=dict)
    """Columnar plans by metric set (names or aliases in message order); None: not simple."""

    def register(self, metrics: Sequence[Metric]) -> None:
        self.by_name.clear()
        self.by_alias.clear()
        self.plans.clear()
        for m in metrics:
            if m.name is None:
                continue
            known = _Known(m.name, m.datatype, m.alias)
            self.by_name[m.name] = known
            if m.alias is not None:
                self.by_alias[m.alias] = known

    def resolve(self, m: Metric) -> _Known | None:
        if m.name is not None:
            return self.by_name.get(m.name)
        if m.alias is not None:
            return self.by_alias.get(m.alias)
        return None


@dataclass(slots=True)
class _Node:
    group: str
    edge: str
    born: bool = False  # an NBIRTH opened a session that is still trusted
    bd_seq: int | None = None
    seq: int = 0
    scope: _Scope = field(default_factory=_Scope)
    devices: dict[str, _Scope] = field(default_factory=dict)
    last_rebirth: float = -1e18
    rebirth_pending: bool = False
    """A rebirth was requested and no NBIRTH has answered it yet."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


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


def _coerce(datatype: int, value: Any) -> Any:
    """A written value (possibly a string from the API) as a ``datatype`` value."""
    t = datatype
    name = DataType(t).name if t in DataType._value2member_map_ else f"datatype {t}"
    try:
        if t in _INT_TYPES:
            if isinstance(value, str):
                return int(value.strip(), 0)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{value} is not an integer")
            return int(value)
        if t in (DataType.Float, DataType.Double):
            return float(value)
        if t == DataType.Boolean:
            if isinstance(value, str):
                text = value.strip().lower()
                if text not in ("1", "0", "true", "false", "on", "off"):
                    raise ValueError(f"{value!r} is not a boolean")
                return text in ("1", "true", "on")
            return bool(value)
        if t in (DataType.String, DataType.Text, DataType.UUID):
            return str(value)
        if t in (DataType.Bytes, DataType.File):
            return value.encode() if isinstance(value, str) else bytes(value)
        if t in ARRAY_TYPES:
            items = json.loads(value) if isinstance(value, str) else value
            return tuple(items)
    except (TypeError, ValueError) as exc:
        raise ConnectorError(f"value {value!r} does not fit {name}: {exc}") from exc
    raise ConnectorError(f"writing {name} metrics is not supported")


class SparkplugConnector(Connector):
    """A Sparkplug B Primary Host Application reading edge nodes through an MQTT broker.

    ``dead_letter_sink`` receives dead-letter tables; without one they are counted in
    :attr:`metrics` and logged once per edge node.
    """

    protocol = "sparkplug"

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
        self.settings = SparkplugSettings.from_options(name, endpoint, self.options)
        self.metrics = SparkplugMetrics()
        self._wanted = frozenset(p.address for p in self.points)
        auto = self.settings.auto_discover
        self._emit_all = not self._wanted if auto is None else auto
        self._builder = RawBatchBuilder()
        self._columns = DataColumns()
        self._columnar = True  # the columnar data path (tests compare it with the general one)
        self._address_ids: dict[str, int] = {}
        """The address pool: every address of a columnar plan → its index (append only)."""
        self._new_addresses: list[str] = []
        self._address_array = pa.array([], pa.string())
        """The pool as Arrow (its first part; :attr:`_new_addresses` follow)."""
        self._letters = DeadLetterBuilder()
        self._flush_now = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._logged_letters: set[tuple[str, str]] = set()
        self._state_ts = 0

    # ----------------------------------------------------------------- public API

    @property
    def state_topic(self) -> str:
        """The host's STATE topic."""
        return f"{NAMESPACE}/STATE/{self.settings.host_id}"

    def nodes(self) -> list[tuple[str, str]]:
        """``(group, edge node)`` pairs seen so far."""
        return sorted(self._nodes)

    def node_online(self, group: str, edge: str) -> bool:
        """True while the edge node has a trusted session (born, no gap, not dead)."""
        node = self._nodes.get((group, edge))
        return node is not None and node.born

    def describe(self, address: str) -> PointInfo | None:
        """The signal behind a row address, from the births seen so far.

        ``asset`` is ``{edge}/{device}`` for device metrics (``{edge}`` for the node's own),
        ``name`` the metric name as a slug, ``data_type`` from the birth's datatype. None
        for an address no birth declared.
        """
        group, _, rest = address.partition("/")
        edge, _, path = rest.partition("/")
        node = self._nodes.get((group, edge))
        if node is None or not path:
            return None
        device, _, metric_name = path.partition("/")
        scope = node.devices.get(device)
        if scope is not None and metric_name in scope.by_name:
            known = scope.by_name[metric_name]
            return PointInfo(f"{edge}/{device}", _slug(known.name), _data_type(known.datatype))
        if path in node.scope.by_name:
            known = node.scope.by_name[path]
            return PointInfo(edge, _slug(known.name), _data_type(known.datatype))
        return None

    def _where(self) -> str:
        return f"connection {self.name!r} ({self.endpoint})"

    async def run(self, sink: BatchSink) -> None:
        """Subscribe and deliver batches until cancelled; reconnect on failures."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._flush_loop(sink), name=f"sparkplug[{self.name}].flush")
                tg.create_task(self._supervise(), name=f"sparkplug[{self.name}].supervisor")
        finally:
            self._client = None
            await self._flush(sink)
            self._set_state("stopped")

    async def write(self, address: str, value: Any) -> None:
        """Send an NCMD or DCMD setting the metric at ``address`` (a row address)."""
        group, _, rest = address.partition("/")
        edge, _, path = rest.partition("/")
        node = self._nodes.get((group, edge))
        if node is None or not path:
            raise ConnectorError(f"{self._where()}: write {address}: no such edge node seen")
        target: tuple[str, _Known] | None = None
        device, _, metric_name = path.partition("/")
        scope = node.devices.get(device)
        if scope is not None and metric_name in scope.by_name:
            target = (device, scope.by_name[metric_name])
        elif path in node.scope.by_name:
            target = ("", node.scope.by_name[path])
        if target is None:
            raise ConnectorError(
                f"{self._where()}: write {address}: no such metric in the node's births"
            )
        device, known = target
        try:
            coerced = _coerce(known.datatype, value)
        except ConnectorError as exc:
            raise ConnectorError(f"{self._where()}: write {address}: {exc}") from exc
        metric = Metric(
            name=known.name,
            alias=known.alias,
            datatype=known.datatype,
            value=coerced,
            timestamp=_now_ms(),
        )
        try:
            data = encode_payload(Payload(metrics=(metric,), timestamp=_now_ms()))
        except PayloadError as exc:
            raise ConnectorError(f"{self._where()}: write {address}: {exc}") from exc
        if device:
            topic = f"{NAMESPACE}/{group}/DCMD/{edge}/{device}"
        else:
            topic = f"{NAMESPACE}/{group}/NCMD/{edge}"
        await self._publish(topic, data)
        self.metrics.commands_total += 1

    async def request_rebirth(self, group: str, edge: str) -> None:
        """Send ``Node Control/Rebirth`` = true to an edge node now."""
        metric = Metric(
            name=REBIRTH_METRIC, datatype=DataType.Boolean, value=True, timestamp=_now_ms()
        )
        data = encode_payload(Payload(metrics=(metric,), timestamp=_now_ms()))
        await self._publish(f"{NAMESPACE}/{group}/NCMD/{edge}", data)
        self.metrics.rebirth_requests_total += 1

    async def _publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            raise ConnectorError(f"{self._where()}: not connected; cannot send to {topic}")
        try:
            await client.publish(topic, payload, qos=0)
        except aiomqtt.MqttError as exc:
            raise ConnectorError(f"{self._where()}: sending to {topic}: {_describe(exc)}") from exc

    # ----------------------------------------------------------------- connection

    def _set_state(
        self, state: Literal["connected", "disconnected", "stopped"], error: str | None = None
    ) -> None:
        if self.status.set_state(state, error):
            if state == "connected":
                logger.info("Sparkplug %s: connected", self._where())
            elif state == "disconnected":
                logger.warning("Sparkplug %s: disconnected: %s", self._where(), error)

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

    def _state_payload(self, online: bool) -> bytes:
        return json.dumps({"online": online, "timestamp": self._state_ts}).encode()

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
            except (aiomqtt.MqttError, OSError) as exc:  # OSError: e.g. TLS setup
                self._client = None
                self._set_state("disconnected", _describe(exc))
            await backoff.sleep()

    async def _session(self, backoff: Backoff) -> None:
        s = self.settings
        self._state_ts = _now_ms()
        inbox: list[asyncio.Queue[aiomqtt.Message]] = []

        class _Inbox(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt's message queue, kept here so that a backlog is drained in one go."""

            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                inbox.append(self)

        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            keepalive=s.keepalive_s,
            tls_context=self._tls_context(),
            will=aiomqtt.Will(self.state_topic, self._state_payload(False), qos=1, retain=True),
            clean_session=True,
            timeout=10.0,
            queue_type=_Inbox,
        )
        async with client:
            await client.subscribe(self.state_topic, qos=1)
            await client.publish(self.state_topic, self._state_payload(True), qos=1, retain=True)
            for group in s.groups:
                await client.subscribe(f"{NAMESPACE}/{group}/#", qos=1)
            self._client = client
            # every session starts from scratch: births are needed again
            for node in self._nodes.values():
                node.born = False
            self._set_state("connected")
            backoff.reset()
            try:
                async for message in client.messages:
                    # the iterator waits for a message or a disconnect (a task each time);
                    # what queued up behind it is taken straight from the queue
                    await self._on_message(message.topic.value, _payload(message))
                    queue = inbox[0] if inbox else None
                    while queue is not None and not queue.empty():
                        message = queue.get_nowait()
                        await self._on_message(message.topic.value, _payload(message))
            finally:
                self._client = None
                if _cancelling():
                    # a clean stop: say so before the connection goes
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        async with asyncio.timeout(2.0):
                            await client.publish(
                                self.state_topic, self._state_payload(False), qos=1, retain=True
                            )

    # ----------------------------------------------------------------- messages

    def _dead_letter(self, topic: str, key: str, reason: str, payload: bytes) -> None:
        self.metrics.dead_letters_total += 1
        self._letters.add(self.name, reason, location=topic, payload=payload)
        kind = reason.split(":", 1)[0]
        if self.dead_letter_sink is None and (key, kind) not in self._logged_letters:
            self._logged_letters.add((key, kind))
            logger.warning(
                "Sparkplug %s: dead letter on %s: %s (further ones like it are counted, "
                "not logged)",
                self._where(),
                topic,
                reason,
            )
        self._flush_now.set()

    def _emit(self, address: str, ts_ms: int, value: Any, quality: int = Quality.GOOD) -> None:
        if self._emit_all or address in self._wanted:
            self._builder.append(self.name, address, ts_ms * 1000, value, quality)

    async def _on_message(self, topic: str, payload: bytes) -> None:
        self.metrics.messages_total += 1
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == NAMESPACE and parts[1] == "STATE":
            await self._on_state(parts[2], payload)
            return
        if (
            len(parts) not in (4, 5)
            or parts[0] != NAMESPACE
            or (len(parts) == 4 and parts[2] not in _NODE_TYPES)
            or (len(parts) == 5 and parts[2] not in _DEVICE_TYPES)
            or not all(parts)
        ):
            self._dead_letter(topic, topic, f"unparseable Sparkplug topic {topic!r}", payload)
            return
        group, kind, edge = parts[1], parts[2], parts[3]
        device = parts[4] if len(parts) == 5 else ""
        if kind in ("NCMD", "DCMD"):
            return  # commands to edge nodes (ours included): not data
        node = self._nodes.get((group, edge))
        if kind in _DATA_TYPES:
            self.metrics.data_messages_total += 1
            if self._columnar and await self._on_simple_data(
                node, group, edge, kind, device, topic, payload
            ):
                return
        msg = self._decode(kind, f"{group}/{edge}", topic, payload)
        if msg is None:
            return
        if node is None:
            node = self._nodes[(group, edge)] = _Node(group, edge)
        if kind == "NBIRTH":
            self._on_nbirth(node, msg, topic, payload)
        elif kind == "NDEATH":
            self._on_ndeath(node, msg)
        else:
            await self._on_sequenced(node, kind, device, msg, topic, payload)
        self._check_size()

    def _check_size(self) -> None:
        if len(self._builder) + len(self._columns) >= self.settings.flush_rows:
            self._flush_now.set()

    def _decode(self, kind: str, key: str, topic: str, payload: bytes) -> Payload | None:
        """The payload decoded in full, or None after dead-lettering it."""
        try:
            msg = decode_payload(payload)
        except PayloadError as exc:
            self._dead_letter(topic, key, f"malformed {kind} payload: {exc}", payload)
            return None
        stamps = [m.timestamp for m in msg.metrics if m.timestamp is not None]
        if msg.timestamp is not None:
            stamps.append(msg.timestamp)
        if stamps and max(stamps) > _MAX_TS_MS:
            reason = f"{kind}: timestamp {max(stamps)} ms is beyond the representable range"
            self._dead_letter(topic, key, reason, payload)
            return None
        return msg

    async def _on_simple_data(
        self,
        node: _Node | None,
        group: str,
        edge: str,
        kind: str,
        device: str,
        topic: str,
        payload: bytes,
    ) -> bool:
        """Take a data message the columnar way; False when it is not simple (decode it all).

        The checks and dead letters are those of :meth:`_on_sequenced` and :meth:`_on_data`.
        """
        parsed = parse_data(payload)
        if parsed is None:
            return False
        env, cols = parsed
        if simple_count(env, cols) < 0 or (
            env.HasField("timestamp") and env.timestamp > _MAX_TS_MS
        ):
            return False
        if cols.timestamp and max(cols.timestamp) > _MAX_TS_MS:
            return False
        if node is None:
            node = self._nodes[(group, edge)] = _Node(group, edge)
        seq = env.seq if env.HasField("seq") else None
        if not await self._in_sequence(node, kind, seq, topic, payload):
            return True
        scope = node.devices.get(device) if device else node.scope
        if scope is None or not scope.alive:
            await self._distrust(
                node, topic, f"{kind} before DBIRTH of {device!r}: not trusted", payload
            )
            return True
        plan = self._plan(node, device, scope, cols)
        if plan is None or not plan.matches(cols):
            # in sequence, but not for the columnar path: decode it in full
            msg = self._decode(kind, f"{group}/{edge}", topic, payload)
            if msg is not None:
                await self._on_data(node, device, scope, msg, topic, payload)
                self._check_size()
            return True
        if cols.is_historical:
            self.metrics.historical_total += sum(cols.is_historical)
        ts = env.timestamp if env.HasField("timestamp") else _now_ms()
        self._columns.add(plan, cols, ts)
        self._check_size()
        return True

    def _plan(self, node: _Node, device: str, scope: _Scope, cols: Any) -> DataPlan | None:
        """The columnar plan of the metric set of ``cols`` (None: not for the columnar path)."""
        by_name = bool(cols.name)
        key: tuple[Any, ...] = tuple(cols.name) if by_name else tuple(cols.alias)
        try:
            return scope.plans[key]
        except KeyError:
            pass
        table: Mapping[Any, _Known] = scope.by_name if by_name else scope.by_alias
        known = [table.get(k) for k in key]
        found = [k for k in known if k is not None]
        if len(found) < len(known):
            return None  # an unknown metric: the general path asks for a rebirth
        plan = None
        if all(k.datatype in WIRE_OF for k in found):
            prefix = self._prefix(node, device)
            addresses = [prefix + k.name for k in found]
            plan = DataPlan.build(
                [self._address_id(a) for a in addresses],
                [k.datatype for k in found],
                [self._emit_all or a in self._wanted for a in addresses],
            )
        if len(scope.plans) >= _MAX_PLANS:
            scope.plans.clear()
        scope.plans[key] = plan
        return plan

    def _address_id(self, address: str) -> int:
        """The index of ``address`` in the pool the columnar rows refer to."""
        i = self._address_ids.get(address)
        if i is None:
            i = self._address_ids[address] = len(self._address_ids)
            self._new_addresses.append(address)
        return i

    async def _on_state(self, host_id: str, payload: bytes) -> None:
        if host_id != self.settings.host_id or not payload:
            return
        try:
            state = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if isinstance(state, dict) and state.get("online") is False and self._client is not None:
            # someone (an old Will of ours, or another client) says we are offline: we are not
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.publish(
                    self.state_topic, self._state_payload(True), qos=1, retain=True
                )

    def _prefix(self, node: _Node, device: str) -> str:
        base = f"{node.group}/{node.edge}/"
        return f"{base}{device}/" if device else base

    def _emit_metrics(self, node: _Node, device: str, msg: Payload, scope: _Scope) -> None:
        """Rows for the metrics of ``msg`` that ``scope`` knows (all of them, for data)."""
        fallback = msg.timestamp if msg.timestamp is not None else _now_ms()
        prefix = self._prefix(node, device)
        for m in msg.metrics:
            known = scope.resolve(m)
            if known is None:
                continue
            ts = m.timestamp if m.timestamp is not None else fallback
            if m.is_historical:
                self.metrics.historical_total += 1
            self._emit(prefix + known.name, ts, row_value(m))

    def _emit_stale(self, node: _Node, device: str, scope: _Scope, ts_ms: int) -> None:
        prefix = self._prefix(node, device)
        for name in scope.by_name:
            self._emit(prefix + name, ts_ms, None, Quality.BAD_NOT_CONNECTED)
        scope.alive = False
        self._flush_now.set()

    def _on_nbirth(self, node: _Node, msg: Payload, topic: str, payload: bytes) -> None:
        bd_seq = next((m.value for m in msg.metrics if m.name == "bdSeq"), None)
        node.born = True
        node.rebirth_pending = False
        node.bd_seq = bd_seq if isinstance(bd_seq, int) else None
        node.seq = msg.seq if msg.seq is not None else 0
        node.devices.clear()
        node.scope = _Scope()
        node.scope.register(msg.metrics)
        self.metrics.births_total += 1
        if any(m.name is None for m in msg.metrics):
            where = f"{node.group}/{node.edge}"
            self._dead_letter(topic, where, "NBIRTH: a metric without a name", payload)
        self._emit_metrics(node, "", msg, node.scope)
        self._flush_now.set()

    def _on_ndeath(self, node: _Node, msg: Payload) -> None:
        bd_seq = next((m.value for m in msg.metrics if m.name == "bdSeq"), None)
        if node.bd_seq is None or bd_seq != node.bd_seq or not node.scope.alive:
            self.metrics.stale_deaths_total += 1
            return
        ts = msg.timestamp if msg.timestamp is not None else _now_ms()
        node.born = False
        self.metrics.deaths_total += 1
        self._emit_stale(node, "", node.scope, ts)
        for device, scope in node.devices.items():
            if scope.alive:
                self._emit_stale(node, device, scope, ts)

    async def _distrust(self, node: _Node, topic: str, reason: str, payload: bytes) -> None:
        """Dead-letter data that cannot be trusted and ask for a rebirth."""
        node.born = False
        self._dead_letter(topic, f"{node.group}/{node.edge}", reason, payload)
        await self._ask_rebirth(node, reason)

    async def _ask_rebirth(self, node: _Node, reason: str) -> None:
        """Ask ``node`` for a rebirth, unless one was asked for recently (module doc)."""
        now = time.monotonic()
        s = self.settings
        wait = s.rebirth_timeout_s if node.rebirth_pending else s.rebirth_interval_s
        if now - node.last_rebirth < wait:
            return
        node.last_rebirth = now
        try:
            await self.request_rebirth(node.group, node.edge)
        except ConnectorError as exc:
            logger.warning("Sparkplug %s: rebirth request failed: %s", self._where(), exc)
        else:
            node.rebirth_pending = True
            logger.info(
                "Sparkplug %s: asked %s/%s for a rebirth: %s",
                self._where(),
                node.group,
                node.edge,
                reason,
            )

    async def _in_sequence(
        self, node: _Node, kind: str, seq: int | None, topic: str, payload: bytes
    ) -> bool:
        """Whether a sequenced message is trusted (the node born, ``seq`` present).

        A gap in ``seq`` is counted and answered with a rebirth request; the message is
        trusted all the same (module doc) and the count goes on from its ``seq``.
        """
        if not node.born:
            await self._distrust(
                node, topic, f"{kind} before NBIRTH: not trusted, rebirth requested", payload
            )
            return False
        if seq is None:
            await self._distrust(
                node, topic, f"{kind} without seq: not trusted, rebirth requested", payload
            )
            return False
        expected = (node.seq + 1) % 256
        node.seq = seq
        if seq != expected:
            self.metrics.seq_gaps_total += 1
            self.metrics.messages_lost_total += (seq - expected) % 256
            await self._ask_rebirth(
                node, f"{kind}: seq gap (expected {expected}, got {seq}) on {topic}"
            )
        return True

    async def _on_sequenced(
        self, node: _Node, kind: str, device: str, msg: Payload, topic: str, payload: bytes
    ) -> None:
        if not await self._in_sequence(node, kind, msg.seq, topic, payload):
            return
        if kind == "NDATA":
            await self._on_data(node, "", node.scope, msg, topic, payload)
        elif kind == "DBIRTH":
            scope = _Scope()
            scope.register(msg.metrics)
            node.devices[device] = scope
            self.metrics.births_total += 1
            self._emit_metrics(node, device, msg, scope)
            self._flush_now.set()
        else:
            scope_or_none = node.devices.get(device)
            if scope_or_none is None or not scope_or_none.alive:
                await self._distrust(
                    node, topic, f"{kind} before DBIRTH of {device!r}: not trusted", payload
                )
                return
            if kind == "DDATA":
                await self._on_data(node, device, scope_or_none, msg, topic, payload)
            else:  # DDEATH
                self.metrics.deaths_total += 1
                ts = msg.timestamp if msg.timestamp is not None else _now_ms()
                self._emit_stale(node, device, scope_or_none, ts)

    async def _on_data(
        self, node: _Node, device: str, scope: _Scope, msg: Payload, topic: str, payload: bytes
    ) -> None:
        known = [scope.resolve(m) for m in msg.metrics]
        unknown = [m for m, k in zip(msg.metrics, known, strict=True) if k is None]
        if unknown:
            first = unknown[0]
            what = f"name {first.name!r}" if first.name is not None else f"alias {first.alias}"
            await self._distrust(
                node, topic, f"unknown metric {what} (not in the birth): rebirth requested", payload
            )
            return
        if any(m.datatype == DataType.Unknown for m in msg.metrics):
            # sent without datatypes, as the specification recommends: read as born
            try:
                metrics = tuple(
                    retyped(m, k.datatype)
                    for m, k in zip(msg.metrics, known, strict=True)
                    if k is not None
                )
            except PayloadError as exc:
                key = f"{node.group}/{node.edge}"
                kind = "DDATA" if device else "NDATA"
                self._dead_letter(topic, key, f"malformed {kind} payload: {exc}", payload)
                return
            msg = Payload(metrics, msg.timestamp, msg.seq, msg.uuid, msg.body)
        self._emit_metrics(node, device, msg, scope)

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
        batches = []
        if len(self._builder):
            batches.append(self._builder.build())
        if len(self._columns):
            if self._new_addresses:  # the pool grew: a new array with the new ones appended
                tail = pa.array(self._new_addresses, pa.string())
                self._address_array = pa.concat_arrays([self._address_array, tail])
                self._new_addresses = []
            table, ids = self._columns.build(self.name, self._address_array)
            batches.append(RawBatch(table, ids, self._address_array))
        for batch in batches:  # births and deaths first, as they came
            if len(batch):
                self.status.values_total += len(batch)
                self.status.batches_total += 1
                await sink(batch)
        if len(self._letters):
            letters = self._letters.build()
            if self.dead_letter_sink is not None:
                await self.dead_letter_sink(letters)


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return payload if isinstance(payload, bytes) else bytes(payload or b"")


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0

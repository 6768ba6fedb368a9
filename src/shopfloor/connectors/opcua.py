"""OPC UA connector: one asyncua client session per connection, subscriptions per point.

Connection options (``options`` of the connection):

``publishing_interval_ms`` (default 1000)
    Publishing interval of the subscriptions. A point may override it with its own
    ``publishing_interval_ms``; points are grouped into one subscription per interval.
``sampling_interval_ms`` (default: the publishing interval)
    Default sampling interval of the monitored items (per point: ``sampling_interval_ms``).
``queue_size`` (default 1)
    Default queue size of the monitored items (per point: ``queue_size``).
``security_policy`` (``None`` | ``Basic256Sha256``), ``security_mode`` (``Sign`` |
``SignAndEncrypt``), ``certificate``, ``private_key``, ``private_key_password``,
``server_certificate``, ``application_uri``
    Secure channel. The client's application URI must equal the URI in the certificate's
    subjectAltName; when ``application_uri`` is not given it is read from the certificate.
    Without ``server_certificate`` the server's certificate is taken from its endpoints.
``username``, ``password`` or ``password_env``
    User name identity token (``password_env`` names an environment variable).
``flush_interval_ms`` (default 100), ``flush_rows`` (default 10000)
    Readings are collected and handed to the sink as one batch every interval, or earlier
    when that many rows are waiting.
``timeout_s`` (default 4), ``watchdog_interval_s`` (default 1)
    Request timeout, and the period of the keep-alive probe that detects a dead server.
``session_timeout_ms`` (default 600000)
    The session lifetime asked of the server (the keep-alive renews it).
``reconnect_initial_s`` (default 0.5), ``reconnect_max_s`` (default 30)
    Reconnect backoff (full jitter, capped exponential).

Point options (``PointSpec.options``):

``sampling_interval_ms``, ``queue_size``, ``publishing_interval_ms``
    See above.
``deadband_abs``
    Absolute deadband: the server reports a change only when it exceeds this amount.
``deadband_pct``
    Percent deadband (0–100) of the node's ``EURange`` (an OPC UA AnalogItem property).
    The connector reads ``EURange`` when it subscribes and asks the server for the
    equivalent *absolute* deadband ``pct / 100 × (High − Low)`` — servers without percent
    deadband support (asyncua's among them) then filter correctly too. A point with
    ``deadband_pct`` whose node has no ``EURange`` is a configuration error (reported with
    :attr:`~shopfloor.edge.batch.Quality.BAD_CONFIG_ERROR`).
``events``
    ``true`` subscribes to the events of the node (an object with an event notifier, e.g.
    ``i=2253`` the Server object) instead of its value: each event is one row with the
    event's message as string value and the event's ``Time`` as timestamp.

Readings carry the configured node id string as address, the *source* timestamp (else the
server timestamp, else the receive time) and the OPC DA quality byte mapped from the
status code (:func:`quality_from_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.events import get_filter_from_event_type
from asyncua.common.subscription import (
    DataChangeEvent,
    OpcEvent,
    OverflowPolicy,
    StatusChangeEvent,
    Subscription,
)
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from shopfloor.connectors.base import (
    Backoff,
    BatchSink,
    Connector,
    ConnectorState,
    Outbox,
    PointSpec,
)
from shopfloor.edge.batch import Quality
from shopfloor.errors import ConnectionFailed, ConnectorError

__all__ = ["OpcUaConnector", "OpcUaSettings", "quality_from_status"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_HANDLE_BASE = 1_000_000  # far above asyncua's own client handles (they start at 201)
_CREATE_CHUNK = 1000  # monitored items per CreateMonitoredItems request

_SC = StatusCodes
_BAD_MAP: dict[int, Quality] = {
    _SC.BadNotConnected: Quality.BAD_NOT_CONNECTED,
    _SC.BadServerNotConnected: Quality.BAD_NOT_CONNECTED,
    _SC.BadCommunicationError: Quality.BAD_COMM_FAILURE,
    _SC.BadNoCommunication: Quality.BAD_COMM_FAILURE,
    _SC.BadConnectionClosed: Quality.BAD_COMM_FAILURE,
    _SC.BadTimeout: Quality.BAD_COMM_FAILURE,
    _SC.BadShutdown: Quality.BAD_COMM_FAILURE,
    _SC.BadConfigurationError: Quality.BAD_CONFIG_ERROR,
    _SC.BadNodeIdUnknown: Quality.BAD_CONFIG_ERROR,
    _SC.BadNodeIdInvalid: Quality.BAD_CONFIG_ERROR,
    _SC.BadAttributeIdInvalid: Quality.BAD_CONFIG_ERROR,
    _SC.BadDeviceFailure: Quality.BAD_DEVICE_FAILURE,
    _SC.BadSensorFailure: Quality.BAD_SENSOR_FAILURE,
    _SC.BadOutOfService: Quality.BAD_OUT_OF_SERVICE,
}
_UNCERTAIN_MAP: dict[int, Quality] = {
    _SC.UncertainLastUsableValue: Quality.UNCERTAIN_LAST_USABLE,
    _SC.UncertainSensorNotAccurate: Quality.UNCERTAIN_SENSOR_NOT_ACCURATE,
    _SC.UncertainEngineeringUnitsExceeded: Quality.UNCERTAIN_EU_EXCEEDED,
    _SC.UncertainSubNormal: Quality.UNCERTAIN_SUB_NORMAL,
}
_GOOD_MAP: dict[int, Quality] = {_SC.GoodLocalOverride: Quality.GOOD_LOCAL_OVERRIDE}

# Errors that no retry will cure without someone changing the configuration or the server.
_CONFIG_ERRORS = (
    "BadUserAccessDenied",
    "BadIdentityToken",
    "BadCertificate",
    "BadSecurity",
    "BadApplicationSignatureInvalid",
    "BadNoValidCertificates",
)


def quality_from_status(code: int) -> Quality:
    """The OPC DA quality byte for an OPC UA status code (info bits are ignored).

    Good → ``GOOD`` (``GoodLocalOverride`` → ``GOOD_LOCAL_OVERRIDE``); Uncertain →
    ``UNCERTAIN`` or the matching substatus; Bad → ``BAD`` or the matching substatus
    (``BadNotConnected`` → ``BAD_NOT_CONNECTED``, communication errors and timeouts →
    ``BAD_COMM_FAILURE``, unknown nodes and configuration errors → ``BAD_CONFIG_ERROR``…).
    """
    code = int(code) & 0xFFFF0000
    severity = code >> 30
    if severity == 0:
        return _GOOD_MAP.get(code, Quality.GOOD)
    if severity == 1:
        return _UNCERTAIN_MAP.get(code, Quality.UNCERTAIN)
    return _BAD_MAP.get(code, Quality.BAD)


def _to_us(ts: datetime) -> int:
    if ts.tzinfo is None:  # asyncua decodes UTC; older versions returned naive datetimes
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _US


def _natural(value: Any) -> Any:
    """A value the batch builder stores as is: bool, int, float, str or None."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, ua.StatusCode):
        return int(value.value)
    return str(value)


def _coerce(value: Any, data_type: str) -> Any:
    """``value`` typed as the point's data type where that is a lossless, obvious step."""
    if value is None:
        return None
    if data_type == "float" and isinstance(value, int | float):
        return float(value)
    if data_type == "int":
        if isinstance(value, bool | int):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if data_type == "bool" and isinstance(value, bool | int):
        return bool(value)
    if data_type == "json":
        return json.dumps(value, default=str)
    if data_type == "string":
        natural = _natural(value)
        return natural if isinstance(natural, str) else json.dumps(natural)
    return _natural(value)


def _as_float(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConnectorError(f"{what}: {value!r} is not a number") from exc


@dataclass(frozen=True, slots=True)
class OpcUaSettings:
    """The connection options of an OPC UA connector, validated (see the module doc)."""

    publishing_interval_ms: float = 1000.0
    sampling_interval_ms: float | None = None
    queue_size: int = 1
    security_policy: str = "None"
    security_mode: str = "SignAndEncrypt"
    certificate: str | None = None
    private_key: str | None = None
    private_key_password: str | None = None
    server_certificate: str | None = None
    application_uri: str | None = None
    username: str | None = None
    password: str | None = None
    flush_interval_ms: float = 100.0
    flush_rows: int = 10_000
    timeout_s: float = 4.0
    watchdog_interval_s: float = 1.0
    session_timeout_ms: float = 600_000.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> OpcUaSettings:
        """Validate ``options``; errors name the connection."""
        known = set(cls.__dataclass_fields__) | {"password_env"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConnectorError(
                f"connection {name!r}: unknown OPC UA option(s) {', '.join(unknown)}"
            )
        opts = dict(options)
        env = opts.pop("password_env", None)
        if env is not None and opts.get("password") is None:
            if env not in os.environ:
                raise ConnectorError(
                    f"connection {name!r}: environment variable {env!r} (password_env) is not set"
                )
            opts["password"] = os.environ[env]
        policy = str(opts.get("security_policy") or "None")
        if policy not in ("None", "Basic256Sha256"):
            raise ConnectorError(
                f"connection {name!r}: security_policy {policy!r} is not supported "
                "(use None or Basic256Sha256)"
            )
        opts["security_policy"] = policy
        mode = str(opts.get("security_mode") or "SignAndEncrypt")
        if mode not in ("Sign", "SignAndEncrypt"):
            raise ConnectorError(
                f"connection {name!r}: security_mode {mode!r} is not supported "
                "(use Sign or SignAndEncrypt)"
            )
        opts["security_mode"] = mode
        if policy != "None" and not (opts.get("certificate") and opts.get("private_key")):
            raise ConnectorError(
                f"connection {name!r}: security_policy {policy} needs certificate and private_key"
            )
        for key in (
            "publishing_interval_ms",
            "flush_interval_ms",
            "timeout_s",
            "watchdog_interval_s",
            "session_timeout_ms",
            "reconnect_initial_s",
            "reconnect_max_s",
        ):
            if key in opts:
                opts[key] = _as_float(opts[key], f"connection {name!r}: {key}")
        if opts.get("sampling_interval_ms") is not None:
            opts["sampling_interval_ms"] = _as_float(
                opts["sampling_interval_ms"], f"connection {name!r}: sampling_interval_ms"
            )
        for key in ("queue_size", "flush_rows"):
            if key in opts:
                opts[key] = int(opts[key])
        for key in ("certificate", "private_key", "server_certificate"):
            if opts.get(key) is not None:
                opts[key] = str(opts[key])
        return cls(**opts)


@dataclass(slots=True)
class _Item:
    """One configured point as subscribed in the current session."""

    point: PointSpec
    handle: int
    is_event: bool


class _ConnectionLost(Exception):  # noqa: N818 - internal signal, never leaves the module
    pass


def _describe(exc: BaseException) -> str:
    """A short, readable reason for a library exception."""
    if isinstance(exc, UaStatusCodeError):
        try:
            name = ua.StatusCode(exc.code).name
        except Exception:  # unknown codes
            name = type(exc).__name__
        hint = ""
        if name in ("BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"):
            hint = " (wrong user name or password?)"
        elif name.startswith(("BadCertificate", "BadSecurity")):
            hint = " (certificate not trusted or not valid for this server?)"
        return f"{name}{hint}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running and the endpoint right?)"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OpcUaConnector(Connector):
    """Reads an OPC UA server through subscriptions and writes setpoints back.

    See the module documentation for the connection and point options.
    """

    protocol = "opcua"

    def __init__(
        self,
        name: str,
        endpoint: str,
        points: Sequence[PointSpec],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, endpoint, points, options)
        self.settings = OpcUaSettings.from_options(name, self.options)
        self._outbox = Outbox(
            self.status, self.settings.flush_interval_ms / 1000.0, self.settings.flush_rows
        )
        self._client: Client | None = None
        self._items: dict[int, _Item] = {}
        self._event_items: dict[int, _Item] = {}  # by the server's monitored item id
        self._last: dict[str, tuple[int, Any, int]] = {}
        self._config_errors: set[str] = set()
        self._types: dict[str, ua.VariantType] = {}
        seen: set[str] = set()
        for p in self.points:
            if p.address in seen:
                raise ConnectorError(f"connection {name!r}: point {p.address!r} is listed twice")
            seen.add(p.address)

    # ----------------------------------------------------------------- public API

    def _where(self) -> str:
        return f"connection {self.name!r} ({self.endpoint})"

    async def run(self, sink: BatchSink) -> None:
        """Connect, subscribe and deliver batches until cancelled; reconnect on failures."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._outbox.run(sink), name=f"opcua[{self.name}].flush")
                tg.create_task(self._supervise(), name=f"opcua[{self.name}].supervisor")
        finally:
            client, self._client = self._client, None
            if client is not None:
                await self._close(client)
            await self._outbox.flush(sink)
            self._set_state("stopped")

    async def write(self, address: str, value: Any) -> None:
        """Write ``value`` to the node ``address``, encoded as the node's DataType."""
        client = self._client
        where = f"{self._where()}: write {address}"
        if client is None or self.status.state != "connected":
            raise ConnectorError(f"{where}: not connected")
        try:
            node = client.get_node(address)
            vtype = self._types.get(address)
            if vtype is None:
                vtype = await node.read_data_type_as_variant_type()
                self._types[address] = vtype
            await node.write_value(ua.DataValue(ua.Variant(_encode(value, vtype), vtype)))
        except ConnectorError:
            raise
        except Exception as exc:
            raise ConnectorError(f"{where}: {_describe(exc)}") from exc

    # ----------------------------------------------------------------- supervision

    def _set_state(self, state: ConnectorState, error: str | None = None) -> None:
        if not self.status.set_state(state, error):
            return
        if state == "connected":
            logger.info("OPC UA %s: connected", self._where())
        elif state in ("disconnected", "failed"):
            logger.warning("OPC UA %s", error)
        elif state == "stopped":
            logger.info("OPC UA %s: stopped", self._where())

    async def _supervise(self) -> None:
        s = self.settings
        backoff = Backoff(initial=s.reconnect_initial_s, maximum=s.reconnect_max_s)
        while True:
            try:
                await self._session(backoff)
            except ConnectionFailed as exc:
                text = str(exc)
                failed = any(marker in text for marker in _CONFIG_ERRORS)
                self._set_state("failed" if failed else "disconnected", text)
            except Exception as exc:  # a bug or an unexpected library error: keep going
                logger.exception("OPC UA %s: unexpected error", self._where())
                self._set_state("disconnected", f"{self._where()}: {_describe(exc)}")
            await backoff.sleep()
            self.status.reconnects += 1

    async def _connect(self) -> Client:
        s = self.settings
        client = Client(
            self.endpoint, timeout=s.timeout_s, watchdog_intervall=s.watchdog_interval_s
        )
        client.name = f"shopfloor {self.name}"
        client.description = client.name
        # asyncua asks for an hour and logs a warning when servers grant less (most grant
        # 10 minutes); the session is kept alive by the watchdog anyway.
        client.session_timeout = int(s.session_timeout_ms)
        try:
            if s.application_uri:
                client.application_uri = s.application_uri
            elif s.certificate:
                client.application_uri = await _certificate_uri(s.certificate)
            else:
                client.application_uri = f"urn:shopfloor:{self.name}"
            if s.username is not None:
                client.set_user(s.username)
            if s.password is not None:
                client.set_password(s.password)
            if s.security_policy == "Basic256Sha256":
                assert s.certificate is not None
                assert s.private_key is not None
                mode = getattr(ua.MessageSecurityMode, s.security_mode)
                await client.set_security(
                    security_policies.SecurityPolicyBasic256Sha256,
                    certificate=s.certificate,
                    private_key=s.private_key,
                    private_key_password=s.private_key_password,
                    server_certificate=s.server_certificate,
                    mode=mode,
                )
            await client.connect()
        except Exception as exc:
            await self._close(client)
            raise ConnectionFailed(f"{self._where()}: {_describe(exc)}") from exc
        return client

    @staticmethod
    async def _close(client: Client) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                await client.disconnect()

    async def _session(self, backoff: Backoff) -> None:
        """One connection: connect, subscribe, deliver until the connection is lost."""
        client = await self._connect()
        self._client = client
        lost = asyncio.Event()
        reason: list[str] = []

        async def on_lost(exc: Exception) -> None:
            reason.append(_describe(exc))
            lost.set()

        client.connection_lost_callback = on_lost
        try:
            try:
                subs = await self._subscribe(client)
            except Exception as exc:
                raise ConnectionFailed(f"{self._where()}: subscribing: {_describe(exc)}") from exc
            self._set_state("connected")
            backoff.reset()
            async with asyncio.TaskGroup() as tg:
                consumers = [
                    tg.create_task(
                        self._consume(sub, lost, reason),
                        name=f"opcua[{self.name}].subscription-{sub.subscription_id}",
                    )
                    for sub in subs
                ]
                await lost.wait()
                for task in consumers:
                    task.cancel()
            self._mark_disconnected(Quality.BAD_NOT_CONNECTED)
            raise ConnectionFailed(
                f"{self._where()}: connection lost: {reason[0] if reason else 'unknown reason'}"
            )
        finally:
            self._client = None
            self._items = {}
            await self._close(client)

    async def _consume(self, sub: Subscription, lost: asyncio.Event, reason: list[str]) -> None:
        async for ev in sub:
            if isinstance(ev, DataChangeEvent):
                self._on_data(ev)
            elif isinstance(ev, OpcEvent):
                self._on_event(ev)
            elif isinstance(ev, StatusChangeEvent):
                status = ev.notification.Status
                if status is None or not status.is_good():
                    reason.append(f"subscription status {status.name if status else 'unknown'}")
                    lost.set()
        # The iterator ends when the subscription is deleted: nothing more will arrive.
        reason.append("subscription closed")
        lost.set()

    def _mark_disconnected(self, quality: Quality) -> None:
        ts = self.clock()
        for item in self._items.values():
            self._outbox.append(self.name, item.point.address, ts, None, quality)
        self._outbox.flush_soon()

    # ----------------------------------------------------------------- subscribing

    async def _subscribe(self, client: Client) -> list[Subscription]:
        s = self.settings
        groups: dict[float, list[PointSpec]] = {}
        for p in self.points:
            interval = float(p.options.get("publishing_interval_ms", s.publishing_interval_ms))
            groups.setdefault(interval, []).append(p)
        subs: list[Subscription] = []
        self._items = {}
        self._event_items = {}
        handle = _HANDLE_BASE
        for interval, points in sorted(groups.items()):
            params = ua.CreateSubscriptionParameters()
            params.RequestedPublishingInterval = interval
            params.RequestedLifetimeCount = 10000
            params.RequestedMaxKeepAliveCount = client.get_keepalive_count(interval)
            params.MaxNotificationsPerPublish = 0  # no limit
            params.PublishingEnabled = True
            params.Priority = 0
            sub = await client.create_subscription(
                params,
                handler=None,
                queue_maxsize=max(10_000, 4 * len(points)),
                overflow=OverflowPolicy.WARN,
            )
            subs.append(sub)
            requests: list[tuple[_Item, ua.MonitoredItemCreateRequest]] = []
            for p in points:
                handle += 1
                item = _Item(point=p, handle=handle, is_event=bool(p.options.get("events")))
                try:
                    req = await self._request(client, item, interval)
                except ConnectorError as exc:
                    self._config_error(p.address, str(exc))
                    continue
                requests.append((item, req))
            for start in range(0, len(requests), _CREATE_CHUNK):
                chunk = requests[start : start + _CREATE_CHUNK]
                for item, _ in chunk:
                    self._items[item.handle] = item
                results = await sub.create_monitored_items([r for _, r in chunk])
                for (item, _), result in zip(chunk, results, strict=True):
                    if isinstance(result, ua.StatusCode):
                        del self._items[item.handle]
                        self._config_error(item.point.address, result.name)
                    elif item.is_event:
                        self._event_items[int(result)] = item
        return subs

    async def _request(
        self, client: Client, item: _Item, publishing_ms: float
    ) -> ua.MonitoredItemCreateRequest:
        p = item.point
        opts = p.options
        where = f"{self._where()}: point {p.address}"
        try:
            nodeid = ua.NodeId.from_string(p.address)
        except Exception as exc:
            raise ConnectorError(f"{where}: not a node id ({exc})") from exc
        rv = ua.ReadValueId()
        rv.NodeId = nodeid
        mparams = ua.MonitoringParameters()
        mparams.ClientHandle = item.handle
        mparams.DiscardOldest = True
        if item.is_event:
            rv.AttributeId = AttributeIds.EventNotifier
            base = client.get_node(ua.NodeId(ua.Int32(ObjectIds.BaseEventType)))
            mparams.Filter = await get_filter_from_event_type([base], False)
            mparams.SamplingInterval = 0.0
            mparams.QueueSize = int(opts.get("queue_size", 100))
        else:
            rv.AttributeId = AttributeIds.Value
            sampling = opts.get("sampling_interval_ms", self.settings.sampling_interval_ms)
            mparams.SamplingInterval = float(sampling if sampling is not None else publishing_ms)
            mparams.QueueSize = int(opts.get("queue_size", self.settings.queue_size))
            deadband = await self._deadband(client, p, where)
            if deadband is not None:
                flt = ua.DataChangeFilter()
                flt.Trigger = ua.DataChangeTrigger.StatusValue
                flt.DeadbandType = ua.DeadbandType.Absolute
                flt.DeadbandValue = deadband
                mparams.Filter = flt
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = mparams
        return req

    async def _deadband(self, client: Client, p: PointSpec, where: str) -> float | None:
        if p.options.get("deadband_abs") is not None:
            return _as_float(p.options["deadband_abs"], f"{where}: deadband_abs")
        if p.options.get("deadband_pct") is None:
            return None
        pct = _as_float(p.options["deadband_pct"], f"{where}: deadband_pct")
        if not 0.0 <= pct <= 100.0:
            raise ConnectorError(f"{where}: deadband_pct {pct} is not within 0…100")
        try:
            eu_node = await client.get_node(p.address).get_child("0:EURange")
            eu = await eu_node.read_value()
        except Exception as exc:
            raise ConnectorError(
                f"{where}: deadband_pct needs the node's EURange property ({_describe(exc)})"
            ) from exc
        return pct / 100.0 * abs(float(eu.High) - float(eu.Low))

    def _config_error(self, address: str, reason: str) -> None:
        if address in self._config_errors:
            return
        self._config_errors.add(address)
        logger.warning("OPC UA %s: point %s not subscribed: %s", self._where(), address, reason)
        self._outbox.append(self.name, address, self.clock(), None, Quality.BAD_CONFIG_ERROR)
        self._outbox.flush_soon()

    # ----------------------------------------------------------------- notifications

    def _on_data(self, ev: DataChangeEvent) -> None:
        handle = ev.data.subscription_data.client_handle
        item = self._items.get(handle) if handle is not None else None
        if item is None:
            return
        dv = ev.data.monitored_item.Value
        ts = dv.SourceTimestamp or dv.ServerTimestamp
        ts_us = _to_us(ts) if ts is not None else self.clock()
        code = dv.StatusCode.value if dv.StatusCode is not None else 0
        quality = quality_from_status(code)
        value = _coerce(ev.value, item.point.data_type)
        address = item.point.address
        key = (ts_us, value, int(quality))
        if self._last.get(address) == key:
            return  # re-sent after a (re)subscription: already delivered
        self._last[address] = key
        self._outbox.append(self.name, address, ts_us, value, quality)

    def _on_event(self, ev: OpcEvent) -> None:
        server_handle = ev.event.server_handle
        item = self._event_items.get(server_handle) if server_handle is not None else None
        if item is None:
            return
        fields = ev.event.get_event_props_as_fields_dict()
        msg = fields.get("Message")
        text = _natural(msg.Value if msg is not None else None)
        t = fields.get("Time")
        ts_value = t.Value if t is not None else None
        ts_us = _to_us(ts_value) if isinstance(ts_value, datetime) else self.clock()
        self._outbox.append(
            self.name, item.point.address, ts_us, None if text is None else str(text)
        )


def _encode(value: Any, vtype: ua.VariantType) -> Any:
    """``value`` as the Python type asyncua encodes as ``vtype``."""
    name = vtype.name
    if name == "Boolean":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if name in ("Float", "Double"):
        return float(value)
    if name in ("SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64"):
        if isinstance(value, float) and not value.is_integer():
            raise ConnectorError(f"{value!r} is not an integer ({name})")
        return int(value)
    if name in ("String", "LocalizedText"):
        return str(value) if name == "String" else ua.LocalizedText(str(value))
    return value


async def _certificate_uri(path: str) -> str:
    """The application URI in a certificate's subjectAltName (the client must use it)."""
    from asyncua.crypto import uacrypto
    from cryptography import x509

    cert = await uacrypto.load_certificate(path)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound as exc:
        raise ConnectorError(f"certificate {path} has no subjectAltName") from exc
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise ConnectorError(f"certificate {path} has no URI in its subjectAltName")
    return str(uris[0])

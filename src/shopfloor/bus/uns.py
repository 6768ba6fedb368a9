"""The Unified Namespace republisher: every stored value, once more, on MQTT at its signal path.

:class:`UnsPublisher` observes the pipeline (:data:`~shopfloor.edge.pipeline.Observer`): each
batch of readings the historian has committed is turned into MQTT messages and published
to a broker, so that any MQTT tool (MQTT Explorer, Node-RED, ``mosquitto_sub``) can follow
the factory without knowing a single PLC address::

    async with UnsPublisher("mqtt://127.0.0.1:1883", historian) as uns, Runtime(
        factory, historian, observers=[uns.publish_readings], event_observers=[uns.publish_events]
    ):
        ...

Topics
------

``{prefix}/{signal path}`` for values, e.g. ``shopfloor/uns/acme/munich/body-shop/line-1/
cell-1/press-7/temperature`` (``prefix`` defaults to :data:`DEFAULT_PREFIX` and may be empty;
MQTT wildcards ``+``/``#`` in a path, which the factory file never has, become ``_``).

``{prefix}/{asset path}/_events/{kind}`` for events (:data:`~shopfloor.edge.events.
EVENT_SCHEMA`), e.g. ``…/press-7/_events/state`` or ``…/agv-1/_events/agv_error``. Asset ids
start with a letter or digit, so ``_events`` never collides with a signal.

``{prefix}/_status`` (retained, QoS 1): ``{"online": true, "ts": …}`` once connected,
``{"online": false, "ts": …}`` when the publisher stops (and, as the session's last will,
when the connection is lost), so subscribers can tell live values from the last ones a
stopped platform left behind.

Payloads
--------

Values are UTF-8 JSON objects with the keys in this order::

    {"ts": "2026-01-01T06:00:00.250000Z", "value": 71.5, "unit": "CEL",
     "quality": "good", "quality_code": 192}

* ``ts`` — the sample's time, ISO 8601 in UTC with microseconds and a ``Z``.
* ``value`` — typed as the signal: a JSON number for ``float`` (always with a ``.`` or an
  exponent, so ``3.0`` stays a float for typed parsers) and ``int``, ``true``/``false`` for
  ``bool``, a string for ``string``, the JSON value itself for ``json`` signals; ``null``
  for a reading without value and for NaN and ±infinity, which JSON cannot express.
* ``unit`` — the UN/CEFACT code of the signal (``CEL``, ``KWH``, ``C62``) or ``null``.
* ``quality`` — ``good``, ``uncertain`` or ``bad`` from the major status of the OPC DA
  quality byte (``0x80``, which OPC DA leaves unused, reads as ``uncertain``);
  ``quality_code`` the byte itself (:class:`~shopfloor.edge.batch.Quality`).

Events carry ``event_id, kind, asset, signal, ts, end_ts, code, severity, message`` and
``data`` (the event's JSON object, parsed), timestamps as above. An event is published
again when it changes or ends (with ``end_ts``), like it is stored.

Modes, retain and QoS
---------------------

``mode="every"`` publishes each reading, in time order per signal (the batch is ordered by
time). ``mode="latest"`` publishes, per committed batch (every ``flush_interval``, 0.25 s
by default), only the newest reading of each signal: a fixed message rate for high-rate
plants, where a UNS consumer wants the current value rather than every sample (those stay
in the historian).

``retain=True`` (the default) makes the broker keep the last message of every topic, so a
client that subscribes later sees the current value at once — the point of a namespace.

``qos=0`` is the default: a UNS value is superseded by the next one and the retained copy
on the broker holds the current value, so re-sending a lost one buys little, while QoS 1
costs a PUBACK round trip per message (measured on the 2-core reference machine against
Mosquitto, with other work running: about 9,000 messages/s at QoS 0, 3,500 at QoS 1; the
MQTT client, not the conversion, is the limit). Within a connection TCP loses nothing;
what is in flight when the connection breaks may be lost. QoS 1 and 2 are available; such
messages are published one after the other. Plants faster than that use ``latest``.

Never stalling the ingest
-------------------------

:meth:`UnsPublisher.publish_readings` only converts and queues; one background task
publishes. The queue is bounded (``max_queue`` messages): when the broker is slow or down
it drops the **oldest** messages, counts them in :attr:`UnsStats.dropped` and says so once
in the log per episode. The task reconnects with jittered, capped exponential backoff. On
leaving the context, what is queued is published for up to ``flush_timeout`` seconds.

The conversion of a batch is columnar (Arrow compute for time formatting, value rendering,
ordering and the last value per signal; dictionary encoding so that strings are escaped
once per distinct value); the only per-message Python work is the MQTT publish itself.
Signals the publisher has not seen (created at run time) are looked up by refreshing the
catalog from :meth:`~shopfloor.historian.Historian.signals`.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.bus.broker import mqtt_host_port
from shopfloor.connectors.base import Backoff
from shopfloor.edge.batch import TS_TYPE, ReadingBatch
from shopfloor.errors import ConfigError, ShopfloorError

if TYPE_CHECKING:
    import aiomqtt

    from shopfloor.historian.base import Historian

__all__ = ["DEFAULT_PREFIX", "UnsMode", "UnsPublisher", "UnsStats", "uns_topic"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "shopfloor/uns"
"""The topic prefix of the namespace unless another is given."""

UnsMode = Literal["every", "latest"]
"""``every`` reading, or only the ``latest`` of each signal per committed batch."""

_MODES: tuple[str, ...] = ("every", "latest")
_WINDOW = 8
"""QoS 0 publishes awaited together (aiomqtt warns above 10 pending calls)."""
_RENDER_CHUNK = 1024
"""Rows turned into messages at a time (large enough to amortise the Arrow calls)."""
_REFRESH_EVERY_S = 5.0
"""How often ids still unknown after a catalog refresh may trigger another one."""

Message = tuple[str, bytes]
_COMPACT = (",", ":")


@dataclass(slots=True)
class UnsStats:
    """Counters of a :class:`UnsPublisher` since it started (``queued``, ``connected`` gauges)."""

    published: int = 0
    """Messages the broker accepted (QoS 0: written to the connection)."""
    dropped: int = 0
    """Messages discarded because the queue was full (oldest first)."""
    unknown: int = 0
    """Readings of signal ids the historian's catalog does not have (not published)."""
    queued: int = 0
    """Messages waiting to be published."""
    connected: bool = False
    """Whether a session with the broker is up (seen at the last connect or publish)."""
    reconnects: int = 0
    """Sessions established after the first attempt (each after a failure)."""
    last_error: str | None = None
    """Why the last connection failed or broke; None while connected."""


def uns_topic(prefix: str, path: str) -> str:
    """The topic of ``path`` under ``prefix`` (MQTT wildcards in ``path`` become ``_``)."""
    clean = path.strip("/").replace("+", "_").replace("#", "_").replace("\x00", "_")
    return f"{prefix}/{clean}" if prefix else clean


def _check_prefix(prefix: str) -> str:
    p = prefix.strip().strip("/")
    bad = [c for c in ("+", "#", "\x00") if c in p]
    if bad:
        raise ConfigError(
            f"UNS prefix {prefix!r} contains {' and '.join(map(repr, bad))}: "
            "a topic to publish to may not contain MQTT wildcards"
        )
    if "//" in p:
        raise ConfigError(f"UNS prefix {prefix!r} has an empty level ('//')")
    if p.startswith("$"):
        raise ConfigError(
            f"UNS prefix {prefix!r} starts with '$', which brokers keep to themselves"
        )
    return p


def _check_settings(endpoint: str, prefix: str, mode: str, qos: int) -> None:
    """Raise :class:`ConfigError` naming what is wrong with these publisher settings."""
    try:
        mqtt_host_port(endpoint)
    except ShopfloorError as exc:
        raise ConfigError(f"UNS: {exc}") from exc
    _check_prefix(prefix)
    if mode not in _MODES:
        raise ConfigError(f"UNS mode {mode!r} is not one of {', '.join(_MODES)}")
    if qos not in (0, 1, 2):
        raise ConfigError(f"UNS QoS {qos!r} is not 0, 1 or 2")


# --------------------------------------------------------------------------- conversion


def _quality_fragments() -> pa.Array:
    """``"quality":…,"quality_code":…}`` for each of the 256 quality bytes."""
    names = {0xC0: "good", 0x40: "uncertain", 0x80: "uncertain", 0x00: "bad"}
    return pa.array(
        [f'"quality":"{names[q & 0xC0]}","quality_code":{q}}}' for q in range(256)], pa.string()
    )


_QUALITY = _quality_fragments()


class _Catalog:
    """Signal id → topic, the ``unit`` fragment and whether values are JSON, as arrays."""

    def __init__(self, prefix: str, signals: pa.Table) -> None:
        order = pc.sort_indices(signals, [("signal_id", "ascending")])
        signals = signals.take(order)
        self.ids: np.ndarray[Any, np.dtype[np.int64]] = np.asarray(
            signals.column("signal_id").to_numpy(zero_copy_only=False), dtype=np.int64
        )
        paths = signals.column("path").to_pylist()
        units = signals.column("unit").to_pylist()
        types = signals.column("data_type").to_pylist()
        self.topics: list[str] = [uns_topic(prefix, p) for p in paths]
        self.units = pa.array(
            [f',"unit":{json.dumps(u) if u else "null"},' for u in units], pa.string()
        )
        self.is_json = pa.array([t == "json" for t in types], pa.bool_())

    def positions(
        self, sid: np.ndarray[Any, np.dtype[np.int64]]
    ) -> tuple[np.ndarray[Any, np.dtype[np.intp]], np.ndarray[Any, np.dtype[np.bool_]]]:
        """Catalog row of each id and whether the id is known at all."""
        if len(self.ids) == 0:
            return np.zeros(len(sid), np.intp), np.zeros(len(sid), np.bool_)
        pos = np.searchsorted(self.ids, sid)
        pos = np.minimum(pos, len(self.ids) - 1)
        return pos, self.ids[pos] == sid


def _strict_json(text: str) -> bool:
    def reject(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=reject)
    except ValueError:
        return False
    return True


def _float_text(col: pa.Array) -> pa.Array:
    """Shortest round-trip text of finite floats, with ``.0`` where it would read as an int."""
    text = col.cast(pa.string())
    integral = pc.match_substring_regex(text, r"^-?[0-9]+$")
    text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    return pc.if_else(pc.is_finite(col), text, pa.scalar(None, pa.string()))


def _string_text(col: pa.Array, is_json: pa.Array) -> pa.Array:
    """JSON string literals (or raw JSON for ``json`` signals), escaped once per distinct value."""
    encoded = col.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    quoted = pa.array([json.dumps(s, ensure_ascii=False) for s in distinct], pa.string())
    text = quoted.take(encoded.indices)
    if not pc.any(is_json).as_py():
        return text
    raw = pa.array(
        [s if _strict_json(s) else json.dumps(s, ensure_ascii=False) for s in distinct],
        pa.string(),
    )
    return pc.if_else(is_json, raw.take(encoded.indices), text)


def _value_text(table: pa.Table, is_json: pa.Array) -> pa.Array:
    """The ``value`` of each row as JSON text (``null`` when it has none)."""

    def col(name: str) -> pa.Array:
        c = table.column(name)
        return c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c

    return pc.coalesce(
        _float_text(col("v_float")),
        col("v_int").cast(pa.string()),
        col("v_bool").cast(pa.string()),
        _string_text(col("v_str"), is_json),
        pa.scalar("null", pa.string()),
    )


_DAY_US = 86_400_000_000
_TWO_DIGITS = pa.array([f"{k:02d}" for k in range(100)], pa.string())


def _iso(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """ISO 8601 UTC text with microseconds and ``Z`` (``2026-01-01T06:00:00.250000Z``).

    Only the distinct days go through ``strftime`` (about a microsecond per value); the time
    of day is arithmetic and table lookups, a fifth of that.
    """
    us = np.asarray(ts.cast(pa.int64()).to_numpy(), dtype=np.int64)
    day = us // _DAY_US
    days, inverse = np.unique(day, return_inverse=True)
    date = pc.strftime(pa.array(days * _DAY_US).cast(TS_TYPE), format="%Y-%m-%dT")
    sec, frac = np.divmod(us - day * _DAY_US, 1_000_000)
    hour, sec = np.divmod(sec, 3600)
    minute, sec = np.divmod(sec, 60)
    fraction = pc.utf8_lpad(pa.array(frac).cast(pa.string()), width=6, padding="0")
    return pc.binary_join_element_wise(
        date.take(pa.array(inverse.ravel())),
        _TWO_DIGITS.take(pa.array(hour)),
        ":",
        _TWO_DIGITS.take(pa.array(minute)),
        ":",
        _TWO_DIGITS.take(pa.array(sec)),
        ".",
        fraction,
        "Z",
        "",
    )


def _order(
    table: pa.Table, catalog: _Catalog, mode: UnsMode
) -> tuple[pa.Table, np.ndarray[Any, np.dtype[np.intp]], int]:
    """The rows of a batch to publish, in order, their catalog rows, and the unknown count.

    ``every``: all rows of known signals, ordered by time (stable: equal times keep their
    order). ``latest``: the newest row of each signal (the later one of equal times).
    """
    sid = np.asarray(table.column("signal_id").to_numpy(), dtype=np.int64)
    pos, known = catalog.positions(sid)
    unknown = int(len(sid) - np.count_nonzero(known))
    if unknown:
        table = table.filter(pa.array(known))
        sid, pos = sid[known], pos[known]
    if table.num_rows == 0:
        return table, pos, unknown
    if mode == "latest":
        idx = pc.sort_indices(table, [("signal_id", "ascending"), ("ts", "ascending")]).to_numpy()
        s = sid[idx]
        last = np.ones(len(s), np.bool_)
        last[:-1] = s[1:] != s[:-1]
        order = idx[last]
    else:
        order = pc.sort_indices(table, [("ts", "ascending")]).to_numpy()
    return table.take(order), pos[order], unknown


def _render(
    table: pa.Table, pos: np.ndarray[Any, np.dtype[np.intp]], catalog: _Catalog
) -> list[Message]:
    """The messages of ordered rows (``pos``: their catalog rows), all columns at once."""
    if table.num_rows == 0:
        return []
    where = pa.array(pos)
    payload = pc.binary_join_element_wise(
        '{"ts":"',
        _iso(table.column("ts")),
        '","value":',
        _value_text(table, catalog.is_json.take(where)),
        catalog.units.take(where),
        _QUALITY.take(table.column("quality").combine_chunks()),
        "",
    )
    names = catalog.topics
    payloads: list[bytes] = payload.cast(pa.binary()).to_pylist()
    return [(names[i], p) for i, p in zip(pos.tolist(), payloads, strict=True)]


class _Segment:
    """A run of queued messages: rendered ones, then rows rendered a chunk at a time.

    Rows are turned into messages only when the publisher gets to them, so messages that
    are dropped (broker slow or down) never cost a conversion.
    """

    __slots__ = ("_at", "_catalog", "_done", "_pos", "_rows", "_table")

    def __init__(
        self,
        messages: list[Message],
        table: pa.Table | None = None,
        pos: np.ndarray[Any, np.dtype[np.intp]] | None = None,
        catalog: _Catalog | None = None,
    ) -> None:
        self._done = deque(messages)
        self._table = table
        self._pos = pos
        self._catalog = catalog
        self._at = 0
        self._rows = 0 if table is None else table.num_rows

    def __len__(self) -> int:
        return len(self._done) + self._rows - self._at

    def drop(self, k: int) -> None:
        """Forget the ``k`` oldest messages (``k <= len(self)``)."""
        n = min(k, len(self._done))
        for _ in range(n):
            self._done.popleft()
        self._at += k - n

    def take(self, k: int) -> list[Message]:
        """Remove and return up to ``k`` of the oldest messages."""
        if not self._done and self._at < self._rows:
            assert self._table is not None
            assert self._pos is not None
            assert self._catalog is not None
            end = min(self._rows, self._at + max(k, _RENDER_CHUNK))
            chunk = self._table.slice(self._at, end - self._at)
            self._done.extend(_render(chunk, self._pos[self._at : end], self._catalog))
            self._at = end
        return [self._done.popleft() for _ in range(min(k, len(self._done)))]


def _iso_py(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event_messages(prefix: str, events: pa.Table) -> list[Message]:
    """Topics and payloads of events (:data:`~shopfloor.edge.events.EVENT_SCHEMA`).

    Events are few (state changes, alarms), so they are rendered row by row.
    """
    out: list[Message] = []
    for row in events.to_pylist():
        data = row.get("data")
        if isinstance(data, str) and _strict_json(data):
            data = json.loads(data)
        payload = {
            "event_id": row["event_id"],
            "kind": row["kind"],
            "asset": row["asset"],
            "signal": row.get("signal"),
            "ts": _iso_py(row["ts"]),
            "end_ts": _iso_py(row.get("end_ts")),
            "code": row.get("code"),
            "severity": row.get("severity"),
            "message": row.get("message"),
            "data": data,
        }
        kind = uns_topic("", str(row["kind"])).replace("/", "_") or "event"
        topic = uns_topic(prefix, f"{row['asset']}/_events/{kind}")
        out.append((topic, json.dumps(payload, ensure_ascii=False, separators=_COMPACT).encode()))
    return out


# --------------------------------------------------------------------------- publisher


def _first(exc: BaseException) -> BaseException:
    """The first exception of a (nested) exception group, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and the endpoint right?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class UnsPublisher:
    """Republishes committed readings and events on MQTT (see the module docstring).

    ``endpoint`` is ``mqtt://[user:password@]host[:1883]`` or ``mqtts://…[:8883]`` (TLS with
    the system's trust store). Use as an async context manager; pass
    :meth:`publish_readings` to the pipeline's observers and :meth:`publish_events` to the
    runtime's event observers.
    """

    def __init__(
        self,
        endpoint: str,
        historian: Historian,
        *,
        prefix: str = DEFAULT_PREFIX,
        mode: UnsMode = "every",
        retain: bool = True,
        qos: int = 0,
        max_queue: int = 100_000,
        flush_timeout: float = 5.0,
        client_id: str | None = None,
        keepalive: int = 30,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        _check_settings(endpoint, prefix, mode, qos)
        if max_queue < 1:
            raise ConfigError(f"UNS max_queue must be at least 1, not {max_queue}")
        parts = urlsplit(endpoint if "://" in endpoint else f"mqtt://{endpoint}")
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self.endpoint = (
            endpoint.replace(f":{parts.password}@", ":***@", 1) if parts.password else endpoint
        )
        """The broker URL as given, the password masked (for logs and status views)."""
        self.host, self.port = mqtt_host_port(endpoint)
        self._tls = parts.scheme in ("mqtts", "ssl")
        self.historian = historian
        self.prefix = _check_prefix(prefix)
        self.mode: UnsMode = mode
        self.retain = retain
        self.qos = qos
        self.max_queue = max_queue
        self.flush_timeout = flush_timeout
        self.client_id = client_id or f"shopfloor-uns-{uuid.uuid4().hex[:12]}"
        self.keepalive = keepalive
        self._reconnect = (reconnect_initial, reconnect_max)
        self.stats = UnsStats()
        self._segments: deque[_Segment] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._closing = False
        self._inflight = 0
        self._dropping = False
        self._catalog: _Catalog | None = None
        self._missing_checked = 0.0
        self._group: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def status_topic(self) -> str:
        """Where the publisher says whether it is online (retained)."""
        return uns_topic(self.prefix, "_status")

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self._catalog = _Catalog(self.prefix, await self.historian.signals())
        self._missing_checked = time.monotonic()
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._task = self._group.create_task(self._run(), name=f"uns:{self.endpoint}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        assert self._task is not None
        try:
            if exc_type is None or issubclass(exc_type, Exception):
                self._closing = True  # the drain says "offline" once the queue is empty
                await self.flush(self.flush_timeout)
        finally:
            self._task.cancel()
            await self._group.__aexit__(None, None, None)
            self.stats.connected = False
            left = self._queued
            if left:
                self.stats.dropped += left
                self._segments.clear()
                self._queued = self.stats.queued = 0
                log.warning(
                    "UNS %s: %d message(s) still queued at shutdown were not published",
                    self.endpoint,
                    left,
                )

    async def flush(self, within: float) -> bool:
        """Wait up to ``within`` seconds until everything queued is published; True if it was."""
        idle = not self._queued and not self._inflight
        if idle and not (self._closing and self.stats.connected):
            return True
        if not self.stats.connected and self._task is not None:
            # Give a (re)connect a chance, but do not wait for a broker that is not there.
            within = min(within, 1.0)
        self._drained.clear()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._drained.wait()
        return not self._queued and not self._inflight

    # ------------------------------------------------------------------ observers

    async def publish_readings(self, batch: ReadingBatch) -> None:
        """Queue a committed batch (a pipeline observer; never waits for the broker).

        Only the order is computed here; the messages are rendered when published.
        """
        if len(batch) == 0:
            return
        catalog = self._catalog
        if catalog is None:
            raise RuntimeError("UnsPublisher is not started (use it as an async context manager)")
        table, pos, unknown = _order(batch.table, catalog, self.mode)
        if unknown and self._may_refresh(catalog, batch.table):
            # Signals created at run time (discovered devices): look them up once.
            catalog = self._catalog = _Catalog(self.prefix, await self.historian.signals())
            self._missing_checked = time.monotonic()
            table, pos, unknown = _order(batch.table, catalog, self.mode)
        if unknown:
            if not self.stats.unknown:
                log.warning(
                    "UNS: %d reading(s) of signal ids the catalog does not have were skipped",
                    unknown,
                )
            self.stats.unknown += unknown
        if table.num_rows:
            self._push(_Segment([], table, pos, catalog))

    async def publish_events(self, events: pa.Table) -> None:
        """Queue the messages of a batch of events (a runtime event observer)."""
        if events.num_rows:
            self._push(_Segment(_event_messages(self.prefix, events)))

    def _may_refresh(self, catalog: _Catalog, table: pa.Table) -> bool:
        """Refresh for ids newer than the catalog; for ids still missing after one, now and then."""
        newest = pc.max(table.column("signal_id")).as_py()
        known = int(catalog.ids[-1]) if len(catalog.ids) else -1
        return newest > known or time.monotonic() - self._missing_checked > _REFRESH_EVERY_S

    def _push(self, segment: _Segment, *, front: bool = False) -> None:
        """Queue messages (last, or ``front``); beyond ``max_queue`` the oldest are dropped."""
        if front:
            self._segments.appendleft(segment)
        else:
            self._segments.append(segment)
        self._queued += len(segment)
        over = self._queued - self.max_queue
        if over > 0:
            self._drop_oldest(over)
        self.stats.queued = self._queued
        self._wake.set()

    def _drop_oldest(self, n: int) -> None:
        self._queued -= n
        self.stats.dropped += n
        while n:
            head = self._segments[0]
            k = min(n, len(head))
            head.drop(k)
            n -= k
            if not len(head):
                self._segments.popleft()
        if not self._dropping:
            self._dropping = True
            log.warning(
                "UNS %s: queue full (%d messages), dropping the oldest (%s)",
                self.endpoint,
                self.max_queue,
                "broker connected but slow" if self.stats.connected else "broker unreachable",
            )

    def _take(self, k: int) -> list[Message]:
        """Remove and return up to ``k`` of the oldest queued messages."""
        while self._segments:
            head = self._segments[0]
            try:
                out = head.take(k)
            except Exception:  # a batch that cannot be rendered must not stop the namespace
                log.exception("UNS: %d queued message(s) could not be rendered; dropped", len(head))
                self._segments.popleft()
                self._queued -= len(head)
                self.stats.dropped += len(head)
                self.stats.queued = self._queued
                continue
            if not len(head):
                self._segments.popleft()
            if out:
                self._queued -= len(out)
                self.stats.queued = self._queued
                return out
        return []

    # ------------------------------------------------------------------ publishing

    def _client(self) -> aiomqtt.Client:
        import aiomqtt

        offline = json.dumps({"online": False}, separators=_COMPACT).encode()
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            username=self._username,
            password=self._password,
            keepalive=self.keepalive,
            tls_context=ssl.create_default_context() if self._tls else None,
            will=aiomqtt.Will(self.status_topic, offline, qos=1, retain=True),
            timeout=10.0,
        )

    async def _run(self) -> None:
        import aiomqtt

        backoff = Backoff(*self._reconnect)
        was_up: bool | None = None
        while True:
            try:
                async with self._client() as client:
                    online = {"online": True, "ts": _iso_py(datetime.now(UTC))}
                    await client.publish(
                        self.status_topic,
                        json.dumps(online, separators=_COMPACT).encode(),
                        qos=1,
                        retain=True,
                    )
                    self.stats.connected = True
                    self.stats.last_error = None
                    backoff.reset()
                    if was_up is not None:
                        self.stats.reconnects += 1
                    log.info("UNS: connected to %s, topics under %r", self.endpoint, self.prefix)
                    was_up = True
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._watch(client), name="uns-watch")
                        tg.create_task(self._drain(client), name="uns-drain")
            except* (aiomqtt.MqttError, OSError) as group:
                self.stats.connected = False
                self.stats.last_error = _describe(_first(group))
                if was_up is not False:
                    log.warning(
                        "UNS: broker %s %s: %s; messages are queued (up to %d) until it is back",
                        self.endpoint,
                        "lost" if was_up else "unreachable",
                        self.stats.last_error,
                        self.max_queue,
                    )
                was_up = False
                if self._closing:
                    self._drained.set()  # shutting down: the last will says "offline"
            await backoff.sleep()

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raise as soon as the connection is lost, also while nothing is being published."""
        async for _ in client.messages:  # nothing is subscribed; this only ends in an error
            pass

    async def _drain(self, client: aiomqtt.Client) -> None:
        window = _WINDOW if self.qos == 0 else 1
        while True:
            if not self._queued:
                if self._dropping:
                    self._dropping = False
                    log.warning(
                        "UNS %s: caught up; %d message(s) dropped so far",
                        self.endpoint,
                        self.stats.dropped,
                    )
                if self._closing and self.stats.connected:
                    await self._say_offline(client)
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take(window)
            self._inflight = len(batch)
            try:
                results = await asyncio.gather(
                    *(client.publish(t, p, qos=self.qos, retain=self.retain) for t, p in batch),
                    return_exceptions=True,
                )
            except asyncio.CancelledError:
                self._requeue(batch)  # not known to be out: counted as dropped at shutdown
                raise
            finally:
                self._inflight = 0
            failed = [m for m, r in zip(batch, results, strict=True) if r is not None]
            self.stats.published += len(batch) - len(failed)
            if failed:
                self._requeue(failed)
                error = next(r for r in results if r is not None)
                assert isinstance(error, BaseException)
                raise error

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Replace the retained status by ``online: false`` (the last will covers crashes)."""
        offline = {"online": False, "ts": _iso_py(datetime.now(UTC))}
        payload = json.dumps(offline, separators=_COMPACT).encode()
        await client.publish(self.status_topic, payload, qos=1, retain=True)
        self._closing = False

    def _requeue(self, failed: list[Message]) -> None:
        """Put messages whose publish failed back at the front (the oldest: dropped first)."""
        self._push(_Segment(failed), front=True)

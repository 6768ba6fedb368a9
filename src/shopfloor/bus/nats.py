"""The NATS JetStream bus: durable, replicated, shared by any number of workers.

Edges publish each batch to the subject ``<prefix>.<edge>.<partition>`` (prefix
``shopfloor.ingest``) of one stream (``SHOPFLOOR``), awaiting JetStream's acknowledgement,
with the headers ``Nats-Msg-Id`` (JetStream drops a republished id within the stream's
``duplicate_window``) and ``Shopfloor-Batch-Id`` (the id the historian records with the
batch: the duplicate check that holds beyond the window). A stream keeps the messages of
one subject in publish order.

The stream is a *work queue*: a message is deleted once a worker acknowledged it. Workers
form one durable pull consumer (``shopfloor-workers``): each fetches batches of messages
and acknowledges each after the historian committed it; a message not acknowledged within
``ack_wait`` seconds (a worker died) is delivered to another worker, without limit on the
number of deliveries. ``max_ack_pending`` bounds the messages out with the workers.

Bounds: the stream holds at most ``max_bytes`` (``discard: new``): when the workers fall that
far behind, publishes are refused and the edges keep the batches in their buffers — nothing
is dropped at the broker. ``max_age`` deletes what nobody consumed for that long (default:
seven days).

URLs: ``nats://host:4222`` (several servers of a cluster separated by commas:
``nats://a:4222,nats://b:4222``; ``tls://`` and ``user:password@`` as NATS takes them) with
the options above as query parameters on the last one, e.g.
``nats://127.0.0.1:4222?stream=PLANT1&replicas=3&ack_wait=30``. Each option in
:class:`NatsSettings`. The stream and the consumer are created when missing; settings of an
existing stream or consumer are left as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, fields, replace
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from shopfloor.bus.base import INGEST_SUBJECT, Consumer, ConsumerState, Delivery, Publisher
from shopfloor.errors import BusError

__all__ = ["BATCH_ID_HEADER", "NatsConsumer", "NatsPublisher", "NatsSettings", "parse_nats_url"]

BATCH_ID_HEADER: Final = "Shopfloor-Batch-Id"
"""The header carrying the batch id the historian records (beside ``Nats-Msg-Id``)."""

log = logging.getLogger(__name__)

_NATS_ERRORS: Final = (nats.errors.Error, nats.js.errors.Error, OSError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """Where the bus is and how its stream and consumer group are set up."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "SHOPFLOOR"
    prefix: str = INGEST_SUBJECT
    """Subjects are ``<prefix>.<edge>.<partition>``; the stream takes ``<prefix>.>``."""
    group: str = "shopfloor-workers"
    """The durable pull consumer the workers share."""
    replicas: int = 1
    """Copies of the stream in a NATS cluster (1, 3 or 5)."""
    max_bytes: int = 8 << 30
    max_age: float = 7 * 86_400.0
    duplicate_window: float = 120.0
    ack_wait: float = 30.0
    max_ack_pending: int = 4096
    publish_timeout: float = 5.0
    connect_timeout: float = 2.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise BusError("NATS URL names no server")
        for name in ("stream", "group"):
            value = getattr(self, name)
            if not value or any(c in value for c in " .*>"):
                raise BusError(f"NATS {name} {value!r} must be one token (no '.', '*', '>')")
        if self.replicas not in (1, 2, 3, 4, 5):
            raise BusError(f"NATS replicas must be 1 to 5, not {self.replicas}")
        for name in ("max_age", "duplicate_window", "ack_wait", "publish_timeout"):
            if getattr(self, name) <= 0:
                raise BusError(f"NATS option {name} must be positive")
        if self.max_bytes <= 0 or self.max_ack_pending <= 0:
            raise BusError("NATS options max_bytes and max_ack_pending must be positive")

    @property
    def display(self) -> str:
        """The servers without passwords, and the stream."""
        shown = []
        for server in self.servers:
            parts = urlsplit(server)
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            shown.append(urlunsplit((parts.scheme, netloc, "", "", "")))
        return f"{','.join(shown)} (stream {self.stream})"


def parse_nats_url(url: str) -> NatsSettings:
    """The settings of a ``nats://`` URL (see the module docstring)."""
    servers = [s.strip() for s in url.split(",") if s.strip()]
    if not servers:
        raise BusError(f"not a NATS URL: {url!r}")
    last = urlsplit(servers[-1])
    servers[-1] = urlunsplit((last.scheme, last.netloc, last.path, "", ""))
    for server in servers:
        if urlsplit(server).scheme not in ("nats", "tls"):
            raise BusError(f"not a NATS URL: {server!r} (want nats://host:port)")
    types = {f.name: f.type for f in fields(NatsSettings)}
    options: dict[str, Any] = {}
    for key, value in parse_qsl(last.query, keep_blank_values=True):
        kind = types.get(key)
        if kind is None or key == "servers":
            known = ", ".join(sorted(k for k in types if k != "servers"))
            raise BusError(f"NATS URL {url!r}: unknown option {key!r} (known: {known})")
        try:
            options[key] = (
                int(value) if kind == "int" else float(value) if kind == "float" else value
            )
        except ValueError:
            raise BusError(f"NATS URL {url!r}: {key}={value!r} is not a number") from None
    return NatsSettings(servers=tuple(servers), **options)


async def _connect(settings: NatsSettings, name: str) -> Client:
    """A client that reconnects for ever once connected; BusError when none answers now.

    One line is logged when the connection drops and one when it is back (not on close).
    """
    holder: list[Client] = []

    async def disconnected() -> None:
        if holder and not (holder[0].is_closed or holder[0].is_draining):
            log.warning("NATS %s: disconnected; reconnecting", settings.display)

    async def reconnected() -> None:
        log.warning("NATS %s: reconnected", settings.display)

    async def error(exc: Exception) -> None:
        log.debug("NATS %s: %s", settings.display, exc)

    try:
        nc = await nats.connect(
            list(settings.servers),
            name=name,
            connect_timeout=settings.connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=1,  # the first connect fails fast; for ever after, below
            reconnect_time_wait=0.5,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
    except _NATS_ERRORS as exc:
        raise BusError(f"cannot connect to NATS {settings.display}: {exc!r}") from exc
    holder.append(nc)
    nc.options["max_reconnect_attempts"] = -1  # once connected, reconnect for ever
    return nc


async def ensure_stream(js: JetStreamContext, settings: NatsSettings) -> None:
    """Create the stream when it does not exist (an existing one is left as it is)."""
    try:
        await js.stream_info(settings.stream)
        return
    except nats.js.errors.NotFoundError:
        pass
    config = StreamConfig(
        name=settings.stream,
        subjects=[f"{settings.prefix}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=settings.max_bytes,
        max_age=settings.max_age,
        duplicate_window=settings.duplicate_window,
        num_replicas=settings.replicas,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(settings.stream)  # created meanwhile by another process


class NatsPublisher(Publisher):
    """Publishes batches to the stream; connects on first use and again after failures."""

    def __init__(self, settings: NatsSettings, *, name: str = "shopfloor-edge") -> None:
        self.settings = settings
        self.name = name
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, name: str = "shopfloor-edge") -> NatsPublisher:
        """A publisher for a ``nats://`` URL."""
        return cls(parse_nats_url(url), name=name)

    @property
    def max_payload(self) -> int:
        """The server's ``max_payload`` once connected (NATS's default 1 MiB before)."""
        return int(self._nc.max_payload) if self._nc is not None else 1 << 20

    @property
    def connected(self) -> bool:
        """Whether the client is connected right now."""
        return self._nc is not None and self._nc.is_connected

    async def _context(self) -> JetStreamContext:
        async with self._lock:
            if self._js is None:
                nc = await _connect(self.settings, self.name)
                js = nc.jetstream(timeout=self.settings.publish_timeout)
                try:
                    await ensure_stream(js, self.settings)
                except _NATS_ERRORS as exc:
                    await nc.close()
                    raise BusError(
                        f"NATS {self.settings.display}: cannot set up the stream: {exc!r}"
                    ) from exc
                self._nc, self._js = nc, js
            return self._js

    async def publish(self, key: str, batch_id: str, payload: bytes) -> bool:
        """Store one message in the stream; False when JetStream dropped it as a duplicate."""
        js = await self._context()
        subject = f"{self.settings.prefix}.{key}"
        try:
            ack = await js.publish(
                subject,
                payload,
                timeout=self.settings.publish_timeout,
                stream=self.settings.stream,
                headers={"Nats-Msg-Id": batch_id, BATCH_ID_HEADER: batch_id},
            )
        except _NATS_ERRORS as exc:
            raise BusError(
                f"NATS {self.settings.display}: publish of batch {batch_id} to {subject} "
                f"failed: {exc!r}"
            ) from exc
        return not ack.duplicate

    async def close(self) -> None:
        """Close the connection (flushing what was sent)."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await nc.close()


class _NatsDelivery(Delivery):
    def __init__(self, msg: Msg, key: str) -> None:
        self._msg = msg
        headers = msg.headers or {}
        self.batch_id = headers.get(BATCH_ID_HEADER) or headers.get("Nats-Msg-Id") or ""
        self.key = key
        self.payload = msg.data
        self.deliveries = int(msg.metadata.num_delivered or 1)

    async def ack(self) -> None:
        try:
            await self._msg.ack()
        except _NATS_ERRORS as exc:
            raise BusError(f"acknowledging batch {self.batch_id} failed: {exc!r}") from exc

    async def nak(self, delay: float | None = None) -> None:
        try:
            await self._msg.nak(delay=delay)
        except _NATS_ERRORS as exc:
            raise BusError(f"nak of batch {self.batch_id} failed: {exc!r}") from exc

    async def in_progress(self) -> None:
        try:
            await self._msg.in_progress()
        except _NATS_ERRORS as exc:
            raise BusError(f"in-progress of batch {self.batch_id} failed: {exc!r}") from exc


class NatsConsumer(Consumer):
    """One worker's membership of the durable pull consumer group.

    Connects on first :meth:`fetch` (and creates the stream and the consumer when missing);
    after a failed connect the next fetch tries again.
    """

    def __init__(self, settings: NatsSettings, *, name: str = "shopfloor-worker") -> None:
        self.settings = settings
        self.name = name
        self._nc: Client | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, name: str = "shopfloor-worker") -> NatsConsumer:
        """A consumer for a ``nats://`` URL."""
        return cls(parse_nats_url(url), name=name)

    def with_settings(self, **changes: Any) -> NatsConsumer:
        """A new consumer with some settings changed."""
        return NatsConsumer(replace(self.settings, **changes), name=self.name)

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        async with self._lock:
            if self._sub is None:
                s = self.settings
                nc = await _connect(s, self.name)
                try:
                    js = nc.jetstream(timeout=s.publish_timeout)
                    await ensure_stream(js, s)
                    config = ConsumerConfig(
                        durable_name=s.group,
                        ack_policy=AckPolicy.EXPLICIT,
                        deliver_policy=DeliverPolicy.ALL,
                        ack_wait=s.ack_wait,
                        max_deliver=-1,
                        max_ack_pending=s.max_ack_pending,
                        filter_subject=f"{s.prefix}.>",
                    )
                    sub = await js.pull_subscribe(
                        f"{s.prefix}.>", durable=s.group, stream=s.stream, config=config
                    )
                except _NATS_ERRORS as exc:
                    await nc.close()
                    raise BusError(
                        f"NATS {s.display}: cannot join consumer group {s.group}: {exc!r}"
                    ) from exc
                self._nc, self._sub = nc, sub
            return self._sub

    async def fetch(self, max_messages: int, wait_s: float) -> list[Delivery]:
        """Up to ``max_messages`` messages within ``wait_s`` seconds (``[]`` when none)."""
        sub = await self._subscription()
        try:
            msgs = await sub.fetch(max_messages, timeout=wait_s)
        except (nats.errors.TimeoutError, TimeoutError):  # none came (or the request expired)
            return []
        except _NATS_ERRORS as exc:
            raise BusError(f"NATS {self.settings.display}: fetch failed: {exc!r}") from exc
        skip = len(self.settings.prefix) + 1
        return [_NatsDelivery(m, m.subject[skip:]) for m in msgs]

    async def state(self) -> ConsumerState | None:
        """The group's backlog from the consumer info (None when NATS does not answer)."""
        sub = self._sub
        if sub is None:
            return None
        try:
            info = await sub.consumer_info()
        except _NATS_ERRORS:
            return None
        return ConsumerState(
            int(info.num_pending or 0),
            int(info.num_ack_pending or 0),
            int(info.num_redelivered or 0),
        )

    async def close(self) -> None:
        """Leave: unacknowledged messages go to the other workers after ``ack_wait``."""
        nc, self._nc, self._sub = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await nc.close()

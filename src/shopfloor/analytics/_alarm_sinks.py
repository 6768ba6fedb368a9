"""Where alarm notifications go: webhooks and MQTT, behind bounded queues.

A notification is a JSON object (see :func:`shopfloor.analytics.alarms.AlarmManager`): the
alarm id, asset, transition, state, severity, message, time and user. The engine hands
each one to :meth:`Dispatcher.offer`, which never waits: every sink has its own bounded
queue and background task, so a slow or unreachable receiver delays nothing but its own
notifications, and when its queue is full the newest notifications for it are dropped
(counted, logged once per outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import string
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import httpx

from shopfloor.connectors.base import Backoff
from shopfloor.errors import ConfigError, NotificationError
from shopfloor.model._alarms import TRANSITIONS, NotifySpec

__all__ = [
    "AlarmSink",
    "Dispatcher",
    "MemorySink",
    "MqttSink",
    "SinkStats",
    "WebhookSink",
    "sinks_from_specs",
]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class AlarmSink(ABC):
    """A receiver of alarm notifications.

    ``min_severity`` and ``transitions`` choose what it gets; :meth:`send` delivers one
    notification (retrying as the sink sees fit) or raises :class:`NotificationError`.
    """

    def __init__(
        self,
        name: str,
        *,
        min_severity: int = 1,
        transitions: Sequence[str] = TRANSITIONS,
    ) -> None:
        self.name = name
        self.min_severity = min_severity
        self.transitions = frozenset(transitions)

    def wants(self, note: Mapping[str, Any]) -> bool:
        """Whether this sink takes ``note`` (by severity and transition)."""
        return int(note["severity"]) >= self.min_severity and note["transition"] in (
            self.transitions
        )

    @abstractmethod
    async def send(self, note: Mapping[str, Any]) -> None:
        """Deliver one notification; :class:`NotificationError` when that failed for good."""

    async def aclose(self) -> None:  # noqa: B027 - most sinks have nothing to release
        """Release connections."""


class MemorySink(AlarmSink):
    """Keeps every notification it gets in :attr:`received` (for tests, previews, the API)."""

    def __init__(
        self,
        name: str = "memory",
        *,
        min_severity: int = 1,
        transitions: Sequence[str] = TRANSITIONS,
    ) -> None:
        super().__init__(name, min_severity=min_severity, transitions=transitions)
        self.received: list[Mapping[str, Any]] = []
        self._got = asyncio.Event()

    async def send(self, note: Mapping[str, Any]) -> None:
        """Keep ``note``."""
        self.received.append(note)
        self._got.set()

    def transitions_of(self, alarm_id: str | None = None) -> list[str]:
        """The transitions received (of one alarm, or all), in order."""
        return [
            str(n["transition"])
            for n in self.received
            if alarm_id is None or n["alarm_id"] == alarm_id
        ]

    async def wait_for(self, count: int, within: float = 5.0) -> None:
        """Wait until at least ``count`` notifications arrived (:class:`TimeoutError` after
        ``within`` seconds)."""
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self._got.clear()
                await self._got.wait()


class WebhookSink(AlarmSink):
    """POSTs each notification as JSON to ``url``.

    Connection errors, timeouts and the answers 408, 425, 429 and 5xx are retried up to
    ``retries`` times with capped, jittered exponential backoff; other answers are final.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        min_severity: int = 1,
        transitions: Sequence[str] = TRANSITIONS,
    ) -> None:
        super().__init__(name, min_severity=min_severity, transitions=transitions)
        self.url = url
        self.retries = retries
        self._backoff = (backoff_initial, backoff_max)
        self._client = httpx.AsyncClient(
            timeout=timeout,
            headers={"User-Agent": "shopfloor-alarms", **dict(headers or {})},
        )

    async def send(self, note: Mapping[str, Any]) -> None:
        """POST ``note``; retries transient failures (see the class docstring)."""
        backoff = Backoff(*self._backoff)
        body = json.dumps(note, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:  # connection refused, timeouts, protocol errors
                if last:
                    raise NotificationError(
                        f"webhook {self.name}: {type(exc).__name__}: {exc} "
                        f"(after {attempt + 1} attempts)"
                    ) from exc
            else:
                if response.status_code < 300:
                    return
                if response.status_code not in _RETRY_STATUS or last:
                    raise NotificationError(
                        f"webhook {self.name}: {self.url} answered {response.status_code} "
                        f"(after {attempt + 1} attempts)"
                    )
            await backoff.sleep()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


class MqttSink(AlarmSink):
    """Publishes each notification on ``<topic>/<alarm id>`` (retained by default).

    The alarm id is the asset path and rule id, so a subscriber to ``<topic>/#`` sees
    every alarm and its last state; to ``<topic>/acme/munich/body-shop/#`` one area's. The
    connection is made on first use and remade after failures (capped, jittered backoff);
    a notification is retried until it is published, so a broker outage only delays.
    """

    def __init__(
        self,
        name: str,
        endpoint: str,
        *,
        topic: str = "shopfloor/alarms",
        qos: int = 1,
        retain: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        min_severity: int = 1,
        transitions: Sequence[str] = TRANSITIONS,
    ) -> None:
        super().__init__(name, min_severity=min_severity, transitions=transitions)
        parts = urlsplit(endpoint)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"alarm sink {name}: {endpoint!r} is not mqtt://host[:port]")
        self.endpoint = endpoint
        self.topic = topic.rstrip("/")
        self.qos = qos
        self.retain = retain
        self._host = parts.hostname
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._tls = ssl.create_default_context() if parts.scheme == "mqtts" else None
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._backoff = (backoff_initial, backoff_max)
        self._client: aiomqtt.Client | None = None
        self._down = False

    def topic_of(self, note: Mapping[str, Any]) -> str:
        """The topic a notification is published on."""
        return f"{self.topic}/{note['alarm_id']}"

    async def _connect(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            tls_context=self._tls,
            timeout=10.0,
        )
        await client.__aenter__()
        return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):  # the connection is gone already
                await client.__aexit__(None, None, None)

    async def send(self, note: Mapping[str, Any]) -> None:
        """Publish ``note``; reconnects and retries until it is published."""
        backoff = Backoff(*self._backoff)
        payload = json.dumps(note, separators=(",", ":")).encode()
        while True:
            try:
                if self._client is None:
                    self._client = await self._connect()
                await self._client.publish(
                    self.topic_of(note), payload, qos=self.qos, retain=self.retain
                )
            except aiomqtt.MqttError as exc:
                await self._drop()
                if not self._down:
                    self._down = True
                    log.warning(
                        "alarm sink %s: broker %s unreachable: %s", self.name, self.endpoint, exc
                    )
                await backoff.sleep()
                continue
            if self._down:
                self._down = False
                log.warning("alarm sink %s: broker %s reachable again", self.name, self.endpoint)
            return

    async def aclose(self) -> None:
        """Disconnect from the broker."""
        await self._drop()


def _expand(value: str, where: str) -> str:
    try:
        return string.Template(value).substitute(os.environ)
    except KeyError as exc:
        raise ConfigError(f"{where}: environment variable {exc.args[0]} is not set") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def sinks_from_specs(specs: Sequence[NotifySpec]) -> list[AlarmSink]:
    """The sinks a factory file's ``alarms.notify`` declares (``${VAR}`` in webhook headers
    is taken from the environment; a missing variable raises :class:`ConfigError`)."""
    sinks: list[AlarmSink] = []
    for spec in specs:
        common: dict[str, Any] = {
            "min_severity": spec.min_severity,
            "transitions": tuple(spec.transitions),
        }
        if spec.webhook is not None:
            headers = {
                k: _expand(v, f"alarm sink {spec.name}, header {k}")
                for k, v in spec.headers.items()
            }
            sinks.append(
                WebhookSink(
                    spec.name,
                    spec.webhook,
                    headers=headers,
                    timeout=spec.timeout,
                    retries=spec.retries,
                    **common,
                )
            )
        else:
            assert spec.mqtt is not None
            sinks.append(
                MqttSink(
                    spec.name,
                    spec.mqtt,
                    topic=spec.topic,
                    qos=spec.qos,
                    retain=spec.retain,
                    **common,
                )
            )
    return sinks


@dataclass(slots=True)
class SinkStats:
    """What one sink did: notifications delivered, failed (after retries) and dropped."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _Lane:
    sink: AlarmSink
    queue: asyncio.Queue[Mapping[str, Any]]
    stats: SinkStats = field(default_factory=SinkStats)
    full: bool = False


class Dispatcher:
    """Fans notifications out to sinks, each behind its own bounded queue and task.

    Run :meth:`run` in a task group; :meth:`offer` never blocks. :meth:`drain` waits until
    the queues are empty (or the timeout), e.g. before shutting down.
    """

    def __init__(self, sinks: Sequence[AlarmSink], *, max_queue: int = 1000) -> None:
        self._lanes = [_Lane(s, asyncio.Queue(max_queue)) for s in sinks]

    @property
    def stats(self) -> dict[str, SinkStats]:
        """Per sink name, what it did."""
        return {lane.sink.name: lane.stats for lane in self._lanes}

    def offer(self, note: Mapping[str, Any]) -> None:
        """Queue ``note`` for every sink that wants it; drops it for sinks whose queue is full."""
        for lane in self._lanes:
            if not lane.sink.wants(note):
                continue
            try:
                lane.queue.put_nowait(note)
            except asyncio.QueueFull:
                lane.stats.dropped += 1
                if not lane.full:
                    lane.full = True
                    log.warning("alarm sink %s: queue full, dropping notifications", lane.sink.name)
            else:
                lane.full = False

    async def run(self) -> None:
        """Deliver queued notifications until cancelled."""
        async with asyncio.TaskGroup() as group:
            for lane in self._lanes:
                group.create_task(self._deliver(lane), name=f"alarm-sink:{lane.sink.name}")

    async def _deliver(self, lane: _Lane) -> None:
        while True:
            note = await lane.queue.get()
            try:
                await lane.sink.send(note)
            except NotificationError as exc:
                lane.stats.failed += 1
                lane.stats.last_error = str(exc)
                log.warning("alarm notification %s dropped: %s", note.get("alarm_id"), exc)
            except Exception as exc:  # a sink's bug must not end delivery
                lane.stats.failed += 1
                lane.stats.last_error = repr(exc)
                log.exception("alarm sink %s failed", lane.sink.name)
            else:
                lane.stats.sent += 1
            finally:
                lane.queue.task_done()

    async def drain(self, within: float) -> bool:
        """Wait until every queued notification was handled; False after ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                for lane in self._lanes:
                    await lane.queue.join()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Close every sink."""
        for lane in self._lanes:
            await lane.sink.aclose()

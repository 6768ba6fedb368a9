"""The in-process bus: the same contract as NATS JetStream inside one event loop.

:class:`MemoryBus` holds a bounded queue of messages; its publishers and consumers behave
as their NATS counterparts do (durable once ``publish`` returned — for the life of the
process —, duplicate ids dropped within a window, per-key order, at-least-once delivery
with redelivery after ``ack_wait``, ``nak`` with a delay). Tests of the edge and the worker
run on it, and a single process may use it to put a bus between its parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from shopfloor.bus.base import Consumer, ConsumerState, Delivery, Publisher
from shopfloor.errors import BusError

__all__ = ["MemoryBus"]


@dataclass(slots=True)
class _Message:
    key: str
    batch_id: str
    payload: bytes
    deliveries: int = 0
    token: int = 0
    not_before: float = 0.0
    deadline: float = field(default=0.0)


class _MemoryDelivery(Delivery):
    def __init__(self, bus: MemoryBus, message: _Message) -> None:
        self._bus, self._message = bus, message
        self._token = message.token
        self.batch_id = message.batch_id
        self.key = message.key
        self.payload = message.payload
        self.deliveries = message.deliveries

    async def ack(self) -> None:
        self._bus._settle(self._token, None)

    async def nak(self, delay: float | None = None) -> None:
        self._bus._settle(self._token, delay or 0.0)

    async def in_progress(self) -> None:
        message = self._bus._inflight.get(self._token)
        if message is not None:
            message.deadline = time.monotonic() + self._bus.ack_wait


class _MemoryPublisher(Publisher):
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    @property
    def max_payload(self) -> int:
        return self._bus.max_payload

    async def publish(self, key: str, batch_id: str, payload: bytes) -> bool:
        return self._bus._publish(key, batch_id, payload)

    async def close(self) -> None:
        return None


class _MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def fetch(self, max_messages: int, wait_s: float) -> list[Delivery]:
        return await self._bus._fetch(max_messages, wait_s)

    async def state(self) -> ConsumerState | None:
        bus = self._bus
        redelivered = sum(1 for m in bus._inflight.values() if m.deliveries > 1)
        return ConsumerState(len(bus._ready), len(bus._inflight), redelivered)

    async def close(self) -> None:
        return None


class MemoryBus:
    """An in-process bus with one consumer group (see the module docstring).

    ``max_messages`` bounds the messages held (waiting and unacknowledged): a publish
    beyond it raises :class:`~shopfloor.errors.BusError`, as a full JetStream stream with
    ``discard: new`` does. ``duplicate_window`` is how many recent batch ids are
    remembered for de-duplication.
    """

    def __init__(
        self,
        *,
        max_messages: int = 10_000,
        max_payload: int = 1 << 20,
        ack_wait: float = 30.0,
        duplicate_window: int = 100_000,
    ) -> None:
        self.max_messages = max_messages
        self.max_payload = max_payload
        self.ack_wait = ack_wait
        self._ready: deque[_Message] = deque()
        self._inflight: dict[int, _Message] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._window = duplicate_window
        self._tokens = itertools.count(1)
        self._changed = asyncio.Event()
        self.published = 0
        """Messages stored (duplicates not counted)."""

    def publisher(self) -> Publisher:
        """A publisher on this bus."""
        return _MemoryPublisher(self)

    def consumer(self) -> Consumer:
        """A member of the bus's consumer group."""
        return _MemoryConsumer(self)

    def _publish(self, key: str, batch_id: str, payload: bytes) -> bool:
        if len(payload) > self.max_payload:
            raise BusError(f"memory bus: message of {len(payload)} bytes > {self.max_payload}")
        if batch_id in self._seen:
            return False
        if len(self._ready) + len(self._inflight) >= self.max_messages:
            raise BusError(f"memory bus: full ({self.max_messages} messages)")
        self._seen[batch_id] = None
        while len(self._seen) > self._window:
            self._seen.popitem(last=False)
        self._ready.append(_Message(key, batch_id, bytes(payload)))
        self.published += 1
        self._wake()
        return True

    def _wake(self) -> None:
        self._changed.set()

    def _settle(self, token: int, redeliver_after: float | None) -> None:
        message = self._inflight.pop(token, None)
        if message is None or redeliver_after is None:
            return
        message.not_before = time.monotonic() + redeliver_after
        self._ready.appendleft(message)
        self._wake()

    def _expire(self, now: float) -> None:
        expired = [t for t, m in self._inflight.items() if m.deadline <= now]
        for token in sorted(expired, reverse=True):
            message = self._inflight.pop(token)
            self._ready.appendleft(message)

    def _take(self, max_messages: int) -> list[Delivery]:
        now = time.monotonic()
        self._expire(now)
        out: list[Delivery] = []
        held: list[_Message] = []
        while self._ready and len(out) < max_messages:
            message = self._ready.popleft()
            if message.not_before > now:
                held.append(message)
                continue
            message.deliveries += 1
            message.token = next(self._tokens)
            message.deadline = now + self.ack_wait
            self._inflight[message.token] = message
            out.append(_MemoryDelivery(self, message))
        self._ready.extendleft(reversed(held))
        return out

    async def _fetch(self, max_messages: int, wait_s: float) -> list[Delivery]:
        deadline = time.monotonic() + wait_s
        while True:
            got = self._take(max_messages)
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self._changed.clear()
            with contextlib.suppress(TimeoutError):  # also wakes for delayed redeliveries
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))

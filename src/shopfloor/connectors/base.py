"""What every connector is: one supervisor per device connection that yields raw batches.

A connector speaks one protocol and knows nothing of the platform: it receives its
connection settings and the list of points to read (:class:`PointSpec`), and hands
:class:`~shopfloor.edge.batch.RawBatch` objects to a sink. It owns reconnects (jittered,
capped exponential backoff), the protocol's own rules, and it logs state changes only
(one line when the device goes away, one when it is back).

Timestamps of data (a sample's receive time, when the protocol gives none) come from the
connector's :attr:`Connector.clock`, the wall clock unless the platform sets another one
(the demo sets the simulated factory's clock); connection status stays on the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from shopfloor.edge.batch import Quality, RawBatch, RawBatchBuilder

__all__ = [
    "Backoff",
    "BatchSink",
    "Clock",
    "Connector",
    "ConnectorState",
    "ConnectorStatus",
    "Outbox",
    "PointInfo",
    "PointSpec",
    "TableSink",
    "wall_clock_us",
]

BatchSink = Callable[[RawBatch], Awaitable[None]]
"""Where a connector delivers its batches; awaiting it is the connector's backpressure."""

TableSink = Callable[[pa.Table], Awaitable[object]]
"""Where a connector delivers dead letters (``DEAD_LETTER_SCHEMA``) or events
(``EVENT_SCHEMA``)."""

Clock = Callable[[], int]
"""A source of "now" for data timestamps: microseconds since the Unix epoch (UTC)."""


def wall_clock_us() -> int:
    """The wall clock in microseconds since the Unix epoch: every connector's default
    :data:`Clock`."""
    return time.time_ns() // 1000


ConnectorState = Literal["starting", "connected", "disconnected", "failed", "stopped"]


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One point a connector reads: a protocol address and its per-point options.

    ``data_type`` is the signal's type (``float|int|bool|string|json``) so that a connector
    can decode registers or coerce values; ``options`` are protocol specific (OPC UA
    ``sampling_interval_ms``, ``deadband_abs``, ``deadband_pct``, ``queue_size``; Modbus
    register layout, …).
    """

    address: str
    data_type: str = "float"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PointInfo:
    """What a connector can tell of an address nobody bound: the signal it would be.

    ``asset`` is a device id in the protocol's terms (e.g. a VDA 5050 serial number); the
    platform places it in the asset tree.
    """

    asset: str
    name: str
    data_type: str
    unit: str | None = None
    kind: str = "measurement"


@dataclass(slots=True)
class ConnectorStatus:
    """Live status of one connector, shown by ``shopfloor up`` and the API."""

    name: str
    protocol: str
    state: ConnectorState = "starting"
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_error: str | None = None
    values_total: int = 0
    batches_total: int = 0
    reconnects: int = 0

    def set_state(self, state: ConnectorState, error: str | None = None) -> bool:
        """Record a state; return True when it changed (so callers log changes only)."""
        changed = state != self.state or (error is not None and error != self.last_error)
        if state != self.state:
            self.since = datetime.now(UTC)
        self.state = state
        if error is not None:
            self.last_error = error
        elif state == "connected":
            self.last_error = None
        return changed


class Backoff:
    """Capped exponential backoff with full jitter (the AWS architecture blog's variant)."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0

    def reset(self) -> None:
        """Start over after a success."""
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds."""
        cap = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(cap / 2, cap)

    async def sleep(self) -> None:
        """Wait for the next attempt."""
        await asyncio.sleep(self.next_delay())


class Outbox:
    """Readings on their way to the sink: one batch every ``interval_s``, or sooner.

    Protocol callbacks append readings one by one; :meth:`run` hands them over as one
    :class:`~shopfloor.edge.batch.RawBatch` per interval, or as soon as ``max_rows`` wait or
    :meth:`flush_soon` is called (e.g. for the bad-quality rows of a connection loss).
    """

    def __init__(self, status: ConnectorStatus, interval_s: float, max_rows: int) -> None:
        self.builder = RawBatchBuilder()
        self._status = status
        self._interval = interval_s
        self._max_rows = max_rows
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self.builder)

    def append(
        self, source: str, address: str, ts_us: int, value: Any, quality: int = Quality.GOOD
    ) -> None:
        """Add one reading (see :meth:`RawBatchBuilder.append`)."""
        self.builder.append(source, address, ts_us, value, quality)
        if len(self.builder) >= self._max_rows:
            self._wake.set()

    def flush_soon(self) -> None:
        """Hand what is waiting to the sink without waiting for the interval."""
        self._wake.set()

    async def run(self, sink: BatchSink) -> None:
        """Deliver batches until cancelled (call :meth:`flush` after cancelling)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush(sink)

    async def flush(self, sink: BatchSink) -> None:
        """Deliver what is waiting now, as one batch."""
        if not len(self.builder):
            return
        batch = self.builder.build()
        self._status.values_total += len(batch)
        self._status.batches_total += 1
        await sink(batch)


class Connector(ABC):
    """A supervisor for one device connection.

    Subclasses implement :meth:`run`, which returns only when cancelled (connection loss is
    handled inside it with :class:`Backoff`), and :meth:`write` for setpoints.
    """

    protocol: str = ""

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
        self.name = name
        self.dead_letter_sink = dead_letter_sink
        """Receives messages that could not be parsed (protocols that parse payloads)."""
        self.event_sink = event_sink
        """Receives events the protocol reports (errors, alarms)."""
        self.endpoint = endpoint
        self.points = list(points)
        self.options: Mapping[str, Any] = dict(options or {})
        self.status = ConnectorStatus(name=name, protocol=self.protocol)
        self.clock: Clock = wall_clock_us
        """Stamps data the protocol does not stamp itself (µs since the epoch); the wall
        clock unless set (before :meth:`run`) to another one, e.g. a simulation's."""

    @abstractmethod
    async def run(self, sink: BatchSink) -> None:
        """Read until cancelled, delivering batches to ``sink``; reconnect on failures."""

    def describe(self, address: str) -> PointInfo | None:
        """The signal an unbound ``address`` would be, for protocols that announce devices.

        Connectors whose devices describe themselves (VDA 5050 vehicles, Sparkplug births)
        override this so that the platform can create unknown equipment automatically; the
        default knows nothing.
        """
        return None

    @abstractmethod
    async def write(self, address: str, value: Any) -> None:
        """Write a setpoint; raises ``ConnectorError`` naming the connection on failure."""

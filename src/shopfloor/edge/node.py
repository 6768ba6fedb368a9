"""The edge of a scaled-out plant: connectors → edge buffer (on disk) → bus.

:class:`EdgeNode` runs the connectors of a factory file like the embedded
:class:`~shopfloor.runtime.Runtime` does, but instead of a historian it feeds the
store-and-forward :class:`~shopfloor.edge.buffer.EdgeBuffer`, from which a
:class:`~shopfloor.edge.buffer.Forwarder` publishes to the bus in order, with the batch id
``<buffer id>-<seq>``: when the bus is away, batches wait on disk, and an edge restarted
with a non-empty buffer sends what it holds first.

**Where mapping happens.** Edges send *raw* batches (connection, address, value); the
workers map them onto signal ids. The historian's signal catalog (the ids) lives with the
workers, so an edge needs no database connection and its buffer holds exactly what the
devices said. What an edge contributes is *names*: for connections with ``auto_area``,
whose devices describe themselves (Sparkplug births, VDA 5050 vehicles), the edge turns
each description into a signal path as the embedded runtime does and sends the names of
the batch's unbound addresses with it (:data:`~shopfloor.bus._codec.POINTS_SCHEMA`), so
that whichever worker gets the batch can create the signals. Events of the connectors are
sent with their assets already named by asset path; dead letters of the connectors go to
the bus too (the workers store both).

**Backpressure.** Connectors hand batches to a bounded queue (:meth:`EdgeNode.sink` waits
when it is full); one task coalesces them per connection (up to ``flush_rows`` rows or
``flush_interval`` seconds), encodes them as Arrow IPC messages of at most
``max_message_bytes`` and puts them in the buffer, whose overflow policy applies when the
bus stays away longer than the buffer holds. :class:`EdgeStats` shows every stage.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.bus._codec import (
    POINTS_SCHEMA,
    Compression,
    encode_dead_letters,
    encode_events,
    split_readings,
)
from shopfloor.bus.base import Publisher, bus_key
from shopfloor.connectors import Connector, PointSpec, TableSink, create_connector, protocols
from shopfloor.edge.batch import RawBatch
from shopfloor.edge.buffer import BufferItem, EdgeBuffer, Forwarder
from shopfloor.model import Factory

__all__ = ["EdgeNode", "EdgeStats"]

log = logging.getLogger(__name__)

_STOP = object()


def _slug(device: str) -> str:
    """A device id as an asset id (``AGV 7`` → ``agv-7``), as the embedded runtime names it."""
    return re.sub(r"[^a-z0-9_.-]+", "-", device.lower()).strip("-") or "device"


@dataclass(slots=True)
class EdgeStats:
    """Counters of an edge node (monotonic but the gauges)."""

    values_in: int = 0
    """Readings the connectors delivered."""
    values_buffered: int = 0
    """Readings written to the buffer."""
    messages_buffered: int = 0
    published: int = 0
    """Messages the bus stored."""
    duplicates: int = 0
    """Messages the bus had already (republished after a failure)."""
    queue_depth: int = 0
    """Gauge: batches waiting between the connectors and the buffer."""
    queue_max: int = 0
    unnamed_addresses: int = 0
    """Gauge: unbound addresses of ``auto_area`` connections not described (yet)."""


class _Names:
    """Signal names of the unbound addresses of one ``auto_area`` connection, cached."""

    def __init__(self, connection: str, area: str, devices: dict[str, str]) -> None:
        self.connection = connection
        self.area = area
        self.devices = devices
        self.table = POINTS_SCHEMA.empty_table()
        self.unnamed = 0
        """Addresses of the last batch no description named (yet)."""

    def points(self, raw: RawBatch, connector: Connector, bound: set[str]) -> pa.Table | None:
        """The names of the unbound addresses in ``raw`` (describing new ones first)."""
        addresses = pc.unique(raw.table.column("address").combine_chunks())
        idx = pc.index_in(addresses, value_set=self.table.column("address").combine_chunks())
        new = addresses.filter(idx.is_null()).to_pylist()
        unnamed = 0
        if new:
            rows: dict[str, list[object]] = {name: [] for name in POINTS_SCHEMA.names}
            for address in new:
                if address in bound:
                    continue
                info = connector.describe(address)
                if info is None:  # no birth yet: a dead letter at the worker, asked again
                    unnamed += 1
                    continue
                asset = self.devices.get(info.asset) or f"{self.area}/{_slug(info.asset)}"
                self.devices[info.asset] = asset
                for name, value in zip(
                    POINTS_SCHEMA.names,
                    (
                        self.connection,
                        address,
                        f"{asset}/{info.name}",
                        info.data_type,
                        info.unit,
                        info.kind,
                    ),
                    strict=True,
                ):
                    rows[name].append(value)
            if rows["address"]:
                added = pa.Table.from_pydict(rows, schema=POINTS_SCHEMA)
                self.table = pa.concat_tables([self.table, added]).combine_chunks()
                idx = pc.index_in(addresses, value_set=self.table.column("address"))
        self.unnamed = unnamed
        taken = idx.filter(idx.is_valid())
        return self.table.take(taken) if len(taken) else None


class EdgeNode:
    """Connectors of ``factory`` → ``buffer`` → ``publisher`` (see the module docstring).

    ``edge_id`` names this edge in the message keys (``<edge>.<connection>``); give every
    edge its own. ``endpoint_override`` points connections elsewhere than the file says.
    Use as an async context manager: leaving stops the connectors, writes what they
    delivered to the buffer, and forwards for at most ``drain_timeout`` seconds; the rest
    stays in the buffer for the next start.
    """

    def __init__(
        self,
        factory: Factory,
        buffer: EdgeBuffer,
        publisher: Publisher,
        *,
        edge_id: str,
        endpoint_override: Mapping[str, str] | None = None,
        max_queue: int = 256,
        flush_rows: int = 50_000,
        flush_interval: float = 0.25,
        max_message_bytes: int = 512 << 10,
        compression: Compression = "none",
        forward_batch: int = 64,
        backoff_max: float = 5.0,
        drain_timeout: float = 5.0,
        connectors: bool = True,
    ) -> None:
        self.factory = factory
        self.buffer = buffer
        self.publisher = publisher
        self.edge_id = edge_id
        self.stats = EdgeStats(queue_max=max_queue)
        self.connectors: list[Connector] = []
        self.skipped: dict[str, str] = {}
        """Connections not started, with the reason."""
        self.flush_rows = flush_rows
        self.flush_interval = flush_interval
        self.max_message_bytes = max_message_bytes
        self.compression: Compression = compression
        self.drain_timeout = drain_timeout
        self.forwarder = Forwarder(buffer, batch_size=forward_batch, backoff_max=backoff_max)
        self._endpoints = dict(endpoint_override or {})
        self._start_connectors = connectors
        self._queue: asyncio.Queue[RawBatch | object] = asyncio.Queue(max_queue)
        self._bound: dict[str, set[str]] = defaultdict(set)
        self._devices: dict[str, dict[str, str]] = {}
        self._names: dict[str, _Names] = {}
        self._group: asyncio.TaskGroup | None = None
        self._connector_tasks: list[asyncio.Task[None]] = []
        self._coalescer: asyncio.Task[None] | None = None
        self._forwarding: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        points: dict[str, list[PointSpec]] = defaultdict(list)
        for (conn_name, addr), sig in self.factory.bindings().items():
            b = sig.binding
            assert b is not None
            self._bound[conn_name].add(addr)
            points[conn_name].append(PointSpec(addr, sig.data_type, dict(b.options)))
            devices = self._devices.setdefault(conn_name, {})
            devices.setdefault(addr.split("/", 1)[0], sig.asset_path)
        available = protocols()
        for name, conn in self.factory.connections.items():
            if not self._start_connectors:
                break
            if conn.protocol not in available:
                self.skipped[name] = f"protocol {conn.protocol!r} is not available"
                continue
            options = dict(conn.options)
            auto_area = options.pop("auto_area", None)
            if auto_area is not None:
                area = str(auto_area).strip("/")
                self._names[name] = _Names(name, area, self._devices.setdefault(name, {}))
                options["auto_discover"] = True
            elif not points.get(name):
                self.skipped[name] = "no signal is bound to it"
                continue
            self.connectors.append(
                create_connector(
                    conn.protocol,
                    name,
                    self._endpoints.get(name, conn.endpoint),
                    points[name],
                    options,
                    dead_letter_sink=self._dead_letter_sink,
                    event_sink=self._event_sink(name),
                )
            )
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._coalescer = self._group.create_task(self._coalesce(), name="edge-coalescer")
        self._forwarding = self._group.create_task(
            self.forwarder.run(self._send), name="edge-forwarder"
        )
        for c in self.connectors:
            task = self._group.create_task(c.run(self.sink), name=f"connector:{c.name}")
            self._connector_tasks.append(task)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        assert self._coalescer is not None
        for task in self._connector_tasks:
            task.cancel()
        await asyncio.gather(*self._connector_tasks, return_exceptions=True)
        self._closed = True
        await self._queue.put(_STOP)
        try:
            await self._coalescer
            await self.drain(self.drain_timeout)
        finally:
            if self._forwarding is not None:
                self._forwarding.cancel()
            await self._group.__aexit__(exc_type, exc, tb)

    async def drain(self, wait_s: float) -> bool:
        """Wait until the buffer is empty (True) or ``wait_s`` seconds passed (False)."""
        deadline = time.monotonic() + wait_s
        while self.buffer.pending_count > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    # -- connectors → buffer ----------------------------------------------------------

    async def sink(self, batch: RawBatch) -> None:
        """Accept a batch from a connector; waits while the queue is full."""
        if self._closed:
            raise RuntimeError("edge node is closed")
        if len(batch) == 0:
            return
        await self._queue.put(batch)
        self.stats.values_in += len(batch)
        self.stats.queue_depth = self._queue.qsize()

    async def _coalesce(self) -> None:
        pending: dict[str, list[RawBatch]] = defaultdict(list)
        rows = 0
        stop = False
        while not stop:
            deadline = time.monotonic() + self.flush_interval
            while rows < self.flush_rows:
                timeout = deadline - time.monotonic()
                if timeout <= 0 and pending:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), max(timeout, 0.05))
                except TimeoutError:
                    if pending:
                        break
                    deadline = time.monotonic() + self.flush_interval
                    continue
                if item is _STOP:
                    stop = True
                    break
                assert isinstance(item, RawBatch)
                for source, part in _by_source(item):
                    pending[source].append(part)
                rows += len(item)
            if pending:
                await self._store(pending)
                pending, rows = defaultdict(list), 0
            self.stats.queue_depth = self._queue.qsize()

    async def _store(self, pending: Mapping[str, list[RawBatch]]) -> None:
        items: list[tuple[bytes, str]] = []
        values = 0
        for source, parts in pending.items():
            raw = RawBatch(pa.concat_tables([p.table for p in parts]))
            names = self._names.get(source)
            points = None
            if names is not None:
                connector = next((c for c in self.connectors if c.name == source), None)
                if connector is not None:
                    points = names.points(raw, connector, self._bound[source])
            key = bus_key(self.edge_id, source)
            bodies = split_readings(raw, points, self.max_message_bytes, self.compression)
            items.extend((body, key) for body in bodies)
            values += len(raw)
        self.stats.unnamed_addresses = sum(n.unnamed for n in self._names.values())
        await self.buffer.put_many(items)
        self.stats.values_buffered += values
        self.stats.messages_buffered += len(items)

    async def put_readings(self, raw: RawBatch, points: pa.Table | None = None) -> None:
        """Put a raw batch of one source straight into the buffer (tests, generators)."""
        source = raw.table.column("source")[0].as_py() if len(raw) else ""
        bodies = split_readings(raw, points, self.max_message_bytes, self.compression)
        key = bus_key(self.edge_id, source)
        await self.buffer.put_many([(body, key) for body in bodies])
        self.stats.values_in += len(raw)
        self.stats.values_buffered += len(raw)
        self.stats.messages_buffered += len(bodies)

    async def _dead_letter_sink(self, letters: pa.Table) -> None:
        if letters.num_rows == 0:
            return
        source = str(letters.column("source")[0].as_py())
        body = encode_dead_letters(letters, self.compression)
        await self.buffer.put(body, bus_key(self.edge_id, source))

    def _event_sink(self, connection: str) -> TableSink:
        """Events of ``connection`` with the device's id replaced by its asset path."""
        devices = self._devices.setdefault(connection, {})
        key = bus_key(self.edge_id, connection)

        async def sink(events: pa.Table) -> None:
            if events.num_rows == 0:
                return
            assets = [devices.get(a, a) for a in events.column("asset").to_pylist()]
            idx = events.schema.get_field_index("asset")
            events = events.set_column(idx, "asset", pa.array(assets, pa.string()))
            await self.buffer.put(encode_events(events, self.compression), key)

        return sink

    # -- buffer → bus -----------------------------------------------------------------

    async def _send(self, items: list[BufferItem]) -> None:
        buffer_id = self.buffer.buffer_id
        for seq, key, payload in items:
            stored = await self.publisher.publish(key, f"{buffer_id}-{seq}", payload)
            if stored:
                self.stats.published += 1
            else:
                self.stats.duplicates += 1


def _by_source(batch: RawBatch) -> list[tuple[str, RawBatch]]:
    """The rows of ``batch`` per source (connectors deliver one source per batch)."""
    source = batch.table.column("source")
    first = source[0].as_py()
    if pc.all(pc.equal(source, first)).as_py():
        return [(str(first), batch)]
    out = []
    for value in pc.unique(source.combine_chunks()).to_pylist():
        out.append((str(value), RawBatch(batch.table.filter(pc.equal(source, value)))))
    return out

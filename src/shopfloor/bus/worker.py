"""The bus worker: pulls batches, maps them, stores them once, then acknowledges them.

:class:`IngestWorker` is one member of the bus's consumer group (``shopfloor worker``);
any number of them share the load. Two tasks with a bounded queue between them:

* the **fetcher** pulls up to ``fetch_messages`` messages at a time and decodes them
  (:mod:`shopfloor.bus._codec`); when the queue is full it stops pulling, so the bus keeps
  the backlog (and a full stream makes the edges keep it on disk);
* the **committer** takes the fetched groups that are waiting (up to ``max_commit_rows``
  readings: a slow historian gets fewer, larger transactions), maps them with the factory
  file's bindings (the :class:`~shopfloor.edge.mapper.Mapper`: type conversion, unit
  scaling, dead letters), creating the signals the edges named for unbound addresses, and
  stores the readings and dead letters together with the messages' batch ids in *one*
  historian transaction (:meth:`~shopfloor.historian.Historian.append_once`). Only then are
  the messages acknowledged. Batch ids the historian already has (a message delivered
  again because a worker died between its commit and its acknowledgement) are acknowledged
  without being stored again.

When the historian fails with a connection problem the committer keeps its messages,
backs off (capped, jittered, exponential) and tries again; meanwhile, and while messages
wait for a slow historian, the bus is told every ``touch_interval`` seconds that they are
still being worked on (so that it does not hand them to another worker). Nothing is
acknowledged that is not stored. Other failures (a batch the historian refuses) are
narrowed down to the message at fault, which is stored as a dead letter with the reason.
:class:`WorkerStats` makes every stage visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg_pool import PoolTimeout

from shopfloor.bus._codec import Message, decode
from shopfloor.bus.base import Consumer, ConsumerState, Delivery
from shopfloor.edge.batch import RawBatch, ReadingBatch
from shopfloor.edge.deadletter import DEAD_LETTER_SCHEMA, DeadLetterBuilder
from shopfloor.edge.mapper import Mapper, Route
from shopfloor.edge.pipeline import Observer
from shopfloor.errors import BatchError, BusError, HistorianError
from shopfloor.historian.base import Historian, SignalInfo
from shopfloor.model import Factory

__all__ = ["IngestWorker", "WorkerStats"]

log = logging.getLogger(__name__)

_STOP = object()
_LATENCY_BINS = 60_000


@dataclass(slots=True)
class WorkerStats:
    """Counters of a worker (monotonic, but the gauges)."""

    messages: int = 0
    """Messages stored and acknowledged (duplicates included)."""
    values_stored: int = 0
    dead_letters: int = 0
    events: int = 0
    duplicates: int = 0
    """Messages acknowledged without storing: the historian had their batch id."""
    commits: int = 0
    historian_retries: int = 0
    """Failed commits tried again (the historian was unreachable)."""
    bus_errors: int = 0
    out_of_order: int = 0
    """First deliveries of a key that came after a later batch of the same edge buffer
    (batch ids ``<buffer id>-<seq>``): 0 while the bus keeps each key in order."""
    state: str = "starting"
    """Gauge: ``running``, ``historian unavailable`` or ``bus unavailable``."""
    queue_depth: int = 0
    """Gauge: fetched groups waiting for the committer."""
    queue_max: int = 0
    held: int = 0
    """Gauge: messages fetched and not yet acknowledged."""
    lag_ms: float = 0.0
    """Gauge: from fetching a group to acknowledging it, of the last group."""
    backlog: ConsumerState | None = None
    """Gauge: the consumer group's backlog at the bus (refreshed every few seconds)."""
    _rate: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=32))

    def values_per_s(self) -> float:
        """Stored values per second over the last few commits."""
        if len(self._rate) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._rate[0], self._rate[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass(slots=True)
class _Item:
    delivery: Delivery
    message: Message | None
    error: str | None = None


@dataclass(slots=True)
class _Group:
    fetched_at: float
    items: list[_Item]


def _rows(group: _Group) -> int:
    """Readings in the decoded messages of ``group``."""
    return sum(len(i.message.raw) for i in group.items if i.message and i.message.raw)


def _transient(exc: BaseException) -> bool:
    """Whether a historian failure is the server being away (worth retrying as is)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout | OSError
        ):
            return True
        if isinstance(seen, psycopg.Error) and getattr(seen, "sqlstate", None) in (
            "57P01",  # admin_shutdown
            "57P02",  # crash_shutdown
            "57P03",  # cannot_connect_now (starting up, shutting down)
            "08006",
            "08003",
            "08000",
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class IngestWorker:
    """One member of the consumer group of ``consumer`` (see the module docstring).

    ``factory`` gives the bindings (its signals are registered in ``historian`` on
    :meth:`run`); ``observers`` are told every committed batch of readings, as the
    embedded pipeline's are.
    """

    def __init__(
        self,
        factory: Factory,
        historian: Historian,
        consumer: Consumer,
        *,
        fetch_messages: int = 64,
        fetch_timeout: float = 1.0,
        max_queue: int = 4,
        max_commit_rows: int = 500_000,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        state_interval: float = 2.0,
        touch_interval: float = 10.0,
        observers: Sequence[Observer] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.factory = factory
        self.historian = historian
        self.consumer = consumer
        self.fetch_messages = fetch_messages
        self.fetch_timeout = fetch_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.state_interval = state_interval
        self.max_commit_rows = max_commit_rows
        self.touch_interval = touch_interval
        self.observers = list(observers)
        self.stats = WorkerStats(queue_max=max_queue)
        self.mapper = Mapper({})
        self._queue: asyncio.Queue[_Group | object] = asyncio.Queue(max_queue)
        self._stopping = asyncio.Event()
        self._last_seq: dict[tuple[str, str], int] = {}
        self._held: dict[int, Delivery] = {}
        self._latency = np.zeros(_LATENCY_BINS + 1, np.int64)
        self._rng = rng or random.Random()

    def take_latency(self) -> list[tuple[int, int]]:
        """``(ms, count)`` of the readings committed since the last call: the time from
        their timestamp to the commit, in 1 ms bins (the last bin: a minute or more)."""
        hist, self._latency = self._latency, np.zeros(_LATENCY_BINS + 1, np.int64)
        nonzero = np.flatnonzero(hist)
        return [(int(ms), int(hist[ms])) for ms in nonzero]

    def backoff_delay(self, attempt: int) -> float:
        """The delay after the ``attempt``-th consecutive failure (1, 2, …), jittered."""
        base = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt - 1, 62))
        return base / 2 + self._rng.uniform(0.0, base / 2)

    def stop(self) -> None:
        """Stop fetching; :meth:`run` returns once what was fetched is stored (or held)."""
        self._stopping.set()

    async def setup(self) -> None:
        """Register the factory's signals and build the mapper from its bindings."""
        from shopfloor.runtime import signal_infos

        ids = await self.historian.register_signals(signal_infos(self.factory))
        routes: dict[tuple[str, str], Route] = {}
        for (conn_name, addr), sig in self.factory.bindings().items():
            b = sig.binding
            assert b is not None
            routes[(conn_name, addr)] = Route(ids[sig.path], sig.data_type, b.scale, b.offset)
        self.mapper = Mapper(routes)

    async def run(self) -> None:
        """Set up (retrying while the historian is away), then work until :meth:`stop`."""
        attempt = 0
        while True:
            try:
                await self.setup()
                break
            except HistorianError as exc:
                if not _transient(exc):
                    raise
                attempt += 1
                self.stats.state = "historian unavailable"
                await asyncio.sleep(self.backoff_delay(attempt))
        self.stats.state = "running"
        async with asyncio.TaskGroup() as tg:
            fetcher = tg.create_task(self._fetch_loop(), name="worker-fetcher")
            tg.create_task(self._commit_loop(), name="worker-committer")
            watcher = tg.create_task(self._watch_state(), name="worker-state")
            await fetcher
            watcher.cancel()

    # -- fetch ------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    deliveries = await self.consumer.fetch(self.fetch_messages, self.fetch_timeout)
                except BusError as exc:
                    failures += 1
                    self.stats.bus_errors += 1
                    if failures == 1:
                        log.warning("worker: the bus is unavailable (%s); retrying", exc)
                    self.stats.state = "bus unavailable"
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.backoff_delay(failures))
                    continue
                if failures:
                    log.warning("worker: the bus is back after %d failed fetch(es)", failures)
                    failures = 0
                    self.stats.state = "running"
                if not deliveries:
                    continue
                self._check_order(deliveries)
                group = _Group(time.monotonic(), [self._decode(d) for d in deliveries])
                self.stats.held += len(deliveries)
                for d in deliveries:
                    self._held[id(d)] = d
                await self._queue.put(group)
                self.stats.queue_depth = self._queue.qsize()
        finally:
            await self._queue.put(_STOP)

    def _check_order(self, deliveries: list[Delivery]) -> None:
        """Count first deliveries that come after a later seq of the same buffer and key."""
        for d in deliveries:
            origin, _, seq = d.batch_id.rpartition("-")
            if not seq.isdigit() or d.deliveries > 1:
                continue
            last = self._last_seq.get((d.key, origin), -1)
            if int(seq) <= last:
                self.stats.out_of_order += 1
            else:
                self._last_seq[(d.key, origin)] = int(seq)

    @staticmethod
    def _decode(delivery: Delivery) -> _Item:
        try:
            return _Item(delivery, decode(delivery.payload))
        except BatchError as exc:
            return _Item(delivery, None, str(exc))

    async def _watch_state(self) -> None:
        """Refresh the backlog gauge; keep the bus from handing held messages to others.

        Messages wait in the queue and in a commit for as long as the historian takes: every
        ``touch_interval`` seconds the bus is told they are still being worked on.
        """
        touched = time.monotonic()
        while True:
            self.stats.backlog = await self.consumer.state()
            if time.monotonic() - touched >= self.touch_interval:
                for delivery in list(self._held.values()):
                    with contextlib.suppress(BusError):
                        await delivery.in_progress()
                touched = time.monotonic()
            await asyncio.sleep(self.state_interval)

    # -- commit -----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is _STOP:
                return
            assert isinstance(first, _Group)
            group = first
            # what queued up meanwhile goes into the same transaction: a slow historian
            # gets larger commits, which cost it less per value (rollups and latest values
            # are merged once per signal and commit)
            while self._queue.qsize() and _rows(group) < self.max_commit_rows:
                more = self._queue.get_nowait()
                if more is _STOP:
                    stop = True
                    break
                assert isinstance(more, _Group)
                group = _Group(group.fetched_at, group.items + more.items)
            self.stats.queue_depth = self._queue.qsize()
            await self._store_group(group)
            acked = 0
            for item in group.items:
                try:
                    await item.delivery.ack()
                    acked += 1
                except BusError as exc:  # stored: a redelivery is recognised as a duplicate
                    log.warning("worker: %s", exc)
            self.stats.held -= len(group.items)
            for item in group.items:
                self._held.pop(id(item.delivery), None)
            self.stats.messages += acked
            self.stats.lag_ms = (time.monotonic() - group.fetched_at) * 1000.0

    async def _store_group(self, group: _Group) -> None:
        """Store every message of ``group`` (or its dead letter), retrying while away."""
        attempt = 0
        pending = list(group.items)
        while pending:
            try:
                pending = await self._store(pending)
                if attempt:
                    log.warning("worker: the historian is back after %d attempt(s)", attempt)
                    self.stats.state = "running"
                attempt = 0
            except HistorianError as exc:
                if not _transient(exc):
                    if len(pending) == 1:
                        await self._store_as_dead_letter(pending[0], str(exc))
                        return
                    # narrow the failure down: one message at a time
                    for item in pending:
                        await self._store_group(_Group(group.fetched_at, [item]))
                    return
                attempt += 1
                self.stats.historian_retries += 1
                self.stats.state = "historian unavailable"
                if attempt == 1:
                    log.warning("worker: the historian is unavailable (%s); retrying", exc)
                await asyncio.sleep(self.backoff_delay(attempt))

    async def _store(self, items: list[_Item]) -> list[_Item]:
        """One attempt: store what is not stored yet; returns what still needs storing."""
        h = self.historian
        ids = [i.delivery.batch_id for i in items]
        known = await h.stored_batches(ids)
        todo: list[_Item] = []
        for item in items:  # a message redelivered while its first delivery waited: once
            if item.delivery.batch_id not in known:
                known.add(item.delivery.batch_id)
                todo.append(item)
        self.stats.duplicates += len(items) - len(todo)
        if not todo:
            return []
        letters = DeadLetterBuilder()
        raws: list[RawBatch] = []
        points: list[pa.Table] = []
        tables: list[pa.Table] = []
        for item in todo:
            m = item.message
            if m is None:
                letters.add(
                    "bus",
                    f"undecodable bus message: {item.error}",
                    location=f"{item.delivery.key} batch {item.delivery.batch_id}",
                    payload=item.delivery.payload,
                )
            elif m.kind == "readings":
                assert m.raw is not None
                raws.append(m.raw)
                if m.points is not None:
                    points.append(m.points)
            elif m.kind == "events":
                assert m.table is not None
                await h.append_events(m.table)  # idempotent: an event id is replaced
                self.stats.events += m.table.num_rows
            else:
                assert m.table is not None
                tables.append(m.table)
        readings = ReadingBatch.empty()
        if raws:
            raw = RawBatch(pa.concat_tables([r.table for r in raws]))
            await self._resolve(raw, points)
            result = self.mapper.map(raw)
            readings = result.readings
            if result.rejected:
                tables.append(result.dead_letters)
        if len(letters):
            tables.append(letters.build())
        dead = pa.concat_tables([t.cast(DEAD_LETTER_SCHEMA) for t in tables]) if tables else None
        stored = await h.append_once([i.delivery.batch_id for i in todo], readings, dead)
        if not stored:  # another worker stored some of them meanwhile: look again
            return todo
        s = self.stats
        s.values_stored += len(readings)
        s.dead_letters += 0 if dead is None else dead.num_rows
        s.commits += 1
        s._rate.append((time.monotonic(), s.values_stored))
        if len(readings):
            ts = readings.table.column("ts").cast(pa.int64()).to_numpy()
            late = np.clip((time.time_ns() // 1000 - ts) // 1000, 0, _LATENCY_BINS)
            self._latency += np.bincount(late, minlength=_LATENCY_BINS + 1)
        if len(readings):
            for observer in self.observers:
                try:
                    await observer(readings)
                except Exception:
                    log.exception("observer %r failed on %d readings", observer, len(readings))
        return []

    async def _resolve(self, raw: RawBatch, points: list[pa.Table]) -> None:
        """Create the signals the edges named for addresses the mapper does not know."""
        unknown = self.mapper.unknown(raw)
        if not unknown or not points:
            return
        table = pa.concat_tables(points) if len(points) > 1 else points[0]
        sep = "\x1f"
        keys = pc.binary_join_element_wise(table.column("source"), table.column("address"), sep)
        wanted = pa.array([f"{s}{sep}{a}" for s, a in unknown], pa.string())
        idx = pc.index_in(wanted, value_set=keys.combine_chunks())
        found = idx.filter(idx.is_valid())
        if len(found) == 0:
            return
        rows = table.take(found).to_pylist()
        infos = {
            r["path"]: SignalInfo(r["path"], r["data_type"], r["unit"], r["kind"]) for r in rows
        }
        ids = await self.historian.register_signals(list(infos.values()))
        routes = {(r["source"], r["address"]): Route(ids[r["path"]], r["data_type"]) for r in rows}
        self.mapper = self.mapper.with_routes(routes)

    async def _store_as_dead_letter(self, item: _Item, reason: str) -> None:
        """Store a message the historian refuses as one dead letter (retrying while away)."""
        letters = DeadLetterBuilder()
        letters.add(
            "bus",
            f"the historian refused the batch: {reason}",
            location=f"{item.delivery.key} batch {item.delivery.batch_id}",
            payload=item.delivery.payload,
        )
        table = letters.build()
        attempt = 0
        while True:
            try:
                await self.historian.append_once(
                    [item.delivery.batch_id], ReadingBatch.empty(), table
                )
                self.stats.dead_letters += 1
                log.warning(
                    "worker: batch %s became a dead letter: %s", item.delivery.batch_id, reason
                )
                return
            except HistorianError as exc:
                if not _transient(exc):
                    raise
                attempt += 1
                self.stats.historian_retries += 1
                await asyncio.sleep(self.backoff_delay(attempt))

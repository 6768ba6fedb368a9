"""The embedded ingest pipeline: connectors → bounded queue → mapper → historian.

Connectors hand raw batches to :meth:`Pipeline.sink`, which waits when the queue is full:
a slow historian slows intake instead of growing memory. One writer task drains the
queue, coalesces batches up to ``flush_rows`` or ``flush_interval`` seconds, maps them and
appends readings and dead letters to the historian. When batches are still queued at that
point (the writer is behind) it takes them too, up to ``max_rows``: commits grow under load,
and each one's fixed costs (the mapper's lookup table, the historian's transaction) are
spread over more rows, so the writer catches up instead of falling further behind.
:meth:`Pipeline.close` flushes everything accepted before it returns.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa

from shopfloor.edge.batch import RawBatch, ReadingBatch
from shopfloor.edge.mapper import Mapper, Route

if TYPE_CHECKING:  # the historian imports the edge's batch types
    from shopfloor.historian.base import Historian

__all__ = ["WRITE_BUCKETS_S", "Observer", "Pipeline", "PipelineStats", "Resolver"]

Resolver = Callable[[list[tuple[str, str]]], Awaitable[Mapping[tuple[str, str], Route]]]
"""Turns unknown ``(source, address)`` keys into routes (signals created on the fly); keys it
does not resolve become dead letters as usual."""

Observer = Callable[[ReadingBatch], Awaitable[None]]
"""Told every batch of readings right after the historian committed it (UNS republisher,
alarm and anomaly engines). A failing observer is logged; it never stops the ingest."""

log = logging.getLogger(__name__)

WRITE_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the historian write-time histogram of :class:`PipelineStats`."""


@dataclass(slots=True)
class PipelineStats:
    """Counters of the pipeline since it started (all monotonic but the gauges)."""

    values_in: int = 0
    values_stored: int = 0
    dead_letters: int = 0
    commits: int = 0
    queue_depth: int = 0
    lag_ms: float = 0.0
    """Time from a batch's arrival to its historian commit, of the last commit."""
    write_counts: list[int] = field(default_factory=lambda: [0] * (len(WRITE_BUCKETS_S) + 1))
    """Historian appends per write-time bucket (:data:`WRITE_BUCKETS_S`, then the rest)."""
    write_seconds: float = 0.0
    """Total time spent in historian appends."""
    _rate: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=32))

    def observe_write(self, seconds: float) -> None:
        """Count one historian append that took ``seconds``."""
        self.write_counts[bisect.bisect_left(WRITE_BUCKETS_S, seconds)] += 1
        self.write_seconds += seconds

    def values_per_s(self) -> float:
        """Stored values per second over the last few seconds."""
        if len(self._rate) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._rate[0], self._rate[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


_STOP = object()


def _take(item: object, pending: list[tuple[float, RawBatch]]) -> int:
    """Add a queued ``(arrival, batch)`` to ``pending``; its row count."""
    assert isinstance(item, tuple)
    pending.append(item)
    return len(item[1])


def _concat(batches: list[RawBatch]) -> RawBatch:
    """One raw batch of ``batches``, keeping the address ids when they share one pool."""
    if len(batches) == 1:
        return batches[0]
    table = pa.concat_tables([b.table for b in batches])
    pool = batches[0].address_pool
    if pool is None or any(b.address_pool is not pool for b in batches):
        return RawBatch(table)
    ids = [b.address_ids for b in batches]
    return RawBatch(table, np.concatenate([i for i in ids if i is not None]), pool)


class Pipeline:
    """Moves raw batches from connectors into the historian (see the module docstring)."""

    def __init__(
        self,
        historian: Historian,
        mapper: Mapper,
        *,
        max_queue: int = 256,
        flush_rows: int = 100_000,
        flush_interval: float = 0.25,
        max_rows: int | None = None,
        resolver: Resolver | None = None,
        observers: list[Observer] | None = None,
    ) -> None:
        self.historian = historian
        self.mapper = mapper
        self.resolver = resolver
        self.observers: list[Observer] = list(observers or [])
        """Called in order with each committed :class:`ReadingBatch`; append to add one."""
        self.flush_rows = flush_rows
        self.flush_interval = flush_interval
        self.max_rows = max(flush_rows, max_rows if max_rows is not None else 4 * flush_rows)
        """The most rows one commit takes when batches queue up (default ``4 * flush_rows``)."""
        self.stats = PipelineStats()
        self._queue: asyncio.Queue[tuple[float, RawBatch] | object] = asyncio.Queue(max_queue)
        self._closed = False

    async def sink(self, batch: RawBatch) -> None:
        """Accept a batch from a connector; waits while the queue is full."""
        if self._closed:
            raise RuntimeError("pipeline is closed")
        if len(batch) == 0:
            return
        await self._queue.put((time.monotonic(), batch))
        self.stats.values_in += len(batch)
        self.stats.queue_depth = self._queue.qsize()

    async def run(self) -> None:
        """Drain the queue into the historian until :meth:`close` is called."""
        pending: list[tuple[float, RawBatch]] = []
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
                rows += _take(item, pending)
            while not stop and rows < self.max_rows and not self._queue.empty():
                # behind: what is queued already goes into this commit too
                item = self._queue.get_nowait()
                if item is _STOP:
                    stop = True
                    break
                rows += _take(item, pending)
            if pending:
                await self._commit(pending)
                pending, rows = [], 0
            self.stats.queue_depth = self._queue.qsize()

    async def _commit(self, pending: list[tuple[float, RawBatch]]) -> None:
        raw = _concat([b for _, b in pending])
        result = self.mapper.map(raw)
        if self.resolver is not None and result.unknown:
            found = await self.resolver(list(result.unknown))
            if found:
                self.mapper = self.mapper.with_routes(found)
                result = self.mapper.map(raw)
        if len(result.readings):
            began = time.perf_counter()
            await self.historian.append(result.readings)
            self.stats.observe_write(time.perf_counter() - began)
        if result.rejected:
            await self.historian.append_dead_letters(result.dead_letters)
            log.warning("%d reading(s) went to the dead letters", result.rejected)
        now = time.monotonic()
        s = self.stats
        s.values_stored += len(result.readings)
        s.dead_letters += result.rejected
        s.commits += 1
        s.lag_ms = (now - pending[0][0]) * 1000.0
        s._rate.append((now, s.values_stored))
        if len(result.readings):
            await self._notify(result.readings)

    async def _notify(self, readings: ReadingBatch) -> None:
        for observer in self.observers:
            try:
                await observer(readings)
            except Exception:
                log.exception(
                    "observer %r failed on a batch of %d readings", observer, len(readings)
                )

    async def close(self) -> None:
        """Stop accepting, then wait until everything accepted is in the historian.

        The writer task (:meth:`run`) must be running; it returns after the flush.
        """
        self._closed = True
        await self._queue.put(_STOP)

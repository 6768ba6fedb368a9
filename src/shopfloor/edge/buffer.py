"""Store and forward at the edge: a durable on-disk queue between the connectors and the bus.

An :class:`EdgeBuffer` keeps opaque payloads (typically Arrow IPC batches of 50–500 KB)
in one SQLite file in WAL mode until the bus has taken them. Every payload gets a
sequence number (``seq``) that only ever grows — across restarts too, and after the
buffer ran empty — so that ``(buffer_id, seq)`` names a payload uniquely and the core can
drop a replayed duplicate. A :class:`Forwarder` moves payloads from the buffer to the bus:
it peeks a batch, hands it to ``send``, acknowledges it only after ``send`` returned, and
retries with capped, jittered exponential backoff while the bus is away. Delivery is
*at least once*, in ``seq`` order: a crash between ``send`` and the acknowledgement
replays that batch after the restart.

**Durability.** :meth:`EdgeBuffer.put` returns after its transaction committed. With the
default ``synchronous="normal"`` the commit is in the WAL file (in the operating system's
page cache) and survives a crash or ``kill -9`` of the process; a *power loss* or kernel
crash may lose the last transactions before the next checkpoint (the file stays
consistent). ``synchronous="full"`` fsyncs the WAL on every commit: durable against power
loss too, at the price of one fsync per put (about the disk's flush latency: on an SSD
0.1–2 ms, on an SD card or cheap eMMC of an edge box 10–50 ms).

**Bound and overflow.** ``max_bytes`` bounds the payload bytes waiting in the buffer (the
file is somewhat larger: SQLite pages, and a WAL of up to 64 MB between checkpoints; freed
pages are reused, the file does not shrink). When a put would exceed it, ``overflow``
decides:

* ``"drop_oldest"`` (the default) deletes the oldest waiting payloads until the new one
  fits. This is what a plant wants from an edge that outlives its uplink: the newest data
  is the most valuable (the current state of the lines, the running shift's counts and
  alarms), counters are cumulative so their totals survive the loss of old samples, and
  the connectors keep reading. Blocking would not save the old data either: it only moves
  the loss upstream, where it is invisible — an OPC UA server discards its monitored-item
  queues, a Modbus poll is simply late, an MQTT broker drops the session's messages — and
  stalls everything live at the edge.
* ``"block"`` makes ``put`` wait until the forwarder has freed room: backpressure onto the
  connectors. Choose it where a gap is worse than a stall and the sources can hold their
  data themselves (a batch record that must be complete, a file importer that can
  pause).
* ``"reject"`` raises :class:`~shopfloor.errors.BufferFullError` at once, so that the
  caller can divert the payload elsewhere (a second disk, the dead-letter store).

A payload larger than ``max_bytes`` is refused with :class:`BufferFullError` under every
policy. Nothing is ever dropped silently: each loss is a row of the buffer's ``dropped``
table (seq range, count, bytes, reason ``overflow`` / ``rejected`` / ``too_large``, first
and last time), consecutive losses of one episode extend one row; the totals are the
:attr:`EdgeBuffer.dropped_count` and :attr:`EdgeBuffer.dropped_bytes` gauges (kept across
restarts), :meth:`EdgeBuffer.dropped_records` lists them, and a warning is logged when an
episode starts and then at most once a minute while it lasts. (A payload dropped while the
forwarder is sending it still arrives; it is counted as dropped all the same: the count
errs on the side of loss.)

Size the buffer for the longest outage to ride out: ``max_bytes`` ÷ the edge's payload
bytes per second, e.g. 1 GiB at 50 KB/s ≈ 5.8 hours — and below the free disk space: a full
disk makes puts fail with :class:`~shopfloor.errors.EdgeBufferError` before the policy
applies (opening warns when the disk cannot hold ``max_bytes``).

**Ownership.** The file is opened in SQLite's exclusive locking mode: one process owns a
buffer; a second one gets :class:`~shopfloor.errors.EdgeBufferError` naming the path (so
does a corrupt file, or an SQLite file that is not a buffer). ``kill -9`` releases the
lock. All SQLite work runs on one dedicated thread per buffer, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self, TypeVar

from shopfloor.edge._buffer_store import (
    POLICIES,
    SYNC,
    BufferItem,
    DropRecord,
    OverflowPolicy,
    Store,
    now_us,
)
from shopfloor.errors import BufferClosedError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BufferItem",
    "DropRecord",
    "EdgeBuffer",
    "EdgeBufferStats",
    "Forwarder",
    "ForwarderStats",
    "OverflowPolicy",
    "Payload",
    "SendBatch",
]

log = logging.getLogger(__name__)

Payload = bytes | bytearray | memoryview
"""What :meth:`EdgeBuffer.put` takes (a memoryview is copied); :meth:`~EdgeBuffer.peek`
gives ``bytes`` back."""

SendBatch = Callable[[list[BufferItem]], Awaitable[None]]
"""Delivers a batch to the bus; returns once the bus has it, raises when it could not."""

DEFAULT_MAX_BYTES: Final = 1 << 30
"""Default bound of the waiting payload bytes: 1 GiB."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class EdgeBufferStats:
    """A snapshot of an :class:`EdgeBuffer`'s gauges (for metrics and status views)."""

    pending_count: int
    pending_bytes: int
    max_bytes: int
    dropped_count: int
    dropped_bytes: int
    oldest_age_s: float
    last_seq: int


class EdgeBuffer:
    """A durable, bounded FIFO of ``(seq, key, payload)`` on disk (SQLite in WAL mode).

    ``path`` is the SQLite file (created with its folder when missing). ``max_bytes``
    bounds the waiting payload bytes; ``overflow`` says what a put does when they would
    exceed it: ``"drop_oldest"`` (default: the newest data matters most to a running plant;
    every drop is recorded), ``"block"`` (backpressure: the put waits) or ``"reject"``
    (raises :class:`~shopfloor.errors.BufferFullError`); see the module docstring for why
    and for the durability of ``synchronous="normal"`` against ``"full"``. ``lock_timeout``
    is how long opening waits for a file another process holds.

    Use it as an async context manager (or :meth:`open` / :meth:`close`). One coroutine
    should forward (a :class:`Forwarder`); any number may put.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        overflow: OverflowPolicy = "drop_oldest",
        synchronous: Literal["normal", "full"] = "normal",
        lock_timeout: float = 5.0,
    ) -> None:
        if overflow not in POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(POLICIES)}, not {overflow!r}")
        if synchronous not in SYNC:
            raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self._store = Store(Path(path), max_bytes, overflow, synchronous, lock_timeout)
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._closed = True
        self._forwarding = False

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> Self:
        """Open (or create) the file, check it is a buffer, load its gauges; returns self."""
        if not self._closed:
            return self
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edge-buffer")
        try:
            await self._loop.run_in_executor(self._executor, self._store.open)
        except BaseException:
            # cancelled while the thread still opens: close right after it (no lock held on)
            self._executor.submit(self._store.close)
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._closed = False
        if self._store.pending_count:
            log.info(
                "edge buffer %s: %d payload(s), %d bytes waiting from before (seq %d…)",
                self._store.path,
                self._store.pending_count,
                self._store.pending_bytes,
                self._store.last_seq - self._store.pending_count + 1,
            )
        return self

    async def close(self) -> None:
        """Finish the operations under way, checkpoint and close the file.

        Waiting :meth:`wait_nonempty` and blocked :meth:`put` calls raise
        :class:`~shopfloor.errors.BufferClosedError`. Idempotent.
        """
        if self._closed or self._executor is None or self._loop is None:
            return
        self._closed = True
        self._closing.set()
        self._notify()
        executor, self._executor = self._executor, None
        try:
            await self._loop.run_in_executor(executor, self._store.close)
        finally:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the thread -------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake everything waiting for a change (runs on the event loop)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _call(self, fn: Callable[..., _T], *args: object, changes: bool = True) -> _T:
        """Run ``fn`` on the buffer's thread; then wake waiters if it may have changed the
        queue (a result of ``None`` means it did not: a put that found the buffer full)."""
        if self._closed or self._executor is None or self._loop is None:
            raise BufferClosedError(f"edge buffer {self._store.path} is closed")
        loop = self._loop

        def notify() -> None:  # from the thread: also when the caller was cancelled
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(self._notify)

        def job() -> _T:
            try:
                result = fn(*args)
            except BaseException:
                notify()
                raise
            if changes and result is not None:
                notify()
            return result

        return await loop.run_in_executor(self._executor, job)

    # -- the queue --------------------------------------------------------------------

    async def put(self, payload: Payload, key: str) -> int:
        """Store one payload under ``key``; returns its seq once it is durable (see above).

        When full: drops the oldest, waits, or raises
        :class:`~shopfloor.errors.BufferFullError`, as ``overflow`` says. A put cancelled
        while its transaction runs may still store the payload.
        """
        return (await self.put_many([(payload, key)]))[0]

    async def put_many(self, items: Sequence[tuple[Payload, str]]) -> list[int]:
        """Store ``(payload, key)`` pairs in one transaction (all or none); their seqs, in order."""
        rows: list[tuple[bytes | bytearray, str]] = []
        for i, (payload, key) in enumerate(items):
            if not isinstance(payload, bytes | bytearray | memoryview):
                raise TypeError(f"payload {i} is {type(payload).__name__}, not bytes")
            if not isinstance(key, str):
                raise TypeError(f"key {i} is {type(key).__name__}, not str")
            rows.append((bytes(payload) if isinstance(payload, memoryview) else payload, key))
        if not rows:
            return []
        while True:
            changed = self._changed  # taken before the attempt: no wake-up is missed
            seqs = await self._call(self._store.insert, rows)
            if seqs is not None:
                return seqs
            await changed.wait()  # full and blocking: until an ack frees room (or close)

    async def peek(self, n: int, *, max_bytes: int | None = None) -> list[BufferItem]:
        """Up to ``n`` of the oldest waiting payloads as ``(seq, key, payload)``, in seq order.

        Nothing is removed. With ``max_bytes`` the batch stops before the payload that
        would take it over that many bytes (but always holds at least one).
        """
        if n <= 0:
            return []
        return await self._call(self._store.peek, n, max_bytes, changes=False)

    async def ack(self, up_to_seq: int) -> int:
        """Delete every waiting payload with seq ≤ ``up_to_seq``; returns how many.

        Acknowledging a seq already gone is a no-op; one that was never given out raises
        :class:`ValueError`.
        """
        return await self._call(self._store.ack, up_to_seq)

    async def wait_nonempty(self) -> None:
        """Return as soon as something waits in the buffer (at once when it does already).

        Raises :class:`~shopfloor.errors.BufferClosedError` when the buffer closes first.
        """
        while True:
            if self._closed:
                raise BufferClosedError(f"edge buffer {self._store.path} is closed")
            if self._store.pending_count > 0:
                return
            await self._changed.wait()

    async def dropped_records(self, limit: int = 100) -> list[DropRecord]:
        """The ``limit`` most recent episodes of dropped payloads, oldest first."""
        return await self._call(self._store.dropped_records, limit, changes=False)

    # -- gauges -----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The buffer's SQLite file."""
        return self._store.path

    @property
    def buffer_id(self) -> str:
        """A random id given to the file when it was created: ``(buffer_id, seq)`` is unique."""
        return self._store.buffer_id

    @property
    def max_bytes(self) -> int:
        """The bound of :attr:`pending_bytes`."""
        return self._store.max_bytes

    @property
    def overflow(self) -> OverflowPolicy:
        """The overflow policy."""
        return self._store.overflow

    @property
    def is_open(self) -> bool:
        """Whether the buffer is open."""
        return not self._closed

    @property
    def pending_count(self) -> int:
        """Payloads waiting (stored, not yet acknowledged, not dropped)."""
        return self._store.pending_count

    @property
    def pending_bytes(self) -> int:
        """Bytes of the waiting payloads (at most :attr:`max_bytes`)."""
        return self._store.pending_bytes

    @property
    def dropped_count(self) -> int:
        """Payloads ever lost to the overflow policy (kept across restarts)."""
        return self._store.dropped_count

    @property
    def dropped_bytes(self) -> int:
        """Bytes ever lost to the overflow policy (kept across restarts)."""
        return self._store.dropped_bytes

    @property
    def oldest_age_s(self) -> float:
        """Seconds the oldest waiting payload has waited (0.0 when empty)."""
        oldest = self._store.oldest_us
        if oldest is None or self._store.pending_count == 0:
            return 0.0
        return max(0.0, (now_us() - oldest) / 1e6)

    @property
    def last_seq(self) -> int:
        """The highest seq given out so far (0 for a new buffer)."""
        return self._store.last_seq

    def stats(self) -> EdgeBufferStats:
        """A snapshot of the gauges."""
        s = self._store
        return EdgeBufferStats(
            s.pending_count,
            s.pending_bytes,
            s.max_bytes,
            s.dropped_count,
            s.dropped_bytes,
            self.oldest_age_s,
            s.last_seq,
        )


@dataclass(slots=True)
class ForwarderStats:
    """Counters of a :class:`Forwarder` (monotonic, but the last three gauges)."""

    batches_sent: int = 0
    items_sent: int = 0
    bytes_sent: int = 0
    send_failures: int = 0
    retrying: bool = False
    """Whether the last send failed and the forwarder is backing off."""
    backoff_s: float = 0.0
    """The last backoff delay (0.0 while sends succeed)."""
    last_error: str | None = None


class Forwarder:
    """Moves payloads from an :class:`EdgeBuffer` to the bus, in order, losing none.

    :meth:`run` peeks a batch of up to ``batch_size`` payloads and ``batch_bytes`` bytes,
    awaits ``send(batch)``, and acknowledges the batch when ``send`` returned. When
    ``send`` raises, the batch stays and is offered again (re-read: the overflow policy
    may have dropped its oldest part meanwhile) after a backoff that doubles from
    ``backoff_initial`` up to ``backoff_max`` seconds, each delay drawn uniformly from its
    upper half (jitter, so that many edges do not return in step). One line is logged when
    sends start failing and one when they succeed again.
    """

    def __init__(
        self,
        buffer: EdgeBuffer,
        *,
        batch_size: int = 64,
        batch_bytes: int = 4 << 20,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if batch_size <= 0 or batch_bytes <= 0:
            raise ValueError("batch_size and batch_bytes must be positive")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self.buffer = buffer
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = ForwarderStats()
        self._rng = rng or random.Random()

    def backoff_delay(self, attempt: int) -> float:
        """The delay after the ``attempt``-th consecutive failure (1, 2, …)."""
        base = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt - 1, 62))
        return base / 2 + self._rng.uniform(0.0, base / 2)

    async def run(self, send: SendBatch, *, until_empty: bool = False) -> None:
        """Forward until cancelled or the buffer closes (or, with ``until_empty``, it is empty).

        Delivery is at least once: cancelled during ``send``, or killed between ``send``
        and the acknowledgement, the batch is offered again next time. Only one forwarder
        may run on a buffer at a time.
        """
        buffer = self.buffer
        if buffer._forwarding:
            raise RuntimeError(f"edge buffer {buffer.path} already has a running forwarder")
        buffer._forwarding = True
        failures = 0
        failing_since = 0.0
        try:
            while True:
                if until_empty and buffer.pending_count == 0:
                    return
                await buffer.wait_nonempty()
                batch = await buffer.peek(self.batch_size, max_bytes=self.batch_bytes)
                if not batch:
                    continue
                try:
                    await send(batch)
                except Exception as exc:  # any failure of the bus: keep the batch, back off
                    failures += 1
                    self.stats.send_failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    delay = self.backoff_delay(failures)
                    self.stats.retrying, self.stats.backoff_s = True, delay
                    if failures == 1:
                        failing_since = time.monotonic()
                        log.warning(
                            "edge buffer %s: sending failed (%s); buffering, retrying with "
                            "backoff (%d payload(s) waiting)",
                            buffer.path,
                            self.stats.last_error,
                            buffer.pending_count,
                        )
                    with contextlib.suppress(TimeoutError):  # ends early when the buffer closes
                        await asyncio.wait_for(buffer._closing.wait(), delay)
                    continue
                if failures:
                    log.warning(
                        "edge buffer %s: sending works again after %d failed attempt(s) in "
                        "%.1f s; replaying %d payload(s)",
                        buffer.path,
                        failures,
                        time.monotonic() - failing_since,
                        buffer.pending_count,
                    )
                    failures = 0
                    self.stats.retrying, self.stats.backoff_s = False, 0.0
                await buffer.ack(batch[-1][0])
                self.stats.batches_sent += 1
                self.stats.items_sent += len(batch)
                self.stats.bytes_sent += sum(len(p) for _, _, p in batch)
        except BufferClosedError:
            return
        finally:
            buffer._forwarding = False

"""The historian interface every storage engine implements.

The historian keeps one narrow sample table ``(signal_id, ts, quality, v_float, v_int,
v_bool, v_str)`` written in Arrow batches, a signal catalog that gives every signal path a
stable integer id, per-minute and per-hour rollups, an events table and a dead-letter
table. Every query returns an Arrow table. Engines live in their own modules (``duckdb.py``
now, ``postgres.py`` later) and are chosen by URL with
:func:`shopfloor.historian.open_historian`.

Aggregates (downsampling, rollups) consider samples whose quality is not bad and whose
value is not null; ``count`` counts exactly those samples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Literal, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.edge.batch import ReadingBatch
from shopfloor.edge.deadletter import DEAD_LETTER_SCHEMA
from shopfloor.edge.events import EVENT_SCHEMA

__all__ = [
    "CHANGES_COLUMNS",
    "DEAD_LETTER_SCHEMA",
    "DOWNSAMPLE_COLUMNS",
    "EVENT_SCHEMA",
    "ROLLUP_COLUMNS",
    "DataType",
    "Granularity",
    "Historian",
    "RetentionResult",
    "SignalInfo",
    "merge_runs",
    "run_length_encode",
]

DataType = Literal["float", "int", "bool", "string", "json"]
"""The data types a signal can have; ``json`` values are stored as text."""

DOWNSAMPLE_COLUMNS: tuple[str, ...] = ("bucket", "first", "last", "min", "max", "avg", "count")
"""Columns of :meth:`Historian.downsample` results, in order."""

CHANGES_COLUMNS: tuple[str, ...] = ("ts", "last_ts", "quality", "value", "count")
"""Columns of :meth:`Historian.read_changes` results, in order."""

Granularity = Literal["1m", "1h"]
"""The rollup granularities: per minute and per hour (epoch-aligned buckets)."""

ROLLUP_COLUMNS: tuple[str, ...] = (
    "bucket",
    "first_ts",
    "first",
    "last_ts",
    "last",
    "min",
    "max",
    "avg",
    "count",
)
"""Columns of :meth:`Historian.rollups` results, in order."""


@dataclass(frozen=True, slots=True)
class SignalInfo:
    """What the historian needs to know of a signal to store it."""

    path: str
    data_type: DataType
    unit: str | None = None
    kind: str = "measurement"


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What a retention run removed."""

    samples_deleted: int
    rollups_deleted: int
    events_deleted: int
    dead_letters_deleted: int


class Historian(ABC):
    """A time-series store for readings, events and dead letters.

    Use as an async context manager; all methods are coroutines so that engines talking to
    a server never block the event loop (embedded engines run their work in a thread).
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema."""

    @abstractmethod
    async def close(self) -> None:
        """Flush and release every resource."""

    @abstractmethod
    async def register_signals(self, signals: Sequence[SignalInfo]) -> dict[str, int]:
        """Add signals to the catalog (idempotent); return ``path -> signal_id`` for them.

        A signal already registered with another data type raises ``HistorianError``.
        """

    @abstractmethod
    async def signals(self) -> pa.Table:
        """The catalog: ``signal_id, path, data_type, unit, kind``."""

    @abstractmethod
    async def append(self, batch: ReadingBatch) -> int:
        """Store a batch (and update rollups) atomically; return the number of rows."""

    async def append_once(
        self,
        batch_ids: Sequence[str],
        batch: ReadingBatch,
        dead_letters: pa.Table | None = None,
    ) -> bool:
        """Store ``batch`` and ``dead_letters`` once: the idempotent append of the bus workers.

        The readings, the dead letters and the ids in ``batch_ids`` (the batches they came
        from; at least one) are stored in one transaction. When one of the ids is recorded
        already, nothing is stored and the result is False: a batch delivered again after a
        worker died between the commit and its acknowledgement is not stored twice. Use
        :meth:`stored_batches` to find out which ids to leave out. The ids are kept until a
        retention run deletes those recorded before its cut.
        """
        raise NotImplementedError(f"{type(self).__name__} has no idempotent append")

    async def stored_batches(self, batch_ids: Sequence[str]) -> set[str]:
        """Which of ``batch_ids`` :meth:`append_once` has stored."""
        raise NotImplementedError(f"{type(self).__name__} has no idempotent append")

    @abstractmethod
    async def read_raw(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        *,
        limit: int | None = None,
    ) -> pa.Table:
        """Samples of one signal with ``start <= ts < end`` in time order.

        Columns ``ts, quality, value`` where ``value`` has the signal's own type.
        """

    async def read_changes(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        *,
        max_gap: timedelta | None = None,
    ) -> pa.Table:
        """The samples of one signal in ``[start, end)`` run-length encoded.

        Consecutive samples (ordered by timestamp, equal timestamps by quality, then value,
        nulls last) with the same value and quality form a run; a run also ends where two
        samples lie more than ``max_gap`` apart. One row per run,
        in time order, with :data:`CHANGES_COLUMNS`: ``ts`` and ``last_ts`` (its first and
        last sample), ``quality``, ``value`` (the signal's type) and ``count`` (samples).
        For sample-and-hold signals (states, counters) nothing is lost, and a signal
        sampled every second that changes now and then shrinks to its changes.

        This implementation encodes :meth:`read_raw`'s rows; engines may do it in SQL.
        """
        return run_length_encode(await self.read_raw(signal, start, end), max_gap)

    @abstractmethod
    async def downsample(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        bucket: timedelta,
    ) -> pa.Table:
        """Aggregate one numeric (float, int, bool) signal into buckets of width ``bucket``.

        Buckets are aligned to the Unix epoch and clipped to ``[start, end)``; only
        non-empty buckets are returned, in order, with :data:`DOWNSAMPLE_COLUMNS`.
        ``first``/``last``/``min``/``max`` have the signal's type (bools as 0/1 floats),
        ``avg`` is a double.
        """

    @abstractmethod
    async def rollups(
        self,
        signal: str | int,
        granularity: Granularity,
        start: datetime,
        end: datetime,
    ) -> pa.Table:
        """The per-minute (``"1m"``) or per-hour (``"1h"``) rollups of one numeric signal.

        Rollups are maintained as data is appended (late and out-of-order data included)
        and summarise every sample of their bucket that aggregates consider. Returns the
        non-empty buckets whose start lies in ``[start, end)``, in order, with
        :data:`ROLLUP_COLUMNS`: ``bucket`` (its start), ``first_ts``/``first`` and
        ``last_ts``/``last`` (the earliest and latest sample), ``min``, ``max`` (the
        signal's type, bools as 0/1 floats), ``avg`` (double) and ``count``. An unknown
        granularity or a string signal raises ``HistorianError``.
        """

    @abstractmethod
    async def latest(self, signals: Sequence[str | int] | None = None) -> pa.Table:
        """The newest sample of each signal (all signals when ``None``).

        Columns ``signal_id, path, ts, quality, v_float, v_int, v_bool, v_str``.
        """

    @abstractmethod
    async def append_events(self, events: pa.Table) -> int:
        """Store events (:data:`EVENT_SCHEMA`); an existing ``event_id`` is replaced."""

    @abstractmethod
    async def read_events(
        self,
        start: datetime,
        end: datetime,
        *,
        asset_prefix: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Events overlapping ``[start, end)``, oldest first."""

    @abstractmethod
    async def append_dead_letters(self, letters: pa.Table) -> int:
        """Store dead letters (:data:`DEAD_LETTER_SCHEMA`)."""

    @abstractmethod
    async def read_dead_letters(
        self, since: datetime | None = None, *, limit: int | None = None
    ) -> pa.Table:
        """Dead letters received at or after ``since``, newest first."""

    @abstractmethod
    async def apply_retention(self, older_than: datetime) -> RetentionResult:
        """Delete samples, rollups, ended events and dead letters older than ``older_than``.

        Batch ids of :meth:`append_once` recorded before ``older_than`` go too.
        """


def run_length_encode(raw: pa.Table, max_gap: timedelta | None = None) -> pa.Table:
    """:meth:`Historian.read_changes` of samples ``raw`` (``ts, quality, value``).

    Samples are ordered by timestamp, then quality, then value (nulls last), so that equal
    timestamps have one defined order; values compare as SQL's ``IS DISTINCT FROM`` does
    (two nulls are equal, and so are two NaNs).
    """
    keys = [(name, "ascending", "at_end") for name in ("ts", "quality", "value")]
    order = pc.sort_indices(raw, options=pc.SortOptions(sort_keys=keys))
    raw = raw.take(order)
    runs = pa.table(
        {
            "ts": raw.column("ts"),
            "last_ts": raw.column("ts"),
            "quality": raw.column("quality"),
            "value": raw.column("value"),
            "count": pa.array(np.ones(raw.num_rows, dtype=np.int64)),
        }
    )
    return merge_runs(runs, max_gap)


def merge_runs(runs: pa.Table, max_gap: timedelta | None = None) -> pa.Table:
    """Join neighbouring runs (:data:`CHANGES_COLUMNS`, in order) of equal value and quality.

    Runs more than ``max_gap`` apart (from one's last sample to the next one's first) stay
    apart. Values compare as in :func:`run_length_encode`.
    """
    runs = runs.combine_chunks()
    n = runs.num_rows
    value = runs.column("value").combine_chunks()
    quality = np.asarray(runs.column("quality").to_numpy())
    head = np.ones(n, dtype=bool)
    if n > 1:
        differ = _neighbours_differ(value)
        differ |= quality[1:] != quality[:-1]
        if max_gap is not None:
            first = runs.column("ts").cast(pa.int64()).to_numpy()[1:]
            last = runs.column("last_ts").cast(pa.int64()).to_numpy()[:-1]
            differ |= first - last > max_gap // timedelta(microseconds=1)
        head[1:] = differ
    if head.all():
        return runs.select(list(CHANGES_COLUMNS))
    starts = np.flatnonzero(head)
    ends = np.append(starts[1:], n) - 1
    counts = runs.column("count").to_numpy()
    return pa.table(
        {
            "ts": runs.column("ts").take(starts),
            "last_ts": runs.column("last_ts").take(ends),
            "quality": runs.column("quality").take(starts),
            "value": value.take(starts),
            "count": pa.array(np.add.reduceat(counts, starts), pa.int64()),
        }
    )


def _neighbours_differ(value: pa.Array) -> npt.NDArray[np.bool_]:
    """``value[i + 1] IS DISTINCT FROM value[i]`` for every ``i`` (NaN equals NaN)."""
    nulls = value.is_null().to_numpy(zero_copy_only=False)
    t = value.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        filled = value.fill_null(False if pa.types.is_boolean(t) else 0)
        v = filled.to_numpy(zero_copy_only=False)
        differ = np.asarray(v[1:] != v[:-1])
        if pa.types.is_floating(t):
            differ &= ~(np.isnan(v[1:]) & np.isnan(v[:-1]))
    else:
        a, b = value.slice(1), value.slice(0, len(value) - 1)
        differ = pc.fill_null(pc.not_equal(a, b), False).to_numpy(zero_copy_only=False)
    null: npt.NDArray[np.bool_] = np.asarray(nulls, dtype=bool)
    out: npt.NDArray[np.bool_] = np.asarray(differ, dtype=bool) | (null[1:] != null[:-1])
    return out & ~(null[1:] & null[:-1])

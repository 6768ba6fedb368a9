"""The historian interface every storage engine implements.

The historian keeps one narrow sample table ``(signal_id, ts, quality, v_float, v_int,
v_bool, v_str)`` written in Arrow batches, a signal catalog that gives every signal path a
stable integer id, per-minute rollups, an events table and a dead-letter table. Every
query returns an Arrow table. Engines live in their own modules (``duckdb.py`` now,
``postgres.py`` later) and are chosen by URL with :func:`shopfloor.historian.open_historian`.

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

import pyarrow as pa

from shopfloor.edge.batch import ReadingBatch
from shopfloor.edge.deadletter import DEAD_LETTER_SCHEMA
from shopfloor.edge.events import EVENT_SCHEMA

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "DOWNSAMPLE_COLUMNS",
    "EVENT_SCHEMA",
    "DataType",
    "Historian",
    "RetentionResult",
    "SignalInfo",
]

DataType = Literal["float", "int", "bool", "string", "json"]
"""The data types a signal can have; ``json`` values are stored as text."""

DOWNSAMPLE_COLUMNS: tuple[str, ...] = ("bucket", "first", "last", "min", "max", "avg", "count")
"""Columns of :meth:`Historian.downsample` results, in order."""


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
        """Delete samples, rollups, ended events and dead letters older than ``older_than``."""

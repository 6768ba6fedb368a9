"""Columnar batches of readings: the unit that flows through the pipeline.

Two Arrow schemas carry every sample:

* :data:`RAW_SCHEMA` — what a connector yields: the *source* (connection name) and the
  protocol *address* of each reading, before the mapper knows which signal it is.
* :data:`READING_SCHEMA` — what the mapper yields and the historian stores: an integer
  ``signal_id`` from the historian's signal catalog.

A value lives in exactly one of four typed columns (``v_float``, ``v_int``, ``v_bool``,
``v_str``; ``json`` signals use ``v_str``); the others are null for that row. A row with all
four null is a reading without a value (e.g. a bad-quality marker). Timestamps are UTC
microseconds. Quality is the OPC DA quality byte (:class:`Quality`), which OPC UA status
codes, Sparkplug ``is_null``/stale and Modbus errors all map onto.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.errors import BatchError

__all__ = [
    "RAW_SCHEMA",
    "READING_SCHEMA",
    "TS_TYPE",
    "VALUE_COLUMNS",
    "Quality",
    "RawBatch",
    "RawBatchBuilder",
    "ReadingBatch",
    "to_us",
]

TS_TYPE = pa.timestamp("us", tz="UTC")
"""Arrow type of every timestamp column: microseconds, UTC."""

VALUE_COLUMNS: tuple[str, ...] = ("v_float", "v_int", "v_bool", "v_str")
"""The typed value columns, in schema order."""

_VALUE_FIELDS = [
    pa.field("v_float", pa.float64()),
    pa.field("v_int", pa.int64()),
    pa.field("v_bool", pa.bool_()),
    pa.field("v_str", pa.string()),
]

READING_SCHEMA = pa.schema(
    [
        pa.field("signal_id", pa.int32(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("quality", pa.uint8(), nullable=False),
        *_VALUE_FIELDS,
    ]
)
"""Schema of a :class:`ReadingBatch` and of the historian's sample table."""

RAW_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("address", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("quality", pa.uint8(), nullable=False),
        *_VALUE_FIELDS,
    ]
)
"""Schema of a :class:`RawBatch`: readings keyed by connection and protocol address."""


class Quality(IntEnum):
    """Quality of a reading: the OPC DA quality byte (major status in the top two bits)."""

    BAD = 0x00
    BAD_CONFIG_ERROR = 0x04
    BAD_NOT_CONNECTED = 0x08
    BAD_DEVICE_FAILURE = 0x0C
    BAD_SENSOR_FAILURE = 0x10
    BAD_LAST_KNOWN = 0x14
    BAD_COMM_FAILURE = 0x18
    BAD_OUT_OF_SERVICE = 0x1C
    UNCERTAIN = 0x40
    UNCERTAIN_LAST_USABLE = 0x44
    UNCERTAIN_SENSOR_NOT_ACCURATE = 0x50
    UNCERTAIN_EU_EXCEEDED = 0x54
    UNCERTAIN_SUB_NORMAL = 0x58
    GOOD = 0xC0
    GOOD_LOCAL_OVERRIDE = 0xD8

    @staticmethod
    def is_good(code: int) -> bool:
        """True when the major status of ``code`` is good."""
        return (code & 0xC0) == 0xC0

    @staticmethod
    def is_bad(code: int) -> bool:
        """True when the major status of ``code`` is bad."""
        return (code & 0xC0) == 0x00


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (naive ones are rejected)."""
    if ts.tzinfo is None:
        raise BatchError(f"naive datetime {ts.isoformat()} has no time zone; use UTC")
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns, casting where that is lossless."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    missing_values = [m for m in missing if m in VALUE_COLUMNS]
    required = [m for m in missing if m not in VALUE_COLUMNS]
    if required:
        raise BatchError(f"{what}: missing column(s) {', '.join(required)}")
    columns = []
    for field in schema:
        if field.name in missing_values:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise BatchError(
                    f"{what}: column {field.name} has type {col.type}, expected {field.type}"
                ) from exc
        if not field.nullable and col.null_count:
            raise BatchError(f"{what}: column {field.name} has {col.null_count} null(s)")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def _ts_array(ts: Any, n: int) -> pa.Array:
    """Timestamps from datetime64, int64 microseconds, or a sequence of aware datetimes."""
    if isinstance(ts, pa.Array | pa.ChunkedArray):
        arr = ts.cast(TS_TYPE)
        return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    a = np.asarray(ts)
    if a.ndim == 0:
        a = np.full(n, a)
    if np.issubdtype(a.dtype, np.datetime64):
        a = a.astype("datetime64[us]").astype(np.int64)
    elif a.dtype == object:
        a = np.fromiter((to_us(t) for t in a), dtype=np.int64, count=len(a))
    return pa.array(a.astype(np.int64, copy=False), type=pa.int64()).cast(TS_TYPE)


def _value_arrays(values: Any, n: int) -> dict[str, pa.Array]:
    """Place ``values`` in the typed column its dtype calls for; the others stay null."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    else:
        a = np.asarray(values)
        if a.ndim == 0:
            a = np.full(n, a)
        arr = pa.array(a if a.dtype != object else list(a))
    t = arr.type
    if pa.types.is_floating(t):
        target = "v_float"
    elif pa.types.is_boolean(t):
        target = "v_bool"
    elif pa.types.is_integer(t):
        target = "v_int"
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        target = "v_str"
    elif pa.types.is_null(t):
        target = ""
    else:
        raise BatchError(f"values of type {t} cannot be stored; use float, int, bool or str")
    out = {}
    for field in _VALUE_FIELDS:
        if field.name == target:
            out[field.name] = arr.cast(field.type)
        else:
            out[field.name] = pa.nulls(n, field.type)
    return out


def _quality_array(quality: Any, n: int) -> pa.Array:
    q = np.asarray(quality)
    if q.ndim == 0:
        q = np.full(n, q)
    return pa.array(q.astype(np.uint8), type=pa.uint8())


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """A batch of mapped readings (:data:`READING_SCHEMA`), backed by one Arrow table."""

    table: pa.Table

    def __post_init__(self) -> None:
        if not self.table.schema.equals(READING_SCHEMA):
            object.__setattr__(self, "table", _conform(self.table, READING_SCHEMA, "reading batch"))

    @classmethod
    def from_columns(
        cls,
        signal_id: Any,
        ts: Any,
        values: Any,
        quality: Any = Quality.GOOD,
    ) -> ReadingBatch:
        """Build a batch from array-likes: one value column, typed by its dtype.

        ``ts`` is datetime64, int64 microseconds since the epoch, or aware datetimes;
        ``quality`` and ``ts`` may be scalars broadcast over all rows.
        """
        sid = np.asarray(signal_id, dtype=np.int32)
        if sid.ndim == 0:
            raise BatchError("signal_id must be an array")
        n = len(sid)
        cols: dict[str, pa.Array] = {
            "signal_id": pa.array(sid, type=pa.int32()),
            "ts": _ts_array(ts, n),
            "quality": _quality_array(quality, n),
            **_value_arrays(values, n),
        }
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) != 1:
            raise BatchError(f"reading batch: columns differ in length {lengths}")
        return cls(pa.Table.from_pydict(cols, schema=READING_SCHEMA))

    @classmethod
    def empty(cls) -> ReadingBatch:
        """A batch with no rows."""
        return cls(READING_SCHEMA.empty_table())

    @classmethod
    def concat(cls, batches: Iterable[ReadingBatch]) -> ReadingBatch:
        """One batch holding the rows of all ``batches`` in order."""
        tables = [b.table for b in batches]
        if not tables:
            return cls.empty()
        return cls(pa.concat_tables(tables))

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def sorted(self) -> ReadingBatch:
        """The rows ordered by signal then time (the historian's clustering order)."""
        idx = pc.sort_indices(self.table, [("signal_id", "ascending"), ("ts", "ascending")])
        return ReadingBatch(self.table.take(idx))


@dataclass(frozen=True, slots=True)
class RawBatch:
    """A batch of readings as a connector sees them (:data:`RAW_SCHEMA`).

    A connector that numbers its addresses may also pass ``address_ids`` (each row's index
    into ``address_pool``, an array of addresses that only ever grows; every row of the
    batch then has the same source): the mapper looks each address of the pool up once
    instead of every row's address string. The table stays complete without them.
    """

    table: pa.Table
    address_ids: npt.NDArray[np.int32] | None = None
    """Row → index into :attr:`address_pool` (optional, see above)."""
    address_pool: pa.Array | None = None
    """The addresses :attr:`address_ids` index (``address_pool.take(address_ids)`` equals
    the ``address`` column)."""

    def __post_init__(self) -> None:
        if not self.table.schema.equals(RAW_SCHEMA):
            object.__setattr__(self, "table", _conform(self.table, RAW_SCHEMA, "raw batch"))
        ids = self.address_ids
        if (ids is None) != (self.address_pool is None):
            raise BatchError("raw batch: address_ids and address_pool go together")
        if ids is not None and len(ids) != self.table.num_rows:
            raise BatchError(f"raw batch: {len(ids)} address ids for {self.table.num_rows} rows")

    @classmethod
    def from_columns(
        cls,
        source: str | Sequence[str],
        address: Any,
        ts: Any,
        values: Any,
        quality: Any = Quality.GOOD,
    ) -> RawBatch:
        """Build a raw batch from array-likes (see :meth:`ReadingBatch.from_columns`)."""
        addr = pa.array(
            list(address) if not isinstance(address, pa.Array) else address, type=pa.string()
        )
        n = len(addr)
        src = pa.array([source] * n if isinstance(source, str) else list(source), pa.string())
        return cls(
            pa.Table.from_pydict(
                {
                    "source": src,
                    "address": addr,
                    "ts": _ts_array(ts, n),
                    "quality": _quality_array(quality, n),
                    **_value_arrays(values, n),
                },
                schema=RAW_SCHEMA,
            )
        )

    @classmethod
    def empty(cls) -> RawBatch:
        """A raw batch with no rows."""
        return cls(RAW_SCHEMA.empty_table())

    def __len__(self) -> int:
        return int(self.table.num_rows)


class RawBatchBuilder:
    """Collects decoded readings one by one (as protocol callbacks deliver them).

    Protocol decoders necessarily see one value at a time; the builder keeps them in plain
    per-column lists and turns them into one Arrow table in :meth:`build`, so everything
    after the connector is columnar.
    """

    __slots__ = ("_addr", "_cols", "_q", "_src", "_ts")

    def __init__(self) -> None:
        self._src: list[str] = []
        self._addr: list[str] = []
        self._ts: list[int] = []
        self._q: list[int] = []
        self._cols: dict[str, list[Any]] = {name: [] for name in VALUE_COLUMNS}

    def __len__(self) -> int:
        return len(self._ts)

    def append(
        self, source: str, address: str, ts_us: int, value: Any, quality: int = Quality.GOOD
    ) -> None:
        """Add one reading; ``value`` may be float, int, bool, str or None."""
        self._src.append(source)
        self._addr.append(address)
        self._ts.append(ts_us)
        self._q.append(int(quality))
        f = i = b = s = None
        if value is None:
            pass
        elif isinstance(value, bool | np.bool_):
            b = bool(value)
        elif isinstance(value, int | np.integer):
            i = int(value)
        elif isinstance(value, float | np.floating):
            f = float(value)
        elif isinstance(value, str):
            s = value
        else:
            s = repr(value)
        self._cols["v_float"].append(f)
        self._cols["v_int"].append(i)
        self._cols["v_bool"].append(b)
        self._cols["v_str"].append(s)

    def build(self) -> RawBatch:
        """The collected readings as one :class:`RawBatch`; the builder is emptied."""
        table = pa.Table.from_pydict(
            {
                "source": pa.array(self._src, pa.string()),
                "address": pa.array(self._addr, pa.string()),
                "ts": pa.array(self._ts, pa.int64()).cast(TS_TYPE),
                "quality": pa.array(self._q, pa.uint8()),
                **{f.name: pa.array(self._cols[f.name], f.type) for f in _VALUE_FIELDS},
            },
            schema=RAW_SCHEMA,
        )
        self.__init__()  # type: ignore[misc]
        return RawBatch(table)

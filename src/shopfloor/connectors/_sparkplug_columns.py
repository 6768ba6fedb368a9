"""Columnar decoding of Sparkplug NDATA/DDATA: the host's hot path.

A data message is parsed twice by protobuf's C parser and never metric by metric in Python:

1. as an *envelope* — the ``Payload`` with its ``metrics`` declared as ``repeated bytes`` —
   which gives ``timestamp``, ``seq`` and the number of metrics;
2. the metrics' bytes, joined, as one *columns* message that declares every ``Metric`` field
   ``repeated``: protobuf appends repeated fields when messages are concatenated, so this
   yields one column per field (all aliases, all timestamps, all ``double_value`` …) in metric
   order.

A message is *simple* when every metric has a name (or every one an alias and none a
name), either all or none have a timestamp and a datatype, each has exactly one scalar value
(int, long, float, double, boolean or string), and none is null or carries properties,
metadata or a complex value. (Protobuf encoders write a field at most once per message, so
equal counts mean one of each per metric.) Anything else is decoded the general way by
:func:`~shopfloor.connectors._sparkplug_payload.decode_payload`.

For a simple message the host resolves the metrics' names or aliases against the birth once
per distinct metric set (a :class:`DataPlan`, cached per device) and hands the columns to
:class:`DataColumns`, which only extends a few lists per message and turns everything
collected into one Arrow table (:data:`~shopfloor.edge.batch.RAW_SCHEMA`) with NumPy at
flush time: integer signs restored per datatype, values scattered into the typed columns,
addresses taken from the host's address pool.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from shopfloor.connectors._sparkplug_payload import DataType
from shopfloor.edge.batch import RAW_SCHEMA, TS_TYPE, Quality

__all__ = ["WIRE_OF", "DataColumns", "DataPlan", "parse_data", "simple_count"]

# Wire codes: how a metric's value travels and is turned into a row value.
_INT8, _INT16, _INT32, _UINT8, _UINT16, _UINT32 = 0, 1, 2, 3, 4, 5  # int_value (uint32)
_LONG = 6  # long_value (uint64) → int64 two's complement: Int64, DateTime
_FLOAT, _DOUBLE, _BOOL, _STRING = 7, 8, 9, 10

WIRE_OF: Final[dict[int, int]] = {
    DataType.Int8: _INT8,
    DataType.Int16: _INT16,
    DataType.Int32: _INT32,
    DataType.UInt8: _UINT8,
    DataType.UInt16: _UINT16,
    DataType.UInt32: _UINT32,
    DataType.Int64: _LONG,
    DataType.DateTime: _LONG,
    DataType.Float: _FLOAT,
    DataType.Double: _DOUBLE,
    DataType.Boolean: _BOOL,
    DataType.String: _STRING,
    DataType.Text: _STRING,
    DataType.UUID: _STRING,
}
"""Datatypes the columnar path handles → wire code (UInt64, bytes and complex types don't)."""

# index of each wire code's value column in DataPlan.counts
_COLUMN_OF: Final = (0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5)
_VALUE_FIELDS: Final = (
    "int_value",
    "long_value",
    "float_value",
    "double_value",
    "boolean_value",
    "string_value",
)
_BITS: Final = np.array([8, 16, 32, 8, 16, 32], np.int64)
_SIGNED: Final = np.array([True, True, True, False, False, False])


def _messages() -> tuple[type[Message], type[Message]]:
    """The envelope and columns message classes (a private descriptor pool)."""
    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(
        name="shopfloor_sparkplug_columns.proto", package="shopfloor.spbcols", syntax="proto2"
    )
    env = fd.message_type.add(name="Envelope")
    for name, number, kind, label in (
        ("timestamp", 1, f.TYPE_UINT64, f.LABEL_OPTIONAL),
        ("metrics", 2, f.TYPE_BYTES, f.LABEL_REPEATED),
        ("seq", 3, f.TYPE_UINT64, f.LABEL_OPTIONAL),
        ("uuid", 4, f.TYPE_STRING, f.LABEL_OPTIONAL),
        ("body", 5, f.TYPE_BYTES, f.LABEL_OPTIONAL),
    ):
        env.field.add(name=name, number=number, type=kind, label=label)
    cols = fd.message_type.add(name="Columns")
    for name, number, kind in (
        ("name", 1, f.TYPE_STRING),
        ("alias", 2, f.TYPE_UINT64),
        ("timestamp", 3, f.TYPE_UINT64),
        ("datatype", 4, f.TYPE_UINT32),
        ("is_historical", 5, f.TYPE_BOOL),
        ("is_transient", 6, f.TYPE_BOOL),
        ("is_null", 7, f.TYPE_BOOL),
        ("metadata", 8, f.TYPE_BYTES),
        ("properties", 9, f.TYPE_BYTES),
        ("int_value", 10, f.TYPE_UINT32),
        ("long_value", 11, f.TYPE_UINT64),
        ("float_value", 12, f.TYPE_FLOAT),
        ("double_value", 13, f.TYPE_DOUBLE),
        ("boolean_value", 14, f.TYPE_BOOL),
        ("string_value", 15, f.TYPE_STRING),
        ("bytes_value", 16, f.TYPE_BYTES),
        ("dataset_value", 17, f.TYPE_BYTES),
        ("template_value", 18, f.TYPE_BYTES),
        ("extension_value", 19, f.TYPE_BYTES),
    ):
        cols.field.add(name=name, number=number, type=kind, label=f.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("shopfloor.spbcols.Envelope")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("shopfloor.spbcols.Columns")),
    )


_Envelope, _Columns = _messages()


def parse_data(payload: bytes) -> tuple[Any, Any] | None:
    """``(envelope, columns)`` of a data payload, or None when it does not parse."""
    env: Any = _Envelope()
    cols: Any = _Columns()
    try:
        env.ParseFromString(payload)
        cols.ParseFromString(b"".join(env.metrics))
    except (DecodeError, RuntimeWarning, ValueError):
        return None
    return env, cols


def simple_count(env: Any, cols: Any) -> int:
    """The number of metrics when the message is simple (module doc), else -1."""
    n = len(env.metrics)
    names = len(cols.name)
    if names != n and (names or len(cols.alias) != n):
        return -1
    if len(cols.timestamp) not in (0, n) or len(cols.datatype) not in (0, n):
        return -1
    values = sum(len(getattr(cols, f)) for f in _VALUE_FIELDS)
    if values != n or any(cols.is_null):
        return -1
    if cols.metadata or cols.properties or cols.bytes_value or cols.dataset_value:
        return -1
    if cols.template_value or cols.extension_value:
        return -1
    return n


@dataclass(frozen=True, slots=True)
class DataPlan:
    """How the metrics of one metric set (names or aliases, in order) become rows."""

    addr_ids: npt.NDArray[np.int32]
    """Address pool index of each metric."""
    codes: npt.NDArray[np.int8]
    """Wire code of each metric (from its birth datatype)."""
    datatypes: tuple[int, ...]
    """Birth datatype of each metric (a data message that sends datatypes must agree)."""
    counts: tuple[int, int, int, int, int, int]
    """Values expected in each of ``int``/``long``/``float``/``double``/``boolean``/``string``."""
    keep: npt.NDArray[np.bool_] | None
    """Metrics to emit (None: all)."""

    @classmethod
    def build(cls, addr_ids: list[int], datatypes: list[int], keep: list[bool]) -> DataPlan:
        """A plan from each metric's address id and birth datatype (all in :data:`WIRE_OF`)."""
        codes = [WIRE_OF[t] for t in datatypes]
        counts = [0] * 6
        for c in codes:
            counts[_COLUMN_OF[c]] += 1
        return cls(
            np.asarray(addr_ids, np.int32),
            np.asarray(codes, np.int8),
            tuple(datatypes),
            (counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]),
            None if all(keep) else np.asarray(keep, np.bool_),
        )

    def matches(self, cols: Any) -> bool:
        """Whether the value columns of ``cols`` hold what the birth datatypes call for."""
        c = self.counts
        if (
            len(cols.int_value) != c[0]
            or len(cols.long_value) != c[1]
            or len(cols.float_value) != c[2]
            or len(cols.double_value) != c[3]
            or len(cols.boolean_value) != c[4]
            or len(cols.string_value) != c[5]
        ):
            return False
        return not cols.datatype or tuple(cols.datatype) == self.datatypes


class DataColumns:
    """Rows of simple data messages, kept as columns until :meth:`build`."""

    __slots__ = (
        "_addr",
        "_bools",
        "_codes",
        "_doubles",
        "_floats",
        "_ints",
        "_keep",
        "_longs",
        "_rows",
        "_strings",
        "_ts",
    )

    def __init__(self) -> None:
        self._addr: list[npt.NDArray[np.int32]] = []
        self._codes: list[npt.NDArray[np.int8]] = []
        self._keep: list[npt.NDArray[np.bool_] | None] = []
        self._ts: list[int] = []
        self._ints: list[int] = []
        self._longs: list[int] = []
        self._floats: list[float] = []
        self._doubles: list[float] = []
        self._bools: list[bool] = []
        self._strings: list[str] = []
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def add(self, plan: DataPlan, cols: Any, ts_ms: int) -> None:
        """Add one message's metrics (``plan.matches(cols)``); ``ts_ms`` for those without."""
        n = len(plan.codes)
        self._addr.append(plan.addr_ids)
        self._codes.append(plan.codes)
        self._keep.append(plan.keep)
        if cols.timestamp:
            self._ts.extend(cols.timestamp)
        else:
            self._ts.extend(itertools.repeat(ts_ms, n))
        if cols.double_value:
            self._doubles.extend(cols.double_value)
        if cols.int_value:
            self._ints.extend(cols.int_value)
        if cols.boolean_value:
            self._bools.extend(cols.boolean_value)
        if cols.string_value:
            self._strings.extend(cols.string_value)
        if cols.long_value:
            self._longs.extend(cols.long_value)
        if cols.float_value:
            self._floats.extend(cols.float_value)
        self._rows += n

    def build(self, source: str, addresses: pa.Array) -> tuple[pa.Table, npt.NDArray[np.int32]]:
        """The collected rows as a :data:`RAW_SCHEMA` table and each row's index into
        ``addresses`` (the address pool the plans' ``addr_ids`` index); the columns are
        emptied."""
        n = self._rows
        codes = np.concatenate(self._codes) if n else np.empty(0, np.int8)
        addr = np.concatenate(self._addr) if n else np.empty(0, np.int32)
        keep = None
        if any(k is not None for k in self._keep):
            keep = np.concatenate(
                [
                    np.ones(len(a), np.bool_) if k is None else k
                    for a, k in zip(self._addr, self._keep, strict=True)
                ]
            )
        ts = np.asarray(self._ts, np.int64) * 1000

        is_float, is_double = codes == _FLOAT, codes == _DOUBLE
        floats = np.zeros(n, np.float64)
        floats[is_float] = self._floats
        floats[is_double] = self._doubles
        v_float = pa.array(floats, pa.float64(), mask=~(is_float | is_double))

        small = codes <= _UINT32
        is_long = codes == _LONG
        ints = np.zeros(n, np.int64)
        if self._ints:
            raw = np.asarray(self._ints, np.int64)
            kind = codes[small]
            bits = _BITS[kind]
            raw &= (np.int64(1) << bits) - 1
            half = np.int64(1) << (bits - 1)
            signed = _SIGNED[kind] & (raw >= half)
            raw[signed] -= np.int64(1) << bits[signed]
            ints[small] = raw
        if self._longs:
            ints[is_long] = np.asarray(self._longs, np.uint64).view(np.int64)
        v_int = pa.array(ints, pa.int64(), mask=~(small | is_long))

        is_bool = codes == _BOOL
        bools = np.zeros(n, np.bool_)
        bools[is_bool] = self._bools
        v_bool = pa.array(bools, pa.bool_(), mask=~is_bool)

        is_str = codes == _STRING
        if self._strings:
            where = np.full(n, 0, np.int64)
            where[is_str] = np.arange(len(self._strings))
            v_str = pa.array(self._strings, pa.string()).take(pa.array(where, mask=~is_str))
        else:
            v_str = pa.nulls(n, pa.string())

        table = pa.Table.from_arrays(
            [
                pa.array([source], pa.string()).take(np.zeros(n, np.int32)),
                addresses.take(addr),
                pa.array(ts, pa.int64()).cast(TS_TYPE),
                pa.array(np.full(n, Quality.GOOD, np.uint8), pa.uint8()),
                v_float,
                v_int,
                v_bool,
                v_str,
            ],
            schema=RAW_SCHEMA,
        )
        if keep is not None:
            table = table.filter(pa.array(keep))
            addr = addr[keep]
        self.__init__()  # type: ignore[misc]
        return table, addr

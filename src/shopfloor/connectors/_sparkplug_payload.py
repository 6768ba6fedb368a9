"""Sparkplug B payloads: decode and encode the protobuf ``Payload`` (Sparkplug 3.0, chapter 6).

The wire format is the upstream ``sparkplug_b.proto`` (``_sparkplug_b_pb2``, generated); this
module turns it into plain frozen dataclasses and back, so that nothing else touches
protobuf objects:

* integers are Python ``int`` with their sign restored: Int8/16/32 travel as two's
  complement in the ``uint32`` ``int_value``, Int64 in the ``uint64`` ``long_value``
  (decoding accepts either field for any integer type, as some encoders put UInt32 in
  ``long_value``);
* Float/Double → ``float``, Boolean → ``bool``, String/Text/UUID → ``str``,
  DateTime → ``int`` milliseconds since the epoch (UTC), Bytes/File → ``bytes``;
* the 3.0 arrays → ``tuple`` of the element type, packed little-endian in ``bytes_value``
  (BooleanArray: a little-endian ``uint32`` count, then the bits MSB-first; StringArray:
  NUL-terminated UTF-8 strings; DateTimeArray: ``int64`` milliseconds);
* DataSet → :class:`DataSet`, Template → :class:`Template`, properties →
  ``dict[str, Property]`` (PropertySet values are dicts, PropertySetList values tuples of
  dicts).

:func:`decode_payload` raises :class:`PayloadError` for anything that is not a valid
Sparkplug B payload; :func:`value_to_json` renders complex values as JSON text.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from google.protobuf.message import DecodeError

from shopfloor.connectors import _sparkplug_b_pb2 as pb
from shopfloor.errors import ConnectorError

__all__ = [
    "DataSet",
    "DataType",
    "Metric",
    "Parameter",
    "Payload",
    "PayloadError",
    "Property",
    "Template",
    "decode_payload",
    "encode_payload",
    "retyped",
    "value_to_json",
]


class PayloadError(ConnectorError):
    """Bytes that are not a valid Sparkplug B payload (the message says what failed)."""


class DataType(IntEnum):
    """Sparkplug B datatypes (the specification's table; the arrays are new in 3.0)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


# integer datatypes → (bits, signed)
_INTS: dict[int, tuple[int, bool]] = {
    DataType.Int8: (8, True),
    DataType.Int16: (16, True),
    DataType.Int32: (32, True),
    DataType.Int64: (64, True),
    DataType.UInt8: (8, False),
    DataType.UInt16: (16, False),
    DataType.UInt32: (32, False),
    DataType.UInt64: (64, False),
}
_LONG_TYPES = frozenset({DataType.Int64, DataType.UInt64, DataType.DateTime})
_STRING_TYPES = frozenset({DataType.String, DataType.Text, DataType.UUID})
_BYTES_TYPES = frozenset({DataType.Bytes, DataType.File})
# fixed-width arrays → struct format of one element (little-endian)
_ARRAYS: dict[int, str] = {
    DataType.Int8Array: "b",
    DataType.Int16Array: "h",
    DataType.Int32Array: "i",
    DataType.Int64Array: "q",
    DataType.UInt8Array: "B",
    DataType.UInt16Array: "H",
    DataType.UInt32Array: "I",
    DataType.UInt64Array: "Q",
    DataType.FloatArray: "f",
    DataType.DoubleArray: "d",
    DataType.DateTimeArray: "q",
}
ARRAY_TYPES = frozenset({*_ARRAYS, DataType.BooleanArray, DataType.StringArray})


@dataclass(frozen=True, slots=True)
class Property:
    """One property of a metric's PropertySet (``value`` typed as for metrics)."""

    datatype: int
    value: Any = None
    is_null: bool = False


@dataclass(frozen=True, slots=True)
class DataSet:
    """A table: column names, their datatypes and rows of values."""

    columns: tuple[str, ...]
    types: tuple[int, ...]
    rows: tuple[tuple[Any, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Parameter:
    """A template parameter."""

    name: str
    datatype: int
    value: Any = None


@dataclass(frozen=True, slots=True)
class Template:
    """A template definition or instance (``template_ref`` names the definition)."""

    metrics: tuple[Metric, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool = False


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric; ``timestamp`` in ms since the epoch (None: the payload's)."""

    name: str | None = None
    datatype: int = DataType.Unknown
    value: Any = None
    alias: int | None = None
    timestamp: int | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    properties: Mapping[str, Property] | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    """A Sparkplug B payload; ``timestamp`` in ms since the epoch, ``seq`` 0–255."""

    metrics: tuple[Metric, ...] = ()
    timestamp: int | None = None
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


# --------------------------------------------------------------------------- scalars


def _signed(raw: int, bits: int) -> int:
    raw &= (1 << bits) - 1
    return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw


def _int_of(datatype: int, raw: int) -> int:
    bits, signed = _INTS.get(datatype, (64, False))
    return _signed(raw, bits) if signed else raw & ((1 << bits) - 1)


def _check_int(datatype: int, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{DataType(datatype).name} value {value!r} is not an int")
    bits, signed = _INTS[datatype]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= value <= hi:
        raise PayloadError(f"{DataType(datatype).name} value {value} is out of range")
    return value


def _type_name(datatype: int) -> str:
    try:
        return DataType(datatype).name
    except ValueError:
        return f"datatype {datatype}"


def _scalar_from(datatype: int, kind: str | None, msg: Any, where: str) -> Any:
    """The value of a ``oneof value`` holder (metric, property, parameter, data set cell)."""
    if kind is None:
        return None
    raw = getattr(msg, kind)
    if datatype in _INTS:
        if kind not in ("int_value", "long_value"):
            raise PayloadError(f"{where}: {_type_name(datatype)} carried in {kind}")
        return _int_of(datatype, int(raw))
    if datatype == DataType.DateTime:
        if kind not in ("int_value", "long_value"):
            raise PayloadError(f"{where}: DateTime carried in {kind}")
        return _signed(int(raw), 64)
    if datatype in (DataType.Float, DataType.Double):
        if kind not in ("float_value", "double_value"):
            raise PayloadError(f"{where}: {_type_name(datatype)} carried in {kind}")
        return float(raw)
    if datatype == DataType.Boolean:
        if kind != "boolean_value":
            raise PayloadError(f"{where}: Boolean carried in {kind}")
        return bool(raw)
    if datatype in _STRING_TYPES:
        if kind != "string_value":
            raise PayloadError(f"{where}: {_type_name(datatype)} carried in {kind}")
        return str(raw)
    if datatype in _BYTES_TYPES:
        if kind != "bytes_value":
            raise PayloadError(f"{where}: {_type_name(datatype)} carried in {kind}")
        return bytes(raw)
    # Unknown or mismatched datatype: keep whatever was sent
    if kind == "bytes_value":
        return bytes(raw)
    if kind in ("int_value", "long_value", "float_value", "double_value", "boolean_value"):
        return raw
    if kind == "string_value":
        return str(raw)
    raise PayloadError(f"{where}: {_type_name(datatype)} carried in {kind}")


def _scalar_into(datatype: int, value: Any, msg: Any, *, int32_field: bool = True) -> None:
    """Set the ``oneof value`` of ``msg`` from a Python value of ``datatype``."""
    if datatype in _INTS:
        v = _check_int(datatype, value)
        if datatype in _LONG_TYPES or not int32_field:
            msg.long_value = v & 0xFFFF_FFFF_FFFF_FFFF
        else:
            msg.int_value = v & 0xFFFF_FFFF
    elif datatype == DataType.DateTime:
        msg.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
    elif datatype == DataType.Float:
        msg.float_value = float(value)
    elif datatype == DataType.Double:
        msg.double_value = float(value)
    elif datatype == DataType.Boolean:
        msg.boolean_value = bool(value)
    elif datatype in _STRING_TYPES:
        msg.string_value = str(value)
    elif datatype in _BYTES_TYPES:
        msg.bytes_value = bytes(value)
    else:
        raise PayloadError(f"cannot encode a {_type_name(datatype)} value here")


# --------------------------------------------------------------------------- arrays


def unpack_array(datatype: int, data: bytes) -> tuple[Any, ...]:
    """Decode a 3.0 array from ``bytes_value``."""
    name = _type_name(datatype)
    if datatype in _ARRAYS:
        fmt = _ARRAYS[datatype]
        size = struct.calcsize("<" + fmt)
        if len(data) % size:
            raise PayloadError(f"{name}: {len(data)} bytes is not a multiple of {size}")
        values = struct.unpack(f"<{len(data) // size}{fmt}", data)
        return tuple(values)
    if datatype == DataType.BooleanArray:
        if len(data) < 4:
            raise PayloadError(f"{name}: {len(data)} bytes, no element count")
        (count,) = struct.unpack_from("<I", data)
        bits = data[4:]
        if len(bits) < (count + 7) // 8:
            raise PayloadError(f"{name}: {count} elements need {(count + 7) // 8} bytes")
        return tuple(bool(bits[i // 8] & (0x80 >> (i % 8))) for i in range(count))
    if datatype == DataType.StringArray:
        if not data:
            return ()
        if not data.endswith(b"\0"):
            raise PayloadError(f"{name}: not NUL-terminated")
        try:
            return tuple(s.decode() for s in data[:-1].split(b"\0"))
        except UnicodeDecodeError as exc:
            raise PayloadError(f"{name}: not UTF-8: {exc}") from exc
    raise PayloadError(f"{name} is not an array type")


def pack_array(datatype: int, values: Sequence[Any]) -> bytes:
    """Encode a 3.0 array into ``bytes_value``."""
    if datatype in _ARRAYS:
        fmt = _ARRAYS[datatype]
        try:
            return struct.pack(f"<{len(values)}{fmt}", *values)
        except struct.error as exc:
            raise PayloadError(f"{_type_name(datatype)}: {exc}") from exc
    if datatype == DataType.BooleanArray:
        bits = bytearray((len(values) + 7) // 8)
        for i, v in enumerate(values):
            if v:
                bits[i // 8] |= 0x80 >> (i % 8)
        return struct.pack("<I", len(values)) + bytes(bits)
    if datatype == DataType.StringArray:
        return b"".join(str(v).encode() + b"\0" for v in values)
    raise PayloadError(f"{_type_name(datatype)} is not an array type")


# --------------------------------------------------------------------------- decoding


def _decode_properties(ps: Any, where: str) -> dict[str, Property]:
    if len(ps.keys) != len(ps.values):
        raise PayloadError(f"{where}: {len(ps.keys)} property keys but {len(ps.values)} values")
    out: dict[str, Property] = {}
    for key, pv in zip(ps.keys, ps.values, strict=True):
        kind = pv.WhichOneof("value")
        t = pv.type
        if pv.is_null:
            out[key] = Property(t, None, True)
        elif t == DataType.PropertySet or kind == "propertyset_value":
            out[key] = Property(t, _decode_properties(pv.propertyset_value, f"{where}.{key}"))
        elif t == DataType.PropertySetList or kind == "propertysets_value":
            sets = tuple(
                _decode_properties(s, f"{where}.{key}") for s in pv.propertysets_value.propertyset
            )
            out[key] = Property(t, sets)
        else:
            out[key] = Property(t, _scalar_from(t, kind, pv, f"{where}.{key}"))
    return out


def _decode_dataset(ds: Any, where: str) -> DataSet:
    columns = tuple(ds.columns)
    types = tuple(int(t) for t in ds.types)
    if len(types) != len(columns):
        raise PayloadError(f"{where}: DataSet has {len(columns)} columns but {len(types)} types")
    rows = []
    for r, row in enumerate(ds.rows):
        if len(row.elements) != len(columns):
            raise PayloadError(
                f"{where}: DataSet row {r} has {len(row.elements)} values, not {len(columns)}"
            )
        rows.append(
            tuple(
                _scalar_from(t, e.WhichOneof("value"), e, f"{where}[{r}]")
                for t, e in zip(types, row.elements, strict=True)
            )
        )
    return DataSet(columns, types, tuple(rows))


def _decode_template(tp: Any, where: str) -> Template:
    params = tuple(
        Parameter(p.name, p.type, _scalar_from(p.type, p.WhichOneof("value"), p, where))
        for p in tp.parameters
    )
    return Template(
        metrics=tuple(_decode_metric(m, f"{where}.{m.name}") for m in tp.metrics),
        parameters=params,
        version=tp.version if tp.HasField("version") else None,
        template_ref=tp.template_ref if tp.HasField("template_ref") else None,
        is_definition=tp.is_definition,
    )


def _decode_metric(m: Any, where: str) -> Metric:
    datatype = int(m.datatype)
    kind = m.WhichOneof("value")
    value: Any = None
    if m.is_null or kind is None:
        value = None
    elif kind == "dataset_value":
        value = _decode_dataset(m.dataset_value, where)
    elif kind == "template_value":
        value = _decode_template(m.template_value, where)
    elif datatype in ARRAY_TYPES:
        if kind != "bytes_value":
            raise PayloadError(f"{where}: {_type_name(datatype)} carried in {kind}")
        value = unpack_array(datatype, bytes(m.bytes_value))
    elif kind == "extension_value":
        value = None
    else:
        value = _scalar_from(datatype, kind, m, where)
    return Metric(
        name=m.name if m.HasField("name") else None,
        datatype=datatype,
        value=value,
        alias=m.alias if m.HasField("alias") else None,
        timestamp=m.timestamp if m.HasField("timestamp") else None,
        is_historical=m.is_historical,
        is_transient=m.is_transient,
        is_null=m.is_null,
        properties=_decode_properties(m.properties, f"{where}.properties")
        if m.HasField("properties")
        else None,
    )


def decode_payload(data: bytes) -> Payload:
    """Parse a Sparkplug B payload; raises :class:`PayloadError` saying what failed."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise PayloadError(f"not a Sparkplug B protobuf payload: {exc}") from exc
    metrics = []
    for i, m in enumerate(msg.metrics):
        where = f"metric {m.name!r}" if m.HasField("name") else f"metric #{i}"
        metrics.append(_decode_metric(m, where))
    return Payload(
        metrics=tuple(metrics),
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        seq=msg.seq if msg.HasField("seq") else None,
        uuid=msg.uuid if msg.HasField("uuid") else None,
        body=msg.body if msg.HasField("body") else None,
    )


def retyped(metric: Metric, datatype: int) -> Metric:
    """``metric``, decoded without a datatype (as data messages may be sent), as ``datatype``.

    Integers get their sign and width back, arrays are unpacked from their bytes; a metric
    that has a datatype of its own is returned as it is. Raises :class:`PayloadError` for
    array bytes that do not fit ``datatype``.
    """
    value = metric.value
    if metric.datatype != DataType.Unknown or datatype == DataType.Unknown:
        return metric
    if isinstance(value, int) and not isinstance(value, bool):
        if datatype in _INTS:
            value = _int_of(datatype, value)
        elif datatype == DataType.DateTime:
            value = _signed(value, 64)
    elif isinstance(value, bytes) and datatype in ARRAY_TYPES:
        value = unpack_array(datatype, value)
    return replace(metric, datatype=datatype, value=value)


# --------------------------------------------------------------------------- encoding


def _encode_properties(props: Mapping[str, Property], ps: Any) -> None:
    for key, prop in props.items():
        ps.keys.append(key)
        pv = ps.values.add()
        pv.type = prop.datatype
        if prop.is_null or prop.value is None:
            pv.is_null = True
        elif prop.datatype == DataType.PropertySet:
            _encode_properties(prop.value, pv.propertyset_value)
        elif prop.datatype == DataType.PropertySetList:
            pv.propertysets_value.SetInParent()
            for item in prop.value:
                _encode_properties(item, pv.propertysets_value.propertyset.add())
        else:
            _scalar_into(prop.datatype, prop.value, pv)


def _encode_dataset(ds: DataSet, out: Any) -> None:
    out.num_of_columns = len(ds.columns)
    out.columns.extend(ds.columns)
    out.types.extend(ds.types)
    for row in ds.rows:
        r = out.rows.add()
        for t, v in zip(ds.types, row, strict=True):
            _scalar_into(t, v, r.elements.add())


def _encode_template(tp: Template, out: Any) -> None:
    if tp.version is not None:
        out.version = tp.version
    if tp.template_ref is not None:
        out.template_ref = tp.template_ref
    out.is_definition = tp.is_definition
    for p in tp.parameters:
        pm = out.parameters.add()
        pm.name = p.name
        pm.type = p.datatype
        if p.value is not None:
            _scalar_into(p.datatype, p.value, pm)
    for m in tp.metrics:
        _encode_metric(m, out.metrics.add())


def _encode_metric(metric: Metric, m: Any) -> None:
    if metric.name is not None:
        m.name = metric.name
    if metric.alias is not None:
        m.alias = metric.alias
    if metric.timestamp is not None:
        m.timestamp = metric.timestamp
    m.datatype = int(metric.datatype)
    if metric.is_historical:
        m.is_historical = True
    if metric.is_transient:
        m.is_transient = True
    if metric.properties is not None:
        m.properties.SetInParent()
        _encode_properties(metric.properties, m.properties)
    t = metric.datatype
    if metric.is_null or metric.value is None:
        m.is_null = True
    elif t == DataType.DataSet:
        _encode_dataset(metric.value, m.dataset_value)
    elif t == DataType.Template:
        _encode_template(metric.value, m.template_value)
    elif t in ARRAY_TYPES:
        m.bytes_value = pack_array(t, metric.value)
    else:
        _scalar_into(t, metric.value, m)


def encode_payload(payload: Payload) -> bytes:
    """Serialise a payload (for commands, tests and simulators)."""
    msg = pb.Payload()
    if payload.timestamp is not None:
        msg.timestamp = payload.timestamp
    if payload.seq is not None:
        msg.seq = payload.seq
    if payload.uuid is not None:
        msg.uuid = payload.uuid
    if payload.body is not None:
        msg.body = payload.body
    for metric in payload.metrics:
        _encode_metric(metric, msg.metrics.add())
    return bytes(msg.SerializeToString())


# --------------------------------------------------------------------------- rendering


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Property):
        return _jsonable(value.value)
    if isinstance(value, DataSet):
        return {
            "columns": list(value.columns),
            "types": [_type_name(t) for t in value.types],
            "rows": [_jsonable(r) for r in value.rows],
        }
    if isinstance(value, Template):
        out: dict[str, Any] = {
            "template_ref": value.template_ref,
            "version": value.version,
            "is_definition": value.is_definition,
            "parameters": {p.name: _jsonable(p.value) for p in value.parameters},
            "metrics": {str(m.name): _jsonable(m.value) for m in value.metrics},
        }
        return out
    return value


def value_to_json(value: Any) -> str:
    """Complex values (arrays, DataSet, Template, properties) as compact JSON text.

    Bytes become base64 strings, non-finite floats their ``repr``.
    """
    return json.dumps(_jsonable(value), separators=(",", ":"), ensure_ascii=False)

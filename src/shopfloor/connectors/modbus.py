"""Modbus TCP connector: one pymodbus client per connection, polled in groups.

Endpoint: ``modbus://host[:port]`` or ``tcp://host[:port]`` (port 502 when omitted).

Point address syntax
--------------------
A point's address (:attr:`PointSpec.address`) is a list of ``key=value`` fields separated
by ``;`` (spaces around them are ignored, keys are case-insensitive). Exactly one *table*
field names the table and the 0-based register (or bit) number::

    unit=1;hr=40;type=float32;order=CDAB
    unit=3;ir=0;type=uint32;scale=0.01
    hr=7;bit=3
    coil=12
    unit=2;hr=100;type=string;len=8;order=BADC

``coil=N`` | ``di=N`` | ``ir=N`` | ``hr=N``
    Coils (read/write bits), discrete inputs (read-only bits), input registers (read-only)
    or holding registers (read/write); ``N`` is the 0-based protocol address (register
    40041 of the old 4x notation is ``hr=40``).
``unit=N`` (default: the connection option ``unit``, else 1)
    Unit (slave, device) id, 0–255.
``type=`` (default ``bool`` for coils and discrete inputs, ``uint16`` for registers)
    ``bool | int16 | uint16 | int32 | uint32 | int64 | uint64 | float32 | float64 |
    string``. Registers only, but for ``bool``.
``order=`` (default ``ABCD``)
    Byte layout of multi-byte values, written as the four bytes of a 32-bit value as they
    come off the wire: ``ABCD`` big-endian (Modbus standard), ``CDAB`` word swap (low word
    first, common in PLCs), ``BADC`` byte swap inside each register, ``DCBA`` both
    (little-endian). For 64-bit types the word swap reverses all four registers; for
    16-bit types only the byte swap matters; strings accept ``ABCD`` and ``BADC`` only.
``bit=N``
    Bit ``N`` (0 = least significant) of a register, read as ``bool``.
``len=N``
    Number of registers of a ``string`` (two characters each, UTF-8, trailing NULs
    dropped); required for strings.
``scale=``, ``offset=`` (defaults 1 and 0)
    The device's register encoding: engineering value = raw × scale + offset (a pressure
    in 0.1 bar is ``type=int16;scale=0.1``). Writes apply the inverse. These belong to the
    *register layout*, so that the connector delivers the value the device means; the
    factory file binding's own ``scale``/``offset`` are applied afterwards by the mapper and
    convert *units* (e.g. bar → kPa). A point with a scale or offset other than 1/0 yields a
    float; so does a ``uint64`` above 2**63 − 1 (beyond the int64 value column).

Readings carry the configured address string unchanged as their address.

Connection options
------------------
``poll_ms`` (default 1000)
    Poll period; a point may override it with its own ``poll_ms`` option. Points are
    grouped per unit id and period, each group polled by one loop.
``unit`` (default 1)
    Unit id of addresses without ``unit=``.
``max_gap`` (default 10)
    Largest hole (in registers; for coils and discrete inputs 16 × as many bits, the same
    bytes on the wire) between two points of the same table that is read along to save a
    request. If a device answers such a
    bridged request with *illegal data address*, the request is split into one request per
    point from then on, so that the valid points keep being read.
``max_registers`` (default 125), ``max_bits`` (default 2000)
    Largest request (the Modbus limits; some devices accept less).
``timeout_s`` (default 2), ``retries`` (default 1)
    Response timeout and retries of a request. A request is abandoned after
    ``timeout_s × (retries + 1)``.
``unit_backoff_initial_s`` (default 1), ``unit_backoff_max_s`` (default 60)
    A unit id that does not answer (timeout, or gateway exceptions 0x0A / 0x0B) is not
    polled again before a jittered, capped exponential delay, so that one dead device
    behind a gateway does not stall the other units of the connection. Requests being
    serialised, each attempt at a silent unit still holds the connection for up to
    ``timeout_s × (retries + 1)``; the backoff bounds how often that happens. pymodbus
    closes a connection after ``retries + 3`` consecutive requests without a response;
    the connector starts that count over while another unit of the connection answered
    its last request, so silent units never close a connection that healthy units use
    (a connection on which no unit answers is still closed and reopened).
``report_by_exception`` (default false), ``heartbeat_polls`` (default 10)
    By default every poll yields every point (a historian of a polled device wants each
    poll). With ``report_by_exception`` a point is yielded only when its value or quality
    changed, or after ``heartbeat_polls`` polls without a change.
``flush_interval_ms`` (default 100), ``flush_rows`` (default 10000)
    Readings are handed to the sink as one batch per interval, or earlier after a poll.
``reconnect_initial_s`` (default 0.5), ``reconnect_max_s`` (default 30)
    Reconnect backoff of the TCP connection (full jitter, capped exponential).

Requests are serialised: one outstanding request per connection (many devices and
gateways require that). Qualities: a Modbus exception response gives the points of that
request ``BAD_CONFIG_ERROR`` (illegal function 1, illegal address 2, illegal value 3),
``BAD_DEVICE_FAILURE`` (4 and other device exceptions) or ``BAD_COMM_FAILURE`` (gateway
0x0A / 0x0B, timeouts); such a point yields one bad row per change, and one log line is
written per change of a request's state. Connection loss yields one ``BAD_NOT_CONNECTED``
row per point at the time of loss. Timestamps are the poll time, taken when the response
arrives (UTC µs) from the connector's :attr:`~shopfloor.connectors.base.Connector.clock`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from shopfloor.connectors.base import (
    Backoff,
    BatchSink,
    Connector,
    ConnectorState,
    Outbox,
    PointSpec,
    TableSink,
)
from shopfloor.edge.batch import Quality
from shopfloor.errors import ConnectionFailed, ConnectorError

__all__ = [
    "ModbusAddress",
    "ModbusConnector",
    "ModbusSettings",
    "parse_address",
    "quality_from_exception",
]

logger = logging.getLogger(__name__)

Table = Literal["coil", "di", "ir", "hr"]
TABLES: tuple[Table, ...] = ("coil", "di", "ir", "hr")
BIT_TABLES = frozenset({"coil", "di"})
WRITABLE_TABLES = frozenset({"coil", "hr"})
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
MAX_REGISTERS = 125
MAX_BITS = 2000

# data type → (struct format, registers)
_TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
DATA_TYPES = ("bool", *_TYPES, "string")

_TABLE_NAMES = {
    "coil": "coils",
    "di": "discrete inputs",
    "ir": "input registers",
    "hr": "holding registers",
}
_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
_GATEWAY_EXCEPTIONS = frozenset({10, 11})


def quality_from_exception(code: int) -> Quality:
    """The quality of the points of a request answered with Modbus exception ``code``.

    Illegal function / address / value (1–3) → ``BAD_CONFIG_ERROR``; gateway path
    unavailable / target not responding (0x0A, 0x0B) → ``BAD_COMM_FAILURE``; any other
    (server device failure 4, busy 6, …) → ``BAD_DEVICE_FAILURE``.
    """
    if code in (1, 2, 3):
        return Quality.BAD_CONFIG_ERROR
    if code in _GATEWAY_EXCEPTIONS:
        return Quality.BAD_COMM_FAILURE
    return Quality.BAD_DEVICE_FAILURE


def _exception_text(code: int) -> str:
    return f"exception {code:#04x} ({_EXCEPTION_NAMES.get(code, 'unknown')})"


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    """A parsed point address (see the module documentation for the syntax)."""

    unit: int
    table: Table
    address: int
    type: str
    order: str = "ABCD"
    bit: int | None = None
    length: int = 0
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        """Registers (or bits, for coils and discrete inputs) the point occupies."""
        if self.table in BIT_TABLES or self.bit is not None or self.type == "bool":
            return 1
        if self.type == "string":
            return self.length
        return _TYPES[self.type][1]

    @property
    def scaled(self) -> bool:
        """True when the point has a scale or offset (its value is then a float)."""
        return self.scale != 1.0 or self.offset != 0.0

    def _to_wire(self, data: bytes) -> bytes:
        """Reorder big-endian ``data`` into this point's wire layout (an involution)."""
        if self.order in ("BADC", "DCBA"):
            data = b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))
        if self.order in ("CDAB", "DCBA"):
            data = b"".join(data[i : i + 2] for i in range(len(data) - 2, -2, -2))
        return data

    def decode(self, words: Sequence[int] | Sequence[bool]) -> bool | int | float | str:
        """The value of this point from its ``width`` registers (or one bit)."""
        if self.table in BIT_TABLES:
            return bool(words[0])
        if self.bit is not None:
            return bool((int(words[0]) >> self.bit) & 1)
        if self.type == "bool":
            return int(words[0]) != 0
        wire = b"".join(int(w).to_bytes(2, "big") for w in words)
        if self.type == "string":
            data = self._to_wire(wire)
            return data.rstrip(b"\x00").decode("utf-8", errors="replace")
        fmt = _TYPES[self.type][0]
        raw: int | float = struct.unpack(">" + fmt, self._to_wire(wire))[0]
        if self.scaled:
            return float(raw) * self.scale + self.offset
        return raw

    def encode(self, value: Any) -> list[int]:
        """The registers that hold ``value`` (scale and offset inverted); registers only.

        Raises :class:`ValueError` when the value does not fit the type.
        """
        if self.table in BIT_TABLES or self.bit is not None:
            raise ValueError("bits are not encoded as registers")
        if self.type == "bool":
            return [1 if _as_bool(value) else 0]
        if self.type == "string":
            data = str(value).encode("utf-8")
            if len(data) > 2 * self.length:
                raise ValueError(f"{value!r} is longer than {self.length} registers")
            data = self._to_wire(data.ljust(2 * self.length, b"\x00"))
            return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        fmt = _TYPES[self.type][0]
        if isinstance(value, str):
            value = float(value.strip())
        if isinstance(value, bool):
            value = int(value)
        number = (float(value) - self.offset) / self.scale if self.scaled else value
        raw: int | float
        if fmt in ("f", "d"):
            raw = float(number)
        else:
            if isinstance(number, float):
                if not math.isfinite(number):
                    raise ValueError(f"{value!r} is not a finite number")
                if not self.scaled and not number.is_integer():
                    raise ValueError(f"{value!r} is not an integer ({self.type})")
                number = round(number)
            raw = int(number)
        try:
            data = struct.pack(">" + fmt, raw)
        except struct.error as exc:
            raise ValueError(f"{value!r} does not fit {self.type} ({exc})") from exc
        data = self._to_wire(data)
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    return bool(value)


def _int_field(key: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{key}={value} is not within {low}…{high}")
    return value


def _float_field(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{key}={text!r} is not a finite number")
    return value


def parse_address(text: str, default_unit: int = 1) -> ModbusAddress:
    """Parse a point address like ``unit=1;hr=40;type=float32;order=CDAB``.

    Raises :class:`ValueError` with a message saying what is wrong (the connector wraps it
    into a :class:`~shopfloor.errors.ConnectorError` naming the connection and point).
    """
    fields: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"{part.strip()!r} is not key=value")
        if key in fields:
            raise ValueError(f"{key} is given twice")
        fields[key] = value
    tables = [t for t in TABLES if t in fields]
    if len(tables) != 1:
        raise ValueError(
            "name exactly one table and its 0-based address: coil=N, di=N, ir=N or hr=N"
            + (f" (got {', '.join(tables)})" if tables else "")
        )
    table = tables[0]
    known = {*TABLES, "unit", "type", "order", "bit", "len", "scale", "offset"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)} (known: unit, coil|di|ir|hr, type, "
            "order, bit, len, scale, offset)"
        )
    address = _int_field(table, fields[table], 0, 65535)
    unit = _int_field("unit", fields["unit"], 0, 255) if "unit" in fields else default_unit
    dtype = fields.get("type", "bool" if table in BIT_TABLES else "uint16").lower()
    if dtype not in DATA_TYPES:
        raise ValueError(f"type={dtype!r} is not one of {', '.join(DATA_TYPES)}")
    order = fields.get("order", "ABCD").upper()
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is not one of {', '.join(ORDERS)}")
    bit = _int_field("bit", fields["bit"], 0, 15) if "bit" in fields else None
    length = _int_field("len", fields["len"], 1, MAX_REGISTERS) if "len" in fields else 0
    scale = _float_field("scale", fields["scale"]) if "scale" in fields else 1.0
    offset = _float_field("offset", fields["offset"]) if "offset" in fields else 0.0
    if scale == 0.0:
        raise ValueError("scale=0 would lose every value")
    if table in BIT_TABLES:
        extra = [k for k in ("bit", "len", "scale", "offset", "order") if k in fields]
        if dtype != "bool" or extra:
            raise ValueError(
                f"{_TABLE_NAMES[table]} hold single bits: type=bool only, no "
                + ", ".join(extra or ["type"])
            )
    if bit is not None and dtype not in ("bool", "uint16", "int16"):
        raise ValueError(f"bit= reads one bit of a register: type={dtype} does not apply")
    if bit is not None:
        dtype = "bool"
    if dtype == "string":
        if not length:
            raise ValueError("type=string needs len=N (registers, two characters each)")
        if order not in ("ABCD", "BADC"):
            raise ValueError("strings take order=ABCD or order=BADC (byte swap) only")
    elif length:
        raise ValueError("len= applies to type=string only")
    if dtype in ("bool", "string") and (scale != 1.0 or offset != 0.0):
        raise ValueError(f"scale/offset do not apply to type={dtype}")
    return ModbusAddress(
        unit=unit,
        table=table,
        address=address,
        type=dtype,
        order=order,
        bit=bit,
        length=length,
        scale=scale,
        offset=offset,
    )


# --------------------------------------------------------------------------- settings


def _endpoint(name: str, endpoint: str) -> tuple[str, int]:
    text = endpoint.strip()
    if "://" not in text:
        raise ConnectorError(
            f"connection {name!r}: endpoint {endpoint!r} is not modbus://host:port or "
            "tcp://host:port"
        )
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("modbus", "tcp", "modbus+tcp"):
        raise ConnectorError(
            f"connection {name!r}: endpoint {endpoint!r}: scheme {parts.scheme!r} is not "
            "modbus:// or tcp://"
        )
    try:
        port = parts.port or 502
    except ValueError as exc:
        raise ConnectorError(f"connection {name!r}: endpoint {endpoint!r}: {exc}") from exc
    if not parts.hostname:
        raise ConnectorError(f"connection {name!r}: endpoint {endpoint!r} names no host")
    return parts.hostname, port


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    """The connection options of a Modbus connector, validated (see the module doc)."""

    poll_ms: float = 1000.0
    unit: int = 1
    max_gap: int = 10
    max_registers: int = MAX_REGISTERS
    max_bits: int = MAX_BITS
    timeout_s: float = 2.0
    retries: int = 1
    unit_backoff_initial_s: float = 1.0
    unit_backoff_max_s: float = 60.0
    report_by_exception: bool = False
    heartbeat_polls: int = 10
    flush_interval_ms: float = 100.0
    flush_rows: int = 10_000
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> ModbusSettings:
        """Validate ``options``; errors name the connection."""
        where = f"connection {name!r}"
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConnectorError(f"{where}: unknown Modbus option(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, value in options.items():
            default = cls.__dataclass_fields__[key].default
            try:
                if isinstance(default, bool):
                    values[key] = _as_bool(value)
                elif isinstance(default, int):
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError(f"{value!r} is not an integer")
                    values[key] = int(value)
                else:
                    values[key] = float(value)
            except (TypeError, ValueError) as exc:
                raise ConnectorError(f"{where}: option {key}={value!r}: {exc}") from exc
        s = cls(**values)
        checks = (
            (s.poll_ms > 0, "poll_ms must be > 0"),
            (0 <= s.unit <= 255, "unit must be within 0…255"),
            (s.max_gap >= 0, "max_gap must be >= 0"),
            (1 <= s.max_registers <= MAX_REGISTERS, f"max_registers must be 1…{MAX_REGISTERS}"),
            (1 <= s.max_bits <= MAX_BITS, f"max_bits must be 1…{MAX_BITS}"),
            (s.timeout_s > 0, "timeout_s must be > 0"),
            (s.retries >= 0, "retries must be >= 0"),
            (s.heartbeat_polls >= 1, "heartbeat_polls must be >= 1"),
            (s.unit_backoff_initial_s > 0, "unit_backoff_initial_s must be > 0"),
            (s.reconnect_initial_s > 0, "reconnect_initial_s must be > 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ConnectorError(f"{where}: {message}")
        return s


# --------------------------------------------------------------------------- polling plan


@dataclass(slots=True)
class _Point:
    """One configured point and what was last yielded for it."""

    spec: PointSpec
    addr: ModbusAddress
    last_value: Any = None
    last_quality: int | None = None
    unchanged_polls: int = 0


@dataclass(slots=True)
class _Request:
    """One read request of a poll group: a span of one table and the points in it."""

    table: Table
    start: int
    count: int
    points: list[_Point]
    split: bool = False
    state: str = "ok"  # "ok" or the last error text, to log changes only

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(slots=True)
class _Group:
    """The points of one unit id polled at one period."""

    unit: int
    period_s: float
    requests: list[_Request] = field(default_factory=list)


@dataclass(slots=True)
class _Unit:
    """Health of one unit id: a unit that does not answer is backed off."""

    backoff: Backoff
    retry_at: float = 0.0
    failing: bool = False
    answered: bool = False  # its last request got a response (of any kind)


def _plan(
    points: Sequence[_Point], max_gap: int, max_registers: int, max_bits: int
) -> list[_Request]:
    """Coalesce ``points`` (of one unit) into as few requests as the limits allow."""
    requests: list[_Request] = []
    for table in TABLES:
        limit = max_bits if table in BIT_TABLES else max_registers
        gap = max_gap * 16 if table in BIT_TABLES else max_gap  # the same bytes on the wire
        mine = sorted(
            (p for p in points if p.addr.table == table),
            key=lambda p: (p.addr.address, -p.addr.width),
        )
        current: _Request | None = None
        for p in mine:
            a, w = p.addr.address, p.addr.width
            if current is not None:
                new_end = max(current.end, a + w)
                if a - current.end <= gap and new_end - current.start <= limit:
                    current.count = new_end - current.start
                    current.points.append(p)
                    continue
            current = _Request(table=table, start=a, count=w, points=[p])
            requests.append(current)
    return requests


def _split(request: _Request) -> list[_Request]:
    """One request per point (after a bridged request hit an illegal address)."""
    return [
        _Request(
            table=request.table,
            start=p.addr.address,
            count=p.addr.width,
            points=[p],
            split=True,
            state=request.state,
        )
        for p in request.points
    ]


_INT64_MAX = 2**63 - 1


def _coerce(value: Any, data_type: str) -> Any:
    """``value`` typed as the signal's data type where that is an obvious step.

    A ``uint64`` beyond the int64 range of the value column is delivered as a float.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > _INT64_MAX:
        return float(value)
    if data_type == "float" and isinstance(value, int | float):
        return float(value)
    if data_type == "int":
        if isinstance(value, bool | int):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if data_type == "bool" and isinstance(value, int | float):
        return bool(value)
    if data_type in ("string", "json") and not isinstance(value, str):
        return str(value)
    return value


class _ConnectionLost(Exception):  # noqa: N818 - internal signal, never leaves the module
    pass


class _RequestFailed(Exception):  # noqa: N818 - internal signal, never leaves the module
    def __init__(self, text: str, quality: Quality, code: int = 0, no_answer: bool = False):
        super().__init__(text)
        self.quality = quality
        self.code = code
        self.no_answer = no_answer


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the device running and the endpoint right?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ModbusException):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- connector


class ModbusConnector(Connector):
    """Polls a Modbus TCP device (or gateway) and writes setpoints back.

    See the module documentation for the address syntax and the options.
    """

    protocol = "modbus"

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
        super().__init__(
            name,
            endpoint,
            points,
            options,
            dead_letter_sink=dead_letter_sink,
            event_sink=event_sink,
        )
        self.settings = ModbusSettings.from_options(name, self.options)
        self.host, self.port = _endpoint(name, endpoint)
        self._outbox = Outbox(
            self.status, self.settings.flush_interval_ms / 1000.0, self.settings.flush_rows
        )
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._units: dict[int, _Unit] = {}
        self._points: list[_Point] = []
        self.requests_total = 0
        """Read requests sent so far (for diagnostics and tests)."""
        seen: set[str] = set()
        for p in self.points:
            if p.address in seen:
                raise ConnectorError(f"connection {name!r}: point {p.address!r} is listed twice")
            seen.add(p.address)
            try:
                addr = parse_address(p.address, self.settings.unit)
            except ValueError as exc:
                raise ConnectorError(f"connection {name!r}: point {p.address!r}: {exc}") from None
            self._points.append(_Point(spec=p, addr=addr))
        self.groups = self._build_groups()

    def _build_groups(self) -> list[_Group]:
        s = self.settings
        by_key: dict[tuple[int, float], list[_Point]] = {}
        for p in self._points:
            raw = p.spec.options.get("poll_ms", s.poll_ms)
            try:
                period_ms = float(raw)
            except (TypeError, ValueError):
                period_ms = -1.0
            if not period_ms > 0:
                raise ConnectorError(
                    f"connection {self.name!r}: point {p.spec.address!r}: poll_ms={raw!r} "
                    "is not a positive number"
                )
            by_key.setdefault((p.addr.unit, period_ms / 1000.0), []).append(p)
        groups = []
        for (unit, period), pts in sorted(by_key.items()):
            group = _Group(unit=unit, period_s=period)
            group.requests = _plan(pts, s.max_gap, s.max_registers, s.max_bits)
            groups.append(group)
            self._units.setdefault(
                unit,
                _Unit(Backoff(initial=s.unit_backoff_initial_s, maximum=s.unit_backoff_max_s)),
            )
        return groups

    def _where(self) -> str:
        return f"connection {self.name!r} (modbus://{self.host}:{self.port})"

    # ----------------------------------------------------------------- public API

    async def run(self, sink: BatchSink) -> None:
        """Connect and poll until cancelled, delivering batches; reconnect on failures."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._outbox.run(sink), name=f"modbus[{self.name}].flush")
                tg.create_task(self._supervise(), name=f"modbus[{self.name}].supervisor")
        finally:
            client, self._client = self._client, None
            if client is not None:
                client.close()
            await self._outbox.flush(sink)
            self._set_state("stopped")

    async def write(self, address: str, value: Any) -> None:
        """Write ``value`` to a coil or holding register(s) given in the address syntax.

        Coils take ``write_coil``; a 16-bit register ``write_register``; wider types
        ``write_registers`` encoded with the address's type, order, scale and offset; a
        ``bit=`` of a holding register is read, modified and written under the request lock.
        """
        where = f"{self._where()}: write {address}"
        try:
            addr = parse_address(address, self.settings.unit)
        except ValueError as exc:
            raise ConnectorError(f"{where}: {exc}") from None
        if addr.table not in WRITABLE_TABLES:
            raise ConnectorError(
                f"{where}: {_TABLE_NAMES[addr.table]} are read-only (write coils or holding "
                "registers)"
            )
        try:
            registers = [] if addr.table == "coil" or addr.bit is not None else addr.encode(value)
            flag = _as_bool(value) if addr.table == "coil" or addr.bit is not None else False
        except (TypeError, ValueError) as exc:
            raise ConnectorError(f"{where}: {exc}") from None
        client = self._client
        if client is None or self.status.state != "connected":
            raise ConnectorError(f"{where}: not connected")
        u = addr.unit
        try:
            async with self._lock, asyncio.timeout(self._request_deadline()):
                if addr.table == "coil":
                    rr = await client.write_coil(addr.address, flag, device_id=u)
                elif addr.bit is not None:
                    rr = await client.read_holding_registers(addr.address, count=1, device_id=u)
                    if not rr.isError():
                        word = int(rr.registers[0])
                        mask = 1 << addr.bit
                        word = (word | mask) if flag else (word & ~mask)
                        rr = await client.write_register(addr.address, word, device_id=u)
                elif len(registers) == 1:
                    rr = await client.write_register(addr.address, registers[0], device_id=u)
                else:
                    rr = await client.write_registers(addr.address, registers, device_id=u)
        except (ModbusException, OSError, TimeoutError) as exc:
            raise ConnectorError(f"{where}: {_describe(exc)}") from exc
        if rr.isError():
            raise ConnectorError(f"{where}: device answered {_exception_text(rr.exception_code)}")

    # ----------------------------------------------------------------- supervision

    def _set_state(self, state: ConnectorState, error: str | None = None) -> None:
        if not self.status.set_state(state, error):
            return
        if state == "connected":
            logger.info("Modbus %s: connected", self._where())
        elif state in ("disconnected", "failed"):
            logger.warning("Modbus %s", error)
        elif state == "stopped":
            logger.info("Modbus %s: stopped", self._where())

    def _request_deadline(self) -> float:
        s = self.settings
        return s.timeout_s * (s.retries + 1) + 1.0

    async def _supervise(self) -> None:
        s = self.settings
        backoff = Backoff(initial=s.reconnect_initial_s, maximum=s.reconnect_max_s)
        while True:
            try:
                await self._session(backoff)
            except ConnectionFailed as exc:
                self._set_state("disconnected", str(exc))
            except Exception as exc:  # a bug or an unexpected library error: keep going
                logger.exception("Modbus %s: unexpected error", self._where())
                self._set_state("disconnected", f"{self._where()}: {_describe(exc)}")
            await backoff.sleep()
            self.status.reconnects += 1

    async def _connect(self) -> AsyncModbusTcpClient:
        s = self.settings
        lost = self._lost = asyncio.Event()

        def on_connect(connected: bool) -> None:
            if not connected:
                lost.set()

        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=s.timeout_s,
            retries=s.retries,
            reconnect_delay=0,  # the supervisor reconnects, with its own backoff
            trace_connect=on_connect,
        )
        try:
            ok = await client.connect()
        except Exception as exc:
            client.close()
            raise ConnectionFailed(f"{self._where()}: {_describe(exc)}") from exc
        if not ok or not client.connected:
            client.close()
            raise ConnectionFailed(
                f"{self._where()}: cannot connect (refused, unreachable or no answer within "
                f"{s.timeout_s:g} s; is the device running and the endpoint right?)"
            )
        return client

    async def _session(self, backoff: Backoff) -> None:
        """One TCP connection: connect, poll every group until the connection is lost."""
        client = await self._connect()
        self._client = client
        for unit in self._units.values():
            unit.answered = False
        reason: list[str] = []
        try:
            self._set_state("connected")
            backoff.reset()
            try:
                async with asyncio.TaskGroup() as tg:
                    for i, group in enumerate(self.groups):
                        tg.create_task(
                            self._poll_loop(client, group, reason),
                            name=f"modbus[{self.name}].unit{group.unit}.{group.period_s:g}s.{i}",
                        )
                    tg.create_task(self._watch(), name=f"modbus[{self.name}].watch")
            except* _ConnectionLost:
                pass
            self._mark_disconnected()
            raise ConnectionFailed(
                f"{self._where()}: connection lost: {reason[0] if reason else 'closed by peer'}"
            )
        finally:
            self._client = None
            client.close()

    async def _watch(self) -> None:
        await self._lost.wait()
        raise _ConnectionLost

    def _mark_disconnected(self) -> None:
        ts = self.clock()
        for p in self._points:
            self._emit(p, ts, None, Quality.BAD_NOT_CONNECTED)
        self._outbox.flush_soon()

    # ----------------------------------------------------------------- polling

    async def _poll_loop(
        self, client: AsyncModbusTcpClient, group: _Group, reason: list[str]
    ) -> None:
        period = group.period_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self._poll_group(client, group, reason)
            self._outbox.flush_soon()
            next_at += period
            now = loop.time()
            if next_at < now:  # overran: skip the missed slots, no burst
                next_at += math.ceil((now - next_at) / period) * period
            await asyncio.sleep(next_at - now)

    async def _poll_group(
        self, client: AsyncModbusTcpClient, group: _Group, reason: list[str]
    ) -> None:
        unit = self._units[group.unit]
        i = 0
        while i < len(group.requests):
            req = group.requests[i]
            if unit.failing and time.monotonic() < unit.retry_at:
                # backed off: the other units of the connection go on
                self._mark(group.requests[i:], Quality.BAD_COMM_FAILURE)
                return
            try:
                words, ts = await self._read(client, group.unit, req, reason)
            except _RequestFailed as exc:
                if exc.code == 2 and len(req.points) > 1 and not req.split:
                    logger.info(
                        "Modbus %s: unit %d %s %d…%d: illegal address in a bridged request; "
                        "reading its %d points one by one",
                        self._where(),
                        group.unit,
                        _TABLE_NAMES[req.table],
                        req.start,
                        req.end - 1,
                        len(req.points),
                    )
                    group.requests[i : i + 1] = _split(req)
                    continue
                self._request_failed(group.unit, req, exc)
                if exc.no_answer:
                    self._unit_failed(group.unit, unit, str(exc))
                    self._mark(group.requests[i + 1 :], Quality.BAD_COMM_FAILURE)
                    return
                i += 1
                continue
            self._unit_ok(group.unit, unit)
            self._request_ok(group.unit, req)
            for p in req.points:
                offset = p.addr.address - req.start
                value = p.addr.decode(words[offset : offset + p.addr.width])
                self._emit(p, ts, _coerce(value, p.spec.data_type), Quality.GOOD)
            i += 1

    async def _read(
        self, client: AsyncModbusTcpClient, unit: int, req: _Request, reason: list[str]
    ) -> tuple[Sequence[int] | Sequence[bool], int]:
        if self._lost.is_set():
            raise _ConnectionLost
        call = {
            "coil": client.read_coils,
            "di": client.read_discrete_inputs,
            "ir": client.read_input_registers,
            "hr": client.read_holding_registers,
        }[req.table]
        try:
            async with self._lock:
                self.requests_total += 1
                async with asyncio.timeout(self._request_deadline()):
                    rr: ModbusPDU = await call(req.start, count=req.count, device_id=unit)
        except ConnectionException as exc:
            reason.append(_describe(exc))
            self._lost.set()
            raise _ConnectionLost from exc
        except (ModbusException, TimeoutError) as exc:
            if not client.connected:
                reason.append(_describe(exc))
                self._lost.set()
                raise _ConnectionLost from exc
            self._no_answer(client, unit)
            raise _RequestFailed(
                f"no answer ({_describe(exc)})", Quality.BAD_COMM_FAILURE, no_answer=True
            ) from exc
        self._units[unit].answered = True
        ts = self.clock()
        if rr.isError():
            code = int(rr.exception_code)
            raise _RequestFailed(
                _exception_text(code),
                quality_from_exception(code),
                code=code,
                no_answer=code in _GATEWAY_EXCEPTIONS,
            )
        words: Sequence[int] | Sequence[bool] = rr.bits if req.table in BIT_TABLES else rr.registers
        if len(words) < req.count:
            raise _RequestFailed(
                f"short answer ({len(words)} of {req.count} values)", Quality.BAD_COMM_FAILURE
            )
        return words, ts

    def _no_answer(self, client: AsyncModbusTcpClient, unit: int) -> None:
        """Keep pymodbus from closing a live connection over silent units.

        pymodbus closes the connection after ``retries + 3`` consecutive requests without a
        response, whichever units they were for, so that a few silent units behind a
        gateway, asked one after the other, would cut off the healthy ones. While another
        unit of this connection answered its last request the link is alive: the silent
        unit is backed off on its own and pymodbus's count starts over. When no unit
        answers, pymodbus's rule applies (the connection is closed and reopened).
        """
        self._units[unit].answered = False
        if not any(u.answered for uid, u in self._units.items() if uid != unit):
            return
        ctx = getattr(client, "ctx", None)  # pymodbus's transaction manager
        limit = getattr(ctx, "max_until_disconnect", None)
        if isinstance(limit, int) and hasattr(ctx, "count_until_disconnect"):
            ctx.count_until_disconnect = limit  # type: ignore[union-attr]

    def _request_failed(self, unit: int, req: _Request, exc: _RequestFailed) -> None:
        text = str(exc)
        if req.state != text:
            req.state = text
            logger.warning(
                "Modbus %s: unit %d %s %d…%d (%d point(s)): %s",
                self._where(),
                unit,
                _TABLE_NAMES[req.table],
                req.start,
                req.end - 1,
                len(req.points),
                text,
            )
        ts = self.clock()
        for p in req.points:
            self._emit(p, ts, None, exc.quality)

    def _mark(self, requests: Sequence[_Request], quality: Quality) -> None:
        """A bad row for the points of ``requests`` (where their quality changes)."""
        ts = self.clock()
        for req in requests:
            for p in req.points:
                self._emit(p, ts, None, quality)

    def _request_ok(self, unit: int, req: _Request) -> None:
        if req.state != "ok":
            logger.info(
                "Modbus %s: unit %d %s %d…%d: read again",
                self._where(),
                unit,
                _TABLE_NAMES[req.table],
                req.start,
                req.end - 1,
            )
            req.state = "ok"

    def _unit_failed(self, unit_id: int, unit: _Unit, text: str) -> None:
        delay = unit.backoff.next_delay()
        unit.retry_at = time.monotonic() + delay
        if not unit.failing:
            unit.failing = True
            logger.warning(
                "Modbus %s: unit %d does not answer (%s); backing off",
                self._where(),
                unit_id,
                text,
            )

    def _unit_ok(self, unit_id: int, unit: _Unit) -> None:
        if unit.failing:
            unit.failing = False
            unit.backoff.reset()
            logger.info("Modbus %s: unit %d answers again", self._where(), unit_id)

    def _emit(self, p: _Point, ts: int, value: Any, quality: int) -> None:
        """Append one reading, honouring report-by-exception and bad-once semantics."""
        changed = quality != p.last_quality or value != p.last_value
        if quality != Quality.GOOD:
            if not changed:
                return  # one bad row per change of state, not one per poll
        elif not changed and self.settings.report_by_exception:
            p.unchanged_polls += 1
            if p.unchanged_polls < self.settings.heartbeat_polls:
                return
        p.unchanged_polls = 0
        p.last_value = value
        p.last_quality = quality
        self._outbox.append(self.name, p.spec.address, ts, value, quality)

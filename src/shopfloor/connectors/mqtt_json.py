"""Plain JSON over MQTT: the many devices that publish their own little JSON documents.

One MQTT session per connection subscribes once per distinct topic filter of its points and
turns every message into readings (:class:`~shopfloor.edge.batch.RawBatch` rows) and dead
letters (:data:`~shopfloor.edge.deadletter.DEAD_LETTER_SCHEMA`).

Endpoint: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``.

Point addresses
---------------

A point's address is a **topic pattern** and a **field path**, separated by ``::``
(``#`` is MQTT's multi-level wildcard, so it is not used as a separator)::

    plant/{line}/+/{machine}/telemetry::sensors.temperature
    plant/+/status::$
    plant/{line}/{machine}/counters::spindles[2].rpm
    line-3/oven/zone-1/temp                      (no ``::`` – the whole payload, ``$``)

Topic pattern levels are literals, ``+`` (one level), ``#`` (the rest, last level only) or a
**named segment** ``{name}``, which matches one level like ``+`` and captures it. As in MQTT,
a wildcard in the first level does not match topics starting with ``$``. The first ``::``
separates; no spaces around it (the address is emitted as written).

``PointSpec.data_type`` ``auto`` (besides ``float|int|bool|string|json``) keeps each JSON
value's own type.

The field path is ``$`` (the whole payload, for scalar payloads) or a dotted path with array
indexes, optionally after ``$.``: ``a.b[2].c``, ``$.values[0]``, ``[1].x`` (object keys
cannot contain ``.``, ``[`` or ``]``).

One pattern covers many devices: the **address of an emitted row** is the point's address
with every wildcard level (``+``, ``{name}``, ``#``) replaced by the concrete topic's
level(s), e.g. the point ``plant/{line}/{machine}/telemetry::temperature`` emits
``plant/line-1/press-7/telemetry::temperature``. Bind these concrete addresses in the
mapper; :meth:`MqttJsonConnector.describe` tells what an unbound one is.

Structured form: when the point's options hold ``topic``, the topic pattern is taken from
there and the field from ``field`` (default ``$``); the address is then free text in which
``{name}`` placeholders are replaced by the captured segments (e.g. address
``{machine}/temperature`` with ``topic: plant/{line}/{machine}/telemetry``).

Point options (``PointSpec.options``)
-------------------------------------

``topic``, ``field``
    The structured form (see above).
``each`` (default false)
    The payload (``true``) or the field at this path (a string) is a JSON array of samples,
    e.g. ``[{"ts": …, "value": …}, …]``; ``field`` and ``ts_field`` are then relative to
    each element and every element becomes a row.
``ts_field``, ``ts_format`` (``iso8601`` default, ``epoch_s``, ``epoch_ms``, ``epoch_us``,
``epoch_ns``), ``ts_timezone``
    Where the sample's time is. ISO 8601 timestamps must carry a zone (``Z`` or an offset);
    naive ones are a dead letter unless ``ts_timezone`` (an IANA name) says which zone they
    are in. Epoch values may be numbers or numeric strings. Without ``ts_field`` the
    receive time is used.
``scale`` (default 1), ``offset`` (default 0)
    ``value * scale + offset`` for numeric values. This undoes the *payload's encoding*
    (e.g. a device sending tenths of a degree as integers); the mapper's binding may scale
    again into the signal's engineering unit – configure one or the other, not both, unless
    you mean to.
``optional`` (default false)
    A missing (or ``null``) field is skipped silently instead of being a dead letter.
``write_topic``
    Where :meth:`MqttJsonConnector.write` publishes ``{"value": …, "ts": …}``; may use the
    point's ``{name}`` segments.
``unit``
    The UN/CEFACT unit :meth:`MqttJsonConnector.describe` reports.

Values are typed from JSON (numbers → int/float, booleans, strings; objects and arrays
→ compact JSON text) and then checked against ``PointSpec.data_type``: ``float`` accepts
any number, ``int`` integral numbers, ``bool`` booleans, ``string`` strings, ``json``
anything (as JSON text); ``auto`` keeps the JSON value's own type. Integers outside the
64-bit range are dead letters.

Dead letters (location = the topic, payload = the raw bytes) are written for payloads that
are not JSON (one per message), and per point for a missing field, a value of the wrong
type, or a missing/bad timestamp (for ``each`` points, per element, named ``[i].field``);
the other points of the same message and later messages
keep flowing. Empty payloads (a retained message being cleared) are ignored.

Connection options
------------------

``client_id``, ``username``, ``password`` or ``password_env``, ``keepalive_s`` (default 30)
    MQTT session (``password_env`` names an environment variable).
``qos`` (default 0)
    QoS of the subscriptions and of writes.
``ca_certs``, ``certfile``, ``keyfile``, ``tls_insecure``
    TLS for ``mqtts://``.
``ts_timezone``
    Default ``ts_timezone`` of all points.
``flush_interval_ms`` (default 100), ``flush_rows`` (default 10000)
    Batching of readings and dead letters.
``reconnect_initial_s`` (default 0.5), ``reconnect_max_s`` (default 30)
    Reconnect backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiomqtt

from shopfloor.connectors.base import Backoff, BatchSink, Connector, PointInfo, PointSpec, TableSink
from shopfloor.edge.batch import RawBatchBuilder, to_us
from shopfloor.edge.deadletter import DeadLetterBuilder
from shopfloor.errors import ConnectorError

__all__ = [
    "FieldPath",
    "MqttJsonConnector",
    "MqttJsonSettings",
    "TopicPattern",
    "parse_field_path",
]

logger = logging.getLogger(__name__)

SEPARATOR = "::"
"""Separates the topic pattern from the field path in a point address."""

TS_FORMATS = ("iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns")
DATA_TYPES = ("float", "int", "bool", "string", "json", "auto")
_POINT_OPTIONS = frozenset(
    {
        "topic",
        "field",
        "each",
        "ts_field",
        "ts_format",
        "ts_timezone",
        "scale",
        "offset",
        "optional",
        "write_topic",
        "unit",
    }
)
_NAME = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MISSING: Any = object()

FieldPath = tuple[str | int, ...]
"""A parsed field path: object keys and array indexes; ``()`` is the whole payload."""


class _FieldError(Exception):
    """A problem with one field of one message (becomes a dead letter's reason)."""


# --------------------------------------------------------------------------- topic patterns


class TopicPattern:
    """An MQTT topic filter whose one-level wildcards may be named (``{name}``).

    :meth:`match` returns the concrete levels each wildcard level matched (or None); the
    MQTT rules apply: ``+`` matches one (possibly empty) level, ``#`` the parent and any
    number of levels below it, and wildcards in the first level skip ``$`` topics.
    """

    __slots__ = ("filter", "levels", "names", "text")

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("the topic pattern is empty")
        self.text = text
        levels = text.split("/")
        kinds: list[tuple[str, str | None]] = []  # ("lit", text) | ("one", name) | ("all", None)
        names: list[str] = []
        for i, level in enumerate(levels):
            named = _NAME.match(level)
            if level == "#":
                if i != len(levels) - 1:
                    raise ValueError(f"'#' must be the last level of {text!r}")
                kinds.append(("all", None))
            elif level == "+":
                kinds.append(("one", None))
            elif named:
                name = named.group(1)
                if name in names:
                    raise ValueError(f"segment {{{name}}} appears twice in {text!r}")
                names.append(name)
                kinds.append(("one", name))
            elif any(c in level for c in "+#{}"):
                raise ValueError(
                    f"level {level!r} of {text!r} mixes text and a wildcard "
                    "(use a whole level: +, # or {name})"
                )
            else:
                kinds.append(("lit", level))
        self.levels = tuple(kinds)
        self.names = tuple(names)
        self.filter = "/".join(
            "#" if k == "all" else "+" if k == "one" else str(v) for k, v in kinds
        )
        """The MQTT subscription filter (named segments become ``+``)."""

    def match(self, topic: str) -> list[str] | None:
        """The concrete text of each wildcard level (``#`` → the rest), or None."""
        parts = topic.split("/")
        if topic.startswith("$") and self.levels[0][0] != "lit":
            return None
        out: list[str] = []
        for i, (kind, value) in enumerate(self.levels):
            if kind == "all":
                out.append("/".join(parts[i:]))
                return out
            if i >= len(parts):
                return None
            if kind == "one":
                out.append(parts[i])
            elif parts[i] != value:
                return None
        return out if len(parts) == len(self.levels) else None

    def captures(self, wildcards: Sequence[str]) -> dict[str, str]:
        """The named segments' values from :meth:`match`'s result."""
        values = iter(wildcards)
        out: dict[str, str] = {}
        for kind, value in self.levels:
            if kind == "lit":
                continue
            w = next(values)
            if kind == "one" and value is not None:
                out[value] = w
        return out

    def fill(self, wildcards: Sequence[str]) -> str:
        """The concrete topic: each wildcard level replaced by what it matched."""
        values = iter(wildcards)
        parts: list[str] = []
        for kind, value in self.levels:
            if kind == "lit":
                parts.append(str(value))
            else:
                w = next(values)
                if kind == "all" and w == "" and parts:
                    continue  # '#' matched the parent level itself
                parts.append(w)
        return "/".join(parts)


def parse_field_path(text: str) -> FieldPath:
    """``$``, ``a.b[2].c``, ``$.a[0]`` or ``[1].x`` as keys and indexes (ValueError if bad)."""
    s = text
    if s in ("", "$"):
        return ()
    if s.startswith("$."):
        s = s[2:]
    elif s.startswith("$["):
        s = s[1:]
    out: list[str | int] = []
    i = 0
    expect_key = True
    while i < len(s):
        c = s[i]
        if c == "[":
            end = s.find("]", i)
            inner = s[i + 1 : end] if end > 0 else ""
            if end < 0 or not inner.isdigit():
                raise ValueError(f"field path {text!r}: bad array index at {s[i:]!r}")
            out.append(int(inner))
            i = end + 1
            expect_key = False
        elif c == ".":
            if expect_key:
                raise ValueError(f"field path {text!r}: empty key")
            i += 1
            expect_key = True
            if i == len(s):
                raise ValueError(f"field path {text!r}: ends with '.'")
        else:
            if not expect_key:
                raise ValueError(f"field path {text!r}: expected '.' or '[' at {s[i:]!r}")
            j = i
            while j < len(s) and s[j] not in ".[]":
                j += 1
            if j == i:
                raise ValueError(f"field path {text!r}: unexpected {s[i]!r}")
            out.append(s[i:j])
            i = j
            expect_key = False
    return tuple(out)


def _get(doc: Any, path: FieldPath) -> Any:
    """The value at ``path`` or :data:`_MISSING`; raises _FieldError on a type mismatch."""
    cur = doc
    for i, part in enumerate(path):
        if isinstance(part, int):
            if not isinstance(cur, list):
                if cur is None:
                    return _MISSING
                raise _FieldError(f"{_render(path[:i]) or '$'} is not an array")
            if part >= len(cur):
                return _MISSING
            cur = cur[part]
        else:
            if not isinstance(cur, dict):
                if cur is None:
                    return _MISSING
                raise _FieldError(f"{_render(path[:i]) or '$'} is not an object")
            if part not in cur:
                return _MISSING
            cur = cur[part]
    return cur


def _render(path: FieldPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "json"


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
        with contextlib.suppress(ValueError):
            f = float(value)
            return f if math.isfinite(f) else None
    return None


def _int64(value: int) -> int:
    """``value`` if it fits the historian's 64-bit integers; raises _FieldError."""
    if not -(2**63) <= value < 2**63:
        raise _FieldError(f"is {value}, out of the 64-bit integer range")
    return value


def _parse_ts(value: Any, fmt: str, tz: tzinfo | None) -> int:
    """Microseconds since the epoch of a payload timestamp; raises _FieldError."""
    if fmt == "iso8601":
        if not isinstance(value, str):
            raise _FieldError(f"is not an ISO 8601 string ({_json_text(value)})")
        try:
            ts = datetime.fromisoformat(value)
        except ValueError as exc:
            raise _FieldError(f"{value!r} is not ISO 8601") from exc
        if ts.tzinfo is None:
            if tz is None:
                raise _FieldError(
                    f"naive ISO 8601 timestamp {value!r} has no time zone (set ts_timezone)"
                )
            ts = ts.replace(tzinfo=tz)
        return to_us(ts)
    n = _number(value)
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        raise _FieldError(f"is not an epoch number ({_json_text(value)})")
    if isinstance(n, int):
        us = {"epoch_s": n * 1_000_000, "epoch_ms": n * 1000, "epoch_us": n}.get(fmt, n // 1000)
    else:
        factor = {"epoch_s": 1e6, "epoch_ms": 1e3, "epoch_us": 1.0, "epoch_ns": 1e-3}[fmt]
        us = round(n * factor)
    if not -(2**63) <= us < 2**63:
        raise _FieldError(f"{value} is out of range")
    return us


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class MqttJsonSettings:
    """The connection options of a JSON-over-MQTT connector, validated (see the module)."""

    host: str
    port: int
    tls: bool = False
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    qos: int = 0
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    ts_timezone: str | None = None
    flush_interval_ms: float = 100.0
    flush_rows: int = 10_000
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    @classmethod
    def from_options(cls, name: str, endpoint: str, options: Mapping[str, Any]) -> MqttJsonSettings:
        """Validate ``endpoint`` and ``options``; errors name the connection."""
        where = f"connection {name!r}"
        parts = urlsplit(endpoint)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConnectorError(
                f"{where}: endpoint {endpoint!r} is not mqtt://host:port or mqtts://host:port"
            )
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConnectorError(f"{where}: endpoint {endpoint!r} has a bad port") from exc
        known = (set(cls.__dataclass_fields__) - {"host", "port", "tls"}) | {"password_env"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConnectorError(f"{where}: unknown MQTT option(s) {', '.join(unknown)}")
        opts: dict[str, Any] = dict(options)
        env = opts.pop("password_env", None)
        if env is not None and opts.get("password") is None:
            if env not in os.environ:
                raise ConnectorError(
                    f"{where}: environment variable {env!r} (password_env) is not set"
                )
            opts["password"] = os.environ[env]
        try:
            for key in (
                "flush_interval_ms",
                "reconnect_initial_s",
                "reconnect_max_s",
            ):
                if key in opts:
                    opts[key] = float(opts[key])
            for key in ("keepalive_s", "qos", "flush_rows"):
                if key in opts:
                    opts[key] = int(opts[key])
        except (TypeError, ValueError) as exc:
            raise ConnectorError(f"{where}: {exc}") from exc
        if opts.get("qos", 0) not in (0, 1, 2):
            raise ConnectorError(f"{where}: qos must be 0, 1 or 2")
        if "tls_insecure" in opts:
            opts["tls_insecure"] = bool(opts["tls_insecure"])
        if opts.get("ts_timezone") is not None:
            _zone(where, str(opts["ts_timezone"]))
        return cls(host=parts.hostname, port=port, tls=tls, **opts)


def _zone(where: str, name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConnectorError(f"{where}: ts_timezone {name!r} is not a known time zone") from exc


@dataclass(frozen=True, slots=True)
class _Point:
    """One configured point, parsed."""

    spec: PointSpec
    pattern: TopicPattern
    path: FieldPath
    template: str | None  # structured form: the address with {name} placeholders
    each: FieldPath | None
    ts_path: FieldPath | None
    ts_format: str
    tz: tzinfo | None
    scale: float | int
    offset: float | int
    optional: bool
    write_topic: str | None
    unit: str | None

    @property
    def name(self) -> str:
        """The signal name :meth:`MqttJsonConnector.describe` reports."""
        keys = [p for p in self.path if isinstance(p, str)]
        if keys:
            return keys[-1]
        lits = [str(v) for k, v in self.pattern.levels if k == "lit" and v]
        return lits[-1] if lits else "value"

    def address(self, wildcards: Sequence[str]) -> str:
        """The concrete address of a row from a topic that matched with ``wildcards``."""
        if self.template is None:
            return self.pattern.fill(wildcards) + self.spec.address[len(self.pattern.text) :]
        return _fill_placeholders(self.template, self.pattern.captures(wildcards))

    def match_address(self, address: str) -> dict[str, str] | None:
        """The captured segments if ``address`` is one this point emits, else None."""
        if address == self.spec.address:
            return {}
        if self.template is None:
            suffix = self.spec.address[len(self.pattern.text) :]
            if not address.endswith(suffix):
                return None
            wild = self.pattern.match(address[: len(address) - len(suffix)])
            return None if wild is None else self.pattern.captures(wild)
        regex, seen = "", set()
        for m in re.finditer(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|[^{]+|\{", self.template):
            name = m.group(1)
            if name is None:
                regex += re.escape(m.group(0))
            elif name in seen:
                regex += f"(?P={name})"
            else:
                seen.add(name)
                regex += f"(?P<{name}>[^/]+)"

        found = re.fullmatch(regex, address)
        return None if found is None else found.groupdict()


def _parse_point(conn: str, spec: PointSpec, default_tz: str | None) -> _Point:
    where = f"connection {conn!r}, point {spec.address!r}"
    opts = dict(spec.options)
    unknown = sorted(set(opts) - _POINT_OPTIONS)
    if unknown:
        raise ConnectorError(
            f"{where}: unknown option(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_POINT_OPTIONS))})"
        )
    if spec.data_type not in DATA_TYPES:
        raise ConnectorError(
            f"{where}: data_type {spec.data_type!r} is not one of {', '.join(DATA_TYPES)}"
        )
    template: str | None = None
    try:
        if opts.get("topic") is not None:
            topic_text = str(opts["topic"]).strip()
            field_text = str(opts.get("field", "$"))
            template = spec.address
        else:
            if "field" in opts:
                raise ConnectorError(
                    f"{where}: option 'field' needs option 'topic' (or write "
                    f"'<topic>{SEPARATOR}<field>' as the address)"
                )
            topic_text, sep, field_text = spec.address.partition(SEPARATOR)
            if topic_text != topic_text.strip() or field_text != field_text.strip():
                raise ConnectorError(
                    f"{where}: no spaces around '{SEPARATOR}' in an address "
                    "(rows are emitted under the address as written)"
                )
            if not sep:
                field_text = "$"
        pattern = TopicPattern(topic_text)
        path = parse_field_path(field_text)
        each_opt = opts.get("each", False)
        each: FieldPath | None
        if each_opt is True:
            each = ()
        elif each_opt in (False, None):
            each = None
        elif isinstance(each_opt, str):
            each = parse_field_path(each_opt)
        else:
            raise ValueError("each must be true, false or a field path")
        ts_path = parse_field_path(str(opts["ts_field"])) if opts.get("ts_field") else None
    except ValueError as exc:
        raise ConnectorError(f"{where}: {exc}") from exc
    if template is not None:
        for name in _PLACEHOLDER.findall(template):
            if name not in pattern.names:
                raise ConnectorError(
                    f"{where}: address uses {{{name}}}, which topic {pattern.text!r} does not "
                    "capture"
                )
    ts_format = str(opts.get("ts_format", "iso8601"))
    if ts_format not in TS_FORMATS:
        raise ConnectorError(
            f"{where}: ts_format {ts_format!r} is not one of {', '.join(TS_FORMATS)}"
        )
    tz_name = opts.get("ts_timezone", default_tz)
    tz = _zone(where, str(tz_name)) if tz_name else None
    scale, offset = opts.get("scale", 1), opts.get("offset", 0)
    for key, v in (("scale", scale), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConnectorError(f"{where}: {key} must be a number, not {v!r}")
    write_topic = opts.get("write_topic")
    if write_topic is not None:
        write_topic = str(write_topic)
        bad = [n for n in _PLACEHOLDER.findall(write_topic) if n not in pattern.names]
        if bad or any(c in write_topic for c in "+#"):
            raise ConnectorError(
                f"{where}: write_topic {write_topic!r} must be a concrete topic "
                f"(placeholders from {list(pattern.names)} allowed)"
            )
    return _Point(
        spec=spec,
        pattern=pattern,
        path=path,
        template=template,
        each=each,
        ts_path=ts_path,
        ts_format=ts_format,
        tz=tz,
        scale=scale,
        offset=offset,
        optional=bool(opts.get("optional", False)),
        write_topic=write_topic,
        unit=str(opts["unit"]) if opts.get("unit") else None,
    )


def _fill_placeholders(template: str, caps: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced by ``caps[name]`` (unknown ones kept)."""
    return _PLACEHOLDER.sub(lambda m: caps.get(m.group(1), m.group(0)), template)


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, aiomqtt.MqttCodeError):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and the endpoint right?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- connector


class MqttJsonConnector(Connector):
    """Reads JSON payloads from MQTT topics (see the module documentation).

    ``dead_letter_sink`` receives dead-letter tables; without one, dead letters are logged
    (the first one per point, and the first non-JSON payload) and counted in
    :attr:`dead_letters_total`.
    """

    protocol = "mqtt"

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
        self.settings = MqttJsonSettings.from_options(name, endpoint, self.options)
        self._points = [_parse_point(name, p, self.settings.ts_timezone) for p in self.points]
        self.filters: list[str] = list(dict.fromkeys(p.pattern.filter for p in self._points))
        """The distinct subscription filters (one subscription each)."""
        self.messages_total = 0
        self.dead_letters_total = 0
        self._builder = RawBatchBuilder()
        self._letters = DeadLetterBuilder()
        self._flush_now = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._seen_types: dict[str, str] = {}
        self._logged: set[str] = set()

    def _where(self) -> str:
        return f"connection {self.name!r} ({self.endpoint})"

    # ----------------------------------------------------------------- public API

    async def run(self, sink: BatchSink) -> None:
        """Subscribe and deliver batches until cancelled; reconnect on failures."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._flush_loop(sink), name=f"mqtt[{self.name}].flush")
                tg.create_task(self._supervise(), name=f"mqtt[{self.name}].supervisor")
        finally:
            self._client = None
            await self._flush(sink)
            self._set_state("stopped")

    def describe(self, address: str) -> PointInfo | None:
        """The signal behind a concrete address some point emits (or would emit).

        ``asset`` is the captured ``{machine}`` or ``{device}`` segment (else the last
        captured segment, else the connection name); ``name`` is the last key of the field
        path (the topic's last literal level for ``$``); ``data_type`` is the point's, or for
        ``auto`` points the type of the last value seen (``float`` before any).
        """
        for point in self._points:
            caps = point.match_address(address)
            if caps is None:
                continue
            asset = caps.get("machine") or caps.get("device")
            if asset is None:
                asset = next(reversed(caps.values()), None) if caps else None
            data_type = point.spec.data_type
            if data_type == "auto":
                data_type = self._seen_types.get(address, "float")
            return PointInfo(asset or self.name, point.name, data_type, point.unit)
        return None

    async def write(self, address: str, value: Any) -> None:
        """Publish ``{"value": value, "ts": <now, ISO 8601>}`` to the point's ``write_topic``.

        ``address`` is a point's address or a concrete address it emits (whose captured
        segments fill the ``write_topic``'s placeholders).
        """
        for point in self._points:
            caps = point.match_address(address)
            if caps is None:
                continue
            if point.write_topic is None:
                raise ConnectorError(
                    f"{self._where()}: write {address}: point {point.spec.address!r} has no "
                    "write_topic option"
                )
            missing = [n for n in _PLACEHOLDER.findall(point.write_topic) if n not in caps]
            if missing:
                raise ConnectorError(
                    f"{self._where()}: write {address}: give a concrete address (write_topic "
                    f"needs {', '.join(missing)})"
                )
            topic = _fill_placeholders(point.write_topic, caps)
            payload = _json_text(
                {"value": value, "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
            )
            client = self._client
            if client is None:
                raise ConnectorError(f"{self._where()}: not connected; cannot write {address}")
            try:
                await client.publish(topic, payload, qos=self.settings.qos)
            except aiomqtt.MqttError as exc:
                raise ConnectorError(
                    f"{self._where()}: write {address}: {_describe_exc(exc)}"
                ) from exc
            return
        raise ConnectorError(f"{self._where()}: write {address}: no point has this address")

    # ----------------------------------------------------------------- messages

    def _dead_letter(self, topic: str, kind: str, reason: str, payload: bytes) -> None:
        self.dead_letters_total += 1
        self._letters.add(self.name, reason, location=topic, payload=payload)
        if self.dead_letter_sink is None and kind not in self._logged:
            self._logged.add(kind)
            logger.warning(
                "MQTT %s: dead letter on %s: %s (further ones like it are counted, not logged)",
                self._where(),
                topic,
                reason,
            )
        self._flush_now.set()

    def _on_message(self, topic: str, payload: bytes, received_us: int | None = None) -> None:
        """Turn one message into rows and dead letters."""
        self.messages_total += 1
        now = self.clock() if received_us is None else received_us
        matches = [(p, w) for p in self._points if (w := p.pattern.match(topic)) is not None]
        if not matches or not payload:
            return
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            self._dead_letter(topic, "json", f"payload is not JSON: {exc}", payload)
            return
        for point, wild in matches:
            address = point.address(wild)
            if point.each is None:
                self._emit(point, address, topic, doc, payload, now, "")
                continue
            try:
                items = _get(doc, point.each)
            except _FieldError as exc:
                items = exc
            if not isinstance(items, list):
                where = _render(point.each) or "$"
                problem = (
                    str(items)
                    if isinstance(items, _FieldError)
                    else "is missing"
                    if items is _MISSING
                    else "is not an array"
                )
                self._dead_letter(
                    topic,
                    point.spec.address,
                    f"point {address!r}: field {where} (each) {problem}",
                    payload,
                )
                continue
            prefix = _render(point.each)
            for i, item in enumerate(items):
                self._emit(point, address, topic, item, payload, now, f"{prefix}[{i}]")
        if len(self._builder) >= self.settings.flush_rows:
            self._flush_now.set()

    def _emit(
        self,
        point: _Point,
        address: str,
        topic: str,
        doc: Any,
        payload: bytes,
        now: int,
        prefix: str,
    ) -> None:
        def field_name(path: FieldPath) -> str:
            rel = _render(path)
            if prefix:
                return f"{prefix}.{rel}" if rel and not rel.startswith("[") else prefix + rel
            return rel or "$"

        try:
            try:
                value = _get(doc, point.path)
            except _FieldError as exc:
                raise _FieldError(f"field {field_name(point.path)}: {exc}") from None
            if value is _MISSING or value is None:
                if point.optional:
                    return
                raise _FieldError(f"field {field_name(point.path)} is missing")
            try:
                value = self._typed(point, value, address)
            except _FieldError as exc:
                raise _FieldError(f"field {field_name(point.path)} {exc}") from None
            ts = now
            if point.ts_path is not None:
                try:
                    raw_ts = _get(doc, point.ts_path)
                except _FieldError as exc:
                    raise _FieldError(
                        f"timestamp field {field_name(point.ts_path)}: {exc}"
                    ) from None
                if raw_ts is _MISSING or raw_ts is None:
                    raise _FieldError(f"timestamp field {field_name(point.ts_path)} is missing")
                try:
                    ts = _parse_ts(raw_ts, point.ts_format, point.tz)
                except _FieldError as exc:
                    raise _FieldError(
                        f"timestamp field {field_name(point.ts_path)} ({point.ts_format}) {exc}"
                    ) from None
        except _FieldError as exc:
            self._dead_letter(topic, point.spec.address, f"point {address!r}: {exc}", payload)
            return
        self._builder.append(self.name, address, ts, value)

    def _typed(self, point: _Point, value: Any, address: str) -> Any:
        if point.scale != 1 or point.offset != 0:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _FieldError(f"is {_type_of(value)}, not a number (scale/offset set)")
            try:
                value = value * point.scale + point.offset
            except OverflowError as exc:
                raise _FieldError(f"is out of range after scale/offset ({exc})") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise _FieldError("is out of range after scale/offset")
        want = point.spec.data_type
        have = _type_of(value)
        if want == "auto":
            self._seen_types[address] = have
            if have == "int":
                return _int64(value)
            return _json_text(value) if have == "json" else value
        if want == "json":
            return _json_text(value)
        if want == "float" and have in ("int", "float"):
            return float(value)
        if want == "int" and (
            have == "int" or (have == "float" and math.isfinite(value) and value.is_integer())
        ):
            return _int64(int(value))
        if want == have:
            return _int64(value) if have == "int" else value
        shown = _json_text(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise _FieldError(f"is {have} ({shown}), expected {want}")

    # ----------------------------------------------------------------- delivery

    async def _flush_loop(self, sink: BatchSink) -> None:
        interval = self.settings.flush_interval_ms / 1000.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._flush_now.wait()
            self._flush_now.clear()
            await self._flush(sink)

    async def _flush(self, sink: BatchSink) -> None:
        if len(self._builder):
            batch = self._builder.build()
            self.status.values_total += len(batch)
            self.status.batches_total += 1
            await sink(batch)
        if len(self._letters):
            letters = self._letters.build()
            if self.dead_letter_sink is not None:
                await self.dead_letter_sink(letters)

    # ----------------------------------------------------------------- connection

    def _set_state(
        self, state: Literal["connected", "disconnected", "stopped"], error: str | None = None
    ) -> None:
        if self.status.set_state(state, error):
            if state == "connected":
                logger.info("MQTT %s: connected", self._where())
            elif state == "disconnected":
                logger.warning("MQTT %s: disconnected: %s", self._where(), error)

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.tls:
            return None
        ctx = ssl.create_default_context(cafile=s.ca_certs)
        if s.certfile:
            ctx.load_cert_chain(s.certfile, s.keyfile)
        if s.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _supervise(self) -> None:
        s = self.settings
        backoff = Backoff(s.reconnect_initial_s, s.reconnect_max_s)
        first = True
        while True:
            if not first:
                self.status.reconnects += 1
            first = False
            try:
                await self._session(backoff)
            except (aiomqtt.MqttError, OSError) as exc:  # OSError: e.g. TLS setup errors
                self._client = None
                self._set_state("disconnected", _describe_exc(exc))
            await backoff.sleep()

    async def _session(self, backoff: Backoff) -> None:
        s = self.settings
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            keepalive=s.keepalive_s,
            tls_context=self._tls_context(),
            timeout=10.0,
        )
        async with client:
            for topic_filter in self.filters:
                await client.subscribe(topic_filter, qos=s.qos)
            self._client = client
            self._set_state("connected")
            backoff.reset()
            try:
                async for message in client.messages:
                    payload = message.payload
                    raw = (
                        payload
                        if isinstance(payload, bytes)
                        else str(payload).encode()
                        if payload is not None
                        else b""
                    )
                    try:
                        self._on_message(str(message.topic), bytes(raw))
                    except Exception as exc:  # a bug must not end the session
                        logger.exception(
                            "MQTT %s: message on %s failed", self._where(), message.topic
                        )
                        self._dead_letter(
                            str(message.topic), "internal", f"internal error: {exc!r}", bytes(raw)
                        )
            finally:
                self._client = None

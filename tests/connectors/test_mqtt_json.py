"""JSON over MQTT connector: patterns and paths, and end to end against Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopfloor.connectors.base import PointInfo, PointSpec
from shopfloor.connectors.mqtt_json import MqttJsonConnector, TopicPattern, parse_field_path
from shopfloor.edge.batch import RawBatch
from shopfloor.errors import ConnectorError
from shopfloor.historian.base import DEAD_LETTER_SCHEMA

HOST, PORT = "127.0.0.1", 1883
ENDPOINT = f"mqtt://{HOST}:{PORT}"


# --------------------------------------------------------------------------- patterns


def _ref_match(pattern: str, topic: str) -> dict[str, str] | None:
    """A simple reference: the pattern as a regular expression."""
    levels = pattern.split("/")
    if topic.startswith("$") and (levels[0] in ("+", "#") or levels[0].startswith("{")):
        return None
    regex = ""
    for i, level in enumerate(levels):
        sep = "/" if i else ""
        if level == "#":
            regex += "(?:/.*)?" if i else ".*"
            break
        if level == "+":
            regex += sep + "[^/]*"
        elif level.startswith("{"):
            regex += sep + f"(?P<{level[1:-1]}>[^/]*)"
        else:
            regex += sep + re.escape(level)
    m = re.fullmatch(regex, topic)
    return None if m is None else m.groupdict()


_level = st.sampled_from(["a", "b", "", "$s"])
_pattern_level = st.sampled_from(["a", "b", "", "+", "{n}"])


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    levels = draw(st.lists(_pattern_level, min_size=1, max_size=4))
    named = [lv.replace("{n}", f"{{n{i}}}") for i, lv in enumerate(levels)]
    if draw(st.booleans()):
        named.append("#")
    return "/".join(named)


@given(_patterns().filter(bool), st.lists(_level, min_size=1, max_size=5))
def test_pattern_matcher_agrees_with_reference(pattern: str, levels: list[str]) -> None:
    topic = "/".join(levels)
    p = TopicPattern(pattern)
    wild = p.match(topic)
    ref = _ref_match(pattern, topic)
    assert (wild is not None) == (ref is not None), (pattern, topic)
    if wild is not None:
        assert p.captures(wild) == ref
        assert p.fill(wild) == topic or pattern.endswith("#")
        assert p.match(p.fill(wild)) is not None


def test_topic_pattern_filter_and_errors() -> None:
    p = TopicPattern("plant/{line}/+/{machine}/#")
    assert p.filter == "plant/+/+/+/#"
    assert p.names == ("line", "machine")
    wild = p.match("plant/l1/c3/press-7/x/y")
    assert wild == ["l1", "c3", "press-7", "x/y"]
    assert p.captures(wild) == {"line": "l1", "machine": "press-7"}
    assert p.fill(wild) == "plant/l1/c3/press-7/x/y"
    assert p.match("plant/l1/c3") is None
    assert TopicPattern("+/x").match("$SYS/x") is None
    assert TopicPattern("$SYS/+").match("$SYS/x") == ["x"]
    for bad in ("a/#/b", "a/b+", "a/{x}/{x}", "a/pre{x}", ""):
        with pytest.raises(ValueError, match=r"last level|mixes|twice|empty"):
            TopicPattern(bad)


def test_field_paths() -> None:
    assert parse_field_path("$") == ()
    assert parse_field_path("a.b[2].c") == ("a", "b", 2, "c")
    assert parse_field_path("$.a[0][1]") == ("a", 0, 1)
    assert parse_field_path("[1].x") == (1, "x")
    assert parse_field_path("$[3]") == (3,)
    for bad in ("a..b", "a[x]", "a[1", "a.", ".a", "a[1]b"):
        with pytest.raises(ValueError, match="field path"):
            parse_field_path(bad)


def test_configuration_errors_name_connection_and_point() -> None:
    def make(address: str, **options: Any) -> MqttJsonConnector:
        return MqttJsonConnector("line1", ENDPOINT, [PointSpec(address, options=options)])

    with pytest.raises(ConnectorError, match=r"'line1'.*'a/#/b::x'.*'#' must be the last"):
        make("a/#/b::x")
    with pytest.raises(ConnectorError, match=r"'line1'.*'a/b::x\.\.y'.*empty key"):
        make("a/b::x..y")
    with pytest.raises(ConnectorError, match=r"unknown option.*colour"):
        make("a/b::x", colour="red")
    with pytest.raises(ConnectorError, match="ts_format 'epoch_h'"):
        make("a/b::x", ts_field="t", ts_format="epoch_h")
    with pytest.raises(ConnectorError, match="ts_timezone 'Mars/Base'"):
        make("a/b::x", ts_field="t", ts_timezone="Mars/Base")
    with pytest.raises(ConnectorError, match=r"\{cell\}"):
        make("{cell}/t", topic="a/{machine}")
    with pytest.raises(ConnectorError, match="scale"):
        make("a/b::x", scale="ten")
    with pytest.raises(ConnectorError, match="no spaces"):
        make("a/b :: x")
    with pytest.raises(ConnectorError, match="'field' needs option 'topic'"):
        make("a/b", field="x")
    with pytest.raises(ConnectorError, match="endpoint"):
        MqttJsonConnector("line1", "http://x", [])
    with pytest.raises(ConnectorError, match=r"unknown MQTT option.*bogus"):
        MqttJsonConnector("line1", ENDPOINT, [], {"bogus": 1})
    with pytest.raises(ConnectorError, match="NO_SUCH_VAR_4711"):
        MqttJsonConnector("line1", ENDPOINT, [], {"password_env": "NO_SUCH_VAR_4711"})


@given(
    st.lists(
        st.one_of(st.integers(0, 99), st.text("abcXY_-0 ", min_size=1, max_size=4)),
        max_size=5,
    )
)
def test_field_path_round_trips(parts: list[str | int]) -> None:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    assert parse_field_path(text) == tuple(parts)
    assert parse_field_path(f"$.{text}" if text and not text.startswith("[") else text) == tuple(
        parts
    )


def test_settings_tls_and_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SF_TEST_MQTT_PW", "s3cret")
    c = MqttJsonConnector(
        "secure",
        "mqtts://broker.example",
        [],
        {"username": "u", "password_env": "SF_TEST_MQTT_PW", "qos": "1", "tls_insecure": True},
    )
    assert (c.settings.host, c.settings.port, c.settings.tls) == ("broker.example", 8883, True)
    assert c.settings.password == "s3cret"
    assert c.settings.qos == 1
    assert c.protocol == "mqtt"
    with pytest.raises(ConnectorError, match="'secure': qos must be 0, 1 or 2"):
        MqttJsonConnector("secure", ENDPOINT, [], {"qos": 3})


def test_hostile_payloads_become_dead_letters(caplog: pytest.LogCaptureFixture) -> None:
    points = [
        PointSpec("t::v", options={"ts_field": "t", "ts_format": "epoch_s"}),
        PointSpec("t::w", data_type="int", options={"scale": 10}),
        PointSpec("t::x", data_type="auto"),
    ]
    c = MqttJsonConnector("x", ENDPOINT, points)  # no dead-letter sink: logged once each
    bodies = [
        b'{"v": 1, "t": 1e400, "w": 1e308, "x": 123456789012345678901234567890}',
        b"[" * 100_000,
        b"1" * 5000,
        b"\xff",
        b"",  # a retained message being cleared: ignored
    ]
    with caplog.at_level("WARNING", logger="shopfloor.connectors.mqtt_json"):
        for body in bodies:
            c._on_message("t", body)
        c._on_message("t", b"[[[")
    assert len(c._builder) == 0
    reasons = [r["reason"] for r in c._letters.build().to_pylist()]
    assert len(reasons) == c.dead_letters_total == 7
    assert "not an epoch number (Infinity)" in reasons[0]
    assert "field w is out of range" in reasons[1]
    assert "out of the 64-bit integer range" in reasons[2]
    assert all("payload is not JSON" in r for r in reasons[3:])
    assert sum("payload is not JSON" in m for m in caplog.messages) == 1


# --------------------------------------------------------------------------- against the broker


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


needs_broker = pytest.mark.skipif(
    not _broker_up(), reason=f"no MQTT broker (Mosquitto) listening on {HOST}:{PORT}"
)


class Harness:
    """A running connector and everything it delivered."""

    def __init__(self) -> None:
        self.c: MqttJsonConnector
        self.rows: list[dict[str, Any]] = []
        self.letters: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def sink(self, batch: RawBatch) -> None:
        self.rows.extend(batch.table.to_pylist())
        self.changed.set()

    async def letter_sink(self, table: pa.Table) -> None:
        assert table.schema.equals(DEAD_LETTER_SCHEMA)
        self.letters.extend(table.to_pylist())
        self.changed.set()

    async def until(self, cond: Callable[[], Any], wait_s: float = 10.0) -> Any:
        async with asyncio.timeout(wait_s):
            while True:
                result = cond()
                if result:
                    return result
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self.changed.wait()

    def by_address(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            out.setdefault(r["address"], []).append(r)
        return out

    def values(self, address: str) -> list[Any]:
        return [
            next((r[c] for c in ("v_float", "v_int", "v_bool", "v_str") if r[c] is not None), None)
            for r in self.rows
            if r["address"] == address
        ]


@pytest.fixture
def prefix() -> str:
    return f"sf-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pub() -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(HOST, PORT) as client:
        yield client


@contextlib.asynccontextmanager
async def running(
    points: list[PointSpec], options: dict[str, Any] | None = None, endpoint: str = ENDPOINT
) -> AsyncIterator[Harness]:
    h = Harness()
    h.c = MqttJsonConnector(
        "devices",
        endpoint,
        points,
        {"flush_interval_ms": 20, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2}
        | (options or {}),
        dead_letter_sink=h.letter_sink,
    )
    task = asyncio.create_task(h.c.run(h.sink))
    try:
        if endpoint == ENDPOINT:
            await h.until(lambda: h.c.status.state == "connected")
        yield h
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert h.c.status.state == "stopped"


async def _send(pub: aiomqtt.Client, topic: str, payload: Any) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await pub.publish(topic, data, qos=1)


@needs_broker
async def test_named_segments_several_fields_and_nested_paths(
    pub: aiomqtt.Client, prefix: str
) -> None:
    pattern = f"{prefix}/{{line}}/+/{{machine}}/telemetry"
    points = [
        PointSpec(f"{pattern}::temperature"),
        PointSpec(f"{pattern}::axes[1].pos"),
        PointSpec(f"{pattern}::status.mode", data_type="string"),
        PointSpec(f"{pattern}::status", data_type="json"),
        PointSpec(f"{pattern}::$.counts", data_type="auto"),
        PointSpec(f"{prefix}/+/raw/#"),  # the whole (scalar) payload
    ]
    async with running(points) as h:
        assert h.c.filters == [f"{prefix}/+/+/+/telemetry", f"{prefix}/+/raw/#"]
        for machine, temp in (("press-7", 21.5), ("press-8", 22)):
            await _send(
                pub,
                f"{prefix}/line-1/cell-3/{machine}/telemetry",
                {
                    "temperature": temp,
                    "axes": [{"pos": 1}, {"pos": 2.5}],
                    "status": {"mode": "auto", "ok": True},
                    "counts": [1, 2],
                },
            )
        await _send(pub, f"{prefix}/x/raw/a/b", 42)
        await h.until(lambda: len(h.rows) >= 11)
        base = f"{prefix}/line-1/cell-3/press-7/telemetry"
        assert h.values(f"{base}::temperature") == [21.5]
        assert h.values(f"{prefix}/line-1/cell-3/press-8/telemetry::temperature") == [22.0]
        assert h.values(f"{base}::axes[1].pos") == [2.5]
        assert h.values(f"{base}::status.mode") == ["auto"]
        assert json.loads(h.values(f"{base}::status")[0]) == {"mode": "auto", "ok": True}
        assert h.values(f"{base}::$.counts") == ["[1,2]"]
        assert h.values(f"{prefix}/x/raw/a/b") == [42.0]
        assert not h.letters
        assert h.c.describe(f"{base}::temperature") == PointInfo("press-7", "temperature", "float")
        assert h.c.describe(f"{base}::axes[1].pos") == PointInfo("press-7", "pos", "float")
        assert h.c.describe(f"{base}::status.mode") == PointInfo("press-7", "mode", "string")
        assert h.c.describe(f"{base}::$.counts") == PointInfo("press-7", "counts", "json")
        assert h.c.describe(f"{prefix}/x/raw/a/b") == PointInfo("devices", "raw", "float")
        assert h.c.describe("other/topic::x") is None


@needs_broker
async def test_timestamp_formats_and_naive_iso(pub: aiomqtt.Client, prefix: str) -> None:
    t = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    epoch_us = (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    stamps: dict[str, Any] = {
        "iso8601": "2024-05-06T09:08:09.123456+02:00",
        "epoch_s": epoch_us / 1e6,
        "epoch_ms": str(epoch_us / 1000),
        "epoch_us": epoch_us,
        "epoch_ns": epoch_us * 1000,
    }
    points = [
        PointSpec(f"{prefix}/{fmt}::v", options={"ts_field": "meta.t", "ts_format": fmt})
        for fmt in stamps
    ]
    points += [
        PointSpec(f"{prefix}/naive::v", options={"ts_field": "t"}),
        PointSpec(f"{prefix}/berlin::v", options={"ts_field": "t", "ts_timezone": "Europe/Berlin"}),
        PointSpec(f"{prefix}/now::v"),
    ]
    async with running(points) as h:
        before = datetime.now(UTC)
        for fmt, stamp in stamps.items():
            await _send(pub, f"{prefix}/{fmt}", {"v": 1, "meta": {"t": stamp}})
        await _send(pub, f"{prefix}/naive", {"v": 1, "t": "2024-05-06T07:08:09"})
        await _send(pub, f"{prefix}/naive", {"v": 2, "t": "yesterday"})
        await _send(pub, f"{prefix}/naive", {"v": 3})
        await _send(pub, f"{prefix}/berlin", {"v": 1, "t": "2024-05-06T09:08:09.123456"})
        await _send(pub, f"{prefix}/now", {"v": 1})
        await h.until(lambda: len(h.rows) >= 7 and len(h.letters) >= 3)
        rows = h.by_address()
        for fmt in stamps:
            got = rows[f"{prefix}/{fmt}::v"][0]["ts"]
            tolerance = timedelta(microseconds=1 if fmt == "epoch_s" else 0)
            assert abs(got - t) <= tolerance, fmt
        assert rows[f"{prefix}/berlin::v"][0]["ts"] == t
        assert before <= rows[f"{prefix}/now::v"][0]["ts"] <= datetime.now(UTC)
        reasons = [r["reason"] for r in h.letters]
        assert all(r["location"] == f"{prefix}/naive" for r in h.letters)
        assert any("naive ISO 8601" in r and "timestamp field t" in r for r in reasons)
        assert any("'yesterday' is not ISO 8601" in r for r in reasons)
        assert any("timestamp field t is missing" in r for r in reasons)
        assert f"{prefix}/naive::v" not in rows


@needs_broker
async def test_scale_offset_and_structured_form(pub: aiomqtt.Client, prefix: str) -> None:
    points = [
        PointSpec(
            "{machine}/spindle_speed",
            options={
                "topic": f"{prefix}/{{line}}/{{machine}}/spindle",
                "field": "rpm_x10",
                "scale": 0.1,
                "offset": 5,
                "unit": "RPM",
            },
        ),
        PointSpec(
            f"{prefix}/{{line}}/{{machine}}/spindle::count",
            data_type="int",
            options={"scale": 2, "offset": 1},
        ),
    ]
    async with running(points) as h:
        await _send(pub, f"{prefix}/l1/mill-2/spindle", {"rpm_x10": 12000, "count": 10})
        await _send(pub, f"{prefix}/l1/mill-2/spindle", {"rpm_x10": "fast", "count": 11})
        await h.until(lambda: len(h.rows) >= 3 and h.letters)
        assert h.values("mill-2/spindle_speed") == [pytest.approx(1205.0)]
        assert h.values(f"{prefix}/l1/mill-2/spindle::count") == [21, 23]
        assert "rpm_x10 is string, not a number" in h.letters[0]["reason"]
        assert h.c.describe("mill-2/spindle_speed") == PointInfo(
            "mill-2", "rpm_x10", "float", "RPM"
        )


@needs_broker
async def test_bad_payloads_are_dead_letters_and_flow_continues(
    pub: aiomqtt.Client, prefix: str
) -> None:
    points = [
        PointSpec(f"{prefix}/{{device}}/data::a"),
        PointSpec(f"{prefix}/{{device}}/data::b", data_type="bool"),
        PointSpec(f"{prefix}/{{device}}/data::c", options={"optional": True}),
        PointSpec(f"{prefix}/{{device}}/data::d.e"),
    ]
    async with running(points) as h:
        topic = f"{prefix}/dev-1/data"
        await _send(pub, topic, b"{not json")
        await _send(pub, topic, {"a": 1.5, "b": "yes", "d": 3})
        await _send(pub, topic, {"a": 2.5, "b": True, "d": {"e": 4}, "c": 7})
        await h.until(lambda: len(h.rows) >= 5 and len(h.letters) >= 3)
        base = f"{prefix}/dev-1/data"
        assert h.values(f"{base}::a") == [1.5, 2.5]
        assert h.values(f"{base}::b") == [True]
        assert h.values(f"{base}::c") == [7.0]  # skipped silently where missing
        assert h.values(f"{base}::d.e") == [4.0]
        letters = {r["reason"]: r for r in h.letters}
        assert all(r["location"] == topic for r in h.letters)
        (not_json,) = [r for k, r in letters.items() if "payload is not JSON" in k]
        assert not_json["payload"] == b"{not json"
        assert any("field b is string" in k and "expected bool" in k for k in letters)
        assert any("field d.e: d is not an object" in k for k in letters)
        assert not any("::c" in k for k in letters)
        assert len(h.letters) == 3
        assert json.loads(next(r["payload"] for k, r in letters.items() if "field b" in k)) == {
            "a": 1.5,
            "b": "yes",
            "d": 3,
        }


@needs_broker
async def test_each_arrays_of_samples(pub: aiomqtt.Client, prefix: str) -> None:
    points = [
        PointSpec(
            f"{prefix}/{{machine}}/batch::value",
            options={"each": True, "ts_field": "ts", "ts_format": "epoch_ms"},
        ),
        PointSpec(
            f"{prefix}/{{machine}}/nested::v",
            data_type="int",
            options={"each": "data.samples", "ts_field": "t", "ts_format": "epoch_s"},
        ),
    ]
    async with running(points) as h:
        samples: list[dict[str, Any]] = [
            {"ts": 1_700_000_000_000 + i, "value": i * 1.5} for i in range(5)
        ]
        samples.insert(2, {"ts": 1_700_000_000_100, "value": "broken"})
        await _send(pub, f"{prefix}/m1/batch", samples)
        await _send(pub, f"{prefix}/m1/batch", {"not": "an array"})
        nested: dict[str, Any] = {
            "data": {"samples": [{"t": 1_700_000_000, "v": 3}, {"t": 1_700_000_001, "v": 4}]}
        }
        await _send(pub, f"{prefix}/m1/nested", nested)
        await h.until(lambda: len(h.rows) >= 7 and len(h.letters) >= 2)
        rows = h.by_address()[f"{prefix}/m1/batch::value"]
        assert [r["v_float"] for r in rows] == [0.0, 1.5, 3.0, 4.5, 6.0]
        assert [r["ts"] for r in rows] == [
            datetime.fromtimestamp(1_700_000_000 + i / 1000, UTC) for i in range(5)
        ]
        assert h.values(f"{prefix}/m1/nested::v") == [3, 4]
        reasons = sorted(r["reason"] for r in h.letters)
        assert any("field [2].value is string" in r for r in reasons)
        assert any("field $ (each) is not an array" in r for r in reasons)


@needs_broker
async def test_reconnects_after_the_client_is_dropped(pub: aiomqtt.Client, prefix: str) -> None:
    client_id = f"{prefix}-conn"
    options = {"client_id": client_id, "qos": 1, "reconnect_initial_s": 0.4, "reconnect_max_s": 0.4}
    async with running([PointSpec(f"{prefix}/+/v")], options) as h:
        # Mosquitto drops a session when another client connects with the same id (before
        # it acknowledges the newcomer, which leaves at once, long before the backoff ends).
        async with aiomqtt.Client(HOST, PORT, identifier=client_id):
            pass
        await h.until(lambda: h.c.status.state == "disconnected")
        await h.until(lambda: h.c.status.reconnects >= 1 and h.c.status.state == "connected")
        await _send(pub, f"{prefix}/a/v", 5)
        await h.until(lambda: h.rows)
        assert h.values(f"{prefix}/a/v") == [5.0]
        assert h.c.status.last_error is None


async def test_backoff_when_the_broker_refuses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="shopfloor.connectors.mqtt_json")
    async with running(
        [PointSpec("a/b", options={"write_topic": "a/b/set"})], endpoint="mqtt://127.0.0.1:9"
    ) as h:
        await h.until(lambda: h.c.status.reconnects >= 2)
        assert h.c.status.state == "disconnected"
        assert h.c.status.last_error
        with pytest.raises(ConnectorError, match=r"'devices'.*not connected"):
            await h.c.write("a/b", 1)
    # state changes only: one line for going away, however often the retry fails
    assert sum("disconnected" in m for m in caplog.messages) == 1


@needs_broker
async def test_write_publishes_to_the_write_topic(pub: aiomqtt.Client, prefix: str) -> None:
    points = [
        PointSpec(
            f"{prefix}/{{machine}}/setpoint::value",
            options={"write_topic": f"{prefix}/{{machine}}/setpoint/set"},
        ),
        PointSpec(f"{prefix}/{{machine}}/temp::value"),
    ]
    async with running(points) as h:
        await pub.subscribe(f"{prefix}/+/setpoint/set", qos=1)
        before = datetime.now(UTC)
        await h.c.write(f"{prefix}/press-1/setpoint::value", 42.5)
        async with asyncio.timeout(5):
            message = await anext(aiter(pub.messages))
        assert str(message.topic) == f"{prefix}/press-1/setpoint/set"
        assert isinstance(message.payload, bytes)
        body = json.loads(message.payload)
        assert body["value"] == 42.5
        sent = datetime.fromisoformat(body["ts"])
        assert sent.tzinfo is not None
        assert before - timedelta(seconds=1) <= sent.astimezone(UTC) <= datetime.now(UTC)
        with pytest.raises(ConnectorError, match=r"'devices'.*has no write_topic"):
            await h.c.write(f"{prefix}/press-1/temp::value", 1)
        with pytest.raises(ConnectorError, match=r"'devices'.*concrete address"):
            await h.c.write(f"{prefix}/{{machine}}/setpoint::value", 1)
        with pytest.raises(ConnectorError, match=r"'devices'.*no point has this address"):
            await h.c.write("nowhere::x", 1)

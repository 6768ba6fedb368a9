"""The Unified Namespace republisher: pipeline → DuckDB → UnsPublisher → real Mosquitto.

Every test publishes under its own random prefix and clears the retained messages it left.
The conversion itself is checked against a plain-Python reference on random batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.bus import EmbeddedBroker, UnsPublisher, uns_topic
from shopfloor.bus.uns import _Catalog, _order, _render
from shopfloor.edge import EVENT_SCHEMA, Mapper, Pipeline, Quality, RawBatchBuilder, Route
from shopfloor.edge.batch import ReadingBatch
from shopfloor.errors import ConfigError
from shopfloor.historian import Historian, SignalInfo, open_historian

HOST, PORT = "127.0.0.1", 1883
BROKER = f"mqtt://{HOST}:{PORT}"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_767_254_400_000_000  # 2026-01-01T08:00:00Z in µs
AREA = "acme/plant/line-1/press-7"

SIGNALS = [
    SignalInfo(f"{AREA}/temperature", "float", "CEL"),
    SignalInfo(f"{AREA}/parts", "int", "C62", "counter"),
    SignalInfo(f"{AREA}/running", "bool", None, "state"),
    SignalInfo(f"{AREA}/state", "string", None, "state"),
    SignalInfo(f"{AREA}/recipe", "json"),
]
ADDRESS = {s.path: s.path.rsplit("/", 1)[1] for s in SIGNALS}


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


needs_broker = pytest.mark.skipif(
    not _broker_up(), reason=f"no MQTT broker (Mosquitto) listening on {HOST}:{PORT}"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- helpers


@dataclass
class Inbox:
    """Messages one MQTT subscriber received: (topic, payload, retain flag)."""

    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def values(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        """Decoded value messages (not the status topic) with the topic relative to prefix."""
        out = []
        for topic, payload, _ in self.messages:
            rel = topic[len(prefix) + 1 :]
            if rel != "_status" and "/_events/" not in rel and payload:
                out.append((rel, json.loads(payload)))
        return out

    async def until(self, cond: Callable[[], bool], within: float = 15.0) -> None:
        """Wait until ``cond()`` holds (a hang guard: failing means it never happened)."""
        async with asyncio.timeout(within):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def listen(
    *topics: str, host: str = HOST, port: int = PORT
) -> AsyncIterator[tuple[Inbox, aiomqtt.Client]]:
    """Subscribe to ``topics`` (in this order) and collect what arrives."""
    inbox = Inbox()
    async with aiomqtt.Client(host, port, identifier=f"uns-test-{uuid.uuid4().hex[:8]}") as c:
        for t in topics:
            await c.subscribe(t, qos=1)

        async def collect() -> None:
            async for m in c.messages:
                payload = m.payload if isinstance(m.payload, bytes | bytearray) else b""
                inbox.messages.append((str(m.topic), bytes(payload), bool(m.retain)))
                inbox.changed.set()

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(collect())
            try:
                yield inbox, c
            finally:
                task.cancel()


async def _clear_retained(prefix: str) -> None:
    """Delete every retained message under ``prefix`` (found before a sentinel arrives)."""
    sentinel = f"{prefix}-end"
    async with aiomqtt.Client(HOST, PORT) as pub:
        await pub.publish(sentinel, b"x", qos=1, retain=True)
    async with listen(f"{prefix}/#", sentinel) as (inbox, client):
        await inbox.until(lambda: any(t == sentinel for t, _, _ in inbox.messages))
        stale = {t for t, p, r in inbox.messages if r and p}
        for t in stale:
            await client.publish(t, b"", qos=1, retain=True)


@pytest.fixture(name="prefix")
async def unique_prefix() -> AsyncIterator[str]:
    """A fresh topic prefix; the retained messages under it are removed afterwards."""
    p = f"test-uns/{uuid.uuid4().hex[:10]}"
    yield p
    if _broker_up():
        await _clear_retained(p)


@dataclass
class Plant:
    historian: Historian
    ids: dict[str, int]


@pytest.fixture(name="plant")
async def duckdb_plant(tmp_path: Path) -> AsyncIterator[Plant]:
    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h:
        ids = await h.register_signals(SIGNALS)
        yield Plant(h, ids)


def _mapper(plant: Plant) -> Mapper:
    return Mapper(
        {("plc", ADDRESS[s.path]): Route(plant.ids[s.path], s.data_type) for s in SIGNALS}
    )


@contextlib.asynccontextmanager
async def running(pipe: Pipeline) -> AsyncIterator[Pipeline]:
    """The pipeline's writer running; leaving closes it and waits for the last commit."""
    writer = asyncio.create_task(pipe.run())
    try:
        yield pipe
    finally:
        await pipe.close()
        async with asyncio.timeout(30):  # a stalled ingest fails here instead of hanging
            await writer


def _rows(*rows: tuple[str, int, Any, int]) -> RawBatchBuilder:
    b = RawBatchBuilder()
    for name, ts, value, quality in rows:
        b.append("plc", name, ts, value, quality)
    return b


async def _eventually(cond: Callable[[], bool], within: float = 15.0) -> None:
    """Wait until ``cond()`` holds (a hang guard: failing means it never happened)."""
    async with asyncio.timeout(within):
        while True:
            if cond():
                return
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- broker tests


@needs_broker
async def test_every_value_reaches_a_subscriber_typed_and_in_time_order(
    plant: Plant, prefix: str
) -> None:
    s = 1_000_000
    rows = [
        ("temperature", T0 + 2 * s, 71.25, Quality.GOOD),
        ("temperature", T0 + 0 * s, 3.0, Quality.GOOD),  # out of order in the batch
        ("temperature", T0 + 1 * s, float("nan"), Quality.UNCERTAIN_SENSOR_NOT_ACCURATE),
        ("parts", T0 + 1, 41, Quality.GOOD),
        ("parts", T0 + 250_000, 42, Quality.GOOD),
        ("running", T0 + 5, True, Quality.GOOD),
        ("state", T0 + 7, 'blocked "downstream"\nline 2 – ü', Quality.GOOD),
        ("recipe", T0 + 9, '{"id": "R-7", "speed": [1, 2.5]}', Quality.GOOD),
        ("state", T0 + 8, None, Quality.BAD_COMM_FAILURE),
    ]
    status_topic = f"{prefix}/_status"

    def status() -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in inbox.messages if t == status_topic]

    async with listen(f"{prefix}/#") as (inbox, _):
        async with UnsPublisher(BROKER, plant.historian, prefix=prefix) as uns:
            pipe = Pipeline(
                plant.historian,
                _mapper(plant),
                flush_interval=0.05,
                observers=[uns.publish_readings],
            )
            async with running(pipe):
                await pipe.sink(_rows(*rows).build())
            assert await uns.flush(10)
            await inbox.until(lambda: len(inbox.values(prefix)) == len(rows))
            assert uns.stats.published == len(rows)
            assert uns.stats.dropped == 0
            assert uns.stats.connected
        # Stopping replaces the retained status: subscribers know the values are not live.
        await inbox.until(lambda: len(status()) == 2)
    assert [m["online"] for m in status()] == [True, False]

    got = inbox.values(prefix)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, payload in got:
        by_topic.setdefault(topic, []).append(payload)
        assert list(payload) == ["ts", "value", "unit", "quality", "quality_code"]
    assert set(by_topic) == set(ADDRESS)
    temp = by_topic[f"{AREA}/temperature"]
    assert [m["ts"] for m in temp] == [_iso(T0), _iso(T0 + s), _iso(T0 + 2 * s)]
    assert [m["value"] for m in temp] == [3.0, None, 71.25]
    assert isinstance(temp[0]["value"], float)  # 3.0 stays a float
    assert [m["quality"] for m in temp] == ["good", "uncertain", "good"]
    assert temp[1]["quality_code"] == Quality.UNCERTAIN_SENSOR_NOT_ACCURATE
    assert {m["unit"] for m in temp} == {"CEL"}
    parts = by_topic[f"{AREA}/parts"]
    assert [m["value"] for m in parts] == [41, 42]
    assert all(type(m["value"]) is int for m in parts)
    assert parts[1]["ts"] == "2026-01-01T08:00:00.250000Z"
    assert parts[0]["unit"] == "C62"
    running_ = by_topic[f"{AREA}/running"]
    assert running_ == [
        {"ts": _iso(T0 + 5), "value": True, "unit": None, "quality": "good", "quality_code": 192}
    ]
    state = by_topic[f"{AREA}/state"]
    assert [m["value"] for m in state] == ['blocked "downstream"\nline 2 – ü', None]
    assert [m["quality"] for m in state] == ["good", "bad"]
    assert by_topic[f"{AREA}/recipe"][0]["value"] == {"id": "R-7", "speed": [1, 2.5]}
    # The values published are the values stored.
    raw = await plant.historian.read_raw(
        f"{AREA}/temperature", EPOCH + timedelta(microseconds=T0), datetime.now(UTC)
    )
    stored = [None if math.isnan(v) else v for v in raw.column("value").to_pylist()]
    assert stored == [m["value"] for m in temp]


@needs_broker
@pytest.mark.parametrize("retain", [True, False])
async def test_a_subscriber_joining_later_gets_the_last_value_when_retained(
    plant: Plant, prefix: str, retain: bool
) -> None:
    topic = f"{prefix}/{AREA}/temperature"
    uns = UnsPublisher(BROKER, plant.historian, prefix=prefix, retain=retain)
    async with uns:
        pipe = Pipeline(
            plant.historian, _mapper(plant), flush_interval=0.05, observers=[uns.publish_readings]
        )
        async with running(pipe):
            await pipe.sink(
                _rows(
                    ("temperature", T0, 20.5, Quality.GOOD),
                    ("temperature", T0 + 1000, 21.5, Quality.GOOD),
                ).build()
            )
        assert await uns.flush(10)
        assert uns.stats.published == 2
    # A sentinel subscribed after the topic: when it arrives, a retained value would have.
    sentinel = f"{prefix}-sentinel"
    async with aiomqtt.Client(HOST, PORT) as pub:
        await pub.publish(sentinel, b"x", qos=1, retain=True)
    async with listen(topic, sentinel) as (inbox, client):
        await inbox.until(lambda: any(t == sentinel for t, _, _ in inbox.messages))
        await client.publish(sentinel, b"", qos=1, retain=True)
    late = [(p, r) for t, p, r in inbox.messages if t == topic]
    if retain:
        assert len(late) == 1
        payload, flag = late[0]
        assert flag
        assert json.loads(payload)["value"] == 21.5
        assert json.loads(payload)["ts"] == _iso(T0 + 1000)
    else:
        assert late == []


@needs_broker
async def test_latest_mode_sends_one_message_per_signal_per_batch(
    plant: Plant, prefix: str
) -> None:
    rng = np.random.default_rng(5)
    async with (
        listen(f"{prefix}/#") as (inbox, _),
        UnsPublisher(BROKER, plant.historian, prefix=prefix, mode="latest") as uns,
    ):
        pipe = Pipeline(
            plant.historian, _mapper(plant), flush_interval=0.05, observers=[uns.publish_readings]
        )
        async with running(pipe):
            for batch_no in range(2):
                base = T0 + batch_no * 10_000_000
                rows = [("temperature", base + k * 1000, float(k) + 0.5, 192) for k in range(50)]
                rows += [("parts", base + k * 1000, 100 * batch_no + k, 192) for k in range(50)]
                rows += [("running", base + k * 1000, k % 2 == 0, 192) for k in range(50)]
                order = rng.permutation(len(rows))
                await pipe.sink(_rows(*(rows[i] for i in order)).build())
                # The batch is committed (and published) before the next one is sunk.
                await inbox.until(lambda n=batch_no: len(inbox.values(prefix)) >= 3 * (n + 1))
        assert pipe.stats.commits == 2
        assert await uns.flush(10)
        assert uns.stats.published == 6
    got = inbox.values(prefix)
    assert len(got) == 6  # 150 readings per batch, one message per signal per batch
    for batch_no, chunk in enumerate((got[:3], got[3:])):
        values = {t.rsplit("/", 1)[1]: m for t, m in chunk}
        assert set(values) == {"temperature", "parts", "running"}
        newest = _iso(T0 + batch_no * 10_000_000 + 49 * 1000)
        assert {m["ts"] for m in values.values()} == {newest}
        assert values["temperature"]["value"] == 49.5
        assert values["parts"]["value"] == 100 * batch_no + 49
        assert values["running"]["value"] is False


@needs_broker
async def test_events_are_published_under_their_asset_and_kind(plant: Plant, prefix: str) -> None:
    start = EPOCH + timedelta(microseconds=T0)
    events = pa.Table.from_pylist(
        [
            {
                "event_id": "state:1",
                "kind": "state",
                "asset": AREA,
                "signal": f"{AREA}/state",
                "ts": start,
                "end_ts": None,
                "code": "blocked",
                "severity": None,
                "message": None,
                "data": json.dumps({"raw": 7}),
            },
            {
                "event_id": "e-1",
                "kind": "agv_error",
                "asset": "acme/plant/intralogistics/agv-1",
                "signal": None,
                "ts": start,
                "end_ts": start + timedelta(seconds=3),
                "code": "noRoute",
                "severity": 3,
                "message": "no route to node 7",
                "data": "not json",
            },
        ],
        schema=EVENT_SCHEMA,
    )
    async with (
        listen(f"{prefix}/#") as (inbox, _),
        UnsPublisher(BROKER, plant.historian, prefix=prefix) as uns,
    ):
        await uns.publish_events(events)
        assert await uns.flush(10)
        await inbox.until(lambda: sum("/_events/" in t for t, _, _ in inbox.messages) == 2)
    got = {t: json.loads(p) for t, p, _ in inbox.messages if "/_events/" in t}
    state = got[f"{prefix}/{AREA}/_events/state"]
    assert state == {
        "event_id": "state:1",
        "kind": "state",
        "asset": AREA,
        "signal": f"{AREA}/state",
        "ts": _iso(T0),
        "end_ts": None,
        "code": "blocked",
        "severity": None,
        "message": None,
        "data": {"raw": 7},
    }
    err = got[f"{prefix}/acme/plant/intralogistics/agv-1/_events/agv_error"]
    assert err["end_ts"] == _iso(T0 + 3_000_000)
    assert err["severity"] == 3
    assert err["data"] == "not json"


async def _ingest_while_broker_is_bad(plant: Plant, endpoint: str) -> UnsPublisher:
    uns = UnsPublisher(endpoint, plant.historian, prefix="test-uns/never", max_queue=50)
    async with uns:
        pipe = Pipeline(
            plant.historian, _mapper(plant), flush_interval=0.02, observers=[uns.publish_readings]
        )
        async with running(pipe):
            for k in range(10):
                rows = [("parts", T0 + (k * 100 + i) * 1000, k * 100 + i, 192) for i in range(100)]
                await pipe.sink(_rows(*rows).build())
        assert pipe.stats.values_stored == 1000
        assert uns.stats.dropped == 950  # the newest 50 wait in the queue
        assert uns.stats.queued == 50
        assert not uns.stats.connected
        assert uns.stats.published == 0
    assert uns.stats.dropped == 1000  # what was still queued at the end is counted too
    raw = await plant.historian.read_raw(
        f"{AREA}/parts", EPOCH + timedelta(microseconds=T0), datetime.now(UTC)
    )
    assert raw.column("value").to_pylist() == list(range(1000))
    return uns


async def test_an_unreachable_broker_does_not_stall_ingest(plant: Plant) -> None:
    uns = await _ingest_while_broker_is_bad(plant, f"mqtt://127.0.0.1:{_free_port()}")
    assert "refused" in (uns.stats.last_error or "")


async def test_a_broker_that_never_answers_does_not_stall_ingest(plant: Plant) -> None:
    """A server that accepts the TCP connection and then says nothing (a hung broker)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with server:
            await _ingest_while_broker_is_bad(plant, f"mqtt://127.0.0.1:{port}")
    finally:
        for w in held:
            w.close()


async def test_queued_values_go_out_once_the_broker_is_back(plant: Plant) -> None:
    """Values queued while the broker is down are published after it starts (backoff)."""
    port = _free_port()
    prefix = f"test-uns/{uuid.uuid4().hex[:10]}"
    uns = UnsPublisher(
        f"mqtt://127.0.0.1:{port}",
        plant.historian,
        prefix=prefix,
        reconnect_initial=0.05,
        reconnect_max=0.2,
    )
    async with uns:
        pipe = Pipeline(
            plant.historian, _mapper(plant), flush_interval=0.02, observers=[uns.publish_readings]
        )
        async with running(pipe):
            await pipe.sink(_rows(*(("parts", T0 + i, i, 192) for i in range(20))).build())
        assert uns.stats.queued == 20
        assert not uns.stats.connected
        async with (
            EmbeddedBroker(port=port),
            listen(f"{prefix}/#", port=port) as (inbox, _),
        ):
            # Retained or live, the subscriber ends up with the newest value.
            await inbox.until(lambda: any(m["value"] == 19 for _, m in inbox.values(prefix)))
            assert await uns.flush(10)
            assert uns.stats.published == 20
            assert uns.stats.dropped == 0
            assert uns.stats.connected
            assert uns.stats.reconnects == 1
        # The broker going away is noticed while idle, not only at the next publish.
        await _eventually(lambda: not uns.stats.connected)
        assert uns.stats.last_error


@needs_broker
@pytest.mark.timeout(90)
async def test_the_runtime_republishes_the_simulated_factory(tmp_path: Path, prefix: str) -> None:
    from shopfloor.model import load_factory
    from shopfloor.runtime import Runtime
    from shopfloor.sim import Simulator

    factory = load_factory(Path(__file__).parents[2] / "examples" / "acme-munich.yaml")
    opcua = [n for n, c in factory.connections.items() if c.protocol == "opcua"]
    endpoints = {n: f"opc.tcp://127.0.0.1:{_free_port()}" for n in opcua}
    elsewhere = {  # the other protocols point where nothing listens: they just retry
        n: f"mqtt://127.0.0.1:{_free_port()}" if c.protocol != "modbus" else "modbus://127.0.0.1:1"
        for n, c in factory.connections.items()
        if n not in endpoints
    }
    signals = {s.path: s for s in factory.signals()}
    served = {
        s.path
        for s in factory.signals()
        if s.binding is not None and s.binding.connection in endpoints
    }
    python_type = {"float": float, "int": int, "bool": bool, "string": str}
    async with (
        listen(f"{prefix}/#") as (inbox, _),
        Simulator(factory, speed=60, seed=3, endpoint_override=endpoints),
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h,
        UnsPublisher(BROKER, h, prefix=prefix, mode="latest") as uns,
        Runtime(
            factory,
            h,
            endpoint_override=endpoints | elsewhere,
            observers=[uns.publish_readings],
            event_observers=[uns.publish_events],
        ),
    ):
        await inbox.until(lambda: {t for t, _ in inbox.values(prefix)} >= served, within=30)
    for topic, payload in inbox.values(prefix):
        sig = signals[topic]
        assert uns_topic(prefix, sig.path) == f"{prefix}/{topic}"
        assert payload["unit"] == sig.unit
        if payload["value"] is not None and sig.data_type in python_type:
            assert type(payload["value"]) is python_type[sig.data_type], (topic, payload)
    assert uns.stats.dropped == 0


# --------------------------------------------------------------------------- no broker


def test_bad_settings_are_refused_with_a_clear_error() -> None:
    h: Any = object()  # settings are checked before the historian is used
    with pytest.raises(ConfigError, match="MQTT wildcards"):
        UnsPublisher(BROKER, h, prefix="plant/#")
    with pytest.raises(ConfigError, match="empty level"):
        UnsPublisher(BROKER, h, prefix="plant//uns")
    with pytest.raises(ConfigError, match="starts with '\\$'"):
        UnsPublisher(BROKER, h, prefix="$SYS/uns")
    with pytest.raises(ConfigError, match="mode 'all' is not one of every, latest"):
        UnsPublisher(BROKER, h, mode="all")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="QoS 3"):
        UnsPublisher(BROKER, h, qos=3)
    with pytest.raises(ConfigError, match="not an MQTT endpoint"):
        UnsPublisher("opc.tcp://h:4840", h)
    assert uns_topic("", "a/b") == "a/b"
    assert uns_topic("x/y", "a/b+c#") == "x/y/a/b_c_"
    assert UnsPublisher(BROKER, h, prefix="/plant/uns/").prefix == "plant/uns"
    secret = UnsPublisher("mqtt://line:s3cret@broker.local:1884", h)
    assert (secret.host, secret.port) == ("broker.local", 1884)
    assert secret.endpoint == "mqtt://line:***@broker.local:1884"  # what logs and views show


async def test_signals_created_at_run_time_are_looked_up(plant: Plant) -> None:
    """An id the publisher has not seen makes it refresh its catalog from the historian."""
    uns = UnsPublisher(f"mqtt://127.0.0.1:{_free_port()}", plant.historian, prefix="p")
    async with uns:
        ids = await plant.historian.register_signals([SignalInfo("acme/new/agv-9/speed", "float")])
        batch = ReadingBatch.from_columns([ids["acme/new/agv-9/speed"]], [T0], [1.5])
        await uns.publish_readings(batch)
        assert uns.stats.queued == 1
        assert uns.stats.unknown == 0
        await uns.publish_readings(ReadingBatch.from_columns([9999], [T0], [1.5]))
        assert uns.stats.unknown == 1
        assert uns.stats.queued == 1
        messages = uns._take(10)
    assert [t for t, _ in messages] == ["p/acme/new/agv-9/speed"]


# --------------------------------------------------------------------------- reference

_TYPES = ("float", "int", "bool", "string", "json")
_UNITS = ("CEL", None, "C62", None, None)


def _value(kind: str) -> st.SearchStrategy[Any]:
    if kind == "float":
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == "int":
        return st.integers(-(2**63), 2**63 - 1)
    if kind == "bool":
        return st.booleans()
    if kind == "string":
        return st.text(max_size=12)
    return st.recursive(
        st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=5,
    ).map(json.dumps)


_row = st.integers(0, len(_TYPES) - 1).flatmap(
    lambda k: st.tuples(
        st.just(k),
        st.integers(-(10**15), 10**16),
        _value(_TYPES[k]) | st.none(),
        st.integers(0, 255),
    )
)


def _reference(
    rows: list[tuple[int, int, Any, int]], mode: str
) -> list[tuple[str, dict[str, Any]]]:
    """What the payloads must decode to, computed one row at a time in plain Python."""
    ordered = sorted(range(len(rows)), key=lambda i: rows[i][1])  # stable, like Arrow's
    if mode == "latest":
        last: dict[int, int] = {}
        for i in sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1])):
            last[rows[i][0]] = i
        ordered = sorted(last.values(), key=lambda i: rows[i][0])
    out = []
    for i in ordered:
        k, ts, value, q = rows[i]
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if _TYPES[k] == "json" and value is not None:
            value = json.loads(value)
        quality = {0xC0: "good", 0x40: "uncertain", 0x80: "uncertain", 0x00: "bad"}[q & 0xC0]
        out.append(
            (
                f"ref/sig-{k}",
                {
                    "ts": _iso(ts),
                    "value": value,
                    "unit": _UNITS[k],
                    "quality": quality,
                    "quality_code": q,
                },
            )
        )
    return out


def _batch(rows: list[tuple[int, int, Any, int]]) -> ReadingBatch:
    cols: dict[str, list[Any]] = {c: [] for c in ("v_float", "v_int", "v_bool", "v_str")}
    column = {"float": "v_float", "int": "v_int", "bool": "v_bool"}
    for k, _, value, _ in rows:
        target = column.get(_TYPES[k], "v_str")
        for c in cols:
            cols[c].append(value if c == target else None)
    return ReadingBatch(
        pa.table(
            {
                "signal_id": pa.array([10 + k for k, _, _, _ in rows], pa.int32()),
                "ts": pa.array([ts for _, ts, _, _ in rows], pa.int64()).cast(
                    pa.timestamp("us", tz="UTC")
                ),
                "quality": pa.array([q for *_, q in rows], pa.uint8()),
                "v_float": pa.array(cols["v_float"], pa.float64()),
                "v_int": pa.array(cols["v_int"], pa.int64()),
                "v_bool": pa.array(cols["v_bool"], pa.bool_()),
                "v_str": pa.array(cols["v_str"], pa.string()),
            }
        )
    )


_CATALOG = pa.table(
    {
        "signal_id": pa.array([10 + k for k in range(len(_TYPES))], pa.int32()),
        "path": [f"sig-{k}" for k in range(len(_TYPES))],
        "data_type": list(_TYPES),
        "unit": list(_UNITS),
        "kind": ["measurement"] * len(_TYPES),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=1, max_size=40), mode=st.sampled_from(["every", "latest"]))
def test_payloads_equal_a_row_by_row_reference(
    rows: list[tuple[int, int, Any, int]], mode: str
) -> None:
    catalog = _Catalog("ref", _CATALOG)
    table, pos, unknown = _order(_batch(rows).table, catalog, mode)  # type: ignore[arg-type]
    assert unknown == 0
    got = []
    for start in range(0, table.num_rows, 7):  # rendered in chunks, as the publisher does
        got += _render(table.slice(start, 7), pos[start : start + 7], catalog)
    decoded = [(t, json.loads(p)) for t, p in got]
    expected = _reference(rows, mode)
    assert [t for t, _ in decoded] == [t for t, _ in expected]
    for (_, g), (_, e) in zip(decoded, expected, strict=True):
        assert g == e
        assert type(g["value"]) is type(e["value"])  # 3.0 stays a float, True a bool

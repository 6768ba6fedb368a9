"""Sparkplug B host: the payload codec, and the host end to end against Mosquitto.

The edge nodes here are small aiomqtt clients that speak Sparkplug with our own encoder
(the interoperability test in ``tests/interop`` uses the Eclipse Tahu JavaScript client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.connectors._sparkplug_payload import (
    DataSet,
    DataType,
    Metric,
    Parameter,
    Payload,
    PayloadError,
    Property,
    Template,
    decode_payload,
    encode_payload,
    pack_array,
    unpack_array,
)
from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.sparkplug import SparkplugConnector, row_value
from shopfloor.edge.batch import Quality, RawBatch
from shopfloor.errors import ConnectorError
from shopfloor.historian.base import DEAD_LETTER_SCHEMA

HOST, PORT = "127.0.0.1", 1883
ENDPOINT = f"mqtt://{HOST}:{PORT}"

# --------------------------------------------------------------------------- codec

_INT_RANGES = {
    DataType.Int8: (-(2**7), 2**7 - 1),
    DataType.Int16: (-(2**15), 2**15 - 1),
    DataType.Int32: (-(2**31), 2**31 - 1),
    DataType.Int64: (-(2**63), 2**63 - 1),
    DataType.UInt8: (0, 2**8 - 1),
    DataType.UInt16: (0, 2**16 - 1),
    DataType.UInt32: (0, 2**32 - 1),
    DataType.UInt64: (0, 2**64 - 1),
}
_ARRAY_OF = {
    DataType.Int8Array: DataType.Int8,
    DataType.Int16Array: DataType.Int16,
    DataType.Int32Array: DataType.Int32,
    DataType.Int64Array: DataType.Int64,
    DataType.UInt8Array: DataType.UInt8,
    DataType.UInt16Array: DataType.UInt16,
    DataType.UInt32Array: DataType.UInt32,
    DataType.UInt64Array: DataType.UInt64,
}
_f32 = st.floats(width=32, allow_nan=False)
_f64 = st.floats(allow_nan=False)
_text = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]), max_size=20)
_datetime_ms = st.integers(0, 2**53)


def _scalar(t: DataType) -> st.SearchStrategy[Any]:
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return st.integers(lo, hi)
    return {
        DataType.Float: _f32,
        DataType.Double: _f64,
        DataType.Boolean: st.booleans(),
        DataType.String: _text,
        DataType.Text: _text,
        DataType.UUID: st.uuids().map(str),
        DataType.DateTime: _datetime_ms,
        DataType.Bytes: st.binary(max_size=40),
        DataType.File: st.binary(max_size=40),
    }[t]


_SCALARS = [*_INT_RANGES, DataType.Float, DataType.Double, DataType.Boolean, DataType.String]
_SCALARS += [DataType.DateTime, DataType.Text, DataType.UUID, DataType.Bytes, DataType.File]
_CELL_TYPES = [t for t in _SCALARS if t not in (DataType.Bytes, DataType.File)]


def _array(t: DataType) -> st.SearchStrategy[tuple[Any, ...]]:
    if t in _ARRAY_OF:
        elem = _scalar(_ARRAY_OF[t])
    else:
        elem = {
            DataType.FloatArray: _f32,
            DataType.DoubleArray: _f64,
            DataType.BooleanArray: st.booleans(),
            DataType.StringArray: _text,
            DataType.DateTimeArray: _datetime_ms,
        }[t]
    return st.lists(elem, max_size=12).map(tuple)


@st.composite
def _dataset(draw: st.DrawFn) -> DataSet:
    types = draw(st.lists(st.sampled_from(_CELL_TYPES), min_size=1, max_size=4))
    names = tuple(f"c{i}" for i in range(len(types)))
    rows = draw(st.lists(st.tuples(*[_scalar(t) for t in types]), max_size=4).map(tuple))
    return DataSet(names, tuple(int(t) for t in types), rows)


@st.composite
def _template(draw: st.DrawFn) -> Template:
    members = draw(st.lists(_simple_metric(), max_size=3))
    ptype = draw(st.sampled_from([DataType.Int32, DataType.String, DataType.Boolean]))
    params = (Parameter("p", int(ptype), draw(_scalar(ptype))),)
    return Template(
        metrics=tuple(members),
        parameters=params,
        version=draw(st.none() | st.just("1.0")),
        template_ref=draw(st.none() | st.just("Motor")),
        is_definition=draw(st.booleans()),
    )


@st.composite
def _properties(draw: st.DrawFn) -> dict[str, Property]:
    t = draw(st.sampled_from([DataType.Int32, DataType.Double, DataType.String]))
    props: dict[str, Property] = {
        "engUnit": Property(int(DataType.String), draw(_text)),
        "x": Property(int(t), draw(_scalar(t))),
        "missing": Property(int(DataType.Int64), None, True),
    }
    if draw(st.booleans()):
        props["nested"] = Property(
            int(DataType.PropertySet), {"lo": Property(int(DataType.Double), 0.5)}
        )
        props["list"] = Property(
            int(DataType.PropertySetList), ({"a": Property(int(DataType.Boolean), True)},)
        )
    return props


@st.composite
def _simple_metric(draw: st.DrawFn) -> Metric:
    t = draw(st.sampled_from(_SCALARS))
    return Metric(name=f"m{draw(st.integers(0, 99))}", datatype=int(t), value=draw(_scalar(t)))


@st.composite
def _metric(draw: st.DrawFn) -> Metric:
    kinds = [*_SCALARS, *_ARRAY_OF, DataType.FloatArray, DataType.DoubleArray]
    kinds += [DataType.BooleanArray, DataType.StringArray, DataType.DateTimeArray]
    kinds += [DataType.DataSet, DataType.Template]
    t = draw(st.sampled_from(kinds))
    is_null = draw(st.booleans().map(lambda b: b and draw(st.booleans())))
    value: Any
    if is_null:
        value = None
    elif t == DataType.DataSet:
        value = draw(_dataset())
    elif t == DataType.Template:
        value = draw(_template())
    elif t >= DataType.Int8Array:
        value = draw(_array(t))
    else:
        value = draw(_scalar(t))
    return Metric(
        name=draw(st.none() | _text),
        datatype=int(t),
        value=value,
        alias=draw(st.none() | st.integers(0, 2**64 - 1)),
        timestamp=draw(st.none() | st.integers(0, 2**64 - 1)),
        is_historical=draw(st.booleans()),
        is_transient=draw(st.booleans()),
        is_null=is_null,
        properties=draw(st.none() | _properties()),
    )


@settings(max_examples=300, deadline=None)
@given(
    metrics=st.lists(_metric(), max_size=6),
    timestamp=st.none() | st.integers(0, 2**64 - 1),
    seq=st.none() | st.integers(0, 255),
    uuid_=st.none() | _text,
    body=st.none() | st.binary(max_size=10),
)
def test_every_datatype_round_trips(
    metrics: list[Metric], timestamp: int | None, seq: int | None, uuid_: str | None, body: Any
) -> None:
    payload = Payload(tuple(metrics), timestamp, seq, uuid_, body)
    assert decode_payload(encode_payload(payload)) == payload


def test_integers_travel_as_twos_complement_of_the_spec() -> None:
    from shopfloor.connectors import _sparkplug_b_pb2 as pb

    msg = pb.Payload()
    m = msg.metrics.add()
    m.name, m.datatype, m.int_value = "a", DataType.Int8, 0xFFFF_FFFB  # -5, sign-extended
    m = msg.metrics.add()
    m.name, m.datatype, m.int_value = "b", DataType.Int16, 0xFFFE  # -2, not sign-extended
    m = msg.metrics.add()
    m.name, m.datatype, m.long_value = "c", DataType.UInt32, 4_000_000_000  # in long_value
    m = msg.metrics.add()
    m.name, m.datatype, m.long_value = "d", DataType.Int64, 2**64 - 7
    decoded = decode_payload(msg.SerializeToString())
    assert [x.value for x in decoded.metrics] == [-5, -2, 4_000_000_000, -7]
    encoded = pb.Payload.FromString(
        encode_payload(Payload((Metric("e", DataType.Int32, -1),)))
    ).metrics[0]
    assert encoded.int_value == 0xFFFF_FFFF


def test_array_packing_follows_the_spec() -> None:
    # BooleanArray: uint32 LE count, then bits MSB first; StringArray: NUL terminated
    data = pack_array(
        DataType.BooleanArray, (True, False, True, True, False, False, False, False, True)
    )
    assert data == b"\x09\x00\x00\x00" + bytes([0b10110000, 0b10000000])
    assert pack_array(DataType.StringArray, ("ab", "", "c")) == b"ab\0\0c\0"
    assert pack_array(DataType.Int16Array, (-2, 3)) == struct.pack("<hh", -2, 3)
    assert unpack_array(DataType.DoubleArray, struct.pack("<2d", 1.5, -2.0)) == (1.5, -2.0)
    with pytest.raises(PayloadError, match="multiple of 4"):
        unpack_array(DataType.Int32Array, b"\0\0\0")


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff\xff\xff", b"\x12\x05\x0a\x01", b"not protobuf at all \x00\x99"],
)
def test_garbage_is_a_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_payload(data)


def test_row_values() -> None:
    assert row_value(Metric("a", DataType.UInt64, 2**64 - 1)) == str(2**64 - 1)
    assert row_value(Metric("a", DataType.Int8, -3)) == -3
    assert row_value(Metric("a", DataType.DateTime, 1_700_000_000_000)) == 1_700_000_000_000
    assert row_value(Metric("a", DataType.Float, 1.5)) == 1.5
    assert row_value(Metric("a", DataType.Bytes, b"\x00\x01")) == "AAE="
    assert row_value(Metric("a", DataType.Int32Array, (1, -2))) == "[1,-2]"
    assert row_value(Metric("a", DataType.Double, None, is_null=True)) is None
    ds = DataSet(("x", "y"), (int(DataType.Int32), int(DataType.String)), ((1, "a"),))
    assert json.loads(str(row_value(Metric("a", DataType.DataSet, ds)))) == {
        "columns": ["x", "y"],
        "types": ["Int32", "String"],
        "rows": [[1, "a"]],
    }
    tp = Template((Metric("speed", DataType.Double, 2.5),), (), "1", "Motor", False)
    assert json.loads(str(row_value(Metric("a", DataType.Template, tp))))["metrics"] == {
        "speed": 2.5
    }


def test_settings_are_validated() -> None:
    with pytest.raises(ConnectorError, match="not mqtt"):
        SparkplugConnector("x", "opc.tcp://h:4840", [])
    with pytest.raises(ConnectorError, match="unknown Sparkplug option"):
        SparkplugConnector("x", ENDPOINT, [], {"group": "a"})
    with pytest.raises(ConnectorError, match="not a topic level"):
        SparkplugConnector("x", ENDPOINT, [], {"groups": ["a/b"]})
    c = SparkplugConnector("x", ENDPOINT, [], {"groups": "plant1"})
    assert c.settings.groups == ("plant1",)
    assert c.state_topic == "spBv1.0/STATE/shopfloor-x"


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


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def _until(changed: asyncio.Event, cond: Callable[[], Any], wait_s: float = 10.0) -> Any:
    async with asyncio.timeout(wait_s):
        while True:
            result = cond()
            if result:
                return result
            changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await changed.wait()


class Edge:
    """A minimal Sparkplug edge node: births, data with its own ``seq``, and the commands
    it receives."""

    def __init__(self, group: str, edge: str, bd_seq: int = 0) -> None:
        self.group, self.edge, self.bd_seq = group, edge, bd_seq
        self.seq = 0
        self.commands: list[tuple[str, Payload]] = []
        self.changed = asyncio.Event()
        death = Payload((Metric("bdSeq", DataType.UInt64, bd_seq),), timestamp=_ms())
        self.client = aiomqtt.Client(
            HOST,
            PORT,
            identifier=f"edge-{uuid.uuid4().hex[:8]}",
            will=aiomqtt.Will(self.topic("NDEATH"), encode_payload(death), qos=1),
        )
        self._reader: asyncio.Task[None] | None = None

    def topic(self, kind: str, device: str = "") -> str:
        base = f"spBv1.0/{self.group}/{kind}/{self.edge}"
        return f"{base}/{device}" if device else base

    async def __aenter__(self) -> Edge:
        await self.client.__aenter__()
        await self.client.subscribe(self.topic("NCMD"), qos=1)
        await self.client.subscribe(self.topic("DCMD") + "/#", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for m in self.client.messages:
            self.commands.append((str(m.topic), decode_payload(bytes(m.payload))))
            self.changed.set()

    async def send(
        self,
        kind: str,
        metrics: Sequence[Metric],
        device: str = "",
        *,
        seq: int | None = None,
        ts: int | None = None,
    ) -> int:
        """Publish one message; NBIRTH resets ``seq`` to 0 and adds ``bdSeq``. Returns ts."""
        ts = _ms() if ts is None else ts
        if kind == "NBIRTH":
            self.seq = 0
            metrics = [*metrics, Metric("bdSeq", DataType.UInt64, self.bd_seq)]
        elif kind != "NDEATH":
            self.seq = (self.seq + 1) % 256
        use = self.seq if seq is None else seq
        payload = Payload(tuple(metrics), timestamp=ts, seq=None if kind == "NDEATH" else use)
        await self.client.publish(self.topic(kind, device), encode_payload(payload), qos=1)
        return ts

    async def rebirths(self, n: int = 1) -> list[Payload]:
        def found() -> list[Payload]:
            out = [
                p
                for t, p in self.commands
                if t == self.topic("NCMD")
                and any(m.name == "Node Control/Rebirth" and m.value is True for m in p.metrics)
            ]
            return out if len(out) >= n else []

        result: list[Payload] = await _until(self.changed, found)
        return result


class Harness:
    """A running host connector and everything it delivered."""

    def __init__(self, c: SparkplugConnector) -> None:
        self.c = c
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
        return await _until(self.changed, cond, wait_s)

    def of(self, address: str) -> list[tuple[datetime, Any, int]]:
        out = []
        for r in self.rows:
            if r["address"] == address:
                value = next(
                    (r[c] for c in ("v_float", "v_int", "v_bool", "v_str") if r[c] is not None),
                    None,
                )
                out.append((r["ts"], value, r["quality"]))
        return out

    def values(self, address: str) -> list[Any]:
        return [v for _, v, _ in self.of(address)]


@pytest.fixture
def group() -> str:
    return f"grp-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running(group: str, points: Sequence[str] = (), **opts: Any) -> AsyncIterator[Harness]:
    options = {
        "host_id": f"host-{uuid.uuid4().hex[:8]}",
        "groups": [group],
        "flush_interval_ms": 20,
        **opts,
    }
    c = SparkplugConnector("plant", ENDPOINT, [PointSpec(p) for p in points], options)
    h = Harness(c)
    c.dead_letter_sink = h.letter_sink
    task = asyncio.create_task(c.run(h.sink))
    try:
        await h.until(lambda: c.status.state == "connected")
        yield h
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


NODE_METRICS = [
    Metric("Temperature", DataType.Double, 21.5, alias=1),
    Metric("Count", DataType.Int32, -7, alias=2),
    Metric("Mode", DataType.String, "AUTO", alias=3),
    Metric("Setpoint", DataType.Float, 1.5, alias=4),
]
DEVICE_METRICS = [
    Metric("Running", DataType.Boolean, False, alias=10),
    Metric("Speed", DataType.UInt16, 1200, alias=11),
]


async def _born(h: Harness, e: Edge) -> None:
    await e.send("NBIRTH", NODE_METRICS)
    await e.send("DBIRTH", DEVICE_METRICS, "press1")
    prefix = f"{e.group}/{e.edge}"
    await h.until(lambda: h.values(f"{prefix}/press1/Speed"))


@needs_broker
async def test_births_and_data_by_alias(group: str) -> None:
    async with running(group) as h, Edge(group, "edge1", bd_seq=3) as e:
        t0 = await e.send("NBIRTH", NODE_METRICS)
        t1 = await e.send("DBIRTH", DEVICE_METRICS, "press1")
        t2 = await e.send(
            "NDATA",
            [
                Metric(alias=1, datatype=DataType.Double, value=22.25, timestamp=t0 + 5),
                Metric(alias=3, datatype=DataType.String, value=None, is_null=True),
            ],
        )
        t3 = await e.send(
            "DDATA", [Metric(alias=10, datatype=DataType.Boolean, value=True)], "press1"
        )
        p = f"{group}/edge1"
        await h.until(lambda: h.values(f"{p}/press1/Running") == [False, True])
        await h.until(lambda: len(h.values(f"{p}/Mode")) == 2)
        assert h.of(f"{p}/Temperature") == [
            (_dt(t0), 21.5, Quality.GOOD),
            (_dt(t0 + 5), 22.25, Quality.GOOD),  # the metric's own timestamp
        ]
        assert h.of(f"{p}/Mode") == [(_dt(t0), "AUTO", Quality.GOOD), (_dt(t2), None, Quality.GOOD)]
        assert h.values(f"{p}/Count") == [-7]
        assert h.values(f"{p}/Setpoint") == [1.5]
        assert h.values(f"{p}/bdSeq") == [3]
        assert h.of(f"{p}/press1/Speed") == [(_dt(t1), 1200, Quality.GOOD)]
        assert h.of(f"{p}/press1/Running")[-1] == (_dt(t3), True, Quality.GOOD)
        assert h.c.metrics.births_total == 2
        assert h.c.metrics.rebirth_requests_total == 0
        assert h.letters == []
        assert h.c.node_online(group, "edge1")


@needs_broker
async def test_only_configured_points_are_emitted(group: str) -> None:
    async with running(group, points=[f"{group}/edge1/Count"]) as h, Edge(group, "edge1") as e:
        await e.send("NBIRTH", NODE_METRICS)
        await h.until(lambda: h.rows)
        assert {r["address"] for r in h.rows} == {f"{group}/edge1/Count"}


@needs_broker
async def test_seq_wraps_past_255_without_a_rebirth(group: str) -> None:
    async with running(group) as h, Edge(group, "edge1") as e:
        await e.send("NBIRTH", NODE_METRICS)
        for i in range(300):
            await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=i)])
        await h.until(lambda: h.values(f"{group}/edge1/Count")[-1:] == [299])
        assert h.values(f"{group}/edge1/Count") == [-7, *range(300)]
        assert h.c.metrics.seq_gaps_total == 0
        assert h.c.metrics.rebirth_requests_total == 0
        assert e.commands == []


@needs_broker
async def test_gap_requests_a_rebirth_and_the_data_around_it_is_kept(group: str) -> None:
    """Lost messages are lost, but the birth still holds: what comes after a gap, until the
    answering NBIRTH, is decoded with it (Sparkplug 3.0: an edge node stops sending data
    when it gets the request, and aliases change only with a new NBIRTH)."""
    async with running(group, rebirth_interval_s=0) as h, Edge(group, "edge1") as e:
        await _born(h, e)
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=1)])
        e.seq += 2  # two messages lost
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=4)])
        (cmd,) = await e.rebirths()
        (m,) = cmd.metrics
        assert (m.name, m.datatype, m.value) == ("Node Control/Rebirth", DataType.Boolean, True)
        # data racing the request, and another gap before the birth: kept, no second request
        await e.send("DDATA", [Metric(alias=11, datatype=DataType.UInt16, value=7)], "press1")
        e.seq += 1
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=6)])
        await h.until(lambda: h.values(f"{group}/edge1/Count")[-1:] == [6])
        assert h.values(f"{group}/edge1/Count") == [-7, 1, 4, 6]
        assert h.values(f"{group}/edge1/press1/Speed") == [1200, 7]
        assert h.c.metrics.seq_gaps_total == 2
        assert h.c.metrics.messages_lost_total == 3
        assert h.c.metrics.rebirth_requests_total == 1  # the first one is not answered yet
        await e.send("NBIRTH", NODE_METRICS)
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=5)])
        await h.until(lambda: h.values(f"{group}/edge1/Count")[-1:] == [5])
        # answered: the next gap asks again at once
        e.seq += 1
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=9)])
        await e.rebirths(2)
        await h.until(lambda: h.values(f"{group}/edge1/Count")[-1:] == [9])
        assert h.values(f"{group}/edge1/Count") == [-7, 1, 4, 6, -7, 5, 9]
        assert h.letters == []
        assert h.c.node_online(group, "edge1")


@needs_broker
async def test_an_unanswered_rebirth_request_is_repeated_after_the_timeout(group: str) -> None:
    opts = {"rebirth_interval_s": 0, "rebirth_timeout_s": 0.3}
    async with running(group, **opts) as h, Edge(group, "edge1") as e:
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=1)], seq=7)
        await e.rebirths()
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=2)], seq=8)
        await h.until(lambda: len(h.letters) == 2)
        assert h.c.metrics.rebirth_requests_total == 1  # within the timeout
        await asyncio.sleep(0.4)
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=3)], seq=9)
        await e.rebirths(2)
        await h.until(lambda: len(h.letters) == 3)
        assert all("before NBIRTH" in letter["reason"] for letter in h.letters)
        assert h.rows == []


@needs_broker
async def test_data_before_birth_is_dead_lettered_and_asks_for_a_rebirth(group: str) -> None:
    async with running(group) as h, Edge(group, "edge1") as e:
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=1)], seq=7)
        await e.rebirths()
        await h.until(lambda: h.letters)
        (letter,) = h.letters
        assert letter["reason"].startswith("NDATA before NBIRTH")
        assert letter["location"] == e.topic("NDATA")
        assert decode_payload(letter["payload"]).seq == 7
        assert h.rows == []


@needs_broker
async def test_unknown_alias_asks_for_a_rebirth(group: str) -> None:
    async with running(group) as h, Edge(group, "edge1") as e:
        await _born(h, e)
        await e.send("NDATA", [Metric(alias=99, datatype=DataType.Int32, value=1)])
        await e.rebirths()
        await h.until(lambda: h.letters)
        assert "unknown metric alias 99" in h.letters[0]["reason"]


@needs_broker
async def test_ndeath_makes_every_metric_stale_and_a_stale_ndeath_is_ignored(
    group: str,
) -> None:
    async with running(group) as h, Edge(group, "edge1", bd_seq=5) as e:
        await _born(h, e)
        p = f"{group}/edge1"
        # an NDEATH of an older session (another bdSeq) must not kill this one
        await e.send("NDEATH", [Metric("bdSeq", DataType.UInt64, 4)])
        await e.send("NDATA", [Metric(alias=2, datatype=DataType.Int32, value=11)])
        await h.until(lambda: h.values(f"{p}/Count")[-1:] == [11])
        assert h.c.metrics.stale_deaths_total == 1
        assert all(q == Quality.GOOD for r in h.rows for q in [r["quality"]])
        t_death = await e.send("NDEATH", [Metric("bdSeq", DataType.UInt64, 5)])
        await h.until(lambda: any(r["quality"] != Quality.GOOD for r in h.rows))
        await h.until(lambda: sum(r["quality"] != Quality.GOOD for r in h.rows) == 7)
        stale = {r["address"] for r in h.rows if r["quality"] == Quality.BAD_NOT_CONNECTED}
        names = [m.name for m in NODE_METRICS] + ["bdSeq"]
        assert stale == {f"{p}/{n}" for n in names} | {
            f"{p}/press1/{m.name}" for m in DEVICE_METRICS
        }
        for r in h.rows:
            if r["quality"] == Quality.BAD_NOT_CONNECTED:
                assert r["ts"] == _dt(t_death)
                assert (r["v_float"], r["v_int"], r["v_bool"], r["v_str"]) == (None,) * 4
        assert h.c.metrics.deaths_total == 1
        assert not h.c.node_online(group, "edge1")


@needs_broker
async def test_ddeath_makes_only_that_device_stale(group: str) -> None:
    async with running(group) as h, Edge(group, "edge1") as e:
        await _born(h, e)
        await e.send("DBIRTH", [Metric("Level", DataType.Double, 0.5, alias=20)], "tank")
        t = await e.send("DDEATH", [], "press1")
        p = f"{group}/edge1"
        await h.until(lambda: sum(r["quality"] == Quality.BAD_NOT_CONNECTED for r in h.rows) == 2)
        assert h.of(f"{p}/press1/Running")[-1] == (_dt(t), None, Quality.BAD_NOT_CONNECTED)
        assert h.of(f"{p}/press1/Speed")[-1] == (_dt(t), None, Quality.BAD_NOT_CONNECTED)
        await e.send("DDATA", [Metric(alias=20, datatype=DataType.Double, value=0.75)], "tank")
        await e.send("NDATA", [Metric(alias=1, datatype=DataType.Double, value=30.0)])
        await h.until(lambda: h.values(f"{p}/Temperature")[-1:] == [30.0])
        assert h.values(f"{p}/tank/Level") == [0.5, 0.75]
        assert h.c.metrics.deaths_total == 1
        assert h.c.metrics.rebirth_requests_total == 0


@needs_broker
async def test_malformed_payloads_are_dead_letters_and_data_keeps_flowing(group: str) -> None:
    async with running(group) as h, Edge(group, "edge1") as e:
        await _born(h, e)
        garbage = b"\xff\xfe\x00garbage"
        await e.client.publish(e.topic("NDATA"), garbage, qos=1)
        await e.client.publish(f"spBv1.0/{group}/NSOMETHING/edge1", b"", qos=1)
        await e.send("NDATA", [Metric(alias=1, datatype=DataType.Double, value=23.0)])
        await h.until(lambda: h.values(f"{group}/edge1/Temperature")[-1:] == [23.0])
        await h.until(lambda: len(h.letters) == 2)
        bad, topic = h.letters
        assert bad["reason"].startswith("malformed NDATA payload")
        assert bad["payload"] == garbage
        assert bad["location"] == e.topic("NDATA")
        assert "unparseable Sparkplug topic" in topic["reason"]
        assert h.c.status.state == "connected"


@needs_broker
async def test_write_sends_ncmd_and_dcmd_with_the_birth_datatype(group: str) -> None:
    async with running(group) as h, Edge(group, "edge1") as e:
        await _born(h, e)
        await h.c.write(f"{group}/edge1/press1/Speed", "1500")
        await h.c.write(f"{group}/edge1/Setpoint", 2.5)
        await _until(e.changed, lambda: len(e.commands) == 2)
        (t1, p1), (t2, p2) = e.commands
        assert t1 == e.topic("DCMD", "press1")
        (m1,) = p1.metrics
        assert (m1.name, m1.alias, m1.datatype, m1.value) == ("Speed", 11, DataType.UInt16, 1500)
        assert t2 == e.topic("NCMD")
        (m2,) = p2.metrics
        assert (m2.name, m2.alias, m2.datatype, m2.value) == ("Setpoint", 4, DataType.Float, 2.5)
        with pytest.raises(ConnectorError, match="no such metric"):
            await h.c.write(f"{group}/edge1/press1/Nope", 1)
        with pytest.raises(ConnectorError, match="does not fit UInt16"):
            await h.c.write(f"{group}/edge1/press1/Speed", "fast")
        assert h.c.metrics.commands_total == 2


# --------------------------------------------------------------------------- host STATE


async def _retained_state(host_id: str, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The retained STATE of ``host_id`` once it satisfies ``want`` (a fresh subscriber)."""
    topic = f"spBv1.0/STATE/{host_id}"
    async with aiomqtt.Client(HOST, PORT, identifier=f"watch-{uuid.uuid4().hex[:8]}") as c:
        await c.subscribe(topic, qos=1)
        async with asyncio.timeout(10):
            async for m in c.messages:
                state: dict[str, Any] = json.loads(bytes(m.payload))
                if want(state):
                    return state
    raise AssertionError("unreachable")


async def _clear_retained(host_id: str) -> None:
    async with aiomqtt.Client(HOST, PORT) as c:
        await c.publish(f"spBv1.0/STATE/{host_id}", b"", qos=1, retain=True)


_HOST_SCRIPT = """
import asyncio, sys
from shopfloor.connectors.sparkplug import SparkplugConnector

async def main() -> None:
    c = SparkplugConnector("killed", "mqtt://127.0.0.1:1883", [],
                           {"host_id": sys.argv[1], "groups": [sys.argv[2]]})
    async def sink(batch): pass
    await c.run(sink)

asyncio.run(main())
"""


@needs_broker
async def test_state_is_online_and_the_will_says_offline_when_the_host_dies(group: str) -> None:
    host_id = f"host-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _HOST_SCRIPT, host_id, group)
    try:
        online = await _retained_state(host_id, lambda s: s["online"] is True)
        assert isinstance(online["timestamp"], int)
        assert abs(online["timestamp"] - _ms()) < 60_000
        proc.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sends the Will
        await proc.wait()
        offline = await _retained_state(host_id, lambda s: s["online"] is False)
        assert offline == {"online": False, "timestamp": online["timestamp"]}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await _clear_retained(host_id)


@needs_broker
async def test_clean_stop_publishes_offline_state(group: str) -> None:
    async with running(group) as h:
        host_id = h.c.settings.host_id
        online = await _retained_state(host_id, lambda s: s["online"] is True)
    try:
        offline = await _retained_state(host_id, lambda s: s["online"] is False)
        assert offline["timestamp"] == online["timestamp"]
        assert h.c.status.state == "stopped"
    finally:
        await _clear_retained(host_id)


def test_float_row_values_are_exact_for_float32() -> None:
    v = decode_payload(encode_payload(Payload((Metric("f", DataType.Float, 0.1),)))).metrics[0]
    assert v.value == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert not math.isnan(float(row_value(v) or 0.0))


@needs_broker
async def test_historical_metrics_are_stored_with_their_own_timestamps(group: str) -> None:
    async with running(group) as h, Edge(group, "edge1") as e:
        t0 = await e.send("NBIRTH", NODE_METRICS)
        old = t0 - 3_600_000
        await e.send(
            "NDATA",
            [
                Metric(
                    alias=1, datatype=DataType.Double, value=19.0, timestamp=old, is_historical=True
                ),
                Metric(alias=1, datatype=DataType.Double, value=23.0),
            ],
        )
        p = f"{group}/edge1/Temperature"
        await h.until(lambda: len(h.values(p)) == 3)
        assert [(ts, v) for ts, v, _ in h.of(p)][1] == (_dt(old), 19.0)
        assert h.c.metrics.historical_total == 1


async def test_reconnects_with_backoff_when_the_broker_is_away() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    c = SparkplugConnector(
        "away",
        f"mqtt://{HOST}:{port}",
        [],
        {"reconnect_initial_s": 0.01, "reconnect_max_s": 0.02},
    )

    async def sink(batch: RawBatch) -> None:
        raise AssertionError("no data expected")

    changed = asyncio.Event()
    task = asyncio.create_task(c.run(sink))
    try:
        await _until(changed, lambda: c.status.reconnects >= 2)
        assert c.status.state == "disconnected"
        assert c.status.last_error is not None
        with pytest.raises(ConnectorError, match="not connected"):
            await c.request_rebirth("g", "e")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert c.status.state == "stopped"

"""The Sparkplug host's columnar data path gives the same rows as decoding metric by metric.

Random births and data messages (by alias or by name, with or without timestamps and
datatypes, nulls, types the columnar path leaves to the general one) go through two hosts, one
with the columnar path and one without; their rows, dead letters and counters must agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.connectors import _sparkplug_b_pb2 as pb
from shopfloor.connectors._sparkplug_columns import parse_data, simple_count
from shopfloor.connectors._sparkplug_payload import DataType, Metric, Payload, encode_payload
from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.sparkplug import SparkplugConnector
from shopfloor.edge.batch import RawBatch

GROUP, EDGE = "g", "e1"
NOW = 1_700_000_000_000

_VALUES: dict[DataType, st.SearchStrategy[Any]] = {
    DataType.Int8: st.integers(-(2**7), 2**7 - 1),
    DataType.Int16: st.integers(-(2**15), 2**15 - 1),
    DataType.Int32: st.integers(-(2**31), 2**31 - 1),
    DataType.Int64: st.integers(-(2**63), 2**63 - 1),
    DataType.UInt8: st.integers(0, 2**8 - 1),
    DataType.UInt16: st.integers(0, 2**16 - 1),
    DataType.UInt32: st.integers(0, 2**32 - 1),
    DataType.UInt64: st.integers(0, 2**64 - 1),
    DataType.Float: st.floats(width=32, allow_nan=False),
    DataType.Double: st.floats(allow_nan=False),
    DataType.Boolean: st.booleans(),
    DataType.String: st.text(max_size=8),
    DataType.Text: st.text(max_size=8),
    DataType.DateTime: st.integers(0, 2**53),
    DataType.Bytes: st.binary(max_size=8),
    DataType.Int32Array: st.lists(st.integers(-(2**31), 2**31 - 1), max_size=3).map(tuple),
}
_TYPES = list(_VALUES)
_FIXED: dict[DataType, Any] = {
    DataType.Double: 1.0,
    DataType.Int8: 0,
    DataType.Boolean: False,
    DataType.String: "",
    DataType.Int64: 0,
    DataType.Float: 0.0,
    DataType.UInt32: 0,
    DataType.DateTime: 0,
}


def _host(points: list[str] | None = None) -> SparkplugConnector:
    specs = [PointSpec(p, "float") for p in points or []]
    return SparkplugConnector("plant", "mqtt://127.0.0.1:1", specs, {"groups": [GROUP]})


def _encode(payload: Payload, strip_datatype: list[bool] | None = None) -> bytes:
    """``payload`` encoded, with the datatype left out of the metrics ``strip_datatype`` says."""
    data = encode_payload(payload)
    if not strip_datatype or not any(strip_datatype):
        return data
    msg = pb.Payload()
    msg.ParseFromString(data)
    for m, strip in zip(msg.metrics, strip_datatype, strict=True):
        if strip:
            m.ClearField("datatype")
    return bytes(msg.SerializeToString())


@st.composite
def _device(draw: st.DrawFn) -> tuple[list[DataType], bool]:
    types = draw(st.lists(st.sampled_from(_TYPES), min_size=1, max_size=6))
    return types, draw(st.booleans())  # with aliases?


@st.composite
def _message(draw: st.DrawFn, types: list[DataType], aliased: bool) -> dict[str, Any]:
    idx = draw(st.lists(st.integers(0, len(types) - 1), min_size=0, max_size=len(types) + 1))
    by_alias = aliased and draw(st.booleans())
    with_ts = draw(st.booleans())
    strip = draw(st.booleans())
    nulls = draw(st.lists(st.booleans(), min_size=len(idx), max_size=len(idx)))
    values = [draw(_VALUES[types[i]]) for i in idx]
    return {
        "idx": idx,
        "by_alias": by_alias,
        "with_ts": with_ts,
        "strip": strip,
        "nulls": [n and draw(st.integers(0, 9)) == 0 for n in nulls],
        "historical": draw(st.lists(st.booleans(), min_size=len(idx), max_size=len(idx))),
        "values": values,
        # with no timestamp at all a row gets the arrival time: not comparable
        "payload_ts": draw(
            (st.none() if with_ts else st.nothing()) | st.integers(NOW, NOW + 10_000)
        ),
    }


def _metrics_of(types: list[DataType], aliased: bool, msg: dict[str, Any]) -> list[Metric]:
    out = []
    rows = zip(msg["idx"], msg["values"], msg["nulls"], msg["historical"], strict=True)
    for k, (i, value, null, historical) in enumerate(rows):
        out.append(
            Metric(
                name=None if msg["by_alias"] else f"m{i}",
                alias=i + 1 if msg["by_alias"] else None,
                datatype=types[i],
                value=None if null else value,
                is_null=null,
                is_historical=historical,
                timestamp=NOW + 1000 * k if msg["with_ts"] else None,
            )
        )
    return out


async def _feed(host: SparkplugConnector, messages: list[tuple[str, bytes]]) -> pa.Table:
    tables: list[pa.Table] = []

    async def sink(batch: RawBatch) -> None:
        tables.append(batch.table)

    for topic, payload in messages:
        await host._on_message(topic, payload)
    await host._flush(sink)  # one batch: the columns of many messages together
    if not tables:
        return pa.table({})
    t = pa.concat_tables(tables)
    # the general path and the columns build separate tables: compare as sets of rows
    keys = [(c, "ascending") for c in t.column_names]
    return t.take(pa.compute.sort_indices(t, keys))


def _births(
    devices: list[tuple[list[DataType], bool]], value: Callable[[DataType], Any]
) -> list[tuple[str, bytes]]:
    """NBIRTH and one DBIRTH per device (``seq`` 0 … ``len(devices)``)."""
    messages: list[tuple[str, bytes]] = []
    nbirth = Payload(
        metrics=(Metric(name="bdSeq", datatype=DataType.Int64, value=0),), timestamp=NOW, seq=0
    )
    messages.append((f"spBv1.0/{GROUP}/NBIRTH/{EDGE}", encode_payload(nbirth)))
    seq = 0
    for d, (types, aliased) in enumerate(devices):
        seq = (seq + 1) % 256
        metrics = tuple(
            Metric(
                name=f"m{i}",
                alias=i + 1 if aliased else None,
                datatype=t,
                value=value(t),
                timestamp=NOW,
            )
            for i, t in enumerate(types)
        )
        birth = Payload(metrics=metrics, timestamp=NOW, seq=seq)
        messages.append((f"spBv1.0/{GROUP}/DBIRTH/{EDGE}/d{d}", encode_payload(birth)))
    return messages


def _stream(devices: list[tuple[list[DataType], bool]], data: st.DataObject) -> list[Any]:
    messages = _births(devices, lambda t: data.draw(_VALUES[t]))
    seq = len(devices)
    for _ in range(data.draw(st.integers(1, 8))):
        d = data.draw(st.integers(0, len(devices) - 1))
        types, aliased = devices[d]
        msg = data.draw(_message(types, aliased))
        seq = (seq + 1) % 256
        metrics = _metrics_of(types, aliased, msg)
        payload = Payload(metrics=tuple(metrics), timestamp=msg["payload_ts"], seq=seq)
        strip = [msg["strip"] and not m.is_null for m in metrics]
        messages.append((f"spBv1.0/{GROUP}/DDATA/{EDGE}/d{d}", _encode(payload, strip)))
    return messages


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(devices=st.lists(_device(), min_size=1, max_size=3), data=st.data(), points=st.booleans())
def test_columnar_rows_equal_the_general_decoder(
    devices: list[tuple[list[DataType], bool]], data: st.DataObject, points: bool
) -> None:
    messages = _stream(devices, data)
    wanted = [f"{GROUP}/{EDGE}/d0/m0", f"{GROUP}/{EDGE}/d0/m2"] if points else None
    fast, slow = _host(wanted), _host(wanted)
    slow._columnar = False
    got = asyncio.run(_feed(fast, messages))
    want = asyncio.run(_feed(slow, messages))
    assert got.to_pylist() == want.to_pylist()
    assert fast.metrics == slow.metrics
    assert fast.status.values_total == slow.status.values_total


def test_a_simple_message_takes_the_columnar_path() -> None:
    types = [DataType.Double, DataType.Int8, DataType.Boolean, DataType.String, DataType.Int64]
    types += [DataType.Double, DataType.Float, DataType.UInt32, DataType.DateTime]
    devices = [(types, True)]
    host = _host()
    births = _births(devices, _FIXED.__getitem__)
    values = (2.5, -3, True, "RUN", -(2**40), -7.25, 0.5, 2**32 - 1, 2**41)
    metrics = tuple(
        Metric(alias=i + 1, datatype=t, value=v, timestamp=NOW + i, is_historical=i == 1)
        for i, (t, v) in enumerate(zip(types, values, strict=True))
    )
    data = _encode(Payload(metrics=metrics, timestamp=NOW, seq=2), [True] * len(types))
    parsed = parse_data(data)
    assert parsed is not None
    assert simple_count(*parsed) == len(types)

    async def run() -> pa.Table:
        for topic, payload in births:
            await host._on_message(topic, payload)
        host._builder.build()  # drop the birth rows
        await host._on_message(f"spBv1.0/{GROUP}/DDATA/{EDGE}/d0", data)
        assert len(host._columns) == len(types)
        assert len(host._builder) == 0
        return await _feed(host, [])

    rows = asyncio.run(run()).to_pylist()
    assert [(r["address"].rsplit("/", 1)[1], r["ts"].timestamp() * 1000) for r in rows] == [
        (f"m{i}", NOW + i) for i in range(len(types))
    ]
    assert [r["v_float"] for r in rows] == [2.5, *[None] * 4, -7.25, 0.5, None, None]
    assert [r["v_int"] for r in rows] == [
        None,
        -3,
        None,
        None,
        -(2**40),
        None,
        None,
        2**32 - 1,
        2**41,
    ]
    assert [r["v_bool"] for r in rows] == [None, None, True, *[None] * 6]
    assert [r["v_str"] for r in rows] == [None, None, None, "RUN", *[None] * 5]
    assert host.metrics.historical_total == 1


def test_messages_that_are_not_simple_are_told_apart() -> None:
    def count(metrics: tuple[Metric, ...]) -> int:
        parsed = parse_data(encode_payload(Payload(metrics=metrics, seq=1)))
        assert parsed is not None
        return simple_count(*parsed)

    a = Metric(alias=1, datatype=DataType.Double, value=1.0)
    b = Metric(name="b", datatype=DataType.Double, value=1.0)
    assert count((a, a)) == 2
    assert count((b, b)) == 2
    assert count((a, b)) == -1  # by alias and by name mixed
    assert count((a, Metric(alias=2, datatype=DataType.Double, is_null=True))) == -1
    assert count((a, Metric(alias=2, datatype=DataType.Bytes, value=b"x"))) == -1
    assert count((a, Metric(alias=2, datatype=DataType.Double, value=1.0, timestamp=5))) == -1
    assert parse_data(b"\x07 not protobuf") is None


@pytest.mark.parametrize("ts", [2**62, 2**64 - 1])
def test_timestamps_beyond_the_range_are_dead_letters(ts: int) -> None:
    host = _host()
    births = _births([([DataType.Double], True)], _FIXED.__getitem__)
    bad = encode_payload(
        Payload(
            metrics=(Metric(alias=1, datatype=DataType.Double, value=1.0, timestamp=ts),), seq=2
        )
    )

    async def run() -> None:
        for topic, payload in [*births, (f"spBv1.0/{GROUP}/DDATA/{EDGE}/d0", bad)]:
            await host._on_message(topic, payload)

    asyncio.run(run())
    assert host.metrics.dead_letters_total == 1
    assert len(host._columns) == 0

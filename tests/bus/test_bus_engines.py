"""The bus contract, on every engine: the in-process bus and NATS JetStream (real server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from _nats_helpers import bus_url, delete_stream

from shopfloor.bus.base import Consumer, Publisher, bus_key, subject_token
from shopfloor.bus.memory import MemoryBus
from shopfloor.bus.nats import NatsConsumer, NatsPublisher, parse_nats_url
from shopfloor.errors import BusError

ENGINES = ("memory", "nats")


@asynccontextmanager
async def engine(name: str, ack_wait: float = 1.0) -> AsyncIterator[tuple[Publisher, Consumer]]:
    """A publisher and a consumer of a fresh bus of engine ``name``."""
    if name == "memory":
        bus = MemoryBus(ack_wait=ack_wait)
        yield bus.publisher(), bus.consumer()
        return
    url = bus_url(ack_wait=ack_wait)
    try:
        async with NatsPublisher.from_url(url) as pub, NatsConsumer.from_url(url) as con:
            yield pub, con
    finally:
        await delete_stream(url)


async def fetch_all(consumer: Consumer, n: int, wait_s: float = 5.0) -> list:  # type: ignore[type-arg]
    got: list = []  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + wait_s
    while len(got) < n and asyncio.get_running_loop().time() < deadline:
        got.extend(await consumer.fetch(n - len(got), 0.5))
    return got


@pytest.mark.parametrize("name", ENGINES)
async def test_order_per_key_and_duplicate_ids(name: str) -> None:
    async with engine(name) as (pub, con):
        for k in range(20):
            assert await pub.publish(bus_key("edge-1", "plc a"), f"a-{k}", b"A%d" % k)
            assert await pub.publish(bus_key("edge-1", "plc.b"), f"b-{k}", b"B%d" % k)
        assert not await pub.publish(bus_key("edge-1", "plc a"), "a-3", b"again")
        got = await fetch_all(con, 40)
        assert len(got) == 40
        by_key: dict[str, list[str]] = {}
        for d in got:
            by_key.setdefault(d.key, []).append(d.batch_id)
            assert d.deliveries == 1
        assert by_key == {
            "edge-1.plc_a": [f"a-{k}" for k in range(20)],
            "edge-1.plc_b": [f"b-{k}" for k in range(20)],
        }
        assert {d.payload for d in got if d.batch_id == "a-3"} == {b"A3"}
        for d in got:
            await d.ack()
        assert await con.fetch(10, 0.3) == []


@pytest.mark.parametrize("name", ENGINES)
async def test_unacknowledged_messages_come_again(name: str) -> None:
    async with engine(name, ack_wait=2.0) as (pub, con):
        for k in range(3):
            await pub.publish("e.p", f"m-{k}", b"x")
        first = await fetch_all(con, 3)
        assert [d.batch_id for d in first] == ["m-0", "m-1", "m-2"]
        await first[0].ack()
        await first[1].nak()  # again at once
        (again,) = await fetch_all(con, 1)
        assert (again.batch_id, again.deliveries) == ("m-1", 2)
        await again.ack()
        # m-2 was neither acknowledged nor refused: it comes back after ack_wait
        (late,) = await fetch_all(con, 1, wait_s=10.0)
        assert (late.batch_id, late.deliveries) == ("m-2", 2)
        await late.ack()
        await asyncio.sleep(0.5)
        assert await con.fetch(10, 0.3) == []
        state = await con.state()
        assert state is not None
        assert state.pending == 0


@pytest.mark.parametrize("name", ENGINES)
async def test_in_progress_holds_a_message(name: str) -> None:
    async with engine(name, ack_wait=1.5) as (pub, con):
        await pub.publish("e.p", "slow", b"x")
        (d,) = await fetch_all(con, 1)
        for _ in range(3):  # 3 s of work, telling the bus every 0.6 s
            await asyncio.sleep(0.6)
            await d.in_progress()
        assert await con.fetch(1, 0.2) == []
        await d.ack()


def test_names_and_urls() -> None:
    assert subject_token("line 1.press*7>") == "line_1_press_7"
    assert subject_token("...") == "_"
    assert bus_key("edge a", "plc") == "edge_a.plc"
    s = parse_nats_url("nats://u:pw@a:4222,nats://b:4223?stream=P1&replicas=3&ack_wait=12.5")
    assert s.servers == ("nats://u:pw@a:4222", "nats://b:4223")
    assert (s.stream, s.replicas, s.ack_wait) == ("P1", 3, 12.5)
    assert "pw" not in s.display
    with pytest.raises(BusError, match="unknown option 'stram'"):
        parse_nats_url("nats://a:4222?stram=X")
    with pytest.raises(BusError, match="one token"):
        parse_nats_url("nats://a:4222?stream=a.b")
    with pytest.raises(BusError, match="not a NATS URL"):
        parse_nats_url("mqtt://a:1883")


async def test_an_unreachable_broker_is_a_bus_error() -> None:
    from _nats_helpers import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    pub = NatsPublisher.from_url(url)
    with pytest.raises(BusError, match="cannot connect"):
        await pub.publish("e.p", "x", b"x")
    con = NatsConsumer.from_url(url)
    with pytest.raises(BusError, match="cannot connect"):
        await con.fetch(1, 0.1)
    await pub.close()
    await con.close()


async def test_memory_bus_is_bounded() -> None:
    bus = MemoryBus(max_messages=2, max_payload=10)
    pub = bus.publisher()
    await pub.publish("k", "1", b"x")
    await pub.publish("k", "2", b"x")
    with pytest.raises(BusError, match="full"):
        await pub.publish("k", "3", b"x")
    with pytest.raises(BusError, match="bytes"):
        await pub.publish("k", "4", b"x" * 11)

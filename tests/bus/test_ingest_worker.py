"""Edge node → bus → worker in one process: the in-process bus, a real edge buffer, DuckDB
and PostgreSQL historians. Redelivered batches are stored once; what cannot be read becomes
a dead letter; signals named by the edge are created by the worker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest
from _nats_helpers import FACTORY, fresh_store

from shopfloor.bus._codec import decode, encode_readings, split_readings
from shopfloor.bus.memory import MemoryBus
from shopfloor.bus.worker import IngestWorker
from shopfloor.edge._generator import CounterGenerator, address
from shopfloor.edge.buffer import EdgeBuffer
from shopfloor.edge.node import EdgeNode
from shopfloor.historian import open_historian
from shopfloor.model import parse_factory

FAR = datetime(2100, 1, 1, tzinfo=UTC)
T0 = datetime(1970, 1, 1, tzinfo=UTC)


async def _until(cond, what: str, wait_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + wait_s
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
async def test_edge_to_worker_once_each(engine: str, tmp_path: Path) -> None:
    factory = parse_factory(FACTORY)
    gen = CounterGenerator("gen", "acme/plant", 4, 3, 10.0)
    bus = MemoryBus(ack_wait=0.5)
    async with (
        fresh_store(engine, tmp_path) as url,
        open_historian(url) as historian,
        EdgeBuffer(tmp_path / "edge.buffer") as buffer,
    ):
        worker = IngestWorker(factory, historian, bus.consumer(), fetch_timeout=0.2)
        node = EdgeNode(
            factory, buffer, bus.publisher(), edge_id="e1", connectors=False, max_message_bytes=8192
        )
        async with node:
            for k in range(100, 130):  # 30 ticks, several messages each
                await node.put_readings(gen.batch(k, k), gen.points)
            await _until(lambda: bus.published >= node.stats.messages_buffered, "publishing")
        # a worker that dies after storing: it took the messages but never acknowledged
        dying = IngestWorker(factory, historian, bus.consumer())
        await dying.setup()
        taken = await bus.consumer().fetch(5, 1.0)
        assert len(taken) == 5
        await dying._store([dying._decode(d) for d in taken])  # stored, not acknowledged
        running = asyncio.create_task(worker.run())
        await _until(lambda: worker.stats.messages >= node.stats.messages_buffered, "storing")
        worker.stop()
        await running
        assert worker.stats.duplicates == 5  # redelivered after ack_wait, recognised
        assert worker.stats.out_of_order == 0
        ids = (await historian.signals()).to_pylist()
        assert sorted(r["path"] for r in ids) == sorted(
            f"acme/plant/{address(d, s)}" for d in range(4) for s in range(3)
        )
        for r in ids:
            raw = await historian.read_raw(r["path"], T0, FAR)
            assert raw.column("value").to_pylist() == [float(k) for k in range(100, 130)]


async def test_undecodable_and_unnamed_become_dead_letters(tmp_path: Path) -> None:
    factory = parse_factory(FACTORY)
    named = CounterGenerator("gen", "acme/plant", 1, 2, 1.0)
    wider = CounterGenerator("gen", "acme/plant", 1, 3, 1.0)  # s002 is named nowhere
    bus = MemoryBus()
    pub = bus.publisher()
    await pub.publish("e.gen", "garbage-1", b"SFR1 not arrow at all")
    await pub.publish("e.gen", "nameless-1", encode_readings(wider.batch(5, 5)))
    await pub.publish("e.gen", "good-1", encode_readings(named.batch(6, 6), named.points))
    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as historian:
        worker = IngestWorker(factory, historian, bus.consumer(), fetch_timeout=0.2)
        running = asyncio.create_task(worker.run())
        await _until(lambda: worker.stats.messages >= 3, "storing")
        worker.stop()
        await running
        letters = (await historian.read_dead_letters()).to_pylist()
        assert len(letters) == 2  # the unreadable message, the unnamed reading
        garbage = next(r for r in letters if r["source"] == "bus")
        assert garbage["location"] == "e.gen batch garbage-1"
        assert "undecodable bus message" in garbage["reason"]
        assert garbage["payload"] == b"SFR1 not arrow at all"
        unnamed = next(r for r in letters if r["source"] == "gen")
        assert unnamed["location"] == "dev00000/s002"
        # names sent with one message serve the whole group fetched with it
        assert worker.stats.values_stored == 4
        assert worker.stats.dead_letters == 2
        assert await historian.stored_batches(["garbage-1", "nameless-1", "good-1"]) == {
            "garbage-1",
            "nameless-1",
            "good-1",
        }


def test_split_messages_keep_rows_and_names() -> None:
    gen = CounterGenerator("gen", "acme/plant", 50, 20, 1.0)
    raw = gen.batch(7, 9)
    bodies = split_readings(raw, gen.points, 16 << 10)
    assert len(bodies) > 3
    assert all(len(b) <= 16 << 10 for b in bodies)
    parts = [decode(b) for b in bodies]
    rows = [r for m in parts for r in m.raw.table.to_pylist()]  # type: ignore[union-attr]
    assert rows == raw.table.to_pylist()
    for m in parts:
        assert m.raw is not None
        assert m.points is not None
        want = set(m.raw.table.column("address").to_pylist())
        assert set(m.points.column("address").to_pylist()) == want
        assert pc.all(pc.starts_with(m.points.column("path"), "acme/plant/dev")).as_py()


async def test_events_and_dead_letters_of_the_edge_are_stored_once(tmp_path: Path) -> None:
    import pyarrow as pa

    from shopfloor.bus._codec import encode_dead_letters, encode_events
    from shopfloor.edge.deadletter import DeadLetterBuilder
    from shopfloor.edge.events import EVENT_SCHEMA

    ts = datetime(2026, 1, 1, 6, tzinfo=UTC)
    events = pa.Table.from_pylist(
        [
            {"event_id": "agv-7/err/1", "kind": "agv_error", "asset": "acme/plant/agv-7",
             "signal": None, "ts": ts, "end_ts": None, "code": "E42", "severity": 750,
             "message": "blocked", "data": "{}"},
        ],
        schema=EVENT_SCHEMA,
    )  # fmt: skip
    letters = DeadLetterBuilder()
    letters.add("gen", "payload is not JSON", location="topic/x", payload=b"{oops")
    bus = MemoryBus()
    pub = bus.publisher()
    await pub.publish("e.gen", "ev-1", encode_events(events))
    await pub.publish("e.gen", "dl-1", encode_dead_letters(letters.build()))
    await pub.publish("e.gen", "dl-1", encode_dead_letters(letters.build()))  # dropped: same id
    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as historian:
        worker = IngestWorker(parse_factory(FACTORY), historian, bus.consumer())
        running = asyncio.create_task(worker.run())
        await _until(lambda: worker.stats.messages >= 2, "storing")
        worker.stop()
        await running
        stored = (await historian.read_events(ts, FAR)).to_pylist()
        assert [(e["event_id"], e["code"], e["asset"]) for e in stored] == [
            ("agv-7/err/1", "E42", "acme/plant/agv-7")
        ]
        (letter,) = (await historian.read_dead_letters()).to_pylist()
        assert (letter["source"], letter["reason"], letter["payload"]) == (
            "gen",
            "payload is not JSON",
            b"{oops",
        )


async def test_a_message_redelivered_into_the_same_commit_is_stored_once(tmp_path: Path) -> None:
    """A slow commit: the bus hands a message out again while its first delivery still
    waits, and both land in one transaction."""
    gen = CounterGenerator("gen", "acme/plant", 2, 2, 1.0)
    bus = MemoryBus(ack_wait=0.2)
    await bus.publisher().publish("e.gen", "b-1", encode_readings(gen.batch(9, 9), gen.points))
    consumer = bus.consumer()
    (first,) = await consumer.fetch(1, 1.0)
    await asyncio.sleep(0.3)
    (again,) = await consumer.fetch(1, 1.0)  # after ack_wait: the same message
    assert (again.batch_id, again.deliveries) == ("b-1", 2)
    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as historian:
        worker = IngestWorker(parse_factory(FACTORY), historian, consumer)
        await worker.setup()
        assert await worker._store([worker._decode(first), worker._decode(again)]) == []
        assert worker.stats.values_stored == 4
        assert worker.stats.duplicates == 1
        raw = await historian.read_raw("acme/plant/dev00000/s000", T0, FAR)
        assert raw.column("value").to_pylist() == [9.0]

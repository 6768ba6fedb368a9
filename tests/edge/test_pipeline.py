"""The embedded pipeline: mapping, dead letters, bounded queue, flush on close."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shopfloor.edge.batch import RawBatch, RawBatchBuilder, ReadingBatch
from shopfloor.edge.mapper import Mapper, Route
from shopfloor.edge.pipeline import Pipeline
from shopfloor.historian import SignalInfo, open_historian

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(addr: str, start: int, n: int) -> RawBatch:
    b = RawBatchBuilder()
    for k in range(start, start + n):
        b.append("plc", addr, 1_767_225_600_000_000 + k * 1_000, float(k))
    return b.build()


async def test_everything_accepted_is_stored_or_dead_lettered(tmp_path: Path) -> None:
    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h:
        ids = await h.register_signals([SignalInfo("a/b/temp", "float")])
        mapper = Mapper({("plc", "t"): Route(ids["a/b/temp"], "float")})
        pipe = Pipeline(h, mapper, max_queue=2, flush_rows=500, flush_interval=0.05)
        writer = asyncio.create_task(pipe.run())
        for k in range(20):
            await pipe.sink(_batch("t", k * 100, 100))
        await pipe.sink(_batch("unknown", 0, 7))
        await pipe.close()
        await writer
        raw = await h.read_raw("a/b/temp", T0, T0 + timedelta(days=1))
        assert raw.num_rows == 2000
        assert raw.column("value").to_pylist() == [float(k) for k in range(2000)]
        dead = await h.read_dead_letters()
        assert dead.num_rows == 7
        assert pipe.stats.values_in == 2007
        assert pipe.stats.values_stored == 2000
        assert pipe.stats.dead_letters == 7


async def test_a_full_queue_holds_producers_back(tmp_path: Path) -> None:
    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h:
        ids = await h.register_signals([SignalInfo("a/b/temp", "float")])
        pipe = Pipeline(h, Mapper({("plc", "t"): Route(ids["a/b/temp"], "float")}), max_queue=3)
        # No writer runs: the fourth batch must wait instead of growing memory.
        for k in range(3):
            await pipe.sink(_batch("t", k, 1))
        blocked = asyncio.create_task(pipe.sink(_batch("t", 3, 1)))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        assert pipe.stats.queue_depth == 3
        writer = asyncio.create_task(pipe.run())
        await asyncio.wait_for(blocked, 5)
        await pipe.close()
        await writer
        assert pipe.stats.values_stored == 4


async def test_observers_see_each_commit_and_a_failing_one_stops_nothing(tmp_path: Path) -> None:
    seen: list[int] = []

    async def broken(batch: ReadingBatch) -> None:
        raise RuntimeError("observer bug")

    async def counting(batch: ReadingBatch) -> None:
        seen.extend(batch.table.column("v_float").to_pylist())

    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h:
        ids = await h.register_signals([SignalInfo("a/b/temp", "float")])
        mapper = Mapper({("plc", "t"): Route(ids["a/b/temp"], "float")})
        pipe = Pipeline(h, mapper, flush_interval=0.05, observers=[broken, counting])
        writer = asyncio.create_task(pipe.run())
        for k in range(5):
            await pipe.sink(_batch("t", k * 10, 10))
        await pipe.sink(_batch("unknown", 0, 3))  # dead letters are not readings
        await pipe.close()
        await writer
        assert sorted(seen) == [float(k) for k in range(50)]
        assert pipe.stats.values_stored == 50

"""Idempotent appends (``append_once``): a batch id is stored once, atomically with its data.

Parametrised over DuckDB and PostgreSQL like the rest of the historian suite.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from _historian_engines import fresh_store
from _historian_helpers import T0, T0_US, batch

from shopfloor.edge.batch import ReadingBatch
from shopfloor.edge.deadletter import DEAD_LETTER_SCHEMA
from shopfloor.errors import HistorianError
from shopfloor.historian import SignalInfo, open_historian

END = T0 + timedelta(hours=1)


def _letters(n: int, reason: str) -> pa.Table:
    return pa.table(
        {
            "received_at": pa.array([T0] * n, DEAD_LETTER_SCHEMA.field("received_at").type),
            "source": ["plc"] * n,
            "location": [f"addr-{k}" for k in range(n)],
            "reason": [reason] * n,
            "payload": pa.nulls(n, pa.binary()),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


async def test_a_batch_id_is_stored_once(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("m/x", "float")]))["m/x"]
        b1 = batch(
            sid, "float", [T0_US + k * 1_000_000 for k in range(10)], [1.0 * k for k in range(10)]
        )
        b2 = batch(sid, "float", [T0_US + k * 1_000_000 for k in range(10, 15)], [2.0] * 5)
        assert await h.stored_batches(["a", "b"]) == set()
        assert await h.append_once(["a"], b1, _letters(2, "unknown address"))
        assert await h.stored_batches(["a", "b"]) == {"a"}
        # the same id again: nothing stored, neither samples nor dead letters
        assert not await h.append_once(["a"], b1, _letters(2, "unknown address"))
        # ids together: one already stored spoils the whole call
        assert not await h.append_once(["b", "a"], b2)
        assert await h.stored_batches(["b"]) == set()
        assert await h.append_once(["b", "c"], b2)
        assert await h.stored_batches(["a", "b", "c", "d"]) == {"a", "b", "c"}
        raw = await h.read_raw("m/x", T0, END)
        assert raw.num_rows == 15
        assert (await h.read_dead_letters()).num_rows == 2
        # a batch of dead letters only
        assert await h.append_once(["e"], ReadingBatch.empty(), _letters(3, "bad"))
        assert not await h.append_once(["e"], ReadingBatch.empty(), _letters(3, "bad"))
        assert (await h.read_dead_letters()).num_rows == 5
        with pytest.raises(HistorianError, match="at least one batch id"):
            await h.append_once([], b1)


async def test_a_failed_append_records_no_id(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("m/x", "float")]))["m/x"]
        bad = batch(sid + 99, "float", [T0_US], [1.0])  # an unknown signal id
        with pytest.raises(HistorianError):
            await h.append_once(["z"], bad)
        assert await h.stored_batches(["z"]) == set()
        assert await h.append_once(["z"], batch(sid, "float", [T0_US], [1.0]))


async def test_retention_forgets_old_ids(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("m/x", "int")]))["m/x"]
        assert await h.append_once(["old"], batch(sid, "int", [T0_US], [1]))
        await h.apply_retention(T0)  # ids are recorded now, after T0: kept
        assert await h.stored_batches(["old"]) == {"old"}
        await h.apply_retention(datetime.now(UTC) + timedelta(minutes=1))
        assert await h.stored_batches(["old"]) == set()


async def test_concurrent_writers_of_one_id_store_it_once() -> None:
    """Two PostgreSQL connections race with the same id: exactly one stores the batch."""
    async with (
        fresh_store("postgres") as url,
        open_historian(url) as a,
        open_historian(url) as b,
    ):
        sid = (await a.register_signals([SignalInfo("m/x", "float")]))["m/x"]
        rows = batch(sid, "float", [T0_US + k for k in range(5000)], [0.5] * 5000)
        for round_ in range(5):
            ids = [f"race-{round_}"]
            results = await asyncio.gather(a.append_once(ids, rows), b.append_once(ids, rows))
            assert sorted(results) == [False, True]
        assert (await a.read_raw("m/x", T0, END)).num_rows == 25_000  # five rounds, once each

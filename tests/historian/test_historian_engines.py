"""Every historian engine, one suite: events, dead letters, errors, retention, persistence.

Each test runs on DuckDB and on PostgreSQL (the ``historian_url`` fixture).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from _historian_helpers import T0, T0_US, batch

from shopfloor.edge.batch import ReadingBatch
from shopfloor.edge.deadletter import DeadLetterBuilder
from shopfloor.errors import HistorianError, UnknownSignalError
from shopfloor.historian import EVENT_SCHEMA, SignalInfo, open_historian

MIN = 60_000_000


def _events(*rows: tuple[str, str, str, int, int | None]) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "event_id": [r[0] for r in rows],
            "kind": [r[1] for r in rows],
            "asset": [r[2] for r in rows],
            "ts": pa.array([T0_US + r[3] * MIN for r in rows]).cast(EVENT_SCHEMA.field("ts").type),
            "end_ts": pa.array(
                [None if r[4] is None else T0_US + r[4] * MIN for r in rows], pa.int64()
            ).cast(EVENT_SCHEMA.field("end_ts").type),
            "message": [f"m-{r[0]}" for r in rows],
        }
    )


async def test_events_upsert_and_filters(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        await h.append_events(
            _events(
                ("e1", "state", "acme/line-1/press-7", 0, 10),
                ("e2", "alarm", "acme/line-1/press-7", 5, None),
                ("e3", "state", "acme/line-10/robot", 20, 30),
                ("e4", "state", "acme/line-1", 100, 110),
            )
        )
        # e1 replaced (also within one batch: the last one wins).
        await h.append_events(
            _events(
                ("e1", "state", "acme/line-1/press-7", 0, 3),
                ("e1", "state", "acme/line-1/press-7", 0, 12),
            )
        )
        t = lambda m: T0 + timedelta(minutes=m)  # noqa: E731
        every = await h.read_events(t(-10), t(200))
        assert every.schema.equals(EVENT_SCHEMA)
        assert every.column("event_id").to_pylist() == ["e1", "e2", "e3", "e4"]
        assert every.column("end_ts").to_pylist()[0] == t(12)
        assert every.column("message").to_pylist()[0] == "m-e1"
        assert (await h.read_events(t(11), t(15))).column("event_id").to_pylist() == ["e1", "e2"]
        line1 = await h.read_events(t(-10), t(200), asset_prefix="acme/line-1")
        assert line1.column("event_id").to_pylist() == ["e1", "e2", "e4"]
        alarms = await h.read_events(t(-10), t(200), kinds=["alarm"])
        assert alarms.column("event_id").to_pylist() == ["e2"]
        assert (await h.read_events(t(-10), t(200), limit=2)).num_rows == 2
        assert (await h.read_events(t(300), t(400))).schema.equals(EVENT_SCHEMA)
        # retention removes ended events only
        result = await h.apply_retention(t(50))
        assert result.events_deleted == 2
        assert (await h.read_events(t(-10), t(200))).column("event_id").to_pylist() == ["e2", "e4"]


async def test_dead_letters(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        b = DeadLetterBuilder()
        b.add("plc", "unknown address", location="%MW1", payload=b"\x00\x01", received_at=T0)
        b.add("plc", "bad value", received_at=T0 + timedelta(hours=1))
        assert await h.append_dead_letters(b.build()) == 2
        newest_first = await h.read_dead_letters()
        assert newest_first.column("reason").to_pylist() == ["bad value", "unknown address"]
        assert newest_first.column("payload").to_pylist()[1] == b"\x00\x01"
        assert newest_first.column("location").to_pylist() == [None, "%MW1"]
        assert newest_first.column("received_at").to_pylist()[1] == T0
        assert (await h.read_dead_letters(T0 + timedelta(minutes=1))).num_rows == 1
        assert (await h.read_dead_letters(limit=1)).num_rows == 1
        assert (await h.apply_retention(T0 + timedelta(minutes=30))).dead_letters_deleted == 1
        assert (await h.read_dead_letters()).num_rows == 1


async def test_type_mismatch_and_unknown_ids_store_nothing(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        ids = await h.register_signals(
            [SignalInfo("a/temp", "float"), SignalInfo("a/count", "int")]
        )
        good = batch(ids["a/temp"], "float", [T0_US], [1.5])
        wrong = batch(ids["a/temp"], "int", [T0_US + 1], [7])
        with pytest.raises(HistorianError, match="a/temp"):
            await h.append(ReadingBatch.concat([good, wrong]))
        with pytest.raises(HistorianError, match="999"):
            await h.append(ReadingBatch.concat([good, batch(999, "float", [T0_US], [1.0])]))
        assert (await h.read_raw("a/temp", T0, T0 + timedelta(days=1))).num_rows == 0
        assert (await h.latest()).num_rows == 0
        with pytest.raises(UnknownSignalError, match="nope"):
            await h.read_raw("nope", T0, T0 + timedelta(days=1))
        with pytest.raises(UnknownSignalError, match="12345"):
            await h.latest([12345])
        with pytest.raises(HistorianError, match="another data type"):
            await h.register_signals([SignalInfo("a/temp", "int")])
        with pytest.raises(HistorianError, match="unknown data type"):
            await h.register_signals([SignalInfo("a/x", "complex")])  # type: ignore[arg-type]
        assert await h.register_signals([SignalInfo("a/temp", "float")]) == {
            "a/temp": ids["a/temp"]
        }
        s = await h.register_signals([SignalInfo("a/name", "string")])
        with pytest.raises(HistorianError, match="string"):
            await h.downsample(s["a/name"], T0, T0 + timedelta(hours=1), timedelta(minutes=1))
        with pytest.raises(HistorianError, match="positive"):
            await h.downsample("a/temp", T0, T0 + timedelta(hours=1), timedelta(0))


async def test_retention_keeps_downsample_consistent(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("x", "float")]))["x"]
        n = 4 * 3600  # four hours at 1 Hz
        ts = [T0_US + k * 1_000_000 for k in range(n)]
        await h.append(batch(sid, "float", ts, [float(k % 97) for k in range(n)]))
        cut = T0 + timedelta(hours=1, seconds=30)  # minute floor: 1 h exactly
        result = await h.apply_retention(cut)
        assert result.samples_deleted == 3600
        assert result.rollups_deleted == 60 + 1  # the first hour's minutes and the hour
        end = T0 + timedelta(hours=4)
        for width in (timedelta(minutes=7, seconds=13), timedelta(hours=1), timedelta(seconds=30)):
            fast = await h.downsample("x", T0, end, width)
            assert fast.equals(await h.downsample_raw("x", T0, end, width))  # type: ignore[attr-defined]
            assert sum(fast.column("count").to_pylist()) == n - 3600
        assert (await h.latest(["x"])).num_rows == 1
        # everything goes: latest values too
        await h.apply_retention(end + timedelta(days=2))
        assert (await h.latest()).num_rows == 0
        assert (await h.read_raw("x", T0, end)).num_rows == 0


async def test_data_survives_reopen(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("a/b", "int", unit="C62")]))["a/b"]
        await h.append(batch(sid, "int", [T0_US, T0_US + 1], [1, 2]))
    async with open_historian(historian_url) as h:
        raw = await h.read_raw("a/b", T0, T0 + timedelta(seconds=1))
        assert raw.column("value").to_pylist() == [1, 2]
        assert raw.schema.field("ts").type == pa.timestamp("us", tz="UTC")
        assert (await h.signals()).to_pylist() == [
            {
                "signal_id": sid,
                "path": "a/b",
                "data_type": "int",
                "unit": "C62",
                "kind": "measurement",
            }
        ]
        assert (await h.read_raw(sid, T0, T0 + timedelta(seconds=1), limit=1)).num_rows == 1
        # a second connection to the same store sees the same catalog
        async with open_historian(historian_url) as other:
            assert (await other.signals()).equals(await h.signals())


async def test_schemas_of_empty_results(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        ids = await h.register_signals(
            [SignalInfo(f"e/{t}", t) for t in ("float", "int", "bool", "string")]  # type: ignore[arg-type]
        )
        end = T0 + timedelta(hours=1)
        for t, sid in ids.items():
            raw = await h.read_raw(sid, T0, end)
            assert raw.num_rows == 0
            assert raw.column_names == ["ts", "quality", "value"]
            assert raw.schema.field("quality").type == pa.uint8()
            if not t.endswith("string"):
                ds = await h.downsample(sid, T0, end, timedelta(minutes=5))
                assert ds.num_rows == 0
                assert ds.schema.field("bucket").type == pa.timestamp("us", tz="UTC")
        assert (await h.signals()).num_rows == 4
        latest = await h.latest()
        assert latest.num_rows == 0
        assert latest.column_names == [
            "signal_id",
            "path",
            "ts",
            "quality",
            "v_float",
            "v_int",
            "v_bool",
            "v_str",
        ]
        assert (await h.read_dead_letters()).num_rows == 0


async def test_latest_keeps_the_newest_across_late_batches(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        ids = await h.register_signals([SignalInfo("f", "float"), SignalInfo("s", "string")])
        await h.append(batch(ids["f"], "float", [T0_US + 10, T0_US + 5], [10.0, 5.0]))
        await h.append(batch(ids["f"], "float", [T0_US + 7], [7.0]))  # late: not newer
        await h.append(batch(ids["s"], "string", [T0_US + 3, T0_US + 9], ["old", "new"]))
        rows = {r["path"]: r for r in (await h.latest()).to_pylist()}
        assert rows["f"]["v_float"] == 10.0
        assert rows["s"]["v_str"] == "new"
        assert rows["s"]["ts"] == T0 + timedelta(microseconds=9)
        only = await h.latest(["s"])
        assert only.column("path").to_pylist() == ["s"]


async def test_concurrent_appends_keep_rollups_exact(historian_url: str) -> None:
    """Appends awaited together (a PostgreSQL pool runs them at once) into the same minutes."""
    async with open_historian(historian_url) as h:
        ids = await h.register_signals([SignalInfo(f"c/{i}", "int") for i in range(4)])
        sids = list(ids.values())

        async def writer(k: int) -> None:
            for j in range(5):
                ts = [T0_US + (k * 5 + j) * 1000 + i * 1_000_000 for i in range(120)]
                await h.append(ReadingBatch.concat([batch(s, "int", ts, [k] * 120) for s in sids]))

        await asyncio.gather(*(writer(k) for k in range(4)))
        for sid in sids:
            minutes = await h.rollups(sid, "1m", T0, T0 + timedelta(hours=1))
            assert minutes.column("count").to_pylist() == [4 * 5 * 60, 4 * 5 * 60]
            hours = await h.rollups(sid, "1h", T0, T0 + timedelta(hours=1))
            assert hours.column("count").to_pylist() == [4 * 5 * 120]
            assert hours.column("avg").to_pylist() == [1.5]


async def test_closed_historian_raises(historian_url: str) -> None:
    h = open_historian(historian_url)
    with pytest.raises(HistorianError, match="not open"):
        await h.signals()
    async with h:
        await h.register_signals([SignalInfo("x", "float")])
    with pytest.raises(HistorianError, match="not open"):
        await h.append(batch(1, "float", [T0_US], [1.0]))
    assert datetime.now(UTC) > T0

"""The DuckDB engine: events, dead letters, retention, errors, persistence, URLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from _historian_helpers import T0, T0_US, batch

import shopfloor.historian as public
from shopfloor.edge.deadletter import DeadLetterBuilder
from shopfloor.errors import HistorianError, UnknownSignalError
from shopfloor.historian import EVENT_SCHEMA, SignalInfo, open_historian
from shopfloor.historian._duckdb import DuckDBHistorian

MIN = 60_000_000


def test_public_surface() -> None:
    assert sorted(public.__all__) == sorted(
        [
            "DEAD_LETTER_SCHEMA",
            "EVENT_SCHEMA",
            "Historian",
            "RetentionResult",
            "SignalInfo",
            "open_historian",
        ]
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("duckdb:///abs/dir/h.duckdb", "/abs/dir/h.duckdb"),
        ("duckdb:rel/h.duckdb", "rel/h.duckdb"),
        ("duckdb://:memory:", ":memory:"),
        ("duckdb::memory:", ":memory:"),
        ("some/dir/h.duckdb", "some/dir/h.duckdb"),
    ],
)
def test_url_forms(url: str, expected: str) -> None:
    h = open_historian(url)
    assert isinstance(h, DuckDBHistorian)
    assert h.path == expected


@pytest.mark.parametrize("url", ["postgresql://host/db", "sqlite:x.db", "h.sqlite", "duckdb:"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(HistorianError) as info:
        open_historian(url)
    if "://" in url and not url.startswith("duckdb"):
        assert url.split(":")[0] in str(info.value)


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


async def test_events_upsert_and_filters() -> None:
    async with open_historian("duckdb://:memory:") as h:
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
        assert (await h.read_events(t(11), t(15))).column("event_id").to_pylist() == ["e1", "e2"]
        line1 = await h.read_events(t(-10), t(200), asset_prefix="acme/line-1")
        assert line1.column("event_id").to_pylist() == ["e1", "e2", "e4"]
        alarms = await h.read_events(t(-10), t(200), kinds=["alarm"])
        assert alarms.column("event_id").to_pylist() == ["e2"]
        assert (await h.read_events(t(-10), t(200), limit=2)).num_rows == 2
        # retention removes ended events only
        result = await h.apply_retention(t(50))
        assert result.events_deleted == 2
        assert (await h.read_events(t(-10), t(200))).column("event_id").to_pylist() == ["e2", "e4"]


async def test_dead_letters() -> None:
    async with open_historian("duckdb://:memory:") as h:
        b = DeadLetterBuilder()
        b.add("plc", "unknown address", location="%MW1", payload=b"\x00\x01", received_at=T0)
        b.add("plc", "bad value", received_at=T0 + timedelta(hours=1))
        assert await h.append_dead_letters(b.build()) == 2
        newest_first = await h.read_dead_letters()
        assert newest_first.column("reason").to_pylist() == ["bad value", "unknown address"]
        assert newest_first.column("payload").to_pylist()[1] == b"\x00\x01"
        assert (await h.read_dead_letters(T0 + timedelta(minutes=1))).num_rows == 1
        assert (await h.apply_retention(T0 + timedelta(minutes=30))).dead_letters_deleted == 1
        assert (await h.read_dead_letters()).num_rows == 1


async def test_type_mismatch_and_unknown_ids_store_nothing() -> None:
    async with open_historian("duckdb://:memory:") as h:
        ids = await h.register_signals(
            [SignalInfo("a/temp", "float"), SignalInfo("a/count", "int")]
        )
        good = batch(ids["a/temp"], "float", [T0_US], [1.5])
        wrong = batch(ids["a/temp"], "int", [T0_US + 1], [7])
        with pytest.raises(HistorianError, match="a/temp"):
            await h.append(type(good).concat([good, wrong]))
        with pytest.raises(HistorianError, match="999"):
            await h.append(type(good).concat([good, batch(999, "float", [T0_US], [1.0])]))
        assert (await h.read_raw("a/temp", T0, T0 + timedelta(days=1))).num_rows == 0
        with pytest.raises(UnknownSignalError, match="nope"):
            await h.read_raw("nope", T0, T0 + timedelta(days=1))
        with pytest.raises(HistorianError, match="another data type"):
            await h.register_signals([SignalInfo("a/temp", "int")])
        assert await h.register_signals([SignalInfo("a/temp", "float")]) == {
            "a/temp": ids["a/temp"]
        }
        s = await h.register_signals([SignalInfo("a/name", "string")])
        with pytest.raises(HistorianError, match="string"):
            await h.downsample(s["a/name"], T0, T0 + timedelta(hours=1), timedelta(minutes=1))


async def test_retention_keeps_downsample_consistent() -> None:
    async with open_historian("duckdb://:memory:") as h:
        sid = (await h.register_signals([SignalInfo("x", "float")]))["x"]
        n = 4 * 3600  # four hours at 1 Hz
        ts = [T0_US + k * 1_000_000 for k in range(n)]
        await h.append(batch(sid, "float", ts, [float(k % 97) for k in range(n)]))
        cut = T0 + timedelta(hours=1, seconds=30)  # minute floor: 1 h exactly
        result = await h.apply_retention(cut)
        assert result.samples_deleted == 3600
        assert result.rollups_deleted == 60
        end = T0 + timedelta(hours=4)
        for width in (timedelta(minutes=7, seconds=13), timedelta(hours=1), timedelta(seconds=30)):
            fast = await h.downsample("x", T0, end, width)
            assert fast.equals(await h.downsample_raw("x", T0, end, width))
            assert sum(fast.column("count").to_pylist()) == n - 3600
        assert (await h.latest(["x"])).num_rows == 1


async def test_data_survives_reopen(tmp_path: Path) -> None:
    url = f"duckdb:{tmp_path / 'sub' / 'h.duckdb'}"
    async with open_historian(url) as h:
        sid = (await h.register_signals([SignalInfo("a/b", "int", unit="C62")]))["a/b"]
        await h.append(batch(sid, "int", [T0_US, T0_US + 1], [1, 2]))
    async with open_historian(url) as h:
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


async def test_closed_historian_raises() -> None:
    h = open_historian("duckdb://:memory:")
    with pytest.raises(HistorianError, match="not open"):
        await h.signals()
    assert datetime.now(UTC) > T0

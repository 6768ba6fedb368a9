"""What only the PostgreSQL engine has: URLs, day partitions, retention by dropping them,
migrations under concurrency, the TimescaleDB fallback, the connection pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from _historian_engines import PG_URL, drop_schema, new_schema, pg_url
from _historian_helpers import T0, T0_US, batch
from psycopg import sql

from shopfloor.edge.batch import ReadingBatch
from shopfloor.errors import HistorianError
from shopfloor.historian import SignalInfo, open_historian
from shopfloor.historian._pgsql import SCHEMA_VERSION
from shopfloor.historian._postgres import PostgresHistorian, parse_postgres_url

DAY = 86_400_000_000
HOUR = 3_600_000_000


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = new_schema()
    try:
        yield name
    finally:
        await drop_schema(name)


async def _query(schema: str, query: str, *params: object) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def _partition_names(schema: str) -> list[str]:
    rows = await _query(
        schema,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'samples'::regclass ORDER BY 1",
    )
    return [str(r[0]) for r in rows]


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "conninfo", "options"),
    [
        ("postgresql://u@h:5433/db", "postgresql://u@h:5433/db", {}),
        ("postgres://u@h/db?schema=plant", "postgres://u@h/db", {"schema": "plant"}),
        (
            "postgresql://u:pw@h/db?sslmode=require&schema=s&timescale=off&pool_max=8",
            "postgresql://u:pw@h/db?sslmode=require",
            {"schema": "s", "timescale": "off", "pool_max": 8},
        ),
    ],
)
def test_url_options(url: str, conninfo: str, options: dict[str, object]) -> None:
    assert parse_postgres_url(url) == (conninfo, options)
    h = open_historian(url)
    assert isinstance(h, PostgresHistorian)
    assert h.schema == options.get("schema", "public")
    assert "pw" not in repr(h)
    assert "pw" not in h.display


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/db?timescale=maybe", "timescale must be auto, on or off"),
        ("postgresql://h/db?pool_max=lots", "pool_max='lots' is not an integer"),
        ("postgresql://h/db?pool_min=0", "pool_min must be at least 1"),
        ("postgresql://h/db?pool_min=5&pool_max=2", "bad pool size"),
        ("postgresql://h/db?schema=", "empty schema"),
    ],
)
def test_bad_url_options(url: str, message: str) -> None:
    with pytest.raises(HistorianError, match=message):
        open_historian(url)


async def test_unreachable_server_is_a_historian_error() -> None:
    h = PostgresHistorian("postgresql://postgres:secret@127.0.0.1:1/test", connect_timeout=1.0)
    with pytest.raises(HistorianError, match="cannot connect") as info:
        await h.open()
    assert "secret" not in str(info.value)
    with pytest.raises(HistorianError, match="not open"):
        await h.signals()


# -- partitions and retention ------------------------------------------------------------


async def test_a_partition_per_day_on_demand(schema: str) -> None:
    async with open_historian(pg_url(schema)) as h:
        assert isinstance(h, PostgresHistorian)
        assert h.partitioning == "native"
        assert await h.partitions() == []
        sid = (await h.register_signals([SignalInfo("x", "float")]))["x"]
        # three days, unsorted, one of them before 1970 (negative timestamps)
        ts = [T0_US + 2 * DAY + 5, T0_US, -DAY // 2, T0_US + DAY - 1, T0_US + 2 * DAY]
        await h.append(batch(sid, "float", ts, [1.0, 2.0, 3.0, 4.0, 5.0]))
        assert await h.partitions() == [
            date(1969, 12, 31),
            date(2026, 1, 1),
            date(2026, 1, 3),
        ]
        names = await _partition_names(schema)
        assert names == ["samples_19691231", "samples_20260101", "samples_20260103"]
        counts = {n: (await _query(schema, f"SELECT count(*) FROM {n}"))[0][0] for n in names}
        assert counts == {"samples_19691231": 1, "samples_20260101": 2, "samples_20260103": 2}
        # every partition has the (signal_id, ts) index
        indexed = await _query(
            schema,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename LIKE %s",
            schema,
            "samples_2%",
        )
        assert indexed == [(2,)]
        # the next batch of the same days creates nothing; a new day one partition
        await h.append(batch(sid, "float", [T0_US + 7, T0_US + DAY + 1], [6.0, 7.0]))
        assert len(await h.partitions()) == 4
        raw = await h.read_raw("x", datetime(1969, 1, 1, tzinfo=UTC), T0 + timedelta(days=3))
        assert raw.column("value").to_pylist() == [3.0, 2.0, 6.0, 4.0, 7.0, 5.0, 1.0]


async def test_retention_drops_whole_days_and_deletes_the_partial_one(schema: str) -> None:
    async with open_historian(pg_url(schema)) as h:
        assert isinstance(h, PostgresHistorian)
        sid = (await h.register_signals([SignalInfo("x", "int")]))["x"]
        # four days, one sample per 10 minutes
        ts = [T0_US + k * 600_000_000 for k in range(4 * 144)]
        await h.append(batch(sid, "int", ts, range(len(ts))))
        assert len(await h.partitions()) == 4
        cut = T0 + timedelta(days=2, hours=3, seconds=10)  # two whole days and 3 h of day 3
        result = await h.apply_retention(cut)
        assert result.samples_deleted == 2 * 144 + 18
        assert result.rollups_deleted == (2 * 144 + 18) + (2 * 24 + 3)
        assert await h.partitions() == [date(2026, 1, 3), date(2026, 1, 4)]
        assert await _partition_names(schema) == ["samples_20260103", "samples_20260104"]
        end = T0 + timedelta(days=4)
        raw = await h.read_raw("x", T0, end)
        assert raw.num_rows == 2 * 144 - 18
        assert raw.column("value").to_pylist()[0] == 2 * 144 + 18
        daily = await h.downsample("x", T0, end, timedelta(days=1))
        assert daily.column("count").to_pylist() == [144 - 18, 144]
        assert daily.equals(await h.downsample_raw("x", T0, end, timedelta(days=1)))
        # appending to a dropped day again creates its partition again
        await h.append(batch(sid, "int", [T0_US + 1], [-1]))
        assert (await h.partitions())[0] == date(2026, 1, 1)


async def test_append_after_another_process_dropped_a_partition(schema: str) -> None:
    url = pg_url(schema)
    async with open_historian(url) as writer, open_historian(url) as janitor:
        sid = (await writer.register_signals([SignalInfo("x", "float")]))["x"]
        await writer.append(batch(sid, "float", [T0_US], [1.0]))  # writer knows this day
        await janitor.apply_retention(T0 + timedelta(days=1))  # the partition is dropped
        await writer.append(batch(sid, "float", [T0_US + 1], [2.0]))  # re-created on retry
        raw = await writer.read_raw("x", T0, T0 + timedelta(days=1))
        assert raw.column("value").to_pylist() == [2.0]


async def test_batches_spanning_many_days(schema: str) -> None:
    """More partitions than one creating transaction makes (they are made in chunks)."""
    async with open_historian(pg_url(schema)) as h:
        assert isinstance(h, PostgresHistorian)
        sid = (await h.register_signals([SignalInfo("x", "float")]))["x"]
        ts = [T0_US + k * DAY for k in range(150)]
        await h.append(batch(sid, "float", ts, [float(k) for k in range(150)]))
        assert len(await h.partitions()) == 150
        result = await h.apply_retention(T0 + timedelta(days=100))
        assert result.samples_deleted == 100
        assert len(await h.partitions()) == 50


async def test_timestamps_beyond_day_partitions_are_rejected(schema: str) -> None:
    async with open_historian(pg_url(schema)) as h:
        sid = (await h.register_signals([SignalInfo("x", "float")]))["x"]
        far = 250_000 * 365 * DAY  # the year ~252000
        with pytest.raises(HistorianError, match="years 1 to 9999"):
            await h.append(batch(sid, "float", [far], [1.0]))


async def test_nul_characters_are_rejected(schema: str) -> None:
    async with open_historian(pg_url(schema)) as h:
        ids = await h.register_signals([SignalInfo("s/ok", "string"), SignalInfo("s/bad", "json")])
        good = batch(ids["s/ok"], "string", [T0_US], ["fine"])
        bad = batch(ids["s/bad"], "json", [T0_US], ['{"a": "\x00"}'])
        with pytest.raises(HistorianError, match=r"NUL characters \(signal\(s\) s/bad\)"):
            await h.append(ReadingBatch.concat([good, bad]))
        assert (await h.read_raw("s/ok", T0, T0 + timedelta(seconds=1))).num_rows == 0


# -- migrations ----------------------------------------------------------------------------


async def test_migrations_are_recorded_once(schema: str) -> None:
    url = pg_url(schema)
    for _ in range(3):
        async with open_historian(url) as h:
            assert isinstance(h, PostgresHistorian)
            assert await h.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    tables = await _query(
        schema,
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
        schema,
    )
    assert [t[0] for t in tables] == [
        "dead_letters",
        "events",
        "historian_settings",
        "ingested_batches",
        "latest",
        "rollup_1h",
        "rollup_1m",
        "samples",
        "schema_version",
        "signals",
    ]


async def test_concurrent_opens_of_a_new_schema(schema: str) -> None:
    """Separate pools (separate server sessions, as separate processes have) race to create
    the schema: the advisory lock lets one migrate and the others find it done."""
    url = pg_url(schema)
    historians = [open_historian(url) for _ in range(6)]
    await asyncio.gather(*(h.open() for h in historians))
    try:
        ids = await asyncio.gather(
            *(h.register_signals([SignalInfo("shared", "float")]) for h in historians)
        )
        assert len({i["shared"] for i in ids}) == 1
        first = historians[0]
        assert isinstance(first, PostgresHistorian)
        assert await first.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    finally:
        await asyncio.gather(*(h.close() for h in historians))


async def test_migration_to_version_2_builds_hours_from_minutes(schema: str) -> None:
    url = pg_url(schema)
    async with open_historian(url) as h:
        sid = (await h.register_signals([SignalInfo("x", "int")]))["x"]
        ts = [T0_US + k * 7_000_000 for k in range(2000)]  # ~3.9 h
        await h.append(batch(sid, "int", ts, [k * k for k in range(2000)]))
        end = T0 + timedelta(hours=5)
        before = (await h.rollups("x", "1h", T0, end)).to_pylist()
    assert len(before) == 4
    await _query(schema, "DROP TABLE rollup_1h")  # back to version 1
    await _query(schema, "DELETE FROM schema_version WHERE version >= 2")
    async with open_historian(url) as h:
        assert (await h.rollups("x", "1h", T0, end)).to_pylist() == before
    assert await _query(schema, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_a_newer_schema_is_refused(schema: str) -> None:
    url = pg_url(schema)
    async with open_historian(url):
        pass
    await _query(schema, "INSERT INTO schema_version (version) VALUES (%s)", SCHEMA_VERSION + 5)
    with pytest.raises(HistorianError, match=f"version {SCHEMA_VERSION + 5}"):
        async with open_historian(url):
            pass


# -- TimescaleDB ---------------------------------------------------------------------------


async def _timescale_offered() -> bool:
    async with await psycopg.AsyncConnection.connect(PG_URL) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        return await cur.fetchone() is not None


async def test_timescale_fallback_to_native_partitions(schema: str) -> None:
    if await _timescale_offered():
        pytest.skip("this server offers TimescaleDB: the fallback cannot happen here")
    async with open_historian(pg_url(schema, timescale="auto")) as h:
        assert isinstance(h, PostgresHistorian)
        assert h.partitioning == "native"
        sid = (await h.register_signals([SignalInfo("x", "float")]))["x"]
        await h.append(batch(sid, "float", [T0_US], [1.0]))
        assert await h.partitions() == [date(2026, 1, 1)]
    settings = await _query(schema, "SELECT key, value FROM historian_settings")
    assert settings == [("partitioning", "native")]


async def test_timescale_required_but_missing(schema: str) -> None:
    if await _timescale_offered():
        pytest.skip("this server offers TimescaleDB")
    with pytest.raises(HistorianError, match="timescale=on but the server has no timescaledb"):
        async with open_historian(pg_url(schema, timescale="on")):
            pass
    # nothing was left half-made: the failed migration rolled back, schema included
    assert await _query("public", "SELECT 1 FROM pg_namespace WHERE nspname = %s", schema) == []
    # a schema made with native partitions is refused when TimescaleDB is demanded
    async with open_historian(pg_url(schema, timescale="off")):
        pass
    with pytest.raises(HistorianError, match="created with native partitions"):
        async with open_historian(pg_url(schema, timescale="on")):
            pass


# -- pool ------------------------------------------------------------------------------------


async def test_pool_runs_queries_at_once(schema: str) -> None:
    """Two queries held open at the same time need two pooled connections."""
    async with open_historian(pg_url(schema, pool_max="2")) as h:
        assert isinstance(h, PostgresHistorian)
        await h.register_signals([SignalInfo("x", "float")])
        started = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with h._connection("holding") as conn:
                started.set()
                await release.wait()
                await conn.execute("SELECT 1")

        holder = asyncio.create_task(hold())
        await started.wait()
        assert (await h.signals()).num_rows == 1  # served by the second connection
        release.set()
        await holder


async def test_signals_registered_elsewhere_are_found(schema: str) -> None:
    url = pg_url(schema)
    async with open_historian(url) as a, open_historian(url) as b:
        sid = (await a.register_signals([SignalInfo("late/x", "float")]))["late/x"]
        await a.append(batch(sid, "float", [T0_US], [1.0]))
        # b has not seen the signal: it reloads the catalog on a miss
        assert (await b.read_raw("late/x", T0, T0 + timedelta(seconds=1))).num_rows == 1
        await b.append(batch(sid, "float", [T0_US + 1], [2.0]))
        assert (await b.latest([sid])).column("v_float").to_pylist() == [2.0]
    assert datetime.now(UTC) > T0

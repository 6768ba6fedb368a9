"""Per-minute and per-hour rollups: read directly, used by hour-wide downsampling, kept
consistent with the raw samples through late data, duplicates, retention and migration
(on every engine; the tests of DuckDB's own tables and counts on DuckDB)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from _historian_engines import ENGINES, fresh_store
from _historian_helpers import T0, T0_US, batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.errors import HistorianError, UnknownSignalError
from shopfloor.historian import SignalInfo, open_historian
from shopfloor.historian._duckdb import SCHEMA_VERSION
from shopfloor.historian.base import ROLLUP_COLUMNS, Historian

MINUTE = 60_000_000
HOUR = 60 * MINUTE
QUALITIES = st.sampled_from([0x00, 0x18, 0x40, 0xC0, 0xC0, 0xD8])
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float": st.floats(-1e6, 1e6, allow_nan=False),
    "int": st.integers(-(2**62), 2**62),
    "bool": st.booleans(),
}
SPAN = 5 * HOUR


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _us(ts: datetime) -> int:
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _num(v: Any, data_type: str) -> Any:
    return None if v is None else (float(v) if data_type == "bool" else v)


def aggregates(
    rows: list[tuple[int, int, Any]], width: int, start: int, end: int
) -> list[dict[str, Any]]:
    """Buckets of ``width`` of the usable ``(ts, quality, value)`` rows in ``[start, end)``,
    as plain Python (timestamps unique: first/last are then defined)."""
    buckets: dict[int, list[tuple[int, Any]]] = {}
    for ts, q, v in rows:
        if start <= ts < end and q >= 64 and v is not None:
            buckets.setdefault(ts // width * width, []).append((ts, v))
    out = []
    for k in sorted(buckets):
        items = sorted(buckets[k], key=lambda x: x[0])
        vals = [v for _, v in items]
        out.append(
            {
                "bucket": k,
                "first_ts": items[0][0],
                "first": vals[0],
                "last_ts": items[-1][0],
                "last": vals[-1],
                "min": min(vals),
                "max": max(vals),
                "sum": math.fsum(vals) if isinstance(vals[0], float) else sum(vals),
                "scale": math.fsum(abs(x) for x in vals),
                "count": len(vals),
            }
        )
    return out


def _assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [_us(g["bucket"]) for g in got] == [w["bucket"] for w in want]
    for g, w in zip(got, want, strict=True):
        for key in ("first", "last", "min", "max", "count"):
            assert g[key] == w[key], (key, g, w)
        for key in ("first_ts", "last_ts"):
            if key in g:
                assert _us(g[key]) == w[key]
        exact = w["sum"] / w["count"]
        assert math.isclose(g["avg"], exact, rel_tol=1e-9, abs_tol=1e-12 * w["scale"] / w["count"])


@st.composite
def _appends(draw: st.DrawFn, data_type: str, *, unique: bool) -> list[list[tuple[int, int, Any]]]:
    """Rows over ~5 h in random, unsorted batches (late and out-of-order data)."""
    offsets = draw(
        st.lists(
            st.one_of(
                st.integers(0, SPAN),
                # clusters at hour boundaries and where ranges end in the tests
                st.sampled_from([0, HOUR, 2 * HOUR, 3 * HOUR])
                .flatmap(lambda h: st.sampled_from([h, h + 17 * MINUTE, h - 17 * MINUTE]))
                .flatmap(lambda c: st.integers(c - 2 * MINUTE, c + 2 * MINUTE)),
            ),
            min_size=1,
            max_size=120,
            unique=unique,
        )
    )
    rows = [(T0_US + 17 + o, draw(QUALITIES), draw(st.none() | VALUES[data_type])) for o in offsets]
    order = draw(st.permutations(range(len(rows))))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    return [
        [rows[i] for i in order[lo:hi]]
        for lo, hi in zip([0, *cuts], [*cuts, len(rows)], strict=True)
        if hi > lo
    ]


async def _fill(h: Historian, data_type: str, parts: list[list[tuple[int, int, Any]]]) -> None:
    sid = (await h.register_signals([SignalInfo("x", data_type)]))["x"]  # type: ignore[arg-type]
    for part in parts:
        await h.append(
            batch(sid, data_type, [r[0] for r in part], [r[2] for r in part], [r[1] for r in part])
        )


HOUR_WIDTHS = st.sampled_from([1, 2, 3, 24]).map(lambda n: timedelta(hours=n))


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    data_type=st.sampled_from(["float", "int", "bool"]),
    width=HOUR_WIDTHS,
)
def test_hour_buckets_equal_the_raw_path(
    engine: str, data: st.DataObject, data_type: str, width: timedelta
) -> None:
    parts = data.draw(_appends(data_type, unique=True), label="batches")
    # ranges over whole hours, with partial hours and minutes at the edges or not
    first = data.draw(st.integers(-1, 3), label="first hour")
    last = data.draw(st.integers(first, 6), label="last hour")
    edges = st.sampled_from([0, 0, 17 * MINUTE, -17 * MINUTE, 17 * MINUTE + 17_000_000])
    start = T0_US + first * HOUR + data.draw(edges, label="start offset")
    end = max(start, T0_US + last * HOUR + data.draw(edges, label="end offset"))

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with fresh_store(engine) as url, open_historian(url) as h:
            await _fill(h, data_type, parts)
            fast = await h.downsample("x", _dt(start), _dt(end), width)
            raw = await h.downsample_raw("x", _dt(start), _dt(end), width)  # type: ignore[attr-defined]
            assert fast.schema.equals(raw.schema)
            return fast.to_pylist(), raw.to_pylist()

    fast, raw = asyncio.run(run())
    rows = [(ts, q, _num(v, data_type)) for part in parts for ts, q, v in part]
    want = aggregates(rows, width // timedelta(microseconds=1), start, end)
    _assert_same(fast, want)
    _assert_same(raw, want)
    if data_type != "float":  # integer sums are exact: so is the average, on both paths
        assert [g["avg"] for g in fast] == [g["avg"] for g in raw]


@pytest.mark.parametrize("data_type", ["int", "float"])
async def test_hour_buckets_at_every_kind_of_edge(historian_url: str, data_type: str) -> None:
    """Dense data (every 7 s over 6 h, appended out of order): every combination of range
    edges (on the hour, on a minute, inside a minute) and hour widths equals the raw path."""
    n = 6 * 3600 // 7
    ts = [T0_US + k * 7_000_000 for k in range(n)]
    values = [(k * 7919) % 1000 - 500 for k in range(n)]
    if data_type == "float":
        values = [v / 8 for v in values]
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("x", data_type)]))["x"]  # type: ignore[arg-type]
        for lo, hi in ((n // 2, n), (0, n // 3), (n // 3, n // 2)):
            await h.append(batch(sid, data_type, ts[lo:hi], values[lo:hi]))
        offsets = [0, 17 * MINUTE, 17 * MINUTE + 17_000_000, -17 * MINUTE]
        for a in offsets:
            for b in offsets:
                start, end = (
                    T0 + timedelta(microseconds=HOUR + a),
                    T0 + timedelta(microseconds=4 * HOUR + b),
                )
                for width in (timedelta(hours=1), timedelta(hours=2), timedelta(days=1)):
                    fast = (await h.downsample("x", start, end, width)).to_pylist()
                    raw = (await h.downsample_raw("x", start, end, width)).to_pylist()  # type: ignore[attr-defined]
                    assert len(fast) == len(raw)
                    for f, r in zip(fast, raw, strict=True):
                        assert {k: v for k, v in f.items() if k != "avg"} == {
                            k: v for k, v in r.items() if k != "avg"
                        }
                        assert f["avg"] == pytest.approx(r["avg"], rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), data_type=st.sampled_from(["float", "int", "bool"]))
def test_rollups_equal_aggregates_of_the_raw_rows(
    engine: str, data: st.DataObject, data_type: str
) -> None:
    parts = data.draw(_appends(data_type, unique=True), label="batches")

    async def run() -> dict[str, list[dict[str, Any]]]:
        async with fresh_store(engine) as url, open_historian(url) as h:
            await _fill(h, data_type, parts)
            lo, hi = _dt(T0_US - HOUR), _dt(T0_US + 2 * SPAN)
            out = {}
            for g in ("1m", "1h"):
                t = await h.rollups("x", g, lo, hi)  # type: ignore[arg-type]
                assert tuple(t.column_names) == ROLLUP_COLUMNS
                out[g] = t.to_pylist()
            return out

    got = asyncio.run(run())
    rows = [(ts, q, _num(v, data_type)) for part in parts for ts, q, v in part]
    for g, width in (("1m", MINUTE), ("1h", HOUR)):
        _assert_same(got[g], aggregates(rows, width, T0_US - HOUR, T0_US + 2 * SPAN))


def _hours_from_minutes(minutes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_hour: dict[int, list[dict[str, Any]]] = {}
    for m in minutes:
        by_hour.setdefault(_us(m["bucket"]) // HOUR * HOUR, []).append(m)
    out = []
    for k in sorted(by_hour):
        ms = by_hour[k]
        first = min(ms, key=lambda m: m["first_ts"])
        last = max(ms, key=lambda m: m["last_ts"])
        count = sum(m["count"] for m in ms)
        out.append(
            {
                "bucket": k,
                "first_ts": first["first_ts"],
                "first": first["first"],
                "last_ts": last["last_ts"],
                "last": last["last"],
                "min": min(m["min"] for m in ms),
                "max": max(m["max"] for m in ms),
                "avg": math.fsum(m["avg"] * m["count"] for m in ms) / count,
                "count": count,
            }
        )
    return out


def _assert_hours_summarise_minutes(
    hours: list[dict[str, Any]], minutes: list[dict[str, Any]]
) -> None:
    want = _hours_from_minutes(minutes)
    assert [_us(h["bucket"]) for h in hours] == [w["bucket"] for w in want]
    for h, w in zip(hours, want, strict=True):
        for key in ("first_ts", "first", "last_ts", "last", "min", "max", "count"):
            assert h[key] == w[key], (key, h, w)
        assert math.isclose(h["avg"], w["avg"], rel_tol=1e-9, abs_tol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    data_type=st.sampled_from(["float", "int"]),
    cut=st.none() | st.integers(0, SPAN),
)
def test_hours_summarise_their_minutes_with_duplicates_and_retention(
    engine: str, data: st.DataObject, data_type: str, cut: int | None
) -> None:
    """Duplicate timestamps (with other values, in other batches): the hour takes the same
    first and last as its minutes do; a retention cut inside an hour rebuilds that hour."""
    parts = data.draw(_appends(data_type, unique=False), label="batches")
    # re-send some rows with other values in a later batch: duplicates across batches
    again = data.draw(st.lists(st.sampled_from([r for p in parts for r in p]), max_size=10))
    parts.append([(ts, 0xC0, data.draw(VALUES[data_type])) for ts, _, _ in again])

    async def run() -> None:
        async with fresh_store(engine) as url, open_historian(url) as h:
            await _fill(h, data_type, [p for p in parts if p])
            if cut is not None:
                await h.apply_retention(_dt(T0_US + cut))
            lo, hi = _dt(T0_US - HOUR), _dt(T0_US + 2 * SPAN)
            minutes = (await h.rollups("x", "1m", lo, hi)).to_pylist()
            hours = (await h.rollups("x", "1h", lo, hi)).to_pylist()
            _assert_hours_summarise_minutes(hours, minutes)
            raw = (await h.read_raw("x", lo, hi)).to_pylist()
            usable = [r for r in raw if r["quality"] >= 64 and r["value"] is not None]
            assert sum(m["count"] for m in hours) == len(usable)

    asyncio.run(run())


async def test_retention_counts_and_rebuilds_the_cut_hour() -> None:
    async with open_historian("duckdb://:memory:") as h:
        sid = (await h.register_signals([SignalInfo("x", "int")]))["x"]
        n = 3 * 3600  # three hours at 1 Hz
        await h.append(batch(sid, "int", [T0_US + k * 1_000_000 for k in range(n)], range(n)))
        end = T0 + timedelta(hours=3)
        assert (await h.rollups("x", "1h", T0, end)).column("count").to_pylist() == [3600] * 3
        result = await h.apply_retention(T0 + timedelta(hours=1, minutes=20, seconds=30))
        # 80 minutes and the first hour deleted; the second hour rebuilt, not counted
        assert result.rollups_deleted == 80 + 1
        assert result.samples_deleted == 80 * 60
        hours = (await h.rollups("x", "1h", T0, end)).to_pylist()
        assert [_us(r["bucket"]) for r in hours] == [T0_US + HOUR, T0_US + 2 * HOUR]
        assert [r["count"] for r in hours] == [40 * 60, 3600]
        assert (hours[0]["first"], hours[0]["last"], hours[0]["min"]) == (4800, 7199, 4800)
        assert hours[0]["avg"] == (4800 + 7199) / 2
        assert _us(hours[0]["first_ts"]) == T0_US + 4800 * 1_000_000
        daily = await h.downsample("x", T0, end, timedelta(hours=24))
        assert daily.column("count").to_pylist() == [n - 80 * 60]
        assert daily.equals(await h.downsample_raw("x", T0, end, timedelta(hours=24)))  # type: ignore[attr-defined]
        # a cut on an hour boundary deletes whole hours and rebuilds nothing
        result = await h.apply_retention(T0 + timedelta(hours=2))
        assert result.rollups_deleted == 40 + 1
        assert (await h.rollups("x", "1h", T0, end)).column("count").to_pylist() == [3600]


async def test_hour_downsampling_reads_rollup_1h(tmp_path: Path) -> None:
    """Tamper with one stored hour: hour-wide buckets show it, narrower ones do not."""
    url = f"duckdb:{tmp_path / 'h.duckdb'}"
    async with open_historian(url) as h:
        sid = (await h.register_signals([SignalInfo("x", "float")]))["x"]
        n = 4 * 3600
        await h.append(batch(sid, "float", [T0_US + k * 1_000_000 for k in range(n)], [1.0] * n))
    with duckdb.connect(str(tmp_path / "h.duckdb")) as con:
        con.execute('UPDATE rollup_1h SET "max" = 99.0 WHERE hour = ?', [T0_US + HOUR])
    async with open_historian(url) as h:
        end = T0 + timedelta(hours=4)
        hourly = await h.downsample("x", T0, end, timedelta(hours=1))
        assert hourly.column("max").to_pylist() == [1.0, 99.0, 1.0, 1.0]
        two = await h.downsample("x", T0, end, timedelta(hours=2))
        assert two.column("max").to_pylist() == [99.0, 1.0]
        # unaligned range: the partial hours come from minutes and raw rows
        part = await h.downsample("x", T0 + timedelta(minutes=30), end, timedelta(hours=2))
        assert part.column("max").to_pylist() == [99.0, 1.0]
        assert part.column("count").to_pylist() == [5400, 7200]
        half = await h.downsample("x", T0, end, timedelta(minutes=30))
        assert max(half.column("max").to_pylist()) == 1.0
        assert (await h.rollups("x", "1h", T0, end)).column("max").to_pylist()[1] == 99.0


async def test_migration_builds_hours_from_minutes(tmp_path: Path) -> None:
    """A version 1 file (minute rollups only) gets its hour rollups on opening."""
    path = tmp_path / "v1.duckdb"
    url = f"duckdb:{path}"
    async with open_historian(url) as h:
        sid = (await h.register_signals([SignalInfo("x", "int")]))["x"]
        ts = [T0_US + k * 7_000_000 for k in range(2000)]  # ~3.9 h
        await h.append(batch(sid, "int", ts, [k * k for k in range(2000)]))
        end = T0 + timedelta(hours=5)
        before = (await h.rollups("x", "1h", T0, end)).to_pylist()
    with duckdb.connect(str(path)) as con:  # back to version 1
        con.execute("DROP TABLE rollup_1h")
        con.execute("DELETE FROM schema_version WHERE version >= 2")
    async with open_historian(url) as h:
        assert (await h.rollups("x", "1h", T0, end)).to_pylist() == before
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (
            SCHEMA_VERSION,
        )


async def test_rollups_bad_requests(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        await h.register_signals([SignalInfo("s", "string"), SignalInfo("f", "float")])
        end = T0 + timedelta(hours=1)
        with pytest.raises(HistorianError, match="string signal"):
            await h.rollups("s", "1m", T0, end)
        with pytest.raises(HistorianError, match="granularity '5m'"):
            await h.rollups("f", "5m", T0, end)  # type: ignore[arg-type]
        with pytest.raises(UnknownSignalError):
            await h.rollups("nope", "1h", T0, end)
        empty = await h.rollups("f", "1h", T0, end)
        assert empty.num_rows == 0
        assert tuple(empty.column_names) == ROLLUP_COLUMNS


async def test_bool_rollups_are_zero_one_floats(historian_url: str) -> None:
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("b", "bool")]))["b"]
        ts = [T0_US + k * 1_000_000 for k in range(120)]
        await h.append(batch(sid, "bool", ts, [k % 3 == 0 for k in range(120)]))
        t = await h.rollups(sid, "1m", T0, T0 + timedelta(hours=1))
    rows = t.to_pylist()
    assert [r["count"] for r in rows] == [60, 60]
    assert (rows[0]["first"], rows[0]["last"], rows[0]["min"], rows[0]["max"]) == (
        1.0,
        0.0,
        0.0,
        1.0,
    )
    assert rows[0]["avg"] == pytest.approx(20 / 60)
    assert np.isclose(rows[1]["avg"], 20 / 60)

"""``read_changes``: the run-length encoding of a signal's samples (DuckDB: from the
per-minute runs of state and counter signals, ``runs_1m``, or from the samples; other
engines: the interface's encoding of ``read_raw``), against a plain Python encoding of the
raw rows — through late, out-of-order and duplicate data and retention, on every engine."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from _historian_engines import ENGINES, fresh_store
from _historian_helpers import T0, T0_US, batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.historian import SignalInfo, open_historian
from shopfloor.historian.base import CHANGES_COLUMNS, Historian, run_length_encode

MINUTE = 60_000_000
SPAN = 20 * MINUTE
QUALITIES = st.sampled_from([0x00, 0x40, 0xC0, 0xC0, 0xC0])
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float": st.sampled_from([0.0, 1.5, -2.0, math.nan]),
    "int": st.integers(0, 3),
    "bool": st.booleans(),
    "string": st.sampled_from(["a", "b", ""]),
}


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _us(ts: datetime) -> int:
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _value_key(v: Any) -> tuple[int, int, Any]:
    """Nulls last, NaN after every number (SQL's order)."""
    if v is None:
        return (2, 0, 0)
    if isinstance(v, float) and math.isnan(v):
        return (1, 0, 0)
    return (0, 0, v)


def _same(a: Any, b: Any) -> bool:
    """``IS NOT DISTINCT FROM``, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a is b if a is None or b is None else bool(a == b)


def reference(
    rows: list[tuple[int, int, Any]], start: int, end: int, gap: int | None
) -> list[tuple[int, int, int, Any, int]]:
    """Runs ``(ts, last_ts, quality, value, count)`` of the rows in ``[start, end)``."""
    inside = sorted(
        (r for r in rows if start <= r[0] < end), key=lambda r: (r[0], r[1], _value_key(r[2]))
    )
    runs: list[list[Any]] = []
    for ts, q, v in inside:
        last = runs[-1] if runs else None
        if (
            last is not None
            and last[2] == q
            and _same(last[3], v)
            and (gap is None or ts - last[1] <= gap)
        ):
            last[1] = ts
            last[4] += 1
        else:
            runs.append([ts, ts, q, v, 1])
    return [tuple(r) for r in runs]  # type: ignore[misc]


def _rows_of(t: pa.Table) -> list[tuple[int, int, int, Any, int]]:
    assert tuple(t.column_names) == CHANGES_COLUMNS
    return [
        (_us(r["ts"]), _us(r["last_ts"]), r["quality"], r["value"], r["count"])
        for r in t.to_pylist()
    ]


def _assert_runs(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        assert g[:3] == w[:3], (g, w)
        assert g[4] == w[4], (g, w)
        assert _same(g[3], w[3]), (g, w)


@st.composite
def _batches(draw: st.DrawFn, data_type: str) -> list[list[tuple[int, int, Any]]]:
    """Samples within ~20 min, many at equal timestamps, in unsorted batches of any order."""
    step = draw(st.sampled_from([1_000_000, 5_000_000, 30_000_000]))
    times = st.integers(0, SPAN).map(lambda o: T0_US + o // step * step)
    rows = draw(
        st.lists(
            st.tuples(times, QUALITIES, st.none() | VALUES[data_type]), min_size=1, max_size=150
        )
    )
    order = draw(st.permutations(range(len(rows))))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    return [
        [rows[i] for i in order[lo:hi]]
        for lo, hi in zip([0, *cuts], [*cuts, len(rows)], strict=True)
        if hi > lo
    ]


async def _fill(h: Historian, data_type: str, kind: str, parts: list[list[Any]]) -> int:
    sid = (await h.register_signals([SignalInfo("x", data_type, kind=kind)]))["x"]  # type: ignore[arg-type]
    for part in parts:
        await h.append(
            batch(sid, data_type, [r[0] for r in part], [r[2] for r in part], [r[1] for r in part])
        )
    return sid


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    data_type=st.sampled_from(["float", "int", "bool", "string"]),
    kind=st.sampled_from(["state", "state", "counter", "measurement"]),
    gap=st.sampled_from([None, None, None, None, None, 4_000_000, 30_000_000]),
)
def test_read_changes_matches_a_plain_encoding(
    engine: str, data: st.DataObject, data_type: str, kind: str, gap: int | None
) -> None:
    parts = data.draw(_batches(data_type), label="batches")
    # mostly spanning whole minutes (from runs_1m), with or without partial ones at the edges
    first = data.draw(st.integers(-1, 19), label="first minute")
    last = data.draw(st.integers(first, 21), label="last minute")
    edges = st.sampled_from([0, 0, 17_000_000, -17_000_000])
    start = T0_US + first * MINUTE + data.draw(edges, label="start offset")
    end = max(start, T0_US + last * MINUTE + data.draw(edges, label="end offset"))
    cut = data.draw(st.none() | st.integers(0, SPAN), label="retention cut")
    max_gap = None if gap is None else timedelta(microseconds=gap)

    async def run() -> tuple[list[Any], list[Any], list[tuple[int, int, Any]]]:
        async with fresh_store(engine) as url, open_historian(url) as h:
            await _fill(h, data_type, kind, parts)
            if cut is not None:
                await h.apply_retention(_dt(T0_US + cut))
            got = await h.read_changes("x", _dt(start), _dt(end), max_gap=max_gap)
            # the interface's own encoding of read_raw (what other engines inherit)
            raw = await h.read_raw("x", _dt(start), _dt(end))
            inherited = run_length_encode(raw, max_gap)
            everything = await h.read_raw("x", _dt(T0_US - MINUTE), _dt(T0_US + 2 * SPAN))
            left = [(_us(r["ts"]), r["quality"], r["value"]) for r in everything.to_pylist()]
            return _rows_of(got), _rows_of(inherited), left

    got, inherited, left = asyncio.run(run())
    want = reference(left, start, end, gap)
    _assert_runs(got, want)
    _assert_runs(inherited, want)


async def test_one_hertz_states_read_as_their_changes(historian_url: str) -> None:
    """1 Hz samples that change every 7.5 min: one run per change (DuckDB: from runs_1m)."""
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("m/state", "int", kind="state")]))["m/state"]
        n = 6 * 3600
        ts = [T0_US + k * 1_000_000 for k in range(n)]
        await h.append(batch(sid, "int", ts, [(k // 450) % 3 for k in range(n)]))
        start, end = T0 + timedelta(seconds=30), T0 + timedelta(hours=5, seconds=10)
        runs = _rows_of(await h.read_changes(sid, start, end))
    assert len(runs) == 41  # 07:30 min runs from 00:00:30 to 05:00:10
    assert runs[0][:2] == (T0_US + 30_000_000, T0_US + 449_000_000)
    assert runs[0][4] == 420
    assert [r[3] for r in runs[:4]] == [0, 1, 2, 0]
    assert sum(r[4] for r in runs) == 5 * 3600 - 20
    assert runs[-1][1] == T0_US + (5 * 3600 + 9) * 1_000_000


async def test_minutes_touched_again_are_encoded_again(historian_url: str) -> None:
    """Two batches interleaved second by second, then a late batch of ties at equal times
    (other qualities and values) and a duplicate: every touched minute is encoded anew."""
    async with open_historian(historian_url) as h:
        sid = (await h.register_signals([SignalInfo("x", "int", kind="counter")]))["x"]
        for first in (1, 0):
            ks = range(first, 300, 2)
            await h.append(
                batch(sid, "int", [T0_US + k * 1_000_000 for k in ks], [k // 100 for k in ks])
            )
        late = [T0_US + 150_000_000] * 3 + [T0_US + 10_000_000]
        await h.append(batch(sid, "int", late, [7, 1, 1, 0], [0x40, 0xC0, 0xC0, 0xC0]))
        got = _rows_of(await h.read_changes(sid, T0, T0 + timedelta(minutes=5)))
    s = 1_000_000
    assert got == [
        (T0_US, T0_US + 99 * s, 0xC0, 0, 101),
        (T0_US + 100 * s, T0_US + 149 * s, 0xC0, 1, 50),
        (T0_US + 150 * s, T0_US + 150 * s, 0x40, 7, 1),  # quality orders equal times first
        (T0_US + 150 * s, T0_US + 199 * s, 0xC0, 1, 52),
        (T0_US + 200 * s, T0_US + 299 * s, 0xC0, 2, 100),
    ]


async def test_migration_encodes_existing_state_signals(tmp_path: Path) -> None:
    path = tmp_path / "v1.duckdb"
    url = f"duckdb:{path}"
    async with open_historian(url) as h:
        ids = await h.register_signals(
            [SignalInfo("m/state", "int", kind="state"), SignalInfo("m/temp", "float")]
        )
        ts = [T0_US + k * 1_000_000 for k in range(600)]
        await h.append(batch(ids["m/state"], "int", ts, [k // 100 for k in range(600)]))
        await h.append(batch(ids["m/temp"], "float", ts, [float(k) for k in range(600)]))
        end = T0 + timedelta(minutes=10)
        before = _rows_of(await h.read_changes("m/state", T0, end))
    with duckdb.connect(str(path)) as con:  # back to version 1
        con.execute("DROP TABLE runs_1m")
        con.execute("DROP TABLE rollup_1h")
        con.execute("DELETE FROM schema_version WHERE version >= 2")
    async with open_historian(url) as h:
        assert _rows_of(await h.read_changes("m/state", T0, end)) == before
    with duckdb.connect(str(path)) as con:
        signals = con.execute("SELECT DISTINCT signal_id FROM runs_1m").fetchall()
    assert signals == [(ids["m/state"],)]  # measurements are not encoded
    assert len(before) == 6

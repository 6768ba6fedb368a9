"""The DuckDB engine merges appended samples into rollups and latest values in bulk.

Appends only stage their rows; reads merge first, and a crash leaves a backlog that the
next open recomputes from the samples. Whatever the merge timing, every answer equals the
aggregates of the raw samples (computed here in plain Python).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from _historian_helpers import T0, T0_US, batch

from shopfloor.edge.batch import Quality, ReadingBatch
from shopfloor.errors import HistorianError
from shopfloor.historian import SignalInfo
from shopfloor.historian._duckdb import DuckDBHistorian

MINUTE = 60_000_000
HOUR = 60 * MINUTE


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _us(ts: datetime) -> int:
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _batches(seed: int) -> list[tuple[str, list[int], list[Any], list[int]]]:
    """Batches of two signals over ~2.5 h, shuffled across batches (late data included)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, Any, int]] = []
    for k in range(0, 9000, 3):
        ts = T0_US + k * 1_000_000 + int(rng.integers(0, 1000))
        q = int(rng.choice([Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.BAD, 0x40]))
        rows.append(("f", ts, float(rng.normal(20.0, 5.0)), q))
        rows.append(("i", ts + 1, int(rng.integers(-1000, 1000)), q))
    order = rng.permutation(len(rows))
    out = []
    for part in np.array_split(order, 37):
        for name in ("f", "i"):
            sel = [rows[j] for j in part if rows[j][0] == name]
            if sel:
                out.append((name, [r[1] for r in sel], [r[2] for r in sel], [r[3] for r in sel]))
    return out


async def _fill(h: DuckDBHistorian, seed: int) -> dict[str, int]:
    ids = await h.register_signals([SignalInfo("f", "float"), SignalInfo("i", "int")])
    for name, ts, values, quality in _batches(seed):
        kind = "float" if name == "f" else "int"
        await h.append(batch(ids[name], kind, ts, values, quality))
    return ids


async def _expected(h: DuckDBHistorian, name: str, width: int) -> list[dict[str, Any]]:
    """Buckets of ``width`` µs from the raw samples, in plain Python."""
    raw = await h.read_raw(name, _dt(T0_US - HOUR), _dt(T0_US + 5 * HOUR))
    buckets: dict[int, list[tuple[int, Any]]] = {}
    for ts, q, v in zip(
        raw.column("ts").to_pylist(),
        raw.column("quality").to_pylist(),
        raw.column("value").to_pylist(),
        strict=True,
    ):
        if q >= 64 and v is not None:
            us = _us(ts)
            buckets.setdefault(us // width * width, []).append((us, v))
    out = []
    for b in sorted(buckets):
        items = sorted(buckets[b])
        values = [v for _, v in items]
        out.append(
            {
                "bucket": b,
                "first_ts": items[0][0],
                "first": values[0],
                "last_ts": items[-1][0],
                "last": values[-1],
                "min": min(values),
                "max": max(values),
                "sum": sum(values),
                "count": len(values),
            }
        )
    return out


async def _assert_rollups_match_samples(h: DuckDBHistorian) -> None:
    for name in ("f", "i"):
        for granularity, width in (("1m", MINUTE), ("1h", HOUR)):
            got = await h.rollups(name, granularity, _dt(T0_US - HOUR), _dt(T0_US + 5 * HOUR))  # type: ignore[arg-type]
            want = await _expected(h, name, width)
            assert got.num_rows == len(want) > 0
            for g, w in zip(got.to_pylist(), want, strict=True):
                assert _us(g["bucket"]) == w["bucket"]
                assert (_us(g["first_ts"]), _us(g["last_ts"])) == (w["first_ts"], w["last_ts"])
                assert (g["first"], g["last"], g["min"], g["max"], g["count"]) == (
                    w["first"],
                    w["last"],
                    w["min"],
                    w["max"],
                    w["count"],
                )
                assert g["avg"] == pytest.approx(w["sum"] / w["count"], rel=1e-12, abs=1e-9)
        latest = (await h.latest([name])).to_pylist()
        raw = await h.read_raw(name, _dt(T0_US - HOUR), _dt(T0_US + 5 * HOUR))
        newest = raw.slice(raw.num_rows - 1).to_pylist()[0]
        assert (latest[0]["ts"], latest[0]["quality"]) == (newest["ts"], newest["quality"])
        column = "v_float" if name == "f" else "v_int"
        assert latest[0][column] == newest["value"]


@pytest.mark.parametrize("merge_rows", [1, 500, 10_000_000])
async def test_answers_do_not_depend_on_when_appends_are_merged(
    tmp_path: Path, merge_rows: int
) -> None:
    """Merging after every append, every few appends or only when read: the same answers."""
    async with DuckDBHistorian(tmp_path / "h.duckdb", merge_rows=merge_rows, merge_s=1e9) as h:
        ids = await _fill(h, seed=3)
        await _assert_rollups_match_samples(h)
        # more appends after a read: merged again, on top of what is there
        await h.append(batch(ids["f"], "float", [T0_US + 9001 * 1_000_000], [1e6]))
        assert (await h.rollups("f", "1h", T0, T0 + timedelta(hours=3))).column("max").to_pylist()[
            -1
        ] == 1e6
        await _assert_rollups_match_samples(h)
        down = await h.downsample("i", T0, T0 + timedelta(hours=3), timedelta(minutes=30))
        raw = await h.downsample_raw("i", T0, T0 + timedelta(hours=3), timedelta(minutes=30))  # type: ignore[attr-defined]
        assert down.equals(raw)


async def test_a_merge_is_due_after_merge_s(tmp_path: Path) -> None:
    async with DuckDBHistorian(tmp_path / "h.duckdb", merge_rows=10**9, merge_s=0.0) as h:
        await _fill(h, seed=5)
        assert h._pending_rows == 0  # every append was merged at once (merge_s = 0)
    async with DuckDBHistorian(tmp_path / "h2.duckdb", merge_rows=10**9, merge_s=1e9) as h:
        await _fill(h, seed=5)
        assert h._pending_rows > 0
        await h.merge()
        assert h._pending_rows == 0
        await _assert_rollups_match_samples(h)


_CRASH = """
import asyncio, os, sys
sys.path.insert(0, {tests!r})
from test_duckdb_merging import _fill
from shopfloor.historian._duckdb import DuckDBHistorian

async def main():
    h = DuckDBHistorian({path!r}, merge_rows=10**9, merge_s=1e9)
    await h.open()
    await _fill(h, seed=7)
    os._exit(0)  # a crash: no merge, no close

asyncio.run(main())
"""


def test_a_crash_leaves_a_backlog_that_the_next_open_merges(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    script = _CRASH.format(tests=str(Path(__file__).parent), path=str(path))
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, timeout=300)
    with duckdb.connect(str(path)) as con:  # the samples are there, the rollups are not
        (samples,) = con.execute("SELECT count(*) FROM samples").fetchone() or (0,)
        (minutes,) = con.execute("SELECT count(*) FROM rollup_1m").fetchone() or (0,)
        (latest,) = con.execute("SELECT count(*) FROM latest").fetchone() or (0,)
        backlog = con.execute("SELECT lo, hi FROM rollup_backlog").fetchall()
    assert samples == 6000
    assert (minutes, latest) == (0, 0)
    assert len(backlog) == 1
    assert backlog[0][0] <= T0_US + 1000
    assert backlog[0][1] >= T0_US + 8997 * 1_000_000

    async def reopen() -> None:
        async with DuckDBHistorian(path) as h:
            await _assert_rollups_match_samples(h)

    asyncio.run(reopen())
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT count(*) FROM rollup_backlog").fetchone() == (0,)


async def test_bulk_registration_returns_every_id_once(tmp_path: Path) -> None:
    infos = [SignalInfo(f"area/dev{i // 50:04d}/m{i % 50:02d}", "float") for i in range(20_000)]
    async with DuckDBHistorian(tmp_path / "h.duckdb") as h:
        first = await h.register_signals(infos[:5_000])
        ids = await h.register_signals(infos)  # 5,000 known, 15,000 new: one insert
        assert len(set(ids.values())) == len(infos)
        assert all(ids[p] == i for p, i in first.items())
        assert await h.register_signals(list(reversed(infos))) == ids
        with pytest.raises(HistorianError, match="another data type"):
            await h.register_signals(
                [SignalInfo("new/one", "int"), SignalInfo(infos[7].path, "int")]
            )
        assert "new/one" not in (await h.signals()).column("path").to_pylist()
        # the catalog the appends are checked against knows every signal
        sid = ids[infos[-1].path]
        await h.append(ReadingBatch.from_columns([sid], [T0_US], [1.5]))
        with pytest.raises(HistorianError, match="is float but the batch has values in v_int"):
            await h.append(ReadingBatch.from_columns([sid], [T0_US], [1]))
    async with DuckDBHistorian(tmp_path / "h.duckdb") as h:  # ids survive a reopen
        assert await h.register_signals(infos[:100]) == {s.path: ids[s.path] for s in infos[:100]}

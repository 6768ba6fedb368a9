"""Property tests on every engine: what goes in comes back exactly; downsampling equals a
NumPy reference (through the rollup path and the raw path)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from _historian_engines import ENGINES, fresh_store
from _historian_helpers import T0_US, batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.historian import SignalInfo, open_historian

TYPES = ("float", "int", "bool", "string")
QUALITIES = st.sampled_from([0x00, 0x18, 0x40, 0x54, 0xC0, 0xD8])
MINUTE = 60_000_000

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "int": st.integers(-(2**63), 2**63 - 1),
    "bool": st.booleans(),
    "string": st.text(max_size=12),
}
# PostgreSQL text cannot hold NUL (the engine rejects it: tests/historian/test_postgres.py).
_PG_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _key(value: Any) -> tuple[int, str]:
    return (0, "") if value is None else (1, repr(value))


@st.composite
def _rows(draw: st.DrawFn, data_type: str, engine: str) -> list[tuple[int, int, Any]]:
    values = _PG_TEXT if data_type == "string" and engine == "postgres" else _VALUES[data_type]
    return draw(
        st.lists(
            st.tuples(
                st.integers(T0_US - 10 * MINUTE, T0_US + 10 * MINUTE),
                QUALITIES,
                st.none() | values,
            ),
            max_size=25,
        )
    )


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_all_types(engine: str, data: st.DataObject) -> None:
    rows = {t: data.draw(_rows(t, engine), label=t) for t in TYPES}
    split = data.draw(st.integers(0, 25), label="split")

    async def run() -> None:
        async with fresh_store(engine) as url, open_historian(url) as h:
            ids = await h.register_signals([SignalInfo(f"s/{t}", t) for t in TYPES])  # type: ignore[arg-type]
            for t in TYPES:
                r = rows[t]
                for part in (r[:split], r[split:]):
                    if part:
                        await h.append(
                            batch(
                                ids[f"s/{t}"],
                                t,
                                [x[0] for x in part],
                                [x[2] for x in part],
                                [x[1] for x in part],
                            )
                        )
            lo, hi = _dt(T0_US - 11 * MINUTE), _dt(T0_US + 11 * MINUTE)
            for t in TYPES:
                got = (await h.read_raw(f"s/{t}", lo, hi)).to_pylist()
                got_rows = sorted(
                    ((_us(g["ts"]), g["quality"], g["value"]) for g in got),
                    key=lambda x: (x[0], x[1], _key(x[2])),
                )
                want = sorted(rows[t], key=lambda x: (x[0], x[1], _key(x[2])))
                assert [(a, b, _key(c)) for a, b, c in got_rows] == [
                    (a, b, _key(c)) for a, b, c in want
                ]
                assert [g["ts"] for g in got] == sorted(g["ts"] for g in got)  # time order
            latest = {r["path"]: r for r in (await h.latest()).to_pylist()}
            for t in TYPES:
                if not rows[t]:
                    assert f"s/{t}" not in latest
                    continue
                newest = max(x[0] for x in rows[t])
                candidates = {(x[1], _key(x[2])) for x in rows[t] if x[0] == newest}
                row = latest[f"s/{t}"]
                assert _us(row["ts"]) == newest
                value = row[{"float": "v_float", "int": "v_int", "bool": "v_bool"}.get(t, "v_str")]
                assert (row["quality"], _key(value)) in candidates

    asyncio.run(run())


def _us(ts: datetime) -> int:
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def reference(
    ts: np.ndarray, q: np.ndarray, v: list[Any], start: int, end: int, width: int
) -> list[dict[str, Any]]:
    """Downsample in plain NumPy/Python: the definition the engine must match."""
    keep = [i for i in range(len(ts)) if start <= ts[i] < end and q[i] >= 64 and v[i] is not None]
    buckets: dict[int, list[int]] = {}
    for i in keep:
        buckets.setdefault(int(ts[i]) // width, []).append(i)
    out = []
    for k in sorted(buckets):
        idx = sorted(buckets[k], key=lambda i: ts[i])
        vals = [v[i] for i in idx]
        out.append(
            {
                "bucket": k * width,
                "first": vals[0],
                "last": vals[-1],
                "min": min(vals),
                "max": max(vals),
                "sum": math.fsum(vals) if isinstance(vals[0], float) else sum(vals),
                "scale": math.fsum(abs(x) for x in vals),
                "count": len(vals),
            }
        )
    return out


WIDTHS = st.one_of(
    st.sampled_from(
        [
            timedelta(milliseconds=500),
            timedelta(seconds=10),
            timedelta(seconds=90),
            timedelta(minutes=1),
            timedelta(minutes=2),
            timedelta(minutes=5),
            timedelta(minutes=7, seconds=13),
            timedelta(minutes=15),
            timedelta(hours=1),
            timedelta(hours=1, minutes=7, seconds=3, microseconds=17),
        ]
    ),
    st.integers(1_000_000, 2 * 3600 * 1_000_000).map(lambda us: timedelta(microseconds=us)),
    # widths that take the rollup path (hypothesis favours small integers above)
    st.integers(2 * MINUTE, 2 * 3600 * 1_000_000).map(lambda us: timedelta(microseconds=us)),
)

SPAN = 3 * 3600 * 1_000_000


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    data_type=st.sampled_from(["float", "int", "bool"]),
    base=st.sampled_from([T0_US + 123_456, -30 * MINUTE - 7]),
    width=WIDTHS,
)
def test_downsample_matches_reference(
    engine: str, data: st.DataObject, data_type: str, base: int, width: timedelta
) -> None:
    values: st.SearchStrategy[Any] = {
        "float": st.floats(-1e6, 1e6, allow_nan=False),
        "int": st.integers(-(2**62), 2**62),
        "bool": st.booleans(),
    }[data_type]
    offsets = data.draw(st.lists(st.integers(0, SPAN), min_size=1, max_size=150, unique=True))
    n = len(offsets)
    q_list = data.draw(st.lists(QUALITIES, min_size=n, max_size=n))
    v = data.draw(st.lists(st.none() | values, min_size=n, max_size=n))
    # Hypothesis favours small offsets: add rows spread evenly over the span as well, so
    # that minutes holding bucket boundaries (read raw) and whole minutes both have data.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    spread = np.setdiff1d(rng.integers(0, SPAN, size=data.draw(st.integers(0, 200))), offsets)
    offsets += spread.tolist()
    q_list += rng.choice([0x00, 0x40, 0xC0, 0xC0], size=len(spread)).tolist()
    v += {
        "float": lambda k: rng.normal(0, 1e3, k).tolist(),
        "int": lambda k: rng.integers(-(2**62), 2**62, k).tolist(),
        "bool": lambda k: (rng.random(k) < 0.5).tolist(),
    }[data_type](len(spread))
    n = len(offsets)
    ts = np.array(offsets, dtype=np.int64) + base
    q = np.array(q_list, dtype=np.int64)
    # Batches in random order, each unsorted: out-of-order and late data.
    order = data.draw(st.permutations(range(n)))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    start = base + data.draw(st.integers(-MINUTE, SPAN // 2))
    # long ranges too, so that most draws combine rollups with partial minutes
    end = start + data.draw(st.integers(0, SPAN) | st.integers(SPAN // 3, SPAN))
    w = width // timedelta(microseconds=1)

    async def run() -> list[dict[str, Any]]:
        async with fresh_store(engine) as url, open_historian(url) as h:
            sid = (await h.register_signals([SignalInfo("x", data_type)]))["x"]  # type: ignore[arg-type]
            for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
                part = order[lo:hi]
                if part:
                    await h.append(
                        batch(sid, data_type, ts[part], [v[i] for i in part], q[part].tolist())
                    )
            fast = await h.downsample("x", _dt(start), _dt(end), width)
            raw = await h.downsample_raw("x", _dt(start), _dt(end), width)  # type: ignore[attr-defined]
            assert fast.schema.equals(raw.schema)
            return [fast.to_pylist(), raw.to_pylist()]  # type: ignore[list-item]

    fast, raw = asyncio.run(run())
    as_num = [None if x is None else (float(x) if data_type == "bool" else x) for x in v]
    want = reference(ts, q, as_num, start, end, w)
    for got in (fast, raw):
        assert [_us(g["bucket"]) for g in got] == [r["bucket"] for r in want]
        for g, r in zip(got, want, strict=True):
            assert (g["first"], g["last"], g["min"], g["max"], g["count"]) == (
                r["first"],
                r["last"],
                r["min"],
                r["max"],
                r["count"],
            )
            exact_avg = r["sum"] / r["count"]
            assert math.isclose(
                g["avg"], exact_avg, rel_tol=1e-9, abs_tol=1e-12 * r["scale"] / r["count"]
            )


HOUR = 60 * MINUTE
LONG_SPAN = 30 * HOUR


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    data_type=st.sampled_from(["float", "int"]),
    width=st.sampled_from([HOUR, 2 * HOUR, 6 * HOUR]) | st.integers(HOUR, 10 * HOUR),
)
def test_hour_wide_downsample_matches_reference(
    engine: str, data: st.DataObject, data_type: str, width: int
) -> None:
    """Widths of an hour or more over ~a day: whole hours, the minutes of hours holding a
    boundary, and the raw rows of minutes holding one all take part."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    n = data.draw(st.integers(1, 3000), label="n")
    ts = np.unique(T0_US + rng.integers(0, LONG_SPAN, size=n))
    n = len(ts)
    q = rng.choice([0x00, 0x40, 0xC0, 0xC0], size=n)
    if data_type == "float":
        v: list[Any] = rng.normal(0, 1e3, n).tolist()
    else:
        v = rng.integers(-(2**40), 2**40, n).tolist()
    v = [None if x < 0.05 else val for x, val in zip(rng.random(n), v, strict=True)]
    start = T0_US + data.draw(st.integers(-HOUR, LONG_SPAN // 2), label="start")
    end = start + data.draw(st.integers(HOUR, LONG_SPAN), label="length")
    cuts = sorted(rng.integers(0, n, size=3).tolist())
    order = rng.permutation(n)

    async def run() -> list[dict[str, Any]]:
        async with fresh_store(engine) as url, open_historian(url) as h:
            sid = (await h.register_signals([SignalInfo("x", data_type)]))["x"]  # type: ignore[arg-type]
            for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
                part = order[lo:hi]
                if len(part):
                    await h.append(
                        batch(sid, data_type, ts[part], [v[i] for i in part], q[part].tolist())
                    )
            width_td = timedelta(microseconds=width)
            got = await h.downsample("x", _dt(start), _dt(end), width_td)
            return got.to_pylist()  # type: ignore[no-any-return]

    got = asyncio.run(run())
    want = reference(ts, q, v, start, end, width)
    assert [_us(g["bucket"]) for g in got] == [r["bucket"] for r in want]
    for g, r in zip(got, want, strict=True):
        assert (g["first"], g["last"], g["min"], g["max"], g["count"]) == (
            r["first"],
            r["last"],
            r["min"],
            r["max"],
            r["count"],
        )
        assert math.isclose(
            g["avg"], r["sum"] / r["count"], rel_tol=1e-9, abs_tol=1e-12 * r["scale"] / r["count"]
        )

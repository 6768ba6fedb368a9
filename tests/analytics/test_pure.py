"""Pure building blocks against brute-force references on random data (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.analytics import counter_increments, planned_busy_time, state_intervals
from shopfloor.analytics._calendar import intersect, subtract, to_us, total, union
from shopfloor.analytics.oee import ISO22400_KPIS, OEE_KPIS, WindowCounts
from shopfloor.model import STANDARD_STATES
from shopfloor.model._schema import Calendar, Site
from shopfloor.sim._calendar import WORK, ShiftCalendar

US = 1_000_000
BERLIN = ZoneInfo("Europe/Berlin")

# ------------------------------------------------------------------ interval algebra
spans = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=12,
)


def _mask(iv: list[tuple[int, int]]) -> np.ndarray:
    m = np.zeros(260, bool)
    for a, b in iv:
        m[a:b] = True
    return m


def _to_mask(a: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return _mask(list(zip(a[0].tolist(), a[1].tolist(), strict=True)))


@given(spans, spans)
def test_interval_algebra_matches_masks(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    ua = union([x for x, _ in a], [y for _, y in a])
    ub = union([x for x, _ in b], [y for _, y in b])
    assert np.array_equal(_to_mask(ua), _mask(a))
    assert np.all(ua[0][1:] > ua[1][:-1])  # disjoint, sorted, not touching
    assert np.array_equal(_to_mask(intersect(ua, ub)), _mask(a) & _mask(b))
    assert np.array_equal(_to_mask(subtract(ua, ub)), _mask(a) & ~_mask(b))
    assert total(intersect(ua, ub)) == int((_mask(a) & _mask(b)).sum())


# ------------------------------------------------------------------ state intervals
STATE_MAP = {
    "1": "idle",
    "2": "running",
    "6": "unplanned_stop",
    "7": "setup",
    "9": "unplanned_stop",
}


@st.composite
def state_samples(draw: st.DrawFn) -> tuple[list[int], list[int], list[int | None]]:
    n = draw(st.integers(0, 25))
    ts = sorted(draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)))
    q = draw(st.lists(st.sampled_from([192, 192, 192, 0, 64]), min_size=n, max_size=n))
    v = draw(st.lists(st.sampled_from([1, 2, 6, 7, 9, 42, None]), min_size=n, max_size=n))
    return ts, q, v


@settings(max_examples=150)
@given(state_samples(), st.integers(0, 250), st.integers(1, 120), st.none() | st.integers(1, 50))
def test_state_intervals_match_per_second_reference(
    samples: tuple[list[int], list[int], list[int | None]], lo: int, width: int, gap: int | None
) -> None:
    ts, q, v = samples
    hi = lo + width
    si = state_intervals(np.array(ts) * US, q, v, STATE_MAP, lo * US, hi * US, max_gap_s=gap)
    # reference: the last sample at or before each second (the last of equal timestamps)
    expected = []
    for t in range(lo, hi):
        state, raw, known = "offline", None, False
        idx = [i for i, x in enumerate(ts) if x <= t]
        if idx:
            i = idx[-1]
            fresh = gap is None or t < ts[i] + gap
            usable = (q[i] & 0xC0) != 0 and v[i] is not None
            if fresh and usable:
                raw = str(v[i])
                state, known = STATE_MAP.get(raw, "offline"), True
        expected.append((state, raw, known))
    got = []
    for k in range(len(si)):
        for _ in range(int(si.start[k]) // US, int(si.end[k]) // US):
            got.append((STANDARD_STATES[int(si.state[k])], si.raw[k], bool(si.known[k])))
    assert got == expected
    # merged: no two neighbours alike
    for k in range(1, len(si)):
        assert (si.state[k], si.raw[k], si.known[k]) != (
            si.state[k - 1],
            si.raw[k - 1],
            si.known[k - 1],
        )


# ------------------------------------------------------------------ counters
def _reference_increments(values: list[float], quality: list[int]) -> list[int]:
    out = [0] * len(values)
    prev = None
    for i, (x, qq) in enumerate(zip(values, quality, strict=True)):
        if np.isnan(x) or (qq & 0xC0) == 0:
            continue
        x_i = int(x)
        if prev is not None:
            if x_i >= prev:
                out[i] = x_i - prev
            else:
                out[i] = x_i
                for bits in (16, 32):
                    w = 1 << bits
                    if prev < w and x_i + w - prev <= w / 16:
                        out[i] = x_i + w - prev
                        break
        prev = x_i
    return out


@st.composite
def counter_series(draw: st.DrawFn) -> tuple[list[float], list[int]]:
    width = draw(st.sampled_from([1 << 16, 1 << 32, 10**6]))
    x = draw(st.integers(0, width - 1))
    values, quality = [], []
    for _ in range(draw(st.integers(0, 40))):
        step = draw(st.sampled_from(["inc", "inc", "reset", "near", "nan"]))
        if step == "inc":
            x = (x + draw(st.integers(0, 3000))) % width
        elif step == "reset":
            x = draw(st.integers(0, 50))
        elif step == "near":
            x = width - draw(st.integers(1, 2000))
        values.append(float("nan") if step == "nan" else float(x))
        quality.append(draw(st.sampled_from([192, 192, 0])))
    return values, quality


@given(counter_series())
def test_counter_increments_match_reference(series: tuple[list[float], list[int]]) -> None:
    values, quality = series
    got = counter_increments(np.array(values, dtype=float), quality).tolist()
    assert got == _reference_increments(values, quality)
    assert all(g >= 0 for g in got)


def test_counter_rollover_and_reset_examples() -> None:
    assert counter_increments([65_530, 65_535, 4, 10]).tolist() == [0, 5, 5, 6]
    assert counter_increments([2**32 - 3, 2]).tolist() == [0, 5]
    assert counter_increments([500, 120, 130]).tolist() == [0, 120, 10]  # reset
    assert counter_increments([40_000, 3]).tolist() == [0, 3]  # not near the top: reset


# ------------------------------------------------------------------ planned busy time
HHMM = st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 45])).map(
    lambda t: f"{t[0]:02d}:{t[1]:02d}"
)
DAYS = st.lists(
    st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1, unique=True
)


@st.composite
def calendars(draw: st.DrawFn) -> dict[str, object]:
    shifts = [
        {"name": f"s{i}", "start": draw(HHMM), "end": draw(HHMM), "days": draw(DAYS)}
        for i in range(draw(st.integers(0, 3)))
    ]
    names = [s["name"] for s in shifts]
    breaks = [
        {
            "name": f"b{i}",
            "start": draw(HHMM),
            "end": draw(HHMM),
            "shifts": draw(st.lists(st.sampled_from(names), unique=True)) if names else [],
        }
        for i in range(draw(st.integers(0, 2)))
    ]
    downtime = []
    if draw(st.booleans()):
        a = datetime(2025, 3, 29, tzinfo=UTC) + timedelta(minutes=15 * draw(st.integers(0, 300)))
        downtime.append(
            {
                "name": "svc",
                "start": a,
                "end": a + timedelta(minutes=15 * draw(st.integers(1, 40))),
                "assets": draw(st.sampled_from([[], ["line-1"], ["other"]])),
            }
        )
    return {"shifts": shifts, "breaks": breaks, "planned_downtime": downtime}


# days around both 2025 DST changes in Europe/Berlin
DST_DAYS = st.sampled_from(
    [
        datetime(2025, 3, 29, tzinfo=UTC),
        datetime(2025, 10, 25, tzinfo=UTC),
        datetime(2025, 6, 2, tzinfo=UTC),
    ]
)


@settings(max_examples=40, deadline=None)
@given(calendars(), DST_DAYS, st.integers(0, 47), st.integers(1, 48 * 4))
def test_planned_busy_time_matches_per_minute_brute_force(
    spec: dict[str, object], day: datetime, offset_h: int, quarter_hours: int
) -> None:
    site = Site.model_validate({"id": "munich", "timezone": "Europe/Berlin", "calendar": spec})
    start = day + timedelta(hours=offset_h)
    end = start + timedelta(minutes=15 * quarter_hours)
    asset = "acme/munich/body-shop/line-1/press-7"
    got = planned_busy_time(site, to_us(start), to_us(end), asset_path=asset)
    # brute force: the simulator's per-instant calendar, one probe per minute
    cal: Calendar = site.calendar
    downtime = [d for d in cal.planned_downtime if not d.assets or "line-1" in d.assets]
    ref = ShiftCalendar.from_spec("Europe/Berlin", cal.shifts, cal.breaks, downtime)
    minutes = int((end - start).total_seconds() // 60)
    busy = sum(ref.status(start + timedelta(minutes=m)) == WORK for m in range(minutes))
    assert total(got) == busy * 60 * US


def test_night_shift_length_on_dst_nights() -> None:
    spec = {"shifts": [{"name": "night", "start": "22:00", "end": "06:00"}]}
    site = Site.model_validate({"id": "m", "timezone": "Europe/Berlin", "calendar": spec})
    spring = datetime(2025, 3, 29, 12, tzinfo=BERLIN)
    autumn = datetime(2025, 10, 25, 12, tzinfo=BERLIN)
    day = timedelta(days=1)
    assert total(planned_busy_time(site, to_us(spring), to_us(spring + day))) == 7 * 3600 * US
    assert total(planned_busy_time(site, to_us(autumn), to_us(autumn + day))) == 9 * 3600 * US


# ------------------------------------------------------------------ KPI definitions
counts = st.builds(
    lambda pbt, a, s, u, f, g, r, ict: WindowCounts(
        pbt_s=pbt, apt_s=pbt * a, setup_s=s, unplanned_s=u, failures=f, good=g, reject=r,
        ideal_produced_s=ict * (g + r), ideal_good_s=ict * g,
    ),
    st.floats(1, 1e5), st.floats(0.01, 1), st.floats(0, 1e4), st.floats(0, 1e4),
    st.integers(0, 20), st.integers(0, 5000), st.integers(1, 500), st.floats(0.1, 60),
)  # fmt: skip


@given(counts)
def test_oee_is_the_product_of_its_factors(c: WindowCounts) -> None:
    k = {kpi.name: kpi(c) for kpi in (*OEE_KPIS, *ISO22400_KPIS)}
    a, p, q, oee = k["availability"], k["performance"], k["quality"], k["oee"]
    assert a is not None
    assert p is not None
    assert q is not None
    assert oee is not None
    assert np.isclose(oee, a * p * q, rtol=1e-9)
    assert np.isclose(a, c.apt_s / c.pbt_s)
    assert np.isclose(q + (k["scrap_ratio"] or 0.0), 1.0)
    ue = k["utilisation_efficiency"]
    assert ue is not None
    assert k["nee"] is not None
    assert np.isclose(k["nee"], ue * p * q, rtol=1e-9)
    if c.failures:
        assert np.isclose(k["mtbf_s"] or 0.0, c.apt_s / c.failures)
    else:
        assert k["mtbf_s"] is None
        assert k["mttr_s"] is None


@given(spans, spans)
def test_each_overlap_matches_pairwise_intersections(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    from shopfloor.analytics.oee import _each_overlap

    scope = union([x for x, _ in b], [y for _, y in b])
    s = np.array([x for x, _ in a], np.int64)
    e = np.array([y for _, y in a], np.int64)
    got = _each_overlap(s, e, scope).tolist()
    want = [int((_mask([iv]) & _mask(b)).sum()) for iv in a]
    assert got == want


def test_example_factory_planned_busy_time() -> None:
    """Acme Munich: three shifts Mon–Fri, 30 min break each; the night runs into Tuesday."""
    from pathlib import Path

    from shopfloor.model import load_factory

    factory = load_factory(Path(__file__).parents[2] / "examples" / "acme-munich.yaml")
    press = "acme/munich/body-shop/line-1/cell-1/press-7"
    site = factory.site_of(press)
    monday = datetime(2025, 8, 4, tzinfo=BERLIN)
    week = planned_busy_time(site, to_us(monday), to_us(monday + timedelta(days=7)), press)
    day = planned_busy_time(site, to_us(monday), to_us(monday + timedelta(days=1)), press)
    assert total(day) == 17 * 3600 * US  # 06:00–24:00 minus two breaks
    assert total(week) == 5 * 22.5 * 3600 * US

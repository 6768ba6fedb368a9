"""OEE, the six big losses and ISO 22400-2 KPIs from the historian and the factory model.

Inputs per equipment: its ``state`` signal (through the type's state map, see
:mod:`shopfloor.analytics._states`), its ``good_count`` and ``reject_count`` counters (resets
and rollovers handled, see :mod:`shopfloor.analytics._counters`), its ``ideal_cycle_time_s``
attribute and its site's shift calendar (see :mod:`shopfloor.analytics._calendar`).

Time base per window ``[start, end)`` (seconds):

* ``PBT`` (planned busy time) = shift time − breaks − planned downtime, within the window;
* ``APT`` (actual production time) = time in ``running`` within PBT;
* ``setup``, ``unplanned`` = time in ``setup`` / ``unplanned_stop`` within PBT;
* ``failures`` = ``unplanned_stop`` episodes starting within PBT in the window;
* ``good``, ``reject`` = counter increments booked in the window (at all times, also
  outside PBT), ``produced = good + reject``;
* ``ideal_produced_s = ict × produced``, ``ideal_good_s = ict × good`` (``ict`` the ideal
  cycle time).

The KPI formulas are the frozen definitions in :data:`OEE_KPIS` and :data:`ISO22400_KPIS`.
A ratio whose denominator is 0 is null.

**Lines and cells** (the rule): a line's output is that of its *last producing station*
(the last equipment in tree order with a ``good_count`` signal), its rate that of its
*bottleneck* (the largest ideal cycle time of its producing stations). So the line's
availability is the last station's, and its performance and OEE use the bottleneck's ideal
cycle time with the last station's counts: ``OEE(line) = ict_bottleneck × good_last / PBT``.
**Areas, sites**: the sums over their lines (equipment outside lines counts as its own
line), so availability = ΣAPT / ΣPBT, performance = Σ ideal time / ΣAPT, quality = Σgood /
Σproduced, OEE = Σ ideal good time / ΣPBT (PBT-weighted mean of the lines' OEE). The
enterprise level raises :class:`ValueError` (its sites may keep different calendars).

No data: time before the first state sample (looked back for up to 40 days before the
window), after ``max_gap_s`` without a sample, or under a bad-quality sample counts as
``offline`` — it is in PBT when planned, so it lowers availability rather than vanishing.
A counter without a sample before the window starts counting at its first sample in it.
``by="shift"`` gives no rows for a site without shifts (production around the clock: use
``"day"``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.analytics._calendar import (
    Intervals,
    clip,
    intersect,
    planned_busy,
    shift_windows,
    to_us,
    total,
)
from shopfloor.analytics._counters import counter_increments
from shopfloor.analytics._states import StateIntervals, state_code, state_intervals
from shopfloor.edge.batch import TS_TYPE
from shopfloor.errors import UnknownSignalError
from shopfloor.historian.base import Historian
from shopfloor.model._factory import Factory
from shopfloor.model._schema import STANDARD_STATES

__all__ = [
    "DEFAULT_SMALL_STOP_S",
    "DEFAULT_STARTUP_WINDOW_S",
    "ISO22400_KPIS",
    "LOSSES",
    "OEE_KPIS",
    "Grouping",
    "Kpi",
    "Loss",
    "WindowCounts",
    "iso22400",
    "losses",
    "oee",
]

Grouping = Literal["shift", "hour", "day"]
"""How :func:`oee` splits its range into windows (``None`` for one window)."""

DEFAULT_SMALL_STOP_S = 300.0
"""Stops shorter than this (5 min) are small stops, longer faults are breakdowns."""
DEFAULT_STARTUP_WINDOW_S = 600.0
"""Rejects within this long (10 min) after a setup or planned stop are start-up rejects."""

I64 = npt.NDArray[np.int64]
_US = 1_000_000
_LOOKBACKS = (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=40))


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """The additive inputs of every KPI for one window (seconds and piece counts)."""

    pbt_s: float = 0.0
    apt_s: float = 0.0
    setup_s: float = 0.0
    unplanned_s: float = 0.0
    failures: int = 0
    good: int = 0
    reject: int = 0
    ideal_produced_s: float = 0.0
    ideal_good_s: float = 0.0

    @property
    def produced(self) -> int:
        """Good plus rejected pieces."""
        return self.good + self.reject

    def __add__(self, other: WindowCounts) -> WindowCounts:
        return WindowCounts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


@dataclass(frozen=True, slots=True)
class Kpi:
    """A KPI defined as ``numerator / denominator`` of :class:`WindowCounts` (null on /0).

    ``scale`` multiplies the result (e.g. 3600 for a rate per hour).
    """

    name: str
    formula: str
    numerator: Callable[[WindowCounts], float]
    denominator: Callable[[WindowCounts], float]
    unit: str = "1"
    scale: float = 1.0

    def __call__(self, c: WindowCounts) -> float | None:
        """The KPI's value for ``c``."""
        den = self.denominator(c)
        if den == 0:
            return None
        return self.scale * self.numerator(c) / den


OEE_KPIS: tuple[Kpi, ...] = (
    Kpi("availability", "APT / PBT", lambda c: c.apt_s, lambda c: c.pbt_s),
    Kpi("performance", "ict × produced / APT", lambda c: c.ideal_produced_s, lambda c: c.apt_s),
    Kpi("quality", "good / produced", lambda c: c.good, lambda c: c.produced),
    Kpi(
        "oee",
        "ict × good / PBT  (= availability × performance × quality)",
        lambda c: c.ideal_good_s,
        lambda c: c.pbt_s,
    ),
)
"""ISO 22400-2 OEE index and its factors (effectiveness is called performance here)."""

ISO22400_KPIS: tuple[Kpi, ...] = (
    Kpi("mtbf_s", "APT / failures", lambda c: c.apt_s, lambda c: c.failures, "s"),
    Kpi(
        "mttr_s",
        "unplanned_stop time / failures",
        lambda c: c.unplanned_s,
        lambda c: c.failures,
        "s",
    ),
    Kpi(
        "utilisation_efficiency",
        "APT / AUBT,  AUBT = APT + setup + unplanned_stop time",
        lambda c: c.apt_s,
        lambda c: c.apt_s + c.setup_s + c.unplanned_s,
    ),
    Kpi(
        "throughput_rate_per_h",
        "produced / PBT  (PBT stands in for order execution time)",
        lambda c: c.produced,
        lambda c: c.pbt_s,
        "1/h",
        3600.0,
    ),
    Kpi("scrap_ratio", "reject / produced", lambda c: c.reject, lambda c: c.produced),
    Kpi(
        "first_pass_yield",
        "good / produced  (no rework data: every good piece passed first time)",
        lambda c: c.good,
        lambda c: c.produced,
    ),
    Kpi(
        "nee",
        "utilisation efficiency × performance × quality  (= ict × good / AUBT)",
        lambda c: c.ideal_good_s,
        lambda c: c.apt_s + c.setup_s + c.unplanned_s,
    ),
)
"""ISO 22400-2 KPIs beyond OEE, from the same counts."""


@dataclass(frozen=True, slots=True)
class Loss:
    """One of the six big losses (or the remainder), with the rule that books time to it."""

    name: str
    category: Literal["availability", "performance", "quality", "other"]
    rule: str


LOSSES: tuple[Loss, ...] = (
    Loss("breakdowns", "availability", "unplanned_stop episodes ≥ small_stop_s, within PBT"),
    Loss("setup", "availability", "time in setup within PBT"),
    Loss(
        "small_stops",
        "performance",
        "idle / starved / blocked / unplanned_stop episodes < small_stop_s, within PBT",
    ),
    Loss("speed_loss", "performance", "APT − ict × produced"),
    Loss(
        "startup_rejects",
        "quality",
        "ict × rejects booked < startup_window_s after a setup or planned stop ended",
    ),
    Loss("production_rejects", "quality", "ict × the other rejects"),
    Loss(
        "other_stops",
        "other",
        "longer idle / starved / blocked and offline or planned_stop time within PBT",
    ),
)
"""The six big losses plus ``other_stops``; together they add up to PBT − ict × good."""


# ------------------------------------------------------------------ loading
@dataclass(frozen=True, slots=True)
class _Station:
    path: str
    states: StateIntervals
    ep_start: I64
    ep_end: I64
    ep_state: npt.NDArray[np.int8]
    good_ts: I64
    good_inc: I64
    reject_ts: I64
    reject_inc: I64
    pbt: Intervals


@dataclass(frozen=True, slots=True)
class _Series:
    """A signal's runs of equal samples (``Historian.read_changes``) as arrays."""

    ts: I64
    last_ts: I64
    quality: I64
    values: pa.Array


async def _samples(
    historian: Historian,
    signal: str,
    start: datetime,
    end: datetime,
    max_gap_s: float | None = None,
) -> _Series:
    """Runs of ``signal`` in ``[start, end)`` preceded by the last run before ``start``.

    Runs of equal samples lose nothing the state and counter rules use; with ``max_gap_s``
    a run also ends where samples lie further apart. The first look-back (an hour) is read
    with the window in one query; a run that goes on across ``start`` stays one run.
    """
    gap = None if max_gap_s is None else timedelta(seconds=max_gap_s)
    try:
        table = await historian.read_changes(signal, start - _LOOKBACKS[0], end, max_gap=gap)
    except UnknownSignalError:
        none = np.zeros(0, np.int64)
        return _Series(none, none, none, pa.array([], pa.null()))
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    before = int(np.searchsorted(ts, to_us(start)))  # runs that begin before the window
    if before:
        table = table.slice(before - 1)
    else:
        for back in _LOOKBACKS[1:]:
            prior = await historian.read_changes(signal, start - back, start, max_gap=gap)
            if prior.num_rows:
                table = pa.concat_tables([prior.slice(prior.num_rows - 1, 1), table])
                break

    def us(name: str) -> I64:
        return np.asarray(table.column(name).cast(pa.int64()).to_numpy(), dtype=np.int64)

    q = table.column("quality").cast(pa.int64()).to_numpy().astype(np.int64)
    return _Series(us("ts"), us("last_ts"), q, table.column("value").combine_chunks())


def _numbers(values: pa.Array) -> npt.NDArray[np.float64]:
    """Counter values as floats (NaN: no value); text values are parsed."""
    try:
        as_float = values.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.array(
            [math.nan if x is None else float(str(x)) for x in values.to_pylist()], np.float64
        )
    return np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)


async def _counter(
    historian: Historian, signal: str, start: datetime, end: datetime
) -> tuple[I64, I64]:
    series = await _samples(historian, signal, start, end)
    return series.ts, counter_increments(_numbers(series.values), series.quality)


def _has_signal(factory: Factory, path: str) -> bool:
    try:
        factory.signal(path)
    except KeyError:
        return False
    return True


async def _station(
    historian: Historian,
    factory: Factory,
    path: str,
    start: datetime,
    end: datetime,
    max_gap_s: float | None,
) -> _Station:
    s_us, e_us = to_us(start), to_us(end)
    series = await _samples(historian, f"{path}/state", start, end, max_gap_s)
    ts = series.ts
    # from the run before the window on, so that episodes keep their true start
    first = min(s_us, int(ts[0])) if ts.size else s_us
    states = state_intervals(
        ts,
        series.quality,
        series.values,
        factory.state_map(path),
        first,
        e_us,
        max_gap_s=max_gap_s,
        hold_from=series.last_ts,
    )
    es, ee, ec = _episodes(states)
    good_ts, good_inc = await _counter(historian, f"{path}/good_count", start, end)
    rej_ts, rej_inc = await _counter(historian, f"{path}/reject_count", start, end)
    pbt = planned_busy(factory.site_of(path), s_us, e_us, asset_path=path)
    return _Station(path, states, es, ee, ec, good_ts, good_inc, rej_ts, rej_inc, pbt)


def _ict(factory: Factory, path: str) -> float:
    return float(factory.attributes(path).get("ideal_cycle_time_s") or 0.0)


def _lines(factory: Factory, asset_path: str) -> list[list[str]]:
    """Producing stations per line under ``asset_path`` (a line or cell: one group)."""
    asset = factory.asset(asset_path)
    if asset.level == "equipment":
        return [[asset_path]]
    producing = [
        e.path
        for e in factory.equipment()
        if (e.path + "/").startswith(asset_path + "/")
        and _has_signal(factory, f"{e.path}/good_count")
    ]
    if asset.level in ("line", "cell"):
        return [producing] if producing else []
    groups: dict[str, list[str]] = {}
    for path in producing:
        line = path
        node = factory.asset(path)
        while node.parent is not None:
            node = factory.asset(node.parent)
            if node.level == "line":
                line = node.path
                break
        groups.setdefault(line, []).append(path)
    return list(groups.values())


# ------------------------------------------------------------------ windows
def _windows(
    factory: Factory, asset_path: str, start: datetime, end: datetime, by: Grouping | None
) -> list[tuple[int, int, str | None]]:
    s_us, e_us = to_us(start), to_us(end)
    if by is None:
        return [(s_us, e_us, None)]
    site = factory.site_of(asset_path)
    if by == "shift":
        return [(s, e, name) for name, s, e in shift_windows(site, s_us, e_us)]
    zone = ZoneInfo(site.timezone)
    local = start.astimezone(zone)
    if by == "hour":
        first = start - timedelta(
            minutes=local.minute, seconds=local.second, microseconds=local.microsecond
        )
        edges = []
        t = first
        while t < end:
            edges.append(t)
            t += timedelta(hours=1)
    else:
        d = local.date()
        edges = []
        while True:
            t = datetime(d.year, d.month, d.day, tzinfo=zone)
            if t >= end:
                break
            edges.append(t)
            d += timedelta(days=1)
    bounds = [*edges, end]
    out: list[tuple[int, int, str | None]] = []
    for a, b in itertools.pairwise(bounds):
        lo, hi = max(to_us(a), s_us), min(to_us(b), e_us)
        if hi > lo:
            out.append((lo, hi, None))
    return out


# ------------------------------------------------------------------ per-window maths
def _episodes(si: StateIntervals) -> tuple[I64, I64, npt.NDArray[np.int8]]:
    """Neighbouring intervals with the same standard state joined (raw codes ignored)."""
    if len(si) == 0:
        return si.start, si.end, si.state
    brk = (si.state[1:] != si.state[:-1]) | (si.start[1:] != si.end[:-1])
    heads = np.flatnonzero(np.concatenate([[True], brk]))
    tails = np.append(heads[1:] - 1, len(si) - 1)
    return si.start[heads], si.end[tails], si.state[heads]


def _in(ts: I64, inc: I64, lo: int, hi: int) -> int:
    return int(inc[(ts >= lo) & (ts < hi)].sum())


def _overlap(s: I64, e: I64, scope: Intervals) -> float:
    return total(intersect((s, e), scope)) / _US


def _each_overlap(s: I64, e: I64, scope: Intervals) -> I64:
    """Overlap of every interval ``[s, e)`` with the disjoint sorted ``scope`` (µs)."""
    a, b = scope
    if a.size == 0:
        return np.zeros(s.size, np.int64)
    before = np.concatenate([[0], np.cumsum(b - a)])

    def measure(x: I64) -> I64:
        k = np.searchsorted(a, x, side="right")  # scope intervals starting at or before x
        inside = np.where(k > 0, np.clip(x - a[np.maximum(k - 1, 0)], 0, None), 0)
        last = np.where(k > 0, b[np.maximum(k - 1, 0)] - a[np.maximum(k - 1, 0)], 0)
        return np.asarray(before[np.maximum(k - 1, 0)] * (k > 0) + np.minimum(inside, last))

    return measure(e) - measure(s)


def _counts(st: _Station, lo: int, hi: int, ict: float) -> WindowCounts:
    pbt = clip(st.pbt, lo, hi)
    es, ee, ec = st.ep_start, st.ep_end, st.ep_state
    run = ec == state_code("running")
    setup = ec == state_code("setup")
    down = ec == state_code("unplanned_stop")
    failures = 0
    if pbt[0].size and down.any():
        starts = es[down]
        pos = np.searchsorted(pbt[1], starts, side="right")
        ok = pos < pbt[0].size
        ok[ok] &= pbt[0][pos[ok]] <= starts[ok]
        failures = int(ok.sum())
    good = _in(st.good_ts, st.good_inc, lo, hi)
    reject = _in(st.reject_ts, st.reject_inc, lo, hi)
    return WindowCounts(
        pbt_s=total(pbt) / _US,
        apt_s=_overlap(es[run], ee[run], pbt),
        setup_s=_overlap(es[setup], ee[setup], pbt),
        unplanned_s=_overlap(es[down], ee[down], pbt),
        failures=failures,
        good=good,
        reject=reject,
        ideal_produced_s=ict * (good + reject),
        ideal_good_s=ict * good,
    )


def _loss_seconds(
    st: _Station, lo: int, hi: int, ict: float, small_stop_s: float, startup_window_s: float
) -> dict[str, tuple[float, int]]:
    """``loss name → (seconds, events)`` for one station and window."""
    pbt = clip(st.pbt, lo, hi)
    es, ee, ec = st.ep_start, st.ep_end, st.ep_state
    length = (ee - es) / _US
    code = {name: state_code(name) for name in STANDARD_STATES}
    short = length < small_stop_s
    waits = np.isin(ec, [code["idle"], code["starved"], code["blocked"]])
    fault = ec == code["unplanned_stop"]
    masks = {
        "breakdowns": fault & ~short,
        "setup": ec == code["setup"],
        "small_stops": (fault | waits) & short,
        "other_stops": (waits & ~short) | np.isin(ec, [code["offline"], code["planned_stop"]]),
    }
    out: dict[str, tuple[float, int]] = {}
    for name, mask in masks.items():
        overlaps = _each_overlap(es[mask], ee[mask], pbt)
        out[name] = (float(overlaps.sum()) / _US, int((overlaps > 0).sum()))
    counts = _counts(st, lo, hi, ict)
    out["speed_loss"] = (counts.apt_s - counts.ideal_produced_s, 0)
    ends = ee[np.isin(ec, [code["setup"], code["planned_stop"]])]
    in_window = (st.reject_ts >= lo) & (st.reject_ts < hi) & (st.reject_inc > 0)
    ts = st.reject_ts[in_window]
    inc = st.reject_inc[in_window]
    if ends.size and ts.size:
        pos = np.searchsorted(ends, ts, side="right") - 1
        near = (pos >= 0) & (ts - ends[np.maximum(pos, 0)] < startup_window_s * _US)
        startup = int(inc[near].sum())
    else:
        startup = 0
    out["startup_rejects"] = (ict * startup, startup)
    out["production_rejects"] = (ict * (counts.reject - startup), counts.reject - startup)
    return out


# ------------------------------------------------------------------ public API
@dataclass(frozen=True, slots=True)
class _Result:
    start: int
    end: int
    shift: str | None
    counts: WindowCounts
    losses: dict[str, tuple[float, int]]


async def _evaluate(
    historian: Historian,
    factory: Factory,
    asset_path: str,
    start: datetime,
    end: datetime,
    by: Grouping | None,
    small_stop_s: float,
    startup_window_s: float,
    max_gap_s: float | None,
    *,
    with_losses: bool = True,
) -> list[_Result]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if factory.asset(asset_path).level == "enterprise":
        raise ValueError("OEE is computed for equipment, cells, lines, areas and sites")
    windows = _windows(factory, asset_path, start, end, by)
    groups = _lines(factory, asset_path)
    refs: list[tuple[_Station, float]] = []
    for group in groups:
        # the line's output is its last station's; its rate the bottleneck's
        last = await _station(historian, factory, group[-1], start, end, max_gap_s)
        refs.append((last, max(_ict(factory, p) for p in group)))
    results = []
    for lo, hi, name in windows:
        counts = WindowCounts()
        lost: dict[str, tuple[float, int]] = {loss.name: (0.0, 0) for loss in LOSSES}
        for station, ict in refs:
            counts = counts + _counts(station, lo, hi, ict)
            if not with_losses:
                continue
            for key, (sec, n) in _loss_seconds(
                station, lo, hi, ict, small_stop_s, startup_window_s
            ).items():
                lost[key] = (lost[key][0] + sec, lost[key][1] + n)
        if not refs:  # nothing producing: still report the planned busy time
            pbt = planned_busy(factory.site_of(asset_path), lo, hi, asset_path=asset_path)
            counts = WindowCounts(pbt_s=total(pbt) / _US)
        results.append(_Result(lo, hi, name, counts, lost))
    return results


def _ts(us: Sequence[int]) -> pa.Array:
    return pa.array(list(us), pa.int64()).cast(TS_TYPE)


def _frame(asset_path: str, results: Sequence[_Result]) -> dict[str, pa.Array]:
    return {
        "window_start": _ts([r.start for r in results]),
        "window_end": _ts([r.end for r in results]),
        "shift": pa.array([r.shift for r in results], pa.string()),
        "asset": pa.array([asset_path] * len(results), pa.string()),
    }


async def oee(
    historian: Historian,
    factory: Factory,
    asset_path: str,
    start: datetime,
    end: datetime,
    by: Grouping | None = None,
    *,
    max_gap_s: float | None = None,
) -> pa.Table:
    """OEE of an asset over ``[start, end)``, as one row or one row per shift/hour/day.

    ``asset_path`` is equipment, a cell, a line, an area or a site (see the module
    docstring for the line rule). ``by="hour"``/``"day"`` use the site's local clock (days
    are 23 or 25 h on DST changes); ``by="shift"`` gives one row per shift occurrence.
    ``max_gap_s`` limits how long a state sample holds (then: no data, ``offline``).

    Columns: ``window_start, window_end, shift, asset, planned_busy_time_s,
    actual_production_time_s, availability, performance, quality, oee, good, reject,
    produced, ideal_cycle_time_s``; the ratios follow :data:`OEE_KPIS` (null on /0).
    """
    results = await _evaluate(
        historian, factory, asset_path, start, end, by,
        DEFAULT_SMALL_STOP_S, DEFAULT_STARTUP_WINDOW_S, max_gap_s, with_losses=False,
    )  # fmt: skip
    cols = _frame(asset_path, results)
    cols["planned_busy_time_s"] = pa.array([r.counts.pbt_s for r in results], pa.float64())
    cols["actual_production_time_s"] = pa.array([r.counts.apt_s for r in results], pa.float64())
    for kpi in OEE_KPIS:
        cols[kpi.name] = pa.array([kpi(r.counts) for r in results], pa.float64())
    cols["good"] = pa.array([r.counts.good for r in results], pa.int64())
    cols["reject"] = pa.array([r.counts.reject for r in results], pa.int64())
    cols["produced"] = pa.array([r.counts.produced for r in results], pa.int64())
    cols["ideal_cycle_time_s"] = pa.array(
        [
            r.counts.ideal_produced_s / r.counts.produced if r.counts.produced else None
            for r in results
        ],
        pa.float64(),
    )
    return pa.table(cols)


async def losses(
    historian: Historian,
    factory: Factory,
    asset_path: str,
    start: datetime,
    end: datetime,
    by: Grouping | None = None,
    *,
    small_stop_s: float = DEFAULT_SMALL_STOP_S,
    startup_window_s: float = DEFAULT_STARTUP_WINDOW_S,
    max_gap_s: float | None = None,
) -> pa.Table:
    """The six big losses (:data:`LOSSES`) per window, in seconds and as a share of PBT.

    Columns: ``window_start, window_end, shift, asset, loss, category, seconds,
    share_of_pbt, events`` (``events``: stop episodes touching PBT, or rejected pieces).
    Per window the seconds add up to ``PBT − ict × good``. Small stops are shown under
    performance by convention, although APT (time running) excludes them.
    """
    results = await _evaluate(
        historian, factory, asset_path, start, end, by, small_stop_s, startup_window_s, max_gap_s
    )
    rows: list[tuple[_Result, Loss]] = [(r, loss) for r in results for loss in LOSSES]
    cols = _frame(asset_path, [r for r, _ in rows])
    cols["loss"] = pa.array([loss.name for _, loss in rows], pa.string())
    cols["category"] = pa.array([loss.category for _, loss in rows], pa.string())
    cols["seconds"] = pa.array([r.losses[loss.name][0] for r, loss in rows], pa.float64())
    cols["share_of_pbt"] = pa.array(
        [r.losses[loss.name][0] / r.counts.pbt_s if r.counts.pbt_s else None for r, loss in rows],
        pa.float64(),
    )
    cols["events"] = pa.array([r.losses[loss.name][1] for r, loss in rows], pa.int64())
    return pa.table(cols)


async def iso22400(
    historian: Historian,
    factory: Factory,
    asset_path: str,
    start: datetime,
    end: datetime,
    by: Grouping | None = None,
    *,
    max_gap_s: float | None = None,
) -> pa.Table:
    """ISO 22400-2 KPIs (:data:`ISO22400_KPIS`) per window, with their time base.

    Columns: ``window_start, window_end, shift, asset, failures, planned_busy_time_s,
    actual_production_time_s, setup_time_s, unplanned_stop_time_s`` and one per KPI.
    """
    results = await _evaluate(
        historian, factory, asset_path, start, end, by,
        DEFAULT_SMALL_STOP_S, DEFAULT_STARTUP_WINDOW_S, max_gap_s, with_losses=False,
    )  # fmt: skip
    cols = _frame(asset_path, results)
    cols["failures"] = pa.array([r.counts.failures for r in results], pa.int64())
    cols["planned_busy_time_s"] = pa.array([r.counts.pbt_s for r in results], pa.float64())
    cols["actual_production_time_s"] = pa.array([r.counts.apt_s for r in results], pa.float64())
    cols["setup_time_s"] = pa.array([r.counts.setup_s for r in results], pa.float64())
    cols["unplanned_stop_time_s"] = pa.array([r.counts.unplanned_s for r in results], pa.float64())
    for kpi in ISO22400_KPIS:
        cols[kpi.name] = pa.array([kpi(r.counts) for r in results], pa.float64())
    return pa.table(cols)

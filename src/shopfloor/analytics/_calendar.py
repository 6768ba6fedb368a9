"""Planned busy time from a site's shift calendar, as sorted disjoint UTC intervals.

Times are int64 microseconds since the Unix epoch (the historian's ``ts``), intervals are
half-open ``[start, end)``. Calendar semantics (the same as the simulator's):

* an instant belongs to a shift when its **local wall-clock time** (site time zone, via
  :mod:`zoneinfo`) lies in ``[start, end)`` of the shift on one of its days; a shift whose
  end is not after its start crosses midnight and belongs to the day it starts on (its
  morning part is on the next day); ``start == end`` is a 24-hour shift. Because membership
  is decided on the wall clock, a night shift 22:00–06:00 lasts 7 h on the spring-forward
  night and 9 h on the fall-back night (both wall-clock 02:00–03:00 hours count);
* a break (every day) removes its wall-clock window from the shifts it names (from every
  shift when it names none);
* planned downtime (aware instants) removes its span when it names none of the assets or
  names the asset or one of its ancestors (by path or id);
* a calendar without shifts plans production around the clock.

PBT = shift time − breaks − planned downtime (ISO 22400-2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from shopfloor.model._schema import Calendar, Site

__all__ = [
    "Intervals",
    "clip",
    "intersect",
    "planned_busy",
    "shift_windows",
    "subtract",
    "to_us",
    "total",
    "union",
]

I64 = npt.NDArray[np.int64]
Intervals = tuple[I64, I64]
"""Sorted, disjoint half-open intervals as ``(starts, ends)`` in epoch microseconds."""

_US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _empty() -> Intervals:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def union(starts: npt.ArrayLike, ends: npt.ArrayLike) -> Intervals:
    """Sort and merge intervals (touching ones join); empty intervals are dropped."""
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    keep = e > s
    s, e = s[keep], e[keep]
    if s.size == 0:
        return _empty()
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    new = np.ones(s.size, dtype=bool)
    new[1:] = s[1:] > reach[:-1]
    idx = np.flatnonzero(new)
    out_e = np.maximum.reduceat(e, idx) if idx.size else e
    return s[idx], out_e.astype(np.int64)


def _normalize(a: Intervals) -> Intervals:
    return union(a[0], a[1])


def intersect(a: Intervals, b: Intervals) -> Intervals:
    """The intersection of two interval sets."""
    a, b = _normalize(a), _normalize(b)
    if a[0].size == 0 or b[0].size == 0:
        return _empty()
    # for every interval of a, the range of b intervals that may overlap it
    lo = np.searchsorted(b[1], a[0], side="right")
    hi = np.searchsorted(b[0], a[1], side="left")
    counts = np.maximum(hi - lo, 0)
    if counts.sum() == 0:
        return _empty()
    ai = np.repeat(np.arange(a[0].size), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    bi = np.repeat(lo, counts) + offsets
    s = np.maximum(a[0][ai], b[0][bi])
    e = np.minimum(a[1][ai], b[1][bi])
    return union(s, e)


def subtract(a: Intervals, b: Intervals) -> Intervals:
    """``a`` minus ``b``."""
    a, b = _normalize(a), _normalize(b)
    if a[0].size == 0 or b[0].size == 0:
        return a
    lo = int(min(a[0][0], b[0][0])) - 1
    hi = int(max(a[1][-1], b[1][-1])) + 1
    # complement of b within [lo, hi)
    cs = np.concatenate([[lo], b[1]])
    ce = np.concatenate([b[0], [hi]])
    return intersect(a, union(cs, ce))


def clip(a: Intervals, start_us: int, end_us: int) -> Intervals:
    """``a`` intersected with ``[start_us, end_us)``."""
    return intersect(a, (np.array([start_us], np.int64), np.array([end_us], np.int64)))


def total(a: Intervals) -> int:
    """Total length of the (disjoint) intervals in microseconds."""
    return int((a[1] - a[0]).sum())


def to_us(ts: datetime) -> int:
    """Epoch microseconds of an aware datetime."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


# ------------------------------------------------------------------ wall clock → UTC
def _offset_us(tz: ZoneInfo, t_s: int) -> int:
    off = datetime.fromtimestamp(t_s, tz).utcoffset()
    assert off is not None
    return int(off.total_seconds()) * _US


def _segments(tz: ZoneInfo, lo_s: int, hi_s: int) -> list[tuple[int, int, int]]:
    """``(start_us, end_us, offset_us)`` pieces of ``[lo_s, hi_s)`` with a constant offset.

    Offsets are probed hourly and transitions located to the second by bisection (zone
    transitions are never closer than a few hours to each other).
    """
    out: list[tuple[int, int, int]] = []
    seg_start = lo_s
    current = _offset_us(tz, lo_s)
    t = lo_s
    while t < hi_s:
        nxt = min(t + 3600, hi_s)
        off = _offset_us(tz, nxt)
        if off != current:
            a, b = t, nxt  # offset(a) == current, offset(b) != current
            while b - a > 1:
                m = (a + b) // 2
                if _offset_us(tz, m) == current:
                    a = m
                else:
                    b = m
            out.append((seg_start * _US, b * _US, current))
            seg_start, current = b, _offset_us(tz, b)
        t = nxt
    out.append((seg_start * _US, hi_s * _US, current))
    return out


def _wall_us(d: date, minute_of_day: int) -> int:
    """Wall-clock microseconds (as if the zone were UTC) of ``d`` at ``minute_of_day``."""
    return (d.toordinal() - date(1970, 1, 1).toordinal()) * 86_400 * _US + minute_of_day * 60 * _US


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _daily(
    start: str, end: str, days: Iterable[str] | None, dates: Sequence[date]
) -> tuple[list[int], list[int]]:
    """Wall-clock windows of a daily ``start``–``end`` on ``days`` (all when ``None``)."""
    a, b = _minutes(start), _minutes(end)
    if b <= a:
        b += 24 * 60
    allowed = set(days) if days is not None else set(_WEEKDAYS)
    ws, we = [], []
    for d in dates:
        if _WEEKDAYS[d.weekday()] in allowed:
            ws.append(_wall_us(d, a))
            we.append(_wall_us(d, b))
    return ws, we


def _to_utc(
    wall_starts: Sequence[int], wall_ends: Sequence[int], segs: Sequence[tuple[int, int, int]]
) -> Intervals:
    """Instants whose wall-clock time lies in one of the wall windows (exact with DST)."""
    if not wall_starts:
        return _empty()
    ws = np.asarray(wall_starts, np.int64)
    we = np.asarray(wall_ends, np.int64)
    parts_s, parts_e = [], []
    for seg_s, seg_e, off in segs:
        parts_s.append(np.maximum(ws - off, seg_s))
        parts_e.append(np.minimum(we - off, seg_e))
    return union(np.concatenate(parts_s), np.concatenate(parts_e))


def _dates(tz: ZoneInfo, start_us: int, end_us: int) -> list[date]:
    first = datetime.fromtimestamp(start_us / _US, tz).date() - timedelta(days=2)
    last = datetime.fromtimestamp(end_us / _US, tz).date() + timedelta(days=1)
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def _downtime_applies(assets: Sequence[str], asset_path: str | None) -> bool:
    if not assets or asset_path is None:
        return True
    parts = asset_path.split("/")
    names = {"/".join(parts[: k + 1]) for k in range(len(parts))} | set(parts)
    return bool(names & set(assets))


def planned_busy(
    site: Site | Calendar,
    start_us: int,
    end_us: int,
    asset_path: str | None = None,
    tz: str = "UTC",
) -> Intervals:
    """Planned busy time of ``asset_path`` at ``site`` within ``[start_us, end_us)``.

    ``site`` may also be a bare :class:`Calendar` (then ``tz`` names its time zone).
    """
    if isinstance(site, Site):
        calendar, zone = site.calendar, ZoneInfo(site.timezone)
    else:
        calendar, zone = site, ZoneInfo(tz)
    if end_us <= start_us:
        return _empty()
    dates = _dates(zone, start_us, end_us)
    segs = _segments(zone, start_us // _US - 3 * 86_400, end_us // _US + 3 * 86_400 + 1)
    window = (np.array([start_us], np.int64), np.array([end_us], np.int64))
    by_name: dict[str, Intervals] = {}
    if calendar.shifts:
        for shift in calendar.shifts:
            ws, we = _daily(shift.start, shift.end, shift.days, dates)
            got = _to_utc(ws, we, segs)
            prev = by_name.get(shift.name)
            by_name[shift.name] = (
                got
                if prev is None
                else union(np.concatenate([prev[0], got[0]]), np.concatenate([prev[1], got[1]]))
            )
        shifts = union(
            np.concatenate([v[0] for v in by_name.values()]),
            np.concatenate([v[1] for v in by_name.values()]),
        )
    else:
        shifts = window
    busy = intersect(shifts, window)
    for brk in calendar.breaks:
        ws, we = _daily(brk.start, brk.end, None, dates)
        cut = _to_utc(ws, we, segs)
        if brk.shifts:
            named = [by_name[n] for n in brk.shifts if n in by_name]
            if not named:
                continue
            scope = union(
                np.concatenate([v[0] for v in named]), np.concatenate([v[1] for v in named])
            )
            cut = intersect(cut, scope)
        busy = subtract(busy, cut)
    down_s, down_e = [], []
    for d in calendar.planned_downtime:
        if _downtime_applies(d.assets, asset_path):
            down_s.append(to_us(d.start))
            down_e.append(to_us(d.end))
    if down_s:
        busy = subtract(busy, union(down_s, down_e))
    return busy


def shift_windows(site: Site, start_us: int, end_us: int) -> list[tuple[str, int, int]]:
    """Every shift occurrence overlapping ``[start_us, end_us)``, clipped to it, in order.

    An occurrence runs from the shift's start to its end on the local wall clock (one
    contiguous UTC span; a 22:00–06:00 shift is 7 h long on the spring-forward night).
    """
    zone = ZoneInfo(site.timezone)
    dates = _dates(zone, start_us, end_us)
    out: list[tuple[str, int, int]] = []
    for shift in site.calendar.shifts:
        a, b = _minutes(shift.start), _minutes(shift.end)
        if b <= a:
            b += 24 * 60
        for d in dates:
            if _WEEKDAYS[d.weekday()] not in shift.days:
                continue
            base = datetime(d.year, d.month, d.day, tzinfo=zone)
            s = to_us(base + timedelta(minutes=a))
            e = to_us(base + timedelta(minutes=b))
            s, e = max(s, start_us), min(e, end_us)
            if e > s:
                out.append((shift.name, s, e))
    out.sort(key=lambda w: (w[1], w[2]))
    return out

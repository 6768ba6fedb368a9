"""Shift calendars evaluated in simulated time: working, on a break, or off shift."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["BREAK", "OFF", "WORK", "Break", "Downtime", "Shift", "ShiftCalendar", "parse_days"]

WORK = 0
"""Planned production time."""
BREAK = 1
"""A planned stop inside a shift (break or planned downtime)."""
OFF = 2
"""Outside every shift."""

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALL_DAYS = frozenset(range(7))


def _parse_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    text = str(value).strip()
    if text in ("24:00", "24:00:00"):
        return time(0, 0)
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text)
    if match is None:
        raise ValueError(f"not a time of day (HH:MM): {value!r}")
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


def _day(value: Any) -> int:
    if isinstance(value, int):
        if not 0 <= value <= 6:
            raise ValueError(f"day number out of range 0..6: {value}")
        return value
    key = str(value).strip().lower()[:3]
    if key not in _DAY_NAMES:
        raise ValueError(f"not a day of the week: {value!r}")
    return _DAY_NAMES.index(key)


def parse_days(value: Any) -> frozenset[int]:
    """Days of the week (0 = Monday) from ``None`` (every day), ``"mon-fri"``, names or numbers."""
    if value is None:
        return _ALL_DAYS
    if isinstance(value, str):
        items: Iterable[Any] = [p for p in re.split(r"[,\s]+", value) if p]
    elif isinstance(value, Iterable):
        items = value
    else:
        items = [value]
    days: set[int] = set()
    for item in items:
        if isinstance(item, str) and "-" in item:
            first, last = (_day(p) for p in item.split("-", 1))
            span = (last - first) % 7
            days.update((first + k) % 7 for k in range(span + 1))
        else:
            days.add(_day(item))
    return frozenset(days)


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


@dataclass(frozen=True)
class _Window:
    """A daily window [start, end) on some weekdays; ``end <= start`` crosses midnight."""

    start: time
    end: time
    days: frozenset[int] = _ALL_DAYS

    def covers(self, weekday: int, second_of_day: int) -> bool:
        start, end = _seconds(self.start), _seconds(self.end)
        if start < end:
            return weekday in self.days and start <= second_of_day < end
        # crosses midnight: the evening part belongs to its day, the morning to the day before
        if second_of_day >= start:
            return weekday in self.days
        return second_of_day < end and (weekday - 1) % 7 in self.days


@dataclass(frozen=True)
class Shift(_Window):
    """A shift: production is planned between ``start`` and ``end`` on ``days``."""

    name: str = ""


@dataclass(frozen=True)
class Break(_Window):
    """A break (a planned stop) inside the shifts named in ``shifts`` (all when empty)."""

    name: str = ""
    shifts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Downtime:
    """A one-off planned downtime between two timezone-aware instants."""

    start: datetime
    end: datetime
    reason: str = ""


@dataclass(frozen=True)
class ShiftCalendar:
    """Shifts, breaks and planned downtime of a site, in the site's time zone.

    A calendar without shifts means production is planned around the clock.
    """

    timezone: str = "UTC"
    shifts: tuple[Shift, ...] = ()
    breaks: tuple[Break, ...] = ()
    downtime: tuple[Downtime, ...] = ()
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tz", ZoneInfo(self.timezone))

    @classmethod
    def from_spec(
        cls,
        timezone: str = "UTC",
        shifts: Iterable[Any] = (),
        breaks: Iterable[Any] = (),
        downtime: Iterable[Any] = (),
    ) -> ShiftCalendar:
        """Build a calendar from loose objects or mappings with ``start``/``end``/``days``."""

        def get(obj: Any, key: str, default: Any = None) -> Any:
            if isinstance(obj, dict):
                return obj.get(key, default)
            return getattr(obj, key, default)

        def window_args(obj: Any) -> dict[str, Any]:
            return {
                "start": _parse_time(get(obj, "start")),
                "end": _parse_time(get(obj, "end")),
                "days": parse_days(get(obj, "days")),
                "name": str(get(obj, "name", "") or ""),
            }

        def break_args(obj: Any) -> dict[str, Any]:
            return {**window_args(obj), "shifts": frozenset(get(obj, "shifts", None) or ())}

        def instant(value: Any) -> datetime:
            when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            if when.tzinfo is None:
                when = when.replace(tzinfo=ZoneInfo(timezone))
            return when

        return cls(
            timezone=timezone,
            shifts=tuple(Shift(**window_args(s)) for s in shifts),
            breaks=tuple(Break(**break_args(b)) for b in breaks),
            downtime=tuple(
                Downtime(
                    instant(get(d, "start")),
                    instant(get(d, "end")),
                    str(get(d, "reason", "") or ""),
                )
                for d in downtime
            ),
        )

    def status(self, when: datetime) -> int:
        """:data:`WORK`, :data:`BREAK` or :data:`OFF` at the aware instant ``when``."""
        local = when.astimezone(self._tz)
        weekday = local.weekday()
        second = local.hour * 3600 + local.minute * 60 + local.second
        active = {s.name for s in self.shifts if s.covers(weekday, second)}
        if self.shifts and not active:
            return OFF
        for b in self.breaks:
            if b.covers(weekday, second) and (not b.shifts or not active or b.shifts & active):
                return BREAK
        if any(d.start <= when < d.end for d in self.downtime):
            return BREAK
        return WORK

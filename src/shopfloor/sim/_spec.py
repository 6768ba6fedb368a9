"""Declarative input of the simulation engine: stations and the signals they expose.

The engine knows nothing of the factory file; :mod:`shopfloor.sim._build` turns a
:class:`shopfloor.model.Factory` into these specs, tests and benchmarks build them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shopfloor.sim._calendar import ShiftCalendar

__all__ = [
    "STATES",
    "TYPE_DEFAULTS",
    "SignalSpec",
    "StationSpec",
]

STATES: tuple[str, ...] = (
    "running",
    "idle",
    "starved",
    "blocked",
    "planned_stop",
    "unplanned_stop",
    "setup",
    "offline",
)
"""The standard machine states, in the order of the engine's state codes."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})

TYPE_DEFAULTS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "press": MappingProxyType(
            {"ideal_cycle_time_s": 12.0, "mtbf_min": 180.0, "mttr_min": 12.0, "power_kw": 45.0}
        ),
        "welding-robot": MappingProxyType(
            {"ideal_cycle_time_s": 9.0, "mtbf_min": 300.0, "mttr_min": 8.0, "power_kw": 15.0}
        ),
        "conveyor": MappingProxyType(
            {
                "ideal_cycle_time_s": 6.0,
                "mtbf_min": 720.0,
                "mttr_min": 5.0,
                "power_kw": 3.0,
                "reject_rate": 0.0,
                "idle_rate_per_h": 0.0,
            }
        ),
    }
)
"""Per-type defaults for station attributes missing from the factory file."""


@dataclass(frozen=True)
class StationSpec:
    """One simulated machine.

    Stations with the same non-empty ``line`` are coupled in the order they are given:
    each feeds the next through a buffer of ``buffer_capacity`` parts; the first of a line
    never starves, the last is never blocked. Times are in seconds unless the name says
    otherwise; MTBF counts operating (running) time.
    """

    path: str
    type: str = "machine"
    line: str = ""
    calendar: ShiftCalendar | None = None
    ideal_cycle_time_s: float = 10.0
    slowdown: float = 0.08
    """Mean of the exponential extra fraction added to each cycle (0.08 → 8 % slower)."""
    reject_rate: float = 0.02
    mtbf_min: float = 240.0
    mttr_min: float = 10.0
    setup_min: float = 10.0
    """Setup at the start of every shift."""
    idle_rate_per_h: float = 0.5
    """Short waits (no operator, no order) per hour of availability."""
    idle_min: float = 2.0
    power_kw: float = 10.0
    buffer_capacity: int = 3
    """Capacity of the buffer after this station (ignored for the last of a line)."""
    state_codes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    """Standard state → raw code written to ``state`` signals (default: the state's index)."""

    @classmethod
    def with_defaults(cls, path: str, type: str, **attrs: Any) -> StationSpec:
        """A spec whose missing attributes come from :data:`TYPE_DEFAULTS` for ``type``."""
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = dict(TYPE_DEFAULTS.get(type, _EMPTY))
        values.update({k: v for k, v in attrs.items() if v is not None})
        return cls(path=path, type=type, **{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class SignalSpec:
    """One signal of a station; its value is derived from the station's simulated state."""

    path: str
    station: str
    name: str
    data_type: str = "float"
    kind: str = "measurement"
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    initial: Any = None
    """Initial value of a setpoint (default: mid-range or a nominal value for the name)."""

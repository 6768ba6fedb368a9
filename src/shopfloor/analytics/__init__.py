"""Analytics: OEE and the six big losses, ISO 22400-2 KPIs, downtime events and Paretos.

Everything is computed from what the historian stores (state signals, good/reject counters)
and what the factory model declares (state maps, ideal cycle times, shift calendars):

* :func:`oee`, :func:`losses`, :func:`iso22400` — KPI tables per window (whole range, shift,
  hour or day), with the formulas as frozen definitions in :data:`OEE_KPIS`,
  :data:`ISO22400_KPIS` and :data:`LOSSES`;
* :func:`planned_busy_time` — planned busy time from a site's shift calendar;
* :func:`state_intervals`, :func:`counter_increments` — the pure building blocks;
* :func:`record_downtime`, :func:`assign_reason`, :func:`downtime_pareto` — downtime events.
* :class:`AnomalyEngine` (a pipeline observer) and :class:`AnomalyDetector` — online
  anomaly detection on selected signals (robust rolling z-score), anomaly events.
"""

from __future__ import annotations

from shopfloor.analytics._calendar import planned_busy as planned_busy_time
from shopfloor.analytics._counters import counter_increments
from shopfloor.analytics._states import StateIntervals, state_intervals
from shopfloor.analytics.anomaly import (
    ANOMALY_KIND,
    AnomalyDetector,
    AnomalyEngine,
    DetectorStats,
)
from shopfloor.analytics.downtime import (
    assign_reason,
    downtime_events,
    downtime_pareto,
    record_downtime,
)
from shopfloor.analytics.oee import (
    DEFAULT_SMALL_STOP_S,
    DEFAULT_STARTUP_WINDOW_S,
    ISO22400_KPIS,
    LOSSES,
    OEE_KPIS,
    Grouping,
    Kpi,
    Loss,
    WindowCounts,
    iso22400,
    losses,
    oee,
)

__all__ = [
    "ANOMALY_KIND",
    "DEFAULT_SMALL_STOP_S",
    "DEFAULT_STARTUP_WINDOW_S",
    "ISO22400_KPIS",
    "LOSSES",
    "OEE_KPIS",
    "AnomalyDetector",
    "AnomalyEngine",
    "DetectorStats",
    "Grouping",
    "Kpi",
    "Loss",
    "StateIntervals",
    "WindowCounts",
    "assign_reason",
    "counter_increments",
    "downtime_events",
    "downtime_pareto",
    "iso22400",
    "losses",
    "oee",
    "planned_busy_time",
    "record_downtime",
    "state_intervals",
]

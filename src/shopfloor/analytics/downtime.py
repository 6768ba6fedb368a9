"""Downtime events from machine-state changes, reason assignment, and a Pareto of downtime.

Every stretch of an equipment's standard state other than ``running`` becomes one event in
the historian's events table (:data:`~shopfloor.historian.base.EVENT_SCHEMA`): ``kind``
``downtime``, ``code`` the standard state, ``ts``/``end_ts`` its span (``end_ts`` null while
it lasts to the end of the range looked at), ``data`` a JSON object with ``raw`` (the
machine's raw state code; null where there was no data) and ``reason`` (null until someone
assigns one). Stretches without any data (before the first state sample) are not events.

Event ids are ``downtime:<asset>:<start µs>``, so recording the same range again replaces
events instead of duplicating them, and keeps reasons already assigned.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.analytics._calendar import to_us
from shopfloor.analytics._states import RUNNING, state_intervals
from shopfloor.analytics.oee import _samples
from shopfloor.edge.batch import TS_TYPE
from shopfloor.errors import HistorianError
from shopfloor.historian.base import EVENT_SCHEMA, Historian
from shopfloor.model._factory import Factory
from shopfloor.model._schema import STANDARD_STATES

__all__ = ["UNASSIGNED", "assign_reason", "downtime_events", "downtime_pareto", "record_downtime"]

UNASSIGNED = "unassigned"
"""The Pareto key of downtime without a reason."""

_KIND = "downtime"


def _event_id(asset: str, start_us: int) -> str:
    return f"{_KIND}:{asset}:{start_us}"


def _utc(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


async def downtime_events(
    historian: Historian,
    factory: Factory,
    asset_path: str,
    start: datetime,
    end: datetime,
    *,
    max_gap_s: float | None = None,
) -> pa.Table:
    """Downtime events of one equipment within ``[start, end)`` (not stored).

    An event that began before ``start`` keeps its true start when the state sample that
    began it is within the historian's look-back (up to 40 days).
    """
    s_us, e_us = to_us(start), to_us(end)
    series = await _samples(historian, f"{asset_path}/state", start, end, max_gap_s)
    ts = series.ts
    from_us = min(s_us, int(ts[0])) if ts.size else s_us
    si = state_intervals(
        ts,
        series.quality,
        series.values,
        factory.state_map(asset_path),
        from_us,
        e_us,
        max_gap_s=max_gap_s,
        hold_from=series.last_ts,
    )
    first_sample = int(ts[0]) if ts.size else e_us
    keep = [
        i
        for i in range(len(si))
        if si.state[i] != RUNNING and (bool(si.known[i]) or int(si.start[i]) >= first_sample)
    ]
    rows: dict[str, list[Any]] = {f.name: [] for f in EVENT_SCHEMA}
    for i in keep:
        start_i, end_i = int(si.start[i]), int(si.end[i])
        rows["event_id"].append(_event_id(asset_path, start_i))
        rows["kind"].append(_KIND)
        rows["asset"].append(asset_path)
        rows["signal"].append(f"{asset_path}/state")
        rows["ts"].append(start_i)
        rows["end_ts"].append(None if end_i >= e_us else end_i)
        rows["code"].append(STANDARD_STATES[int(si.state[i])])
        rows["severity"].append(None)
        rows["message"].append(None)
        rows["data"].append(json.dumps({"raw": si.raw[i], "reason": None}))
    arrays = []
    for f in EVENT_SCHEMA:
        if f.name in ("ts", "end_ts"):
            arrays.append(pa.array(rows[f.name], pa.int64()).cast(TS_TYPE))
        else:
            arrays.append(pa.array(rows[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


async def record_downtime(
    historian: Historian,
    factory: Factory,
    asset_path: str,
    start: datetime,
    end: datetime,
    *,
    max_gap_s: float | None = None,
) -> pa.Table:
    """Compute :func:`downtime_events` and store them, keeping reasons already assigned."""
    events = await downtime_events(historian, factory, asset_path, start, end, max_gap_s=max_gap_s)
    if events.num_rows == 0:
        return events
    first = events.column("ts")[0].as_py()
    existing = await historian.read_events(first, end, asset_prefix=asset_path, kinds=[_KIND])
    old = {
        r["event_id"]: json.loads(r["data"] or "{}")
        for r in existing.to_pylist()
        if r["asset"] == asset_path
    }
    data = []
    for event_id, text in zip(
        events.column("event_id").to_pylist(), events.column("data").to_pylist(), strict=True
    ):
        new = json.loads(text)
        prior = old.get(event_id, {})
        for key in ("reason", "reason_by", "reason_at"):
            if prior.get(key) is not None:
                new[key] = prior[key]
        data.append(json.dumps(new))
    events = events.set_column(
        events.schema.get_field_index("data"), "data", pa.array(data, pa.string())
    )
    await historian.append_events(events)
    return events


async def assign_reason(
    historian: Historian, event_id: str, reason_code: str, by: str
) -> dict[str, Any]:
    """Give a downtime event a reason (``by``: who assigned it); return the updated event.

    Raises :class:`~shopfloor.errors.HistorianError` when there is no such event.
    """
    try:
        kind, rest = event_id.split(":", 1)
        asset, start_text = rest.rsplit(":", 1)
        start_us = int(start_text)
    except ValueError as exc:
        raise HistorianError(f"not a downtime event id: {event_id!r}") from exc
    if kind != _KIND:
        raise HistorianError(f"not a downtime event id: {event_id!r}")
    at = _utc(start_us)
    found = await historian.read_events(
        at, at + timedelta(microseconds=1), asset_prefix=asset, kinds=[_KIND]
    )
    match = found.filter(pc.equal(found.column("event_id"), event_id))
    if match.num_rows == 0:
        raise HistorianError(f"no downtime event {event_id!r}")
    row: dict[str, Any] = match.slice(0, 1).to_pylist()[0]
    data = json.loads(row["data"] or "{}")
    data.update(reason=reason_code, reason_by=by, reason_at=datetime.now(UTC).isoformat())
    row["data"] = json.dumps(data)
    await historian.append_events(pa.Table.from_pylist([row], schema=EVENT_SCHEMA))
    return row


async def downtime_pareto(
    historian: Historian,
    start: datetime,
    end: datetime,
    *,
    asset_prefix: str | None = None,
    by: Literal["reason", "state"] = "reason",
) -> pa.Table:
    """Downtime within ``[start, end)`` per reason (or standard state), largest first.

    Events are clipped to the range (open ones run to ``end``). Columns: ``key, events,
    seconds, share, cumulative_share``; events without a reason are :data:`UNASSIGNED`.
    """
    events = await historian.read_events(start, end, asset_prefix=asset_prefix, kinds=[_KIND])
    s_us, e_us = to_us(start), to_us(end)
    totals: dict[str, list[float]] = {}
    for r in events.to_pylist():
        lo = max(to_us(r["ts"]), s_us)
        hi = min(to_us(r["end_ts"]) if r["end_ts"] is not None else e_us, e_us)
        if hi <= lo:
            continue
        if by == "reason":
            key = json.loads(r["data"] or "{}").get("reason") or UNASSIGNED
        else:
            key = r["code"] or UNASSIGNED
        acc = totals.setdefault(str(key), [0, 0.0])
        acc[0] += 1
        acc[1] += (hi - lo) / 1e6
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1][1], kv[0]))
    seconds = np.array([v[1] for _, v in ordered], dtype=np.float64)
    whole = float(seconds.sum())
    share = seconds / whole if whole > 0 else np.zeros_like(seconds)
    return pa.table(
        {
            "key": pa.array([k for k, _ in ordered], pa.string()),
            "events": pa.array([int(v[0]) for _, v in ordered], pa.int64()),
            "seconds": pa.array(seconds, pa.float64()),
            "share": pa.array(share, pa.float64()),
            "cumulative_share": pa.array(np.cumsum(share), pa.float64()),
        }
    )

"""Alarms: rules from the factory file evaluated on the live stream, with an ISA-18.2 lifecycle.

:class:`AlarmEngine` is a pipeline observer (:data:`shopfloor.edge.pipeline.Observer`): it is
told every committed batch of readings, evaluates the rules of the factory file's
``alarms`` section on it with NumPy (threshold with hysteresis, rate of change, machine-state
duration, expressions over several signals; on- and off-delays), and runs a clock tick so
that delays run out even when a signal stays still. :class:`AlarmManager` keeps each
alarm's state and carries out the operators' actions.

Lifecycle (ISA-18.2 / IEC 62682 states)::

    normal ──condition──▶ unack_active ──ack──▶ ack_active
       ▲                      │                     │
       │                   clears                clears
       │                      ▼                     │
       └──────ack────────  rtn_unack                │
       ▲                                            │
       └────────────────────────────────────────────┘

* An **occurrence** starts when an alarm leaves ``normal`` and ends when it is back (its
  condition cleared *and* it was acknowledged; non-latching rules, ``ack_required:
  false``, need no acknowledgement). A condition that returns while ``rtn_unack`` goes back
  to ``unack_active`` in the same occurrence (``activations`` counts it: chattering).
* **Shelving** (with an expiry, at most ``max_shelve`` long) takes an alarm out of
  annunciation: no notifications of its activations, clears and acknowledgements; a new
  activation while shelved does not open an occurrence. When the shelf is removed or
  expires and the condition is still there, the alarm activates (is annunciated) anew.
* **Severity** is 1–1000 (OPC UA); priority names: low ≤ 250 < medium ≤ 500 < high ≤ 750
  < critical.

Everything is stored in the historian's events table (:data:`~shopfloor.edge.events.EVENT_SCHEMA`):

* ``kind="alarm"``: one event per occurrence, ``event_id`` ``alarm:<alarm id>:<µs>``, ``ts`` its
  activation, ``end_ts`` its return to normal (null while open), ``code`` the rule id,
  ``data`` the current state (rewritten on every change);
* ``kind="alarm_log"``: one event per transition (``code`` ``activated``, ``cleared``,
  ``acknowledged``, ``shelved`` or ``unshelved``) with its time, user and comment — the audit
  trail;
* ``kind="alarm_shelf"``: one event per shelving, ``ts`` to ``end_ts``.

On start the manager restores open occurrences and shelves from there, so alarms survive a
restart. Notifications (JSON objects, see :meth:`AlarmManager.notification`) go to the sinks
in :mod:`shopfloor.analytics._alarm_sinks` through bounded queues that never block ingest.

Evaluation rules: samples of bad quality, and samples without a value, make a signal
unknown and the condition holds its level; samples older than the newest one already seen
of a signal are ignored. The engine's clock is the data's: the newest timestamp seen,
advanced by the real time elapsed since, less ``settle`` seconds (late data has that long
to arrive before a delay runs out on the clock alone).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.analytics._alarm_eval import Condition, evaluate, hysteresis, rates
from shopfloor.analytics._alarm_sinks import (
    AlarmSink,
    Dispatcher,
    MemorySink,
    MqttSink,
    SinkStats,
    WebhookSink,
    sinks_from_specs,
)
from shopfloor.edge.batch import TS_TYPE, ReadingBatch
from shopfloor.edge.events import EVENT_SCHEMA
from shopfloor.errors import AlarmError
from shopfloor.historian.base import Historian, SignalInfo
from shopfloor.model._alarms import (
    SEVERITIES,
    AlarmInstance,
    alarm_instances,
    priority_name,
)
from shopfloor.model._expr import parse_expression
from shopfloor.model._factory import Factory, ResolvedSignal
from shopfloor.model._schema import STANDARD_STATES

__all__ = [
    "SEVERITIES",
    "AlarmDefinition",
    "AlarmEngine",
    "AlarmManager",
    "AlarmSink",
    "AlarmState",
    "AlarmStatus",
    "MemorySink",
    "MqttSink",
    "SinkStats",
    "WebhookSink",
    "alarm_log",
    "priority_name",
]

log = logging.getLogger(__name__)

I8 = npt.NDArray[np.int8]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

KIND_OCCURRENCE = "alarm"
KIND_LOG = "alarm_log"
KIND_SHELF = "alarm_shelf"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR = timedelta(days=365 * 200)


def _us(when: datetime) -> int:
    if when.tzinfo is None:
        raise AlarmError(f"naive datetime {when.isoformat()}: give a time zone (UTC)")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _span_us(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _iso(us: int | None) -> str | None:
    return None if us is None else _dt(us).isoformat().replace("+00:00", "Z")


def _from_iso(text: Any) -> int | None:
    if not text:
        return None
    return _us(datetime.fromisoformat(str(text).replace("Z", "+00:00")))


class AlarmState(StrEnum):
    """The ISA-18.2 states of an alarm (shelving is shown apart, see :class:`AlarmStatus`)."""

    NORMAL = "normal"
    UNACK_ACTIVE = "unack_active"
    ACK_ACTIVE = "ack_active"
    RTN_UNACK = "rtn_unack"


@dataclass(frozen=True, slots=True)
class AlarmDefinition:
    """What an alarm is: its id (``<asset path>/<rule id>``), asset, signal and severity."""

    alarm_id: str
    rule: str
    asset: str
    signal: str | None = None
    severity: int = 500
    ack_required: bool = True
    description: str = ""

    @classmethod
    def of(cls, instance: AlarmInstance) -> AlarmDefinition:
        """The definition of a rule instance of the factory file."""
        primary = instance.primary
        return cls(
            alarm_id=instance.alarm_id,
            rule=instance.rule.id,
            asset=instance.asset_path,
            signal=primary.path if primary is not None else None,
            severity=instance.severity,
            ack_required=instance.rule.ack_required,
            description=instance.rule.description,
        )

    @property
    def priority(self) -> str:
        """The severity's priority name (low, medium, high, critical)."""
        return priority_name(self.severity)


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """A snapshot of one alarm's state."""

    definition: AlarmDefinition
    state: AlarmState
    active: bool
    """The condition is present (after its delays)."""
    acked: bool
    shelved_until: datetime | None
    shelved_by: str | None
    occurrence: str | None
    """The event id of the current occurrence (``None`` in ``normal``)."""
    activated_at: datetime | None
    activations: int
    value: Any
    message: str
    acked_by: str | None
    acked_at: datetime | None
    ack_comment: str | None

    @property
    def alarm_id(self) -> str:
        """The alarm's id."""
        return self.definition.alarm_id

    @property
    def shelved(self) -> bool:
        """The alarm is shelved (not annunciated)."""
        return self.shelved_until is not None

    @property
    def severity(self) -> int:
        """The alarm's severity (1–1000)."""
        return self.definition.severity


@dataclass(slots=True)
class _Record:
    d: AlarmDefinition
    active: bool = False
    acked: bool = True
    occurrence: str | None = None
    activated_us: int | None = None
    activations: int = 0
    value: Any = None
    message: str = ""
    acked_by: str | None = None
    acked_us: int | None = None
    ack_comment: str | None = None
    cleared_us: int | None = None
    shelf: str | None = None
    shelved_us: int | None = None
    shelved_until: int | None = None
    shelved_by: str | None = None
    shelve_reason: str | None = None

    @property
    def state(self) -> AlarmState:
        if self.occurrence is None:
            return AlarmState.NORMAL
        if self.active:
            return AlarmState.ACK_ACTIVE if self.acked else AlarmState.UNACK_ACTIVE
        return AlarmState.RTN_UNACK if not self.acked else AlarmState.NORMAL

    def status(self) -> AlarmStatus:
        return AlarmStatus(
            definition=self.d,
            state=self.state,
            active=self.active,
            acked=self.acked,
            shelved_until=None if self.shelved_until is None else _dt(self.shelved_until),
            shelved_by=self.shelved_by,
            occurrence=self.occurrence,
            activated_at=None if self.activated_us is None else _dt(self.activated_us),
            activations=self.activations,
            value=self.value,
            message=self.message,
            acked_by=self.acked_by,
            acked_at=None if self.acked_us is None else _dt(self.acked_us),
            ack_comment=self.ack_comment,
        )


def _event_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    arrays = []
    for f in EVENT_SCHEMA:
        values = [r.get(f.name) for r in rows]
        if f.name in ("ts", "end_ts"):
            arrays.append(pa.array(values, pa.int64()).cast(TS_TYPE))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


class AlarmManager:
    """The state of every alarm, the operators' actions, and their record in the historian.

    ``historian`` may be ``None`` (nothing stored; tests, previews). ``notify`` receives the
    notification of every annunciated transition (the engine passes its dispatcher's
    ``offer``; it must not block). ``on_events`` is told every batch of alarm events once
    stored (e.g. the runtime's event observers: the Unified Namespace). ``clock`` gives the
    wall time of operators' actions and of shelf expiry.
    """

    def __init__(
        self,
        historian: Historian | None,
        definitions: Iterable[AlarmDefinition] = (),
        *,
        notify: Callable[[Mapping[str, Any]], None] | None = None,
        on_events: Callable[[pa.Table], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_shelve: timedelta = timedelta(hours=24),
    ) -> None:
        self.historian = historian
        self.clock = clock
        self.max_shelve = max_shelve
        self._notify = notify
        self._on_events = on_events
        self._records: dict[str, _Record] = {d.alarm_id: _Record(d) for d in definitions}
        self._rows: list[dict[str, Any]] = []
        self._notes: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    # -- queries -----------------------------------------------------------------------

    def definitions(self) -> list[AlarmDefinition]:
        """Every alarm the manager knows."""
        return [r.d for r in self._records.values()]

    def status(self, alarm_id: str) -> AlarmStatus:
        """The state of one alarm; :class:`AlarmError` for an unknown id."""
        return self._get(alarm_id).status()

    def active(self, *, include_shelved: bool = False) -> list[AlarmStatus]:
        """Alarms not in ``normal`` (the active alarm list), most severe first, then oldest.

        Shelved alarms are left out unless ``include_shelved``.
        """
        out = [
            r.status()
            for r in self._records.values()
            if r.occurrence is not None and (include_shelved or r.shelved_until is None)
        ]
        out.sort(key=lambda s: (-s.severity, s.activated_at or _EPOCH, s.alarm_id))
        return out

    def shelved(self) -> list[AlarmStatus]:
        """Alarms on the shelf, the one expiring first first."""
        out = [r.status() for r in self._records.values() if r.shelved_until is not None]
        out.sort(key=lambda s: (s.shelved_until or _EPOCH, s.alarm_id))
        return out

    def _get(self, alarm_id: str) -> _Record:
        record = self._records.get(alarm_id)
        if record is None:
            raise AlarmError(f"unknown alarm {alarm_id!r}")
        return record

    # -- operators' actions ------------------------------------------------------------

    def _now_us(self, at: datetime | None) -> int:
        return _us(at if at is not None else self.clock())

    @staticmethod
    def _user(user: str) -> str:
        if not user or not user.strip():
            raise AlarmError("every alarm action needs the name of the user taking it")
        return user.strip()

    async def acknowledge(
        self, alarm_id: str, user: str, comment: str = "", *, at: datetime | None = None
    ) -> AlarmStatus:
        """Acknowledge an alarm in ``unack_active`` or ``rtn_unack``."""
        r = self._get(alarm_id)
        user = self._user(user)
        now = self._now_us(at)
        if r.occurrence is None or r.acked:
            raise AlarmError(f"alarm {alarm_id!r} is {r.state.value}: nothing to acknowledge")
        r.acked, r.acked_by, r.acked_us, r.ack_comment = True, user, now, comment or None
        self._transition(r, "acknowledged", now, user=user, comment=comment)
        if not r.active:
            self._close(r, now)
        else:
            self._occurrence_row(r)
        await self.flush()
        return r.status()

    async def shelve(
        self,
        alarm_id: str,
        until: datetime | timedelta,
        user: str,
        reason: str = "",
        *,
        at: datetime | None = None,
    ) -> AlarmStatus:
        """Shelve an alarm until ``until`` (a time, or a duration from now).

        A shelved alarm is not annunciated; shelving again moves the expiry.
        """
        r = self._get(alarm_id)
        user = self._user(user)
        now = self._now_us(at)
        end = now + _span_us(until) if isinstance(until, timedelta) else _us(until)
        if end <= now:
            raise AlarmError(f"shelve {alarm_id!r}: the expiry {_iso(end)} is not in the future")
        if end - now > _span_us(self.max_shelve):
            raise AlarmError(
                f"shelve {alarm_id!r}: at most {self.max_shelve} (asked until {_iso(end)})"
            )
        if r.shelf is None:
            r.shelf = f"{KIND_SHELF}:{alarm_id}:{now}"
            r.shelved_us = now
        r.shelved_until, r.shelved_by, r.shelve_reason = end, user, reason or None
        self._shelf_row(r, end)
        self._transition(r, "shelved", now, user=user, comment=reason, until=_iso(end))
        await self.flush()
        return r.status()

    async def unshelve(
        self, alarm_id: str, user: str, reason: str = "", *, at: datetime | None = None
    ) -> AlarmStatus:
        """Take an alarm off the shelf; if its condition is present it activates anew."""
        r = self._get(alarm_id)
        user = self._user(user)
        if r.shelved_until is None:
            raise AlarmError(f"alarm {alarm_id!r} is not shelved")
        self._unshelve(r, self._now_us(at), user, reason)
        await self.flush()
        return r.status()

    async def expire_shelves(self, now: datetime | None = None) -> list[str]:
        """Unshelve (as user ``system``) every alarm whose shelf expired; their ids."""
        now_us = self._now_us(now)
        expired = [
            r
            for r in self._records.values()
            if r.shelved_until is not None and r.shelved_until <= now_us
        ]
        for r in expired:
            assert r.shelved_until is not None
            self._unshelve(r, r.shelved_until, "system", "shelf expired")
        if expired:
            await self.flush()
        return [r.d.alarm_id for r in expired]

    def _unshelve(self, r: _Record, now: int, user: str, reason: str) -> None:
        self._shelf_row(r, now)
        r.shelf = r.shelved_us = r.shelved_until = r.shelved_by = r.shelve_reason = None
        self._transition(r, "unshelved", now, user=user, comment=reason)
        if r.active and r.occurrence is None:
            self._open(r, now)  # annunciated anew
            self._transition(r, "activated", now, comment="condition present when unshelved")

    # -- the condition (from the engine) ------------------------------------------------

    def condition(self, alarm_id: str, active: bool, at_us: int, value: Any, message: str) -> None:
        """The engine saw the condition of ``alarm_id`` activate or clear at ``at_us``.

        Changes are buffered; :meth:`flush` stores and notifies them.
        """
        r = self._get(alarm_id)
        if active == r.active:
            return
        r.active = active
        shelved = r.shelved_until is not None
        if active:
            r.value, r.message = value, message
            if r.occurrence is None:
                if shelved:
                    self._transition(r, "activated", at_us, comment="while shelved")
                    return
                self._open(r, at_us)
            else:  # rtn_unack → unack_active: the same occurrence
                r.activations += 1
                r.cleared_us = None
                self._occurrence_row(r)
            self._transition(r, "activated", at_us)
            return
        r.cleared_us = at_us
        if r.occurrence is None:  # it activated while shelved
            self._transition(r, "cleared", at_us, comment="while shelved")
            return
        if r.acked or not r.d.ack_required:
            self._transition(r, "cleared", at_us, state=AlarmState.NORMAL)
            self._close(r, at_us)
        else:
            self._occurrence_row(r)
            self._transition(r, "cleared", at_us)

    def _open(self, r: _Record, at: int) -> None:
        r.occurrence = f"{KIND_OCCURRENCE}:{r.d.alarm_id}:{at}"
        r.activated_us, r.activations, r.cleared_us = at, 1, None
        r.acked, r.acked_by, r.acked_us, r.ack_comment = False, None, None, None
        self._occurrence_row(r)

    def _close(self, r: _Record, at: int) -> None:
        self._occurrence_row(r, end=at)
        r.occurrence = r.activated_us = r.cleared_us = None
        r.acked, r.activations = True, 0

    # -- records and notifications -----------------------------------------------------

    def _base(self, r: _Record) -> dict[str, Any]:
        return {"asset": r.d.asset, "signal": r.d.signal, "severity": r.d.severity}

    def _occurrence_row(self, r: _Record, end: int | None = None) -> None:
        assert r.occurrence is not None
        assert r.activated_us is not None
        state = AlarmState.NORMAL if end is not None else r.state
        data = {
            "alarm_id": r.d.alarm_id,
            "rule": r.d.rule,
            "state": state.value,
            "active": r.active,
            "acked": r.acked,
            "activations": r.activations,
            "value": r.value,
            "acked_by": r.acked_by,
            "acked_at": _iso(r.acked_us),
            "ack_comment": r.ack_comment,
            "cleared_at": _iso(r.cleared_us),
            "ack_required": r.d.ack_required,
            "priority": r.d.priority,
            "description": r.d.description,
        }
        self._rows.append(
            {
                **self._base(r),
                "event_id": r.occurrence,
                "kind": KIND_OCCURRENCE,
                "ts": r.activated_us,
                "end_ts": end,
                "code": r.d.rule,
                "message": r.message,
                "data": _json(data),
            }
        )

    def _shelf_row(self, r: _Record, end: int) -> None:
        assert r.shelf is not None
        assert r.shelved_us is not None
        data = {
            "alarm_id": r.d.alarm_id,
            "user": r.shelved_by,
            "reason": r.shelve_reason,
            "until": _iso(r.shelved_until),
        }
        self._rows.append(
            {
                **self._base(r),
                "event_id": r.shelf,
                "kind": KIND_SHELF,
                "ts": r.shelved_us,
                "end_ts": end,
                "code": r.d.rule,
                "message": r.shelve_reason,
                "data": _json(data),
            }
        )

    def _transition(
        self,
        r: _Record,
        transition: str,
        at: int,
        *,
        user: str | None = None,
        comment: str | None = None,
        state: AlarmState | None = None,
        until: str | None = None,
    ) -> None:
        state = state or r.state
        note = self.notification(r, transition, at, state, user, comment or None, until)
        text = f"{transition} by {user}" if user else transition
        if comment:
            text += f": {comment}"
        self._rows.append(
            {
                **self._base(r),
                "event_id": f"{KIND_LOG}:{r.d.alarm_id}:{at}:{secrets.token_hex(4)}",
                "kind": KIND_LOG,
                "ts": at,
                "code": transition,
                "message": text,
                "data": _json(note),
            }
        )
        annunciated = transition in ("shelved", "unshelved") or r.shelved_until is None
        if annunciated:
            self._notes.append(note)

    def notification(
        self,
        r: _Record,
        transition: str,
        at: int,
        state: AlarmState,
        user: str | None,
        comment: str | None,
        until: str | None = None,
    ) -> dict[str, Any]:
        """The JSON object sinks receive (and the journal keeps) for one transition.

        Keys: ``alarm_id``, ``rule``, ``asset``, ``signal``, ``transition``, ``state``,
        ``active``, ``acked``, ``shelved``, ``shelved_until``, ``severity``, ``priority``,
        ``message``, ``value``, ``ts`` (ISO 8601 UTC), ``occurrence``, ``activations``,
        ``user``, ``comment``.
        """
        return {
            "alarm_id": r.d.alarm_id,
            "rule": r.d.rule,
            "asset": r.d.asset,
            "signal": r.d.signal,
            "transition": transition,
            "state": state.value,
            "active": r.active,
            "acked": r.acked if r.occurrence is not None else True,
            "shelved": r.shelved_until is not None,
            "shelved_until": until or _iso(r.shelved_until),
            "severity": r.d.severity,
            "priority": r.d.priority,
            "message": r.message or r.d.description or r.d.rule,
            "value": r.value,
            "ts": _iso(at),
            "occurrence": r.occurrence,
            "activations": r.activations,
            "user": user,
            "comment": comment,
        }

    async def flush(self) -> None:
        """Store the buffered records (one historian call) and hand out notifications."""
        async with self._lock:
            rows, self._rows = self._rows, []
            notes, self._notes = self._notes, []
            table = _event_table(rows) if rows else None
            if table is not None and self.historian is not None:
                try:
                    await self.historian.append_events(table)
                except Exception:
                    self._rows[:0] = rows  # kept for the next flush
                    self._notes[:0] = notes
                    raise
            if table is not None and self._on_events is not None:
                try:
                    await self._on_events(table)
                except Exception:
                    log.exception("alarm event observer failed")
            if self._notify is not None:
                for note in notes:
                    self._notify(note)

    # -- restore -----------------------------------------------------------------------

    async def restore(self) -> int:
        """Load open occurrences and current shelves from the historian; how many alarms.

        Alarms stored but no longer defined (a rule removed from the file) are restored as
        they were, so that they can be acknowledged and closed.
        """
        if self.historian is None:
            return 0
        now = self._now_us(None)
        start, end = _dt(now), _dt(now) + _FAR
        restored: set[str] = set()
        occ = await self.historian.read_events(start, end, kinds=[KIND_OCCURRENCE])
        for row in occ.to_pylist():
            if row["end_ts"] is not None:
                continue
            data = json.loads(row["data"] or "{}")
            r = self._record_for(row, data)
            r.occurrence = row["event_id"]
            r.activated_us = _us(row["ts"])
            r.active = bool(data.get("active"))
            r.acked = bool(data.get("acked"))
            r.activations = int(data.get("activations") or 1)
            r.value = data.get("value")
            r.message = row["message"] or ""
            r.acked_by = data.get("acked_by")
            r.acked_us = _from_iso(data.get("acked_at"))
            r.ack_comment = data.get("ack_comment")
            r.cleared_us = _from_iso(data.get("cleared_at"))
            restored.add(r.d.alarm_id)
        shelves = await self.historian.read_events(start, end, kinds=[KIND_SHELF])
        for row in shelves.to_pylist():
            if row["end_ts"] is None or _us(row["end_ts"]) <= now:
                continue
            data = json.loads(row["data"] or "{}")
            r = self._record_for(row, data)
            r.shelf = row["event_id"]
            r.shelved_us = _us(row["ts"])
            r.shelved_until = _us(row["end_ts"])
            r.shelved_by = data.get("user")
            r.shelve_reason = data.get("reason")
            restored.add(r.d.alarm_id)
        return len(restored)

    def _record_for(self, row: Mapping[str, Any], data: Mapping[str, Any]) -> _Record:
        alarm_id = str(data.get("alarm_id") or row["event_id"].split(":", 1)[1].rsplit(":", 1)[0])
        r = self._records.get(alarm_id)
        if r is None:
            d = AlarmDefinition(
                alarm_id=alarm_id,
                rule=str(row["code"] or alarm_id.rsplit("/", 1)[-1]),
                asset=str(row["asset"]),
                signal=row["signal"],
                severity=int(row["severity"] or SEVERITIES["medium"]),
                ack_required=bool(data.get("ack_required", True)),
                description=str(data.get("description") or ""),
            )
            r = self._records[alarm_id] = _Record(d)
        return r


async def alarm_log(
    historian: Historian,
    start: datetime,
    end: datetime,
    *,
    asset_prefix: str | None = None,
    limit: int | None = None,
) -> pa.Table:
    """The alarm journal (every transition, with time, user and comment) in ``[start, end)``."""
    return await historian.read_events(
        start, end, asset_prefix=asset_prefix, kinds=[KIND_LOG], limit=limit
    )


# ---------------------------------------------------------------------------------------
# the engine


_STATE_NAMES = np.array([*STANDARD_STATES, None], dtype=object)  # index -1 → None
_OFFLINE = STANDARD_STATES.index("offline")


def _value_kind(sig: ResolvedSignal, state_map: Mapping[str, str] | None) -> str:
    if state_map:
        return "state"
    if sig.data_type in ("float", "int"):
        return "number"
    return "bool" if sig.data_type == "bool" else "string"


@dataclass(slots=True)
class _Watch:
    """What the engine keeps of one signal between batches."""

    sid: int
    kind: str
    state_index: dict[str, int] = field(default_factory=dict)
    last_ts: int = -(2**63)
    last_value: Any = None
    last_known: bool = False
    window_us: int = 0
    hist_ts: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    hist_v: F64 = field(default_factory=lambda: np.zeros(0, np.float64))


@dataclass(slots=True)
class _Slice:
    """One signal's samples of a batch, in time order."""

    ts: I64
    values: npt.NDArray[Any]
    """float64 (numbers; NaN unknown), bool, or object (strings, state names; None unknown)."""
    known: BOOL
    num: F64
    state: I8


class _Eval:
    """One alarm's condition, fed with the slices of the signals it reads."""

    def __init__(self, inst: AlarmInstance, sids: Mapping[str, int]) -> None:
        rule = inst.rule
        self.inst = inst
        self.refs = dict(sids)
        self.sids = tuple(dict.fromkeys(sids.values()))
        self.cond = Condition(
            on_us=round(rule.activation_delay * 1e6), off_us=round(rule.off_delay * 1e6)
        )
        self.node = parse_expression(rule.expression) if rule.expression else None
        if rule.state is not None:
            self.wanted = np.array([STANDARD_STATES.index(s) for s in rule.state.in_], np.int8)

    def feed(self, slices: Mapping[int, _Slice], watches: Mapping[int, _Watch]) -> None:
        rule = self.inst.rule
        if self.node is not None:
            self._expression(slices, watches)
            return
        sid = self.sids[0]
        s = slices[sid]
        if rule.threshold is not None:
            th = rule.threshold
            above = th.above is not None
            limit = th.above if th.above is not None else th.below
            assert limit is not None
            code = hysteresis(s.num, limit, th.deadband, above=above)
            self.cond.feed(s.ts, code, lambda i: float(s.num[i]))
        elif rule.rate is not None:
            rt = rule.rate
            w = watches[sid]
            r = rates(w.hist_ts, w.hist_v, s.ts, s.num, round(rt.window * 1e6), rt.per_s)
            limit = rt.above if rt.above is not None else rt.below
            assert limit is not None
            code = hysteresis(r, limit, rt.deadband, above=rt.above is not None)
            self.cond.feed(s.ts, code, lambda i: float(r[i]))
        else:
            code = np.where(s.state < 0, -1, np.isin(s.state, self.wanted)).astype(np.int8)
            self.cond.feed(s.ts, code, lambda i: _STATE_NAMES[s.state[i]])

    def _expression(self, slices: Mapping[int, _Slice], watches: Mapping[int, _Watch]) -> None:
        assert self.node is not None
        present = [slices[sid].ts for sid in self.sids if sid in slices]
        t = np.unique(np.concatenate(present))
        n = t.size
        env: dict[str, npt.NDArray[Any]] = {}
        known = np.ones(n, dtype=bool)
        for ref, sid in self.refs.items():
            w = watches[sid]
            s = slices.get(sid)
            dtype = _dtype(w.kind)
            last = w.last_value if w.last_known else _UNKNOWN[w.kind]
            if s is None:
                values = np.full(n, last, dtype=dtype)
                k = np.full(n, w.last_known)
            else:
                j = np.searchsorted(s.ts, t, side="right") - 1
                inside = j >= 0
                jj = np.where(inside, j, 0)
                values = np.where(inside, s.values[jj], np.array(last, dtype=dtype))
                values = values.astype(dtype, copy=False)
                k = np.where(inside, s.known[jj], w.last_known)
            if w.kind == "number":
                values = np.where(k, values, np.nan)
            env[ref] = values
            known &= k
        result = evaluate(self.node, env, n).astype(bool)
        code = np.where(known, result.astype(np.int8), np.int8(-1)).astype(np.int8)

        def value(i: int) -> dict[str, Any]:
            return {ref: _plain(env[ref][i]) for ref in self.refs}

        self.cond.feed(t, code, value)


_UNKNOWN: Mapping[str, Any] = {"number": np.nan, "bool": False, "string": None, "state": None}


def _dtype(kind: str) -> Any:
    return {"number": np.float64, "bool": np.bool_}.get(kind, object)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


class AlarmEngine:
    """Evaluates a factory file's alarm rules on the stream (see the module docstring).

    Use as an async context manager around the runtime, and pass it as an observer::

        async with AlarmEngine(factory, historian) as alarms, \\
                Runtime(factory, historian, observers=[alarms]):
            ...

    ``sinks`` default to the file's ``alarms.notify``. ``tick_interval`` is how often delays
    are checked without new data; ``settle`` how long late data may take; ``on_events`` is
    told every batch of alarm events once stored (see :class:`AlarmManager`).
    """

    def __init__(
        self,
        factory: Factory,
        historian: Historian | None,
        *,
        sinks: Sequence[AlarmSink] | None = None,
        tick_interval: float = 1.0,
        settle: float = 1.0,
        max_queue: int = 1000,
        drain_timeout: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_shelve: timedelta = timedelta(hours=24),
        on_events: Callable[[pa.Table], Awaitable[None]] | None = None,
    ) -> None:
        self.factory = factory
        self.historian = historian
        self.instances = alarm_instances(factory)
        """Every alarm of the file: each rule applied to each asset of its scope."""
        if sinks is None:
            sinks = sinks_from_specs(factory.document.alarms.notify)
        self.dispatcher = Dispatcher(sinks, max_queue=max_queue)
        self.manager = AlarmManager(
            historian,
            [AlarmDefinition.of(i) for i in self.instances],
            notify=self.dispatcher.offer,
            on_events=on_events,
            clock=clock,
            max_shelve=max_shelve,
        )
        self.tick_interval = tick_interval
        self.settle_us = round(settle * 1e6)
        self._drain_timeout = drain_timeout
        self._evals: list[_Eval] = []
        self._by_sid: dict[int, list[_Eval]] = {}
        self._watches: dict[int, _Watch] = {}
        self._sid_array = np.zeros(0, np.int64)
        self._pending: set[_Eval] = set()
        self._stream_us: int | None = None
        self._stream_mono = 0.0
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        """Batches evaluated."""

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._tasks = [
            self._group.create_task(self.dispatcher.run(), name="alarm-dispatcher"),
            self._group.create_task(self._ticker(), name="alarm-ticker"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        try:
            await self.manager.flush()
            if not await self.dispatcher.drain(self._drain_timeout):
                log.warning("alarm notifications still queued at shutdown were dropped")
        finally:
            for task in self._tasks:
                task.cancel()
            await self._group.__aexit__(exc_type, exc, tb)
            await self.dispatcher.aclose()

    async def open(self) -> None:
        """Resolve signal ids and restore alarm states (done by ``async with``)."""
        paths: dict[str, ResolvedSignal] = {}
        for inst in self.instances:
            for sig in inst.signals.values():
                paths[sig.path] = sig
        ids: dict[str, int] = {}
        if self.historian is not None and paths:
            infos = [
                SignalInfo(s.path, s.data_type, s.unit, s.kind)  # type: ignore[arg-type]
                for s in paths.values()
            ]
            ids = await self.historian.register_signals(infos)
        else:
            ids = {p: i for i, p in enumerate(paths)}
        self.signal_ids = ids
        """Signal path → historian id of every signal an alarm reads."""
        if self.historian is not None:
            await self.manager.restore()
        for inst in self.instances:
            refs: dict[str, int] = {}
            for ref, sig in inst.signals.items():
                sid = ids[sig.path]
                refs[ref] = sid
                smap = inst.state_maps.get(ref)
                watch = self._watches.get(sid)
                if watch is None:
                    watch = self._watches[sid] = _Watch(sid, _value_kind(sig, smap))
                    if smap:
                        watch.state_index = {
                            raw: STANDARD_STATES.index(state) for raw, state in smap.items()
                        }
                if inst.rule.rate is not None:
                    watch.window_us = max(watch.window_us, round(inst.rule.rate.window * 1e6))
            ev = _Eval(inst, refs)
            ev.cond.active = self.manager.status(inst.alarm_id).active
            self._evals.append(ev)
            for sid in ev.sids:
                self._by_sid.setdefault(sid, []).append(ev)
        self._sid_array = np.array(sorted(self._by_sid), dtype=np.int64)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                await self.tick()
            except Exception:
                log.exception("alarm tick failed")

    # -- clock ---------------------------------------------------------------------------

    def stream_now_us(self) -> int:
        """The engine's clock (µs): the newest data time plus the real time since it came."""
        if self._stream_us is None:
            return _us(self.manager.clock())
        return self._stream_us + round((time.monotonic() - self._stream_mono) * 1e6)

    async def tick(self, now: datetime | None = None) -> None:
        """Run out the delays due by ``now`` (default: the engine's clock less ``settle``)
        and expire shelves (by the manager's wall clock)."""
        now_us = _us(now) if now is not None else self.stream_now_us() - self.settle_us
        self._advance(now_us)
        await self.manager.expire_shelves()
        await self.manager.flush()

    def _advance(self, now_us: int) -> None:
        for ev in list(self._pending):
            ev.cond.advance(now_us)
            self._collect(ev)

    def _collect(self, ev: _Eval) -> None:
        cond = ev.cond
        for active, at, value in cond.out:
            message = ev.inst.message(value) if active else ""
            self.manager.condition(ev.inst.alarm_id, active, at, value, message)
        cond.out.clear()
        if cond.pending:
            self._pending.add(ev)
        else:
            self._pending.discard(ev)

    # -- batches -------------------------------------------------------------------------

    async def __call__(self, batch: ReadingBatch) -> None:
        """Evaluate one committed batch (the pipeline observer)."""
        table = batch.table
        if table.num_rows == 0:
            return
        newest = pc.max(table.column("ts").cast(pa.int64())).as_py()
        if newest is not None and (self._stream_us is None or newest > self._stream_us):
            self._stream_us = int(newest)
            self._stream_mono = time.monotonic()
        sid = table.column("signal_id").to_numpy()
        mask = np.isin(sid, self._sid_array)
        if mask.any():
            slices = self._slices(table, sid, mask)
            touched: dict[_Eval, None] = {}
            for s in slices:
                for ev in self._by_sid.get(s, ()):
                    touched[ev] = None
            for ev in touched:
                ev.feed(slices, self._watches)
                self._collect(ev)
            self._remember(slices)
        self.batches += 1
        assert self._stream_us is not None
        self._advance(self._stream_us - self.settle_us)
        await self.manager.flush()

    def _slices(self, table: pa.Table, sid: npt.NDArray[Any], mask: BOOL) -> dict[int, _Slice]:
        idx = np.flatnonzero(mask)
        sub = table.take(pa.array(idx))
        s_sid = sid[idx].astype(np.int64)
        ts = sub.column("ts").cast(pa.int64()).to_numpy().astype(np.int64)
        order = np.lexsort((ts, s_sid))
        s_sid, ts = s_sid[order], ts[order]
        sub = sub.take(pa.array(order))
        q = sub.column("quality").to_numpy().astype(np.int64)
        good = (q & 0xC0) != 0
        vf = sub.column("v_float")
        vi = sub.column("v_int")
        vb = sub.column("v_bool")
        vs = sub.column("v_str")
        num_arrow = pc.coalesce(vf, vi.cast(pa.float64()), vb.cast(pa.float64()))
        num = num_arrow.fill_null(np.nan).to_numpy().astype(np.float64)
        cuts = np.flatnonzero(np.diff(s_sid)) + 1
        starts = np.concatenate([[0], cuts]).tolist()
        ends = [*cuts.tolist(), int(s_sid.size)]
        out: dict[int, _Slice] = {}
        for a, b in zip(starts, ends, strict=True):
            w = self._watches[int(s_sid[a])]
            # late samples (not newer than the newest seen) are ignored: a prefix, as sorted
            a += int(np.searchsorted(ts[a:b], w.last_ts, side="right"))
            if a == b:
                continue
            g = good[a:b]
            n_k = num[a:b]
            state = np.full(b - a, -1, np.int8)
            if w.kind == "number":
                known = g & ~np.isnan(n_k)
                values: npt.NDArray[Any] = np.where(known, n_k, np.nan)
            elif w.kind == "bool":
                known = g & ~np.isnan(n_k)
                values = n_k > 0.5
            elif w.kind == "string":
                text = vs.slice(a, b - a).to_numpy(zero_copy_only=False)
                known = g & np.array([v is not None for v in text], dtype=bool)
                values = np.array(text, dtype=object)
                values[~known] = None
            else:
                cols = (vf.slice(a, b - a), vi.slice(a, b - a), vb.slice(a, b - a))
                state = self._states(w, *cols, vs.slice(a, b - a))
                state = np.where(g, state, np.int8(-1)).astype(np.int8)
                known = state >= 0
                values = np.take(_STATE_NAMES, state)
            num_out = np.where(known, n_k, np.nan) if w.kind == "number" else n_k
            out[w.sid] = _Slice(ts[a:b], values, known, num_out, state)
        return out

    @staticmethod
    def _states(
        w: _Watch,
        vf: pa.ChunkedArray,
        vi: pa.ChunkedArray,
        vb: pa.ChunkedArray,
        vs: pa.ChunkedArray,
    ) -> I8:
        """Standard-state index per row (unmapped codes → offline, no value → -1)."""
        if vi.null_count == 0:  # integer codes, the usual case: no text on the way
            codes = vi.to_numpy().astype(np.int64)
            uniq_i, inverse = np.unique(codes, return_inverse=True)
            mapped = np.array([w.state_index.get(str(u), _OFFLINE) for u in uniq_i], np.int8)
            return mapped[inverse.reshape(-1)]
        raw = pc.coalesce(
            vi.cast(pa.string()),
            vs,
            vb.cast(pa.int8()).cast(pa.string()),
            vf.cast(pa.string()),
        )
        text = np.asarray(raw.fill_null("").to_numpy(zero_copy_only=False), dtype=object)
        uniq, inverse = np.unique(text, return_inverse=True)
        mapped = np.array(
            [-1 if u == "" else w.state_index.get(str(u), _OFFLINE) for u in uniq], np.int8
        )
        return mapped[inverse.reshape(-1)]

    def _remember(self, slices: Mapping[int, _Slice]) -> None:
        for sid, s in slices.items():
            w = self._watches[sid]
            w.last_ts = int(s.ts[-1])
            w.last_known = bool(s.known[-1])
            w.last_value = _plain(s.values[-1]) if w.last_known else None
            if w.window_us:
                ok = ~np.isnan(s.num)
                ts = np.concatenate([w.hist_ts, s.ts[ok]])
                v = np.concatenate([w.hist_v, s.num[ok]])
                if ts.size:
                    cut = int(np.searchsorted(ts, ts[-1] - w.window_us, side="right")) - 1
                    ts, v = ts[max(cut, 0) :], v[max(cut, 0) :]
                w.hist_ts, w.hist_v = ts, v

    # -- convenience ---------------------------------------------------------------------

    @property
    def sink_stats(self) -> dict[str, SinkStats]:
        """Per notification sink: sent, failed, dropped."""
        return self.dispatcher.stats

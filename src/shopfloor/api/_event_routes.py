"""Events (downtime, alarms, anomalies, device errors), downtime reasons, dead letters."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request

from shopfloor.analytics import assign_reason, downtime_pareto, record_downtime
from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._deps import (
    ApiContext,
    Ctx,
    Cursor,
    Limit,
    Range,
    check_path,
    decode_cursor,
    encode_cursor,
    next_link,
    page_limit,
    parse_time,
    require,
)
from shopfloor.api._problems import ProblemError, problem_responses
from shopfloor.api._schemas import (
    AckIn,
    AlarmOut,
    DeadLetterOut,
    DowntimeRecordOut,
    EventOut,
    Page,
    ParetoRow,
    ReasonIn,
)
from shopfloor.errors import AlarmError, HistorianError

if TYPE_CHECKING:
    from shopfloor.analytics.alarms import AlarmEngine, AlarmStatus

__all__ = ["event_rows", "router"]

router = APIRouter(tags=["events"], responses=problem_responses(401, 403, 404, 422))

Reader = Annotated[TokenInfo, Depends(require(Scope.read))]
Operator = Annotated[TokenInfo, Depends(require(Scope.operate))]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _us(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _data(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _event(row: dict[str, Any]) -> EventOut:
    return EventOut(**{**row, "data": _data(row["data"])})


def _prefix(token: TokenInfo, asset: str | None) -> str | None:
    """The asset prefix to query: the asked one (checked), or the token's only subtree."""
    if asset is not None:
        asset = asset.strip("/")
        check_path(token, asset)
        return asset
    return token.subtrees[0] if len(token.subtrees) == 1 else None


async def _fill(
    fetch_rows: Callable[[int], Awaitable[pa.Table]],
    keep: Callable[[dict[str, Any]], bool],
    n: int,
) -> tuple[list[dict[str, Any]], bool]:
    """Rows that ``keep`` accepts, at least ``n + 1`` of them unless the source runs out.

    ``fetch_rows(k)`` returns the first ``k`` rows of the source; ``k`` grows until enough
    rows pass the filter. Returns the kept rows and whether the source was read to its end.
    """
    fetch = n + 1
    while True:
        table = await fetch_rows(fetch)
        complete = table.num_rows < fetch
        rows = [r for r in table.to_pylist() if keep(r)]
        if len(rows) > n or complete:
            return rows, complete
        fetch *= 4


async def event_rows(
    ctx: ApiContext,
    token: TokenInfo,
    start: datetime,
    end: datetime,
    asset: str | None,
    kinds: list[str] | None,
    n: int,
    after: tuple[int, str] | None,
) -> list[dict[str, Any]]:
    """Up to ``n + 1`` events overlapping ``[start, end)`` within the token's subtrees,
    ordered by ``(ts, event_id)`` and after the key ``after``."""
    prefix = _prefix(token, asset)
    since = start if after is None else max(start, _EPOCH + timedelta(microseconds=after[0]))

    def keep(r: dict[str, Any]) -> bool:
        return token.allows(r["asset"]) and (after is None or (_us(r["ts"]), r["event_id"]) > after)

    async def fetch(k: int) -> pa.Table:
        return await ctx.historian.read_events(
            since, end, asset_prefix=prefix, kinds=kinds, limit=k
        )

    rows, _ = await _fill(fetch, keep, n)
    return rows[: n + 1]


@router.get("/events", response_model=Page[EventOut], summary="Events")
async def list_events(
    request: Request,
    ctx: Ctx,
    token: Reader,
    rng: Range,
    asset: Annotated[str | None, Query(description="Only events of this asset subtree.")] = None,
    kind: Annotated[
        list[str] | None,
        Query(description="Only these kinds (repeat): downtime, alarm, anomaly, error, …"),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[EventOut]:
    """Events overlapping ``[start, end)`` within the token's subtrees, oldest first.

    Whatever kinds the historian holds are listed: downtime (with ``data.reason``),
    alarms and anomalies (from the analytics), errors devices report.
    """
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    pos = decode_cursor(cursor, ("ts", "id"))
    after = None if pos is None else (int(pos["ts"]), str(pos["id"]))
    rows = await event_rows(ctx, token, rng.start, rng.end, asset, kind, n, after)
    nxt = None
    if len(rows) > n:
        last = rows[n - 1]
        nxt = encode_cursor({"ts": _us(last["ts"]), "id": last["event_id"]})
    return Page[EventOut](
        items=[_event(r) for r in rows[:n]], next_cursor=nxt, next=next_link(request, nxt)
    )


def _downtime_asset(event_id: str) -> str:
    kind, _, rest = event_id.partition(":")
    asset, _, start = rest.rpartition(":")
    if kind != "downtime" or not asset or not start.isdigit():
        raise ProblemError(
            "not-supported",
            f"{event_id!r} is not a downtime event id (downtime:<asset>:<start µs>); reasons "
            "are assigned to downtime events",
        )
    return asset


@router.put(
    "/events/{event_id:path}/reason",
    response_model=EventOut,
    summary="Assign a downtime reason",
    responses=problem_responses(502, 503),
)
async def set_reason(
    event_id: str, body: ReasonIn, request: Request, ctx: Ctx, token: Operator
) -> EventOut:
    """Give a downtime event a reason code (kept when the downtime is recorded again)."""
    asset = _downtime_asset(event_id)
    check_path(token, asset, "event")
    request.state.audit_detail = {
        "action": "downtime reason",
        "event_id": event_id,
        "reason": body.reason,
    }
    try:
        row = await assign_reason(ctx.historian, event_id, body.reason, token.label())
    except HistorianError as exc:
        if str(exc).startswith("no downtime event"):
            raise ProblemError("not-found", str(exc)) from None
        raise
    return _event(row)


@router.get("/downtime/pareto", response_model=Page[ParetoRow], summary="Downtime Pareto")
async def pareto(
    request: Request,
    ctx: Ctx,
    token: Reader,
    rng: Range,
    asset: Annotated[str, Query(description="Asset subtree (line, area, site …).", min_length=1)],
    by: Annotated[Literal["reason", "state"], Query(description="Group by.")] = "reason",
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[ParetoRow]:
    """Recorded downtime of an asset subtree per reason (or state), largest first."""
    asset = asset.strip("/")
    check_path(token, asset)
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    table = await downtime_pareto(ctx.historian, rng.start, rng.end, asset_prefix=asset, by=by)
    pos = decode_cursor(cursor, ("offset",))
    offset = int(pos["offset"]) if pos else 0
    rows = table.slice(offset, n).to_pylist()
    nxt = encode_cursor({"offset": offset + n}) if offset + n < table.num_rows else None
    return Page[ParetoRow](
        items=[ParetoRow(**r) for r in rows], next_cursor=nxt, next=next_link(request, nxt)
    )


@router.post("/downtime/record", response_model=DowntimeRecordOut, summary="Record downtime events")
async def record(
    request: Request,
    ctx: Ctx,
    token: Operator,
    rng: Range,
    asset: Annotated[str, Query(description="Equipment or any asset above it.", min_length=1)],
) -> DowntimeRecordOut:
    """Compute downtime events from the machine states of every equipment in the subtree
    and store them (recording again replaces events and keeps assigned reasons)."""
    asset = asset.strip("/")
    check_path(token, asset)
    try:
        ctx.factory.asset(asset)
    except KeyError:
        raise ProblemError("not-found", f"no asset {asset!r}") from None
    request.state.audit_detail = {
        "action": "record downtime",
        "asset": asset,
        "start": rng.start.isoformat(),
        "end": rng.end.isoformat(),
    }
    stored: dict[str, int] = {}
    end = min(rng.end, ctx.now())
    for eq in ctx.factory.equipment():
        if not (eq.path == asset or eq.path.startswith(asset + "/")):
            continue
        try:
            ctx.factory.signal(f"{eq.path}/state")
        except KeyError:
            continue
        events = await record_downtime(ctx.historian, ctx.factory, eq.path, rng.start, end)
        stored[eq.path] = events.num_rows
    request.state.audit_detail["events"] = sum(stored.values())
    return DowntimeRecordOut(equipment=stored)


# ------------------------------------------------------------------ dead letters


def _visible_letter(ctx: ApiContext, token: TokenInfo, source: str) -> bool:
    """A dead letter is visible when every asset its connection serves is in the subtrees
    (all of them for a token of the whole tree; unknown sources need the whole tree)."""
    if token.allows(ctx.root):
        return True
    assets = ctx.connection_assets.get(source, ())
    return bool(assets) and all(token.allows(a) for a in assets)


def _letter_key(r: dict[str, Any]) -> tuple[int, str, str, str, str]:
    payload = r["payload"] or b""
    return (
        -_us(r["received_at"]),
        r["source"],
        r["location"] or "",
        r["reason"],
        hashlib.sha256(payload).hexdigest()[:16],
    )


@router.get("/dead-letters", response_model=Page[DeadLetterOut], summary="Dead letters")
async def dead_letters(
    request: Request,
    ctx: Ctx,
    token: Reader,
    since: Annotated[
        str | None, Query(description="Only those received at or after (ISO 8601 or -1h).")
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[DeadLetterOut]:
    """What arrived but could not be mapped or parsed, newest first.

    Visible when every asset the dead letter's connection serves lies in the token's
    subtrees; dead letters of unknown sources need a token for the whole tree.
    """
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    try:
        # Dead letters are stamped when they arrive, on the wall clock (not the factory's).
        after_ts = None if since is None else parse_time(since, datetime.now(UTC))
    except ValueError as exc:
        raise ProblemError("invalid-request", f"query parameter 'since': {exc}") from None
    pos = decode_cursor(cursor, ("key", "skip"))
    cursor_key = None if pos is None else tuple(pos["key"])
    skip = 0 if pos is None else int(pos["skip"])

    # Newest first with ties in received_at ordered by content, so that pages never split
    # or repeat a batch of dead letters received at the same instant.
    fetch = n + 1 + skip
    while True:
        table = await ctx.historian.read_dead_letters(after_ts, limit=fetch)
        rows = table.to_pylist()
        complete = len(rows) < fetch
        if not complete:
            oldest = rows[-1]["received_at"]
            rows = [r for r in rows if r["received_at"] > oldest]
        rows.sort(key=_letter_key)
        keyed = [(_letter_key(r), r) for r in rows if _visible_letter(ctx, token, r["source"])]
        if cursor_key is not None:
            keyed = [(k, r) for k, r in keyed if k >= cursor_key]
            seen = set([i for i, (k, _) in enumerate(keyed) if k == cursor_key][:skip])
            keyed = [kr for i, kr in enumerate(keyed) if i not in seen]
        if len(keyed) > n or complete:
            break
        fetch *= 4
    page = keyed[:n]
    nxt = None
    if len(keyed) > n:
        last_key = page[-1][0]
        done = sum(1 for k, _ in page if k == last_key)
        if cursor_key == last_key:
            done += skip
        nxt = encode_cursor({"key": list(last_key), "skip": done})
    items = []
    for _, r in page:
        payload: bytes | None = r["payload"]
        text = b64 = None
        if payload is not None:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                b64 = base64.b64encode(payload).decode()
        items.append(
            DeadLetterOut(
                received_at=r["received_at"],
                source=r["source"],
                location=r["location"],
                reason=r["reason"],
                payload_text=text,
                payload_base64=b64,
            )
        )
    return Page[DeadLetterOut](items=items, next_cursor=nxt, next=next_link(request, nxt))


# ------------------------------------------------------------------ alarms


def _alarm_engine(ctx: ApiContext) -> AlarmEngine:
    engine = ctx.runtime.alarms if ctx.runtime is not None else None
    if engine is None:
        raise ProblemError(
            "runtime-unavailable",
            "alarms live in the alarm engine of 'shopfloor up' (--api-port) with alarm rules "
            "in the factory file; this server has none",
        )
    return engine


def _alarm(status: AlarmStatus) -> AlarmOut:
    d = status.definition
    value = status.value
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    elif not isinstance(value, str | int | float | bool | type(None)):
        value = str(value)
    return AlarmOut(
        alarm_id=d.alarm_id,
        rule=d.rule,
        asset=d.asset,
        signal=d.signal,
        severity=d.severity,
        priority=d.priority,  # type: ignore[arg-type]
        state=status.state.value,
        active=status.active,
        acked=status.acked,
        occurrence=status.occurrence,
        activated_at=status.activated_at,
        activations=status.activations,
        message=status.message,
        value=value,
        acked_by=status.acked_by,
        acked_at=status.acked_at,
        ack_comment=status.ack_comment,
        shelved_until=status.shelved_until,
    )


@router.get(
    "/alarms",
    response_model=Page[AlarmOut],
    summary="Active alarms",
    responses=problem_responses(503),
)
async def active_alarms(
    request: Request,
    ctx: Ctx,
    token: Reader,
    shelved: Annotated[bool, Query(description="Include shelved alarms.")] = False,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[AlarmOut]:
    """Alarms not in ``normal`` within the token's subtrees, most severe first, then oldest
    (needs the live alarm engine: 503 on a read-only server)."""
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    engine = _alarm_engine(ctx)
    items = [
        _alarm(s)
        for s in engine.manager.active(include_shelved=shelved)
        if token.allows(s.definition.asset)
    ]
    pos = decode_cursor(cursor, ("offset",))
    offset = int(pos["offset"]) if pos else 0
    nxt = encode_cursor({"offset": offset + n}) if offset + n < len(items) else None
    return Page[AlarmOut](
        items=items[offset : offset + n], next_cursor=nxt, next=next_link(request, nxt)
    )


@router.post(
    "/events/{event_id:path}/ack",
    response_model=AlarmOut,
    summary="Acknowledge an alarm",
    responses=problem_responses(409, 503),
)
async def acknowledge(
    event_id: str,
    request: Request,
    ctx: Ctx,
    token: Operator,
    body: AckIn | None = None,
) -> AlarmOut:
    """Acknowledge the alarm occurrence ``alarm:<alarm id>:<start µs>`` (an event id from
    ``/events`` or ``occurrence`` from ``/alarms``). 409 when it is acknowledged already or
    over."""
    kind, _, rest = event_id.partition(":")
    alarm_id, _, start = rest.rpartition(":")
    if kind != "alarm" or not alarm_id or not start.isdigit():
        raise ProblemError(
            "not-supported",
            f"{event_id!r} is not an alarm occurrence (alarm:<alarm id>:<start µs>); only "
            "alarms are acknowledged",
        )
    check_path(token, alarm_id, "alarm")
    comment = body.comment if body is not None else ""
    request.state.audit_detail = {"action": "acknowledge", "event_id": event_id}
    if comment:
        request.state.audit_detail["comment"] = comment
    manager = _alarm_engine(ctx).manager
    try:
        status = manager.status(alarm_id)
    except AlarmError:
        raise ProblemError("not-found", f"no alarm {alarm_id!r}") from None
    if status.occurrence != event_id:
        now = status.occurrence or "none: the alarm is normal"
        raise ProblemError(
            "conflict", f"occurrence {event_id!r} is over (the current one is {now})"
        )
    try:
        status = await manager.acknowledge(alarm_id, token.label(), comment)
    except AlarmError as exc:
        raise ProblemError("conflict", str(exc)) from None
    return _alarm(status)

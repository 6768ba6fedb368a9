"""The live stream: ``GET /api/v1/live`` (WebSocket), fed from the pipeline by a :class:`LiveHub`.

A client connects with its API token (``Authorization: Bearer …`` or ``?token=…``, which
browsers need), subscribes to signal path patterns and receives every value the historian
commits for the matching signals, batched in columnar JSON frames at most every
``max_batch_ms`` (100 ms), and, on request, the events (states, alarms, anomalies) of the
matching assets. The message contract is in the README ("Live stream").

Feeding
-------
The app holds one :class:`LiveHub` (``app.state.live``). It is a pipeline observer
(:meth:`LiveHub.publish_readings`, told each committed
:class:`~shopfloor.edge.batch.ReadingBatch`) and a runtime event observer
(:meth:`LiveHub.publish_events`); :meth:`LiveHub.attach` hooks both into a
:class:`~shopfloor.runtime.Runtime` (``create_app(runtime=…)`` and ``shopfloor up --api-port``
do so).

Matching is columnar. Patterns compile to one anchored regular expression each, evaluated
over the whole signal catalog with an Arrow kernel when the client subscribes; each client
keeps a boolean mask over the catalog's rows (its patterns, intersected with its token's
asset subtrees). Per committed batch the hub looks the batch's signal ids up in the catalog
once (``searchsorted``) and takes each client's mask at those rows; the rows any client
wants become one shared segment, rendered to JSON fragments (Arrow string kernels, the
value text of the Unified Namespace republisher) once, when the first client sends it.
No Python object is made per sample.

Backpressure
------------
The observer never awaits a client: it appends to the client's queue and returns. Each
client has one sender task, which coalesces what is queued into a frame, waits until
``max_batch_ms`` passed since its previous frame and sends. A client that still has more
than ``max_queue_values`` values waiting when the next commit arrives is dropped (so a
queue holds at most that plus one commit, and one large commit alone drops nobody): it is
sent (best effort) a ``dropped`` message and closed with code 1013; the pipeline goes on.
Tokens are checked again every ``token_recheck_s`` seconds and at their expiry: a revoked
or expired token closes the stream with code 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from shopfloor import __version__
from shopfloor.api._auth import AuthStore, Scope, TokenInfo, covers
from shopfloor.api._catalog import subtree_mask
from shopfloor.edge.batch import ReadingBatch

if TYPE_CHECKING:
    from shopfloor.historian.base import Historian
    from shopfloor.runtime import Runtime

__all__ = [
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_UNAUTHORIZED",
    "LIVE_PATH",
    "MAX_BATCH_MS",
    "MAX_FRAME_VALUES",
    "MAX_QUEUE_VALUES",
    "LiveHub",
    "LiveStats",
    "PatternError",
    "compile_pattern",
    "router",
]

log = logging.getLogger(__name__)

LIVE_PATH: Final = "/live"
"""The route of the stream below the API prefix (``/api/v1/live``)."""

CLOSE_UNAUTHORIZED: Final = 4401
"""Close code for a missing, invalid, revoked or expired token."""

CLOSE_SLOW_CONSUMER: Final = 1013
"""Close code ("try again later") for a client that does not keep up."""

MAX_BATCH_MS: Final = 100
"""Default: at most one values frame per client in this many milliseconds."""
MAX_QUEUE_VALUES: Final = 300_000
"""Default: a client with more values waiting is dropped (2 s of the reference load)."""
MAX_FRAME_VALUES: Final = 50_000
"""Default: the most values in one frame (about 3–5 MB of JSON)."""

_MAX_PATTERNS: Final = 1000
_MAX_PATTERN_LEN: Final = 1024
_MAX_CONTROL: Final = 256
"""Replies (pong, errors) waiting for a client that does not read: beyond, it is dropped."""
_REFRESH_EVERY_S: Final = 5.0
_GOODBYE_S: Final = 2.0
"""How long the ``dropped`` message and the close frame may wait for a slow client."""

_IntArray = npt.NDArray[np.int64]
_BoolArray = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- patterns


class PatternError(ValueError):
    """A subscription pattern that is not valid (the message says why)."""


@dataclass(frozen=True, slots=True)
class _Pattern:
    """A compiled pattern: its segments and the regexes over ``/``-prefixed paths."""

    text: str
    segments: tuple[str, ...]
    signal_regex: str
    """Matches ``/`` + signal path."""
    asset_regex: str | None
    """Matches ``/`` + asset path for the events of the pattern's asset part (None: none)."""


def _regex(segments: Sequence[str]) -> str:
    pieces = []
    for seg in segments:
        if seg == "**":
            pieces.append("(?:/[^/]+)*")
        elif seg == "+":
            pieces.append("/[^/]+")
        else:
            pieces.append("/" + re.escape(seg))
    return "^" + "".join(pieces) + "$"


def compile_pattern(text: str) -> _Pattern:
    """Parse a subscription pattern (``+`` one segment, ``**`` zero or more; ``*`` and a
    final ``#`` are aliases); raise :class:`PatternError` naming what is wrong."""
    if not isinstance(text, str):
        raise PatternError(f"a pattern must be a string, not {type(text).__name__}")
    p = text.strip()
    if len(p) > _MAX_PATTERN_LEN:
        raise PatternError(f"pattern longer than {_MAX_PATTERN_LEN} characters")
    p = p.strip("/")
    if not p:
        raise PatternError(f"empty pattern {text!r} (use '**' for everything)")
    raw = p.split("/")
    segments: list[str] = []
    for i, seg in enumerate(raw):
        if seg == "":
            raise PatternError(f"pattern {text!r} has an empty segment ('//')")
        if seg == "*":
            seg = "+"
        elif seg == "#":
            if i != len(raw) - 1:
                raise PatternError(f"pattern {text!r}: '#' may only be the last segment")
            seg = "**"
        elif any(c in seg for c in "+*#") and seg not in ("+", "**"):
            raise PatternError(
                f"pattern {text!r}: wildcards must be whole segments ({seg!r}); use '+' for "
                "one segment, '**' for any number"
            )
        if seg == "**" and segments and segments[-1] == "**":
            continue
        segments.append(seg)
    if segments[-1] == "**":
        asset_part: list[str] | None = segments
    else:
        asset_part = segments[:-1] or None
    return _Pattern(
        text=text,
        segments=tuple(segments),
        signal_regex=_regex(segments),
        asset_regex=None if asset_part is None else _regex(asset_part),
    )


def _may_match_under(segments: Sequence[str], subtree: Sequence[str]) -> bool:
    """True when some path under (or at) ``subtree`` can match the pattern ``segments``."""
    for i, s in enumerate(subtree):
        if i >= len(segments):
            return False
        p = segments[i]
        if p == "**":
            return True
        if p != "+" and p != s:
            return False
    return True


def _allowed(pattern: _Pattern, subtrees: Iterable[str]) -> bool:
    return any(_may_match_under(pattern.segments, s.split("/")) for s in subtrees)


# --------------------------------------------------------------------------- catalog and rendering


def _quality_names() -> pa.Array:
    names = {0xC0: '"good"', 0x40: '"uncertain"', 0x80: '"uncertain"', 0x00: '"bad"'}
    return pa.array([names[q & 0xC0] for q in range(256)], pa.string())


_QUALITY: Final = _quality_names()
_NEEDS_ESCAPE: Final = r'["\\\x00-\x1f\x7f]'


def _json_strings(values: pa.Array) -> pa.Array:
    """JSON string literals of ``values`` (null → ``null``); ``json.dumps`` only where needed."""
    quoted = pc.binary_join_element_wise('"', values, '"', "")
    special = pc.fill_null(pc.match_substring_regex(values, _NEEDS_ESCAPE), False)
    if pc.any(special).as_py():
        idx = np.flatnonzero(np.asarray(special.to_numpy(zero_copy_only=False), dtype=bool))
        texts = values.take(pa.array(idx)).to_pylist()
        mask = np.zeros(len(values), dtype=bool)
        mask[idx] = True
        replacement = np.empty(len(values), dtype=object)
        replacement[idx] = [json.dumps(t, ensure_ascii=False) for t in texts]
        quoted = pc.if_else(pa.array(mask), pa.array(replacement, pa.string()), quoted)
    return pc.fill_null(quoted, "null")


class _Catalog:
    """The historian's signals sorted by id, with their JSON fragments."""

    def __init__(self, signals: pa.Table) -> None:
        signals = signals.sort_by("signal_id")
        self.ids: _IntArray = np.asarray(
            signals.column("signal_id").to_numpy(zero_copy_only=False), dtype=np.int64
        )
        paths = signals.column("path").combine_chunks()
        self.paths = paths
        self.slashed = pc.binary_join_element_wise("/", paths, "")
        self.signal_json = _json_strings(paths)
        self.unit_json = _json_strings(signals.column("unit").combine_chunks())
        self._masks: dict[str, _BoolArray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, sid: _IntArray) -> tuple[npt.NDArray[np.intp], _BoolArray]:
        """Catalog row of each id and whether the id is in the catalog."""
        if len(self.ids) == 0:
            return np.zeros(len(sid), np.intp), np.zeros(len(sid), np.bool_)
        pos = np.minimum(np.searchsorted(self.ids, sid), len(self.ids) - 1)
        return pos, self.ids[pos] == sid

    def match(self, regex: str) -> _BoolArray:
        """Rows whose path matches ``regex`` (over ``/`` + path); cached per regex."""
        mask = self._masks.get(regex)
        if mask is None:
            hit = pc.match_substring_regex(self.slashed, regex)
            mask = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=np.bool_)
            self._masks[regex] = mask
        return mask

    def within(self, subtrees: Sequence[str]) -> _BoolArray:
        """Rows whose path lies in one of ``subtrees``."""
        key = "\x00subtrees:" + "\x00".join(subtrees)
        mask = self._masks.get(key)
        if mask is None:
            hit = subtree_mask(self.paths, subtrees)
            mask = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=np.bool_)
            self._masks[key] = mask
        return mask


_Render = Callable[[pa.Table, pa.Array], pa.Array]


class _Segment:
    """Rows of one committed batch that some client wants, rendered once when first sent."""

    __slots__ = ("_catalog", "_fragments", "_n", "_pos", "_render", "_table")

    def __init__(
        self, table: pa.Table, pos: npt.NDArray[np.intp], catalog: _Catalog, render: _Render
    ) -> None:
        self._table = table
        self._n = int(table.num_rows)
        self._pos = pos
        self._catalog = catalog
        self._render = render
        self._fragments: tuple[pa.Array, ...] | None = None

    def __len__(self) -> int:
        return self._n

    def fragments(self) -> tuple[pa.Array, ...]:
        """JSON text of each row: signal, ts (epoch ms), value, unit, quality."""
        if self._fragments is None:
            t = self._table
            where = pa.array(self._pos)
            us = np.asarray(t.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
            quality = t.column("quality").combine_chunks()
            self._fragments = (
                self._catalog.signal_json.take(where),
                pa.array(np.floor_divide(us, 1000)).cast(pa.string()),
                self._render(t, pa.array(np.zeros(t.num_rows, np.bool_))),
                self._catalog.unit_json.take(where),
                _QUALITY.take(quality),
            )
            self._table = t.slice(0, 0)  # the fragments are all that is needed now
        return self._fragments


_Part = tuple[_Segment, npt.NDArray[np.intp] | None]
"""Rows of a segment for one client (``None``: all of them)."""


def _join(parts: list[pa.Array]) -> str:
    """The elements of ``parts`` joined by commas, in one Arrow call."""
    arr = parts[0] if len(parts) == 1 else pa.concat_arrays(parts)
    if len(arr) == 0:
        return ""
    lists = pa.ListArray.from_arrays(pa.array([0, len(arr)], pa.int32()), arr)
    out: str = pc.binary_join(lists, ",")[0].as_py()
    return out


def _values_frame(seq: int, parts: list[_Part]) -> str:
    columns: list[list[pa.Array]] = [[], [], [], [], []]
    for segment, idx in parts:
        fragments = segment.fragments()
        for k, frag in enumerate(fragments):
            columns[k].append(frag if idx is None else frag.take(pa.array(idx)))
    signal, ts, value, unit, quality = (_join(c) for c in columns)
    sent_ms = time.time_ns() // 1_000_000
    return (
        f'{{"type":"values","seq":{seq},"signal":[{signal}],"ts":[{ts}],"value":[{value}],'
        f'"unit":[{unit}],"quality":[{quality}],"sent_ms":{sent_ms}}}'
    )


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _event_rows(events: pa.Table, strict_json: Callable[[str], bool]) -> list[dict[str, Any]]:
    """Events as the ``events`` frame carries them (timestamps in epoch ms, data parsed)."""
    out = []
    for row in events.to_pylist():  # events are few: state changes, alarms, anomalies
        data = row.get("data")
        if isinstance(data, str) and strict_json(data):
            data = json.loads(data)
        out.append(
            {
                "event_id": row["event_id"],
                "kind": row["kind"],
                "asset": row["asset"],
                "signal": row.get("signal"),
                "ts": _epoch_ms(row["ts"]),
                "end_ts": _epoch_ms(row.get("end_ts")),
                "code": row.get("code"),
                "severity": row.get("severity"),
                "message": row.get("message"),
                "data": data,
            }
        )
    return out


# --------------------------------------------------------------------------- clients


class _CloseError(Exception):
    """Ends a client's session with a close code (``None``: the client went away)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


class _Client:
    """One WebSocket session: its subscriptions, its queue and its sender."""

    def __init__(
        self, hub: LiveHub, ws: WebSocket, token: TokenInfo, secret: str, auth: AuthStore
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.token = token
        self._secret = secret
        self._auth = auth
        self.patterns: dict[str, _Pattern] = {}
        self.events = False
        self.rows: _BoolArray = np.zeros(0, np.bool_)
        self.event_re: re.Pattern[str] | None = None
        self._pending: deque[_Part] = deque()
        self.pending_values = 0
        self._events: list[dict[str, Any]] = []
        self._control: deque[str] = deque()
        self._wake = asyncio.Event()
        self._dropped = asyncio.Event()
        self.values_dropped = 0
        self._seq_values = 0
        self._seq_events = 0
        self._next_frame = 0.0

    # -- subscriptions (event loop, from the receive loop) ---------------------------

    def recompute(self, catalog: _Catalog | None) -> int:
        """Rebuild the catalog mask and the event regex; return the signals matched."""
        if catalog is None:
            self.rows = np.zeros(0, np.bool_)
        else:
            rows = np.zeros(len(catalog), np.bool_)
            for p in self.patterns.values():
                rows |= catalog.match(p.signal_regex)
            rows &= catalog.within(self.token.subtrees)
            self.rows = rows
        asset = [p.asset_regex for p in self.patterns.values() if p.asset_regex is not None]
        self.event_re = re.compile("|".join(f"(?:{r})" for r in asset)) if asset else None
        return int(np.count_nonzero(self.rows))

    # -- the pipeline side: never awaits ---------------------------------------------

    def offer(self, segment: _Segment, idx: npt.NDArray[np.intp] | None) -> None:
        """Queue rows of a committed batch (drops the client when its queue is full)."""
        if self._dropped.is_set():
            return
        n = len(segment) if idx is None else len(idx)
        if self.pending_values > self.hub.max_queue_values:
            # Still more than the bound waiting from earlier commits: it does not keep up.
            # The bound is checked before a commit is added, so one large commit (the
            # pipeline grows them under load, up to its own bound) drops nobody.
            self.drop(n)
            return
        self._pending.append((segment, idx))
        self.pending_values += n
        self._wake.set()

    def offer_events(self, events: list[dict[str, Any]]) -> None:
        """Queue the events of the client's assets."""
        if self._dropped.is_set() or not self.events or self.event_re is None:
            return
        mine = [
            e
            for e in events
            if covers(self.token.subtrees, e["asset"]) and self.event_re.match("/" + e["asset"])
        ]
        if not mine:
            return
        if self.pending_values + len(self._events) > self.hub.max_queue_values:
            self.drop(0)
            return
        self._events.extend(mine)
        self._wake.set()

    def reply(self, message: dict[str, Any]) -> None:
        """Queue a control message (hello, subscribed, errors, pong)."""
        if len(self._control) >= _MAX_CONTROL:
            self.drop(0)
            return
        self._control.append(_dumps(message))
        self._wake.set()

    def drop(self, arriving: int) -> None:
        """Give up on this client: forget its queue; its session closes with 1013."""
        if self._dropped.is_set():
            return
        self.values_dropped = self.pending_values + arriving
        self._pending.clear()
        self._events.clear()
        self.pending_values = 0
        self._dropped.set()
        self.hub._dropped(self)

    # -- the session's tasks ---------------------------------------------------------

    async def watch_drop(self) -> None:
        """Raise :class:`_CloseError` (1013) once the client was dropped."""
        await self._dropped.wait()
        raise _CloseError(CLOSE_SLOW_CONSUMER, "slow consumer")

    async def send_loop(self) -> None:
        """Send control replies, events and coalesced values frames, paced."""
        loop = asyncio.get_running_loop()
        period = self.hub.max_batch_ms / 1000.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._control:
                await self.ws.send_text(self._control.popleft())
            if self._events:
                events, self._events = self._events, []
                self._seq_events += 1
                frame = {"type": "events", "seq": self._seq_events, "events": events}
                await self.ws.send_text(_dumps(frame))
                self.hub.stats.events_sent += len(events)
            if not self._pending:
                continue
            delay = self._next_frame - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # more may arrive meanwhile: one frame for all
                if not self._pending:  # unsubscribed meanwhile
                    continue
            parts = self._take(self.hub.max_frame_values)
            if self._pending:
                self._wake.set()  # more than one frame's worth: the rest after the period
            n = sum(len(s) if i is None else len(i) for s, i in parts)
            self._seq_values += 1
            t0 = time.thread_time()
            frame_text = _values_frame(self._seq_values, parts)
            self.hub.stats.render_s += time.thread_time() - t0
            self._next_frame = loop.time() + period
            await self.ws.send_text(frame_text)
            self.hub.stats.frames_sent += 1
            self.hub.stats.values_sent += n

    def _take(self, limit: int) -> list[_Part]:
        parts: list[_Part] = []
        taken = 0
        while self._pending and taken < limit:
            segment, idx = self._pending.popleft()
            n = len(segment) if idx is None else len(idx)
            if taken + n > limit:
                rows = np.arange(len(segment)) if idx is None else idx
                k = limit - taken
                self._pending.appendleft((segment, rows[k:]))
                idx, n = rows[:k], k
            parts.append((segment, idx))
            taken += n
        self.pending_values -= taken
        return parts

    async def receive_loop(self) -> None:
        """Handle the client's messages until it goes away."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise _CloseError(None)
            text = message.get("text")
            if text is None:
                self.reply({"type": "error", "code": 400, "detail": "send JSON text frames"})
                continue
            try:
                doc = json.loads(text)
            except ValueError:
                self.reply({"type": "error", "code": 400, "detail": "the message is not JSON"})
                continue
            await self._handle(doc)

    async def _handle(self, doc: Any) -> None:
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind == "ping":
            self.reply({"type": "pong"})
        elif kind == "subscribe":
            await self._subscribe(doc)
        elif kind == "unsubscribe":
            await self._unsubscribe(doc)
        else:
            self.reply(
                {
                    "type": "error",
                    "code": 400,
                    "detail": f"unknown message type {kind!r} "
                    "(use 'subscribe', 'unsubscribe' or 'ping')",
                }
            )

    def _patterns_of(self, doc: dict[str, Any]) -> list[Any] | None:
        patterns = doc.get("patterns")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list):
            self.reply(
                {"type": "error", "code": 400, "detail": "'patterns' must be a list of strings"}
            )
            return None
        return patterns

    async def _subscribe(self, doc: dict[str, Any]) -> None:
        patterns = self._patterns_of(doc)
        if patterns is None:
            return
        events = doc.get("events")
        if events is not None and not isinstance(events, bool):
            self.reply({"type": "error", "code": 400, "detail": "'events' must be true or false"})
            return
        accepted: list[str] = []
        for text in patterns:
            try:
                pattern = compile_pattern(text)
            except PatternError as exc:
                self.reply({"type": "error", "code": 400, "detail": str(exc)})
                continue
            if not _allowed(pattern, self.token.subtrees):
                self.reply(
                    {
                        "type": "error",
                        "code": 403,
                        "detail": f"pattern {text!r} lies outside this token's subtrees "
                        f"({', '.join(self.token.subtrees)})",
                    }
                )
                continue
            if text not in self.patterns and len(self.patterns) >= _MAX_PATTERNS:
                self.reply(
                    {
                        "type": "error",
                        "code": 400,
                        "detail": f"at most {_MAX_PATTERNS} patterns per connection",
                    }
                )
                continue
            self.patterns[text] = pattern
            accepted.append(text)
        if events is not None:
            self.events = events
        catalog = await self.hub._ensure_catalog()
        n = self.recompute(catalog)
        self.reply({"type": "subscribed", "id": doc.get("id"), "patterns": accepted, "signals": n})

    async def _unsubscribe(self, doc: dict[str, Any]) -> None:
        patterns = self._patterns_of(doc)
        if patterns is None:
            return
        removed: list[str] = []
        for p in patterns:
            if isinstance(p, str) and self.patterns.pop(p, None) is not None:
                removed.append(p)
        n = self.recompute(self.hub._catalog)
        if not self.patterns:
            self._pending.clear()
            self.pending_values = 0
        self.reply({"type": "unsubscribed", "id": doc.get("id"), "patterns": removed, "signals": n})

    async def watch_token(self) -> None:
        """Close with 4401 when the token expires or is revoked (checked every so often)."""
        while True:
            wait = self.hub.token_recheck_s
            expires = self.token.expires_at
            if expires is not None:
                wait = min(wait, max(0.0, (expires - datetime.now(UTC)).total_seconds()))
            await asyncio.sleep(wait)
            _, info = await self._auth.authenticate(self._secret)
            state = "revoked" if info is None else info.state()
            if state != "active":
                raise _CloseError(CLOSE_UNAUTHORIZED, f"the token is {state}")


# --------------------------------------------------------------------------- the hub


@dataclass(slots=True)
class LiveStats:
    """Counters of a :class:`LiveHub` since it was made (``connections`` is a gauge)."""

    connections: int = 0
    """Sessions open now."""
    connections_total: int = 0
    """Sessions accepted (valid token) so far."""
    frames_sent: int = 0
    """``values`` frames sent."""
    values_sent: int = 0
    """Values sent in those frames."""
    events_sent: int = 0
    """Events sent in ``events`` frames."""
    clients_dropped: int = 0
    """Clients closed with 1013 because they did not keep up."""
    values_dropped: int = 0
    """Values that were queued for those clients and not sent."""
    unknown: int = 0
    """Readings of signal ids not in the historian's catalog (not streamed)."""
    observe_s: float = 0.0
    """CPU time of the event loop's thread in :meth:`LiveHub.publish_readings` (matching and
    queueing: the part of the hub's cost the pipeline waits for)."""
    render_s: float = 0.0
    """CPU time spent rendering values frames to JSON (in the clients' sender tasks)."""


class LiveHub:
    """Fans committed readings and events out to the live WebSocket clients.

    ``max_batch_ms``: at most one values frame per client in this time. ``max_queue_values``:
    a client with more values than this still waiting when a commit arrives is dropped
    (close 1013). ``max_frame_values``: a frame
    carries at most this many values (the rest follows after ``max_batch_ms``).
    """

    def __init__(
        self,
        historian: Historian,
        *,
        max_batch_ms: int = MAX_BATCH_MS,
        max_queue_values: int = MAX_QUEUE_VALUES,
        max_frame_values: int = MAX_FRAME_VALUES,
        token_recheck_s: float = 30.0,
    ) -> None:
        if max_batch_ms < 1 or max_queue_values < 1 or max_frame_values < 1:
            raise ValueError("max_batch_ms, max_queue_values and max_frame_values must be ≥ 1")
        # The republisher's value rendering, imported here (its package starts the MQTT
        # stack, a second's import): at start-up rather than at the first subscription.
        from shopfloor.bus.uns import _strict_json, _value_text

        self._value_text: _Render = _value_text
        self._strict_json: Callable[[str], bool] = _strict_json
        self.historian = historian
        self.max_batch_ms = max_batch_ms
        self.max_queue_values = max_queue_values
        self.max_frame_values = max_frame_values
        self.token_recheck_s = token_recheck_s
        self.stats = LiveStats()
        self._clients: set[_Client] = set()
        self._catalog: _Catalog | None = None
        self._catalog_lock = asyncio.Lock()
        self._missing_checked = 0.0

    # -- runtime wiring ---------------------------------------------------------------

    def attach(self, runtime: Runtime) -> Callable[[], None]:
        """Observe ``runtime``'s pipeline and events; return the function that detaches.

        Works before the runtime is entered (its observers are passed to the pipeline) and
        while it runs (added to the running pipeline).
        """
        observers = (
            runtime.pipeline.observers if runtime.pipeline is not None else runtime.observers
        )
        observers.append(self.publish_readings)
        runtime.event_observers.append(self.publish_events)

        def detach() -> None:
            with contextlib.suppress(ValueError):
                observers.remove(self.publish_readings)
            with contextlib.suppress(ValueError):
                runtime.event_observers.remove(self.publish_events)

        return detach

    # -- observers ----------------------------------------------------------------------

    async def publish_readings(self, batch: ReadingBatch) -> None:
        """A pipeline observer: queue the committed rows each client subscribed to."""
        if not self._clients or len(batch) == 0:
            return
        t0 = time.thread_time()
        try:
            await self._publish(batch)
        finally:
            self.stats.observe_s += time.thread_time() - t0

    async def _publish(self, batch: ReadingBatch) -> None:
        clients = [c for c in self._clients if c.patterns]
        catalog = self._catalog
        if not clients or catalog is None:
            return
        table = batch.table
        sid = np.asarray(table.column("signal_id").to_numpy(), dtype=np.int64)
        pos, known = catalog.positions(sid)
        if not known.all() and self._may_refresh(catalog, sid):
            catalog = await self._refresh()
            clients = [c for c in self._clients if c.patterns]
            pos, known = catalog.positions(sid)
        unknown = len(sid) - int(np.count_nonzero(known))
        if unknown:
            if not self.stats.unknown:
                log.warning("live: %d reading(s) of signal ids not in the catalog", unknown)
            self.stats.unknown += unknown
        wanted = np.zeros(len(sid), np.bool_)
        masks: list[tuple[_Client, _BoolArray]] = []
        for client in clients:
            if len(client.rows) != len(catalog):
                continue  # subscribed against an older catalog: recomputed on refresh
            m = client.rows[pos] & known
            if m.any():
                masks.append((client, m))
                wanted |= m
        if not masks:
            return
        rows = np.flatnonzero(wanted)
        every = len(rows) == len(sid)
        segment = _Segment(
            table if every else table.take(pa.array(rows)), pos[rows], catalog, self._value_text
        )
        for client, m in masks:
            mine = m[rows]
            client.offer(segment, None if mine.all() else np.flatnonzero(mine))

    async def publish_events(self, events: pa.Table) -> None:
        """A runtime event observer: queue events for clients that asked for them."""
        clients = [c for c in self._clients if c.events and c.event_re is not None]
        if not clients or events.num_rows == 0:
            return
        rows = _event_rows(events, self._strict_json)
        for client in clients:
            client.offer_events(rows)

    # -- catalog ------------------------------------------------------------------------

    async def _ensure_catalog(self) -> _Catalog:
        async with self._catalog_lock:
            if self._catalog is None:
                self._catalog = _Catalog(await self.historian.signals())
                self._missing_checked = time.monotonic()
            return self._catalog

    def _may_refresh(self, catalog: _Catalog, sid: _IntArray) -> bool:
        """Refresh for ids newer than the catalog; for others missing, now and then."""
        known = int(catalog.ids[-1]) if len(catalog.ids) else -1
        return int(sid.max()) > known or time.monotonic() - self._missing_checked > (
            _REFRESH_EVERY_S
        )

    async def _refresh(self) -> _Catalog:
        async with self._catalog_lock:
            catalog = self._catalog = _Catalog(await self.historian.signals())
            self._missing_checked = time.monotonic()
        for client in self._clients:
            client.recompute(catalog)
        return catalog

    # -- sessions ------------------------------------------------------------------------

    def _dropped(self, client: _Client) -> None:
        self._clients.discard(client)
        self.stats.clients_dropped += 1
        self.stats.values_dropped += client.values_dropped
        log.warning(
            "live: dropped a client that did not keep up (%s, %d value(s) not sent)",
            client.token.label(),
            client.values_dropped,
        )

    async def serve(self, ws: WebSocket, token: TokenInfo, secret: str, auth: AuthStore) -> None:
        """Run one accepted session until the client leaves, is dropped or loses its token."""
        client = _Client(self, ws, token, secret, auth)
        self._clients.add(client)
        self.stats.connections += 1
        self.stats.connections_total += 1
        client.reply(
            {
                "type": "hello",
                "server": "shopfloor",
                "version": __version__,
                "max_batch_ms": self.max_batch_ms,
            }
        )
        closed = _CloseError(None)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(client.receive_loop(), name="live-receive")
                tg.create_task(client.send_loop(), name="live-send")
                tg.create_task(client.watch_drop(), name="live-drop")
                tg.create_task(client.watch_token(), name="live-token")
        except* _CloseError as group:
            first = group.exceptions[0]
            assert isinstance(first, _CloseError)
            closed = first
        except* Exception as group:  # the client went away mid-send, or a bug: logged
            gone = [e for e in group.exceptions if not _disconnected(e)]
            if gone:
                log.error("live: session failed", exc_info=gone[0])
        finally:
            self._clients.discard(client)
            self.stats.connections -= 1
        if closed.code is not None:
            await _goodbye(ws, closed, client.values_dropped)


def _disconnected(exc: BaseException) -> bool:
    from starlette.websockets import WebSocketDisconnect

    return isinstance(exc, WebSocketDisconnect | OSError) or type(exc).__name__ in (
        "ClientDisconnected",
        "ConnectionClosed",
    )


async def _goodbye(ws: WebSocket, closed: _CloseError, values_dropped: int) -> None:
    """Best effort: tell a dropped client why, then close (a client that reads nothing
    more is left to the server's own timeouts)."""
    if ws.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_GOODBYE_S):
            if closed.code == CLOSE_SLOW_CONSUMER:
                await ws.send_text(
                    _dumps(
                        {
                            "type": "dropped",
                            "reason": closed.reason,
                            "values_dropped": values_dropped,
                        }
                    )
                )
            await ws.close(closed.code or 1000, closed.reason)


# --------------------------------------------------------------------------- the route

router = APIRouter(tags=["live"])


def _presented_token(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    query = ws.query_params.get("token")
    return query.strip() if query else None


def _audit_path(ws: WebSocket) -> str:
    """The path with its query, the token left out (it is a secret)."""
    rest = [(k, v) for k, v in ws.query_params.multi_items() if k != "token"]
    path = ws.url.path
    if rest:
        from urllib.parse import urlencode

        path += "?" + urlencode(rest)
    return path


@router.websocket(LIVE_PATH, name="live")
async def live(ws: WebSocket) -> None:
    """The live stream (see the module docstring and the README's "Live stream")."""
    from shopfloor.api._deps import ApiContext

    ctx = ws.app.state.ctx
    hub = ws.app.state.live
    assert isinstance(ctx, ApiContext)
    assert isinstance(hub, LiveHub)
    secret = _presented_token(ws)
    client = ws.client.host if ws.client else None
    path = _audit_path(ws)
    problem: str | None = "no token: send 'Authorization: Bearer <token>' or ?token=<token>"
    info: TokenInfo | None = None
    if secret is not None:
        claimed, info = await ctx.auth.authenticate(secret)
        if info is None:
            problem = "the token is not valid"
        elif (state := info.state()) != "active":
            problem, info = f"the token is {state}", None
        elif not info.scope.includes(Scope.read):
            problem, info = "this needs the read scope", None
        else:
            problem = None
        detail = {"websocket": "live"} if problem is None else {"problem": problem}
        status = 101 if problem is None else 401
        await ctx.auth.audit(claimed, "GET", path, status, client=client, detail=detail)
    await ws.accept()
    if info is None or secret is None:
        await ws.close(CLOSE_UNAUTHORIZED, (problem or "unauthorized")[:120])
        return
    await hub.serve(ws, info, secret, ctx.auth)

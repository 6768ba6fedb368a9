"""Alarms: conditions on the stream, the ISA-18.2 lifecycle, shelving, severities, sinks."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pyarrow as pa
import pytest

from shopfloor.analytics._alarm_sinks import sinks_from_specs
from shopfloor.analytics.alarms import (
    AlarmEngine,
    AlarmSink,
    AlarmState,
    MemorySink,
    MqttSink,
    WebhookSink,
    alarm_log,
    priority_name,
)
from shopfloor.edge.batch import Quality, RawBatch, ReadingBatch
from shopfloor.edge.mapper import Mapper, Route
from shopfloor.edge.pipeline import Pipeline
from shopfloor.errors import AlarmError, ConfigError, NotificationError
from shopfloor.historian import Historian, open_historian
from shopfloor.model import Factory, parse_factory
from shopfloor.runtime import Runtime, signal_infos

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs
S = 1_000_000
LINE = "acme/plant/area/line"
P1, P2, C1 = f"{LINE}/p1", f"{LINE}/p2", f"{LINE}/c1"

TREE = """\
types:
  - id: machine
    signals:
      - {name: state, data_type: int, kind: state}
    states: {1: idle, 2: running, 6: unplanned_stop}
  - id: press
    extends: machine
    signals:
      - {name: pressure, data_type: float, unit: BAR}
      - {name: temperature, data_type: float, unit: CEL}
  - id: conveyor
    signals:
      - {name: speed, data_type: float, unit: MTS}
connections:
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:1"}
enterprise:
  id: acme
  sites:
    - id: plant
      areas:
        - id: area
          lines:
            - id: line
              equipment:
                - {id: p1, type: press, connection: opc,
                   bindings: {state: p1.state, pressure: p1.pressure, temperature: p1.temp}}
                - {id: p2, type: press, connection: opc,
                   bindings: {state: p2.state, pressure: p2.pressure, temperature: p2.temp}}
                - {id: c1, type: conveyor, connection: opc, bindings: {speed: c1.speed}}
alarms:
  rules:
"""


def factory(rules: str) -> Factory:
    return parse_factory(TREE + rules, "test.yaml")


def at(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@dataclass
class Rig:
    """An engine without a historian, its memory sink, and helpers to feed it."""

    engine: AlarmEngine
    sink: MemorySink
    now: list[datetime] = field(default_factory=list)

    def sid(self, path: str) -> int:
        return self.engine.signal_ids[path]

    async def feed(
        self, path: str, seconds: Sequence[float], values: Sequence[Any], quality: int = 0xC0
    ) -> None:
        ts = T0 + np.round(np.asarray(seconds, dtype=float) * S).astype(np.int64)
        await self.engine(
            ReadingBatch.from_columns(
                np.full(len(ts), self.sid(path)), ts, np.asarray(values), quality
            )
        )

    async def notes(self, alarm: str | None = None) -> list[dict[str, Any]]:
        assert await self.engine.dispatcher.drain(5)
        return [dict(n) for n in self.sink.received if alarm is None or n["alarm_id"] == alarm]

    async def changes(self, alarm: str) -> list[tuple[str, int]]:
        """``(activated|cleared, seconds after T0)`` of an alarm's notifications."""
        return [
            (n["transition"], round((_us_of(n["ts"]) - T0) / S))
            for n in await self.notes(alarm)
            if n["transition"] in ("activated", "cleared")
        ]


def _us_of(text: str) -> int:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round((t - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * S)


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    rules = request.param
    now = [datetime(2026, 6, 1, tzinfo=UTC)]
    sink = MemorySink()
    engine = AlarmEngine(
        factory(rules), None, sinks=[sink], settle=0, tick_interval=3600, clock=lambda: now[0]
    )
    async with engine:
        yield Rig(engine, sink, now)


# -- conditions ----------------------------------------------------------------------------

HYSTERESIS = """\
    - {id: hi_band, type: press, threshold: {signal: pressure, above: 250, deadband: 10}}
    - {id: hi_raw, type: press, threshold: {signal: pressure, above: 250}}
"""


@pytest.mark.parametrize("rig", [HYSTERESIS], indirect=True)
async def test_hysteresis_stops_chatter_around_the_limit(rig: Rig) -> None:
    values = [249, 251, 249, 251, 248, 252, 245, 239, 251]
    await rig.feed(f"{P1}/pressure", range(len(values)), values)
    assert await rig.changes(f"{P1}/hi_raw") == [
        ("activated", 1), ("cleared", 2), ("activated", 3), ("cleared", 4),
        ("activated", 5), ("cleared", 6), ("activated", 8),
    ]  # fmt: skip
    # within the deadband (240 < v ≤ 250) the alarm holds; it clears at or below 240
    assert await rig.changes(f"{P1}/hi_band") == [
        ("activated", 1),
        ("cleared", 7),
        ("activated", 8),
    ]
    assert rig.engine.manager.status(f"{P2}/hi_band").state is AlarmState.NORMAL


def _reference(
    seconds: Sequence[float], values: Sequence[float], deadband: float, on: float, off: float
) -> list[tuple[bool, int]]:
    """One sample at a time, the textbook way: hysteresis, then on/off delay timers."""
    level: bool | None = None
    since = 0
    active = False
    out: list[tuple[bool, int]] = []

    def fire(now: int) -> None:
        nonlocal active
        if level is None or level == active:
            return
        delay = round((on if level else off) * S)
        if now - since >= delay:
            active = level
            out.append((active, since + delay))

    for sec, v in zip(seconds, values, strict=True):
        t = T0 + round(sec * S)
        fire(t)
        new = True if v > 250 else False if v <= 250 - deadband else level
        if new is not None and new != level:
            level, since = new, t
            fire(t)
    fire(T0 + round(seconds[-1] * S))
    return out


@pytest.mark.parametrize("seed", range(6))
async def test_streaming_threshold_equals_the_sample_by_sample_reference(seed: int) -> None:
    rng = random.Random(seed)
    deadband, on, off = rng.choice([0, 3, 8]), rng.choice([0, 2, 5]), rng.choice([0, 1, 4])
    rules = (
        f"    - {{id: hi, type: press, threshold: {{signal: pressure, above: 250, "
        f"deadband: {deadband}}}, on_delay: {on}, off_delay: {off}}}\n"
    )
    n = 400
    seconds = np.cumsum(np.array([rng.choice([0.5, 1.0, 1.5, 3.0]) for _ in range(n)]))
    values = np.zeros(n)
    for k in range(1, n):  # an AR(1) process around the limit
        values[k] = 0.85 * values[k - 1] + rng.gauss(0, 4)
    values += 250
    expected = _reference(list(seconds), list(values), deadband, on, off)
    assert len(expected) >= 4  # the random walk crosses the limit
    sink = MemorySink()
    engine = AlarmEngine(factory(rules), None, sinks=[sink], settle=0, tick_interval=3600)
    async with engine:
        rig = Rig(engine, sink)
        cuts = sorted(rng.sample(range(1, n), 25))
        for a, b in zip([0, *cuts], [*cuts, n], strict=True):
            await rig.feed(f"{P1}/pressure", seconds[a:b], values[a:b])
        got = [
            (n["transition"] == "activated", _us_of(n["ts"])) for n in await rig.notes(f"{P1}/hi")
        ]
    assert got == expected


DELAYS = """\
    - {id: hi, type: press, threshold: {signal: pressure, above: 250}, on_delay: 5s,
       off_delay: 2s}
"""


@pytest.mark.parametrize("rig", [DELAYS], indirect=True)
async def test_on_and_off_delay(rig: Rig) -> None:
    alarm = f"{P1}/hi"
    await rig.feed(f"{P1}/pressure", [0, 3], [260, 240])  # 3 s above: too short
    await rig.feed(f"{P1}/pressure", [10, 12], [260, 261])
    assert await rig.changes(alarm) == []
    await rig.feed(f"{P1}/pressure", [16], [262])  # held 6 s: active since 10 + 5
    await rig.feed(f"{P1}/pressure", [17, 18], [240, 260])  # 1 s below: not cleared
    await rig.feed(f"{P1}/pressure", [20, 23], [240, 240])  # below from 20: cleared at 22
    assert await rig.changes(alarm) == [("activated", 15), ("cleared", 22)]
    first = (await rig.notes(alarm))[0]
    assert first["value"] == 261.0  # the value when it activated (sample of t = 12)
    assert first["message"] == "p1: pressure 261 bar above 250 bar"


RATE = """\
    - {id: heating, type: press, severity: medium,
       rate: {signal: temperature, above: 3, per: min, window: 60s}}
"""


@pytest.mark.parametrize("rig", [RATE], indirect=True)
@pytest.mark.parametrize("per_batch", [1, 100])
async def test_rate_of_change(rig: Rig, per_batch: int) -> None:
    # 1 °C/min for 3 minutes (no alarm), then 6 °C/min
    seconds = list(range(0, 181, 10)) + list(range(190, 301, 10))
    values = [t / 60 for t in range(0, 181, 10)] + [3 + (t - 180) / 10 for t in range(190, 301, 10)]
    for k in range(0, len(seconds), per_batch):
        await rig.feed(f"{P1}/temperature", seconds[k : k + per_batch], values[k : k + per_batch])
    # at t = 210 the rate over the last 60 s is (6 - 2.5) °C/min = 3.5 > 3
    assert await rig.changes(f"{P1}/heating") == [("activated", 210)]
    note = (await rig.notes(f"{P1}/heating"))[0]
    assert note["value"] == pytest.approx(3.5)
    assert note["message"] == "p1: temperature rising faster than 3 °C/min"


STOP = """\
    - {id: long_stop, type: machine, severity: critical,
       state: {in: unplanned_stop, for: 5min}}
"""


@pytest.mark.parametrize("rig", [STOP], indirect=True)
async def test_state_duration_runs_on_the_clock(rig: Rig) -> None:
    alarm = f"{P1}/long_stop"
    await rig.feed(f"{P1}/state", [0, 10], [2, 6])  # running, then a fault at 10 s
    await rig.feed(f"{P2}/state", [0, 20, 200], [6, 2, 6])  # p2: a 20 s stop, then another
    await rig.engine.tick(at(T0 + 10 * S + 299 * S))
    assert await rig.changes(alarm) == []
    await rig.engine.tick(at(T0 + 10 * S + 300 * S))  # no new sample: the clock does it
    assert await rig.changes(alarm) == [("activated", 310)]
    assert rig.engine.manager.status(alarm).value == "unplanned_stop"
    assert await rig.changes(f"{P2}/long_stop") == []  # p2's second stop began at 200 s
    await rig.feed(f"{P1}/state", [480], [2])
    assert await rig.changes(alarm) == [("activated", 310), ("cleared", 480)]
    assert rig.engine.manager.status(alarm).state is AlarmState.RTN_UNACK


async def test_the_periodic_tick_runs_delays_out_without_data() -> None:
    """The engine's clock follows the data: the newest sample's time plus the real time
    since it came. A fresh fault and no more samples: the ticker runs the delay out."""
    rules = "    - {id: stop, type: machine, state: {in: unplanned_stop, for: 300ms}}\n"
    sink = MemorySink()
    engine = AlarmEngine(factory(rules), None, sinks=[sink], settle=0, tick_interval=0.02)
    async with engine:
        us = round((datetime.now(UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * S)
        sid = engine.signal_ids[f"{P1}/state"]
        await engine(ReadingBatch.from_columns(np.array([sid]), np.array([us]), np.array([6])))
        assert engine.manager.active() == []
        await sink.wait_for(1, within=10)  # the ticker, ~0.3 s later
        assert engine.manager.status(f"{P1}/stop").activated_at == at(us + 300_000)
    assert sink.transitions_of(f"{P1}/stop") == ["activated"]


JAM = """\
    - id: jam
      asset: acme/plant/area/line
      severity: 900
      description: p1 runs into a stopped conveyor
      expression: "`p1/state` == 'running' and `c1/speed` < 0.1"
"""


@pytest.mark.parametrize("rig", [JAM], indirect=True)
async def test_expression_over_two_signals(rig: Rig) -> None:
    alarm = f"{LINE}/jam"
    await rig.feed(f"{C1}/speed", [0], [0.05])  # p1's state unknown: no verdict yet
    await rig.feed(f"{P1}/state", [1], [1])  # idle
    assert await rig.changes(alarm) == []
    sids = [rig.sid(f"{P1}/state"), rig.sid(f"{C1}/speed")]
    # one batch with both signals: p1 runs at 2 s, the conveyor moves at 3 s
    batch = ReadingBatch.concat(
        [
            ReadingBatch.from_columns(np.array(sids[:1]), np.array([T0 + 2 * S]), np.array([2])),
            ReadingBatch.from_columns(np.array(sids[1:]), np.array([T0 + 3 * S]), np.array([1.0])),
        ]
    )
    await rig.engine(batch)
    assert await rig.changes(alarm) == [("activated", 2), ("cleared", 3)]
    note = (await rig.notes(alarm))[0]
    assert note["value"] == {"p1/state": "running", "c1/speed": 0.05}
    assert note["severity"] == 900
    assert note["priority"] == "critical"
    assert note["message"] == "line: p1 runs into a stopped conveyor"


@pytest.mark.parametrize("rig", [HYSTERESIS], indirect=True)
async def test_bad_quality_holds_and_late_samples_are_ignored(rig: Rig) -> None:
    alarm = f"{P1}/hi_raw"
    await rig.feed(f"{P1}/pressure", [0], [260])
    await rig.feed(f"{P1}/pressure", [1], [0.0], quality=Quality.BAD_COMM_FAILURE)
    await rig.feed(f"{P1}/pressure", [0.5], [100])  # older than what was seen: ignored
    assert await rig.changes(alarm) == [("activated", 0)]
    await rig.feed(f"{P1}/pressure", [2], [100])
    assert await rig.changes(alarm) == [("activated", 0), ("cleared", 2)]


# -- lifecycle -----------------------------------------------------------------------------

LIFECYCLE = """\
    - {id: hi, type: press, severity: high, threshold: {signal: pressure, above: 250}}
    - {id: info, type: press, severity: low, ack_required: false,
       threshold: {signal: temperature, above: 80}}
"""


@pytest.mark.parametrize("rig", [LIFECYCLE], indirect=True)
async def test_active_ack_clear_normal(rig: Rig) -> None:
    alarm, m = f"{P1}/hi", rig.engine.manager
    await rig.feed(f"{P1}/pressure", [1], [260])
    s = m.status(alarm)
    assert (s.state, s.active, s.acked) == (AlarmState.UNACK_ACTIVE, True, False)
    assert [a.alarm_id for a in m.active()] == [alarm]
    s = await m.acknowledge(alarm, "alice", "checking the pump")
    assert (s.state, s.acked_by, s.ack_comment) == (
        AlarmState.ACK_ACTIVE,
        "alice",
        "checking the pump",
    )
    assert s.acked_at == rig.now[0]
    await rig.feed(f"{P1}/pressure", [2], [200])
    assert m.status(alarm).state is AlarmState.NORMAL
    assert m.active() == []
    notes = await rig.notes(alarm)
    assert [(n["transition"], n["state"], n["user"]) for n in notes] == [
        ("activated", "unack_active", None),
        ("acknowledged", "ack_active", "alice"),
        ("cleared", "normal", None),
    ]
    assert notes[1]["comment"] == "checking the pump"
    assert len({n["occurrence"] for n in notes}) == 1


@pytest.mark.parametrize("rig", [LIFECYCLE], indirect=True)
async def test_active_clear_unacked_then_ack(rig: Rig) -> None:
    alarm, m = f"{P1}/hi", rig.engine.manager
    await rig.feed(f"{P1}/pressure", [1, 2], [260, 200])
    assert m.status(alarm).state is AlarmState.RTN_UNACK
    assert [a.alarm_id for a in m.active()] == [alarm]  # still needs an acknowledgement
    occurrence = m.status(alarm).occurrence
    await rig.feed(f"{P1}/pressure", [3], [270])  # back before anyone acknowledged
    s = m.status(alarm)
    assert (s.state, s.occurrence, s.activations) == (AlarmState.UNACK_ACTIVE, occurrence, 2)
    await rig.feed(f"{P1}/pressure", [4], [200])
    s = await m.acknowledge(alarm, "bob")
    assert s.state is AlarmState.NORMAL
    assert s.occurrence is None
    assert [n["transition"] for n in await rig.notes(alarm)] == [
        "activated", "cleared", "activated", "cleared", "acknowledged",
    ]  # fmt: skip
    # a new activation is a new occurrence
    await rig.feed(f"{P1}/pressure", [5], [260])
    assert m.status(alarm).occurrence not in (None, occurrence)


@pytest.mark.parametrize("rig", [LIFECYCLE], indirect=True)
async def test_actions_that_are_not_possible(rig: Rig) -> None:
    alarm, m = f"{P1}/hi", rig.engine.manager
    with pytest.raises(AlarmError, match="is normal: nothing to acknowledge"):
        await m.acknowledge(alarm, "alice")
    with pytest.raises(AlarmError, match="unknown alarm"):
        await m.acknowledge(f"{P1}/nope", "alice")
    await rig.feed(f"{P1}/pressure", [1], [260])
    with pytest.raises(AlarmError, match="user"):
        await m.acknowledge(alarm, "  ")
    await m.acknowledge(alarm, "alice")
    with pytest.raises(AlarmError, match="is ack_active: nothing to acknowledge"):
        await m.acknowledge(alarm, "alice")
    with pytest.raises(AlarmError, match="not shelved"):
        await m.unshelve(alarm, "alice")


@pytest.mark.parametrize("rig", [LIFECYCLE], indirect=True)
async def test_non_latching_alarm_needs_no_ack(rig: Rig) -> None:
    alarm, m = f"{P1}/info", rig.engine.manager
    await rig.feed(f"{P1}/temperature", [1], [85])
    assert m.status(alarm).state is AlarmState.UNACK_ACTIVE
    await rig.feed(f"{P1}/temperature", [2], [70])
    assert m.status(alarm).state is AlarmState.NORMAL


# -- shelving ------------------------------------------------------------------------------


@pytest.mark.parametrize("rig", [LIFECYCLE], indirect=True)
async def test_shelving_suppresses_notifications_until_it_expires(rig: Rig) -> None:
    alarm, m = f"{P1}/hi", rig.engine.manager
    s = await m.shelve(alarm, timedelta(hours=1), "bob", "sensor being replaced")
    assert s.shelved_until == rig.now[0] + timedelta(hours=1)
    assert s.shelved_by == "bob"
    await rig.feed(f"{P1}/pressure", [1, 2, 3], [260, 200, 261])  # chatters while shelved
    assert m.status(alarm).state is AlarmState.NORMAL  # no occurrence while shelved
    assert m.active() == []
    assert [a.alarm_id for a in m.shelved()] == [alarm]
    assert [n["transition"] for n in await rig.notes(alarm)] == ["shelved"]
    await rig.engine.tick(at(T0 + 4 * S))
    assert [n["transition"] for n in await rig.notes(alarm)] == ["shelved"]  # not yet expired
    rig.now[0] += timedelta(hours=1)
    await rig.engine.tick(at(T0 + 4 * S))
    notes = await rig.notes(alarm)
    assert [(n["transition"], n["user"]) for n in notes] == [
        ("shelved", "bob"),
        ("unshelved", "system"),
        ("activated", None),  # the condition is still there: annunciated anew
    ]
    s = m.status(alarm)
    assert (s.state, s.shelved) == (AlarmState.UNACK_ACTIVE, False)
    assert s.activated_at == rig.now[0]


@pytest.mark.parametrize("rig", [LIFECYCLE], indirect=True)
async def test_shelving_an_active_alarm_and_unshelving_it(rig: Rig) -> None:
    alarm, m = f"{P1}/hi", rig.engine.manager
    await rig.feed(f"{P1}/pressure", [1], [260])
    await m.shelve(alarm, rig.now[0] + timedelta(minutes=30), "carol")
    assert m.active() == []
    assert [a.alarm_id for a in m.active(include_shelved=True)] == [alarm]
    await rig.feed(f"{P1}/pressure", [2], [200])
    await m.acknowledge(alarm, "carol")  # cleared and acknowledged while shelved: normal
    assert m.status(alarm).state is AlarmState.NORMAL
    s = await m.unshelve(alarm, "carol", "done")
    assert (s.state, s.shelved) == (AlarmState.NORMAL, False)
    assert [n["transition"] for n in await rig.notes(alarm)] == [
        "activated",
        "shelved",
        "unshelved",
    ]


@pytest.mark.parametrize("rig", [LIFECYCLE], indirect=True)
async def test_shelving_is_limited(rig: Rig) -> None:
    alarm, m = f"{P1}/hi", rig.engine.manager
    with pytest.raises(AlarmError, match="at most 1 day"):
        await m.shelve(alarm, timedelta(hours=25), "dave")
    with pytest.raises(AlarmError, match="not in the future"):
        await m.shelve(alarm, rig.now[0] - timedelta(minutes=1), "dave")
    with pytest.raises(AlarmError, match="naive"):
        await m.shelve(alarm, datetime(2030, 1, 1), "dave")  # noqa: DTZ001


# -- severities ----------------------------------------------------------------------------

SEVERITY = """\
    - {id: a_low, type: press, severity: low, threshold: {signal: pressure, above: 100}}
    - {id: b_crit, type: press, severity: critical, threshold: {signal: pressure, above: 200}}
    - {id: c_num, type: press, severity: 600, threshold: {signal: pressure, above: 150}}
"""


def test_priority_bands() -> None:
    assert [priority_name(s) for s in (1, 250, 251, 500, 501, 750, 751, 1000)] == [
        "low", "low", "medium", "medium", "high", "high", "critical", "critical",
    ]  # fmt: skip


async def test_severities_order_the_list_and_filter_sinks() -> None:
    everything, urgent = MemorySink(), MemorySink("pager", min_severity=751)
    sinks: list[AlarmSink] = [everything, urgent]
    engine = AlarmEngine(factory(SEVERITY), None, sinks=sinks, settle=0, tick_interval=3600)
    async with engine:
        rig = Rig(engine, everything)
        await rig.feed(f"{P1}/pressure", [1], [300])
        active = engine.manager.active()
        assert [(a.alarm_id.rsplit("/", 1)[1], a.severity) for a in active] == [
            ("b_crit", 1000), ("c_num", 600), ("a_low", 250),
        ]  # fmt: skip
        assert [a.definition.priority for a in active] == ["critical", "high", "low"]
        assert len(await rig.notes()) == 3
    assert [n["alarm_id"] for n in urgent.received] == [f"{P1}/b_crit"]


# -- notification sinks --------------------------------------------------------------------


@dataclass
class _Receiver:
    """A real HTTP server on 127.0.0.1 that answers POSTs with the given status codes."""

    answers: list[int]
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    rec = _Receiver(answers=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.requests.append((dict(self.headers), body))
            code = rec.answers.pop(0) if rec.answers else 204
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/alarms"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_webhook_receives_the_post_and_retries_transient_errors(
    receiver: _Receiver,
) -> None:
    receiver.answers = [503, 502]  # two failures, then 204
    hook = WebhookSink(
        "hook",
        receiver.url,
        headers={"Authorization": "Bearer s3cret"},
        backoff_initial=0.01,
        backoff_max=0.05,
        transitions=["activated"],
    )
    engine = AlarmEngine(factory(LIFECYCLE), None, sinks=[hook], settle=0, tick_interval=3600)
    async with engine:
        rig = Rig(engine, MemorySink())
        await rig.feed(f"{P1}/pressure", [1, 2], [260, 200])  # activated, cleared
        assert await engine.dispatcher.drain(10)
        assert engine.sink_stats["hook"].sent == 1
    assert len(receiver.requests) == 3  # the same notification, delivered on the third try
    headers, body = receiver.requests[-1]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"] == "application/json"
    note = json.loads(body)
    assert note["alarm_id"] == f"{P1}/hi"
    assert note["transition"] == "activated"
    assert note["state"] == "unack_active"
    assert note["severity"] == 750
    assert note["value"] == 260.0
    assert note["ts"] == "2026-01-01T00:00:01Z"


async def test_webhook_gives_up_on_a_final_answer(receiver: _Receiver) -> None:
    receiver.answers = [404]
    hook = WebhookSink("hook", receiver.url, retries=3, backoff_initial=0.01)
    try:
        with pytest.raises(NotificationError, match="answered 404 \\(after 1 attempts\\)"):
            await hook.send({"alarm_id": "x", "severity": 500, "transition": "activated"})
    finally:
        await hook.aclose()
    assert len(receiver.requests) == 1


async def test_webhook_retries_then_reports_an_unreachable_receiver() -> None:
    hook = WebhookSink("hook", "http://127.0.0.1:1/x", retries=2, backoff_initial=0.01)
    try:
        with pytest.raises(NotificationError, match="after 3 attempts"):
            await hook.send({"alarm_id": "x", "severity": 500, "transition": "activated"})
    finally:
        await hook.aclose()


def test_sinks_from_the_factory_file(monkeypatch: pytest.MonkeyPatch) -> None:
    notify = """\
  notify:
    - {name: hook, webhook: "https://example.com/h", min_severity: high,
       headers: {Authorization: "Bearer ${ALARM_TOKEN}"}}
    - {name: uns, mqtt: "mqtt://127.0.0.1:1883", topic: plant/alarms, transitions: [activated]}
"""
    f = parse_factory(TREE + LIFECYCLE + notify)
    monkeypatch.setenv("ALARM_TOKEN", "t0k")
    hook, uns = sinks_from_specs(f.document.alarms.notify)
    assert isinstance(hook, WebhookSink)
    assert hook.min_severity == 750
    assert isinstance(uns, MqttSink)
    assert uns.topic == "plant/alarms"
    assert uns.transitions == {"activated"}
    monkeypatch.delenv("ALARM_TOKEN")
    with pytest.raises(ConfigError, match="ALARM_TOKEN is not set"):
        sinks_from_specs(f.document.alarms.notify)


async def test_mqtt_sink_publishes_on_the_real_broker() -> None:
    prefix = f"test-alarms/{uuid.uuid4().hex[:10]}"
    sink = MqttSink("uns", "mqtt://127.0.0.1:1883", topic=prefix, retain=True)
    alarm = f"{P1}/hi"
    topic = f"{prefix}/{alarm}"
    async with aiomqtt.Client("127.0.0.1", 1883, timeout=5) as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        engine = AlarmEngine(factory(LIFECYCLE), None, sinks=[sink], settle=0, tick_interval=3600)
        async with engine:
            rig = Rig(engine, MemorySink())
            await rig.feed(f"{P1}/pressure", [1, 2], [260, 200])
            await engine.manager.acknowledge(alarm, "erin", "ok")
            got: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                async for message in client.messages:
                    assert str(message.topic) == topic
                    assert isinstance(message.payload, bytes)
                    got.append(json.loads(message.payload))
                    if len(got) == 3:
                        break
    assert [(n["transition"], n["state"]) for n in got] == [
        ("activated", "unack_active"),
        ("cleared", "rtn_unack"),
        ("acknowledged", "normal"),
    ]
    assert got[2]["user"] == "erin"
    # retained: a late subscriber sees the last state; then clear the retained message
    async with aiomqtt.Client("127.0.0.1", 1883, timeout=5) as late:
        await late.subscribe(topic, qos=1)
        async with asyncio.timeout(10):
            async for message in late.messages:
                assert message.retain
                assert isinstance(message.payload, bytes)
                assert json.loads(message.payload)["state"] == "normal"
                break
        await late.publish(topic, b"", retain=True)


# -- through the pipeline into the historian ---------------------------------------------------


async def _pipeline(h: Historian, f: Factory, engine: AlarmEngine) -> Pipeline:
    ids = await h.register_signals(signal_infos(f))
    routes = {key: Route(ids[s.path], s.data_type) for key, s in f.bindings().items()}
    return Pipeline(h, Mapper(routes), observers=[engine], flush_interval=0.02)


def _raw(address: str, seconds: Sequence[float], values: Sequence[float]) -> RawBatch:
    ts = [T0 + round(s * S) for s in seconds]
    return RawBatch.from_columns("opc", [address] * len(ts), np.array(ts), np.array(values))


async def test_engine_on_a_real_pipeline_and_duckdb_historian(tmp_path: Path) -> None:
    f = factory(LIFECYCLE + STOP)
    url = f"duckdb:{tmp_path / 'h.duckdb'}"
    sink = MemorySink()
    wall = [datetime(2026, 6, 1, tzinfo=UTC)]
    async with open_historian(url) as h:
        engine = AlarmEngine(
            f, h, sinks=[sink], settle=0, tick_interval=3600, clock=lambda: wall[0]
        )
        async with engine:
            pipe = await _pipeline(h, f, engine)
            writer = asyncio.create_task(pipe.run())
            await pipe.sink(_raw("p1.pressure", [1, 2, 3], [240, 265, 270]))
            await pipe.sink(_raw("p2.state", [0, 10], [2, 6]))
            await pipe.close()
            await writer
            await engine.tick(at(T0 + 400 * S))
            await engine.manager.acknowledge(f"{P1}/hi", "alice", "valve stuck")
            assert {a.alarm_id for a in engine.manager.active()} == {
                f"{P1}/hi",
                f"{P2}/long_stop",
            }
        occurrences = await h.read_events(at(T0), at(T0 + 3600 * S), kinds=["alarm"])
        rows = {r["code"]: r for r in occurrences.to_pylist()}
        assert set(rows) == {"hi", "long_stop"}
        hi = rows["hi"]
        assert (hi["asset"], hi["signal"], hi["severity"]) == (P1, f"{P1}/pressure", 750)
        assert hi["ts"] == at(T0 + 2 * S)
        assert hi["end_ts"] is None
        assert json.loads(hi["data"])["state"] == "ack_active"
        assert json.loads(hi["data"])["acked_by"] == "alice"
        assert rows["long_stop"]["ts"] == at(T0 + 310 * S)
        journal = await alarm_log(h, at(T0), at(T0) + timedelta(days=365))
        entries = [(r["code"], json.loads(r["data"])["user"]) for r in journal.to_pylist()]
        assert entries == [("activated", None), ("activated", None), ("acknowledged", "alice")]

    # a restart: the open alarms come back from the historian, and go on from there
    async with open_historian(url) as h:
        engine = AlarmEngine(
            f, h, sinks=[sink], settle=0, tick_interval=3600, clock=lambda: wall[0]
        )
        async with engine:
            s = engine.manager.status(f"{P1}/hi")
            assert (s.state, s.acked_by, s.activated_at) == (
                AlarmState.ACK_ACTIVE,
                "alice",
                at(T0 + 2 * S),
            )
            assert engine.manager.status(f"{P2}/long_stop").state is AlarmState.UNACK_ACTIVE
            pipe = await _pipeline(h, f, engine)
            writer = asyncio.create_task(pipe.run())
            await pipe.sink(_raw("p1.pressure", [500], [100]))  # clears: acked, so normal
            await pipe.close()
            await writer
            assert engine.manager.status(f"{P1}/hi").state is AlarmState.NORMAL
        closed = await h.read_events(at(T0), at(T0 + 3600 * S), kinds=["alarm"])
        hi = next(r for r in closed.to_pylist() if r["code"] == "hi")
        assert hi["end_ts"] == at(T0 + 500 * S)
        assert json.loads(hi["data"])["state"] == "normal"


async def test_runtime_runs_the_alarm_engine_of_the_file(tmp_path: Path) -> None:
    f = factory(LIFECYCLE)
    told: list[str] = []

    async def event_observer(events: pa.Table) -> None:
        told.extend(events.column("kind").to_pylist())

    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h:
        async with Runtime(f, h, flush_interval=0.02, event_observers=[event_observer]) as rt:
            assert rt.alarms is not None
            assert rt.pipeline is not None
            await rt.pipeline.sink(_raw("p2.pressure", [1], [300]))
        events = await h.read_events(at(T0), at(T0 + 60 * S), kinds=["alarm"])
        assert events.column("event_id").to_pylist() == [f"alarm:{P2}/hi:{T0 + S}"]
        assert told == ["alarm", "alarm_log"]  # passed on, e.g. to the Unified Namespace
        async with Runtime(f, h, alarms=False) as rt:
            assert rt.alarms is None

"""A dead Modbus device does not slow the others: counted polls against real servers.

The live devices are real pymodbus servers; the dead ones are the nastiest kinds:

* a TCP peer that accepts the connection and reads every request but never answers (a
  plain asyncio server), on its own connection;
* a unit id behind a gateway that answers *gateway target device failed to respond*
  (0x0B), and one that never answers at all (a pymodbus server with
  ``ignore_missing_devices``), on the same connection as a healthy unit.

Poll counts are the rows the connector delivered to its sink for the healthy point, counted
over a fixed window of ``WINDOW_S`` starting at its first row in the run. With ``poll_ms``
100 the schedule puts exactly ``EXPECTED`` polls in the window (the window ends half a
period early, so that a jitter under 50 ms per poll cannot move a poll across its end).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from _modbus_testserver import Collector, ModbusTestServer, Running, wait_until

from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.modbus import ModbusConnector
from shopfloor.edge.batch import Quality

PERIOD_S = 0.1
WINDOW_S = 3.0
EXPECTED = round(WINDOW_S / PERIOD_S)  # 30 polls at 0, 0.1, …, 2.9 s
LIVE = "unit=1;hr=0"
OPTIONS: dict[str, Any] = {
    "poll_ms": PERIOD_S * 1000,
    "timeout_s": 0.3,
    "retries": 0,
    "reconnect_initial_s": 0.05,
    "reconnect_max_s": 0.2,
    "unit_backoff_initial_s": 0.5,
    "flush_interval_ms": 20,
}


# --------------------------------------------------------------------------- helpers


@dataclass
class Window:
    """The healthy point's polls in one window: count and the largest gap between them."""

    count: int
    max_gap_s: float
    start_us: int

    @property
    def end_us(self) -> int:
        return self.start_us + round((WINDOW_S - PERIOD_S / 2) * 1e6)


def _ts_us(row: dict[str, Any]) -> int:
    return round(row["ts"].timestamp() * 1_000_000)


def _good_ts(sink: Collector, address: str) -> list[int]:
    return [
        _ts_us(r) for r in sink.rows() if r["address"] == address and r["quality"] == Quality.GOOD
    ]


async def measure(sink: Collector, address: str = LIVE) -> Window:
    """Wait (event driven) until the window after the first good row is over; count it."""
    await sink.wait(lambda: len(_good_ts(sink, address)) >= 1)
    start = _good_ts(sink, address)[0]
    end = start + round((WINDOW_S - PERIOD_S / 2) * 1e6)
    await sink.wait(lambda: _good_ts(sink, address)[-1] >= end, within=WINDOW_S + 10)
    ts = [t for t in _good_ts(sink, address) if start <= t < end]
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(ts)]
    return Window(count=len(ts), max_gap_s=max(gaps, default=0.0), start_us=start)


@dataclass
class BlackHole:
    """Accepts TCP connections, reads and discards everything, never answers."""

    port: int = 0
    connections: int = 0
    bytes_in: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                self.bytes_in += len(data)
        writer.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[BlackHole]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            self._server.close()
            for w in self._writers:
                w.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()


@dataclass
class SilentUnitsServer(ModbusTestServer):
    """The test server, but requests to the units in ``silent`` get no answer at all (as
    a gateway whose serial device is unplugged and which does not send 0x0B). pymodbus
    handles each request in its own task, so the other units keep answering."""

    silent: frozenset[int] = frozenset()
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def _action(self, unit: int) -> Any:
        serve = super()._action(unit)
        if unit not in self.silent:
            return serve

        async def never(*args: Any) -> Any:
            await self._release.wait()  # until the server stops
            return await serve(*args)

        return never

    async def stop(self) -> None:
        self._release.set()
        await super().stop()


def max_dead_attempts(window_s: float, initial_s: float) -> int:
    """Most requests a backed-off unit can get in ``window_s``.

    The k-th delay after a failure is drawn from [c/2, c] with c = initial × 2**k (full
    jitter), so n further attempts need at least initial/2 × (2**n − 1) seconds; the first
    attempt may come at the very start of the window.
    """
    n = 0
    while initial_s / 2 * (2 ** (n + 1) - 1) <= window_s:
        n += 1
    return 1 + n


def dead_reads_in(srv: ModbusTestServer, unit: int, first_read: int) -> int:
    return len([r for r in srv.reads()[first_read:] if r.unit == unit])


# --------------------------------------------------------------------------- (a)


async def test_a_silent_tcp_peer_does_not_slow_another_connection() -> None:
    """Two connectors in one event loop; one talks to a peer that never answers."""
    async with ModbusTestServer() as live_srv, BlackHole().serving() as hole:
        # baseline: the live connector alone
        alone = ModbusConnector("live", live_srv.endpoint, [PointSpec(LIVE, "int")], OPTIONS)
        async with Running(alone) as sink:
            baseline = await measure(sink)

        # the same, with a connector to the dead device running in the same loop
        # it retries the silent unit almost at once, so that pymodbus keeps closing the
        # connection and the connector keeps reopening it: as busy as a dead device gets
        hammer = {**OPTIONS, "unit_backoff_initial_s": 0.02, "unit_backoff_max_s": 0.05}
        dead = ModbusConnector(
            "dead", f"modbus://127.0.0.1:{hole.port}", [PointSpec(LIVE, "int")], hammer
        )
        live = ModbusConnector("live", live_srv.endpoint, [PointSpec(LIVE, "int")], OPTIONS)
        async with Running(dead) as dead_sink:
            await wait_until(lambda: hole.bytes_in > 0)  # it is connected and asking
            async with Running(live) as sink:
                with_dead = await measure(sink)
            dead_requests = dead.requests_total
            dead_connections = hole.connections
        assert not [r for r in dead_sink.rows() if r["quality"] == Quality.GOOD]

    print(
        f"\n(a) live polls in {WINDOW_S:g} s: alone {baseline.count} "
        f"(max gap {baseline.max_gap_s * 1000:.0f} ms), next to a dead peer "
        f"{with_dead.count} (max gap {with_dead.max_gap_s * 1000:.0f} ms); dead connector "
        f"sent {dead_requests} requests over {dead_connections} TCP connection(s)"
    )
    # the dead connector was busy failing all along (timeouts, pymodbus closing, reconnects)
    assert dead_requests >= 5
    assert dead_connections >= 2
    for w in (baseline, with_dead):
        assert abs(w.count - EXPECTED) <= 0.1 * EXPECTED
    assert with_dead.count == baseline.count
    assert with_dead.max_gap_s < 2 * PERIOD_S  # no poll was held back by the dead one


# --------------------------------------------------------------------------- (b)


async def _healthy_next_to_dead_unit(
    srv: ModbusTestServer, options: dict[str, Any]
) -> tuple[Window, Window, int, int, ModbusConnector]:
    """Baseline (unit 1 alone), then unit 1 and the dead unit 2 on one connection."""
    alone = ModbusConnector("gw", srv.endpoint, [PointSpec(LIVE, "int")], options)
    async with Running(alone) as sink:
        baseline = await measure(sink)

    points: Sequence[PointSpec] = [PointSpec(LIVE, "int"), PointSpec("unit=2;hr=0", "int")]
    c = ModbusConnector("gw", srv.endpoint, points, options)
    first_read = len(srv.reads())
    async with Running(c) as sink:
        window = await measure(sink)
        reads = srv.reads()[first_read:]
    dead_in_run = sum(r.unit == 2 for r in reads)
    assert sink.latest()["unit=2;hr=0"]["quality"] == Quality.BAD_COMM_FAILURE
    return baseline, window, dead_in_run, c.status.reconnects, c


async def test_a_unit_answering_0x0b_does_not_slow_the_healthy_unit() -> None:
    async with ModbusTestServer(units=(1, 2)) as srv:
        srv.fail[(2, "hr")] = [(0, 65535, 0x0B)]  # gateway: target device failed to respond
        baseline, window, dead_reads, reconnects, _ = await _healthy_next_to_dead_unit(srv, OPTIONS)
    # Bound: the dead unit is asked at most max_dead_attempts() times per window (its
    # backoff), and each attempt holds the connection for one round trip (≪ the period),
    # so the healthy unit loses no poll: the same count as alone.
    bound = max_dead_attempts(WINDOW_S + 1.0, OPTIONS["unit_backoff_initial_s"])
    print(
        f"\n(b) 0x0B: healthy polls in {WINDOW_S:g} s: alone {baseline.count}, next to the "
        f"dead unit {window.count} (max gap {window.max_gap_s * 1000:.0f} ms); dead unit "
        f"asked {dead_reads} times in the run (bound {bound})"
    )
    assert dead_reads <= bound
    assert abs(window.count - EXPECTED) <= 0.1 * EXPECTED
    assert window.count == baseline.count
    assert window.max_gap_s < 2 * PERIOD_S
    assert reconnects == 0


async def test_a_unit_that_never_answers_costs_the_healthy_unit_its_backoff_bound() -> None:
    async with SilentUnitsServer(units=(1, 2), silent=frozenset({2})) as srv:
        baseline, window, dead_reads, reconnects, _ = await _healthy_next_to_dead_unit(srv, OPTIONS)
    # Bound: requests are serialised on the connection, so each attempt at the dead unit
    # holds the healthy unit back for up to timeout_s × (retries + 1) = 0.3 s, i.e. at most
    # ceil(0.3 / 0.1) = 3 of its polls (missed slots are skipped, not bunched). The backoff
    # (0.5 s, doubling, full jitter) allows at most max_dead_attempts() attempts in the run.
    hold_s = OPTIONS["timeout_s"] * (OPTIONS["retries"] + 1)
    lost_per_attempt = math.ceil(hold_s / PERIOD_S)
    run_s = WINDOW_S + 1.0  # the window plus the time to the first row and after it
    bound = max_dead_attempts(run_s, OPTIONS["unit_backoff_initial_s"])
    print(
        f"\n(b) timeout: healthy polls in {WINDOW_S:g} s: alone {baseline.count}, next to "
        f"the silent unit {window.count} (max gap {window.max_gap_s * 1000:.0f} ms); silent "
        f"unit asked {dead_reads} times in the run (bound {bound}); allowed loss "
        f"{dead_reads} × {lost_per_attempt} polls; reconnects {reconnects}"
    )
    assert dead_reads <= bound
    assert window.count >= baseline.count - dead_reads * lost_per_attempt
    assert window.count >= EXPECTED - bound * lost_per_attempt
    assert reconnects == 0  # pymodbus did not close the connection over the silent unit


async def test_many_silent_units_do_not_close_the_shared_connection() -> None:
    """Five silent units in a row exceed pymodbus's own limit (retries + 3 requests without
    any answer, then it closes the connection); the healthy unit keeps the connection."""
    async with SilentUnitsServer(units=tuple(range(1, 8)), silent=frozenset(range(2, 8))) as srv:
        silent = [PointSpec(f"unit={u};hr=0", "int") for u in range(2, 8)]
        options = {**OPTIONS, "timeout_s": 0.1, "unit_backoff_initial_s": 0.3}
        c = ModbusConnector("gw", srv.endpoint, [PointSpec(LIVE, "int"), *silent], options)
        first_read = len(srv.reads())
        async with Running(c) as sink:
            await sink.wait(
                lambda: (
                    all(
                        r["quality"] == Quality.BAD_COMM_FAILURE
                        for a, r in sink.latest().items()
                        if a != LIVE
                    )
                    and len(sink.latest()) == 7
                )
            )
            # two full rounds of backoff for every silent unit
            await wait_until(
                lambda: all(dead_reads_in(srv, u, first_read) >= 3 for u in range(2, 8)),
                within=15,
            )
            assert c.status.reconnects == 0
            assert c.status.state == "connected"
            assert sink.latest()[LIVE]["quality"] == Quality.GOOD
        assert not [r for r in sink.rows() if r["quality"] == Quality.BAD_NOT_CONNECTED]

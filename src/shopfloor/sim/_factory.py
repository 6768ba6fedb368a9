"""The simulated factory served over OPC UA: the engine paced by the wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from shopfloor.sim._build import FactoryLike, Layout, build_layout
from shopfloor.sim._engine import FactorySimulation
from shopfloor.sim._opcua import LineServer, override_endpoint

__all__ = ["Simulator"]

log = logging.getLogger(__name__)

_CHUNK = 500  # ticks stepped between yields to the event loop when fast-forwarding


class Simulator:
    """A factory file's machines as OPC UA servers, driven by a :class:`FactorySimulation`.

    ``async with Simulator(factory, speed=60, seed=42) as sim:`` starts one asyncua server
    per OPC UA connection of the file and a pacing task that advances simulated time by
    ``speed`` simulated seconds per real second (in whole ticks of ``tick_s``), publishing
    the changed values at most every ``publish_interval_s`` real seconds with the simulated
    time as source timestamp. :meth:`run_for` and :meth:`step_until` fast-forward instead.

    ``start`` is the simulated time of tick 0 (default: now, to the second). ``host``,
    ``port_offset`` and ``endpoint_override`` (connection name → endpoint) move the servers,
    e.g. to free ports in tests. ``paused=True`` starts without pacing.
    """

    def __init__(
        self,
        factory: FactoryLike,
        *,
        speed: float = 60.0,
        seed: int = 42,
        start: datetime | None = None,
        tick_s: float = 1.0,
        host: str | None = None,
        port_offset: int = 0,
        endpoint_override: Mapping[str, str] | None = None,
        publish_interval_s: float = 0.1,
        paused: bool = False,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if start is None:
            start = datetime.now(UTC).replace(microsecond=0)
        self.factory = factory
        self.speed = float(speed)
        self.layout: Layout = build_layout(factory)
        self.engine = FactorySimulation(
            self.layout.stations, self.layout.signals, seed=seed, start=start, tick_s=tick_s
        )
        overrides = dict(endpoint_override or {})
        self.endpoints: dict[str, str] = {
            name: overrides.get(name)
            or override_endpoint(endpoint, host=host, port_offset=port_offset)
            for name, endpoint in self.layout.endpoints.items()
        }
        self.publish_interval_s = publish_interval_s
        self._paused = paused
        self._servers: list[LineServer] = []
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._anchor_wall = time.monotonic()
        self._anchor_ticks = 0
        self._behind = False

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            for name, endpoint in self.endpoints.items():
                server = LineServer(
                    name,
                    endpoint,
                    self.layout.objects[name],
                    self.layout.served[name],
                    self.inject_fault,
                )
                await server.start()
                stack.push_async_callback(server.stop)
                self._servers.append(server)
            await self._publish()
            group = await stack.enter_async_context(asyncio.TaskGroup())
            stack.callback(self._stopping.set)  # runs before the group waits for the pacer
            self._anchor()
            group.create_task(self._pace(), name="shopfloor-sim-pacer")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._servers.clear()
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ time
    @property
    def now(self) -> datetime:
        """The current simulated time (UTC)."""
        return self.engine.now

    @property
    def paused(self) -> bool:
        """Whether the wall clock currently drives the simulation."""
        return self._paused

    def pause(self) -> None:
        """Stop advancing with the wall clock (fast-forwarding still works)."""
        self._paused = True

    def resume(self) -> None:
        """Advance with the wall clock again, from the current simulated time."""
        self._anchor()
        self._paused = False
        self._wake.set()

    def _anchor(self) -> None:
        self._anchor_wall = time.monotonic()
        self._anchor_ticks = self.engine.ticks

    async def _pace(self) -> None:
        tick = self.engine.tick_s
        while not self._stopping.is_set():
            if not self._paused:
                async with self._lock:
                    elapsed = time.monotonic() - self._anchor_wall
                    due = self._anchor_ticks + math.floor(elapsed * self.speed / tick)
                    due -= self.engine.ticks
                    limit = max(math.ceil(5.0 * self.speed / tick), _CHUNK)
                    if due > limit:  # cannot keep up: drop the backlog, keep whole ticks
                        if not self._behind:
                            log.warning("simulation falling behind real time; slowing down")
                        self._behind = True
                        due = limit
                        self._anchor()
                    elif self._behind and due < limit // 2:
                        self._behind = False
                        log.info("simulation keeps up with real time again")
                    await self._step(due)
                    await self._publish()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.publish_interval_s)

    async def _step(self, ticks: int) -> None:
        self._apply_client_writes()
        while ticks > 0:
            n = min(ticks, _CHUNK)
            self.engine.step(n)
            ticks -= n
            if ticks:
                await asyncio.sleep(0)

    def _apply_client_writes(self) -> None:
        for server in self._servers:
            for index, value in server.client_writes():
                self.engine.set_setpoint(self.engine.signals[index].path, value)

    async def _publish(self) -> None:
        if not self._servers:
            return
        snapshot = self.engine.snapshot()
        when = self.engine.now
        for server in self._servers:
            await server.publish(snapshot, self.engine.decode, when)

    async def run_for(self, simulated_seconds: float) -> None:
        """Fast-forward ``simulated_seconds`` of simulated time now, then publish."""
        async with self._lock:
            await self._step(max(math.floor(simulated_seconds / self.engine.tick_s + 1e-9), 0))
            await self._publish()
            self._anchor()

    async def step_until(
        self, condition: Callable[[Simulator], bool], *, timeout_s: float = 3600.0
    ) -> float:
        """Fast-forward tick by tick until ``condition(self)``; return the simulated seconds.

        Raises :class:`TimeoutError` when ``timeout_s`` simulated seconds pass first.
        """
        async with self._lock:
            self._apply_client_writes()
            started = self.engine.ticks
            limit = started + math.ceil(timeout_s / self.engine.tick_s)
            try:
                while not condition(self):
                    if self.engine.ticks >= limit:
                        raise TimeoutError(f"condition not met within {timeout_s} simulated s")
                    self.engine.step()
                    if (self.engine.ticks - started) % _CHUNK == 0:
                        await asyncio.sleep(0)
            finally:
                await self._publish()
                self._anchor()
            return (self.engine.ticks - started) * self.engine.tick_s

    async def publish(self) -> None:
        """Write the current values to the servers now (they are written after every step)."""
        async with self._lock:
            self._apply_client_writes()
            await self._publish()

    # ------------------------------------------------------------------ commands & reading
    def inject_fault(self, equipment_path: str, duration_s: float) -> None:
        """Put ``equipment_path`` into an unplanned stop for ``duration_s`` simulated s."""
        self.engine.inject_fault(equipment_path, duration_s)
        self._wake.set()

    def set_setpoint(self, signal_path: str, value: float) -> None:
        """Change a setpoint as if an operator did (published with the next step)."""
        self.engine.set_setpoint(signal_path, value)

    def counters(self) -> dict[str, int]:
        """Every integer counter signal's current value, keyed by signal path."""
        return self.engine.counters()

    def values(self) -> dict[str, Any]:
        """Every simulated signal's current value, keyed by signal path."""
        return self.engine.values()

    def state_of(self, path: str) -> str:
        """Standard state of an equipment (or of the equipment of a signal path)."""
        return self.engine.state_of(path)

    def states(self) -> dict[str, str]:
        """Standard state of every simulated equipment."""
        return self.engine.states()

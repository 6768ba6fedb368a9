"""OPC UA connector throughput: how many 1 Hz monitored items one connector keeps up with.

An asyncua server runs in a *separate process* (so that its CPU does not count against the
connector) with N ``Double`` variables that it updates in bulk once per second, stamping
each with the source time. One :class:`~shopfloor.connectors.opcua.OpcUaConnector` in this
process monitors all N (1000 ms sampling and publishing) and the benchmark measures, after
a warm-up, for S seconds:

* received values per second against the expected N/s,
* the lag between each value's source timestamp and the moment the sink got it (p50/p99),
  and whether it grows (second half of the run against the first),
* the CPU this process used (``time.process_time``), as percent of one core per 1000 items.

The connector *keeps up* when it received ≥ 98 % of the expected values and the lag did
not grow (the second half's median lag within 500 ms of the first half's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow.compute as pc

from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.opcua import OpcUaConnector
from shopfloor.edge.batch import RawBatch

__all__ = ["DEFAULT_RAMP", "OpcUaBenchResult", "run_opcua_bench", "run_opcua_ramp"]

logger = logging.getLogger(__name__)

DEFAULT_RAMP: tuple[int, ...] = (1000, 2500, 5000, 10000, 20000)
_NS = "urn:shopfloor:bench"
_KEEP_UP_RATIO = 0.98
_LAG_GROWTH_MS = 500.0
_GRACE_S = 2.5


@dataclass(frozen=True, slots=True)
class OpcUaBenchResult:
    """The figures of one run with ``items`` monitored items."""

    items: int
    seconds: float
    keeping_up: bool
    values: int
    values_per_s: float
    expected_values_per_s: float
    received_ratio: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_growth_ms: float
    cpu_percent: float
    cpu_percent_per_1000_items: float

    def as_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _address(i: int) -> str:
    return f"ns=2;s=bench/v{i}"


async def _serve(port: int, items: int) -> None:
    """The server process: N variables updated in bulk every second until stdin closes."""
    from asyncua import ua
    from asyncua.server.server import Server

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    idx = await server.register_namespace(_NS)
    folder = await server.nodes.objects.add_folder(f"ns={idx};s=bench", f"{idx}:bench")
    nodeids = []
    for i in range(items):
        var = await folder.add_variable(
            f"ns={idx};s=bench/v{i}", f"{idx}:v{i}", ua.Variant(0.0, ua.VariantType.Double)
        )
        nodeids.append(var.nodeid)
    loop = asyncio.get_running_loop()
    # The parent closes our stdin to stop us (and so does its death).
    stdin_closed = loop.run_in_executor(None, sys.stdin.buffer.read)
    async with server:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        tick = 0
        next_at = time.monotonic()
        while not stdin_closed.done():
            tick += 1
            ts: Any = datetime.now(UTC)  # asyncua types it as its DateTime subclass
            for i, nid in enumerate(nodeids):
                value = ua.Variant(float(tick * 1000 + i % 1000), ua.VariantType.Double)
                await server.write_attribute_value(
                    nid, ua.DataValue(value, SourceTimestamp=ts, ServerTimestamp=ts)
                )
            next_at += 1.0
            await asyncio.wait({stdin_closed}, timeout=max(0.0, next_at - time.monotonic()))


class _Meter:
    """The sink: counts values stamped inside the window and samples the lag."""

    def __init__(self) -> None:
        self.values = 0
        self.measuring = False
        self.window_us = (0, 0)
        self.in_window = 0
        self.ticks: set[int] = set()
        self.lags: list[np.ndarray[Any, Any]] = []
        self.lag_times: list[float] = []

    async def __call__(self, batch: RawBatch) -> None:
        n = len(batch)
        self.values += n
        if not self.measuring or not n:
            return
        now_us = time.time_ns() // 1000
        ts = pc.cast(batch.table.column("ts"), "int64").to_numpy()
        lo, hi = self.window_us
        mask = (ts >= lo) & (ts < hi)
        if mask.any():
            self.in_window += int(mask.sum())
            self.ticks.update(int(t) for t in np.unique(ts[mask]))
            self.lags.append((now_us - ts[mask]) / 1000.0)
            self.lag_times.append(time.monotonic())

    def expected_ticks(self) -> int:
        """Server update rounds in the window (a round of which nothing came counts too)."""
        if not self.ticks:
            return 0
        ordered = np.array(sorted(self.ticks), dtype=np.int64)
        missed = np.maximum(np.rint(np.diff(ordered) / 1e6) - 1, 0).sum()
        return len(ordered) + int(missed)


async def _wait(cond: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"OPC UA bench: timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _measure(endpoint: str, items: int, seconds: float) -> OpcUaBenchResult:
    points = [PointSpec(_address(i), "float", {"sampling_interval_ms": 1000}) for i in range(items)]
    conn = OpcUaConnector(
        "bench-opcua",
        endpoint,
        points,
        {"publishing_interval_ms": 1000, "timeout_s": 30, "watchdog_interval_s": 5},
    )
    meter = _Meter()
    task = asyncio.create_task(conn.run(meter), name="bench-opcua-connector")
    try:
        await _wait(lambda: conn.status.state == "connected", 120, "the connector to connect")
        # Warm-up: the initial values and two full update rounds.
        await _wait(lambda: meter.values >= 3 * items, 30, "the first updates")
        now_us = time.time_ns() // 1000
        meter.window_us = (now_us, now_us + int(seconds * 1e6))
        meter.measuring = True
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        # Values stamped inside the window may still be on their way: wait for them.
        await asyncio.sleep(_GRACE_S)
        cpu1, t1 = time.process_time(), time.monotonic()
        meter.measuring = False
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    wall = t1 - t0
    ticks = meter.expected_ticks()
    received = meter.in_window
    lags = np.concatenate(meter.lags) if meter.lags else np.array([0.0])
    mid = t0 + seconds / 2
    first = [a for a, t in zip(meter.lags, meter.lag_times, strict=True) if t < mid]
    second = [a for a, t in zip(meter.lags, meter.lag_times, strict=True) if t >= mid]
    growth = 0.0
    if first and second:
        growth = float(np.median(np.concatenate(second)) - np.median(np.concatenate(first)))
    expected = float(items)
    per_s = received / ticks if ticks else 0.0  # the server updates once per second
    ratio = per_s / expected
    cpu_percent = (cpu1 - cpu0) / wall * 100.0
    return OpcUaBenchResult(
        items=items,
        seconds=float(ticks),
        keeping_up=bool(ratio >= _KEEP_UP_RATIO and growth <= _LAG_GROWTH_MS),
        values=received,
        values_per_s=per_s,
        expected_values_per_s=expected,
        received_ratio=ratio,
        lag_p50_ms=float(np.percentile(lags, 50)),
        lag_p99_ms=float(np.percentile(lags, 99)),
        lag_growth_ms=growth,
        cpu_percent=cpu_percent,
        cpu_percent_per_1000_items=cpu_percent / (items / 1000.0),
    )


async def run_opcua_ramp(
    items: list[int] | tuple[int, ...] = DEFAULT_RAMP, seconds: float = 10.0
) -> list[OpcUaBenchResult]:
    """Run :func:`run_opcua_bench` for each N in ``items`` (ascending) against one server.

    Stops after the first N that does not keep up. The server process holds max(N)
    variables and updates them all; each step monitors the first N.
    """
    sizes = sorted(set(items))
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shopfloor.bench.opcua",
        str(port),
        str(sizes[-1]),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    results: list[OpcUaBenchResult] = []
    try:
        async with asyncio.timeout(600):
            line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("OPC UA bench: the server process did not start")
        endpoint = f"opc.tcp://127.0.0.1:{port}/bench/"
        for n in sizes:
            result = await _measure(endpoint, n, seconds)
            logger.info("OPC UA bench: %s", result)
            results.append(result)
            if not result.keeping_up:
                break
    finally:
        proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return results


async def run_opcua_bench(items: int = 1000, seconds: float = 10.0) -> OpcUaBenchResult:
    """One run with ``items`` monitored items for ``seconds`` (server in its own process)."""
    return (await run_opcua_ramp([items], seconds))[0]


def report(results: list[OpcUaBenchResult]) -> dict[str, Any]:
    """The JSON document: the largest N that kept up (or the first N), plus every step."""
    kept = [r for r in results if r.keeping_up]
    headline = max(kept, key=lambda r: r.items) if kept else results[0]
    return {
        "benchmark": "opcua",
        **headline.as_dict(),
        "max_items_keeping_up": headline.items if kept else 0,
        "target_items": 10_000,
        "steps": [r.as_dict() for r in results],
    }


if __name__ == "__main__":  # the server process: python -m shopfloor.bench.opcua PORT ITEMS
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_serve(int(sys.argv[1]), int(sys.argv[2])))

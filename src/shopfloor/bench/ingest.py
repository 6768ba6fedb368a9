"""Ingest benchmark: Sparkplug edges → Mosquitto → our host → pipeline → DuckDB historian.

One run, three processes besides the broker:

* the **edges** — :class:`~shopfloor.sim.SparkplugEdgeSimulator` with ``devices`` devices
  (100 per edge node) of ``metrics`` metrics at ``rate`` Hz, in a spawned process of its own
  so that its CPU is not the host's (both are reported);
* the **host** — this process: a :class:`~shopfloor.runtime.Runtime` with one Sparkplug
  connection whose ``auto_area`` creates a signal per metric from the births (the signal
  creation happens once, during the warm-up, and is not measured; in the steady state the
  mapper's routes are the same as for pre-registered signals), the pipeline and a DuckDB
  historian in a temporary directory;
* the **raw subscriber** — after the host has stopped, with the same edges still publishing
  at the same rate, a plain aiomqtt client in a spawned process that only counts the DDATA
  messages (× metrics per message): what the broker delivers to a do-nothing Python client.

Figures: ``values_per_s`` stored (historian commits) over the measurement window;
``backlog_grew`` — whether the values published by the edges but not yet stored grew by more
than one second of data over the window (a linear fit of the backlog samples, also the
pipeline queue's depth); ``latency_p50_ms`` / ``latency_p99_ms`` from each metric's edge
timestamp to the historian commit that stored it; ``peak_rss_mb`` of the host process; CPU
of host and edges; ``raw_broker_values_per_s`` and ``ratio`` (= ``ingest_ratio``,
stored / raw). When the stored rate misses the offered one, the host is profiled with
cProfile for ``profile_s`` seconds and the top costs are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import math
import multiprocessing as mp
import os
import pstats
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.connectors._sparkplug_payload import DataType
from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian._duckdb import DuckDBHistorian
from shopfloor.historian.base import DataType as SignalType
from shopfloor.historian.base import SignalInfo

__all__ = ["DEVICES_PER_NODE", "IngestBenchConfig", "run_ingest_bench"]

DEVICES_PER_NODE: Final = 100
"""Devices per simulated edge node (one MQTT client each)."""

TARGET_FRACTION: Final = 0.95
"""The run meets its target when it stores at least this share of the offered rate."""

_MAX_LATENCY_MS: Final = 300_000
_CONNECTION: Final = "edges"
_AREA: Final = "bench/edges"

Progress = Callable[[str, float, float], None]
"""``progress(phase, done, total)``: called as a phase advances."""


@dataclass(frozen=True, slots=True)
class IngestBenchConfig:
    """Sizes of an ingest benchmark run."""

    devices: int = 3000
    metrics: int = 50
    rate: float = 1.0
    seconds: float = 60.0
    broker: str = "mqtt://127.0.0.1:1883"
    raw_seconds: float | None = None
    """Length of the raw-subscriber measurement (default: ``min(seconds, 10)``)."""
    profile: bool | None = None
    """Profile the host: always (True), never (False), when the target is missed (None)."""
    profile_s: float = 10.0
    warmup_timeout_s: float = 120.0
    seed: int = 42

    def layout(self) -> tuple[int, int]:
        """``(edge nodes, devices per node)`` for ``devices`` (rounded up to fill nodes)."""
        nodes = max(1, math.ceil(self.devices / DEVICES_PER_NODE))
        return nodes, math.ceil(self.devices / nodes)

    def broker_address(self) -> tuple[str, int]:
        """Host and port of :attr:`broker`."""
        parts = urlsplit(self.broker)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError(f"broker {self.broker!r} is not mqtt://host[:port]")
        return parts.hostname, parts.port or 1883


# --------------------------------------------------------------------------- child processes


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _edge_main(
    host: str,
    port: int,
    group: str,
    nodes: int,
    per_node: int,
    metrics: int,
    rate: float,
    seed: int,
    published: Synchronized[int],
    ready: MpEvent,
    stop: MpEvent,
    out: Connection,
) -> None:
    """The edge process: run the simulator until ``stop``; send its figures on ``out``."""
    from shopfloor.sim._sparkplug import SparkplugEdgeSimulator

    async def main() -> dict[str, Any]:
        sim = SparkplugEdgeSimulator(host, port, group, nodes, per_node, metrics, rate, seed)
        async with sim:
            ready.set()
            cpu0, t0 = _cpu_s(), time.monotonic()
            while not stop.is_set():
                published.value = sim.values_published
                await asyncio.sleep(0.1)
            wall = time.monotonic() - t0
            return {
                "edge_cpu_pct": round(100.0 * (_cpu_s() - cpu0) / wall, 1),
                "edge_values_published": sim.values_published,
                "edge_messages_published": sim.messages_published,
                "edge_late_ticks": sim.late_ticks,
                "edge_rebirths_answered": sim.rebirths_answered,
            }

    try:
        out.send(asyncio.run(main()))
    except Exception as exc:  # reported to the parent, which raises
        ready.set()
        out.send({"error": f"{type(exc).__name__}: {exc}"})


def _raw_main(
    host: str, port: int, group: str, metrics: int, seconds: float, out: Connection
) -> None:
    """The raw subscriber: count DDATA messages for ``seconds`` after a 1 s settle."""
    import aiomqtt

    async def main() -> dict[str, Any]:
        count = 0
        counting = False
        async with aiomqtt.Client(host, port, identifier=f"bench-raw-{uuid.uuid4().hex[:8]}") as c:
            await c.subscribe(f"spBv1.0/{group}/DDATA/#", qos=0)

            async def consume() -> None:
                nonlocal count
                async for _ in c.messages:
                    if counting:
                        count += 1

            task = asyncio.create_task(consume())
            await asyncio.sleep(1.0)
            counting, cpu0, t0 = True, _cpu_s(), time.monotonic()
            await asyncio.sleep(seconds)
            counting = False
            wall, cpu = time.monotonic() - t0, _cpu_s() - cpu0
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return {
            "raw_broker_values_per_s": round(count * metrics / wall),
            "raw_broker_messages_per_s": round(count / wall),
            "raw_cpu_pct": round(100.0 * cpu / wall, 1),
        }

    try:
        out.send(asyncio.run(main()))
    except Exception as exc:
        out.send({"error": f"{type(exc).__name__}: {exc}"})


# --------------------------------------------------------------------------- the host


class _TimedHistorian(DuckDBHistorian):
    """A DuckDB historian that histograms edge-timestamp → commit latency (1 ms bins)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.recording = False
        self.latency_hist = np.zeros(_MAX_LATENCY_MS + 1, np.int64)

    async def append(self, batch: ReadingBatch) -> int:
        n = await super().append(batch)
        if self.recording and batch.table.num_rows:
            now_us = time.time_ns() // 1000
            ts = pc.cast(batch.table.column("ts"), pa.int64()).to_numpy()
            lat = np.clip((now_us - ts) // 1000, 0, _MAX_LATENCY_MS)
            self.latency_hist += np.bincount(lat, minlength=_MAX_LATENCY_MS + 1)
        return n


def _percentile_ms(hist: np.ndarray[Any, np.dtype[np.int64]], q: float) -> float | None:
    total = int(hist.sum())
    if total == 0:
        return None
    return float(np.searchsorted(np.cumsum(hist), math.ceil(q * total)))


def _top_costs(prof: cProfile.Profile, n: int = 12) -> list[dict[str, Any]]:
    stats = pstats.Stats(prof)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    total = sum(v[2] for v in raw.values()) or 1.0
    return [
        {
            "function": f"{Path(file).name}:{line}({func})",
            "tottime_s": round(tt, 3),
            "cumtime_s": round(ct, 3),
            "calls": nc,
            "share": round(tt / total, 3),
        }
        for (file, line, func), (_cc, nc, tt, ct, _callers) in rows
    ]


def _signal_infos(nodes: int, per_node: int, metrics: int) -> list[SignalInfo]:
    """The signals the runtime's ``auto_area`` derives from the simulator's births."""
    from shopfloor.sim._sparkplug import device_type_of, metric_name

    kinds: dict[DataType, SignalType] = {
        DataType.Double: "float",
        DataType.Int32: "int",
        DataType.Boolean: "bool",
        DataType.String: "string",
    }
    per_metric = [(metric_name(j), kinds[device_type_of(j)]) for j in range(metrics)]
    out: list[SignalInfo] = []
    for n in range(nodes):
        edge = f"node{n:03d}"
        out.append(SignalInfo(f"{_AREA}/{edge}/bdseq", "int"))
        out.append(SignalInfo(f"{_AREA}/{edge}/node-control-rebirth", "bool"))
        for k in range(per_node):
            asset = f"{_AREA}/{edge}-dev{n * per_node + k:05d}"
            out.extend(SignalInfo(f"{asset}/{name}", t) for name, t in per_metric)
    return out


def _factory(group: str, broker: str) -> Any:
    from shopfloor.model import parse_factory

    return parse_factory(
        {
            "enterprise": {"id": "bench", "name": "Bench", "sites": [{"id": "edges", "name": "E"}]},
            "connections": [
                {
                    "name": _CONNECTION,
                    "protocol": "sparkplug",
                    "endpoint": broker,
                    "options": {"auto_area": _AREA, "groups": [group]},
                }
            ],
        },
        "bench-ingest.yaml",
    )


async def _wait(cond: Callable[[], bool], wait_s: float, what: str) -> None:
    deadline = time.monotonic() + wait_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"ingest bench: timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _receive(conn: Connection, what: str, wait_s: float = 60.0) -> dict[str, Any]:
    ok = await asyncio.to_thread(conn.poll, wait_s)
    if not ok:
        raise TimeoutError(f"ingest bench: no figures from the {what} process")
    doc: dict[str, Any] = conn.recv()
    if "error" in doc:
        raise RuntimeError(f"ingest bench: the {what} process failed: {doc['error']}")
    return doc


async def _measure(
    cfg: IngestBenchConfig,
    historian: _TimedHistorian,
    figures: dict[str, Any],
    group: str,
    published: Synchronized[int],
    ready: MpEvent,
    edge: Any,
    edge_rx: Connection,
    report: Progress,
) -> None:
    """The host phase: start the runtime and the edges, warm up, measure, maybe profile."""
    from shopfloor.runtime import Runtime

    devices, offered = figures["devices"], figures["offered_values_per_s"]
    async with Runtime(_factory(group, cfg.broker), historian) as rt:
        connector = rt.connectors[0]
        assert rt.pipeline is not None
        stats = rt.pipeline.stats
        await _wait(lambda: connector.status.state == "connected", 15.0, "the host to connect")
        report("births", 0, 1)
        edge.start()
        if not await asyncio.to_thread(ready.wait, 60.0):
            raise TimeoutError("ingest bench: the edges did not come up")
        if edge_rx.poll():
            await _receive(edge_rx, "edge", 0.0)
        report("births", 1, 1)
        # Warm-up: every metric's signal created, then a few seconds of steady flow.
        expected = devices * cfg.metrics
        t_w = time.monotonic()
        await _wait(
            lambda: len(rt.discovered) >= expected,
            cfg.warmup_timeout_s,
            f"{expected:,} signals to be created",
        )
        figures["warmup_s"] = round(time.monotonic() - t_w, 1)
        await asyncio.sleep(min(3.0, cfg.seconds))
        # Measurement.
        historian.recording = True
        t0, cpu0 = time.monotonic(), _cpu_s()
        stored0, pub0 = stats.values_stored, published.value
        samples: list[tuple[float, int, int]] = []
        max_queue = 0
        while (now := time.monotonic()) - t0 < cfg.seconds:
            backlog = (published.value - pub0) - (stats.values_stored - stored0)
            samples.append((now - t0, backlog, stats.queue_depth))
            max_queue = max(max_queue, rt.pipeline._queue.qsize())
            report("ingest", now - t0, cfg.seconds)
            await asyncio.sleep(0.5)
        wall, cpu = time.monotonic() - t0, _cpu_s() - cpu0
        stored = stats.values_stored - stored0
        historian.recording = False
        report("ingest", cfg.seconds, cfg.seconds)
        values_per_s = stored / wall
        t = np.array([s[0] for s in samples])
        b = np.array([s[1] for s in samples], dtype=np.float64)
        slope = float(np.polyfit(t, b, 1)[0]) if len(samples) >= 3 else 0.0
        grew = slope * wall > max(offered, 1.0)  # more than a second of data
        sp: Any = connector
        figures.update(
            {
                "values_per_s": round(values_per_s),
                "target_met": values_per_s >= TARGET_FRACTION * offered,
                "backlog_grew": bool(grew),
                "backlog_slope_values_per_s": round(slope, 1),
                "backlog_end_values": int(b[-1]) if len(b) else 0,
                "pipeline_queue_max": max_queue,
                "latency_p50_ms": _percentile_ms(historian.latency_hist, 0.50),
                "latency_p99_ms": _percentile_ms(historian.latency_hist, 0.99),
                "host_cpu_pct": round(100.0 * cpu / wall, 1),
                "host_seq_gaps": sp.metrics.seq_gaps_total,
                "host_rebirth_requests": sp.metrics.rebirth_requests_total,
                "host_dead_letters": sp.metrics.dead_letters_total + stats.dead_letters,
                "signals_created": len(rt.discovered),
            }
        )
        if cfg.profile or (cfg.profile is None and not figures["target_met"]):
            prof = cProfile.Profile()
            report("profile", 0, cfg.profile_s)
            prof.enable()
            try:
                await asyncio.sleep(cfg.profile_s)
            finally:
                prof.disable()
            report("profile", cfg.profile_s, cfg.profile_s)
            figures["profile_s"] = cfg.profile_s
            figures["profile_top"] = _top_costs(prof)
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def run_ingest_bench(
    cfg: IngestBenchConfig, workdir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the benchmark (DuckDB file in ``workdir``) and return the figures."""
    report = progress or (lambda phase, done, total: None)
    host, port = cfg.broker_address()
    nodes, per_node = cfg.layout()
    devices = nodes * per_node
    offered = devices * cfg.metrics * cfg.rate
    group = f"bench-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    published: Synchronized[int] = ctx.Value("q", 0, lock=False)
    ready, stop = ctx.Event(), ctx.Event()
    edge_rx, edge_tx = ctx.Pipe(duplex=False)
    edge = ctx.Process(
        target=_edge_main,
        args=(
            host,
            port,
            group,
            nodes,
            per_node,
            cfg.metrics,
            cfg.rate,
            cfg.seed,
            published,
            ready,
            stop,
            edge_tx,
        ),
        name="bench-ingest-edges",
        daemon=True,
    )
    figures: dict[str, Any] = {
        "devices": devices,
        "metrics": cfg.metrics,
        "rate": cfg.rate,
        "seconds": cfg.seconds,
        "edge_nodes": nodes,
        "offered_values_per_s": round(offered),
        "signal_path": "pre-registered catalog + auto_area routes from the births",
    }
    historian = _TimedHistorian(workdir / "ingest.duckdb")
    try:
        async with historian:
            # The catalog first (in chunks, for the progress bar): auto_area then finds every
            # signal registered and only adds the routes.
            infos = _signal_infos(nodes, per_node, cfg.metrics)
            t_reg = time.monotonic()
            for i in range(0, len(infos), 10_000):
                await historian.register_signals(infos[i : i + 10_000])
                report("registering signals", min(i + 10_000, len(infos)), len(infos))
            figures["signal_registration_s"] = round(time.monotonic() - t_reg, 1)
            await _measure(cfg, historian, figures, group, published, ready, edge, edge_rx, report)
        # Raw broker rate: same edges, same rate, a subscriber that only counts.
        raw_s = cfg.raw_seconds if cfg.raw_seconds is not None else min(cfg.seconds, 10.0)
        raw_rx, raw_tx = ctx.Pipe(duplex=False)
        raw = ctx.Process(
            target=_raw_main,
            args=(host, port, group, cfg.metrics, raw_s, raw_tx),
            name="bench-ingest-raw",
            daemon=True,
        )
        raw.start()
        report("raw broker", 0, raw_s)
        raw_doc = await _receive(raw_rx, "raw subscriber", raw_s + 60.0)
        report("raw broker", raw_s, raw_s)
        await asyncio.to_thread(raw.join, 10.0)
        figures.update(raw_doc)
        raw_rate = raw_doc["raw_broker_values_per_s"]
        ratio = round(figures["values_per_s"] / raw_rate, 3) if raw_rate else None
        figures["ratio"] = figures["ingest_ratio"] = ratio
    finally:
        stop.set()
        if edge.pid is not None:
            with contextlib.suppress(TimeoutError, RuntimeError):
                figures.update(await _receive(edge_rx, "edge", 30.0))
            await asyncio.to_thread(edge.join, 10.0)
            if edge.is_alive():
                edge.kill()
    return figures

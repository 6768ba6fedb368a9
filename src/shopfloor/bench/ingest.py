"""Ingest benchmark: Sparkplug edges → Mosquitto → our host → pipeline → DuckDB historian.

One run, three processes besides the broker, all measured over the same window:

* the **edges** — :class:`~shopfloor.sim.SparkplugEdgeSimulator` with ``devices`` devices
  (100 per edge node, one MQTT client each) of ``metrics`` metrics at ``rate`` Hz, in a
  spawned process of its own so that its CPU is not the host's;
* the **host** — this process: a :class:`~shopfloor.runtime.Runtime` with one Sparkplug
  connection whose ``auto_area`` creates a signal per metric from the births, the pipeline
  and a DuckDB historian in a temporary directory. The signals are registered in the
  historian's catalog before the run and created from the births during the warm-up; neither
  is measured;
* the **baseline** — a bare paho-mqtt subscriber in a spawned process (paho's network loop
  in its own thread) subscribed to the same DDATA topics, so it receives the same payloads at
  the same time, and only counts the messages: what the broker delivers to a Python client
  that does nothing with them.

Figures (JSON keys):

``values_per_s``
    Values committed to the historian per second over the window.
``offered_values_per_s`` / ``edge_values_per_s``
    Devices × metrics × rate, and what the edges actually published over the window.
``backlog_grew``
    Whether the values published but not yet stored grew by more than one second of offered
    data over the window (slope of a linear fit of the backlog, sampled twice a second).
``p50_latency_ms`` / ``p99_latency_ms``
    From each value's edge timestamp (the DDATA metric's, in ms) to the historian commit
    that stored it (a pipeline observer is told each batch right after its commit).
``peak_rss_mb``
    Peak resident memory of the host process from the start of the runtime to the end of
    the window: births, signal creation, ingest (Linux: the peak is reset through
    ``/proc/self/clear_refs`` once the benchmark's catalog is registered; elsewhere, and in
    ``peak_rss_mb_with_setup``, the whole process's ``ru_maxrss``). The edges, the baseline
    and the list of the simulator's signal names are in other processes.
    ``rss_mb_registered``, ``rss_mb_warm`` and ``rss_mb_end`` are the current figure after
    the catalog was registered, after the warm-up and at the end.
``msgs_per_s`` / ``baseline_msgs_per_s`` / ``ratio``
    NDATA/DDATA messages the host took in per second, messages the bare subscriber counted
    per second, and their ratio (``msgs_per_s / baseline_msgs_per_s``: 1.0 means the host
    takes in everything a do-nothing client receives).

Also CPU of host, edges and baseline (percent of one core), sequence gaps and rebirth
requests seen by the host (in all, and ``…_in_window`` within the measurement window: gaps
during the births' warm-up are messages the broker dropped while the host registered
150,000 signals), dead letters, and the targets of issue #4 with whether they were met.
With ``profile`` (or by default when the host stores less than 95 % of the offered rate)
the host is profiled with cProfile for ``profile_s`` seconds after the window and the top
costs are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import math
import multiprocessing as mp
import pstats
import resource
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.connectors._sparkplug_payload import DataType
from shopfloor.edge.batch import ReadingBatch
from shopfloor.errors import HistorianError
from shopfloor.historian import Historian, SignalInfo, open_historian

if TYPE_CHECKING:
    from shopfloor.connectors.sparkplug import SparkplugConnector
    from shopfloor.edge.pipeline import PipelineStats
    from shopfloor.runtime import Runtime

__all__ = ["DEVICES_PER_NODE", "TARGETS", "IngestBenchConfig", "run_ingest_bench"]

DEVICES_PER_NODE: Final = 100
"""Devices per simulated edge node (one MQTT client each)."""

TARGETS: Final = {
    "values_per_s": 150_000,
    "stretch_values_per_s": 500_000,
    "ratio": 0.6,
    "peak_rss_mb": 400,
}
"""The goals of the full-size run (3000 devices × 50 metrics at 1 Hz)."""

STORED_FRACTION: Final = 0.95
"""The host keeps up when it stores at least this share of the offered rate."""

_MAX_LATENCY_MS: Final = 300_000
_CAUGHT_UP_MS: Final = 2_000
_CONNECTION: Final = "edges"
_AREA: Final = "bench/edges"
_REGISTER_CHUNK: Final = 25_000

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
    profile: bool | None = None
    """Profile the host: always (True), never (False), when it does not keep up (None)."""
    profile_s: float = 10.0
    settle_s: float = 3.0
    """Steady flow after the warm-up, before the window opens (longer while the host still
    works off the births' backlog, up to ``warmup_timeout_s``)."""
    warmup_timeout_s: float = 180.0
    seed: int = 42
    memory_limit: str | None = None
    """DuckDB's ``memory_limit`` for the historian (``None``: DuckDB's default)."""

    def __post_init__(self) -> None:
        if self.devices < 1 or self.metrics < 1:
            raise ValueError("devices and metrics must be at least 1")
        if self.rate <= 0 or self.seconds <= 0:
            raise ValueError("rate and seconds must be positive")
        if self.memory_limit is not None:
            try:  # checked as the historian URL will be, before anything starts
                open_historian(f"duckdb::memory:?memory_limit={self.memory_limit}")
            except HistorianError as exc:
                raise ValueError(f"--memory-limit {self.memory_limit!r}: {exc}") from exc

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


def _rss_mb() -> float | None:
    """Current resident memory of this process (Linux), None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * resource.getpagesize() / 2**20, 1)


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ≥ 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb(since_reset: bool) -> float:
    """Peak RSS of this process: since :func:`_reset_peak_rss` when it worked, else ever."""
    if since_reset:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except (OSError, ValueError, IndexError):
            pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _edge_main(
    host: str,
    port: int,
    group: str,
    layout: tuple[int, int, int, float, int],
    counters: tuple[Synchronized[int], Synchronized[int]],
    ready: MpEvent,
    window: tuple[MpEvent, MpEvent],
    stop: MpEvent,
    out: Connection,
) -> None:
    """The edge process: run the simulator until ``stop``; send its figures on ``out``."""
    from shopfloor.sim import SparkplugEdgeSimulator

    nodes, per_node, metrics, rate, seed = layout
    values, messages = counters
    start, end = window

    async def main() -> dict[str, Any]:
        sim = SparkplugEdgeSimulator(host, port, group, nodes, per_node, metrics, rate, seed)
        async with sim:
            ready.set()
            marks: list[tuple[float, float]] = []  # (time, CPU) at the window's start and end
            while not stop.is_set():
                values.value = sim.values_published
                messages.value = sim.messages_published
                if len(marks) < 2 and (start, end)[len(marks)].is_set():
                    marks.append((time.monotonic(), _cpu_s()))
                await asyncio.sleep(0.05)
            figures: dict[str, Any] = {
                "edge_late_ticks": sim.late_ticks,
                "edge_rebirths_answered": sim.rebirths_answered,
            }
            if len(marks) == 2 and marks[1][0] > marks[0][0]:
                (t0, c0), (t1, c1) = marks
                figures["edge_cpu_pct"] = round(100.0 * (c1 - c0) / (t1 - t0), 1)
            return figures

    try:
        out.send(asyncio.run(main()))
    except Exception as exc:  # reported to the parent, which raises
        ready.set()
        out.send({"error": f"{type(exc).__name__}: {exc}"})


def _baseline_main(
    host: str,
    port: int,
    topic: str,
    ready: MpEvent,
    window: tuple[MpEvent, MpEvent],
    out: Connection,
) -> None:
    """The bare paho subscriber: count messages on ``topic`` between the window's events."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    count = [0]
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        count[0] += 1

    def on_subscribe(*_: Any) -> None:
        subscribed.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-baseline-{uuid.uuid4().hex[:8]}"
    )
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    try:
        client.connect(host, port, keepalive=30)
        client.subscribe(topic, qos=0)
        client.loop_start()  # paho's network loop (and the counting) in its own thread
        if not subscribed.wait(15.0):
            raise TimeoutError(f"no SUBACK for {topic}")
        ready.set()
        start, end = window
        start.wait()
        c0, t0, cpu0 = count[0], time.monotonic(), _cpu_s()
        end.wait()
        c1, t1, cpu1 = count[0], time.monotonic(), _cpu_s()
        client.disconnect()
        client.loop_stop()
        out.send({"messages": c1 - c0, "wall_s": t1 - t0, "cpu_s": cpu1 - cpu0})
    except Exception as exc:
        ready.set()
        out.send({"error": f"{type(exc).__name__}: {exc}"})


# --------------------------------------------------------------------------- the host


class _LoopLag:
    """How late the host's event loop wakes a task that sleeps ``tick_s``: while it is busy
    (decoding, mapping, a long callback) the host does not read its socket, and the broker
    drops QoS 0 messages once its queue for the host is full."""

    def __init__(self, tick_s: float = 0.02) -> None:
        self.tick_s = tick_s
        self.max_ms = 0.0
        self.over_100ms = 0

    def reset(self) -> None:
        """Forget what was seen so far."""
        self.max_ms, self.over_100ms = 0.0, 0

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.tick_s)
            late = (time.perf_counter() - t - self.tick_s) * 1000.0
            self.max_ms = max(self.max_ms, late)
            self.over_100ms += late > 100.0


class _Latency:
    """A pipeline observer: histogram of edge timestamp → commit (1 ms bins) while on, and
    how far behind the newest value of the last commit is."""

    def __init__(self) -> None:
        self.recording = False
        self.hist = np.zeros(_MAX_LATENCY_MS + 1, np.int64)
        self.behind_ms = math.inf

    async def __call__(self, batch: ReadingBatch) -> None:
        if not len(batch):
            return
        now_us = time.time_ns() // 1000
        ts = batch.table.column("ts").cast(pa.int64()).to_numpy()
        self.behind_ms = (now_us - int(ts.max())) / 1000
        if self.recording:
            lat = np.clip((now_us - ts) // 1000, 0, _MAX_LATENCY_MS)
            self.hist += np.bincount(lat, minlength=_MAX_LATENCY_MS + 1)

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile in ms (None without samples)."""
        return _percentile_ms(self.hist, q)


def _percentile_ms(hist: npt.NDArray[np.int64], q: float) -> float | None:
    total = int(hist.sum())
    if total == 0:
        return None
    return float(np.searchsorted(np.cumsum(hist), math.ceil(q * total)))


def _top_costs(prof: cProfile.Profile, n: int = 15) -> list[dict[str, Any]]:
    stats = pstats.Stats(prof)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)
    rows = [r for r in rows if "poll' of 'select" not in r[0][2]][:n]  # idle time
    total = sum(v[2] for k, v in raw.items() if "poll' of 'select" not in k[2]) or 1.0
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
    """The signals the runtime's ``auto_area`` derives from the simulator's births.

    Run in a child process: the simulator's modules need not weigh on the host's memory.
    """
    from shopfloor.sim._sparkplug import device_type_of, metric_name

    kinds: dict[DataType, str] = {
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
            out.extend(SignalInfo(f"{asset}/{name}", t) for name, t in per_metric)  # type: ignore[arg-type]
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


@dataclass(slots=True)
class _Children:
    """The edge and baseline processes and what the host shares with them."""

    edge: Any
    edge_rx: Connection
    baseline: Any
    baseline_rx: Connection
    values: Synchronized[int]
    messages: Synchronized[int]
    edge_ready: MpEvent
    baseline_ready: MpEvent
    start: MpEvent
    end: MpEvent
    stop: MpEvent


def _children(cfg: IngestBenchConfig, group: str) -> _Children:
    host, port = cfg.broker_address()
    nodes, per_node = cfg.layout()
    ctx = mp.get_context("spawn")
    values: Synchronized[int] = ctx.Value("q", 0, lock=False)
    messages: Synchronized[int] = ctx.Value("q", 0, lock=False)
    edge_ready, baseline_ready = ctx.Event(), ctx.Event()
    start, end, stop = ctx.Event(), ctx.Event(), ctx.Event()
    edge_rx, edge_tx = ctx.Pipe(duplex=False)
    baseline_rx, baseline_tx = ctx.Pipe(duplex=False)
    edge = ctx.Process(
        target=_edge_main,
        args=(
            host,
            port,
            group,
            (nodes, per_node, cfg.metrics, cfg.rate, cfg.seed),
            (values, messages),
            edge_ready,
            (start, end),
            stop,
            edge_tx,
        ),
        name="bench-ingest-edges",
        daemon=True,
    )
    baseline = ctx.Process(
        target=_baseline_main,
        args=(host, port, f"spBv1.0/{group}/DDATA/#", baseline_ready, (start, end), baseline_tx),
        name="bench-ingest-baseline",
        daemon=True,
    )
    return _Children(
        edge,
        edge_rx,
        baseline,
        baseline_rx,
        values,
        messages,
        edge_ready,
        baseline_ready,
        start,
        end,
        stop,
    )


async def _measure(
    cfg: IngestBenchConfig,
    historian: Historian,
    figures: dict[str, Any],
    group: str,
    kids: _Children,
    report: Progress,
    reset: bool,
) -> None:
    """The host phase: start the runtime and the edges, warm up, measure, maybe profile.

    ``reset``: the peak RSS was reset after the catalog registration.
    """
    from shopfloor.connectors.sparkplug import SparkplugConnector
    from shopfloor.runtime import Runtime

    latency = _Latency()
    async with Runtime(_factory(group, cfg.broker), historian, observers=[latency]) as rt:
        connector = rt.connectors[0]
        assert isinstance(connector, SparkplugConnector)
        assert rt.pipeline is not None
        stats = rt.pipeline.stats
        loop_lag = _LoopLag()
        lag_task = asyncio.create_task(loop_lag.run())
        try:
            await _measure_runtime(
                cfg, rt, connector, stats, latency, loop_lag, figures, kids, report, reset
            )
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task


async def _measure_runtime(
    cfg: IngestBenchConfig,
    rt: Runtime,
    connector: SparkplugConnector,
    stats: PipelineStats,
    latency: _Latency,
    loop_lag: _LoopLag,
    figures: dict[str, Any],
    kids: _Children,
    report: Progress,
    reset: bool,
) -> None:
    """The host phase once the runtime runs (see :func:`_measure`)."""
    offered = figures["offered_values_per_s"]
    await _wait(lambda: connector.status.state == "connected", 15.0, "the host to connect")
    report("starting edges and baseline", 0, 2)
    kids.baseline.start()
    if not await asyncio.to_thread(kids.baseline_ready.wait, 30.0):
        raise TimeoutError("ingest bench: the baseline subscriber did not come up")
    if kids.baseline_rx.poll():
        await _receive(kids.baseline_rx, "baseline", 0.0)
    report("starting edges and baseline", 1, 2)
    kids.edge.start()
    if not await asyncio.to_thread(kids.edge_ready.wait, 90.0):
        raise TimeoutError("ingest bench: the edges did not come up")
    if kids.edge_rx.poll():
        await _receive(kids.edge_rx, "edge", 0.0)
    report("starting edges and baseline", 2, 2)
    # Warm-up: a signal created for every metric of the births, then steady flow.
    expected = figures["devices"] * cfg.metrics
    t_w = time.monotonic()
    while len(rt.discovered) < expected:
        if time.monotonic() - t_w > cfg.warmup_timeout_s:
            raise TimeoutError(
                f"ingest bench: {len(rt.discovered):,} of {expected:,} signals created "
                f"after {cfg.warmup_timeout_s:g} s"
            )
        report("warm-up: signals from the births", len(rt.discovered), expected)
        await asyncio.sleep(0.25)
    report("warm-up: signals from the births", expected, expected)
    figures["warmup_s"] = round(time.monotonic() - t_w, 1)
    figures["rss_mb_warm"] = _rss_mb()
    # Settle: steady flow, the births' backlog worked off (the newest stored value at
    # most _CAUGHT_UP_MS old), for settle_s at least and warmup_timeout_s at most.
    t_s = time.monotonic()
    await asyncio.sleep(cfg.settle_s)
    while latency.behind_ms > _CAUGHT_UP_MS and time.monotonic() - t_s < cfg.warmup_timeout_s:
        report("settling: the births' backlog", time.monotonic() - t_s, cfg.warmup_timeout_s)
        await asyncio.sleep(0.25)
    figures["settle_s"] = round(time.monotonic() - t_s, 1)
    figures["settled"] = latency.behind_ms <= _CAUGHT_UP_MS

    # The window: host, edges and baseline all count from here to its end.
    sp = connector.metrics
    stored0, pub0, msg0 = stats.values_stored, kids.values.value, kids.messages.value
    data0 = sp.data_messages_total
    gaps0, rebirths0 = sp.seq_gaps_total, sp.rebirth_requests_total
    loop_lag.reset()
    kids.start.set()
    latency.recording = True
    t0, cpu0 = time.monotonic(), _cpu_s()
    samples: list[tuple[float, int]] = []
    max_queue = 0
    while (now := time.monotonic()) - t0 < cfg.seconds:
        backlog = (kids.values.value - pub0) - (stats.values_stored - stored0)
        samples.append((now - t0, backlog))
        max_queue = max(max_queue, stats.queue_depth)
        report("measuring", now - t0, cfg.seconds)
        await asyncio.sleep(0.5)
    kids.end.set()
    wall, cpu = time.monotonic() - t0, _cpu_s() - cpu0
    stored = stats.values_stored - stored0
    data_msgs = sp.data_messages_total - data0
    published, sent = kids.values.value - pub0, kids.messages.value - msg0
    latency.recording = False
    report("measuring", cfg.seconds, cfg.seconds)

    values_per_s = stored / wall
    t = np.array([s[0] for s in samples])
    b = np.array([s[1] for s in samples], dtype=np.float64)
    slope = float(np.polyfit(t, b, 1)[0]) if len(samples) >= 3 else 0.0
    figures.update(
        {
            "values_per_s": round(values_per_s),
            "edge_values_per_s": round(published / wall),
            "edge_msgs_per_s": round(sent / wall),
            "keeps_up": values_per_s >= STORED_FRACTION * offered,
            "backlog_grew": bool(slope * wall > max(offered, 1.0)),
            "backlog_slope_values_per_s": round(slope, 1),
            "backlog_end_values": int(b[-1]) if len(b) else 0,
            "pipeline_queue_max": max_queue,
            "p50_latency_ms": latency.percentile_ms(0.50),
            "p99_latency_ms": latency.percentile_ms(0.99),
            "msgs_per_s": round(data_msgs / wall, 1),
            "host_cpu_pct": round(100.0 * cpu / wall, 1),
            "host_loop_lag_max_ms": round(loop_lag.max_ms, 1),
            "host_loop_stalls_over_100ms": loop_lag.over_100ms,
            "host_seq_gaps": sp.seq_gaps_total,
            "host_seq_gaps_in_window": sp.seq_gaps_total - gaps0,
            "host_rebirth_requests": sp.rebirth_requests_total,
            "host_rebirth_requests_in_window": sp.rebirth_requests_total - rebirths0,
            "host_dead_letters": sp.dead_letters_total + stats.dead_letters,
            "signals_created": len(rt.discovered),
        }
    )
    base = await _receive(kids.baseline_rx, "baseline", 30.0)
    figures["baseline_msgs_per_s"] = round(base["messages"] / base["wall_s"], 1)
    figures["baseline_cpu_pct"] = round(100.0 * base["cpu_s"] / base["wall_s"], 1)
    if cfg.profile or (cfg.profile is None and not figures["keeps_up"]):
        prof = cProfile.Profile()
        report("profiling the host", 0, cfg.profile_s)
        prof.enable()
        try:
            await asyncio.sleep(cfg.profile_s)
        finally:
            prof.disable()
        report("profiling the host", cfg.profile_s, cfg.profile_s)
        figures["profile_s"] = cfg.profile_s
        figures["profile_top"] = _top_costs(prof)
    figures["rss_mb_end"] = _rss_mb()
    figures["peak_rss_mb"] = _peak_rss_mb(reset)
    figures["peak_rss_mb_with_setup"] = _peak_rss_mb(False)


async def run_ingest_bench(
    cfg: IngestBenchConfig, workdir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the benchmark (DuckDB file in ``workdir``) and return the figures."""
    report = progress or (lambda phase, done, total: None)
    cfg.broker_address()  # a bad URL fails before anything starts
    nodes, per_node = cfg.layout()
    devices = nodes * per_node
    offered = devices * cfg.metrics * cfg.rate
    group = f"bench-{uuid.uuid4().hex[:8]}"
    figures: dict[str, Any] = {
        "devices": devices,
        "metrics": cfg.metrics,
        "rate": cfg.rate,
        "seconds": cfg.seconds,
        "edge_nodes": nodes,
        "offered_values_per_s": round(offered),
        "memory_limit": cfg.memory_limit,
    }
    kids = _children(cfg, group)
    try:
        options = "" if cfg.memory_limit is None else f"?memory_limit={cfg.memory_limit}"
        async with open_historian(f"duckdb:{workdir / 'ingest.duckdb'}{options}") as historian:
            report("registering signals", 0, 1)
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                infos = await asyncio.get_running_loop().run_in_executor(
                    pool, _signal_infos, nodes, per_node, cfg.metrics
                )
            t_reg = time.monotonic()
            for i in range(0, len(infos), _REGISTER_CHUNK):
                report("registering signals", i, len(infos))
                await historian.register_signals(infos[i : i + _REGISTER_CHUNK])
            report("registering signals", len(infos), len(infos))
            figures["signal_registration_s"] = round(time.monotonic() - t_reg, 1)
            del infos
            figures["rss_mb_registered"] = _rss_mb()
            reset = _reset_peak_rss()
            await _measure(cfg, historian, figures, group, kids, report, reset)
        base = figures["baseline_msgs_per_s"]
        figures["ratio"] = round(figures["msgs_per_s"] / base, 3) if base else None
    finally:
        kids.start.set()
        kids.end.set()
        kids.stop.set()
        if kids.edge.pid is not None:
            with contextlib.suppress(TimeoutError, RuntimeError):
                figures.update(await _receive(kids.edge_rx, "edge", 30.0))
        for proc in (kids.edge, kids.baseline):
            if proc.pid is not None:
                await asyncio.to_thread(proc.join, 10.0)
                if proc.is_alive():
                    proc.kill()
    figures["targets"] = dict(TARGETS)
    if "values_per_s" in figures and figures.get("ratio") is not None:
        figures["targets_met"] = {
            "values_per_s": figures["values_per_s"] >= TARGETS["values_per_s"]
            and not figures["backlog_grew"],
            "ratio": figures["ratio"] >= TARGETS["ratio"],
            "peak_rss_mb": figures["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
        }
    return figures

"""Live stream benchmark: devices → pipeline → DuckDB historian → LiveHub → WebSocket client.

One run, two phases of the same length, measured by the same client:

* the **platform** phase — this process holds, in one event loop as ``shopfloor up --api-port``
  does, simulated devices (``devices`` × ``metrics`` signals sampled at ``rate`` Hz, each
  device at its own phase of the period, stamped with its sampling time), the
  :class:`~shopfloor.edge.pipeline.Pipeline` (mapper, bounded queue, commits every
  ``flush_interval``), a DuckDB historian in a temporary directory, and the API app served
  by uvicorn whose :class:`~shopfloor.api.LiveHub` observes the pipeline. A
  WebSocket client (``websockets``) in a spawned process of its own subscribes to ``**`` and
  receives every committed value;
* the **baseline** — the same devices feed a bare ``websockets`` server (no pipeline, mapper,
  historian, subscription matching, ASGI or uvicorn) that sends the *same frames* — rendered
  by the hub's own columnar code, paced every ``max_batch_ms`` — to the same client code.
  It is what streaming these values costs at the least; the ratio says how much of that the
  platform keeps.

The devices feed the pipeline directly rather than through the Sparkplug path of ``bench
ingest``: that path (edge processes, broker, host decode) is measured there and, at the
reference load, takes most of a 2-core machine by itself; stacked under the live stream it
would hide the stream's own cost, and its latency would include the broker hop.

Figures (JSON keys):

``values_per_s`` / ``offered_values_per_s``
    Values the client received per second over the window (counted at arrival, read by the
    host at the window's start and end, like the stored rate); devices × metrics × rate.
``p50_latency_ms`` / ``p99_latency_ms`` (and ``p90``, ``max``)
    From each value's device timestamp to the client's receipt of the frame (same clock:
    one machine). The pipeline's own batching (``flush_interval``) is part of it.
``p50_transit_ms`` / ``p99_transit_ms``
    Per frame, from its ``sent_ms`` to its receipt by the client: the wire's and
    the client's share of the latency (the rest is the pipeline's batching and commit, and
    the hub's pacing).
``frames_per_s``, ``values_per_frame``, ``mb_per_s``
    Frames received, values per frame, JSON megabytes per second (decompressed), counted by
    the client from the first frame after the window opened to the first after it closed.
``clients_dropped``, ``values_dropped``
    The hub's counts (a client that cannot keep up is dropped, never the pipeline).
``complete``
    After the devices stop: the client received exactly the values the historian stored.
``baseline_*``
    The same figures of the bare server; ``ratio`` = ``values_per_s`` ÷
    ``baseline_values_per_s``; ``latency_ratio_p99`` = ``p99_latency_ms`` ÷
    ``baseline_p99_latency_ms``.

``hub_cpu_pct`` / ``hub_us_per_value``
    Time the hub spent matching and queueing committed batches and rendering frames
    (percent of the window; per value sent) — its own share of ``host_cpu_pct``.

Also the stored rate, pipeline commits and lag, late device ticks, and CPU of the host and
the client processes (percent of one core) in each phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.edge.batch import RAW_SCHEMA, TS_TYPE, RawBatch
from shopfloor.edge.pipeline import WRITE_BUCKETS_S

__all__ = ["LiveBenchConfig", "run_live_bench"]

_MAX_LATENCY_MS: Final = 120_000
_AREA: Final = "bench/live"
_SOURCE: Final = "sim"
_REGISTER_CHUNK: Final = 25_000
_KINDS: Final = ("float",) * 8 + ("int", "bool")
"""Metric ``m`` has data type ``_KINDS[m % 10]``: 80 % floats, 10 % ints, 10 % bools."""

Progress = Callable[[str, float, float], None]
"""``progress(phase, done, total)``: called as a phase advances."""


@dataclass(frozen=True, slots=True)
class LiveBenchConfig:
    """Sizes of a live benchmark run."""

    devices: int = 3000
    metrics: int = 50
    rate: float = 1.0
    seconds: float = 30.0
    """Length of each phase's measurement window."""
    warmup_s: float = 5.0
    """Steady flow before each window."""
    flush_interval: float = 0.25
    """The pipeline's commit interval (``shopfloor up`` uses 0.25 s)."""
    max_batch_ms: int = 100
    compression: bool = False
    """Let the client offer permessage-deflate (browsers do; on loopback it only costs CPU)."""
    tick_s: float = 0.05
    """The devices are sampled in slots of about this length (each device once a period)."""
    drain_timeout_s: float = 60.0
    seed: int = 42

    def __post_init__(self) -> None:
        if self.devices < 1 or self.metrics < 1:
            raise ValueError("devices and metrics must be at least 1")
        if self.rate <= 0 or self.seconds <= 0 or self.warmup_s < 0:
            raise ValueError("rate and seconds must be positive, warmup_s not negative")
        if self.flush_interval <= 0 or self.max_batch_ms < 1 or self.tick_s <= 0:
            raise ValueError("flush_interval, max_batch_ms and tick_s must be positive")

    @property
    def offered_values_per_s(self) -> float:
        """Devices × metrics × rate."""
        return self.devices * self.metrics * self.rate


# --------------------------------------------------------------------------- devices


def _path(device: int, metric: int) -> str:
    return f"{_AREA}/dev{device:05d}/m{metric:02d}"


class _Devices:
    """Columnar simulated devices: per slot of the period, the samples of its devices."""

    def __init__(self, cfg: LiveBenchConfig) -> None:
        period = 1.0 / cfg.rate
        self.slots = max(1, round(period / cfg.tick_s))
        self.tick_s = period / self.slots
        m = cfg.metrics
        kinds = np.array([_KINDS[j % len(_KINDS)] for j in range(m)])
        addresses = pa.array(
            [f"dev{d:05d}/m{j:02d}" for d in range(cfg.devices) for j in range(m)], pa.string()
        )
        self._rng = np.random.default_rng(cfg.seed)
        self._slot: list[tuple[npt.NDArray[np.intp], pa.Array, pa.Array, dict[str, Any]]] = []
        for s in range(self.slots):
            devs = np.arange(s, cfg.devices, self.slots)
            rows = (devs[:, None] * m + np.arange(m)[None, :]).ravel()
            kind = kinds[rows % m]
            masks = {k: kind == k for k in ("float", "int", "bool")}
            source = pa.array(np.full(len(rows), _SOURCE, dtype=object), pa.string())
            self._slot.append((rows, addresses.take(pa.array(rows)), source, masks))

    def sample(self, slot: int, ts_us: int) -> tuple[npt.NDArray[np.intp], pa.Table]:
        """Flat signal rows and ``ts, quality, v_*`` columns of one slot's devices."""
        rows, _, _, masks = self._slot[slot % self.slots]
        n = len(rows)
        rng = self._rng
        cols = {
            "ts": pa.array(np.full(n, ts_us, np.int64)).cast(TS_TYPE),
            "quality": pa.array(np.full(n, 0xC0, np.uint8)),
            "v_float": pa.array(np.round(rng.normal(50.0, 10.0, n), 3), mask=~masks["float"]),
            "v_int": pa.array(rng.integers(0, 10_000, n), mask=~masks["int"]),
            "v_bool": pa.array(rng.random(n) < 0.5, mask=~masks["bool"]),
            "v_str": pa.nulls(n, pa.string()),
        }
        return rows, pa.table(cols)

    def raw(self, slot: int, values: pa.Table) -> RawBatch:
        """The samples as a connector would deliver them (source, address)."""
        _, address, source, _ = self._slot[slot % self.slots]
        columns = [source, address, *(values.column(c) for c in RAW_SCHEMA.names[2:])]
        return RawBatch(pa.Table.from_arrays(columns, schema=RAW_SCHEMA))

    def __len__(self) -> int:
        return sum(len(s[0]) for s in self._slot)


@dataclass(slots=True)
class _Drive:
    """What the device loop did."""

    values: int = 0
    late_ticks: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def _drive(
    devices: _Devices,
    deliver: Callable[[int, npt.NDArray[np.intp], pa.Table], Awaitable[None]],
    state: _Drive,
) -> None:
    """Sample the devices slot by slot on the wall clock until ``state.stop``."""
    wall0_us = time.time_ns() // 1000
    mono0 = time.monotonic()
    k = 0
    while not state.stop.is_set():
        due = mono0 + k * devices.tick_s
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif -wait > devices.tick_s:
            state.late_ticks += 1
        ts_us = wall0_us + round(k * devices.tick_s * 1e6)
        rows, values = devices.sample(k, ts_us)
        await deliver(k % devices.slots, rows, values)
        state.values += len(rows)
        k += 1


# --------------------------------------------------------------------------- the client process


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _percentile_ms(hist: npt.NDArray[np.int64], q: float) -> float | None:
    total = int(hist.sum())
    if total == 0:
        return None
    return float(np.searchsorted(np.cumsum(hist), math.ceil(q * total)))


def _client_main(
    url: str,
    compression: bool,
    received: Synchronized[int],
    ready: MpEvent,
    window: tuple[MpEvent, MpEvent],
    stop: MpEvent,
    out: Connection,
) -> None:
    """Subscribe to ``**``; count values, frames and latencies inside the window."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    start, end = window

    async def main() -> dict[str, Any]:
        hist = np.zeros(_MAX_LATENCY_MS + 1, np.int64)
        transit = np.zeros(_MAX_LATENCY_MS + 1, np.int64)
        doc: dict[str, Any] = {"frames": 0, "values": 0, "bytes": 0, "seq_gaps": 0}
        marks: list[tuple[float, float]] = []
        last_seq = 0
        async with connect(
            url,
            max_size=None,
            compression="deflate" if compression else None,
            open_timeout=60,
            ping_interval=None,
        ) as ws:
            json.loads(await ws.recv())  # hello
            await ws.send(json.dumps({"type": "subscribe", "id": "bench", "patterns": ["**"]}))
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
            ready.set()
            try:
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.25)
                    except TimeoutError:
                        continue
                    now_ms = time.time_ns() / 1e6
                    msg = json.loads(raw)
                    if msg.get("type") == "dropped":
                        doc["dropped_message"] = msg
                    if msg.get("type") != "values":
                        continue
                    ts = np.asarray(msg["ts"], dtype=np.int64)
                    if msg["seq"] != last_seq + 1:
                        doc["seq_gaps"] += 1
                    last_seq = msg["seq"]
                    received.value += len(ts)
                    opened = len(marks) == 1
                    if len(marks) < 2 and (start, end)[len(marks)].is_set():
                        marks.append((time.monotonic(), _cpu_s()))
                    if opened:  # frames after the one that opened the window, to the closing one
                        lat = np.clip(now_ms - ts, 0, _MAX_LATENCY_MS).astype(np.int64)
                        hist += np.bincount(lat, minlength=_MAX_LATENCY_MS + 1)
                        sent = min(max(0, round(now_ms - msg["sent_ms"])), _MAX_LATENCY_MS)
                        transit[sent] += 1
                        doc["frames"] += 1
                        doc["values"] += len(ts)
                        doc["bytes"] += len(raw)
            except ConnectionClosed as exc:
                doc["closed"] = None if exc.rcvd is None else exc.rcvd.code
        if len(marks) == 2 and marks[1][0] > marks[0][0]:
            (t0, c0), (t1, c1) = marks
            doc["wall_s"] = t1 - t0
            doc["cpu_pct"] = round(100.0 * (c1 - c0) / (t1 - t0), 1)
        for q, key in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (1.0, "max")):
            doc[f"{key}_latency_ms"] = _percentile_ms(hist, q)
        doc["p50_transit_ms"] = _percentile_ms(transit, 0.5)
        doc["p99_transit_ms"] = _percentile_ms(transit, 0.99)
        return doc

    try:
        out.send(asyncio.run(main()))
    except Exception as exc:  # reported to the parent, which raises
        ready.set()
        out.send({"error": f"{type(exc).__name__}: {exc}"})


@dataclass(slots=True)
class _Client:
    """The client process and what the host shares with it."""

    process: Any
    rx: Connection
    received: Synchronized[int]
    ready: MpEvent
    start: MpEvent
    end: MpEvent
    stop: MpEvent

    @classmethod
    def spawn(cls, url: str, compression: bool) -> _Client:
        ctx = mp.get_context("spawn")
        received: Synchronized[int] = ctx.Value("q", 0, lock=False)
        ready, start, end, stop = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
        rx, tx = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_client_main,
            args=(url, compression, received, ready, (start, end), stop, tx),
            name="bench-live-client",
            daemon=True,
        )
        process.start()
        return cls(process, rx, received, ready, start, end, stop)

    async def wait_ready(self) -> None:
        if not await asyncio.to_thread(self.ready.wait, 90.0):
            raise TimeoutError("live bench: the WebSocket client did not come up")
        if self.rx.poll():
            await self.result()  # it failed: raises

    async def result(self) -> dict[str, Any]:
        self.start.set()
        self.end.set()
        self.stop.set()
        ok = await asyncio.to_thread(self.rx.poll, 60.0)
        if not ok:
            raise TimeoutError("live bench: no figures from the client process")
        doc: dict[str, Any] = self.rx.recv()
        await asyncio.to_thread(self.process.join, 10.0)
        if self.process.is_alive():
            self.process.kill()
        if "error" in doc:
            raise RuntimeError(f"live bench: the client process failed: {doc['error']}")
        return doc

    def kill(self) -> None:
        self.stop.set()
        if self.process.is_alive():
            self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()


@dataclass(slots=True)
class _Window:
    """The measurement window as the host saw it."""

    wall_s: float
    cpu_s: float
    received: int
    """Values the client counted between the window's start and end (at arrival)."""


async def _window(cfg: LiveBenchConfig, client: _Client, report: Progress, phase: str) -> _Window:
    """Warm up, then open the client's window for ``cfg.seconds``."""
    t_w = time.monotonic()
    while (waited := time.monotonic() - t_w) < cfg.warmup_s:
        report(f"{phase}: warm-up", waited, cfg.warmup_s)
        await asyncio.sleep(0.25)
    client.start.set()
    t0, cpu0, rx0 = time.monotonic(), _cpu_s(), client.received.value
    while (now := time.monotonic()) - t0 < cfg.seconds:
        report(f"{phase}: measuring", now - t0, cfg.seconds)
        await asyncio.sleep(0.25)
    client.end.set()
    rx1, cpu1 = client.received.value, _cpu_s()
    report(f"{phase}: measuring", cfg.seconds, cfg.seconds)
    return _Window(time.monotonic() - t0, cpu1 - cpu0, rx1 - rx0)


def _client_figures(doc: dict[str, Any], window: _Window, prefix: str) -> dict[str, Any]:
    wall = doc.get("wall_s")
    frames = doc["frames"]
    return {
        f"{prefix}values_per_s": round(window.received / window.wall_s),
        f"{prefix}host_cpu_pct": round(100.0 * window.cpu_s / window.wall_s, 1),
        f"{prefix}frames_per_s": round(frames / wall, 2) if wall else 0.0,
        f"{prefix}values_per_frame": round(doc["values"] / frames, 1) if frames else None,
        f"{prefix}mb_per_s": round(doc["bytes"] / wall / 1e6, 2) if wall else 0.0,
        f"{prefix}p50_latency_ms": doc["p50_latency_ms"],
        f"{prefix}p90_latency_ms": doc["p90_latency_ms"],
        f"{prefix}p99_latency_ms": doc["p99_latency_ms"],
        f"{prefix}max_latency_ms": doc["max_latency_ms"],
        f"{prefix}p50_transit_ms": doc["p50_transit_ms"],
        f"{prefix}p99_transit_ms": doc["p99_transit_ms"],
        f"{prefix}seq_gaps": doc["seq_gaps"],
        f"{prefix}client_cpu_pct": doc.get("cpu_pct"),
    }


async def _wait_until(cond: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# --------------------------------------------------------------------------- the platform phase


async def _platform(
    cfg: LiveBenchConfig, devices: _Devices, workdir: Path, report: Progress
) -> dict[str, Any]:
    from shopfloor.api import AuthStore, LiveHub, create_app, running_server, server_config
    from shopfloor.edge.mapper import Mapper, Route
    from shopfloor.edge.pipeline import Pipeline
    from shopfloor.historian import SignalInfo, open_historian
    from shopfloor.model import parse_factory

    figures: dict[str, Any] = {}
    factory = parse_factory(
        {"enterprise": {"id": "bench", "name": "Bench", "sites": [{"id": "live", "name": "L"}]}},
        "bench-live.yaml",
    )
    infos = [
        SignalInfo(_path(d, j), _KINDS[j % len(_KINDS)])
        for d in range(cfg.devices)
        for j in range(cfg.metrics)
    ]
    async with (
        open_historian(f"duckdb:{workdir / 'live.duckdb'}") as historian,
        AuthStore(workdir / "live.auth.sqlite") as auth,
    ):
        t_reg = time.monotonic()
        ids: dict[str, int] = {}
        for i in range(0, len(infos), _REGISTER_CHUNK):
            report("registering signals", i, len(infos))
            ids.update(await historian.register_signals(infos[i : i + _REGISTER_CHUNK]))
        report("registering signals", len(infos), len(infos))
        figures["signal_registration_s"] = round(time.monotonic() - t_reg, 1)
        routes = {
            (_SOURCE, f"dev{d:05d}/m{j:02d}"): Route(ids[_path(d, j)], _KINDS[j % len(_KINDS)])
            for d in range(cfg.devices)
            for j in range(cfg.metrics)
        }
        del infos
        token = (await auth.create_token("read", [_AREA.split("/")[0]], name="bench")).token
        hub = LiveHub(historian, max_batch_ms=cfg.max_batch_ms)
        app = create_app(factory, historian, auth, live=hub)
        pipeline = Pipeline(
            historian,
            Mapper(routes),
            flush_interval=cfg.flush_interval,
            observers=[hub.publish_readings],
        )
        del routes
        config = server_config(app, "127.0.0.1", 0, log_level="warning")
        async with running_server(config) as server, asyncio.TaskGroup() as tg:
            writer = tg.create_task(pipeline.run(), name="bench-live-pipeline")
            url = f"ws://127.0.0.1:{server.port}/api/v1/live?token={token}"
            report("platform: starting the client", 0, 1)
            client = _Client.spawn(url, cfg.compression)
            try:
                await client.wait_ready()
                report("platform: starting the client", 1, 1)
                state = _Drive()

                async def deliver(slot: int, rows: Any, values: pa.Table) -> None:
                    await pipeline.sink(devices.raw(slot, values))

                drive = tg.create_task(_drive(devices, deliver, state), name="bench-live-devices")
                warm = time.monotonic()
                while hub.stats.values_sent == 0:  # the first commit reached the client
                    if time.monotonic() - warm > 60:
                        raise TimeoutError("live bench: no value reached the hub in 60 s")
                    await asyncio.sleep(0.05)
                st = pipeline.stats
                stored0, commits0, offered0 = st.values_stored, st.commits, state.values
                writes0, write_s0 = list(st.write_counts), st.write_seconds
                sent0, frames0 = hub.stats.values_sent, hub.stats.frames_sent
                hub0 = hub.stats.observe_s + hub.stats.render_s
                window = await _window(cfg, client, report, "platform")
                wall = window.wall_s
                hub_s = hub.stats.observe_s + hub.stats.render_s - hub0
                figures.update(
                    {
                        "stored_values_per_s": round((st.values_stored - stored0) / wall),
                        "generated_values_per_s": round((state.values - offered0) / wall),
                        "commits_per_s": round((st.commits - commits0) / wall, 2),
                        "hub_frames_per_s": round((hub.stats.frames_sent - frames0) / wall, 2),
                        "hub_values_per_s": round((hub.stats.values_sent - sent0) / wall),
                        "pipeline_lag_ms": round(st.lag_ms, 1),
                        "historian_write_ms_mean": round(
                            1000.0 * (st.write_seconds - write_s0) / max(1, st.commits - commits0),
                            1,
                        ),
                        "historian_writes_by_ms": _write_histogram(st.write_counts, writes0),
                        "hub_cpu_pct": round(100.0 * hub_s / wall, 1),
                        "hub_us_per_value": round(
                            1e6 * hub_s / max(1, hub.stats.values_sent - sent0), 3
                        ),
                    }
                )
                state.stop.set()
                await drive
                figures["late_ticks"] = state.late_ticks
                report("platform: draining", 0, 1)
                await pipeline.close()
                await writer
                complete = await _wait_until(
                    lambda: client.received.value >= st.values_stored,
                    cfg.drain_timeout_s,
                )
                report("platform: draining", 1, 1)
                doc = await client.result()
            finally:
                client.kill()
        figures.update(_client_figures(doc, window, ""))
        figures.update(
            {
                "values_generated_total": state.values,
                "values_stored_total": st.values_stored,
                "values_received_total": client.received.value,
                "complete": bool(complete and client.received.value == st.values_stored),
                "clients_dropped": hub.stats.clients_dropped,
                "values_dropped": hub.stats.values_dropped,
                "client_closed_with": doc.get("closed"),
            }
        )
    return figures


# --------------------------------------------------------------------------- the baseline phase


async def _baseline(cfg: LiveBenchConfig, devices: _Devices, report: Progress) -> dict[str, Any]:
    """The same devices and frames over a bare ``websockets`` server."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State

    from shopfloor.api._live import MAX_FRAME_VALUES, _Catalog, _Segment, _values_frame
    from shopfloor.bus.uns import _value_text

    n = len(devices)
    paths = [_path(d, j) for d in range(cfg.devices) for j in range(cfg.metrics)]
    catalog = _Catalog(
        pa.table(
            {
                "signal_id": pa.array(np.arange(n), pa.int64()),
                "path": pa.array(paths, pa.string()),
                "unit": pa.nulls(n, pa.string()),
            }
        )
    )
    del paths
    pending: list[list[_Segment]] = []
    wake = asyncio.Event()
    sent = [0]
    period = cfg.max_batch_ms / 1000.0
    limit = MAX_FRAME_VALUES

    async def handler(ws: ServerConnection) -> None:
        mine: list[_Segment] = []
        await ws.send(json.dumps({"type": "hello", "server": "baseline", "max_batch_ms": 100}))
        await ws.recv()  # the subscription: everything
        await ws.send(json.dumps({"type": "subscribed", "id": "bench", "signals": n}))
        pending.append(mine)
        seq, next_frame = 0, 0.0
        loop = asyncio.get_running_loop()
        try:
            while ws.state is State.OPEN:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 0.5)
                wake.clear()
                delay = next_frame - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not mine:
                    continue
                parts: list[tuple[_Segment, None]] = []
                taken = 0
                while mine and (not parts or taken + len(mine[0]) <= limit):
                    segment = mine.pop(0)  # whole device slots, up to the hub's frame size
                    parts.append((segment, None))
                    taken += len(segment)
                if mine:
                    wake.set()
                seq += 1
                text = _values_frame(seq, list(parts))
                next_frame = loop.time() + period
                await ws.send(text)
                sent[0] += sum(len(s) for s, _ in parts)
        except ConnectionClosed:
            pass
        finally:
            pending.remove(mine)

    async def deliver(slot: int, rows: npt.NDArray[np.intp], values: pa.Table) -> None:
        segment = _Segment(values, rows, catalog, _value_text)
        for queue in pending:
            queue.append(segment)
        wake.set()

    async with (
        serve(handler, "127.0.0.1", 0, max_size=None, compression="deflate") as server,
        asyncio.TaskGroup() as tg,
    ):
        port = next(iter(server.sockets)).getsockname()[1]
        report("baseline: starting the client", 0, 1)
        client = _Client.spawn(f"ws://127.0.0.1:{port}/", cfg.compression)
        try:
            await client.wait_ready()
            report("baseline: starting the client", 1, 1)
            state = _Drive()
            drive = tg.create_task(_drive(devices, deliver, state), name="bench-live-baseline")
            window = await _window(cfg, client, report, "baseline")
            state.stop.set()
            await drive
            await _wait_until(lambda: client.received.value >= sent[0], cfg.drain_timeout_s)
            doc = await client.result()
        finally:
            client.kill()
    figures = _client_figures(doc, window, "baseline_")
    figures["baseline_late_ticks"] = state.late_ticks
    return figures


async def run_live_bench(
    cfg: LiveBenchConfig, workdir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the benchmark (DuckDB file in ``workdir``) and return the figures."""
    report = progress or (lambda phase, done, total: None)
    devices = _Devices(cfg)
    figures: dict[str, Any] = {
        "devices": cfg.devices,
        "metrics": cfg.metrics,
        "rate": cfg.rate,
        "seconds": cfg.seconds,
        "offered_values_per_s": round(cfg.offered_values_per_s),
        "flush_interval_s": cfg.flush_interval,
        "max_batch_ms": cfg.max_batch_ms,
        "compression": cfg.compression,
        "device_slot_ms": round(devices.tick_s * 1000, 2),
    }
    figures.update(await _platform(cfg, devices, workdir, report))
    figures.update(await _baseline(cfg, devices, report))
    base = figures.get("baseline_values_per_s")
    figures["ratio"] = round(figures["values_per_s"] / base, 3) if base else None
    p99, base_p99 = figures.get("p99_latency_ms"), figures.get("baseline_p99_latency_ms")
    figures["latency_ratio_p99"] = round(p99 / base_p99, 2) if p99 and base_p99 else None
    figures["keeps_up"] = bool(
        figures["values_per_s"] >= 0.95 * cfg.offered_values_per_s
        and figures["clients_dropped"] == 0
    )
    return figures


def _write_histogram(counts: list[int], before: list[int]) -> dict[str, int]:
    """Historian appends in the window per write-time bucket (``"≤250"``: at most 250 ms)."""
    out: dict[str, int] = {}
    for i, (now, then) in enumerate(zip(counts, before, strict=True)):
        if now - then:
            bound = WRITE_BUCKETS_S[i] if i < len(WRITE_BUCKETS_S) else None
            out["more" if bound is None else f"≤{1000 * bound:g}"] = now - then
    return out

"""Scale-out ingest benchmark: edge → NATS JetStream → N workers → PostgreSQL.

For each worker count (1 and 2 by default), in a fresh stream and a fresh schema:

* one **edge** process (``shopfloor edge --generate``): ``devices × metrics`` counters at
  ``rate`` Hz, through its store-and-forward buffer, published to NATS (every message
  carries the names of its signals: the worker creates them on the first batch);
* ``N`` **worker** processes (``shopfloor worker``): fetch, decode, map, store once
  (``append_once``: samples, rollups, latest values and the batch ids in one transaction),
  acknowledge;
* the **baseline**: PostgreSQL's raw binary ``COPY`` of the same data (readings of as many
  signals, in batches of the size the workers committed) into a plain table, measured in
  the same run right after the window — what the server takes in at best.

Figures per run (the keys of the Sparkplug ingest benchmark where they apply, plus
``workers`` and ``raw_copy_rows_per_s``): ``values_per_s`` (committed by all workers over
the window), ``offered_values_per_s``, ``edge_values_per_s`` (accepted into the edge's
buffer), ``backlog_grew`` (accepted minus stored, slope over the window), latency from each
value's timestamp to its commit (``p50_latency_ms``/``p99_latency_ms``), ``msgs_per_s``
(messages acknowledged), ``peak_rss_mb`` (the largest worker), CPU of workers, edge and the
whole machine, ``ratio`` = ``values_per_s / raw_copy_rows_per_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from shopfloor.bench.historian_postgres import _raw_copy_rate
from shopfloor.edge.batch import READING_SCHEMA, TS_TYPE
from shopfloor.historian._pgbatch import sample_columns
from shopfloor.historian._pgcopy import encode_binary
from shopfloor.historian._postgres import parse_postgres_url

__all__ = ["TARGETS", "NatsIngestBenchConfig", "run_nats_ingest_bench"]

TARGETS: Final = {"values_per_s": 150_000, "workers": 1}
"""Issue #8: the reference load with one worker on the 2-core reference machine."""

STORED_FRACTION: Final = 0.95

Progress = Callable[[str, float, float], None]

_FACTORY: Final = """\
enterprise:
  id: bench
  name: Bench
  sites:
    - {id: edges, name: Edges}
connections:
  - name: gen
    protocol: sparkplug
    endpoint: mqtt://127.0.0.1:1883
    options: {auto_area: bench/edges, groups: [bench]}
"""


@dataclass(frozen=True, slots=True)
class NatsIngestBenchConfig:
    """Sizes and places of a scale-out ingest benchmark run."""

    devices: int = 3000
    metrics: int = 50
    rate: float = 1.0
    seconds: float = 30.0
    workers: tuple[int, ...] = (1, 2)
    bus: str = "nats://127.0.0.1:4222"
    store: str = "postgresql://postgres@127.0.0.1:5432/test"
    settle_s: float = 5.0
    warmup_timeout_s: float = 240.0
    message_kb: int = 512
    copy_batches: int = 10

    def __post_init__(self) -> None:
        if self.devices < 1 or self.metrics < 1 or self.rate <= 0 or self.seconds <= 0:
            raise ValueError("devices, metrics, rate and seconds must be positive")
        if not self.workers or min(self.workers) < 1:
            raise ValueError("workers must be positive counts")
        if not self.bus.startswith("nats://"):
            raise ValueError(f"bus {self.bus!r} is not nats://host:port")
        parse_postgres_url(self.store)


@dataclass
class _Child:
    """A ``shopfloor`` child process and the JSON lines it printed."""

    args: list[str]
    popen: subprocess.Popen[str] = field(init=False)
    lines: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", "from shopfloor.cli import main; main()", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                if line.startswith("{"):
                    self.lines.append(json.loads(line))

    def last(self, kind: str) -> dict[str, Any]:
        return next((d for d in reversed(self.lines) if d["kind"] == kind), {})

    def accepted_values(self) -> int:
        return sum(d["values"] for d in list(self.lines) if d["kind"] == "accepted")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (Linux)."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return math.nan

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def _machine_busy() -> tuple[float, float]:
    """``(busy, total)`` jiffies of all CPUs from ``/proc/stat``."""
    try:
        parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return math.nan, math.nan
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


def _stored(workers: Sequence[_Child]) -> int:
    return sum(w.last("worker-stats").get("values_stored", 0) for w in workers)


def _percentile(hist: dict[int, int], q: float) -> float | None:
    total = sum(hist.values())
    if total == 0:
        return None
    want = math.ceil(q * total)
    seen = 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= want:
            return float(ms)
    return None


def _copy_batches(signals: int, rows: int, count: int) -> list[bytes]:
    """Binary COPY streams of ``count`` batches of ``rows`` readings (float, 1 Hz ticks)."""
    out = []
    t0 = time.time_ns() // 1000
    for b in range(count):
        sid = np.arange(rows, dtype=np.int32) % signals + 1
        tick = np.arange(rows, dtype=np.int64) // signals + b * math.ceil(rows / signals)
        table = pa.Table.from_arrays(
            [
                pa.array(sid),
                pa.array(t0 + tick * 1_000_000).cast(TS_TYPE),
                pa.array(np.full(rows, 0xC0, np.uint8)),
                pa.array(tick.astype(np.float64)),
                pa.nulls(rows, pa.int64()),
                pa.nulls(rows, pa.bool_()),
                pa.nulls(rows, pa.string()),
            ],
            schema=READING_SCHEMA,
        )
        out.append(encode_binary(sample_columns(table)))
    return out


async def _one_run(
    cfg: NatsIngestBenchConfig, n_workers: int, factory: Path, workdir: Path, report: Progress
) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    bus = f"{cfg.bus}?stream=BENCH{tag}&prefix=bench{tag}.ingest&ack_wait=60"
    conninfo, _ = parse_postgres_url(cfg.store)
    schema = f"bench_ingest_{tag}"
    db = f"{conninfo}{'&' if '?' in conninfo else '?'}schema={schema}"
    offered = cfg.devices * cfg.metrics * cfg.rate
    phase = f"{n_workers} worker(s)"
    workers = [
        _Child(["worker", str(factory), "--bus", bus, "--db", db, "--stats-interval", "0.5"])
        for _ in range(n_workers)
    ]
    spec = f"{cfg.devices},{cfg.metrics},{cfg.rate:g}"
    edge = _Child(
        [
            "edge", str(factory), "--bus", bus, "--buffer", str(workdir / f"edge-{tag}.buffer"),
            "--edge-id", "bench", "--generate", spec, "--stats-interval", "0.5",
            "--message-kb", str(cfg.message_kb),
        ]
    )  # fmt: skip
    try:
        signals = cfg.devices * cfg.metrics
        t_w = time.monotonic()
        while _stored(workers) < signals:
            if time.monotonic() - t_w > cfg.warmup_timeout_s:
                raise TimeoutError(
                    f"ingest bench: {_stored(workers):,} values stored after "
                    f"{cfg.warmup_timeout_s:g} s of warm-up (signals are created on the first)"
                )
            for child in (edge, *workers):
                if child.popen.poll() is not None:
                    raise RuntimeError(f"ingest bench: {child.args[0]} exited during warm-up")
            report(f"{phase}: warm-up", min(_stored(workers), signals), signals)
            await asyncio.sleep(0.5)
        warmup_s = time.monotonic() - t_w
        await asyncio.sleep(cfg.settle_s)
        for w in workers:  # latency counted from the window on
            w.last("worker-stats").pop("latency_ms", None)
        marks = len(workers[0].lines), [len(w.lines) for w in workers]
        stored0, acc0 = _stored(workers), edge.accepted_values()
        msgs0 = sum(w.last("worker-stats").get("messages", 0) for w in workers)
        cpu0 = [c.cpu_s() for c in (edge, *workers)]
        busy0, total0 = _machine_busy()
        t0 = time.monotonic()
        samples: list[tuple[float, int]] = []
        while (now := time.monotonic()) - t0 < cfg.seconds:
            samples.append((now - t0, edge.accepted_values() - acc0 - (_stored(workers) - stored0)))
            report(f"{phase}: measuring", now - t0, cfg.seconds)
            await asyncio.sleep(0.5)
        wall = time.monotonic() - t0
        stored = _stored(workers) - stored0
        accepted = edge.accepted_values() - acc0
        msgs = sum(w.last("worker-stats").get("messages", 0) for w in workers) - msgs0
        cpu1 = [c.cpu_s() for c in (edge, *workers)]
        busy1, total1 = _machine_busy()
        hist: dict[int, int] = {}
        for w, start in zip(workers, marks[1], strict=True):
            for doc in w.lines[start:]:
                if doc["kind"] == "worker-stats":
                    for ms, cnt in doc.get("latency_ms", []):
                        hist[ms] = hist.get(ms, 0) + cnt
        commits = sum(w.last("worker-stats").get("commits", 0) for w in workers)
        rows_per_commit = max(1, _stored(workers) // max(commits, 1))
        rss = max(w.peak_rss_mb() for w in workers)
        state = [w.last("worker-stats") for w in workers]
    finally:
        for child in (edge, *workers):
            child.stop()
    t = np.array([s[0] for s in samples])
    b = np.array([s[1] for s in samples], dtype=np.float64)
    slope = float(np.polyfit(t, b, 1)[0]) if len(samples) >= 3 else 0.0
    values_per_s = stored / wall
    report(f"{phase}: raw COPY baseline", 0, 1)
    payloads = await asyncio.to_thread(
        _copy_batches, signals, min(rows_per_commit, 500_000), cfg.copy_batches
    )
    rows = min(rows_per_commit, 500_000) * cfg.copy_batches
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema + "_raw")))
        raw = await _raw_copy_rate(
            conninfo, schema + "_raw", payloads, rows, indexed=False, progress=report
        )
    finally:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            for s in (schema, schema + "_raw"):
                await conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s))
                )
        with contextlib.suppress(Exception):
            await _delete_stream(bus)
    cpu = [(c1 - c0) / wall * 100.0 for c0, c1 in zip(cpu0, cpu1, strict=True)]
    machine = (busy1 - busy0) / (total1 - total0) * 100.0 * (os.cpu_count() or 1)
    return {
        "workers": n_workers,
        "devices": cfg.devices,
        "metrics": cfg.metrics,
        "rate": cfg.rate,
        "seconds": cfg.seconds,
        "edge_nodes": 1,
        "offered_values_per_s": round(offered),
        "values_per_s": round(values_per_s),
        "edge_values_per_s": round(accepted / wall),
        "keeps_up": values_per_s >= STORED_FRACTION * offered,
        "backlog_grew": bool(slope * wall > max(offered, 1.0)),
        "backlog_slope_values_per_s": round(slope, 1),
        "backlog_end_values": int(b[-1]) if len(b) else 0,
        "p50_latency_ms": _percentile(hist, 0.50),
        "p99_latency_ms": _percentile(hist, 0.99),
        "msgs_per_s": round(msgs / wall, 1),
        "baseline_msgs_per_s": None,
        "raw_copy_rows_per_s": round(raw),
        "raw_copy_batch_rows": min(rows_per_commit, 500_000),
        "ratio": round(values_per_s / raw, 3),
        "warmup_s": round(warmup_s, 1),
        "peak_rss_mb": rss,
        "edge_cpu_pct": round(cpu[0], 1),
        "workers_cpu_pct": [round(c, 1) for c in cpu[1:]],
        "machine_cpu_pct": round(machine, 1),
        "machine_cpus": os.cpu_count(),
        "rest_cpu_pct": round(machine - sum(cpu), 1),
        "rows_per_commit": rows_per_commit,
        "worker_state": [
            {k: s.get(k) for k in ("state", "held", "queue_depth", "backlog", "duplicates")}
            for s in state
        ],
    }


async def _delete_stream(bus: str) -> None:
    import nats

    from shopfloor.bus.nats import parse_nats_url

    settings = parse_nats_url(bus)
    nc = await nats.connect(list(settings.servers), connect_timeout=2, max_reconnect_attempts=1)
    try:
        await nc.jetstream().delete_stream(settings.stream)
    finally:
        await nc.close()


async def run_nats_ingest_bench(
    cfg: NatsIngestBenchConfig, workdir: Path | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Run one measurement per worker count and return the figures (``runs``, ``scaling``)."""
    report = progress or (lambda phase, done, total: None)
    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-nats-", dir=workdir) as tmp:
        factory = Path(tmp) / "bench.yaml"
        factory.write_text(_FACTORY)
        runs = [await _one_run(cfg, n, factory, Path(tmp), report) for n in cfg.workers]
    first = runs[0]
    figures: dict[str, Any] = {
        "bus": "nats",
        "store": "postgresql",
        "runs": runs,
        "scaling": {
            str(r["workers"]): round(r["values_per_s"] / first["values_per_s"], 2)
            if first["values_per_s"]
            else None
            for r in runs
        },
        "targets": dict(TARGETS),
    }
    one = next((r for r in runs if r["workers"] == 1), None)
    if one is not None:
        figures["targets_met"] = {
            "values_per_s_one_worker": one["values_per_s"] >= TARGETS["values_per_s"]
            and not one["backlog_grew"]
        }
    return figures

"""Edge buffer benchmark: puts and drains of Arrow IPC payloads, against raw SQLite inserts.

For each payload size (default 50, 200 and 500 KB), in one temporary folder:

* **payloads** — Arrow IPC streams of :data:`~shopfloor.edge.READING_SCHEMA` batches (random
  signal ids and floats: hardly compressible, like real readings), each within 1 % of the
  target size;
* **put** — :meth:`EdgeBuffer.put` of every payload, one awaited call after the other
  (each one transaction, durable when it returns), ``synchronous="normal"``;
* **drain** — then a :class:`Forwarder` with a send that only counts, until the buffer is
  empty (peek, send, ack: what replaying after an outage costs at the edge);
* **baseline** — the same payloads inserted straight with :mod:`sqlite3`, one transaction
  each, into a plain table of a WAL-mode file with ``synchronous=NORMAL``, on one thread:
  no event loop, no bookkeeping. It runs twice: with SQLite's defaults (``ratio`` = buffer
  puts/s ÷ baseline inserts/s) and *tuned* with the buffer's page size and exclusive
  locking (``ratio_to_tuned``: what the buffer's own work costs);
* these three, ``runs`` times in turn (medians reported), so that a busy moment of a
  shared machine falls on every side; finally
* **put (sync full)** — a quarter of the payloads with ``synchronous="full"`` (an fsync
  per put: the price of durability against power loss).
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from shopfloor.edge.batch import READING_SCHEMA
from shopfloor.edge.buffer import BufferItem, EdgeBuffer, Forwarder

__all__ = ["BufferBenchConfig", "arrow_payload", "run_buffer_bench"]

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called as a phase advances."""

_ROW_BYTES: Final = 23  # signal_id 4 + ts 8 + quality 1 + v_float 8 + validity bits, about


@dataclass(frozen=True, slots=True)
class BufferBenchConfig:
    """Sizes of a buffer benchmark run."""

    sizes_kb: Sequence[int] = (50, 200, 500)
    """Payload sizes, in KB (1,000 bytes)."""
    mb_per_size: float = 64.0
    """Megabytes put per size (the payload count follows)."""
    full_sync_fraction: float = 0.25
    """Share of the payloads also put with ``synchronous="full"`` (fsyncs are slow)."""
    runs: int = 3
    """Timed runs per size, alternating buffer and baseline (medians reported)."""
    seed: int = 7


def arrow_payload(target_bytes: int, rng: np.random.Generator) -> bytes:
    """An Arrow IPC stream of one batch of readings, within a few hundred bytes of the target."""
    rows = max(1, target_bytes // _ROW_BYTES)
    for _ in range(4):  # the first guess is close; correct by the measured bytes per row
        data = _ipc(rows, rng)
        if abs(len(data) - target_bytes) <= max(512, target_bytes // 100):
            break
        rows = max(1, round(rows * target_bytes / len(data)))
    return data


def _ipc(rows: int, rng: np.random.Generator) -> bytes:
    n = rows
    table = pa.Table.from_arrays(
        [
            pa.array(rng.integers(0, 5000, n, dtype=np.int32)),
            pa.array(1_767_225_600_000_000 + np.arange(n, dtype=np.int64) * 1000).cast(
                READING_SCHEMA.field("ts").type
            ),
            pa.array(np.full(n, 192, dtype=np.uint8)),
            pa.array(rng.normal(50.0, 10.0, n)),
            pa.nulls(n, pa.int64()),
            pa.nulls(n, pa.bool_()),
            pa.nulls(n, pa.string()),
        ],
        schema=READING_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, READING_SCHEMA) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _disk_bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


def _remove(folder: Path, pattern: str) -> None:
    for p in folder.glob(pattern):
        p.unlink()


def _raw_inserts(path: Path, payloads: Sequence[bytes], *, tuned: bool) -> float:
    """Seconds for the bare SQLite baseline: one INSERT + COMMIT per payload; ``tuned``
    with the buffer's own page size and exclusive locking."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if tuned:
            conn.execute("PRAGMA page_size = 16384")
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE q (seq INTEGER PRIMARY KEY, key TEXT, payload BLOB)")
        t0 = time.perf_counter()
        for payload in payloads:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO q (key, payload) VALUES (?, ?)", ("edge", payload))
            conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


async def _puts(
    path: Path,
    payloads: Sequence[bytes],
    synchronous: Any,
    progress: Progress,
    phase: str,
) -> tuple[float, EdgeBuffer]:
    buf = await EdgeBuffer(path, max_bytes=1 << 40, synchronous=synchronous).open()
    t0 = time.perf_counter()
    for i, payload in enumerate(payloads):
        await buf.put(payload, "edge")
        if i % 16 == 0:
            progress(phase, i + 1, len(payloads))
    elapsed = time.perf_counter() - t0
    progress(phase, len(payloads), len(payloads))
    return elapsed, buf


async def _one_size(
    folder: Path, size: int, cfg: BufferBenchConfig, progress: Progress
) -> dict[str, Any]:
    rng = np.random.default_rng(cfg.seed + size)
    count = max(4, round(cfg.mb_per_size * 1e6 / size))
    distinct = [arrow_payload(size, rng) for _ in range(min(count, 16))]
    payloads = [distinct[i % len(distinct)] for i in range(count)]
    total = sum(len(p) for p in payloads)
    kb = size // 1000

    put_s: list[float] = []
    drain_s: list[float] = []
    raw_s: list[float] = []
    tuned_s: list[float] = []
    disk = 0
    for run in range(cfg.runs):  # alternating, so that a busy moment hits every side
        path = folder / f"buffer-{kb}-{run}.sqlite"
        elapsed, buf = await _puts(path, payloads, "normal", progress, f"put {kb} KB #{run + 1}")
        put_s.append(elapsed)
        received = 0

        async def send(batch: list[BufferItem], phase: str = f"drain {kb} KB #{run + 1}") -> None:
            nonlocal received
            received += len(batch)
            progress(phase, received, count)

        disk = await asyncio.to_thread(_disk_bytes, folder, f"{path.name}*")
        try:
            t0 = time.perf_counter()
            await Forwarder(buf).run(send, until_empty=True)
            drain_s.append(time.perf_counter() - t0)
        finally:
            await buf.close()
        if received != count:
            raise RuntimeError(f"the drain delivered {received} payloads of {count}")
        phase = f"raw sqlite3 {kb} KB #{run + 1}"
        progress(phase, 0, 2)
        raw = folder / f"raw-{kb}-{run}.sqlite"
        raw_s.append(await asyncio.to_thread(_raw_inserts, raw, payloads, tuned=False))
        progress(phase, 1, 2)
        tuned = folder / f"tuned-{kb}-{run}.sqlite"
        tuned_s.append(await asyncio.to_thread(_raw_inserts, tuned, payloads, tuned=True))
        progress(phase, 2, 2)
        await asyncio.to_thread(_remove, folder, f"*-{kb}-{run}.sqlite*")

    full = payloads[: max(2, round(count * cfg.full_sync_fraction))]
    full_path = folder / f"full-{kb}.sqlite"
    full_elapsed, fbuf = await _puts(full_path, full, "full", progress, f"put {kb} KB, sync full")
    await fbuf.close()
    await asyncio.to_thread(_remove, folder, f"{full_path.name}*")

    put, drain = statistics.median(put_s), statistics.median(drain_s)
    raw_med, tuned_med = statistics.median(raw_s), statistics.median(tuned_s)
    mb = total / 1e6
    return {
        "payload_bytes": round(total / count),
        "payloads": count,
        "mb": round(mb, 2),
        "runs": cfg.runs,
        "put_per_s": round(count / put, 1),
        "put_mb_per_s": round(mb / put, 1),
        "put_per_s_runs": [round(count / t, 1) for t in put_s],
        "drain_per_s": round(count / drain, 1),
        "drain_mb_per_s": round(mb / drain, 1),
        "put_sync_full_per_s": round(len(full) / full_elapsed, 1),
        "put_sync_full_mb_per_s": round(sum(len(p) for p in full) / 1e6 / full_elapsed, 1),
        "raw_insert_per_s": round(count / raw_med, 1),
        "raw_insert_mb_per_s": round(mb / raw_med, 1),
        "raw_insert_per_s_runs": [round(count / t, 1) for t in raw_s],
        "raw_tuned_insert_per_s": round(count / tuned_med, 1),
        "ratio": round(raw_med / put, 3),
        "ratio_to_tuned": round(tuned_med / put, 3),
        "disk_mb_after_puts": round(disk / 1e6, 1),
    }


async def run_buffer_bench(
    cfg: BufferBenchConfig, folder: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the benchmark in ``folder`` (its files are left there); the figures as a dict."""
    report = progress or (lambda phase, done, total: None)
    per_size = [await _one_size(folder, kb * 1000, cfg, report) for kb in cfg.sizes_kb]
    ratios = [s["ratio"] for s in per_size]
    tuned = [s["ratio_to_tuned"] for s in per_size]
    return {
        "sizes": per_size,
        "mb_per_size": cfg.mb_per_size,
        "put_mb_per_s_min": min(s["put_mb_per_s"] for s in per_size),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_to_tuned_min": min(tuned),
        "baseline": "sqlite3 INSERT + COMMIT per payload, WAL, synchronous=NORMAL, same thread",
    }

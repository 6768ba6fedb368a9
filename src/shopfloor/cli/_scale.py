"""``shopfloor edge`` and ``shopfloor worker``: the scale-out path over a NATS JetStream bus.

``edge`` runs a factory file's connectors (or, with ``--generate``, synthetic counters) into
a durable on-disk buffer and forwards it to the bus; ``worker`` pulls from the bus, maps,
and stores in the historian. With ``--stats-interval`` both print one JSON object per line
on standard output (``{"kind": "edge-stats", …}``, ``{"kind": "worker-stats", …}``; the
generator adds ``{"kind": "accepted", "first": k, "last": k, "values": n}`` after each batch
of ticks is durably in the buffer), for monitoring and for the fault tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shopfloor.errors import ShopfloorError
from shopfloor.model import FactoryFileError, load_factory

__all__ = ["register"]

console = Console(stderr=True)


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)


def _check_bus(bus: str) -> None:
    if not bus.startswith(("nats://", "tls://")):
        console.print(
            f"[red]error:[/] --bus {bus!r}: only NATS JetStream (nats://host:4222) is supported "
            "between processes; without a bus, `shopfloor up` runs everything in one process"
        )
        raise typer.Exit(2)


async def _until(stop: asyncio.Event, duration: float | None) -> None:
    if duration is None:
        await stop.wait()
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)


async def _run_edge(
    factory_file: Path,
    bus: str,
    buffer_path: Path,
    buffer_mb: float,
    overflow: str,
    edge_id: str,
    generate: str | None,
    generate_source: str | None,
    duration: float | None,
    stats_interval: float,
    message_kb: int,
    compression: str,
) -> None:
    from shopfloor.bus.nats import NatsPublisher
    from shopfloor.edge._generator import CounterGenerator, parse_generate
    from shopfloor.edge._generator import generate as run_generator
    from shopfloor.edge.buffer import EdgeBuffer
    from shopfloor.edge.node import EdgeNode

    factory = load_factory(factory_file)
    gen = None
    if generate is not None:
        devices, signals, rate = parse_generate(generate)
        source = generate_source or next(iter(factory.connections), None)
        conn = factory.connections.get(source or "")
        if conn is None or "auto_area" not in conn.options:
            raise ShopfloorError(
                f"--generate needs a connection with auto_area in {factory_file} "
                f"(--generate-source; {source!r} has none)"
            )
        area = str(conn.options["auto_area"]).strip("/")
        gen = CounterGenerator(str(source), area, devices, signals, rate)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with (
        EdgeBuffer(
            buffer_path,
            max_bytes=int(buffer_mb * 2**20),
            overflow=overflow,  # type: ignore[arg-type]
        ) as buffer,
        NatsPublisher.from_url(bus, name=f"shopfloor-edge-{edge_id}") as publisher,
    ):
        if buffer.pending_count:
            console.print(
                f"edge buffer {buffer_path}: {buffer.pending_count:,} message(s) "
                f"({buffer.pending_bytes / 2**20:,.1f} MB) from before: sending them first"
            )
        node = EdgeNode(
            factory,
            buffer,
            publisher,
            edge_id=edge_id,
            max_message_bytes=message_kb << 10,
            compression=compression,  # type: ignore[arg-type]
            connectors=gen is None,
        )
        async with node, asyncio.TaskGroup() as tg:
            for name, why in node.skipped.items():
                console.print(f"connection {name}: not started ({why})")
            if gen is not None:

                def accepted(first: int, last: int, values: int) -> None:
                    if stats_interval > 0:
                        _emit({"kind": "accepted", "first": first, "last": last, "values": values})

                tg.create_task(run_generator(gen, node.put_readings, stop, accepted), name="gen")
            if stats_interval > 0:
                tg.create_task(_edge_stats(node, stop, stats_interval), name="edge-stats")
            await _until(stop, duration)
            stop.set()


async def _edge_stats(node: Any, stop: asyncio.Event, interval: float) -> None:
    while not stop.is_set():
        _emit(
            {
                "kind": "edge-stats",
                "t": round(time.time(), 3),
                **dataclasses.asdict(node.stats),
                "buffer": dataclasses.asdict(node.buffer.stats()),
                "forwarder": dataclasses.asdict(node.forwarder.stats),
                "connected": node.publisher.connected,
            }
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def edge_command(
    factory_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Factory file."),
    bus: str = typer.Option(..., "--bus", help="The bus: nats://host:4222[?stream=…]."),
    buffer_path: Path = typer.Option(
        Path("shopfloor-edge.buffer"), "--buffer", help="The store-and-forward file (SQLite)."
    ),
    buffer_mb: float = typer.Option(1024.0, "--buffer-mb", min=1.0, help="Its bound in MiB."),
    overflow: str = typer.Option(
        "drop_oldest", "--overflow", help="When full: drop_oldest, block or reject."
    ),
    edge_id: str = typer.Option(
        socket.gethostname(), "--edge-id", help="This edge's name in the bus subjects."
    ),
    generate: str | None = typer.Option(
        None,
        "--generate",
        help="DEVICES,SIGNALS,RATE: synthetic counters instead of the file's connectors "
        "(load and fault tests), as connection --generate-source (which needs auto_area).",
    ),
    generate_source: str | None = typer.Option(None, "--generate-source"),
    duration: float | None = typer.Option(None, "--duration", help="Stop after this many s."),
    stats_interval: float = typer.Option(
        0.0, "--stats-interval", help="Print JSON stats lines this often (0: never)."
    ),
    message_kb: int = typer.Option(512, "--message-kb", min=1, help="Largest message, KiB."),
    compression: str = typer.Option("none", "--compression", help="none, lz4 or zstd."),
) -> None:
    """Run an edge: connectors → durable buffer → NATS JetStream (store and forward)."""
    _check_bus(bus)
    if overflow not in ("drop_oldest", "block", "reject") or compression not in (
        "none",
        "lz4",
        "zstd",
    ):
        console.print("[red]error:[/] bad --overflow or --compression")
        raise typer.Exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(
            _run_edge(
                factory_file,
                bus,
                buffer_path,
                buffer_mb,
                overflow,
                edge_id,
                generate,
                generate_source,
                duration,
                stats_interval,
                message_kb,
                compression,
            )
        )
    except (FactoryFileError, ShopfloorError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


async def _run_worker(
    factory_file: Path,
    bus: str,
    db: str,
    duration: float | None,
    stats_interval: float,
    fetch: int,
) -> None:
    from shopfloor.bus.nats import NatsConsumer
    from shopfloor.bus.worker import IngestWorker
    from shopfloor.historian import open_historian

    factory = load_factory(factory_file)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with (
        open_historian(db) as historian,
        NatsConsumer.from_url(bus, name=f"shopfloor-worker-{socket.gethostname()}") as consumer,
    ):
        worker = IngestWorker(
            factory,
            historian,
            consumer,
            fetch_messages=fetch,
            touch_interval=max(0.5, min(10.0, consumer.settings.ack_wait / 3)),
        )
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(worker.run(), name="worker")
            if stats_interval > 0:
                tg.create_task(_worker_stats(worker, running, stats_interval), name="stats")
            waiting = tg.create_task(_until(stop, duration), name="until")
            await asyncio.wait([running, waiting], return_when=asyncio.FIRST_COMPLETED)
            worker.stop()
            waiting.cancel()
        if stats_interval > 0:
            _emit(_worker_doc(worker))


def _worker_doc(worker: Any) -> dict[str, Any]:
    s = worker.stats
    doc = {k: v for k, v in dataclasses.asdict(s).items() if not k.startswith("_")}
    doc["values_per_s"] = round(s.values_per_s())
    doc["latency_ms"] = worker.take_latency()  # since the previous line
    return {"kind": "worker-stats", "t": round(time.time(), 3), **doc}


async def _worker_stats(worker: Any, running: asyncio.Task[None], interval: float) -> None:
    while not running.done():
        _emit(_worker_doc(worker))
        await asyncio.sleep(interval)


def worker_command(
    factory_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Factory file."),
    bus: str = typer.Option(..., "--bus", help="The bus: nats://host:4222[?stream=…]."),
    db: str = typer.Option(..., "--db", help="The historian: postgresql://… or duckdb:FILE."),
    duration: float | None = typer.Option(None, "--duration", help="Stop after this many s."),
    stats_interval: float = typer.Option(
        0.0, "--stats-interval", help="Print JSON stats lines this often (0: never)."
    ),
    fetch: int = typer.Option(64, "--fetch", min=1, help="Messages pulled at a time."),
) -> None:
    """Run a worker: NATS JetStream → mapper → historian, acknowledging after each commit."""
    _check_bus(bus)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # the worker logs one line when the historian goes away and one when it is back; the
    # pool would log every failed reconnect
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    try:
        asyncio.run(_run_worker(factory_file, bus, db, duration, stats_interval, fetch))
    except (FactoryFileError, ShopfloorError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add the ``edge`` and ``worker`` commands."""
    app.command("edge")(edge_command)
    app.command("worker")(worker_command)

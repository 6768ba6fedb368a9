"""``shopfloor bench ingest``: Sparkplug ingest end to end (see :mod:`shopfloor.bench.ingest`)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from shopfloor.errors import ShopfloorError

__all__ = ["ingest_command", "register"]

console = Console(stderr=True)


def ingest_command(
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    devices: int = typer.Option(3000, "--devices", min=1, help="Simulated Sparkplug devices."),
    metrics: int = typer.Option(50, "--metrics", min=1, help="Metrics per device."),
    rate: float = typer.Option(1.0, "--rate", min=0.01, help="DDATA per device per second."),
    seconds: float = typer.Option(60.0, "--seconds", min=1.0, help="Measurement time."),
    broker: str = typer.Option("mqtt://127.0.0.1:1883", "--broker", help="The MQTT broker."),
    profile: bool | None = typer.Option(
        None,
        "--profile/--no-profile",
        help="Profile the host with cProfile (default: when it does not keep up).",
    ),
    workdir: Path | None = typer.Option(
        None, "--dir", help="Where the temporary DuckDB file goes (default: a temp dir)."
    ),
    bus: str = typer.Option(
        "mqtt", "--bus", help="mqtt (Sparkplug edges, one host) or nats (edge → NATS → workers)."
    ),
    store: str = typer.Option(
        "duckdb", "--store", help="duckdb (with --bus mqtt) or postgres (with --bus nats)."
    ),
    workers: int = typer.Option(
        2, "--workers", min=1, help="With --bus nats: one run each with 1 … N workers."
    ),
    nats: str = typer.Option("nats://127.0.0.1:4222", "--nats", help="The NATS server."),
    db: str = typer.Option(
        "postgresql://postgres@127.0.0.1:5432/test", "--db", help="The PostgreSQL database."
    ),
    memory_limit: str | None = typer.Option(
        None,
        "--memory-limit",
        help="With --store duckdb: DuckDB's memory_limit (e.g. 256MB; default DuckDB's own).",
    ),
) -> None:
    """Sparkplug edges → broker → host → pipeline → DuckDB: stored values/s, backlog,
    latency, RSS, and the host's message rate against a bare paho subscriber in the same run.

    With ``--bus nats --store postgres``: an edge (synthetic counters) → NATS JetStream →
    1 … N workers → PostgreSQL, against PostgreSQL's raw COPY of the same data."""
    from shopfloor.bench._report import print_figures, write_report
    from shopfloor.bench.ingest import IngestBenchConfig, run_ingest_bench

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if (bus, store) == ("nats", "postgres"):
        _nats_bench(json_out, devices, metrics, rate, seconds, workers, nats, db, workdir)
        return
    if (bus, store) != ("mqtt", "duckdb"):
        console.print("[red]error:[/] --bus mqtt --store duckdb, or --bus nats --store postgres")
        raise typer.Exit(2)
    try:
        cfg = IngestBenchConfig(
            devices=devices,
            metrics=metrics,
            rate=rate,
            seconds=seconds,
            broker=broker,
            profile=profile,
            memory_limit=memory_limit,
        )
        cfg.broker_address()
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    with (
        tempfile.TemporaryDirectory(prefix="shopfloor-bench-", dir=workdir) as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar,
    ):
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: float, total: float) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        try:
            figures = asyncio.run(run_ingest_bench(cfg, Path(tmp), progress))
        except (TimeoutError, RuntimeError, ValueError, OSError, ExceptionGroup) as exc:
            errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
            for err in errors:
                console.print(f"[red]error:[/] {err}", markup=True, highlight=False)
            raise typer.Exit(1) from exc
    top = figures.pop("profile_top", None)
    print_figures("Sparkplug ingest", figures, console=console)
    if top:
        print_figures(
            "host profile (tottime)",
            {row["function"]: f"{row['tottime_s']:.2f} s ({row['share']:.0%})" for row in top},
            console=console,
        )
        figures["profile_top"] = top
    if json_out is not None:
        write_report(json_out, "ingest", figures)
        console.print(f"wrote {json_out}")


def _nats_bench(
    json_out: Path | None,
    devices: int,
    metrics: int,
    rate: float,
    seconds: float,
    workers: int,
    nats: str,
    db: str,
    workdir: Path | None,
) -> None:
    from shopfloor.bench._report import print_figures, write_report
    from shopfloor.bench.ingest_nats import NatsIngestBenchConfig, run_nats_ingest_bench

    try:
        cfg = NatsIngestBenchConfig(
            devices=devices,
            metrics=metrics,
            rate=rate,
            seconds=seconds,
            workers=tuple(range(1, workers + 1)),
            bus=nats,
            store=db,
        )
    except (ValueError, ShopfloorError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: float, total: float) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        try:
            figures = asyncio.run(run_nats_ingest_bench(cfg, workdir, progress))
        except (TimeoutError, RuntimeError, OSError, ShopfloorError) as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc
    for run in figures["runs"]:
        shown = {k: v for k, v in run.items() if k != "worker_state"}
        print_figures(f"NATS ingest, {run['workers']} worker(s)", shown, console=console)
    print_figures("scaling (values/s relative to 1 worker)", figures["scaling"], console=console)
    if json_out is not None:
        write_report(json_out, "ingest-nats", figures)
        console.print(f"wrote {json_out}")


def register(bench_app: typer.Typer) -> None:
    """Add the ``ingest`` command to the ``bench`` app."""
    bench_app.command("ingest")(ingest_command)

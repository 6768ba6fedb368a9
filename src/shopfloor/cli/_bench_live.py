"""``shopfloor bench live``: the live WebSocket stream end to end (:mod:`shopfloor.bench.live`)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["live_command", "register"]

console = Console(stderr=True)


def live_command(
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    devices: int = typer.Option(3000, "--devices", min=1, help="Simulated devices."),
    metrics: int = typer.Option(50, "--metrics", min=1, help="Signals per device."),
    rate: float = typer.Option(1.0, "--rate", min=0.01, help="Samples per signal per second."),
    seconds: float = typer.Option(30.0, "--seconds", min=1.0, help="Measurement time per phase."),
    warmup: float = typer.Option(5.0, "--warmup", min=0.0, help="Steady flow before measuring."),
    flush_interval: float = typer.Option(
        0.25, "--flush-interval", min=0.001, help="The pipeline's commit interval (s)."
    ),
    compression: bool = typer.Option(
        False,
        "--compression/--no-compression",
        help="Let the client offer permessage-deflate (as browsers do).",
    ),
    workdir: Path | None = typer.Option(
        None, "--dir", help="Where the temporary DuckDB file goes (default: a temp dir)."
    ),
) -> None:
    """Devices → pipeline → DuckDB → live hub → WebSocket client subscribed to '**': values/s,
    latency from the device timestamp, frames/s, drops; against the same frames from a bare
    websockets server in the same run."""
    from shopfloor.bench._report import print_figures, write_report
    from shopfloor.bench.live import LiveBenchConfig, run_live_bench

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = LiveBenchConfig(
            devices=devices,
            metrics=metrics,
            rate=rate,
            seconds=seconds,
            warmup_s=warmup,
            flush_interval=flush_interval,
            compression=compression,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    with (
        tempfile.TemporaryDirectory(prefix="shopfloor-bench-", dir=workdir) as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
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
            figures = asyncio.run(run_live_bench(cfg, Path(tmp), progress))
        except (TimeoutError, RuntimeError, OSError, ExceptionGroup) as exc:
            errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
            for err in errors:
                console.print(f"[red]error:[/] {err}", markup=True, highlight=False)
            raise typer.Exit(1) from exc
    print_figures("live stream", figures, console=console)
    if json_out is not None:
        write_report(json_out, "live", figures)
        console.print(f"wrote {json_out}")


def register(bench_app: typer.Typer) -> None:
    """Add the ``live`` command to the ``bench`` app."""
    bench_app.command("live")(live_command)

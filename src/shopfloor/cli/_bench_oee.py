"""``shopfloor bench oee``: a line's OEE over 30 days of 1 Hz data (:mod:`shopfloor.bench.oee`)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["oee_command", "register"]

console = Console(stderr=True)


def oee_command(
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    days: float = typer.Option(
        30.0, "--days", min=0.001, help="Simulated days of 1 Hz data (the target: 30)."
    ),
    runs: int = typer.Option(5, "--runs", min=1, help="Timed OEE runs, cold and warm (median)."),
    seed: int = typer.Option(7, "--seed", help="The simulation's seed."),
    workdir: Path | None = typer.Option(
        None, "--dir", help="Where the temporary DuckDB file goes (default: a temp dir)."
    ),
    keep: Path | None = typer.Option(
        None,
        "--keep",
        file_okay=False,
        help="Build the data in this directory and keep it; a later run with the same --days "
        "and --seed times it again without rebuilding.",
    ),
) -> None:
    """OEE of a simulated line over DAYS of 1 Hz data, against a bare DuckDB scan of its rows."""
    from shopfloor.bench._report import print_figures, write_report
    from shopfloor.bench.oee import OeeBenchConfig, run_oee_bench

    cfg = OeeBenchConfig(days=days, runs=runs, seed=seed)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.nullcontext(str(keep))
        if keep is not None
        else tempfile.TemporaryDirectory(prefix="shopfloor-bench-", dir=workdir) as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar,
    ):
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        figures = asyncio.run(run_oee_bench(cfg, Path(tmp), progress, reuse=keep is not None))
    shown = {k: v for k, v in figures.items() if not k.startswith("oee_runs_")}
    print_figures("OEE of a line", shown, console=console)
    if json_out is not None:
        write_report(json_out, "oee", figures)
        console.print(f"wrote {json_out}")


def register(bench_app: typer.Typer) -> None:
    """Add the ``oee`` command to the ``bench`` app."""
    bench_app.command("oee")(oee_command)

"""``shopfloor bench …``: the benchmark commands (one app, each benchmark a command)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["app"]

app = typer.Typer(
    help="Benchmarks: measure throughput and latency, write the figures as JSON.",
    no_args_is_help=True,
)

console = Console(stderr=True)


@app.callback()
def _bench() -> None:
    """Benchmarks: measure throughput and latency, write the figures as JSON."""


@app.command("historian")
def historian_command(
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    rows: int = typer.Option(2_000_000, "--rows", min=1, help="Rows appended (append vs raw)."),
    signals: int = typer.Option(100, "--signals", min=1, help="Signals the rows spread over."),
    batch_rows: int = typer.Option(100_000, "--batch-rows", min=1, help="Rows per batch."),
    downsample_points: int = typer.Option(
        31_536_000,
        "--downsample-points",
        min=1,
        help="Points of the 1 Hz downsample signal (default: one year).",
    ),
    runs: int = typer.Option(5, "--runs", min=1, help="Timed downsample runs (median)."),
    workdir: Path | None = typer.Option(
        None, "--dir", help="Where the temporary DuckDB files go (default: a temp dir)."
    ),
    store: str = typer.Option(
        "duckdb",
        "--store",
        help="duckdb, or a postgresql://user@host:port/db URL: the PostgreSQL engine against "
        "a raw binary COPY (in temporary schemas, dropped afterwards).",
    ),
) -> None:
    """Historian engine: append rate against a raw insert of the same data, downsample time."""
    from shopfloor.bench._report import print_figures, write_report
    from shopfloor.bench.historian import HistorianBenchConfig, run_historian_bench
    from shopfloor.bench.historian_postgres import run_postgres_historian_bench

    scheme = store.partition(":")[0].lower()
    if store != "duckdb" and scheme not in ("postgresql", "postgres"):
        raise typer.BadParameter(
            f"expected duckdb or a postgresql:// URL, not {store!r}", param_hint="--store"
        )

    cfg = HistorianBenchConfig(
        rows=rows,
        signals=signals,
        batch_rows=batch_rows,
        downsample_points=downsample_points,
        runs=runs,
    )
    with (
        tempfile.TemporaryDirectory(prefix="shopfloor-bench-", dir=workdir) as tmp,
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

        if store == "duckdb":
            figures = asyncio.run(run_historian_bench(cfg, Path(tmp), progress))
        else:
            figures = asyncio.run(run_postgres_historian_bench(cfg, store, progress))
    title = "DuckDB historian" if store == "duckdb" else "PostgreSQL historian"
    print_figures(title, figures, console=console)
    if json_out is not None:
        write_report(json_out, "historian", figures)
        console.print(f"wrote {json_out}")

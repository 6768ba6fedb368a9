"""``shopfloor bench buffer``: the edge store-and-forward buffer (:mod:`shopfloor.bench.buffer`)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["buffer_command", "register"]

console = Console(stderr=True)


def buffer_command(
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    sizes: str = typer.Option(
        "50,200,500", "--sizes", help="Payload sizes in KB, comma-separated."
    ),
    mb: float = typer.Option(64.0, "--mb", min=0.01, help="Megabytes put per payload size."),
    workdir: Path | None = typer.Option(
        None, "--dir", help="Where the temporary SQLite files go (default: a temp dir)."
    ),
) -> None:
    """Puts and drains of Arrow IPC payloads through the edge buffer, against raw sqlite3."""
    from shopfloor.bench._report import print_figures, write_report
    from shopfloor.bench.buffer import BufferBenchConfig, run_buffer_bench

    try:
        sizes_kb = tuple(int(s) for s in sizes.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(
            f"--sizes {sizes!r}: comma-separated KB, e.g. 50,200,500"
        ) from None
    if not sizes_kb or min(sizes_kb) <= 0:
        raise typer.BadParameter(f"--sizes {sizes!r}: at least one positive size")
    cfg = BufferBenchConfig(sizes_kb=sizes_kb, mb_per_size=mb)
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

        figures = asyncio.run(run_buffer_bench(cfg, Path(tmp), progress))
    for size in figures["sizes"]:
        print_figures(f"edge buffer, {size['payload_bytes']:,} B payloads", size, console=console)
    if json_out is not None:
        write_report(json_out, "buffer", figures)
        console.print(f"wrote {json_out}")


def register(bench_app: typer.Typer) -> None:
    """Add the ``buffer`` command to the ``bench`` app."""
    bench_app.command("buffer")(buffer_command)

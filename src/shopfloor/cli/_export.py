"""``shopfloor export``: history, events and KPIs as partitioned Parquet or CSV files."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shopfloor.errors import ShopfloorError

__all__ = ["register"]

err = Console(stderr=True)


class FileFormat(StrEnum):
    """The file format of an export."""

    parquet = "parquet"
    csv = "csv"


def register(app: typer.Typer) -> None:
    """Add ``export`` to ``app``."""

    @app.command("export")
    def export_cmd(
        factory: Path = typer.Argument(..., help="The factory file (YAML)."),
        db: str = typer.Option(..., "--db", help="Historian URL (or a .duckdb path)."),
        since: str = typer.Option(..., "--since", help="Start (ISO 8601, 'now', -7d)."),
        until: str = typer.Option("now", "--until", help="End, exclusive (ISO 8601, 'now')."),
        out: Path = typer.Option(..., "--out", help="The folder to write (empty or new)."),
        fmt: FileFormat = typer.Option(FileFormat.parquet, "--format", help="parquet or csv."),
        what: str = typer.Option(
            "history,events,kpis", "--what", help="What to export, comma-separated."
        ),
        under: list[str] = typer.Option(
            [], "--under", help="Only these asset subtrees (repeat); everything by default."
        ),
    ) -> None:
        """Export history, events and hourly OEE of [since, until) as Hive-partitioned files
        (<out>/<table>/day=YYYY-MM-DD/asset=<path with / as ~>/part-0.<ext>) with a data
        dictionary (dictionary.json): readable by pandas, polars, DuckDB and Spark."""
        from shopfloor.cli._query import _open_existing, parse_time
        from shopfloor.export import WHAT, ExportResult, export_open
        from shopfloor.model import FactoryFileError, load_factory

        try:
            model = load_factory(factory)
        except FactoryFileError as exc:
            err.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        now = datetime.now(UTC)
        try:
            start, end = parse_time(since, now), parse_time(until, now)
        except ValueError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        tables = [w.strip() for w in what.split(",") if w.strip()]
        unknown = [w for w in tables if w not in WHAT]
        if unknown or not tables:
            err.print(
                f"[red]error:[/] --what {what!r}: choose from {', '.join(WHAT)}", highlight=False
            )
            raise typer.Exit(2)

        async def work(progress: Progress) -> ExportResult:
            task = progress.add_task("export", total=None)

            def step(name: str, done: int, total: int) -> None:
                progress.update(task, description=name, completed=done, total=total)

            async with _open_existing(db) as historian:
                return await export_open(
                    historian,
                    model,
                    out,
                    start,
                    end,
                    what=tables,  # type: ignore[arg-type]
                    fmt=fmt.value,
                    under=under,
                    progress=step,
                )

        with Progress(
            TextColumn("[bold]{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        ) as progress:
            try:
                result = asyncio.run(work(progress))
            except ShopfloorError as exc:
                err.print(f"[red]error:[/] {exc}", highlight=False)
                raise typer.Exit(1) from exc
        rows = ", ".join(f"{k} {v:,}" for k, v in result.rows.items())
        err.print(
            f"exported {len(result.files):,} files ({rows} rows, {result.bytes / 1e6:,.1f} MB) "
            f"to {result.out}; data dictionary: {result.dictionary}",
            highlight=False,
        )

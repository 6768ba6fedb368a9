"""``shopfloor kpi``: OEE and the six big losses of an asset, printed as rich tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from shopfloor.cli._query import _open_existing, parse_time
from shopfloor.errors import ShopfloorError
from shopfloor.model import FactoryFileError, load_factory

__all__ = ["register"]


class By(StrEnum):
    """Windows of a KPI table."""

    shift = "shift"
    hour = "hour"
    day = "day"


_PERCENT = {
    "availability",
    "performance",
    "quality",
    "oee",
    "share_of_pbt",
}


_HEADERS = {
    "window_start": "start (UTC)",
    "window_end": "end (UTC)",
    "planned_busy_time_s": "PBT s",
    "actual_production_time_s": "APT s",
    "ideal_cycle_time_s": "ict s",
    "share_of_pbt": "of PBT",
}


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if name in _PERCENT:
        return f"{100 * float(value):.1f} %"
    if isinstance(value, float):
        return f"{value:,.0f}" if name.endswith("_s") or name == "seconds" else f"{value:.3f}"
    return str(value)


def _print(table: pa.Table, title: str, drop: tuple[str, ...] = ("asset",)) -> None:
    names = [n for n in table.column_names if n not in drop]
    if "shift" in names and table.column("shift").null_count == table.num_rows:
        names.remove("shift")
    out = Table(title=title)
    for name in names:
        out.add_column(
            _HEADERS.get(name, name),
            justify="left" if name in ("loss", "category", "shift") else "right",
        )
    for row in table.to_pylist():
        out.add_row(*(_cell(n, row[n]) for n in names))
    Console().print(out)


def _run(
    kind: str, asset: str, db: str, factory_file: str, since: str, until: str, by: By | None
) -> None:
    err = Console(stderr=True)
    try:
        now = datetime.now(UTC)
        start, end = parse_time(since, now), min(parse_time(until, now), now)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if end <= start:
        err.print("[red]error:[/] --until must be after --since")
        raise typer.Exit(2)
    try:
        factory = load_factory(factory_file)
        factory.asset(asset)
    except FactoryFileError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    except KeyError as exc:
        err.print(f"[red]error:[/] no asset {asset!r} in {factory_file}")
        raise typer.Exit(2) from exc

    async def compute() -> pa.Table:
        from shopfloor.analytics import losses, oee

        async with _open_existing(db) as historian:
            fn = oee if kind == "oee" else losses
            return await fn(historian, factory, asset, start, end, by.value if by else None)

    try:
        table = asyncio.run(compute())
    except (ShopfloorError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    what = "OEE" if kind == "oee" else "Losses"
    title = f"{what} of {asset}  {start:%Y-%m-%d %H:%M} … {end:%Y-%m-%d %H:%M} UTC"
    _print(table, title)


def register(app: typer.Typer) -> None:
    """Add the ``kpi`` command group (``kpi oee``, ``kpi losses``) to ``app``."""
    kpi = typer.Typer(help="Key performance indicators: OEE and losses.", no_args_is_help=True)

    asset_arg = typer.Argument(..., help="Asset path: equipment, cell, line, area or site.")
    db_opt = typer.Option(
        "duckdb:shopfloor.duckdb", "--db", help="Historian URL (or a .duckdb path)."
    )
    factory_opt = typer.Option(..., "--factory", help="The factory file (YAML).")
    since_opt = typer.Option(
        "-1d", "--since", help="Start: ISO 8601 (without a zone = UTC), 'now', or relative (-8h)."
    )
    until_opt = typer.Option("now", "--until", help="End (exclusive), same forms as --since.")
    by_opt = typer.Option(None, "--by", help="One row per shift, hour or day.")

    @kpi.command("oee")
    def oee_cmd(
        asset: str = asset_arg,
        db: str = db_opt,
        factory: str = factory_opt,
        since: str = since_opt,
        until: str = until_opt,
        by: By | None = by_opt,
    ) -> None:
        """OEE (ISO 22400-2): availability × performance × quality per window."""
        _run("oee", asset, db, factory, since, until, by)

    @kpi.command("losses")
    def losses_cmd(
        asset: str = asset_arg,
        db: str = db_opt,
        factory: str = factory_opt,
        since: str = since_opt,
        until: str = until_opt,
        by: By | None = by_opt,
    ) -> None:
        """The six big losses in seconds and as a share of planned busy time."""
        _run("losses", asset, db, factory, since, until, by)

    app.add_typer(kpi, name="kpi")

"""``shopfloor aas``: export the factory model as Asset Administration Shells, import them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from shopfloor.aas import (
    AasError,
    AasExporter,
    AasOptions,
    ImportOptions,
    LatestValue,
    import_environment,
    latest_values,
    read_environment,
    write_environment,
)
from shopfloor.errors import HistorianError
from shopfloor.model import Factory, FactoryFileError, load_factory

__all__ = ["app"]

app = typer.Typer(
    help="Asset Administration Shells (AAS v3): export the model as JSON or AASX, import them.",
    no_args_is_help=True,
)


def _load(file: Path) -> Factory:
    try:
        return load_factory(file)
    except FactoryFileError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        typer.echo(f"{file}: {len(exc.issues)} problem(s)", err=True)
        raise typer.Exit(1) from None


async def _latest(db: str, factory: Factory) -> dict[str, LatestValue]:
    from shopfloor.cli._query import _open_existing

    async with _open_existing(db) as h:
        return await latest_values(h, [s.path for s in factory.signals()])


@app.command("export")
def export(
    factory_file: Path = typer.Argument(..., help="Factory file (YAML)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: file.json or file.aasx."),
    db: str | None = typer.Option(
        None, "--db", help="Historian URL: fill OperationalData with the latest values."
    ),
    id_base: str | None = typer.Option(
        None,
        "--id-base",
        help="Prefix of every AAS id and globalAssetId (default https://<enterprise>.example/ids).",
    ),
    api_url: str = typer.Option(
        "http://127.0.0.1:8080",
        "--api-url",
        help="Base URL of the REST API the TimeSeries segments link to.",
    ),
) -> None:
    """One shell per equipment: Nameplate, TechnicalData, OperationalData, TimeSeries."""
    factory = _load(factory_file)
    latest: dict[str, LatestValue] = {}
    if db is not None:
        try:
            latest = asyncio.run(_latest(db, factory))
        except HistorianError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    exporter = AasExporter(factory, AasOptions(id_base=id_base, api_url=api_url))
    env = exporter.environment(latest)
    try:
        write_environment(env, out)
    except (AasError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    shells = len(exporter.equipment())
    values = sum(1 for s in factory.signals() if s.path in latest)
    typer.echo(
        f"{out}: {shells} shells, {4 * shells} submodels, "
        f"{len(factory.signals())} signals ({values} with a latest value)"
    )


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="AAS environment: .json or .aasx."),
    out: Path = typer.Option(..., "--out", "-o", help="Factory-file fragment to write (YAML)."),
    line: str = typer.Option(
        "aas/site/area/line",
        "--line",
        help="enterprise/site/area/line for shells without a shopfloor asset path.",
    ),
    connection: str = typer.Option("aas", "--connection", help="Connection the signals bind to."),
    endpoint: str = typer.Option(
        "mqtt://127.0.0.1:1883", "--endpoint", help="That connection's MQTT endpoint."
    ),
) -> None:
    """Shells → asset types and equipment with signals and units (a factory-file fragment)."""
    try:
        env = read_environment(file)
        result = import_environment(
            env,
            ImportOptions(line=line, connection=connection, endpoint=endpoint),
            source=str(file),
        )
        out.write_text(result.yaml(), encoding="utf-8")
    except (AasError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(
        f"{out}: {result.shells} equipment, {len(result.fragment['types'])} asset types, "
        f"{result.signals} signals"
    )

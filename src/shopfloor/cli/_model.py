"""``shopfloor model``: validate a factory file, print its JSON Schema, show its tree."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from shopfloor.model import (
    Factory,
    FactoryFileError,
    factory_json_schema,
    load_factory,
    render_tree,
)

__all__ = ["app"]

app = typer.Typer(
    help="The factory file: validate it, print its JSON Schema, show its asset tree.",
    no_args_is_help=True,
)


def _load(file: Path) -> Factory:
    try:
        return load_factory(file)
    except FactoryFileError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        count = len(exc.issues)
        typer.echo(f"{file}: {count} problem{'s' if count != 1 else ''}", err=True)
        raise typer.Exit(1) from None


@app.command()
def validate(file: Path = typer.Argument(..., help="Factory file (YAML).")) -> None:
    """Check a factory file; print every problem (file:line:col: path: message)."""
    factory = _load(file)
    assets = factory.assets()
    signals = factory.signals()
    typer.echo(
        f"{file}: valid — {len(assets)} assets, "
        f"{sum(1 for a in assets if a.level == 'equipment')} equipment, "
        f"{len(signals)} signals, {len(factory.bindings())} bindings, "
        f"{len(factory.connections)} connections"
    )


@app.command()
def schema() -> None:
    """Print the JSON Schema of the factory file format."""
    typer.echo(json.dumps(factory_json_schema(), indent=2, ensure_ascii=False))


@app.command()
def tree(
    file: Path = typer.Argument(..., help="Factory file (YAML)."),
    signals: bool = typer.Option(False, "--signals", help="List each equipment's signals."),
) -> None:
    """Show the asset tree: levels, equipment types and signal counts."""
    factory = _load(file)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not crop long labels at 80 columns
        console = Console(width=200)
    console.print(render_tree(factory, signals=signals))

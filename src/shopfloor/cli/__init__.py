"""The ``shopfloor`` command line.

Each command group lives in its own module of this package and is registered here; the
modules hold only argument parsing and presentation, the work is done by the library.
"""

from __future__ import annotations

import typer

from shopfloor import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="shopfloor",
    help="Open manufacturing platform: connect machines, keep their data, compute KPIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shopfloor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Open manufacturing platform: connect machines, keep their data, compute KPIs."""


_registered = False


def _register() -> None:
    """Add every command group to :data:`app` (once)."""
    global _registered
    if _registered:
        return
    _registered = True
    # Imported here so that each group module can import `app` helpers without cycles.
    from shopfloor.cli import (
        _aas,
        _alarms,
        _api,
        _bench,
        _bench_anomaly,
        _bench_buffer,
        _bench_ingest,
        _bench_live,
        _bench_oee,
        _bench_opcua,
        _connect,
        _export,
        _kpi,
        _model,
        _query,
        _scale,
        _share,
        _sim,
        _up,
    )

    app.add_typer(_model.app, name="model")
    app.add_typer(_aas.app, name="aas")
    _bench_opcua.register(_bench.app)
    _bench_ingest.register(_bench.app)
    _bench_anomaly.register(_bench.app)
    _bench_oee.register(_bench.app)
    _bench_live.register(_bench.app)
    _bench_buffer.register(_bench.app)
    app.add_typer(_bench.app, name="bench")
    _query.register(app)
    _connect.register(app)
    _sim.register(app)
    _up.register(app)
    _kpi.register(app)
    app.add_typer(_alarms.app, name="alarms")
    _api.register(app)
    app.add_typer(_share.app, name="share")
    _export.register(app)
    _scale.register(app)


def main() -> None:
    """Entry point of the ``shopfloor`` console script."""
    _register()
    app()

"""``shopfloor kpi oee`` / ``kpi losses`` print rich tables."""

from __future__ import annotations

import typer
from _analytics_helpers import SimulatedDay
from typer.testing import CliRunner

from shopfloor.cli import _kpi

P2 = "acme/munich/body-shop/line-1/cell-1/press-2"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    _kpi.register(app)
    return app


def _args(day: SimulatedDay, *extra: str) -> list[str]:
    return [
        *extra,
        "--db",
        day.url,
        "--factory",
        str(day.factory_file),
        "--since",
        day.start.isoformat(),
        "--until",
        day.end.isoformat(),
    ]


def test_kpi_oee_prints_a_table(simulated_day: SimulatedDay) -> None:
    result = CliRunner().invoke(
        _app(), _args(simulated_day, "kpi", "oee", P2, "--by", "shift"), env={"COLUMNS": "220"}
    )
    assert result.exit_code == 0, result.output
    assert "OEE of" in result.output
    assert "availability" in result.output
    assert "early" in result.output
    assert "%" in result.output


def test_kpi_losses_prints_a_table(simulated_day: SimulatedDay) -> None:
    result = CliRunner().invoke(
        _app(), _args(simulated_day, "kpi", "losses", P2), env={"COLUMNS": "220"}
    )
    assert result.exit_code == 0, result.output
    for name in ("breakdowns", "setup", "small_stops", "speed_loss", "startup_rejects"):
        assert name in result.output


def test_kpi_unknown_asset_fails_cleanly(simulated_day: SimulatedDay) -> None:
    result = CliRunner().invoke(_app(), _args(simulated_day, "kpi", "oee", "acme/nowhere"))
    assert "no asset" in result.output
    assert result.exit_code == 2

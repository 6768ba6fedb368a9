"""``shopfloor sim``: runs a small factory for a while and exits cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from shopfloor.cli import _sim


def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """Test root."""

    _sim.register(root)
    return root


def test_sim_runs_for_its_duration(factory_file: Path, free_port: int) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(
        app(),
        [
            "sim",
            str(factory_file),
            "--duration",
            "2",
            "--speed",
            "600",
            "--seed",
            "1",
            "--port-offset",
            str(free_port - 4841),
            "--start",
            "2025-01-06T08:00:00",
        ],
    )
    assert result.exit_code == 0, result.output
    assert 2.0 <= time.monotonic() - started < 15.0


def test_sim_reports_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("enterprise: {}\n", encoding="utf-8")
    result = CliRunner().invoke(app(), ["sim", str(bad), "--duration", "1"])
    assert result.exit_code == 1

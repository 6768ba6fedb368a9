"""``shopfloor bench opcua`` runs tiny and writes the JSON keys."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from shopfloor.cli._bench_opcua import register

KEYS = {
    "items",
    "keeping_up",
    "cpu_percent_per_1000_items",
    "values_per_s",
    "expected_values_per_s",
    "lag_p50_ms",
    "lag_p99_ms",
}


def test_bench_opcua_tiny(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Bench."""

    register(app)
    out = tmp_path / "opcua.json"
    result = CliRunner().invoke(
        app, ["opcua", "--items", "200", "--seconds", "3", "--json", str(out)]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads(out.read_text())
    assert set(doc) >= KEYS
    assert doc["items"] == 200
    assert doc["expected_values_per_s"] == 200
    assert isinstance(doc["keeping_up"], bool)
    assert doc["values_per_s"] > 0
    assert doc["cpu_percent_per_1000_items"] > 0

"""``shopfloor bench oee`` runs tiny and writes its JSON (the figures, not their speed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from shopfloor.bench.oee import LEAD_S
from shopfloor.cli._bench_oee import register


def test_bench_oee_tiny(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Bench."""

    register(app)
    out = tmp_path / "oee.json"
    args = ["oee", "--days", "0.05", "--runs", "2", "--json", str(out), "--dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads(out.read_text())
    assert doc["bench"] == "oee"
    assert doc["machine"]["cpu_count"] >= 1
    assert doc["days"] == 0.05
    assert doc["ticks"] == 4320
    assert (doc["stations"], doc["signals"]) == (4, 12)
    assert doc["rows"] == 12 * (LEAD_S + 4320)  # every signal, every second
    assert len(doc["oee_runs_ms_cold"]) == len(doc["oee_runs_ms_warm"]) == 2
    for key in ("oee_ms_cold", "oee_ms_warm", "baseline_scan_ms", "ratio_warm_to_baseline"):
        assert doc[key] > 0
    # the computed OEE agrees with what the simulator counted
    assert doc["matches_simulator"] is True
    assert (doc["good"], doc["reject"]) == (doc["simulator_good"], doc["simulator_reject"])
    assert doc["good"] > 0
    assert abs(doc["actual_production_time_s"] - doc["simulator_running_s"]) <= 2
    for key in ("availability", "performance", "quality", "oee"):
        assert 0 < doc[key] <= 1
    product = doc["availability"] * doc["performance"] * doc["quality"]
    assert abs(doc["oee"] - product) < 1e-12
    assert doc["pass"] is None  # the 100 ms target is judged at 30 days only
    assert doc["target_ms_max"] == 100.0


def test_bench_oee_keep_reuses_the_same_build_only(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Bench."""

    register(app)
    keep = tmp_path / "kept"

    def run(days: str) -> dict[str, object]:
        out = tmp_path / f"oee-{days}.json"
        args = ["oee", "--days", days, "--runs", "1", "--json", str(out), "--keep", str(keep)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (result.output, result.exception)
        doc: dict[str, object] = json.loads(out.read_text())
        return doc

    first, again, other = run("0.02"), run("0.02"), run("0.03")
    assert (first["reused"], again["reused"], other["reused"]) == (False, True, False)
    for key in ("rows", "good", "reject", "oee", "build_s", "matches_simulator"):
        assert again[key] == first[key]
    assert other["rows"] != first["rows"]
    assert (keep / "oee.duckdb").exists()

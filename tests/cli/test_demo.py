"""``shopfloor demo``: the main job, end to end through the real command."""

from __future__ import annotations

import random
import re
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from shopfloor.cli import _register, app

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-munich.yaml"


@pytest.mark.timeout(120)
def test_demo_runs_the_factory_into_the_historian(tmp_path: Path) -> None:
    # No broker at this endpoint: the demo must start its own for the AGVs.
    factory = tmp_path / "acme.yaml"
    factory.write_text(
        EXAMPLE.read_text().replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1"),
        encoding="utf-8",
    )
    db = tmp_path / "demo.duckdb"
    _register()
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--factory",
            str(factory),
            "--db",
            f"duckdb:{db}",
            "--duration",
            "12",
            "--no-live",
            "--no-browser",
            "--port",
            "0",
            "--port-offset",
            str(random.randint(20_000, 30_000)),
        ],
    )
    out = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert result.exit_code == 0, out
    assert "started an embedded one" in out
    counters = re.search(r"production counters: (\d+)/(\d+)", out)
    assert counters is not None, out
    assert counters.group(1) == counters.group(2)
    assert int(counters.group(2)) > 20
    stored = re.search(r"stopped: ([\d,]+) values stored", out)
    assert stored is not None
    assert int(stored.group(1).replace(",", "")) > 1000
    if ", 0 dead letters" not in out:
        with duckdb.connect(str(db), read_only=True) as con:
            letters = con.sql("SELECT * FROM dead_letters LIMIT 20").fetchall()
        pytest.fail(f"dead letters in the demo: {letters}\n{out}")

    query = CliRunner().invoke(
        app,
        [
            "query",
            "acme/munich/assembly/intralogistics/agv-001/battery_charge",
            "--db",
            f"duckdb:{db}",
            "--since",
            "-1d",
            "--until",
            "+1d",
            "--format",
            "csv",
        ],
    )
    assert query.exit_code == 0, query.output
    assert len(query.output.strip().splitlines()) > 2, "the AGVs reached the historian"

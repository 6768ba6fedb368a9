"""``shopfloor bench anomaly`` with the machine-state gate: presses that fail and wait
(``--natural-stops``) are scored only while running, ``--no-gate`` scores them whatever
their state (the figures, not their speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from shopfloor.cli._bench_anomaly import register


def _run(tmp_path: Path, *flags: str) -> dict[str, Any]:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Bench."""

    register(app)
    out = tmp_path / f"anomaly{''.join(flags)}.json"
    args = ["anomaly", "--stations", "4", "--hours", "4", "--natural-stops", *flags]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def test_the_gate_keeps_stops_and_waits_from_being_false_alarms(tmp_path: Path) -> None:
    gated = _run(tmp_path)
    ungated = _run(tmp_path, "--no-gate")
    # the same simulated run and faults either way
    for key in ("samples", "faults", "running_share"):
        assert gated[key] == ungated[key], key
    assert 0.5 < gated["running_share"] < 1.0  # the presses did stop
    assert gated["gate"] is True
    assert ungated["gate"] is False
    assert gated["state_samples"] > 4  # the first state of every press, then its changes
    assert gated["samples_gated"] > 0
    assert ungated["state_samples"] == ungated["samples_gated"] == 0
    # ungated, the stops and restarts are most of the events: false alarms
    assert ungated["false_positive_events"] > 2 * ungated["true_positive_events"]
    assert gated["false_positive_events"] < ungated["false_positive_events"] / 4
    assert gated["precision"] > 0.8
    assert gated["recall"] > 0.5

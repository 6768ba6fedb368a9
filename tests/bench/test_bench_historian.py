"""``shopfloor bench historian`` runs tiny and writes the JSON keys."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from shopfloor.bench._report import write_report
from shopfloor.cli._bench import app


def test_bench_historian_tiny(tmp_path: Path) -> None:
    out = tmp_path / "historian.json"
    args = ["historian", "--json", str(out), "--rows", "20000", "--signals", "5"]
    args += ["--batch-rows", "5000", "--downsample-points", "20000", "--runs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads(out.read_text())
    for key in ("append_rows_per_s", "raw_rows_per_s", "append_ratio", "downsample_ms"):
        assert doc[key] > 0
    assert doc["rows"] == 20000
    assert doc["downsample_matches_raw"] is True
    assert doc["bench"] == "historian"
    assert doc["machine"]["cpu_count"] >= 1


def test_write_report_two_forms(tmp_path: Path) -> None:
    a = write_report(tmp_path / "a.json", "x", {"v": 1})
    b = write_report(tmp_path / "b.json", {"bench": "y", "v": 2})
    assert (a["bench"], a["v"], b["bench"], b["v"]) == ("x", 1, "y", 2)
    assert json.loads((tmp_path / "b.json").read_text())["v"] == 2

"""``shopfloor bench buffer`` runs tiny and writes its JSON (the figures, not their speed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import typer
from typer.testing import CliRunner

from shopfloor.bench.buffer import arrow_payload
from shopfloor.cli._bench_buffer import register
from shopfloor.edge import READING_SCHEMA


def test_arrow_payloads_are_readings_of_the_asked_size() -> None:
    rng = np.random.default_rng(1)
    for size in (50_000, 500_000):
        data = arrow_payload(size, rng)
        assert abs(len(data) - size) <= size // 100
        table = pa.ipc.open_stream(data).read_all()
        assert table.schema == READING_SCHEMA
        assert table.num_rows > 1000


def test_bench_buffer_tiny(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Bench."""

    register(app)
    out = tmp_path / "buffer.json"
    args = ["buffer", "--sizes", "50,200", "--mb", "1", "--json", str(out), "--dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads(out.read_text())
    assert doc["bench"] == "buffer"
    assert doc["machine"]["cpu_count"] >= 1
    assert [s["payloads"] for s in doc["sizes"]] == [20, 5]
    for size in doc["sizes"]:
        assert abs(size["payload_bytes"] * size["payloads"] / 1e6 - 1.0) < 0.02
        assert len(size["put_per_s_runs"]) == len(size["raw_insert_per_s_runs"]) == 3
        for key in ("put_per_s", "drain_per_s", "put_sync_full_per_s", "raw_insert_per_s"):
            assert size[key] > 0
        # the ratio is the buffer's rate over the baseline's, both medians of the runs
        assert (
            abs(size["ratio"] - size["put_per_s"] / size["raw_insert_per_s"])
            < 0.01 * size["ratio"] + 0.002
        )
        assert size["disk_mb_after_puts"] >= 0.9  # the payloads are on disk
    assert doc["ratio_min"] == min(s["ratio"] for s in doc["sizes"])
    assert list(tmp_path.glob("shopfloor-bench-*")) == []  # the temporary folder is gone

    bad = CliRunner().invoke(app, ["buffer", "--sizes", "fifty"])
    assert bad.exit_code != 0
    assert "comma-separated KB" in bad.output

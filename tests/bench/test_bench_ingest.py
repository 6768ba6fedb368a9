"""``shopfloor bench ingest``: a tiny run end to end writes every figure."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from shopfloor.bench.ingest import IngestBenchConfig
from shopfloor.cli import _bench_ingest

HOST, PORT = "127.0.0.1", 1883


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


KEYS = {
    "values_per_s",
    "backlog_grew",
    "latency_p50_ms",
    "latency_p99_ms",
    "peak_rss_mb",
    "raw_broker_values_per_s",
    "ratio",
    "ingest_ratio",
    "devices",
    "metrics",
    "rate",
    "seconds",
    "host_cpu_pct",
    "edge_cpu_pct",
}


def test_layout_fills_nodes_of_a_hundred() -> None:
    assert IngestBenchConfig(devices=3000).layout() == (30, 100)
    assert IngestBenchConfig(devices=20).layout() == (1, 20)
    assert IngestBenchConfig(devices=250).layout() == (3, 84)
    with pytest.raises(ValueError, match="mqtt://"):
        IngestBenchConfig(broker="http://x").broker_address()


@pytest.mark.skipif(not _broker_up(), reason=f"no MQTT broker at {HOST}:{PORT}")
def test_tiny_run_writes_the_figures(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("other")(lambda: None)  # a group, so that "ingest" is a subcommand
    _bench_ingest.register(app)
    out = tmp_path / "ingest.json"
    args = ["ingest", "--devices", "20", "--metrics", "5", "--seconds", "3", "--no-profile"]
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert set(doc) >= KEYS
    assert doc["bench"] == "ingest"
    assert (doc["devices"], doc["metrics"], doc["seconds"]) == (20, 5, 3.0)
    assert doc["values_per_s"] > 0
    assert doc["raw_broker_values_per_s"] > 0
    assert doc["latency_p50_ms"] is not None
    assert doc["latency_p50_ms"] <= doc["latency_p99_ms"]
    assert doc["host_dead_letters"] == 0
    assert isinstance(doc["backlog_grew"], bool)

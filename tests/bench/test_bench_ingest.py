"""``shopfloor bench ingest``: a tiny run end to end writes every figure, and they agree."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopfloor.bench.ingest import IngestBenchConfig
from shopfloor.cli import _register, app

HOST, PORT = "127.0.0.1", 1883


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


ISSUE_KEYS = {
    "values_per_s",
    "offered_values_per_s",
    "backlog_grew",
    "p50_latency_ms",
    "p99_latency_ms",
    "peak_rss_mb",
    "baseline_msgs_per_s",
    "msgs_per_s",
    "ratio",
}


def test_layout_fills_nodes_of_a_hundred() -> None:
    assert IngestBenchConfig(devices=3000).layout() == (30, 100)
    assert IngestBenchConfig(devices=20).layout() == (1, 20)
    assert IngestBenchConfig(devices=250).layout() == (3, 84)
    with pytest.raises(ValueError, match="mqtt://"):
        IngestBenchConfig(broker="http://x").broker_address()
    with pytest.raises(ValueError, match="positive"):
        IngestBenchConfig(rate=0)
    with pytest.raises(ValueError, match=r"--memory-limit 'lots'.*a size such as 256MB"):
        IngestBenchConfig(memory_limit="lots")
    assert IngestBenchConfig(memory_limit="256MB").memory_limit == "256MB"


def test_the_command_is_registered_and_rejects_a_bad_broker() -> None:
    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "ingest", "--help"])
    assert result.exit_code == 0, result.output
    assert "--devices" in result.output
    result = runner.invoke(app, ["bench", "ingest", "--broker", "tcp://nowhere"])
    assert result.exit_code == 2
    assert "mqtt://" in result.output
    result = runner.invoke(app, ["bench", "ingest", "--memory-limit", "lots"])
    assert result.exit_code == 2
    assert "memory_limit must be a size" in " ".join(result.output.split())


@pytest.mark.skipif(not _broker_up(), reason=f"no MQTT broker at {HOST}:{PORT}")
def test_tiny_run_writes_the_figures(tmp_path: Path) -> None:
    _register()
    out = tmp_path / "ingest.json"
    args = ["bench", "ingest", "--devices", "20", "--metrics", "5", "--seconds", "6"]
    args += ["--no-profile", "--json", str(out), "--dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert set(doc) >= ISSUE_KEYS
    assert doc["bench"] == "ingest"
    assert (doc["devices"], doc["metrics"], doc["seconds"]) == (20, 5, 6.0)
    assert doc["offered_values_per_s"] == 100
    assert isinstance(doc["backlog_grew"], bool)
    # what the edges published in the window was stored (commits land every ~0.3 s and a
    # loaded machine may start the window with up to a second of backlog, hence 6 s)
    assert doc["values_per_s"] > 0
    assert doc["values_per_s"] == pytest.approx(doc["edge_values_per_s"], rel=0.3)
    assert doc["edge_values_per_s"] == pytest.approx(100, rel=0.3)
    # the host and the bare subscriber saw the same DDATA messages
    assert doc["msgs_per_s"] > 0
    assert doc["baseline_msgs_per_s"] > 0
    assert doc["ratio"] == pytest.approx(doc["msgs_per_s"] / doc["baseline_msgs_per_s"], abs=2e-3)
    assert doc["ratio"] == pytest.approx(1.0, rel=0.3)
    assert 0 <= doc["p50_latency_ms"] <= doc["p99_latency_ms"]
    assert doc["peak_rss_mb"] > 0
    assert doc["host_dead_letters"] == 0
    assert doc["host_seq_gaps"] == 0
    assert doc["signals_created"] == 20 * 5 + 2  # every device metric and the node's two
    assert doc["targets"]["values_per_s"] == 150_000
    assert set(doc["targets_met"]) == {"values_per_s", "ratio", "peak_rss_mb"}

"""``shopfloor bench live``: a tiny run end to end writes every figure, and they agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopfloor.bench.live import LiveBenchConfig, _Devices
from shopfloor.cli import _register, app

KEYS = {
    "values_per_s",
    "offered_values_per_s",
    "p50_latency_ms",
    "p99_latency_ms",
    "frames_per_s",
    "clients_dropped",
    "values_dropped",
    "complete",
    "baseline_values_per_s",
    "baseline_p50_latency_ms",
    "baseline_p99_latency_ms",
    "ratio",
    "latency_ratio_p99",
}


def test_config_checks_and_device_slots() -> None:
    with pytest.raises(ValueError, match="positive"):
        LiveBenchConfig(rate=0)
    with pytest.raises(ValueError, match="at least 1"):
        LiveBenchConfig(devices=0)
    cfg = LiveBenchConfig(devices=7, metrics=10, rate=2.0, tick_s=0.05)
    devices = _Devices(cfg)
    assert devices.slots == 10
    assert devices.tick_s == pytest.approx(0.05)
    # Over one period every signal is sampled exactly once, typed by its metric.
    rows = []
    for slot in range(devices.slots):
        r, values = devices.sample(slot, 1_000_000)
        rows.extend(r.tolist())
        raw = devices.raw(slot, values).table
        assert raw.num_rows == len(r)
        for k, flat in enumerate(r.tolist()):
            device, metric = divmod(flat, 10)
            assert raw.column("address")[k].as_py() == f"dev{device:05d}/m{metric:02d}"
            kind = {8: "v_int", 9: "v_bool"}.get(metric, "v_float")
            assert raw.column(kind)[k].is_valid
    assert sorted(rows) == list(range(70))


@pytest.mark.timeout(240)
def test_a_tiny_run_writes_every_figure(tmp_path: Path) -> None:
    _register()
    out = tmp_path / "live.json"
    result = CliRunner().invoke(
        app,
        [
            "bench", "live", "--devices", "20", "--metrics", "10", "--rate", "5",
            "--seconds", "4", "--warmup", "1", "--flush-interval", "0.1",
            "--json", str(out), "--dir", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["bench"] == "live"
    assert set(doc) >= KEYS
    assert doc["offered_values_per_s"] == 1000
    # Every value the historian stored reached the client, none twice, none dropped.
    assert doc["complete"] is True
    assert doc["values_received_total"] == doc["values_stored_total"]
    assert doc["values_stored_total"] == doc["values_generated_total"] > 0
    assert doc["clients_dropped"] == 0
    assert doc["seq_gaps"] == 0
    assert doc["baseline_seq_gaps"] == 0
    # A tiny load is easy: both sides carry it (generous bounds: a busy machine).
    assert 500 <= doc["values_per_s"] <= 1500
    assert 500 <= doc["baseline_values_per_s"] <= 1500
    assert doc["ratio"] == pytest.approx(doc["values_per_s"] / doc["baseline_values_per_s"], 0.01)
    assert 0 < doc["p50_latency_ms"] <= doc["p99_latency_ms"]
    assert 0 <= doc["baseline_p50_latency_ms"] <= doc["baseline_p99_latency_ms"]
    # Frames are paced: at most one every 100 ms on either side.
    assert doc["frames_per_s"] <= 10.5
    assert doc["baseline_frames_per_s"] <= 10.5

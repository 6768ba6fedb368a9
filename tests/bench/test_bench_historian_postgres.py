"""``shopfloor bench historian --store postgresql://…`` runs tiny against the real server."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from shopfloor.cli._bench import app

PG_URL = os.environ.get("SHOPFLOOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def test_bench_historian_postgres_tiny(tmp_path: Path) -> None:
    out = tmp_path / "historian-pg.json"
    base = f"sf_bench_{secrets.token_hex(4)}"
    args = ["historian", "--store", f"{PG_URL}?schema={base}", "--json", str(out)]
    args += ["--rows", "20000", "--signals", "5", "--batch-rows", "5000"]
    args += ["--downsample-points", "20000", "--runs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads(out.read_text())
    assert doc["engine"] == "postgresql"
    for key in ("append_rows_per_s", "raw_rows_per_s", "raw_indexed_rows_per_s", "downsample_ms"):
        assert doc[key] > 0
    ratio = doc["append_rows_per_s"] / doc["raw_rows_per_s"]
    assert abs(doc["append_ratio"] - ratio) < 0.002
    assert doc["rows"] == 20000
    assert doc["downsample_matches_raw"] is True
    assert doc["partitioning"] in ("native", "timescaledb")
    with psycopg.connect(PG_URL) as conn:  # every schema of the run is gone
        left = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (base + "%",)
        ).fetchall()
    assert left == []


def test_bench_historian_bad_store() -> None:
    result = CliRunner().invoke(app, ["historian", "--store", "sqlite:x.db", "--rows", "10"])
    assert result.exit_code != 0
    assert "--store" in result.output

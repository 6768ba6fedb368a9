"""``shopfloor alarms``: list, acknowledge, shelve and read the journal of a historian."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shopfloor.analytics.alarms import AlarmEngine
from shopfloor.cli import _register, app
from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian import open_historian
from shopfloor.model import load_factory

FACTORY = """\
types:
  - id: press
    signals:
      - {name: pressure, data_type: float, unit: BAR}
connections:
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:1"}
enterprise:
  id: acme
  sites:
    - id: plant
      areas:
        - id: area
          lines:
            - id: line
              equipment:
                - {id: p1, type: press, connection: opc, bindings: {pressure: p1.pressure}}
                - {id: p2, type: press, connection: opc, bindings: {pressure: p2.pressure}}
alarms:
  rules:
    - {id: hi, type: press, severity: high, threshold: {signal: pressure, above: 250}}
"""
P1 = "acme/plant/area/line/p1/hi"
P2 = "acme/plant/area/line/p2/hi"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, Path]:
    """A historian where p1's alarm is active (unacknowledged); a factory file beside it."""
    path = tmp_path / "f.yaml"
    path.write_text(FACTORY, encoding="utf-8")
    db = f"duckdb:{tmp_path / 'h.duckdb'}"

    async def prepare() -> None:
        async with open_historian(db) as h, AlarmEngine(load_factory(path), h, sinks=[]) as e:
            now_us = int(datetime.now(UTC).timestamp() * 1e6)
            sid = e.signal_ids["acme/plant/area/line/p1/pressure"]
            batch = ReadingBatch.from_columns(
                np.array([sid]), np.array([now_us]), np.array([300.0])
            )
            await e(batch)

    asyncio.run(prepare())
    _register()
    return db, path


def run(*args: str) -> str:
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["alarms", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_ack_shelve_log(setup: tuple[str, Path]) -> None:
    db, factory = setup
    listed = json.loads(run("list", "--db", db, "--json"))
    assert [(a["alarm_id"], a["state"], a["priority"]) for a in listed] == [
        (P1, "unack_active", "high")
    ]
    assert "unack_active" in run("list", "--db", db)
    assert "acknowledged, now ack_active" in run(
        "ack", P1, "--db", db, "--user", "alice", "--comment", "on it"
    )
    assert json.loads(run("list", "--db", db, "--json"))[0]["acked_by"] == "alice"
    # p2 is normal: shelving it needs the factory file to know it
    result = CliRunner().invoke(app, ["alarms", "shelve", P2, "--db", db, "--user", "bob"])
    assert result.exit_code == 1
    assert f"unknown alarm '{P2}'" in result.output
    assert "shelved until" in run(
        "shelve", P2, "--db", db, "--for", "2h", "--user", "bob", "--factory", str(factory)
    )
    shelf = json.loads(run("list", "--db", db, "--shelved", "--json"))
    assert [a["alarm_id"] for a in shelf] == [P2]
    assert "unshelved, now normal" in run("unshelve", P2, "--db", db, "--user", "bob")
    journal = run("log", "--db", db)
    for word in ("activated", "acknowledged", "shelved", "unshelved", "alice", "on it", "bob"):
        assert word in journal


def test_mistakes_are_reported(setup: tuple[str, Path], tmp_path: Path) -> None:
    db, _ = setup
    result = CliRunner().invoke(app, ["alarms", "ack", "acme/nope", "--db", db, "--user", "x"])
    assert result.exit_code == 1
    assert "unknown alarm 'acme/nope'" in result.output
    result = CliRunner().invoke(app, ["alarms", "list", "--db", f"duckdb:{tmp_path / 'no.duckdb'}"])
    assert result.exit_code == 1
    assert "no historian database" in result.output
    result = CliRunner().invoke(app, ["alarms", "shelve", P1, "--db", db, "--for", "forever"])
    assert result.exit_code == 2

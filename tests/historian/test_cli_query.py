"""``shopfloor query``: table, CSV and JSON, raw and bucketed, unknown signals."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from _historian_helpers import T0_US, batch
from typer.testing import CliRunner

from shopfloor.cli._query import parse_duration, parse_time, register
from shopfloor.historian import SignalInfo, open_historian


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"duckdb:{tmp_path_factory.mktemp('q') / 'h.duckdb'}"

    async def fill() -> None:
        async with open_historian(url) as h:
            ids = await h.register_signals(
                [SignalInfo("acme/line-1/temp", "float"), SignalInfo("acme/line-1/count", "int")]
            )
            ts = [T0_US + k * 1_000_000 for k in range(600)]
            await h.append(
                batch(ids["acme/line-1/temp"], "float", ts, [float(k) for k in range(600)])
            )

    asyncio.run(fill())
    return url


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root."""

    register(app)
    return app


RANGE = ["--since", "2026-01-01T00:00:00", "--until", "2026-01-01T00:10:00+00:00"]


def test_query_csv_raw(db: str) -> None:
    r = CliRunner().invoke(
        _app(), ["query", "acme/line-1/temp", "--db", db, *RANGE, "--format", "csv", "--limit", "3"]
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["value"] for row in rows] == ["0.0", "1.0", "2.0"]
    assert rows[0]["ts"] == "2026-01-01T00:00:00+00:00"


def test_query_json_bucketed(db: str) -> None:
    r = CliRunner().invoke(
        _app(),
        ["query", "acme/line-1/temp", "--db", db, *RANGE, "--bucket", "1m", "--format", "json"],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert len(doc) == 10
    assert doc[1] == {
        "bucket": "2026-01-01T00:01:00+00:00",
        "first": 60.0,
        "last": 119.0,
        "min": 60.0,
        "max": 119.0,
        "avg": 89.5,
        "count": 60,
    }


def test_query_table(db: str) -> None:
    r = CliRunner().invoke(
        _app(), ["query", "acme/line-1/temp", "--db", db, *RANGE, "--bucket", "5m"]
    )
    assert r.exit_code == 0, r.output
    assert "count" in r.stdout
    assert "2 row(s)" in r.stdout


def test_query_unknown_signal_suggests(db: str) -> None:
    r = CliRunner().invoke(_app(), ["query", "acme/line-1/tmp", "--db", db, *RANGE])
    assert r.exit_code == 1
    assert "acme/line-1/tmp" in r.output
    assert "acme/line-1/temp" in r.output


def test_query_missing_db(tmp_path: Path) -> None:
    r = CliRunner().invoke(_app(), ["query", "x", "--db", f"duckdb:{tmp_path / 'none.duckdb'}"])
    assert r.exit_code == 1
    assert not (tmp_path / "none.duckdb").exists()


def test_parse_times_and_durations() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert parse_time("now", now) == now
    assert parse_time("-1h", now) == now - timedelta(hours=1)
    assert parse_time("-7d", now) == now - timedelta(days=7)
    assert parse_time("2026-01-01T01:00:00", now) == datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert parse_time("2026-01-01T01:00:00+01:00", now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration("7m13s") == timedelta(minutes=7, seconds=13)
    for bad in ("", "1x", "m", "yesterday"):
        with pytest.raises(ValueError, match="not a"):
            parse_time(bad, now) if bad == "yesterday" else parse_duration(bad)

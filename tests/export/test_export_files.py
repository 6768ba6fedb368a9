"""Open exports on a small hand-made historian: partition names, CSV round trips, chunks
that split samples sharing a timestamp, subtree filters, errors, and ``shopfloor export``."""

from __future__ import annotations

import asyncio
import glob
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from shopfloor.cli._export import register
from shopfloor.edge.batch import ReadingBatch, to_us
from shopfloor.export import MAX_PARTITION, ExportError, asset_partition, export_open
from shopfloor.historian import open_historian
from shopfloor.model import Factory, load_factory
from shopfloor.runtime import signal_infos

FACTORY = """\
types:
  - id: press
    signals:
      - {name: pressure, data_type: float, unit: BAR}
      - {name: strokes, data_type: int, unit: H87, kind: counter}
      - {name: running, data_type: bool, kind: state}
      - {name: note, data_type: string}
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
                - {id: p1, type: press, connection: opc,
                   bindings: {pressure: a, strokes: b, running: c, note: d}}
                - {id: p2.b, type: press, connection: opc,
                   bindings: {pressure: e, strokes: f, running: g, note: h}}
"""
T0 = datetime(2025, 6, 2, 22, tzinfo=UTC)  # two hours before midnight: two UTC days
HOURS = 4
P1 = "acme/plant/area/line/p1"
P2 = "acme/plant/area/line/p2.b"
NOTES = np.array(["plain", "with, comma", 'with "quotes"', "two\nlines", "ünïcødé"], dtype=object)


def _build(tmp: Path) -> tuple[Factory, Path, str]:
    factory_file = tmp / "factory.yaml"
    factory_file.write_text(FACTORY, encoding="utf-8")
    factory = load_factory(factory_file)
    db = f"duckdb:{tmp / 'small.duckdb'}"
    n = HOURS * 3600

    async def fill() -> None:
        async with open_historian(db) as h:
            ids = await h.register_signals(signal_infos(factory))
            ts = to_us(T0) + np.arange(n, dtype=np.int64) * 1_000_000
            rng = np.random.default_rng(1)
            for asset in (P1, P2):
                pressure = rng.normal(200, 5, n)
                pressure[7] = np.nan
                columns = {
                    "pressure": pressure,
                    "strokes": np.arange(n, dtype=np.int64) // 3,
                    "running": rng.random(n) < 0.7,
                    "note": NOTES[np.arange(n) % len(NOTES)],
                }
                for name, values in columns.items():
                    await h.append(
                        ReadingBatch.from_columns(np.full(n, ids[f"{asset}/{name}"]), ts, values)
                    )
            # 2,500 samples sharing one timestamp, inside a run of others
            same = to_us(T0 + timedelta(minutes=30))
            await h.append(
                ReadingBatch.from_columns(
                    np.full(2500, ids[f"{P1}/pressure"]), np.full(2500, same), np.arange(2500.0)
                )
            )

    asyncio.run(fill())
    return factory, factory_file, db


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Factory, Path, str]:
    return _build(tmp_path_factory.mktemp("small"))


def _export(db: str, factory: Factory, out: Path, **kw: object) -> dict[str, int]:
    async def run() -> dict[str, int]:
        async with open_historian(db) as h:
            r = await export_open(h, factory, out, T0, T0 + timedelta(hours=HOURS), **kw)  # type: ignore[arg-type]
            return r.rows

    return asyncio.run(run())


def _raw(db: str, signal: str) -> pd.DataFrame:
    async def run() -> pd.DataFrame:
        async with open_historian(db) as h:
            t = await h.read_raw(signal, T0, T0 + timedelta(hours=HOURS))
            return t.to_pandas()

    return asyncio.run(run())


def test_asset_partitions_are_safe_and_one_to_one() -> None:
    assert asset_partition("acme/munich/body-shop/line-1") == "acme~munich~body-shop~line-1"
    assert asset_partition("acme/p2.b") == "acme~p2.b"
    assert asset_partition("acme/a b/ä") == "acme~a%20b~%C3%A4"
    assert asset_partition("acme/x=1/y") == "acme~x%3D1~y"  # '=' would confuse Hive readers
    assert asset_partition("..") == "%2E%2E"
    long = "acme/" + "/".join(f"segment-{i:03d}" for i in range(40))
    p = asset_partition(long)
    assert len(p) <= MAX_PARTITION
    assert p != asset_partition(long + "x")
    assert len(p.rsplit("~", 1)[1]) == 12
    names = ["a/b", "a~b", "a/b/c", "a/b~c", "a/bc"]
    assert len({asset_partition(n) for n in names}) == len(names)


def test_chunks_split_nothing_and_repeat_nothing(
    small: tuple[Factory, Path, str], tmp_path: Path
) -> None:
    factory, _, db = small
    rows = _export(db, factory, tmp_path / "out", what=["history"], chunk_rows=1000)
    df = pd.read_parquet(tmp_path / "out" / "history")
    assert rows["history"] == len(df) == 8 * HOURS * 3600 + 2500
    p1 = df[df["signal"] == f"{P1}/pressure"].sort_values("ts", kind="stable")
    raw = _raw(db, f"{P1}/pressure")
    assert len(p1) == len(raw) == HOURS * 3600 + 2500
    assert sorted(p1["value_float"].fillna(-1)) == sorted(raw["value"].fillna(-1))
    # one row group per 1,000 rows or so: written as it was read
    files = glob.glob(str(tmp_path / "out" / "history" / "**" / "*.parquet"), recursive=True)
    assert max(pq.ParquetFile(f).num_row_groups for f in files) > 5


def test_csv_reads_back_in_pandas_and_duckdb(
    small: tuple[Factory, Path, str], tmp_path: Path
) -> None:
    factory, _, db = small
    out = tmp_path / "csv"
    rows = _export(db, factory, out, fmt="csv", what=["history", "events"])
    files = sorted(glob.glob(str(out / "history" / "**" / "*.csv"), recursive=True))
    assert len(files) == 4  # two presses × two days
    assert all("/day=2025-06-0" in f and "/asset=acme~plant~area~line~p" in f for f in files)
    df = pd.concat(
        (pd.read_csv(f, parse_dates=["ts"]) for f in files),
        ignore_index=True,
    )
    assert len(df) == rows["history"] == 8 * HOURS * 3600 + 2500
    con = duckdb.connect()
    n = con.execute(
        f"SELECT count(*) FROM read_csv('{out}/history/**/*.csv', hive_partitioning = true)"
    ).fetchone()
    assert n is not None
    assert n[0] == len(df)
    for signal, column in (("pressure", "value_float"), ("strokes", "value_int"),
                           ("running", "value_bool"), ("note", "value_string")):  # fmt: skip
        mine = df[df["signal"] == f"{P2}/{signal}"].sort_values("ts", kind="stable")
        raw = _raw(db, f"{P2}/{signal}")
        assert len(mine) == len(raw)
        assert (mine["ts"].to_numpy() == raw["ts"].to_numpy()).all()
        got, want = mine[column].to_numpy(), raw["value"].to_numpy()
        if column == "value_float":
            np.testing.assert_array_equal(got.astype(float), want)  # exact, NaN kept
        elif column == "value_bool":
            assert [str(g).lower() for g in got] == [str(w).lower() for w in want]
        else:
            assert list(got) == list(want)
    # every reader takes the NaN as a number without options
    types = dict(
        con.execute(
            f"DESCRIBE SELECT * FROM read_csv('{out}/history/**/*.csv', hive_partitioning = true)"
        ).fetchall()[i][:2]
        for i in range(10)
    )
    assert types["value_float"] == "DOUBLE"
    assert types["ts"].startswith("TIMESTAMP")
    assert df["value_float"].dtype == np.float64
    pl = pytest.importorskip("polars")
    frames = [pl.read_csv(f, try_parse_dates=True, infer_schema_length=None) for f in files]
    assert all(str(f.schema["value_float"]) == "Float64" for f in frames)
    assert sum(f["value_float"].is_nan().sum() for f in frames) == 2  # one per press
    assert sum(f.height for f in frames) == len(df)
    dictionary = json.loads((out / "dictionary.json").read_text())
    assert dictionary["file_format"] == "csv"
    assert "RFC 3339" in dictionary["layout"]["file_format"]


def test_under_limits_the_export(small: tuple[Factory, Path, str], tmp_path: Path) -> None:
    factory, _, db = small
    rows = _export(db, factory, tmp_path / "p2", under=[P2], what=["history"])
    assets = {p.name for p in (tmp_path / "p2" / "history").glob("day=*/asset=*")}
    assert assets == {"asset=acme~plant~area~line~p2.b"}
    assert rows["history"] == 4 * HOURS * 3600
    d = json.loads((tmp_path / "p2" / "dictionary.json").read_text())
    assert {s["asset_path"] for s in d["signals"]} == {P2}


def test_bad_requests_are_refused(small: tuple[Factory, Path, str], tmp_path: Path) -> None:
    factory, _, db = small

    async def run(since: datetime, until: datetime, **kw: object) -> None:
        async with open_historian(db) as h:
            await export_open(h, factory, tmp_path / "bad", since, until, **kw)  # type: ignore[arg-type]

    with pytest.raises(ExportError, match="must lie after"):
        asyncio.run(run(T0, T0))
    with pytest.raises(ExportError, match="unknown export"):
        asyncio.run(run(T0, T0 + timedelta(hours=1), what=["samples"]))
    with pytest.raises(ExportError, match="time zone"):
        asyncio.run(run(T0.replace(tzinfo=None), T0 + timedelta(hours=1)))


def test_shopfloor_export_command(small: tuple[Factory, Path, str], tmp_path: Path) -> None:
    _, factory_file, db = small
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root."""

    register(app)
    out = tmp_path / "cli"
    args = ["export", str(factory_file), "--db", db, "--since", T0.isoformat(),
            "--until", (T0 + timedelta(hours=HOURS)).isoformat(), "--out", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, [*args, "--what", "history,events"])
    assert r.exit_code == 0, r.stderr
    assert "exported 4 files" in " ".join(r.stderr.split())
    assert (out / "dictionary.json").exists()
    assert len(pd.read_parquet(out / "history")) == 8 * HOURS * 3600 + 2500
    r = CliRunner().invoke(app, [*args, "--what", "history"])
    assert r.exit_code == 1
    assert "already holds an export" in " ".join(r.stderr.split())
    r = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "x"), "--what", "samples"])
    assert r.exit_code == 2
    assert "choose from history, events, kpis" in " ".join(r.stderr.split())

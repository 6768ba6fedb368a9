"""An open export of one simulated week reads back in pandas, DuckDB and polars with the
historian's row counts and values; the layout, the plain types and the dictionary hold."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from _export_helpers import BAD_SIGNAL, NAN_SIGNAL, Week

from shopfloor.analytics import oee
from shopfloor.export import HISTORY_SCHEMA, asset_partition, export_open, kpi_assets
from shopfloor.historian import open_historian

_PLAIN = {"timestamp[us, tz=UTC]", "double", "int64", "bool", "string"}


@dataclass(frozen=True)
class Exported:
    """The export folder and what the historian holds over the same range."""

    out: Path
    week: Week
    counts: dict[str, int]
    rows: dict[str, int]
    events: set[str]
    files: int


@pytest.fixture(scope="module")
def exported(week: Week, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    out = tmp_path_factory.mktemp("export") / "week"
    steps: list[tuple[str, int, int]] = []

    async def run() -> Exported:
        async with open_historian(week.url) as h:
            result = await export_open(
                h, week.factory, out, week.start, week.end,
                progress=lambda *a: steps.append(a),
            )  # fmt: skip
            counts = {}
            for path in (await h.signals()).column("path").to_pylist():
                n = (await h.read_raw(path, week.start, week.end)).num_rows
                if n:
                    counts[path] = n
            events = set((await h.read_events(week.start, week.end)).column("event_id").to_pylist())
            return Exported(out, week, counts, result.rows, events, len(result.files))

    ex = asyncio.run(run())
    assert steps[-1][1] == steps[-1][2]  # progress reached its total
    return ex


def _files(out: Path, table: str) -> Iterator[Path]:
    return iter(sorted((out / table).rglob("part-0.*")))


def test_history_row_counts_match_the_historian(exported: Exported) -> None:
    total = sum(exported.counts.values())
    assert total == exported.week.samples > 1_500_000
    assert exported.rows["history"] == total
    df = pd.read_parquet(exported.out / "history")
    assert len(df) == total
    assert df.groupby("signal").size().to_dict() == exported.counts
    con = duckdb.connect()
    rows = con.sql(
        f"SELECT signal, count(*) FROM read_parquet('{exported.out}/history/**/*.parquet', "
        "hive_partitioning = true) GROUP BY signal"
    ).fetchall()
    assert dict(rows) == exported.counts


def test_values_read_back_equal_the_historian(exported: Exported) -> None:
    week = exported.week
    df = pd.read_parquet(exported.out / "history").sort_values(["signal", "ts"], kind="stable")
    con = duckdb.connect()
    agg = {
        r[0]: r[1:]
        for r in con.sql(
            f"SELECT signal, sum(value_float) FILTER (WHERE NOT isnan(value_float)), "
            "sum(value_int), count(*) FILTER (WHERE value_bool), count(DISTINCT value_string), "
            "sum(quality) FROM read_parquet("
            f"'{exported.out}/history/**/*.parquet', hive_partitioning = true) GROUP BY signal"
        ).fetchall()
    }
    types = {s.path: s.data_type for s in week.factory.signals()}
    column = {"float": "value_float", "int": "value_int", "bool": "value_bool"}

    async def compare() -> None:
        async with open_historian(week.url) as h:
            for signal, part in df.groupby("signal", sort=True):
                raw = await h.read_raw(str(signal), week.start, week.end)
                np.testing.assert_array_equal(
                    part["ts"].to_numpy(dtype="datetime64[us]"),
                    raw.column("ts").to_numpy().astype("datetime64[us]"),
                )
                np.testing.assert_array_equal(part["quality"], raw.column("quality").to_numpy())
                col = column.get(types[str(signal)], "value_string")
                got = part[col].to_numpy()
                want = raw.column("value").to_numpy(zero_copy_only=False)
                np.testing.assert_array_equal(got, want, err_msg=str(signal))
                f, i, b, s, q = agg[str(signal)]
                assert q == int(raw.column("quality").to_numpy().astype(np.int64).sum())
                if col == "value_float":
                    assert f == pytest.approx(float(np.nansum(want)), rel=1e-12)
                elif col == "value_int":
                    assert i == int(want.sum())
                elif col == "value_bool":
                    assert b == int(want.sum())
                else:
                    assert s == len(set(want))

    asyncio.run(compare())
    nan = df[df["signal"] == NAN_SIGNAL]["value_float"]
    assert nan.isna().sum() == 1  # NaN kept
    bad = df[df["signal"] == BAD_SIGNAL]["quality"]
    assert (bad == 0).sum() == 1
    # every data type came through
    assert df["value_bool"].notna().any()
    assert df["value_string"].notna().any()
    assert df["value_int"].notna().any()


def test_polars_reads_the_same(exported: Exported) -> None:
    pl = pytest.importorskip("polars")
    df = pl.read_parquet(str(exported.out / "history" / "**" / "*.parquet"), hive_partitioning=True)
    assert df.height == sum(exported.counts.values())
    assert str(df.schema["ts"]) == "Datetime(time_unit='us', time_zone='UTC')"
    counts = dict(df.group_by("signal").len().iter_rows())
    assert counts == exported.counts
    kpis = pl.read_parquet(str(exported.out / "kpis" / "**" / "*.parquet"), hive_partitioning=True)
    assert kpis.height == exported.rows["kpis"]


def test_layout_and_plain_types(exported: Exported) -> None:
    pattern = re.compile(
        r"^(history|events|kpis)/day=(\d{4}-\d{2}-\d{2})/asset=([^/]+)/part-0\.parquet$"
    )
    n = 0
    for table in ("history", "events", "kpis"):
        for f in _files(exported.out, table):
            n += 1
            rel = f.relative_to(exported.out).as_posix()
            m = pattern.match(rel)
            assert m is not None, rel
            schema = pq.read_schema(f)
            assert {str(t.type) for t in schema} <= _PLAIN, (rel, schema)
            assert "day" not in schema.names
            assert "asset" not in schema.names  # partition columns come from the path only
            ts = "ts" if table != "kpis" else "window_start"
            t = pq.read_table(f, columns=["asset_path", ts])  # a plain read: no hive columns
            assets = pc.unique(t.column("asset_path")).to_pylist()
            assert len(assets) == 1
            assert asset_partition(assets[0]) == m.group(3)
            if table != "events":
                lo, hi = pc.min_max(t.column(ts)).values()
                assert {lo.as_py().date().isoformat(), hi.as_py().date().isoformat()} == {
                    m.group(2)
                }
    assert n == exported.files
    assert pq.read_schema(next(_files(exported.out, "history"))).equals(HISTORY_SCHEMA)
    assert len(list((exported.out / "history").iterdir())) == 7  # seven days


def test_events_and_kpis(exported: Exported) -> None:
    week = exported.week
    ev = pd.read_parquet(exported.out / "events")
    assert set(ev["event_id"]) == exported.events
    assert len(ev) == len(exported.events) == exported.rows["events"] > 100
    kp = duckdb.sql(
        f"SELECT * FROM read_parquet('{exported.out}/kpis/**/*.parquet', hive_partitioning = true)"
    ).df()
    assets = kpi_assets(week.factory)
    assert set(kp["asset_path"]) == set(assets)
    assert len(kp) == len(assets) * 7 * 24
    line = "acme/munich/body-shop/line-1"
    day = week.start + timedelta(days=2)

    async def reference() -> pa.Table:
        async with open_historian(week.url) as h:
            return await oee(h, week.factory, line, day, day + timedelta(days=1), "hour")

    ref = asyncio.run(reference())
    mine = kp[(kp["asset_path"] == line) & (kp["day"].astype(str) == day.date().isoformat())]
    mine = mine.sort_values("window_start")
    assert len(mine) == 24
    for col in ("oee", "availability", "good", "planned_busy_time_s"):
        np.testing.assert_allclose(
            mine[col].to_numpy(dtype=float), np.array(ref.column(col).to_pylist(), dtype=float)
        )
    assert mine["oee"].notna().sum() > 10


def test_dictionary_travels_with_the_export(exported: Exported) -> None:
    d: dict[str, Any] = json.loads((exported.out / "dictionary.json").read_text())
    assert set(d["tables"]) == {"history", "events", "kpis"}
    for name, table in d["tables"].items():
        assert table["rows"] == exported.rows[name]
        jsonschema.Draft202012Validator.check_schema(table["row_schema"])
        for c in table["columns"]:
            assert c["type"] in {"timestamp[us, UTC]", "float64", "int64", "bool", "string"}
            assert c["description"]
    jsonschema.Draft202012Validator.check_schema(d["model_schema"])
    signals = {s["path"]: s for s in d["signals"]}
    assert set(exported.counts) <= set(signals)
    assert signals[NAN_SIGNAL]["unit"] == "CEL"
    assert signals[NAN_SIGNAL]["value_column"] == "value_float"
    assert d["units"]["CEL"]["symbol"] == "°C"
    partitions = {a["path"]: a["partition"] for a in d["assets"]}
    assert partitions["acme/munich/body-shop/line-1"] == "acme~munich~body-shop~line-1"
    assert sum(f["rows"] for f in d["files"]) == sum(exported.rows.values())
    # a row of each table validates against its row schema (timestamps as RFC 3339 text)
    for name in ("history", "events", "kpis"):
        t = pq.read_table(next(_files(exported.out, name)))
        row = {
            k: (v.isoformat() if hasattr(v, "isoformat") else v)
            for k, v in t.slice(0, 1).to_pylist()[0].items()
        }
        jsonschema.validate(row, d["tables"][name]["row_schema"])


def test_a_folder_with_an_export_is_refused(exported: Exported) -> None:
    from shopfloor.export import ExportError

    async def again() -> None:
        async with open_historian(exported.week.url) as h:
            await export_open(h, exported.week.factory, exported.out, exported.week.start,
                              exported.week.end)  # fmt: skip

    with pytest.raises(ExportError, match="already holds an export"):
        asyncio.run(again())

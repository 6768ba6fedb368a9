"""Spark reads an open export without options (when pyspark and a JVM are installed).

pyspark is no dependency of shopfloor (a 400 MB download and a JVM): this test runs where
it is installed (``pip install pyspark``, Java 17+) and is skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from test_export_files import HOURS, T0, _build

from shopfloor.export import export_open
from shopfloor.historian import open_historian

pytestmark = pytest.mark.slow


def test_spark_reads_parquet_and_csv(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime for Spark")
    from pyspark.sql import SparkSession

    factory, _, db = _build(tmp_path)

    async def export(fmt: str) -> dict[str, int]:
        async with open_historian(db) as h:
            r = await export_open(
                h, factory, tmp_path / fmt, T0, T0 + timedelta(hours=HOURS),
                fmt=fmt, what=["history", "events"],  # type: ignore[arg-type]
            )  # fmt: skip
            return r.rows

    rows = asyncio.run(export("parquet"))
    assert asyncio.run(export("csv")) == rows
    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        pq_df = spark.read.parquet(str(tmp_path / "parquet" / "history"))
        assert pq_df.count() == rows["history"]
        types = dict(pq_df.dtypes)
        assert types["ts"] == "timestamp"
        assert types["value_float"] == "double"
        assert types["value_int"] == "bigint"
        assert types["value_bool"] == "boolean"
        assert types["day"] == "date"
        csv_df = (
            spark.read.option("header", True)
            .option("inferSchema", True)
            .option("multiLine", True)  # a note holds a line break
            .csv(str(tmp_path / "csv" / "history"))
        )
        assert csv_df.count() == rows["history"]
        types = dict(csv_df.dtypes)
        assert types["ts"] == "timestamp"
        assert types["value_float"] == "double"
        assert csv_df.where("isnan(value_float)").count() == 2
        assert pq_df.where("isnan(value_float)").count() == 2
    finally:
        spark.stop()

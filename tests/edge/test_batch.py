"""Tests of the columnar batch types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.edge.batch import (
    RAW_SCHEMA,
    READING_SCHEMA,
    Quality,
    RawBatch,
    RawBatchBuilder,
    ReadingBatch,
    to_us,
)
from shopfloor.errors import BatchError


def test_from_columns_places_values_by_dtype() -> None:
    ts = np.array(["2026-01-01T00:00:00", "2026-01-01T00:00:01"], dtype="datetime64[us]")
    fb = ReadingBatch.from_columns([1, 2], ts, np.array([1.5, 2.5]))
    ib = ReadingBatch.from_columns([1, 2], ts, np.array([3, 4], dtype=np.int64))
    bb = ReadingBatch.from_columns([1, 2], ts, np.array([True, False]))
    sb = ReadingBatch.from_columns([1, 2], ts, ["a", "b"])
    assert fb.table.column("v_float").to_pylist() == [1.5, 2.5]
    assert fb.table.column("v_int").null_count == 2
    assert ib.table.column("v_int").to_pylist() == [3, 4]
    assert bb.table.column("v_bool").to_pylist() == [True, False]
    assert sb.table.column("v_str").to_pylist() == ["a", "b"]
    for b in (fb, ib, bb, sb):
        assert b.table.schema.equals(READING_SCHEMA)
        assert b.table.column("quality").to_pylist() == [Quality.GOOD] * 2


def test_timestamps_are_utc_microseconds() -> None:
    when = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    b = ReadingBatch.from_columns([7], [when], [1.0])
    got = b.table.column("ts")[0].as_py()
    assert got == when
    assert got.utcoffset() == timedelta(0)
    assert to_us(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1_000_000


def test_naive_datetime_rejected() -> None:
    with pytest.raises(BatchError, match="naive"):
        to_us(datetime(2026, 1, 1))  # noqa: DTZ001


def test_missing_required_column_is_named() -> None:
    with pytest.raises(BatchError, match="signal_id"):
        ReadingBatch(pa.table({"ts": pa.array([1], pa.int64())}))


def test_conform_casts_and_fills_value_columns() -> None:
    t = pa.table(
        {
            "signal_id": pa.array([1], pa.int64()),
            "ts": pa.array([0], pa.timestamp("us", tz="UTC")),
            "quality": pa.array([192], pa.int32()),
            "v_float": pa.array([1.0]),
        }
    )
    b = ReadingBatch(t)
    assert b.table.schema.equals(READING_SCHEMA)
    assert b.table.column("v_str").null_count == 1


def test_uncastable_column_rejected() -> None:
    t = pa.table(
        {
            "signal_id": pa.array(["x"]),
            "ts": pa.array([0], pa.timestamp("us", tz="UTC")),
            "quality": pa.array([192], pa.uint8()),
        }
    )
    with pytest.raises(BatchError, match="signal_id"):
        ReadingBatch(t)


def test_builder_keeps_every_type_and_order() -> None:
    b = RawBatchBuilder()
    b.append("c", "a1", 1, 1.5)
    b.append("c", "a2", 2, 7)
    b.append("c", "a3", 3, True)
    b.append("c", "a4", 4, "txt")
    b.append("c", "a5", 5, None, Quality.BAD_NOT_CONNECTED)
    raw = b.build()
    assert len(b) == 0
    assert raw.table.schema.equals(RAW_SCHEMA)
    t = raw.table.to_pydict()
    assert t["address"] == ["a1", "a2", "a3", "a4", "a5"]
    assert t["v_float"] == [1.5, None, None, None, None]
    assert t["v_int"] == [None, 7, None, None, None]
    assert t["v_bool"] == [None, None, True, None, None]
    assert t["v_str"] == [None, None, None, "txt", None]
    assert t["quality"][-1] == Quality.BAD_NOT_CONNECTED


def test_concat_and_sorted() -> None:
    a = ReadingBatch.from_columns([2, 1], [5, 6], [1.0, 2.0])
    b = ReadingBatch.from_columns([1], [1], [3.0])
    c = ReadingBatch.concat([a, b]).sorted()
    assert c.table.column("signal_id").to_pylist() == [1, 1, 2]
    assert c.table.column("v_float").to_pylist() == [3.0, 2.0, 1.0]
    assert len(ReadingBatch.concat([])) == 0


def test_raw_from_columns() -> None:
    raw = RawBatch.from_columns("plc", ["a", "b"], [1, 2], np.array([1, 2], dtype=np.int16))
    assert raw.table.column("source").to_pylist() == ["plc", "plc"]
    assert raw.table.column("v_int").to_pylist() == [1, 2]


def test_quality_classes() -> None:
    assert Quality.is_good(Quality.GOOD_LOCAL_OVERRIDE)
    assert not Quality.is_good(Quality.UNCERTAIN)
    assert Quality.is_bad(Quality.BAD_COMM_FAILURE)
    assert not Quality.is_bad(Quality.UNCERTAIN_LAST_USABLE)

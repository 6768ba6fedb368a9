"""Binary COPY written with NumPy: PostgreSQL reads back exactly what Arrow held."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from _historian_engines import PG_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.errors import HistorianError
from shopfloor.historian._pgcopy import CopyColumn, PgType, decode_fixed, encode_binary

COLUMNS: list[tuple[PgType, pa.DataType, st.SearchStrategy[Any]]] = [
    ("int2", pa.uint8(), st.integers(0, 255)),
    ("int4", pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    ("int8", pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    ("float8", pa.float64(), st.floats(allow_nan=False)),
    ("bool", pa.bool_(), st.booleans()),
    ("timestamptz", pa.int64(), st.integers(-(2**55), 2**55)),
    (
        "text",
        pa.string(),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
    ),
    ("bytea", pa.binary(), st.binary(max_size=20)),
]
DDL = "CREATE TEMP TABLE t (pos int8, a int2, b int4, c int8, d float8, e bool, " + (
    "f timestamptz, g text, h bytea)"
)


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(PG_URL, autocommit=True) as c:
        c.execute("SET TIME ZONE 'UTC'")
        c.execute(DDL)
        yield c


def _python(pg_type: str, value: Any) -> Any:
    if value is None:
        return None
    if pg_type == "timestamptz":
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)
    return value


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), n=st.integers(0, 40))
def test_round_trip_through_postgres(
    conn: psycopg.Connection[Any], data: st.DataObject, n: int
) -> None:
    """Every type, any NULL pattern (fixed-layout groups and variable-width rows), and a
    chunked input column."""
    values = [
        data.draw(st.lists(st.none() | strategy, min_size=n, max_size=n), label=pg_type)
        for pg_type, _, strategy in COLUMNS
    ]
    arrays = []
    for (pg_type, arrow_type, _), vals in zip(COLUMNS, values, strict=True):
        arr = pa.array(vals, arrow_type)
        if pg_type == "timestamptz":
            arr = arr.cast(pa.timestamp("us", tz="UTC"))
        arrays.append(arr)
    split = data.draw(st.integers(0, n), label="split")
    columns = [CopyColumn("int8", pa.array(range(n), pa.int64()))]
    for (pg_type, _, _), arr in zip(COLUMNS, arrays, strict=True):
        columns.append(CopyColumn(pg_type, pa.chunked_array([arr[:split], arr[split:]])))
    payload = encode_binary(columns)
    conn.execute("TRUNCATE t")
    with conn.cursor() as cur, cur.copy("COPY t FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(payload)
    rows = conn.execute("SELECT * FROM t ORDER BY pos").fetchall()
    assert [r[0] for r in rows] == list(range(n))
    for j, (pg_type, _, _) in enumerate(COLUMNS):
        got = [r[j + 1] for r in rows]
        want = [_python(pg_type, v) for v in values[j]]
        assert got == want, pg_type


def test_decode_fixed_reads_copy_out(conn: psycopg.Connection[Any]) -> None:
    query = (
        "COPY (SELECT k::int8, k * 0.5::float8, k % 2 = 0, k::int2, "
        "'2000-01-01 00:00:01+00'::timestamptz FROM generate_series(-3, 3) AS g(k) ORDER BY 1) "
        "TO STDOUT (FORMAT BINARY)"
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        data = b"".join(bytes(chunk) for chunk in copy)
    k, half, even, small, ts = decode_fixed(data, ["int8", "float8", "bool", "int2", "timestamptz"])
    assert k.tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert half.tolist() == [x / 2 for x in range(-3, 4)]
    assert even.tolist() == [x % 2 == 0 for x in range(-3, 4)]
    assert small.dtype == np.int16
    assert ts.tolist() == [946_684_801_000_000] * 7


def test_decode_fixed_refuses_nulls_and_garbage(conn: psycopg.Connection[Any]) -> None:
    query = "COPY (SELECT NULL::int8, 1::int8) TO STDOUT (FORMAT BINARY)"
    with conn.cursor() as cur, cur.copy(query) as copy:
        data = b"".join(bytes(chunk) for chunk in copy)
    with pytest.raises(HistorianError, match=r"fixed width|NULLs"):
        decode_fixed(data, ["int8", "int8"])
    with pytest.raises(HistorianError, match="signature"):
        decode_fixed(b"not a copy stream at all", ["int8"])
    with pytest.raises(HistorianError, match="truncated"):
        decode_fixed(data[:-2], ["int8", "int8"])
    with pytest.raises(HistorianError, match="cannot COPY"):
        encode_binary([CopyColumn("text", pa.array([1, 2]))])
    with pytest.raises(HistorianError, match="differ in length"):
        encode_binary([CopyColumn("int8", pa.array([1])), CopyColumn("int8", pa.array([1, 2]))])

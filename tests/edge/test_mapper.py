"""Tests of the mapper: routing, type conversion, scaling and dead letters."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.edge.batch import Quality, RawBatch, RawBatchBuilder
from shopfloor.edge.mapper import Mapper, Route
from shopfloor.errors import BatchError

ROUTES = {
    ("plc", "f"): Route(1, "float"),
    ("plc", "scaled"): Route(2, "float", scale=0.1, offset=-40.0),
    ("plc", "i"): Route(3, "int"),
    ("plc", "b"): Route(4, "bool"),
    ("plc", "s"): Route(5, "string"),
    ("plc", "j"): Route(6, "json"),
    ("opc", "f"): Route(7, "float"),
    ("plc", "iscaled"): Route(8, "int", scale=10.0),
}


def _raw(rows: list[tuple[str, str, object]]) -> RawBatch:
    b = RawBatchBuilder()
    for k, (src, addr, value) in enumerate(rows):
        b.append(src, addr, 1_000_000 * (k + 1), value)
    return b.build()


def test_routes_by_connection_and_address() -> None:
    res = Mapper(ROUTES).map(_raw([("plc", "f", 1.5), ("opc", "f", 2.5)]))
    t = res.readings.table.to_pydict()
    assert t["signal_id"] == [1, 7]
    assert t["v_float"] == [1.5, 2.5]
    assert res.rejected == 0


def test_unknown_address_goes_to_dead_letters_and_rest_flows() -> None:
    res = Mapper(ROUTES).map(_raw([("plc", "f", 1.0), ("plc", "nope", 2.0), ("x", "f", 3.0)]))
    assert res.readings.table.column("signal_id").to_pylist() == [1]
    dl = res.dead_letters.to_pydict()
    assert dl["location"] == ["nope", "f"]
    assert dl["source"] == ["plc", "x"]
    assert all("not bound" in r for r in dl["reason"])
    payload = json.loads(dl["payload"][0])
    assert payload["value"] == 2.0
    assert payload["address"] == "nope"


def test_conversions_to_signal_types() -> None:
    rows: list[tuple[str, str, object]] = [
        ("plc", "f", 3),  # int → float
        ("plc", "f", "4.25"),  # text → float
        ("plc", "i", 5.0),  # integral float → int
        ("plc", "i", True),  # bool → int
        ("plc", "b", 0),  # int → bool
        ("plc", "b", "on"),  # text → bool
        ("plc", "s", 12),  # number → text
        ("plc", "j", '{"a": 1}'),
        ("plc", "scaled", 1000),  # raw counts → engineering units
        ("plc", "iscaled", 7),
    ]
    res = Mapper(ROUTES).map(_raw(rows))
    assert res.rejected == 0
    t = res.readings.table.to_pydict()
    assert t["v_float"][:2] == [3.0, 4.25]
    assert t["v_int"][2:4] == [5, 1]
    assert t["v_bool"][4:6] == [False, True]
    assert t["v_str"][6:8] == ["12", '{"a": 1}']
    assert t["v_float"][8] == 1000 * 0.1 - 40.0
    assert t["v_int"][9] == 70
    # Exactly one value column is set per row.
    for k in range(len(rows)):
        assert sum(t[c][k] is not None for c in ("v_float", "v_int", "v_bool", "v_str")) == 1


def test_unconvertible_values_are_dead_letters_with_reasons() -> None:
    rows: list[tuple[str, str, object]] = [
        ("plc", "f", "hot"),
        ("plc", "i", 2.5),
        ("plc", "b", "maybe"),
        ("plc", "j", "{not json"),
        ("plc", "f", 1.0),
    ]
    res = Mapper(ROUTES).map(_raw(rows))
    assert len(res.readings) == 1
    reasons = res.dead_letters.column("reason").to_pylist()
    assert "not a number" in reasons[0]
    assert "not an integer" in reasons[1]
    assert "not a boolean" in reasons[2]
    assert "not valid JSON" in reasons[3]


def test_null_values_keep_their_quality() -> None:
    b = RawBatchBuilder()
    b.append("plc", "f", 1, None, Quality.BAD_NOT_CONNECTED)
    res = Mapper(ROUTES).map(b.build())
    assert res.rejected == 0
    row = res.readings.table.to_pylist()[0]
    assert row["quality"] == Quality.BAD_NOT_CONNECTED
    assert row["v_float"] is None


def test_empty_mapper_rejects_everything() -> None:
    res = Mapper({}).map(_raw([("plc", "f", 1.0)]))
    assert len(res.readings) == 0
    assert res.rejected == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["plc", "opc", "zzz"]),
            st.sampled_from(["f", "i", "b", "s", "scaled", "unknown"]),
            st.one_of(st.floats(allow_nan=False), st.integers(-(2**40), 2**40), st.booleans()),
        ),
        max_size=60,
    )
)
def test_nothing_is_lost(rows: list[tuple[str, str, object]]) -> None:
    """Every raw row ends up either as a reading or as a dead letter, in order."""
    res = Mapper(ROUTES).map(_raw(rows))
    assert len(res.readings) + res.rejected == len(rows)

    def accepted(addr: str, value: object) -> bool:
        if addr != "i" or not isinstance(value, float):
            return True
        return value.is_integer() and abs(value) < 2.0**63

    expected = [
        1_000_000 * (k + 1)
        for k, (s, a, v) in enumerate(rows)
        if (s, a) in ROUTES and accepted(a, v)
    ]
    assert res.readings.table.column("ts").cast("int64").to_pylist() == expected


_POOL_ADDRS = ["f", "scaled", "i", "b", "s", "j", "nope", "iscaled"]
_POOL_VALUES: dict[str, st.SearchStrategy[object]] = {
    "f": st.floats(-1e6, 1e6),
    "scaled": st.floats(-1e6, 1e6),
    "i": st.integers(-(2**40), 2**40) | st.sampled_from(["7", "x"]),
    "b": st.booleans() | st.sampled_from(["on", "maybe"]),
    "s": st.text(max_size=4) | st.integers(0, 9),
    "j": st.sampled_from(['{"a": 1}', "{not json", "[1, 2]"]) | st.integers(0, 9),
    "nope": st.floats(0, 1),
    "iscaled": st.integers(-1000, 1000),
}


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_numbered_addresses_map_like_their_strings(data: st.DataObject) -> None:
    """A batch with address ids into a pool (as the Sparkplug host sends) maps exactly as the
    same rows by address string: readings, dead letters and unknown keys."""
    pool_size = data.draw(st.integers(1, len(_POOL_ADDRS)), label="pool size")
    pool = _POOL_ADDRS[:pool_size]
    ids = data.draw(st.lists(st.integers(0, pool_size - 1), min_size=1, max_size=30), label="ids")
    rows = [("plc", pool[i], data.draw(_POOL_VALUES[pool[i]])) for i in ids]
    plain = _raw(rows)
    numbered = RawBatch(plain.table, np.asarray(ids, np.int32), pa.array(pool, pa.string()))
    mapper = Mapper(ROUTES)
    for _ in range(2):  # the second time from the mapper's cached pool lookup
        want, got = mapper.map(plain), mapper.map(numbered)
        assert got.readings.table.equals(want.readings.table)
        assert got.dead_letters.drop_columns(["received_at"]).equals(
            want.dead_letters.drop_columns(["received_at"])
        )
        assert got.unknown == want.unknown
    assert ("plc", "nope") in want.unknown or "nope" not in [pool[i] for i in ids]


def test_a_grown_pool_is_looked_up_again() -> None:
    mapper = Mapper(ROUTES)
    small = pa.array(["f", "x"], pa.string())
    batch = RawBatch(_raw([("plc", "x", 1.0)]).table, np.array([1], np.int32), small)
    assert mapper.map(batch).unknown == (("plc", "x"),)
    mapper = mapper.with_routes({("plc", "x"): Route(9, "float")})
    grown = pa.array(["f", "x", "i"], pa.string())
    batch = RawBatch(
        _raw([("plc", "x", 2.0), ("plc", "i", 3)]).table, np.array([1, 2], np.int32), grown
    )
    result = mapper.map(batch)
    assert result.readings.table.column("signal_id").to_pylist() == [9, 3]
    assert result.unknown == ()
    with pytest.raises(BatchError, match="go together"):
        RawBatch(batch.table, np.array([1, 2], np.int32))
    with pytest.raises(BatchError, match="2 address ids for 1 rows"):
        RawBatch(_raw([("plc", "x", 2.0)]).table, np.array([1, 2], np.int32), grown)

"""Tests of the mapper: routing, type conversion, scaling and dead letters."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.edge.batch import Quality, RawBatch, RawBatchBuilder
from shopfloor.edge.mapper import Mapper, Route

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

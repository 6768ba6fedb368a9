"""The Modbus TCP connector against a real pymodbus server on a free loopback port."""

from __future__ import annotations

import logging
import math
import re
import socket
import struct
import time
from typing import Any, Literal

import pytest
from _modbus_testserver import ModbusTestServer, Running, value_of, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.modbus import ModbusConnector, parse_address, quality_from_exception
from shopfloor.edge.batch import Quality
from shopfloor.errors import ConnectorError

DT = AsyncModbusTcpClient.DATATYPE
FAST = {"poll_ms": 50, "timeout_s": 0.5, "retries": 0, "reconnect_initial_s": 0.05}

_INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def _value(dtype: str) -> st.SearchStrategy[Any]:
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        return st.integers(lo, hi)
    if dtype == "float32":
        return st.floats(width=32, allow_nan=False)
    if dtype == "float64":
        return st.floats(allow_nan=False)
    return st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=8)


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[str, str, Any]:
    dtype = draw(st.sampled_from([*_INT_RANGES, "float32", "float64", "string"]))
    orders = ["ABCD", "BADC"] if dtype == "string" else ["ABCD", "CDAB", "BADC", "DCBA"]
    return dtype, draw(st.sampled_from(orders)), draw(_value(dtype))


def reference_registers(dtype: str, order: str, value: Any) -> list[int]:
    """Registers of ``value`` as pymodbus encodes them, then byte-swapped for BADC/DCBA."""
    if dtype == "string":
        regs = AsyncModbusTcpClient.convert_to_registers(value, DT.STRING)
        regs += [0] * (4 - len(regs))  # len=4 registers
    else:
        word_order: Literal["big", "little"] = "little" if order in ("CDAB", "DCBA") else "big"
        regs = AsyncModbusTcpClient.convert_to_registers(value, DT[dtype.upper()], word_order)
    if order in ("BADC", "DCBA"):
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs


def address_of(dtype: str, order: str, reg: int, unit: int = 1) -> str:
    extra = ";len=4" if dtype == "string" else ""
    return f"unit={unit};hr={reg};type={dtype};order={order}{extra}"


def expected(dtype: str, value: Any) -> Any:
    if dtype == "uint64" and value > 2**63 - 1:
        return float(value)  # beyond the int64 value column
    if dtype == "float32":
        return struct.unpack(">f", struct.pack(">f", value))[0]
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("hr=40", ("hr", 40, 1, "uint16", "ABCD", 1)),
        ("unit=3; IR=0x10 ; type=float32;order=cdab", ("ir", 16, 3, "float32", "CDAB", 2)),
        ("coil=7", ("coil", 7, 1, "bool", "ABCD", 1)),
        ("di=1999", ("di", 1999, 1, "bool", "ABCD", 1)),
        ("hr=5;bit=15", ("hr", 5, 1, "bool", "ABCD", 1)),
        ("hr=5;type=string;len=10", ("hr", 5, 1, "string", "ABCD", 10)),
        ("hr=5;type=uint64;order=DCBA", ("hr", 5, 1, "uint64", "DCBA", 4)),
    ],
)
def test_parse_address(text: str, want: tuple[Any, ...]) -> None:
    a = parse_address(text)
    assert (a.table, a.address, a.unit, a.type, a.order, a.width) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unit=1", "exactly one table"),
        ("hr=1;ir=2", "exactly one table"),
        ("hr=70000", "not within 0…65535"),
        ("hr=1;type=float16", "type='float16' is not one of"),
        ("hr=1;order=ABDC", "order='ABDC'"),
        ("hr=1;type=string", "needs len=N"),
        ("coil=1;type=uint16", "single bits"),
        ("hr=1;bit=16", "bit=16 is not within 0…15"),
        ("hr=1;type=float32;bit=2", "bit= reads one bit"),
        ("hr=1;scale=0", "scale=0"),
        ("hr=1;colour=red", "unknown field(s) colour"),
        ("hr=1;unit", "is not key=value"),
        ("hr=1;type=string;len=2;order=CDAB", "strings take"),
        ("unit=256;hr=1", "unit=256 is not within 0…255"),
    ],
)
def test_parse_address_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_address(text)


def test_configuration_errors_name_the_connection() -> None:
    with pytest.raises(ConnectorError, match=r"connection 'm1': point 'hr=x'.*not an integer"):
        ModbusConnector("m1", "modbus://127.0.0.1:502", [PointSpec("hr=x")])
    with pytest.raises(ConnectorError, match=r"connection 'm1': unknown Modbus option\(s\) pol"):
        ModbusConnector("m1", "modbus://127.0.0.1", [], {"pol": 1})
    with pytest.raises(ConnectorError, match=r"connection 'm1'.*scheme 'opc.tcp'"):
        ModbusConnector("m1", "opc.tcp://127.0.0.1:502", [])
    with pytest.raises(ConnectorError, match=r"connection 'm1': max_registers must be 1…125"):
        ModbusConnector("m1", "tcp://h", [], {"max_registers": 200})
    with pytest.raises(ConnectorError, match="listed twice"):
        ModbusConnector("m1", "tcp://h", [PointSpec("hr=1"), PointSpec("hr=1")])
    with pytest.raises(ConnectorError, match="poll_ms"):
        ModbusConnector("m1", "tcp://h", [PointSpec("hr=1", options={"poll_ms": 0})])
    c = ModbusConnector("m1", "tcp://plc.local", [])
    assert (c.host, c.port) == ("plc.local", 502)


def test_quality_from_exception() -> None:
    assert quality_from_exception(1) == Quality.BAD_CONFIG_ERROR
    assert quality_from_exception(2) == Quality.BAD_CONFIG_ERROR
    assert quality_from_exception(4) == Quality.BAD_DEVICE_FAILURE
    assert quality_from_exception(0x0B) == Quality.BAD_COMM_FAILURE


@settings(max_examples=300, deadline=None)
@given(typed_values())
def test_codec_matches_pymodbus(tv: tuple[str, str, Any]) -> None:
    dtype, order, value = tv
    a = parse_address(address_of(dtype, order, 0))
    regs = reference_registers(dtype, order, value)
    assert a.decode(regs) == (expected(dtype, value) if dtype == "float32" else value)
    assert a.encode(value) == regs


@given(st.integers(-(2**15), 2**15 - 1))
def test_scale_offset_round_trip(raw: int) -> None:
    a = parse_address("hr=0;type=int16;scale=0.1;offset=-20")
    value = a.decode([raw & 0xFFFF])
    assert isinstance(value, float)
    assert math.isclose(value, raw * 0.1 - 20, abs_tol=1e-9)
    assert a.encode(value) == [raw & 0xFFFF]


# --------------------------------------------------------------------------- reading


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(typed_values(), min_size=1, max_size=12))
async def test_round_trip_through_the_connector(values: list[tuple[str, str, Any]]) -> None:
    async with ModbusTestServer() as srv:
        points, want, reg = [], {}, 0
        for dtype, order, value in values:
            regs = reference_registers(dtype, order, value)
            srv.regs[1]["hr"][reg : reg + len(regs)] = regs
            addr = address_of(dtype, order, reg)
            kind = "string" if dtype == "string" else ("float" if "float" in dtype else "int")
            points.append(PointSpec(addr, kind))
            want[addr] = expected(dtype, value)
            reg += len(regs) + 1
        before = time.time_ns() // 1000
        c = ModbusConnector("rt", srv.endpoint, points, FAST)
        async with Running(c) as sink:
            await sink.wait(lambda: len(sink.latest()) == len(want))
        after = time.time_ns() // 1000
    got = sink.latest()
    assert {a: value_of(r) for a, r in got.items()} == want
    assert all(r["quality"] == Quality.GOOD for r in got.values())
    assert all(before <= r["ts"].timestamp() * 1e6 <= after for r in got.values())
    assert len(srv.reads()) >= 1
    assert srv.reads()[0].count == reg - 1  # every point in one request (gaps of 1)


async def test_bits_and_scaling() -> None:
    async with ModbusTestServer(units=(1, 7)) as srv:
        srv.bits[7]["coil"][5] = True
        srv.bits[7]["di"][1999] = True
        srv.regs[7]["hr"][3] = 0b1000_0000_0000_0100
        srv.regs[7]["ir"][9] = (-123) & 0xFFFF
        points = [
            PointSpec("unit=7;coil=5", "bool"),
            PointSpec("unit=7;coil=6", "bool"),
            PointSpec("unit=7;di=1999", "bool"),
            PointSpec("unit=7;hr=3;bit=2", "bool"),
            PointSpec("unit=7;hr=3;bit=15", "bool"),
            PointSpec("unit=7;hr=3;bit=0", "bool"),
            PointSpec("unit=7;ir=9;type=int16;scale=0.1;offset=1", "float"),
        ]
        c = ModbusConnector("bits", srv.endpoint, points, FAST)
        async with Running(c) as sink:
            await sink.wait(lambda: len(sink.latest()) == len(points))
    got = {a: value_of(r) for a, r in sink.latest().items()}
    assert got == {
        "unit=7;coil=5": True,
        "unit=7;coil=6": False,
        "unit=7;di=1999": True,
        "unit=7;hr=3;bit=2": True,
        "unit=7;hr=3;bit=15": True,
        "unit=7;hr=3;bit=0": False,
        "unit=7;ir=9;type=int16;scale=0.1;offset=1": pytest.approx(-11.3),
    }


async def _one_poll(srv: ModbusTestServer, points: list[PointSpec], **options: Any) -> None:
    c = ModbusConnector("plan", srv.endpoint, points, {**FAST, **options})
    async with Running(c) as sink:
        await sink.wait(lambda: len(sink.latest()) == len(points))


async def test_coalescing_and_limits() -> None:
    async with ModbusTestServer() as srv:
        # 40 adjacent float32 → one request of 80 registers
        await _one_poll(srv, [PointSpec(f"hr={2 * i};type=float32") for i in range(40)])
        first = srv.reads()[0]
        assert (first.table, first.address, first.count) == ("hr", 0, 80)
        # 130 adjacent registers → 125 + 5
        srv.requests.clear()
        await _one_poll(srv, [PointSpec(f"ir={i}") for i in range(130)])
        assert [(r.address, r.count) for r in srv.reads()[:2]] == [(0, 125), (125, 5)]
        # a float32 is never cut in two at the limit: 124 registers + the float at 124
        srv.requests.clear()
        await _one_poll(
            srv, [*(PointSpec(f"hr={i}") for i in range(124)), PointSpec("hr=124;type=float32")]
        )
        assert [(r.address, r.count) for r in srv.reads()[:2]] == [(0, 124), (124, 2)]
        # gaps: 10 bridged (default max_gap), 11 not
        srv.requests.clear()
        await _one_poll(srv, [PointSpec("hr=0"), PointSpec("hr=11"), PointSpec("hr=23")])
        assert [(r.address, r.count) for r in srv.reads()[:2]] == [(0, 12), (23, 1)]
        srv.requests.clear()
        await _one_poll(srv, [PointSpec("hr=0"), PointSpec("hr=30")], max_gap=40)
        assert [(r.address, r.count) for r in srv.reads()[:1]] == [(0, 31)]
        # coils: gaps of 16 × max_gap bits bridged, 2000 bits per request, tables not mixed
        srv.requests.clear()
        bits = ["coil=0", "coil=160", "coil=400", "di=0"]
        await _one_poll(srv, [PointSpec(a) for a in bits])
        reads = {(r.table, r.address, r.count) for r in srv.reads()}
        assert reads == {("coil", 0, 161), ("coil", 400, 1), ("di", 0, 1)}
        srv.requests.clear()
        bits = ["coil=0", "coil=1000", "coil=2500", "di=0"]
        await _one_poll(srv, [PointSpec(a) for a in bits], max_gap=200)
        reads = {(r.table, r.address, r.count) for r in srv.reads()}
        assert reads == {("coil", 0, 1001), ("coil", 2500, 1), ("di", 0, 1)}


async def test_poll_groups_per_unit_and_rate() -> None:
    async with ModbusTestServer(units=(1, 2)) as srv:
        points = [
            PointSpec("unit=1;hr=0"),
            PointSpec("unit=1;hr=1", options={"poll_ms": 1000}),
            PointSpec("unit=2;hr=0"),
        ]
        c = ModbusConnector("groups", srv.endpoint, points, FAST)
        assert [(g.unit, g.period_s) for g in c.groups] == [(1, 0.05), (1, 1.0), (2, 0.05)]
        async with Running(c) as sink:
            await sink.wait(lambda: sum(r.unit == 2 for r in srv.reads()) >= 6)
        slow = [r for r in srv.reads() if r.unit == 1 and r.address == 1]
        assert len(slow) <= 2  # the 1 s group polled once or twice meanwhile
        rows = sink.rows()
        assert sum(r["address"] == "unit=1;hr=0" for r in rows) >= 4  # every poll emitted


async def test_exception_responses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.connectors.modbus")
    async with ModbusTestServer() as srv:
        srv.regs[1]["hr"][0] = 11
        srv.regs[1]["ir"][0] = 22
        srv.fail[(1, "hr")] = [(0, 0, 4)]  # server device failure
        points = [PointSpec("hr=0", "int"), PointSpec("ir=0", "int")]
        c = ModbusConnector("exc", srv.endpoint, points, FAST)
        async with Running(c) as sink:
            await sink.wait(lambda: sum(r["address"] == "ir=0" for r in sink.rows()) >= 5)
            srv.fail.clear()
            await sink.wait(lambda: value_of(sink.latest()["hr=0"]) == 11)
        rows = [r for r in sink.rows() if r["address"] == "hr=0"]
        assert rows[0]["quality"] == Quality.BAD_DEVICE_FAILURE
        assert value_of(rows[0]) is None
        assert sum(r["quality"] == Quality.BAD_DEVICE_FAILURE for r in rows) == 1  # per change
        assert all(r["quality"] == Quality.GOOD for r in sink.rows() if r["address"] == "ir=0")
    logged = [r.getMessage() for r in caplog.records if "holding registers 0…0" in r.getMessage()]
    assert len(logged) == 2, logged  # one line when it failed, one when it recovered
    assert "exception 0x04 (server device failure)" in logged[0]
    assert "connection 'exc'" in logged[0]


async def test_illegal_address_in_a_bridged_request_splits_it() -> None:
    async with ModbusTestServer() as srv:
        srv.regs[1]["hr"][0] = 1
        srv.regs[1]["hr"][8] = 8
        srv.fail[(1, "hr")] = [(4, 4, 2)]  # a hole the device does not have
        points = [PointSpec("hr=0", "int"), PointSpec("hr=4", "int"), PointSpec("hr=8", "int")]
        c = ModbusConnector("split", srv.endpoint, points, FAST)
        async with Running(c) as sink:
            await sink.wait(lambda: len(sink.latest()) == 3)
        got = sink.latest()
        assert got["hr=4"]["quality"] == Quality.BAD_CONFIG_ERROR
        assert (value_of(got["hr=0"]), value_of(got["hr=8"])) == (1, 8)
        assert [(r.address, r.count) for r in srv.reads()[:4]] == [(0, 9), (0, 1), (4, 1), (8, 1)]


async def test_a_unit_that_does_not_answer_is_backed_off() -> None:
    async with ModbusTestServer(units=(1, 2)) as srv:
        srv.fail[(2, "ir")] = [(0, 100, 0x0B)]  # gateway: target device failed to respond
        points = [PointSpec("unit=1;hr=0"), PointSpec("unit=2;hr=0"), PointSpec("unit=2;ir=0")]
        options = {**FAST, "poll_ms": 20, "unit_backoff_initial_s": 0.5}
        c = ModbusConnector("gw", srv.endpoint, points, options)
        async with Running(c) as sink:
            await sink.wait(lambda: sum(r.unit == 1 for r in srv.reads()) >= 15)
            assert sum(r.unit == 2 for r in srv.reads()) <= 3
            got = sink.latest()
            assert got["unit=2;ir=0"]["quality"] == Quality.BAD_COMM_FAILURE
            assert got["unit=2;hr=0"]["quality"] == Quality.BAD_COMM_FAILURE  # not even asked
            assert not any(r.unit == 2 and r.table == "hr" for r in srv.reads())
            assert got["unit=1;hr=0"]["quality"] == Quality.GOOD
            srv.fail.clear()
            await sink.wait(
                lambda: all(
                    sink.latest()[a]["quality"] == Quality.GOOD
                    for a in ("unit=2;hr=0", "unit=2;ir=0")
                ),
                within=20,
            )


async def test_server_restart_and_resume(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.connectors.modbus")
    srv = ModbusTestServer()
    await srv.start()
    srv.regs[1]["hr"][0] = 1
    points = [PointSpec("hr=0", "int"), PointSpec("coil=0", "bool")]
    c = ModbusConnector("restart", srv.endpoint, points, FAST)
    async with Running(c) as sink:
        await sink.wait(lambda: len(sink.latest()) == 2)
        assert c.status.state == "connected"
        await srv.stop()
        await sink.wait(
            lambda: all(r["quality"] == Quality.BAD_NOT_CONNECTED for r in sink.latest().values())
        )
        await wait_until(lambda: c.status.state == "disconnected")
        assert "connection 'restart'" in (c.status.last_error or "")
        bad = [r for r in sink.rows() if r["quality"] == Quality.BAD_NOT_CONNECTED]
        assert len(bad) == 2
        assert bad[0]["ts"] == bad[1]["ts"]
        regs, bits = srv.regs, srv.bits
        srv = ModbusTestServer(port=srv.port)
        srv.regs, srv.bits = regs, bits
        srv.regs[1]["hr"][0] = 2
        await srv.start()
        try:
            await sink.wait(lambda: value_of(sink.latest()["hr=0"]) == 2)
            assert c.status.state == "connected"
            assert c.status.reconnects >= 1
        finally:
            await srv.stop()
    assert c.status.state == "stopped"  # type: ignore[comparison-overlap]
    states = [r.getMessage() for r in caplog.records if "connection 'restart'" in r.getMessage()]
    assert sum(m.endswith(": connected") for m in states) == 2


async def test_wrong_port_names_the_connection() -> None:
    port = free_port()
    c = ModbusConnector("nowhere", f"tcp://127.0.0.1:{port}", [PointSpec("hr=0")], FAST)
    async with Running(c):
        await wait_until(lambda: c.status.state == "disconnected")
        error = c.status.last_error or ""
        assert f"connection 'nowhere' (modbus://127.0.0.1:{port})" in error
        assert "cannot connect" in error
        with pytest.raises(ConnectorError, match=r"connection 'nowhere'.*not connected"):
            await c.write("hr=0", 1)


async def test_write_back() -> None:
    async with ModbusTestServer() as srv:
        srv.fail[(1, "hr")] = [(90, 90, 2)]
        points = [
            PointSpec("hr=10;type=float32;order=CDAB", "float"),
            PointSpec("coil=3", "bool"),
        ]
        c = ModbusConnector("w", srv.endpoint, points, FAST)
        async with Running(c) as sink:
            await wait_until(lambda: c.status.state == "connected")
            await c.write("hr=10;type=float32;order=CDAB", 21.5)
            assert srv.regs[1]["hr"][10:12] == AsyncModbusTcpClient.convert_to_registers(
                21.5, DT.FLOAT32, "little"
            )
            await c.write("coil=3", True)
            assert srv.bits[1]["coil"][3] is True
            await sink.wait(
                lambda: (
                    value_of(sink.latest().get("coil=3", {"v_bool": None})) is True
                    and value_of(sink.latest()["hr=10;type=float32;order=CDAB"]) == 21.5
                )
            )
            await c.write("hr=20;type=int16;scale=0.1", -12.3)
            assert srv.regs[1]["hr"][20] == (-123) & 0xFFFF
            await c.write("hr=21;type=int32;order=CDAB", -2)
            assert srv.regs[1]["hr"][21:23] == [0xFFFE, 0xFFFF]
            await c.write("hr=30;type=uint16", 7)
            await c.write("hr=30;bit=4", True)
            assert srv.regs[1]["hr"][30] == 0b10111
            await c.write("hr=40;type=string;len=2", "ab")
            assert srv.regs[1]["hr"][40:42] == [0x6162, 0]
            with pytest.raises(ConnectorError, match=r"connection 'w'.*write ir=1.*read-only"):
                await c.write("ir=1", 5)
            with pytest.raises(ConnectorError, match=r"write hr=1.*does not fit uint16"):
                await c.write("hr=1", 70000)
            with pytest.raises(ConnectorError, match=r"write hr=90: device answered exception"):
                await c.write("hr=90", 1)


async def test_report_by_exception() -> None:
    async with ModbusTestServer() as srv:
        points = [PointSpec("hr=0", "int"), PointSpec("hr=1", "int")]
        options = {**FAST, "poll_ms": 10, "report_by_exception": True, "heartbeat_polls": 5}
        c = ModbusConnector("rbe", srv.endpoint, points, options)
        async with Running(c) as sink:
            await wait_until(lambda: len(srv.reads()) >= 20)
            srv.regs[1]["hr"][1] = 5
            await sink.wait(lambda: value_of(sink.latest()["hr=1"]) == 5)
            polls = len(srv.reads())
        rows = [r for r in sink.rows() if r["address"] == "hr=0"]
        # the first value, then one heartbeat per 5 unchanged polls
        assert 1 + (polls - 5) // 5 <= len(rows) <= 1 + polls // 5 + 1
        assert [value_of(r) for r in sink.rows() if r["address"] == "hr=1"][-1] == 5

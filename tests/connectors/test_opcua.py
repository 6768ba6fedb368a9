"""OPC UA connector against a real asyncua server on loopback."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from _opcua_testserver import Collector, TestServer, addr, free_port, running, until
from asyncua import ua

from shopfloor.connectors import PointSpec, create_connector
from shopfloor.connectors.opcua import OpcUaConnector, quality_from_status
from shopfloor.edge.batch import Quality, to_us
from shopfloor.errors import ConnectorError

FAST = {
    "publishing_interval_ms": 50,
    "flush_interval_ms": 20,
    "reconnect_initial_s": 0.2,
    "reconnect_max_s": 1.0,
    "watchdog_interval_s": 0.5,
    "timeout_s": 2,
}


def _points(*names: str, **options: object) -> list[PointSpec]:
    types = {
        "temperature": "float",
        "pressure": "float",
        "count": "int",
        "running": "bool",
        "mode": "string",
        "setpoint": "int",
    }
    return [PointSpec(addr(n), types[n], dict(options)) for n in names]


def _ts(seconds: float) -> datetime:
    return datetime(2024, 5, 1, 8, 0, tzinfo=UTC) + timedelta(seconds=seconds)


async def test_values_and_source_timestamps_arrive(ua_server: TestServer) -> None:
    conn = create_connector(
        "opcua",
        "line-1-opc",
        ua_server.endpoint,
        _points("temperature", "count", "running", "mode"),
        FAST,
    )
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: len(sink.rows) >= 4, what="initial values")
        assert conn.status.state == "connected"
        await ua_server.write("temperature", 21.5, ts=_ts(1.000001))
        await ua_server.write("count", 7, ts=_ts(2))
        await ua_server.write("running", True, ts=_ts(3))
        await ua_server.write("mode", "manual", ts=_ts(4))
        await until(lambda: sink.values(addr("mode"))[-1:] == ["manual"], what="mode")
        await until(lambda: sink.values(addr("temperature"))[-1:] == [21.5], what="temp")
    rows = {r["address"]: r for r in sink.rows}  # the last row of each point
    assert rows[addr("temperature")]["v_float"] == 21.5
    assert rows[addr("temperature")]["ts"] == _ts(1.000001)
    assert rows[addr("count")]["v_int"] == 7
    assert rows[addr("count")]["ts"] == _ts(2)
    assert rows[addr("running")]["v_bool"] is True
    assert rows[addr("mode")]["v_str"] == "manual"
    assert {r["source"] for r in sink.rows} == {"line-1-opc"}
    assert all(r["quality"] == Quality.GOOD for r in sink.rows)
    # Batches, not one per notification.
    assert sink.batches < len(sink.rows)
    assert conn.status.state == "stopped"
    assert conn.status.values_total == len(sink.rows)


async def test_deadband_absolute(ua_server: TestServer) -> None:
    conn = OpcUaConnector(
        "dead", ua_server.endpoint, _points("temperature", deadband_abs=1.0, queue_size=10), FAST
    )
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: sink.values(addr("temperature")) == [20.0], what="initial")
        for i, v in enumerate((20.5, 20.9, 22.0, 22.4, 19.0)):
            await ua_server.write("temperature", v, ts=_ts(i))
        await until(lambda: sink.values(addr("temperature"))[-1:] == [19.0], what="19.0")
    assert sink.values(addr("temperature")) == [20.0, 22.0, 19.0]


async def test_deadband_percent_of_eurange(ua_server: TestServer) -> None:
    # EURange 0..200: 1 % is 2.0
    conn = OpcUaConnector(
        "pct", ua_server.endpoint, _points("pressure", deadband_pct=1.0, queue_size=10), FAST
    )
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: sink.values(addr("pressure")) == [50.0], what="initial")
        for i, v in enumerate((51.0, 51.9, 55.0, 56.0, 40.0)):
            await ua_server.write("pressure", v, ts=_ts(i))
        await until(lambda: sink.values(addr("pressure"))[-1:] == [40.0], what="40.0")
    assert sink.values(addr("pressure")) == [50.0, 55.0, 40.0]


async def test_percent_deadband_without_eurange_is_config_error(ua_server: TestServer) -> None:
    points = [*_points("temperature", deadband_pct=5), *_points("count")]
    conn = OpcUaConnector("pct-bad", ua_server.endpoint, points, FAST)
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: len(sink.of(addr("count"))) >= 1, what="count")
        await until(lambda: len(sink.of(addr("temperature"))) >= 1, what="config error row")
    assert [r["quality"] for r in sink.of(addr("temperature"))] == [Quality.BAD_CONFIG_ERROR]


def test_quality_mapping() -> None:
    sc = ua.StatusCodes
    assert quality_from_status(sc.Good) == Quality.GOOD
    assert quality_from_status(sc.GoodLocalOverride) == Quality.GOOD_LOCAL_OVERRIDE
    assert quality_from_status(sc.Uncertain) == Quality.UNCERTAIN
    assert quality_from_status(sc.UncertainLastUsableValue) == Quality.UNCERTAIN_LAST_USABLE
    assert (
        quality_from_status(sc.UncertainEngineeringUnitsExceeded) == Quality.UNCERTAIN_EU_EXCEEDED
    )
    assert quality_from_status(sc.UncertainInitialValue) == Quality.UNCERTAIN
    assert quality_from_status(sc.Bad) == Quality.BAD
    assert quality_from_status(sc.BadNotConnected) == Quality.BAD_NOT_CONNECTED
    assert quality_from_status(sc.BadCommunicationError) == Quality.BAD_COMM_FAILURE
    assert quality_from_status(sc.BadSensorFailure) == Quality.BAD_SENSOR_FAILURE
    assert quality_from_status(sc.BadNodeIdUnknown) == Quality.BAD_CONFIG_ERROR
    assert quality_from_status(sc.BadOutOfService) == Quality.BAD_OUT_OF_SERVICE
    assert quality_from_status(sc.BadInternalError) == Quality.BAD
    # info bits (e.g. overflow, semantics changed) do not change the quality
    assert quality_from_status(sc.UncertainLastUsableValue | 0x480) == Quality.UNCERTAIN_LAST_USABLE


async def test_status_codes_become_quality(ua_server: TestServer) -> None:
    conn = OpcUaConnector("q", ua_server.endpoint, _points("temperature"), FAST)
    sink = Collector()
    sc = ua.StatusCodes
    async with running(conn, sink):
        await until(lambda: len(sink.of(addr("temperature"))) == 1, what="initial")
        await ua_server.write("temperature", 1.0, ts=_ts(1), status=sc.UncertainLastUsableValue)
        await until(lambda: len(sink.of(addr("temperature"))) == 2, what="uncertain")
        await ua_server.write("temperature", 2.0, ts=_ts(2), status=sc.BadSensorFailure)
        await until(lambda: len(sink.of(addr("temperature"))) == 3, what="bad")
        await ua_server.write("temperature", 3.0, ts=_ts(3))
        await until(lambda: len(sink.of(addr("temperature"))) == 4, what="good")
    q = [r["quality"] for r in sink.of(addr("temperature"))]
    assert q == [
        Quality.GOOD,
        Quality.UNCERTAIN_LAST_USABLE,
        Quality.BAD_SENSOR_FAILURE,
        Quality.GOOD,
    ]


async def test_unknown_node_reported_once_rest_flows(
    ua_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    bad = "ns=2;s=acme/munich/does-not-exist"
    points = [PointSpec(bad), *_points("temperature")]
    conn = OpcUaConnector("bad-node", ua_server.endpoint, points, FAST)
    sink = Collector()
    with caplog.at_level(logging.WARNING, logger="shopfloor.connectors.opcua"):
        async with running(conn, sink):
            await until(lambda: len(sink.of(bad)) == 1, what="config error row")
            await ua_server.write("temperature", 30.0, ts=_ts(1))
            await until(lambda: sink.values(addr("temperature"))[-1:] == [30.0], what="30.0")
    assert [r["quality"] for r in sink.of(bad)] == [Quality.BAD_CONFIG_ERROR]
    assert sink.values(bad) == [None]
    lines = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
    assert len(lines) == 1
    assert "BadNodeIdUnknown" in lines[0]
    assert "bad-node" in lines[0]


async def test_restart_resumes_marks_gap_no_duplicates(ua_server: TestServer) -> None:
    points = _points("temperature", "count")
    conn = OpcUaConnector("restart", ua_server.endpoint, points, FAST)
    sink = Collector()
    t = addr("temperature")
    async with running(conn, sink):
        await ua_server.write("temperature", 5.0, ts=_ts(5))
        await until(lambda: sink.values(t)[-1:] == [5.0], what="5.0")
        await ua_server.stop()
        await until(lambda: conn.status.state == "disconnected", what="disconnected")
        await until(
            lambda: any(r["quality"] == Quality.BAD_NOT_CONNECTED for r in sink.of(t)),
            what="gap marker",
        )
        assert "connection 'restart'" in (conn.status.last_error or "")
        # The same value with the same source timestamp is what the server still holds.
        await ua_server.start(
            initial={
                "temperature": ua.DataValue(
                    ua.Variant(5.0, ua.VariantType.Double),
                    SourceTimestamp=_ts(5),
                    ServerTimestamp=_ts(5),
                ),
            }
        )
        await until(lambda: conn.status.state == "connected", limit_s=15, what="reconnected")
        await ua_server.write("temperature", 6.0, ts=_ts(6))
        await until(lambda: sink.values(t)[-1:] == [6.0], what="6.0")
    rows = sink.of(t)
    assert [r["quality"] for r in rows[-3:]] == [
        Quality.GOOD,
        Quality.BAD_NOT_CONNECTED,
        Quality.GOOD,
    ]
    assert list(sink.values(t)[-3:]) == [5.0, None, 6.0]
    assert sum(1 for r in rows if r["v_float"] == 5.0) == 1
    gap = rows[-2]
    assert gap["ts"] > _ts(5)
    # the count point: its value did not change but the server restarted with a new
    # source timestamp, so a new reading is fine; the gap is marked for it too
    assert Quality.BAD_NOT_CONNECTED in [r["quality"] for r in sink.of(addr("count"))]
    assert conn.status.reconnects >= 1


async def test_wrong_endpoint_clear_error_other_connector_flows(ua_server: TestServer) -> None:
    port = free_port()
    bad = OpcUaConnector("line-9-opc", f"opc.tcp://127.0.0.1:{port}", _points("temperature"), FAST)
    good = OpcUaConnector("line-1-opc", ua_server.endpoint, _points("temperature"), FAST)
    sink_bad, sink_good = Collector(), Collector()
    async with running(bad, sink_bad), running(good, sink_good):
        await until(lambda: bad.status.last_error is not None, what="error")
        for i in range(3):
            await ua_server.write("temperature", 40.0 + i, ts=_ts(i))
        await until(lambda: sink_good.values(addr("temperature"))[-1:] == [42.0], what="good")
        assert bad.status.state == "disconnected"
        assert bad.status.last_error is not None
        assert bad.status.last_error.startswith(
            f"connection 'line-9-opc' (opc.tcp://127.0.0.1:{port}): "
        )
        assert "refused" in bad.status.last_error
    assert sink_bad.rows == []


async def test_write_back_setpoint(ua_server: TestServer) -> None:
    conn = OpcUaConnector("w", ua_server.endpoint, _points("setpoint"), FAST)
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: conn.status.state == "connected", what="connected")
        await conn.write(addr("setpoint"), 42.0)  # a float: encoded as the node's Int32
        dv = await ua_server.nodes["setpoint"].read_data_value()
        assert dv.Value.Value == 42
        assert dv.Value.VariantType == ua.VariantType.Int32
        await until(lambda: sink.values(addr("setpoint"))[-1:] == [42], what="echo")
        with pytest.raises(ConnectorError, match=r"connection 'w' .*ns=2;s=nope"):
            await conn.write("ns=2;s=nope", 1)
    with pytest.raises(ConnectorError, match="not connected"):
        await conn.write(addr("setpoint"), 1)


async def test_events_become_rows(ua_server: TestServer) -> None:
    server_obj = "i=2253"
    conn = OpcUaConnector(
        "ev", ua_server.endpoint, [PointSpec(server_obj, "string", {"events": True})], FAST
    )
    sink = Collector()
    assert ua_server.server is not None
    gen = await ua_server.server.get_event_generator()
    async with running(conn, sink):
        await until(lambda: conn.status.state == "connected", what="connected")
        await asyncio.sleep(0.2)  # the event monitored item is live once created; be safe
        gen.event.Message = ua.LocalizedText("press 7 door open")
        gen.event.Severity = 500
        await gen.trigger(time_attr=_ts(9))
        await until(lambda: "press 7 door open" in sink.values(server_obj), what="event")
    row = next(r for r in sink.of(server_obj) if r["v_str"] == "press 7 door open")
    assert row["ts"] == _ts(9)


def test_registry_and_option_errors() -> None:
    with pytest.raises(ConnectorError, match="unknown protocol 'modbus-rtu'"):
        create_connector("modbus-rtu", "x", "tcp://x", [])
    with pytest.raises(ConnectorError, match="connection 'c': unknown OPC UA option"):
        create_connector("opcua", "c", "opc.tcp://x", [], {"publish_ms": 5})
    with pytest.raises(ConnectorError, match="security_policy 'Basic128'"):
        create_connector("opcua", "c", "opc.tcp://x", [], {"security_policy": "Basic128"})
    with pytest.raises(ConnectorError, match="needs certificate and private_key"):
        create_connector("opcua", "c", "opc.tcp://x", [], {"security_policy": "Basic256Sha256"})
    with pytest.raises(ConnectorError, match="NO_SUCH_VAR_42"):
        create_connector("opcua", "c", "opc.tcp://x", [], {"password_env": "NO_SUCH_VAR_42"})


async def test_cancel_flushes_and_stops(ua_server: TestServer) -> None:
    conn = OpcUaConnector(
        "c",
        ua_server.endpoint,
        _points("temperature"),
        {**FAST, "flush_interval_ms": 60_000, "flush_rows": 10**6},
    )
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: conn.status.state == "connected", what="connected")
        await asyncio.sleep(0.3)
        assert sink.rows == []  # held in the builder
    assert sink.values(addr("temperature")) == [20.0]
    assert conn.status.state == "stopped"
    assert to_us(_ts(0)) > 0

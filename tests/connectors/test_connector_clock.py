"""Connectors stamp data with their clock: the wall clock by default, the Runtime's if given.

Against real servers: a pymodbus server (the Modbus connector stamps every poll and the
connection loss), Mosquitto with the AGV simulator (vehicles stamp their messages with
the simulator's clock; the connector stamps what they did not: the fleet KPIs, the
broken connection's Will, the commands it sends), and a Runtime handing its clock to the
connectors it builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from _modbus_testserver import Collector, ModbusTestServer, Running, value_of

from shopfloor.connectors.base import PointSpec, wall_clock_us
from shopfloor.connectors.modbus import ModbusConnector
from shopfloor.connectors.vda5050 import VdaConnector
from shopfloor.edge.batch import Quality, to_us
from shopfloor.historian import open_historian
from shopfloor.model import parse_factory
from shopfloor.runtime import Runtime
from shopfloor.sim import AgvFleetSimulator

FAST = {"poll_ms": 50, "timeout_s": 0.5, "retries": 0, "reconnect_initial_s": 0.05}
HOST, PORT = "127.0.0.1", 1883

# Far from the wall clock, with whole milliseconds (VDA 5050 headers carry milliseconds).
SIM_TIME = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CONNECTOR_TIME = datetime(2031, 6, 7, 8, 9, 10, 250000, tzinfo=UTC)


class SetClock:
    """A clock that tells the time it was last set to (µs since the epoch)."""

    def __init__(self, at: datetime) -> None:
        self.us = to_us(at)

    def __call__(self) -> int:
        return self.us


# --------------------------------------------------------------------------- Modbus


async def test_modbus_polls_and_connection_loss_take_the_connectors_clock() -> None:
    clock = SetClock(SIM_TIME)
    srv = ModbusTestServer()
    await srv.start()
    try:
        srv.regs[1]["hr"][0] = 1
        points = [PointSpec("hr=0", "int"), PointSpec("coil=0", "bool")]
        c = ModbusConnector("meter", srv.endpoint, points, FAST)
        assert c.clock is wall_clock_us  # the default
        c.clock = clock
        async with Running(c) as sink:
            await sink.wait(lambda: len(sink.latest()) == 2)
            assert {to_us(r["ts"]) for r in sink.rows()} == {clock.us}
            # a later poll is stamped with the clock's time then
            clock.us += 90_000_000
            srv.regs[1]["hr"][0] = 2
            await sink.wait(lambda: value_of(sink.latest()["hr=0"]) == 2)
            assert to_us(sink.latest()["hr=0"]["ts"]) == clock.us
            # so is the loss of the connection
            clock.us += 60_000_000
            await srv.stop()
            await sink.wait(
                lambda: all(
                    r["quality"] == Quality.BAD_NOT_CONNECTED for r in sink.latest().values()
                )
            )
            assert {to_us(r["ts"]) for r in sink.latest().values()} == {clock.us}
    finally:
        await srv.stop()


# --------------------------------------------------------------------------- Runtime

FACTORY = """
types:
  - id: power-meter
    signals:
      - {name: active_power, data_type: int, unit: KWT}
connections:
  - {name: mb, protocol: modbus, endpoint: "modbus://127.0.0.1:1",
     options: {poll_ms: 50, timeout_s: 0.5, reconnect_initial_s: 0.05}}
enterprise:
  id: acme
  sites:
  - id: munich
    areas:
    - id: hall
      lines:
      - id: line-1
        equipment:
        - id: meter-1
          type: power-meter
          connection: mb
          bindings:
            active_power: "unit=1;hr=0;type=uint16"
"""


async def test_runtime_gives_its_clock_to_the_connectors(tmp_path: Path) -> None:
    clock = SetClock(SIM_TIME)
    factory = parse_factory(FACTORY, "clock.yaml")
    path = "acme/munich/hall/line-1/meter-1/active_power"
    async with (
        ModbusTestServer() as srv,
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h,
        Runtime(factory, h, endpoint_override={"mb": srv.endpoint}, clock=clock) as rt,
    ):
        srv.regs[1]["hr"][0] = 42
        assert [c.clock for c in rt.connectors] == [clock]
        async with asyncio.timeout(15):  # the historian has no event to wait on
            while not (rows := (await h.latest([path])).to_pylist()):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    assert rows[0]["v_int"] == 42
    assert to_us(rows[0]["ts"]) == clock.us


async def test_runtime_defaults_to_the_wall_clock(tmp_path: Path) -> None:
    factory = parse_factory(FACTORY, "clock.yaml")
    async with (
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h,
        Runtime(factory, h, endpoint_override={"mb": "modbus://127.0.0.1:1"}) as rt,
    ):
        assert [c.clock for c in rt.connectors] == [wall_clock_us]


# --------------------------------------------------------------------------- VDA 5050


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


def _of(sink: Collector, address: str) -> list[dict[str, Any]]:
    """The rows ``sink`` received for ``address``."""
    return [r for r in sink.rows() if r["address"] == address]


@pytest.mark.skipif(not _broker_up(), reason=f"no MQTT broker listening on {HOST}:{PORT}")
async def test_vda5050_vehicle_time_from_the_simulator_the_rest_from_the_connector() -> None:
    iface = f"uagv-clock-{uuid.uuid4().hex[:8]}"
    sink = Collector()
    c = VdaConnector(
        "fleet",
        f"mqtt://{HOST}:{PORT}",
        [],
        {
            "interface_name": iface,
            "auto_discover": True,
            "flush_interval_ms": 20,
            "fleet_kpi_interval_s": 0.2,
        },
    )
    c.clock = SetClock(CONNECTOR_TIME)
    task = asyncio.create_task(c.run(sink))
    sent: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(10):
            while c.status.state != "connected":  # noqa: ASYNC110 - a status has no event
                await asyncio.sleep(0.02)
        fleet = AgvFleetSimulator(
            1,
            HOST,
            PORT,
            interface_name=iface,
            state_hz=10.0,
            auto_orders=False,
            obstacle_rate=0.0,
            mtbf_s=0.0,
            clock=lambda: SIM_TIME,
        )
        async with fleet, aiomqtt.Client(HOST, PORT) as spy:
            await spy.subscribe(f"{iface}/v2/+/AGV-001/instantActions")
            await sink.wait(
                lambda: (
                    _of(sink, "AGV-001/batteryState.batteryCharge")
                    and _of(sink, "AGV-001/agvPosition.x")
                    and _of(sink, "_fleet/utilisation")
                ),
                within=15.0,
            )
            await c.pause("AGV-001")
            async with asyncio.timeout(5):
                async for m in spy.messages:
                    assert isinstance(m.payload, bytes)
                    sent.append(json.loads(m.payload))
                    break
            await fleet.kill("AGV-001")
            await sink.wait(
                lambda: any(
                    r["v_str"] == "CONNECTIONBROKEN" for r in _of(sink, "AGV-001/connectionState")
                ),
                within=15.0,
            )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    broken = [r for r in _of(sink, "AGV-001/connectionState") if r["v_str"] == "CONNECTIONBROKEN"]
    # The Will carries the header of the vehicle's connect: stamped on arrival instead.
    assert {to_us(r["ts"]) for r in broken} == {to_us(CONNECTOR_TIME)}
    assert {r["ts"] for r in sink.rows() if r["address"].startswith("_fleet/")} == {CONNECTOR_TIME}
    said = [
        r
        for r in sink.rows()
        if r["address"].startswith("AGV-001/") and r["address"] != "AGV-001/state"
    ]
    assert len(said) > 10
    assert {r["ts"] for r in said if r not in broken} == {SIM_TIME}
    # the derived state goes with what it is derived from: the vehicle's, then the Will's
    states = _of(sink, "AGV-001/state")
    assert {r["ts"] for r in states[:-1]} == {SIM_TIME}
    assert (states[-1]["v_str"], states[-1]["ts"]) == ("offline", CONNECTOR_TIME)
    assert sent[0]["timestamp"] == "2031-06-07T08:09:10.250Z"

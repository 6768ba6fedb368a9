"""The simulator's Modbus devices, read and written through the Modbus connector."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.modbus import ModbusConnector, parse_address
from shopfloor.edge.batch import Quality, RawBatch
from shopfloor.errors import ConnectorError
from shopfloor.sim._modbus import ModbusDeviceServer, PowerMeter, PressPlc, shift_status
from shopfloor.sim._opcua import SimulatorError

MONDAY_10H = datetime(2025, 3, 3, 10, 0, tzinfo=UTC).timestamp()
SUNDAY_10H = datetime(2025, 3, 2, 10, 0, tzinfo=UTC).timestamp()


class Reader:
    """A running connector over a device's register map; ``read()`` gives a fresh poll."""

    def __init__(self, connector: ModbusConnector, names: dict[str, str]) -> None:
        self.connector = connector
        self.names = names  # address → signal name
        self.rows: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def sink(self, batch: RawBatch) -> None:
        self.rows.extend(batch.table.to_pylist())
        self.changed.set()

    async def read(self) -> dict[str, Any]:
        """Values of every signal from polls that started after this call."""
        start = len(self.rows)
        async with asyncio.timeout(10):
            while True:
                fresh = {self.names[r["address"]]: r for r in self.rows[start:]}
                if len(fresh) == len(self.names):
                    break
                self.changed.clear()
                await self.changed.wait()
        assert all(r["quality"] == Quality.GOOD for r in fresh.values())
        return {
            name: next(r[c] for c in ("v_float", "v_int", "v_bool", "v_str") if r[c] is not None)
            for name, r in fresh.items()
        }


@contextlib.asynccontextmanager
async def reading(endpoint: str, register_map: dict[str, str]) -> AsyncIterator[Reader]:
    points = [PointSpec(addr, "float") for addr in register_map.values()]
    c = ModbusConnector("sim", endpoint, points, {"poll_ms": 20, "timeout_s": 1})
    reader = Reader(c, {a: n for n, a in register_map.items()})
    task = asyncio.create_task(c.run(reader.sink))
    try:
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_register_maps_parse_and_do_not_overlap() -> None:
    for device in (PowerMeter(3), PressPlc(4)):
        spans: set[tuple[str, int]] = set()
        for name, text in device.register_map().items():
            a = parse_address(text)
            assert a.unit == device.unit_id, name
            cells = {(a.table, a.address + k) for k in range(a.width)}
            assert not spans & cells or a.bit is not None, name
            spans |= cells
    assert set(PressPlc.STATE_CODES) == {
        "running",
        "idle",
        "starved",
        "blocked",
        "planned_stop",
        "unplanned_stop",
        "setup",
        "offline",
    }


def test_shift_profile() -> None:
    assert shift_status(MONDAY_10H) == "work"
    assert shift_status(MONDAY_10H + 2 * 3600) == "break"  # 12:00 lunch
    assert shift_status(MONDAY_10H + 13 * 3600) == "off"  # 23:00
    assert shift_status(SUNDAY_10H) == "off"


def test_seeded_and_reproducible() -> None:
    def run(seed: int) -> tuple[int, int, float]:
        press, meter = PressPlc(seed=seed), PowerMeter(seed=seed)
        for k in range(600):
            press.step(MONDAY_10H + 10 * k, 10)
            meter.step(MONDAY_10H + 10 * k, 10)
        return press.good, press.reject, meter.energy_kwh

    assert run(7) == run(7)
    assert run(7) != run(8)


async def test_power_meter_and_press_through_the_connector() -> None:
    meter = PowerMeter(1, rated_kw=45.0, seed=1)
    press = PressPlc(2, seed=1, mtbf_min=1e9)
    async with ModbusDeviceServer([meter, press], port=0, step_s=0, start_time_s=MONDAY_10H) as srv:
        for _ in range(30):  # 5 simulated minutes of a working shift
            srv.step(10.0)
        both = {**meter.register_map(), **press.register_map()}
        async with reading(srv.endpoint, both) as reader:
            first = await reader.read()
            for v in ("voltage_l1", "voltage_l2", "voltage_l3"):
                assert 220.0 < first[v] < 240.0
            assert 0.8 * 0.85 * 45 < first["active_power"] < 1.2 * 0.85 * 45
            amps = [first[f"current_l{i}"] for i in (1, 2, 3)]
            expect = (
                first["active_power"] * 1000 / (3 * first["voltage_l1"] * first["power_factor"])
            )
            assert all(math.isclose(a, expect, rel_tol=0.1) for a in amps)
            assert 0.0 < first["energy"] < 45 * 300 / 3600
            assert 49.9 < first["frequency"] < 50.1
            assert first["state"] == PressPlc.STATE_CODES["running"]
            assert first["running"] is True or first["running"] == 1.0
            assert 150.0 < first["pressure"] < 210.0
            assert first["stroke_count"] == first["good_count"] + first["reject_count"] > 0
            for _ in range(30):
                srv.step(10.0)
            second = await reader.read()
            assert second["good_count"] > first["good_count"]
            assert second["stroke_count"] > first["stroke_count"]
            assert second["energy"] > first["energy"]
            assert second["good_count"] == press.good  # CDAB uint32 decoded right

            # setpoint write-back through the connector
            await reader.connector.write(press.register_map()["pressure_setpoint"], 150.0)
            assert press.setpoint_bar == pytest.approx(150.0)
            srv.step(60.0)
            third = await reader.read()
            assert 140.0 < third["pressure"] < 160.0
            assert third["pressure_setpoint"] == pytest.approx(150.0)
            with pytest.raises(ConnectorError, match="illegal data address"):
                await reader.connector.write(press.register_map()["good_count"], 0)
            with pytest.raises(ConnectorError, match="read-only"):
                await reader.connector.write(meter.register_map()["energy"], 0)


async def test_coupled_to_a_station_state() -> None:
    state = ["running"]
    meter = PowerMeter(1, rated_kw=10.0, seed=2, state_source=lambda: state[0])
    press = PressPlc(2, seed=2, state_source=lambda: state[0])
    for k in range(60):
        meter.step(SUNDAY_10H + 10 * k, 10)  # a Sunday: the state source wins
        press.step(SUNDAY_10H + 10 * k, 10)
    assert 8.0 < meter.power_kw <= 10.5
    assert press.get("state") == PressPlc.STATE_CODES["running"]
    assert press.strokes > 0
    state[0] = "unplanned_stop"
    strokes = press.strokes
    for k in range(60):
        meter.step(SUNDAY_10H + 600 + 10 * k, 10)
        press.step(SUNDAY_10H + 600 + 10 * k, 10)
    assert meter.power_kw < 2.5
    assert press.strokes == strokes
    assert press.get("fault") is True
    assert press.get("running") is False
    assert press.get("state") == PressPlc.STATE_CODES["unplanned_stop"]


async def test_server_steps_along_the_clock() -> None:
    press = PressPlc(5, ideal_cycle_time_s=1.0, mtbf_min=1e9)
    async with (
        ModbusDeviceServer(
            [press], port=0, step_s=0.02, speed=50.0, start_time_s=MONDAY_10H
        ) as srv,
        reading(srv.endpoint, {"good_count": press.register_map()["good_count"]}) as r,
    ):
        first = (await r.read())["good_count"]
        async with asyncio.timeout(10):
            while (await r.read())["good_count"] <= first:
                pass


async def test_server_errors() -> None:
    with pytest.raises(SimulatorError, match="unique"):
        ModbusDeviceServer([PowerMeter(1), PressPlc(1)])
    with pytest.raises(SimulatorError, match="1…247"):
        PowerMeter(0)
    async with ModbusDeviceServer([PowerMeter(1)], port=0, step_s=0) as srv:
        with pytest.raises(SimulatorError, match=f"127.0.0.1:{srv.port}"):
            async with ModbusDeviceServer([PowerMeter(1)], port=srv.port, step_s=0):
                pass

"""``shopfloor sim`` and ``simulate_devices``: Modbus devices a ModbusConnector can read."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from shopfloor.cli import _sim
from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.modbus import ModbusConnector
from shopfloor.edge.batch import Quality
from shopfloor.model import Factory, load_factory, parse_factory
from shopfloor.sim._devices import simulate_devices

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from _modbus_testserver import Running, value_of

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-munich.yaml"

SMALL = """
types:
  - id: power-meter
    signals:
      - {name: active_power, data_type: float, unit: KWT}
      - {name: frequency, data_type: float, unit: HTZ}
  - id: legacy-press
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, kind: counter}
      - {name: hydraulic_pressure, data_type: float, unit: BAR}
    states: {0: offline, 2: idle, 3: running, 4: starved, 5: blocked, 6: planned_stop,
             7: setup, 9: unplanned_stop}
connections:
  - {name: mb, protocol: modbus, endpoint: "modbus://127.0.0.1:5020"}
enterprise:
  id: acme
  sites:
  - id: munich
    areas:
    - id: body-shop
      lines:
      - id: line-1
        equipment:
        - id: meter-1
          type: power-meter
          connection: mb
          bindings:
            active_power: "unit=1;ir=12;type=float32"
            frequency: "unit=1;ir=18;type=float32"
        - id: press-1
          type: legacy-press
          connection: mb
          bindings:
            state: "unit=3;hr=0;type=uint16"
            good_count: "unit=3;hr=2;type=uint32;order=CDAB"
            hydraulic_pressure: "unit=3;hr=1;type=int16;scale=0.1"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _points(factory: Factory, connection: str) -> list[PointSpec]:
    return [
        PointSpec(addr, sig.data_type)
        for (conn, addr), sig in factory.bindings().items()
        if conn == connection
    ]


def _app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """Test root."""

    _sim.register(root)
    return root


async def _read_all(endpoint: str, points: list[PointSpec]) -> dict[str, Any]:
    """Poll until every point has a GOOD value (the server may still be starting)."""
    c = ModbusConnector(
        "probe", endpoint, points, {"poll_ms": 100, "timeout_s": 1, "reconnect_initial_s": 0.1}
    )
    async with Running(c) as sink:
        await sink.wait(
            lambda: (
                len(sink.latest()) == len(points)
                and all(r["quality"] == Quality.GOOD for r in sink.latest().values())
            ),
            within=15,
        )
        return {a: value_of(r) for a, r in sink.latest().items()}


@pytest.mark.timeout(60)
async def test_sim_serves_modbus_devices_a_connector_reads(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL, encoding="utf-8")
    port = _free_port()
    args = ["sim", str(path), "--duration", "20", "--no-live", "--modbus-port", str(port)]
    run = asyncio.create_task(asyncio.to_thread(CliRunner().invoke, _app(), args))
    try:
        values = await _read_all(f"modbus://127.0.0.1:{port}", _points(parse_factory(SMALL), "mb"))
    finally:
        result = await run
    assert result.exit_code == 0, result.output
    assert "unit 1 PowerMeter" in result.output
    assert "unit 3 LegacyPressPlc" in result.output
    assert values["unit=1;ir=18;type=float32"] == pytest.approx(50.0, abs=0.5)
    assert values["unit=3;hr=0;type=uint16"] in (0, 2, 3, 4, 5, 6, 7, 9)
    assert values["unit=3;hr=2;type=uint32;order=CDAB"] >= 0


@pytest.mark.timeout(30)
async def test_simulate_devices_serves_the_example_modbus_connection() -> None:
    factory = load_factory(EXAMPLE)
    port = _free_port()
    override = {"plant-modbus": f"modbus://127.0.0.1:{port}"}
    async with simulate_devices(factory, endpoint_override=override, seed=1) as devices:
        assert devices.endpoints["plant-modbus"] == override["plant-modbus"]
        server = devices.modbus["plant-modbus"]
        assert sorted(d.unit_id for d in server.devices) == [1, 2, 3]
        assert not [k for k in devices.skipped if k != "agv-fleet"], devices.skipped
        # the AGV fleet either runs (a broker on 1883) or says why not
        assert (
            "agv-fleet" in devices.running or "AGVs not simulated" in devices.skipped["agv-fleet"]
        )
        points = _points(factory, "plant-modbus")
        assert len(points) == 2 * 10 + 6
        values = await _read_all(server.endpoint, points)
    assert 200 < values["unit=1;ir=0;type=float32"] < 260  # volts L1
    assert values["unit=3;hr=8;type=int16;scale=0.1"] == pytest.approx(180.0)  # setpoint


async def test_an_unreachable_broker_is_reported_not_raised() -> None:
    factory = load_factory(EXAMPLE)
    text = EXAMPLE.read_text().replace("mqtt://127.0.0.1:1883", f"mqtt://127.0.0.1:{_free_port()}")
    factory = parse_factory(text)
    override = {"plant-modbus": f"modbus://127.0.0.1:{_free_port()}"}
    async with simulate_devices(factory, endpoint_override=override, agvs=True) as devices:
        assert "agv-fleet" not in devices.running
        assert devices.skipped["agv-fleet"].startswith("AGVs not simulated: MQTT broker")

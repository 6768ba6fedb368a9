"""The public surface of shopfloor.sim, and the reference factory end to end."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import shopfloor.sim
from shopfloor.sim import STATES, FactorySimulation

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-munich.yaml"


def test_public_names() -> None:
    assert sorted(shopfloor.sim.__all__) == sorted(
        [
            "FAULT_KINDS",
            "STATES",
            "TYPE_DEFAULTS",
            "AgvFleetSimulator",
            "HallGraph",
            "SimVehicle",
            "hall_graph",
            "ModbusDevice",
            "ModbusDeviceServer",
            "PowerMeter",
            "PressPlc",
            "LegacyPressPlc",
            "SimulatedDevices",
            "simulate_devices",
            "Break",
            "Downtime",
            "FactorySimulation",
            "Shift",
            "ShiftCalendar",
            "SignalFault",
            "SignalSpec",
            "SimulatorError",
            "StationSpec",
            "Simulator",
            "SparkplugEdgeSimulator",
            "sparkplug_simulator",
        ]
    )
    for name in shopfloor.sim.__all__:
        obj = getattr(shopfloor.sim, name)
        if isinstance(obj, type):
            assert obj.__doc__, name


@pytest.mark.skipif(not EXAMPLE.exists(), reason="the reference factory file is not there")
def test_reference_factory_for_a_day() -> None:
    from shopfloor.model import load_factory

    factory = load_factory(EXAMPLE)
    start = datetime(2025, 1, 6, 4, 0, tzinfo=UTC)  # Monday 05:00 in Munich
    sim = FactorySimulation.from_factory(factory, seed=42, start=start, tick_s=2.0)
    assert len(sim.stations) >= 15
    raw_of = {p: {str(k): v for k, v in factory.state_map(p).items()} for p in sim.states()}
    seen: set[str] = set()
    for _ in range(24 * 6):
        sim.advance(600)
        values = sim.values()
        for signal in sim.signals:
            if signal.kind == "state":
                raw = values[signal.path]
                # the raw code written maps back onto a standard state via the file's map
                assert raw_of[signal.station][str(raw)] in STATES
        seen |= set(sim.states().values())
    assert {"running", "planned_stop", "offline", "setup"} <= seen
    assert all(v >= 0 for v in sim.counters().values())
    assert any(v > 0 for v in sim.counters().values())

"""The simulator over OPC UA: a real asyncua client against the served factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, ua

from shopfloor.model import load_factory
from shopfloor.sim import Simulator

START = datetime(2025, 1, 6, 7, 0, tzinfo=UTC)  # Monday 08:00 in Munich
PRESS = "acme/munich/body-shop/line-1/cell-1/press-2"


def node(path: str) -> str:
    return f"ns=2;s={path}"


@pytest.fixture
async def sim(factory_file: Path, free_port: int) -> AsyncIterator[Simulator]:
    factory = load_factory(factory_file)
    endpoint = f"opc.tcp://127.0.0.1:{free_port}"
    async with Simulator(
        factory,
        seed=42,
        start=START,
        paused=True,
        endpoint_override={"line-1-opc": endpoint},
    ) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[Client]:
    async with Client(sim.endpoints["line-1-opc"], timeout=5) as c:
        yield c


async def test_serves_opcua_connections_only(sim: Simulator) -> None:
    assert set(sim.endpoints) == {"line-1-opc"}
    assert "fleet" in sim.layout.skipped
    assert len(sim.layout.stations) == 3  # the AGV is not a station


async def test_counters_match_the_simulator(sim: Simulator, client: Client) -> None:
    await sim.run_for(3600)
    counters = sim.counters()
    assert counters[f"{PRESS}/good_count"] > 100
    for path, value in counters.items():
        dv = await client.get_node(node(path)).read_data_value()
        assert dv.Value.VariantType == ua.VariantType.Int32
        assert dv.Value.Value == value
        # source timestamps are simulated time, not the wall clock
        assert dv.SourceTimestamp.replace(tzinfo=UTC) == sim.now
    assert sim.now == START + timedelta(hours=1)
    state = await client.get_node(node(f"{PRESS}/state")).read_value()
    assert state == {"running": 2, "blocked": 4, "starved": 3, "idle": 1, "setup": 7}.get(
        sim.state_of(PRESS), state
    )
    energy = await client.get_node(node(f"{PRESS}/energy")).read_value()
    assert energy == pytest.approx(sim.values()[f"{PRESS}/energy"] * 1000)  # scale 0.001: Wh


async def test_types_and_properties(client: Client) -> None:
    temperature = client.get_node(node(f"{PRESS}/temperature"))
    assert await temperature.read_data_type_as_variant_type() == ua.VariantType.Double
    eu_range = await temperature.get_child("0:EURange")
    rng = await eu_range.read_value()
    assert (rng.Low, rng.High) == (10.0, 70.0)
    units = await (await temperature.get_child("0:EngineeringUnits")).read_value()
    assert units.UnitId == (ord("C") << 16) | (ord("E") << 8) | ord("L")
    assert units.DisplayName.Text == "°C"
    good = client.get_node(node(f"{PRESS}/good_count"))
    assert await good.get_children_descriptions() is not None
    level = await good.read_attribute(ua.AttributeIds.UserAccessLevel)
    assert not level.Value.Value & ua.AccessLevel.CurrentWrite.mask


async def test_inject_fault_method(sim: Simulator, client: Client) -> None:
    await sim.run_for(60)
    obj = client.get_node(node(PRESS))
    await obj.call_method("2:InjectFault", ua.Variant(600.0, ua.VariantType.Double))
    await sim.run_for(1)
    assert sim.state_of(PRESS) == "unplanned_stop"
    assert await client.get_node(node(f"{PRESS}/state")).read_value() == 6
    # the next station runs dry, the one before fills its buffer
    await sim.step_until(
        lambda s: s.state_of(PRESS.replace("press-2", "press-3")) == "starved", timeout_s=120
    )
    await sim.step_until(
        lambda s: s.state_of(PRESS.replace("press-2", "press-1")) == "blocked", timeout_s=120
    )
    with pytest.raises(ua.UaStatusCodeError):
        await obj.call_method("2:InjectFault", ua.Variant(-1.0, ua.VariantType.Double))


async def test_setpoint_is_writable_and_drives_the_machine(sim: Simulator, client: Client) -> None:
    setpoint = client.get_node(node(f"{PRESS}/force_setpoint"))
    await setpoint.write_value(ua.Variant(2.0e6, ua.VariantType.Double))
    await sim.run_for(120)
    assert sim.values()[f"{PRESS}/force_setpoint"] == 2.0e6
    assert await setpoint.read_value() == 2.0e6
    await sim.step_until(lambda s: s.state_of(PRESS) == "running", timeout_s=600)
    await sim.run_for(10)
    if sim.state_of(PRESS) == "running":
        force = await client.get_node(node(f"{PRESS}/press_force")).read_value()
        assert force == pytest.approx(2.0e6, rel=0.05)
    # the engine's own setpoint changes reach the server too
    sim.set_setpoint(f"{PRESS}/force_setpoint", 3.0e6)
    await sim.publish()
    assert await setpoint.read_value() == 3.0e6
    # measurements are read-only
    with pytest.raises(ua.UaStatusCodeError):
        await client.get_node(node(f"{PRESS}/temperature")).write_value(1.0)


async def test_paced_by_the_wall_clock(sim: Simulator, client: Client) -> None:
    assert sim.paused
    before = sim.now
    sim.speed = 600.0
    sim.resume()
    node_ = client.get_node(node(f"{PRESS}/good_count"))
    # wait (bounded) until the pacer has published at least a simulated minute
    for _ in range(200):
        dv = await node_.read_data_value()
        if dv.SourceTimestamp.replace(tzinfo=UTC) >= before + timedelta(seconds=60):
            break
        await asyncio.sleep(0.02)  # polling, bounded: 200 × 20 ms
    else:
        pytest.fail("the pacer did not advance")
    sim.pause()
    assert sim.now > before


async def test_port_taken_is_reported(factory_file: Path, sim: Simulator) -> None:
    from shopfloor.sim import SimulatorError

    with pytest.raises(SimulatorError, match="cannot listen"):
        async with Simulator(
            load_factory(factory_file), endpoint_override=dict(sim.endpoints), paused=True
        ):
            pass

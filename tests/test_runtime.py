"""End to end: the simulated factory over OPC UA → ``Runtime`` → DuckDB historian."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from shopfloor.historian import Historian, open_historian
from shopfloor.model import Factory, load_factory, parse_factory
from shopfloor.runtime import Runtime
from shopfloor.sim import Simulator, simulate_devices

EXAMPLE = Path(__file__).parent.parent / "examples" / "acme-munich.yaml"


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


_SCHEMES = {"opcua": "opc.tcp", "modbus": "modbus"}


def _opcua_endpoints(factory: Factory, protocols: tuple[str, ...] = ("opcua",)) -> dict[str, str]:
    """Free loopback ports for the connections of ``protocols`` (tests must not collide)."""
    names = [n for n, c in factory.connections.items() if c.protocol in protocols]
    return {
        n: f"{_SCHEMES[factory.connections[n].protocol]}://127.0.0.1:{p}"
        for n, p in zip(names, _free_ports(len(names)), strict=True)
    }


async def _latest(h: Historian, paths: list[str]) -> dict[str, object]:
    table = await h.latest(paths)
    out: dict[str, object] = {}
    for row in table.to_pylist():
        out[row["path"]] = next(
            (row[c] for c in ("v_float", "v_int", "v_bool", "v_str") if row[c] is not None), None
        )
    return out


async def _wait_for(cond: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(0.2)
    return False


@pytest.mark.timeout(120)
async def test_every_bound_signal_lands_and_counters_match_the_simulator(tmp_path: Path) -> None:
    factory = load_factory(EXAMPLE)
    endpoints = _opcua_endpoints(factory, ("opcua", "modbus"))
    opcua_signals = [
        s.path
        for s in factory.signals()
        if s.binding is not None and s.binding.connection in endpoints
    ]
    assert len(opcua_signals) > 100
    assert any(factory.connections[n].protocol == "modbus" for n in endpoints)
    # AGVs are covered by test_runtime_agv.py: keep this run off any broker.
    no_broker = {
        n: "mqtt://127.0.0.1:1" for n, c in factory.connections.items() if c.protocol == "vda5050"
    }
    async with (
        Simulator(factory, speed=60, seed=7, endpoint_override=endpoints) as sim,
        simulate_devices(
            factory, speed=60, endpoint_override=endpoints, agvs=False, simulator=sim
        ) as devices,
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h,
        Runtime(factory, h, endpoint_override=endpoints | no_broker) as rt,
    ):
        assert devices.modbus, "the Modbus devices are served"
        started = time.monotonic()

        async def all_have_values() -> bool:
            return len(await _latest(h, opcua_signals)) == len(opcua_signals)

        assert await _wait_for(all_have_values, 10.0), "not every bound signal has a value"
        assert time.monotonic() - started < 10.0
        assert all(c.status.state == "connected" for c in rt.connectors if c.name in endpoints)

        # Let ten simulated minutes pass at ×60, then freeze the simulation.
        sim_start = sim.now
        await asyncio.sleep(600 / 60 + 0.5)
        sim.pause()
        assert (sim.now - sim_start).total_seconds() >= 600
        await sim.publish()
        expected = sim.counters()
        assert expected, "the simulator has counters"
        assert any(v > 0 for v in expected.values()), "ten minutes produced parts"

        async def counters_equal() -> bool:
            got = await _latest(h, list(expected))
            return got == expected

        assert await _wait_for(counters_equal, 10.0), (
            f"historian {await _latest(h, list(expected))} != simulator {expected}"
        )
        assert rt.pipeline is not None
        assert rt.pipeline.stats.dead_letters == 0
    # Nothing accepted is lost on shutdown.
    assert rt.pipeline.stats.values_in == rt.pipeline.stats.values_stored


async def test_unavailable_protocols_are_skipped_and_absent_servers_reported(
    tmp_path: Path,
) -> None:
    text = EXAMPLE.read_text()
    text = text.replace(
        "connections:\n",
        "connections:\n  - {name: edge-gw, protocol: sparkplug, endpoint: mqtt://127.0.0.1:1}\n",
        1,
    )
    factory = parse_factory(text, "acme-with-gateway.yaml")
    endpoints = _opcua_endpoints(factory)  # free ports: nothing listens there
    async with (
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h,
        Runtime(factory, h, endpoint_override=endpoints) as rt,
    ):
        # A connection nothing is bound to is not started, and the reason is kept.
        assert rt.skipped["edge-gw"] == "no signal is bound to it"
        opcua = [c for c in rt.connectors if c.protocol == "opcua"]
        assert len(opcua) == len(endpoints)

        # Connectors to servers that are not there say so, naming their connection.
        async def all_down() -> bool:
            return all(c.status.last_error for c in opcua)

        assert await _wait_for(all_down, 10.0)
        for c in opcua:
            assert c.status.state in ("disconnected", "failed")
            assert c.name in (c.status.last_error or "")

"""End to end: a simulated AGV fleet over VDA 5050 (real Mosquitto) → ``Runtime`` → DuckDB.

The factory is ``examples/acme-munich.yaml`` with the ``agv-fleet`` connection on a unique
interface name (so parallel runs and other tests on the same broker do not mix); its OPC UA
connections point at free ports where nothing listens (they just retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from shopfloor.historian import Historian, open_historian
from shopfloor.model import Factory, parse_factory
from shopfloor.runtime import Runtime
from shopfloor.sim._agv import AgvFleetSimulator

EXAMPLE = Path(__file__).parent.parent / "examples" / "acme-munich.yaml"
HOST, PORT = "127.0.0.1", 1883
CONNECTION = "agv-fleet"
SERIALS = [f"AGV-{i:03d}" for i in range(1, 6)]
ASSET_PREFIX = "acme/munich/assembly/intralogistics"

pytestmark = pytest.mark.timeout(60)


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


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


def _opcua_endpoints(factory: Factory) -> dict[str, str]:
    names = [n for n, c in factory.connections.items() if c.protocol == "opcua"]
    return {
        n: f"opc.tcp://127.0.0.1:{p}" for n, p in zip(names, _free_ports(len(names)), strict=True)
    }


async def _wait_for(cond: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        if await cond():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.1)


def _value(row: dict[str, Any]) -> Any:
    return next(
        (row[c] for c in ("v_float", "v_int", "v_bool", "v_str") if row[c] is not None), None
    )


@dataclass
class Platform:
    interface: str
    factory: Factory
    sim: AgvFleetSimulator
    historian: Historian
    runtime: Runtime
    signals: dict[str, dict[str, str]]  # serial → signal name → path
    assets: dict[str, str]  # serial → asset path
    state_timestamps: dict[str, set[datetime]]  # serial → header timestamps of its states
    started: datetime

    async def latest(self, paths: list[str]) -> dict[str, tuple[datetime, Any]]:
        table = await self.historian.latest(paths)
        return {r["path"]: (r["ts"], _value(r)) for r in table.to_pylist()}

    async def value(self, serial: str, name: str) -> Any:
        path = self.signals[serial][name]
        got = await self.latest([path])
        return got[path][1] if path in got else None

    async def history(self, serial: str, name: str) -> list[Any]:
        table = await self.historian.read_raw(
            self.signals[serial][name],
            self.started - timedelta(minutes=1),
            datetime.now(UTC) + timedelta(hours=1),
        )
        return table.column("value").to_pylist()

    async def agv_events(self, serial: str) -> list[dict[str, Any]]:
        table = await self.historian.read_events(
            self.started - timedelta(minutes=1),
            datetime.now(UTC) + timedelta(hours=1),
            asset_prefix=self.assets[serial],
            kinds=["agv_error"],
        )
        return table.to_pylist()


async def _collect_state_timestamps(interface: str, out: dict[str, set[datetime]]) -> None:
    """Header timestamps of every state message on the broker (what the vehicles sent)."""
    async with aiomqtt.Client(HOST, PORT, timeout=5.0) as client:
        await client.subscribe(f"{interface}/v2/Acme/+/state")
        async for message in client.messages:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                msg = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                ts = datetime.fromisoformat(msg["timestamp"].replace("Z", "+00:00"))
                out[msg["serialNumber"]].add(ts)


@pytest.fixture(name="p")
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    if not _broker_up():
        pytest.skip(f"no MQTT broker at {HOST}:{PORT}")
    interface = f"uagv-test-{uuid.uuid4().hex[:8]}"
    text = EXAMPLE.read_text()
    assert text.count("interface_name: uagv,") == 1
    text = text.replace("interface_name: uagv,", f"interface_name: {interface},")
    factory = parse_factory(text, "acme-munich-agv-test.yaml")
    assert factory.connections[CONNECTION].options["interface_name"] == interface
    signals: dict[str, dict[str, str]] = defaultdict(dict)
    assets: dict[str, str] = {}
    for (conn, addr), sig in factory.bindings().items():
        if conn == CONNECTION:
            serial = addr.split("/", 1)[0]
            signals[serial][sig.path.rsplit("/", 1)[1]] = sig.path
            assets[serial] = sig.asset_path
    assert sorted(signals) == SERIALS
    assert assets == {s: f"{ASSET_PREFIX}/{s.lower()}" for s in SERIALS}

    stamps: dict[str, set[datetime]] = defaultdict(set)
    collector = asyncio.create_task(_collect_state_timestamps(interface, stamps))
    try:
        async with (
            open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as historian,
            Runtime(factory, historian, endpoint_override=_opcua_endpoints(factory)) as rt,
            AgvFleetSimulator(
                n_vehicles=5,
                host=HOST,
                port=PORT,
                interface_name=interface,
                manufacturer="Acme",
                seed=11,
                speed=10.0,
                state_hz=5.0,
                obstacle_rate=0.0,  # no random warnings or breakdowns: the test injects them
                mtbf_s=0.0,
            ) as sim,
        ):
            yield Platform(
                interface,
                factory,
                sim,
                historian,
                rt,
                dict(signals),
                assets,
                stamps,
                datetime.now(UTC),
            )
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await collector


async def test_every_bound_agv_signal_lands_with_the_header_timestamps(p: Platform) -> None:
    paths = [path for names in p.signals.values() for path in names.values()]
    assert len(paths) == 50

    async def all_have_values() -> bool:
        return len(await p.latest(paths)) == len(paths)

    await _wait_for(all_have_values, 15.0, "a value for every AGV signal")
    got = await p.latest(paths)
    for serial in SERIALS:
        names = p.signals[serial]
        assert got[names["connection_state"]][1] == "ONLINE"
        assert got[names["operating_mode"]][1] == "AUTOMATIC"
        assert got[names["state"]][1] in ("running", "idle")
        assert 0.0 <= got[names["battery_charge"]][1] <= 100.0

    # Sample timestamps are the vehicles' header timestamps, not arrival times.
    async def stamps_match() -> bool:
        now = await p.latest(paths)
        return all(now[p.signals[s]["battery_charge"]][0] in p.state_timestamps[s] for s in SERIALS)

    await _wait_for(stamps_match, 5.0, "battery samples stamped with state header timestamps")
    assert (await p.historian.read_dead_letters()).num_rows == 0
    assert all(c.status.state == "connected" for c in p.runtime.connectors if c.name == CONNECTION)


async def test_an_injected_fatal_error_is_an_event_of_the_asset(p: Platform) -> None:
    serial = "AGV-002"
    vehicle = p.sim.vehicles[serial]

    async def seen() -> bool:
        return await p.value(serial, "state") in ("running", "idle")

    await _wait_for(seen, 15.0, f"{serial} online")
    vehicle.inject_error("driveFault", "FATAL", "drive controller fault (test)")

    async def error_open() -> bool:
        events = await p.agv_events(serial)
        return any(e["code"] == "driveFault" and e["end_ts"] is None for e in events)

    await _wait_for(error_open, 10.0, "an open agv_error event")
    (event,) = [e for e in await p.agv_events(serial) if e["code"] == "driveFault"]
    assert event["asset"] == f"{ASSET_PREFIX}/agv-002"
    assert event["kind"] == "agv_error"
    assert event["severity"] == 4
    assert event["message"] == "drive controller fault (test)"
    assert json.loads(event["data"])["errorLevel"] == "FATAL"

    async def stopped() -> bool:
        return await p.value(serial, "state") == "unplanned_stop"

    await _wait_for(stopped, 10.0, "state unplanned_stop")
    # No other vehicle has an error event.
    for other in SERIALS:
        if other != serial:
            assert await p.agv_events(other) == []

    vehicle.clear_error("driveFault")

    async def error_closed() -> bool:
        events = [e for e in await p.agv_events(serial) if e["code"] == "driveFault"]
        return len(events) == 1 and events[0]["end_ts"] is not None

    await _wait_for(error_closed, 10.0, "the event's end_ts")
    (closed,) = [e for e in await p.agv_events(serial) if e["code"] == "driveFault"]
    assert closed["event_id"] == event["event_id"]
    assert closed["end_ts"] > closed["ts"] == event["ts"]

    async def back() -> bool:
        return await p.value(serial, "state") in ("running", "idle")

    await _wait_for(back, 10.0, "state back to running/idle")


async def _kill_and_wait_for_broken(p: Platform, serial: str) -> None:
    async def online() -> bool:
        return await p.value(serial, "connection_state") == "ONLINE"

    await _wait_for(online, 15.0, f"{serial} ONLINE")
    await p.sim.kill(serial)

    async def broken_stored() -> bool:
        values = await p.history(serial, "connection_state")
        states = await p.history(serial, "state")
        return "CONNECTIONBROKEN" in values and "offline" in states

    await _wait_for(broken_stored, 15.0, f"{serial} CONNECTIONBROKEN and offline samples")


async def test_a_killed_vehicle_goes_offline(p: Platform) -> None:
    serial = "AGV-003"
    await _kill_and_wait_for_broken(p, serial)
    # The others stay online.
    for other in SERIALS:
        if other != serial:
            assert await p.value(other, "connection_state") == "ONLINE"
            assert await p.value(other, "state") != "offline"


async def test_a_killed_vehicle_reads_offline_as_latest(p: Platform) -> None:
    serial = "AGV-003"
    await _kill_and_wait_for_broken(p, serial)
    assert await p.value(serial, "connection_state") == "CONNECTIONBROKEN"
    assert await p.value(serial, "state") == "offline"


async def test_an_invalid_state_is_dead_lettered_and_the_fleet_keeps_flowing(
    p: Platform,
) -> None:
    batteries = [p.signals[s]["battery_charge"] for s in SERIALS]

    async def all_seen() -> bool:
        return len(await p.latest(batteries)) == len(batteries)

    await _wait_for(all_seen, 15.0, "every vehicle's battery")
    bad = {
        "headerId": 0,
        "timestamp": "2030-01-01T00:00:00.000Z",
        "version": "2.0.0",
        "manufacturer": "Acme",
        "serialNumber": "AGV-004",
        "orderId": "",
        "orderUpdateId": 0,
        "lastNodeId": "",
        "lastNodeSequenceId": 0,
        "nodeStates": [],
        "edgeStates": [],
        "driving": False,
        "actionStates": [],
        "batteryState": {"batteryCharge": "full", "charging": False},
        "operatingMode": "AUTOMATIC",
        "errors": [],
        "safetyState": {"eStop": "NONE", "fieldViolation": False},
    }
    topic = f"{p.interface}/v2/Acme/AGV-004/state"
    sent_at = datetime.now(UTC)
    async with aiomqtt.Client(HOST, PORT, timeout=5.0) as client:
        await client.publish(topic, json.dumps(bad).encode(), qos=1)

    async def lettered() -> bool:
        return (await p.historian.read_dead_letters()).num_rows >= 1

    await _wait_for(lettered, 10.0, "a dead letter in the historian")
    (letter,) = (await p.historian.read_dead_letters()).to_pylist()
    assert letter["source"] == CONNECTION
    assert letter["location"] == topic
    assert "batteryState.batteryCharge" in letter["reason"]
    assert json.loads(letter["payload"]) == bad

    # Nothing of the bad message was stored (its timestamp is in 2030) …
    got = await p.latest(batteries)
    assert all(ts.year < 2030 for ts, _ in got.values())

    # … and every vehicle, AGV-004 included, keeps delivering newer values.
    async def flowing() -> bool:
        now = await p.latest(batteries)
        return all(now[b][0] > sent_at for b in batteries)

    await _wait_for(flowing, 10.0, "fresh battery values of every vehicle")


async def test_a_vehicle_the_file_does_not_name_is_created_under_auto_area(
    tmp_path: Path,
) -> None:
    if not _broker_up():
        pytest.skip(f"no MQTT broker at {HOST}:{PORT}")
    interface = f"uagv-test-{uuid.uuid4().hex[:8]}"
    text = EXAMPLE.read_text().replace("interface_name: uagv,", f"interface_name: {interface},")
    factory = parse_factory(text, "acme-munich-agv-test.yaml")
    assert factory.connections[CONNECTION].options["auto_area"] == ASSET_PREFIX
    new = f"{ASSET_PREFIX}/agv-006"
    wanted = [f"{new}/battery_charge", f"{new}/state", f"{new}/position_x"]
    fleet = [f"{ASSET_PREFIX}/{CONNECTION}/vehicles_available"]
    async with (
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as historian,
        Runtime(factory, historian, endpoint_override=_opcua_endpoints(factory)) as rt,
        AgvFleetSimulator(
            n_vehicles=6,
            host=HOST,
            port=PORT,
            interface_name=interface,
            manufacturer="Acme",
            seed=5,
            speed=10.0,
            state_hz=5.0,
            obstacle_rate=0.0,
            mtbf_s=0.0,
        ) as sim,
    ):
        assert "AGV-006" in sim.vehicles

        async def created() -> bool:
            catalog = set((await historian.signals()).column("path").to_pylist())
            return set(wanted) <= catalog

        await _wait_for(created, 15.0, "signals of the unknown vehicle")
        got = {r["path"]: _value(r) for r in (await historian.latest(wanted)).to_pylist()}
        assert 0.0 <= got[f"{new}/battery_charge"] <= 100.0
        assert got[f"{new}/state"] in ("running", "idle", "planned_stop")
        assert f"{new}/battery_charge" in rt.discovered
        # Known vehicles keep their own equipment; their unbound fields join it.
        assert not any(p.startswith(f"{ASSET_PREFIX}/agv-006-") for p in rt.discovered)
        assert f"{ASSET_PREFIX}/agv-001/paused" in rt.discovered

        async def fleet_kpis() -> bool:
            catalog = set((await historian.signals()).column("path").to_pylist())
            return set(fleet) <= catalog and (await historian.latest(fleet)).num_rows == 1

        await _wait_for(fleet_kpis, 20.0, "the fleet KPIs")
        available = _value((await historian.latest(fleet)).to_pylist()[0])
        assert 0 <= available <= 6
        assert (await historian.read_dead_letters()).num_rows == 0

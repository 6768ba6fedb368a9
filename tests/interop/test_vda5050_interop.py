"""VDA 5050 interoperability with an independent implementation: coatyio's ``vda-5050-lib``.

``tests/interop/vda5050/vehicle.js`` is a vehicle built on the library's ``AgvClient``;
``master.js`` a master control built on its ``MasterController`` (which validates every
message it receives against the VDA 5050 JSON schemas). The tests run them as
subprocesses against the real Mosquitto on 127.0.0.1:1883:

* our :class:`VdaConnector` reads the Node vehicle (zero dead letters, the values it
  published) and pauses it with an instant action;
* their master control pauses, resumes and drives a vehicle of our
  :class:`AgvFleetSimulator`.

CI installs the Node dependencies first: ``npm ci --prefix tests/interop/vda5050``. Without
``node``/``npm`` (or when the install fails) the tests are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pyarrow as pa
import pytest

from shopfloor.connectors.base import PointSpec
from shopfloor.connectors.vda5050 import VdaConnector
from shopfloor.edge.batch import RawBatch
from shopfloor.sim._agv import AgvFleetSimulator

HERE = Path(__file__).parent / "vda5050"
HOST, PORT = "127.0.0.1", 1883
BROKER = f"mqtt://{HOST}:{PORT}"

pytestmark = pytest.mark.timeout(60)


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def node_project() -> Path:
    """``tests/interop/vda5050`` with its dependencies installed (``npm ci`` if needed)."""
    if not _broker_up():
        pytest.skip(f"no MQTT broker at {HOST}:{PORT}")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed (CI: npm ci --prefix tests/interop/vda5050)")
    if not (HERE / "node_modules" / "vda-5050-lib").is_dir():
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci in tests/interop/vda5050 timed out")
        if done.returncode != 0:
            pytest.skip(f"npm ci in tests/interop/vda5050 failed: {done.stderr.strip()[-500:]}")
    return HERE


class NodeProcess:
    """A Node script whose stdout is JSON lines, collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self.changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.append(json.loads(raw))
                self.changed.set()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]

    async def until(self, cond: Callable[[], Any], within: float, what: str) -> Any:
        try:
            async with asyncio.timeout(within):
                while True:
                    result = cond()
                    if result:
                        return result
                    if self.proc.returncode is not None:
                        break
                    self.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.1):
                            await self.changed.wait()
        except TimeoutError:
            pass
        result = cond()
        if result:
            return result
        pytest.fail(f"waiting for {what}; node printed {self.lines[-5:]}")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                async with asyncio.timeout(5.0):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def _node(project: Path, script: str, *args: str) -> AsyncIterator[NodeProcess]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        script,
        *args,
        cwd=project,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    node = NodeProcess(proc)
    try:
        yield node
    finally:
        await node.stop()


async def _clear_retained(interface: str, manufacturer: str, serial: str) -> None:
    with contextlib.suppress(aiomqtt.MqttError, OSError):
        async with aiomqtt.Client(HOST, PORT, timeout=5.0) as client:
            for topic in ("connection", "factsheet"):
                await client.publish(
                    f"{interface}/v2/{manufacturer}/{serial}/{topic}", b"", qos=1, retain=True
                )


class Collected:
    """What a connector delivered."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.letters: list[dict[str, Any]] = []

    async def sink(self, batch: RawBatch) -> None:
        self.rows.extend(batch.table.to_pylist())

    async def event_sink(self, table: pa.Table) -> None:
        self.events.extend(table.to_pylist())

    async def letter_sink(self, table: pa.Table) -> None:
        self.letters.extend(table.to_pylist())

    def values(self, address: str) -> list[Any]:
        return [
            next((r[c] for c in ("v_float", "v_int", "v_bool", "v_str") if r[c] is not None), None)
            for r in self.rows
            if r["address"] == address
        ]


async def test_our_connector_reads_and_commands_a_vda_5050_lib_vehicle(
    node_project: Path,
) -> None:
    interface = f"interop-{uuid.uuid4().hex[:8]}"
    manufacturer, serial = "CoatyLab", "NODE-001"
    got = Collected()
    connector = VdaConnector(
        "node-fleet",
        BROKER,
        [PointSpec(f"{serial}/batteryState.batteryCharge", "float")],
        {"interface_name": interface, "manufacturer": manufacturer, "auto_discover": True},
        event_sink=got.event_sink,
        dead_letter_sink=got.letter_sink,
    )
    task = asyncio.create_task(connector.run(got.sink))
    try:
        async with _node(node_project, "vehicle.js", BROKER, interface, manufacturer, serial) as v:
            published = await v.until(lambda: v.of("state"), 15.0, "the vehicle's first state")
            sent = published[0]["message"]

            def read(address: str) -> Callable[[], list[Any]]:
                return lambda: got.values(f"{serial}/{address}")

            await v.until(read("batteryState.batteryCharge"), 10.0, "our connector's readings")
            await v.until(read("connectionState"), 10.0, "the connection topic")
            assert got.values(f"{serial}/connectionState")[0] == "ONLINE"
            assert got.values(f"{serial}/batteryState.batteryCharge")[0] == pytest.approx(
                sent["batteryState"]["batteryCharge"]
            )
            assert got.values(f"{serial}/agvPosition.x")[0] == sent["agvPosition"]["x"] == 12.25
            assert got.values(f"{serial}/agvPosition.y")[0] == sent["agvPosition"]["y"] == -3.5
            assert got.values(f"{serial}/agvPosition.theta")[0] == sent["agvPosition"]["theta"]
            assert got.values(f"{serial}/agvPosition.mapId")[0] == "hall-7"
            assert got.values(f"{serial}/driving")[0] is True
            assert got.values(f"{serial}/paused")[0] is False
            assert got.values(f"{serial}/operatingMode")[0] == "AUTOMATIC"
            assert "running" in got.values(f"{serial}/state")  # driving, not paused
            # header timestamps are theirs, to the millisecond
            stamps = {
                r["ts"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
                for r in got.rows
                if r["address"] == f"{serial}/batteryState.batteryCharge"
            }
            assert sent["timestamp"] in stamps

            # Pause it through the platform's write path.
            n_states = len(v.of("state"))
            await connector.write(f"{serial}/pause", True)
            received = await v.until(lambda: v.of("instantActions"), 10.0, "instantActions")
            (action,) = received[0]["message"]["actions"]
            assert action["actionType"] == "startPause"
            assert action["blockingType"] == "HARD"
            assert received[0]["message"]["manufacturer"] == manufacturer
            assert received[0]["message"]["serialNumber"] == serial
            action_id = action["actionId"]

            def paused_state() -> dict[str, Any] | None:
                for line in v.of("state")[n_states:]:
                    msg = line["message"]
                    finished = any(
                        a["actionId"] == action_id and a["actionStatus"] == "FINISHED"
                        for a in msg["actionStates"]
                    )
                    if msg["paused"] and finished:
                        return msg
                return None

            await v.until(paused_state, 10.0, "a paused state with the action FINISHED")
            # vda-5050-lib's 2.0 JSON schema wants the array under "instantActions" (the 1.1
            # key, also in the official 2.0.0 schema), the 2.0 text says "actions", as we send.
            for complaint in v.of("schemaComplaint"):
                assert complaint["message"]["error"].endswith("#/instantActions"), complaint

            await v.until(
                lambda: (
                    got.values(f"{serial}/paused")[-1:] == [True]
                    and connector.vehicle_state(serial) == "idle"
                ),
                10.0,
                "our connector to read paused (state idle)",
            )

            # Every message of the real implementation validated against our models.
            assert got.letters == [], [r["reason"] for r in got.letters]
            assert connector.metrics.dead_letters_total == 0
            assert got.events == []
            assert connector.metrics.gaps_of(serial) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await _clear_retained(interface, manufacturer, serial)


async def test_a_vda_5050_lib_master_control_drives_our_simulated_vehicle(
    node_project: Path,
) -> None:
    interface = f"interop-{uuid.uuid4().hex[:8]}"
    manufacturer = "ShopfloorSim"
    async with AgvFleetSimulator(
        n_vehicles=1,
        host=HOST,
        port=PORT,
        interface_name=interface,
        manufacturer=manufacturer,
        speed=10.0,
        state_hz=5.0,
        auto_orders=False,
        obstacle_rate=0.0,
        mtbf_s=0.0,
    ) as sim:
        vehicle = sim.vehicles["AGV-001"]
        assert vehicle.last_node_id == "A1"
        async with _node(
            node_project, "master.js", BROKER, interface, manufacturer, "AGV-001"
        ) as m:
            await m.until(lambda: m.of("done") or m.of("error"), 30.0, "the master to finish")
            assert not m.of("error"), m.of("error")
            assert not m.of("actionError"), m.of("actionError")
            finished = {
                line["actionType"]: line
                for line in m.of("actionState")
                if line["actionState"]["actionStatus"] == "FINISHED"
            }
            assert finished["startPause"]["paused"] is True
            assert finished["stopPause"]["paused"] is False
            (processed,) = m.of("orderProcessed")
            assert processed["withError"] is None
            assert processed["lastNodeId"] == "A2"
            assert [n["nodeId"] for n in m.of("nodeTraversed")][-1] == "A2"
        assert vehicle.last_node_id == "A2"
        assert not vehicle.paused
        assert vehicle.errors == []

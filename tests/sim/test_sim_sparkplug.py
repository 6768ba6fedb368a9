"""The Sparkplug edge simulator against our host connector, through the real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shopfloor.connectors._sparkplug_payload import DataType, decode_payload
from shopfloor.connectors.sparkplug import SparkplugConnector
from shopfloor.edge.batch import Quality, RawBatch
from shopfloor.sim import SparkplugEdgeSimulator, sparkplug_simulator
from shopfloor.sim._sparkplug import GARBAGE, device_type_of, metric_name

HOST, PORT = "127.0.0.1", 1883


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _broker_up(), reason=f"no MQTT broker (Mosquitto) listening on {HOST}:{PORT}"
)


class Host:
    """Our Sparkplug host connector and everything it delivered."""

    def __init__(self, group: str) -> None:
        self.c = SparkplugConnector(
            "plant",
            f"mqtt://{HOST}:{PORT}",
            [],
            {"host_id": f"host-{uuid.uuid4().hex[:8]}", "groups": [group], "flush_interval_ms": 20},
        )
        self.c.dead_letter_sink = self._letters
        self.rows: list[dict[str, Any]] = []
        self.letters: list[dict[str, Any]] = []

    async def sink(self, batch: RawBatch) -> None:
        self.rows.extend(batch.table.to_pylist())

    async def _letters(self, table: pa.Table) -> None:
        self.letters.extend(table.to_pylist())

    async def until(self, cond: Callable[[], Any], wait_s: float = 10.0) -> None:
        async with asyncio.timeout(wait_s):
            while not cond():  # noqa: ASYNC110 - polling the connector's counters
                await asyncio.sleep(0.05)


@pytest.fixture
def group() -> str:
    return f"simgrp-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def host(group: str) -> AsyncIterator[Host]:
    h = Host(group)
    task = asyncio.create_task(h.c.run(h.sink))
    try:
        await h.until(lambda: h.c.status.state == "connected")
        yield h
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _sim(group: str, **kw: Any) -> SparkplugEdgeSimulator:
    args: dict[str, Any] = {
        "n_nodes": 1,
        "devices_per_node": 30,
        "metrics_per_device": 4,
        "rate_hz": 5.0,
        "seed": 3,
    }
    args.update(kw)
    return SparkplugEdgeSimulator(HOST, PORT, group, **args)


def test_metric_types_mix_and_templates_decode() -> None:
    types = [device_type_of(j) for j in range(5)]
    assert set(types) == {DataType.Double, DataType.Int32, DataType.Boolean, DataType.String}
    assert metric_name(0) == "value_000"
    assert metric_name(3) == "state_003"
    sim = _sim("x", devices_per_node=2, metrics_per_device=12)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any parse error will do
        decode_payload(GARBAGE)
    layout = sim._layout
    msg = decode_payload(layout.template.tobytes() + b"\x18\xff\x01")
    assert msg.seq == 255
    assert [m.alias for m in msg.metrics] == list(range(1, 13))
    assert all(m.name is None for m in msg.metrics)


async def test_births_aliases_and_seq_wrap_reach_the_host(group: str) -> None:
    async with host(group) as h, _sim(group) as sim:
        edge, device = sim.edges[0], sim.devices(0)[-1]
        # 30 devices a tick: seq wraps past 255 within ~9 ticks
        await h.until(lambda: sim.messages_published >= 400)
        await h.until(lambda: h.c.status.values_total >= 2 + 30 * 4 + 400 * 4)
        m = h.c.metrics
        assert m.births_total == 31
        assert m.seq_gaps_total == 0
        assert m.rebirth_requests_total == 0
        assert m.dead_letters_total == 0
        prefix = f"{group}/{edge}/{device}/"
        cols = {"value_000": "v_float", "count_001": "v_int", "flag_002": "v_bool"}
        cols["state_003"] = "v_str"
        for name, col in cols.items():
            rows = [r for r in h.rows if r["address"] == prefix + name]
            assert len(rows) > 5
            assert all(r[col] is not None and r["quality"] == Quality.GOOD for r in rows)
        assert {r["address"] for r in h.rows} >= {f"{group}/{edge}/bdSeq"}
        assert h.c.node_online(group, edge)


async def test_the_host_stores_exactly_the_values_the_edges_sent(group: str) -> None:
    metrics = 12  # every datatype of the mix, more than once
    async with host(group) as h:
        async with _sim(group, n_nodes=2, devices_per_node=4, metrics_per_device=metrics) as sim:
            await h.until(lambda: sim.messages_published >= 2 * 4 * 5)
        # the clean stop's NDEATH comes after the last DDATA on each node's connection
        await h.until(lambda: h.c.metrics.deaths_total == 2)
        ddata = sim.messages_published
        births = 2 * 2 + 8 * metrics  # NBIRTH: bdSeq and Node Control/Rebirth
        stale = 2 * 2 + 8 * metrics  # the NDEATHs: every metric of node and devices
        expected = ddata * metrics + births + stale
        await h.until(lambda: len(h.rows) >= expected)
        latest: dict[str, Any] = {}
        for r in sorted(h.rows, key=lambda r: r["ts"]):
            if r["quality"] == Quality.GOOD:
                value = next(
                    (r[c] for c in ("v_float", "v_int", "v_bool", "v_str") if r[c] is not None),
                    None,
                )
                latest[r["address"]] = value
        for n, edge in enumerate(sim.edges):
            for k, device in enumerate(sim.devices(n)):
                sent = sim._current(sim._nodes[n], k)
                got = [latest[f"{group}/{edge}/{device}/{metric_name(j)}"] for j in range(metrics)]
                assert got == sent, (edge, device)
        assert h.c.metrics.data_messages_total == ddata
        assert h.c.status.values_total == len(h.rows) == expected
        assert h.c.metrics.dead_letters_total == 0


async def test_rebirth_is_answered_after_a_gap_and_on_request(group: str) -> None:
    async with host(group) as h, _sim(group, devices_per_node=5) as sim:
        edge = sim.edges[0]
        await h.until(lambda: h.c.status.values_total > 5 * 4 * 3)
        sim.skip_seq(0)
        await h.until(lambda: sim.rebirths_answered >= 1)
        await h.until(lambda: h.c.metrics.births_total >= 12 and h.c.node_online(group, edge))
        assert h.c.metrics.seq_gaps_total == 1
        await h.c.request_rebirth(group, edge)
        await h.until(lambda: sim.rebirths_answered >= 2 and h.c.metrics.births_total >= 18)
        before = h.c.status.values_total
        await h.until(lambda: h.c.status.values_total > before + 5 * 4 * 2)
        assert h.c.metrics.seq_gaps_total == 1


async def test_die_makes_the_broker_send_the_will_and_the_host_marks_stale(group: str) -> None:
    async with host(group) as h, _sim(group, n_nodes=2, devices_per_node=3) as sim:
        edge = sim.edges[1]
        await h.until(lambda: h.c.status.values_total > 2 * 3 * 4 * 2)
        sim.die(1)
        await h.until(lambda: h.c.metrics.deaths_total == 1)
        stale = {r["address"] for r in h.rows if r["quality"] == Quality.BAD_NOT_CONNECTED}
        expected = {
            f"{group}/{edge}/{d}/{metric_name(j)}" for d in sim.devices(1) for j in range(4)
        }
        await h.until(
            lambda: (
                expected
                <= {r["address"] for r in h.rows if r["quality"] == Quality.BAD_NOT_CONNECTED}
            )
        )
        assert not h.c.node_online(group, edge)
        assert h.c.node_online(group, sim.edges[0])
        assert not any(a.startswith(f"{group}/{sim.edges[0]}/") for a in stale)


async def test_garbage_is_a_dead_letter_and_data_keeps_flowing(group: str) -> None:
    async with host(group) as h, _sim(group, devices_per_node=3) as sim:
        await h.until(lambda: h.c.status.values_total > 3 * 4 * 2)
        await sim.send_garbage(0)
        await h.until(lambda: len(h.letters) >= 1)
        letter = h.letters[0]
        assert "malformed DDATA" in letter["reason"]
        assert letter["payload"] == GARBAGE
        before = h.c.status.values_total
        await h.until(lambda: h.c.status.values_total > before + 3 * 4 * 2)
        assert h.c.metrics.rebirth_requests_total == 0


async def test_runtime_creates_signals_from_the_births(group: str, tmp_path: Path) -> None:
    from shopfloor.historian import open_historian
    from shopfloor.model import parse_factory
    from shopfloor.runtime import Runtime

    factory = parse_factory(
        {
            "enterprise": {"id": "t", "name": "T", "sites": [{"id": "edges", "name": "E"}]},
            "connections": [
                {
                    "name": "spb",
                    "protocol": "sparkplug",
                    "endpoint": f"mqtt://{HOST}:{PORT}",
                    "options": {"auto_area": "t/edges", "groups": [group]},
                }
            ],
        }
    )
    async with (
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as historian,
        Runtime(factory, historian) as rt,
    ):
        await asyncio.sleep(0.5)
        async with _sim(group, devices_per_node=2) as sim:
            assert rt.pipeline is not None
            stats = rt.pipeline.stats
            async with asyncio.timeout(10):
                while stats.values_stored < 2 * 4 * 4:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            dev = sim.devices(0)[0]
            info = rt.discovered[f"t/edges/node000-{dev}/count_001"]
            assert info.data_type == "int"
            assert rt.discovered[f"t/edges/node000-{dev}/state_003"].data_type == "string"
            assert rt.discovered["t/edges/node000/node-control-rebirth"].data_type == "bool"
            assert stats.dead_letters == 0


def test_spec_gives_nodes_of_a_hundred_devices() -> None:
    sim = sparkplug_simulator("3000:50@1")
    assert (sim.n_nodes, sim.devices_per_node, sim.metrics_per_device) == (30, 100, 50)
    assert sim.values_per_s == 150_000
    sim = sparkplug_simulator("250:5", "mqtt://broker:1884", "grp")
    assert (sim.n_nodes, sim.devices_per_node, sim.rate_hz) == (3, 84, 1.0)
    assert (sim.host, sim.port, sim.group_id) == ("broker", 1884, "grp")
    for bad in ("3000", "0:5@1", "10:x@1", "10:5@0", "10:5@-1"):
        with pytest.raises(ValueError, match="N_DEVICES:N_METRICS@RATE"):
            sparkplug_simulator(bad)
    with pytest.raises(ValueError, match="mqtt://host"):
        sparkplug_simulator("10:5@1", "tcp://broker")


def test_cli_runs_the_edges_without_a_factory_file(group: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from typer.testing import CliRunner

    from shopfloor.cli import _register, app

    seen: dict[str, int] = {}

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        kind = message.topic.split("/")[2]
        seen[kind] = seen.get(kind, 0) + 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{group}")
    client.on_message = on_message
    client.connect(HOST, PORT)
    client.subscribe(f"spBv1.0/{group}/#", qos=1)
    client.loop_start()
    try:
        _register()
        args = ["sim", "--sparkplug", "12:3@4", "--sparkplug-group", group, "--duration", "1.5"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "12 devices on 1 edge nodes" in result.output
        time.sleep(0.5)
    finally:
        client.loop_stop()
        client.disconnect()
    assert seen["NBIRTH"] == 1
    assert seen["DBIRTH"] == 12
    assert seen["DDATA"] >= 12 * 3
    assert seen["NDEATH"] == 1  # a clean stop says so
    result = CliRunner().invoke(app, ["sim", "--sparkplug", "12:3@0"])
    assert result.exit_code == 2
    assert "N_DEVICES:N_METRICS@RATE" in result.output

"""The connector against an independent OPC UA stack: open62541, through PyPI's ``o6``.

Skipped when ``o6`` is not installed (``pip install o6``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _opcua_testserver import Collector, free_port, running, until

from shopfloor.connectors import PointSpec
from shopfloor.connectors.opcua import OpcUaConnector
from shopfloor.edge.batch import Quality

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("o6") is None,
    reason="o6 (open62541 for Python) not installed: pip install o6",
)

SERVER = Path(__file__).with_name("_o6_server.py")
FAST = {"publishing_interval_ms": 50, "flush_interval_ms": 20, "timeout_s": 3}
T = "ns=1;s=line-1/temperature"
C = "ns=1;s=line-1/count"
S = "ns=1;s=line-1/setpoint"


class O6:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.endpoint = f"opc.tcp://127.0.0.1:{port}"

    async def cmd(self, line: str) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(10):
            return (await self.proc.stdout.readline()).decode().strip()


@pytest.fixture
async def o6_server() -> AsyncIterator[O6]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SERVER),
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        async with asyncio.timeout(30):
            while (line := await proc.stdout.readline()).strip() != b"ready":  # skip o6's banner
                assert line, "the o6 server process ended before it was ready"
        yield O6(proc, port)
    finally:
        proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_open62541_values_timestamps_deadband_write(o6_server: O6) -> None:
    points = [
        PointSpec(T, "float", {"deadband_abs": 1.0, "sampling_interval_ms": 50}),
        PointSpec(C, "int"),
        PointSpec(S, "int"),
    ]
    conn = OpcUaConnector("o6-line", o6_server.endpoint, points, FAST)
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: len(sink.of(S)) == 1 and len(sink.of(T)) == 1, what="initial")
        # open62541 samples (100 ms at the fastest): give each write a sampling period, as
        # a value the deadband drops has no arrival to wait for.
        for i, v in enumerate((20.5, 22.0, 22.3, 30.0)):
            assert await o6_server.cmd(f"set temperature {v} 2024-05-01T08:00:0{i}Z") == "ok"
            await asyncio.sleep(0.3)
        assert await o6_server.cmd("set count 7 2024-05-01T08:00:09.123456Z") == "ok"
        await until(lambda: sink.values(T)[-1:] == [30.0], what="30.0")
        await until(lambda: sink.values(C)[-1:] == [7], what="count")
        await conn.write(S, 55.0)
        assert await o6_server.cmd("get setpoint") == "55"
        await until(lambda: sink.values(S)[-1:] == [55], what="write echo")
    assert sink.values(T) == [20.0, 22.0, 30.0]
    last_t = sink.of(T)[-1]
    assert last_t["ts"] == datetime(2024, 5, 1, 8, 0, 3, tzinfo=UTC)
    assert sink.of(C)[-1]["ts"] == datetime(2024, 5, 1, 8, 0, 9, 123456, tzinfo=UTC)
    assert all(r["quality"] == Quality.GOOD for r in sink.rows)

"""Interoperability: our Sparkplug host against the Eclipse Tahu JavaScript edge client.

``tests/interop/sparkplug/edge.js`` (npm ``sparkplug-client``) publishes NBIRTH, DBIRTH, NDATA
and DDATA with metrics of many datatypes (data by alias only), prints what it published, and
stops with an NDEATH. The rows our host stored must be exactly those values. Needs node and
npm (``npm ci`` in ``tests/interop/sparkplug`` is run here when ``node_modules`` is missing)
and Mosquitto on 127.0.0.1:1883; skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import struct
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shopfloor.connectors.sparkplug import SparkplugConnector
from shopfloor.edge.batch import Quality, RawBatch

HOST, PORT = "127.0.0.1", 1883
EDGE_DIR = Path(__file__).parent / "sparkplug"

_FLOATS = {"Float", "Double"}


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed (needed for the Eclipse Tahu JavaScript client)")
    if not _broker_up():
        pytest.skip(f"no MQTT broker (Mosquitto) listening on {HOST}:{PORT}")
    if not (EDGE_DIR / "node_modules" / "sparkplug-client").is_dir():
        try:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=EDGE_DIR,
                check=True,
                capture_output=True,
                timeout=180,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"npm ci in {EDGE_DIR} failed: {exc}")
    return node


def _expected_value(metric: dict[str, Any]) -> Any:
    value = metric.get("value")
    if value is None:
        return None
    if metric["type"] == "Float":
        return struct.unpack("<f", struct.pack("<f", value))[0]
    if metric["type"] in _FLOATS:
        return float(value)
    return value


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class _Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def sink(self, batch: RawBatch) -> None:
        self.rows.extend(batch.table.to_pylist())
        self.changed.set()

    async def until(self, cond: Callable[[], bool], wait_s: float = 15.0) -> None:
        async with asyncio.timeout(wait_s):
            while not cond():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await self.changed.wait()


@contextlib.asynccontextmanager
async def _host(group: str, got: _Rows, letters: list[Any]) -> AsyncIterator[SparkplugConnector]:
    async def letter_sink(table: Any) -> None:
        letters.extend(table.to_pylist())

    c = SparkplugConnector(
        "tahu",
        f"mqtt://{HOST}:{PORT}",
        [],
        {"host_id": f"host-{uuid.uuid4().hex[:8]}", "groups": [group], "flush_interval_ms": 20},
        dead_letter_sink=letter_sink,
    )
    task = asyncio.create_task(c.run(got.sink))
    try:
        await got.until(lambda: c.status.state == "connected")
        yield c
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_values_published_by_tahu_are_stored_exactly(node: str) -> None:
    group, edge = f"grp-{uuid.uuid4().hex[:8]}", "tahu-edge"
    got = _Rows()
    letters: list[Any] = []
    async with _host(group, got, letters) as host:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(EDGE_DIR / "edge.js"),
            f"mqtt://{HOST}:{PORT}",
            group,
            edge,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        published = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        assert published[-1] == {"done": True}
        messages = published[:-1]
        assert [m["kind"] for m in messages] == ["NBIRTH", "DBIRTH", "NDATA", "DDATA"]

        # what the rows must be: births declare names, data uses the aliases only
        names: dict[tuple[str, int], str] = {}
        expected = []
        for msg in messages:
            device = msg["device"]
            prefix = f"{group}/{edge}/" + (f"{device}/" if device else "")
            payload = msg["payload"]
            for m in payload["metrics"]:
                if "name" in m and "alias" in m:
                    names[(device, m["alias"])] = m["name"]
                name = m.get("name") or names[(device, m["alias"])]
                ts = m.get("timestamp", payload["timestamp"])
                expected.append((prefix + name, _dt(ts), _expected_value(m), Quality.GOOD))
        known = {a for a, _, _, _ in expected}
        assert len(expected) == 16 + 3 + 7 + 3  # NBIRTH (with bdSeq), DBIRTH, NDATA, DDATA

        def stored() -> list[tuple[str, datetime, Any, int]]:
            out = []
            for r in got.rows:
                value = next(
                    (r[c] for c in ("v_float", "v_int", "v_bool", "v_str") if r[c] is not None),
                    None,
                )
                out.append((r["address"], r["ts"], value, r["quality"]))
            return out

        # the Tahu client stops with an NDEATH: every metric then goes stale
        await got.until(lambda: len(got.rows) >= len(expected) + len(known))
        rows = stored()
        good = [r for r in rows if r[3] == Quality.GOOD]
        assert good == expected
        stale = [r for r in rows if r[3] != Quality.GOOD]
        assert {r[0] for r in stale} == known
        assert all(r[2] is None and r[3] == Quality.BAD_NOT_CONNECTED for r in stale)
        assert letters == []
        assert host.metrics.rebirth_requests_total == 0
        assert host.metrics.seq_gaps_total == 0
        assert host.metrics.births_total == 2
        assert host.metrics.deaths_total == 1

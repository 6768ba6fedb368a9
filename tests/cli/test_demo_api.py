"""``shopfloor demo`` serves its API and dashboard: scriptable with ``--port`` and ``--token``."""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import shopfloor
from shopfloor.api import ApiServer, AuthStore, create_app
from shopfloor.cli._api import RunningApi
from shopfloor.cli._up import _demo_token
from shopfloor.errors import ConfigError
from shopfloor.historian import open_historian
from shopfloor.model import load_factory

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-munich.yaml"
TOKEN = "sf_0123456789ab_" + "demo-token-for-a-test-run"
_TEXT_LOG = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connector_values(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "shopfloor_connector_values_total":
                out[s.labels["connection"]] = s.value
    return out


def _check_the_api_runs_on_the_simulated_clock(
    base: str, auth: dict[str, str], factory_file: Path
) -> None:
    """The newest values of the simulated OPC UA servers (stamped with simulated time, at
    ×60 far ahead of the wall clock), of the Modbus meters (stamped by the connector with
    the demo's clock) and of the AGVs (stamped by the vehicles with the simulator's) are
    seconds old on the clock the API tells."""
    model = load_factory(factory_file)
    by_protocol: dict[str, set[str]] = {}
    for s in model.signals():
        if s.binding is not None:
            protocol = model.connections[s.binding.connection].protocol
            by_protocol.setdefault(protocol, set()).add(s.path)
    r = httpx.get(f"{base}/api/v1/latest", params={"limit": 1000}, headers=auth, timeout=10)
    items = r.json()["items"]
    config = httpx.get(f"{base}/dashboard.json", timeout=10).json()
    now = datetime.fromtimestamp(config["now_ms"] / 1000, UTC)
    assert config["speed"] == 60
    for protocol in ("opcua", "modbus", "vda5050"):
        stamps = [
            datetime.fromisoformat(item["ts"])
            for item in items
            if item["signal"] in by_protocol[protocol]
        ]
        assert stamps, f"no {protocol} value"
        newest = max(stamps)
        assert newest > datetime.now(UTC) + timedelta(seconds=30), protocol  # runs ahead
        # not in the API's future, and recent on its clock (a few real seconds at ×60)
        assert now - timedelta(minutes=5) < newest <= now + timedelta(seconds=5), (
            protocol,
            newest,
            now,
        )


@pytest.mark.timeout(300)
def test_demo_is_scriptable_with_port_and_token(tmp_path: Path) -> None:
    factory = tmp_path / "acme.yaml"  # no broker at this endpoint: the demo starts its own
    factory.write_text(
        EXAMPLE.read_text().replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1"),
        encoding="utf-8",
    )
    port = _free_port()
    db = tmp_path / "demo.duckdb"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    command = [
        sys.executable, "-c", "from shopfloor.cli import main; main()",
        "demo", "--factory", str(factory), "--db", f"duckdb:{db}",
        "--port", str(port), "--token", TOKEN, "--no-browser", "--duration", "20",
        "--no-live", "--port-offset", str(random.randint(20_000, 30_000)),
        "--log-format", "json",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    started = time.monotonic()
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(command, stdout=o, stderr=e, cwd=tmp_path)
    try:
        answered = None
        while time.monotonic() - started < 15:
            assert proc.poll() is None, err.read_text()
            with contextlib.suppress(httpx.TransportError):
                r = httpx.get(f"{base}/api/v1/signals?limit=1", headers=auth, timeout=2)
                if r.status_code == 200:
                    answered = time.monotonic() - started
                    break
            time.sleep(0.2)
        assert answered is not None, f"no answer within 15 s:\n{err.read_text()}"
        assert r.json()["items"][0]["path"].startswith("acme/")
        assert httpx.get(f"{base}/api/v1/signals").status_code == 401
        assert httpx.get(f"{base}/api/v1/audit?limit=1", headers=auth).status_code == 200
        printed = out.read_text()
        assert f"dashboard: {base}/#token={TOKEN}\n" in printed
        assert f"token: {TOKEN}\n" in printed
        # The runtime comes up behind the API: connector counters move, the SDK reads values.
        first: dict[str, float] = {}
        moved: set[str] = set()
        # (the simulated servers take a while to start on a busy machine: wait for the runtime)
        while time.monotonic() - started < 200 and proc.poll() is None and len(moved) < 3:
            with contextlib.suppress(httpx.TransportError):
                now = _connector_values(httpx.get(f"{base}/metrics", timeout=5).text)
                for name, value in now.items():
                    if value > 0:
                        first.setdefault(name, value)
                    if name in first and value > first[name]:
                        moved.add(name)
            time.sleep(0.5)
        assert len(moved) >= 3, (first, moved)
        with shopfloor.Client(base, TOKEN) as api:
            latest = api.latest()
        assert len(latest) > 20
        _check_the_api_runs_on_the_simulated_clock(base, auth, factory)
        assert proc.wait(timeout=120) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = err.read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    for entry in logged:
        assert {"ts", "level", "logger", "message"} <= set(entry), entry
    assert not [line for line in lines if _TEXT_LOG.match(line)]
    assert "production counters" in " ".join(lines)
    assert "kept in the token store" in " ".join(lines)


async def test_demo_token(tmp_path: Path) -> None:
    """A generated token lives as long as the demo; a given one is registered and kept."""
    factory = load_factory(EXAMPLE)
    async with (
        open_historian(f"duckdb:{tmp_path / 'd.duckdb'}") as h,
        AuthStore(tmp_path / "d.auth.sqlite") as auth,
    ):
        served = RunningApi(ApiServer("127.0.0.1", 1, False), create_app(factory, h, auth))
        async with contextlib.AsyncExitStack() as stack:
            new = await _demo_token(stack, served, "acme", None)
            _, info = await auth.authenticate(new)
            assert info is not None
            assert info.state() == "active"
            assert info.scope.value == "admin"
            assert info.subtrees == ("acme",)
        _, info = await auth.authenticate(new)
        assert info is not None
        assert info.state() == "revoked"

        async with contextlib.AsyncExitStack() as stack:
            assert await _demo_token(stack, served, "acme", TOKEN) == TOKEN
        async with contextlib.AsyncExitStack() as stack:  # the next demo run reuses it
            assert await _demo_token(stack, served, "acme", TOKEN) == TOKEN
        _, info = await auth.authenticate(TOKEN)
        assert info is not None
        assert info.state() == "active"

        reader = (await auth.create_token("read", ["acme"])).token
        async with contextlib.AsyncExitStack() as stack:
            with pytest.raises(ConfigError, match="scope read on acme; the demo needs admin"):
                await _demo_token(stack, served, "acme", reader)
            with pytest.raises(ConfigError, match="a token looks like sf_"):
                await _demo_token(stack, served, "acme", "secret")
            same_id = TOKEN[:16] + "x" * 30
            with pytest.raises(ConfigError, match="a token with id 0123456789ab exists"):
                await _demo_token(stack, served, "acme", same_id)

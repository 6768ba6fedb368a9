"""``shopfloor demo|up --uns …``: the Unified Namespace through the real commands and Mosquitto."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import uuid
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from shopfloor.cli import _register, app

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-munich.yaml"
HOST, PORT = "127.0.0.1", 1883
BROKER = f"mqtt://{HOST}:{PORT}"


def _broker_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1.0):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _broker_up(), reason=f"no MQTT broker (Mosquitto) listening on {HOST}:{PORT}"
)


async def _retained(prefix: str, *, clear: bool) -> dict[str, bytes]:
    """The retained messages under ``prefix`` (found before a sentinel), optionally removed."""
    sentinel = f"{prefix}-end"
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(HOST, PORT) as c:
        await c.publish(sentinel, b"x", qos=1, retain=True)
        await c.subscribe(f"{prefix}/#", qos=1)
        await c.subscribe(sentinel, qos=1)
        async with asyncio.timeout(15):
            async for m in c.messages:
                if str(m.topic) == sentinel:
                    break
                if isinstance(m.payload, bytes) and m.payload:
                    found[str(m.topic)] = m.payload
        if clear:
            for topic in [*found, sentinel]:
                await c.publish(topic, b"", qos=1, retain=True)
    return found


def _run(args: list[str]) -> str:
    _register()
    result = CliRunner().invoke(app, args)
    out = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert result.exit_code == 0, out
    return out


@pytest.mark.timeout(120)
def test_demo_republishes_the_factory_in_the_unified_namespace(tmp_path: Path) -> None:
    factory = tmp_path / "acme.yaml"  # AGVs on an embedded broker, as in test_demo.py
    factory.write_text(
        EXAMPLE.read_text().replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1"),
        encoding="utf-8",
    )
    prefix = f"test-uns/{uuid.uuid4().hex[:10]}"
    try:
        out = _run(
            [
                "demo",
                "--factory",
                str(factory),
                "--db",
                f"duckdb:{tmp_path / 'demo.duckdb'}",
                "--duration",
                "3",
                "--no-live",
                "--port-offset",
                str(random.randint(20_000, 30_000)),
                "--uns",
                BROKER,
                "--uns-prefix",
                prefix,
                "--uns-mode",
                "latest",
            ]
        )
    finally:
        retained = asyncio.run(_retained(prefix, clear=True))
    assert f"Unified Namespace: {BROKER}, {prefix}/… (the newest value per batch" in out
    published = re.search(r"Unified Namespace: ([\d,]+) messages published to \S+, 0 dropped", out)
    assert published is not None, out
    assert int(published.group(1).replace(",", "")) > 100
    temp = json.loads(retained[f"{prefix}/acme/munich/body-shop/line-1/cell-1/press-7/temperature"])
    assert type(temp["value"]) is float
    assert temp["unit"] == "CEL"
    assert temp["quality"] == "good"
    assert json.loads(retained[f"{prefix}/_status"])["online"] is False
    assert len(retained) > 100


@pytest.mark.timeout(60)
def test_up_publishes_its_status_and_refuses_a_bad_prefix(tmp_path: Path) -> None:
    # Nothing listens at the file's device endpoints: no values, but the wiring shows.
    text = re.sub(r"127\.0\.0\.1:(48\d\d|5020|1883)", "127.0.0.1:1", EXAMPLE.read_text())
    factory = tmp_path / "acme.yaml"
    factory.write_text(text, encoding="utf-8")
    prefix = f"test-uns/{uuid.uuid4().hex[:10]}"
    common = ["up", str(factory), "--db", f"duckdb:{tmp_path / 'up.duckdb'}", "--no-live"]
    try:
        out = _run([*common, "--duration", "1", "--uns", BROKER, "--uns-prefix", prefix])
    finally:
        retained = asyncio.run(_retained(prefix, clear=True))
    assert "Unified Namespace: 0 messages published to mqtt://127.0.0.1:1883, 0 dropped." in out
    assert json.loads(retained[f"{prefix}/_status"])["online"] is False

    _register()
    bad = CliRunner().invoke(
        app, [*common, "--duration", "1", "--uns", BROKER, "--uns-prefix", "a/#"]
    )
    assert bad.exit_code == 1
    assert "may not contain MQTT wildcards" in " ".join(bad.output.split())
    mode = CliRunner().invoke(app, [*common, "--uns", BROKER, "--uns-mode", "sometimes"])
    assert mode.exit_code == 2
    assert "sometimes" in mode.output

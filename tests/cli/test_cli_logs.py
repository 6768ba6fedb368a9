"""``--log-format json``: one JSON object per line, uvicorn's lines included."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shopfloor.api import AuthStore, default_auth_path
from shopfloor.cli._logs import JsonFormatter, LogFormat, setup_logging
from shopfloor.historian import open_historian

FACTORY = """\
types:
  - id: m
    signals: [{name: t, data_type: float, derived: true}]
enterprise:
  id: acme
  sites: [{id: s, areas: [{id: a, lines: [{id: l, equipment: [{id: e, type: m}]}]}]}]
"""


def test_json_formatter_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("shopfloor.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("device %s went away", "press-7", extra={"connection": "opc", "n": 3})
        try:
            raise ValueError("bad ‘value’")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "warning"
    assert first["logger"] == "shopfloor.test.json"
    assert first["message"] == "device press-7 went away"
    assert first["connection"] == "opc"
    assert first["n"] == 3
    assert first["ts"].endswith("Z")
    assert set(first) == {"ts", "level", "logger", "message", "connection", "n"}
    assert second["level"] == "error"
    assert "ValueError: bad ‘value’" in second["exc_info"]


def test_text_is_the_default_format() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    setup_logging(LogFormat.text)  # basicConfig: leaves a configured root alone
    assert root.handlers == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(90)
def test_serve_logs_json_lines(tmp_path: Path) -> None:
    import asyncio

    factory = tmp_path / "f.yaml"
    factory.write_text(FACTORY, encoding="utf-8")
    db = f"duckdb:{tmp_path / 'h.duckdb'}"

    async def prepare() -> str:
        async with open_historian(db), AuthStore(default_auth_path(db)) as auth:
            return (await auth.create_token("read", ["acme"])).token

    token = asyncio.run(prepare())
    port = _free_port()
    err = tmp_path / "stderr.txt"
    command = [
        sys.executable, "-c", "from shopfloor.cli import main; main()",
        "serve", "--factory", str(factory), "--db", db, "--port", str(port),
        "--log-format", "json",
    ]  # fmt: skip
    with err.open("wb") as e:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=e)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status != 200:
            assert proc.poll() is None, err.read_text()
            with contextlib.suppress(httpx.TransportError):
                status = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/signals",
                    headers={"Authorization": f"Bearer {token}"},
                ).status_code
            time.sleep(0.2)
        assert status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    logs = [json.loads(line) for line in err.read_text().splitlines() if line.startswith("{")]
    loggers = {entry["logger"] for entry in logs}
    assert "uvicorn.error" in loggers, logs  # "Uvicorn running on …", "Started server …"
    access = [entry for entry in logs if entry["logger"] == "uvicorn.access"]
    assert any(
        "/api/v1/signals" in entry["message"] and "200" in entry["message"] for entry in access
    )
    for entry in logs:
        assert {"ts", "level", "logger", "message"} <= set(entry)
        assert "color_message" not in entry
    assert not any(line.startswith(("INFO:", "INFO ")) for line in err.read_text().splitlines())

"""``shopfloor up --api-port``: the API served beside the runtime, with its connectors."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from _api_helpers import M_PRESS, ApiData, factory_text

from shopfloor.api import AuthStore
from shopfloor.cli._api import api_options
from shopfloor.cli._up import _run_up
from shopfloor.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
async def test_up_serves_the_api_with_the_runtime(api_data: ApiData, tmp_path: Path) -> None:
    # Both OPC UA servers are absent: the connectors keep retrying, the API answers.
    text = factory_text()
    for old in ("127.0.0.1:4841", "127.0.0.1:4842"):
        text = text.replace(old, f"127.0.0.1:{_free_port()}")
    factory_file = tmp_path / "factory.yaml"
    factory_file.write_text(text, encoding="utf-8")
    db = f"duckdb:{tmp_path / 'live.duckdb'}"
    async with AuthStore(tmp_path / "live.auth.sqlite") as auth:
        token = (await auth.create_token("operate", ["acme/munich"])).token
    port = _free_port()
    run = asyncio.create_task(
        _run_up(factory_file, db, 6.0, False, api=api_options(port, "127.0.0.1"))
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as c:
        ready: dict[str, object] = {}
        for _ in range(200):  # the API comes up first, then the runtime is attached
            assert not run.done(), run.result()
            try:
                ready = (await c.get("/api/v1/ready")).json()
            except httpx.TransportError:
                ready = {}
            if ready.get("runtime"):
                break
            await asyncio.sleep(0.05)
        assert ready["runtime"] is True
        assert ready["connectors_total"] == 2
        assert ready["connectors_connected"] == 0
        # The write reaches the connector, which says its device is away.
        r = await c.post(f"/api/v1/setpoints/{M_PRESS}/force_setpoint", json={"value": 2e6})
        assert r.status_code == 502, r.text
        assert "munich-opc" in r.json()["detail"]
        r = await c.get("/api/v1/signals?limit=1")
        assert r.status_code == 200
    rt, _ = await run
    assert rt.pipeline is not None


async def test_up_reports_an_api_port_in_use(api_data: ApiData, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await _run_up(
                api_data.factory_file,
                f"duckdb:{tmp_path / 'x.duckdb'}",
                1.0,
                False,
                api=api_options(port, "127.0.0.1", tmp_path / "a.sqlite"),
            )

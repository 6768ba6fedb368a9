"""``GET /metrics``: Prometheus metrics of the API and of the runtime's pipeline."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from _api_helpers import M_PRESS, T0_US, ApiData, factory_text
from prometheus_client.parser import text_string_to_metric_families

from shopfloor.api import AuthStore, create_app
from shopfloor.edge.batch import RawBatch
from shopfloor.historian import open_historian
from shopfloor.model import parse_factory
from shopfloor.runtime import Runtime

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.timeout(60)
async def test_metrics_move_with_the_pipeline_and_the_requests(
    api_data: ApiData, tmp_path: Path
) -> None:
    text = factory_text()
    for old in ("127.0.0.1:4841", "127.0.0.1:4842"):  # both OPC UA servers are absent
        text = text.replace(old, f"127.0.0.1:{_free_port()}")
    factory = parse_factory(text, "factory.yaml")
    headers = {"Authorization": f"Bearer {api_data.tokens['read_munich']}"}
    async with (
        open_historian(f"duckdb:{tmp_path / 'm.duckdb'}") as h,
        AuthStore(api_data.auth_db) as auth,
        Runtime(factory, h, flush_interval=0.05) as rt,
    ):
        assert rt.pipeline is not None
        app = create_app(factory, h, auth, runtime=rt)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            before = await _scrape(c)
            n = 250
            good = RawBatch.from_columns(
                "munich-opc",
                [f"ns=2;s={M_PRESS}/temperature"] * n,
                T0_US + np.arange(n, dtype=np.int64) * 1_000_000,
                np.linspace(20.0, 30.0, n),
            )
            unbound = RawBatch.from_columns(
                "munich-opc", ["ns=2;s=nowhere"] * 3, [T0_US] * 3, [1.0, 2.0, 3.0]
            )
            await rt.pipeline.sink(good)
            await rt.pipeline.sink(unbound)
            for _ in range(200):
                if rt.pipeline.stats.values_stored + rt.pipeline.stats.dead_letters >= n + 3:
                    break
                await asyncio.sleep(0.05)
            assert (await c.get("/api/v1/signals?limit=5", headers=headers)).status_code == 200
            assert (await c.get("/api/v1/signals?limit=5", headers=headers)).status_code == 200
            missing = await c.get(f"/api/v1/history/{M_PRESS}/nope", headers=headers)
            assert missing.status_code == 404
            assert (await c.get("/api/v1/no-such-route")).status_code == 404
            after = await _scrape(c)

    def moved(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert moved("shopfloor_pipeline_values_received_total") == n + 3
    assert moved("shopfloor_pipeline_values_stored_total") == n
    assert moved("shopfloor_pipeline_dead_letters_total") == 3
    assert moved("shopfloor_pipeline_commits_total") >= 1
    writes = moved("shopfloor_historian_write_seconds_count")
    assert writes >= 1
    assert moved("shopfloor_historian_write_seconds_bucket", le="+Inf") == writes
    assert _get(after, "shopfloor_historian_write_seconds_sum") > 0
    assert ("shopfloor_pipeline_queue_depth", ()) in after
    assert ("shopfloor_pipeline_lag_seconds", ()) in after
    # One series per connection, labelled with its name and protocol.
    conn = {"connection": "munich-opc", "protocol": "opcua"}
    assert ("shopfloor_connector_values_total", tuple(sorted(conn.items()))) in after
    assert _get(after, "shopfloor_connector_connected", **conn) == 0.0
    assert ("shopfloor_connector_values_per_second", tuple(sorted(conn.items()))) in after
    # Requests by route template (not by path) and status.
    signals = {"method": "GET", "route": "/api/v1/signals", "status": "200"}
    assert moved("shopfloor_api_requests_total", **signals) == 2
    history = {"method": "GET", "route": "/api/v1/history/{signal:path}", "status": "404"}
    assert moved("shopfloor_api_requests_total", **history) == 1
    assert moved("shopfloor_api_requests_total", method="GET", route="unmatched", status="404") == 1
    timed = {"method": "GET", "route": "/api/v1/signals"}
    assert moved("shopfloor_api_request_duration_seconds_count", **timed) == 2
    assert any(name.startswith("process_") for name, _ in after)


async def test_metrics_without_a_runtime(api_data: ApiData, tmp_path: Path) -> None:
    """``shopfloor serve`` (no runtime): the API's own metrics, no pipeline families."""
    factory = parse_factory(factory_text(), "factory.yaml")
    async with open_historian(api_data.db) as h, AuthStore(api_data.auth_db) as auth:
        app = create_app(factory, h, auth)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            await c.get("/api/v1/health")
            samples = await _scrape(c)
            assert "/metrics" not in (await c.get("/api/v1/openapi.json")).json()["paths"]
    assert not any(name.startswith("shopfloor_pipeline_") for name, _ in samples)
    health = {"method": "GET", "route": "/api/v1/health", "status": "200"}
    assert _get(samples, "shopfloor_api_requests_total", **health) == 1

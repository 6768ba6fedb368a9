"""The dashboard's files as the app serves them (no browser): the page, its modules, the
configuration it reads before sign-in, and the API left as it was."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shopfloor.api import AuthStore, create_app
from shopfloor.api._web import WEB_DIR
from shopfloor.historian import open_historian
from shopfloor.model import load_factory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "acme-munich.yaml"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    factory = load_factory(EXAMPLE)
    async with (
        AuthStore(tmp_path / "auth.sqlite") as auth,
        open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as historian,
    ):
        app = create_app(factory, historian, auth)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sf") as c:
            yield c


async def test_the_page_is_served_at_the_root_with_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert '<script type="module" src="web/js/app.js">' in r.text
    # every file the page references exists and is served with a fitting type
    refs = re.findall(r'(?:src|href)="(web/[^"#]+)', r.text)
    assert refs
    for ref in sorted(set(refs)):
        f = await client.get(f"/{ref}")
        assert f.status_code == 200, ref
        assert f.headers["cache-control"] == "no-cache"
    js = await client.get("/web/js/app.js")
    assert "javascript" in js.headers["content-type"]
    assert (await client.head("/")).status_code == 200


async def test_every_module_import_resolves() -> None:
    js = WEB_DIR / "js"
    for module in js.glob("*.js"):
        for target in re.findall(r'from "(\.[^"]+)"', module.read_text(encoding="utf-8")):
            assert (module.parent / target).resolve().is_file(), f"{module.name}: {target}"


async def test_the_configuration_tells_the_api_and_the_units(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard.json")
    assert r.status_code == 200
    body = r.json()
    assert body["api"] == "api/v1"
    # the live stream's route, when this app has it (the page polls /latest otherwise)
    has_live = importlib.util.find_spec("shopfloor.api._live") is not None
    assert body["live"] == ("api/v1/live" if has_live else None)
    assert body["units"]["CEL"] == ["degree Celsius", "°C"]
    # a unit the factory file declares itself
    assert body["units"]["STK"] == ["strokes per minute (plant convention)", "strokes/min"]


async def test_the_api_is_unchanged_beside_the_dashboard(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/assets")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    missing = await client.get("/api/v1/no-such-route")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await client.get("/web/no-such-file.js")).status_code == 404
    assert (await client.get("/api/v1/health")).json() == {"status": "ok"}
    openapi = (await client.get("/api/v1/openapi.json")).json()
    assert not any(p in openapi["paths"] for p in ("/", "/dashboard.json"))

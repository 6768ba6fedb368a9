"""The API over TLS in-process: uvicorn on a random port, httpx trusting the certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from _api_helpers import ApiData, factory_text
from _tls_helpers import self_signed

from shopfloor.api import AuthStore, create_app, running_server, server_config
from shopfloor.errors import ConfigError
from shopfloor.historian import open_historian
from shopfloor.model import parse_factory


@pytest.mark.timeout(60)
async def test_https_with_a_self_signed_certificate(api_data: ApiData, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    factory = parse_factory(factory_text())
    async with open_historian(api_data.db) as h, AuthStore(api_data.auth_db) as auth:
        app = create_app(factory, h, auth)
        config = server_config(app, "127.0.0.1", 0, certfile=cert, keyfile=key, log_level="warning")
        async with running_server(config) as server:
            assert server.tls
            assert server.port > 0
            assert server.url == f"https://127.0.0.1:{server.port}"
            trust = ssl.create_default_context(cafile=str(cert))
            headers = {"Authorization": f"Bearer {api_data.tokens['read_munich']}"}
            async with httpx.AsyncClient(verify=trust, base_url=server.url) as client:
                r = await client.get("/api/v1/me", headers=headers)
                assert r.status_code == 200
                assert r.json()["subtrees"] == ["acme/munich"]
                r = await client.get("/api/v1/assets?under=acme/leipzig", headers=headers)
                assert r.status_code == 403
                assert r.headers["content-type"] == "application/problem+json"
                spec = (await client.get("/api/v1/openapi.json")).json()
                assert "/api/v1/history/{signal}" in spec["paths"]
            async with httpx.AsyncClient(base_url=server.url) as untrusting:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await untrusting.get("/api/v1/health")
            async with httpx.AsyncClient() as plain:
                with pytest.raises(httpx.RemoteProtocolError):
                    await plain.get(f"http://127.0.0.1:{server.port}/api/v1/health")
        # stopped: the port is free again
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(verify=trust) as client:
                await client.get(f"{server.url}/api/v1/health")


async def test_bad_tls_files_and_busy_ports_are_clear_errors(
    api_data: ApiData, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    factory = parse_factory(factory_text())
    app = create_app(factory, None, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="both a certificate"):
        server_config(app, certfile=cert)
    with pytest.raises(ConfigError, match="does not exist"):
        server_config(app, certfile=tmp_path / "nope.pem", keyfile=key)
    with pytest.raises(ConfigError, match="cannot use the TLS certificate"):
        server_config(app, certfile=key, keyfile=cert)
    config = server_config(app, "127.0.0.1", 0, log_level="warning")
    async with running_server(config) as server:
        busy = server_config(app, "127.0.0.1", server.port, log_level="warning")
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            async with running_server(busy):
                pass
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/api/v1/health")).json() == {"status": "ok"}


def test_the_listening_socket_says_tcp() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket
    says IPPROTO_TCP; without it every answer waited 40 ms for a delayed ACK."""
    import socket

    from shopfloor.api._server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()

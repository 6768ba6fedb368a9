"""``shopfloor token create|list|revoke|audit`` and ``shopfloor serve`` (over TLS)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from _api_helpers import ApiData, factory_text
from _tls_helpers import self_signed
from typer.testing import CliRunner

from shopfloor.api import AuthStore
from shopfloor.cli._api import register


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root."""

    register(app)
    return app


def _invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(_app(), list(args))
    return r.exit_code, r.stdout, r.stderr


def test_token_create_list_revoke_audit(tmp_path: Path) -> None:
    factory = tmp_path / "factory.yaml"
    factory.write_text(factory_text(), encoding="utf-8")
    db = f"duckdb:{tmp_path / 'plant.duckdb'}"
    code, out, err = _invoke(
        "token", "create", "--scope", "operate", "--subtree", "acme/munich",
        "--subtree", "acme/leipzig/paint", "--expires", "30d", "--name", "line lead",
        "--factory", str(factory), "--db", db,
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    assert token.startswith("sf_")
    assert "shown this once" in err
    store = tmp_path / "plant.auth.sqlite"
    assert store.exists()
    assert token.encode() not in store.read_bytes()

    async def check() -> None:
        async with AuthStore(store) as auth:
            _, info = await auth.authenticate(token)
            assert info is not None
            assert info.subtrees == ("acme/munich", "acme/leipzig/paint")
            assert info.expires_at is not None
            days = (info.expires_at - info.created_at).total_seconds() / 86400
            assert days == pytest.approx(30, abs=0.01)

    asyncio.run(check())
    code, out, _ = _invoke("token", "list", "--db", db, "--json")
    assert code == 0
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert (row["name"], row["scope"], row["state"]) == ("line lead", "operate", "active")
    code, out, _ = _invoke("token", "list", "--db", db)
    assert "line" in out
    assert row["id"] in out

    code, _, err = _invoke("token", "revoke", row["id"], "--db", db)
    assert code == 0, err
    code, out, _ = _invoke("token", "list", "--auth-db", str(store), "--json")
    assert json.loads(out)["state"] == "revoked"
    code, _, err = _invoke("token", "revoke", row["id"], "--db", db)
    assert code == 1
    assert "already revoked" in err

    code, out, err = _invoke("token", "audit", "--db", db)
    assert code == 0, err
    assert "2 rows, hash chain intact" in out.replace("\n", " ")
    assert "revoke" in out


def test_token_create_refuses_bad_input(tmp_path: Path) -> None:
    factory = tmp_path / "factory.yaml"
    factory.write_text(factory_text(), encoding="utf-8")
    db = f"duckdb:{tmp_path / 'plant.duckdb'}"
    code, _, err = _invoke(
        "token", "create", "--scope", "read", "--subtree", "acme/berlin",
        "--factory", str(factory), "--db", db,
    )  # fmt: skip
    assert code == 2
    assert "no asset 'acme/berlin'" in err
    code, _, err = _invoke(
        "token", "create", "--scope", "read", "--subtree", "acme", "--expires", "soon",
        "--db", db,
    )  # fmt: skip
    assert code == 2
    assert "--expires 'soon'" in err
    code, _, err = _invoke("token", "create", "--scope", "read", "--subtree", "a", "--db",
                           "duckdb::memory:")  # fmt: skip
    assert code == 2
    assert "--auth-db" in err
    code, _, err = _invoke("token", "create", "--scope", "root", "--subtree", "a", "--db", db)
    assert code == 2
    assert not (tmp_path / "plant.auth.sqlite").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_serve_over_tls(api_data: ApiData, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable, "-c", "from shopfloor.cli import main; main()", "serve",
            "--factory", str(api_data.factory_file), "--db", api_data.db,
            "--auth-db", str(api_data.auth_db), "--port", str(port),
            "--cert", str(cert), "--key", str(key),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(verify=ctx, base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.communicate()
                try:
                    r = client.get("/api/v1/health")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not come up"
                    time.sleep(0.1)
            assert r.json() == {"status": "ok"}
            token = api_data.tokens["read_munich"]
            r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            assert r.json()["scope"] == "read"
            r = client.post(
                "/api/v1/setpoints/acme/munich/body-shop/line-1/cell-1/press-1/force_setpoint",
                json={"value": 1.0},
                headers={"Authorization": f"Bearer {api_data.tokens['operate_munich']}"},
            )
            assert r.status_code == 503  # read-only server
        # without the certificate the server is not trusted; plain HTTP is not spoken
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{base}/api/v1/health")
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"https://127.0.0.1:{port}/api/v1" in err
    assert "stopped" in err


def test_serve_refuses_bad_tls_and_missing_historian(api_data: ApiData, tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    code, _, err = _invoke(
        "serve", "--factory", str(api_data.factory_file), "--db", api_data.db,
        "--auth-db", str(api_data.auth_db), "--cert", str(cert),
    )  # fmt: skip
    assert code == 1
    assert "both a certificate" in err
    code, _, err = _invoke(
        "serve", "--factory", str(api_data.factory_file),
        "--db", f"duckdb:{tmp_path / 'none.duckdb'}", "--auth-db", str(tmp_path / "a.sqlite"),
    )  # fmt: skip
    assert code == 1
    assert "no historian database" in err

"""Secure channels, user names and certificates against a real asyncua server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _opcua_testserver import Collector, TestServer, addr, running, until
from cryptography import x509

from shopfloor.connectors import PointSpec
from shopfloor.connectors.certs import create_certificate
from shopfloor.connectors.opcua import OpcUaConnector
from shopfloor.errors import ConfigError

FAST = {
    "publishing_interval_ms": 50,
    "flush_interval_ms": 20,
    "reconnect_initial_s": 0.2,
    "reconnect_max_s": 1.0,
    "watchdog_interval_s": 0.5,
    "timeout_s": 2,
}
POINTS = [PointSpec(addr("temperature"))]
USERS = {"operator": "s3cret"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    create_certificate("server", "urn:shopfloor:test:server", root / "server")
    create_certificate("edge-1", "urn:shopfloor:edge-1", root / "trusted")
    create_certificate("intruder", "urn:shopfloor:intruder", root / "untrusted")
    (root / "trust").mkdir()  # the server's trust list holds certificates only
    shutil.copy(root / "trusted" / "edge-1.der", root / "trust" / "edge-1.der")
    return root


@pytest.fixture
async def secure_server(pki: Path) -> AsyncIterator[TestServer]:
    srv = TestServer(
        users=USERS,
        certificate=pki / "server" / "server.der",
        private_key=pki / "server" / "server.key.pem",
        trusted=pki / "trust",
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def _secure(pki: Path, who: str, folder: str, **extra: object) -> dict[str, object]:
    return {
        **FAST,
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "certificate": str(pki / folder / f"{who}.der"),
        "private_key": str(pki / folder / f"{who}.key.pem"),
        **extra,
    }


def test_certificate_has_the_application_uri(pki: Path) -> None:
    cert = x509.load_der_x509_certificate((pki / "trusted" / "edge-1.der").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:shopfloor:edge-1"]
    with pytest.raises(ConfigError, match="exists"):
        create_certificate("edge-1", "urn:shopfloor:edge-1", pki / "trusted")
    with pytest.raises(ConfigError, match="not a URI"):
        create_certificate("x", "no-uri", pki / "x")


async def test_sign_and_encrypt_with_user_and_password(
    secure_server: TestServer, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPFLOOR_TEST_OPC_PW", "s3cret")
    opts = _secure(
        pki,
        "edge-1",
        "trusted",
        username="operator",
        password_env="SHOPFLOOR_TEST_OPC_PW",
        server_certificate=str(pki / "server" / "server.der"),
    )
    conn = OpcUaConnector("secure", secure_server.endpoint, POINTS, opts)
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: conn.status.state == "connected", what="connected")
        await secure_server.write("temperature", 77.0)
        await until(lambda: sink.values(addr("temperature"))[-1:] == [77.0], what="77")
        await conn.write(addr("setpoint"), 5)  # not writable for this point list: fine
    assert conn.status.last_error is None


async def test_server_certificate_from_endpoints_and_sign_mode(
    secure_server: TestServer, pki: Path
) -> None:
    opts = _secure(
        pki, "edge-1", "trusted", username="operator", password="s3cret", security_mode="Sign"
    )
    conn = OpcUaConnector("signed", secure_server.endpoint, POINTS, opts)
    sink = Collector()
    async with running(conn, sink):
        await until(lambda: len(sink.rows) >= 1, what="a value")


async def test_wrong_password_and_untrusted_certificate_fail_clearly(
    secure_server: TestServer, pki: Path
) -> None:
    wrong_pw = OpcUaConnector(
        "pw-opc",
        secure_server.endpoint,
        POINTS,
        _secure(pki, "edge-1", "trusted", username="operator", password="wrong"),
    )
    intruder = OpcUaConnector(
        "cert-opc",
        secure_server.endpoint,
        POINTS,
        _secure(pki, "intruder", "untrusted", username="operator", password="s3cret"),
    )
    good = OpcUaConnector(
        "good-opc",
        secure_server.endpoint,
        POINTS,
        _secure(pki, "edge-1", "trusted", username="operator", password="s3cret"),
    )
    sinks = [Collector(), Collector(), Collector()]
    async with running(wrong_pw, sinks[0]), running(intruder, sinks[1]), running(good, sinks[2]):
        await until(lambda: wrong_pw.status.last_error is not None, what="password error")
        await until(lambda: intruder.status.last_error is not None, what="certificate error")
        for v in (1.0, 2.0, 3.0):
            await secure_server.write("temperature", v)
        await until(lambda: sinks[2].values(addr("temperature"))[-1:] == [3.0], what="good")
        assert good.status.state == "connected"
        pw_error = wrong_pw.status.last_error or ""
        cert_error = intruder.status.last_error or ""
    assert pw_error.startswith(f"connection 'pw-opc' ({secure_server.endpoint}): ")
    assert "BadUserAccessDenied" in pw_error or "BadIdentityToken" in pw_error
    assert wrong_pw.status.state == "stopped"
    assert cert_error.startswith(f"connection 'cert-opc' ({secure_server.endpoint}): ")
    assert "Bad" in cert_error
    assert sinks[0].rows == []
    assert sinks[1].rows == []

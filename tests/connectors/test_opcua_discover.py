"""``shopfloor discover`` and ``shopfloor certs create`` against a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import typer
import yaml
from _opcua_testserver import PREFIX, TestServer, addr
from asyncua import ua
from typer.testing import CliRunner

from shopfloor.cli._connect import register
from shopfloor.connectors._opcua_discover import discover, fragment, unit_code


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


async def _decorate(srv: TestServer) -> None:
    """Units on the press, and a second press of the same structure."""
    assert srv.server is not None
    temp = srv.nodes["temperature"]
    eu = ua.EUInformation(
        NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
        UnitId=4408652,
        DisplayName=ua.LocalizedText("°C"),
        Description=ua.LocalizedText("degree Celsius"),
    )
    await temp.add_property(
        ua.NodeId(f"{PREFIX}/temperature/EU", 2), ua.QualifiedName("EngineeringUnits", 0), eu
    )
    objects = srv.server.nodes.objects
    p8 = await objects.add_object(ua.NodeId("press-8", 2), "2:press-8")
    for name, value, vtype in (
        ("temperature", 1.0, ua.VariantType.Double),
        ("count", 0, ua.VariantType.Int32),
        ("running", False, ua.VariantType.Boolean),
        ("mode", "x", ua.VariantType.String),
        ("pressure", 0.0, ua.VariantType.Double),
    ):
        await p8.add_variable(
            ua.NodeId(f"press-8/{name}", 2), f"2:{name}", ua.Variant(value, vtype)
        )
    sp = await p8.add_variable(
        ua.NodeId("press-8/setpoint", 2), "2:setpoint", ua.Variant(1, ua.VariantType.Int32)
    )
    await sp.set_writable()
    robot = await objects.add_object(ua.NodeId("robot-1", 2), "2:robot-1")
    await robot.add_variable(ua.NodeId("robot-1/speed", 2), "2:speed", 0.5)


def test_unit_code() -> None:
    assert unit_code(4408652) == "CEL"
    assert unit_code(0x4B5748) == "KWH"
    assert unit_code(-1) is None
    assert unit_code(0) is None


async def test_discover_types_and_bindings(ua_server: TestServer) -> None:
    await _decorate(ua_server)
    found = await discover(ua_server.endpoint, connection="line-1-opc")
    doc = fragment(found, connection="line-1-opc", endpoint=ua_server.endpoint)
    assert doc["connections"] == [
        {"name": "line-1-opc", "protocol": "opcua", "endpoint": ua_server.endpoint}
    ]
    eq = {e["id"]: e for e in doc["equipment"]}
    assert set(eq) == {"press-7", "press-8", "robot-1"}
    # press-7 has a unit on temperature, press-8 has not: two press types
    types = {t["id"]: t for t in doc["types"]}
    assert len(types) == 3
    p7_type = types[eq["press-7"]["type"]]
    sig = {s["name"]: s for s in p7_type["signals"]}
    assert sig["temperature"] == {
        "name": "temperature",
        "data_type": "float",
        "kind": "measurement",
        "unit": "CEL",
    }
    assert sig["count"]["data_type"] == "int"
    assert sig["running"]["data_type"] == "bool"
    assert sig["mode"]["data_type"] == "string"
    assert sig["setpoint"]["kind"] == "setpoint"
    assert eq["press-7"]["bindings"]["temperature"] == addr("temperature")
    assert eq["press-8"]["bindings"]["setpoint"] == "ns=2;s=press-8/setpoint"
    assert eq["robot-1"]["type"] == "robot"
    # browse from a root
    only = await discover(ua_server.endpoint, root=f"ns=2;s={PREFIX}")
    assert [e.name for e in only] == ["press-7"]


async def test_discover_cli_writes_yaml(ua_server: TestServer, tmp_path: Path) -> None:
    out = tmp_path / "fragment.yaml"
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke,
        _app(),
        ["discover", ua_server.endpoint, "--connection", "line-1-opc", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    assert doc["equipment"][0]["bindings"]["temperature"] == addr("temperature")
    full = await asyncio.to_thread(
        runner.invoke, _app(), ["discover", ua_server.endpoint, "--full"]
    )
    assert full.exit_code == 0, full.output
    full_doc = yaml.safe_load(full.stdout)
    assert "enterprise" in full_doc
    try:
        from shopfloor.model import parse_factory  # type: ignore[attr-defined]
    except ImportError:
        pytest.skip("shopfloor.model.parse_factory is not there yet")
    parse_factory(full_doc)


def test_discover_cli_unreachable() -> None:
    result = CliRunner().invoke(
        _app(), ["discover", "opc.tcp://127.0.0.1:1", "--connection", "nowhere"]
    )
    assert result.exit_code == 1
    assert "connection 'nowhere' (opc.tcp://127.0.0.1:1)" in result.output


def test_certs_create_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(),
        ["certs", "create", "--name", "edge-1", "--uri", "urn:acme:edge-1", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "edge-1.der").is_file()
    assert (tmp_path / "edge-1.key.pem").is_file()
    again = CliRunner().invoke(
        _app(),
        ["certs", "create", "--name", "edge-1", "--uri", "urn:acme:edge-1", "--out", str(tmp_path)],
    )
    assert again.exit_code == 1
    assert "exists" in again.output

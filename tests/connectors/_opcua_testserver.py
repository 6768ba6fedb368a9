"""A real asyncua server for the connector tests, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager

from shopfloor.connectors import Connector
from shopfloor.edge.batch import RawBatch

NS_URI = "urn:shopfloor:test"
PREFIX = "acme/munich/body-shop/line-1/press-7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def addr(name: str) -> str:
    return f"ns=2;s={PREFIX}/{name}"


class _Users(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None:
            return None
        if self.users.get(username) == password:
            return User(role=UserRole.User)
        return None


@dataclass
class TestServer:
    """An asyncua server with a press object: temperature, count, running, mode, setpoint."""

    port: int = field(default_factory=free_port)
    users: dict[str, str] | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    trusted: Path | None = None
    server: Server | None = None
    nodes: dict[str, Node] = field(default_factory=dict)

    __test__ = False

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/shopfloor/"

    async def start(self, initial: dict[str, ua.DataValue] | None = None) -> None:
        server = Server(user_manager=_Users(self.users) if self.users is not None else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("shopfloor test server")
        if self.certificate is not None:
            assert self.private_key is not None
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                    ua.SecurityPolicyType.Basic256Sha256_Sign,
                ]
            )
            if self.trusted is not None:
                store = TrustStore([self.trusted], [])
                await store.load()
                server.set_certificate_validator(
                    CertificateValidator(
                        CertificateValidatorOptions.TRUSTED_VALIDATION
                        | CertificateValidatorOptions.PEER_CLIENT,
                        store,
                    )
                )
        if self.users is not None:
            server.set_security_IDs(["Username"])
        idx = await server.register_namespace(NS_URI)
        assert idx == 2
        press = await server.nodes.objects.add_object(ua.NodeId(PREFIX, idx), f"{idx}:press-7")
        specs: Sequence[tuple[str, Any, ua.VariantType, bool]] = [
            ("temperature", 20.0, ua.VariantType.Double, False),
            ("count", 0, ua.VariantType.Int32, False),
            ("running", False, ua.VariantType.Boolean, False),
            ("mode", "auto", ua.VariantType.String, False),
            ("setpoint", 100, ua.VariantType.Int32, True),
            ("pressure", 50.0, ua.VariantType.Double, False),
        ]
        for name, value, vtype, writable in specs:
            var = await press.add_variable(
                ua.NodeId(f"{PREFIX}/{name}", idx), f"{idx}:{name}", ua.Variant(value, vtype)
            )
            if writable:
                await var.set_writable()
            self.nodes[name] = var
        await self.nodes["pressure"].add_property(
            ua.NodeId(f"{PREFIX}/pressure/EURange", idx),
            ua.QualifiedName("EURange", 0),
            ua.Range(0.0, 200.0),
        )
        for name, dv in (initial or {}).items():
            await self.nodes[name].write_value(dv)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def write(
        self,
        name: str,
        value: Any,
        vtype: ua.VariantType | None = None,
        ts: datetime | None = None,
        status: int | None = None,
    ) -> None:
        node = self.nodes[name]
        if vtype is None:
            vtype = await node.read_data_type_as_variant_type()
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            StatusCode=ua.StatusCode(status) if status is not None else ua.StatusCode(),
            SourceTimestamp=ts,
            ServerTimestamp=ts,
        )
        await node.write_value(dv)


class Collector:
    """A sink that keeps every row it is handed."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.batches = 0

    async def __call__(self, batch: RawBatch) -> None:
        self.batches += 1
        self.rows.extend(batch.table.to_pylist())

    def of(self, address: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["address"] == address]

    def values(self, address: str) -> list[Any]:
        return [_value(r) for r in self.of(address)]


def _value(row: dict[str, Any]) -> Any:
    for col in ("v_float", "v_int", "v_bool", "v_str"):
        if row[col] is not None:
            return row[col]
    return None


async def until(cond: Callable[[], bool], limit_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds; fail after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(
    conn: Connector, sink: Callable[[RawBatch], Awaitable[None]]
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(conn.run(sink), name=f"test-run-{conn.name}")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

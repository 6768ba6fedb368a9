"""Helpers of the bus tests: NATS URLs of throwaway streams, free ports, own servers.

Normal tests use the machine's NATS (``SHOPFLOOR_TEST_NATS``, default
``nats://127.0.0.1:4222``, started by ``scripts/services.sh``), each in a stream and subject
prefix of its own that is deleted afterwards. Fault tests that stop the broker or
PostgreSQL start their own servers (:class:`OwnNats`, :class:`OwnPostgres`) on free ports
in temporary directories: the machine's shared services are never stopped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

NATS_URL = os.environ.get("SHOPFLOOR_TEST_NATS", "nats://127.0.0.1:4222")
PG_URL = os.environ.get("SHOPFLOOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"

FACTORY = """\
enterprise:
  id: acme
  name: Acme
  sites:
    - {id: plant, name: Plant}
connections:
  - name: gen
    protocol: sparkplug
    endpoint: mqtt://127.0.0.1:1883
    options: {auto_area: acme/plant, groups: [gen]}
"""
"""A factory whose connection ``gen`` names its signals itself (``--generate`` uses it)."""


def bus_url(base: str = NATS_URL, **options: object) -> str:
    """``base`` with a stream and subject prefix of its own (and ``options``)."""
    tag = secrets.token_hex(4)
    query = {"stream": f"T{tag}", "prefix": f"t{tag}.ingest", **options}
    return base + "?" + "&".join(f"{k}={v}" for k, v in query.items())


async def delete_stream(url: str) -> None:
    """Delete the stream of a :func:`bus_url` (ignoring one that is not there)."""
    import nats

    from shopfloor.bus.nats import parse_nats_url

    settings = parse_nats_url(url)
    nc = await nats.connect(list(settings.servers), connect_timeout=2, max_reconnect_attempts=1)
    try:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(settings.stream)
    finally:
        await nc.close()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, wait_s: float = 30.0) -> None:
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {wait_s} s")


class OwnNats:
    """A nats-server with JetStream of this test's own (free port, store in a temp dir)."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (again, on the same port and store)."""
        with open(self.store / "nats.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    NATS_SERVER,
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-js",
                    "-sd",
                    str(self.store),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_port(self.port)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin")
    return found[-1]


class OwnPostgres:
    """A throwaway PostgreSQL cluster (``initdb`` in a temp dir, trust on loopback).

    Run as the ``postgres`` system user when this process is root (initdb refuses root).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sf-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        """The URL of its ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        """Create the cluster."""
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")

    def start(self) -> None:
        """Start (again) on the same port and data."""
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop it (fast shutdown: sessions are cut)."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop when running and delete the cluster."""
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def shopfloor(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    """``shopfloor ARGS`` in a child process (text output; stderr to this test's stderr)."""
    return subprocess.Popen(
        [sys.executable, "-c", "from shopfloor.cli import main; main()", *args],
        stdout=stdout,
        stderr=None,
        text=True,
        start_new_session=True,
    )


def kill9(proc: subprocess.Popen[str]) -> None:
    """``kill -9`` of ``proc``."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


@contextlib.contextmanager
def reaped(*procs: subprocess.Popen[str]) -> Iterator[None]:
    """Kill what is still running of ``procs`` on exit."""
    try:
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@contextlib.asynccontextmanager
async def fresh_store(engine: str, directory: Path) -> AsyncIterator[str]:
    """The URL of an empty historian: a DuckDB file in ``directory``, or a new schema of the
    test PostgreSQL (dropped on exit)."""
    if engine == "duckdb":
        yield f"duckdb:{directory / 'h.duckdb'}"
        return
    schema = f"sf_bus_{secrets.token_hex(5)}"
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        await drop_schema(PG_URL, schema)


async def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` of the database at ``url``."""
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )

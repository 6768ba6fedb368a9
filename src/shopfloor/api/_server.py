"""Running the API with uvicorn: stand-alone (``shopfloor serve``) or beside the runtime.

TLS is on when a certificate and its key are given (PEM files); the server then speaks
HTTPS only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from shopfloor.errors import ConfigError

__all__ = ["ApiServer", "running_server", "serve", "server_config"]


def server_config(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    log_level: str = "info",
) -> uvicorn.Config:
    """A uvicorn configuration for ``app``; raises :class:`ConfigError` on bad TLS files."""
    if (certfile is None) != (keyfile is None):
        raise ConfigError("TLS needs both a certificate (--cert) and its private key (--key)")
    for what, f in (("certificate", certfile), ("private key", keyfile)):
        if f is not None and not Path(f).is_file():
            raise ConfigError(f"the TLS {what} {f} does not exist")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_level=log_level,
        ssl_certfile=None if certfile is None else str(certfile),
        ssl_keyfile=None if keyfile is None else str(keyfile),
        server_header=False,
    )
    try:
        config.load()
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot use the TLS certificate {certfile} with key {keyfile}: {exc}"
        ) from exc
    return config


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (bound here, so that a busy port is a clear error, not an exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets that say so (without it, Nagle and delayed ACKs add 40 ms to every answer).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the API cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


async def serve(config: uvicorn.Config) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's own handling: a graceful shutdown)."""
    sock = _bind(config.host, config.port)
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()


class _Embedded(uvicorn.Server):
    """A server that leaves signals to its host process (``shopfloor up`` handles Ctrl-C)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True, slots=True)
class ApiServer:
    """A running server: where it listens."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """The base URL, e.g. ``https://127.0.0.1:8443``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


@contextlib.asynccontextmanager
async def running_server(config: uvicorn.Config) -> AsyncIterator[ApiServer]:
    """Run the server in a task while the block runs; stop it gracefully on leaving.

    Port 0 picks a free port; the yielded :class:`ApiServer` tells which.
    """
    sock = _bind(config.host, config.port)
    try:
        server = _Embedded(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="api-server")
        try:
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise ConfigError(
                        f"the API server did not start on {config.host}:{config.port}"
                    )
                await asyncio.sleep(0.02)
            yield ApiServer(config.host, int(sock.getsockname()[1]), config.ssl is not None)
        finally:
            server.should_exit = True
            await task
    finally:
        sock.close()

"""``shopfloor serve`` (the REST API over a historian) and ``shopfloor token`` (API tokens)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shopfloor.cli._logs import LOG_FORMAT_OPT, LogFormat, adopt_uvicorn, setup_logging
from shopfloor.errors import ConfigError, ShopfloorError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shopfloor.api import ApiServer
    from shopfloor.historian import Historian
    from shopfloor.model import Factory
    from shopfloor.runtime import Runtime

__all__ = [
    "API_AUTH_DB_OPT",
    "API_CERT_OPT",
    "API_HOST_OPT",
    "API_KEY_OPT",
    "API_PORT_OPT",
    "ApiOptions",
    "RunningApi",
    "api_options",
    "attach_runtime",
    "auth_path",
    "register",
    "start_api",
]

_T = TypeVar("_T")

err = Console(stderr=True)


class ScopeName(StrEnum):
    """Token scopes, each including the ones before it."""

    read = "read"
    operate = "operate"
    admin = "admin"


def auth_path(auth_db: Path | None, db: str) -> Path:
    """The security store's file: ``--auth-db``, or the one beside the historian ``db``."""
    from shopfloor.api import default_auth_path

    return auth_db if auth_db is not None else default_auth_path(db)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _run(fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    try:
        return asyncio.run(fn())
    except ShopfloorError as exc:
        raise _fail(str(exc)) from exc


def _expiry(text: str | None) -> datetime | None:
    from shopfloor.cli._query import parse_duration, parse_time

    if text is None:
        return None
    now = datetime.now(UTC)
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_time(text, now)
    except ValueError:
        raise _fail(
            f"--expires {text!r}: give a duration (30d, 12h, 2w) or a time (2026-12-31)", 2
        ) from None


def _when(ts: datetime | None) -> str:
    return "–" if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


auth_db_opt = typer.Option(
    None,
    "--auth-db",
    help="The security store (SQLite). Default: <historian file>.auth.sqlite beside --db.",
)
db_opt = typer.Option("duckdb:shopfloor.duckdb", "--db", help="Historian URL (or a .duckdb path).")


def _token_app() -> typer.Typer:
    tokens = typer.Typer(help="API tokens: create, list, revoke; the audit log.")

    @tokens.command("create")
    def create(
        scope: ScopeName = typer.Option(..., "--scope", help="read < operate < admin."),
        subtree: list[str] = typer.Option(
            ...,
            "--subtree",
            help="Asset path the token is limited to (repeat; the enterprise path for all).",
        ),
        expires: str | None = typer.Option(
            None, "--expires", help="Expiry: a duration (30d, 12h) or a time (ISO 8601)."
        ),
        name: str = typer.Option("", "--name", help="A label (who or what uses the token)."),
        factory: Path | None = typer.Option(
            None, "--factory", help="Check that every subtree is an asset of this factory file."
        ),
        db: str = db_opt,
        auth_db: Path | None = auth_db_opt,
    ) -> None:
        """Create a token and print it once (only its hash is kept)."""
        from shopfloor.api import AuthStore, NewToken

        expires_at = _expiry(expires)
        if factory is not None:
            from shopfloor.model import FactoryFileError, load_factory

            try:
                model = load_factory(factory)
            except FactoryFileError as exc:
                raise _fail(str(exc)) from exc
            known = {a.path for a in model.assets()}
            unknown = [s for s in subtree if s.strip("/") not in known]
            if unknown:
                raise _fail(f"no asset {', '.join(map(repr, unknown))} in {factory}", 2)
        path = _run_path(auth_db, db)

        async def work() -> NewToken:
            async with AuthStore(path) as store:
                return await store.create_token(
                    scope.value, subtree, name=name, expires_at=expires_at
                )

        new = _run(work)
        info = new.info
        err.print(
            f"created token [bold]{info.id}[/] ({info.scope.value} on "
            f"{', '.join(info.subtrees)}, expires {_when(info.expires_at)}) in {path}.\n"
            "It is shown this once; keep it secret:",
            highlight=False,
        )
        typer.echo(new.token)

    @tokens.command("list")
    def list_(
        db: str = db_opt,
        auth_db: Path | None = auth_db_opt,
        as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
    ) -> None:
        """Every token (revoked ones too) with its scope, subtrees, state and last use."""
        from shopfloor.api import AuthStore, TokenInfo

        path = _run_path(auth_db, db)

        async def work() -> list[TokenInfo]:
            async with AuthStore(path) as store:
                return await store.tokens()

        infos = _run(work)
        if as_json:
            for t in infos:
                typer.echo(
                    json.dumps(
                        {
                            "id": t.id,
                            "name": t.name,
                            "scope": t.scope.value,
                            "subtrees": list(t.subtrees),
                            "state": t.state(),
                            "created_at": t.created_at.isoformat(),
                            "expires_at": t.expires_at and t.expires_at.isoformat(),
                            "revoked_at": t.revoked_at and t.revoked_at.isoformat(),
                            "last_used_at": t.last_used_at and t.last_used_at.isoformat(),
                        }
                    )
                )
            return
        table = Table(title=f"tokens in {path}")
        table.add_column("id", no_wrap=True)
        for col in ("name", "scope", "subtrees", "state", "created", "expires", "last used"):
            table.add_column(col)
        style = {"active": "green", "expired": "yellow", "revoked": "red"}
        for t in infos:
            state = t.state()
            table.add_row(
                t.id,
                t.name,
                t.scope.value,
                "\n".join(t.subtrees),
                f"[{style[state]}]{state}[/]",
                _when(t.created_at),
                _when(t.expires_at),
                _when(t.last_used_at),
            )
        Console().print(table)

    @tokens.command("revoke")
    def revoke(
        token_id: str = typer.Argument(..., help="The token's id (see 'token list')."),
        db: str = db_opt,
        auth_db: Path | None = auth_db_opt,
    ) -> None:
        """Revoke a token; requests with it fail from now on."""
        from shopfloor.api import AuthStore, TokenInfo

        path = _run_path(auth_db, db)

        async def work() -> TokenInfo:
            async with AuthStore(path) as store:
                return await store.revoke_token(token_id)

        _run(work)
        err.print(f"revoked token [bold]{token_id}[/]", highlight=False)

    @tokens.command("audit")
    def audit(
        limit: int = typer.Option(20, "--limit", min=1, help="Show the newest N rows."),
        token_id: str | None = typer.Option(None, "--token", help="Only rows of this token."),
        db: str = db_opt,
        auth_db: Path | None = auth_db_opt,
    ) -> None:
        """Verify the audit log's hash chain and show its newest rows."""
        from shopfloor.api import AuditEntry, AuthStore

        path = _run_path(auth_db, db)

        async def work() -> tuple[int, list[AuditEntry]]:
            async with AuthStore(path) as store:
                n = await store.verify_audit()
                return n, await store.audit_entries(token_id=token_id, limit=limit)

        n, entries = _run(work)
        table = Table(title=f"audit log of {path}: {n:,} rows, hash chain intact")
        for col in ("seq", "time (UTC)", "token", "method", "path", "status", "detail"):
            table.add_column(col, overflow="fold")
        for e in entries:
            table.add_row(
                str(e.seq),
                e.ts.strftime("%Y-%m-%d %H:%M:%S"),
                e.token_id or "–",
                e.method,
                e.path,
                str(e.status),
                json.dumps(e.detail, ensure_ascii=False) if e.detail else "",
            )
        Console().print(table)

    return tokens


def _run_path(auth_db: Path | None, db: str) -> Path:
    try:
        return auth_path(auth_db, db)
    except ShopfloorError as exc:
        raise _fail(str(exc), 2) from exc


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``token`` command group to ``app``."""
    app.add_typer(_token_app(), name="token")

    @app.command("serve")
    def serve_cmd(
        factory: Path = typer.Option(..., "--factory", help="The factory file (YAML)."),
        db: str = db_opt,
        auth_db: Path | None = auth_db_opt,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port."),
        cert: Path | None = typer.Option(None, "--cert", help="TLS certificate (PEM)."),
        key: Path | None = typer.Option(None, "--key", help="TLS private key (PEM)."),
        log_format: LogFormat = LOG_FORMAT_OPT,
    ) -> None:
        """Serve the REST API (read-only) over a historian; setpoints need 'shopfloor up'."""
        from shopfloor.api import AuthStore, create_app, serve, server_config
        from shopfloor.cli._query import _open_existing
        from shopfloor.model import FactoryFileError, load_factory

        setup_logging(log_format, logging.INFO)
        try:
            model = load_factory(factory)
        except FactoryFileError as exc:
            err.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        path = _run_path(auth_db, db)
        if cert is None and not _loopback(host):
            err.print(
                f"[yellow]warning:[/] serving on {host} without TLS: tokens travel in clear "
                "text (give --cert and --key)",
                highlight=False,
            )

        async def work() -> None:
            async with _open_existing(db) as historian, AuthStore(path) as store:
                app_ = create_app(model, historian, store)
                config = server_config(app_, host, port, certfile=cert, keyfile=key)
                adopt_uvicorn()
                scheme = "https" if cert is not None else "http"
                err.print(
                    f"shopfloor API on {scheme}://{host}:{port}/api/v1 (OpenAPI: "
                    f"/api/v1/openapi.json), historian {db}, tokens in {path}",
                    highlight=False,
                )
                await serve(config)

        try:
            _run(work)
        except KeyboardInterrupt:
            err.print("stopped.")


# ------------------------------------------------------------------ the API beside the runtime

API_PORT_OPT = typer.Option(
    None, "--api-port", min=0, max=65535, help="Serve the REST API on this port (with setpoints)."
)
API_HOST_OPT = typer.Option("127.0.0.1", "--api-host", help="Address the API listens on.")
API_AUTH_DB_OPT = typer.Option(
    None, "--auth-db", help="API tokens (SQLite). Default: <historian file>.auth.sqlite."
)
API_CERT_OPT = typer.Option(None, "--api-cert", help="TLS certificate of the API (PEM).")
API_KEY_OPT = typer.Option(None, "--api-key", help="TLS private key of the API (PEM).")


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """The ``--api-*`` options of ``shopfloor up`` and ``demo``."""

    port: int
    host: str = "127.0.0.1"
    auth_db: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def api_options(
    port: int | None,
    host: str = "127.0.0.1",
    auth_db: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> ApiOptions | None:
    """The options, or ``None`` without ``--api-port``."""
    return None if port is None else ApiOptions(port, host, auth_db, cert, key)


@dataclass(frozen=True, slots=True)
class RunningApi:
    """The API served beside the runtime: where, and the app (to attach the runtime to)."""

    server: ApiServer
    app: FastAPI


async def start_api(
    stack: contextlib.AsyncExitStack,
    factory: Factory,
    historian: Historian,
    db: str,
    options: ApiOptions | None,
    clock: Callable[[], datetime] | None = None,
) -> RunningApi | None:
    """Serve the API until ``stack`` closes (``None`` without options).

    Start it *before* the runtime, so that a port in use, wrong TLS files or an unusable
    token store stop ``up`` with a plain :class:`ConfigError`; then :func:`attach_runtime`.
    ``clock`` is the factory's clock (default: the wall clock; ``demo`` gives the
    simulator's, see :func:`~shopfloor.api.create_app`).
    """
    from shopfloor.api import AuthError, AuthStore, create_app, running_server, server_config

    if options is None:
        return None
    try:
        store = await stack.enter_async_context(AuthStore(auth_path(options.auth_db, db)))
    except AuthError as exc:
        raise ConfigError(str(exc)) from exc
    app = create_app(factory, historian, store, clock=clock)
    config = server_config(
        app,
        options.host,
        options.port,
        certfile=options.cert,
        keyfile=options.key,
        log_level="warning",
    )
    adopt_uvicorn()
    server = await stack.enter_async_context(running_server(config))
    if options.cert is None and not _loopback(options.host):
        err.print(
            f"[yellow]warning:[/] the API listens on {options.host} without TLS: tokens travel "
            "in clear text (give --api-cert and --api-key)",
            highlight=False,
        )
    ws = server.url.replace("http", "ws", 1)
    err.print(
        f"REST API on {server.url}/api/v1, live stream {ws}/api/v1/live (tokens in "
        f"{store.path}; create one with 'shopfloor token create')",
        highlight=False,
    )
    return RunningApi(server, app)


def attach_runtime(
    stack: contextlib.AsyncExitStack, api: RunningApi | None, runtime: Runtime
) -> None:
    """Let the API write setpoints and acknowledge alarms through ``runtime``, and feed
    its live stream (``/api/v1/live``) from the runtime's pipeline and events.

    Call it right after entering the runtime into ``stack``: the runtime is detached again
    before it stops (requests then get 503, not errors of connectors shutting down).
    """
    if api is None:
        return
    ctx = api.app.state.ctx
    ctx.runtime = runtime
    stack.callback(setattr, ctx, "runtime", None)
    stack.callback(api.app.state.live.attach(runtime))

"""The web dashboard: the static files of ``shopfloor/web`` served at ``/`` beside the API.

``/`` answers the page (with a strict Content-Security-Policy: scripts, styles, fonts and
connections from this origin only), ``/web/…`` its modules, styles and the vendored font,
and ``/dashboard.json`` what the page needs to know of this server before it has a token:
the API prefix, whether the WebSocket live stream is there, the version, the unit
symbols (the UN/CEFACT table plus the factory file's own units) and the factory's clock
(``now_ms``, epoch milliseconds at answer time, and ``speed``, its seconds per real second:
a simulated factory may run ahead of the wall clock). Everything else the page reads
through the API with the user's token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from starlette.routing import NoMatchFound
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from shopfloor import __version__
from shopfloor.api._deps import ApiContext
from shopfloor.model import UNITS, Factory

__all__ = ["LIVE_PATH", "WEB_DIR", "install_dashboard"]

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"
"""The dashboard's static files (package data of ``shopfloor``)."""

LIVE_PATH: Final = "/api/v1/live"
"""The WebSocket live stream the page uses when the app serves it (REST polling otherwise)."""

_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; font-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'; object-src 'none'"
)
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


class _StaticFiles(StaticFiles):
    """Static files revalidated on every load (an upgrade never runs stale modules)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"cache-control", b"no-cache"))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, with_headers)


def _has_live(app: FastAPI) -> bool:
    """Whether ``app`` serves the WebSocket live stream (a route named ``live`` there)."""
    try:
        return str(app.url_path_for("live")) == LIVE_PATH
    except NoMatchFound:
        return False


def _units(factory: Factory) -> dict[str, list[str]]:
    table = {code: [name, symbol] for code, (name, symbol) in UNITS.items()}
    for code, unit in factory.document.units.items():
        table[code] = [unit.name, unit.symbol]
    return table


def install_dashboard(app: FastAPI, factory: Factory, api_prefix: str) -> None:
    """Serve the dashboard at ``/`` on ``app`` (the API keeps every path under ``api_prefix``).

    Raises :class:`FileNotFoundError` when the package was installed without its web files.
    """
    index = WEB_DIR / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"the dashboard's files are missing: no {index}")
    units = _units(factory)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=_PAGE_HEADERS)

    @app.get("/dashboard.json", include_in_schema=False)
    async def dashboard_config() -> JSONResponse:
        live = LIVE_PATH.removeprefix("/") if _has_live(app) else None
        ctx: ApiContext = app.state.ctx
        body = {
            "version": __version__,
            "api": api_prefix.removeprefix("/"),
            "live": live,
            "units": units,
            "now_ms": round(ctx.now().timestamp() * 1000),
            "speed": ctx.speed,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-cache"})

    app.mount("/web", _StaticFiles(directory=WEB_DIR), name="web")

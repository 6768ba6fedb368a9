"""The application factory: one FastAPI app over a factory model, a historian and tokens."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from fastapi import FastAPI

from shopfloor import __version__
from shopfloor.api._audit import AuditMiddleware
from shopfloor.api._auth import AuthStore
from shopfloor.api._deps import ApiContext, ApiLimits, Clock, wall_clock
from shopfloor.api._live import LiveHub
from shopfloor.api._metrics import install_metrics
from shopfloor.api._problems import install_problem_handlers, problem_openapi
from shopfloor.historian.base import Historian
from shopfloor.model import Factory

if TYPE_CHECKING:
    from shopfloor.runtime import Runtime

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"
"""Every route lives under this prefix; the OpenAPI document is ``/api/v1/openapi.json``."""

_DESCRIPTION = """\
The shopfloor REST API: the asset tree and its signals, history (raw and downsampled),
latest values, KPIs (OEE, losses, ISO 22400), events with downtime reasons, dead letters,
setpoint writes and exports (CSV, Parquet).

**Tokens**: send `Authorization: Bearer <token>` (create one with `shopfloor token create`).
Scopes are ordered: `read` (every GET) < `operate` (downtime reasons, acknowledging,
setpoints, recording downtime) < `admin` (the audit log). Each token is limited to asset
subtrees: a request that names an asset, signal or event outside them gets 403 (before any
lookup, so it reveals nothing); lists leave out what lies outside.

**Errors** are RFC 9457 problem details (`application/problem+json`).
**Lists** are paged: `limit` (bounded) and `cursor` (the previous page's `next_cursor`).
"""


def _connection_assets(factory: Factory) -> dict[str, tuple[str, ...]]:
    """Per connection: the equipment bound to it and the area it creates devices under."""
    out: dict[str, set[str]] = defaultdict(set)
    for s in factory.signals():
        if s.binding is not None:
            out[s.binding.connection].add(s.asset_path)
    for name, conn in factory.connections.items():
        area = conn.options.get("auto_area")
        if area is not None:
            out[name].add(str(area).strip("/"))
    return {name: tuple(sorted(paths)) for name, paths in out.items()}


def create_app(
    factory: Factory,
    historian: Historian,
    auth: AuthStore,
    *,
    runtime: Runtime | None = None,
    limits: ApiLimits | None = None,
    live: LiveHub | None = None,
    clock: Clock | None = None,
    speed: float = 1.0,
) -> FastAPI:
    """The API over ``factory`` and ``historian``, authorised by the tokens in ``auth``.

    The caller opens ``historian`` and ``auth`` (and keeps them open while the app serves).
    With a ``runtime`` (inside ``shopfloor up``) setpoint writes go to its connectors;
    without, the server is read-only over the historian and setpoint writes answer 503.
    The live stream (``/api/v1/live``) is fed by ``live`` (a :class:`LiveHub` over
    ``historian`` by default), kept in ``app.state.live``; with a ``runtime`` the hub
    observes it at once, otherwise :meth:`LiveHub.attach` it to one later.

    ``clock`` is the factory's clock (default: the wall clock, UTC), what "now" means for
    data: relative times (``-1h``), the default end of a range, the end KPIs are computed
    to. Give the simulator's clock when the data is stamped with simulated time; ``speed``
    (its seconds per real second) lets the dashboard run its own clock alongside. Both are
    kept in ``app.state.ctx`` and may be replaced there while the app serves. Tokens,
    audit entries, shares and setpoint writes always use the wall clock.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    clock = clock or wall_clock
    if clock().tzinfo is None:
        raise ValueError("the clock must return timezone-aware datetimes")
    from shopfloor.api import (
        _aas_routes,
        _data_routes,
        _event_routes,
        _export_routes,
        _kpi_routes,
        _live,
        _model_routes,
        _setpoint_routes,
        _share_routes,
        _system_routes,
    )

    app = FastAPI(
        title="shopfloor",
        version=__version__,
        description=_DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        swagger_ui_oauth2_redirect_url=f"{API_PREFIX}/docs/oauth2-redirect",
        redoc_url=None,
    )
    app.state.ctx = ApiContext(
        factory=factory,
        historian=historian,
        auth=auth,
        runtime=runtime,
        limits=limits or ApiLimits(),
        connection_assets=_connection_assets(factory),
        clock=clock,
        speed=float(speed),
    )
    app.state.live = live if live is not None else LiveHub(historian)
    if runtime is not None:
        app.state.live.attach(runtime)
    install_problem_handlers(app)
    app.add_middleware(AuditMiddleware, auth=auth)
    install_metrics(app, app.state.ctx)
    for module in (
        _system_routes,
        _model_routes,
        _data_routes,
        _kpi_routes,
        _event_routes,
        _setpoint_routes,
        _export_routes,
        _live,
        _share_routes,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    app.mount(_aas_routes.AAS_PREFIX, _aas_routes.aas_app(app.state.ctx))
    problem_openapi(app)
    from shopfloor.api._web import install_dashboard

    install_dashboard(app, factory, API_PREFIX)
    return app

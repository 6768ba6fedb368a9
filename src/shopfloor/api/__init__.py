"""The REST API (FastAPI), versioned under ``/api/v1`` with its OpenAPI document at
``/api/v1/openapi.json``.

:func:`create_app` builds the app over a factory model, an open historian and an open
security store (:class:`AuthStore`: hashed tokens with scopes and asset subtrees, and the
append-only audit log); with a :class:`~shopfloor.runtime.Runtime` it also writes setpoints
to devices. :class:`LiveHub` feeds the live WebSocket stream (``/api/v1/live``) from the
pipeline. :func:`server_config`, :func:`serve` and :func:`running_server` run it with
uvicorn (TLS when a certificate is given). Errors are RFC 9457 problem details; every list
is paged and bounded (:class:`ApiLimits`). :class:`ShareStore` keeps the data shares offered
to partner organisations (:class:`Share`: a data product at a :class:`ShareLevel`, read with
its own share token under ``/api/v1/shared/…``).
"""

from __future__ import annotations

from shopfloor.api._app import API_PREFIX, create_app
from shopfloor.api._auth import (
    AuditEntry,
    AuthError,
    AuthStore,
    NewToken,
    Scope,
    TokenInfo,
    covers,
    default_auth_path,
)
from shopfloor.api._deps import ApiLimits
from shopfloor.api._live import LiveHub, LiveStats
from shopfloor.api._problems import PROBLEM_TYPES, Problem, ProblemType
from shopfloor.api._server import ApiServer, running_server, serve, server_config
from shopfloor.api._shares import NewShare, Share, ShareError, ShareLevel, ShareProduct, ShareStore

__all__ = [
    "API_PREFIX",
    "PROBLEM_TYPES",
    "ApiLimits",
    "ApiServer",
    "AuditEntry",
    "AuthError",
    "AuthStore",
    "LiveHub",
    "LiveStats",
    "NewShare",
    "NewToken",
    "Problem",
    "ProblemType",
    "Scope",
    "Share",
    "ShareError",
    "ShareLevel",
    "ShareProduct",
    "ShareStore",
    "TokenInfo",
    "covers",
    "create_app",
    "default_auth_path",
    "running_server",
    "serve",
    "server_config",
]

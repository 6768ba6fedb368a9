"""The middleware that writes one audit row per request that presented a token.

The row is written when the response starts and *before* it is sent: no client ever sees
the answer to a write that is not in the audit log. Requests without any token are not
logged (probes and scanners would flood the log); requests with a wrong, expired or
revoked token are, with the id they claimed.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopfloor.api._auth import AuthStore
from shopfloor.api._problems import internal_error_response

__all__ = ["AuditMiddleware"]

log = logging.getLogger(__name__)


class AuditMiddleware:
    """Pure ASGI middleware: audit rows from what the auth dependency left in the request state.

    The auth dependency sets ``state.audit_token`` (the token id, or ``None`` for a
    malformed token) whenever a token was presented; routes that write add
    ``state.audit_detail`` (what they wrote); error handlers add ``state.audit_problem``.
    """

    def __init__(self, app: ASGIApp, auth: AuthStore) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        started = False

        async def audited_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                await self._write(scope, state, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if started:
                raise
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            response = internal_error_response(Request(scope, receive))
            await response(scope, receive, audited_send)

    async def _write(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        if "audit_token" not in state:
            return
        detail: dict[str, Any] = {}
        if state.get("audit_detail"):
            detail.update(state["audit_detail"])
        if state.get("audit_problem") and status >= 400:
            detail["problem"] = state["audit_problem"]
        path = scope.get("path", "")
        query = scope.get("query_string", b"")
        if query:
            path += "?" + query.decode("latin-1")
        client = scope.get("client")
        await self.auth.audit(
            state["audit_token"],
            str(scope.get("method", "")),
            path,
            status,
            client=None if not client else str(client[0]),
            detail=detail or None,
        )

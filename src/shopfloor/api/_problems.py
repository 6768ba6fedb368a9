"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error response of the API is a problem object ``{type, title, status, detail,
instance}`` (plus extension members such as ``errors`` for invalid requests). ``type`` is
``about:blank`` when the status code says everything (an unknown route, a wrong method) and
otherwise a problem type of this API, ``/api/v1/problems/<slug>``, a URI reference that
resolves to a short description of the problem type (served without a token).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopfloor.errors import HistorianError, UnknownSignalError

__all__ = [
    "PROBLEMS_PATH",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPES",
    "Problem",
    "ProblemError",
    "ProblemResponse",
    "ProblemType",
    "install_problem_handlers",
    "internal_error_response",
    "problem_openapi",
    "problem_responses",
]

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEMS_PATH: Final = "/api/v1/problems/"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One problem type of this API: its slug (``type`` = ``/api/v1/problems/<slug>``)."""

    slug: str
    status: int
    title: str
    description: str

    @property
    def uri(self) -> str:
        """The ``type`` member of problems of this type."""
        return PROBLEMS_PATH + self.slug


PROBLEM_TYPES: Final[dict[str, ProblemType]] = {
    t.slug: t
    for t in (
        ProblemType(
            "unauthorized",
            401,
            "Authentication required",
            "The request carries no token, or the token is unknown, expired or revoked. Send "
            "'Authorization: Bearer <token>' with a token from 'shopfloor token create'.",
        ),
        ProblemType(
            "insufficient-scope",
            403,
            "Insufficient scope",
            "The token's scope does not allow this request. Scopes are ordered: read (every "
            "GET), operate (acknowledge, downtime reasons, setpoints), admin (audit log).",
        ),
        ProblemType(
            "outside-subtree",
            403,
            "Outside the token's subtrees",
            "The request names an asset, signal or event outside the asset subtrees the token "
            "is limited to. The check comes before any lookup, so the answer says nothing of "
            "whether the thing exists. Lists leave out what lies outside instead.",
        ),
        ProblemType(
            "share-token",
            403,
            "Share token",
            "A share token reads only its own data product under /api/v1/shared/{share}: "
            "every other route answers 403. The /shared routes, in turn, take share tokens "
            "only (create one with 'shopfloor share create').",
        ),
        ProblemType(
            "outside-share",
            403,
            "Outside the share",
            "The request asks for more than the share offers: another share, signals or "
            "assets it does not select, another aggregation level (e.g. raw values of a "
            "share of hourly aggregates) or times outside its window. Checked before any "
            "lookup, so the answer says nothing of whether the thing exists.",
        ),
        ProblemType(
            "share-inactive",
            403,
            "Share expired or revoked",
            "The share this token belongs to has expired or was revoked: its data is no "
            "longer offered. Ask the data owner for a new share.",
        ),
        ProblemType(
            "not-found",
            404,
            "Not found",
            "The asset, signal, type or event named does not exist (within the token's subtrees).",
        ),
        ProblemType(
            "invalid-request",
            422,
            "Invalid request",
            "A parameter or the body is malformed or out of range; 'errors' lists each problem "
            "with its location.",
        ),
        ProblemType(
            "too-large",
            422,
            "Result too large",
            "The request would produce more rows or buckets than the server allows: narrow the "
            "time range, choose a wider bucket or page through the result.",
        ),
        ProblemType(
            "setpoint-rejected",
            422,
            "Setpoint rejected",
            "The value does not fit the signal: it is not a bound setpoint, the value does not "
            "have the signal's data type, or it lies outside the signal's limits.",
        ),
        ProblemType(
            "not-supported",
            422,
            "Not supported",
            "The operation does not apply to this thing (e.g. a downtime reason for an alarm).",
        ),
        ProblemType(
            "conflict",
            409,
            "Conflict",
            "The thing is not in a state that allows this (e.g. an alarm that is already "
            "acknowledged, or an occurrence that is over).",
        ),
        ProblemType(
            "runtime-unavailable",
            503,
            "No live connection",
            "The server runs without connectors (read-only over a historian file), or the "
            "device connection this needs is not running.",
        ),
        ProblemType(
            "device-error",
            502,
            "Device error",
            "The connector could not deliver the write: the device is disconnected or refused.",
        ),
        ProblemType(
            "not-ready",
            503,
            "Not ready",
            "The historian does not answer or the pipeline is not running.",
        ),
        ProblemType(
            "historian-error",
            500,
            "Historian error",
            "The historian could not answer the query.",
        ),
        ProblemType(
            "internal-error",
            500,
            "Internal error",
            "An unexpected error; the server log has the details.",
        ),
    )
}
"""Every problem type this API uses, by slug."""


class Problem(BaseModel):
    """An RFC 9457 problem details object (extension members are allowed)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="URI reference of the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong this time.")
    instance: str | None = Field(default=None, description="The request path.")


class ProblemResponse(JSONResponse):
    """A JSON response with the ``application/problem+json`` media type."""

    media_type = PROBLEM_MEDIA_TYPE


class ProblemError(Exception):
    """Raise in a route to answer with a problem of type ``slug``.

    ``extensions`` become extra members of the problem object.
    """

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.problem_type = PROBLEM_TYPES[slug]
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    @property
    def status(self) -> int:
        """The HTTP status of the problem."""
        return self.problem_type.status


def _respond(
    request: Request,
    status: int,
    title: str,
    detail: str | None,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body["instance"] = request.url.path
    body.update(extensions)
    # Tell the audit log why the request failed.
    request.state.audit_problem = {"title": title, "detail": detail}
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def _from_problem(request: Request, exc: ProblemError) -> ProblemResponse:
    t = exc.problem_type
    return _respond(request, t.status, t.title, exc.detail, t.uri, exc.headers, **exc.extensions)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "header", "body"):
        where = {
            "query": "query parameter",
            "path": "path parameter",
            "header": "header",
            "body": "body field",
        }[parts[0]]
        rest = ".".join(parts[1:])
        return f"{where} {rest!r}" if rest else where
    return ".".join(parts)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem details object."""

    async def problem(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, ProblemError)
        return _from_problem(request, exc)

    async def http_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, StarletteHTTPException)
        try:
            title = HTTPStatus(exc.status_code).phrase
        except ValueError:
            title = "Error"
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return _respond(request, exc.status_code, title, detail, headers=exc.headers)

    async def invalid(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"location": _location(e.get("loc", ())), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
        t = PROBLEM_TYPES["invalid-request"]
        return _respond(request, t.status, t.title, detail, t.uri, errors=errors)

    async def unknown_signal(request: Request, exc: Exception) -> ProblemResponse:
        t = PROBLEM_TYPES["not-found"]
        return _respond(request, t.status, t.title, str(exc), t.uri)

    async def historian(request: Request, exc: Exception) -> ProblemResponse:
        log.warning("historian error on %s: %s", request.url.path, exc)
        t = PROBLEM_TYPES["historian-error"]
        return _respond(request, t.status, t.title, str(exc), t.uri)

    app.add_exception_handler(ProblemError, problem)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(UnknownSignalError, unknown_signal)
    app.add_exception_handler(HistorianError, historian)


def internal_error_response(request: Request) -> ProblemResponse:
    """The problem sent for an unexpected exception (the audit middleware's last resort)."""
    t = PROBLEM_TYPES["internal-error"]
    return _respond(request, t.status, t.title, t.description, t.uri)


def problem_openapi(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document show error responses as ``application/problem+json``.

    FastAPI files a response model under ``application/json``; error responses here are
    problem details, so their schema moves to the problem media type.
    """
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        for item in schema.get("paths", {}).values():
            for op in item.values():
                for status, response in op.get("responses", {}).items():
                    content = response.get("content", {})
                    if str(status)[:1] in ("4", "5") and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        titles = sorted({t.title for t in PROBLEM_TYPES.values() if t.status == status})
        out[status] = {
            "description": " / ".join(titles) or HTTPStatus(status).phrase,
            "model": Problem,
        }
    return out

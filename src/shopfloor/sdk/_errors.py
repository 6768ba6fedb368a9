"""The SDK's exceptions: a problem answered by the server, or no answer at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shopfloor.errors import ShopfloorError

__all__ = ["ApiError", "ClientError", "LiveError", "ProblemDetails", "TransportError"]

_MEMBERS: Final = ("type", "title", "status", "detail", "instance")


@dataclass(frozen=True, slots=True)
class ProblemDetails:
    """An RFC 9457 problem as the server sent it (``application/problem+json``).

    ``type`` names the problem type (``/api/v1/problems/<slug>``, or ``about:blank``);
    ``extensions`` holds the other members (e.g. ``errors`` of an invalid request).
    """

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The last segment of ``type``: ``not-found``, ``unauthorized``, ``too-large`` …"""
        return self.type.rstrip("/").rsplit("/", 1)[-1]

    @classmethod
    def from_json(cls, body: Any, status: int, reason: str = "") -> ProblemDetails:
        """The problem in a decoded JSON body; a stand-in when the body is not a problem."""
        if not isinstance(body, dict):
            text = None if body is None else str(body)[:500]
            return cls("about:blank", reason or f"HTTP {status}", status, text)
        return cls(
            type=str(body.get("type") or "about:blank"),
            title=str(body.get("title") or reason or f"HTTP {status}"),
            status=int(body.get("status") or status),
            detail=None if body.get("detail") is None else str(body["detail"]),
            instance=None if body.get("instance") is None else str(body["instance"]),
            extensions={k: v for k, v in body.items() if k not in _MEMBERS},
        )


class ClientError(ShopfloorError):
    """Base of the errors the SDK raises."""


class ApiError(ClientError):
    """The server answered with an error; :attr:`problem` is what it said (RFC 9457)."""

    def __init__(self, problem: ProblemDetails, method: str = "", url: str = "") -> None:
        where = f" ({method} {url})" if method else ""
        detail = f": {problem.detail}" if problem.detail else ""
        super().__init__(f"{problem.status} {problem.title}{detail}{where}")
        self.problem = problem
        self.method = method
        self.url = url

    @property
    def status(self) -> int:
        """The HTTP status code (401, 403, 404, 422 …)."""
        return self.problem.status


class TransportError(ClientError):
    """The server could not be reached, or the connection broke before an answer."""


class LiveError(ClientError):
    """The live stream ended abnormally (e.g. the server dropped a slow consumer)."""

    def __init__(self, message: str, *, code: int | None = None, dropped: int = 0) -> None:
        super().__init__(message)
        self.code = code
        """The WebSocket close code, when the server closed the stream."""
        self.dropped = dropped
        """Values the server dropped before it closed a slow consumer."""

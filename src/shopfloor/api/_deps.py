"""What every route needs: the application context, the caller's token, times and pages."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final

import pyarrow as pa
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError

from shopfloor.api._auth import AuthStore, Scope, TokenInfo
from shopfloor.api._catalog import model_catalog, type_out
from shopfloor.api._problems import ProblemError
from shopfloor.api._schemas import AssetTypeOut
from shopfloor.api._shares import ShareStore, is_share_token
from shopfloor.historian.base import Historian
from shopfloor.model import Factory

if TYPE_CHECKING:
    from shopfloor.runtime import Runtime

__all__ = [
    "ApiContext",
    "ApiLimits",
    "Clock",
    "Ctx",
    "Cursor",
    "Limit",
    "Range",
    "TimeRange",
    "bucket_width",
    "check_path",
    "decode_cursor",
    "encode_cursor",
    "next_link",
    "page_limit",
    "parse_duration",
    "parse_time",
    "require",
    "wall_clock",
]

Clock = Callable[[], datetime]
"""A clock: returns the current time, timezone-aware."""


def wall_clock() -> datetime:
    """The wall clock in UTC (the default clock of the API)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """Upper bounds of what one request may ask for."""

    page_default: int = 100
    """Items per page of a list when ``limit`` is not given."""
    page_max: int = 1000
    """The largest ``limit`` of a list."""
    samples_default: int = 10_000
    """Samples (or buckets) per page of a history when ``limit`` is not given."""
    samples_max: int = 100_000
    """The largest ``limit`` of a history page."""
    buckets_max: int = 1_000_000
    """The most buckets one downsampled history or export may span."""
    export_rows_max: int = 5_000_000
    """The most rows one export may hold."""


@dataclass(slots=True)
class ApiContext:
    """Everything the routes share: model, historian, security store, optional runtime.

    ``clock`` is the factory's clock: what "now" means for data (the default end of a
    time range, relative times like ``-1h``, the end KPIs and downtime are computed to).
    It is the wall clock, except beside a simulated factory that runs faster (``shopfloor
    demo``), whose data is stamped with simulated time. Token expiry, audit entries, shares
    and setpoint writes are about people and always use the wall clock.
    """

    factory: Factory
    historian: Historian
    auth: AuthStore
    runtime: Runtime | None = None
    limits: ApiLimits = field(default_factory=ApiLimits)
    connection_assets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per connection: the asset paths it serves (for the subtree rule of dead letters)."""
    clock: Clock = wall_clock
    """The factory's clock (see the class doc); it may be replaced while the app serves."""
    speed: float = 1.0
    """How fast ``clock`` runs: its seconds per real second (told to the dashboard)."""
    catalog: pa.Table = field(init=False)
    """The model's signals (:func:`~shopfloor.api._catalog.model_catalog`)."""
    types: dict[str, AssetTypeOut] = field(init=False)
    """The model's asset types, merged with their ancestors."""

    def __post_init__(self) -> None:
        self.catalog = model_catalog(self.factory)
        self.types = type_out(self.factory)

    def now(self) -> datetime:
        """The factory's current time: ``clock()`` as aware UTC."""
        return self.clock().astimezone(UTC)

    @property
    def root(self) -> str:
        """The enterprise path, the root of the asset tree."""
        return self.factory.document.enterprise.id


def _context(request: Request) -> ApiContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx


Ctx = Annotated[ApiContext, Depends(_context)]
"""The application context as a route parameter."""

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `shopfloor token create` (sent as a Bearer token).",
)


def require(scope: Scope) -> Callable[..., Awaitable[TokenInfo]]:
    """A dependency: the caller's token, which must be valid and include ``scope``.

    No token, or an unknown, expired or revoked one: 401. A valid token without the scope:
    403. Every token presented is recorded in the audit log (see :mod:`._audit`).
    """

    async def dependency(
        request: Request,
        ctx: Ctx,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> TokenInfo:
        challenge = {"WWW-Authenticate": 'Bearer realm="shopfloor"'}
        if credentials is None:
            raise ProblemError(
                "unauthorized", "no token: send 'Authorization: Bearer <token>'", headers=challenge
            )
        claimed, info = await ctx.auth.authenticate(credentials.credentials)
        request.state.audit_token = claimed
        if info is None and is_share_token(credentials.credentials):
            # A partner's share token: authentic or not, it never opens these routes.
            share_id, share = await ShareStore(ctx.auth).authenticate(credentials.credentials)
            request.state.audit_token = share_id
            if share is not None:
                raise ProblemError(
                    "share-token",
                    f"a share token reads only its share under /api/v1/shared/{share.id}",
                )
        if info is None:
            raise ProblemError("unauthorized", "the token is not valid", headers=challenge)
        state = info.state()
        if state != "active":
            raise ProblemError("unauthorized", f"the token is {state}", headers=challenge)
        if not info.scope.includes(scope):
            raise ProblemError(
                "insufficient-scope",
                f"this needs the {scope.value} scope; the token has {info.scope.value}",
                required=scope.value,
            )
        request.state.token = info
        return info

    dependency.__name__ = f"require_{scope.value}"
    return dependency


def check_path(token: TokenInfo, path: str, what: str = "asset") -> None:
    """403 unless ``path`` lies in the token's subtrees (checked before any lookup)."""
    if not token.allows(path):
        raise ProblemError(
            "outside-subtree",
            f"{what} {path!r} is outside this token's subtrees ({', '.join(token.subtrees)})",
        )


# ------------------------------------------------------------------ times

_UNITS: Final = {
    "us": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d|w)")
_TIMEDELTA: Final = TypeAdapter(timedelta)


def parse_duration(text: str) -> timedelta:
    """``500ms``, ``10s``, ``15m``, ``1h``, ``7d``, sums like ``1h30m``, or ISO 8601 ``PT15M``."""
    s = text.strip().lower()
    pos, total = 0, timedelta()
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if s and pos == len(s):
        return total
    try:
        return _TIMEDELTA.validate_python(text.strip().upper())
    except ValidationError:
        raise ValueError(
            f"not a duration: {text!r} (use e.g. 500ms, 10s, 15m, 1h, 1d or ISO 8601 PT15M)"
        ) from None


def parse_time(text: str, now: datetime) -> datetime:
    """``now``, a time relative to now (``-1h``, ``+5m``) or ISO 8601 (no zone = UTC)."""
    s = text.strip()
    if s.lower() == "now":
        return now
    if s[:1] in "+-" and not re.match(r"^[+-]\d{4}-", s):
        delta = parse_duration(s[1:])
        return now - delta if s[0] == "-" else now + delta
    try:
        ts = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use ISO 8601, 'now', or relative like -1h, -7d)"
        ) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _invalid(name: str, message: str) -> ProblemError:
    return ProblemError(
        "invalid-request",
        f"query parameter {name!r}: {message}",
        errors=[{"location": f"query parameter {name!r}", "message": message}],
    )


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open range ``[start, end)`` of aware UTC datetimes."""

    start: datetime
    end: datetime


def _time_range(
    ctx: Ctx,
    start: Annotated[
        str | None,
        Query(
            description="Start: ISO 8601 (no zone = UTC), 'now' or relative (-1h). Default: "
            "one hour before the end."
        ),
    ] = None,
    end: Annotated[
        str | None, Query(description="End (exclusive), same forms as start. Default: now.")
    ] = None,
) -> TimeRange:
    now = ctx.now()
    try:
        e = parse_time(end, now) if end is not None else now
    except ValueError as exc:
        raise _invalid("end", str(exc)) from None
    try:
        s = parse_time(start, now) if start is not None else e - timedelta(hours=1)
    except ValueError as exc:
        raise _invalid("start", str(exc)) from None
    if e <= s:
        raise _invalid("end", f"must be after start ({s.isoformat()})")
    return TimeRange(s, e)


Range = Annotated[TimeRange, Depends(_time_range)]
"""``start``/``end`` query parameters as a route parameter."""


def bucket_width(bucket: str | None) -> timedelta | None:
    """The ``bucket`` query parameter as a positive duration (``None`` when absent)."""
    if bucket is None:
        return None
    try:
        width = parse_duration(bucket)
    except ValueError as exc:
        raise _invalid("bucket", str(exc)) from None
    if width <= timedelta(0):
        raise _invalid("bucket", "must be positive")
    return width


# ------------------------------------------------------------------ pages


def encode_cursor(position: Mapping[str, Any]) -> str:
    """An opaque cursor for ``position`` (URL safe)."""
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The position in ``cursor`` (``None`` when absent); 422 when it is not one of ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _invalid("cursor", "not a cursor of this API (pass next_cursor unchanged)") from None
    if not isinstance(value, dict) or set(value) != set(keys):
        raise _invalid("cursor", "not a cursor of this list (pass next_cursor unchanged)")
    return value


def page_limit(limit: int | None, default: int, maximum: int) -> int:
    """``limit`` or ``default``; 422 outside ``1..maximum``."""
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise _invalid("limit", f"must be between 1 and {maximum}, got {limit}")
    return limit


def next_link(request: Request, cursor: str | None) -> str | None:
    """The URL of the next page: this request's URL with ``cursor`` replaced."""
    if cursor is None:
        return None
    return str(request.url.include_query_params(cursor=cursor))


Limit = Annotated[
    int | None, Query(description="Items per page (bounded by the server's maximum).")
]
Cursor = Annotated[
    str | None, Query(description="Where to continue: the next_cursor of the previous page.")
]

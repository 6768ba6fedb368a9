"""Health, readiness, the caller's token, problem types and the audit log."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._deps import (
    Ctx,
    Cursor,
    Limit,
    decode_cursor,
    encode_cursor,
    next_link,
    page_limit,
    require,
)
from shopfloor.api._problems import PROBLEM_TYPES, ProblemError, problem_responses
from shopfloor.api._schemas import AuditOut, Health, Me, Page, ProblemTypeOut, Readiness

__all__ = ["READY_TIMEOUT_S", "router"]

router = APIRouter(tags=["system"])

READY_TIMEOUT_S = 5.0
"""How long the historian may take to answer the readiness probe."""


@router.get("/health", response_model=Health, summary="Liveness (no token needed)")
async def health() -> Health:
    """The process answers. Needs no token, so that probes can call it."""
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness (no token needed)",
    responses=problem_responses(503),
)
async def ready(ctx: Ctx) -> Readiness:
    """The historian answers (and, inside ``shopfloor up``, the pipeline runs). No token:
    it tells counts only, nothing of the factory."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await ctx.historian.signals()
    except TimeoutError:
        raise ProblemError("not-ready", "the historian does not answer") from None
    except Exception as exc:
        raise ProblemError("not-ready", f"the historian fails: {type(exc).__name__}") from None
    rt = ctx.runtime
    if rt is not None and rt.pipeline is None:
        raise ProblemError("not-ready", "the pipeline is not running")
    connectors = rt.connectors if rt is not None else []
    return Readiness(
        status="ready",
        historian=type(ctx.historian).__name__,
        runtime=rt is not None,
        connectors_total=len(connectors),
        connectors_connected=sum(c.status.state == "connected" for c in connectors),
    )


@router.get(
    "/problems/{slug}",
    response_model=ProblemTypeOut,
    summary="A problem type (no token needed)",
    responses=problem_responses(404),
)
async def problem_type(slug: str) -> ProblemTypeOut:
    """What a problem ``type`` of this API means (the ``type`` URIs resolve here)."""
    t = PROBLEM_TYPES.get(slug)
    if t is None:
        raise ProblemError("not-found", f"no problem type {slug!r}")
    return ProblemTypeOut(type=t.uri, status=t.status, title=t.title, description=t.description)


@router.get("/me", response_model=Me, summary="The token in use", responses=problem_responses(401))
async def me(token: Annotated[TokenInfo, Depends(require(Scope.read))]) -> Me:
    """The token the request carries: scope, subtrees, expiry."""
    return Me(
        id=token.id,
        name=token.name,
        scope=token.scope.value,
        subtrees=list(token.subtrees),
        created_at=token.created_at,
        expires_at=token.expires_at,
    )


@router.get(
    "/audit",
    response_model=Page[AuditOut],
    summary="The audit log (admin)",
    responses=problem_responses(401, 403, 422),
)
async def audit(
    request: Request,
    ctx: Ctx,
    token: Annotated[TokenInfo, Depends(require(Scope.admin))],
    token_id: Annotated[str | None, Query(description="Only rows of this token.")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[AuditOut]:
    """Audit rows, newest first. Needs the admin scope on the whole tree (the log spans
    every subtree)."""
    if not token.allows(ctx.root):
        raise ProblemError(
            "outside-subtree",
            f"the audit log spans the whole tree: it needs a token for {ctx.root!r}",
        )
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    pos = decode_cursor(cursor, ("before",))
    entries = await ctx.auth.audit_entries(
        before=None if pos is None else int(pos["before"]), token_id=token_id, limit=n + 1
    )
    nxt = encode_cursor({"before": entries[n - 1].seq}) if len(entries) > n else None
    return Page[AuditOut](
        items=[
            AuditOut(
                seq=e.seq,
                ts=e.ts,
                token_id=e.token_id,
                method=e.method,
                path=e.path,
                status=e.status,
                client=e.client,
                detail=e.detail,
            )
            for e in entries[:n]
        ],
        next_cursor=nxt,
        next=next_link(request, nxt),
    )

"""Data shares: the admin routes that manage them and the partner routes that read them.

``/shares`` (admin scope, for shares whose selectors lie in the token's subtrees): list,
create (the answer holds the share token, once), show, revoke. ``/shared/{share}`` (share
tokens only): the product's description, and its data at the shared level as JSON (paged
columns), CSV or Parquet, with the columns of the open exports
(:mod:`shopfloor.export`). Everything else answers a share token with 403 (see
:func:`~shopfloor.api._deps.require`); a normal token on the ``/shared`` routes gets 403 too.
Every attempt, allowed or not, is in the audit log under the share's id.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.analytics import oee
from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._catalog import signal_catalog
from shopfloor.api._data_routes import NUMERIC, iso_column, json_values
from shopfloor.api._deps import (
    ApiContext,
    Ctx,
    Cursor,
    Limit,
    decode_cursor,
    encode_cursor,
    next_link,
    page_limit,
    parse_duration,
    parse_time,
    require,
)
from shopfloor.api._problems import ProblemError, problem_responses
from shopfloor.api._schemas import Page
from shopfloor.api._shares import (
    Share,
    ShareError,
    ShareLevel,
    ShareProduct,
    ShareStore,
    check_selector,
    is_share_token,
    selector_prefix,
)
from shopfloor.edge.batch import TS_TYPE
from shopfloor.export._csv import csv_bytes, csv_header
from shopfloor.export._dictionary import table_entry
from shopfloor.export._tables import (
    AGGREGATES,
    HISTORY,
    SHARED_OEE,
    TableDoc,
    aggregate_table,
    history_table,
    shared_oee_table,
)

__all__ = ["router"]

router = APIRouter(tags=["shares"])

Admin = Annotated[TokenInfo, Depends(require(Scope.admin))]
Format = Literal["json", "csv", "parquet"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_MEDIA: Final = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
_MAX_CALLS: Final = 64
"""Historian queries one JSON page may make before it returns what it has."""

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="share token",
    description="A partner's share token from `shopfloor share create` (Bearer).",
)


# ------------------------------------------------------------------ bodies


class ShareIn(BaseModel):
    """A share to create."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The data product's name (unique, e.g. supplier-x-oee).")
    partner: str = Field(min_length=1, max_length=200, description="The partner organisation.")
    purpose: str = Field(min_length=1, max_length=1000, description="What the data is for.")
    select: list[str] = Field(
        min_length=1,
        description="Asset or signal paths or patterns ('*' one segment, '**' any).",
    )
    level: str = Field(
        description="'raw', a bucket width of at least 1m ('15m', '1h', '1d': min, max, avg, "
        "count per bucket) or 'oee:hour', 'oee:day', 'oee:shift'."
    )
    start: datetime = Field(description="Start of the shared window (no zone = UTC).")
    end: datetime | None = Field(default=None, description="End (exclusive); null: open.")
    expires_at: datetime | None = Field(default=None, description="When the share ends.")
    expires_in: str | None = Field(default=None, description="Or: how long it lives (30d).")


class ShareOut(BaseModel):
    """A share as stored (never its token)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    partner: str
    purpose: str
    select: list[str]
    level: str
    start: datetime
    end: datetime | None
    state: Literal["active", "expired", "revoked"]
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    url: str = Field(description="Where the partner reads it (with the share token).")


class ShareCreated(BaseModel):
    """A new share and its token (shown this once; only its hash is kept)."""

    model_config = ConfigDict(frozen=True)

    share: ShareOut
    token: str


class ColumnOut(BaseModel):
    """A column of the shared data."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    nullable: bool
    unit: str | None
    description: str


class SharedItem(BaseModel):
    """A signal (raw and aggregate shares) or an asset (OEE shares) of the product."""

    model_config = ConfigDict(frozen=True)

    path: str
    data_type: str | None = None
    unit: str | None = None
    kind: str | None = None
    description: str | None = None
    semantic_id: str | None = None
    level: str | None = Field(default=None, description="ISA-95 level (assets).")
    name: str | None = None


class SharedProduct(BaseModel):
    """What a share offers: selection, level, window, columns, and the selected items."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    partner: str
    purpose: str
    level: str
    bucket_s: float | None = Field(description="Bucket width of an aggregate share.")
    start: datetime
    end: datetime | None
    expires_at: datetime
    select: list[str]
    items: list[SharedItem]
    columns: list[ColumnOut]
    row_schema: dict[str, Any] = Field(description="JSON Schema of one row.")
    data: str = Field(description="URL of the data (format=json|csv|parquet).")


class SharedData(BaseModel):
    """One page of shared data, as columns of equal length."""

    share: str
    level: str
    start: datetime
    end: datetime
    rows: int
    columns: dict[str, list[Any]]
    next_cursor: str | None
    next: str | None


# ------------------------------------------------------------------ helpers


def _share_url(request: Request, share: Share) -> str:
    return str(request.url_for("shared_product", share=share.id).path)


def _out(request: Request, s: Share) -> ShareOut:
    return ShareOut(
        id=s.id,
        name=s.name,
        partner=s.partner,
        purpose=s.purpose,
        select=list(s.product.selectors),
        level=str(s.product.level),
        start=s.product.start,
        end=s.product.end,
        state=s.state(),
        created_by=s.created_by,
        created_at=s.created_at,
        expires_at=s.expires_at,
        revoked_at=s.revoked_at,
        last_used_at=s.last_used_at,
        url=_share_url(request, s),
    )


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _doc(level: ShareLevel) -> TableDoc:
    return {"raw": HISTORY, "aggregate": AGGREGATES, "oee": SHARED_OEE}[level.kind]


def _oee_capable(ctx: ApiContext, path: str, level: str) -> bool:
    if level == "enterprise":
        return False
    if level == "equipment":
        try:
            return ctx.factory.signal(f"{path}/state").data_type == "int"
        except KeyError:
            return False
    return any(
        e.path.startswith(path + "/") and _oee_capable(ctx, e.path, "equipment")
        for e in ctx.factory.equipment()
    )


async def _items(ctx: ApiContext, share: Share) -> list[dict[str, Any]]:
    """The signals (or assets, for OEE) the share offers now, by path."""
    product = share.product
    if product.level.kind == "oee":
        return [
            {"path": a.path, "level": a.level, "name": a.name}
            for a in sorted(ctx.factory.assets(), key=lambda a: a.path)
            if product.selects(a.path) and _oee_capable(ctx, a.path, a.level)
        ]
    catalog = await signal_catalog(ctx.catalog, ctx.historian)
    mask = product.mask(catalog.column("path"))
    if product.level.kind == "aggregate":
        mask = pc.and_(mask, pc.is_in(catalog.column("data_type"), pa.array(sorted(NUMERIC))))
    cols = ["path", "data_type", "unit", "kind", "description", "semantic_id"]
    return catalog.filter(mask).select(cols).to_pylist()  # type: ignore[no-any-return]


def _outside(detail: str) -> ProblemError:
    return ProblemError("outside-share", detail)


# ------------------------------------------------------------------ admin routes


def _visible(token: TokenInfo, share: Share) -> bool:
    return share.product.within(token.subtrees)


@router.get(
    "/shares",
    response_model=Page[ShareOut],
    summary="Data shares (admin)",
    responses=problem_responses(401, 403, 422),
)
async def list_shares(
    request: Request, ctx: Ctx, token: Admin, limit: Limit = None, cursor: Cursor = None
) -> Page[ShareOut]:
    """Every share (revoked and expired ones too) whose selectors lie in the token's subtrees,
    oldest first, with its state and last use."""
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    pos = decode_cursor(cursor, ("offset",))
    offset = int(pos["offset"]) if pos else 0
    shares = [s for s in await ShareStore(ctx.auth).shares() if _visible(token, s)]
    page = shares[offset : offset + n]
    nxt = encode_cursor({"offset": offset + n}) if offset + n < len(shares) else None
    return Page[ShareOut](
        items=[_out(request, s) for s in page], next_cursor=nxt, next=next_link(request, nxt)
    )


@router.post(
    "/shares",
    response_model=ShareCreated,
    status_code=201,
    summary="Create a data share (admin)",
    responses=problem_responses(401, 403, 422),
)
async def create_share(request: Request, ctx: Ctx, token: Admin, body: ShareIn) -> ShareCreated:
    """Offer a data product to a partner; the answer holds the share token, this once.

    Every selector must lie in the token's subtrees and the product must select something
    now (a signal of the model or the historian, or an asset with OEE for OEE shares).
    """
    try:
        selectors = [check_selector(s) for s in body.select]
        level = ShareLevel.parse(body.level)
        expires_in = parse_duration(body.expires_in) if body.expires_in else None
    except (ShareError, ValueError) as exc:
        raise ProblemError("invalid-request", str(exc)) from None
    outside = [s for s in selectors if not token.allows(selector_prefix(s))]
    if outside:
        raise ProblemError(
            "outside-subtree",
            f"selector {outside[0]!r} reaches outside this token's subtrees "
            f"({', '.join(token.subtrees)})",
        )
    store = ShareStore(ctx.auth)
    probe = Share(
        id="",
        name=body.name,
        partner=body.partner,
        purpose=body.purpose,
        product=_product(selectors, level, body.start, body.end),
        created_by=token.label(),
        created_at=datetime.now(UTC),
        expires_at=datetime.now(UTC),
    )
    if not await _items(ctx, probe):
        raise ProblemError(
            "invalid-request",
            f"the selectors {', '.join(selectors)} select nothing at level {level}"
            + (" (OEE needs equipment with a state signal, or lines)" if level.kind == "oee"
               else "" if level.kind == "raw" else " (aggregates need numeric signals)"),
        )  # fmt: skip
    try:
        new = await store.create(
            body.name,
            partner=body.partner,
            purpose=body.purpose,
            select=selectors,
            level=level,
            start=_aware(body.start),
            end=None if body.end is None else _aware(body.end),
            expires_at=None if body.expires_at is None else _aware(body.expires_at),
            expires_in=expires_in,
            actor=token.label(),
            audit=False,
        )
    except ShareError as exc:
        slug = "conflict" if "exists" in str(exc) else "invalid-request"
        raise ProblemError(slug, str(exc)) from None
    request.state.audit_detail = {
        "action": "share create",
        "share": new.share.id,
        "name": new.share.name,
        "partner": new.share.partner,
        "purpose": new.share.purpose,
        **new.share.product.to_json(),
        "expires_at": new.share.expires_at.isoformat(),
    }
    return ShareCreated(share=_out(request, new.share), token=new.token)


def _product(
    selectors: Sequence[str], level: ShareLevel, start: datetime, end: datetime | None
) -> ShareProduct:
    return ShareProduct(
        tuple(selectors), level, _aware(start), None if end is None else _aware(end)
    )


async def _admin_share(ctx: ApiContext, token: TokenInfo, share_id: str) -> Share:
    share = await ShareStore(ctx.auth).get(share_id)
    if share is None or not _visible(token, share):
        # a share outside the token's subtrees is as unknown as one that does not exist
        raise ProblemError("not-found", f"no share {share_id!r} within this token's subtrees")
    return share


@router.get(
    "/shares/{share_id}",
    response_model=ShareOut,
    summary="A data share (admin)",
    responses=problem_responses(401, 403, 404),
)
async def get_share(request: Request, ctx: Ctx, token: Admin, share_id: str) -> ShareOut:
    """One share (by id or name) with its state and last use."""
    return _out(request, await _admin_share(ctx, token, share_id))


@router.post(
    "/shares/{share_id}/revoke",
    response_model=ShareOut,
    summary="Revoke a data share (admin)",
    responses=problem_responses(401, 403, 404, 409),
)
async def revoke_share(request: Request, ctx: Ctx, token: Admin, share_id: str) -> ShareOut:
    """Revoke a share (by id or name): its token reads nothing from the next request on."""
    share = await _admin_share(ctx, token, share_id)
    try:
        revoked = await ShareStore(ctx.auth).revoke(share.id, actor=token.label(), audit=False)
    except ShareError as exc:
        raise ProblemError("conflict", str(exc)) from None
    request.state.audit_detail = {"action": "share revoke", "share": share.id, "name": share.name}
    return _out(request, revoked)


# ------------------------------------------------------------------ partner routes


async def _share_access(
    request: Request,
    ctx: Ctx,
    share: Annotated[str, Path(description="The share's id or name.")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Share:
    """The share of the presented share token; it must be the share named in the path."""
    challenge = {"WWW-Authenticate": 'Bearer realm="shopfloor"'}
    if credentials is None:
        raise ProblemError(
            "unauthorized", "no token: send 'Authorization: Bearer <share token>'",
            headers=challenge,
        )  # fmt: skip
    presented = credentials.credentials
    if not is_share_token(presented):
        claimed, info = await ctx.auth.authenticate(presented)
        request.state.audit_token = claimed
        if info is None or info.state() != "active":
            raise ProblemError("unauthorized", "the token is not valid", headers=challenge)
        raise ProblemError("share-token", "the /shared routes take a share token, not an API token")
    claimed, found = await ShareStore(ctx.auth).authenticate(presented)
    request.state.audit_token = claimed
    if found is None:
        raise ProblemError("unauthorized", "the share token is not valid", headers=challenge)
    if share not in (found.id, found.name):
        raise _outside(f"this token reads share {found.id} ({found.name}) only")
    state = found.state()
    if state != "active":
        raise ProblemError("share-inactive", f"the share {found.name} is {state}")
    request.state.audit_detail = {"share": found.name}
    return found


Shared = Annotated[Share, Depends(_share_access)]


@router.get(
    "/shared/{share}",
    response_model=SharedProduct,
    summary="The shared data product (share token)",
    responses=problem_responses(401, 403),
    name="shared_product",
)
async def shared_product(request: Request, ctx: Ctx, share: Shared) -> SharedProduct:
    """What the share offers: partner, purpose, level, window, expiry, the signals (or
    assets) it selects now, and the columns of its data."""
    level = share.product.level
    doc = _doc(level)
    entry = table_entry(doc)
    return SharedProduct(
        id=share.id,
        name=share.name,
        partner=share.partner,
        purpose=share.purpose,
        level=str(level),
        bucket_s=None if level.bucket is None else level.bucket.total_seconds(),
        start=share.product.start,
        end=share.product.end,
        expires_at=share.expires_at,
        select=list(share.product.selectors),
        items=[SharedItem(**i) for i in await _items(ctx, share)],
        columns=[ColumnOut(**c) for c in entry["columns"]],
        row_schema=entry["row_schema"],
        data=str(request.url_for("shared_data", share=share.id).path),
    )


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime
    end: datetime


def _window(share: Share, start: str | None, end: str | None, now: datetime) -> _Window:
    """The requested range (relative to ``now``, the factory's clock); 403 when it reaches
    outside the share's window."""
    p = share.product
    try:
        s = parse_time(start, now) if start is not None else p.start
        e = parse_time(end, now) if end is not None else (p.end or now)
    except ValueError as exc:
        raise ProblemError("invalid-request", str(exc)) from None
    if s < p.start or (p.end is not None and e > p.end):
        window = f"[{p.start.isoformat()}, {p.end.isoformat() if p.end else 'open'})"
        raise _outside(f"the share covers {window} only")
    if e <= s:
        raise ProblemError("invalid-request", f"end must lie after start ({s.isoformat()})")
    return _Window(s, e)


def _us(ts: datetime) -> int:
    return (ts - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


async def _page(
    ctx: ApiContext,
    share: Share,
    items: list[dict[str, Any]],
    rng: _Window,
    n: int,
    pos: tuple[int, datetime, int],
    max_calls: int | None,
) -> tuple[list[pa.Table], tuple[int, datetime, int] | None]:
    """Up to ``n`` rows from item ``pos[0]`` on, starting at ``pos[1]`` (after ``pos[2]``
    rows of that instant); with the position to continue from (``None``: done)."""
    level = share.product.level
    i, frm, skip = pos
    parts: list[pa.Table] = []
    got = calls = 0
    now = ctx.now()
    while i < len(items) and got < n:
        if max_calls is not None and calls >= max_calls:
            return parts, (i, frm, skip)
        calls += 1
        item, want = items[i], n - got
        path = str(item["path"])
        if level.kind == "raw":
            full = await ctx.historian.read_raw(path, frm, rng.end, limit=skip + want + 1)
            page = full.slice(skip, want)
            parts.append(history_table(path, str(item["data_type"]), page))
            got += page.num_rows
            if full.num_rows > skip + want:
                ts = full.column("ts").cast(pa.int64())
                resume = ts[skip + want].as_py()
                done = int(pc.sum(pc.equal(ts.slice(0, skip + want), resume)).as_py() or 0)
                return parts, (i, _from_us(resume), done)
        elif level.kind == "aggregate":
            assert level.bucket is not None
            b = level.bucket // _US
            page_end_us = min(_us(rng.end), (_us(frm) // b) * b + want * b)
            page_end = _from_us(page_end_us)
            t = await ctx.historian.downsample(path, frm, page_end, level.bucket)
            parts.append(aggregate_table(path, t))
            got += t.num_rows
            if page_end < rng.end:
                frm = page_end
                continue
        else:
            end = min(rng.end, now)
            if end > frm:
                try:
                    t = await oee(ctx.historian, ctx.factory, path, frm, end, level.by)
                except ValueError as exc:
                    raise ProblemError("not-supported", str(exc)) from None
                rows = shared_oee_table(t)
                if rows.num_rows > want:
                    parts.append(rows.slice(0, want))
                    resume = rows.column("window_start")[want].as_py()
                    return parts, (i, resume, 0)
                parts.append(rows)
                got += rows.num_rows
        i, frm, skip = i + 1, rng.start, 0
    return parts, (None if i >= len(items) else (i, frm, skip))


def _select(
    share: Share, items: list[dict[str, Any]], signal: list[str] | None, asset: list[str] | None
) -> list[dict[str, Any]]:
    """The items the request asks for (all by default); 403 for anything outside the share."""
    is_oee = share.product.level.kind == "oee"
    wanted, other = (asset, signal) if is_oee else (signal, asset)
    if other:
        what = "'asset' (this share offers signals)" if not is_oee else "'signal'"
        raise ProblemError(
            "invalid-request",
            f"query parameter {what}: an OEE share is read by asset, others by signal"
            if is_oee else f"query parameter {what}",
        )  # fmt: skip
    if not wanted:
        return items
    paths = [w.strip("/") for w in wanted]
    for p in paths:
        if not share.product.selects(p):
            raise _outside(f"{p!r} is not part of share {share.name}")
    by_path = {str(i["path"]): i for i in items}
    missing = [p for p in paths if p not in by_path]
    if missing:
        noun = "asset with OEE" if is_oee else "signal"
        raise ProblemError("not-found", f"no {noun} {missing[0]!r} in share {share.name}")
    return [by_path[p] for p in dict.fromkeys(paths)]


def _json_columns(table: pa.Table) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            out[name] = iso_column(col.cast(TS_TYPE))
        elif pa.types.is_floating(col.type):
            out[name] = json_values(col, "float")
        else:
            out[name] = col.to_pylist()
    return out


@router.get(
    "/shared/{share}/data",
    response_model=SharedData,
    summary="The shared data (share token)",
    responses={
        **problem_responses(401, 403, 404, 422),
        200: {
            "description": "JSON columns, or the file.",
            "content": {
                "application/json": {},
                "text/csv": {},
                "application/vnd.apache.parquet": {},
            },
        },
    },
    name="shared_data",
)
async def shared_data(
    request: Request,
    ctx: Ctx,
    share: Shared,
    fmt: Annotated[Format, Query(alias="format", description="json (paged), csv or parquet.")] = (
        "json"
    ),
    start: Annotated[
        str | None, Query(description="Start (within the share's window; default its start).")
    ] = None,
    end: Annotated[
        str | None, Query(description="End, exclusive (default: the window's end, or now).")
    ] = None,
    signal: Annotated[
        list[str] | None, Query(description="Only these signals of the share (repeat).")
    ] = None,
    asset: Annotated[
        list[str] | None, Query(description="Only these assets of an OEE share (repeat).")
    ] = None,
    level: Annotated[
        str | None,
        Query(description="The level asked for: must be the share's (403 otherwise)."),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    """The share's data at its level, in the export layout (see the product's ``columns``):
    raw samples (``signal, ts, quality, value_*``), bucket aggregates (``signal, bucket,
    min, max, avg, count``) or OEE ratios per window (``asset_path, window_start, …``).

    JSON comes as columns, paged (``limit`` rows, at most 100,000; ``cursor``); CSV and
    Parquet hold the whole range (at most the export limit of rows).
    """
    if level is not None:
        try:
            asked = ShareLevel.parse(level)
        except ShareError as exc:
            raise ProblemError("invalid-request", str(exc)) from None
        if asked != share.product.level:
            raise _outside(f"share {share.name} offers level {share.product.level} only")
    rng = _window(share, start, end, ctx.now())
    items = _select(share, await _items(ctx, share), signal, asset)
    if fmt == "json":
        n = page_limit(limit, ctx.limits.samples_default, ctx.limits.samples_max)
        raw = decode_cursor(cursor, ("i", "from", "skip"))
        pos = (0, rng.start, 0)
        if raw is not None:
            # a cursor never reaches outside the request's range or items
            i = min(max(int(raw["i"]), 0), len(items))
            frm = min(max(_from_us(int(raw["from"])), rng.start), rng.end)
            pos = (i, frm, max(int(raw["skip"]), 0))
        parts, nxt_pos = await _page(ctx, share, items, rng, n, pos, _MAX_CALLS)
        table = _concat(parts, _doc(share.product.level))
        nxt = None
        if nxt_pos is not None:
            nxt = encode_cursor({"i": nxt_pos[0], "from": _us(nxt_pos[1]), "skip": nxt_pos[2]})
        request.state.audit_detail = {"share": share.name, "rows": table.num_rows, "format": fmt}
        body = {
            "share": share.id,
            "level": str(share.product.level),
            "start": rng.start.isoformat(),
            "end": rng.end.isoformat(),
            "rows": table.num_rows,
            "columns": _json_columns(table),
            "next_cursor": nxt,
            "next": next_link(request, nxt),
        }
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return Response(content=text, media_type="application/json")
    limit_rows = ctx.limits.export_rows_max
    parts, rest = await _page(ctx, share, items, rng, limit_rows + 1, (0, rng.start, 0), None)
    table = _concat(parts, _doc(share.product.level))
    if table.num_rows > limit_rows or rest is not None:
        raise ProblemError(
            "too-large",
            f"the data would hold more than {limit_rows:,} rows: narrow start/end or ask for "
            "fewer signals (or use format=json, which pages)",
        )
    request.state.audit_detail = {"share": share.name, "rows": table.num_rows, "format": fmt}
    return _file(table, fmt, share.name)


def _concat(parts: list[pa.Table], doc: TableDoc) -> pa.Table:
    parts = [p for p in parts if p.num_rows]
    return pa.concat_tables(parts) if parts else doc.schema.empty_table()


def _file(table: pa.Table, fmt: str, name: str) -> Response:
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf, compression="snappy")
    else:
        buf.write(csv_header(table.schema))
        buf.write(csv_bytes(table))
    return Response(
        content=buf.getvalue(),
        media_type=_MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )

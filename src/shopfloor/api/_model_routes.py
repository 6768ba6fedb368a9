"""Routes of the data model: the asset tree, asset types and signals with their metadata."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Query, Request

from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._catalog import signal_catalog, subtree_mask
from shopfloor.api._deps import (
    Ctx,
    Cursor,
    Limit,
    check_path,
    decode_cursor,
    encode_cursor,
    next_link,
    page_limit,
    require,
)
from shopfloor.api._problems import ProblemError, problem_responses
from shopfloor.api._schemas import (
    AssetDetail,
    AssetOut,
    AssetTypeOut,
    Page,
    SignalOut,
)
from shopfloor.model import Factory

__all__ = ["router"]

router = APIRouter(tags=["model"], responses=problem_responses(401, 403, 422))

Reader = Annotated[TokenInfo, Depends(require(Scope.read))]
Level = Literal["enterprise", "site", "area", "line", "cell", "equipment"]


def _asset(factory: Factory, path: str) -> AssetOut:
    a = factory.asset(path)
    return AssetOut(
        path=a.path,
        id=a.id,
        name=a.name,
        level=a.level,  # type: ignore[arg-type]
        type=a.type,
        parent=a.parent,
        source="model",
    )


async def _assets(ctx: Ctx) -> list[AssetOut]:
    """The model's assets in tree order, then equipment discovered at run time."""
    out = [_asset(ctx.factory, a.path) for a in ctx.factory.assets()]
    known = {a.path for a in out}
    catalog = await signal_catalog(ctx.catalog, ctx.historian)
    discovered = catalog.filter(pc.equal(catalog.column("source"), "discovered"))
    for path in sorted(set(discovered.column("asset").to_pylist()) - known):
        parent, _, ident = str(path).rpartition("/")
        out.append(
            AssetOut(
                path=path,
                id=ident,
                name=ident,
                level="equipment",
                type=None,
                parent=parent or None,
                source="discovered",
            )
        )
    return out


def _offset_page(
    request: Request, items: list[Any], cursor: str | None, limit: int
) -> tuple[list[Any], str | None, str | None]:
    pos = decode_cursor(cursor, ("offset",))
    start = int(pos["offset"]) if pos else 0
    page = items[start : start + limit]
    nxt = encode_cursor({"offset": start + limit}) if start + limit < len(items) else None
    return page, nxt, next_link(request, nxt)


@router.get("/assets", response_model=Page[AssetOut], summary="The asset tree, flat")
async def list_assets(
    request: Request,
    ctx: Ctx,
    token: Reader,
    under: Annotated[str | None, Query(description="Only this asset and its subtree.")] = None,
    level: Annotated[Level | None, Query(description="Only assets of this level.")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[AssetOut]:
    """Assets within the token's subtrees, depth-first in tree order (``parent`` links them)."""
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    if under is not None:
        under = under.strip("/")
        check_path(token, under)
    items = [
        a
        for a in await _assets(ctx)
        if token.allows(a.path)
        and (under is None or a.path == under or a.path.startswith(under + "/"))
        and (level is None or a.level == level)
    ]
    page, nxt, link = _offset_page(request, items, cursor, n)
    return Page[AssetOut](items=page, next_cursor=nxt, next=link)


@router.get("/assets/{path:path}", response_model=AssetDetail, summary="One asset")
async def get_asset(path: str, ctx: Ctx, token: Reader) -> AssetDetail:
    """An asset with its direct children, its own signals and (equipment) its attributes."""
    path = path.strip("/")
    check_path(token, path)
    assets = {a.path: a for a in await _assets(ctx)}
    asset = assets.get(path)
    if asset is None:
        raise ProblemError("not-found", f"no asset {path!r}")
    children = [a.path for a in assets.values() if a.parent == path]
    catalog = await signal_catalog(ctx.catalog, ctx.historian)
    signals = catalog.filter(pc.equal(catalog.column("asset"), path)).column("path").to_pylist()
    attributes: dict[str, Any] = {}
    if asset.level == "equipment" and asset.source == "model":
        attributes = ctx.factory.attributes(path)
    return AssetDetail(
        **asset.model_dump(), children=children, signals=signals, attributes=attributes
    )


def _visible_types(ctx: Ctx, token: TokenInfo) -> dict[str, AssetTypeOut]:
    """Types used by equipment within the token's subtrees, with their ancestors."""
    types = ctx.types
    used: set[str] = set()
    for eq in ctx.factory.equipment():
        if eq.type is not None and token.allows(eq.path):
            used.update(types[eq.type].chain)
    return {t: types[t] for t in types if t in used}


@router.get("/types", response_model=Page[AssetTypeOut], summary="Asset types")
async def list_types(
    request: Request, ctx: Ctx, token: Reader, limit: Limit = None, cursor: Cursor = None
) -> Page[AssetTypeOut]:
    """The asset types used within the token's subtrees (and their ancestors), in file order."""
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    items = list(_visible_types(ctx, token).values())
    page, nxt, link = _offset_page(request, items, cursor, n)
    return Page[AssetTypeOut](items=page, next_cursor=nxt, next=link)


@router.get("/types/{type_id}", response_model=AssetTypeOut, summary="One asset type")
async def get_type(type_id: str, ctx: Ctx, token: Reader) -> AssetTypeOut:
    """An asset type merged with its ancestors (404 when not used within the subtrees)."""
    found = _visible_types(ctx, token).get(type_id)
    if found is None:
        raise ProblemError("not-found", f"no asset type {type_id!r} within this token's subtrees")
    return found


def _signal(row: dict[str, Any]) -> SignalOut:
    return SignalOut.model_validate(row)


@router.get("/signals", response_model=Page[SignalOut], summary="Signals with metadata")
async def list_signals(
    request: Request,
    ctx: Ctx,
    token: Reader,
    under: Annotated[str | None, Query(description="Only signals of this asset subtree.")] = None,
    kind: Annotated[
        Literal["measurement", "counter", "state", "setpoint", "event"] | None,
        Query(description="Only signals of this kind."),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[SignalOut]:
    """Signals within the token's subtrees, ordered by path (model and discovered ones)."""
    n = page_limit(limit, ctx.limits.page_default, ctx.limits.page_max)
    table = await signal_catalog(ctx.catalog, ctx.historian)
    mask = subtree_mask(table.column("path"), token.subtrees)
    if under is not None:
        under = under.strip("/")
        check_path(token, under)
        mask = pc.and_(mask, subtree_mask(table.column("path"), [under]))
    if kind is not None:
        mask = pc.and_(mask, pc.equal(table.column("kind"), kind))
    pos = decode_cursor(cursor, ("after",))
    if pos is not None:
        mask = pc.and_(mask, pc.greater(table.column("path"), pa.scalar(str(pos["after"]))))
    rows = table.filter(mask).slice(0, n + 1).to_pylist()
    nxt = encode_cursor({"after": rows[n - 1]["path"]}) if len(rows) > n else None
    return Page[SignalOut](
        items=[_signal(r) for r in rows[:n]], next_cursor=nxt, next=next_link(request, nxt)
    )


@router.get("/signals/{path:path}", response_model=SignalOut, summary="One signal")
async def get_signal(path: str, ctx: Ctx, token: Reader) -> SignalOut:
    """A signal's metadata: type, unit, kind, limits, semantic id, whether it is writable."""
    path = path.strip("/")
    check_path(token, path, "signal")
    table = await signal_catalog(ctx.catalog, ctx.historian)
    rows = table.filter(pc.equal(table.column("path"), path)).to_pylist()
    if not rows:
        raise ProblemError("not-found", f"no signal {path!r}")
    return _signal(rows[0])

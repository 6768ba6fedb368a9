"""The shells read-only through the AAS Part 2 HTTP/REST API (v3.0), under ``/api/v1/aas``.

A sub-application mounted by :func:`~shopfloor.api.create_app`, with the paths of the
Asset Administration Shell Repository and Submodel Repository read profiles (SSP-002):
``/shells``, ``/shells/{aasIdentifier}`` (and its ``asset-information``,
``submodel-refs`` and ``submodels/{submodelIdentifier}``), ``/submodels``,
``/submodels/{submodelIdentifier}`` (``$metadata``, ``$value``, ``submodel-elements``,
``submodel-elements/{idShortPath}``) and ``/description``. Identifiers in paths are
base64url-encoded (padding optional); lists are paged with ``limit`` and ``cursor`` and
answer ``{"paging_metadata": {"cursor"}, "result": […]}``; errors are Part 2 ``Result``
objects ``{"messages": [{"code", "messageType", "text", "timestamp"}]}``.

The same tokens as ``/api/v1`` authorise it (``read`` scope; ``/description`` is public):
a token sees the shells of the equipment inside its subtrees only, and naming another
shell or submodel is 403 before any lookup. OperationalData and TimeSeries are built on
each request from the historian's latest values; their segments link to this server.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopfloor import __version__
from shopfloor.aas import (
    SUBMODEL_SEMANTIC_IDS,
    SUBMODELS,
    AasExporter,
    AasOptions,
    LatestValue,
    latest_values,
    to_jsonable,
    value_only,
)
from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._deps import (
    ApiContext,
    check_path,
    decode_cursor,
    encode_cursor,
    page_limit,
    require,
)
from shopfloor.api._problems import ProblemError
from shopfloor.errors import HistorianError

__all__ = ["AAS_PREFIX", "PROFILES", "aas_app"]

AAS_PREFIX: Final = "/api/v1/aas"
"""Where the AAS repository is mounted."""

PROFILES: Final = (
    "https://admin-shell.io/aas/API/3/0/AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
    "https://admin-shell.io/aas/API/3/0/SubmodelRepositoryServiceSpecification/SSP-002",
)
"""The service specification profiles served: the read profiles of both repositories."""

Reader = Annotated[TokenInfo, Depends(require(Scope.read))]
Limit = Annotated[int | None, Query(description="Items per page (bounded by the server).")]
Cursor = Annotated[str | None, Query(description="The paging_metadata.cursor of a page.")]
Level = Annotated[str | None, Query(pattern="^(deep|core)$", description="deep (default) or core.")]
Extent = Annotated[
    str | None,
    Query(
        pattern="^(withBlobValue|withoutBlobValue)$",
        description="Accepted; shopfloor's submodels hold no blobs.",
    ),
]

router = APIRouter()


class _State:
    """The exporter and the parts of the shells that do not change while the app runs."""

    def __init__(self, ctx: ApiContext, options: AasOptions | None) -> None:
        self.ctx = ctx
        self.exporter = AasExporter(ctx.factory, options)
        self._static: dict[tuple[str, str], Any] = {}

    def shell(self, path: str) -> dict[str, Any]:
        return copy.deepcopy(self._cached(path, "shell"))

    def _cached(self, path: str, kind: str) -> Any:
        key = (path, kind)
        if key not in self._static:
            obj: Any = (
                self.exporter.shell(path) if kind == "shell" else self.exporter.submodel(path, kind)
            )
            self._static[key] = to_jsonable(obj)
        return self._static[key]

    async def submodels(self, wanted: list[tuple[str, str]], api_url: str) -> list[dict[str, Any]]:
        """The submodels ``(path, kind)``, live ones with the latest values."""
        live_paths = {p for p, k in wanted if k in ("OperationalData", "TimeSeries")}
        latest: dict[str, LatestValue] = {}
        if live_paths:
            signals = [s for p in live_paths for s in self.exporter.signal_paths(p)]
            try:
                latest = await latest_values(self.ctx.historian, signals)
            except HistorianError as exc:
                raise ProblemError("historian-error", str(exc)) from None
        out = []
        for path, kind in wanted:
            if kind in ("OperationalData", "TimeSeries"):
                out.append(to_jsonable(self.exporter.submodel(path, kind, latest, api_url=api_url)))
            else:
                out.append(copy.deepcopy(self._cached(path, kind)))
        return out


def _state(request: Request) -> _State:
    state = request.app.state.aas
    assert isinstance(state, _State)
    return state


State = Annotated[_State, Depends(_state)]


# ---------------------------------------------------------------------- helpers


class _BadRequestError(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _NotFoundError(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _decode(encoded: str, what: str) -> str:
    """A base64url-encoded identifier (with or without padding)."""
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise _BadRequestError(f"{what} {encoded!r} is not base64url-encoded UTF-8") from None


def _api_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _page(
    state: _State, items: list[Any], limit: int | None, cursor: str | None
) -> tuple[list[Any], dict[str, Any]]:
    limits = state.ctx.limits
    n = page_limit(limit, limits.page_default, limits.page_max)
    pos = decode_cursor(cursor, ("offset",))
    start = int(pos["offset"]) if pos else 0
    page = items[start : start + n]
    meta: dict[str, Any] = {}
    if start + n < len(items):
        meta["cursor"] = encode_cursor({"offset": start + n})
    return page, meta


def _shell_path(state: _State, token: TokenInfo, encoded: str) -> str:
    """The equipment of a shell id: 400 malformed, 403 outside, 404 unknown."""
    identifier = _decode(encoded, "aasIdentifier")
    found = state.exporter.locate(identifier)
    if found is None or found[1] is not None:
        raise _NotFoundError(f"no Asset Administration Shell {identifier!r}")
    check_path(token, found[0])
    if not state.exporter.exists(found[0]):
        raise _NotFoundError(f"no Asset Administration Shell {identifier!r}")
    return found[0]


def _submodel_key(state: _State, token: TokenInfo, encoded: str) -> tuple[str, str]:
    """``(equipment path, kind)`` of a submodel id: 400 malformed, 403 outside, 404 unknown."""
    identifier = _decode(encoded, "submodelIdentifier")
    found = state.exporter.locate(identifier)
    if found is None or found[1] is None:
        raise _NotFoundError(f"no Submodel {identifier!r}")
    check_path(token, found[0])
    if not state.exporter.exists(found[0]):
        raise _NotFoundError(f"no Submodel {identifier!r}")
    return found[0], found[1]


def _core(submodel: dict[str, Any]) -> dict[str, Any]:
    """``level=core``: the submodel's direct elements, without their own children."""
    for element in submodel.get("submodelElements", []):
        for key in ("value", "statements", "annotations"):
            if element.get("modelType") in (
                "SubmodelElementCollection",
                "SubmodelElementList",
                "Entity",
                "AnnotatedRelationshipElement",
            ):
                element.pop(key, None)
    return submodel


_STEP: Final = re.compile(r"([^.\[\]]+)|\[(\d+)\]|(\.)")


def _element(submodel: dict[str, Any], id_short_path: str) -> dict[str, Any]:
    """The element at ``id_short_path`` (``a.b[2].c``) of a submodel in JSON form."""
    children: list[dict[str, Any]] = submodel.get("submodelElements", [])
    current: dict[str, Any] | None = None
    pos = 0
    for m in _STEP.finditer(id_short_path):
        if m.start() != pos:
            break
        pos = m.end()
        if m.group(3):
            continue
        if m.group(1) is not None:
            current = next((e for e in children if e.get("idShort") == m.group(1)), None)
        else:
            index = int(m.group(2))
            current = children[index] if current is not None and index < len(children) else None
        if current is None:
            raise _NotFoundError(f"no submodel element {id_short_path!r}")
        kind = current.get("modelType")
        if kind in ("SubmodelElementCollection", "SubmodelElementList"):
            children = current.get("value", [])
        elif kind == "Entity":
            children = current.get("statements", [])
        elif kind == "AnnotatedRelationshipElement":
            children = current.get("annotations", [])
        else:
            children = []
    if current is None or pos != len(id_short_path):
        raise _BadRequestError(f"idShortPath {id_short_path!r} is malformed")
    return current


# ---------------------------------------------------------------------- routes


@router.get("/description", summary="The profiles this server implements")
async def description() -> JSONResponse:
    """The service description: the read profiles of the shell and submodel repositories."""
    return _json({"profiles": list(PROFILES)})


@router.get("/shells", summary="All Asset Administration Shells (paged)")
async def get_all_shells(
    state: State,
    token: Reader,
    asset_ids: Annotated[
        list[str] | None,
        Query(alias="assetIds", description="base64url-encoded SpecificAssetId JSON objects."),
    ] = None,
    id_short: Annotated[str | None, Query(alias="idShort")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> JSONResponse:
    """Shells of the equipment within the token's subtrees, in tree order."""
    wanted: list[tuple[str, str]] = []
    for encoded in asset_ids or []:
        try:
            obj = json.loads(_decode(encoded, "assetIds"))
            wanted.append((str(obj["name"]), str(obj["value"])))
        except (ValueError, KeyError, TypeError):
            raise _BadRequestError(f"assetIds {encoded!r} is not a SpecificAssetId") from None
    shells = []
    for path in state.exporter.equipment():
        if not token.allows(path):
            continue
        shell = state.shell(path)
        if id_short is not None and shell.get("idShort") != id_short:
            continue
        if wanted and not all(_has_asset_id(shell, name, value) for name, value in wanted):
            continue
        shells.append(shell)
    page, meta = _page(state, shells, limit, cursor)
    return _json({"paging_metadata": meta, "result": page})


def _has_asset_id(shell: dict[str, Any], name: str, value: str) -> bool:
    info = shell.get("assetInformation", {})
    if name == "globalAssetId":
        return bool(info.get("globalAssetId") == value)
    return any(
        s.get("name") == name and s.get("value") == value for s in info.get("specificAssetIds", [])
    )


@router.get("/shells/{aas_identifier}", summary="One Asset Administration Shell")
async def get_shell(aas_identifier: str, state: State, token: Reader) -> JSONResponse:
    """The shell with this (base64url-encoded) id."""
    return _json(state.shell(_shell_path(state, token, aas_identifier)))


@router.get("/shells/{aas_identifier}/asset-information", summary="A shell's asset information")
async def get_asset_information(aas_identifier: str, state: State, token: Reader) -> JSONResponse:
    """The asset information of the shell: kind, globalAssetId, specific asset ids, type."""
    shell = state.shell(_shell_path(state, token, aas_identifier))
    return _json(shell["assetInformation"])


@router.get("/shells/{aas_identifier}/submodel-refs", summary="A shell's submodel references")
async def get_submodel_refs(
    aas_identifier: str,
    state: State,
    token: Reader,
    limit: Limit = None,
    cursor: Cursor = None,
) -> JSONResponse:
    """References to the shell's submodels (paged)."""
    shell = state.shell(_shell_path(state, token, aas_identifier))
    page, meta = _page(state, shell.get("submodels", []), limit, cursor)
    return _json({"paging_metadata": meta, "result": page})


async def _shell_submodel(
    request: Request, state: _State, token: TokenInfo, aas: str, sm: str
) -> dict[str, Any]:
    path = _shell_path(state, token, aas)
    sm_path, kind = _submodel_key(state, token, sm)
    if sm_path != path:
        raise _NotFoundError("the shell has no such submodel")
    return (await state.submodels([(path, kind)], _api_url(request)))[0]


@router.get(
    "/shells/{aas_identifier}/submodels/{submodel_identifier}",
    summary="A submodel of a shell",
)
async def get_shell_submodel(
    aas_identifier: str,
    submodel_identifier: str,
    request: Request,
    state: State,
    token: Reader,
    level: Level = None,
    extent: Extent = None,
) -> JSONResponse:
    """The submodel through its shell (the superpath of ``/submodels/{id}``)."""
    sm = await _shell_submodel(request, state, token, aas_identifier, submodel_identifier)
    return _json(_core(sm) if level == "core" else sm)


@router.get(
    "/shells/{aas_identifier}/submodels/{submodel_identifier}/$value",
    summary="A submodel of a shell, ValueOnly",
)
async def get_shell_submodel_value(
    aas_identifier: str,
    submodel_identifier: str,
    request: Request,
    state: State,
    token: Reader,
    level: Level = None,
    extent: Extent = None,
) -> JSONResponse:
    """The submodel's ValueOnly form through its shell."""
    sm = await _shell_submodel(request, state, token, aas_identifier, submodel_identifier)
    return _json(value_only(sm))


@router.get("/submodels", summary="All submodels (paged)")
async def get_all_submodels(
    request: Request,
    state: State,
    token: Reader,
    semantic_id: Annotated[
        str | None, Query(alias="semanticId", description="base64url-encoded semantic id.")
    ] = None,
    id_short: Annotated[str | None, Query(alias="idShort")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
    level: Level = None,
    extent: Extent = None,
) -> JSONResponse:
    """The submodels of the shells within the token's subtrees."""
    wanted_semantic = None if semantic_id is None else _decode(semantic_id, "semanticId")
    keys = [
        (path, kind)
        for path in state.exporter.equipment()
        if token.allows(path)
        for kind in SUBMODELS
        if id_short is None or kind == id_short
    ]
    if wanted_semantic is not None:
        keys = [k for k in keys if SUBMODEL_SEMANTIC_IDS[k[1]] == wanted_semantic]
    page_keys, meta = _page(state, keys, limit, cursor)
    page = await state.submodels(page_keys, _api_url(request))
    if level == "core":
        page = [_core(sm) for sm in page]
    return _json({"paging_metadata": meta, "result": page})


@router.get("/submodels/{submodel_identifier}", summary="One submodel")
async def get_submodel(
    submodel_identifier: str,
    request: Request,
    state: State,
    token: Reader,
    level: Level = None,
    extent: Extent = None,
) -> JSONResponse:
    """The submodel with this (base64url-encoded) id."""
    key = _submodel_key(state, token, submodel_identifier)
    sm = (await state.submodels([key], _api_url(request)))[0]
    return _json(_core(sm) if level == "core" else sm)


@router.get("/submodels/{submodel_identifier}/$metadata", summary="A submodel's metadata")
async def get_submodel_metadata(
    submodel_identifier: str, request: Request, state: State, token: Reader
) -> JSONResponse:
    """The submodel without its elements."""
    key = _submodel_key(state, token, submodel_identifier)
    sm = (await state.submodels([key], _api_url(request)))[0]
    sm.pop("submodelElements", None)
    return _json(sm)


@router.get("/submodels/{submodel_identifier}/$value", summary="A submodel, ValueOnly")
async def get_submodel_value(
    submodel_identifier: str,
    request: Request,
    state: State,
    token: Reader,
    level: Level = None,
    extent: Extent = None,
) -> JSONResponse:
    """The submodel's values by idShort (e.g. the latest value of every signal)."""
    key = _submodel_key(state, token, submodel_identifier)
    sm = (await state.submodels([key], _api_url(request)))[0]
    return _json(value_only(sm))


@router.get(
    "/submodels/{submodel_identifier}/submodel-elements", summary="A submodel's elements (paged)"
)
async def get_submodel_elements(
    submodel_identifier: str,
    request: Request,
    state: State,
    token: Reader,
    limit: Limit = None,
    cursor: Cursor = None,
    level: Level = None,
    extent: Extent = None,
) -> JSONResponse:
    """The top-level elements of the submodel."""
    key = _submodel_key(state, token, submodel_identifier)
    sm = (await state.submodels([key], _api_url(request)))[0]
    page, meta = _page(state, sm.get("submodelElements", []), limit, cursor)
    return _json({"paging_metadata": meta, "result": page})


@router.get(
    "/submodels/{submodel_identifier}/submodel-elements/{id_short_path}",
    summary="One submodel element",
)
async def get_submodel_element(
    submodel_identifier: str,
    id_short_path: str,
    request: Request,
    state: State,
    token: Reader,
    level: Level = None,
    extent: Extent = None,
) -> JSONResponse:
    """The element at the idShort path (``Signals.temperature``, ``StateMap[0]``)."""
    key = _submodel_key(state, token, submodel_identifier)
    sm = (await state.submodels([key], _api_url(request)))[0]
    return _json(_element(sm, id_short_path))


@router.get(
    "/submodels/{submodel_identifier}/submodel-elements/{id_short_path}/$value",
    summary="One submodel element, ValueOnly",
)
async def get_submodel_element_value(
    submodel_identifier: str,
    id_short_path: str,
    request: Request,
    state: State,
    token: Reader,
    level: Level = None,
    extent: Extent = None,
) -> JSONResponse:
    """The element's ValueOnly form (e.g. one signal's latest value)."""
    key = _submodel_key(state, token, submodel_identifier)
    sm = (await state.submodels([key], _api_url(request)))[0]
    element = _element(sm, id_short_path)
    return _json(
        {element["idShort"]: value_only(element)} if "idShort" in element else value_only(element)
    )


# ---------------------------------------------------------------------- errors


def _result(
    request: Request, status: int, text: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    request.state.audit_problem = {"title": HTTPStatus(status).phrase, "detail": text}
    body = {
        "messages": [
            {
                "code": str(status),
                "messageType": "Error" if status < 500 else "Exception",
                "text": text,
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
        ]
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _install_handlers(app: FastAPI) -> None:
    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        status = 400 if exc.problem_type.slug in ("invalid-request", "too-large") else exc.status
        return _result(request, status, exc.detail, exc.headers)

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, _BadRequestError)
        return _result(request, 400, exc.text)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, _NotFoundError)
        return _result(request, 404, exc.text)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        text = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _result(request, 400, text)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        text = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return _result(request, exc.status_code, text, exc.headers)

    app.add_exception_handler(ProblemError, problem)
    app.add_exception_handler(_BadRequestError, bad_request)
    app.add_exception_handler(_NotFoundError, not_found)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)


def aas_app(ctx: ApiContext, options: AasOptions | None = None) -> FastAPI:
    """The AAS repository over ``ctx`` (mount it at :data:`AAS_PREFIX`).

    ``options`` set the id base (default: the exporter's); the time series endpoints link
    to the server the request reached.
    """
    app = FastAPI(
        title="shopfloor AAS repository",
        version=__version__,
        description=__doc__,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.aas = _State(ctx, options)
    _install_handlers(app)
    app.include_router(router)
    return app

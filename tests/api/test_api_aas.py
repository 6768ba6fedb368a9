"""The AAS Part 2 repository under /api/v1/aas: spec-shaped JSON, paging, tokens.

Every response body is checked with the SDK's strict JSON decoder and with aas-core3.0's
verification; the 401/403 matrix mirrors the rest of the API (``read`` scope, subtrees,
403 before any lookup), with errors as Part 2 ``Result`` objects.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aas_core3.jsonization as aas_json
import aas_core3.verification as aas_verification
import pytest
from _api_helpers import L_PRESS, M_PRESS, M_PRESS2, Api, ApiData, open_api
from basyx.aas import model
from basyx.aas.adapter.json import StrictAASFromJsonDecoder

BASE = "https://acme.example/ids"
AAS = "/api/v1/aas"


def b64(identifier: str, *, pad: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(identifier.encode()).decode()
    return encoded if pad else encoded.rstrip("=")


def shell_url(path: str, suffix: str = "", **kw: bool) -> str:
    return f"{AAS}/shells/{b64(f'{BASE}/aas/{path}', **kw)}{suffix}"


def sm_id(path: str, kind: str) -> str:
    return f"{BASE}/submodels/{path}/{kind}"


def sm_url(path: str, kind: str, suffix: str = "") -> str:
    return f"{AAS}/submodels/{b64(sm_id(path, kind))}{suffix}"


@pytest.fixture
async def api(api_data: ApiData) -> AsyncIterator[Api]:
    async with open_api(api_data) as a:
        yield a


def strict(body: Any, kind: type[Any]) -> Any:
    """Decode with the SDK's strict decoder; it must give an object of ``kind``."""
    obj = json.loads(json.dumps(body), cls=StrictAASFromJsonDecoder)
    assert isinstance(obj, kind), type(obj)
    return obj


def verified(shells: list[Any] = (), submodels: list[Any] = ()) -> None:  # type: ignore[assignment]
    """aas-core3.0 reads the objects and finds no violated constraint."""
    env: dict[str, Any] = {}
    if shells:
        env["assetAdministrationShells"] = list(shells)
    if submodels:
        env["submodels"] = list(submodels)
    errors = list(aas_verification.verify(aas_json.environment_from_jsonable(env)))
    assert errors == [], errors[:3]


def is_result(r: Any, status: int) -> str:
    """A Part 2 Result with one error message; its text."""
    assert r.status_code == status, r.text
    body = r.json()
    [message] = body["messages"]
    assert message["code"] == str(status)
    assert message["messageType"] == "Error"
    assert message["timestamp"].endswith("Z")
    return str(message["text"])


# ---------------------------------------------------------------------- what it serves


async def test_description_is_public(api: Api) -> None:
    r = await api.get(f"{AAS}/description")
    assert r.status_code == 200
    assert r.json() == {
        "profiles": [
            "https://admin-shell.io/aas/API/3/0/AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
            "https://admin-shell.io/aas/API/3/0/SubmodelRepositoryServiceSpecification/SSP-002",
        ]
    }


async def test_shells_are_spec_shaped_and_valid(api: Api) -> None:
    r = await api.get(f"{AAS}/shells", "admin_all")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"paging_metadata", "result"}
    assert body["paging_metadata"] == {}
    ids = [s["id"] for s in body["result"]]
    assert ids == [f"{BASE}/aas/{p}" for p in (M_PRESS, M_PRESS2, L_PRESS)]
    for shell in body["result"]:
        strict(shell, model.AssetAdministrationShell)
    verified(shells=body["result"])
    one = await api.get(shell_url(M_PRESS), "read_munich")
    assert one.json() == body["result"][0]
    padded = await api.get(shell_url(M_PRESS, pad=True), "read_munich")
    assert padded.json() == one.json()
    info = await api.get(shell_url(M_PRESS, "/asset-information"), "read_munich")
    assert info.json()["globalAssetId"] == f"{BASE}/assets/{M_PRESS}"
    assert info.json()["assetType"] == "press"


async def test_submodel_refs_and_superpath(api: Api) -> None:
    r = await api.get(shell_url(M_PRESS, "/submodel-refs"), "read_munich")
    refs = r.json()["result"]
    assert [ref["keys"][0]["value"] for ref in refs] == sorted(
        sm_id(M_PRESS, k) for k in ("Nameplate", "TechnicalData", "OperationalData", "TimeSeries")
    )
    for ref in refs:
        assert ref["type"] == "ModelReference"
        target = await api.get(
            shell_url(M_PRESS, f"/submodels/{b64(ref['keys'][0]['value'])}"), "read_munich"
        )
        assert target.status_code == 200
        strict(target.json(), model.Submodel)
        direct = await api.get(f"{AAS}/submodels/{b64(ref['keys'][0]['value'])}", "read_munich")
        assert direct.json() == target.json()
    # a submodel of another shell is not this shell's
    other = await api.get(
        shell_url(M_PRESS, f"/submodels/{b64(sm_id(M_PRESS2, 'Nameplate'))}"), "read_munich"
    )
    assert "no such submodel" in is_result(other, 404)


async def test_operational_data_holds_the_historians_latest_values(api: Api) -> None:
    truth = api.data.truth[M_PRESS]
    r = await api.get(sm_url(M_PRESS, "OperationalData"), "read_munich")
    sm = r.json()
    strict(sm, model.Submodel)
    verified(submodels=[sm])
    elements = {e["idShort"]: e for e in sm["submodelElements"]}
    assert float(elements["temperature"]["value"]) == pytest.approx(truth["temperature"][-1])
    assert int(elements["good_count"]["value"]) == int(truth["good_count"][-1])
    quality = {q["type"]: q["value"] for q in elements["temperature"]["qualifiers"]}
    assert quality["Quality"] == "good"
    assert quality["Timestamp"].startswith("2025-01-06T07:59:59")
    assert elements["mode"]["value"] == "manual"
    assert json.loads(elements["recipe"]["value"]) == {"id": 7, "name": "A"}
    assert "value" not in elements["oee"]  # derived, never stored here

    values = (await api.get(sm_url(M_PRESS, "OperationalData", "/$value"), "read_munich")).json()
    assert values["temperature"] == pytest.approx(truth["temperature"][-1])
    assert values["good_count"] == int(truth["good_count"][-1])
    assert values["mode"] == "manual"
    assert values["oee"] is None
    one = await api.get(
        sm_url(M_PRESS, "OperationalData", "/submodel-elements/temperature/$value"), "read_munich"
    )
    assert one.json() == {"temperature": values["temperature"]}
    meta = (await api.get(sm_url(M_PRESS, "OperationalData", "/$metadata"), "read_munich")).json()
    assert "submodelElements" not in meta
    assert meta["id"] == sm_id(M_PRESS, "OperationalData")


async def test_time_series_links_to_this_servers_history(api: Api) -> None:
    sm = (await api.get(sm_url(M_PRESS, "TimeSeries"), "read_munich")).json()
    verified(submodels=[sm])
    segments = next(e for e in sm["submodelElements"] if e["idShort"] == "Segments")["value"]
    fields = {
        next(f for f in s["value"] if f["idShort"] == "Name")["value"][0]["text"]: {
            f["idShort"]: f.get("value") for f in s["value"]
        }
        for s in segments
    }
    temperature = fields["temperature"]
    assert temperature["Endpoint"] == f"http://api/api/v1/history/{M_PRESS}/temperature"
    assert temperature["LastUpdate"].startswith("2025-01-06T07:59:59")
    # the endpoint answers with the signal's history (same token)
    url = temperature["Endpoint"].removeprefix("http://api")
    r = await api.get(f"{url}?start=2025-01-06T07:59:50Z&end=2025-01-06T08:00:00Z", "read_munich")
    assert r.status_code == 200
    assert r.json()["value"][-1] == pytest.approx(api.data.truth[M_PRESS]["temperature"][-1])


async def test_technical_data_elements_by_path(api: Api) -> None:
    url = sm_url(
        M_PRESS, "TechnicalData", "/submodel-elements/TechnicalProperties.Signals.temperature"
    )
    r = await api.get(url, "read_munich")
    element = r.json()
    assert element["modelType"] == "SubmodelElementCollection"
    fields = {e["idShort"]: e for e in element["value"]}
    assert fields["Unit"]["value"] == "CEL"
    assert fields["SemanticId"]["value"] == "0173-1#02-AAV232#002"
    limits = await api.get(
        sm_url(
            M_PRESS,
            "TechnicalData",
            "/submodel-elements/TechnicalProperties.Signals.temperature.Limits/$value",
        ),
        "read_munich",
    )
    assert limits.json() == {"Limits": {"min": 10.0, "max": 70.0}}
    first_state = await api.get(
        sm_url(
            M_PRESS, "TechnicalData", "/submodel-elements/TechnicalProperties.StateMap[0]/$value"
        ),
        "read_munich",
    )
    assert first_state.json() == {"RawState": "0", "StandardState": "offline"}
    missing = await api.get(
        sm_url(M_PRESS, "TechnicalData", "/submodel-elements/TechnicalProperties.Nope"),
        "read_munich",
    )
    assert "no submodel element" in is_result(missing, 404)
    core = (await api.get(sm_url(M_PRESS, "TechnicalData") + "?level=core", "read_munich")).json()
    assert all("value" not in e for e in core["submodelElements"])
    top = await api.get(sm_url(M_PRESS, "TechnicalData", "/submodel-elements"), "read_munich")
    assert [e["idShort"] for e in top.json()["result"]] == [
        "GeneralInformation",
        "TechnicalProperties",
    ]


# ---------------------------------------------------------------------- lists and pages


async def test_lists_hold_only_the_tokens_subtrees(api: Api) -> None:
    async def ids(url: str, token: str) -> list[str]:
        r = await api.get(url, token)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["result"]]

    assert await ids(f"{AAS}/shells", "read_munich") == [
        f"{BASE}/aas/{M_PRESS}",
        f"{BASE}/aas/{M_PRESS2}",
    ]
    assert await ids(f"{AAS}/shells", "read_leipzig") == [f"{BASE}/aas/{L_PRESS}"]
    submodels = await ids(f"{AAS}/submodels", "read_leipzig")
    assert submodels == [
        sm_id(L_PRESS, k) for k in ("Nameplate", "TechnicalData", "OperationalData", "TimeSeries")
    ]
    series = b64("https://admin-shell.io/idta/TimeSeries/1/1")
    assert await ids(f"{AAS}/submodels?semanticId={series}", "admin_all") == [
        sm_id(p, "TimeSeries") for p in (M_PRESS, M_PRESS2, L_PRESS)
    ]
    assert await ids(f"{AAS}/submodels?idShort=Nameplate", "read_munich") == [
        sm_id(M_PRESS, "Nameplate"),
        sm_id(M_PRESS2, "Nameplate"),
    ]
    assert await ids(f"{AAS}/shells?idShort=press_2", "admin_all") == [f"{BASE}/aas/{M_PRESS2}"]
    wanted = b64(json.dumps({"name": "globalAssetId", "value": f"{BASE}/assets/{L_PRESS}"}))
    assert await ids(f"{AAS}/shells?assetIds={wanted}", "admin_all") == [f"{BASE}/aas/{L_PRESS}"]
    assert await ids(f"{AAS}/shells?assetIds={wanted}", "read_munich") == []


async def test_paging_walks_every_item_once(api: Api) -> None:
    full = (await api.get(f"{AAS}/submodels", "admin_all")).json()["result"]
    assert len(full) == 12
    for shell in (await api.get(f"{AAS}/shells", "admin_all")).json()["result"]:
        strict(shell, model.AssetAdministrationShell)
    seen: list[Any] = []
    url = f"{AAS}/submodels?limit=5"
    pages = 0
    while True:
        body = (await api.get(url, "admin_all")).json()
        seen += body["result"]
        pages += 1
        cursor = body["paging_metadata"].get("cursor")
        if cursor is None:
            break
        url = f"{AAS}/submodels?limit=5&cursor={cursor}"
    assert pages == math.ceil(12 / 5)
    assert [s["id"] for s in seen] == [s["id"] for s in full]
    for sm in seen:
        strict(sm, model.Submodel)
    verified(submodels=seen)
    assert "limit" in is_result(await api.get(f"{AAS}/shells?limit=0", "admin_all"), 400)
    assert "cursor" in is_result(await api.get(f"{AAS}/shells?cursor=%%%", "admin_all"), 400)
    assert is_result(await api.get(f"{AAS}/submodels?level=flat", "admin_all"), 400)


# ---------------------------------------------------------------------- 400, 401, 403, 404

ROUTES = [
    f"{AAS}/shells",
    shell_url(M_PRESS),
    shell_url(M_PRESS, "/asset-information"),
    shell_url(M_PRESS, "/submodel-refs"),
    shell_url(M_PRESS, f"/submodels/{b64(sm_id(M_PRESS, 'Nameplate'))}"),
    shell_url(M_PRESS, f"/submodels/{b64(sm_id(M_PRESS, 'Nameplate'))}/$value"),
    f"{AAS}/submodels",
    sm_url(M_PRESS, "Nameplate"),
    sm_url(M_PRESS, "Nameplate", "/$metadata"),
    sm_url(M_PRESS, "OperationalData", "/$value"),
    sm_url(M_PRESS, "TechnicalData", "/submodel-elements"),
    sm_url(M_PRESS, "TechnicalData", "/submodel-elements/TechnicalProperties"),
    sm_url(M_PRESS, "TechnicalData", "/submodel-elements/TechnicalProperties/$value"),
]


def test_every_route_is_in_the_matrix(api_data: ApiData) -> None:
    from _api_helpers import factory_text

    from shopfloor.api import create_app
    from shopfloor.model import parse_factory

    app = create_app(parse_factory(factory_text()), None, None)  # type: ignore[arg-type]
    [mount] = [r for r in app.routes if getattr(r, "path", None) == AAS]
    served = set(mount.app.openapi()["paths"])  # type: ignore[attr-defined]
    templates = {
        "/shells",
        "/shells/{aas_identifier}",
        "/shells/{aas_identifier}/asset-information",
        "/shells/{aas_identifier}/submodel-refs",
        "/shells/{aas_identifier}/submodels/{submodel_identifier}",
        "/shells/{aas_identifier}/submodels/{submodel_identifier}/$value",
        "/submodels",
        "/submodels/{submodel_identifier}",
        "/submodels/{submodel_identifier}/$metadata",
        "/submodels/{submodel_identifier}/$value",
        "/submodels/{submodel_identifier}/submodel-elements",
        "/submodels/{submodel_identifier}/submodel-elements/{id_short_path}",
        "/submodels/{submodel_identifier}/submodel-elements/{id_short_path}/$value",
    }
    assert served == templates | {"/description"}
    assert len(ROUTES) == len(templates)


@pytest.mark.parametrize("url", ROUTES)
async def test_no_or_bad_token_is_401_and_audited(api: Api, url: str) -> None:
    r = await api.get(url)
    assert "no token" in is_result(r, 401)
    assert "Bearer" in r.headers["www-authenticate"]
    tokens, ids = api.data.tokens, api.data.token_ids
    for token, (text, claimed) in {
        tokens["revoked"]: ("revoked", ids["revoked"]),
        tokens["expired"]: ("expired", ids["expired"]),
        "not-a-token": ("not valid", None),
    }.items():
        before = await api.auth.audit_entries(limit=1)
        r = await api.client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert text in is_result(r, 401)
        rows = await api.auth.audit_entries(after=before[0].seq, newest_first=False)
        assert [(row.token_id, row.status) for row in rows] == [(claimed, 401)]
        assert rows[0].path.startswith(AAS)


NAMED = [u for u in ROUTES if u not in (f"{AAS}/shells", f"{AAS}/submodels")]
"""The routes that name a shell or submodel (the lists leave out what lies outside)."""


@pytest.mark.parametrize("url", NAMED)
async def test_outside_the_subtree_is_403_before_any_lookup(api: Api, url: str) -> None:
    before = await api.auth.audit_entries(limit=1)
    r = await api.get(url, "read_leipzig")
    assert "outside this token's subtrees" in is_result(r, 403)
    rows = await api.auth.audit_entries(after=before[0].seq, newest_first=False)
    assert [(row.token_id, row.status) for row in rows] == [
        (api.data.token_ids["read_leipzig"], 403)
    ]
    assert rows[0].detail is not None
    ghost = url.replace(b64(f"{BASE}/aas/{M_PRESS}"), b64(f"{BASE}/aas/{M_PRESS}-ghost")).replace(
        b64(sm_id(M_PRESS, "Nameplate")), b64(sm_id(M_PRESS + "-ghost", "Nameplate"))
    )
    # a shell that does not exist in a foreign subtree is 403 as well: nothing leaks
    assert is_result(await api.get(ghost, "read_leipzig"), 403)


@pytest.mark.parametrize("url", ROUTES)
async def test_the_right_token_reads_and_is_audited(api: Api, url: str) -> None:
    before = await api.auth.audit_entries(limit=1)
    r = await api.get(url, "read_munich")
    assert r.status_code == 200, r.text
    rows = await api.auth.audit_entries(after=before[0].seq, newest_first=False)
    assert [(row.token_id, row.status, row.method) for row in rows] == [
        (api.data.token_ids["read_munich"], 200, "GET")
    ]


async def test_unknown_and_malformed_ids(api: Api) -> None:
    ghost = f"{M_PRESS}-ghost"
    assert "no Asset Administration Shell" in is_result(
        await api.get(shell_url(ghost), "read_munich"), 404
    )
    assert "no Submodel" in is_result(await api.get(sm_url(ghost, "Nameplate"), "read_munich"), 404)
    assert is_result(await api.get(sm_url(M_PRESS, "Bogus"), "read_munich"), 404)
    foreign = b64("https://elsewhere.example/aas/1")
    assert is_result(await api.get(f"{AAS}/shells/{foreign}", "read_munich"), 404)
    # a submodel id where a shell id belongs
    assert is_result(
        await api.get(f"{AAS}/shells/{b64(sm_id(M_PRESS, 'Nameplate'))}", "read_munich"), 404
    )
    assert "base64url" in is_result(await api.get(f"{AAS}/shells/%25%25not", "read_munich"), 400)
    assert "base64url" in is_result(await api.get(f"{AAS}/submodels/____", "read_munich"), 400)
    assert is_result(await api.get(f"{AAS}/nothing-here", "read_munich"), 404)

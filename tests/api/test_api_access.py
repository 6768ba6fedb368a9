"""Every route: no token → 401, wrong scope → 403, outside the subtree → 403, all as
RFC 9457 problem details; and every token use lands in the audit log.

A request that *names* an asset, signal or event outside the token's subtrees gets 403
(``outside-subtree``) whether or not the thing exists; lists leave such things out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from _api_helpers import L_LINE, L_PRESS, M_LINE, M_PRESS, T0_US, Api, ApiData, open_api

RANGE = "start=2025-01-06T06:00:00Z&end=2025-01-06T08:00:00Z"
M_DOWNTIME = f"downtime:{M_PRESS}:{T0_US + 1800 * 1_000_000}"
L_DOWNTIME = f"downtime:{L_PRESS}:{T0_US + 1920 * 1_000_000}"
M_ALARM = f"alarm:{M_PRESS}/temperature_high:{T0_US}"
L_ALARM = f"alarm:{L_PRESS}/temperature_high:{T0_US}"
NEEDS_RUNTIME = {
    "/api/v1/setpoints/{signal}",
    "/api/v1/alarms",
    "/api/v1/events/{event_id}/ack",
}


@dataclass(frozen=True)
class Case:
    """One route: a request within Munich, the scope it needs, and one naming Leipzig."""

    method: str
    route: str
    url: str
    scope: str | None  # None: public
    outside: str | None = None  # the same request naming Leipzig (None: the route lists)
    body: Any = None


CASES = [
    Case("GET", "/api/v1/health", "/api/v1/health", None),
    Case("GET", "/api/v1/ready", "/api/v1/ready", None),
    Case("GET", "/api/v1/problems/{slug}", "/api/v1/problems/unauthorized", None),
    Case("GET", "/api/v1/me", "/api/v1/me", "read"),
    Case(
        "GET", "/api/v1/assets", "/api/v1/assets?under=acme/munich", "read",
        "/api/v1/assets?under=acme/leipzig",
    ),
    Case(
        "GET", "/api/v1/assets/{path}", f"/api/v1/assets/{M_LINE}", "read",
        f"/api/v1/assets/{L_LINE}",
    ),
    Case("GET", "/api/v1/types", "/api/v1/types", "read"),
    Case("GET", "/api/v1/types/{type_id}", "/api/v1/types/press", "read"),
    Case(
        "GET", "/api/v1/signals", f"/api/v1/signals?under={M_LINE}", "read",
        f"/api/v1/signals?under={L_LINE}",
    ),
    Case(
        "GET", "/api/v1/signals/{path}", f"/api/v1/signals/{M_PRESS}/temperature", "read",
        f"/api/v1/signals/{L_PRESS}/temperature",
    ),
    Case(
        "GET", "/api/v1/history/{signal}", f"/api/v1/history/{M_PRESS}/temperature?{RANGE}",
        "read", f"/api/v1/history/{L_PRESS}/temperature?{RANGE}",
    ),
    Case(
        "GET", "/api/v1/latest", f"/api/v1/latest?signal={M_PRESS}/temperature", "read",
        f"/api/v1/latest?signal={L_PRESS}/temperature",
    ),
    Case(
        "GET", "/api/v1/kpi/{kpi}", f"/api/v1/kpi/oee?asset={M_LINE}&{RANGE}", "read",
        f"/api/v1/kpi/oee?asset={L_LINE}&{RANGE}",
    ),
    Case(
        "GET", "/api/v1/events", f"/api/v1/events?asset={M_LINE}&{RANGE}", "read",
        f"/api/v1/events?asset={L_LINE}&{RANGE}",
    ),
    Case(
        "PUT", "/api/v1/events/{event_id}/reason", f"/api/v1/events/{M_DOWNTIME}/reason",
        "operate", f"/api/v1/events/{L_DOWNTIME}/reason", {"reason": "tooling"},
    ),
    Case(
        "POST", "/api/v1/events/{event_id}/ack", f"/api/v1/events/{M_ALARM}/ack", "operate",
        f"/api/v1/events/{L_ALARM}/ack", {"comment": "seen"},
    ),
    Case("GET", "/api/v1/alarms", "/api/v1/alarms", "read"),
    Case(
        "GET", "/api/v1/downtime/pareto", f"/api/v1/downtime/pareto?asset={M_LINE}&{RANGE}",
        "read", f"/api/v1/downtime/pareto?asset={L_LINE}&{RANGE}",
    ),
    Case(
        "POST", "/api/v1/downtime/record", f"/api/v1/downtime/record?asset={M_PRESS}&{RANGE}",
        "operate", f"/api/v1/downtime/record?asset={L_PRESS}&{RANGE}",
    ),
    Case("GET", "/api/v1/dead-letters", "/api/v1/dead-letters", "read"),
    Case(
        "POST", "/api/v1/setpoints/{signal}", f"/api/v1/setpoints/{M_PRESS}/force_setpoint",
        "operate", f"/api/v1/setpoints/{L_PRESS}/force_setpoint", {"value": 1.5e6},
    ),
    Case(
        "GET", "/api/v1/export/history",
        f"/api/v1/export/history?signal={M_PRESS}/temperature&{RANGE}", "read",
        f"/api/v1/export/history?signal={M_PRESS}/temperature&signal={L_PRESS}/mode&{RANGE}",
    ),
    Case(
        "GET", "/api/v1/export/events", f"/api/v1/export/events?asset={M_LINE}&{RANGE}",
        "read", f"/api/v1/export/events?asset={L_LINE}&{RANGE}",
    ),
    Case("GET", "/api/v1/audit", "/api/v1/audit", "admin", "/api/v1/audit"),
]  # fmt: skip

IDS = [f"{c.method} {c.route}" for c in CASES]


def _id(case: Case) -> str:
    return f"{case.method} {case.route}"


_BELOW = {"read": None, "operate": "read_munich", "admin": "operate_munich"}
_OK = {"read": "read_munich", "operate": "operate_munich", "admin": "admin_all"}
_OUTSIDE = {"read": "read_munich", "operate": "operate_munich", "admin": "admin_munich"}


@pytest.fixture
async def api(api_data: ApiData) -> AsyncIterator[Api]:
    async with open_api(api_data) as a:
        yield a


async def _call(api: Api, case: Case, url: str, token: str | None) -> Any:
    headers = api.auth_header(token) if token else {}
    return await api.client.request(case.method, url, headers=headers, json=case.body)


def _is_problem(r: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["title"]
    assert body["instance"] == r.request.url.path
    if slug is not None:
        assert body["type"] == f"/api/v1/problems/{slug}"
    return body


def test_every_route_has_a_case(api_data: ApiData) -> None:
    from _api_helpers import factory_text

    from shopfloor.api import create_app
    from shopfloor.model import parse_factory

    app = create_app(parse_factory(factory_text()), None, None)  # type: ignore[arg-type]
    paths = app.openapi()["paths"]
    routes = {(method.upper(), path) for path, item in paths.items() for method in item}
    # the data-share routes (admin and partner) have their own matrix: test_api_shares.py
    routes -= {r for r in routes if r[1].startswith(("/api/v1/shares", "/api/v1/shared/"))}
    assert routes == {(c.method, c.route) for c in CASES}
    # nothing is served outside the versioned prefix but the Prometheus metrics (at the path
    # every scraper expects) and the dashboard's page, its files and its token-free bootstrap
    # document (test_web_static.py); the AAS repository is a sub-application under the prefix
    outside = {"/metrics", "/", "/dashboard.json", "/web"}
    served = {getattr(r, "path", None) for r in app.routes} - {None, "/api/v1/aas"} - outside
    assert all(p.startswith("/api/v1/") for p in served), served


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_no_token_is_401(api: Api, case: Case) -> None:
    r = await _call(api, case, case.url, None)
    if case.scope is None:
        assert r.status_code == 200, r.text
        return
    body = _is_problem(r, 401, "unauthorized")
    assert "Bearer" in r.headers["www-authenticate"]
    assert "no token" in body["detail"]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.scope], ids=lambda c: f"{c.method} {c.route}"
)
async def test_invalid_tokens_are_401_and_audited(api: Api, case: Case) -> None:
    tokens, ids = api.data.tokens, api.data.token_ids
    bad = {  # token → (what the problem says, the id the audit row names)
        tokens["revoked"]: ("revoked", ids["revoked"]),
        tokens["expired"]: ("expired", ids["expired"]),
        "not-a-token": ("not valid", None),
        tokens["admin_all"][:-4] + "AAAA": ("not valid", ids["admin_all"]),
    }
    for token, (detail, claimed) in bad.items():
        before = await api.auth.audit_entries(limit=1)
        r = await api.client.request(
            case.method, case.url, headers={"Authorization": f"Bearer {token}"}, json=case.body
        )
        body = _is_problem(r, 401, "unauthorized")
        assert detail in body["detail"]
        rows = await api.auth.audit_entries(after=before[0].seq, newest_first=False)
        assert len(rows) == 1
        assert rows[0].token_id == claimed
        assert (rows[0].method, rows[0].status) == (case.method, 401)


@pytest.mark.parametrize(
    "case", [c for c in CASES if _BELOW.get(c.scope or "")], ids=lambda c: f"{c.method} {c.route}"
)
async def test_wrong_scope_is_403(api: Api, case: Case) -> None:
    assert case.scope is not None
    token = _BELOW[case.scope]
    r = await _call(api, case, case.url, token)
    body = _is_problem(r, 403, "insufficient-scope")
    assert body["required"] == case.scope
    rows = await api.auth.audit_entries(limit=1)
    assert rows[0].token_id == api.data.token_ids[token or ""]
    assert rows[0].status == 403
    assert rows[0].detail is not None
    assert rows[0].detail["problem"]["title"] == body["title"]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.outside], ids=lambda c: f"{c.method} {c.route}"
)
async def test_outside_the_subtree_is_403(api: Api, case: Case) -> None:
    assert case.scope is not None
    assert case.outside is not None
    token = _OUTSIDE[case.scope]
    r = await _call(api, case, case.outside, token)
    body = _is_problem(r, 403, "outside-subtree")
    assert "acme/leipzig" in body["detail"] or "whole tree" in body["detail"]
    # Naming something that does not exist outside the subtree says nothing more.
    r2 = await _call(api, case, case.outside.replace("leipzig", "leipzig-nowhere"), token)
    if case.route != "/api/v1/audit":
        _is_problem(r2, 403, "outside-subtree")


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.scope], ids=lambda c: f"{c.method} {c.route}"
)
async def test_allowed_requests_succeed_and_are_audited(api: Api, case: Case) -> None:
    assert case.scope is not None
    token = _OK[case.scope]
    before = await api.auth.audit_entries(limit=1)
    r = await _call(api, case, case.url, token)
    # Setpoints and alarms are allowed but this server has no runtime: 503, still audited.
    expected = 503 if case.route in NEEDS_RUNTIME else 200
    assert r.status_code == expected, r.text
    rows = await api.auth.audit_entries(after=before[0].seq, newest_first=False)
    assert len(rows) == 1
    row = rows[0]
    assert row.token_id == api.data.token_ids[token]
    assert (row.method, row.status) == (case.method, expected)
    assert row.path.split("?")[0] == case.url.split("?")[0]
    if case.method != "GET":
        assert row.detail is not None
        assert row.detail["action"]
    assert await api.auth.verify_audit() > 0


async def test_lists_leave_out_other_subtrees(api: Api) -> None:
    for token, mine, other in (
        ("read_munich", "acme/munich", "acme/leipzig"),
        ("read_leipzig", "acme/leipzig", "acme/munich"),
    ):
        for url in (
            "/api/v1/assets?limit=1000",
            "/api/v1/signals?limit=1000",
            "/api/v1/latest?limit=1000",
            f"/api/v1/events?{RANGE}&limit=1000",
        ):
            r = await api.get(url, token)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            assert items, url
            paths = [i.get("path") or i.get("signal") or i.get("asset") for i in items]
            assert all(p.startswith(mine + "/") or p == mine for p in paths), (url, paths)
            assert not any(p.startswith(other) for p in paths)
    # A token for two lines in two sites sees both lines and nothing else.
    r = await api.get("/api/v1/assets?limit=1000", "read_two_lines")
    paths = {a["path"] for a in r.json()["items"]}
    assert M_LINE in paths
    assert L_LINE in paths
    assert "acme/munich" not in paths
    assert "acme" not in paths


async def test_types_outside_the_subtrees_are_not_found(api: Api) -> None:
    r = await api.get("/api/v1/types", "read_munich")
    assert [t["id"] for t in r.json()["items"]] == ["press"]
    r = await api.get("/api/v1/types/press-l", "read_munich")
    _is_problem(r, 404, "not-found")
    r = await api.get("/api/v1/types/press-l", "read_leipzig")
    assert r.status_code == 200
    assert r.json()["chain"] == ["press-l", "press"]


async def test_dead_letters_follow_their_connection(api: Api) -> None:
    async def sources(token: str) -> list[str]:
        r = await api.get("/api/v1/dead-letters", token)
        assert r.status_code == 200, r.text
        return [d["source"] for d in r.json()["items"]]

    assert set(await sources("read_munich")) == {"munich-opc"}
    assert set(await sources("read_leipzig")) == {"leipzig-opc"}
    # unknown sources only for a token of the whole tree
    assert set(await sources("admin_all")) == {"munich-opc", "leipzig-opc", "mystery"}
    assert set(await sources("read_two_lines")) == {"munich-opc", "leipzig-opc"}
    # a connection that also serves assets outside the token's subtree stays hidden
    one_press = await api.auth.create_token("read", [M_PRESS])
    r = await api.client.get(
        "/api/v1/dead-letters", headers={"Authorization": f"Bearer {one_press.token}"}
    )
    assert r.status_code == 200
    assert r.json()["items"] == []

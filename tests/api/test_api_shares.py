"""Data shares: a partner's share token reads exactly its data product and nothing else.

Each test creates its own shares (names made unique) in the session's security store and
reads through the real app (in-process ASGI) over the session's DuckDB historian. Every
attempt, allowed or refused, must leave one audit row under the share's id.
"""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from _api_helpers import L_LINE, L_PRESS, M_LINE, M_PRESS, M_PRESS2, NAN_AT, T0, T1, Api, ApiData
from _api_helpers import open_api as _open_api
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from shopfloor.analytics import oee
from shopfloor.api import AuthStore
from shopfloor.api._shares import (
    NewShare,
    ShareError,
    ShareLevel,
    ShareProduct,
    ShareStore,
    check_selector,
)

RANGE = f"start={T0.isoformat()}&end={T1.isoformat()}".replace("+00:00", "Z")
SHARE_ROUTES = {
    ("GET", "/api/v1/shares"),
    ("POST", "/api/v1/shares"),
    ("GET", "/api/v1/shares/{share_id}"),
    ("POST", "/api/v1/shares/{share_id}/revoke"),
    ("GET", "/api/v1/shared/{share}"),
    ("GET", "/api/v1/shared/{share}/data"),
}


@pytest.fixture
async def api(api_data: ApiData) -> AsyncIterator[Api]:
    async with _open_api(api_data) as a:
        yield a


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _share(
    api: Api,
    select: list[str],
    level: str,
    *,
    start: datetime = T0,
    end: datetime | None = T1,
    expires_in: timedelta = timedelta(days=1),
) -> NewShare:
    return await ShareStore(api.auth).create(
        _name("test"),
        partner="Supplier X GmbH",
        purpose="quality analysis of delivered parts",
        select=select,
        level=level,
        start=start,
        end=end,
        expires_in=expires_in,
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _get(api: Api, url: str, token: str, **params: Any) -> Any:
    return await api.client.get(url, headers=_bearer(token), params=params or None)


def _problem(r: Any, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == f"/api/v1/problems/{slug}", body
    return body


class Audit:
    """Counts the audit rows a share's requests leave."""

    def __init__(self, api: Api, share_id: str) -> None:
        self.api = api
        self.share_id = share_id
        self.seen = 0

    async def expect(self, *statuses: int) -> list[Any]:
        """The rows since the last call: exactly one per request, with these statuses."""
        rows = await self.api.auth.audit_entries(
            token_id=self.share_id, newest_first=False, limit=10_000
        )
        rows = [r for r in rows if r.method != "CLI"]
        new, self.seen = rows[self.seen :], len(rows)
        assert [r.status for r in new] == list(statuses), [(r.path, r.status) for r in new]
        return new


async def test_partner_reads_a_raw_product(api: Api) -> None:
    signal = f"{M_PRESS}/temperature"
    new = await _share(api, [signal], "raw")
    sid, token = new.share.id, new.token
    audit = Audit(api, sid)

    r = await _get(api, f"/api/v1/shared/{sid}", token)
    assert r.status_code == 200, r.text
    product = r.json()
    assert product["partner"] == "Supplier X GmbH"
    assert product["level"] == "raw"
    assert [i["path"] for i in product["items"]] == [signal]
    assert product["items"][0]["unit"] == "CEL"
    assert [c["name"] for c in product["columns"]][:4] == ["asset_path", "signal", "ts", "quality"]
    # the name works as well as the id
    r = await _get(api, f"/api/v1/shared/{new.share.name}", token)
    assert r.status_code == 200

    truth = api.data.truth[M_PRESS]["temperature"]
    r = await _get(api, f"/api/v1/shared/{sid}/data", token, limit=100_000)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == len(truth) == 7200
    assert body["next"] is None
    values = body["columns"]["value_float"]
    assert values[NAN_AT] is None  # JSON has no NaN
    ok = np.ones(len(truth), dtype=bool)
    ok[NAN_AT] = False
    np.testing.assert_allclose(np.array(values, dtype=float)[ok], truth[ok])
    assert set(body["columns"]["signal"]) == {signal}
    assert body["columns"]["value_int"] == [None] * 7200

    raw = await api.historian.read_raw(signal, T0, T1)
    r = await _get(api, f"/api/v1/shared/{sid}/data", token, format="parquet")
    assert r.status_code == 200, r.text
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == raw.num_rows
    assert table.column("ts").equals(raw.column("ts"))
    got = table.column("value_float").to_numpy()
    np.testing.assert_array_equal(got, raw.column("value").to_numpy())
    assert np.isnan(got[NAN_AT])  # NaN kept in files
    assert table.schema.field("quality").type == pa.int64()

    r = await _get(api, f"/api/v1/shared/{sid}/data", token, format="csv", start="-1000d")
    _problem(r, 403, "outside-share")  # before the window
    r = await _get(
        api, f"/api/v1/shared/{sid}/data", token, format="csv",
        start=(T0 + timedelta(hours=1)).isoformat(),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    csv = pacsv.read_csv(io.BytesIO(r.content))
    assert csv.num_rows == 3600
    rows = await audit.expect(200, 200, 200, 200, 403, 200)
    assert rows[2].detail is not None
    assert rows[2].detail["rows"] == 7200


async def test_other_assets_signals_and_shares_are_403(api: Api) -> None:
    new = await _share(api, [f"{M_PRESS}/temperature", f"{M_PRESS}/state"], "raw")
    other = await _share(api, [f"{M_PRESS}/temperature"], "raw")
    sid, token = new.share.id, new.token
    audit = Audit(api, sid)
    data = f"/api/v1/shared/{sid}/data"
    for signal in (
        f"{L_PRESS}/temperature",  # another site
        f"{M_PRESS2}/temperature",  # the next press
        f"{M_PRESS}/good_count",  # another signal of the same press
        f"{L_PRESS}/does-not-exist",  # says nothing of existence
    ):
        body = _problem(await _get(api, data, token, signal=signal), 403, "outside-share")
        assert signal in body["detail"]
    # a signal of the share: fine
    r = await _get(api, data, token, signal=f"{M_PRESS}/state")
    assert r.status_code == 200, r.text
    assert set(r.json()["columns"]["signal"]) == {f"{M_PRESS}/state"}
    # another share's URL with this token, or this token on the other share
    _problem(await _get(api, f"/api/v1/shared/{other.share.id}", token), 403, "outside-share")
    _problem(await _get(api, f"/api/v1/shared/{other.share.id}/data", token), 403, "outside-share")
    _problem(await _get(api, f"/api/v1/shared/{sid}", other.token), 403, "outside-share")
    # after the window's end
    _problem(await _get(api, data, token, end=(T1 + timedelta(seconds=1)).isoformat()), 403,
             "outside-share")  # fmt: skip
    await audit.expect(403, 403, 403, 403, 200, 403, 403, 403)


async def test_aggregates_only_never_raw(api: Api) -> None:
    new = await _share(api, [M_PRESS], "1h")
    sid, token = new.share.id, new.token
    audit = Audit(api, sid)
    product = (await _get(api, f"/api/v1/shared/{sid}", token)).json()
    paths = {i["path"] for i in product["items"]}
    # numeric signals of the press only: mode (string) and recipe (json) are left out
    assert f"{M_PRESS}/temperature" in paths
    assert f"{M_PRESS}/mode" not in paths
    assert f"{M_PRESS}/recipe" not in paths
    assert product["bucket_s"] == 3600

    r = await _get(api, f"/api/v1/shared/{sid}/data", token, signal=f"{M_PRESS}/temperature")
    assert r.status_code == 200, r.text
    cols = r.json()["columns"]
    assert set(cols) == {"asset_path", "signal", "bucket", "min", "max", "avg", "count"}
    ref = await api.historian.downsample(f"{M_PRESS}/temperature", T0, T1, timedelta(hours=1))
    assert cols["count"] == ref.column("count").to_pylist()
    assert len(cols["count"]) == 2
    for k in ("min", "max", "avg"):  # NaN in the data: null in JSON, NaN in the reference
        np.testing.assert_allclose(np.array(cols[k], dtype=float), ref.column(k).to_numpy())

    # raw values: by level, by the normal history and export routes
    _problem(await _get(api, f"/api/v1/shared/{sid}/data", token, level="raw"), 403,
             "outside-share")  # fmt: skip
    _problem(await _get(api, f"/api/v1/shared/{sid}/data", token, level="1m"), 403,
             "outside-share")  # fmt: skip
    r = await _get(api, f"/api/v1/shared/{sid}/data", token, level="60m")  # the same level
    assert r.status_code == 200
    _problem(await _get(api, f"/api/v1/history/{M_PRESS}/temperature?{RANGE}", token), 403,
             "share-token")  # fmt: skip
    _problem(
        await _get(api, f"/api/v1/export/history?signal={M_PRESS}/temperature&{RANGE}", token),
        403,
        "share-token",
    )
    await audit.expect(200, 200, 403, 403, 200, 403, 403)


async def test_oee_only(api: Api) -> None:
    new = await _share(api, [M_LINE, f"{M_LINE}/*/*"], "oee:hour")
    sid, token = new.share.id, new.token
    audit = Audit(api, sid)
    product = (await _get(api, f"/api/v1/shared/{sid}", token)).json()
    assert [i["path"] for i in product["items"]] == [M_LINE, M_PRESS, M_PRESS2]
    assert [c["name"] for c in product["columns"]] == [
        "asset_path", "window_start", "window_end", "availability", "performance", "quality",
        "oee",
    ]  # fmt: skip
    r = await _get(api, f"/api/v1/shared/{sid}/data", token, asset=M_LINE)
    assert r.status_code == 200, r.text
    cols = r.json()["columns"]
    ref = await oee(api.historian, api.factory, M_LINE, T0, T1, "hour")
    assert len(cols["oee"]) == ref.num_rows == 2
    np.testing.assert_allclose(cols["oee"], ref.column("oee").to_pylist())
    np.testing.assert_allclose(cols["availability"], ref.column("availability").to_pylist())
    assert "good" not in cols  # ratios only

    r = await _get(api, f"/api/v1/shared/{sid}/data", token, format="parquet")
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == 6  # three assets × two hours
    # not the raw data behind it, nor other assets
    for params in ({"level": "raw"}, {"asset": L_LINE}, {"asset": f"{M_LINE}/cell-1"}):
        _problem(await _get(api, f"/api/v1/shared/{sid}/data", token, **params), 403,
                 "outside-share")  # fmt: skip
    _problem(await _get(api, f"/api/v1/kpi/oee?asset={M_LINE}&{RANGE}", token), 403,
             "share-token")  # fmt: skip
    await audit.expect(200, 200, 200, 403, 403, 403, 403)


async def test_expired_share_is_403(api: Api) -> None:
    new = await _share(api, [f"{M_PRESS}/temperature"], "raw",
                       expires_in=timedelta(seconds=5))  # fmt: skip
    audit = Audit(api, new.share.id)
    r = await _get(api, f"/api/v1/shared/{new.share.id}", new.token)
    assert r.status_code == 200, r.text
    await asyncio.sleep((new.share.expires_at - datetime.now(UTC)).total_seconds() + 0.05)
    for url in (f"/api/v1/shared/{new.share.id}", f"/api/v1/shared/{new.share.id}/data"):
        body = _problem(await _get(api, url, new.token), 403, "share-inactive")
        assert "expired" in body["detail"]
    rows = await audit.expect(200, 403, 403)
    assert rows[1].detail is not None
    assert "expired" in rows[1].detail["problem"]["detail"]


async def test_revocation_takes_effect_at_once(api: Api) -> None:
    new = await _share(api, [f"{M_PRESS}/temperature"], "1h")
    audit = Audit(api, new.share.id)
    url = f"/api/v1/shared/{new.share.id}/data"
    assert (await _get(api, url, new.token)).status_code == 200
    # revoked through another connection to the store, as `shopfloor share revoke` does
    async with AuthStore(api.data.auth_db) as other:
        revoked = await ShareStore(other).revoke(new.share.name)
    assert revoked.state() == "revoked"
    body = _problem(await _get(api, url, new.token), 403, "share-inactive")
    assert "revoked" in body["detail"]
    _problem(await _get(api, f"/api/v1/shared/{new.share.id}", new.token), 403, "share-inactive")
    await audit.expect(200, 403, 403)
    cli_rows = await api.auth.audit_entries(token_id=new.share.id, limit=10)
    assert {r.path for r in cli_rows if r.method == "CLI"} == {"share create", "share revoke"}


def _fill(path: str) -> str:
    values = {
        "path": M_LINE, "signal": f"{M_PRESS}/temperature", "type_id": "press", "kpi": "oee",
        "event_id": f"downtime:{M_PRESS}:1", "slug": "unauthorized", "share_id": "x",
        "share": "x",
    }  # fmt: skip
    out = path
    for key, value in values.items():
        out = out.replace("{" + key + "}", value).replace("{" + key + ":path}", value)
    return re.sub(r"\{[^}]+\}", "x", out)  # parameters of routes added later


async def test_share_tokens_get_403_on_every_other_route(api: Api) -> None:
    new = await _share(api, [M_PRESS], "raw")
    audit = Audit(api, new.share.id)
    paths = api.app.openapi()["paths"]
    routes = [
        (method.upper(), path, op)
        for path, item in paths.items()
        for method, op in item.items()
        if not path.startswith("/api/v1/shared/")
    ]
    # sub-applications mounted under the prefix (the AAS repository) have their own document
    mounted: set[tuple[str, str]] = set()
    for mount in api.app.routes:
        sub = getattr(mount, "app", None)
        if isinstance(sub, FastAPI) and str(getattr(mount, "path", "")).startswith("/api/v1/"):
            prefix = str(mount.path)  # type: ignore[attr-defined]
            for path, item in sub.openapi()["paths"].items():
                routes += [(m.upper(), prefix + path, op) for m, op in item.items()]
                mounted |= {(m.upper(), prefix + path) for m in item}
    assert len(routes) > 20
    statuses = []
    for method, path, op in routes:
        url = _fill(path) + f"?asset={M_PRESS}&{RANGE}&signal={M_PRESS}/temperature"
        r = await api.client.request(method, url, headers=_bearer(new.token), json={})
        if not op.get("security"):  # public: health, readiness, problem types, docs
            assert r.status_code != 403, (method, path)
            continue
        if (method, path) in mounted:  # the AAS API answers in its own Result format
            assert r.status_code == 403, (method, path, r.text)
            assert new.share.id in r.text
        else:
            body = _problem(r, 403, "share-token")
            assert new.share.id in body["detail"]
        statuses.append(403)
    assert len(statuses) > 20
    await audit.expect(*statuses)
    # the share's own routes answer it
    assert (await _get(api, f"/api/v1/shared/{new.share.id}", new.token)).status_code == 200


async def test_api_tokens_and_bad_tokens_on_share_routes(api: Api) -> None:
    new = await _share(api, [M_PRESS], "raw")
    url = f"/api/v1/shared/{new.share.id}/data"
    tokens = api.data.tokens
    r = await _get(api, url, tokens["admin_all"])
    _problem(r, 403, "share-token")  # an API token, even the admin's, is no share token
    rows = await api.auth.audit_entries(limit=1)
    assert (rows[0].token_id, rows[0].status) == (api.data.token_ids["admin_all"], 403)
    _problem(await api.client.get(url), 401, "unauthorized")
    _problem(await _get(api, url, tokens["revoked"]), 401, "unauthorized")
    forged = new.token[:-4] + ("AAAA" if not new.token.endswith("AAAA") else "BBBB")
    _problem(await _get(api, url, forged), 401, "unauthorized")
    rows = await api.auth.audit_entries(limit=1)
    assert (rows[0].token_id, rows[0].status) == (new.share.id, 401)
    # a wrong share token on the normal routes: 401 like any wrong token
    _problem(await _get(api, "/api/v1/me", forged), 401, "unauthorized")


async def test_json_pages_cover_the_product_once(api: Api) -> None:
    signals = [f"{M_PRESS}/temperature", f"{M_PRESS}/mode", f"{M_PRESS}/state"]
    new = await _share(api, signals, "raw")
    url: str | None = f"/api/v1/shared/{new.share.id}/data?limit=1000"
    seen: dict[str, list[str]] = {}
    pages = 0
    while url is not None:
        r = await api.client.get(url, headers=_bearer(new.token))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rows"] <= 1000
        for s, ts in zip(body["columns"]["signal"], body["columns"]["ts"], strict=True):
            seen.setdefault(s, []).append(ts)
        url = body["next"]
        pages += 1
    for s in signals:
        raw = await api.historian.read_raw(s, T0, T1)
        assert len(seen[s]) == raw.num_rows, s
    assert seen[f"{M_PRESS}/mode"]
    assert pages >= 8
    # a forged cursor cannot reach before the window
    from shopfloor.api._deps import encode_cursor

    early = int((T0 - timedelta(days=1) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    cursor = encode_cursor({"i": 0, "from": early * 1_000_000, "skip": 0})
    r = await _get(api, f"/api/v1/shared/{new.share.id}/data", new.token, cursor=cursor)
    assert r.status_code == 200, r.text
    assert min(r.json()["columns"]["ts"]) >= T0.isoformat().replace("+00:00", "")


async def test_admin_routes_manage_shares(api: Api) -> None:
    tokens = api.data.tokens
    name = _name("partner-oee")
    body = {
        "name": name,
        "partner": "Carmaker AG",
        "purpose": "supplier OEE dashboard",
        "select": [f"{M_LINE}/**"],
        "level": "oee:day",
        "start": T0.isoformat(),
        "expires_in": "30d",
    }
    r = await api.client.post("/api/v1/shares", json=body, headers=_bearer(tokens["admin_all"]))
    assert r.status_code == 201, r.text
    created = r.json()
    share, token = created["share"], created["token"]
    assert token.startswith("sfs_")
    assert share["state"] == "active"
    assert share["url"] == f"/api/v1/shared/{share['id']}"
    assert share["created_by"].startswith(f"token:{api.data.token_ids['admin_all']}")
    row = (await api.auth.audit_entries(limit=1))[0]
    assert (row.method, row.status, row.token_id) == ("POST", 201, api.data.token_ids["admin_all"])
    assert row.detail is not None
    assert row.detail["action"] == "share create"
    assert token not in str(row.detail)
    # the partner reads it
    r = await _get(api, share["url"] + "/data", token, end=T1.isoformat())
    assert r.status_code == 200, r.text
    # names are never reused; a token of Munich cannot share Leipzig; read cannot share
    r = await api.client.post("/api/v1/shares", json=body, headers=_bearer(tokens["admin_all"]))
    _problem(r, 409, "conflict")
    leipzig = {**body, "name": _name("l"), "select": [f"{L_LINE}/**"]}
    r = await api.client.post(
        "/api/v1/shares", json=leipzig, headers=_bearer(tokens["admin_munich"])
    )
    _problem(r, 403, "outside-subtree")
    wide = {**body, "name": _name("w"), "select": ["acme/*/body-shop"]}
    r = await api.client.post("/api/v1/shares", json=wide, headers=_bearer(tokens["admin_munich"]))
    _problem(r, 403, "outside-subtree")  # a wildcard that could reach Leipzig
    r = await api.client.post("/api/v1/shares", json=body, headers=_bearer(tokens["read_munich"]))
    _problem(r, 403, "insufficient-scope")
    for bad in ({"level": "10s"}, {"level": "oee:week"}, {"select": ["*/munich"]},
                {"select": [f"{M_LINE}/nothing-here"]}, {"expires_in": None}):  # fmt: skip
        r = await api.client.post(
            "/api/v1/shares",
            json={**body, "name": _name("bad"), **bad},
            headers=_bearer(tokens["admin_all"]),
        )
        _problem(r, 422, "invalid-request")
    # lists and lookups follow the token's subtrees
    r = await _get(api, "/api/v1/shares", tokens["admin_munich"], limit=1000)
    assert share["id"] in [s["id"] for s in r.json()["items"]]
    r = await _get(api, f"/api/v1/shares/{share['id']}", tokens["admin_all"])
    assert r.json()["last_used_at"] is not None
    async with AuthStore(api.data.auth_db) as store:
        l_share = await ShareStore(store).create(
            _name("leipzig"), partner="P", purpose="p", select=[L_LINE], level="1h",
            start=T0, expires_in=timedelta(days=1),
        )  # fmt: skip
    r = await _get(api, "/api/v1/shares", tokens["admin_munich"], limit=1000)
    assert l_share.share.id not in [s["id"] for s in r.json()["items"]]
    _problem(await _get(api, f"/api/v1/shares/{l_share.share.id}", tokens["admin_munich"]), 404,
             "not-found")  # fmt: skip
    # revoke
    url = f"/api/v1/shares/{share['name']}/revoke"
    r = await api.client.post(url, headers=_bearer(tokens["admin_munich"]))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "revoked"
    _problem(await api.client.post(url, headers=_bearer(tokens["admin_munich"])), 409, "conflict")
    _problem(await _get(api, share["url"], token), 403, "share-inactive")


def test_the_share_routes_are_these(api_data: ApiData) -> None:
    from _api_helpers import factory_text

    from shopfloor.api import create_app
    from shopfloor.model import parse_factory

    app = create_app(parse_factory(factory_text()), None, None)  # type: ignore[arg-type]
    routes = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if path.startswith(("/api/v1/shares", "/api/v1/shared"))
    }
    assert routes == SHARE_ROUTES


async def test_the_store_migrates_and_shares_stay_put(tmp_path: Path) -> None:
    path = tmp_path / "old.auth.sqlite"
    async with AuthStore(path) as store:
        token = await store.create_token("read", ["acme"], name="before shares")
    # a store from before shares: no table, schema version 0
    con = sqlite3.connect(path)
    con.executescript("DROP TABLE shares; PRAGMA user_version = 0;")
    con.close()
    async with AuthStore(path) as store:
        assert (await store.token(token.info.id)) is not None
        new = await ShareStore(store).create(
            "after", partner="P", purpose="p", select=["acme"], level="oee:day",
            start=T0, expires_in=timedelta(days=1),
        )  # fmt: skip
        assert new.token.startswith(f"sfs_{new.share.id}_")
        assert await store.verify_audit() == 2  # token create, share create
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA user_version").fetchone() == (1,)
        with pytest.raises(sqlite3.DatabaseError, match="only be revoked"):
            con.execute("UPDATE shares SET product = '{}'")
        with pytest.raises(sqlite3.DatabaseError, match="revoked, not deleted"):
            con.execute("DELETE FROM shares")
        (stored,) = con.execute("SELECT hash FROM shares").fetchone()
        assert new.token not in stored
        assert len(stored) == 64
    finally:
        con.close()


def test_levels_parse_and_refuse() -> None:
    assert str(ShareLevel.parse("raw")) == "raw"
    assert ShareLevel.parse("60m") == ShareLevel.parse("1h") == ShareLevel.parse("PT1H")
    assert str(ShareLevel.parse("90m")) == "90m"
    assert str(ShareLevel.parse("oee")) == "oee:hour"
    assert ShareLevel.parse("oee:shift").by == "shift"
    for bad, message in (
        ("59s", "at least 1m"),
        ("1500ms", "at least 1m"),
        ("oee:week", "per hour, day or shift"),
        ("hourly", "use raw"),
    ):
        with pytest.raises(ShareError, match=message):
            ShareLevel.parse(bad)


def _product(selectors: list[str], level: str) -> ShareProduct:
    return ShareProduct(tuple(check_selector(s) for s in selectors), ShareLevel.parse(level), T0)


def test_selectors_match_whole_segments() -> None:
    raw = _product(["acme/munich", "acme/leipzig/**/temperature"], "raw")
    assert raw.selects("acme/munich/line-1/press-1/temperature")  # below an asset
    assert not raw.selects("acme/munich-2/line-1/press-1/temperature")
    assert raw.selects("acme/leipzig/temperature")  # ** may be no segment
    assert raw.selects("acme/leipzig/a/b/c/temperature")
    assert not raw.selects("acme/leipzig/a/b/c/temperature_2")
    assert raw.within(["acme"])
    assert not raw.within(["acme/munich"])  # the Leipzig selector reaches outside
    oee_share = _product(["acme/munich/line-1/*"], "oee:day")
    assert oee_share.selects("acme/munich/line-1/press-1")
    assert not oee_share.selects("acme/munich/line-1")  # OEE: exactly the assets named
    assert not oee_share.selects("acme/munich/line-1/cell-1/press-1")
    dots = _product(["acme/p2.b"], "raw")
    assert not dots.selects("acme/p2xb/x")  # '.' is a character, not "any"
    for bad in ("*/munich", "acme/mun*", "acme//x", "", "acme/***"):
        with pytest.raises(ShareError):
            check_selector(bad)


_SEG = st.sampled_from(["acme", "munich", "m", "line-1", "p2.b", "p2xb", "t", "temperature"])


@given(
    selectors=st.lists(
        st.lists(st.one_of(_SEG, st.sampled_from(["*", "**"])), min_size=0, max_size=4).map(
            lambda segs: "/".join(["acme", *segs])
        ),
        min_size=1,
        max_size=3,
    ),
    paths=st.lists(st.lists(_SEG, min_size=1, max_size=6).map("/".join), max_size=30),
    level=st.sampled_from(["raw", "oee:hour"]),
)
def test_arrow_and_python_matching_agree(
    selectors: list[str], paths: list[str], level: str
) -> None:
    product = _product(selectors, level)
    mask = product.mask(pa.array(paths, pa.string())).to_pylist()
    assert mask == [product.selects(p) for p in paths]

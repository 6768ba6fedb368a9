"""What the routes answer: the model, history, latest values, KPIs, events, dead letters,
exports and the OpenAPI document, checked against the historian and the analytics."""

from __future__ import annotations

import io
import json
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _api_helpers import (
    L_PRESS,
    M_LINE,
    M_PRESS,
    M_PRESS2,
    T0,
    T0_US,
    T1,
    Api,
    ApiData,
    open_api,
    ts_us,
)

from shopfloor.analytics import iso22400, losses, oee
from shopfloor.api import ApiLimits
from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian import SignalInfo, open_historian

RANGE = "start=2025-01-06T06:00:00Z&end=2025-01-06T08:00:00Z"
TEMP = f"{M_PRESS}/temperature"


@pytest.fixture
async def api(api_data: ApiData) -> AsyncIterator[Api]:
    async with open_api(api_data) as a:
        yield a


async def _all_pages(api: Api, url: str, token: str, key: str = "items") -> list[Any]:
    """Follow ``next`` to the end; return every item."""
    out: list[Any] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        r = await api.get(next_url, token)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body[key])
        next_url = body["next"]
        pages += 1
        assert pages < 1000
    return out


# ------------------------------------------------------------------ model


async def test_assets_tree_detail_and_pages(api: Api) -> None:
    everything = await _all_pages(api, "/api/v1/assets?limit=1000", "admin_all")
    paths = [a["path"] for a in everything]
    assert paths[:2] == ["acme", "acme/munich"]
    assert paths == [a.path for a in api.factory.assets()]
    assert await _all_pages(api, "/api/v1/assets?limit=3", "admin_all") == everything
    equipment = await _all_pages(api, "/api/v1/assets?level=equipment", "read_munich")
    assert [a["path"] for a in equipment] == [M_PRESS, M_PRESS2]
    assert equipment[0]["type"] == "press"
    assert equipment[0]["parent"] == f"{M_LINE}/cell-1"
    r = await api.get(f"/api/v1/assets/{M_PRESS}", "read_munich")
    detail = r.json()
    assert detail["level"] == "equipment"
    assert detail["attributes"] == {"ideal_cycle_time_s": 5.0}
    assert f"{M_PRESS}/temperature" in detail["signals"]
    assert len(detail["signals"]) == 9
    r = await api.get(f"/api/v1/assets/{M_LINE}", "read_munich")
    assert r.json()["children"] == [f"{M_LINE}/cell-1"]
    r = await api.get("/api/v1/assets/acme/munich/nowhere", "read_munich")
    assert r.status_code == 404
    assert r.json()["type"] == "/api/v1/problems/not-found"


async def test_types_are_merged_with_their_ancestors(api: Api) -> None:
    r = await api.get("/api/v1/types/press-l", "read_leipzig")
    t = r.json()
    assert t["extends"] == "press"
    assert t["name"] == "Leipzig press"
    assert [s["name"] for s in t["signals"]][:3] == ["state", "good_count", "reject_count"]
    temp = next(s for s in t["signals"] if s["name"] == "temperature")
    assert (temp["low"], temp["high"], temp["unit"]) == (10.0, 70.0, "CEL")
    assert t["states"]["6"] == "unplanned_stop"


async def test_signals_metadata_filters_and_pages(api: Api) -> None:
    r = await api.get(f"/api/v1/signals/{TEMP}", "read_munich")
    s = r.json()
    assert s == {
        "path": TEMP,
        "asset": M_PRESS,
        "name": "temperature",
        "data_type": "float",
        "unit": "CEL",
        "kind": "measurement",
        "description": "",
        "semantic_id": "0173-1#02-AAV232#002",
        "low": 10.0,
        "high": 70.0,
        "derived": False,
        "writable": False,
        "connection": "munich-opc",
        "source": "model",
    }
    r = await api.get(f"/api/v1/signals?under={M_LINE}&kind=setpoint", "read_munich")
    setpoints = r.json()["items"]
    assert [x["path"] for x in setpoints] == sorted(
        f"{p}/{n}" for p in (M_PRESS, M_PRESS2) for n in ("force_setpoint", "speed_setpoint")
    )
    assert all(x["writable"] for x in setpoints)
    everything = await _all_pages(api, "/api/v1/signals?limit=1000", "read_munich")
    assert len(everything) == 18
    paged = await _all_pages(api, "/api/v1/signals?limit=4", "read_munich")
    assert paged == everything
    assert [x["path"] for x in paged] == sorted(x["path"] for x in paged)
    derived = next(x for x in everything if x["name"] == "oee")
    assert derived["derived"] is True
    assert derived["connection"] is None
    r = await api.get(f"/api/v1/signals/{M_PRESS}/nothing", "read_munich")
    assert r.status_code == 404


# ------------------------------------------------------------------ history


async def test_raw_history_matches_the_truth(api: Api) -> None:
    truth = api.data.truth[M_PRESS]["temperature"][:600]
    url = f"/api/v1/history/{TEMP}?start=2025-01-06T06:00:00Z&end=2025-01-06T06:10:00Z"
    r = await api.get(url + "&limit=1000", "read_munich")
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["signal"], body["data_type"], body["unit"]) == (TEMP, "float", "CEL")
    assert body["next"] is None
    assert len(body["ts"]) == len(body["quality"]) == len(body["value"]) == 600
    assert body["ts"][0] == "2025-01-06T06:00:00.000000Z"
    assert [ts_us(t) for t in body["ts"]] == [T0_US + k * 1_000_000 for k in range(600)]
    assert body["value"][100] is None  # NaN has no JSON literal
    values = np.array([math.nan if v is None else v for v in body["value"]])
    np.testing.assert_array_equal(values, truth)
    assert set(body["quality"]) == {192}
    # pages of 250 (following the next link) give the same samples
    pages: dict[str, list[Any]] = {"ts": [], "value": []}
    next_url: str | None = url + "&limit=250"
    n = 0
    while next_url:
        page = (await api.get(next_url, "read_munich")).json()
        assert len(page["ts"]) <= 250
        pages["ts"] += page["ts"]
        pages["value"] += page["value"]
        next_url, n = page["next"], n + 1
    assert n == 3
    assert pages["ts"] == body["ts"]
    assert pages["value"] == body["value"]


async def test_raw_pages_do_not_split_samples_sharing_a_timestamp(api_data: ApiData) -> None:
    async with open_historian("duckdb::memory:") as h, open_api(api_data, historian=h) as api:
        path = f"{M_PRESS}/burst"
        ids = await h.register_signals([SignalInfo(path, "int")])
        offsets = [0, 0, 0, 1, 1, 1, 1, 2, 2, 3]
        await h.append(
            ReadingBatch.from_columns(
                np.full(10, ids[path]),
                np.array([T0_US + o for o in offsets], dtype=np.int64),
                np.arange(10, dtype=np.int64),
            )
        )
        for limit in (1, 2, 3, 4, 10):
            values = await _all_pages(
                api, f"/api/v1/history/{path}?{RANGE}&limit={limit}", "read_munich", "value"
            )
            assert sorted(values) == list(range(10)), limit
            ts = await _all_pages(
                api, f"/api/v1/history/{path}?{RANGE}&limit={limit}", "read_munich", "ts"
            )
            assert [ts_us(t) - T0_US for t in ts] == offsets
        r = await api.get(f"/api/v1/signals/{path}", "read_munich")
        assert r.json()["source"] == "discovered"


async def test_downsampled_history_any_bucket(api: Api) -> None:
    for bucket, width in (("15m", timedelta(minutes=15)), ("7s", timedelta(seconds=7))):
        expected = await api.historian.downsample(TEMP, T0, T1, width)
        r = await api.get(f"/api/v1/history/{TEMP}?{RANGE}&bucket={bucket}", "read_munich")
        body = r.json()
        assert body["bucket_s"] == width.total_seconds()
        assert len(body["bucket"]) == expected.num_rows
        assert [ts_us(b) for b in body["bucket"]] == expected.column("bucket").cast(
            pa.int64()
        ).to_pylist()
        for col in ("first", "last", "min", "max", "avg", "count"):
            want = [None if v != v else v for v in expected.column(col).to_pylist()]  # NaN
            assert body[col] == want, col
        paged = await _all_pages(
            api, f"/api/v1/history/{TEMP}?{RANGE}&bucket={bucket}&limit=5", "read_munich", "avg"
        )
        assert paged == body["avg"]
    # ISO 8601 durations work too
    r = await api.get(f"/api/v1/history/{TEMP}?{RANGE}&bucket=PT1H", "read_munich")
    body = r.json()
    assert body["count"] == [3600, 3600]
    assert body["avg"][0] is None  # the NaN sample at 06:01:40 makes the first avg NaN


async def test_downsampled_pages_jump_over_empty_stretches(api: Api) -> None:
    url = (
        f"/api/v1/history/{TEMP}?start=2024-12-01T00:00:00Z&end=2025-01-06T08:00:00Z"
        "&bucket=1m&limit=60"
    )
    n = 0
    counts: list[int] = []
    next_url: str | None = url
    while next_url:
        page = (await api.get(next_url, "read_munich")).json()
        counts += page["count"]
        next_url, n = page["next"], n + 1
    assert len(counts) == 120
    assert n <= 3, "a month without data is skipped, not paged through"


async def test_history_errors_are_problems(api: Api) -> None:
    cases = {
        f"/api/v1/history/{M_PRESS}/mode?{RANGE}&bucket=1m": ("not-supported", "string"),
        f"/api/v1/history/{TEMP}?{RANGE}&bucket=1us": ("too-large", "buckets"),
        f"/api/v1/history/{TEMP}?{RANGE}&bucket=soon": ("invalid-request", "not a duration"),
        f"/api/v1/history/{TEMP}?start=yesterday": ("invalid-request", "not a time"),
        f"/api/v1/history/{TEMP}?start=-1h&end=-2h": ("invalid-request", "after start"),
        f"/api/v1/history/{TEMP}?limit=100001": ("invalid-request", "between 1 and 100000"),
        f"/api/v1/history/{TEMP}?cursor=xyz": ("invalid-request", "not a cursor"),
        f"/api/v1/history/{M_PRESS}/nothing": ("not-found", "no signal"),
    }
    for url, (slug, words) in cases.items():
        r = await api.get(url, "read_munich")
        assert r.headers["content-type"] == "application/problem+json", url
        body = r.json()
        assert body["type"] == f"/api/v1/problems/{slug}", (url, body)
        assert words in body["detail"], (url, body)


async def test_string_and_json_history(api: Api) -> None:
    r = await api.get(f"/api/v1/history/{M_PRESS}/mode?{RANGE}", "read_munich")
    assert r.json()["value"] == ["auto", "manual"]
    r = await api.get(f"/api/v1/history/{M_PRESS}/recipe?{RANGE}", "read_munich")
    assert r.json()["value"] == [{"id": 7, "name": "A"}]


async def test_latest_values(api: Api) -> None:
    items = await _all_pages(api, f"/api/v1/latest?under={M_PRESS}&limit=2", "read_munich")
    by = {i["signal"]: i for i in items}
    assert len(items) == 7  # the signals with data (not speed_setpoint, not the derived oee)
    truth = api.data.truth[M_PRESS]
    assert by[TEMP]["value"] == truth["temperature"][-1]
    assert by[TEMP]["ts"] == "2025-01-06T07:59:59Z"
    assert by[f"{M_PRESS}/good_count"]["value"] == int(truth["good_count"][-1])
    assert by[f"{M_PRESS}/mode"] == {
        "signal": f"{M_PRESS}/mode",
        "data_type": "string",
        "ts": "2025-01-06T07:00:00Z",
        "quality": 192,
        "value": "manual",
    }
    assert by[f"{M_PRESS}/recipe"]["value"] == {"id": 7, "name": "A"}
    r = await api.get(
        f"/api/v1/latest?signal={TEMP}&signal={M_PRESS2}/temperature&signal={M_PRESS}/"
        "speed_setpoint",
        "read_munich",
    )
    assert [i["signal"] for i in r.json()["items"]] == [TEMP, f"{M_PRESS2}/temperature"]
    r = await api.get(f"/api/v1/latest?signal={M_PRESS}/nothing", "read_munich")
    assert r.status_code == 404


# ------------------------------------------------------------------ KPIs


def _same_rows(got: list[dict[str, Any]], expected: pa.Table) -> None:
    want = expected.to_pylist()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k, v in w.items():
            if hasattr(v, "isoformat"):
                assert ts_us(g[k]) == ts_us(v.isoformat()), k
            elif isinstance(v, float):
                assert g[k] == pytest.approx(v), k
            else:
                assert g[k] == v, k


async def test_oee_of_a_line(api: Api) -> None:
    r = await api.get(f"/api/v1/kpi/oee?asset={M_LINE}&{RANGE}", "read_munich")
    body = r.json()
    assert body["asset"] == M_LINE
    assert [d["name"] for d in body["definitions"]] == [
        "availability",
        "performance",
        "quality",
        "oee",
    ]
    _same_rows(body["rows"], await oee(api.historian, api.factory, M_LINE, T0, T1))
    row = body["rows"][0]
    assert row["planned_busy_time_s"] == 7200.0
    assert 0.5 < row["availability"] < 1.0
    assert row["good"] > 0
    assert row["oee"] == pytest.approx(row["availability"] * row["performance"] * row["quality"])
    # per hour, paged
    rows = await _all_pages(
        api, f"/api/v1/kpi/oee?asset={M_LINE}&{RANGE}&by=hour&limit=1", "read_munich", "rows"
    )
    _same_rows(rows, await oee(api.historian, api.factory, M_LINE, T0, T1, "hour"))
    assert len(rows) == 2


async def test_losses_and_iso22400(api: Api) -> None:
    r = await api.get(f"/api/v1/kpi/losses?asset={M_PRESS}&{RANGE}", "read_munich")
    _same_rows(r.json()["rows"], await losses(api.historian, api.factory, M_PRESS, T0, T1))
    r = await api.get(f"/api/v1/kpi/iso22400?asset={M_PRESS}&{RANGE}", "read_munich")
    body = r.json()
    _same_rows(body["rows"], await iso22400(api.historian, api.factory, M_PRESS, T0, T1))
    assert body["rows"][0]["failures"] == 1
    r = await api.get(f"/api/v1/kpi/oee?asset=acme&{RANGE}", "admin_all")
    assert r.json()["type"] == "/api/v1/problems/not-supported"
    r = await api.get(f"/api/v1/kpi/oee?asset=acme/munich/nowhere&{RANGE}", "read_munich")
    assert r.status_code == 404
    r = await api.get(f"/api/v1/kpi/mtbf?asset={M_PRESS}&{RANGE}", "read_munich")
    assert r.status_code == 422


# ------------------------------------------------------------------ events


async def test_events_list_filter_and_pages(api: Api) -> None:
    everything = await _all_pages(api, f"/api/v1/events?{RANGE}&limit=1000", "read_munich")
    kinds = {e["kind"] for e in everything}
    assert kinds == {"downtime", "alarm"}
    assert {e["asset"] for e in everything} == {M_PRESS, M_PRESS2}
    assert await _all_pages(api, f"/api/v1/events?{RANGE}&limit=2", "read_munich") == everything
    keys = [(ts_us(e["ts"]), e["event_id"]) for e in everything]
    assert keys == sorted(keys)
    alarms = await _all_pages(api, f"/api/v1/events?{RANGE}&kind=alarm", "read_munich")
    assert len(alarms) == 1
    assert alarms[0]["data"] == {"limit": 48.0}
    assert alarms[0]["severity"] == 700
    breakdown = next(
        e for e in everything if e["kind"] == "downtime" and e["code"] == "unplanned_stop"
    )
    assert breakdown["ts"] == "2025-01-06T06:30:00Z"
    assert breakdown["end_ts"] == "2025-01-06T06:40:00Z"
    assert breakdown["data"]["raw"] == "6"
    # a token for two subtrees in two sites pages through both
    two = await _all_pages(api, f"/api/v1/events?{RANGE}&limit=3", "read_two_lines")
    assert {e["asset"] for e in two} == {M_PRESS, M_PRESS2, L_PRESS}


async def test_downtime_reasons_pareto_and_audit(api: Api) -> None:
    event_id = f"downtime:{M_PRESS2}:{T0_US + 1860 * 1_000_000}"
    r = await api.client.put(
        f"/api/v1/events/{event_id}/reason",
        json={"reason": "hydraulics"},
        headers=api.auth_header("operate_munich"),
    )
    assert r.status_code == 200, r.text
    event = r.json()
    assert event["data"]["reason"] == "hydraulics"
    assert api.data.token_ids["operate_munich"] in event["data"]["reason_by"]
    events = await _all_pages(api, f"/api/v1/events?asset={M_PRESS2}&{RANGE}", "read_munich")
    assert next(e for e in events if e["event_id"] == event_id)["data"]["reason"] == "hydraulics"
    r = await api.get(f"/api/v1/downtime/pareto?asset={M_PRESS2}&{RANGE}", "read_munich")
    rows = {row["key"]: row for row in r.json()["items"]}
    assert rows["hydraulics"]["seconds"] == 600.0
    writes = [
        e
        for e in await api.auth.audit_entries(limit=50)
        if e.method == "PUT" and e.detail and e.detail.get("event_id") == event_id
    ]
    assert writes[0].detail == {
        "action": "downtime reason",
        "event_id": event_id,
        "reason": "hydraulics",
    }
    assert writes[0].status == 200
    bad = {
        f"/api/v1/events/alarm:{M_PRESS}:1/reason": (422, "not-supported"),
        f"/api/v1/events/downtime:{M_PRESS}:12345/reason": (404, "not-found"),
    }
    for url, (status, slug) in bad.items():
        r = await api.client.put(
            url, json={"reason": "x"}, headers=api.auth_header("operate_munich")
        )
        assert r.status_code == status, r.text
        assert r.json()["type"] == f"/api/v1/problems/{slug}"
    r = await api.client.put(
        f"/api/v1/events/{event_id}/reason", json={"reason": ""},
        headers=api.auth_header("operate_munich"),
    )  # fmt: skip
    assert r.status_code == 422
    assert r.json()["errors"][0]["location"] == "body field 'reason'"


async def test_recording_downtime(api: Api) -> None:
    r = await api.client.post(
        f"/api/v1/downtime/record?asset={M_LINE}&{RANGE}",
        headers=api.auth_header("operate_munich"),
    )
    assert r.status_code == 200, r.text
    counts = r.json()["equipment"]
    assert set(counts) == {M_PRESS, M_PRESS2}
    assert all(n >= 2 for n in counts.values())


async def test_dead_letters_newest_first_in_pages(api: Api) -> None:
    everything = await _all_pages(api, "/api/v1/dead-letters?limit=1000", "admin_all")
    assert len(everything) == 6
    times = [ts_us(d["received_at"]) for d in everything]
    assert times == sorted(times, reverse=True)
    for limit in (1, 2, 4):
        paged = await _all_pages(api, f"/api/v1/dead-letters?limit={limit}", "admin_all")
        assert paged == everything, limit
    binary = next(d for d in everything if d["location"] == "ns=2;s=z")
    assert binary["payload_text"] is None
    assert binary["payload_base64"] == "/wBiaW5hcnk="
    text = next(d for d in everything if d["location"] == "ns=2;s=x")
    assert text["payload_text"] == '{"v": 1}'
    r = await api.get("/api/v1/dead-letters?since=2025-01-06T06:30:01Z", "admin_all")
    assert {d["source"] for d in r.json()["items"]} == {"leipzig-opc", "mystery"}


# ------------------------------------------------------------------ exports


async def test_export_history_csv_and_parquet(api: Api) -> None:
    base = f"/api/v1/export/history?signal={TEMP}&signal={M_PRESS}/good_count&{RANGE}"
    r = await api.get(base + "&format=csv", "read_munich")
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="history.csv"' in r.headers["content-disposition"]
    df = pd.read_csv(io.BytesIO(r.content))
    assert list(df.columns) == ["signal", "ts", "quality", "value"]
    temp = df[df["signal"] == TEMP]
    assert len(temp) == 7200
    np.testing.assert_array_equal(temp["value"].to_numpy(), api.data.truth[M_PRESS]["temperature"])
    assert temp["ts"].iloc[1] == "2025-01-06T06:00:01.000000Z"
    counts = df[df["signal"] == f"{M_PRESS}/good_count"]
    assert counts["value"].iloc[-1] == api.data.truth[M_PRESS]["good_count"][-1]

    r = await api.get(base + "&format=parquet", "read_munich")
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.schema.field("value").type == pa.float64()  # float and int: float64
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert table.num_rows == len(df)
    t = table.filter(pa.compute.equal(table.column("signal"), TEMP))
    assert t.column("ts").cast(pa.int64()).to_pylist()[:2] == [T0_US, T0_US + 1_000_000]
    np.testing.assert_array_equal(
        t.column("value").to_numpy(), api.data.truth[M_PRESS]["temperature"]
    )  # NaN kept

    r = await api.get(
        f"/api/v1/export/history?signal={TEMP}&{RANGE}&bucket=30m&format=parquet", "read_munich"
    )
    buckets = pq.read_table(io.BytesIO(r.content))
    expected = await api.historian.downsample(TEMP, T0, T1, timedelta(minutes=30))
    np.testing.assert_array_equal(buckets.column("avg").to_numpy(), expected["avg"].to_numpy())
    assert buckets.column_names == [
        "signal", "bucket", "first", "last", "min", "max", "avg", "count"
    ]  # fmt: skip


async def test_export_limits_and_events(api_data: ApiData) -> None:
    async with open_api(api_data, limits=ApiLimits(export_rows_max=1000)) as api:
        r = await api.get(f"/api/v1/export/history?signal={TEMP}&{RANGE}", "read_munich")
        assert r.status_code == 422
        assert r.json()["type"] == "/api/v1/problems/too-large"
        r = await api.get(f"/api/v1/export/history?signal={TEMP}&{RANGE}&bucket=1m", "read_munich")
        assert r.status_code == 200
        assert len(pd.read_csv(io.BytesIO(r.content))) == 120
        r = await api.get(
            f"/api/v1/export/history?signal={M_PRESS}/mode&signal={TEMP}&{RANGE}&bucket=1m",
            "read_munich",
        )
        assert r.json()["type"] == "/api/v1/problems/not-supported"
        r = await api.get(f"/api/v1/export/events?{RANGE}&format=parquet", "read_munich")
        events = pq.read_table(io.BytesIO(r.content)).to_pylist()
        listed = await _all_pages(api, f"/api/v1/events?{RANGE}&limit=1000", "read_munich")
        assert [e["event_id"] for e in events] == [e["event_id"] for e in listed]
        r = await api.get(f"/api/v1/export/events?{RANGE}&kind=alarm", "read_munich")
        df = pd.read_csv(io.BytesIO(r.content))
        assert list(df["event_id"]) == [f"alarm:{TEMP}:high:{T0_US + 600_000_000}"]
        assert json.loads(df["data"].iloc[0]) == {"limit": 48.0}


# ------------------------------------------------------------------ system


async def test_health_ready_me_and_problem_types(api: Api) -> None:
    assert (await api.get("/api/v1/health")).json() == {"status": "ok"}
    ready = (await api.get("/api/v1/ready")).json()
    assert ready["status"] == "ready"
    assert ready["runtime"] is False
    me = (await api.get("/api/v1/me", "read_munich")).json()
    assert me["id"] == api.data.token_ids["read_munich"]
    assert (me["scope"], me["subtrees"], me["expires_at"]) == ("read", ["acme/munich"], None)
    for slug in ("unauthorized", "outside-subtree", "setpoint-rejected", "too-large"):
        r = await api.get(f"/api/v1/problems/{slug}")
        assert r.json()["type"] == f"/api/v1/problems/{slug}"
        assert r.json()["description"]
    r = await api.get("/api/v1/problems/nope")
    assert r.status_code == 404
    r = await api.client.delete("/api/v1/health")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "about:blank"


async def test_every_list_is_bounded(api: Api) -> None:
    for url in (
        "/api/v1/assets",
        "/api/v1/types",
        "/api/v1/signals",
        "/api/v1/latest",
        f"/api/v1/events?{RANGE}",
        f"/api/v1/kpi/oee?asset={M_LINE}&{RANGE}",
        f"/api/v1/downtime/pareto?asset={M_LINE}&{RANGE}",
        "/api/v1/dead-letters",
        "/api/v1/audit",
    ):
        sep = "&" if "?" in url else "?"
        r = await api.get(f"{url}{sep}limit=1001", "admin_all")
        assert r.status_code == 422, url
        assert "between 1 and 1000" in r.json()["detail"]
        r = await api.get(f"{url}{sep}limit=0", "admin_all")
        assert r.status_code == 422, url
        r = await api.get(f"{url}{sep}cursor=e30", "admin_all")  # "{}": not this list's
        assert r.status_code == 422, url


async def test_audit_log_pages(api: Api) -> None:
    for _ in range(3):
        await api.get("/api/v1/me", "read_leipzig")
    rows = await _all_pages(
        api,
        f"/api/v1/audit?token_id={api.data.token_ids['read_leipzig']}&limit=2",
        "admin_all",
    )
    assert len(rows) >= 4  # three uses and the creation
    assert rows[-1]["method"] == "CLI"
    assert rows[-1]["detail"]["action"] == "token create"
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs, reverse=True)


async def test_openapi_document(api: Api) -> None:
    r = await api.get("/api/v1/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "shopfloor"
    assert spec["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token from `shopfloor token create` (sent as a Bearer token).",
    }
    op = spec["paths"]["/api/v1/setpoints/{signal}"]["post"]
    assert op["security"] == [{"token": []}]
    assert set(op["responses"]) >= {"200", "401", "403", "404", "422", "502", "503"}
    problem = op["responses"]["403"]["content"]
    assert problem == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert "RawHistory" in spec["components"]["schemas"]
    assert (await api.get("/api/v1/docs")).status_code == 200

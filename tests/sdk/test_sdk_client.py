"""The SDK (``shopfloor.Client``, ``shopfloor.AsyncClient``) against a real uvicorn server.

The historian behind the server was filled through a running runtime's pipeline; every
answer is compared with the data that went in (or, for OEE and events, with the library
computing over the same historian).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import httpx
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from _sdk_server import (
    L_PRESS,
    M_LINE,
    M_PRESS,
    M_PRESS2,
    NAN_AT,
    PRESSES,
    SECONDS,
    T0,
    T0_US,
    T1,
    SdkServer,
    ServerThread,
    free_port,
)

import shopfloor
from shopfloor.edge.batch import RawBatch
from shopfloor.sdk import ApiError, AsyncClient, Client, LiveError, TransportError

TEMP = f"{M_PRESS}/temperature"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkServer]:
    with ServerThread(tmp_path_factory.mktemp("sdk")) as s:
        yield s


@pytest.fixture
def api(server: SdkServer) -> Iterator[Client]:
    with shopfloor.Client(server.url, server.tokens["read_all"]) as c:
        yield c


def _ts(seconds: np.ndarray) -> pd.Series:
    us = T0_US + seconds.astype(np.int64) * 1_000_000
    return pd.Series(pd.to_datetime(us, unit="us", utc=True), name="ts")


def test_history_raw_matches_what_went_into_the_pipeline(server: SdkServer, api: Client) -> None:
    df = api.history([TEMP, f"{M_PRESS2}/temperature"], since=T0, until=T1)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["signal", "ts", "quality", "value"]
    assert len(df) == 2 * SECONDS
    one = df[df["signal"] == TEMP].reset_index(drop=True)
    truth = server.truth[M_PRESS]["temperature"]
    pd.testing.assert_series_equal(one["ts"], _ts(np.arange(SECONDS)), check_dtype=False)
    np.testing.assert_array_equal(one["value"].to_numpy(), truth)  # NaN kept (Parquet)
    assert math.isnan(one["value"][NAN_AT])
    assert str(one["ts"].dt.tz) == "UTC"
    assert (one["quality"] == 192).all()


def test_history_since_until_forms(server: SdkServer, api: Client) -> None:
    """datetime, ISO text and offsets from now name the same window."""
    a = api.history(TEMP, T0 + timedelta(minutes=10), T0 + timedelta(minutes=20), frame="arrow")
    b = api.history(TEMP, "2025-01-06T06:10:00Z", "2025-01-06T06:20:00+00:00", frame="arrow")
    assert a.equals(b)
    assert a.num_rows == 600
    c = api.history(TEMP, since=timedelta(days=-1), until="now", frame="arrow")
    assert c.num_rows == 0  # the data lies in 2025


def test_history_buckets(server: SdkServer, api: Client) -> None:
    df = api.history([TEMP, f"{M_PRESS}/good_count"], T0, T1, bucket="5m")
    assert list(df.columns) == [
        "signal", "bucket", "first", "last", "min", "max", "avg", "count",
    ]  # fmt: skip
    temp = df[df["signal"] == TEMP].reset_index(drop=True)
    truth = server.truth[M_PRESS]["temperature"].reshape(12, 300)
    assert len(temp) == 12
    # (bucket 0 holds the NaN sample: how an engine orders NaN is not the SDK's business)
    np.testing.assert_allclose(temp["max"][1:], truth[1:].max(axis=1))
    np.testing.assert_allclose(temp["min"][1:], truth[1:].min(axis=1))
    np.testing.assert_allclose(temp["avg"][1:], truth[1:].mean(axis=1))
    assert (temp["count"] == 300).all()
    np.testing.assert_allclose(temp["first"], truth[:, 0])
    assert temp["bucket"][1] == pd.Timestamp(T0 + timedelta(minutes=5))
    same = api.history(TEMP, T0, T1, bucket=timedelta(minutes=5))
    pd.testing.assert_frame_equal(same, temp)


def test_polars_and_arrow_frames(server: SdkServer, api: Client) -> None:
    pdf = api.history(TEMP, T0, T1)
    pldf = api.history(TEMP, T0, T1, frame="polars")
    table = api.history(TEMP, T0, T1, frame="arrow")
    assert isinstance(pldf, pl.DataFrame)
    assert isinstance(table, pa.Table)
    assert pldf.columns == list(pdf.columns)
    assert pldf.height == len(pdf) == table.num_rows
    assert pldf["ts"].dtype == pl.Datetime("us", "UTC")
    np.testing.assert_array_equal(pldf["value"].to_numpy(), pdf["value"].to_numpy())
    with shopfloor.Client(server.url, server.tokens["read_all"], frame="polars") as c:
        assert isinstance(c.latest([TEMP]), pl.DataFrame)
    with pytest.raises(ValueError, match="frame='excel'"):
        api.history(TEMP, T0, T1, frame="excel")  # type: ignore[arg-type]


def test_latest(server: SdkServer, api: Client) -> None:
    df = api.latest([TEMP, f"{M_PRESS}/good_count"])
    assert list(df.columns) == ["signal", "data_type", "ts", "quality", "value"]
    row = df.set_index("signal")
    assert row.loc[f"{M_PRESS}/good_count", "value"] == server.truth[M_PRESS]["good_count"][-1]
    assert row.loc[TEMP, "value"] == pytest.approx(server.truth[M_PRESS]["temperature"][-1])
    assert row.loc[TEMP, "ts"] == pd.Timestamp(T1 - timedelta(seconds=1))
    # Every signal the token sees, paged (pages of 3 on the default server's 100).
    everything = api.latest()
    assert set(everything["signal"]) >= {f"{p}/{n}" for p in PRESSES for n in ("state", "mode")}
    with shopfloor.Client(server.url, server.tokens["read_all"], page_size=3) as paged:
        pd.testing.assert_frame_equal(paged.latest(), everything)
    mixed = everything.set_index("signal")["value"]
    assert mixed[f"{M_PRESS}/mode"] == "man"  # a mix of types: text, as the exports
    assert json.loads(mixed[f"{M_PRESS}/recipe"]) == {"id": 7}


def test_latest_within_the_tokens_subtrees(server: SdkServer) -> None:
    with Client(server.url, server.tokens["read_munich"]) as c:
        df = c.latest()
        assert len(df) > 0
        assert all(s.startswith("acme/munich/") for s in df["signal"])
        with pytest.raises(ApiError) as err:
            c.history(f"{L_PRESS}/temperature", T0, T1)
    assert err.value.status == 403
    assert err.value.problem.slug == "outside-subtree"
    assert err.value.problem.type == "/api/v1/problems/outside-subtree"
    assert "outside this token's subtrees" in (err.value.problem.detail or "")


def test_oee_equals_the_library_over_the_same_historian(server: SdkServer, api: Client) -> None:
    df = api.oee(M_LINE, T0, T1, by="hour")
    expected = server.expected_oee
    assert len(df) == len(expected) >= 1
    for got, want in zip(df.to_dict("records"), expected, strict=True):
        assert got["window_start"] == pd.Timestamp(want["window_start"])
        for k in ("availability", "performance", "quality", "oee"):
            assert got[k] == pytest.approx(want[k]), k
        assert got["good"] == want["good"]
    assert 0 < df["availability"][0] < 1  # the breakdown cost availability
    losses = api.kpi("losses", M_PRESS, T0, T1, frame="polars")
    assert isinstance(losses, pl.DataFrame)
    assert losses.height >= 6  # one row per loss


def test_events(server: SdkServer, api: Client) -> None:
    df = api.events(since=T0, until=T1)
    want = server.expected_events
    assert len(df) == want.num_rows > 0
    assert set(df["event_id"]) == set(want.column("event_id").to_pylist())
    downtime = api.events(M_PRESS, "downtime", since=T0, until=T1)
    assert set(downtime["asset"]) == {M_PRESS}
    assert set(downtime["kind"]) == {"downtime"}
    breakdown = downtime[downtime["code"] == "unplanned_stop"]
    assert len(breakdown) == 1
    assert breakdown["ts"].iloc[0] == pd.Timestamp(T0 + timedelta(seconds=900))
    assert breakdown["end_ts"].iloc[0] == pd.Timestamp(T0 + timedelta(seconds=1500))


def test_too_large_exports_fall_back_to_pages(server: SdkServer, api: Client) -> None:
    """The small server refuses exports over 2 rows and pages by 2 items / 700 samples:
    the SDK pages through the JSON routes and returns the same frames."""
    seen = _Recording()
    with Client(server.small_url, server.tokens["read_all"], transport=seen) as small:
        signals = [TEMP, f"{M_PRESS}/good_count"]
        # Raw: 3,600 temperatures + good counts, in pages of 700; NaN arrives as null.
        pd.testing.assert_frame_equal(small.history(signals, T0, T1), api.history(signals, T0, T1))
        pd.testing.assert_frame_equal(
            small.history(signals, T0, T1, bucket="1m"), api.history(signals, T0, T1, bucket="1m")
        )
        strings = [f"{M_PRESS}/mode", f"{M_PRESS}/recipe"] * 20
        pd.testing.assert_frame_equal(small.history(strings, T0, T1), api.history(strings, T0, T1))
        pd.testing.assert_frame_equal(
            small.events(since=T0, until=T1), api.events(since=T0, until=T1)
        )
        pd.testing.assert_frame_equal(small.latest(), api.latest())
        pd.testing.assert_frame_equal(
            small.oee(M_LINE, T0, T1, by="hour"), api.oee(M_LINE, T0, T1, by="hour")
        )
    assert seen.statuses["/api/v1/export/history"] == {422}
    assert seen.statuses["/api/v1/export/events"] == {422}
    # raw in pages of 700 samples, and one page of 60 one-minute buckets
    assert seen.paths[f"/api/v1/history/{TEMP}"] == math.ceil(SECONDS / 700) + 1
    assert seen.paths["/api/v1/events"] >= 2
    assert seen.paths["/api/v1/latest"] >= 10
    assert seen.paths["/api/v1/kpi/oee"] >= 1


def test_errors_carry_the_problem(server: SdkServer, api: Client) -> None:
    with pytest.raises(ApiError) as err:
        api.history(f"{M_PRESS}/nope", T0, T1)
    assert err.value.status == 404
    assert err.value.problem.slug == "not-found"
    assert "nope" in str(err.value)
    with pytest.raises(ApiError) as err:
        api.history(TEMP, T1, T0)
    assert err.value.status == 422
    assert err.value.problem.extensions["errors"][0]["location"] == "query parameter 'end'"
    with Client(server.url, "sf_000000000000_" + "x" * 43) as bad, pytest.raises(ApiError) as err:
        bad.latest()
    assert err.value.status == 401
    assert err.value.problem.title == "Authentication required"
    with Client(f"http://127.0.0.1:{free_port()}", "t") as gone, pytest.raises(TransportError):
        gone.latest()
    with pytest.raises(ValueError, match="not an http"):
        Client("127.0.0.1:8080", "t")


async def test_async_client_is_the_twin(server: SdkServer, api: Client) -> None:
    async with shopfloor.AsyncClient(server.url, server.tokens["read_all"]) as a:
        results = await asyncio.gather(
            a.history(TEMP, T0, T1, bucket="10m"),
            a.latest([TEMP]),
            a.oee(M_LINE, T0, T1),
            a.events(since=T0, until=T1, kind="downtime"),
        )
    hist, latest, oee_df, events = results
    pd.testing.assert_frame_equal(hist, await asyncio.to_thread(api.history, TEMP, T0, T1, "10m"))
    assert latest["value"][0] == pytest.approx(server.truth[M_PRESS]["temperature"][-1])
    assert len(oee_df) == 1
    assert set(events["kind"]) == {"downtime"}
    async with AsyncClient(server.url, server.tokens["read_munich"]) as m:
        with pytest.raises(ApiError) as err:
            await m.oee("acme/leipzig", T0, T1)
    assert err.value.problem.slug == "outside-subtree"


class _Recording(httpx.HTTPTransport):
    """The real transport, noting each path asked for and the statuses answered."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: Counter[str] = Counter()
        self.statuses: dict[str, set[int]] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        path = request.url.path
        self.paths[path] += 1
        self.statuses.setdefault(path, set()).add(response.status_code)
        return response


def _has_live(server: SdkServer) -> bool:
    return importlib.util.find_spec("shopfloor.api._live") is not None


@pytest.mark.timeout(60)
async def test_live_frames_follow_the_pipeline(server: SdkServer) -> None:
    if not _has_live(server):
        pytest.skip("the API has no /api/v1/live endpoint yet")
    t_us = T0_US + 7 * 86_400_000_000  # new values a week later
    values = np.array([1.5, 2.5, 3.5])

    async def push() -> None:
        assert server.runtime.pipeline is not None
        batch = RawBatch.from_columns("opc", [TEMP] * 3, t_us + np.arange(3) * 1_000_000, values)
        await server.runtime.pipeline.sink(batch)
        other = RawBatch.from_columns("opc", [f"{L_PRESS}/temperature"], [t_us], [9.0])
        await server.runtime.pipeline.sink(other)

    seen: list[pd.DataFrame] = []
    async with AsyncClient(server.url, server.tokens["read_all"]) as a:
        stream = a.live(["acme/munich/+/+/press-1/temperature"])
        it = aiter(stream)
        first = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.5)  # subscribed by now; values arrive only after this
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(push(), server.loop))
        frame = await asyncio.wait_for(first, 20)
        seen.append(frame)
        while sum(len(f) for f in seen) < 3:
            seen.append(await asyncio.wait_for(anext(it), 20))
        await stream.aclose()  # type: ignore[attr-defined]
    df = pd.concat(seen, ignore_index=True)
    assert list(df.columns) == ["signal", "ts", "value", "unit", "quality"]
    assert set(df["signal"]) == {TEMP}
    np.testing.assert_array_equal(df["value"].to_numpy(), values)
    assert df["ts"][0] == pd.Timestamp(t_us, unit="us", tz="UTC")
    assert set(df["unit"]) == {"CEL"}
    assert set(df["quality"]) == {"good"}


@pytest.mark.timeout(60)
async def test_live_refusals(server: SdkServer) -> None:
    if not _has_live(server):
        pytest.skip("the API has no /api/v1/live endpoint yet")
    async with AsyncClient(server.url, server.tokens["read_munich"]) as m:
        with pytest.raises(ApiError) as err:
            async for _ in m.live(["acme/leipzig/**"]):
                pass
    assert err.value.status == 403
    async with AsyncClient(server.url, "sf_000000000000_" + "x" * 43) as bad:
        with pytest.raises(ApiError) as err:
            async for _ in bad.live(["acme/**"]):
                pass
    assert err.value.status == 401
    assert issubclass(LiveError, shopfloor.sdk.ClientError)

"""The live stream ``/api/v1/live``: a real uvicorn server, a real runtime and DuckDB
historian in tmp, real WebSocket clients (``websockets``).

Values are fed through the runtime's pipeline (the mapper maps the factory's binding
addresses), so what a client receives went through the historian commit and the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from _api_helpers import L_PRESS, M_PRESS, M_PRESS2, factory_text
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shopfloor.api import AuthStore, LiveHub, create_app, running_server, server_config
from shopfloor.api._live import PatternError, _Catalog, _may_match_under, compile_pattern
from shopfloor.edge.batch import RawBatchBuilder
from shopfloor.historian import Historian, open_historian
from shopfloor.model import Factory, parse_factory
from shopfloor.runtime import Runtime

ALARMS = """\
alarms:
  rules:
    - {id: hot, type: press, severity: high, threshold: {signal: temperature, above: 70}}
"""

UNITS = {"temperature": "CEL", "good_count": "H87", "mode": None, "state": None}
CONN = {M_PRESS: "munich-opc", M_PRESS2: "munich-opc", L_PRESS: "leipzig-opc"}
QUALITY = {0xC0: "good", 0x40: "uncertain", 0x00: "bad", 0x18: "bad", 0x54: "uncertain"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    """A running server with its runtime, hub and tokens."""

    url: str
    runtime: Runtime
    hub: LiveHub
    historian: Historian
    auth: AuthStore
    factory: Factory
    tokens: dict[str, str]
    ids: dict[str, str]

    @property
    def stats(self) -> Any:
        assert self.runtime.pipeline is not None
        return self.runtime.pipeline.stats

    async def feed(self, rows: Sequence[tuple[str, str, int, Any, int]]) -> None:
        """Readings ``(asset, signal, ts µs, value, quality)`` into the pipeline."""
        b = RawBatchBuilder()
        for asset, signal, ts, value, q in rows:
            b.append(CONN[asset], f"ns=2;s={asset}/{signal}", ts, value, q)
        assert self.runtime.pipeline is not None
        await self.runtime.pipeline.sink(b.build())

    async def committed(self, values: int, within: float = 30.0) -> None:
        """Wait until the pipeline stored ``values`` values in all."""
        deadline = time.monotonic() + within
        while self.stats.values_stored < values:
            assert time.monotonic() < deadline, (self.stats.values_stored, values)
            await asyncio.sleep(0.02)

    def connect(
        self, token: str | None, *, header: bool = True, **kw: Any
    ) -> Any:  # websockets' connect, as an async context manager
        url = self.url
        headers = {}
        if token is not None:
            if header:
                headers["Authorization"] = f"Bearer {self.tokens[token]}"
            else:
                url += f"?token={self.tokens[token]}"
        kw.setdefault("max_size", None)
        return connect(url, additional_headers=headers, open_timeout=20, **kw)


TOKENS = {
    "all": ("read", ["acme"]),
    "munich": ("read", ["acme/munich"]),
    "leipzig": ("read", ["acme/leipzig"]),
    "revoked": ("read", ["acme"]),
}


@contextlib.asynccontextmanager
async def live_server(tmp: Path, **hub: Any) -> AsyncIterator[Live]:
    text = factory_text() + ALARMS
    for old in ("127.0.0.1:4841", "127.0.0.1:4842"):  # nobody there: connectors just retry
        text = text.replace(old, f"127.0.0.1:{_free_port()}")
    factory = parse_factory(text, "live.yaml")
    async with (
        open_historian(f"duckdb:{tmp / 'live.duckdb'}") as h,
        AuthStore(tmp / "live.auth.sqlite") as auth,
    ):
        tokens, ids = {}, {}
        for name, (scope, subtrees) in TOKENS.items():
            new = await auth.create_token(scope, subtrees, name=name)
            tokens[name], ids[name] = new.token, new.info.id
        await auth.revoke_token(ids["revoked"])
        async with Runtime(factory, h, flush_interval=0.02) as rt:
            live = LiveHub(h, **hub)
            app = create_app(factory, h, auth, runtime=rt, live=live)
            config = server_config(app, "127.0.0.1", 0, log_level="warning")
            async with running_server(config) as server:
                url = f"ws://127.0.0.1:{server.port}/api/v1/live"
                yield Live(url, rt, live, h, auth, factory, tokens, ids)


async def recv(ws: ClientConnection, within: float = 20.0) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return doc


async def until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes; and its close code."""
    messages = []
    try:
        while True:
            messages.append(await recv(ws, 30))
    except ConnectionClosed as exc:
        return messages, None if exc.rcvd is None else exc.rcvd.code


async def subscribe(
    ws: ClientConnection, patterns: list[str], *, events: bool | None = None, sid: str = "s"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Subscribe; return the ``subscribed`` reply and the errors that came before it."""
    msg: dict[str, Any] = {"type": "subscribe", "id": sid, "patterns": patterns}
    if events is not None:
        msg["events"] = events
    await ws.send(json.dumps(msg))
    errors = []
    while True:
        doc = await recv(ws)
        if doc["type"] == "subscribed":
            return doc, errors
        assert doc["type"] == "error", doc
        errors.append(doc)


async def hello(ws: ClientConnection) -> dict[str, Any]:
    doc = await recv(ws)
    assert doc["type"] == "hello", doc
    return doc


Row = tuple[str, int, Any, str | None, str]


async def collect(
    ws: ClientConnection, n: int, within: float = 30.0
) -> tuple[list[Row], list[dict[str, Any]]]:
    """Values of the ``values`` frames until ``n`` arrived (then 0.5 s more: nothing extra)."""
    rows: list[Row] = []
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while len(rows) < n:
        doc = await recv(ws, max(0.1, deadline - time.monotonic()))
        if doc["type"] != "values":
            continue
        frames.append(doc)
        lengths = {len(doc[k]) for k in ("signal", "ts", "value", "unit", "quality")}
        assert len(lengths) == 1, doc
        rows.extend(
            zip(doc["signal"], doc["ts"], doc["value"], doc["unit"], doc["quality"], strict=True)
        )
    with contextlib.suppress(TimeoutError):
        extra = await recv(ws, 0.5)
        assert extra["type"] != "values", f"more values than fed: {extra}"
    return rows, frames


def expected(rows: Sequence[tuple[str, str, int, Any, int]], keep: Any) -> list[Row]:
    out = []
    for asset, signal, ts, value, q in rows:
        path = f"{asset}/{signal}"
        if keep(path):
            v = None if isinstance(value, float) and math.isnan(value) else value
            out.append((path, ts // 1000, v, UNITS[signal], QUALITY[q]))
    return out


def _key(row: Row) -> tuple[str, int, str]:
    return row[0], row[1], repr(row[2])


def readings(
    batches: int, start_us: int, rng: random.Random
) -> list[list[tuple[str, str, int, Any, int]]]:
    """``batches`` batches: every press's temperature, count, mode and state, random values."""
    out = []
    for b in range(batches):
        ts = start_us + b * 1_000_000 + rng.randrange(1000) * 1000 + rng.randrange(1000)
        batch = []
        for asset in (M_PRESS, M_PRESS2, L_PRESS):
            temp = rng.uniform(-50, 60) if b != 3 else float("nan")
            q = rng.choice(list(QUALITY))
            batch.append((asset, "temperature", ts, temp, q))
            batch.append((asset, "good_count", ts, rng.randrange(-(2**40), 2**40), 0xC0))
            batch.append((asset, "mode", ts, rng.choice(["auto", 'ma"n\\ual', "écho\n"]), 0xC0))
            batch.append((asset, "state", ts, rng.randrange(8), 0x40))
        out.append(batch)
    return out


# --------------------------------------------------------------------------- values


@pytest.mark.timeout(120)
async def test_frames_carry_exactly_the_values_fed(tmp_path: Path) -> None:
    rng = random.Random(7)
    async with (
        live_server(tmp_path) as live,
        live.connect("all") as a,
        live.connect("all", header=False) as b,
        live.connect("munich") as c,
    ):
        for ws in (a, b, c):
            doc = await hello(ws)
            assert doc["server"] == "shopfloor"
            assert doc["max_batch_ms"] == 100
        sub_a, err = await subscribe(a, ["acme/munich/**"], sid="a")
        assert not err
        assert sub_a == {
            "type": "subscribed",
            "id": "a",
            "patterns": ["acme/munich/**"],
            "signals": 2 * 9,  # two presses of nine signals
        }
        sub_b, err = await subscribe(b, ["acme/+/+/line-1/*/press-1/temperature"])
        assert not err
        assert sub_b["signals"] == 2
        sub_c, err = await subscribe(c, ["**"])
        assert not err
        assert sub_c["signals"] == 2 * 9

        start = (time.time_ns() // 1000) - 600_000_000
        batches = readings(25, start, rng)
        for batch in batches:
            await live.feed(batch)
        fed = [r for batch in batches for r in batch]
        await live.committed(len(fed))

        want_a = expected(fed, lambda p: p.startswith("acme/munich/"))
        rx = re.compile(r"^acme/[^/]+/[^/]+/line-1/[^/]+/press-1/temperature$")
        want_b = expected(fed, rx.match)
        for ws, want in ((a, want_a), (b, want_b), (c, want_a)):
            got, frames = await collect(ws, len(want))
            assert sorted(got, key=_key) == sorted(want, key=_key)
            assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
            sent = [f["sent_ms"] for f in frames]
            assert all(t1 - t0 >= 95 for t0, t1 in itertools.pairwise(sent)), sent
        assert live.hub.stats.values_sent == 2 * len(want_a) + len(want_b)
        assert live.hub.stats.clients_dropped == 0


@pytest.mark.timeout(120)
async def test_unsubscribe_ping_and_bad_messages(tmp_path: Path) -> None:
    async with live_server(tmp_path) as live, live.connect("all") as ws:
        await hello(ws)
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
        await ws.send("not json")
        doc = await recv(ws)
        assert doc["type"] == "error"
        assert doc["code"] == 400
        await ws.send(json.dumps({"type": "subscribe", "patterns": "acme/munich/**"}))
        assert (await recv(ws))["signals"] == 18  # one pattern as a bare string
        await ws.send(json.dumps({"type": "dance"}))
        doc = await recv(ws)
        assert doc["code"] == 400
        assert "dance" in doc["detail"]
        _, errors = await subscribe(ws, ["acme/mu+nich/**", "a//b", "#/x", "acme/munich/#"])
        assert [e["code"] for e in errors] == [400, 400, 400]
        assert "whole segments" in errors[0]["detail"]

        await ws.send(json.dumps({"type": "unsubscribe", "id": 3, "patterns": ["acme/munich/**"]}))
        doc = await recv(ws)
        assert doc == {
            "type": "unsubscribed",
            "id": 3,
            "patterns": ["acme/munich/**"],
            "signals": 18,
        }
        await ws.send(json.dumps({"type": "unsubscribe", "patterns": ["acme/munich/#"]}))
        assert (await recv(ws))["signals"] == 0
        ts = time.time_ns() // 1000
        await live.feed([(M_PRESS, "temperature", ts, 20.0, 0xC0)])
        await live.committed(1)
        with pytest.raises(TimeoutError):
            await recv(ws, 0.5)  # nothing subscribed: nothing sent


# --------------------------------------------------------------------------- tokens


@pytest.mark.timeout(120)
async def test_a_missing_or_invalid_token_closes_with_4401(tmp_path: Path) -> None:
    async with live_server(tmp_path) as live:
        live.tokens["forged"] = "sf_" + live.ids["all"] + "_" + "x" * 43
        live.tokens["garbage"] = "hello"
        for token, header in (
            (None, True),
            ("forged", True),
            ("garbage", False),
            ("revoked", False),
        ):
            async with live.connect(token, header=header) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await recv(ws)
                assert info.value.rcvd is not None
                assert info.value.rcvd.code == 4401, token
        async with live.connect("munich", header=False) as ws:
            await hello(ws)
        rows = await live.auth.audit_entries(limit=20)
        live_rows = [r for r in rows if r.path.startswith("/api/v1/live")]
        by_token = {(r.token_id, r.status) for r in live_rows}
        assert (live.ids["all"], 401) in by_token  # the forged secret, with its claimed id
        assert (live.ids["revoked"], 401) in by_token
        assert (live.ids["munich"], 101) in by_token
        assert all(live.tokens["munich"] not in r.path for r in live_rows)  # never the secret
        assert all(r.method == "GET" for r in live_rows)


@pytest.mark.timeout(120)
async def test_a_token_revoked_mid_stream_closes_the_stream(tmp_path: Path) -> None:
    async with live_server(tmp_path, token_recheck_s=0.2) as live, live.connect("munich") as ws:
        await hello(ws)
        await subscribe(ws, ["**"])
        await live.auth.revoke_token(live.ids["munich"])
        _, code = await until_closed(ws)
        assert code == 4401


@pytest.mark.timeout(120)
async def test_patterns_outside_the_subtree_get_403(tmp_path: Path) -> None:
    async with live_server(tmp_path) as live, live.connect("munich") as ws:
        await hello(ws)
        sub, errors = await subscribe(
            ws, ["acme/leipzig/**", "+/leipzig/#", "acme/munich/body-shop/**", "acme"]
        )
        assert [e["code"] for e in errors] == [403, 403, 403]
        assert "acme/leipzig/**" in errors[0]["detail"]
        assert "acme/munich" in errors[0]["detail"]
        assert sub["patterns"] == ["acme/munich/body-shop/**"]
        assert sub["signals"] == 18
        sub, errors = await subscribe(ws, ["+/+/+/+/+/+/temperature"])
        assert not errors
        assert sub["signals"] == 18
        ts = time.time_ns() // 1000
        rows = [(p, "temperature", ts, 30.5, 0xC0) for p in (M_PRESS, L_PRESS)]
        await live.feed(rows)
        await live.committed(2)
        got, _ = await collect(ws, 1)
        assert got == [(f"{M_PRESS}/temperature", ts // 1000, 30.5, "CEL", "good")]


# --------------------------------------------------------------------------- backpressure


@pytest.mark.timeout(180)
async def test_a_slow_client_is_dropped_and_the_pipeline_goes_on(tmp_path: Path) -> None:
    big = 30_000  # characters per value: a few frames fill the socket buffers
    async with live_server(tmp_path, max_queue_values=60) as live:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        port = int(live.url.split(":")[2].split("/")[0])
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        async with (
            live.connect("all") as fast,
            live.connect("all", sock=sock, max_queue=1, compression=None) as slow,
        ):
            await hello(fast)
            await hello(slow)
            await subscribe(fast, ["acme/+/+/+/+/+/mode"])
            await subscribe(slow, ["**"])
            received: list[Row] = []
            target = [math.inf]
            enough = asyncio.Event()

            async def read_fast() -> None:
                while True:
                    doc = await recv(fast, 60)
                    if doc["type"] == "values":
                        received.extend(
                            zip(
                                doc["signal"],
                                doc["ts"],
                                doc["value"],
                                doc["unit"],
                                doc["quality"],
                                strict=True,
                            )
                        )
                    if len(received) >= target[0]:
                        enough.set()

            reader = asyncio.create_task(read_fast())
            fed = 0
            ts0 = time.time_ns() // 1000 - 300_000_000
            b = 0
            while live.hub.stats.clients_dropped == 0:
                assert b < 2000, "the slow client was never dropped"
                ts = ts0 + b * 1000
                text = f"{b:06d}" + "x" * big
                await live.feed([(p, "mode", ts, text, 0xC0) for p in (M_PRESS, M_PRESS2, L_PRESS)])
                fed += 3
                await live.committed(fed)  # one commit per batch: the fast client keeps up
                b += 1
            dropped_at = live.stats.commits
            # The pipeline goes on, and so does the fast client.
            for k in range(10):
                ts = ts0 + (b + k) * 1000
                await live.feed([(p, "mode", ts, f"after-{k}", 0xC0) for p in (M_PRESS, L_PRESS)])
                fed += 2
            await live.committed(fed)
            assert live.stats.commits > dropped_at
            assert live.stats.values_stored == fed
            # The slow client reads again: what was in flight, then why it was dropped.
            messages, code = await until_closed(slow)
            assert code == 1013
            dropped = [m for m in messages if m["type"] == "dropped"]
            assert len(dropped) == 1
            assert dropped[0]["reason"] == "slow consumer"
            assert dropped[0]["values_dropped"] > 0
            assert live.hub.stats.clients_dropped == 1
            target[0] = fed
            if len(received) < fed:
                await asyncio.wait_for(enough.wait(), 30)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            assert len(received) == fed
            assert sum(1 for r in received if str(r[2]).startswith("after-")) == 20


@pytest.mark.timeout(120)
async def test_one_commit_larger_than_the_bound_drops_nobody(tmp_path: Path) -> None:
    async with live_server(tmp_path, max_queue_values=5) as live, live.connect("all") as ws:
        await hello(ws)
        await subscribe(ws, ["**"])
        batch = readings(1, time.time_ns() // 1000, random.Random(1))[0]
        assert len(batch) == 12
        await live.feed(batch)
        await live.committed(len(batch))
        got, _ = await collect(ws, len(batch))
        assert sorted(got, key=_key) == sorted(expected(batch, lambda p: True), key=_key)
        assert live.hub.stats.clients_dropped == 0


# --------------------------------------------------------------------------- events


@pytest.mark.timeout(120)
async def test_events_reach_the_clients_of_their_assets(tmp_path: Path) -> None:
    async with (
        live_server(tmp_path) as live,
        live.connect("all") as munich,
        live.connect("leipzig") as leipzig,
        live.connect("all") as values_only,
    ):
        for ws in (munich, leipzig, values_only):
            await hello(ws)
        await subscribe(
            munich, ["acme/munich/body-shop/line-1/cell-1/press-1/temperature"], events=True
        )
        await subscribe(leipzig, ["acme/leipzig/**"], events=True)
        await subscribe(values_only, ["acme/**"])

        async def events_of(ws: ClientConnection, within: float) -> list[dict[str, Any]]:
            deadline = time.monotonic() + within
            while True:
                doc = await recv(ws, max(0.05, deadline - time.monotonic()))
                if doc["type"] == "events":
                    return list(doc["events"])

        now = time.time_ns() // 1000
        await live.feed(
            [
                (M_PRESS, "temperature", now - 2_000_000 + k * 100_000, 80.0 + k, 0xC0)
                for k in range(10)
            ]
        )
        got = await events_of(munich, 30)
        alarm = [e for e in got if e["kind"] == "alarm"]
        assert alarm
        assert alarm[0]["asset"] == M_PRESS
        assert alarm[0]["code"] == "hot" or "hot" in json.dumps(alarm[0])
        assert isinstance(alarm[0]["ts"], int)
        assert abs(alarm[0]["ts"] - now // 1000) < 60_000
        assert set(alarm[0]) >= {
            "event_id",
            "kind",
            "asset",
            "signal",
            "ts",
            "end_ts",
            "code",
            "severity",
            "message",
            "data",
        }
        with pytest.raises(TimeoutError):
            await events_of(leipzig, 1.0)  # not Leipzig's
        now = time.time_ns() // 1000
        await live.feed(
            [(L_PRESS, "temperature", now - 2_000_000 + k * 100_000, 90.0, 0xC0) for k in range(10)]
        )
        got = await events_of(leipzig, 30)
        assert {e["asset"] for e in got} == {L_PRESS}
        with pytest.raises(TimeoutError):
            await events_of(values_only, 0.5)  # never asked for events
        assert live.hub.stats.events_sent >= 2


# --------------------------------------------------------------------------- wiring


@pytest.mark.timeout(120)
async def test_attach_runtime_feeds_the_hub_while_up(tmp_path: Path) -> None:
    from shopfloor.cli._api import RunningApi, attach_runtime

    text = factory_text().replace("127.0.0.1:4841", f"127.0.0.1:{_free_port()}")
    text = text.replace("127.0.0.1:4842", f"127.0.0.1:{_free_port()}")
    factory = parse_factory(text, "live.yaml")
    async with (
        open_historian(f"duckdb:{tmp_path / 'w.duckdb'}") as h,
        AuthStore(tmp_path / "w.sqlite") as auth,
    ):
        token = (await auth.create_token("read", ["acme"])).token
        app = create_app(factory, h, auth)
        hub = app.state.live
        config = server_config(app, "127.0.0.1", 0, log_level="warning")
        async with running_server(config) as server, contextlib.AsyncExitStack() as stack:
            rt = await stack.enter_async_context(Runtime(factory, h, flush_interval=0.02))
            assert rt.pipeline is not None
            attach_runtime(stack, RunningApi(server, app), rt)
            assert hub.publish_readings in rt.pipeline.observers
            url = f"ws://127.0.0.1:{server.port}/api/v1/live?token={token}"
            async with connect(url) as ws:
                await hello(ws)
                await subscribe(ws, ["**"])
                ts = time.time_ns() // 1000
                b = RawBatchBuilder()
                b.append("leipzig-opc", f"ns=2;s={L_PRESS}/good_count", ts, 41)
                await rt.pipeline.sink(b.build())
                got, _ = await collect(ws, 1)
                assert got == [(f"{L_PRESS}/good_count", ts // 1000, 41, "H87", "good")]
            pipeline = rt.pipeline
        assert hub.publish_readings not in pipeline.observers  # detached before it stopped


@pytest.mark.timeout(60)
async def test_up_serves_the_live_stream(tmp_path: Path) -> None:
    from shopfloor.cli._api import api_options
    from shopfloor.cli._up import _run_up

    text = factory_text().replace("127.0.0.1:4841", f"127.0.0.1:{_free_port()}")
    text = text.replace("127.0.0.1:4842", f"127.0.0.1:{_free_port()}")
    factory_file = tmp_path / "f.yaml"
    factory_file.write_text(text, encoding="utf-8")
    async with AuthStore(tmp_path / "up.auth.sqlite") as auth:
        token = (await auth.create_token("read", ["acme/leipzig"])).token
    port = _free_port()
    run = asyncio.create_task(
        _run_up(factory_file, f"duckdb:{tmp_path / 'up.duckdb'}", 5.0, False, api=api_options(port))
    )
    url = f"ws://127.0.0.1:{port}/api/v1/live?token={token}"
    for _ in range(200):
        assert not run.done()
        try:
            async with connect(url) as ws:
                await hello(ws)
                sub, _ = await subscribe(ws, ["**"])
                assert sub["signals"] == 9  # Leipzig's press
                break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the live stream never answered")
    await run


# --------------------------------------------------------------------------- patterns


def _reference(pattern: Sequence[str], path: Sequence[str]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_reference(rest, path[k:]) for k in range(len(path) + 1))
    if not path:
        return False
    return (head == "+" or head == path[0]) and _reference(rest, path[1:])


_SEGMENTS = st.sampled_from(["acme", "munich", "line-1", "press.7", "a+b", "x"])
_PATTERN_SEGMENTS = st.sampled_from(["acme", "munich", "line-1", "press.7", "x", "+", "*", "**"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_PATTERN_SEGMENTS, min_size=1, max_size=6),
    st.lists(st.lists(_SEGMENTS, min_size=1, max_size=7), min_size=1, max_size=30),
)
def test_patterns_match_like_a_reference_matcher(
    pattern: list[str], paths: list[list[str]]
) -> None:
    segs = ["+" if s == "*" else s for s in pattern]
    compiled = compile_pattern("/".join(pattern))
    table = pa.table(
        {
            "signal_id": pa.array(range(len(paths)), pa.int32()),
            "path": ["/".join(p) for p in paths],
            "unit": pa.nulls(len(paths), pa.string()),
        }
    )
    got = _Catalog(table).match(compiled.signal_regex)
    want = np.array([_reference(segs, p) for p in paths])
    assert (got == want).all(), (pattern, paths)


def test_pattern_syntax_and_subtrees() -> None:
    assert compile_pattern("acme/#").segments == ("acme", "**")
    assert compile_pattern("/acme/*/x/").segments == ("acme", "+", "x")
    assert compile_pattern("**/**/t").segments == ("**", "t")
    for bad in ("", "a//b", "a/#/b", "a/b*", "pre+"):
        with pytest.raises(PatternError):
            compile_pattern(bad)
    under = ["acme", "munich"]
    assert _may_match_under(("**",), under)
    assert _may_match_under(("+", "munich", "x"), under)
    assert _may_match_under(("acme", "munich"), under)
    assert not _may_match_under(("acme",), under)
    assert not _may_match_under(("acme", "leipzig", "**"), under)
    assert not _may_match_under(("+", "+-x"), under)

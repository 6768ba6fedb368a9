"""A real API server for the SDK tests: uvicorn in its own thread and event loop, over a
DuckDB historian that a running :class:`~shopfloor.runtime.Runtime`'s pipeline filled.

The factory's OPC UA servers are absent (the connectors keep retrying); the test data goes
through the runtime's own pipeline (``pipeline.sink`` → mapper → historian), as a
connector's batches would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shopfloor.analytics import oee, record_downtime
from shopfloor.api import ApiLimits, AuthStore, create_app, running_server, server_config
from shopfloor.edge.batch import RawBatch
from shopfloor.historian import Historian, open_historian
from shopfloor.model import parse_factory
from shopfloor.runtime import Runtime

M_LINE = "acme/munich/body-shop/line-1"
M_PRESS = f"{M_LINE}/press-1"
M_PRESS2 = f"{M_LINE}/press-2"
L_PRESS = "acme/leipzig/paint/line-1/press-1"
PRESSES = (M_PRESS, M_PRESS2, L_PRESS)

T0 = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)  # a Monday, 07:00 in Munich: the early shift
SECONDS = 3600
T1 = T0 + timedelta(seconds=SECONDS)
T0_US = int(T0.timestamp()) * 1_000_000
NAN_AT = 100

_FACTORY = """\
types:
  - id: press
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, unit: H87, kind: counter}
      - {name: reject_count, data_type: int, unit: H87, kind: counter}
      - {name: temperature, data_type: float, unit: CEL}
      - {name: running, data_type: bool}
      - {name: mode, data_type: string}
      - {name: recipe, data_type: json}
    attributes: {ideal_cycle_time_s: 5.0}
    states: {0: offline, 1: idle, 2: running, 6: unplanned_stop, 7: setup}
connections:
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:%(port)d"}
enterprise:
  id: acme
  sites:
  - id: munich
    timezone: Europe/Berlin
    calendar:
      shifts:
      - {name: early, start: "06:00", end: "14:00", days: [mon, tue, wed, thu, fri]}
    areas:
    - id: body-shop
      lines:
      - id: line-1
        equipment:
%(munich)s
  - id: leipzig
    timezone: Europe/Berlin
    areas:
    - id: paint
      lines:
      - id: line-1
        equipment:
%(leipzig)s
"""

_PRESS = """\
          - id: {id}
            type: press
            connection: opc
            bindings: {{state: "{p}/state", good_count: "{p}/good_count",
              reject_count: "{p}/reject_count", temperature: "{p}/temperature",
              running: "{p}/running", mode: "{p}/mode", recipe: "{p}/recipe"}}
"""

TOKENS = {
    "read_all": ("read", ["acme"]),
    "read_munich": ("read", ["acme/munich"]),
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def factory_text(opc_port: int) -> str:
    """The factory file: two presses in Munich, one in Leipzig, all on one absent server."""

    def press(path: str) -> str:
        return _PRESS.format(id=path.rsplit("/", 1)[1], p=path)

    return _FACTORY % {
        "port": opc_port,
        "munich": press(M_PRESS) + press(M_PRESS2),
        "leipzig": press(L_PRESS),
    }


def press_truth(offset: int) -> dict[str, np.ndarray]:
    """One press's 1 Hz data over [T0, T1): a breakdown, counters, a NaN temperature."""
    k = np.arange(SECONDS, dtype=np.int64)
    state = np.full(SECONDS, 2, dtype=np.int64)
    state[900 + offset : 1500 + offset] = 6
    pieces = np.cumsum((state == 2) & (k % 5 == 0))
    reject = pieces // 50
    temperature = 40.0 + 10.0 * np.sin(k / 300.0) + offset / 100
    temperature[NAN_AT] = np.nan
    return {
        "state": state,
        "good_count": pieces - reject,
        "reject_count": reject,
        "temperature": temperature,
        "running": state == 2,
    }


def raw_batches(press: str, truth: dict[str, np.ndarray]) -> list[RawBatch]:
    """The press's readings as a connector would deliver them (by source address)."""
    ts = T0_US + np.arange(SECONDS, dtype=np.int64) * 1_000_000
    out = []
    for name, values in truth.items():
        for part in range(0, SECONDS, 600):  # ten-minute batches, like a connector's
            sl = slice(part, part + 600)
            n = len(values[sl])
            out.append(RawBatch.from_columns("opc", [f"{press}/{name}"] * n, ts[sl], values[sl]))
    out.append(RawBatch.from_columns("opc", [f"{press}/mode"] * 2, ts[[0, 1800]], ["auto", "man"]))
    out.append(RawBatch.from_columns("opc", [f"{press}/recipe"], ts[[5]], ['{"id": 7}']))
    return out


@dataclass
class SdkServer:
    """The running servers and what the tests compare with."""

    url: str
    """The server with the default limits."""
    small_url: str
    """The same app with tiny limits: exports refused as too large, pages of a few items."""
    tokens: dict[str, str]
    truth: dict[str, dict[str, np.ndarray]]
    expected_oee: list[dict[str, Any]]
    expected_events: pa.Table
    stored: int
    loop: asyncio.AbstractEventLoop
    runtime: Runtime
    historian: Historian

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 30.0) -> Any:
        """Run ``fn()`` in the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)


class ServerThread:
    """Starts the historian, runtime and two uvicorn servers in a thread; stops them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.server: SdkServer | None = None
        self._thread = threading.Thread(target=self._main, name="sdk-api", daemon=True)

    def __enter__(self) -> SdkServer:
        self._thread.start()
        if not self._ready.wait(120):
            raise TimeoutError("the API server thread did not start in 120 s")
        if self._error is not None:
            raise self._error
        assert self.server is not None
        return self.server

    def __exit__(self, *exc: object) -> None:
        if self.server is not None and self._stop is not None:
            self.server.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        factory_file = self.tmp / "factory.yaml"
        text = factory_text(free_port())
        factory_file.write_text(text, encoding="utf-8")
        factory = parse_factory(text, str(factory_file))
        db = f"duckdb:{self.tmp / 'sdk.duckdb'}"
        async with contextlib.AsyncExitStack() as stack:
            h = await stack.enter_async_context(open_historian(db))
            auth = await stack.enter_async_context(AuthStore(self.tmp / "sdk.auth.sqlite"))
            tokens = {
                name: (await auth.create_token(scope, trees, name=name)).token
                for name, (scope, trees) in TOKENS.items()
            }
            rt = await stack.enter_async_context(Runtime(factory, h, flush_interval=0.05))
            assert rt.pipeline is not None
            truth = {p: press_truth(offset=60 * j) for j, p in enumerate(PRESSES)}
            total = 0
            for press, data in truth.items():
                for batch in raw_batches(press, data):
                    await rt.pipeline.sink(batch)
                    total += len(batch)
            for _ in range(600):
                if rt.pipeline.stats.values_stored + rt.pipeline.stats.dead_letters >= total:
                    break
                await asyncio.sleep(0.05)
            assert rt.pipeline.stats.values_stored == total, rt.pipeline.stats
            for press in PRESSES:
                await record_downtime(h, factory, press, T0, T1)
            expected_oee = (await oee(h, factory, M_LINE, T0, T1, "hour")).to_pylist()
            expected_events = await h.read_events(T0, T1)
            app = create_app(factory, h, auth, runtime=rt)
            small = create_app(
                factory,
                h,
                auth,
                runtime=rt,
                limits=ApiLimits(
                    page_default=2, samples_default=700, export_rows_max=2, buckets_max=100_000
                ),
            )
            main = await stack.enter_async_context(
                running_server(server_config(app, "127.0.0.1", 0, log_level="warning"))
            )
            other = await stack.enter_async_context(
                running_server(server_config(small, "127.0.0.1", 0, log_level="warning"))
            )
            self.server = SdkServer(
                url=main.url,
                small_url=other.url,
                tokens=tokens,
                truth=truth,
                expected_oee=expected_oee,
                expected_events=expected_events,
                stored=total,
                loop=asyncio.get_running_loop(),
                runtime=rt,
                historian=h,
            )
            self._ready.set()
            await self._stop.wait()

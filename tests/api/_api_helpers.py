"""Shared by the API tests: a two-site factory, a filled DuckDB historian and tokens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from fastapi import FastAPI

from shopfloor.analytics import record_downtime
from shopfloor.api import ApiLimits, AuthStore, create_app
from shopfloor.edge.batch import ReadingBatch
from shopfloor.edge.deadletter import DEAD_LETTER_SCHEMA
from shopfloor.edge.events import EVENT_SCHEMA
from shopfloor.historian import Historian, open_historian
from shopfloor.model import Factory, parse_factory
from shopfloor.runtime import Runtime, signal_infos

_PRESS = """\
          - id: {id}
            type: {type}
            connection: {conn}
            bindings:
              state: ns=2;s={base}/state
              good_count: ns=2;s={base}/good_count
              reject_count: ns=2;s={base}/reject_count
              temperature: ns=2;s={base}/temperature
              force_setpoint: ns=2;s={base}/force_setpoint
              speed_setpoint: {{address: "ns=2;s={base}/speed_setpoint", scale: 0.1}}
              mode: ns=2;s={base}/mode
              recipe: ns=2;s={base}/recipe
"""

FACTORY = """\
types:
  - id: press
    name: Servo press
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: good_count, data_type: int, unit: H87, kind: counter}
      - {name: reject_count, data_type: int, unit: H87, kind: counter}
      - {name: temperature, data_type: float, unit: CEL, limits: {low: 10, high: 70},
         semantic_id: "0173-1#02-AAV232#002"}
      - {name: force_setpoint, data_type: float, unit: B47, kind: setpoint,
         limits: {low: 0, high: 5000000}}
      - {name: speed_setpoint, data_type: int, kind: setpoint, limits: {low: 0, high: 100}}
      - {name: mode, data_type: string}
      - {name: recipe, data_type: json}
      - {name: oee, data_type: float, unit: P1, derived: true}
    attributes: {ideal_cycle_time_s: 5.0}
    states: {0: offline, 1: idle, 2: running, 3: starved, 4: blocked, 5: planned_stop,
             6: unplanned_stop, 7: setup}
  - id: press-l
    name: Leipzig press
    extends: press
connections:
  - {name: munich-opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4841"}
  - {name: leipzig-opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4842"}
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
        cells:
        - id: cell-1
          equipment:
%(munich)s
  - id: leipzig
    timezone: Europe/Berlin
    calendar:
      shifts:
      - {name: early, start: "06:00", end: "14:00", days: [mon, tue, wed, thu, fri]}
    areas:
    - id: paint
      lines:
      - id: line-1
        cells:
        - id: cell-1
          equipment:
%(leipzig)s
"""

M_LINE = "acme/munich/body-shop/line-1"
M_PRESS = f"{M_LINE}/cell-1/press-1"
M_PRESS2 = f"{M_LINE}/cell-1/press-2"
L_LINE = "acme/leipzig/paint/line-1"
L_PRESS = f"{L_LINE}/cell-1/press-1"

T0 = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)  # a Monday, 07:00 in Munich: the early shift
T1 = T0 + timedelta(hours=2)
T0_US = int(T0.timestamp()) * 1_000_000
SECONDS = 7200
NAN_AT = 100
"""The temperature sample at T0 + 100 s is NaN."""


def factory_text() -> str:
    """The factory file: Munich (two presses) and Leipzig (one press of a derived type)."""

    def press(path: str, type_: str, conn: str) -> str:
        return _PRESS.format(id=path.rsplit("/", 1)[1], type=type_, conn=conn, base=path)

    return FACTORY % {
        "munich": press(M_PRESS, "press", "munich-opc") + press(M_PRESS2, "press", "munich-opc"),
        "leipzig": press(L_PRESS, "press-l", "leipzig-opc"),
    }


def _changes(values: np.ndarray) -> np.ndarray:
    keep = np.ones(values.shape[0], dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return keep


def press_data(offset: int) -> dict[str, np.ndarray]:
    """One press's 1 Hz truth over [T0, T1): state codes, counters, temperature."""
    k = np.arange(SECONDS, dtype=np.int64)
    state = np.full(SECONDS, 2, dtype=np.int64)
    state[1800 + offset : 2400 + offset] = 6  # a 10-minute breakdown
    state[4000 : 4300 + offset] = 7  # setup
    running = state == 2
    pieces = np.cumsum(running & (k % 5 == 0))
    reject = pieces // 60
    good = pieces - reject
    temperature = 40.0 + 10.0 * np.sin(k / 600.0) + offset / 100
    temperature[NAN_AT] = np.nan
    return {"state": state, "good_count": good, "reject_count": reject, "temperature": temperature}


@dataclass(frozen=True)
class ApiData:
    """The files and tokens every API test starts from."""

    factory_file: Path
    db: str
    auth_db: Path
    tokens: dict[str, str]
    token_ids: dict[str, str]
    truth: dict[str, dict[str, np.ndarray]]


TOKENS = {
    "read_munich": ("read", ["acme/munich"]),
    "operate_munich": ("operate", ["acme/munich"]),
    "admin_munich": ("admin", ["acme/munich"]),
    "admin_all": ("admin", ["acme"]),
    "read_leipzig": ("read", ["acme/leipzig"]),
    "read_two_lines": ("read", [M_LINE, L_LINE]),
}


async def fill(h: Historian, factory: Factory) -> dict[str, dict[str, np.ndarray]]:
    """Write the presses' data, downtime, alarms and dead letters into ``h``."""
    ids = await h.register_signals(signal_infos(factory))
    ts = T0_US + np.arange(SECONDS, dtype=np.int64) * 1_000_000
    truth: dict[str, dict[str, np.ndarray]] = {}
    batches = []
    for j, press in enumerate((M_PRESS, M_PRESS2, L_PRESS)):
        data = press_data(offset=60 * j)
        truth[press] = data
        for name in ("state", "good_count", "reject_count"):
            keep = _changes(data[name])
            batches.append(
                ReadingBatch.from_columns(
                    np.full(int(keep.sum()), ids[f"{press}/{name}"]), ts[keep], data[name][keep]
                )
            )
        batches.append(
            ReadingBatch.from_columns(
                np.full(SECONDS, ids[f"{press}/temperature"]), ts, data["temperature"]
            )
        )
        batches.append(
            ReadingBatch.from_columns(
                np.full(3, ids[f"{press}/force_setpoint"]),
                ts[[0, 10, 20]],
                np.array([1e6, 2e6, 3e6]),
            )
        )
        batches.append(
            ReadingBatch.from_columns(
                np.full(2, ids[f"{press}/mode"]), ts[[0, 3600]], np.array(["auto", "manual"])
            )
        )
        batches.append(
            ReadingBatch.from_columns(
                np.full(1, ids[f"{press}/recipe"]), ts[[5]], np.array(['{"id": 7, "name": "A"}'])
            )
        )
    await h.append(ReadingBatch.concat(batches))
    for press in (M_PRESS, M_PRESS2, L_PRESS):
        await record_downtime(h, factory, press, T0, T1)
    alarms = pa.Table.from_pylist(
        [
            {
                "event_id": f"alarm:{press}/temperature:high:{T0_US + 600_000_000}",
                "kind": "alarm",
                "asset": press,
                "signal": f"{press}/temperature",
                "ts": T0 + timedelta(minutes=10),
                "end_ts": T0 + timedelta(minutes=12),
                "code": "high",
                "severity": 700,
                "message": "temperature above 48",
                "data": json.dumps({"limit": 48.0}),
            }
            for press in (M_PRESS, L_PRESS)
        ],
        schema=EVENT_SCHEMA,
    )
    await h.append_events(alarms)
    when = T0 + timedelta(minutes=30)
    letters = pa.Table.from_pylist(
        [
            {"received_at": when, "source": "munich-opc", "location": "ns=2;s=x",
             "reason": "unbound address", "payload": b'{"v": 1}'},
            {"received_at": when, "source": "munich-opc", "location": "ns=2;s=y",
             "reason": "unbound address", "payload": b'{"v": 2}'},
            {"received_at": when, "source": "munich-opc", "location": "ns=2;s=z",
             "reason": "unbound address", "payload": b"\xff\x00binary"},
            {"received_at": when + timedelta(seconds=1), "source": "leipzig-opc",
             "location": "ns=2;s=q", "reason": "type mismatch", "payload": b"7"},
            {"received_at": when - timedelta(seconds=1), "source": "leipzig-opc",
             "location": "ns=2;s=r", "reason": "type mismatch", "payload": None},
            {"received_at": when + timedelta(seconds=2), "source": "mystery",
             "location": None, "reason": "unparsable", "payload": b"??"},
        ],
        schema=DEAD_LETTER_SCHEMA,
    )  # fmt: skip
    await h.append_dead_letters(letters)
    return truth


def build(tmp: Path) -> ApiData:
    """Write the factory file, the historian and the security store under ``tmp``."""
    factory_file = tmp / "factory.yaml"
    factory_file.write_text(factory_text(), encoding="utf-8")
    factory = parse_factory(factory_text(), str(factory_file))
    db = f"duckdb:{tmp / 'h.duckdb'}"
    auth_db = tmp / "h.auth.sqlite"
    tokens: dict[str, str] = {}
    token_ids: dict[str, str] = {}

    async def work() -> dict[str, dict[str, np.ndarray]]:
        async with open_historian(db) as h, AuthStore(auth_db) as auth:
            truth = await fill(h, factory)
            for name, (scope, subtrees) in TOKENS.items():
                new = await auth.create_token(scope, subtrees, name=name)
                tokens[name], token_ids[name] = new.token, new.info.id
            revoked = await auth.create_token("admin", ["acme"], name="revoked")
            await auth.revoke_token(revoked.info.id)
            tokens["revoked"], token_ids["revoked"] = revoked.token, revoked.info.id
            expired = await auth.create_token(
                "admin", ["acme"], name="expired", expires_in=timedelta(microseconds=1)
            )
            tokens["expired"], token_ids["expired"] = expired.token, expired.info.id
            return truth

    truth = asyncio.run(work())
    return ApiData(factory_file, db, auth_db, tokens, token_ids, truth)


@pytest.fixture(scope="session")
def api_data(tmp_path_factory: pytest.TempPathFactory) -> ApiData:
    """The factory, historian and tokens, built once per test session."""
    return build(tmp_path_factory.mktemp("api"))


@dataclass
class Api:
    """A client on the app, with the objects behind it."""

    client: httpx.AsyncClient
    app: FastAPI
    historian: Historian
    auth: AuthStore
    factory: Factory
    data: ApiData

    def auth_header(self, token: str) -> dict[str, str]:
        """``Authorization`` for the named token of :data:`TOKENS`."""
        return {"Authorization": f"Bearer {self.data.tokens[token]}"}

    async def get(self, url: str, token: str | None = None, **kw: object) -> httpx.Response:
        """GET with the named token (none when ``None``)."""
        headers = self.auth_header(token) if token else {}
        return await self.client.get(url, headers=headers, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def open_api(
    data: ApiData,
    *,
    runtime: Runtime | None = None,
    limits: ApiLimits | None = None,
    historian: Historian | None = None,
) -> AsyncIterator[Api]:
    """Open the historian and the security store and serve the app in-process."""
    factory = parse_factory(factory_text(), str(data.factory_file))
    async with AuthStore(data.auth_db) as auth:
        if historian is None:
            async with open_historian(data.db) as h:
                app = create_app(factory, h, auth, runtime=runtime, limits=limits)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
                    yield Api(c, app, h, auth, factory, data)
        else:
            app = create_app(factory, historian, auth, runtime=runtime, limits=limits)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
                yield Api(c, app, historian, auth, factory, data)


def ts_us(ts: str) -> int:
    """An RFC 3339 string as epoch microseconds."""
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


__all__ = [
    "L_LINE",
    "L_PRESS",
    "M_LINE",
    "M_PRESS",
    "M_PRESS2",
    "T0",
    "T0_US",
    "T1",
    "TOKENS",
    "Api",
    "ApiData",
    "api_data",
    "build",
    "open_api",
    "ts_us",
]

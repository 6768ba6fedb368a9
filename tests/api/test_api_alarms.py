"""Alarms through the API: the active list and acknowledgement, against the runtime's
alarm engine (ISA-18.2 lifecycle in :mod:`shopfloor.analytics.alarms`)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from _api_helpers import L_PRESS, M_PRESS, T0, T0_US, ApiData, factory_text, open_api

from shopfloor.analytics.alarms import alarm_log
from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian import open_historian
from shopfloor.model import parse_factory
from shopfloor.runtime import Runtime

ALARMS = """\
alarms:
  rules:
    - id: temperature_high
      type: press
      severity: high
      threshold: {signal: temperature, above: 60, deadband: 5}
"""


def _nowhere() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"opc.tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.timeout(60)
async def test_acknowledge_an_alarm(api_data: ApiData) -> None:
    factory = parse_factory(factory_text() + ALARMS)
    endpoints = {"munich-opc": _nowhere(), "leipzig-opc": _nowhere()}
    async with (
        open_historian("duckdb::memory:") as h,
        Runtime(factory, h, endpoint_override=endpoints) as rt,
        open_api(api_data, runtime=rt, historian=h) as api,
    ):
        assert rt.alarms is not None
        paths = [f"{M_PRESS}/temperature", f"{L_PRESS}/temperature"]
        ids = np.repeat([rt.signal_ids[p] for p in paths], 3)
        ts = np.tile(T0_US + np.array([0, 2, 4]) * 1_000_000, 2)
        await rt.alarms(ReadingBatch.from_columns(ids, ts, np.full(6, 65.0)))

        r = await api.get("/api/v1/alarms", "read_munich")
        assert r.status_code == 200, r.text
        (alarm,) = r.json()["items"]
        occurrence = f"alarm:{M_PRESS}/temperature_high:{T0_US}"
        assert alarm["alarm_id"] == f"{M_PRESS}/temperature_high"
        assert (alarm["state"], alarm["priority"], alarm["value"]) == ("unack_active", "high", 65.0)
        assert alarm["occurrence"] == occurrence
        r = await api.get("/api/v1/alarms", "admin_all")
        assert len(r.json()["items"]) == 2

        url = f"/api/v1/events/{occurrence}/ack"
        r = await api.client.post(url, headers=api.auth_header("read_munich"))
        assert r.status_code == 403
        r = await api.client.post(
            url, json={"comment": "cooler checked"}, headers=api.auth_header("operate_munich")
        )
        assert r.status_code == 200, r.text
        acked = r.json()
        assert acked["state"] == "ack_active"
        assert acked["ack_comment"] == "cooler checked"
        assert api.data.token_ids["operate_munich"] in acked["acked_by"]

        for bad, status, slug in (
            (url, 409, "conflict"),  # already acknowledged
            (f"/api/v1/events/alarm:{M_PRESS}/temperature_high:{T0_US - 1}/ack", 409, "conflict"),
            (f"/api/v1/events/alarm:{M_PRESS}/nothing:{T0_US}/ack", 404, "not-found"),
            (
                f"/api/v1/events/alarm:{L_PRESS}/temperature_high:{T0_US}/ack",
                403,
                "outside-subtree",
            ),
            (f"/api/v1/events/downtime:{M_PRESS}:{T0_US}/ack", 422, "not-supported"),
        ):
            r = await api.client.post(bad, headers=api.auth_header("operate_munich"))
            assert r.status_code == status, (bad, r.text)
            assert r.json()["type"] == f"/api/v1/problems/{slug}"

        log = await alarm_log(h, T0 - timedelta(days=1), datetime.now(UTC) + timedelta(days=1))
        acks = [row for row in log.to_pylist() if row["code"] == "acknowledged"]
        assert len(acks) == 1
        assert api.data.token_ids["operate_munich"] in acks[0]["data"]
        # "+1d" needs its "+" encoded in a query string
        url = f"/api/v1/events?asset={M_PRESS}&start=2025-01-05&end=%2B1d&kind=alarm"
        r = await api.get(url, "read_munich")
        assert r.status_code == 200, r.text
        events = r.json()
        assert [e["event_id"] for e in events["items"]] == [occurrence]
        assert events["items"][0]["data"]["acked"] is True

        writes = [
            e
            for e in await api.auth.audit_entries(limit=20)
            if e.method == "POST" and e.status == 200 and e.detail
        ]
        assert writes[0].detail == {
            "action": "acknowledge",
            "event_id": occurrence,
            "comment": "cooler checked",
        }

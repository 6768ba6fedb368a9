"""``shopfloor share create|list|revoke`` against a real security store, and the API reading it.

The share is created and revoked by the command line (the revocation in a separate
process), while one API app keeps serving the same store: the partner's next request after
the revocation is refused.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import typer
from typer.testing import CliRunner

from shopfloor.api import AuthStore, create_app
from shopfloor.cli._share import app as share_app
from shopfloor.edge.batch import ReadingBatch, to_us
from shopfloor.historian import open_historian
from shopfloor.model import load_factory
from shopfloor.runtime import signal_infos

FACTORY = """\
types:
  - id: press
    signals:
      - {name: pressure, data_type: float, unit: BAR}
      - {name: mode, data_type: string}
connections:
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:1"}
enterprise:
  id: acme
  sites:
    - id: plant
      areas:
        - id: area
          lines:
            - id: line
              equipment:
                - {id: p1, type: press, connection: opc,
                   bindings: {pressure: p1.pressure, mode: p1.mode}}
                - {id: p2, type: press, connection: opc,
                   bindings: {pressure: p2.pressure, mode: p2.mode}}
"""
T0 = datetime(2026, 11, 23, 6, tzinfo=UTC)
P1 = "acme/plant/area/line/p1"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root."""

    app.add_typer(share_app, name="share")
    return app


def _invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(_app(), list(args))
    return r.exit_code, r.stdout, r.stderr


def _setup(tmp: Path) -> tuple[Path, str]:
    factory = tmp / "factory.yaml"
    factory.write_text(FACTORY, encoding="utf-8")
    db = f"duckdb:{tmp / 'plant.duckdb'}"

    async def fill() -> None:
        async with open_historian(db) as h:
            ids = await h.register_signals(signal_infos(load_factory(factory)))
            ts = to_us(T0) + np.arange(7200, dtype=np.int64) * 1_000_000
            for sig in (f"{P1}/pressure", "acme/plant/area/line/p2/pressure"):
                await h.append(
                    ReadingBatch.from_columns(np.full(7200, ids[sig]), ts, np.arange(7200.0))
                )

    asyncio.run(fill())
    return factory, db


def test_share_create_list_revoke(tmp_path: Path) -> None:
    factory, db = _setup(tmp_path)
    code, out, err = _invoke(
        "share", "create", "p1-hourly", "--partner", "Supplier X", "--purpose", "wear analysis",
        "--select", f"{P1}/pressure", "--level", "1h", "--since", T0.isoformat(),
        "--until", (T0 + timedelta(hours=2)).isoformat(), "--expires", "7d",
        "--factory", str(factory), "--db", db,
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    assert token.startswith("sfs_")
    assert "shown this once" in err
    store = tmp_path / "plant.auth.sqlite"
    assert token.encode() not in store.read_bytes()

    code, out, err = _invoke("share", "list", "--json", "--db", db)
    assert code == 0, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert (row["name"], row["level"], row["state"]) == ("p1-hourly", "1h", "active")
    assert row["select"] == [f"{P1}/pressure"]
    share_id = row["id"]
    code, out, _ = _invoke("share", "list", "--db", db)
    assert code == 0
    assert share_id in out  # the table (its other columns wrap at 80 characters)

    # refused: no expiry, raw-ish buckets, selectors of nothing, a used name
    base = ["--partner", "P", "--purpose", "p", "--since", "-1d", "--db", db]
    for extra, message in (
        (["x1", "--select", P1, "--level", "raw"], "Missing option '--expires'"),
        (["x2", "--select", P1, "--level", "10s", "--expires", "1d"], "at least 1m"),
        (["x3", "--select", f"{P1}/nothing", "--level", "raw", "--expires", "1d",
          "--factory", str(factory)], "select nothing"),
        (["p1-hourly", "--select", P1, "--level", "raw", "--expires", "1d"], "exists"),
    ):  # fmt: skip
        code, _, err = _invoke("share", "create", *extra, *base)
        assert code != 0
        assert message in err, err

    async def read(client: httpx.AsyncClient) -> int:
        r = await client.get(
            f"/api/v1/shared/{share_id}/data", headers={"Authorization": f"Bearer {token}"}
        )
        return r.status_code

    async def serve_and_revoke() -> list[int]:
        model = load_factory(factory)
        async with open_historian(db) as h, AuthStore(store) as auth:
            app = create_app(model, h, auth)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
                before = await read(c)
                # revoked by another process while the app keeps running
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", "from shopfloor.cli import main; main()",
                    "share", "revoke", "p1-hourly", "--db", db,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                _, stderr = await asyncio.wait_for(proc.communicate(), 120)
                assert proc.returncode == 0, stderr.decode()
                assert "revoked share" in stderr.decode()
                return [before, await read(c)]

    assert asyncio.run(serve_and_revoke()) == [200, 403]
    code, out, _ = _invoke("share", "list", "--json", "--db", db)
    assert json.loads(out)["state"] == "revoked"
    code, _, err = _invoke("share", "revoke", share_id, "--db", db)
    assert code == 1
    assert "already revoked" in err

    async def audit() -> list[tuple[str, int]]:
        async with AuthStore(store) as auth:
            await auth.verify_audit()
            rows = await auth.audit_entries(token_id=share_id, newest_first=False)
            return [(r.method, r.status) for r in rows]

    assert asyncio.run(audit()) == [("CLI", 201), ("GET", 200), ("CLI", 200), ("GET", 403)]

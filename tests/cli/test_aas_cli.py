"""``shopfloor aas export|import`` and ``model validate`` on the result, as a user runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from shopfloor.cli import _register, app
from shopfloor.edge.batch import ReadingBatch
from shopfloor.historian import open_historian
from shopfloor.model import load_factory
from shopfloor.runtime import signal_infos

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "acme-munich.yaml"
METER = "acme/munich/body-shop/line-1/meter-1"

_register()
runner = CliRunner()


def _fill(db: str) -> None:
    factory = load_factory(EXAMPLE)

    async def work() -> None:
        async with open_historian(db) as h:
            ids = await h.register_signals(signal_infos(factory))
            await h.append(
                ReadingBatch.from_columns(
                    np.array([ids[f"{METER}/active_power"]]),
                    np.array([1_740_000_000_000_000]),
                    np.array([187.5]),
                )
            )

    asyncio.run(work())


def test_export_import_validate_export(tmp_path: Path) -> None:
    db = f"duckdb:{tmp_path / 'h.duckdb'}"
    _fill(db)
    base = ["--id-base", "https://acme.example/ids"]
    aasx = tmp_path / "acme.aasx"
    r = runner.invoke(app, ["aas", "export", str(EXAMPLE), "--db", db, "--out", str(aasx), *base])
    assert r.exit_code == 0, r.output
    assert "25 shells, 100 submodels" in r.output
    assert "(1 with a latest value)" in r.output

    fragment = tmp_path / "fragment.yaml"
    r = runner.invoke(app, ["aas", "import", str(aasx), "--out", str(fragment)])
    assert r.exit_code == 0, r.output
    assert "25 equipment" in r.output

    r = runner.invoke(app, ["model", "validate", str(fragment)])
    assert r.exit_code == 0, r.output
    assert "valid — 38 assets, 25 equipment" in r.output

    first, second = tmp_path / "first.json", tmp_path / "second.json"
    for source, out in ((EXAMPLE, first), (fragment, second)):
        r = runner.invoke(app, ["aas", "export", str(source), "--db", db, "--out", str(out), *base])
        assert r.exit_code == 0, r.output
    assert first.read_text(encoding="utf-8") == second.read_text(encoding="utf-8")
    doc = json.loads(first.read_text(encoding="utf-8"))
    operational = next(
        sm for sm in doc["submodels"] if sm["id"].endswith(f"{METER}/OperationalData")
    )
    power = next(e for e in operational["submodelElements"] if e["idShort"] == "active_power")
    assert power["value"] == "187.5"


def test_errors_exit_1_with_a_message(tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        [
            "aas",
            "export",
            str(EXAMPLE),
            "--db",
            f"duckdb:{tmp_path / 'none.duckdb'}",
            "--out",
            str(tmp_path / "x.json"),
        ],
    )
    assert r.exit_code == 1
    assert "no historian database" in r.output
    r = runner.invoke(app, ["aas", "export", str(EXAMPLE), "--out", str(tmp_path / "x.xml")])
    assert r.exit_code == 1
    assert ".json or .aasx" in r.output
    (tmp_path / "bad.json").write_text(
        '{"assetAdministrationShells": [{"id": 1}]}', encoding="utf-8"
    )
    r = runner.invoke(
        app, ["aas", "import", str(tmp_path / "bad.json"), "--out", str(tmp_path / "f.yaml")]
    )
    assert r.exit_code == 1
    assert "not a valid AAS environment" in r.output
    assert not (tmp_path / "f.yaml").exists()

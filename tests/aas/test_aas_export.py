"""AAS export of the example factory: valid for BaSyx's strict readers and for aas-core3.0
(an independent implementation of the metamodel's constraints), stable, round-tripping."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aas_core3.jsonization as aas_json
import aas_core3.verification as aas_verification
import numpy as np
import pytest
import yaml
from basyx.aas import model
from basyx.aas.adapter import aasx

from shopfloor.aas import (
    ASSET_PATH_KEY,
    AasError,
    AasExporter,
    AasOptions,
    environment_dict,
    environment_json,
    import_environment,
    latest_values,
    read_environment,
    write_environment,
)
from shopfloor.edge.batch import Quality, ReadingBatch
from shopfloor.historian import open_historian
from shopfloor.model import Factory, load_factory, parse_factory
from shopfloor.runtime import signal_infos

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "acme-munich.yaml"
PRESS = "acme/munich/body-shop/line-1/cell-1/press-7"
BASE = "https://acme.example/ids"
T = datetime(2025, 3, 3, 8, 30, 15, 250_000, tzinfo=UTC)


@pytest.fixture(scope="module")
def factory() -> Factory:
    return load_factory(EXAMPLE)


@pytest.fixture(scope="module")
def first(factory: Factory) -> model.DictIdentifiableStore[model.Identifiable]:
    return AasExporter(factory, AasOptions(id_base=BASE)).environment()


@pytest.fixture(scope="module")
def exported(first: model.DictIdentifiableStore[model.Identifiable]) -> str:
    return environment_json(first)


@pytest.fixture(scope="module")
def files(
    first: model.DictIdentifiableStore[model.Identifiable], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The export written as JSON and as AASX."""
    tmp = tmp_path_factory.mktemp("aas")
    out = {}
    for suffix in (".json", ".aasx"):
        out[suffix] = tmp / f"env{suffix}"
        write_environment(first, out[suffix])
    return out


@pytest.fixture(scope="module")
def read_back(files: dict[str, Path]) -> dict[str, model.DictIdentifiableStore[model.Identifiable]]:
    """Both files read again with the SDK's strict readers."""
    return {suffix: read_environment(path) for suffix, path in files.items()}


def _find(elements: list[dict[str, Any]], id_short: str) -> dict[str, Any]:
    for e in elements:
        if e.get("idShort") == id_short:
            return e
    raise AssertionError(f"no {id_short!r} among {[e.get('idShort') for e in elements]}")


def _submodel(doc: dict[str, Any], path: str, kind: str) -> dict[str, Any]:
    wanted = f"{BASE}/submodels/{path}/{kind}"
    return next(sm for sm in doc["submodels"] if sm["id"] == wanted)


def _semantic(element: dict[str, Any]) -> str:
    return str(element["semanticId"]["keys"][-1]["value"])


def test_one_shell_per_equipment_with_four_submodels(factory: Factory, exported: str) -> None:
    doc = json.loads(exported)
    equipment = [a.path for a in factory.equipment()]
    shells = doc["assetAdministrationShells"]
    assert [s["assetInformation"]["specificAssetIds"][0]["value"] for s in shells] == equipment
    assert len(doc["submodels"]) == 4 * len(equipment)
    shell = next(s for s in shells if s["id"] == f"{BASE}/aas/{PRESS}")
    info = shell["assetInformation"]
    assert info["globalAssetId"] == f"{BASE}/assets/{PRESS}"
    assert info["assetKind"] == "Instance"
    assert info["assetType"] == "press"
    assert info["specificAssetIds"][0]["name"] == ASSET_PATH_KEY
    assert shell["idShort"] == "press_7"  # AAS 3.0.0 idShorts have no hyphen
    assert shell["displayName"] == [{"language": "en", "text": "Press 7"}]
    assert [r["keys"][0]["value"] for r in shell["submodels"]] == sorted(
        f"{BASE}/submodels/{PRESS}/{k}"
        for k in ("Nameplate", "TechnicalData", "OperationalData", "TimeSeries")
    )


def test_nameplate_and_technical_data_carry_the_model(factory: Factory, exported: str) -> None:
    doc = json.loads(exported)
    nameplate = _submodel(doc, PRESS, "Nameplate")
    assert _semantic(nameplate) == "https://admin-shell.io/zvei/nameplate/2/0/Nameplate"
    maker = _find(nameplate["submodelElements"], "ManufacturerName")
    assert maker["modelType"] == "MultiLanguageProperty"
    assert _semantic(maker) == "0173-1#02-AAO677#002"
    assert maker["value"] == [{"language": "en", "text": "Schuler"}]

    technical = _submodel(doc, PRESS, "TechnicalData")
    assert _semantic(technical) == "https://admin-shell.io/ZVEI/TechnicalData/Submodel/1/2"
    general = _find(technical["submodelElements"], "GeneralInformation")
    designation = _find(general["value"], "ManufacturerProductDesignation")
    assert designation["value"][0]["text"] == "Servo press"
    props = _find(technical["submodelElements"], "TechnicalProperties")
    signals = _find(props["value"], "Signals")["value"]
    expected = [s for s in factory.signals() if s.asset_path == PRESS]
    assert [s["idShort"] for s in signals] == [s.name for s in expected]
    temperature = _find(signals, "temperature")
    fields = {e["idShort"]: e for e in temperature["value"]}
    assert fields["DataType"]["value"] == "float"
    assert fields["Kind"]["value"] == "measurement"
    assert fields["Unit"]["value"] == "CEL"
    assert (fields["Limits"]["min"], fields["Limits"]["max"]) == ("10.0", "70.0")
    assert temperature["description"] == [{"language": "en", "text": "Hydraulic oil temperature"}]
    oee = {e["idShort"]: e for e in _find(signals, "oee")["value"]}
    assert oee["Derived"]["value"] == "true"
    attributes = {e["idShort"]: e for e in _find(props["value"], "Attributes")["value"]}
    assert attributes["ideal_cycle_time_s"] == {
        **attributes["ideal_cycle_time_s"],
        "valueType": "xs:double",
        "value": "3.5",  # the equipment's own value wins over the type's 4.0
    }
    assert attributes["max_force_kn"]["valueType"] == "xs:long"
    assert "manufacturer" not in attributes  # it is on the nameplate
    states = _find(props["value"], "StateMap")
    pairs = {
        _find(m["value"], "RawState")["value"]: _find(m["value"], "StandardState")["value"]
        for m in states["value"]
    }
    assert pairs == factory.state_map(PRESS)


def test_operational_data_and_time_series_without_values(exported: str) -> None:
    doc = json.loads(exported)
    operational = _submodel(doc, PRESS, "OperationalData")
    temperature = _find(operational["submodelElements"], "temperature")
    assert temperature["category"] == "VARIABLE"
    assert temperature["valueType"] == "xs:double"
    assert "value" not in temperature
    assert "qualifiers" not in temperature
    iec = temperature["embeddedDataSpecifications"][0]["dataSpecificationContent"]
    assert iec["unit"] == "°C"
    assert iec["dataType"] == "REAL_MEASURE"
    series = _submodel(doc, PRESS, "TimeSeries")
    assert _semantic(series) == "https://admin-shell.io/idta/TimeSeries/1/1"
    record = _find(_find(series["submodelElements"], "Metadata")["value"], "Record")
    assert _semantic(_find(record["value"], "Time")) == (
        "https://admin-shell.io/idta/TimeSeries/UtcTime/1/1"
    )
    segments = _find(series["submodelElements"], "Segments")["value"]
    assert all(
        _semantic(s) == "https://admin-shell.io/idta/TimeSeries/Segments/LinkedSegment/1/1"
        for s in segments
    )
    by_name = {_find(s["value"], "Name")["value"][0]["text"]: s for s in segments}
    endpoint = _find(by_name["temperature"]["value"], "Endpoint")
    assert endpoint["value"] == f"http://127.0.0.1:8080/api/v1/history/{PRESS}/temperature"
    assert _find(by_name["temperature"]["value"], "Query")["value"] == "start=-1h&end=now"


def test_basyx_strict_readers_accept_json_and_aasx(
    exported: str, files: dict[str, Path], read_back: dict[str, Any]
) -> None:
    """read_environment uses the SDK's non-failsafe readers; both files give the export."""
    with aasx.AASXReader(files[".aasx"], failsafe=False) as reader:
        assert reader.get_core_properties().creator == "shopfloor"
        names = {name for name, _ in reader.reader.list_parts()}
    assert "/aasx/data.json" in names
    assert environment_json(read_back[".json"]) == exported
    assert environment_json(read_back[".aasx"]) == exported


def test_aas_core3_verifies_every_constraint(exported: str) -> None:
    env = aas_json.environment_from_jsonable(json.loads(exported))
    errors = [f"{e.path}: {e.cause}" for e in aas_verification.verify(env)]
    assert errors == []


def test_aas_core3_finds_what_a_broken_export_breaks(exported: str) -> None:
    """The verifier is not vacuous: a hyphen in an idShort and a bad double are found."""
    doc = json.loads(exported)
    doc["assetAdministrationShells"][0]["idShort"] = "press-7"
    sm = _submodel(doc, PRESS, "TechnicalData")
    limits = _find(
        _find(_find(sm["submodelElements"], "TechnicalProperties")["value"], "Signals")["value"],
        "temperature",
    )
    _find(limits["value"], "Limits")["min"] = "ten"
    env = aas_json.environment_from_jsonable(doc)
    causes = [f"{e.path}: {e.cause}" for e in aas_verification.verify(env)]
    assert any(".id_short" in c for c in causes)
    assert any("Min must be consistent with the value type" in c for c in causes)


SMALL = """\
types:
  - id: press
    signals:
      - {name: temperature, data_type: float, unit: CEL, limits: {low: 10, high: 70}}
      - {name: good_count, data_type: int, unit: H87, kind: counter}
    attributes: {manufacturer: Schuler, ideal_cycle_time_s: 4.0}
    states: {0: offline, 2: running}
connections: [{name: c, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:1"}]
enterprise:
  id: acme
  sites: [{id: s, areas: [{id: a, lines: [{id: l, equipment: [
    {id: p1, type: press, connection: c, bindings: {temperature: t1, good_count: g1}},
    {id: p2, type: press, connection: c, bindings: {temperature: t2, good_count: g2}}]}]}]}]
"""


def test_json_is_the_same_in_every_process(tmp_path: Path) -> None:
    """Sets in the SDK (a shell's submodel references) do not leak their hash order."""
    script = (
        "import sys\n"
        "from shopfloor.aas import AasExporter, environment_json\n"
        "from shopfloor.model import parse_factory\n"
        "sys.stdout.write(environment_json(AasExporter(parse_factory(sys.stdin.read()))"
        ".environment()))\n"
    )
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=SMALL,
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        outs.append(done.stdout)
    assert outs[0] == outs[1] == environment_json(AasExporter(parse_factory(SMALL)).environment())


@pytest.mark.parametrize("suffix", [".json", ".aasx"])
def test_export_import_export_is_stable(
    factory: Factory, exported: str, read_back: dict[str, Any], tmp_path: Path, suffix: str
) -> None:
    result = import_environment(read_back[suffix])
    fragment_file = tmp_path / "fragment.yaml"
    fragment_file.write_text(result.yaml(), encoding="utf-8")
    again = load_factory(fragment_file)
    second = AasExporter(again, AasOptions(id_base=BASE)).environment()
    assert environment_json(second) == exported
    # and the imported model is the example's, as far as an AAS carries it
    assert [a.path for a in again.equipment()] == [a.path for a in factory.equipment()]
    for path in (a.path for a in factory.equipment()):
        assert again.attributes(path) == factory.attributes(path)
        assert again.state_map(path) == factory.state_map(path)
    fields = (
        "path",
        "data_type",
        "unit",
        "kind",
        "description",
        "semantic_id",
        "low",
        "high",
        "derived",
    )
    assert [tuple(getattr(s, f) for f in fields) for s in again.signals()] == [
        tuple(getattr(s, f) for f in fields) for s in factory.signals()
    ]
    assert result.notes == []


def test_names_that_are_no_idshorts_survive(tmp_path: Path) -> None:
    text = """\
units: {STK: {name: strokes per minute, symbol: strokes/min}, mm: {name: a code like a symbol}}
types:
  - id: 2nd-stage
    signals:
      - {name: 1st.temp, data_type: float, unit: STK, semantic_id: "0173-1#02-AAV232#002"}
      - {name: recipe, data_type: json, kind: event}
      - {name: gap, data_type: float, unit: mm}
    attributes: {"rated-power": 7, "tags": [a, b], "vendor data": {x: 1}, serial_number: S-1}
connections: [{name: c, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:1"}]
enterprise:
  id: e
  sites: [{id: s, areas: [{id: a, lines: [{id: l, equipment: [
    {id: 9-x, type: 2nd-stage, connection: c, bindings: {1st.temp: t, recipe: r, gap: g}}]}]}]}]
"""
    factory = parse_factory(text)
    env = AasExporter(factory).environment()
    doc = environment_dict(env)
    signals = _find(
        _find(_submodel_any(doc, "TechnicalData")["submodelElements"], "TechnicalProperties")[
            "value"
        ],
        "Signals",
    )["value"]
    assert signals[0]["idShort"] == "x1st_temp"
    assert signals[0]["qualifiers"][0]["value"] == "1st.temp"
    errors = list(aas_verification.verify(aas_json.environment_from_jsonable(doc)))
    assert errors == []
    write_environment(env, tmp_path / "x.aasx")
    result = import_environment(read_environment(tmp_path / "x.aasx"))
    back = parse_factory(yaml.safe_load(result.yaml()))
    assert back.attributes("e/s/a/l/9-x") == factory.attributes("e/s/a/l/9-x")
    assert result.fragment["units"] == {
        "STK": {"name": "STK", "symbol": "strokes/min"},
        "mm": {"name": "mm", "symbol": "mm"},  # a code of the file, not the symbol of MMT
    }
    assert [s.name for s in back.signals()] == ["1st.temp", "recipe", "gap"]
    assert environment_json(AasExporter(back).environment()) == environment_json(env)


def _submodel_any(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(sm for sm in doc["submodels"] if sm["idShort"] == kind)


async def _filled(factory: Factory, db: str) -> None:
    async with open_historian(db) as h:
        ids = await h.register_signals(signal_infos(factory))
        t_us = int(T.timestamp() * 1_000_000)
        await h.append(
            ReadingBatch.concat(
                [
                    ReadingBatch.from_columns(
                        np.array([ids[f"{PRESS}/temperature"]] * 2),
                        np.array([t_us - 1_000_000, t_us]),
                        np.array([40.0, 41.25]),
                    ),
                    ReadingBatch.from_columns(
                        np.array([ids[f"{PRESS}/good_count"]]), np.array([t_us]), np.array([1234])
                    ),
                    ReadingBatch.from_columns(
                        np.array([ids[f"{PRESS}/hydraulic_pressure"]]),
                        np.array([t_us]),
                        np.array([np.nan]),
                        quality=Quality.BAD_SENSOR_FAILURE,
                    ),
                ]
            )
        )


def test_latest_values_fill_operational_data(factory: Factory, tmp_path: Path) -> None:
    db = f"duckdb:{tmp_path / 'h.duckdb'}"
    asyncio.run(_filled(factory, db))

    async def latest() -> dict[str, Any]:
        async with open_historian(db) as h:
            return await latest_values(h, [s.path for s in factory.signals()])

    values = asyncio.run(latest())
    assert set(values) == {
        f"{PRESS}/{n}" for n in ("temperature", "good_count", "hydraulic_pressure")
    }
    exporter = AasExporter(factory, AasOptions(id_base=BASE, api_url="https://sf.example:8443/"))
    env = exporter.environment(values, paths=[PRESS])
    doc = environment_dict(env)
    operational = _submodel(doc, PRESS, "OperationalData")["submodelElements"]
    temperature = _find(operational, "temperature")
    assert temperature["value"] == "41.25"
    qualifiers = {q["type"]: q for q in temperature["qualifiers"]}
    assert qualifiers["Timestamp"]["value"] == "2025-03-03T08:30:15.250000+00:00"
    assert qualifiers["Timestamp"]["kind"] == "ValueQualifier"
    assert qualifiers["Quality"]["value"] == "good"
    assert _find(operational, "good_count")["value"] == "1234"
    pressure = _find(operational, "hydraulic_pressure")
    assert "value" not in pressure  # NaN has no xs:double value here
    assert {q["type"]: q["value"] for q in pressure["qualifiers"]}["Quality"] == "bad"
    series = _submodel(doc, PRESS, "TimeSeries")
    segment = next(
        s
        for s in _find(series["submodelElements"], "Segments")["value"]
        if _find(s["value"], "Name")["value"][0]["text"] == "temperature"
    )
    assert _find(segment["value"], "LastUpdate")["value"] == "2025-03-03T08:30:15.250000+00:00"
    assert _find(segment["value"], "Endpoint")["value"] == (
        f"https://sf.example:8443/api/v1/history/{PRESS}/temperature"
    )
    assert list(aas_verification.verify(aas_json.environment_from_jsonable(doc))) == []
    # the values do not disturb the round trip
    write_environment(env, tmp_path / "live.aasx")
    back = load_factory_from(import_environment(read_environment(tmp_path / "live.aasx")).yaml())
    assert environment_json(
        AasExporter(back, AasOptions(id_base=BASE, api_url="https://sf.example:8443")).environment(
            values
        )
    ) == environment_json(env)


def load_factory_from(text: str) -> Factory:
    return parse_factory(yaml.safe_load(text))


def test_bad_files_are_clear_errors(tmp_path: Path, exported: str) -> None:
    broken = json.loads(exported)
    del broken["submodels"][0]["id"]
    (tmp_path / "broken.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(AasError, match=r"broken\.json: not a valid AAS environment"):
        read_environment(tmp_path / "broken.json")
    (tmp_path / "junk.aasx").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(AasError, match=r"junk\.aasx"):
        read_environment(tmp_path / "junk.aasx")
    with pytest.raises(AasError, match="cannot read"):
        read_environment(tmp_path / "missing.json")
    with pytest.raises(AasError, match=r"\.json or \.aasx"):
        write_environment(read_environment_or_empty(), tmp_path / "x.xml")


def read_environment_or_empty() -> model.DictIdentifiableStore[model.Identifiable]:
    return model.DictIdentifiableStore()

"""Importing shells that shopfloor did not make: written by aas-core3.0 and by BaSyx itself."""

from __future__ import annotations

import json
from pathlib import Path

import aas_core3.jsonization as aas_json
import aas_core3.types as t
import aas_core3.verification as aas_verification
import pytest
import yaml
from basyx.aas import model
from basyx.aas.adapter import aasx
from basyx.aas.examples.data import example_aas

from shopfloor.aas import (
    AasError,
    AasExporter,
    ImportOptions,
    import_environment,
    read_environment,
)
from shopfloor.model import parse_factory

IEC61360 = "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIEC61360/3/0"


def _ext(value: str) -> t.Reference:
    return t.Reference(
        t.ReferenceTypes.EXTERNAL_REFERENCE, [t.Key(t.KeyTypes.GLOBAL_REFERENCE, value)]
    )


def _unit(unit: str, name: str) -> list[t.EmbeddedDataSpecification]:
    return [
        t.EmbeddedDataSpecification(
            _ext(IEC61360),
            t.DataSpecificationIEC61360(
                [t.LangStringPreferredNameTypeIEC61360("en", name)],
                unit=unit,
                definition=[t.LangStringDefinitionTypeIEC61360("en", f"The {name}.")],
            ),
        )
    ]


def _variable(id_short: str, value_type: t.DataTypeDefXSD, value: str, **kw: object) -> t.Property:
    return t.Property(value_type, id_short=id_short, value=value, category="VARIABLE", **kw)  # type: ignore[arg-type]


def _meter(
    n: int, *, serial: str, extra: bool = False
) -> tuple[t.AssetAdministrationShell, list[t.Submodel]]:
    """A vendor's flow meter shell: a Digital Nameplate V2 and live data."""
    base = f"https://vendor.example/meters/{n}"
    nameplate = t.Submodel(
        f"{base}/nameplate",
        id_short="Nameplate",
        semantic_id=_ext("https://admin-shell.io/zvei/nameplate/2/0/Nameplate"),
        submodel_elements=[
            t.MultiLanguageProperty(
                id_short="Maker",  # found by its IRDI, not by its idShort
                semantic_id=_ext("0173-1#02-AAO677#002"),
                value=[
                    t.LangStringTextType("de", "Endress"),
                    t.LangStringTextType("en", "Endress+Hauser"),
                ],
            ),
            t.Property(
                t.DataTypeDefXSD.STRING,
                id_short="SerialNumber",
                semantic_id=_ext("0173-1#02-AAM556#002"),
                value=serial,
            ),
        ],
    )
    elements: list[t.ISubmodelElement] = [
        _variable(
            "FlowRate",
            t.DataTypeDefXSD.DOUBLE,
            "12.5",
            semantic_id=_ext("0173-1#02-AAB717#005"),
            embedded_data_specifications=_unit("m³/h", "flow rate"),
            description=[t.LangStringTextType("en", "Volume flow")],
        ),
        # the unit is in the concept description of its semantic id
        _variable(
            "Temperature", t.DataTypeDefXSD.FLOAT, "21.5", semantic_id=_ext("urn:vendor:temp")
        ),
        _variable("Totalizer", t.DataTypeDefXSD.UNSIGNED_INT, "100"),
        _variable("Running", t.DataTypeDefXSD.BOOLEAN, "true"),
        _variable("Status", t.DataTypeDefXSD.STRING, "OK"),
        t.Property(t.DataTypeDefXSD.STRING, id_short="Firmware", category="CONSTANT", value="1.2"),
        t.SubmodelElementCollection(
            id_short="Motor",
            value=[
                _variable(
                    "Speed",
                    t.DataTypeDefXSD.DOUBLE,
                    "1450",
                    embedded_data_specifications=_unit("1/min", "speed"),
                )
            ],
        ),
    ]
    if extra:
        elements.append(
            _variable(
                "Pressure",
                t.DataTypeDefXSD.DOUBLE,
                "2",
                embedded_data_specifications=_unit("bar", "p"),
            )
        )
    live = t.Submodel(f"{base}/live", id_short="Live", submodel_elements=elements)
    shell = t.AssetAdministrationShell(
        f"{base}/aas",
        t.AssetInformation(
            t.AssetKind.INSTANCE,
            global_asset_id=f"{base}/asset",
            asset_type="https://vendor.example/types/FlowMeter-X",
        ),
        id_short=f"meter_{n}",
        display_name=[t.LangStringNameType("en", f"Flow meter {n}")],
        submodels=[
            t.Reference(t.ReferenceTypes.MODEL_REFERENCE, [t.Key(t.KeyTypes.SUBMODEL, sm.id)])
            for sm in (nameplate, live)
        ],
    )
    return shell, [nameplate, live]


@pytest.fixture
def vendor_file(tmp_path: Path) -> Path:
    shells, submodels = [], []
    for n, serial, extra in ((1, "S-001", False), (2, "S-002", False), (3, "S-003", True)):
        shell, sms = _meter(n, serial=serial, extra=extra)
        shells.append(shell)
        submodels += sms
    concept = t.ConceptDescription(
        "urn:vendor:temp",
        id_short="Temperature",
        embedded_data_specifications=_unit("°C", "temperature"),
    )
    env = t.Environment(shells, submodels, [concept])
    assert list(aas_verification.verify(env)) == []  # the input itself is valid AAS
    path = tmp_path / "vendor.json"
    path.write_text(json.dumps(aas_json.to_jsonable(env), indent=1), encoding="utf-8")
    return path


def test_a_vendors_shells_become_types_equipment_and_signals(vendor_file: Path) -> None:
    result = import_environment(
        read_environment(vendor_file), ImportOptions(line="acme/munich/utilities/water")
    )
    fragment = result.fragment
    factory = parse_factory(yaml.safe_load(result.yaml()))  # validates
    assert [a.path for a in factory.equipment()] == [
        f"acme/munich/utilities/water/meter_{n}" for n in (1, 2, 3)
    ]
    assert [t["id"] for t in fragment["types"]] == ["FlowMeter-X", "FlowMeter-X-2"]
    assert factory.asset("acme/munich/utilities/water/meter_3").type == "FlowMeter-X-2"
    signals = {s["name"]: s for s in fragment["types"][0]["signals"]}
    assert list(signals) == [
        "FlowRate",
        "Temperature",
        "Totalizer",
        "Running",
        "Status",
        "Motor.Speed",
    ]
    assert signals["FlowRate"] == {
        "name": "FlowRate",
        "data_type": "float",
        "unit": "MQH",  # from the symbol m³/h
        "kind": "measurement",
        "description": "Volume flow",
        "semantic_id": "0173-1#02-AAB717#005",
    }
    assert signals["Temperature"]["unit"] == "CEL"  # from the concept description
    assert signals["Totalizer"]["data_type"] == "int"
    assert signals["Running"]["data_type"] == "bool"
    assert signals["Status"]["data_type"] == "string"
    assert signals["Motor.Speed"]["unit"] == "1/min"
    assert fragment["units"] == {"1/min": {"name": "1/min", "symbol": "1/min"}}
    assert {s["name"] for s in fragment["types"][1]["signals"]} == set(signals) | {"Pressure"}
    m1 = "acme/munich/utilities/water/meter_1"
    assert factory.attributes(m1) == {"manufacturer": "Endress+Hauser", "serial_number": "S-001"}
    assert factory.attributes(m1.replace("_1", "_2"))["serial_number"] == "S-002"
    assert factory.asset(m1).name == "Flow meter 1"
    binding = factory.signal(f"{m1}/Motor.Speed").binding
    assert binding is not None
    assert (binding.connection, binding.address) == ("aas", f"{m1}/Motor.Speed")
    assert factory.connections["aas"].protocol == "mqtt"
    assert result.shells == 3
    assert result.signals == 6 + 6 + 7
    # and shopfloor's own export of the imported model is valid AAS again
    env = AasExporter(factory).environment()
    from shopfloor.aas import environment_dict

    doc = environment_dict(env)
    assert list(aas_verification.verify(aas_json.environment_from_jsonable(doc))) == []


def test_basyx_example_package_imports(tmp_path: Path) -> None:
    """The SDK's own example environment, written by the SDK's AASX writer."""
    store = example_aas.create_full_example()
    files = aasx.DictSupplementaryFileContainer()  # type: ignore[no-untyped-call]
    with (Path(example_aas.__file__).parent / "TestFile.pdf").open("rb") as pdf:
        files.add_file("/TestFile.pdf", pdf, "application/pdf")
    with aasx.AASXWriter(tmp_path / "example.aasx", failsafe=False) as writer:
        writer.write_aas("https://example.org/Test_AssetAdministrationShell", store, files)
    env = read_environment(tmp_path / "example.aasx")
    shells = [o for o in env if isinstance(o, model.AssetAdministrationShell)]
    assert len(shells) == 1
    result = import_environment(env, source="example.aasx")
    factory = parse_factory(yaml.safe_load(result.yaml()))
    [eq] = factory.equipment()
    assert eq.path == "aas/site/area/line/TestAssetAdministrationShell"
    assert eq.type == "TestAssetType"  # the last segment of http://example.org/TestAssetType/
    assert factory.signals() == []  # no VARIABLE property in it


def _shell_at(path: str) -> model.AssetAdministrationShell:
    return model.AssetAdministrationShell(
        model.AssetInformation(
            global_asset_id=f"urn:x:{path}",
            specific_asset_id=(model.SpecificAssetId("shopfloorAssetPath", path),),
        ),
        id_=f"urn:aas:{path}",
    )


def test_impossible_trees_are_clear_errors() -> None:
    empty: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore()
    with pytest.raises(AasError, match="no Asset Administration Shell"):
        import_environment(empty)
    two = model.DictIdentifiableStore([_shell_at("a/s/ar/l/x"), _shell_at("b/s/ar/l/y")])
    with pytest.raises(AasError, match=r"several enterprises \(a, b\)"):
        import_environment(two)
    bad = model.DictIdentifiableStore([_shell_at("a/s/l/x")])
    with pytest.raises(AasError, match=r"asset path 'a/s/l/x' is not"):
        import_environment(bad)
    ok = model.DictIdentifiableStore([_shell_at("a/s/ar/l/x")])
    with pytest.raises(AasError, match="is not enterprise/site/area/line"):
        import_environment(ok, ImportOptions(line="a/s"))
    # a foreign shell placed under another enterprise than the shopfloor ones
    mixed = model.DictIdentifiableStore(
        [
            _shell_at("a/s/ar/l/x"),
            model.AssetAdministrationShell(
                model.AssetInformation(global_asset_id="urn:y"), id_="urn:y", id_short="y"
            ),
        ]
    )
    with pytest.raises(AasError, match="several enterprises"):
        import_environment(mixed)
    placed = import_environment(mixed, ImportOptions(line="a/s/ar/imports"))
    assert [
        e["id"]
        for e in placed.fragment["enterprise"]["sites"][0]["areas"][0]["lines"][1]["equipment"]
    ] == ["y"]

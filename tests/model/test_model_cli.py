"""``shopfloor model``: validate, schema, tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopfloor.cli._model import app
from shopfloor.model import FactoryDocument, factory_json_schema
from shopfloor.model._loader import _build
from shopfloor.model._yaml import read_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ACME = str(EXAMPLES / "acme-munich.yaml")
BROKEN = str(EXAMPLES / "broken-factory.yaml")


def test_validate_ok() -> None:
    result = CliRunner().invoke(app, ["validate", ACME])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(
        "valid — 38 assets, 25 equipment, 211 signals, 197 bindings, 5 connections"
    )


def test_validate_broken_reports_all_five() -> None:
    result = CliRunner().invoke(app, ["validate", BROKEN])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    eq = "enterprise.sites[0].areas[0].lines[0].equipment"
    expected = [
        (12, "types[1].signals[0].unit", "bad unit code 'CELSIUS'"),
        (14, "types[2].extends", "cycle in type inheritance: gantry → portal → gantry"),
        (37, f"{eq}[0].bindings", "unbound signal 'good_count'"),
        (41, f"{eq}[1].type", "unknown type 'prss'"),
        (43, f"{eq}[2].id", "duplicate id 'press-1'"),
    ]
    assert len(lines) == len(expected) + 1
    for line, (lineno, path, message) in zip(lines, expected, strict=False):
        file, got_line, _col, rest = line.split(":", 3)
        assert file == BROKEN
        assert int(got_line) == lineno
        assert rest.startswith(f" {path}: ")
        assert message in rest
    assert lines[-1] == f"{BROKEN}: 5 problems"


def test_validate_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1
    assert "file not found" in result.stderr


def test_schema_command_prints_the_schema() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == factory_json_schema()


def test_tree_shows_equipment() -> None:
    result = CliRunner().invoke(app, ["tree", ACME])
    assert result.exit_code == 0, result.output
    for text in ("acme", "munich", "intralogistics", "agv-005", "press-7", "welding-robot",
                 "10 signals"):  # fmt: skip
        assert text in result.stdout
    detailed = CliRunner().invoke(app, ["tree", ACME, "--signals"])
    assert detailed.exit_code == 0
    assert "temperature float CEL measurement" in detailed.stdout
    assert "AGV-001/batteryState.batteryCharge" in detailed.stdout


def test_tree_of_broken_file_fails() -> None:
    result = CliRunner().invoke(app, ["tree", BROKEN])
    assert result.exit_code == 1


def test_json_schema_structure() -> None:
    schema = factory_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["required"] == ["enterprise"]
    defs = schema["$defs"]
    for name in ("AssetType", "Signal", "Equipment", "Site", "Connection", "BindingSpec"):
        assert name in defs
        assert defs[name]["additionalProperties"] is False

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(schema):
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in defs


def test_example_validates_against_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = factory_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    data = read_yaml(Path(ACME).read_text()).data
    # JSON has no integer keys or datetimes: compare what a JSON tool would see
    as_json = json.loads(json.dumps(data, default=str))
    jsonschema.Draft202012Validator(schema).validate(as_json)


def test_example_validates_through_the_pydantic_model() -> None:
    data = read_yaml(Path(ACME).read_text()).data
    document = FactoryDocument.model_validate(data)
    assert document == _build(Path(ACME).read_text(), ACME).document

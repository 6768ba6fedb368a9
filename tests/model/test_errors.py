"""Every kind of mistake is reported with its file, line, column and key path, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.model import FactoryFileError, ModelIssue, load_factory, parse_factory

BASE = """\
types:
  - id: machine
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: temperature, data_type: float, unit: CEL}
    states: {0: offline, 1: running}
connections:
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
enterprise:
  id: acme
  name: Acme
  sites:
    - id: plant
      timezone: Europe/Berlin
      calendar:
        shifts:
          - {name: early, start: "06:00", end: "14:00", days: [mon, tue]}
      areas:
        - id: area
          lines:
            - id: line
              equipment:
                - id: m1
                  type: machine
                  connection: opc
                  bindings:
                    state: "ns=2;s=m1/state"
                    temperature: "ns=2;s=m1/temperature"
"""
EQ = "enterprise.sites[0].areas[0].lines[0].equipment[0]"
SECOND_M1 = """\
                - id: m1
                  type: machine
                  connection: opc
                  bindings: {state: "ns=2;s=x/state", temperature: "ns=2;s=x/temperature"}
"""


def issues_of(text: str) -> list[ModelIssue]:
    with pytest.raises(FactoryFileError) as info:
        parse_factory(text, "f.yaml")
    assert str(info.value) == "\n".join(str(i) for i in info.value.issues)
    return info.value.issues


def one(text: str) -> ModelIssue:
    found = issues_of(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def col(text: str, line: int, token: str) -> int:
    return text.splitlines()[line - 1].index(token) + 1


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def where(issue: ModelIssue) -> tuple[int | None, int | None, str]:
    return issue.line, issue.column, issue.path


def test_base_is_valid() -> None:
    factory = parse_factory(BASE)
    assert [s.path for s in factory.signals()] == [
        "acme/plant/area/line/m1/state",
        "acme/plant/area/line/m1/temperature",
    ]


def test_issue_str() -> None:
    issue = ModelIssue("x.yaml", 42, 7, "a.b", "bad")
    assert str(issue) == "x.yaml:42:7: a.b: bad"
    assert str(ModelIssue("x.yaml", None, None, "", "file not found")) == "x.yaml: file not found"


def test_unknown_type() -> None:
    issue = one(edit("type: machine", "type: machin"))
    assert where(issue) == (24, 19, f"{EQ}.type")
    assert "unknown type 'machin' (known: machine)" in issue.message
    assert str(issue).startswith(f"f.yaml:24:19: {EQ}.type: unknown type")


def test_duplicate_id() -> None:
    issue = one(BASE + SECOND_M1)
    assert where(issue) == (29, 19, "enterprise.sites[0].areas[0].lines[0].equipment[1].id")
    assert "duplicate id 'm1'" in issue.message
    assert "line 23" in issue.message


def test_duplicate_id_across_cells_and_line_equipment() -> None:
    text = edit(
        "              equipment:\n",
        "              cells:\n                - id: m1\n              equipment:\n",
    )
    issue = one(text)
    assert where(issue) == (25, 19, f"{EQ}.id")


def test_bad_unit_code() -> None:
    text = edit("unit: CEL", "unit: CELSIUS")
    issue = one(text)
    assert where(issue) == (5, col(text, 5, "unit"), "types[0].signals[1].unit")
    assert "bad unit code 'CELSIUS'" in issue.message


def test_declared_unit_is_accepted() -> None:
    text = edit("unit: CEL", "unit: XDEG") + "units:\n  XDEG: {name: plant degree, symbol: pd}\n"
    factory = parse_factory(text)
    assert factory.signal("acme/plant/area/line/m1/temperature").unit == "XDEG"


def test_unbound_signal() -> None:
    issue = one(edit('                    temperature: "ns=2;s=m1/temperature"\n', ""))
    assert where(issue) == (26, 19, f"{EQ}.bindings")
    assert issue.message.startswith("unbound signal 'temperature' of type 'machine'")


def test_derived_signal_needs_no_binding() -> None:
    text = edit("unit: CEL}", "unit: CEL, derived: true}")
    text = edit('                    temperature: "ns=2;s=m1/temperature"\n', "", text)
    factory = parse_factory(text)
    sig = factory.signal("acme/plant/area/line/m1/temperature")
    assert sig.derived
    assert sig.binding is None
    assert len(factory.bindings()) == 1


def test_binding_to_unknown_signal() -> None:
    text = BASE + '                    pressure: "ns=2;s=m1/pressure"\n'
    issue = one(text)
    assert where(issue) == (29, 21, f"{EQ}.bindings.pressure")
    assert "binding to unknown signal 'pressure'" in issue.message


def test_unknown_connection() -> None:
    issue = one(edit("connection: opc", "connection: opcx"))
    assert where(issue) == (25, 19, f"{EQ}.connection")
    assert "unknown connection 'opcx' (known: opc)" in issue.message


def test_unknown_connection_in_binding_mapping() -> None:
    text = edit(
        '                    state: "ns=2;s=m1/state"\n',
        "                    state: {connection: mqtt-1, address: m1/state, scale: 0.1}\n",
    )
    issue = one(text)
    assert where(issue) == (27, col(text, 27, "connection"), f"{EQ}.bindings.state.connection")
    assert "unknown connection 'mqtt-1'" in issue.message


def test_cycle_in_templates() -> None:
    text = edit("  - id: machine\n", "  - id: machine\n    extends: base\n")
    text = edit("connections:\n", "  - id: base\n    extends: machine\nconnections:\n", text)
    issue = one(text)
    assert where(issue) == (3, 5, "types[0].extends")
    assert issue.message == "cycle in type inheritance: machine → base → machine"


def test_inheritance_merges_and_overrides() -> None:
    text = edit("  - id: machine\n", "  - id: machine\n    extends: base\n")
    text = edit(
        "connections:\n",
        "  - id: base\n"
        "    signals: [{name: state, data_type: string, kind: state}, {name: extra, "
        "data_type: bool, derived: true}]\n"
        "    attributes: {a: 1, b: 2}\n"
        "    states: {0: idle, 9: setup}\n"
        "connections:\n",
        text,
    )
    text = edit("    states: {0: offline, 1: running}\n", "    states: {0: offline, 1: running}\n"
                "    attributes: {b: 3}\n", text)  # fmt: skip
    text = text.replace(
        "                  connection: opc\n",
        "                  connection: opc\n                  attributes: {a: 5}\n",
    )
    factory = parse_factory(text)
    m1 = "acme/plant/area/line/m1"
    names = [(s.name, s.data_type) for s in factory.signals()]
    assert names == [("state", "int"), ("extra", "bool"), ("temperature", "float")]
    assert factory.state_map(m1) == {"0": "offline", "9": "setup", "1": "running"}
    assert factory.attributes(m1) == {"a": 5, "b": 3}


def test_bad_state_name() -> None:
    text = edit("1: running}", "1: runing}")
    issue = one(text)
    assert where(issue) == (6, col(text, 6, "1:"), "types[0].states[1]")
    assert "bad state name 'runing'" in issue.message


def test_bad_time() -> None:
    text = edit('end: "14:00"', 'end: "14:75"')
    issue = one(text)
    assert where(issue) == (
        17, col(text, 17, "end"), "enterprise.sites[0].calendar.shifts[0].end",
    )  # fmt: skip
    assert "bad time '14:75'" in issue.message


def test_unquoted_times_are_times() -> None:
    # YAML 1.1 would read 14:00 as the base-60 integer 840
    factory = parse_factory(edit('start: "06:00", end: "14:00"', "start: 06:00, end: 14:00"))
    shift = factory.site_of("acme/plant").calendar.shifts[0]
    assert (shift.start, shift.end) == ("06:00", "14:00")


def test_unknown_time_zone() -> None:
    issue = one(edit("Europe/Berlin", "Europe/Berln"))
    assert where(issue) == (14, 7, "enterprise.sites[0].timezone")
    assert issue.message == "unknown time zone 'Europe/Berln'"


def test_naive_downtime_and_unknown_asset() -> None:
    text = edit(
        "      areas:\n",
        "        planned_downtime:\n"
        "          - {name: pm, start: 2025-01-01T06:00:00, end: 2025-01-01T08:00:00+01:00}\n"
        "          - name: pm2\n"
        "            start: 2025-01-01T06:00:00+01:00\n"
        "            end: 2025-01-01T08:00:00+01:00\n"
        "            assets: [acme/plant/area/line, m1, nowhere]\n"
        "      areas:\n",
    )
    found = issues_of(text)
    assert [where(i) for i in found] == [
        (19, col(text, 19, "start"), "enterprise.sites[0].calendar.planned_downtime[0].start"),
        (
            23,
            col(text, 23, "nowhere"),
            "enterprise.sites[0].calendar.planned_downtime[1].assets[2]",
        ),
    ]
    assert "no time zone offset" in found[0].message
    assert "unknown asset 'nowhere'" in found[1].message


def test_duplicate_yaml_key() -> None:
    text = edit("      timezone: Europe/Berlin\n",
                "      timezone: Europe/Berlin\n      timezone: UTC\n")  # fmt: skip
    issue = one(text)
    assert where(issue) == (15, 7, "enterprise.sites[0].timezone")
    assert "duplicate key 'timezone' (first defined on line 14)" in issue.message


def test_yaml_syntax_error() -> None:
    issue = one(edit("  name: Acme\n", "  name: [Acme\n"))
    assert issue.line is not None
    assert issue.line >= 11
    assert issue.column is not None
    assert issue.path == ""
    assert issue.message.startswith("YAML syntax error")


def test_unknown_keys() -> None:
    text = edit("                  type: machine\n",
                "                  type: machine\n                  colour: red\n")  # fmt: skip
    text = "version: 2\n" + text
    found = issues_of(text)
    assert [where(i) for i in found] == [(1, 1, "version"), (26, 19, f"{EQ}.colour")]
    assert found[0].message.startswith("unknown key 'version' (allowed here: enterprise")
    assert found[1].message == "unknown key 'colour'"


def test_missing_key_and_bad_id() -> None:
    text = edit("                  type: machine\n", "")
    text = edit("- id: area", "- id: area/1", text)
    found = issues_of(text)
    assert [where(i) for i in found] == [
        (19, 11, "enterprise.sites[0].areas[0].id"),
        (23, 19, f"{EQ}.type"),
    ]
    assert found[0].message.startswith("bad id 'area/1'")
    assert found[1].message == "missing required key 'type'"


def test_structural_and_semantic_errors_together() -> None:
    text = edit("Europe/Berlin", "Mars/Olympus")  # structural (site)
    text = edit("kind: state}", "kind: status}", text)  # structural (type)
    text = edit("connection: opc", "connection: opcx", text)  # semantic
    text += SECOND_M1.replace("type: machine", "type: robot")  # two semantic
    found = issues_of(text)
    assert [i.line for i in found] == [4, 14, 25, 29, 30]
    messages = " | ".join(i.message for i in found)
    for part in ("bad value 'status'", "unknown time zone", "unknown connection 'opcx'",
                 "duplicate id 'm1'", "unknown type 'robot'"):  # fmt: skip
        assert part in messages


def test_broken_type_does_not_cascade() -> None:
    # the type fails structurally; equipment using it is not told the type is unknown
    issue = one(edit("kind: state}", "kind: status}"))
    assert issue.path == "types[0].signals[0].kind"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FactoryFileError) as info:
        load_factory(tmp_path / "nope.yaml")
    (issue,) = info.value.issues
    assert issue.message == "file not found"
    assert issue.line is None


def test_not_a_mapping() -> None:
    issue = one("- just\n- a list\n")
    assert where(issue) == (1, 1, "")

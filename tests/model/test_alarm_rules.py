"""The ``alarms`` section of the factory file: rules, sinks, and every mistake located."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.model import STANDARD_STATES, FactoryFileError, ModelIssue, load_factory
from shopfloor.model import parse_factory as parse
from shopfloor.model._alarms import _ID_PATTERN, _STATES, alarm_instances, parse_duration
from shopfloor.model._expr import Binary, ExprError, Unary, check_types, parse_expression
from shopfloor.model._jsonschema import factory_json_schema
from shopfloor.model._schema import ID_PATTERN

ACME = Path(__file__).resolve().parents[2] / "examples" / "acme-munich.yaml"

BASE = """\
types:
  - id: machine
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: temperature, data_type: float, unit: CEL}
      - {name: program, data_type: string}
    states: {0: offline, 1: running}
  - id: meter
    signals:
      - {name: power, data_type: float}
connections:
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
enterprise:
  id: acme
  sites:
    - id: plant
      areas:
        - id: area
          lines:
            - id: line
              equipment:
                - {id: m1, type: machine, connection: opc,
                   bindings: {state: m1.s, temperature: m1.t, program: m1.p}}
                - {id: e1, type: meter, connection: opc, bindings: {power: e1.p}}
alarms:
"""


def issues_of(alarms: str) -> list[ModelIssue]:
    with pytest.raises(FactoryFileError) as info:
        parse(BASE + alarms, "f.yaml")
    return info.value.issues


def one(alarms: str) -> ModelIssue:
    found = issues_of(alarms)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def pos(alarms: str, token: str, occurrence: int = 0) -> tuple[int, int]:
    """Line and column of ``token`` in the whole file (``BASE + alarms``): issues point at the
    key whose value is wrong."""
    lines = (BASE + alarms).splitlines()
    seen = 0
    for n, line in enumerate(lines, 1):
        if token in line:
            if seen == occurrence:
                return n, line.index(token) + 1
            seen += 1
    raise AssertionError(token)


def test_constants_match_the_schema() -> None:
    assert _ID_PATTERN == ID_PATTERN
    assert STANDARD_STATES == _STATES


def test_example_rules_are_instantiated_per_equipment() -> None:
    factory = load_factory(ACME)
    instances = {i.alarm_id: i for i in alarm_instances(factory)}
    press = "acme/munich/body-shop/line-1/cell-1/press-7"
    hi = instances[f"{press}/hydraulic_pressure_high"]
    assert (hi.severity, hi.rule.activation_delay) == (750, 5.0)
    assert hi.primary is not None
    assert hi.primary.path == f"{press}/hydraulic_pressure"
    assert hi.message(263.4) == "Press 7: hydraulic_pressure 263.4 bar above 250 bar"
    # `type: machine` reaches every type extending it (presses, robots, the legacy press)
    stops = sorted(a for a in instances if a.endswith("/long_unplanned_stop"))
    machines = [
        e.path for e in factory.equipment() if e.type in ("press", "welding-robot", "legacy-press")
    ]
    assert stops == sorted(f"{m}/long_unplanned_stop" for m in machines)
    stop = instances[f"{press}/long_unplanned_stop"]
    assert stop.state_maps["state"]["6"] == "unplanned_stop"
    jam = instances["acme/munich/body-shop/line-1/conveyor_stalled"]
    assert sorted(jam.signals) == ["conveyor-1/speed", "conveyor-1/state"]
    assert jam.primary is None
    battery = instances["acme/munich/assembly/intralogistics/agv-001/battery_low"]
    assert not battery.rule.ack_required


def test_json_schema_has_the_section() -> None:
    schema = factory_json_schema()
    assert schema["properties"]["alarms"]["$ref"] == "#/$defs/AlarmSection"
    rule = schema["$defs"]["AlarmRule"]
    assert rule["additionalProperties"] is False
    for key in ("threshold", "rate", "state", "expression", "on_delay", "severity"):
        assert key in rule["properties"]
    assert set(schema["$defs"]["StateCondition"]["properties"]) == {"signal", "in", "for"}


def test_a_valid_section() -> None:
    alarms = """\
  notify:
    - {name: hook, webhook: "https://example.com/alarms", min_severity: high}
    - {name: uns, mqtt: "mqtts://broker:8883", topic: plant/alarms, qos: 2}
  rules:
    - {id: hot, type: machine, threshold: {signal: temperature, above: 80, deadband: 5},
       on_delay: 10s, off_delay: 1min, severity: 900}
    - {id: heating, type: machine, rate: {signal: temperature, above: 2, per: min, window: 5min}}
    - {id: stop, type: machine, state: {in: [offline], for: 1h}}
    - {id: combo, asset: acme/plant/area/line, severity: low,
       expression: "`m1/state` != 'running' and `e1/power` > 10 or `m1/program` == 'idle'"}
    - {id: own, asset: acme/plant/area/line/m1, expression: "abs(temperature - 50) > 30"}
"""
    factory = parse(BASE + alarms)
    rules = factory.document.alarms.rules
    assert [r.condition_kind for r in rules] == [
        "threshold", "rate", "state", "expression", "expression",
    ]  # fmt: skip
    assert (rules[0].on_delay, rules[0].off_delay, rules[0].severity) == (10.0, 60.0, 900)
    assert rules[1].rate is not None
    assert (rules[1].rate.window, rules[1].rate.per_s) == (300.0, 60.0)
    assert rules[2].activation_delay == 3600.0
    assert rules[3].severity == 250
    ids = [i.alarm_id for i in alarm_instances(factory)]
    assert ids == [
        "acme/plant/area/line/m1/hot",
        "acme/plant/area/line/m1/heating",
        "acme/plant/area/line/m1/stop",
        "acme/plant/area/line/combo",
        "acme/plant/area/line/m1/own",
    ]


@pytest.mark.parametrize(
    ("rule", "token", "path", "message"),
    [
        (
            "{id: a, type: machine, threshold: {signal: temp, above: 1}}",
            "signal: temp",
            "alarms.rules[0].threshold.signal",
            "unknown signal 'temp' (type 'machine' has: program, state, temperature)",
        ),
        (
            "{id: a, type: machine, threshold: {signal: program, above: 1}}",
            "signal: program",
            "alarms.rules[0].threshold.signal",
            "signal 'program' is a string: this condition needs a number",
        ),
        (
            "{id: a, type: robot, threshold: {signal: temperature, above: 1}}",
            "type: robot",
            "alarms.rules[0].type",
            "unknown type 'robot' (known: machine, meter)",
        ),
        (
            "{id: a, asset: acme/plant/area/line/m9, expression: 'temperature > 1'}",
            "asset: acme",
            "alarms.rules[0].asset",
            "unknown asset 'acme/plant/area/line/m9' (give a full path)",
        ),
        (
            "{id: a, type: meter, state: {in: running}}",
            "state: {in",
            "alarms.rules[0].state",
            "unknown signal 'state' (type 'meter' has: power)",
        ),
        (
            "{id: a, type: machine, state: {signal: temperature, in: running}}",
            "signal: temperature",
            "alarms.rules[0].state.signal",
            "signal 'temperature' is not a machine-state signal (the equipment's 'state' "
            "signal, with a state map in its type): use an expression for other signals",
        ),
        (
            "{id: a, type: machine, state: {in: [runing]}}",
            "runing",
            "alarms.rules[0].state.in[0]",
            "bad value 'runing' (expected 'running', 'idle', 'starved', 'blocked', "
            "'planned_stop', 'unplanned_stop', 'setup' or 'offline')",
        ),
        (
            "{id: a, type: machine, state: {in: running, for: 5 minutes}}",
            "for: 5 minutes",
            "alarms.rules[0].state.for",
            "bad duration '5 minutes': give seconds or e.g. '250ms', '5s', '5min', '2h'",
        ),
        (
            "{id: a, type: machine, state: {in: running, for: 5s}, on_delay: 2s}",
            "{id: a",
            "alarms.rules[0]",
            "give the state's 'for' or the rule's 'on_delay', not both",
        ),
        (
            "{id: a, type: machine}",
            "{id: a",
            "alarms.rules[0]",
            "give exactly one condition: threshold, rate, state or expression (got none)",
        ),
        (
            "{id: a, type: machine, asset: acme/plant, expression: 'temperature > 1'}",
            "{id: a",
            "alarms.rules[0]",
            "give exactly one scope: 'type' (every equipment of it) or 'asset'",
        ),
        (
            "{id: a, type: machine, threshold: {signal: temperature, above: 1, below: 0}}",
            "threshold: {",
            "alarms.rules[0].threshold",
            "give exactly one of 'above' and 'below'",
        ),
        (
            "{id: a, type: machine, severity: urgent, expression: 'temperature > 1'}",
            "severity: urgent",
            "alarms.rules[0].severity",
            "bad severity 'urgent': give low, medium, high, critical or a number from 1 to 1000",
        ),
        (
            "{id: a, type: machine, rate: {signal: temperature, above: 1, window: 0}}",
            "rate: {",
            "alarms.rules[0].rate",
            "'window' must be longer than zero",
        ),
        (
            "{id: a, type: machine, message: '{value.real} {x}', expression: 'temperature > 1'}",
            "message:",
            "alarms.rules[0].message",
            "unknown placeholder {value.real} in the message (known: asset, asset_name, rule, "
            "signal, value, limit, unit, description)",
        ),
        (
            "{id: a, type: machine, expression: 'temperature > > 1'}",
            "expression:",
            "alarms.rules[0].expression",
            "bad expression: expected a value, found '>' (at column 15)",
        ),
        (
            "{id: a, type: machine, expression: \"state == 'runing'\"}",
            "expression:",
            "alarms.rules[0].expression",
            "bad expression: unknown state 'runing' (standard states: running, idle, starved, "
            "blocked, planned_stop, unplanned_stop, setup, offline) (at column 10)",
        ),
        (
            "{id: a, type: machine, expression: 'program > 1'}",
            "expression:",
            "alarms.rules[0].expression",
            "bad expression: cannot compare a string with a number (at column 9)",
        ),
        (
            "{id: a, type: machine, expression: 'temperature + 1'}",
            "expression:",
            "alarms.rules[0].expression",
            "bad expression: it gives a number, an alarm needs true/false",
        ),
        (
            "{id: a, asset: acme/plant/area/line, expression: '`m1/temp` > 1'}",
            "expression:",
            "alarms.rules[0].expression",
            "bad expression: unknown signal 'm1/temp': equipment 'acme/plant/area/line/m1' "
            "(type 'machine') has program, state, temperature (at column 1)",
        ),
        (
            "{id: a, asset: acme/plant/area/line, expression: 'temperature > 1'}",
            "expression:",
            "alarms.rules[0].expression",
            "bad expression: unknown signal 'temperature': 'acme/plant/area/line' is not an "
            "equipment (at column 1)",
        ),
        (
            "{id: a, type: machine, expression: '1 < 2'}",
            "expression:",
            "alarms.rules[0].expression",
            "bad expression: it reads no signal",
        ),
    ],
)
def test_rule_mistakes_are_located(rule: str, token: str, path: str, message: str) -> None:
    alarms = f"  rules:\n    - {rule}\n"
    issue = one(alarms)
    assert (issue.file, issue.path, issue.message) == ("f.yaml", path, message)
    assert (issue.line, issue.column) == pos(alarms, token)


def test_every_mistake_at_once() -> None:
    alarms = """\
  notify:
    - {name: a, webhook: "ftp://example.com"}
    - {name: b, mqtt: "mqtt://broker", headers: {x: y}}
    - {name: b, mqtt: "mqtt://broker", topic: "plant/#"}
  rules:
    - {id: r, type: machine, threshold: {signal: temperature, above: 1}}
    - {id: r, type: machine, threshold: {signal: nope, above: 1}}
"""
    found = [(i.line, i.path, i.message) for i in issues_of(alarms)]
    assert found == [
        (
            pos(alarms, "{name: a")[0],
            "alarms.notify[0]",
            "webhook 'ftp://example.com' is not an http:// or https:// URL",
        ),
        (pos(alarms, "{name: b")[0], "alarms.notify[1]", "'headers': not for an mqtt sink"),
        (
            pos(alarms, "{name: b", 1)[0],
            "alarms.notify[2]",
            "bad topic 'plant/#': no wildcards, no leading '/'",
        ),
        (pos(alarms, "{id: r", 1)[0], "alarms.rules[1].id", "duplicate alarm rule id 'r'"),
        (
            pos(alarms, "{id: r", 1)[0],
            "alarms.rules[1].threshold.signal",
            "unknown signal 'nope' (type 'machine' has: program, state, temperature)",
        ),
    ]


def test_section_shape_mistakes() -> None:
    issue = one("  rules: {id: a}\n")
    assert (issue.path, issue.message) == ("alarms.rules", "input should be a valid list")
    issue = one("  rule: []\n")
    assert (issue.path, issue.message) == ("alarms.rule", "unknown key 'rule'")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(5, 5.0), (2.5, 2.5), ("250ms", 0.25), ("5s", 5.0), ("5 min", 300.0), ("2h", 7200.0),
     ("1.5m", 90.0), ("10", 10.0)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-1", -1, True, "s", ""])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_expression_language_is_not_python() -> None:
    for text, column, reason in [
        ("__import__('os')", 1, "unknown function '__import__' (known: abs, min, max)"),
        ("temperature.real > 1", 12, "unexpected character '.'"),
        ("temperature ** 2 > 1", 14, "expected a value, found '*'"),
        ("[1] == [1]", 1, "unexpected character '['"),
        ("temperature > 1 if True else 0", 17, "unexpected 'if'"),
        ("'a' < 'b'", 5, "a string compares with '==' or '!=' only, not '<'"),
    ]:
        with pytest.raises(ExprError) as info:
            check_types(parse_expression(text), lambda ref: "number")
        assert (info.value.column, info.value.reason) == (column, reason), text


def test_expression_parse_tree_and_precedence() -> None:
    node = parse_expression("not a > 1 or b and c")
    # or(not(a > 1), and(b, c))
    assert isinstance(node, Binary)
    assert node.op == "or"
    assert isinstance(node.left, Unary)
    assert isinstance(node.right, Binary)
    assert node.right.op == "and"
    types = {"a": "number", "b": "bool", "c": "bool"}
    assert check_types(node, lambda ref: types[ref.path]) == "bool"
    with pytest.raises(ExprError, match="comparisons do not chain"):
        parse_expression("1 < a < 2")
    with pytest.raises(ExprError, match="'and' needs booleans, got a number"):
        check_types(parse_expression("a and b"), lambda ref: types[ref.path])

"""The ``alarms`` section of a factory file: alarm rules and where notifications go.

A rule has one condition and one scope::

    alarms:
      notify:
        - {name: maintenance, webhook: "https://tickets.example/hooks/alarms", min_severity: high}
        - {name: uns, mqtt: "mqtt://127.0.0.1:1883", topic: shopfloor/alarms}
      rules:
        - id: hydraulic_pressure_high           # every press: > 250 bar for 5 s
          type: press
          severity: high
          threshold: {signal: hydraulic_pressure, above: 250, deadband: 10}
          on_delay: 5s
        - id: long_unplanned_stop
          type: welding-robot
          state: {in: [unplanned_stop], for: 5min}
        - id: conveyor_jam
          asset: acme/munich/body-shop/line-1
          severity: critical
          expression: "`conveyor-1/motor_current` > 40 and `conveyor-1/speed` < 0.1"

* **Scope**: ``type`` instantiates the rule for every equipment whose type is or extends
  it (signal references are the type's signal names); ``asset`` names one asset of any
  level (signal references are paths relative to it, e.g. ``cell-1/press-7/state``). The
  alarm of a rule on an asset is identified as ``<asset path>/<rule id>``.
* **Conditions**: ``threshold`` (``above`` or ``below`` a limit, ``deadband`` = hysteresis:
  an alarm above 250 with deadband 10 clears at or below 240), ``rate`` (average change
  per ``per`` over at least ``window``), ``state`` (the machine's standard state is one of
  ``in``, for at least ``for``), ``expression`` (see :mod:`shopfloor.model._expr`).
* **Delays**: ``on_delay`` (the condition must hold that long before the alarm activates)
  and ``off_delay`` (it must be gone that long before the alarm clears).
* **Severity** (OPC UA / ISA-18.2 priority, 1–1000): a number or one of ``low`` (250),
  ``medium`` (500), ``high`` (750), ``critical`` (1000). A number's priority name is the
  band it falls in: 1–250 low, 251–500 medium, 501–750 high, 751–1000 critical.
* ``ack_required: false`` makes an alarm non-latching: it returns to normal when its
  condition clears even when nobody acknowledged it.
* ``message`` is a template with ``{asset}``, ``{asset_name}``, ``{rule}``, ``{signal}``,
  ``{value}``, ``{limit}``, ``{unit}`` and ``{description}``; format specs are allowed
  (``{value:.1f}``), attribute and index access are not.

Notification sinks: ``webhook`` (HTTP POST of a JSON document; ``headers`` values may use
``${ENV_VAR}``) and ``mqtt`` (one topic per alarm, ``<topic>/<alarm id>``). Each can be
limited to ``min_severity`` and to some ``transitions``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from shopfloor.model._expr import ExprError, Ref, check_types, parse_expression, refs_of
from shopfloor.model._yaml import Path

if TYPE_CHECKING:  # the document schema imports this module
    from shopfloor.model._factory import Factory, ResolvedSignal, ResolvedType

__all__ = [
    "SEVERITIES",
    "TRANSITIONS",
    "AlarmInstance",
    "AlarmRule",
    "AlarmSection",
    "NotifySpec",
    "RateCondition",
    "StateCondition",
    "ThresholdCondition",
    "alarm_instances",
    "check_alarms",
    "parse_duration",
    "priority_name",
]

# The id pattern and standard states of the data model (``_schema.ID_PATTERN`` and
# ``_schema.STANDARD_STATES``, repeated because that module imports this one; a test keeps
# them equal).
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
StateName = Literal[
    "running", "idle", "starved", "blocked", "planned_stop", "unplanned_stop", "setup", "offline"
]
_STATES: tuple[str, ...] = get_args(StateName)

SEVERITIES: Mapping[str, int] = {"low": 250, "medium": 500, "high": 750, "critical": 1000}
"""Severity names and the number (1–1000) each stands for."""

TRANSITIONS: tuple[str, ...] = ("activated", "cleared", "acknowledged", "shelved", "unshelved")
"""The transitions of an alarm that are journaled and notified."""

_NUMERIC = ("float", "int")
_PLACEHOLDERS = ("asset", "asset_name", "rule", "signal", "value", "limit", "unit", "description")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|sec|m|min|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, None: 1.0}
_PER_S = {"s": 1.0, "min": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a text like ``250ms``, ``5s``, ``5 min``, ``2h``."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: give seconds or e.g. '5s', '5min', '2h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(
            f"bad duration {value!r}: give seconds or e.g. '250ms', '5s', '5min', '2h'"
        )
    if seconds < 0:
        raise ValueError(f"bad duration {value!r}: must not be negative")
    return seconds


def _severity(value: Any) -> int:
    if isinstance(value, str) and value in SEVERITIES:
        return SEVERITIES[value]
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000:
        return value
    raise ValueError(
        f"bad severity {value!r}: give low, medium, high, critical or a number from 1 to 1000"
    )


def priority_name(severity: int) -> str:
    """The priority band of a severity: low (≤250), medium (≤500), high (≤750), critical."""
    for name, top in SEVERITIES.items():
        if severity <= top:
            return name
    return "critical"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION.pattern},
            ],
            "description": "Seconds, or a number with a unit: ms, s, min (or m), h.",
        }
    ),
]
Severity = Annotated[
    int,
    BeforeValidator(_severity),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": list(SEVERITIES)},
                {"type": "integer", "minimum": 1, "maximum": 1000},
            ],
            "description": "low (250), medium (500), high (750), critical (1000), or 1–1000.",
        }
    ),
]
Id = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
SignalRefText = Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\s`]+$")]
Transition = Literal["activated", "cleared", "acknowledged", "shelved", "unshelved"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_limit(above: float | None, below: float | None) -> None:
    if (above is None) == (below is None):
        raise ValueError("give exactly one of 'above' and 'below'")


class ThresholdCondition(_Model):
    """The value is above (or below) a limit; ``deadband`` is the hysteresis to clear."""

    signal: SignalRefText
    above: float | None = None
    below: float | None = None
    deadband: float = Field(default=0.0, ge=0, description="Hysteresis, in the signal's unit.")

    @model_validator(mode="after")
    def _limit(self) -> ThresholdCondition:
        _one_limit(self.above, self.below)
        return self


class RateCondition(_Model):
    """The value changes faster than ``above`` (or slower than ``below``) units per ``per``.

    The rate at a sample is ``(v_now − v_then) / (t_now − t_then)`` where ``then`` is the
    last sample at least ``window`` before it; ``below: -5`` alarms on a fall faster than 5.
    """

    signal: SignalRefText
    above: float | None = None
    below: float | None = None
    per: Literal["s", "min", "h"] = "s"
    window: Duration = 10.0
    deadband: float = Field(default=0.0, ge=0, description="Hysteresis of the rate.")

    @model_validator(mode="after")
    def _limit(self) -> RateCondition:
        _one_limit(self.above, self.below)
        if self.window <= 0:
            raise ValueError("'window' must be longer than zero")
        return self

    @property
    def per_s(self) -> float:
        """Seconds in one ``per`` unit."""
        return _PER_S[self.per]


def _state_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class StateCondition(_Model):
    """The equipment's standard machine state is one of ``in``, for at least ``for``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    signal: SignalRefText = "state"
    in_: Annotated[
        list[StateName],
        BeforeValidator(_state_list),
        WithJsonSchema(
            {
                "anyOf": [
                    {"enum": list(_STATES)},
                    {"type": "array", "items": {"enum": list(_STATES)}, "minItems": 1},
                ],
                "description": "Standard states (one or a list).",
            }
        ),
        Field(alias="in", min_length=1),
    ]
    for_: Duration = Field(default=0.0, alias="for", description="How long, at least.")


class AlarmRule(_Model):
    """One alarm rule: a scope (``type`` or ``asset``), one condition, its severity."""

    id: Id
    description: str = ""
    type: Id | None = Field(default=None, description="Every equipment of (or extending) it.")
    asset: str | None = Field(default=None, description="One asset path (any level).")
    severity: Severity = 500
    message: str | None = Field(default=None, description="Template of the alarm's message.")
    threshold: ThresholdCondition | None = None
    rate: RateCondition | None = None
    state: StateCondition | None = None
    expression: str | None = Field(default=None, description="A condition over signals.")
    on_delay: Duration = 0.0
    off_delay: Duration = 0.0
    ack_required: bool = True

    @model_validator(mode="after")
    def _shape(self) -> AlarmRule:
        given = [k for k in ("threshold", "rate", "state", "expression") if getattr(self, k)]
        if len(given) != 1:
            what = ", ".join(given) if given else "none"
            raise ValueError(
                f"give exactly one condition: threshold, rate, state or expression (got {what})"
            )
        if (self.type is None) == (self.asset is None):
            raise ValueError("give exactly one scope: 'type' (every equipment of it) or 'asset'")
        if self.state is not None and self.state.for_ and self.on_delay:
            raise ValueError("give the state's 'for' or the rule's 'on_delay', not both")
        return self

    @field_validator("message")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value)
        return value

    @property
    def condition_kind(self) -> str:
        """``threshold``, ``rate``, ``state`` or ``expression``."""
        for kind in ("threshold", "rate", "state"):
            if getattr(self, kind) is not None:
                return kind
        return "expression"

    @property
    def activation_delay(self) -> float:
        """Seconds the condition must hold before the alarm activates."""
        return self.state.for_ if self.state is not None and self.state.for_ else self.on_delay


def check_template(text: str) -> None:
    """Raise :class:`ValueError` unless ``text`` is a message template we can fill safely."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"bad message template: {exc}") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in _PLACEHOLDERS:
            raise ValueError(
                f"unknown placeholder {{{field}}} in the message (known: "
                f"{', '.join(_PLACEHOLDERS)})"
            )
        if spec and "{" in spec:
            raise ValueError("nested placeholders are not allowed in a message")
        if conversion:
            raise ValueError(f"conversions (!{conversion}) are not allowed in a message")


class NotifySpec(_Model):
    """A notification sink: a ``webhook`` URL or an ``mqtt`` broker endpoint."""

    name: Id
    webhook: str | None = Field(default=None, description="http(s) URL to POST JSON to.")
    mqtt: str | None = Field(default=None, description="mqtt://host[:port] or mqtts://…")
    min_severity: Severity = 1
    transitions: list[Transition] = Field(default_factory=lambda: list(TRANSITIONS))  # type: ignore[arg-type]
    headers: dict[str, str] = Field(default_factory=dict, description="Webhook only.")
    timeout: Duration = Field(default=10.0, description="Webhook only: seconds per attempt.")
    retries: int = Field(default=5, ge=0, le=20, description="Webhook only: extra attempts.")
    topic: str = Field(default="shopfloor/alarms", min_length=1, description="MQTT only.")
    qos: int = Field(default=1, ge=0, le=2, description="MQTT only.")
    retain: bool = Field(default=True, description="MQTT only: keep each alarm's last state.")

    @model_validator(mode="after")
    def _target(self) -> NotifySpec:
        if (self.webhook is None) == (self.mqtt is None):
            raise ValueError("give exactly one of 'webhook' (a URL) and 'mqtt' (a broker)")
        wrong: list[str]
        if self.webhook is not None:
            parts = urlsplit(self.webhook)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"webhook {self.webhook!r} is not an http:// or https:// URL")
            wrong = [k for k in ("topic", "qos", "retain") if k in self.model_fields_set]
        else:
            assert self.mqtt is not None
            parts = urlsplit(self.mqtt)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError(f"mqtt endpoint {self.mqtt!r} is not mqtt://host[:port]")
            wrong = [k for k in ("headers", "timeout", "retries") if k in self.model_fields_set]
        if wrong:
            kind = "a webhook" if self.webhook is not None else "an mqtt sink"
            raise ValueError(f"{', '.join(map(repr, wrong))}: not for {kind}")
        if any(c in self.topic for c in "#+") or self.topic.startswith("/"):
            raise ValueError(f"bad topic {self.topic!r}: no wildcards, no leading '/'")
        return self


class AlarmSection(_Model):
    """The ``alarms`` section: rules and notification sinks."""

    rules: list[AlarmRule] = Field(default_factory=list)
    notify: list[NotifySpec] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------
# checks that need the whole document


class _Checker(Protocol):
    def add(self, path: Path, message: str) -> None: ...

    def validate(
        self, model: type[BaseModel], raw: Any, path: Path, strip: Iterable[str] = ()
    ) -> tuple[Any, dict[str, list[Any]]]: ...


@dataclass(frozen=True, slots=True)
class _Sig:
    data_type: str
    is_state: bool  # the equipment's `state` signal, mapped through a state map


def check_alarms(
    check: _Checker,
    raw: Any,
    types: Mapping[str, ResolvedType],
    unknown_types: set[str],
    assets: Sequence[tuple[str, str | None]],
) -> None:
    """Validate the ``alarms`` section item by item and resolve its references.

    ``types`` are the resolved asset types, ``unknown_types`` the ids of types that exist
    but could not be resolved (reported elsewhere), ``assets`` every addressable asset as
    ``(path, type id)`` (``None`` for non-equipment).
    """
    base: Path = ("alarms",)
    _, children = check.validate(AlarmSection, raw, base, ("rules", "notify"))
    names: dict[str, Path] = {}
    for i, item in enumerate(children.get("notify", [])):
        path = (*base, "notify", i)
        spec = check.validate(NotifySpec, item, path)[0]
        if spec is None:
            continue
        if spec.name in names:
            check.add((*path, "name"), f"duplicate notification sink {spec.name!r}")
        names.setdefault(spec.name, path)
    by_path = dict(assets)
    ids: set[str] = set()
    for i, item in enumerate(children.get("rules", [])):
        path = (*base, "rules", i)
        rule = check.validate(AlarmRule, item, path)[0]
        if rule is None:
            continue
        if rule.id in ids:
            check.add((*path, "id"), f"duplicate alarm rule id {rule.id!r}")
        ids.add(rule.id)
        _Rule(check, path, rule, types, unknown_types, by_path).run()


class _Rule:
    """Resolves the signal references of one rule, reporting what does not resolve."""

    def __init__(
        self,
        check: _Checker,
        path: Path,
        rule: AlarmRule,
        types: Mapping[str, ResolvedType],
        unknown_types: set[str],
        assets: Mapping[str, str | None],
    ) -> None:
        self.c = check
        self.path = path
        self.rule = rule
        self.types = types
        self.unknown_types = unknown_types
        self.assets = assets
        self.skip = False  # the scope is broken: its references cannot be checked

    def run(self) -> None:
        rule = self.rule
        if rule.type is not None and rule.type not in self.types:
            if rule.type not in self.unknown_types:
                known = ", ".join(sorted(self.types)) or "none declared"
                self.c.add((*self.path, "type"), f"unknown type {rule.type!r} (known: {known})")
            return
        if rule.type is not None and rule.type in self.unknown_types:
            return
        if rule.asset is not None and rule.asset not in self.assets:
            self.c.add((*self.path, "asset"), f"unknown asset {rule.asset!r} (give a full path)")
            return
        if rule.threshold is not None:
            self.numeric(rule.threshold.signal, (*self.path, "threshold", "signal"))
        elif rule.rate is not None:
            self.numeric(rule.rate.signal, (*self.path, "rate", "signal"))
        elif rule.state is not None:
            where = (*self.path, "state", "signal")
            if "signal" not in rule.state.model_fields_set:
                where = (*self.path, "state")
            sig = self.signal(rule.state.signal, where)
            if sig is not None and not sig.is_state:
                self.c.add(
                    where,
                    f"signal {rule.state.signal!r} is not a machine-state signal (the "
                    "equipment's 'state' signal, with a state map in its type): use an "
                    "expression for other signals",
                )
        else:
            assert rule.expression is not None
            self.expression(rule.expression, (*self.path, "expression"))

    def numeric(self, ref: str, where: Path) -> None:
        sig = self.signal(ref, where)
        if sig is not None and sig.data_type not in _NUMERIC:
            self.c.add(where, f"signal {ref!r} is a {sig.data_type}: this condition needs a number")

    def signal(self, ref: str, where: Path) -> _Sig | None:
        """The referenced signal; reports unknown ones (``None`` for those and the unknowable)."""
        try:
            return self.lookup(ref)
        except LookupError as exc:
            self.c.add(where, str(exc.args[0]))
            return None

    def lookup(self, ref: str) -> _Sig | None:
        """Resolve ``ref``; :class:`LookupError` with a message when it does not exist."""
        if self.rule.type is not None:
            t = self.types[self.rule.type]
            sig = t.signals.get(ref)
            if sig is None:
                raise LookupError(
                    f"unknown signal {ref!r} (type {self.rule.type!r} has: "
                    f"{', '.join(sorted(t.signals)) or 'none'})"
                )
            return _Sig(sig.data_type, ref == "state" and bool(t.states))
        assert self.rule.asset is not None
        eq_path, _, name = f"{self.rule.asset}/{ref.strip('/')}".rpartition("/")
        if eq_path not in self.assets:
            raise LookupError(f"unknown signal {ref!r}: there is no asset {eq_path!r}")
        type_id = self.assets[eq_path]
        if type_id is None:
            raise LookupError(f"unknown signal {ref!r}: {eq_path!r} is not an equipment")
        if type_id not in self.types or type_id in self.unknown_types:
            return None  # reported where the equipment is
        t = self.types[type_id]
        sig = t.signals.get(name)
        if sig is None:
            raise LookupError(
                f"unknown signal {ref!r}: equipment {eq_path!r} (type {type_id!r}) has "
                f"{', '.join(sorted(t.signals)) or 'no signals'}"
            )
        return _Sig(sig.data_type, name == "state" and bool(t.states))

    def expression(self, text: str, where: Path) -> None:
        try:
            node = parse_expression(text)
        except ExprError as exc:
            self.c.add(where, f"bad expression: {exc}")
            return
        if next(refs_of(node), None) is None:
            self.c.add(where, "bad expression: it reads no signal")
            return
        unknowable = False

        def ref_type(ref: Ref) -> str:
            nonlocal unknowable
            try:
                sig = self.lookup(ref.path)
            except LookupError as exc:
                raise ExprError(str(exc.args[0]), ref.column) from None
            if sig is None:
                unknowable = True
                return "number"
            if sig.is_state:
                return "state"
            if sig.data_type == "json":
                raise ExprError(f"signal {ref.path!r} is json: not usable here", ref.column)
            return {"float": "number", "int": "number", "bool": "bool"}.get(sig.data_type, "string")

        try:
            result = check_types(node, ref_type, _STATES)
        except ExprError as exc:
            if not unknowable:
                self.c.add(where, f"bad expression: {exc}")
            return
        if result != "bool" and not unknowable:
            self.c.add(where, f"bad expression: it gives a {result}, an alarm needs true/false")


# ---------------------------------------------------------------------------------------
# instances


@dataclass(frozen=True, slots=True)
class AlarmInstance:
    """A rule applied to one asset: the alarm ``<asset path>/<rule id>``.

    ``signals`` maps every signal reference of the condition (as written) to its signal;
    ``state_maps`` holds, for references to a machine-state signal, raw code → standard
    state.
    """

    alarm_id: str
    rule: AlarmRule
    asset_path: str
    asset_name: str
    signals: Mapping[str, ResolvedSignal]
    state_maps: Mapping[str, Mapping[str, str]]
    unit: str = ""
    """The symbol of the primary signal's unit (its code when it has none)."""

    @property
    def primary(self) -> ResolvedSignal | None:
        """The signal of a threshold, rate or state condition (``None`` for expressions)."""
        cond = self.rule.threshold or self.rule.rate or self.rule.state
        return None if cond is None else self.signals[cond.signal]

    @property
    def severity(self) -> int:
        """The rule's severity (1–1000)."""
        return self.rule.severity

    def message(self, value: Any = None) -> str:
        """The alarm's message, the rule's template (or a default) filled in."""
        rule = self.rule
        sig = self.primary
        limit: float | None = None
        cond = rule.threshold or rule.rate
        if cond is not None:
            limit = cond.above if cond.above is not None else cond.below
        fields: dict[str, Any] = {
            "asset": self.asset_path,
            "asset_name": self.asset_name,
            "rule": rule.id,
            "signal": sig.name if sig is not None else "",
            "value": value,
            "limit": limit,
            "unit": self.unit,
            "description": rule.description,
        }
        template = rule.message or _default_message(rule, sig, value)
        try:
            return template.format_map(fields)
        except (ValueError, TypeError):  # e.g. {value:.1f} without a value
            return template.format_map({k: "" if v is None else str(v) for k, v in fields.items()})


def _default_message(rule: AlarmRule, sig: ResolvedSignal | None, value: Any) -> str:
    unit = "{unit}" if sig is not None and sig.unit else ""
    shown = "{value:.4g}" if isinstance(value, float) else "{value}"
    if rule.threshold is not None:
        side = "above" if rule.threshold.above is not None else "below"
        return f"{{asset_name}}: {{signal}} {shown} {unit} {side} {{limit:g}} {unit}".rstrip()
    if rule.rate is not None:
        side = "rising faster than" if rule.rate.above is not None else "changing slower than"
        return f"{{asset_name}}: {{signal}} {side} {{limit:g}} {unit}/{rule.rate.per}"
    if rule.state is not None:
        states = " or ".join(rule.state.in_)
        longer = f" for more than {_human(rule.activation_delay)}" if rule.activation_delay else ""
        return f"{{asset_name}}: {states}{longer}"
    return "{asset_name}: " + (rule.description or rule.id).replace("{", "{{").replace("}", "}}")


def _human(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _refs(rule: AlarmRule) -> list[str]:
    cond = rule.threshold or rule.rate or rule.state
    if cond is not None:
        return [cond.signal]
    assert rule.expression is not None
    return list(dict.fromkeys(r.path for r in refs_of(parse_expression(rule.expression))))


def alarm_instances(factory: Factory) -> list[AlarmInstance]:
    """Every alarm of ``factory``: each rule applied to the assets of its scope, in order."""
    from shopfloor.model._factory import resolve_types
    from shopfloor.model._units import UNITS

    units = {**UNITS, **{c: (u.name, u.symbol) for c, u in factory.document.units.items()}}
    section = factory.document.alarms
    chains = {
        t: r.chain for t, r in resolve_types({t.id: t for t in factory.document.types}).items()
    }
    out: list[AlarmInstance] = []
    for rule in section.rules:
        refs = _refs(rule)
        if rule.type is not None:
            scopes = [
                (eq.path, eq.name)
                for eq in factory.equipment()
                if eq.type is not None and rule.type in chains.get(eq.type, ())
            ]
        else:
            assert rule.asset is not None
            scopes = [(rule.asset, factory.asset(rule.asset).name)]
        for path, name in scopes:
            signals: dict[str, ResolvedSignal] = {}
            state_maps: dict[str, Mapping[str, str]] = {}
            for ref in refs:
                sig = factory.signal(f"{path}/{ref.strip('/')}")
                signals[ref] = sig
                if sig.name == "state":
                    smap = factory.state_map(sig.asset_path)
                    if smap:
                        state_maps[ref] = smap
            inst = AlarmInstance(f"{path}/{rule.id}", rule, path, name, signals, state_maps)
            primary = inst.primary
            if primary is not None and primary.unit:
                symbol = units.get(primary.unit, (primary.unit, ""))[1] or primary.unit
                inst = replace(inst, unit=symbol)
            out.append(inst)
    return out

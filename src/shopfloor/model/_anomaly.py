"""The ``anomaly`` section of a factory file: which signals get an online detector, and how.

Each entry selects signals either by full path (``paths``) or by asset type and signal name
(``type`` with ``signals``; every equipment whose type is or extends ``type``), and sets
the detector's parameters. A signal selected by several entries takes the parameters of
the last one (all of them: those it leaves out take their defaults), so a broad entry can
be refined by a narrower one after it::

    anomaly:
      - type: press
        signals: [temperature, hydraulic_pressure]
        window: 600
      - paths: [acme/munich/body-shop/line-1/cell-1/press-7/temperature]
        window: 600
        threshold: 8

The detector itself is :class:`shopfloor.analytics.anomaly.AnomalyDetector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shopfloor.model._yaml import Path

if TYPE_CHECKING:  # the document schema imports this module
    from shopfloor.model._factory import Factory, ResolvedType

__all__ = [
    "NUMERIC_TYPES",
    "AnomalyParams",
    "AnomalyRule",
    "check_anomaly",
    "select_anomaly_signals",
]

NUMERIC_TYPES: tuple[str, ...] = ("float", "int")
"""Data types a detector can score."""

Name = Annotated[str, StringConstraints(min_length=1)]
SignalPath = Annotated[str, StringConstraints(pattern=r"^[^/\s]+(/[^/\s]+)+$")]


class AnomalyParams(BaseModel):
    """How one signal is scored: a robust rolling z-score (median and MAD of a window).

    The score of a sample is ``|x − median| / (1.4826 · MAD)`` over the ``window`` samples
    of the signal before it, the reference being recomputed every ``refresh`` samples
    (``scale_from: differences`` takes the scale from the MAD of the window's first
    differences instead, ``1.4826 · MAD(Δx) / √2``, which a slow drift does not inflate). A
    sample scores once the reference holds ``min_samples`` samples (the warm-up). Samples
    scoring above ``threshold`` are anomalous; anomalous samples less than ``cooldown_s``
    apart form one anomaly event, which ends when ``cooldown_s`` passes without one. With
    ``stuck_samples``, a value repeated that many times in a row on a signal that normally
    varies is anomalous too (a frozen sensor).

    Equipment with a state signal and a state map is scored only while ``running`` and
    ``settle_s`` after it started (``gate``), the reference restarting with each running
    period (``baseline: reset``). ``drift_after_s`` adds the drift check: the deviation
    against the noise scale of the window's first differences, above ``drift_threshold``,
    once the equipment has been running that long.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["robust_z"] = Field(
        default="robust_z", description="Detector: robust rolling z-score (median / MAD)."
    )
    window: int = Field(default=300, ge=8, le=100_000, description="Reference window, samples.")
    threshold: float = Field(
        default=6.0, gt=0.0, description="Score above which a sample is anomalous."
    )
    min_samples: int | None = Field(
        default=None, ge=3, description="Samples in the reference before scoring (default: window)."
    )
    refresh: int = Field(
        default=10, ge=1, description="Recompute the reference every this many samples."
    )
    cooldown_s: float = Field(
        default=30.0, ge=0.0, description="Anomalous samples closer than this form one event."
    )
    stuck_samples: int | None = Field(
        default=None, ge=2, description="A value repeated this many times in a row is anomalous."
    )
    scale_from: Literal["values", "differences"] = Field(
        default="values",
        description="Scale from the MAD of the values, or of their first differences "
        "(insensitive to slow trends: finds slower drifts, but flags natural slow changes).",
    )
    min_scale: float = Field(
        default=0.0, ge=0.0, description="Floor of the reference scale (1.4826 · MAD), in units."
    )
    drift_after_s: float | None = Field(
        default=None,
        ge=0.0,
        description="The drift check: the same deviation also scored against the noise scale "
        "(from first differences; a slow drift does not inflate it) once the equipment has "
        "been running this many seconds (natural slow changes, e.g. warming up, must be over "
        "by then); off when not given.",
    )
    drift_threshold: float | None = Field(
        default=None, gt=0.0, description="Threshold of the drift check (default: threshold)."
    )
    gate: Literal["running", "none"] | None = Field(
        default=None,
        description="Score only while the equipment is running ('running'; the default for "
        "equipment with a state signal and a state map) or whatever its state ('none').",
    )
    settle_s: float = Field(
        default=60.0,
        ge=0.0,
        description="With the running gate: seconds after a transition into running before "
        "samples are scored (start-up transients).",
    )
    baseline: Literal["reset", "keep"] = Field(
        default="reset",
        description="With the running gate: the reference restarts (with its warm-up) at every "
        "running period ('reset'), or running periods share one reference ('keep').",
    )

    @model_validator(mode="after")
    def _fits_window(self) -> AnomalyParams:
        if self.min_samples is not None and self.min_samples > self.window:
            raise ValueError(
                f"min_samples ({self.min_samples}) is larger than window ({self.window})"
            )
        if self.refresh > self.window:
            raise ValueError(f"refresh ({self.refresh}) is larger than window ({self.window})")
        if self.drift_threshold is not None and self.drift_after_s is None:
            raise ValueError("drift_threshold sets the drift check: give drift_after_s too")
        return self

    @property
    def warmup(self) -> int:
        """Samples the reference must hold before a sample is scored."""
        return self.window if self.min_samples is None else self.min_samples

    def params(self) -> AnomalyParams:
        """Only the detector parameters (without a rule's selection)."""
        return AnomalyParams.model_validate(
            {name: getattr(self, name) for name in AnomalyParams.model_fields}
        )


class AnomalyRule(AnomalyParams):
    """An entry of the ``anomaly`` section: a selection of signals and their parameters.

    Give either ``paths`` (full signal paths) or ``type`` (an asset type id, its subtypes
    included) with ``signals`` (names of the type's signals; all its numeric, non-derived
    measurements when left out).
    """

    paths: list[SignalPath] = Field(default_factory=list, description="Full signal paths.")
    type: Name | None = Field(default=None, description="Asset type whose equipment is selected.")
    signals: list[Name] = Field(
        default_factory=list, description="Signal names of the type (default: its measurements)."
    )

    @model_validator(mode="after")
    def _one_selection(self) -> AnomalyRule:
        if self.type is None and not self.paths:
            raise ValueError("select signals with 'paths' or with 'type' (and 'signals')")
        if self.type is not None and self.paths:
            raise ValueError("give either 'paths' or 'type', not both")
        if self.signals and self.type is None:
            raise ValueError("'signals' names signals of a 'type': add 'type' or use 'paths'")
        return self


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed) if listed else "none"


def _state_signal_name(resolved: ResolvedType) -> str | None:
    """A type's state signal: ``state`` if it is of kind state, else its first signal of
    kind state (the anomaly engine picks the same)."""
    found = resolved.signals.get("state")
    if found is not None and found.kind == "state":
        return "state"
    return next((n for n, s in resolved.signals.items() if s.kind == "state"), None)


def _no_state_source(resolved: ResolvedType) -> str | None:
    """Why equipment of a type cannot be gated by its state (``None``: it can)."""
    if _state_signal_name(resolved) is None:
        return f"type {resolved.id!r} has no signal of kind state"
    if not resolved.states:
        return f"type {resolved.id!r} has no state map ('states')"
    return None


def _check_gate(
    add: Callable[[Path, str], None],
    where: Path,
    rule: AnomalyRule,
    types: Mapping[str, ResolvedType],
    broken: set[str],
    type_of: Mapping[str, str],
) -> None:
    """Report a ``gate: running`` entry that selects equipment without a state to gate by.

    The types checked are those of the equipment the entry selects (by path, or of the
    entry's type or a subtype), or the entry's type itself when it selects no equipment.
    """
    if rule.type is None:
        assets = {p.rsplit("/", 1)[0] for p in rule.paths}
        chosen = {type_of[a] for a in assets if a in type_of}
    elif rule.type not in types or rule.type in broken:
        return  # reported (or not checkable) elsewhere
    else:
        chosen = {t for t in type_of.values() if t in types and rule.type in types[t].chain}
        chosen = chosen or {rule.type}
    for type_id in sorted(chosen - broken):
        resolved = types.get(type_id)
        problem = None if resolved is None else _no_state_source(resolved)
        if problem is not None:
            add((*where, "gate"), f"gate 'running' needs the equipment's state: {problem}")
            return


def check_anomaly(
    add: Callable[[Path, str], None],
    rules: Iterable[tuple[Path, AnomalyRule]],
    types: Mapping[str, ResolvedType],
    broken: set[str],
    equipment: Iterable[tuple[str, str]],
) -> None:
    """Report references of the ``anomaly`` entries that do not resolve.

    ``types`` are the resolved asset types, ``broken`` the ids of types that did not
    validate or whose ancestry is broken (their signals are not checked), ``equipment``
    the ``(path, type id)`` of every equipment that parsed.
    """
    signals: dict[str, str] = {}
    uncertain: set[str] = set()  # equipment whose signals are not known
    type_of: dict[str, str] = {}
    for path, type_id in equipment:
        type_of[path] = type_id
        resolved = types.get(type_id)
        if resolved is None or type_id in broken:
            uncertain.add(path)
            continue
        for name, sig in resolved.signals.items():
            signals[f"{path}/{name}"] = sig.data_type
    for where, rule in rules:
        for j, sig_path in enumerate(rule.paths):
            data_type = signals.get(sig_path)
            if data_type is None and sig_path.rsplit("/", 1)[0] in uncertain:
                continue
            if data_type is None:
                add((*where, "paths", j), f"unknown signal {sig_path!r}")
            elif data_type not in NUMERIC_TYPES:
                add(
                    (*where, "paths", j),
                    f"signal {sig_path!r} is {data_type}: anomaly detection needs float or int",
                )
        if rule.gate == "running":
            _check_gate(add, where, rule, types, broken, type_of)
        if rule.type is None or rule.type in broken:
            continue
        resolved = types.get(rule.type)
        if resolved is None:
            add((*where, "type"), f"unknown type {rule.type!r} (known: {_known(types)})")
            continue
        for j, name in enumerate(rule.signals):
            found = resolved.signals.get(name)
            if found is None:
                add(
                    (*where, "signals", j),
                    f"type {rule.type!r} has no signal {name!r} (it has: "
                    f"{_known(resolved.signals)})",
                )
            elif found.data_type not in NUMERIC_TYPES:
                add(
                    (*where, "signals", j),
                    f"signal {name!r} of type {rule.type!r} is {found.data_type}: anomaly "
                    "detection needs float or int",
                )


def select_anomaly_signals(factory: Factory) -> dict[str, AnomalyParams]:
    """Signal path → detector parameters for every signal the ``anomaly`` entries select.

    Entries apply in file order, so the last entry selecting a signal sets its parameters.
    """
    from shopfloor.model._factory import resolve_types

    rules = factory.document.anomaly
    if not rules:
        return {}
    types = resolve_types({t.id: t for t in factory.document.types})
    by_path = {s.path: s for s in factory.signals()}
    chains = {a.path: types[a.type].chain for a in factory.equipment() if a.type in types}
    out: dict[str, AnomalyParams] = {}
    for rule in rules:
        params = rule.params()
        if rule.type is None:
            for path in rule.paths:
                out[path] = params
            continue
        for sig in by_path.values():
            if rule.type not in chains.get(sig.asset_path, ()):
                continue
            if rule.signals:
                chosen = sig.name in rule.signals
            else:
                chosen = (
                    sig.kind == "measurement" and sig.data_type in NUMERIC_TYPES and not sig.derived
                )
            if chosen:
                out[sig.path] = params
    return out

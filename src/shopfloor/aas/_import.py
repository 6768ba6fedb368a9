"""An AAS environment as a factory-file fragment: asset types, equipment, signals, units.

Shells exported by shopfloor come back exactly: their asset path (a specific asset id),
type, names, attributes (nameplate and technical properties), state map and signals with
data type, kind, unit, limits, semantic id and the derived flag. Shells from elsewhere are
read as far as the standards allow:

- the asset type is ``assetInformation.assetType`` (else the shell's idShort);
- a Digital Nameplate (V1, V2 or V3) gives the attributes ``manufacturer``,
  ``serial_number``, … (see :data:`~shopfloor.aas._semantics.NAMEPLATE_ATTRIBUTES`);
- properties of category ``VARIABLE`` (values that change while the asset runs) in the
  other submodels become signals, typed by their ``valueType``, with the unit of their
  IEC 61360 data specification (embedded or in the concept description of their semantic
  id), mapped onto a UN/CEFACT code where the symbol is known and declared under
  ``units:`` otherwise;
- the shells are placed in the asset tree under ``ImportOptions.line``.

Every signal is bound on one placeholder connection (MQTT, the topic being the signal's
path): the fragment validates, and the bindings say where to edit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from basyx.aas import model
from basyx.aas.model.concept import ConceptDescription

from shopfloor.aas._errors import AasError
from shopfloor.aas._export import ASSET_PATH_KEY
from shopfloor.aas._files import Environment
from shopfloor.aas._names import english, ref_value
from shopfloor.aas._semantics import (
    NAMEPLATE_ATTRIBUTES,
    NAMEPLATE_IDS,
    SF,
    TECHNICAL_DATA,
    TECHNICAL_DATA_IDS,
)
from shopfloor.model import STANDARD_STATES, UNITS, FactoryFileError, parse_factory
from shopfloor.model._schema import ID_PATTERN

__all__ = ["ImportOptions", "ImportResult", "import_environment"]

_ID: Final = re.compile(ID_PATTERN)
_FLOAT_TYPES: Final = (model.datatypes.Double, model.datatypes.Float, model.datatypes.Decimal)
_BOOL_TYPES: Final = (model.datatypes.Boolean,)
_SYMBOLS: Final = {symbol: code for code, (_, symbol) in reversed(list(UNITS.items()))}


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """Where imported shells go and how their signals are bound.

    ``line`` (``enterprise/site/area/line``) receives the shells that carry no shopfloor
    asset path; every signal is bound on the connection ``connection`` (protocol
    ``protocol``, ``endpoint``) at the address ``<signal path>`` (for MQTT: the topic).
    """

    line: str = "aas/site/area/line"
    connection: str = "aas"
    protocol: str = "mqtt"
    endpoint: str = "mqtt://127.0.0.1:1883"


@dataclass(slots=True)
class ImportResult:
    """The fragment (a factory document as plain data) and what the import noticed."""

    fragment: dict[str, Any]
    """The factory-file fragment: ``units``, ``types``, ``connections``, ``enterprise``."""
    shells: int = 0
    """How many shells became equipment."""
    signals: int = 0
    """How many signals the equipment has in all."""
    notes: list[str] = field(default_factory=list)
    """What was left out, and why (one line each)."""

    def yaml(self) -> str:
        """The fragment as YAML text (a factory file ``shopfloor model validate`` accepts)."""
        header = "# Imported from an Asset Administration Shell environment by shopfloor.\n"
        return header + yaml.safe_dump(
            self.fragment, sort_keys=False, allow_unicode=True, width=100
        )


# ---------------------------------------------------------------------- plain values


def _plain(value: Any) -> Any:
    """An XSD value of the SDK as a plain Python value (YAML cannot dump the subclasses)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return model.datatypes.xsd_repr(value)


def _data_type(value_type: Any) -> str:
    if value_type in _BOOL_TYPES:
        return "bool"
    if value_type in _FLOAT_TYPES:
        return "float"
    if isinstance(value_type, type) and issubclass(value_type, int):
        return "int"
    return "string"


def _qualifier(element: model.Qualifiable, type_: str) -> Any:
    for q in element.qualifier:
        if q.type == type_:
            return _plain(q.value)
    return None


def _name_of(element: model.Referable) -> str:
    """The element's name in the model: its OriginalName qualifier, else its idShort."""
    if isinstance(element, model.Qualifiable):
        original = _qualifier(element, "OriginalName")
        if isinstance(original, str) and original:
            return original
    return str(element.id_short)


def _semantic(element: model.HasSemantics) -> str | None:
    return ref_value(element.semantic_id)


def _child(
    container: model.UniqueIdShortNamespace | model.Submodel | None,
    id_short: str,
    semantic: str | None = None,
) -> model.SubmodelElement | None:
    """The child with this semantic id (if given), else with this idShort."""
    if container is None:
        return None
    children: Iterable[model.SubmodelElement] = (
        container.submodel_element
        if isinstance(container, model.Submodel)
        else getattr(container, "value", ())
    )
    if semantic is not None:
        for element in children:
            if _semantic(element) == semantic:
                return element
    for element in children:
        if element.id_short == id_short:
            return element
    return None


def _string_value(element: model.SubmodelElement | None) -> str | None:
    if isinstance(element, model.MultiLanguageProperty):
        return english(element.value)
    if isinstance(element, model.Property) and element.value is not None:
        return str(_plain(element.value))
    return None


# ---------------------------------------------------------------------- per shell


@dataclass(slots=True)
class _Equipment:
    path: str
    type_id: str
    name: str | None
    description: str
    signals: list[dict[str, Any]]
    attributes: dict[str, Any]
    states: dict[int | str, str]
    type_name: str | None
    unit_symbols: dict[str, str]
    foreign: bool = False
    """The signals come from VARIABLE properties (not from shopfloor's signal list)."""


class _Importer:
    def __init__(self, env: Environment, options: ImportOptions, source: str) -> None:
        self.env = env
        self.options = options
        self.source = source
        self.notes: list[str] = []
        self.concepts = {cd.id: cd for cd in env if isinstance(cd, ConceptDescription)}

    def note(self, shell: model.AssetAdministrationShell, message: str) -> None:
        self.notes.append(f"{self.source}: shell {shell.id}: {message}")

    # ------------------------------------------------------------------ where

    def path_of(self, shell: model.AssetAdministrationShell, taken: set[str]) -> str:
        info = shell.asset_information
        for sid in info.specific_asset_id:
            if sid.name == ASSET_PATH_KEY:
                path = str(sid.value).strip("/")
                parts = path.split("/")
                if len(parts) not in (5, 6) or not all(_ID.match(p) for p in parts):
                    raise AasError(
                        f"{self.source}: shell {shell.id}: asset path {path!r} is not "
                        "enterprise/site/area/line[/cell]/equipment of valid ids"
                    )
                if path in taken:
                    raise AasError(f"{self.source}: shell {shell.id}: asset path {path!r} twice")
                taken.add(path)
                return path
        base = _clean_id(str(shell.id_short or shell.id.rsplit("/", 1)[-1]))
        path, n = f"{self.options.line}/{base}", 2
        while path in taken:
            path = f"{self.options.line}/{base}-{n}"
            n += 1
        taken.add(path)
        return path

    # ------------------------------------------------------------------ what

    def submodels(self, shell: model.AssetAdministrationShell) -> Iterator[model.Submodel]:
        for reference in sorted(shell.submodel, key=lambda r: [str(k.value) for k in r.key]):
            try:
                sm = reference.resolve(self.env)
            except (KeyError, model.UnexpectedTypeError):
                self.note(shell, f"submodel {ref_value(reference)} is not in the file: skipped")
                continue
            if isinstance(sm, model.Submodel):
                yield sm

    def equipment(self, shell: model.AssetAdministrationShell, path: str) -> _Equipment:
        asset_type = shell.asset_information.asset_type
        type_id = _type_id(str(asset_type)) if asset_type else _clean_id(path.rsplit("/", 1)[1])
        eq = _Equipment(
            path=path,
            type_id=type_id,
            name=english(shell.display_name),
            description=english(shell.description) or "",
            signals=[],
            attributes={},
            states={},
            type_name=None,
            unit_symbols={},
        )
        nameplate: model.Submodel | None = None
        technical: model.Submodel | None = None
        others: list[model.Submodel] = []
        for sm in self.submodels(shell):
            semantic = _semantic(sm) or ""
            if semantic in NAMEPLATE_IDS or (not semantic and sm.id_short == "Nameplate"):
                nameplate = sm
            elif (
                semantic == TECHNICAL_DATA
                or semantic.startswith("https://admin-shell.io/ZVEI/TechnicalData/Submodel/")
                or (not semantic and sm.id_short == "TechnicalData")
            ):
                technical = sm
            elif "/TimeSeries" not in semantic:
                others.append(sm)
        if nameplate is not None:
            self.read_nameplate(nameplate, eq)
        signals = None
        if technical is not None:
            signals = self.read_technical(shell, technical, eq)
        for sm in others:
            self.read_units(sm, eq)
        if signals is None:
            eq.foreign = True
            signals = []
            for sm in others:
                signals += self.variables(shell, sm, eq, {s["name"] for s in signals})
        eq.signals = signals
        return eq

    def read_nameplate(self, sm: model.Submodel, eq: _Equipment) -> None:
        for attr, spec in NAMEPLATE_ATTRIBUTES.items():
            value = _string_value(_child(sm, spec.id_short, spec.irdi))
            if value:
                eq.attributes[attr] = value

    def read_technical(
        self, shell: model.AssetAdministrationShell, sm: model.Submodel, eq: _Equipment
    ) -> list[dict[str, Any]] | None:
        general = _child(sm, "GeneralInformation", TECHNICAL_DATA_IDS["GeneralInformation"])
        if isinstance(general, model.SubmodelElementCollection):
            eq.type_name = _string_value(
                _child(
                    general,
                    "ManufacturerProductDesignation",
                    TECHNICAL_DATA_IDS["ManufacturerProductDesignation"],
                )
            )
            maker = _string_value(
                _child(general, "ManufacturerName", TECHNICAL_DATA_IDS["ManufacturerName"])
            )
            if maker and "manufacturer" not in eq.attributes:
                eq.attributes["manufacturer"] = maker
        props = _child(sm, "TechnicalProperties", TECHNICAL_DATA_IDS["TechnicalProperties"])
        if not isinstance(props, model.SubmodelElementCollection):
            return None
        attributes = _child(props, "Attributes", SF + "Attributes")
        if isinstance(attributes, model.SubmodelElementCollection):
            for element in attributes.value:
                if isinstance(element, model.Property):
                    eq.attributes[_name_of(element)] = _attribute_value(element)
        else:
            for element in props.value:
                if isinstance(element, model.Property) and element.value is not None:
                    eq.attributes[_name_of(element)] = _attribute_value(element)
        states = _child(props, "StateMap", SF + "StateMap")
        if isinstance(states, model.SubmodelElementList):
            for mapping in states.value:
                if not isinstance(mapping, model.SubmodelElementCollection):
                    continue
                raw = _string_value(_child(mapping, "RawState", SF + "RawState"))
                state = _string_value(_child(mapping, "StandardState", SF + "StandardState"))
                if raw is None or state not in STANDARD_STATES:
                    self.note(shell, f"state mapping {raw!r} → {state!r} is not valid: skipped")
                    continue
                eq.states[int(raw) if raw.isdigit() and str(int(raw)) == raw else raw] = state
        signals = _child(props, "Signals", SF + "Signals")
        if not isinstance(signals, model.SubmodelElementCollection):
            return None
        out = []
        for element in signals.value:
            if isinstance(element, model.SubmodelElementCollection):
                sig = self.signal(shell, element)
                if sig is not None:
                    out.append(sig)
        return out

    def signal(
        self, shell: model.AssetAdministrationShell, smc: model.SubmodelElementCollection
    ) -> dict[str, Any] | None:
        name = _name_of(smc)
        data_type = _string_value(_child(smc, "DataType", SF + "DataType"))
        kind = _string_value(_child(smc, "Kind", SF + "Kind")) or "measurement"
        if data_type not in ("float", "int", "bool", "string", "json") or not _ID.match(name):
            self.note(shell, f"signal {name!r} has no valid name or data type: skipped")
            return None
        sig: dict[str, Any] = {"name": name, "data_type": data_type}
        unit = _string_value(_child(smc, "Unit", SF + "Unit"))
        if unit:
            sig["unit"] = unit
        sig["kind"] = kind
        description = english(smc.description)
        if description:
            sig["description"] = description
        semantic = _string_value(_child(smc, "SemanticId", SF + "SignalSemanticId"))
        if semantic:
            sig["semantic_id"] = semantic
        limits = _child(smc, "Limits", SF + "Limits")
        if isinstance(limits, model.Range) and (limits.min is not None or limits.max is not None):
            sig["limits"] = {
                k: float(v) for k, v in (("low", limits.min), ("high", limits.max)) if v is not None
            }
        derived = _child(smc, "Derived", SF + "Derived")
        if isinstance(derived, model.Property) and derived.value:
            sig["derived"] = True
        return sig

    def read_units(self, sm: model.Submodel, eq: _Equipment) -> None:
        """Unit symbols of the properties of ``sm`` by property name (for declared codes)."""
        for element in sm.submodel_element:
            if isinstance(element, model.Property):
                symbol = self.unit_of(element)
                if symbol:
                    eq.unit_symbols[_name_of(element)] = symbol

    def unit_of(self, element: model.DataElement) -> str | None:
        """The IEC 61360 unit of ``element``: embedded, else its concept description's."""
        specs = list(element.embedded_data_specifications)
        key = _semantic(element)
        if key is not None and key in self.concepts:
            specs += list(self.concepts[key].embedded_data_specifications)
        for spec in specs:
            content = spec.data_specification_content
            if isinstance(content, model.DataSpecificationIEC61360) and content.unit:
                return str(content.unit)
        return None

    def variables(
        self,
        shell: model.AssetAdministrationShell,
        sm: model.Submodel,
        eq: _Equipment,
        taken: set[str],
    ) -> list[dict[str, Any]]:
        """Signals from the ``VARIABLE`` properties of a foreign submodel."""
        out = []
        for name, element in _flatten(sm.submodel_element, ""):
            if not isinstance(element, model.Property) or element.category != "VARIABLE":
                continue
            if name in taken:
                name = f"{_clean_id(str(sm.id_short or 'submodel'))}.{name}"
            if name in taken or not _ID.match(name):
                self.note(shell, f"property {name!r} of {sm.id}: no unique name: skipped")
                continue
            taken.add(name)
            sig: dict[str, Any] = {"name": name, "data_type": _data_type(element.value_type)}
            symbol = self.unit_of(element)
            if symbol:
                sig["unit"] = symbol
                eq.unit_symbols[name] = symbol
            sig["kind"] = "measurement"
            description = english(element.description)
            if description:
                sig["description"] = description
            semantic = _semantic(element)
            if semantic:
                sig["semantic_id"] = semantic
            out.append(sig)
        return out


def _flatten(elements: Any, prefix: str) -> Iterator[tuple[str, model.SubmodelElement]]:
    for i, element in enumerate(elements):
        name = f"{prefix}{element.id_short if element.id_short else i}"
        if isinstance(element, model.SubmodelElementCollection | model.SubmodelElementList):
            yield from _flatten(element.value, name + ".")
        else:
            yield name, element


def _attribute_value(element: model.Property) -> Any:
    value = _plain(element.value)
    if _qualifier(element, "ValueEncoding") == "application/json" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _clean_id(text: str) -> str:
    """``text`` as a model id (letters, digits, ``_ . -``; a letter or digit first)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text).strip("-._")
    return cleaned or "asset"


def _type_id(asset_type: str) -> str:
    """A type id from ``assetType``: itself when valid, else the last segment of an IRI/URN."""
    if _ID.fullmatch(asset_type):
        return asset_type
    segments = [s for s in re.split(r"[/:#]", asset_type) if s]
    return _clean_id(segments[-1] if segments else asset_type)


def _unit_code(
    unit: str, declared: dict[str, dict[str, str]], symbol: str | None, *, by_symbol: bool
) -> str:
    """A UN/CEFACT code for ``unit``; unknown units are declared.

    ``by_symbol``: ``unit`` is an IEC 61360 unit (a symbol such as ``m³/h``, or a code);
    otherwise it is a code that shopfloor wrote (kept as it is).
    """
    if unit in UNITS or unit in declared:
        return unit
    if by_symbol and unit in _SYMBOLS:
        return _SYMBOLS[unit]
    declared[unit] = {"name": unit, "symbol": symbol or unit}
    return unit


# ---------------------------------------------------------------------- fragment


def _signature(eq: _Equipment) -> str:
    return json.dumps(
        [eq.signals, sorted(eq.attributes), sorted(map(str, eq.states.items())), eq.type_name],
        sort_keys=True,
        default=str,
    )


def import_environment(
    env: Environment, options: ImportOptions | None = None, source: str = "<environment>"
) -> ImportResult:
    """Turn the shells of ``env`` into a factory-file fragment that validates.

    Raises :class:`AasError` when the shells cannot form one asset tree (several
    enterprises, malformed asset paths) or there is no shell at all.
    """
    options = options or ImportOptions()
    line_parts = options.line.strip("/").split("/")
    if len(line_parts) != 4 or not all(_ID.match(p) for p in line_parts):
        raise AasError(f"import line {options.line!r} is not enterprise/site/area/line")
    options = ImportOptions(
        line="/".join(line_parts),
        connection=options.connection,
        protocol=options.protocol,
        endpoint=options.endpoint,
    )
    imp = _Importer(env, options, source)
    shells = [obj for obj in env if isinstance(obj, model.AssetAdministrationShell)]
    if not shells:
        raise AasError(f"{source}: no Asset Administration Shell in the file")
    taken: set[str] = set()
    equipment = [imp.equipment(shell, imp.path_of(shell, taken)) for shell in shells]
    roots = sorted({eq.path.split("/", 1)[0] for eq in equipment})
    if len(roots) > 1:
        raise AasError(
            f"{source}: the shells belong to several enterprises ({', '.join(roots)}); a "
            "factory file has one (set the import line under the same enterprise)"
        )

    # types: one per asset type and signature
    types: dict[str, dict[str, Any]] = {}
    signature_of: dict[str, str] = {}
    declared: dict[str, dict[str, str]] = {}
    for eq in equipment:
        sig = _signature(eq)
        type_id, n = eq.type_id, 2
        while type_id in types and signature_of[type_id] != sig:
            type_id = f"{eq.type_id}-{n}"
            n += 1
        eq.type_id = type_id
        if type_id in types:
            continue
        signature_of[type_id] = sig
        signals = []
        for s in eq.signals:
            s = dict(s)
            if "unit" in s:
                s["unit"] = _unit_code(
                    s["unit"], declared, eq.unit_symbols.get(s["name"]), by_symbol=eq.foreign
                )
            signals.append(s)
        entry: dict[str, Any] = {"id": type_id}
        if eq.type_name:
            entry["name"] = eq.type_name
        entry["signals"] = signals
        if eq.attributes:
            entry["attributes"] = dict(eq.attributes)
        if eq.states:
            entry["states"] = dict(eq.states)
        types[type_id] = entry

    # the tree
    enterprise: dict[str, Any] = {"id": roots[0], "sites": []}

    def child(node: dict[str, Any], key: str, ident: str) -> dict[str, Any]:
        for c in node.setdefault(key, []):
            if c["id"] == ident:
                return c  # type: ignore[no-any-return]
        c = {"id": ident}
        node[key].append(c)
        return c

    n_signals = 0
    for eq in equipment:
        parts = eq.path.split("/")
        node = child(enterprise, "sites", parts[1])
        node = child(node, "areas", parts[2])
        node = child(node, "lines", parts[3])
        if len(parts) == 6:
            node = child(node, "cells", parts[4])
        entry = {"id": parts[-1]}
        if eq.name and eq.name != parts[-1]:
            entry["name"] = eq.name
        if eq.description:
            entry["description"] = eq.description
        entry["type"] = eq.type_id
        entry["connection"] = options.connection
        type_attributes = types[eq.type_id].get("attributes", {})
        bindings = {
            s["name"]: f"{eq.path}/{s['name']}"
            for s in types[eq.type_id]["signals"]
            if not s.get("derived")
        }
        n_signals += len(types[eq.type_id]["signals"])
        if bindings:
            entry["bindings"] = bindings
        overrides = {k: v for k, v in eq.attributes.items() if type_attributes.get(k) != v}
        if overrides:
            entry["attributes"] = overrides
        node.setdefault("equipment", []).append(entry)
    for site in enterprise["sites"]:  # cells before the line's own equipment, as in files
        for area in site["areas"]:
            for ln in area["lines"]:
                if "cells" in ln and "equipment" in ln:
                    ln["equipment"] = ln.pop("equipment")

    fragment: dict[str, Any] = {}
    if declared:
        fragment["units"] = declared
    fragment["types"] = list(types.values())
    fragment["connections"] = [
        {"name": options.connection, "protocol": options.protocol, "endpoint": options.endpoint}
    ]
    fragment["enterprise"] = enterprise
    try:
        parse_factory(fragment, source)
    except FactoryFileError as exc:
        problems = "; ".join(str(i) for i in exc.issues[:5])
        raise AasError(f"{source}: the shells do not form a valid factory: {problems}") from exc
    return ImportResult(fragment, len(equipment), n_signals, imp.notes)

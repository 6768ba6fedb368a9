"""Loading a factory file and reporting *every* problem in it at once.

1. YAML is read with positions (``_yaml.py``): syntax errors and duplicate keys.
2. Each type, connection and asset node is validated on its own with the pydantic models,
   so a bad node does not hide problems in its siblings or children.
3. Cross-references are checked on whatever parsed: types, ``extends`` cycles, unit codes,
   ids, connections, bindings, calendars.
4. Only a clean file becomes a :class:`Factory`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from shopfloor.model._alarms import check_alarms
from shopfloor.model._anomaly import AnomalyRule, check_anomaly
from shopfloor.model._factory import Factory, ResolvedType, resolve_types
from shopfloor.model._issues import FactoryFileError, ModelIssue, format_path
from shopfloor.model._schema import (
    ID_PATTERN,
    STANDARD_STATES,
    Area,
    AssetType,
    Break,
    Calendar,
    Cell,
    Connection,
    Enterprise,
    Equipment,
    FactoryDocument,
    Line,
    PlannedDowntime,
    Shift,
    Site,
    UnitDef,
)
from shopfloor.model._units import UNITS
from shopfloor.model._yaml import Path, YamlDocument, read_yaml

__all__ = ["load_factory", "parse_factory"]

_ID = re.compile(ID_PATTERN)

# level → (model, ((child key, child level), …))
_LEVELS: dict[str, tuple[type[BaseModel], tuple[tuple[str, str], ...]]] = {
    "enterprise": (Enterprise, (("sites", "site"),)),
    "site": (Site, (("areas", "area"),)),
    "area": (Area, (("lines", "line"),)),
    "line": (Line, (("cells", "cell"), ("equipment", "equipment"))),
    "cell": (Cell, (("equipment", "equipment"),)),
    "equipment": (Equipment, ()),
}


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed) if listed else "none declared"


@dataclass(slots=True)
class _Asset:
    level: str
    id: str | None
    model: Any
    ypath: Path
    raw: dict[str, Any]
    path: str | None
    children: list[_Asset] = field(default_factory=list)
    calendar: _Calendar | None = None


@dataclass(slots=True)
class _Calendar:
    """The parts of a site's calendar that validated, each with its key path."""

    shifts: list[tuple[Path, Shift]] = field(default_factory=list)
    breaks: list[tuple[Path, Break]] = field(default_factory=list)
    downtime: list[tuple[Path, PlannedDowntime]] = field(default_factory=list)


class _Check:
    """Collects issues while validating one file."""

    def __init__(self, filename: str, ydoc: YamlDocument) -> None:
        self.filename = filename
        self.ydoc = ydoc
        self._issues: list[tuple[Path, str]] = []

    # -- reporting ---------------------------------------------------------------------

    def add(self, path: Path, message: str) -> None:
        self._issues.append((path, message))

    def line_of(self, path: Path) -> int | None:
        return self.ydoc.position(path)[0]

    def first_on(self, path: Path) -> str:
        line = self.line_of(path)
        return f" (first on line {line})" if line is not None else ""

    def issues(self) -> list[ModelIssue]:
        out = [
            ModelIssue(self.filename, *self.ydoc.position(path), format_path(path), message)
            for path, message in self._issues
        ]
        out += [
            ModelIssue(self.filename, p.line, p.column, format_path(p.path), p.message)
            for p in self.ydoc.problems
        ]
        unique = list(dict.fromkeys(out))
        return sorted(unique, key=lambda i: (i.line or 0, i.column or 0))

    def pydantic(self, exc: ValidationError, base: Path, data: Any) -> None:
        for err in exc.errors():
            loc = _clean_loc(data, err["loc"], err["type"])
            self.add((*base, *loc), _message(err, loc))

    # -- structure ---------------------------------------------------------------------

    def validate(
        self, model: type[BaseModel], raw: Any, path: Path, strip: Iterable[str] = ()
    ) -> tuple[Any, dict[str, list[Any]]]:
        """Validate ``raw`` without the child lists named in ``strip`` (returned apart)."""
        if not isinstance(raw, dict):
            self.add(path, f"expected a mapping, got {_kind(raw)}")
            return None, {}
        data = dict(raw)
        children: dict[str, list[Any]] = {}
        for key in strip:
            value = data.get(key)
            if isinstance(value, list):
                children[key] = value
                data[key] = []
        try:
            return model.model_validate(data), children
        except ValidationError as exc:
            self.pydantic(exc, path, data)
            return None, children

    def calendar(self, raw: dict[str, Any], path: Path) -> _Calendar:
        self.validate(Calendar, raw, path, ("shifts", "breaks", "planned_downtime"))
        return _Calendar(
            shifts=_items_of(self, raw, "shifts", Shift, path),
            breaks=_items_of(self, raw, "breaks", Break, path),
            downtime=_items_of(self, raw, "planned_downtime", PlannedDowntime, path),
        )

    def items(self, raw: dict[str, Any], key: str) -> list[tuple[Path, Any]]:
        value = raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.add((key,), f"expected a list, got {_kind(value)}")
            return []
        return [((key, i), item) for i, item in enumerate(value)]

    def asset(self, level: str, raw: Any, ypath: Path, parent: str | None) -> _Asset:
        model_cls, child_specs = _LEVELS[level]
        raw_dict = raw if isinstance(raw, dict) else {}
        calendar: _Calendar | None = None
        if level == "site" and isinstance(raw_dict.get("calendar"), dict):
            # validated item by item so that one bad entry does not hide the others
            calendar = self.calendar(raw_dict["calendar"], (*ypath, "calendar"))
            raw = {k: v for k, v in raw_dict.items() if k != "calendar"}
        model, children = self.validate(model_cls, raw, ypath, (k for k, _ in child_specs))
        node_id = raw_dict.get("id")
        if not (isinstance(node_id, str) and _ID.match(node_id)):
            node_id = None
        if node_id is None or (parent is None and level != "enterprise"):
            path = None
        else:
            path = node_id if parent is None else f"{parent}/{node_id}"
        node = _Asset(level, node_id, model, ypath, raw_dict, path, calendar=calendar)
        for key, child_level in child_specs:
            for i, child in enumerate(children.get(key, [])):
                node.children.append(self.asset(child_level, child, (*ypath, key, i), path))
        return node


def _items_of(
    check: _Check, raw: dict[str, Any], key: str, model: type[BaseModel], base: Path
) -> list[tuple[Path, Any]]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        check.add((*base, key), f"expected a list, got {_kind(value)}")
        return []
    out = []
    for i, item in enumerate(value):
        parsed = check.validate(model, item, (*base, key, i))[0]
        if parsed is not None:
            out.append(((*base, key, i), parsed))
    return out


def _clean_loc(data: Any, loc: tuple[str | int, ...], err_type: str) -> Path:
    """Keep the parts of a pydantic ``loc`` that are keys of the data (drops union tags)."""
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and type(part) is int and 0 <= part < len(current)
        if in_dict or in_list:
            child = current[part]
        else:
            if i == len(loc) - 1 and err_type == "missing":
                out.append(part)
            continue
        out.append(part)
        current = child
    return tuple(out)


def _message(err: Any, loc: Path) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    last = loc[-1] if loc else ""
    if kind == "missing":
        return f"missing required key {last!r}"
    if kind == "extra_forbidden":
        return f"unknown key {last!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        if "states" in loc:
            return f"bad state name {value!r} (standard states: {', '.join(STANDARD_STATES)})"
        return f"bad value {value!r} (expected {ctx.get('expected')})"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == ID_PATTERN:
        return (
            f"bad id {value!r}: use letters, digits, '_', '.' and '-', starting with a "
            "letter or digit (no '/')"
        )
    if kind == "timezone_aware":
        return f"{value!r} has no time zone offset (write e.g. 2025-01-01T06:00:00+01:00)"
    msg = str(err["msg"])
    if isinstance(value, str | int | float | bool) or value is None:
        return f"{msg[:1].lower()}{msg[1:]}, got {value!r}"
    return f"{msg[:1].lower()}{msg[1:]}"


def _walk(node: _Asset) -> Iterable[_Asset]:
    yield node
    for child in node.children:
        yield from _walk(child)


class _Semantics:
    """The cross-reference checks, run on everything that parsed."""

    def __init__(self, check: _Check, broken: set[str]) -> None:
        self.c = check
        self.broken = broken
        self.incomplete: set[str] = set()  # types whose ancestry is broken or unknown
        self.types: dict[str, AssetType] = {}
        self.type_paths: dict[str, Path] = {}
        self.resolved: dict[str, ResolvedType] = {}
        self.connections: dict[str, Connection] = {}
        self.units: set[str] = set(UNITS)
        self.conn_paths: dict[str, Path] = {}
        self.bound: dict[tuple[str, str], str] = {}

    def run(
        self,
        units: dict[str, UnitDef],
        types: list[tuple[Path, AssetType]],
        connections: list[tuple[Path, Connection]],
        tree: _Asset | None,
    ) -> None:
        self.units |= set(units)
        self.check_types(types)
        for path, conn in connections:
            if conn.name in self.connections:
                first = self.c.first_on(self.conn_paths[conn.name])
                self.c.add((*path, "name"), f"duplicate connection name {conn.name!r}{first}")
            else:
                self.connections[conn.name] = conn
                self.conn_paths[conn.name] = path
        if tree is not None:
            self.check_tree(tree)

    def check_types(self, types: list[tuple[Path, AssetType]]) -> None:
        for path, t in types:
            if t.id in self.types:
                first = self.c.first_on(self.type_paths[t.id])
                self.c.add((*path, "id"), f"duplicate type id {t.id!r}{first}")
                continue
            self.types[t.id] = t
            self.type_paths[t.id] = path
        for type_id, t in self.types.items():
            path = self.type_paths[type_id]
            if t.extends is not None and t.extends not in self.types.keys() | self.broken:
                self.c.add(
                    (*path, "extends"),
                    f"unknown type {t.extends!r} to extend (known: {_known(self.types)})",
                )
            seen: dict[str, int] = {}
            for j, sig in enumerate(t.signals):
                if sig.name in seen:
                    self.c.add(
                        (*path, "signals", j, "name"),
                        f"duplicate signal name {sig.name!r} in type {type_id!r}"
                        f"{self.c.first_on((*path, 'signals', seen[sig.name]))}",
                    )
                seen.setdefault(sig.name, j)
                if sig.unit is not None and sig.unit not in self.units:
                    self.c.add(
                        (*path, "signals", j, "unit"),
                        f"bad unit code {sig.unit!r}: not a UN/CEFACT Rec 20 code shopfloor "
                        "knows (e.g. CEL, KWH, BAR, C62); declare extra codes under 'units:'",
                    )
        self.check_cycles()
        self.resolved = resolve_types(self.types)
        for type_id, resolved in self.resolved.items():
            last = self.types[resolved.chain[-1]].extends
            if last is not None:  # the chain ended on an unknown type or a cycle
                self.incomplete.add(type_id)

    def check_cycles(self) -> None:
        reported: set[str] = set()
        for type_id in self.types:
            chain: list[str] = []
            current: str | None = type_id
            while current is not None and current in self.types and current not in chain:
                chain.append(current)
                current = self.types[current].extends
            if current is None or current not in chain:
                continue
            cycle = chain[chain.index(current) :]
            if reported & set(cycle):
                continue
            reported |= set(cycle)
            shown = " → ".join([*cycle, cycle[0]])
            self.c.add(
                (*self.type_paths[type_id], "extends"), f"cycle in type inheritance: {shown}"
            )

    def check_tree(self, tree: _Asset) -> None:
        nodes = list(_walk(tree))
        for node in nodes:
            self.check_unique_children(node)
        for node in nodes:
            if node.level == "equipment" and node.model is not None:
                self.check_equipment(node, node.model)
        by_path = {n.path: n for n in nodes if n.path is not None}
        by_id: dict[str, list[str]] = {}
        for n in nodes:
            if n.id is not None and n.path is not None:
                by_id.setdefault(n.id, []).append(n.path)
        for node in nodes:
            if node.calendar is not None:
                self.check_calendar(node.calendar, by_path, by_id)

    def check_unique_children(self, node: _Asset) -> None:
        seen: dict[str, Path] = {}
        for child in node.children:
            if child.id is None:
                continue
            if child.id in seen:
                where = f"under {node.path!r}" if node.path else f"in this {node.level}"
                self.c.add(
                    (*child.ypath, "id"),
                    f"duplicate id {child.id!r} {where}{self.c.first_on((*seen[child.id], 'id'))}",
                )
                child.path = None  # its descendants are reported, not addressed
            else:
                seen[child.id] = child.ypath

    def check_equipment(self, node: _Asset, eq: Equipment) -> None:
        ypath = node.ypath
        if eq.connection is not None and eq.connection not in self.connections:
            self.c.add(
                (*ypath, "connection"),
                f"unknown connection {eq.connection!r} (known: {_known(self.connections)})",
            )
        resolved = self.resolved.get(eq.type)
        if resolved is None and eq.type not in self.broken:
            self.c.add((*ypath, "type"), f"unknown type {eq.type!r} (known: {_known(self.types)})")
        if eq.type in self.incomplete:
            resolved = None  # its signals are not known: check what does not depend on them
        for name, spec in eq.bindings.items():
            bpath = (*ypath, "bindings", name)
            if resolved is not None:
                sig = resolved.signals.get(name)
                if sig is None:
                    self.c.add(
                        bpath,
                        f"binding to unknown signal {name!r} (type {eq.type!r} has: "
                        f"{_known(resolved.signals)})",
                    )
                    continue
                if sig.derived:
                    self.c.add(
                        bpath,
                        f"signal {name!r} is derived (computed by the platform): remove its "
                        "binding",
                    )
                    continue
            connection = spec.connection or eq.connection
            if connection is None:
                self.c.add(
                    bpath,
                    f"no connection for signal {name!r}: set the equipment's 'connection' or "
                    "bind with {connection, address}",
                )
                continue
            if spec.connection is not None and spec.connection not in self.connections:
                self.c.add(
                    (*bpath, "connection"),
                    f"unknown connection {spec.connection!r} (known: {_known(self.connections)})",
                )
                continue
            if node.path is not None:
                key = (connection, spec.address)
                signal_path = f"{node.path}/{name}"
                if key in self.bound:
                    self.c.add(
                        bpath,
                        f"address {spec.address!r} on connection {connection!r} is already "
                        f"bound to {self.bound[key]!r}",
                    )
                else:
                    self.bound[key] = signal_path
        if resolved is None:
            return
        where = (*ypath, "bindings") if "bindings" in node.raw else ypath
        for name, sig in resolved.signals.items():
            if not sig.derived and name not in eq.bindings:
                self.c.add(where, f"unbound signal {name!r} of type {eq.type!r}: bind it")
        for attr in eq.attributes:
            if attr not in resolved.attributes:
                self.c.add(
                    (*ypath, "attributes", attr),
                    f"unknown attribute {attr!r} (type {eq.type!r} has: "
                    f"{_known(resolved.attributes)})",
                )

    def check_calendar(
        self,
        calendar: _Calendar,
        by_path: Mapping[str, _Asset],
        by_id: Mapping[str, list[str]],
    ) -> None:
        shifts: dict[str, Path] = {}
        for path, shift in calendar.shifts:
            if shift.name in shifts:
                first = self.c.first_on(shifts[shift.name])
                self.c.add((*path, "name"), f"duplicate shift name {shift.name!r}{first}")
            shifts.setdefault(shift.name, path)
        for path, brk in calendar.breaks:
            for j, name in enumerate(brk.shifts):
                if name not in shifts:
                    self.c.add(
                        (*path, "shifts", j), f"unknown shift {name!r} (known: {_known(shifts)})"
                    )
        for base, down in calendar.downtime:
            for j, ref in enumerate(down.assets):
                if ref in by_path:
                    continue
                matches = by_id.get(ref, [])
                if len(matches) == 1:
                    continue
                if matches:
                    msg = f"asset id {ref!r} is ambiguous ({', '.join(matches)}): use its path"
                else:
                    msg = f"unknown asset {ref!r} (give an asset path or a unique asset id)"
                self.c.add((*base, "assets", j), msg)


def _check(ydoc: YamlDocument, filename: str) -> tuple[_Check, Any]:
    check = _Check(filename, ydoc)
    raw = ydoc.data
    if ydoc.problems and raw is None:
        return check, None
    if not isinstance(raw, dict):
        check.add((), f"a factory file is a mapping with 'enterprise', got {_kind(raw)}")
        return check, None
    for key in raw:
        if key not in FactoryDocument.model_fields:
            allowed = ", ".join(FactoryDocument.model_fields)
            check.add((key,), f"unknown key {key!r} (allowed here: {allowed})")
    units: dict[str, UnitDef] = {}
    raw_units = raw.get("units")
    if raw_units is not None:
        if not isinstance(raw_units, dict):
            check.add(("units",), f"expected a mapping, got {_kind(raw_units)}")
        else:
            for code, spec in raw_units.items():
                unit, _ = check.validate(UnitDef, spec, ("units", code))
                if unit is not None:
                    units[str(code)] = unit
    types: list[tuple[Path, AssetType]] = []
    broken: set[str] = set()  # ids of types that did not validate: not "unknown"
    for path, item in check.items(raw, "types"):
        parsed = check.validate(AssetType, item, path)[0]
        if parsed is not None:
            types.append((path, parsed))
        elif isinstance(item, dict) and isinstance(item.get("id"), str):
            broken.add(item["id"])
    connections = [
        (path, c)
        for path, item in check.items(raw, "connections")
        if (c := check.validate(Connection, item, path)[0]) is not None
    ]
    tree: _Asset | None = None
    if "enterprise" not in raw:
        check.add(("enterprise",), "missing required key 'enterprise' (the asset tree)")
    else:
        tree = check.asset("enterprise", raw["enterprise"], ("enterprise",), None)
    semantics = _Semantics(check, broken)
    semantics.run(units, types, connections, tree)
    anomaly = [
        (path, rule)
        for path, item in check.items(raw, "anomaly")
        if (rule := check.validate(AnomalyRule, item, path)[0]) is not None
    ]
    equipment = [
        (n.path, n.model.type)
        for n in (_walk(tree) if tree is not None else ())
        if n.level == "equipment" and n.path is not None and n.model is not None
    ]
    check_anomaly(check.add, anomaly, semantics.resolved, broken | semantics.incomplete, equipment)
    if raw.get("alarms") is not None:
        assets = [
            (n.path, n.raw.get("type") if n.level == "equipment" else None)
            for n in (_walk(tree) if tree is not None else ())
            if n.path is not None
        ]
        unknown = broken | semantics.incomplete
        check_alarms(check, raw["alarms"], semantics.resolved, unknown, assets)
    return check, raw


def _build(text: str, filename: str) -> Factory:
    ydoc = read_yaml(text)
    check, raw = _check(ydoc, filename)
    issues = check.issues()
    if issues:
        raise FactoryFileError(issues)
    try:
        document = FactoryDocument.model_validate(raw)
    except ValidationError as exc:  # pragma: no cover - the node checks should catch all
        check.pydantic(exc, (), raw)
        raise FactoryFileError(check.issues()) from exc
    return Factory(document, filename)


def parse_factory(text: str | Mapping[str, Any], filename: str = "<string>") -> Factory:
    """Parse and validate a factory file given as YAML text.

    A mapping (an already loaded document) is accepted too: it is dumped to YAML first, so
    positions in its issues refer to that dump. Raises :class:`FactoryFileError` listing
    every problem found.
    """
    if not isinstance(text, str):
        text = yaml.safe_dump(dict(text), sort_keys=False, allow_unicode=True)
    return _build(text, filename)


def load_factory(path: str | os.PathLike[str]) -> Factory:
    """Read and validate the factory file at ``path``.

    Raises :class:`FactoryFileError` listing every problem found, also when the file
    cannot be read.
    """
    name = os.fspath(path)
    try:
        text = FsPath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FactoryFileError([ModelIssue(name, None, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FactoryFileError(
            [ModelIssue(name, None, None, "", f"cannot read the file: {exc}")]
        ) from exc
    return _build(text, name)

"""The validated factory: asset tree, resolved signals, bindings, attributes, state maps."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shopfloor.model._schema import (
    AssetType,
    Cell,
    Connection,
    Enterprise,
    Equipment,
    FactoryDocument,
    Line,
    Signal,
    Site,
)

__all__ = [
    "AssetNode",
    "Binding",
    "Factory",
    "ResolvedSignal",
    "ResolvedType",
    "resolve_types",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a signal's values come from: an address on a named connection.

    Values are converted to engineering units as ``raw * scale + offset``; ``options`` are
    passed to the connector as they are (e.g. an OPC UA sampling interval).
    """

    connection: str
    address: str
    scale: float = 1.0
    offset: float = 0.0
    options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ResolvedSignal:
    """A signal of one equipment, with its type's definition resolved through ``extends``.

    ``path`` is the signal's full name, ``asset path/signal``; ``binding`` is ``None`` for
    derived signals (computed by the platform).
    """

    path: str
    asset_path: str
    name: str
    data_type: str
    unit: str | None
    kind: str
    description: str
    semantic_id: str | None
    low: float | None
    high: float | None
    derived: bool
    binding: Binding | None


@dataclass(frozen=True, slots=True)
class AssetNode:
    """One node of the ISA-95 asset tree.

    ``level`` is one of ``enterprise``, ``site``, ``area``, ``line``, ``cell``,
    ``equipment``; ``type`` is set for equipment only; ``parent`` is the parent's path.
    """

    path: str
    id: str
    name: str
    level: str
    type: str | None
    parent: str | None


@dataclass(frozen=True, slots=True)
class ResolvedType:
    """An asset type merged with its ancestors (child definitions win)."""

    id: str
    signals: Mapping[str, Signal]
    attributes: Mapping[str, Any]
    states: Mapping[str, str]
    chain: tuple[str, ...]


def resolve_types(types: Mapping[str, AssetType]) -> dict[str, ResolvedType]:
    """Merge every type with its ancestors; unknown parents and cycles end the chain."""
    resolved: dict[str, ResolvedType] = {}
    for type_id in types:
        chain: list[str] = []
        current: str | None = type_id
        while current is not None and current in types and current not in chain:
            chain.append(current)
            current = types[current].extends
        signals: dict[str, Signal] = {}
        attributes: dict[str, Any] = {}
        states: dict[str, str] = {}
        for ancestor in reversed(chain):
            t = types[ancestor]
            for sig in t.signals:
                signals[sig.name] = sig
            attributes.update(t.attributes)
            states.update({str(code): state for code, state in t.states.items()})
        resolved[type_id] = ResolvedType(
            id=type_id,
            signals=MappingProxyType(signals),
            attributes=MappingProxyType(attributes),
            states=MappingProxyType(states),
            chain=tuple(chain),
        )
    return resolved


def _children(node: Enterprise | Site | Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Enterprise):
        yield from (("site", s) for s in node.sites)
    elif isinstance(node, Site):
        yield from (("area", a) for a in node.areas)
    elif isinstance(node, Line):
        yield from (("cell", c) for c in node.cells)
        yield from (("equipment", e) for e in node.equipment)
    elif isinstance(node, Cell):
        yield from (("equipment", e) for e in node.equipment)
    elif not isinstance(node, Equipment):  # an Area
        yield from (("line", ln) for ln in node.lines)


class Factory:
    """A validated factory file: the asset tree, its signals and where they come from.

    Build it with :func:`~shopfloor.model.load_factory` or
    :func:`~shopfloor.model.parse_factory`, which check the cross-references this class
    relies on. Assets are listed depth-first in file order (in a line, its cells come
    before the equipment that belongs to the line itself).
    """

    def __init__(self, document: FactoryDocument, source: str = "<string>") -> None:
        self.document: FactoryDocument = document
        """The validated pydantic document."""
        self.source: str = source
        """The file the factory was read from."""
        self.connections: dict[str, Connection] = {c.name: c for c in document.connections}
        """Device connections by name."""
        self._types = resolve_types({t.id: t for t in document.types})
        self._assets: list[AssetNode] = []
        self._by_path: dict[str, AssetNode] = {}
        self._equipment: dict[str, Equipment] = {}
        self._sites: dict[str, Site] = {}
        self._walk("enterprise", document.enterprise, None)
        self._signals: list[ResolvedSignal] = [
            sig for path, eq in self._equipment.items() for sig in self._resolve(path, eq)
        ]
        self._signal_by_path = {s.path: s for s in self._signals}

    def _walk(self, level: str, node: Any, parent: str | None) -> None:
        path = node.id if parent is None else f"{parent}/{node.id}"
        asset = AssetNode(
            path=path,
            id=node.id,
            name=node.name or node.id,
            level=level,
            type=node.type if isinstance(node, Equipment) else None,
            parent=parent,
        )
        self._assets.append(asset)
        self._by_path[path] = asset
        if isinstance(node, Equipment):
            self._equipment[path] = node
        if isinstance(node, Site):
            self._sites[path] = node
        for child_level, child in _children(node):
            self._walk(child_level, child, path)

    def _resolve(self, path: str, eq: Equipment) -> Iterator[ResolvedSignal]:
        for sig in self._types[eq.type].signals.values():
            binding: Binding | None = None
            spec = eq.bindings.get(sig.name)
            if spec is not None and not sig.derived:
                connection = spec.connection or eq.connection
                assert connection is not None  # checked by the loader
                binding = Binding(
                    connection=connection,
                    address=spec.address,
                    scale=spec.scale,
                    offset=spec.offset,
                    options=MappingProxyType(dict(spec.options)),
                )
            yield ResolvedSignal(
                path=f"{path}/{sig.name}",
                asset_path=path,
                name=sig.name,
                data_type=sig.data_type,
                unit=sig.unit,
                kind=sig.kind,
                description=sig.description,
                semantic_id=sig.semantic_id,
                low=sig.limits.low if sig.limits else None,
                high=sig.limits.high if sig.limits else None,
                derived=sig.derived,
                binding=binding,
            )

    def assets(self) -> list[AssetNode]:
        """Every asset, depth-first in tree order, the enterprise first."""
        return list(self._assets)

    def asset(self, path: str) -> AssetNode:
        """The asset at ``path``; :class:`KeyError` when there is none."""
        return self._by_path[path]

    def equipment(self) -> list[AssetNode]:
        """The equipment assets, in tree order."""
        return [a for a in self._assets if a.level == "equipment"]

    def signals(self) -> list[ResolvedSignal]:
        """Every signal of every equipment, in tree order, resolved through ``extends``."""
        return list(self._signals)

    def signal(self, path: str) -> ResolvedSignal:
        """The signal with full name ``path``; :class:`KeyError` when there is none."""
        return self._signal_by_path[path]

    def bindings(self) -> dict[tuple[str, str], ResolvedSignal]:
        """``(connection, address) → signal`` for every bound signal."""
        return {
            (s.binding.connection, s.binding.address): s
            for s in self._signals
            if s.binding is not None
        }

    def _equipment_type(self, equipment_path: str) -> tuple[Equipment, ResolvedType]:
        eq = self._equipment.get(equipment_path)
        if eq is None:
            raise KeyError(f"no equipment at {equipment_path!r}")
        return eq, self._types[eq.type]

    def attributes(self, equipment_path: str) -> dict[str, Any]:
        """The equipment's attributes: its type's (through ``extends``) with its overrides."""
        eq, t = self._equipment_type(equipment_path)
        return {**t.attributes, **eq.attributes}

    def state_map(self, equipment_path: str) -> dict[str, str]:
        """Raw state code (as a string) → standard state, for the equipment's type."""
        _, t = self._equipment_type(equipment_path)
        return dict(t.states)

    def site_of(self, asset_path: str) -> Site:
        """The site an asset belongs to; :class:`KeyError` for unknown or enterprise paths."""
        if asset_path not in self._by_path:
            raise KeyError(f"no asset at {asset_path!r}")
        site_path = "/".join(asset_path.split("/")[:2])
        if site_path not in self._sites:
            raise KeyError(f"{asset_path!r} is above the site level")
        return self._sites[site_path]

    def __repr__(self) -> str:
        return (
            f"Factory(source={self.source!r}, assets={len(self._assets)}, "
            f"signals={len(self._signals)})"
        )

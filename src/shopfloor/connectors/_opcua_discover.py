"""Browse an OPC UA server and describe what it has as a factory-file fragment.

Every object below the root that has variables becomes an *equipment* entry whose
``bindings`` map signal names to node ids; objects with the same structure (the same
signals with the same data types, units and kinds) share one *type*. Signals are
``measurement`` by default and ``setpoint`` when the variable is writable; the unit is
the UN/CEFACT common code of the variable's ``EngineeringUnits`` property (its
``EUInformation.UnitId``, OPC UA Part 8 §5.6.3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from shopfloor.connectors.opcua import OpcUaConnector
from shopfloor.errors import ConnectionFailed, ConnectorError

__all__ = ["DiscoveredEquipment", "discover", "fragment", "unit_code"]

_DATA_TYPES: dict[int, str] = {
    ObjectIds.Boolean: "bool",
    ObjectIds.SByte: "int",
    ObjectIds.Byte: "int",
    ObjectIds.Int16: "int",
    ObjectIds.UInt16: "int",
    ObjectIds.Int32: "int",
    ObjectIds.UInt32: "int",
    ObjectIds.Int64: "int",
    ObjectIds.UInt64: "int",
    ObjectIds.Integer: "int",
    ObjectIds.UInteger: "int",
    ObjectIds.Enumeration: "int",
    ObjectIds.Float: "float",
    ObjectIds.Double: "float",
    ObjectIds.Number: "float",
    ObjectIds.Duration: "float",
    ObjectIds.String: "string",
    ObjectIds.LocalizedText: "string",
    ObjectIds.DateTime: "string",
    ObjectIds.UtcTime: "string",
}
_SKIP = {ObjectIds.Server, ObjectIds.Aliases, ObjectIds.Locations}
_UNIT_PROPERTIES = {
    "EngineeringUnits",
    "EURange",
    "InstrumentRange",
    "Definition",
    "ValuePrecision",
}


def unit_code(unit_id: int) -> str | None:
    """The UN/CEFACT common code packed in an ``EUInformation.UnitId`` (e.g. 4408652 → CEL).

    OPC UA packs the (up to three character) code as ASCII bytes into the integer; -1 or 0
    means "no unit".
    """
    if unit_id <= 0:
        return None
    chars = [(unit_id >> shift) & 0xFF for shift in (24, 16, 8, 0)]
    text = "".join(chr(c) for c in chars if c)
    return text if text.isprintable() and text.strip() else None


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", text.strip()).strip("-").lower()
    return s or "node"


@dataclass(slots=True)
class _Signal:
    name: str
    data_type: str
    unit: str | None
    kind: str
    node_id: str

    def shape(self) -> tuple[str, str, str | None, str]:
        return (self.name, self.data_type, self.unit, self.kind)


@dataclass(slots=True)
class DiscoveredEquipment:
    """One object with variables, as found on the server."""

    name: str
    node_id: str
    type_hint: str
    signals: list[_Signal] = field(default_factory=list)


async def _signal(node: Node, name: str) -> _Signal | None:
    values = await node.read_attributes(
        [AttributeIds.DataType, AttributeIds.AccessLevel, AttributeIds.UserAccessLevel]
    )
    dtype = values[0].Value.Value if values[0].Value is not None else None
    if not isinstance(dtype, ua.NodeId):
        return None
    if dtype.NamespaceIndex == 0 and isinstance(dtype.Identifier, int):
        data_type = _DATA_TYPES.get(dtype.Identifier, "json")
    else:
        data_type = "json"
    access = 0
    for dv in values[1:]:
        if dv.Value is not None and isinstance(dv.Value.Value, int):
            access = dv.Value.Value if not access else access & dv.Value.Value
    writable = bool(access & ua.AccessLevel.CurrentWrite.mask)
    unit = None
    for prop in await node.get_properties():
        bname = await prop.read_browse_name()
        if bname.Name == "EngineeringUnits":
            eu = await prop.read_value()
            if isinstance(eu, ua.EUInformation):
                unit = unit_code(int(eu.UnitId)) or (eu.DisplayName.Text or None)
    return _Signal(
        name=_slug(name),
        data_type=data_type,
        unit=unit,
        kind="setpoint" if writable else "measurement",
        node_id=node.nodeid.to_string(),
    )


async def _walk(
    client: Client, node: Node, found: list[DiscoveredEquipment], depth: int, seen: set[str]
) -> None:
    key = node.nodeid.to_string()
    if key in seen or depth < 0:
        return
    seen.add(key)
    children = await node.get_children_descriptions(refs=ObjectIds.HierarchicalReferences)
    name = (await node.read_browse_name()).Name
    type_hint = ""
    with_type = await node.get_children_descriptions(refs=ObjectIds.HasTypeDefinition)
    for desc in with_type:
        tname = desc.BrowseName.Name
        if tname not in ("BaseObjectType", "FolderType"):
            type_hint = tname
    equipment = DiscoveredEquipment(name=name, node_id=key, type_hint=type_hint)
    for desc in children:
        child = client.get_node(desc.NodeId)
        if desc.NodeId.NamespaceIndex == 0 and desc.NodeId.Identifier in _SKIP:
            continue
        if desc.NodeClass == ua.NodeClass.Variable:
            if desc.BrowseName.Name in _UNIT_PROPERTIES:
                continue
            if desc.ReferenceTypeId == ua.NodeId(ua.Int32(ObjectIds.HasProperty)):
                continue
            sig = await _signal(child, desc.BrowseName.Name)
            if sig is not None:
                equipment.signals.append(sig)
        elif desc.NodeClass == ua.NodeClass.Object:
            if desc.NodeId.NamespaceIndex == 0:
                continue  # the standard address space (Server, Aliases, …)
            await _walk(client, child, found, depth - 1, seen)
    if equipment.signals:
        found.append(equipment)


async def discover(
    endpoint: str,
    *,
    root: str | None = None,
    connection: str = "opcua-1",
    options: Mapping[str, Any] | None = None,
    max_depth: int = 10,
) -> list[DiscoveredEquipment]:
    """Browse ``endpoint`` from ``root`` (default: the Objects folder).

    ``options`` are the connector's connection options (security, user name…). Raises
    :class:`~shopfloor.errors.ConnectionFailed` naming the connection when the server
    cannot be reached, :class:`~shopfloor.errors.ConnectorError` on a bad root node.
    """
    conn = OpcUaConnector(connection, endpoint, [], options)
    client = await conn._connect()  # same connection logic (and errors) as the connector
    try:
        start = client.get_node(root) if root else client.nodes.objects
        try:
            await start.read_browse_name()
        except Exception as exc:
            raise ConnectorError(
                f"connection {connection!r} ({endpoint}): root node {root!r} not found ({exc})"
            ) from exc
        found: list[DiscoveredEquipment] = []
        try:
            await _walk(client, start, found, max_depth, set())
        except (OSError, TimeoutError, UaError) as exc:
            raise ConnectionFailed(
                f"connection {connection!r} ({endpoint}): browsing failed: {exc}"
            ) from exc
        found.sort(key=lambda e: e.node_id)
        return found
    finally:
        await conn._close(client)


def fragment(
    equipment: list[DiscoveredEquipment],
    *,
    connection: str,
    endpoint: str,
    full: bool = False,
) -> dict[str, Any]:
    """The factory-file fragment for ``equipment``: connections, types, equipment.

    With ``full`` the equipment is wrapped in a minimal enterprise › site › area › line
    so that the result is a complete factory file.
    """
    types: dict[tuple[tuple[str, str, str | None, str], ...], str] = {}
    type_entries: list[dict[str, Any]] = []
    names_used: set[str] = set()
    eq_entries: list[dict[str, Any]] = []
    ids_used: set[str] = set()
    for eq in equipment:
        shape = tuple(sorted(s.shape() for s in eq.signals))
        type_id = types.get(shape)
        if type_id is None:
            base = (
                _slug(eq.type_hint) if eq.type_hint else _slug(re.sub(r"[-_ ]?\d+$", "", eq.name))
            )
            type_id, n = base, 2
            while type_id in names_used:
                type_id, n = f"{base}-{n}", n + 1
            names_used.add(type_id)
            types[shape] = type_id
            signals = []
            for name, data_type, unit, kind in shape:
                sig: dict[str, Any] = {"name": name, "data_type": data_type, "kind": kind}
                if unit:
                    sig["unit"] = unit
                signals.append(sig)
            type_entries.append({"id": type_id, "signals": signals})
        eq_id, n = _slug(eq.name), 2
        while eq_id in ids_used:
            eq_id, n = f"{_slug(eq.name)}-{n}", n + 1
        ids_used.add(eq_id)
        eq_entries.append(
            {
                "id": eq_id,
                "name": eq.name,
                "type": type_id,
                "connection": connection,
                "bindings": {s.name: s.node_id for s in eq.signals},
            }
        )
    doc: dict[str, Any] = {
        "connections": [{"name": connection, "protocol": "opcua", "endpoint": endpoint}],
        "types": type_entries,
    }
    if not full:
        doc["equipment"] = eq_entries
        return doc
    doc["enterprise"] = {
        "id": "enterprise",
        "name": "Enterprise",
        "sites": [
            {
                "id": "site",
                "name": "Site",
                "areas": [
                    {
                        "id": "area",
                        "name": "Area",
                        "lines": [{"id": "line", "name": "Line", "equipment": eq_entries}],
                    }
                ],
            }
        ],
    }
    return doc

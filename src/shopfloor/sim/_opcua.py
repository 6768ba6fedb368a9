"""One asyncua server per simulated OPC UA connection.

The server exposes the equipment of its connection as objects (the asset tree from the
line down), each bound signal as a variable with the binding's node id and the OPC UA data
type of the signal, ``EngineeringUnits`` / ``EURange`` properties where the signal has a
unit / limits, writable setpoints and an ``InjectFault(durationSeconds)`` method per
station. It knows nothing of the engine: it is handed numbers to publish and reports
setpoints written by clients.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStringParsingError

from shopfloor.errors import ShopfloorError

__all__ = ["LineServer", "ServedObject", "ServedSignal", "SimulatorError", "override_endpoint"]

log = logging.getLogger(__name__)

_VTYPE = {
    "float": ua.VariantType.Double,
    "int": ua.VariantType.Int32,
    "bool": ua.VariantType.Boolean,
    "string": ua.VariantType.String,
    "json": ua.VariantType.String,
}
_UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"


class SimulatorError(ShopfloorError):
    """The simulator could not start or serve (e.g. an endpoint's port is taken)."""


@dataclass(frozen=True)
class ServedSignal:
    """A signal as one server exposes it; ``index`` is its position in the engine."""

    index: int
    path: str
    equipment: str
    name: str
    address: str
    data_type: str
    kind: str
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    scale: float = 1.0
    offset: float = 0.0
    description: str = ""


@dataclass(frozen=True)
class ServedObject:
    """An asset shown as an object node; ``station`` when it accepts ``InjectFault``."""

    path: str
    name: str
    parent: str | None
    station: bool = False


def override_endpoint(endpoint: str, *, host: str | None = None, port_offset: int = 0) -> str:
    """``endpoint`` with another host and/or its port shifted by ``port_offset``."""
    parts = urlsplit(endpoint)
    hostname = host or parts.hostname or "127.0.0.1"
    port = (parts.port or 4840) + port_offset
    return urlunsplit((parts.scheme, f"{hostname}:{port}", parts.path, parts.query, ""))


def unit_information(code: str) -> ua.EUInformation:
    """The OPC UA ``EUInformation`` of a UN/CEFACT common code (UnitId per OPC UA Part 8)."""
    unit_id = 0
    for char in code.upper()[:4]:
        unit_id = (unit_id << 8) | ord(char)
    symbol = code
    try:
        from shopfloor.model._units import UNITS

        symbol = UNITS[code][1] if code in UNITS else code
    except ImportError:  # the model package is optional for the simulator core
        pass
    info = ua.EUInformation()
    info.NamespaceUri = _UNECE_URI
    info.UnitId = unit_id
    info.DisplayName = ua.LocalizedText(symbol)
    info.Description = ua.LocalizedText(code)
    return info


def _sid(text: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(text), ua.Int16(ns))


def _nid(number: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(number))


def _node_id(address: str, default_ns: int) -> ua.NodeId:
    try:
        return ua.NodeId.from_string(address)
    except (ValueError, UaStringParsingError):
        return _sid(address, default_ns)


class LineServer:
    """An asyncua server for one connection of the factory.

    ``on_fault(station_path, duration_s)`` is called by the ``InjectFault`` method.
    """

    def __init__(
        self,
        name: str,
        endpoint: str,
        objects: Sequence[ServedObject],
        signals: Sequence[ServedSignal],
        on_fault: Callable[[str, float], None],
        *,
        namespace_uri: str | None = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.objects = tuple(objects)
        self.signals = tuple(signals)
        self._on_fault = on_fault
        self._ns_uri = namespace_uri or f"urn:shopfloor:sim:{name}"
        self._server: Server | None = None
        self._nodes: list[ua.NodeId] = []
        self._vtypes: list[ua.VariantType] = []
        self._engine_idx = np.array([s.index for s in self.signals], dtype=np.int64)
        self._last: npt.NDArray[np.float64] | None = None
        self._setpoints = [k for k, s in enumerate(self.signals) if s.kind == "setpoint"]
        self._written: dict[int, ua.DataValue] = {}

    async def start(self) -> None:
        """Build the address space and start listening."""
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"shopfloor simulator: {self.name}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        ns = await server.register_namespace(self._ns_uri)
        wanted = {_node_id(s.address, ns).NamespaceIndex for s in self.signals}
        top = max(wanted | {ns})
        extra = ns
        while extra < top:  # addresses may name further namespaces (ns=3;…)
            extra = await server.register_namespace(f"{self._ns_uri}:{extra + 1}")
        nodes: dict[str, Any] = {}
        objects_folder = server.nodes.objects
        for obj in self.objects:
            parent = nodes.get(obj.parent or "", objects_folder)
            node = await parent.add_object(_sid(obj.path, ns), ua.QualifiedName(obj.name, ns))
            nodes[obj.path] = node
            if obj.station:
                await self._add_fault_method(node, obj.path, ns)
        for s in self.signals:
            parent = nodes.get(s.equipment, objects_folder)
            vtype = _VTYPE.get(s.data_type, ua.VariantType.Double)
            nodeid = _node_id(s.address, ns)
            var = await parent.add_variable(
                nodeid,
                ua.QualifiedName(s.name, nodeid.NamespaceIndex),
                ua.Variant(_zero(vtype), vtype),
                datatype=_nid(vtype.value),
            )
            if s.description:
                await var.write_attribute(
                    AttributeIds.Description,
                    ua.DataValue(ua.Variant(ua.LocalizedText(s.description))),
                )
            if s.unit:
                await var.add_property(
                    _sid(f"{s.path}/EngineeringUnits", ns),
                    ua.QualifiedName("EngineeringUnits", 0),
                    unit_information(s.unit),
                    datatype=_nid(ObjectIds.EUInformation),
                )
            if s.low is not None and s.high is not None:
                await var.add_property(
                    _sid(f"{s.path}/EURange", ns),
                    ua.QualifiedName("EURange", 0),
                    ua.Range(float(s.low), float(s.high)),
                    datatype=_nid(ObjectIds.Range),
                )
            if s.kind == "setpoint":
                await var.set_writable()
            self._nodes.append(nodeid)
            self._vtypes.append(vtype)
        try:
            await server.start()
        except OSError as exc:
            raise SimulatorError(f"{self.name}: cannot listen on {self.endpoint}: {exc}") from exc
        self._server = server
        log.info(
            "simulator %s serving %d signals on %s", self.name, len(self.signals), self.endpoint
        )

    async def _add_fault_method(self, node: Any, station: str, ns: int) -> None:
        on_fault = self._on_fault

        async def inject_fault(
            parent: ua.NodeId, duration: ua.Variant
        ) -> list[ua.Variant] | ua.StatusCode:
            seconds = float(duration.Value)
            if not seconds >= 0.0:
                return ua.StatusCode(ua.UInt32(StatusCodes.BadInvalidArgument))
            on_fault(station, seconds)
            return []

        arg = ua.Argument()
        arg.Name = "durationSeconds"
        arg.DataType = _nid(ObjectIds.Double)
        arg.ValueRank = -1
        arg.Description = ua.LocalizedText("How long the unplanned stop lasts (simulated s).")
        await node.add_method(
            _sid(f"{station}/InjectFault", ns),
            ua.QualifiedName("InjectFault", ns),
            inject_fault,
            [arg],
            [],
        )

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    async def publish(
        self, snapshot: npt.NDArray[np.float64], decode: Callable[[int, float], Any], when: datetime
    ) -> int:
        """Write the values that changed since the last publish, stamped ``when``.

        Setpoints are written only when the engine changed them, so that a value a client
        wrote stays until :meth:`client_writes` has handed it over. Returns the writes made.
        """
        server = self._server
        if server is None:
            return 0
        values = snapshot[self._engine_idx]
        if self._last is None:
            changed = np.arange(values.size)
        else:
            changed = np.flatnonzero(values != self._last)
        self._last = values
        wall = datetime.now(UTC)
        writes: list[Awaitable[None]] = []
        for k in changed.tolist():
            s = self.signals[k]
            value = decode(s.index, float(values[k]))
            vtype = self._vtypes[k]
            if (s.scale != 1.0 or s.offset != 0.0) and isinstance(value, int | float):
                raw = (float(value) - s.offset) / s.scale
                value = round(raw) if vtype == ua.VariantType.Int32 else raw
            dv = ua.DataValue(
                ua.Variant(value, vtype),
                SourceTimestamp=cast(ua.DateTime, when),
                ServerTimestamp=cast(ua.DateTime, wall),
            )
            if s.kind == "setpoint":
                self._written[k] = dv
            writes.append(server.write_attribute_value(self._nodes[k], dv))
        for write in writes:
            await write
        return len(writes)

    def client_writes(self) -> list[tuple[int, Any]]:
        """Setpoints clients wrote since the last call: ``(engine index, value)``."""
        server = self._server
        if server is None:
            return []
        out: list[tuple[int, Any]] = []
        for k in self._setpoints:
            dv = server.read_attribute_value(self._nodes[k])
            if dv is self._written.get(k) or dv.Value is None:
                continue
            self._written[k] = dv
            s = self.signals[k]
            value = dv.Value.Value
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = float(value) * s.scale + s.offset
            out.append((s.index, value))
        return out


def _zero(vtype: ua.VariantType) -> Any:
    if vtype == ua.VariantType.Boolean:
        return False
    if vtype == ua.VariantType.String:
        return ""
    if vtype == ua.VariantType.Double:
        return 0.0
    return 0

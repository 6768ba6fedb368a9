"""From a :class:`shopfloor.model.Factory` to the engine's specs and the servers' layout."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shopfloor.sim._calendar import ShiftCalendar
from shopfloor.sim._opcua import ServedObject, ServedSignal
from shopfloor.sim._spec import SignalSpec, StationSpec

__all__ = ["FactoryLike", "Layout", "build_layout"]

log = logging.getLogger(__name__)

_MOBILE = ("agv", "amr", "vehicle", "forklift")
# attribute names accepted for each StationSpec field, first wins
_ALIASES: Mapping[str, tuple[str, ...]] = {
    "ideal_cycle_time_s": ("ideal_cycle_time_s", "cycle_time_s"),
    "slowdown": ("slowdown", "slowdown_factor"),
    "reject_rate": ("reject_rate", "reject_probability", "scrap_rate"),
    "mtbf_min": ("mtbf_min",),
    "mttr_min": ("mttr_min",),
    "setup_min": ("setup_min", "setup_time_min"),
    "idle_rate_per_h": ("idle_rate_per_h",),
    "idle_min": ("idle_min",),
    "power_kw": ("power_kw", "rated_power_kw"),
    "buffer_capacity": ("buffer_capacity", "buffer_after", "buffer"),
}


class FactoryLike(Protocol):
    """What the simulator uses of :class:`shopfloor.model.Factory`."""

    @property
    def connections(self) -> Mapping[str, Any]: ...

    def assets(self) -> Sequence[Any]: ...
    def signals(self) -> Sequence[Any]: ...
    def attributes(self, equipment_path: str) -> Mapping[str, Any]: ...
    def state_map(self, equipment_path: str) -> Mapping[str, str]: ...
    def site_of(self, asset_path: str) -> Any: ...


@dataclass
class Layout:
    """The engine's input and, per OPC UA connection, what its server exposes."""

    stations: list[StationSpec] = field(default_factory=list)
    signals: list[SignalSpec] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    objects: dict[str, list[ServedObject]] = field(default_factory=dict)
    served: dict[str, list[ServedSignal]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Connection name → why it is not served (e.g. another protocol)."""
    lines: dict[str, list[str]] = field(default_factory=dict)
    """Line path → its station paths in flow order (stations without a line under "")."""


def _number(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _calendar(factory: FactoryLike, path: str, ancestors: Iterable[Any]) -> ShiftCalendar | None:
    try:
        site = factory.site_of(path)
    except (KeyError, ValueError, LookupError):
        return None
    cal = getattr(site, "calendar", None)
    tz = str(getattr(site, "timezone", "UTC") or "UTC")
    if cal is None:
        return ShiftCalendar(timezone=tz)
    names = {a.path for a in ancestors} | {a.id for a in ancestors}
    downtime = [
        d
        for d in getattr(cal, "planned_downtime", ())
        if not getattr(d, "assets", None) or names & set(d.assets)
    ]
    return ShiftCalendar.from_spec(
        tz,
        shifts=getattr(cal, "shifts", ()),
        breaks=getattr(cal, "breaks", ()),
        downtime=downtime,
    )


def _state_codes(state_map: Mapping[Any, str]) -> dict[str, Any]:
    codes: dict[str, Any] = {}
    for raw, standard in state_map.items():
        if standard in codes:
            continue
        text = str(raw)
        codes[standard] = int(text) if text.lstrip("-").isdigit() else text
    return codes


def build_layout(factory: FactoryLike) -> Layout:
    """Stations (machines, coupled per line in file order), their signals, and servers."""
    layout = Layout()
    assets = list(factory.assets())
    by_path = {a.path: a for a in assets}
    by_asset: dict[str, list[Any]] = {}
    for sig in factory.signals():
        if not getattr(sig, "derived", False):
            by_asset.setdefault(sig.asset_path, []).append(sig)
    connections = factory.connections

    def chain(asset: Any) -> list[Any]:
        out = [asset]
        while out[-1].parent is not None and out[-1].parent in by_path:
            out.append(by_path[out[-1].parent])
        return out[::-1]

    for asset in assets:
        if asset.level != "equipment" or any(m in str(asset.type).lower() for m in _MOBILE):
            continue
        sigs = by_asset.get(asset.path, [])
        bound = [s for s in sigs if s.binding is not None]
        protocols = {
            getattr(connections.get(s.binding.connection), "protocol", None) for s in bound
        }
        if not bound or protocols == {"vda5050"}:
            continue
        ancestors = chain(asset)
        coupled = any(s.kind in ("state", "counter") for s in sigs)
        line = next((a.path for a in ancestors if a.level == "line"), "") if coupled else ""
        attrs = dict(factory.attributes(asset.path))
        params: dict[str, Any] = {}
        for name, aliases in _ALIASES.items():
            value = next((_number(attrs[a]) for a in aliases if a in attrs), None)
            if value is not None:
                params[name] = int(value) if name == "buffer_capacity" else value
        layout.stations.append(
            StationSpec.with_defaults(
                asset.path,
                str(asset.type),
                line=line,
                calendar=_calendar(factory, asset.path, ancestors),
                state_codes=_state_codes(factory.state_map(asset.path)),
                **params,
            )
        )
        layout.lines.setdefault(line, []).append(asset.path)
        for s in bound:
            index = len(layout.signals)
            initial = attrs.get(s.name) if s.kind == "setpoint" else None
            layout.signals.append(
                SignalSpec(
                    path=s.path,
                    station=asset.path,
                    name=s.name,
                    data_type=s.data_type,
                    kind=s.kind,
                    unit=s.unit,
                    low=_number(s.low),
                    high=_number(s.high),
                    initial=initial,
                )
            )
            conn = connections.get(s.binding.connection)
            if conn is None:
                continue
            if conn.protocol != "opcua":
                layout.skipped.setdefault(conn.name, f"{conn.protocol} is not simulated yet")
                continue
            layout.endpoints[conn.name] = conn.endpoint
            objects = layout.objects.setdefault(conn.name, [])
            known = {o.path for o in objects}
            start = next((i for i, a in enumerate(ancestors) if a.level == "line"), 0)
            parent: str | None = None
            for a in ancestors[start:]:
                if a.path not in known:
                    objects.append(ServedObject(a.path, a.id, parent, station=a.path == asset.path))
                    known.add(a.path)
                parent = a.path
            layout.served.setdefault(conn.name, []).append(
                ServedSignal(
                    index=index,
                    path=s.path,
                    equipment=asset.path,
                    name=s.name,
                    address=s.binding.address,
                    data_type=s.data_type,
                    kind=s.kind,
                    unit=s.unit,
                    low=_number(s.low),
                    high=_number(s.high),
                    scale=float(getattr(s.binding, "scale", 1.0) or 1.0),
                    offset=float(getattr(s.binding, "offset", 0.0) or 0.0),
                    description=str(getattr(s, "description", "") or ""),
                )
            )
    for name, conn in connections.items():
        if name not in layout.endpoints and name not in layout.skipped:
            why = "nothing bound to it" if conn.protocol == "opcua" else f"{conn.protocol}"
            layout.skipped[name] = why if conn.protocol == "opcua" else f"{why} is not simulated"
    return layout

"""The non-OPC UA devices of a factory file, simulated: Modbus servers and AGV fleets.

Convention (see also the comment of ``examples/acme-munich.yaml``):

* every connection of protocol ``modbus`` gets a :class:`ModbusDeviceServer` on its
  endpoint's port (plus ``port_offset``); its equipment are served by type: an equipment of
  type ``power-meter`` by a :class:`PowerMeter`, one of type ``legacy-press`` by a
  :class:`LegacyPressPlc` (a :class:`PressPlc` with an energy register), with the unit id
  of the equipment's bindings (``unit=``, one per equipment). Every binding address must
  be one of the device's :meth:`~ModbusDevice.register_map` addresses. With a
  :class:`~shopfloor.sim.Simulator`, a press follows the engine's state and counters of
  its equipment and a meter the state of its line's stations; without one they run their
  own shift and failure models.
* every connection of protocol ``vda5050`` gets an :class:`AgvFleetSimulator` against
  its broker (``mqtt://host:port``; the broker is not started here), one vehicle per
  serial number (the first segment of the bindings' addresses), with the connection's
  ``interface_name``, ``major_version`` and ``manufacturer`` options. An unreachable
  broker is reported in :attr:`SimulatedDevices.skipped`, not raised. With a
  :class:`~shopfloor.sim.Simulator`, the vehicles' message headers carry its simulated time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import aiomqtt

from shopfloor.connectors.modbus import parse_address
from shopfloor.sim._agv import AgvFleetSimulator
from shopfloor.sim._modbus import (
    _POWER_SHARE,
    ModbusDevice,
    ModbusDeviceServer,
    PowerMeter,
    PressPlc,
)

if TYPE_CHECKING:
    from shopfloor.model import Factory
    from shopfloor.sim._factory import Simulator

__all__ = ["LegacyPressPlc", "SimulatedDevices", "simulate_devices"]

log = logging.getLogger(__name__)

MODBUS_TYPES = ("power-meter", "legacy-press")
"""Equipment types served by a simulated Modbus device."""

_BUSIEST = ("running", "setup", "idle", "starved", "blocked", "unplanned_stop", "planned_stop")


class LegacyPressPlc(PressPlc):
    """A :class:`PressPlc` with an ``energy`` meter (kWh in 0.1 kWh, uint32, ``CDAB``, at
    holding register 10), optionally counting as the simulation engine does.

    ``counts_source`` returns the engine's (good, reject) counters of the equipment; the
    PLC then reports those instead of its own strokes.
    """

    REGISTERS: ClassVar[Mapping[str, str]] = {
        **PressPlc.REGISTERS,
        "energy": "hr=10;type=uint32;order=CDAB;scale=0.1",
    }
    UNITS: ClassVar[Mapping[str, str]] = {**PressPlc.UNITS, "energy": "KWH"}

    def __init__(
        self,
        unit_id: int = 2,
        *,
        rated_kw: float = 45.0,
        counts_source: Callable[[], tuple[int, int]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.rated_kw = rated_kw
        self.energy_kwh = 0.0
        self.counts_source = counts_source
        super().__init__(unit_id, **kwargs)

    def step(self, sim_time_s: float, dt_s: float) -> None:
        """The press's step, then the engine's counters (if coupled) and the energy."""
        super().step(sim_time_s, dt_s)
        if self.counts_source is not None:
            self.good, self.reject = self.counts_source()
            self.set("good_count", self.good % 2**32)
            self.set("reject_count", self.reject % 2**32)
        share = _POWER_SHARE.get(self.state, 0.0)
        self.energy_kwh += share * self.rated_kw * max(dt_s, 0.0) / 3600.0
        self.set("energy", min(self.energy_kwh, 429_496_729.0))


@dataclass
class SimulatedDevices:
    """What :func:`simulate_devices` runs, and what it skipped (name → reason)."""

    endpoints: dict[str, str] = field(default_factory=dict)
    """Connection name → the endpoint its simulated devices are reachable at."""
    modbus: dict[str, ModbusDeviceServer] = field(default_factory=dict)
    agvs: dict[str, AgvFleetSimulator] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)
    """Connection name → what runs for it (one line, for a console)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Connection or equipment → why it is not simulated."""


def _number(value: Any, default: float) -> float:
    try:
        return default if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return default


def _modbus_endpoint(
    endpoint: str, host: str | None, port: int | None, port_offset: int
) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    hostname = host or parts.hostname or "127.0.0.1"
    return hostname, port if port is not None else (parts.port or 502) + port_offset


def _line_state(sim: Simulator, stations: list[str]) -> Callable[[], str]:
    """The busiest state among a line's stations (what its feed meter sees)."""

    def state() -> str:
        states = {sim.state_of(p) for p in stations}
        return next((s for s in _BUSIEST if s in states), "offline")

    return state


def _devices_of(
    factory: Factory,
    connection: str,
    seed: int,
    sim: Simulator | None,
    skipped: dict[str, str],
) -> list[ModbusDevice]:
    by_equipment: dict[str, list[Any]] = {}
    for sig in factory.signals():
        if sig.binding is not None and sig.binding.connection == connection:
            by_equipment.setdefault(sig.asset_path, []).append(sig)
    devices: list[ModbusDevice] = []
    for i, (path, sigs) in enumerate(by_equipment.items()):
        kind = factory.asset(path).type
        if kind not in MODBUS_TYPES:
            skipped[path] = (
                f"type {kind!r} has no simulated Modbus device ({', '.join(MODBUS_TYPES)})"
            )
            continue
        try:
            addrs = {s.name: parse_address(s.binding.address) for s in sigs}
        except ValueError as exc:
            skipped[path] = f"bad Modbus address: {exc}"
            continue
        units = {a.unit for a in addrs.values()}
        if len(units) != 1:
            skipped[path] = f"its bindings use several unit ids ({sorted(units)}); one per device"
            continue
        unit = units.pop()
        attrs = factory.attributes(path)
        rated = _number(attrs.get("rated_kw", attrs.get("power_kw")), 45.0)
        device: ModbusDevice
        if kind == "power-meter":
            source = None
            if sim is not None:
                line = "/".join(path.split("/")[:4])  # enterprise/site/area/line
                stations = sim.layout.lines.get(line, [])
                source = _line_state(sim, stations) if stations else None
            device = PowerMeter(unit, rated_kw=rated, seed=seed + i, state_source=source)
        else:
            state_source: Callable[[], str] | None = None
            counts: Callable[[], tuple[int, int]] | None = None
            if sim is not None and path in sim.engine.states():
                state_source, counts = _engine_press(sim, path)
            device = LegacyPressPlc(
                unit,
                rated_kw=rated,
                ideal_cycle_time_s=_number(attrs.get("ideal_cycle_time_s"), 12.0),
                seed=seed + i,
                state_source=state_source,
                counts_source=counts,
            )
        served = {parse_address(a) for a in device.register_map().values()}
        wrong = sorted(n for n, a in addrs.items() if a not in served)
        if wrong:
            skipped[path] = (
                f"binding(s) {', '.join(wrong)} not in the {type(device).__name__}'s register map"
            )
            continue
        devices.append(device)
    return devices


def _engine_press(
    sim: Simulator, path: str
) -> tuple[Callable[[], str], Callable[[], tuple[int, int]]]:
    """The engine's state and (good, reject) counters of the station at ``path``."""
    engine = sim.engine

    def state() -> str:
        return engine.state_of(path)

    def counts() -> tuple[int, int]:
        c = engine.counters()
        return c.get(f"{path}/good_count", 0), c.get(f"{path}/reject_count", 0)

    return state, counts


async def _reachable(host: str, port: int, timeout_s: float = 1.0) -> str | None:
    """None when an MQTT broker at ``host:port`` accepts a session, else why not.

    A real MQTT handshake rather than a bare TCP probe: brokers log a bare probe as an error.
    """
    try:
        async with (
            asyncio.timeout(timeout_s),
            aiomqtt.Client(
                host, port, timeout=timeout_s, identifier=f"probe-{uuid.uuid4().hex[:8]}"
            ),
        ):
            return None
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except aiomqtt.MqttError as exc:
        return f"{host}:{port}: {exc}"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def _serials(factory: Factory, connection: str) -> list[str]:
    serials: list[str] = []
    for sig in factory.signals():
        if sig.binding is not None and sig.binding.connection == connection:
            serial = sig.binding.address.split("/", 1)[0]
            if serial not in serials:
                serials.append(serial)
    return serials


def _fleet(
    factory: Factory,
    connection: str,
    host: str,
    port: int,
    seed: int,
    speed: float,
    clock: Callable[[], datetime] | None = None,
) -> AgvFleetSimulator:
    opts = factory.connections[connection].options
    serials = _serials(factory, connection)
    fleet = AgvFleetSimulator(
        len(serials),
        host=host,
        port=port,
        interface_name=str(opts.get("interface_name", "uagv")),
        major_version=str(opts.get("major_version", "v2")),
        manufacturer=str(opts.get("manufacturer", "ShopfloorSim")),
        seed=seed,
        speed=speed,
        clock=clock,
    )
    # the fleet numbers its vehicles AGV-001…; give them the file's serial numbers
    links = list(fleet._links.values())
    for link, serial in zip(links, serials, strict=True):
        link.vehicle.serial = serial
    fleet.vehicles = {link.vehicle.serial: link.vehicle for link in links}
    fleet._links = {link.vehicle.serial: link for link in links}
    return fleet


@contextlib.asynccontextmanager
async def simulate_devices(
    factory: Factory,
    *,
    port_offset: int = 0,
    seed: int = 42,
    speed: float = 60.0,
    host: str | None = None,
    endpoint_override: Mapping[str, str] | None = None,
    modbus_port: int | None = None,
    agvs: bool | None = None,
    agv_speed: float | None = None,
    simulator: Simulator | None = None,
) -> AsyncIterator[SimulatedDevices]:
    """Serve a factory file's Modbus devices and drive its AGV fleets (module doc).

    ``port_offset`` shifts the Modbus ports; ``modbus_port`` puts the first Modbus
    connection on that port, the next on the following one, and so on; ``host`` listens
    elsewhere than the endpoints say; ``endpoint_override`` (connection → endpoint) wins
    over both. ``agvs``: ``None`` runs the fleets whose broker is reachable, ``False`` none,
    ``True`` tries every one (an unreachable broker is still only reported). AGVs run at
    ``agv_speed`` (default ``min(speed, 5)``: faster, they would jump across the hall).
    ``simulator`` couples the devices to its engine, and the AGVs stamp their messages
    with its simulated time (else with the wall clock).
    """
    overrides = dict(endpoint_override or {})
    out = SimulatedDevices()
    async with contextlib.AsyncExitStack() as stack:
        n_modbus = 0
        for name, conn in factory.connections.items():
            if conn.protocol == "modbus":
                if name in overrides:
                    parts = urlsplit(overrides[name])
                    where = (parts.hostname or "127.0.0.1", parts.port or 502)
                else:
                    port = None if modbus_port is None else modbus_port + n_modbus
                    where = _modbus_endpoint(conn.endpoint, host, port, port_offset)
                n_modbus += 1
                devices = _devices_of(factory, name, seed, simulator, out.skipped)
                if not devices:
                    out.skipped[name] = "no equipment with a simulated Modbus device"
                    continue
                server = ModbusDeviceServer(
                    devices, where[0], where[1], speed=speed, start_time_s=_start(simulator)
                )
                await stack.enter_async_context(server)
                out.modbus[name] = server
                out.endpoints[name] = server.endpoint
                out.running[name] = f"Modbus {server.endpoint}: " + ", ".join(
                    f"unit {d.unit_id} {type(d).__name__}" for d in devices
                )
            elif conn.protocol == "vda5050" and agvs is not False:
                endpoint = overrides.get(name, conn.endpoint)
                parts = urlsplit(endpoint)
                broker = (parts.hostname or "127.0.0.1", parts.port or 1883)
                if parts.scheme != "mqtt":
                    out.skipped[name] = f"AGVs not simulated: {parts.scheme}:// is not supported"
                    continue
                if not _serials(factory, name):
                    out.skipped[name] = "AGVs not simulated: no vehicle is bound to it"
                    continue
                why = await _reachable(*broker)
                if why is not None:
                    out.skipped[name] = f"AGVs not simulated: MQTT broker unreachable ({why})"
                    continue
                fleet = _fleet(
                    factory,
                    name,
                    broker[0],
                    broker[1],
                    seed,
                    agv_speed or min(speed, 5.0),
                    _clock(simulator),
                )
                try:
                    await stack.enter_async_context(fleet)
                except Exception as exc:  # the broker refused the sessions
                    out.skipped[name] = f"AGVs not simulated: {exc}"
                    continue
                out.agvs[name] = fleet
                out.endpoints[name] = endpoint
                out.running[name] = (
                    f"{len(fleet.vehicles)} AGVs on {endpoint}: {', '.join(fleet.vehicles)}"
                )
        yield out


def _clock(sim: Simulator | None) -> Callable[[], datetime] | None:
    """The simulator's time (what its data is stamped with), or None for the wall clock."""
    if sim is None:
        return None
    return lambda: sim.now


def _start(sim: Simulator | None) -> float | None:
    return None if sim is None else sim.now.timestamp()

"""Simulated Modbus TCP devices: three-phase power meters and a legacy press PLC.

Each device owns four small tables (coils, discrete inputs, input and holding registers)
that its :meth:`~ModbusDevice.step` method updates from a seeded random generator, and
publishes a register map (signal name → address in the syntax of
:mod:`shopfloor.connectors.modbus`) from which a factory file binding can be written.
:class:`ModbusDeviceServer` serves a set of devices, one unit id each, with pymodbus's
asyncio TCP server and steps them along the wall clock.

Devices can follow a station of the simulation engine: ``state_source`` is a callable
returning the station's standard state (one of :data:`shopfloor.sim.STATES`), e.g.
``lambda: simulation.state_of("acme/munich/body-shop/line-1/press-7")``. Without it a
meter follows a two-shift weekday profile and the press runs its own shift and failure
model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from shopfloor.connectors.modbus import BIT_TABLES, ModbusAddress, parse_address
from shopfloor.sim._opcua import SimulatorError

__all__ = ["ModbusDevice", "ModbusDeviceServer", "PowerMeter", "PressPlc", "shift_status"]

log = logging.getLogger(__name__)

StateSource = Callable[[], str]

_TABLE_OF_FC: dict[int, str] = {1: "coil", 5: "coil", 15: "coil", 2: "di", 4: "ir"}
_TABLE_OF_FC.update(dict.fromkeys((3, 6, 16, 22, 23), "hr"))

# share of the rated power drawn per standard state (as the engine's energy model)
_POWER_SHARE: Mapping[str, float] = {
    "running": 1.0,
    "idle": 0.35,
    "starved": 0.35,
    "blocked": 0.35,
    "planned_stop": 0.15,
    "unplanned_stop": 0.2,
    "setup": 0.4,
    "offline": 0.02,
}


def shift_status(sim_time_s: float) -> str:
    """``work``, ``break`` or ``off`` of a two-shift weekday (06–22 h, UTC) at a time.

    ``sim_time_s`` is seconds since the Unix epoch (its time of day and weekday count).
    Breaks: 09:00–09:15, 12:00–12:30, 14:00–14:10 (shift change), 18:00–18:15, 20:00–20:30.
    """
    day = int(sim_time_s // 86_400)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hour = (sim_time_s % 86_400) / 3600.0
    if weekday >= 5 or not 6.0 <= hour < 22.0:
        return "off"
    breaks = ((9.0, 9.25), (12.0, 12.5), (14.0, 14.0 + 1 / 6), (18.0, 18.25), (20.0, 20.5))
    if any(lo <= hour < hi for lo, hi in breaks):
        return "break"
    return "work"


class ModbusDevice(ABC):
    """A simulated Modbus device: register tables, a register map and a ``step``.

    Subclasses set :attr:`REGISTERS` (signal name → address without ``unit=``) and
    :attr:`WRITABLE` (names clients may write), and implement :meth:`step`.
    """

    REGISTERS: ClassVar[Mapping[str, str]] = {}
    """Signal name → address (connector syntax, without the unit id)."""
    UNITS: ClassVar[Mapping[str, str]] = {}
    """Signal name → UN/CEFACT unit code, where the signal has one."""
    WRITABLE: ClassVar[frozenset[str]] = frozenset()
    """Names of the signals clients may write (others answer *illegal data address*)."""

    def __init__(
        self, unit_id: int, *, seed: int = 0, state_source: StateSource | None = None
    ) -> None:
        if not 1 <= unit_id <= 247:
            raise SimulatorError(f"unit id {unit_id} is not within 1…247")
        self.unit_id = unit_id
        self.state_source = state_source
        self.rng = np.random.default_rng(seed)
        self._addr: dict[str, ModbusAddress] = {
            name: parse_address(text, unit_id) for name, text in self.REGISTERS.items()
        }
        sizes = dict.fromkeys(("coil", "di", "ir", "hr"), 16)
        for a in self._addr.values():
            need = a.address + a.width
            sizes[a.table] = max(sizes[a.table], (need + 15) // 16 * 16)
        self.bits: dict[str, list[bool]] = {t: [False] * sizes[t] for t in ("coil", "di")}
        self.regs: dict[str, list[int]] = {t: [0] * sizes[t] for t in ("ir", "hr")}
        self._writable: dict[tuple[str, int], str] = {}
        for name in self.WRITABLE:
            a = self._addr[name]
            for k in range(a.width):
                self._writable[(a.table, a.address + k)] = name

    def register_map(self) -> dict[str, str]:
        """Signal name → full address string (with ``unit=``) for the Modbus connector."""
        return {name: f"unit={self.unit_id};{text}" for name, text in self.REGISTERS.items()}

    def set(self, name: str, value: Any) -> None:
        """Store ``value`` in the registers (or bit) of signal ``name``."""
        a = self._addr[name]
        if a.table in BIT_TABLES:
            self.bits[a.table][a.address] = bool(value)
        elif a.bit is not None:
            word = self.regs[a.table][a.address]
            mask = 1 << a.bit
            self.regs[a.table][a.address] = (word | mask) if value else (word & ~mask)
        else:
            self.regs[a.table][a.address : a.address + a.width] = a.encode(value)

    def get(self, name: str) -> Any:
        """The value of signal ``name`` as a client decodes it."""
        a = self._addr[name]
        if a.table in BIT_TABLES:
            return self.bits[a.table][a.address]
        return a.decode(self.regs[a.table][a.address : a.address + a.width])

    def _state(self, own: str) -> str:
        """The coupled station's state if there is one, else ``own``."""
        if self.state_source is None:
            return own
        state = self.state_source()
        return state if state in _POWER_SHARE else "offline"

    def handle_write(self, table: str, address: int, values: Sequence[int | bool]) -> int | None:
        """Apply a client's write; return a Modbus exception code to refuse it."""
        names = {self._writable.get((table, address + k)) for k in range(len(values))}
        if None in names:
            return int(ExcCodes.ILLEGAL_ADDRESS)
        if table == "coil":
            self.bits["coil"][address : address + len(values)] = [bool(v) for v in values]
        else:
            self.regs["hr"][address : address + len(values)] = [int(v) & 0xFFFF for v in values]
        for name in sorted(n for n in names if n is not None):
            self.on_write(name)
        return None

    def on_write(self, name: str) -> None:
        """React to a client having written signal ``name`` (default: nothing)."""
        del name

    @abstractmethod
    def step(self, sim_time_s: float, dt_s: float) -> None:
        """Advance ``dt_s`` seconds of simulated time ending at ``sim_time_s`` (epoch s)."""


class PowerMeter(ModbusDevice):
    """A three-phase power meter: float32 input registers, big-endian (``ABCD``).

    Voltages L1–L3 (V, ``VLT``) at 0/2/4, currents (A, ``AMP``) at 6/8/10, total active
    power (kW, ``KWT``) at 12, imported energy (kWh, ``KWH``) at 14, power factor at 16 and
    frequency (Hz, ``HTZ``) at 18. The load follows the station's state when a
    ``state_source`` is given (share of ``rated_kw`` per state), else a two-shift weekday
    profile; it reaches its target with a 20 s lag, plus noise.
    """

    REGISTERS: ClassVar[Mapping[str, str]] = {
        "voltage_l1": "ir=0;type=float32",
        "voltage_l2": "ir=2;type=float32",
        "voltage_l3": "ir=4;type=float32",
        "current_l1": "ir=6;type=float32",
        "current_l2": "ir=8;type=float32",
        "current_l3": "ir=10;type=float32",
        "active_power": "ir=12;type=float32",
        "energy": "ir=14;type=float32",
        "power_factor": "ir=16;type=float32",
        "frequency": "ir=18;type=float32",
    }
    UNITS: ClassVar[Mapping[str, str]] = {
        "voltage_l1": "VLT",
        "voltage_l2": "VLT",
        "voltage_l3": "VLT",
        "current_l1": "AMP",
        "current_l2": "AMP",
        "current_l3": "AMP",
        "active_power": "KWT",
        "energy": "KWH",
        "frequency": "HTZ",
    }

    def __init__(
        self,
        unit_id: int = 1,
        *,
        rated_kw: float = 45.0,
        nominal_voltage: float = 230.0,
        energy_kwh: float = 0.0,
        seed: int = 0,
        state_source: StateSource | None = None,
    ) -> None:
        super().__init__(unit_id, seed=seed, state_source=state_source)
        self.rated_kw = rated_kw
        self.nominal_voltage = nominal_voltage
        self.energy_kwh = energy_kwh
        self.power_kw = 0.0
        self._unbalance = 1.0 + self.rng.normal(0.0, 0.02, 3)
        self._update(0.0)

    def _target_share(self, sim_time_s: float) -> float:
        if self.state_source is not None:
            return _POWER_SHARE[self._state("offline")]
        return {"work": 0.85, "break": 0.3, "off": 0.05}[shift_status(sim_time_s)]

    def step(self, sim_time_s: float, dt_s: float) -> None:
        """Move the load towards the state's (or profile's) share and integrate energy."""
        target = self._target_share(sim_time_s) * self.rated_kw
        alpha = 1.0 - math.exp(-max(dt_s, 0.0) / 20.0)
        self.power_kw += (target - self.power_kw) * alpha
        noisy = max(0.0, self.power_kw * (1.0 + self.rng.normal(0.0, 0.02)))
        self.energy_kwh += noisy * max(dt_s, 0.0) / 3600.0
        self._update(noisy)

    def _update(self, power_kw: float) -> None:
        load = min(power_kw / self.rated_kw, 1.5) if self.rated_kw > 0 else 0.0
        volts = self.nominal_voltage * (1.0 - 0.01 * load + self.rng.normal(0.0, 0.003, 3))
        pf = min(0.98, 0.7 + 0.25 * load) if power_kw > 0 else 1.0
        amps = power_kw * 1000.0 / (3.0 * volts * pf) * self._unbalance
        for i in range(3):
            self.set(f"voltage_l{i + 1}", float(volts[i]))
            self.set(f"current_l{i + 1}", float(max(amps[i], 0.0)))
        self.set("active_power", power_kw)
        self.set("energy", self.energy_kwh)
        self.set("power_factor", pf)
        self.set("frequency", 50.0 + float(self.rng.normal(0.0, 0.01)))


class PressPlc(ModbusDevice):
    """A legacy press PLC: holding registers and coils.

    Holding registers: ``state`` (uint16 code, :attr:`STATE_CODES`) at 0, hydraulic
    ``pressure`` (int16, 0.1 bar) at 1, ``good_count``, ``reject_count`` and
    ``stroke_count`` (uint32, low word first — ``CDAB``, as many old PLCs) at 2, 4 and 6,
    ``pressure_setpoint`` (int16, 0.1 bar, writable) at 8, ``cycle_time`` of the last stroke
    (uint16, 0.01 s) at 9. Coils: ``running`` 0, ``fault`` 1, ``fault_reset`` 2 (writable:
    writing 1 clears a fault of the press's own failure model).

    Without a ``state_source`` the press works a two-shift weekday and fails at random
    (exponential MTBF over running time, MTTR); with one it follows the station's state.
    """

    REGISTERS: ClassVar[Mapping[str, str]] = {
        "state": "hr=0;type=uint16",
        "pressure": "hr=1;type=int16;scale=0.1",
        "good_count": "hr=2;type=uint32;order=CDAB",
        "reject_count": "hr=4;type=uint32;order=CDAB",
        "stroke_count": "hr=6;type=uint32;order=CDAB",
        "pressure_setpoint": "hr=8;type=int16;scale=0.1",
        "cycle_time": "hr=9;type=uint16;scale=0.01",
        "running": "coil=0",
        "fault": "coil=1",
        "fault_reset": "coil=2",
    }
    UNITS: ClassVar[Mapping[str, str]] = {
        "pressure": "BAR",
        "pressure_setpoint": "BAR",
        "cycle_time": "SEC",
    }
    WRITABLE: ClassVar[frozenset[str]] = frozenset({"pressure_setpoint", "fault_reset"})
    STATE_CODES: ClassVar[Mapping[str, int]] = {
        "offline": 0,
        "idle": 2,
        "running": 3,
        "starved": 4,
        "blocked": 5,
        "planned_stop": 6,
        "setup": 7,
        "unplanned_stop": 9,
    }
    """Standard state → the PLC's raw state code (for the factory file's ``states``)."""

    def __init__(
        self,
        unit_id: int = 2,
        *,
        ideal_cycle_time_s: float = 12.0,
        reject_rate: float = 0.02,
        mtbf_min: float = 180.0,
        mttr_min: float = 12.0,
        pressure_setpoint_bar: float = 180.0,
        seed: int = 0,
        state_source: StateSource | None = None,
    ) -> None:
        super().__init__(unit_id, seed=seed, state_source=state_source)
        self.ideal_cycle_time_s = ideal_cycle_time_s
        self.reject_rate = reject_rate
        self.mtbf_s = mtbf_min * 60.0
        self.mttr_s = mttr_min * 60.0
        self.setpoint_bar = pressure_setpoint_bar
        self.state = "offline"
        self.good = self.reject = self.strokes = 0
        self.pressure_bar = 0.0
        self._progress = 0.0
        self._cycle_s = ideal_cycle_time_s
        self._repair_s = 0.0
        self._to_failure_s = float(self.rng.exponential(self.mtbf_s))
        self._publish()

    def on_write(self, name: str) -> None:
        """Take a written setpoint, or a fault reset."""
        if name == "pressure_setpoint":
            self.setpoint_bar = float(self.get("pressure_setpoint"))
        elif name == "fault_reset" and self.get("fault_reset"):
            self._repair_s = 0.0
            self.set("fault_reset", False)

    def _own_state(self, sim_time_s: float, dt_s: float) -> str:
        if self._repair_s > 0.0:
            self._repair_s = max(0.0, self._repair_s - dt_s)
            if self._repair_s > 0.0:
                return "unplanned_stop"
        status = shift_status(sim_time_s)
        if status == "off":
            return "offline"
        if status == "break":
            return "planned_stop"
        return "running"

    def step(self, sim_time_s: float, dt_s: float) -> None:
        """Run strokes while running, count good and rejected parts, follow the setpoint."""
        dt_s = max(dt_s, 0.0)
        self.state = self._state(self._own_state(sim_time_s, dt_s))
        if self.state == "running":
            self._progress += dt_s / self._cycle_s
            n = int(self._progress)
            if n:
                self._progress -= n
                rejects = int(self.rng.binomial(n, self.reject_rate))
                self.strokes += n
                self.reject += rejects
                self.good += n - rejects
                self._cycle_s = self.ideal_cycle_time_s * (1.0 + self.rng.exponential(0.08))
            if self.state_source is None:
                self._to_failure_s -= dt_s
                if self._to_failure_s <= 0.0:
                    self._repair_s = float(self.rng.exponential(self.mttr_s))
                    self._to_failure_s = float(self.rng.exponential(self.mtbf_s))
        target = {"running": self.setpoint_bar, "offline": 0.0}.get(self.state, 20.0)
        alpha = 1.0 - math.exp(-dt_s / 5.0)
        self.pressure_bar += (target - self.pressure_bar) * alpha
        self._publish()

    def _publish(self) -> None:
        noise = float(self.rng.normal(0.0, 1.0)) if self.state == "running" else 0.0
        self.set("state", self.STATE_CODES[self.state])
        self.set("pressure", min(max(self.pressure_bar + noise, 0.0), 3000.0))
        self.set("good_count", self.good % 2**32)
        self.set("reject_count", self.reject % 2**32)
        self.set("stroke_count", self.strokes % 2**32)
        self.set("pressure_setpoint", self.setpoint_bar)
        self.set("cycle_time", min(self._cycle_s, 655.0))
        self.set("running", self.state == "running")
        self.set("fault", self.state == "unplanned_stop")


def _action(
    device: ModbusDevice,
) -> Callable[
    [int, int, int, int, list[int], list[int] | list[bool] | None], Awaitable[ExcCodes | None]
]:
    """pymodbus's per-request hook: apply writes to the device, serve its tables."""

    async def action(
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        del start, count
        table = _TABLE_OF_FC[fc]
        if values is not None:
            code = device.handle_write(table, address, values)
            if code is not None:
                return ExcCodes(code)
        if table in BIT_TABLES:
            bits = device.bits[table]
            for k in range(len(bits) // 16):
                registers[k] = sum(1 << i for i, b in enumerate(bits[16 * k : 16 * k + 16]) if b)
        else:
            regs = device.regs[table]
            registers[: len(regs)] = regs
        return None

    return action


def _sim_device(device: ModbusDevice) -> SimDevice:
    def block(table: str) -> list[SimData]:
        if table in BIT_TABLES:
            n = len(device.bits[table])
            return [SimData(0, count=n, values=False, datatype=DataType.BITS)]
        n = len(device.regs[table])
        return [SimData(0, count=n, values=0, datatype=DataType.REGISTERS)]

    return SimDevice(
        id=device.unit_id,
        simdata=(block("coil"), block("di"), block("hr"), block("ir")),
        action=_action(device),  # type: ignore[arg-type]
    )


class ModbusDeviceServer:
    """Serves simulated Modbus devices over TCP, one unit id each, and steps them.

    ``async with ModbusDeviceServer(devices, host, port) as srv:`` listens on ``host:port``
    (``port=0`` picks a free port: read :attr:`port`) and, unless ``step_s`` is 0, steps
    every device each ``step_s`` wall-clock seconds by ``step_s × speed`` simulated seconds,
    starting at ``start_time_s`` (epoch seconds; default: now).
    """

    def __init__(
        self,
        devices: Sequence[ModbusDevice],
        host: str = "127.0.0.1",
        port: int = 502,
        *,
        step_s: float = 1.0,
        speed: float = 1.0,
        start_time_s: float | None = None,
    ) -> None:
        ids = [d.unit_id for d in devices]
        if not devices:
            raise SimulatorError("a Modbus device server needs at least one device")
        if len(set(ids)) != len(ids):
            raise SimulatorError(f"Modbus unit ids must be unique, got {sorted(ids)}")
        self.devices = list(devices)
        self.host = host
        self.port = port
        self.step_s = step_s
        self.speed = speed
        self.sim_time_s = time.time() if start_time_s is None else start_time_s
        self._server: ModbusTcpServer | None = None
        self._stepper: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def endpoint(self) -> str:
        """``modbus://host:port`` of the server, for a connection of the factory file."""
        return f"modbus://{self.host}:{self.port}"

    def step(self, dt_s: float) -> None:
        """Advance every device by ``dt_s`` simulated seconds now."""
        self.sim_time_s += dt_s
        for d in self.devices:
            d.step(self.sim_time_s, dt_s)

    async def _run_steps(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.step_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.step(self.step_s * self.speed)

    async def __aenter__(self) -> Self:
        server = ModbusTcpServer(
            [_sim_device(d) for d in self.devices], address=(self.host, self.port)
        )
        try:
            await server.serve_forever(background=True)
        except (RuntimeError, OSError) as exc:
            await server.shutdown()  # type: ignore[no-untyped-call]
            raise SimulatorError(
                f"Modbus simulator cannot listen on {self.host}:{self.port} (port taken?)"
            ) from exc
        self._server = server
        if self.port == 0:
            self.port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        log.info(
            "Modbus simulator on %s: units %s",
            self.endpoint,
            ", ".join(str(d.unit_id) for d in self.devices),
        )
        if self.step_s > 0:
            tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._stepper = tg.create_task(self._run_steps(), name="modbus-sim.step")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stepper is not None:
            self._stepper.cancel()
            self._stepper = None
        try:
            await self._stack.aclose()
        finally:
            if self._server is not None:
                await self._server.shutdown()  # type: ignore[no-untyped-call]
                self._server = None

"""A simulated factory: seeded, reproducible machines served over OPC UA.

:class:`FactorySimulation` is the pure engine (no I/O, no wall clock): stations coupled per
line by buffers, shift calendars, random failures, counters and measurements, stepped in
ticks of simulated time. :class:`Simulator` serves a factory file's machines with it, one
asyncua server per OPC UA connection, paced by the wall clock at ``speed``. Sensor faults
(:class:`SignalFault`: spikes, level shifts, drift, stuck values, noise bursts) can be
injected into the engine's measurements, which keeps them as ground truth.
:class:`SparkplugEdgeSimulator` runs Sparkplug B edge nodes and devices against an MQTT
broker (:func:`sparkplug_simulator` builds one from ``N_DEVICES:N_METRICS@RATE``).
"""

from shopfloor.sim._agv import AgvFleetSimulator, HallGraph, SimVehicle, hall_graph
from shopfloor.sim._calendar import Break, Downtime, Shift, ShiftCalendar
from shopfloor.sim._devices import LegacyPressPlc, SimulatedDevices, simulate_devices
from shopfloor.sim._engine import FactorySimulation
from shopfloor.sim._factory import Simulator
from shopfloor.sim._faults import FAULT_KINDS, SignalFault
from shopfloor.sim._modbus import ModbusDevice, ModbusDeviceServer, PowerMeter, PressPlc
from shopfloor.sim._opcua import SimulatorError
from shopfloor.sim._sparkplug import SparkplugEdgeSimulator, sparkplug_simulator
from shopfloor.sim._spec import STATES, TYPE_DEFAULTS, SignalSpec, StationSpec

__all__ = [
    "FAULT_KINDS",
    "STATES",
    "TYPE_DEFAULTS",
    "AgvFleetSimulator",
    "Break",
    "Downtime",
    "FactorySimulation",
    "HallGraph",
    "LegacyPressPlc",
    "ModbusDevice",
    "ModbusDeviceServer",
    "PowerMeter",
    "PressPlc",
    "Shift",
    "ShiftCalendar",
    "SignalFault",
    "SignalSpec",
    "SimVehicle",
    "SimulatedDevices",
    "Simulator",
    "SimulatorError",
    "SparkplugEdgeSimulator",
    "StationSpec",
    "hall_graph",
    "simulate_devices",
    "sparkplug_simulator",
]

"""Engineering units: common UN/CEFACT Recommendation 20 codes used in manufacturing.

A signal's ``unit`` is a Rec 20 common code (``CEL``, ``KWH``, ``BAR``…), the same codes
OPC UA carries in ``EUInformation.unitId``. This table holds the codes a factory usually
needs; a factory file may declare more under its top-level ``units:`` key.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["UNITS"]

_TABLE: dict[str, tuple[str, str]] = {
    # dimensionless, counts
    "C62": ("one", "1"),
    "H87": ("piece", "pce"),
    "EA": ("each", "ea"),
    "PR": ("pair", "pr"),
    "SET": ("set", "set"),
    "NAR": ("number of articles", "art"),
    "P1": ("percent", "%"),
    "59": ("part per million", "ppm"),
    "61": ("part per billion (US)", "ppb"),
    # temperature
    "CEL": ("degree Celsius", "°C"),
    "KEL": ("kelvin", "K"),
    "FAH": ("degree Fahrenheit", "°F"),
    # time
    "SEC": ("second", "s"),
    "C26": ("millisecond", "ms"),
    "B98": ("microsecond", "µs"),
    "MIN": ("minute [unit of time]", "min"),
    "HUR": ("hour", "h"),
    "DAY": ("day", "d"),
    "WEE": ("week", "wk"),
    "MON": ("month", "mo"),
    "ANN": ("year", "y"),
    # frequency, rotation, rates
    "HTZ": ("hertz", "Hz"),
    "KHZ": ("kilohertz", "kHz"),
    "MHZ": ("megahertz", "MHz"),
    "A86": ("gigahertz", "GHz"),
    "RPM": ("revolutions per minute", "r/min"),
    "RPS": ("revolutions per second", "r/s"),
    "C94": ("reciprocal minute", "min⁻¹"),
    "C97": ("reciprocal second", "s⁻¹"),
    "2A": ("radian per second", "rad/s"),
    # length, area, volume
    "MTR": ("metre", "m"),
    "KMT": ("kilometre", "km"),
    "DMT": ("decimetre", "dm"),
    "CMT": ("centimetre", "cm"),
    "MMT": ("millimetre", "mm"),
    "4H": ("micrometre (micron)", "µm"),
    "C45": ("nanometre", "nm"),
    "INH": ("inch", "in"),
    "FOT": ("foot", "ft"),
    "MTK": ("square metre", "m²"),
    "CMK": ("square centimetre", "cm²"),
    "MMK": ("square millimetre", "mm²"),
    "MTQ": ("cubic metre", "m³"),
    "DMQ": ("cubic decimetre", "dm³"),
    "CMQ": ("cubic centimetre", "cm³"),
    "MMQ": ("cubic millimetre", "mm³"),
    "LTR": ("litre", "l"),
    "MLT": ("millilitre", "ml"),
    # angle
    "DD": ("degree [unit of angle]", "°"),
    "C81": ("radian", "rad"),
    "C25": ("milliradian", "mrad"),
    # speed, acceleration
    "MTS": ("metre per second", "m/s"),
    "2X": ("metre per minute", "m/min"),
    "KMH": ("kilometre per hour", "km/h"),
    "C16": ("millimetre per second", "mm/s"),
    "MSK": ("metre per second squared", "m/s²"),
    # mass, density
    "KGM": ("kilogram", "kg"),
    "GRM": ("gram", "g"),
    "MGM": ("milligram", "mg"),
    "TNE": ("tonne (metric ton)", "t"),
    "LBR": ("pound", "lb"),
    "KMQ": ("kilogram per cubic metre", "kg/m³"),
    "23": ("gram per cubic centimetre", "g/cm³"),
    "GM": ("gram per square metre", "g/m²"),
    "28": ("kilogram per square metre", "kg/m²"),
    # flow
    "MQH": ("cubic metre per hour", "m³/h"),
    "MQS": ("cubic metre per second", "m³/s"),
    "L2": ("litre per minute", "l/min"),
    "E32": ("litre per hour", "l/h"),
    "KGS": ("kilogram per second", "kg/s"),
    "E93": ("kilogram per hour", "kg/h"),
    # force, torque, pressure
    "NEW": ("newton", "N"),
    "B47": ("kilonewton", "kN"),
    "B73": ("meganewton", "MN"),
    "NU": ("newton metre", "N·m"),
    "4P": ("newton per metre", "N/m"),
    "E01": ("newton per square centimetre", "N/cm²"),
    "PAL": ("pascal", "Pa"),
    "A97": ("hectopascal", "hPa"),
    "KPA": ("kilopascal", "kPa"),
    "MPA": ("megapascal", "MPa"),
    "BAR": ("bar [unit of pressure]", "bar"),
    "MBR": ("millibar", "mbar"),
    "PS": ("pound-force per square inch", "psi"),
    # energy, power
    "JOU": ("joule", "J"),
    "KJO": ("kilojoule", "kJ"),
    "3B": ("megajoule", "MJ"),
    "WHR": ("watt hour", "W·h"),
    "KWH": ("kilowatt hour", "kW·h"),
    "MWH": ("megawatt hour (1000 kW·h)", "MW·h"),
    "GWH": ("gigawatt hour", "GW·h"),
    "WTT": ("watt", "W"),
    "C31": ("milliwatt", "mW"),
    "KWT": ("kilowatt", "kW"),
    "MAW": ("megawatt", "MW"),
    "D46": ("volt - ampere", "V·A"),
    "KVA": ("kilovolt - ampere", "kV·A"),
    "KVR": ("kilovar", "kvar"),
    # electricity, magnetism
    "AMP": ("ampere", "A"),
    "4K": ("milliampere", "mA"),
    "B22": ("kiloampere", "kA"),
    "AMH": ("ampere hour", "A·h"),
    "VLT": ("volt", "V"),
    "2Z": ("millivolt", "mV"),
    "KVT": ("kilovolt", "kV"),
    "OHM": ("ohm", "Ω"),
    "B49": ("kiloohm", "kΩ"),
    "SIE": ("siemens", "S"),
    "FAR": ("farad", "F"),
    "D33": ("tesla", "T"),
    # viscosity
    "C65": ("pascal second", "Pa·s"),
    "C24": ("millipascal second", "mPa·s"),
    # light, sound
    "LUX": ("lux", "lx"),
    "CDL": ("candela", "cd"),
    "LUM": ("lumen", "lm"),
    "A24": ("candela per square metre", "cd/m²"),
    "2N": ("decibel", "dB"),
    # thermal
    "D52": ("watt per kelvin", "W/K"),
    "C91": ("reciprocal kelvin", "K⁻¹"),
    # data
    "A99": ("bit", "bit"),
    "AD": ("byte", "byte"),
    "2P": ("kilobyte", "kbyte"),
    "4L": ("megabyte", "Mbyte"),
    "E34": ("gigabyte", "Gbyte"),
}

UNITS: Mapping[str, tuple[str, str]] = MappingProxyType(_TABLE)
"""UN/CEFACT Rec 20 common code → ``(name, symbol)`` for the units shopfloor knows."""

"""The factory file format: declarative, frozen pydantic models.

These models check the *structure* of a factory file (keys, types, formats). Checks that
need the whole document (references between types, assets, connections and units) are in
``_checks.py``; the loader runs both and reports every problem at once.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from shopfloor.model._alarms import AlarmSection
from shopfloor.model._anomaly import AnomalyRule

__all__ = [
    "ID_PATTERN",
    "STANDARD_STATES",
    "Area",
    "AssetType",
    "BindingSpec",
    "Break",
    "Calendar",
    "Cell",
    "Connection",
    "Enterprise",
    "Equipment",
    "FactoryDocument",
    "Limits",
    "Line",
    "PlannedDowntime",
    "Shift",
    "Signal",
    "Site",
    "UnitDef",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

STANDARD_STATES: tuple[str, ...] = (
    "running",
    "idle",
    "starved",
    "blocked",
    "planned_stop",
    "unplanned_stop",
    "setup",
    "offline",
)
"""The standard machine states (PackML / ISO 22400 derived) every raw state maps onto."""

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
StandardState = Literal[
    "running", "idle", "starved", "blocked", "planned_stop", "unplanned_stop", "setup", "offline"
]
DataType = Literal["float", "int", "bool", "string", "json"]
SignalKind = Literal["measurement", "counter", "state", "setpoint", "event"]
Protocol = Literal["opcua", "modbus", "sparkplug", "mqtt", "vda5050"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_CONFIG = ConfigDict(extra="forbid", frozen=True)


def _time_of_day(value: str) -> str:
    if not _TIME.match(value):
        raise ValueError(f"bad time {value!r}: expected HH:MM between 00:00 and 23:59")
    return value


class _Model(BaseModel):
    model_config = _CONFIG


class UnitDef(_Model):
    """An extra unit code declared by the factory file (``units: {CODE: {name, symbol}}``)."""

    name: str
    symbol: str = ""


class Limits(_Model):
    """Engineering limits of a signal; either bound may be left out."""

    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


class Signal(_Model):
    """One signal of an asset type: a typed, unit-carrying value every instance has."""

    name: Id
    data_type: DataType
    unit: str | None = Field(default=None, description="UN/CEFACT Rec 20 common code.")
    kind: SignalKind = "measurement"
    description: str = ""
    semantic_id: str | None = Field(
        default=None, description="ECLASS IRDI or OPC UA companion-spec browse path."
    )
    limits: Limits | None = None
    derived: bool = Field(default=False, description="Computed by the platform; never bound.")


class AssetType(_Model):
    """A template: the signals, attributes and state map every asset of the type has."""

    id: Id
    name: str | None = None
    description: str = ""
    extends: Id | None = None
    signals: list[Signal] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    states: dict[int | str, StandardState] = Field(
        default_factory=dict, description="Raw state code → standard state."
    )


class BindingSpec(_Model):
    """Where a signal comes from; a plain string is an address on the default connection."""

    connection: Id | None = None
    address: Annotated[str, StringConstraints(min_length=1)]
    scale: float = 1.0
    offset: float = 0.0
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"address": data}
        if not isinstance(data, dict):
            raise ValueError(
                "expected an address string or a mapping {connection, address, scale, "
                f"offset, options}}, got {type(data).__name__}"
            )
        return data


class Connection(_Model):
    """A named device connection; its connector is chosen by ``protocol``."""

    name: Id
    protocol: Protocol
    endpoint: Annotated[str, StringConstraints(min_length=1)]
    options: dict[str, Any] = Field(default_factory=dict)


class Shift(_Model):
    """A shift: ``start``–``end`` (``HH:MM``, may cross midnight) on the given weekdays."""

    name: str
    start: str
    end: str
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))  # type: ignore[arg-type]

    @field_validator("start", "end")
    @classmethod
    def _times(cls, value: str) -> str:
        return _time_of_day(value)


class Break(_Model):
    """A break inside shifts (all shifts when ``shifts`` is empty)."""

    name: str
    start: str
    end: str
    shifts: list[str] = Field(default_factory=list)

    @field_validator("start", "end")
    @classmethod
    def _times(cls, value: str) -> str:
        return _time_of_day(value)


class PlannedDowntime(_Model):
    """Planned downtime of some assets (paths or ids; the whole site when empty)."""

    name: str
    start: AwareDatetime
    end: AwareDatetime
    assets: list[str] = Field(default_factory=list)
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> PlannedDowntime:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) is not after start")
        return self


class Calendar(_Model):
    """A site's shift calendar: shifts, breaks and planned downtime."""

    shifts: list[Shift] = Field(default_factory=list)
    breaks: list[Break] = Field(default_factory=list)
    planned_downtime: list[PlannedDowntime] = Field(default_factory=list)


class Equipment(_Model):
    """An equipment instance: its type, default connection, bindings and attributes."""

    id: Id
    name: str | None = None
    description: str = ""
    type: Id
    connection: Id | None = None
    bindings: dict[str, BindingSpec] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)


class Cell(_Model):
    """A work cell (ISA-95 work unit) of a line."""

    id: Id
    name: str | None = None
    description: str = ""
    equipment: list[Equipment] = Field(default_factory=list)


class Line(_Model):
    """A production line: cells, and equipment that belongs to the line itself."""

    id: Id
    name: str | None = None
    description: str = ""
    cells: list[Cell] = Field(default_factory=list)
    equipment: list[Equipment] = Field(default_factory=list)


class Area(_Model):
    """An area of a site."""

    id: Id
    name: str | None = None
    description: str = ""
    lines: list[Line] = Field(default_factory=list)


class Site(_Model):
    """A site: its time zone, shift calendar and areas."""

    id: Id
    name: str | None = None
    description: str = ""
    timezone: str = Field(default="UTC", description="IANA time zone name.")
    calendar: Calendar = Field(default_factory=Calendar)
    areas: list[Area] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class Enterprise(_Model):
    """The root of the asset tree."""

    id: Id
    name: str | None = None
    description: str = ""
    sites: list[Site] = Field(default_factory=list)


class FactoryDocument(_Model):
    """A whole factory file."""

    enterprise: Enterprise
    types: list[AssetType] = Field(default_factory=list)
    connections: list[Connection] = Field(default_factory=list)
    units: dict[str, UnitDef] = Field(default_factory=dict)
    anomaly: list[AnomalyRule] = Field(
        default_factory=list, description="Online anomaly detectors on selected signals."
    )
    alarms: AlarmSection = Field(
        default_factory=AlarmSection, description="Alarm rules and notification sinks."
    )

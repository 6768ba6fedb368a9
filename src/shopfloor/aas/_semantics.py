"""Semantic ids: the IDTA submodel templates shopfloor follows, and its own concepts.

- Digital Nameplate for Industrial Equipment V2.0 (IDTA 02006-2-0): the submodel and the
  ECLASS IRDIs of its properties.
- Generic Frame for Technical Data V1.2 (IDTA 02003-1-2): the submodel and its sections.
- Time Series Data V1.1 (IDTA 02008-1-1): the submodel, its metadata, record and segments.
- shopfloor's own concepts (``urn:shopfloor:aas:1:0:…``) for what no template covers: the
  description of a signal (data type, kind, unit, limits), attributes, state maps and the
  operational data submodel. Each is described by a ConceptDescription in every export.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "IEC61360_TEMPLATE",
    "NAMEPLATE",
    "NAMEPLATE_ATTRIBUTES",
    "NAMEPLATE_IDS",
    "SF",
    "SF_CONCEPTS",
    "TECHNICAL_DATA",
    "TECHNICAL_DATA_IDS",
    "TIME_SERIES",
    "TIME_SERIES_IDS",
    "NameplateField",
]

IEC61360_TEMPLATE: Final = (
    "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIEC61360/3/0"
)
"""The data specification template of IEC 61360 content (AAS Part 3a)."""

# --------------------------------------------------------------------- nameplate

NAMEPLATE: Final = "https://admin-shell.io/zvei/nameplate/2/0/Nameplate"
"""Digital Nameplate V2.0 (IDTA 02006-2-0)."""

NAMEPLATE_IDS: Final = frozenset(
    {
        NAMEPLATE,
        "https://admin-shell.io/zvei/nameplate/1/0/Nameplate",
        "https://admin-shell.io/idta/nameplate/3/0/Nameplate",
        "https://admin-shell.io/idta/SubmodelTemplate/DigitalNameplate/3/0",
    }
)
"""Semantic ids of the nameplate versions the importer reads."""


class NameplateField:
    """One property of the Digital Nameplate: its idShort, IRDI and AAS element kind."""

    __slots__ = ("id_short", "irdi", "multi_language")

    def __init__(self, id_short: str, irdi: str, *, multi_language: bool = False) -> None:
        self.id_short = id_short
        self.irdi = irdi
        self.multi_language = multi_language


NAMEPLATE_ATTRIBUTES: Final[dict[str, NameplateField]] = {
    "uri_of_the_product": NameplateField("URIOfTheProduct", "0173-1#02-AAY811#001"),
    "manufacturer": NameplateField("ManufacturerName", "0173-1#02-AAO677#002", multi_language=True),
    "product_designation": NameplateField(
        "ManufacturerProductDesignation", "0173-1#02-AAW338#001", multi_language=True
    ),
    "product_root": NameplateField(
        "ManufacturerProductRoot", "0173-1#02-AAU732#001", multi_language=True
    ),
    "product_family": NameplateField(
        "ManufacturerProductFamily", "0173-1#02-AAU731#001", multi_language=True
    ),
    "product_type": NameplateField("ManufacturerProductType", "0173-1#02-AAO057#002"),
    "order_code": NameplateField("OrderCodeOfManufacturer", "0173-1#02-AAO227#002"),
    "article_number": NameplateField("ProductArticleNumberOfManufacturer", "0173-1#02-AAO676#003"),
    "serial_number": NameplateField("SerialNumber", "0173-1#02-AAM556#002"),
    "year_of_construction": NameplateField("YearOfConstruction", "0173-1#02-AAP906#001"),
    "date_of_manufacture": NameplateField("DateOfManufacture", "0173-1#02-AAR972#002"),
    "hardware_version": NameplateField(
        "HardwareVersion", "0173-1#02-AAN270#002", multi_language=True
    ),
    "firmware_version": NameplateField(
        "FirmwareVersion", "0173-1#02-AAM985#002", multi_language=True
    ),
    "software_version": NameplateField(
        "SoftwareVersion", "0173-1#02-AAM737#002", multi_language=True
    ),
    "country_of_origin": NameplateField("CountryOfOrigin", "0173-1#02-AAO259#004"),
}
"""Equipment attribute name → the nameplate property it fills (string attributes only)."""

# --------------------------------------------------------------------- technical data

_TD: Final = "https://admin-shell.io/ZVEI/TechnicalData"
TECHNICAL_DATA: Final = f"{_TD}/Submodel/1/2"
"""Generic Frame for Technical Data V1.2 (IDTA 02003-1-2)."""

TECHNICAL_DATA_IDS: Final = {
    "GeneralInformation": f"{_TD}/GeneralInformation/1/1",
    "TechnicalProperties": f"{_TD}/TechnicalProperties/1/1",
    "ManufacturerName": "0173-1#02-AAO677#002",
    "ManufacturerProductDesignation": "0173-1#02-AAW338#001",
}
"""Sections and general-information properties of the technical data template."""

# --------------------------------------------------------------------- time series

_TS: Final = "https://admin-shell.io/idta/TimeSeries"
TIME_SERIES: Final = f"{_TS}/1/1"
"""Time Series Data V1.1 (IDTA 02008-1-1)."""

TIME_SERIES_IDS: Final = {
    "Metadata": f"{_TS}/Metadata/1/1",
    "Metadata/Name": f"{_TS}/Metadata/Name/1/1",
    "Metadata/Description": f"{_TS}/Metadata/Description/1/1",
    "Record": f"{_TS}/Record/1/1",
    "Time": f"{_TS}/UtcTime/1/1",
    "Segments": f"{_TS}/Segments/1/1",
    "LinkedSegment": f"{_TS}/Segments/LinkedSegment/1/1",
    "Segment/Name": f"{_TS}/Segment/Name/1/1",
    "Segment/Description": f"{_TS}/Segment/Description/1/1",
    "Segment/EndTime": f"{_TS}/Segment/EndTime/1/1",
    "Segment/State": f"{_TS}/Segment/State/1/1",
    "Segment/LastUpdate": f"{_TS}/Segment/LastUpdate/1/1",
    "Endpoint": f"{_TS}/Endpoint/1/1",
    "Query": f"{_TS}/Query/1/1",
}
"""Elements of the time series template."""

# --------------------------------------------------------------------- shopfloor's own

SF: Final = "urn:shopfloor:aas:1:0:"
"""Prefix of shopfloor's own concept ids."""

SF_CONCEPTS: Final[dict[str, tuple[str, str]]] = {
    "AssetPath": (
        "asset path",
        "Path of the equipment in the ISA-95 asset tree of the shopfloor factory model "
        "(enterprise/site/area/line[/cell]/equipment).",
    ),
    "OperationalData": (
        "operational data",
        "The latest value of each signal of the equipment, with its time and quality.",
    ),
    "Signals": ("signals", "The signals of the equipment with their metadata."),
    "Signal": ("signal", "One signal: a typed, unit-carrying value the equipment has."),
    "DataType": ("data type", "Data type of a signal: float, int, bool, string or json."),
    "Kind": ("kind", "Kind of a signal: measurement, counter, state, setpoint or event."),
    "Unit": ("unit", "Engineering unit of a signal: a UN/CEFACT Recommendation 20 common code."),
    "SignalSemanticId": (
        "semantic id",
        "The semantic id of a signal's value (e.g. an ECLASS IRDI or an OPC UA browse path).",
    ),
    "Limits": ("limits", "Engineering limits of a signal (low, high)."),
    "Derived": ("derived", "True when the platform computes the signal; never bound."),
    "Attributes": ("attributes", "Attributes of the equipment beyond its nameplate."),
    "StateMap": ("state map", "Raw state codes of the equipment and the standard states."),
    "StateMapping": ("state mapping", "One raw state code and its standard state."),
    "RawState": ("raw state", "A raw state code as the equipment reports it."),
    "StandardState": (
        "standard state",
        "One of running, idle, starved, blocked, planned_stop, unplanned_stop, setup, offline.",
    ),
    "Timestamp": ("timestamp", "Source time of the value (UTC)."),
    "Quality": ("quality", "Quality of the value: good, uncertain or bad."),
    "OriginalName": (
        "original name",
        "The element's name in the shopfloor model when it is not a valid idShort.",
    ),
    "ValueEncoding": ("value encoding", "How a string value is encoded (application/json)."),
}
"""shopfloor's concepts: short name → (preferred name, definition); id = ``SF + name``."""

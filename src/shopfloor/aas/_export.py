"""The factory model as Asset Administration Shells (AAS v3.0), built with the BaSyx SDK.

One shell per equipment; its asset's ``globalAssetId`` and every id are under a
configurable id base (``{base}/aas/{path}``, ``{base}/assets/{path}``,
``{base}/submodels/{path}/{Nameplate|TechnicalData|OperationalData|TimeSeries}``). The
asset path is also a specific asset id, the asset type the equipment's type. Submodels:

- **Nameplate** (IDTA 02006-2-0): the equipment's string attributes that are nameplate
  properties (``manufacturer``, ``serial_number``, …), with their ECLASS IRDIs.
- **TechnicalData** (IDTA 02003-1-2): general information (manufacturer, the type's name as
  product designation) and technical properties: every signal (data type, kind, UN/CEFACT
  unit, limits, semantic id, derived), the other attributes and the state map.
- **OperationalData**: one ``VARIABLE`` property per signal, typed, with the IEC 61360 unit
  and, from the historian, the latest value with its time and quality as value qualifiers.
- **TimeSeries** (IDTA 02008-1-1): the record of the signals and one linked segment per
  signal whose endpoint is the signal's history in the REST API.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import pyarrow as pa
from basyx.aas import model
from basyx.aas.model.concept import ConceptDescription

from shopfloor.aas._names import id_short_for, ref, sf_ref, text
from shopfloor.aas._semantics import (
    IEC61360_TEMPLATE,
    NAMEPLATE,
    NAMEPLATE_ATTRIBUTES,
    SF,
    SF_CONCEPTS,
    TECHNICAL_DATA,
    TECHNICAL_DATA_IDS,
    TIME_SERIES,
    TIME_SERIES_IDS,
)
from shopfloor.errors import UnknownSignalError
from shopfloor.historian.base import Historian
from shopfloor.model import Factory, ResolvedSignal
from shopfloor.model._schema import Cell, Enterprise, Equipment, Line

__all__ = [
    "ASSET_PATH_KEY",
    "SUBMODELS",
    "SUBMODEL_SEMANTIC_IDS",
    "AasExporter",
    "AasOptions",
    "LatestValue",
    "latest_values",
    "quality_name",
]

SUBMODELS: Final = ("Nameplate", "TechnicalData", "OperationalData", "TimeSeries")
"""The submodels of every shell, in order (also the last segment of their ids)."""

SUBMODEL_SEMANTIC_IDS: Final = {
    "Nameplate": NAMEPLATE,
    "TechnicalData": TECHNICAL_DATA,
    "OperationalData": SF + "OperationalData",
    "TimeSeries": TIME_SERIES,
}
"""The semantic id of each submodel."""

ASSET_PATH_KEY: Final = "shopfloorAssetPath"
"""Name of the specific asset id that holds the equipment's path in the asset tree."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TEXT_MAX: Final = 1023
_NAME_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class AasOptions:
    """Where the shells' ids live and where their history is served.

    ``id_base`` prefixes every identifier (default ``https://<enterprise>.example/ids``: set
    your own domain); ``api_url`` is the REST API's base URL the time series segments
    link to (``<api_url>/api/v1/history/<signal>``).
    """

    id_base: str | None = None
    api_url: str = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The newest sample of a signal: time (UTC), OPC DA quality byte, typed value."""

    ts: datetime
    quality: int
    value: Any


def quality_name(code: int) -> str:
    """``good``, ``uncertain`` or ``bad`` for an OPC DA quality byte."""
    major = code & 0xC0
    return "good" if major == 0xC0 else "bad" if major == 0x00 else "uncertain"


async def latest_values(
    historian: Historian, signals: Iterable[str] | None = None
) -> dict[str, LatestValue]:
    """The newest sample of each of ``signals`` (every stored signal when ``None``).

    Signals the historian has never seen are left out.
    """
    if signals is not None:
        wanted = set(signals)
        stored = (await historian.signals()).column("path").to_pylist()
        present = [s for s in stored if s in wanted]
        if not present:
            return {}
        try:
            table = await historian.latest(present)
        except UnknownSignalError:
            return {}
    else:
        table = await historian.latest(None)
    return _latest_rows(table)


def _latest_rows(table: pa.Table) -> dict[str, LatestValue]:
    out: dict[str, LatestValue] = {}
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    for i, path in enumerate(columns["path"]):
        value: Any = None
        for name in ("v_float", "v_int", "v_bool", "v_str"):
            v = columns[name][i]
            if v is not None:
                value = v
                break
        ts = columns["ts"][i]
        if isinstance(ts, datetime) and ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        out[str(path)] = LatestValue(ts=ts, quality=int(columns["quality"][i]), value=value)
    return out


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _xsd_type(value: Any) -> tuple[type[Any], Any]:
    """The XSD type and typed value an attribute value is exported as."""
    if isinstance(value, bool):
        return model.datatypes.Boolean, value
    if isinstance(value, int):
        return model.datatypes.Long, value
    if isinstance(value, float):
        return model.datatypes.Double, value
    return model.datatypes.String, value


_VALUE_TYPES: Final[dict[str, type[Any]]] = {
    "float": model.datatypes.Double,
    "int": model.datatypes.Long,
    "bool": model.datatypes.Boolean,
    "string": model.datatypes.String,
    "json": model.datatypes.String,
}


def _typed(data_type: str, value: Any) -> Any:
    """A stored value as the XSD value of the signal's data type (``None`` when it is not)."""
    if value is None:
        return None
    try:
        if data_type == "float":
            f = float(value)
            return f if math.isfinite(f) else None
        if data_type == "int":
            if isinstance(value, float) and not value.is_integer():
                return None
            return int(value)
        if data_type == "bool":
            return bool(value)
        if data_type == "json":
            return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        return str(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _walk_equipment(enterprise: Enterprise) -> dict[str, Equipment]:
    """Equipment documents by path, in tree order (cells before the line's own equipment)."""
    out: dict[str, Equipment] = {}

    def line(prefix: str, ln: Line) -> None:
        for cell in ln.cells:
            add(f"{prefix}/{cell.id}", cell)
        for eq in ln.equipment:
            out[f"{prefix}/{eq.id}"] = eq

    def add(prefix: str, cell: Cell) -> None:
        for eq in cell.equipment:
            out[f"{prefix}/{eq.id}"] = eq

    for site in enterprise.sites:
        for area in site.areas:
            for ln in area.lines:
                line(f"{enterprise.id}/{site.id}/{area.id}/{ln.id}", ln)
    return out


class _Names:
    """idShorts of one namespace, remembering which names had to change."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def element(self, name: str) -> tuple[str, list[model.Qualifier]]:
        id_short = id_short_for(name, self.taken)
        if id_short == name:
            return id_short, []
        return id_short, [
            model.Qualifier(
                "OriginalName",
                model.datatypes.String,
                name,
                semantic_id=sf_ref("OriginalName"),
            )
        ]


class AasExporter:
    """Builds the shells and submodels of a factory's equipment.

    The static parts depend only on the factory and the options; ``OperationalData`` and
    ``TimeSeries`` also take the latest values (see :func:`latest_values`).
    """

    def __init__(self, factory: Factory, options: AasOptions | None = None) -> None:
        options = options or AasOptions()
        self.factory = factory
        """The factory model the shells describe."""
        root = factory.document.enterprise.id
        self.id_base: str = (options.id_base or f"https://{root}.example/ids").rstrip("/")
        """The prefix of every identifier."""
        self.api_url: str = options.api_url.rstrip("/")
        """The REST API base URL the time series link to."""
        self._equipment = _walk_equipment(factory.document.enterprise)
        self._signals: dict[str, list[ResolvedSignal]] = {p: [] for p in self._equipment}
        for sig in factory.signals():
            self._signals[sig.asset_path].append(sig)
        self._type_names = {t.id: t.name for t in factory.document.types}
        self._units = {code: u.symbol for code, u in factory.document.units.items()}
        self._shell_short = _Names()
        self._shell_shorts = {
            p: self._shell_short.element(eq.id)[0] for p, eq in self._equipment.items()
        }

    # ------------------------------------------------------------------ identifiers

    def equipment(self) -> list[str]:
        """Paths of the equipment that has a shell, in tree order."""
        return list(self._equipment)

    def shell_id(self, path: str) -> str:
        """The identifier of the shell of the equipment at ``path``."""
        return f"{self.id_base}/aas/{path}"

    def asset_id(self, path: str) -> str:
        """The ``globalAssetId`` of the equipment at ``path``."""
        return f"{self.id_base}/assets/{path}"

    def submodel_id(self, path: str, kind: str) -> str:
        """The identifier of submodel ``kind`` (one of :data:`SUBMODELS`) of ``path``."""
        return f"{self.id_base}/submodels/{path}/{kind}"

    def locate(self, identifier: str) -> tuple[str, str | None] | None:
        """``(equipment path, None)`` for a shell id, ``(path, kind)`` for a submodel id.

        ``None`` when the identifier is not one of this exporter's (whether or not the
        equipment exists: callers check the path against their rules first).
        """
        shell = f"{self.id_base}/aas/"
        if identifier.startswith(shell):
            path = identifier[len(shell) :]
            return (path, None) if path else None
        sub = f"{self.id_base}/submodels/"
        if identifier.startswith(sub):
            path, _, kind = identifier[len(sub) :].rpartition("/")
            return (path, kind) if path and kind in SUBMODELS else None
        return None

    def exists(self, path: str) -> bool:
        """True when ``path`` is equipment of the model."""
        return path in self._equipment

    def signal_paths(self, path: str) -> list[str]:
        """Full names of the signals of the equipment at ``path``."""
        return [s.path for s in self._signals[path]]

    # ------------------------------------------------------------------ shells

    def shell(self, path: str) -> model.AssetAdministrationShell:
        """The shell of the equipment at ``path``, referring to its four submodels."""
        eq = self._equipment[path]
        node = self.factory.asset(path)
        info = model.AssetInformation(
            asset_kind=model.AssetKind.INSTANCE,
            global_asset_id=self.asset_id(path),
            specific_asset_id=(
                model.SpecificAssetId(ASSET_PATH_KEY, path, semantic_id=sf_ref("AssetPath")),
            ),
            asset_type=node.type,
        )
        refs = {
            model.ModelReference(
                (model.Key(model.KeyTypes.SUBMODEL, self.submodel_id(path, kind)),),
                model.Submodel,
            )
            for kind in SUBMODELS
        }
        return model.AssetAdministrationShell(
            asset_information=info,
            id_=self.shell_id(path),
            id_short=self._shell_shorts[path],
            display_name=(
                model.MultiLanguageNameType({"en": _clip(eq.name, _NAME_MAX)}) if eq.name else None
            ),
            description=text(_clip(eq.description, _TEXT_MAX)) if eq.description else None,
            submodel=refs,
        )

    def submodels(
        self, path: str, latest: Mapping[str, LatestValue] | None = None
    ) -> list[model.Submodel]:
        """The four submodels of the equipment at ``path``."""
        return [self.submodel(path, kind, latest) for kind in SUBMODELS]

    def submodel(
        self,
        path: str,
        kind: str,
        latest: Mapping[str, LatestValue] | None = None,
        *,
        api_url: str | None = None,
    ) -> model.Submodel:
        """Submodel ``kind`` of the equipment at ``path`` (``latest`` fills in values).

        ``api_url`` replaces the options' API URL in the time series' endpoints.
        """
        if kind == "Nameplate":
            elements = self._nameplate(path)
        elif kind == "TechnicalData":
            elements = self._technical_data(path)
        elif kind == "OperationalData":
            elements = self._operational_data(path, latest or {})
        elif kind == "TimeSeries":
            elements = self._time_series(path, latest or {}, api_url or self.api_url)
        else:
            raise KeyError(f"no submodel {kind!r} (one of {', '.join(SUBMODELS)})")
        return model.Submodel(
            id_=self.submodel_id(path, kind),
            submodel_element=elements,
            id_short=kind,
            semantic_id=ref(SUBMODEL_SEMANTIC_IDS[kind]),
        )

    def concept_descriptions(self) -> list[ConceptDescription]:
        """ConceptDescriptions (IEC 61360) of shopfloor's own concepts."""
        out = []
        for name, (preferred, definition) in SF_CONCEPTS.items():
            content = model.DataSpecificationIEC61360(
                preferred_name=model.PreferredNameTypeIEC61360({"en": preferred}),
                definition=model.DefinitionTypeIEC61360({"en": definition}),
            )
            out.append(
                ConceptDescription(
                    id_=SF + name,
                    id_short=name,
                    embedded_data_specifications=(
                        model.EmbeddedDataSpecification(ref(IEC61360_TEMPLATE), content),
                    ),
                )
            )
        return out

    def environment(
        self,
        latest: Mapping[str, LatestValue] | None = None,
        paths: Sequence[str] | None = None,
    ) -> model.DictIdentifiableStore[model.Identifiable]:
        """Shells, submodels and concept descriptions of ``paths`` (all equipment by default)."""
        store: model.DictIdentifiableStore[model.Identifiable] = model.DictIdentifiableStore()
        for path in self.equipment() if paths is None else paths:
            store.add(self.shell(path))
            for sm in self.submodels(path, latest):
                store.add(sm)
        for cd in self.concept_descriptions():
            store.add(cd)
        return store

    # ------------------------------------------------------------------ submodels

    def _attributes(self, path: str) -> dict[str, Any]:
        return self.factory.attributes(path)

    def _nameplate(self, path: str) -> list[model.SubmodelElement]:
        attributes = self._attributes(path)
        out: list[model.SubmodelElement] = []
        for attr, field in NAMEPLATE_ATTRIBUTES.items():
            value = attributes.get(attr)
            if not isinstance(value, str) or not value:
                continue
            if field.multi_language:
                out.append(
                    model.MultiLanguageProperty(
                        field.id_short,
                        value=text(_clip(value, _TEXT_MAX)),
                        semantic_id=ref(field.irdi),
                    )
                )
            elif attr == "date_of_manufacture":
                out.append(
                    model.Property(
                        field.id_short,
                        model.datatypes.Date,
                        date.fromisoformat(value),
                        semantic_id=ref(field.irdi),
                    )
                )
            else:
                out.append(
                    model.Property(
                        field.id_short, model.datatypes.String, value, semantic_id=ref(field.irdi)
                    )
                )
        return out

    def nameplate_attributes(self, path: str) -> set[str]:
        """The attributes of ``path`` that its nameplate holds (not repeated elsewhere)."""
        out = set()
        for attr, value in self._attributes(path).items():
            if attr in NAMEPLATE_ATTRIBUTES and isinstance(value, str) and value:
                if attr == "date_of_manufacture":
                    try:
                        date.fromisoformat(value)
                    except ValueError:
                        continue
                out.add(attr)
        return out

    def _technical_data(self, path: str) -> list[model.SubmodelElement]:
        eq = self._equipment[path]
        attributes = self._attributes(path)
        general: list[model.SubmodelElement] = []
        manufacturer = attributes.get("manufacturer")
        if isinstance(manufacturer, str) and manufacturer:
            general.append(
                model.MultiLanguageProperty(
                    "ManufacturerName",
                    value=text(_clip(manufacturer, _TEXT_MAX)),
                    semantic_id=ref(TECHNICAL_DATA_IDS["ManufacturerName"]),
                )
            )
        type_name = self._type_names.get(eq.type)
        if type_name:
            general.append(
                model.MultiLanguageProperty(
                    "ManufacturerProductDesignation",
                    value=text(_clip(type_name, _TEXT_MAX)),
                    semantic_id=ref(TECHNICAL_DATA_IDS["ManufacturerProductDesignation"]),
                )
            )
        properties: list[model.SubmodelElement] = [
            model.SubmodelElementCollection(
                "Signals",
                value=self._signal_elements(path),
                semantic_id=sf_ref("Signals"),
            )
        ]
        skip = self.nameplate_attributes(path)
        names = _Names()
        attrs: list[model.SubmodelElement] = []
        for attr, value in attributes.items():
            if attr in skip:
                continue
            id_short, qualifiers = names.element(attr)
            if value is None or isinstance(value, list | dict):
                qualifiers.append(
                    model.Qualifier(
                        "ValueEncoding",
                        model.datatypes.String,
                        "application/json",
                        semantic_id=sf_ref("ValueEncoding"),
                    )
                )
                value_type: type[Any] = model.datatypes.String
                typed: Any = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            else:
                value_type, typed = _xsd_type(value)
                if value_type is model.datatypes.Double and not math.isfinite(typed):
                    continue
            attrs.append(model.Property(id_short, value_type, typed, qualifier=qualifiers))
        if attrs:
            properties.append(
                model.SubmodelElementCollection(
                    "Attributes", value=attrs, semantic_id=sf_ref("Attributes")
                )
            )
        states = self.factory.state_map(path)
        if states:
            properties.append(
                model.SubmodelElementList(
                    "StateMap",
                    model.SubmodelElementCollection,
                    value=[
                        model.SubmodelElementCollection(
                            None,
                            value=[
                                model.Property(
                                    "RawState",
                                    model.datatypes.String,
                                    code,
                                    semantic_id=sf_ref("RawState"),
                                ),
                                model.Property(
                                    "StandardState",
                                    model.datatypes.String,
                                    state,
                                    semantic_id=sf_ref("StandardState"),
                                ),
                            ],
                            semantic_id=sf_ref("StateMapping"),
                        )
                        for code, state in states.items()
                    ],
                    semantic_id=sf_ref("StateMap"),
                    semantic_id_list_element=sf_ref("StateMapping"),
                )
            )
        out: list[model.SubmodelElement] = []
        if general:
            out.append(
                model.SubmodelElementCollection(
                    "GeneralInformation",
                    value=general,
                    semantic_id=ref(TECHNICAL_DATA_IDS["GeneralInformation"]),
                )
            )
        out.append(
            model.SubmodelElementCollection(
                "TechnicalProperties",
                value=properties,
                semantic_id=ref(TECHNICAL_DATA_IDS["TechnicalProperties"]),
            )
        )
        return out

    def _signal_elements(self, path: str) -> list[model.SubmodelElement]:
        names = _Names()
        out: list[model.SubmodelElement] = []
        for sig in self._signals[path]:
            id_short, qualifiers = names.element(sig.name)
            parts: list[model.SubmodelElement] = [
                model.Property(
                    "DataType",
                    model.datatypes.String,
                    sig.data_type,
                    semantic_id=sf_ref("DataType"),
                ),
                model.Property(
                    "Kind", model.datatypes.String, sig.kind, semantic_id=sf_ref("Kind")
                ),
            ]
            if sig.unit is not None:
                parts.append(
                    model.Property(
                        "Unit", model.datatypes.String, sig.unit, semantic_id=sf_ref("Unit")
                    )
                )
            if sig.low is not None or sig.high is not None:
                parts.append(
                    model.Range(
                        "Limits",
                        model.datatypes.Double,
                        min=None if sig.low is None else float(sig.low),
                        max=None if sig.high is None else float(sig.high),
                        semantic_id=sf_ref("Limits"),
                    )
                )
            if sig.semantic_id:
                parts.append(
                    model.Property(
                        "SemanticId",
                        model.datatypes.String,
                        sig.semantic_id,
                        semantic_id=sf_ref("SignalSemanticId"),
                    )
                )
            if sig.derived:
                parts.append(
                    model.Property(
                        "Derived", model.datatypes.Boolean, True, semantic_id=sf_ref("Derived")
                    )
                )
            out.append(
                model.SubmodelElementCollection(
                    id_short,
                    value=parts,
                    description=text(_clip(sig.description, _TEXT_MAX))
                    if sig.description
                    else None,
                    semantic_id=sf_ref("Signal"),
                    qualifier=qualifiers,
                )
            )
        return out

    def _unit_symbol(self, code: str | None) -> str | None:
        if code is None:
            return None
        from shopfloor.model import UNITS

        if code in UNITS:
            return UNITS[code][1]
        return self._units.get(code) or code

    def _iec61360(self, sig: ResolvedSignal) -> model.EmbeddedDataSpecification:
        symbol = self._unit_symbol(sig.unit)
        data_type: model.DataTypeIEC61360 | None
        if sig.data_type == "bool":
            data_type = model.DataTypeIEC61360.BOOLEAN
        elif sig.data_type in ("string", "json"):
            data_type = model.DataTypeIEC61360.STRING
        elif sig.data_type == "int" and sig.kind == "counter":
            data_type = model.DataTypeIEC61360.INTEGER_COUNT
        elif symbol is None:
            data_type = None  # AASc-3a-009: a measure needs a unit
        elif sig.data_type == "int":
            data_type = model.DataTypeIEC61360.INTEGER_MEASURE
        else:
            data_type = model.DataTypeIEC61360.REAL_MEASURE
        content = model.DataSpecificationIEC61360(
            preferred_name=model.PreferredNameTypeIEC61360({"en": _clip(sig.name, 255)}),
            data_type=data_type,
            definition=(
                model.DefinitionTypeIEC61360({"en": _clip(sig.description, _TEXT_MAX)})
                if sig.description
                else None
            ),
            unit=symbol or None,
        )
        return model.EmbeddedDataSpecification(ref(IEC61360_TEMPLATE), content)

    def _operational_data(
        self, path: str, latest: Mapping[str, LatestValue]
    ) -> list[model.SubmodelElement]:
        names = _Names()
        out: list[model.SubmodelElement] = []
        for sig in self._signals[path]:
            id_short, qualifiers = names.element(sig.name)
            sample = latest.get(sig.path)
            value = None if sample is None else _typed(sig.data_type, sample.value)
            if sample is not None:
                qualifiers.append(
                    model.Qualifier(
                        "Timestamp",
                        model.datatypes.DateTime,
                        _utc(sample.ts),
                        kind=model.QualifierKind.VALUE_QUALIFIER,
                        semantic_id=sf_ref("Timestamp"),
                    )
                )
                qualifiers.append(
                    model.Qualifier(
                        "Quality",
                        model.datatypes.String,
                        quality_name(sample.quality),
                        kind=model.QualifierKind.VALUE_QUALIFIER,
                        semantic_id=sf_ref("Quality"),
                    )
                )
            out.append(
                model.Property(
                    id_short,
                    _VALUE_TYPES[sig.data_type],
                    value,
                    category="VARIABLE",
                    semantic_id=ref(sig.semantic_id) if sig.semantic_id else None,
                    qualifier=qualifiers,
                    embedded_data_specifications=(self._iec61360(sig),),
                )
            )
        return out

    def history_url(self, signal: str, api_url: str | None = None) -> str:
        """The REST API URL of a signal's history."""
        return f"{(api_url or self.api_url).rstrip('/')}/api/v1/history/{signal}"

    def _time_series(
        self, path: str, latest: Mapping[str, LatestValue], api_url: str
    ) -> list[model.SubmodelElement]:
        eq = self._equipment[path]
        ids = TIME_SERIES_IDS
        label = eq.name or eq.id
        names = _Names()
        names.taken.add("Time")
        record: list[model.SubmodelElement] = [
            model.Property("Time", model.datatypes.DateTime, semantic_id=ref(ids["Time"]))
        ]
        segments: list[model.SubmodelElement] = []
        for n, sig in enumerate(self._signals[path], start=1):
            id_short, qualifiers = names.element(sig.name)
            record.append(
                model.Property(
                    id_short,
                    _VALUE_TYPES[sig.data_type],
                    semantic_id=ref(sig.semantic_id) if sig.semantic_id else None,
                    qualifier=qualifiers,
                )
            )
            parts: list[model.SubmodelElement] = [
                model.MultiLanguageProperty(
                    "Name",
                    value=text(_clip(sig.name, _TEXT_MAX)),
                    semantic_id=ref(ids["Segment/Name"]),
                ),
            ]
            if sig.description:
                parts.append(
                    model.MultiLanguageProperty(
                        "Description",
                        value=text(_clip(sig.description, _TEXT_MAX)),
                        semantic_id=ref(ids["Segment/Description"]),
                    )
                )
            sample = latest.get(sig.path)
            if sample is not None:
                parts.append(
                    model.Property(
                        "EndTime",
                        model.datatypes.DateTime,
                        _utc(sample.ts),
                        semantic_id=ref(ids["Segment/EndTime"]),
                    )
                )
                parts.append(
                    model.Property(
                        "LastUpdate",
                        model.datatypes.DateTime,
                        _utc(sample.ts),
                        semantic_id=ref(ids["Segment/LastUpdate"]),
                    )
                )
            parts += [
                model.Property(
                    "State",
                    model.datatypes.String,
                    "in progress",
                    semantic_id=ref(ids["Segment/State"]),
                ),
                model.Property(
                    "Endpoint",
                    model.datatypes.String,
                    self.history_url(sig.path, api_url),
                    semantic_id=ref(ids["Endpoint"]),
                ),
                model.Property(
                    "Query",
                    model.datatypes.String,
                    "start=-1h&end=now",
                    semantic_id=ref(ids["Query"]),
                ),
            ]
            segments.append(
                model.SubmodelElementCollection(
                    f"LinkedSegment{n:02d}", value=parts, semantic_id=ref(ids["LinkedSegment"])
                )
            )
        return [
            model.SubmodelElementCollection(
                "Metadata",
                value=[
                    model.MultiLanguageProperty(
                        "Name",
                        value=text(_clip(f"{label}: signal history", _TEXT_MAX)),
                        semantic_id=ref(ids["Metadata/Name"]),
                    ),
                    model.MultiLanguageProperty(
                        "Description",
                        value=text(
                            "History of every signal of the equipment, served by the shopfloor "
                            "REST API (one linked segment per signal; send a token)."
                        ),
                        semantic_id=ref(ids["Metadata/Description"]),
                    ),
                    model.SubmodelElementCollection(
                        "Record", value=record, semantic_id=ref(ids["Record"])
                    ),
                ],
                semantic_id=ref(ids["Metadata"]),
            ),
            model.SubmodelElementCollection(
                "Segments", value=segments, semantic_id=ref(ids["Segments"])
            ),
        ]


def _utc(ts: datetime) -> datetime:
    """An aware UTC datetime with microseconds (the historian's precision)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    ts = ts.astimezone(UTC)
    return _EPOCH + timedelta(microseconds=(ts - _EPOCH) // timedelta(microseconds=1))

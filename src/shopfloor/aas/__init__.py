"""The factory model as Asset Administration Shells (AAS v3.0, IDTA), and back.

:class:`AasExporter` builds one shell per equipment with the submodels Nameplate (IDTA
02006-2-0), TechnicalData (IDTA 02003-1-2: signals with UN/CEFACT units, data types, kinds,
limits and semantic ids; attributes; the state map), OperationalData (latest values from
the historian, see :func:`latest_values`) and TimeSeries (IDTA 02008-1-1: one linked
segment per signal, pointing at its history in the REST API), with the Eclipse BaSyx SDK.
:func:`write_environment` writes JSON or an AASX package; :func:`read_environment` reads
either with the SDK's strict readers; :func:`import_environment` turns shells into a
factory-file fragment. :func:`value_only` gives the ValueOnly form of AAS Part 2
(``$value``).
"""

from __future__ import annotations

from shopfloor.aas._errors import AasError
from shopfloor.aas._export import (
    ASSET_PATH_KEY,
    SUBMODEL_SEMANTIC_IDS,
    SUBMODELS,
    AasExporter,
    AasOptions,
    LatestValue,
    latest_values,
    quality_name,
)
from shopfloor.aas._files import (
    Environment,
    environment_dict,
    environment_json,
    read_environment,
    to_jsonable,
    write_environment,
)
from shopfloor.aas._import import ImportOptions, ImportResult, import_environment
from shopfloor.aas._values import value_only

__all__ = [
    "ASSET_PATH_KEY",
    "SUBMODELS",
    "SUBMODEL_SEMANTIC_IDS",
    "AasError",
    "AasExporter",
    "AasOptions",
    "Environment",
    "ImportOptions",
    "ImportResult",
    "LatestValue",
    "environment_dict",
    "environment_json",
    "import_environment",
    "latest_values",
    "quality_name",
    "read_environment",
    "to_jsonable",
    "value_only",
    "write_environment",
]

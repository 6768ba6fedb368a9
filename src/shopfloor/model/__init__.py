"""The open data model: the ISA-95 asset tree, asset types, signals and the factory file.

A factory file (YAML) declares the asset tree (enterprise › site › area › line › cell ›
equipment), asset types (signals, attributes, state maps; ``extends`` for inheritance),
device connections, per-equipment bindings of signals to source addresses, and shift
calendars. :func:`load_factory` validates it and reports every problem at once, each with
its file, line, column and key path.
"""

from __future__ import annotations

from shopfloor.model._anomaly import AnomalyParams, AnomalyRule, select_anomaly_signals
from shopfloor.model._factory import AssetNode, Binding, Factory, ResolvedSignal
from shopfloor.model._issues import FactoryFileError, ModelIssue
from shopfloor.model._jsonschema import factory_json_schema
from shopfloor.model._loader import load_factory, parse_factory
from shopfloor.model._schema import STANDARD_STATES, Connection, FactoryDocument, Site
from shopfloor.model._tree import render_tree
from shopfloor.model._units import UNITS

__all__ = [
    "STANDARD_STATES",
    "UNITS",
    "AnomalyParams",
    "AnomalyRule",
    "AssetNode",
    "Binding",
    "Connection",
    "Factory",
    "FactoryDocument",
    "FactoryFileError",
    "ModelIssue",
    "ResolvedSignal",
    "Site",
    "factory_json_schema",
    "load_factory",
    "parse_factory",
    "render_tree",
    "select_anomaly_signals",
]

"""Open exports: history, events and KPIs as Parquet or CSV files with a data dictionary.

:func:`export_open` writes, for a range ``[since, until)``, Hive-style partitions by UTC day
and asset (``<out>/history/day=2026-11-25/asset=acme~munich~…~press-7/part-0.parquet``, see
:func:`asset_partition` for the filesystem-safe asset names) that pandas, polars, DuckDB and
Spark read without help: plain column types only (``timestamp[us, UTC]``, ``float64``,
``int64``, ``bool``, ``string``). ``dictionary.json`` beside them documents the layout, each
column (type, unit, meaning, a JSON Schema per row), every signal and asset, the units and
the JSON Schema of the factory model. Everything is streamed: one signal chunk, one day of
events, one asset-day of KPIs at a time.

The table layouts (:data:`TABLES`) are shared with partner data shares
(:mod:`shopfloor.api`), which serve the same columns.
"""

from __future__ import annotations

from shopfloor.export._dictionary import DICTIONARY_VERSION, data_dictionary, row_schema
from shopfloor.export._layout import MAX_PARTITION, asset_partition, day_partition
from shopfloor.export._tables import (
    AGGREGATE_SCHEMA,
    EVENTS_SCHEMA,
    HISTORY_SCHEMA,
    KPI_SCHEMA,
    SHARED_OEE_SCHEMA,
    TABLES,
    VALUE_COLUMN,
    ColumnDoc,
    TableDoc,
)
from shopfloor.export._writer import (
    WHAT,
    ExportError,
    ExportFile,
    ExportFormat,
    ExportResult,
    ExportWhat,
    export_open,
    kpi_assets,
)

__all__ = [
    "AGGREGATE_SCHEMA",
    "DICTIONARY_VERSION",
    "EVENTS_SCHEMA",
    "HISTORY_SCHEMA",
    "KPI_SCHEMA",
    "MAX_PARTITION",
    "SHARED_OEE_SCHEMA",
    "TABLES",
    "VALUE_COLUMN",
    "WHAT",
    "ColumnDoc",
    "ExportError",
    "ExportFile",
    "ExportFormat",
    "ExportResult",
    "ExportWhat",
    "TableDoc",
    "asset_partition",
    "data_dictionary",
    "day_partition",
    "export_open",
    "kpi_assets",
    "row_schema",
]

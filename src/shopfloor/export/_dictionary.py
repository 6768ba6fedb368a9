"""``dictionary.json``: the data dictionary that travels with every export.

It says what the files hold without shopfloor at hand: the layout and how to read it, each
table's columns (type, unit, meaning) and a JSON Schema of one row, every signal with its
data type, unit and the history column its values are in, every asset with its partition
name, the units (UN/CEFACT code → name and symbol), the files with their row counts, and
the JSON Schema of the factory model the data follows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import pyarrow as pa

from shopfloor import __version__
from shopfloor.export._layout import MAX_PARTITION, asset_partition
from shopfloor.export._tables import VALUE_COLUMN, TableDoc
from shopfloor.model import UNITS, Factory, factory_json_schema

__all__ = [
    "DICTIONARY_VERSION",
    "column_type",
    "data_dictionary",
    "row_schema",
    "signal_entries",
    "table_entry",
]

DICTIONARY_VERSION: Final = 1
"""Changes when the layout or a table changes incompatibly."""

_TYPE_NAMES: Final = {
    "timestamp[us, tz=UTC]": "timestamp[us, UTC]",
    "double": "float64",
    "int64": "int64",
    "bool": "bool",
    "string": "string",
}

_READ: Final = {
    "parquet": {
        "pandas": "pandas.read_parquet('<out>/history')",
        "polars": "polars.read_parquet('<out>/history/**/*.parquet', hive_partitioning=True)",
        "duckdb": "SELECT * FROM read_parquet('<out>/history/**/*.parquet', "
        "hive_partitioning = true)",
        "spark": "spark.read.parquet('<out>/history')",
    },
    "csv": {
        "pandas": "pandas.concat(pandas.read_csv(f, parse_dates=['ts']) for f in "
        "glob.glob('<out>/history/**/*.csv', recursive=True))",
        "polars": "polars.concat(polars.read_csv(f, try_parse_dates=True, "
        "infer_schema_length=None) for f in glob.glob('<out>/history/**/*.csv', recursive=True)"
        ")  (polars guesses types from the first 100 rows unless told to read them all)",
        "duckdb": "SELECT * FROM read_csv('<out>/history/**/*.csv', hive_partitioning = true)",
        "spark": "spark.read.option('header', True).option('inferSchema', True)"
        ".csv('<out>/history')  (add .option('multiLine', True) when texts hold line breaks)",
    },
}

_FORMATS: Final = {
    "parquet": "Apache Parquet, snappy-compressed, one or more row groups per file; the "
    "Arrow types above map to plain Parquet types (TIMESTAMP(MICROS, UTC), DOUBLE, INT64, "
    "BOOLEAN, STRING).",
    "csv": "CSV (RFC 4180), UTF-8, comma-separated, a header row; timestamps RFC 3339 in UTC "
    "with microseconds (2026-11-25T06:00:00.250000Z); booleans true/false; an empty field is "
    "null; non-finite floats nan, inf, -inf.",
}


def column_type(typ: pa.DataType) -> str:
    """The type name the dictionary uses for an Arrow type."""
    return _TYPE_NAMES.get(str(typ), str(typ))


def _json_type(typ: pa.DataType) -> dict[str, Any]:
    if pa.types.is_timestamp(typ):
        return {"type": "string", "format": "date-time"}
    if pa.types.is_floating(typ):
        return {"type": "number"}
    if pa.types.is_integer(typ):
        return {"type": "integer"}
    if pa.types.is_boolean(typ):
        return {"type": "boolean"}
    return {"type": "string"}


def row_schema(doc: TableDoc) -> dict[str, Any]:
    """A JSON Schema (2020-12) of one row of ``doc`` (timestamps as RFC 3339 strings)."""
    props: dict[str, Any] = {}
    for c in doc.columns:
        t = _json_type(c.type)
        if c.nullable:
            t["type"] = [t["type"], "null"]
        props[c.name] = {**t, "description": c.description}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"a row of {doc.name}: {doc.row}",
        "type": "object",
        "properties": props,
        "required": [c.name for c in doc.columns if not c.nullable],
        "additionalProperties": False,
    }


def table_entry(doc: TableDoc) -> dict[str, Any]:
    """A table's columns and row schema, as the dictionary describes them."""
    return {
        "row": doc.row,
        "columns": [
            {
                "name": c.name,
                "type": column_type(c.type),
                "nullable": c.nullable,
                "unit": c.unit,
                "description": c.description,
            }
            for c in doc.columns
        ],
        "row_schema": row_schema(doc),
    }


def _unit_table(factory: Factory, codes: Iterable[str | None]) -> dict[str, dict[str, str]]:
    extra = {code: (u.name, u.symbol) for code, u in factory.document.units.items()}
    out: dict[str, dict[str, str]] = {}
    for code in sorted({c for c in codes if c}):
        name, symbol = extra.get(code) or UNITS.get(code) or (code, code)
        out[code] = {"name": name, "symbol": symbol}
    return out


def signal_entries(factory: Factory, stored: pa.Table) -> list[dict[str, Any]]:
    """The model's signals and the historian's others (``stored``: its catalog), by path."""
    out: dict[str, dict[str, Any]] = {}
    for s in factory.signals():
        out[s.path] = {
            "path": s.path,
            "asset_path": s.asset_path,
            "name": s.name,
            "data_type": s.data_type,
            "value_column": VALUE_COLUMN.get(s.data_type, "value_string"),
            "unit": s.unit,
            "kind": s.kind,
            "description": s.description,
            "semantic_id": s.semantic_id,
            "low": s.low,
            "high": s.high,
            "source": "model",
        }
    for r in stored.select(["path", "data_type", "unit", "kind"]).to_pylist():
        if r["path"] in out:
            continue
        asset, _, name = str(r["path"]).rpartition("/")
        out[r["path"]] = {
            "path": r["path"],
            "asset_path": asset,
            "name": name,
            "data_type": r["data_type"],
            "value_column": VALUE_COLUMN.get(r["data_type"] or "", "value_string"),
            "unit": r["unit"],
            "kind": r["kind"],
            "description": "",
            "semantic_id": None,
            "low": None,
            "high": None,
            "source": "discovered",
        }
    return [out[p] for p in sorted(out)]


def data_dictionary(
    factory: Factory,
    signals: Sequence[Mapping[str, Any]],
    *,
    tables: Mapping[str, TableDoc],
    fmt: str,
    since: datetime,
    until: datetime,
    assets: Iterable[str],
    files: Sequence[Mapping[str, Any]],
    rows: Mapping[str, int],
) -> dict[str, Any]:
    """The dictionary of one export: ``tables`` by folder name, ``signals`` (from
    :func:`signal_entries`), ``assets`` (paths) with their partitions, ``files`` and ``rows``
    per table."""
    nodes = {a.path: a for a in factory.assets()}
    asset_list = []
    for path in sorted(set(assets)):
        node = nodes.get(path)
        asset_list.append(
            {
                "path": path,
                "partition": asset_partition(path),
                "level": node.level if node else None,
                "name": node.name if node else None,
                "type": node.type if node else None,
            }
        )
    units = [s["unit"] for s in signals] + [c.unit for doc in tables.values() for c in doc.columns]
    ext = "parquet" if fmt == "parquet" else "csv"
    return {
        "format": "shopfloor open export",
        "version": DICTIONARY_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "shopfloor_version": __version__,
        "enterprise": factory.document.enterprise.id,
        "range": {
            "since": since.astimezone(UTC).isoformat(),
            "until": until.astimezone(UTC).isoformat(),
            "note": "half-open [since, until), UTC",
        },
        "file_format": fmt,
        "layout": {
            "path": f"<table>/day=<YYYY-MM-DD>/asset=<asset partition>/part-0.{ext}",
            "partitioning": "hive (key=value folders); readers add 'day' and 'asset' columns",
            "day": "the UTC calendar day of the row's time: ts (history, events: events that "
            "began before the range are filed under its first day), window_start (kpis)",
            "asset": "the asset path with '/' replaced by '~'; characters other than ASCII "
            "letters, digits, '_', '.', '-' as %XX (UTF-8 bytes); longer than "
            f"{MAX_PARTITION} characters: cut, then '~' and 12 hex digits of the path's "
            "SHA-256. The real path is every row's asset_path column.",
            "history_asset": "a signal's asset is its path without the last segment",
            "file_format": _FORMATS[fmt],
            "read": _READ[fmt],
        },
        "tables": {
            name: {"path": f"{name}/", "rows": int(rows.get(name, 0)), **table_entry(doc)}
            for name, doc in tables.items()
        },
        "signals": [dict(s) for s in signals],
        "assets": asset_list,
        "units": _unit_table(factory, units),
        "files": [dict(f) for f in files],
        "model_schema": factory_json_schema(),
    }

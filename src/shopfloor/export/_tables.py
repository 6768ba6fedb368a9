"""The tables of open exports (and of partner shares): schemas, column docs, converters.

Every column has a plain type that pandas, polars, DuckDB and Spark read without help:
``timestamp[us, UTC]``, ``float64``, ``int64``, ``bool`` or ``string`` — no unsigned or
small integers, no dictionaries, no extension types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.edge.batch import TS_TYPE

__all__ = [
    "AGGREGATE_SCHEMA",
    "EVENTS_SCHEMA",
    "HISTORY_SCHEMA",
    "KPI_SCHEMA",
    "SHARED_OEE_SCHEMA",
    "TABLES",
    "VALUE_COLUMN",
    "ColumnDoc",
    "TableDoc",
    "aggregate_table",
    "events_table",
    "history_table",
    "kpi_table",
    "nan_to_null",
    "shared_oee_table",
]

VALUE_COLUMN: Final[dict[str, str]] = {
    "float": "value_float",
    "int": "value_int",
    "bool": "value_bool",
    "string": "value_string",
    "json": "value_string",
}
"""The history column that holds the values of a signal of each data type."""

_F64, _I64, _STR, _BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()


@dataclass(frozen=True, slots=True)
class ColumnDoc:
    """One column: name, Arrow type, whether it may be null, unit (UN/CEFACT) and meaning."""

    name: str
    type: pa.DataType
    description: str
    nullable: bool = True
    unit: str | None = None

    def field(self) -> pa.Field:
        """The Arrow field of the column."""
        return pa.field(self.name, self.type, nullable=self.nullable)


@dataclass(frozen=True, slots=True)
class TableDoc:
    """A table of an export: its columns and what one row is."""

    name: str
    row: str
    columns: tuple[ColumnDoc, ...]

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the table."""
        return pa.schema([c.field() for c in self.columns])


_ASSET = ColumnDoc(
    "asset_path",
    _STR,
    "The asset's path in the ISA-95 tree (enterprise/site/area/line/cell/equipment), as in "
    "the factory file; the 'asset' partition is this path made filesystem-safe.",
    nullable=False,
)
_SIGNAL = ColumnDoc(
    "signal", _STR, "The signal's full path: <asset path>/<signal name>.", nullable=False
)

HISTORY = TableDoc(
    "history",
    "one sample of one signal",
    (
        _ASSET,
        _SIGNAL,
        ColumnDoc("ts", TS_TYPE, "When the value was measured (source time, UTC).", False),
        ColumnDoc(
            "quality",
            _I64,
            "OPC DA quality byte: 192 good, 64–127 uncertain, below 64 bad.",
            False,
        ),
        ColumnDoc(
            "value_float",
            _F64,
            "The value of a float signal, in the signal's unit (NaN kept); null for others.",
        ),
        ColumnDoc("value_int", _I64, "The value of an int signal (counters, state codes)."),
        ColumnDoc("value_bool", _BOOL, "The value of a bool signal."),
        ColumnDoc("value_string", _STR, "The value of a string signal, or a json signal's text."),
    ),
)

AGGREGATES = TableDoc(
    "aggregates",
    "the samples of one signal in one bucket (non-empty buckets only)",
    (
        _ASSET,
        _SIGNAL,
        ColumnDoc("bucket", TS_TYPE, "Start of the bucket (epoch-aligned, UTC).", False),
        ColumnDoc("min", _F64, "Smallest value in the bucket (signal's unit; bools 0/1)."),
        ColumnDoc("max", _F64, "Largest value in the bucket."),
        ColumnDoc("avg", _F64, "Mean of the values in the bucket."),
        ColumnDoc(
            "count", _I64, "Samples aggregated (good or uncertain quality, not null).", False
        ),
    ),
)

EVENTS = TableDoc(
    "events",
    "one event: a state episode, downtime, alarm occurrence, anomaly or device error",
    (
        ColumnDoc("event_id", _STR, "Stable id of the event.", False),
        ColumnDoc(
            "kind", _STR, "What happened: downtime, alarm, alarm_log, anomaly, agv_error…", False
        ),
        _ASSET,
        ColumnDoc("signal", _STR, "The signal the event is about, if any."),
        ColumnDoc("ts", TS_TYPE, "Start (UTC).", False),
        ColumnDoc("end_ts", TS_TYPE, "End (UTC); null while it lasts."),
        ColumnDoc("code", _STR, "Standard state, alarm condition or error type."),
        ColumnDoc("severity", _I64, "1–1000 (OPC UA severity) for alarms."),
        ColumnDoc("message", _STR, "Human-readable text."),
        ColumnDoc("data", _STR, "Anything else, as a JSON object (text)."),
    ),
)

_RATIO = "C62"
KPIS = TableDoc(
    "kpis",
    "the OEE (ISO 22400-2) of one asset in one hour of the site's clock",
    (
        _ASSET,
        ColumnDoc("window_start", TS_TYPE, "Start of the window (UTC).", False),
        ColumnDoc("window_end", TS_TYPE, "End of the window (UTC, exclusive).", False),
        ColumnDoc(
            "planned_busy_time_s",
            _F64,
            "PBT: shift time minus breaks and planned downtime.",
            unit="SEC",
        ),
        ColumnDoc("actual_production_time_s", _F64, "APT: time running within PBT.", unit="SEC"),
        ColumnDoc("availability", _F64, "APT / PBT (null when PBT is 0).", unit=_RATIO),
        ColumnDoc("performance", _F64, "ideal cycle time × produced / APT.", unit=_RATIO),
        ColumnDoc("quality", _F64, "good / produced.", unit=_RATIO),
        ColumnDoc("oee", _F64, "ideal cycle time × good / PBT (= A × P × Q).", unit=_RATIO),
        ColumnDoc("good", _I64, "Good pieces.", unit="H87"),
        ColumnDoc("reject", _I64, "Rejected pieces.", unit="H87"),
        ColumnDoc("produced", _I64, "good + reject.", unit="H87"),
        ColumnDoc("ideal_cycle_time_s", _F64, "Ideal cycle time per piece.", unit="SEC"),
    ),
)

SHARED_OEE = TableDoc(
    "oee",
    "the OEE (ISO 22400-2) of one asset in one window; ratios only, no counts or times",
    (
        _ASSET,
        ColumnDoc("window_start", TS_TYPE, "Start of the window (UTC).", False),
        ColumnDoc("window_end", TS_TYPE, "End of the window (UTC, exclusive).", False),
        ColumnDoc("availability", _F64, "APT / PBT.", unit=_RATIO),
        ColumnDoc("performance", _F64, "ideal cycle time × produced / APT.", unit=_RATIO),
        ColumnDoc("quality", _F64, "good / produced.", unit=_RATIO),
        ColumnDoc("oee", _F64, "availability × performance × quality.", unit=_RATIO),
    ),
)

TABLES: Final[dict[str, TableDoc]] = {
    t.name: t for t in (HISTORY, AGGREGATES, EVENTS, KPIS, SHARED_OEE)
}
"""Every table layout by name."""

HISTORY_SCHEMA: Final = HISTORY.schema
AGGREGATE_SCHEMA: Final = AGGREGATES.schema
EVENTS_SCHEMA: Final = EVENTS.schema
KPI_SCHEMA: Final = KPIS.schema
SHARED_OEE_SCHEMA: Final = SHARED_OEE.schema


def _repeat(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, _STR), n)


def history_table(signal: str, data_type: str, raw: pa.Table) -> pa.Table:
    """:data:`HISTORY_SCHEMA` rows of one signal from :meth:`Historian.read_raw` output."""
    n = raw.num_rows
    target = VALUE_COLUMN.get(data_type, "value_string")
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "asset_path": _repeat(signal.rpartition("/")[0], n),
        "signal": _repeat(signal, n),
        "ts": raw.column("ts").cast(TS_TYPE),
        "quality": raw.column("quality").cast(_I64),
    }
    for name in ("value_float", "value_int", "value_bool", "value_string"):
        typ = HISTORY_SCHEMA.field(name).type
        if name == target:
            value = raw.column("value")
            cols[name] = value if value.type == typ else value.cast(typ)
        else:
            cols[name] = pa.nulls(n, typ)
    return pa.table(cols, schema=HISTORY_SCHEMA)


def aggregate_table(signal: str, buckets: pa.Table) -> pa.Table:
    """:data:`AGGREGATE_SCHEMA` rows from :meth:`Historian.downsample` output."""
    n = buckets.num_rows
    return pa.table(
        {
            "asset_path": _repeat(signal.rpartition("/")[0], n),
            "signal": _repeat(signal, n),
            "bucket": buckets.column("bucket").cast(TS_TYPE),
            "min": buckets.column("min").cast(_F64),
            "max": buckets.column("max").cast(_F64),
            "avg": buckets.column("avg").cast(_F64),
            "count": buckets.column("count").cast(_I64),
        },
        schema=AGGREGATE_SCHEMA,
    )


def events_table(events: pa.Table) -> pa.Table:
    """:data:`EVENTS_SCHEMA` rows from the historian's events (``asset`` → ``asset_path``)."""
    return pa.table(
        {
            c.name: events.column("asset" if c.name == "asset_path" else c.name).cast(c.type)
            for c in EVENTS.columns
        },
        schema=EVENTS_SCHEMA,
    )


def _from_oee(oee: pa.Table, doc: TableDoc) -> pa.Table:
    cols = {}
    for c in doc.columns:
        src = oee.column("asset" if c.name == "asset_path" else c.name)
        cols[c.name] = src.cast(c.type) if src.type != c.type else src
    return pa.table(cols, schema=doc.schema)


def kpi_table(oee: pa.Table) -> pa.Table:
    """:data:`KPI_SCHEMA` rows from :func:`shopfloor.analytics.oee` output."""
    return _from_oee(oee, KPIS)


def shared_oee_table(oee: pa.Table) -> pa.Table:
    """:data:`SHARED_OEE_SCHEMA` rows (ratios only) from :func:`shopfloor.analytics.oee`."""
    return _from_oee(oee, SHARED_OEE)


def nan_to_null(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Non-finite floats as nulls (for JSON, which has no NaN)."""
    if pa.types.is_floating(column.type):
        return pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
    return column

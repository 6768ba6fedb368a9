"""CSV as every reader takes it without options: pandas, polars, DuckDB and Spark.

Arrow writes the bulk (RFC 4180, a header row, every text value quoted, numbers and
booleans bare, an empty field for null). Two things are adjusted: timestamps become RFC 3339
text in UTC with microseconds (``2026-11-25T06:00:00.250000Z``), and a NaN is written
``NaN`` rather than Arrow's ``nan`` — the one spelling all four parse as a number (Spark's
``nanValue`` default, and polars reads no other). Rows holding a NaN are formatted here,
the rest by Arrow, in order. Infinities stay ``inf``/``-inf`` (pandas, polars, DuckDB;
Spark needs ``positiveInf``/``negativeInf`` options for them: no spelling suits all four).
"""

from __future__ import annotations

import io
import math
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["csv_bytes", "csv_header"]

_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S carries the microseconds
_NO_HEADER: Final = pacsv.WriteOptions(include_header=False)


def _text_timestamps(table: pa.Table) -> pa.Table:
    cols = [
        pc.strftime(c, format=_TS_FORMAT) if pa.types.is_timestamp(c.type) else c
        for c in table.columns
    ]
    return pa.table(cols, names=table.column_names)


def csv_header(schema: pa.Schema) -> bytes:
    """The header row of ``schema`` (quoted names, as Arrow writes them)."""
    return (",".join('"' + n.replace('"', '""') + '"' for n in schema.names) + "\n").encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace('"', '""') + '"'


def csv_bytes(table: pa.Table) -> bytes:
    """The rows of ``table`` as CSV without a header (see the module docs)."""
    table = _text_timestamps(table)
    mask: pa.ChunkedArray | pa.Array | None = None
    for c in table.columns:
        if pa.types.is_floating(c.type):
            m = pc.fill_null(pc.is_nan(c), False)
            mask = m if mask is None else pc.or_(mask, m)
    buf = io.BytesIO()
    nan_rows = (
        np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if mask is not None
        else np.empty(0, np.int64)
    )
    if nan_rows.size == 0:
        pacsv.write_csv(table, buf, _NO_HEADER)
        return buf.getvalue()
    start = 0
    for row in nan_rows.tolist():
        if row > start:
            pacsv.write_csv(table.slice(start, row - start), buf, _NO_HEADER)
        values = table.slice(row, 1).to_pylist()[0].values()
        buf.write((",".join(_cell(v) for v in values) + "\n").encode())
        start = row + 1
    if start < table.num_rows:
        pacsv.write_csv(table.slice(start), buf, _NO_HEADER)
    return buf.getvalue()

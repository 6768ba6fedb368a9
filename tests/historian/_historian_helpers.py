"""Helpers shared by the historian tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from shopfloor.edge.batch import READING_SCHEMA, TS_TYPE, ReadingBatch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_US = 1_767_225_600_000_000

COLUMN = {"float": "v_float", "int": "v_int", "bool": "v_bool", "string": "v_str", "json": "v_str"}
ARROW = {"v_float": pa.float64(), "v_int": pa.int64(), "v_bool": pa.bool_(), "v_str": pa.string()}


def batch(
    signal_id: int, data_type: str, ts_us: Any, values: Any, quality: Any = 192
) -> ReadingBatch:
    """A batch of one signal; ``values`` may hold None (no value)."""
    ts = list(ts_us)
    n = len(ts)
    q = list(quality) if isinstance(quality, list | tuple | np.ndarray) else [quality] * n
    column = COLUMN[data_type]
    cols: dict[str, pa.Array] = {
        "signal_id": pa.array([signal_id] * n, pa.int32()),
        "ts": pa.array(ts, pa.int64()).cast(TS_TYPE),
        "quality": pa.array(q, pa.uint8()),
    }
    for name, typ in ARROW.items():
        cols[name] = pa.array(list(values), typ) if name == column else pa.nulls(n, typ)
    return ReadingBatch(pa.Table.from_pydict(cols, schema=READING_SCHEMA))

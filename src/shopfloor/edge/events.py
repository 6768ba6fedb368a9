"""The event record shared by connectors, analytics and the historian.

Events are what happens rather than what is measured: state changes, alarms, anomalies,
errors a device reports. Connectors produce them (e.g. VDA 5050 vehicle errors) without
knowing the historian, so the schema lives here, at the edge, like the batch schemas.
"""

from __future__ import annotations

import pyarrow as pa

from shopfloor.edge.batch import TS_TYPE

__all__ = ["EVENT_SCHEMA"]

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("signal", pa.string()),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("end_ts", TS_TYPE),
        pa.field("code", pa.string()),
        pa.field("severity", pa.int16()),
        pa.field("message", pa.string()),
        pa.field("data", pa.string()),
    ]
)
"""Events: ``kind`` is e.g. ``state``, ``alarm``, ``anomaly``; ``code`` the standard state or
alarm id; ``data`` a JSON object with anything else (raw reason code, limits, score). An
event is written again with the same ``event_id`` when it ends (``end_ts``) or changes."""

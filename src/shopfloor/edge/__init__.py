"""The edge of the pipeline: columnar batches, the mapper, dead letters, the embedded pipeline,
the store-and-forward buffer."""

from __future__ import annotations

from shopfloor.edge.batch import (
    RAW_SCHEMA,
    READING_SCHEMA,
    Quality,
    RawBatch,
    RawBatchBuilder,
    ReadingBatch,
)
from shopfloor.edge.buffer import (
    DropRecord,
    EdgeBuffer,
    EdgeBufferStats,
    Forwarder,
    ForwarderStats,
)
from shopfloor.edge.deadletter import DEAD_LETTER_SCHEMA, DeadLetterBuilder
from shopfloor.edge.events import EVENT_SCHEMA
from shopfloor.edge.mapper import Mapper, MapResult, Route
from shopfloor.edge.pipeline import Observer, Pipeline, PipelineStats

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "EVENT_SCHEMA",
    "RAW_SCHEMA",
    "READING_SCHEMA",
    "DeadLetterBuilder",
    "DropRecord",
    "EdgeBuffer",
    "EdgeBufferStats",
    "Forwarder",
    "ForwarderStats",
    "MapResult",
    "Mapper",
    "Observer",
    "Pipeline",
    "PipelineStats",
    "Quality",
    "RawBatch",
    "RawBatchBuilder",
    "ReadingBatch",
    "Route",
]

"""The historian: readings, rollups, events and dead letters behind one async interface.

Open an engine by URL with :func:`open_historian` and use it as an async context manager::

    async with open_historian("duckdb:shopfloor.duckdb") as h:
        ids = await h.register_signals([SignalInfo("line-1/press-7/temperature", "float")])
"""

from __future__ import annotations

from shopfloor.historian._url import open_historian
from shopfloor.historian.base import (
    DEAD_LETTER_SCHEMA,
    EVENT_SCHEMA,
    Historian,
    RetentionResult,
    SignalInfo,
)

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "EVENT_SCHEMA",
    "Historian",
    "RetentionResult",
    "SignalInfo",
    "open_historian",
]

"""Dead letters: everything that arrived but could not be mapped or parsed.

Nothing that arrives is dropped silently: a reading whose address is not bound, whose value
does not fit its signal's type, or a message that does not parse becomes a dead letter
(:data:`~shopfloor.historian.base.DEAD_LETTER_SCHEMA`) with the reason, the raw payload,
where it came from and when it was received; the historian keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from shopfloor.edge.batch import TS_TYPE, VALUE_COLUMNS, to_us

__all__ = ["DEAD_LETTER_SCHEMA", "DeadLetterBuilder", "dead_letters_from_raw_rows"]

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("received_at", TS_TYPE, nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("location", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("payload", pa.binary()),
    ]
)
"""Dead letters: ``source`` is the connection (or file), ``location`` the address, topic, or
``file:line`` of the input, ``reason`` says what is wrong, ``payload`` holds the raw bytes as
received (or a JSON rendering of a raw row)."""


class DeadLetterBuilder:
    """Collects dead letters one at a time (for message-level failures such as bad payloads)."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[tuple[int, str, str | None, str, bytes | None]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self,
        source: str,
        reason: str,
        *,
        location: str | None = None,
        payload: bytes | str | None = None,
        received_at: datetime | None = None,
    ) -> None:
        """Record one dead letter; ``received_at`` defaults to now."""
        when = to_us(received_at or datetime.now(UTC))
        raw = payload.encode() if isinstance(payload, str) else payload
        self._rows.append((when, source, location, reason, raw))

    def build(self) -> pa.Table:
        """The collected dead letters as one table; the builder is emptied."""
        rows, self._rows = self._rows, []
        return pa.Table.from_arrays(
            [
                pa.array([r[0] for r in rows], pa.int64()).cast(TS_TYPE),
                pa.array([r[1] for r in rows], pa.string()),
                pa.array([r[2] for r in rows], pa.string()),
                pa.array([r[3] for r in rows], pa.string()),
                pa.array([r[4] for r in rows], pa.binary()),
            ],
            schema=DEAD_LETTER_SCHEMA,
        )


def _row_json(row: dict[str, Any]) -> bytes:
    value = next((row[c] for c in VALUE_COLUMNS if row.get(c) is not None), None)
    if isinstance(value, float) and not np.isfinite(value):
        value = repr(value)
    ts = row["ts"]
    return json.dumps(
        {
            "source": row["source"],
            "address": row["address"],
            "ts": ts.isoformat() if isinstance(ts, datetime) else ts,
            "value": value,
            "quality": row["quality"],
        },
        ensure_ascii=False,
    ).encode()


def dead_letters_from_raw_rows(
    raw: pa.Table, reasons: Sequence[str], received_at: datetime | None = None
) -> pa.Table:
    """Turn rows of a raw batch (``RAW_SCHEMA``) into dead letters, one reason per row.

    Only the rejected rows pass through here, so the per-row JSON rendering of the payload
    is off the hot path.
    """
    n = raw.num_rows
    if n != len(reasons):
        raise ValueError(f"{n} rows but {len(reasons)} reasons")
    when = to_us(received_at or datetime.now(UTC))
    payloads = [_row_json(r) for r in raw.to_pylist()]
    return pa.Table.from_arrays(
        [
            pa.array(np.full(n, when, dtype=np.int64)).cast(TS_TYPE),
            raw.column("source").combine_chunks(),
            raw.column("address").combine_chunks(),
            pa.array(list(reasons), pa.string()),
            pa.array(payloads, pa.binary()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )

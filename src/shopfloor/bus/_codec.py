"""Bus message bodies: Arrow IPC streams of raw batches, events and dead letters.

Layout: ``SF`` + a kind byte + ``1`` (the format version), then

* kind ``R`` (readings): the length of the raw batch's IPC stream (u32, little endian),
  that stream (:data:`~shopfloor.edge.batch.RAW_SCHEMA`), then optionally a second IPC
  stream of :data:`POINTS_SCHEMA`: the signals the edge named for addresses that the
  factory file does not bind (connections with ``auto_area``: Sparkplug metrics, VDA 5050
  vehicles), so that whichever worker maps the batch can create them;
* kind ``E`` (events, :data:`~shopfloor.edge.events.EVENT_SCHEMA`, assets already named by
  their asset path) and ``D`` (dead letters,
  :data:`~shopfloor.edge.deadletter.DEAD_LETTER_SCHEMA`): one IPC stream.

Streams may be compressed (Arrow's own buffer compression, ``lz4`` or ``zstd``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.edge.batch import RAW_SCHEMA, RawBatch
from shopfloor.edge.deadletter import DEAD_LETTER_SCHEMA
from shopfloor.edge.events import EVENT_SCHEMA
from shopfloor.errors import BatchError

__all__ = [
    "POINTS_SCHEMA",
    "Compression",
    "Message",
    "decode",
    "encode_dead_letters",
    "encode_events",
    "encode_readings",
    "split_readings",
]

_HEAD: Final = struct.Struct("<4sI")
_READINGS: Final = b"SFR1"
_EVENTS: Final = b"SFE1"
_DEAD_LETTERS: Final = b"SFD1"
_SEP: Final = "\x1f"

Compression = Literal["none", "lz4", "zstd"]
"""Arrow IPC buffer compression of message bodies."""

POINTS_SCHEMA: Final = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("address", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("data_type", pa.string(), nullable=False),
        pa.field("unit", pa.string()),
        pa.field("kind", pa.string(), nullable=False),
    ]
)
"""Signals the edge named for unbound addresses: where a worker creates them."""


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message body: readings (with their points), events or dead letters."""

    kind: Literal["readings", "events", "dead_letters"]
    raw: RawBatch | None = None
    points: pa.Table | None = None
    table: pa.Table | None = None
    """Events or dead letters."""


def _ipc(table: pa.Table, compression: Compression) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def encode_readings(
    raw: RawBatch, points: pa.Table | None = None, compression: Compression = "none"
) -> bytes:
    """The message body of ``raw`` (and of the signal names ``points``, when any)."""
    body = _ipc(raw.table, compression)
    out = [_HEAD.pack(_READINGS, len(body)), body]
    if points is not None and points.num_rows:
        out.append(_ipc(points.select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA), compression))
    return b"".join(out)


def encode_events(events: pa.Table, compression: Compression = "none") -> bytes:
    """The message body of a table of events."""
    return _EVENTS + _ipc(events.cast(EVENT_SCHEMA), compression)


def encode_dead_letters(letters: pa.Table, compression: Compression = "none") -> bytes:
    """The message body of a table of dead letters."""
    return _DEAD_LETTERS + _ipc(letters.cast(DEAD_LETTER_SCHEMA), compression)


def _read(data: memoryview, what: str, schema: pa.Schema) -> pa.Table:
    try:
        with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
            table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchError(f"bus message: the {what} is not an Arrow IPC stream: {exc}") from exc
    if not table.schema.equals(schema):
        raise BatchError(f"bus message: the {what} has the schema {table.schema}, not {schema}")
    return table


def decode(payload: bytes) -> Message:
    """The content of a message body.

    Raises :class:`~shopfloor.errors.BatchError` saying what is wrong with a malformed one.
    """
    view = memoryview(payload)
    magic = bytes(view[:4])
    if magic == _EVENTS:
        return Message("events", table=_read(view[4:], "event table", EVENT_SCHEMA))
    if magic == _DEAD_LETTERS:
        return Message(
            "dead_letters", table=_read(view[4:], "dead-letter table", DEAD_LETTER_SCHEMA)
        )
    if magic != _READINGS or len(view) < _HEAD.size:
        raise BatchError(
            f"bus message of {len(view)} bytes is not a shopfloor batch (starts {magic!r})"
        )
    _, size = _HEAD.unpack_from(view)
    end = _HEAD.size + size
    if end > len(view):
        raise BatchError(f"bus message: raw batch of {size} bytes, only {len(view)} in all")
    raw = RawBatch(_read(view[_HEAD.size : end], "raw batch", RAW_SCHEMA))
    points = _read(view[end:], "point table", POINTS_SCHEMA) if end < len(view) else None
    return Message("readings", raw=raw, points=points)


def split_readings(
    raw: RawBatch,
    points: pa.Table | None,
    max_bytes: int,
    compression: Compression = "none",
) -> list[bytes]:
    """Message bodies of at most ``max_bytes`` holding the rows of ``raw`` in order.

    The signal names in ``points`` go with each part that has their addresses.
    """
    n = len(raw)
    size = raw.table.nbytes + (points.nbytes if points is not None else 0)
    if size <= max_bytes or n <= 1:
        body = encode_readings(raw, points, compression)
        if len(body) <= max_bytes:
            return [body]
        if n <= 1:
            raise BatchError(
                f"one reading is {len(body)} bytes encoded, more than a message may hold "
                f"({max_bytes} bytes)"
            )
        size = len(body)
    which = None  # the row of points of each raw row, found once for all parts
    if points is not None and points.num_rows:
        which = _rows_of(raw, points)
    parts = max(2, math.ceil(size * 1.05 / max_bytes))
    step = math.ceil(n / parts)
    out: list[bytes] = []
    for lo in range(0, n, step):
        part = RawBatch(raw.table.slice(lo, step))
        mine = None
        if which is not None and points is not None:
            mine = points.take(pc.unique(which.slice(lo, step).drop_null()))
        out.extend(split_readings(part, mine, max_bytes, compression))
    return out


def _rows_of(raw: RawBatch, points: pa.Table) -> pa.Array:
    """For each row of ``raw``, the row of ``points`` with its source and address (or null)."""
    t = raw.table
    source = t.column("source")
    psource = points.column("source")
    first = source[0].as_py()
    one_source = (
        pc.all(pc.equal(source, first)).as_py() and pc.all(pc.equal(psource, first)).as_py()
    )
    address, paddress = t.column("address"), points.column("address").combine_chunks()
    if one_source and all(len(c) == len(paddress) and c.equals(paddress) for c in address.chunks):
        # rows that repeat the points' addresses chunk by chunk (a poll of every point, or
        # the generator's ticks): no hashing needed
        return pa.array(np.tile(np.arange(len(paddress), dtype=np.int32), address.num_chunks))
    if one_source:
        keys, pkeys = t.column("address"), points.column("address")  # one source: cheaper
    else:
        keys = pc.binary_join_element_wise(source, t.column("address"), _SEP)
        pkeys = pc.binary_join_element_wise(psource, points.column("address"), _SEP)
    return pc.index_in(keys, value_set=pkeys.combine_chunks()).combine_chunks()

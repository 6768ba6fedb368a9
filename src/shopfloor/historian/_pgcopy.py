"""PostgreSQL's binary ``COPY`` format, written from and read into NumPy/Arrow columns.

``COPY … FROM STDIN (FORMAT BINARY)`` takes a 19-byte header, then one tuple per row
(``int16`` field count, then per field an ``int32`` byte length — ``-1`` for NULL — and the
field's bytes, all big-endian), then an ``int16`` ``-1`` trailer. Nothing here touches one
Python object per row:

* **Encoding.** Rows without a text/bytea value share a fixed layout for each pattern of
  NULLs, so each such group is one NumPy structured array with big-endian fields, filled
  column by column and emitted with ``tobytes()``. Rows carrying variable-width values get
  per-row offsets from a cumulative sum and every field is scattered into place with fancy
  indexing. Row order in the output is therefore not the input order: the callers either
  do not care (table rows have no order) or carry an explicit position column.
* **Decoding.** A query whose columns are all fixed-width and never NULL yields equal-sized
  tuples, which one structured ``np.frombuffer`` view decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.errors import HistorianError

__all__ = [
    "PG_EPOCH_US",
    "CopyColumn",
    "PgType",
    "decode_fixed",
    "encode_binary",
]

PgType = Literal["int2", "int4", "int8", "float8", "bool", "timestamptz", "text", "bytea"]
"""The PostgreSQL column types this module encodes and decodes."""

PG_EPOCH_US: Final = 946_684_800_000_000
"""Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC)."""

HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
"""Signature, flags (no OIDs) and an empty header extension."""

TRAILER: Final = b"\xff\xff"

_FIXED: Final[dict[str, str]] = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float8": ">f8",
    "bool": "u1",
    "timestamptz": ">i8",
}
"""Big-endian NumPy formats of the fixed-width types."""

_NATIVE: Final[dict[str, str]] = {
    "int2": "<i2",
    "int4": "<i4",
    "int8": "<i8",
    "float8": "<f8",
    "bool": "?",
    "timestamptz": "<i8",
}


@dataclass(frozen=True, slots=True)
class CopyColumn:
    """One column to encode: its PostgreSQL type and its Arrow values (nulls become NULL).

    Timestamps (``timestamptz``) are Arrow timestamps or int64 Unix microseconds.
    """

    pg_type: PgType
    values: pa.Array | pa.ChunkedArray


@dataclass(slots=True)
class _Prepared:
    pg_type: str
    valid: np.ndarray  # bool per row
    data: np.ndarray | None = None  # fixed-width: values per row (NULLs filled with 0)
    offsets: np.ndarray | None = None  # variable-width: int64 start of each row's bytes
    lengths: np.ndarray | None = None  # variable-width: int64 byte length per row
    blob: np.ndarray | None = None  # variable-width: the uint8 data buffer


def _combine(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def _prepare(column: CopyColumn, n: int) -> _Prepared:
    arr = _combine(column.values)
    if len(arr) != n:
        raise HistorianError(f"COPY columns differ in length: {len(arr)} != {n}")
    valid = (
        np.ones(n, dtype=bool)
        if arr.null_count == 0
        else np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    )
    t = column.pg_type
    if t in ("text", "bytea"):
        if not (
            pa.types.is_string(arr.type)
            or pa.types.is_large_string(arr.type)
            or pa.types.is_binary(arr.type)
            or pa.types.is_large_binary(arr.type)
        ):
            raise HistorianError(f"cannot COPY Arrow {arr.type} as {t}")
        arr = arr.cast(pa.large_binary())
        _, offsets_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
        blob = (
            np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, "u1")
        )
        lengths = np.where(valid, np.diff(offsets), 0)
        return _Prepared(t, valid, offsets=offsets[:-1], lengths=lengths, blob=blob)
    if t == "timestamptz":
        if pa.types.is_timestamp(arr.type):
            arr = arr.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        us = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy()
        return _Prepared(t, valid, data=us - PG_EPOCH_US)
    if t == "bool":
        data = pc.fill_null(arr.cast(pa.bool_()), False).to_numpy(zero_copy_only=False)
        return _Prepared(t, valid, data=data.astype(np.uint8))
    if t not in _FIXED:
        raise HistorianError(f"unsupported COPY type {t!r}")
    return _Prepared(t, valid, data=pc.fill_null(arr, 0).to_numpy(zero_copy_only=False))


def _width(pg_type: str) -> int:
    return np.dtype(_FIXED[pg_type]).itemsize


def _encode_fixed(cols: list[_Prepared], rows: np.ndarray | None, pattern: list[bool]) -> bytes:
    """Rows (all, or the indices ``rows``) whose NULL pattern is ``pattern``: one layout."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for j, (col, present) in enumerate(zip(cols, pattern, strict=True)):
        fields.append((f"l{j}", ">i4"))
        if present:
            fields.append((f"d{j}", _FIXED[col.pg_type]))
    m = len(cols[0].valid) if rows is None else len(rows)
    out = np.empty(m, dtype=np.dtype(fields))
    out["n"] = len(cols)
    for j, (col, present) in enumerate(zip(cols, pattern, strict=True)):
        if present:
            assert col.data is not None
            out[f"l{j}"] = _width(col.pg_type)
            out[f"d{j}"] = col.data if rows is None else col.data[rows]
        else:
            out[f"l{j}"] = -1
    return out.tobytes()


def _scatter(buf: np.ndarray, pos: np.ndarray, items: np.ndarray) -> None:
    """Write row ``i`` of the byte matrix ``items`` at ``buf[pos[i]:]``."""
    width = items.shape[1]
    buf[pos[:, None] + np.arange(width)] = items


def _encode_scattered(cols: list[_Prepared], rows: np.ndarray) -> bytes:
    """Rows ``rows`` with any layout (variable-width values): offsets from a cumulative sum."""
    m = len(rows)
    sizes = []
    for col in cols:
        valid = col.valid[rows]
        if col.lengths is not None:
            data_len = col.lengths[rows]
        else:
            data_len = np.where(valid, _width(col.pg_type), 0)
        sizes.append((valid, data_len))
    row_size = 2 + sum(4 + d for _, d in sizes)
    starts = np.zeros(m, dtype=np.int64)
    np.cumsum(row_size[:-1], out=starts[1:])
    buf = np.empty(int(starts[-1] + row_size[-1]), dtype=np.uint8)
    _scatter(buf, starts, np.full(m, len(cols), ">i2").view(np.uint8).reshape(m, 2))
    pos = starts + 2
    for col, (valid, data_len) in zip(cols, sizes, strict=True):
        header = np.where(valid, data_len, -1).astype(">i4")
        _scatter(buf, pos, header.view(np.uint8).reshape(m, 4))
        data_pos = pos + 4
        if col.lengths is None:
            assert col.data is not None
            fmt = _FIXED[col.pg_type]
            vals = col.data[rows][valid].astype(fmt)
            _scatter(buf, data_pos[valid], vals.view(np.uint8).reshape(-1, np.dtype(fmt).itemsize))
        else:
            assert col.offsets is not None
            assert col.blob is not None
            lens = data_len[valid]
            total = int(lens.sum())
            if total:
                within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
                src = np.repeat(col.offsets[rows][valid], lens) + within
                dst = np.repeat(data_pos[valid], lens) + within
                buf[dst] = col.blob[src]
        pos = data_pos + data_len
    return buf.tobytes()


def encode_binary(columns: Sequence[CopyColumn]) -> bytes:
    """The ``COPY … FROM STDIN (FORMAT BINARY)`` stream of ``columns`` (rows in any order)."""
    if not columns:
        raise HistorianError("COPY needs at least one column")
    n = len(columns[0].values)
    cols = [_prepare(c, n) for c in columns]
    pieces = [HEADER]
    if n:
        variable = np.zeros(n, dtype=bool)
        for col in cols:
            if col.lengths is not None:
                variable |= col.valid
        key = np.zeros(n, dtype=np.int64)
        for j, col in enumerate(cols):
            key |= col.valid.astype(np.int64) << j
        fixed_rows = ~variable
        if fixed_rows.all() and (key == key[0]).all():
            pieces.append(_encode_fixed(cols, None, [bool(c.valid[0]) for c in cols]))
        else:
            for pattern in np.unique(key[fixed_rows]):
                rows = np.flatnonzero(fixed_rows & (key == pattern))
                present = [bool((int(pattern) >> j) & 1) for j in range(len(cols))]
                pieces.append(_encode_fixed(cols, rows, present))
            if variable.any():
                pieces.append(_encode_scattered(cols, np.flatnonzero(variable)))
    pieces.append(TRAILER)
    return b"".join(pieces)


def decode_fixed(data: bytes | bytearray | memoryview, types: Sequence[PgType]) -> list[np.ndarray]:
    """Columns of a binary ``COPY … TO STDOUT`` of fixed-width, never-NULL columns.

    Returns one native-endian NumPy array per column (``timestamptz`` as Unix µs int64).
    """
    buf = memoryview(data).cast("B")
    if len(buf) < len(HEADER) + 2 or bytes(buf[:11]) != HEADER[:11]:
        raise HistorianError("not a binary COPY stream (bad signature)")
    ext = int.from_bytes(buf[15:19], "big")
    body = buf[19 + ext :]
    if bytes(body[-2:]) != TRAILER:
        raise HistorianError("binary COPY stream is truncated (no trailer)")
    body = body[:-2]
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for j, t in enumerate(types):
        if t not in _FIXED:
            raise HistorianError(f"cannot decode {t} as a fixed-width column")
        fields += [(f"l{j}", ">i4"), (f"d{j}", _FIXED[t])]
    dtype = np.dtype(fields)
    if len(body) % dtype.itemsize:
        raise HistorianError("binary COPY rows are not of the expected fixed width")
    rec = np.frombuffer(body, dtype=dtype)
    if len(rec) and (rec["n"] != len(types)).any():
        raise HistorianError(f"binary COPY rows do not have {len(types)} fields")
    out: list[np.ndarray] = []
    for j, t in enumerate(types):
        if len(rec) and (rec[f"l{j}"] != _width(t)).any():
            raise HistorianError(f"binary COPY column {j} has NULLs or an unexpected width")
        col = rec[f"d{j}"].astype(_NATIVE[t])
        if t == "timestamptz":
            col = col + PG_EPOCH_US
        out.append(col)
    return out

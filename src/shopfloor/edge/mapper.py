"""The mapper: raw readings (connection, address) → typed readings of model signals.

Mapping is columnar: the distinct ``(source, address)`` keys of a batch are looked up once
(``pyarrow.compute.index_in``), values are converted per target data type with Arrow
kernels, engineering-unit scaling (``value * scale + offset``) is applied to numeric
signals, and every row that cannot be mapped becomes a dead letter with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.edge.batch import READING_SCHEMA, RawBatch, ReadingBatch
from shopfloor.edge.deadletter import DEAD_LETTER_SCHEMA, dead_letters_from_raw_rows

__all__ = ["MapResult", "Mapper", "Route"]

_SEP = "\x1f"  # unit separator: cannot appear in a connection name
_TYPES = ("float", "int", "bool", "string", "json")


@dataclass(frozen=True, slots=True)
class Route:
    """Where one ``(connection, address)`` goes: a signal id, its type and unit scaling."""

    signal_id: int
    data_type: str
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.data_type not in _TYPES:
            raise ValueError(f"unknown data type {self.data_type!r}")


@dataclass(frozen=True, slots=True)
class MapResult:
    """The outcome of mapping one raw batch: readings and dead letters (nothing else)."""

    readings: ReadingBatch
    dead_letters: pa.Table
    unknown: tuple[tuple[str, str], ...] = ()
    """The distinct ``(source, address)`` keys no route covers (their rows are dead letters)."""

    @property
    def rejected(self) -> int:
        """Number of rows that became dead letters."""
        return int(self.dead_letters.num_rows)


def _columns(
    routes: Mapping[tuple[str, str], Route],
) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keys, signal ids, type codes, scales and offsets of ``routes``, in their order."""
    values = list(routes.values())
    return (
        pa.array([f"{src}{_SEP}{addr}" for src, addr in routes], pa.string()),
        np.array([r.signal_id for r in values], dtype=np.int32),
        np.array([_TYPES.index(r.data_type) for r in values], dtype=np.int8),
        np.array([r.scale for r in values], dtype=np.float64),
        np.array([r.offset for r in values], dtype=np.float64),
    )


def _extends(pool: pa.Array, known: pa.Array) -> bool:
    """Whether ``pool`` plausibly grew from ``known`` (same first and last known address)."""
    n = len(known)
    if len(pool) < n:
        return False
    return n == 0 or (pool[0] == known[0] and pool[n - 1] == known[n - 1])


def _lookup(routes: pa.Array, source: str, addresses: pa.Array) -> npt.NDArray[np.int64]:
    """The index in ``routes`` (route keys) of each of ``source``'s distinct ``addresses``
    (-1: none)."""
    out = np.full(len(addresses), -1, np.int64)
    if not len(addresses) or not len(routes):
        return out
    keys = pc.binary_join_element_wise(pa.scalar(source), addresses, _SEP)
    if 4 * len(keys) < len(routes):
        # few addresses: hash them and probe the routes (hashing every route costs more)
        at = pc.index_in(routes, value_set=keys).to_numpy(zero_copy_only=False)
        hit = ~np.isnan(at) if at.dtype.kind == "f" else np.ones(len(at), bool)
        out[at[hit].astype(np.int64)] = np.flatnonzero(hit)
        return out
    found = pc.index_in(keys, value_set=routes).fill_null(-1)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)


def _null_mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


class Mapper:
    """Maps :class:`RawBatch` rows onto signal ids with type conversion and unit scaling."""

    def __init__(self, routes: Mapping[tuple[str, str], Route]) -> None:
        self.routes: Mapping[tuple[str, str], Route] = dict(routes)
        self._keys, self._signal_id, self._type, self._scale, self._offset = _columns(routes)
        self._scaled = (self._scale != 1.0) | (self._offset != 0.0)
        self._pools: dict[str, tuple[pa.Array, npt.NDArray[np.int64]]] = {}
        """Per source: the last address pool seen and the route index of each address."""

    def __len__(self) -> int:
        return len(self._keys)

    def with_routes(self, extra: Mapping[tuple[str, str], Route]) -> Mapper:
        """A mapper that also knows ``extra`` (e.g. signals discovered at run time).

        New keys are appended to this mapper's columns (signals discovered a few at a time
        must not rebuild a table of every route each time); a key that is known already is
        replaced, which rebuilds.
        """
        if any(k in self.routes for k in extra):
            return Mapper({**self.routes, **extra})
        out = Mapper.__new__(Mapper)
        out.routes = {**self.routes, **extra}
        cols = _columns(extra)
        out._keys = pa.concat_arrays([self._keys, cols[0]])
        out._signal_id, out._type, out._scale, out._offset = (
            np.concatenate([a, b])
            for a, b in zip(
                (self._signal_id, self._type, self._scale, self._offset), cols[1:], strict=True
            )
        )
        out._scaled = (out._scale != 1.0) | (out._offset != 0.0)
        out._pools = {}
        for source, (pool, routes) in self._pools.items():
            # the addresses known to no route so far may be known to the new ones
            missing = np.flatnonzero(routes < 0)
            # looked up among the new routes alone, numbered after ours
            found = _lookup(cols[0], source, pool.take(pa.array(missing)))
            routes = routes.copy()
            routes[missing] = np.where(found < 0, -1, found + len(self._keys))
            out._pools[source] = (pool, routes)
        return out

    def _pool_routes(self, source: str, pool: pa.Array) -> npt.NDArray[np.int64]:
        """The route index of every address of a connector's pool (-1: none), cached.

        A pool only grows (:class:`RawBatch`): a longer one whose known part still starts and
        ends alike is looked up for its new addresses only.
        """
        cached = self._pools.get(source)
        if cached is not None and cached[0] is pool:
            return cached[1]
        if cached is not None and _extends(pool, cached[0]):
            old = cached[1]
            routes = np.concatenate([old, _lookup(self._keys, source, pool.slice(len(old)))])
        else:
            routes = _lookup(self._keys, source, pool)
        self._pools[source] = (pool, routes)
        return routes

    def unknown(self, raw: RawBatch) -> list[tuple[str, str]]:
        """The distinct ``(source, address)`` keys of ``raw`` that no route covers."""
        t = raw.table
        if t.num_rows == 0:
            return []
        keys = pc.binary_join_element_wise(t.column("source"), t.column("address"), _SEP)
        distinct = pc.unique(keys.combine_chunks())
        missing = distinct.filter(pc.invert(pc.is_in(distinct, value_set=self._keys)))
        pairs = (k.split(_SEP, 1) for k in missing.to_pylist())
        return [(src, addr) for src, addr in pairs]

    @classmethod
    def from_bindings(
        cls,
        bindings: Iterable[tuple[str, str, str, str, float, float]],
        signal_ids: Mapping[str, int],
    ) -> Mapper:
        """Build from ``(connection, address, signal path, data type, scale, offset)`` rows."""
        routes = {
            (conn, addr): Route(signal_ids[path], dtype, scale, offset)
            for conn, addr, path, dtype, scale, offset in bindings
        }
        return cls(routes)

    def map(self, raw: RawBatch, received_at: datetime | None = None) -> MapResult:
        """Map one raw batch. Rows that cannot be mapped are returned as dead letters."""
        t = raw.table
        n = t.num_rows
        if n == 0:
            return MapResult(ReadingBatch.empty(), DEAD_LETTER_SCHEMA.empty_table())
        if len(self) == 0:
            reason = "address not bound to any signal in the factory file"
            dead = dead_letters_from_raw_rows(t, [reason] * n, received_at)
            return MapResult(ReadingBatch.empty(), dead, tuple(self.unknown(raw)))
        if raw.address_ids is not None and raw.address_pool is not None:
            # the connector numbered its addresses: each pool address is looked up once
            source = str(t.column("source")[0].as_py())
            found = self._pool_routes(source, raw.address_pool)[raw.address_ids]
            unknown = found < 0
            idx = np.where(unknown, 0, found)
        else:
            keys = pc.binary_join_element_wise(t.column("source"), t.column("address"), _SEP)
            idx_arr = pc.index_in(keys, value_set=self._keys).combine_chunks()
            unknown = _null_mask(idx_arr)
            idx = np.asarray(idx_arr.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        reasons = np.full(n, None, dtype=object)
        missing: tuple[tuple[str, str], ...] = ()
        if unknown.any():
            reasons[unknown] = "address not bound to any signal in the factory file"
            rows = pa.array(np.flatnonzero(unknown))
            pairs = pc.binary_join_element_wise(
                t.column("source").take(rows), t.column("address").take(rows), _SEP
            )
            distinct = pc.unique(pairs.combine_chunks())
            missing = tuple((a, b) for a, b in (k.split(_SEP, 1) for k in distinct.to_pylist()))

        target = self._type[idx]
        cols = {c: t.column(c).combine_chunks() for c in ("v_float", "v_int", "v_bool", "v_str")}
        out: dict[str, pa.Array] = {}
        # Each target column is built for all rows and masked to the rows of its type.
        out["v_float"] = self._as_float(cols, idx, target == 0, reasons)
        out["v_int"] = self._as_int(cols, idx, target == 1, reasons)
        out["v_bool"] = self._as_bool(cols, target == 2, reasons)
        out["v_str"] = self._as_str(cols, (target == 3) | (target == 4), target == 4, reasons)

        bad = reasons.astype(bool)  # a reason is a non-empty string
        good = ~bad
        sid = self._signal_id[idx]
        table = pa.Table.from_arrays(
            [
                pa.array(sid, pa.int32()),
                t.column("ts").combine_chunks(),
                t.column("quality").combine_chunks(),
                out["v_float"],
                out["v_int"],
                out["v_bool"],
                out["v_str"],
            ],
            schema=READING_SCHEMA,
        )
        if bad.any():
            keep = pa.array(good)
            table = table.filter(keep)
            rejected = t.filter(pa.array(bad))
            dead = dead_letters_from_raw_rows(rejected, list(reasons[bad]), received_at)
        else:
            dead = DEAD_LETTER_SCHEMA.empty_table()
        return MapResult(ReadingBatch(table), dead, missing)

    # -- conversions ------------------------------------------------------------------
    # Each returns a full-length array that is null outside `mask`, and writes a reason for
    # every row of `mask` whose value cannot be converted.

    def _scale_float(self, values: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if not self._scaled[idx[rows]].any():
            return values
        out = values.copy()
        out[rows] = values[rows] * self._scale[idx[rows]] + self._offset[idx[rows]]
        return out

    def _as_float(
        self, cols: dict[str, pa.Array], idx: np.ndarray, mask: np.ndarray, reasons: np.ndarray
    ) -> pa.Array:
        n = len(mask)
        vals = np.full(n, np.nan)
        present = np.zeros(n, dtype=bool)
        f, i, b = cols["v_float"], cols["v_int"], cols["v_bool"]
        for arr in (f, i, b):
            has = ~_null_mask(arr) & mask & ~present
            if has.any():
                vals[has] = arr.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False)[has]
                present |= has
        s = cols["v_str"]
        has_s = ~_null_mask(s) & mask & ~present
        if has_s.any():
            for k in np.flatnonzero(has_s):
                text = s[int(k)].as_py()
                try:
                    vals[k] = float(text)
                    present[k] = True
                except ValueError:
                    reasons[k] = f"value {text!r} is not a number (signal is float)"
        vals = self._scale_float(vals, idx, present)
        return pa.array(vals, pa.float64(), mask=~(present & mask))

    def _as_int(
        self, cols: dict[str, pa.Array], idx: np.ndarray, mask: np.ndarray, reasons: np.ndarray
    ) -> pa.Array:
        n = len(mask)
        vals = np.zeros(n, dtype=np.int64)
        present = np.zeros(n, dtype=bool)
        i, b, f, s = cols["v_int"], cols["v_bool"], cols["v_float"], cols["v_str"]
        for arr in (i, b):
            has = ~_null_mask(arr) & mask & ~present
            if has.any():
                vals[has] = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)[has]
                present |= has
        scaled = self._scaled[idx] & mask
        if (scaled & present).any():
            # Scaling an int signal goes through float; it must land on an integer again.
            fl = vals.astype(np.float64)
            fl[scaled] = fl[scaled] * self._scale[idx[scaled]] + self._offset[idx[scaled]]
            self._int_from_float(fl, scaled & present, vals, reasons)
        has_f = ~_null_mask(f) & mask & ~present
        if has_f.any():
            fl = f.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
            fl = self._scale_float(fl, idx, has_f)
            self._int_from_float(fl, has_f, vals, reasons)
            present |= has_f
        has_s = ~_null_mask(s) & mask & ~present
        for k in np.flatnonzero(has_s):
            text = s[int(k)].as_py()
            try:
                vals[k] = int(text)
                present[k] = True
            except ValueError:
                reasons[k] = f"value {text!r} is not an integer (signal is int)"
        return pa.array(vals, pa.int64(), mask=~(present & mask))

    @staticmethod
    def _int_from_float(
        fl: np.ndarray, rows: np.ndarray, vals: np.ndarray, reasons: np.ndarray
    ) -> None:
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(fl) & (np.abs(fl) < 2.0**63) & (np.round(fl) == fl)
        vals[rows & ok] = fl[rows & ok].astype(np.int64)
        for k in np.flatnonzero(rows & ~ok):
            reasons[k] = f"value {fl[k]!r} is not an integer (signal is int)"

    @staticmethod
    def _as_bool(cols: dict[str, pa.Array], mask: np.ndarray, reasons: np.ndarray) -> pa.Array:
        n = len(mask)
        vals = np.zeros(n, dtype=bool)
        present = np.zeros(n, dtype=bool)
        b, i, f, s = cols["v_bool"], cols["v_int"], cols["v_float"], cols["v_str"]
        has = ~_null_mask(b) & mask
        if has.any():
            vals[has] = b.fill_null(False).to_numpy(zero_copy_only=False)[has]
            present |= has
        for arr in (i, f):
            has = ~_null_mask(arr) & mask & ~present
            if has.any():
                num = arr.fill_null(0).to_numpy(zero_copy_only=False)
                vals[has] = num[has] != 0
                present |= has
        has_s = ~_null_mask(s) & mask & ~present
        for k in np.flatnonzero(has_s):
            text = str(s[int(k)].as_py()).strip().lower()
            if text in ("true", "1", "on", "yes"):
                vals[k], present[k] = True, True
            elif text in ("false", "0", "off", "no"):
                vals[k], present[k] = False, True
            else:
                reasons[k] = f"value {text!r} is not a boolean (signal is bool)"
        return pa.array(vals, pa.bool_(), mask=~(present & mask))

    @staticmethod
    def _as_str(
        cols: dict[str, pa.Array], mask: np.ndarray, is_json: np.ndarray, reasons: np.ndarray
    ) -> pa.Array:
        s = cols["v_str"]
        n = len(mask)
        if not mask.any():
            return pa.nulls(n, pa.string())
        has = ~_null_mask(s)
        # strings of string signals pass as they are; only the rows that need Python — a
        # value from another column, or JSON to check — are looked at one by one
        out = pc.if_else(pa.array(mask & has), s, pa.scalar(None, pa.string()))
        fix = np.flatnonzero(mask & (~has | is_json))
        if not len(fix):
            return out
        rows = pa.array(fix)
        texts = s.take(rows).to_pylist()
        others = [cols[c].take(rows).to_pylist() for c in ("v_float", "v_int", "v_bool")]
        for j, k in enumerate(fix):
            if texts[j] is None:
                for col in others:
                    if col[j] is not None:
                        texts[j] = json.dumps(col[j]) if is_json[k] else str(col[j])
                        break
            elif is_json[k]:
                try:
                    json.loads(texts[j])
                except ValueError as exc:
                    reasons[k] = f"value is not valid JSON ({exc}) (signal is json)"
        replace = np.zeros(n, dtype=bool)
        replace[fix] = True
        return pc.replace_with_mask(out, pa.array(replace), pa.array(texts, pa.string()))

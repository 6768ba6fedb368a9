"""Machine-state intervals from the raw samples of a ``state`` signal.

Rules (sample-and-hold, all times epoch microseconds, intervals half-open):

* a sample's state holds from its timestamp until the next sample (the last one until the
  end of the window; with ``max_gap_s`` at most that long, after which the state is
  unknown);
* the raw value is mapped through the equipment's state map (raw code as a string →
  standard state); a code the map does not know, a bad-quality sample and a sample
  without a value all mean ``offline`` (the machine cannot be shown to be producing);
* before the first sample, and after a ``max_gap_s`` ran out, there is no data: those
  stretches are ``offline`` with ``known = False`` and no raw code;
* intervals are clipped to the window and neighbours with the same state, raw code and
  knowledge are merged.

Pass the last sample *before* the window among the samples (the caller looks back for
it), or the window starts with no data. Runs of equal samples (``Historian.read_changes``)
serve as samples: pass each run's first timestamp, and its last one as ``hold_from`` so
that ``max_gap_s`` counts from the run's last sample.

The raw values are mapped once per distinct value, so a month of runs costs little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.model._schema import STANDARD_STATES

__all__ = ["OFFLINE", "RUNNING", "StateIntervals", "state_code", "state_intervals"]

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
BOOL = npt.NDArray[np.bool_]

RUNNING = STANDARD_STATES.index("running")
"""Index of ``running`` in :data:`~shopfloor.model.STANDARD_STATES`."""
OFFLINE = STANDARD_STATES.index("offline")
"""Index of ``offline`` in :data:`~shopfloor.model.STANDARD_STATES`."""


def state_code(name: str) -> int:
    """Index of a standard state name in :data:`~shopfloor.model.STANDARD_STATES`."""
    return STANDARD_STATES.index(name)


@dataclass(frozen=True, slots=True)
class StateIntervals:
    """Sorted, disjoint state intervals: ``state`` indexes ``STANDARD_STATES``."""

    start: I64
    end: I64
    state: I8
    raw: tuple[str | None, ...]
    known: BOOL

    def __len__(self) -> int:
        return int(self.start.size)

    def names(self) -> list[str]:
        """The standard state name of every interval."""
        return [STANDARD_STATES[int(c)] for c in self.state]

    def seconds_in(self, state: str) -> float:
        """Total seconds spent in ``state``."""
        mask = self.state == state_code(state)
        return float((self.end[mask] - self.start[mask]).sum()) / 1e6

    def where(self, state: str) -> tuple[I64, I64]:
        """The intervals in ``state`` as ``(starts, ends)``."""
        mask = self.state == state_code(state)
        return self.start[mask], self.end[mask]


def _raw_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _raw_ids(values: Sequence[Any] | pa.Array | pa.ChunkedArray) -> tuple[I64, list[str]]:
    """Per sample the index of its raw text in the returned list (-1: no value)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        try:
            values = pa.array(list(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python types: as text
            values = pa.array([_raw_text(v) for v in values], pa.string())
    if values.type == pa.null():
        return np.full(len(values), -1, np.int64), []
    encoded = pc.dictionary_encode(values)
    texts = [_raw_text(v) for v in encoded.dictionary.to_pylist()]
    distinct = sorted({t for t in texts if t is not None})
    position = {t: i for i, t in enumerate(distinct)}
    lookup = np.array([-1 if t is None else position[t] for t in texts] + [-1], np.int64)
    indices = pc.fill_null(encoded.indices, len(texts)).to_numpy(zero_copy_only=False)
    return lookup[indices.astype(np.int64)], distinct


def state_intervals(
    ts_us: npt.ArrayLike,
    quality: npt.ArrayLike,
    values: Sequence[Any] | pa.Array | pa.ChunkedArray,
    state_map: Mapping[str, str],
    start_us: int,
    end_us: int,
    *,
    max_gap_s: float | None = None,
    hold_from: npt.ArrayLike | None = None,
) -> StateIntervals:
    """State intervals within ``[start_us, end_us)`` from samples sorted by time.

    ``hold_from`` (default ``ts_us``) is where each sample's ``max_gap_s`` starts: the last
    sample of a run.
    """
    ts = np.asarray(ts_us, dtype=np.int64)
    q = np.asarray(quality, dtype=np.int64)
    raw_id, texts = _raw_ids(values)
    n = ts.size
    if end_us <= start_us:
        return StateIntervals(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int8),
            (),
            np.zeros(0, bool),
        )
    if n == 0:
        return StateIntervals(
            np.array([start_us], np.int64),
            np.array([end_us], np.int64),
            np.array([OFFLINE], np.int8),
            (None,),
            np.zeros(1, bool),
        )
    usable = ((q & 0xC0) != 0) & (raw_id >= 0)
    mapped = np.array(
        [STANDARD_STATES.index(state_map[t]) if t in state_map else OFFLINE for t in texts]
        + [OFFLINE],
        dtype=np.int8,
    )
    raws = np.where(usable, raw_id, -1)
    code = mapped[raws]  # -1: the OFFLINE at the end
    nxt = np.append(ts[1:], np.int64(max(end_us, int(ts[-1]))))
    hold_end = nxt.copy()
    if max_gap_s is not None:
        last = ts if hold_from is None else np.asarray(hold_from, dtype=np.int64)
        hold_end = np.minimum(nxt, np.maximum(last, ts) + int(max_gap_s * 1e6))
    # pieces: each sample, plus a no-data gap after it where the hold ran out, plus the
    # stretch before the first sample
    first = int(ts[0])
    s_parts = [np.array([min(start_us, first)], np.int64), ts, hold_end]
    e_parts = [np.array([first], np.int64), hold_end, nxt]
    c_parts = [np.array([OFFLINE], np.int8), code, np.full(n, OFFLINE, np.int8)]
    k_parts = [np.array([False]), usable, np.zeros(n, bool)]
    r_all = np.concatenate([[-1], raws, np.full(n, -1, np.int64)])
    s = np.concatenate(s_parts)
    e = np.concatenate(e_parts)
    c = np.concatenate(c_parts)
    k = np.concatenate(k_parts)
    s_cl = np.maximum(s, start_us)
    e_cl = np.minimum(e, end_us)
    keep = e_cl > s_cl
    idx = np.flatnonzero(keep)
    order = idx[np.argsort(s_cl[idx], kind="stable")]
    s_cl, e_cl, c, k, r = s_cl[order], e_cl[order], c[order], k[order], r_all[order]
    if s_cl.size == 0:
        return StateIntervals(s_cl, e_cl, c, (), k)
    # merge neighbours with equal state, raw code and knowledge
    same = (c[1:] == c[:-1]) & (k[1:] == k[:-1]) & (s_cl[1:] == e_cl[:-1]) & (r[1:] == r[:-1])
    heads = np.flatnonzero(np.concatenate([[True], ~same]))
    tails = np.append(heads[1:] - 1, s_cl.size - 1)
    return StateIntervals(
        start=s_cl[heads],
        end=e_cl[tails],
        state=c[heads],
        raw=tuple(None if i < 0 else texts[i] for i in r[heads].tolist()),
        known=k[heads],
    )

"""Machine-state gating of the anomaly detector: each equipment's standard state as a step
function over time, joined to the samples of a batch.

The state signal's samples (raw codes through the type's state map; unknown codes, bad
quality and missing values mean ``offline``, as in :mod:`shopfloor.analytics._states`) hold
from their timestamp until the next one. A sample of a gated signal is scored when its
equipment is ``running`` at the sample's time and has been for at least the signal's
settle time; the start of the running period (the first ``running`` sample after any other
state, or after no state at all) identifies the period, so that a reference can restart
with each one.

Everything is columnar: the state rows of a batch are mapped once per distinct raw code and
sorted by equipment and time, and each sample finds the state step before it with one
:func:`numpy.searchsorted` over ``(equipment, time rank)`` keys. The last state and the
start of the running period of each equipment carry over to the next batch, so the result
does not depend on how the samples were cut into batches as long as they arrive in time
order (a state sample that arrives after later samples applies from its arrival on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.model import STANDARD_STATES

__all__ = ["NO_TIME", "RUNNING", "StateGates", "Steps"]

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

RUNNING: Final = STANDARD_STATES.index("running")
_OFFLINE: Final = STANDARD_STATES.index("offline")
NO_TIME: Final = np.iinfo(np.int64).min
"""``since`` of an equipment that is not running (or whose state is not known)."""


@dataclass(frozen=True, slots=True)
class Steps:
    """The state samples of one batch, sorted by equipment and time.

    ``since`` is the start of the running period a ``running`` step belongs to
    (:data:`NO_TIME` for other states).
    """

    asset: I64
    ts: I64
    state: I8
    since: I64
    entered: int = 0
    """How many of the steps are transitions into ``running``."""


_NO_STEPS: Final = Steps(
    np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.int64)
)


class StateGates:
    """The state of every gated equipment, kept from batch to batch.

    ``assets`` lists per equipment its state signal's id and its state map (raw code as a
    string → standard state name).
    """

    def __init__(self, assets: Sequence[tuple[int, Mapping[str, str]]]) -> None:
        size = max((sid for sid, _ in assets), default=-1) + 1
        self._asset_of = np.full(size, -1, dtype=np.int64)
        for i, (sid, _) in enumerate(assets):
            if sid < 0:
                raise ValueError(f"state signal id {sid} is negative")
            if self._asset_of[sid] >= 0:
                raise ValueError(f"state signal id {sid} is given for two equipments")
            self._asset_of[sid] = i
        self._maps = [
            {str(raw): STANDARD_STATES.index(std) for raw, std in state_map.items()}
            for _, state_map in assets
        ]
        n = len(assets)
        self.state = np.full(n, -1, dtype=np.int8)
        """Current standard state per equipment (-1: no state sample seen yet)."""
        self.since = np.full(n, NO_TIME, dtype=np.int64)
        """Start of the current running period (:data:`NO_TIME` when not running)."""
        self.transitions = 0
        """Transitions into ``running`` seen so far."""

    def __len__(self) -> int:
        return int(self.state.size)

    # -- the state rows of a batch ------------------------------------------------------

    def _codes(self, t: pa.Table, asset: I64) -> I8:
        """Standard state of each row of ``t`` (state samples of equipment ``asset``)."""
        good = (t.column("quality").to_numpy() & 0xC0) != 0
        vi = t.column("v_int")
        if vi.null_count == 0:  # integer codes, the usual case
            ids = vi.to_numpy().astype(np.int64)
            texts: list[str | None] | None = None
        else:
            raw = pc.coalesce(
                vi.cast(pa.string()),
                t.column("v_str"),
                t.column("v_bool").cast(pa.int8()).cast(pa.string()),
                t.column("v_float").cast(pa.string()),
            )
            encoded = pc.dictionary_encode(raw).combine_chunks()
            texts = encoded.dictionary.to_pylist()
            ids = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
            ids = ids.astype(np.int64)
        pairs, inverse = np.unique(np.stack([asset, ids]), axis=1, return_inverse=True)
        mapped = np.empty(pairs.shape[1], dtype=np.int8)
        for j, (a, i) in enumerate(pairs.T.tolist()):
            text = str(i) if texts is None else (texts[i] if i >= 0 else None)
            mapped[j] = _OFFLINE if text is None else self._maps[a].get(text, _OFFLINE)
        return np.where(good, mapped[inverse.reshape(-1)], np.int8(_OFFLINE)).astype(np.int8)

    def steps(self, t: pa.Table) -> Steps:
        """The state samples in batch ``t`` (any rows; the others are ignored)."""
        if self._asset_of.size == 0 or t.num_rows == 0:
            return _NO_STEPS
        sid = t.column("signal_id").to_numpy()
        known = sid < self._asset_of.size
        asset = np.where(known, self._asset_of[np.where(known, sid, 0)], -1)
        rows = np.flatnonzero(asset >= 0)
        if rows.size == 0:
            return _NO_STEPS
        sub = t.take(pa.array(rows))
        asset = asset[rows]
        ts = pc.cast(sub.column("ts"), pa.int64()).to_numpy()
        code = self._codes(sub, asset)
        order = np.lexsort((ts, asset))  # stable: equal times keep their arrival order
        asset, ts, code = asset[order], ts[order], code[order]
        n = asset.size
        first = np.r_[True, asset[1:] != asset[:-1]]
        head = np.maximum.accumulate(np.where(first, np.arange(n), 0))  # first row of its asset
        prev = np.empty(n, dtype=np.int8)
        prev[1:] = code[:-1]
        prev[first] = self.state[asset[first]]
        run_start = (code == RUNNING) & (prev != RUNNING)
        last_start = np.maximum.accumulate(np.where(run_start, np.arange(n), -1))
        since = np.where(last_start >= head, ts[np.maximum(last_start, 0)], self.since[asset])
        since = np.where(code == RUNNING, since, NO_TIME)
        return Steps(asset, ts, code, since, int(run_start.sum()))

    # -- joining and carrying over ------------------------------------------------------

    def join(self, steps: Steps, asset: I64, ts: I64) -> tuple[I8, I64]:
        """The state and running-period start of equipment ``asset`` at times ``ts``.

        Each sample takes the last step of its equipment at or before its time in
        ``steps``, or the state carried from the previous batches when there is none.
        """
        state = self.state[asset]
        since = self.since[asset]
        if steps.asset.size == 0 or asset.size == 0:
            return state, since
        ns = steps.ts.size
        _, rank = np.unique(np.concatenate([steps.ts, ts]), return_inverse=True)
        rank = rank.reshape(-1).astype(np.int64)
        width = int(rank.max()) + 1
        keys = steps.asset * width + rank[:ns]  # sorted: steps are by equipment, then time
        idx = np.searchsorted(keys, asset * width + rank[ns:], side="right") - 1
        safe = np.maximum(idx, 0)
        hit = (idx >= 0) & (steps.asset[safe] == asset)
        return (
            np.where(hit, steps.state[safe], state).astype(np.int8),
            np.where(hit, steps.since[safe], since),
        )

    def commit(self, steps: Steps) -> None:
        """Carry the last step of each equipment over to the next batch."""
        if steps.asset.size == 0:
            return
        last = np.r_[steps.asset[1:] != steps.asset[:-1], True]
        self.state[steps.asset[last]] = steps.state[last]
        self.since[steps.asset[last]] = steps.since[last]
        self.transitions += steps.entered

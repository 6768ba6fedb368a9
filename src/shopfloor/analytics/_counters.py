"""Produced quantities from the samples of a cumulative counter, vectorised with NumPy.

Between two consecutive usable samples (quality not bad, value present) the increment is

* ``new − old`` when the counter did not go down;
* ``new + 2**k − old`` when it went down and that looks like a rollover of an unsigned
  ``k``-bit register (``k`` = 16 or 32, tried in this order): ``old`` was below ``2**k``
  and the wrapped increment is at most ``2**k * ROLLOVER_FRACTION`` — the counter was in
  the top sixteenth of its range and came out in the bottom sixteenth;
* ``new`` otherwise: a reset (to 0, then counted up to ``new``).

The increment is booked at the later sample's timestamp. The first usable sample is the
baseline and counts nothing (pass the last sample before a window to count from it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ROLLOVER_BITS", "ROLLOVER_FRACTION", "counter_increments"]

ROLLOVER_BITS: tuple[int, ...] = (16, 32)
"""Register widths whose wrap-around is recognised."""
ROLLOVER_FRACTION = 1 / 16
"""Largest wrapped increment taken for a rollover, as a share of the register's range."""


def counter_increments(
    values: npt.ArrayLike, quality: npt.ArrayLike | None = None
) -> npt.NDArray[np.int64]:
    """Increment booked at each sample (0 for the first and for unusable samples).

    ``values`` may hold NaN (no value); ``quality`` is the OPC DA quality byte per sample.
    """
    v = np.asarray(values, dtype=np.float64)
    usable = np.isfinite(v)
    if quality is not None:
        usable &= (np.asarray(quality, dtype=np.int64) & 0xC0) != 0
    out = np.zeros(v.size, dtype=np.int64)
    idx = np.flatnonzero(usable)
    if idx.size < 2:
        return out
    x = v[idx].astype(np.int64)
    old, new = x[:-1], x[1:]
    delta = new - old
    inc = np.where(delta >= 0, delta, new)
    undecided = delta < 0
    for bits in ROLLOVER_BITS:
        width = np.int64(1) << bits
        wrapped = new + width - old
        roll = undecided & (old < width) & (new >= 0) & (wrapped <= width * ROLLOVER_FRACTION)
        inc = np.where(roll, wrapped, inc)
        undecided &= ~roll
    out[idx[1:]] = inc
    return out

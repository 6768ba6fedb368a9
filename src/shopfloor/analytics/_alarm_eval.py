"""Vectorised alarm conditions: from a batch of samples to alarm activations and clears.

Every condition turns samples into a *code* per sample: ``1`` (the condition holds), ``0``
(it does not) or ``-1`` (unknown: bad quality, no value, not enough history, hysteresis
band). Unknown samples hold the previous level. The levels then go through the delay timer
(:class:`Condition`), which only loops over the points where the level *changes*, so a batch
costs a few NumPy passes plus one Python step per change.

Timing rules (all times epoch microseconds, sample-and-hold):

* a level holds from its sample until the next change;
* the alarm activates once the level has been true for ``on_delay`` (at ``since + on_delay``,
  or at once for a zero delay) and clears once it has been false for ``off_delay``;
* a timer runs on without samples: :meth:`Condition.advance` moves it to a clock time (the
  engine's periodic tick), so a state that simply stays produces its alarm on time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from shopfloor.model._expr import Binary, Call, Const, Node, Ref, Unary

__all__ = [
    "Condition",
    "Transition",
    "evaluate",
    "hysteresis",
    "levels",
    "rates",
]

I8 = npt.NDArray[np.int8]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

Transition = tuple[bool, int, Any]
"""``(active, at_us, value)``: the alarm condition activated (or cleared) at ``at_us``."""


def hysteresis(x: F64, limit: float, deadband: float, *, above: bool) -> I8:
    """Codes of a limit with hysteresis: ``1`` past the limit, ``0`` back inside by
    ``deadband``, ``-1`` in between (holds the previous level) and for NaN."""
    with np.errstate(invalid="ignore"):
        if above:
            on = x > limit
            off = x <= limit - deadband
        else:
            on = x < limit
            off = x >= limit + deadband
    return np.where(on, np.int8(1), np.where(off, np.int8(0), np.int8(-1))).astype(np.int8)


def levels(code: I8) -> tuple[BOOL, BOOL]:
    """Forward-fill the known codes: ``(level, known)`` per sample.

    ``known`` is false before the first known code; the caller holds its previous level there.
    """
    n = code.size
    idx = np.where(code >= 0, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    known = idx >= 0
    level = np.zeros(n, dtype=bool)
    level[known] = code[idx[known]] == 1
    return level, known


def rates(hist_ts: I64, hist_v: F64, ts: I64, v: F64, window_us: int, per_s: float) -> F64:
    """Rate of change at each new sample over at least ``window_us`` (NaN without history).

    ``hist_*`` are earlier good samples, ``ts``/``v`` the new ones (NaN values are skipped
    as references but keep their place). The rate at a sample is ``(v − v_then) /
    (t − t_then) · per_s`` with ``then`` the last good sample at or before ``t − window``.
    """
    good = ~np.isnan(v)
    ref_ts = np.concatenate([hist_ts, ts[good]])
    ref_v = np.concatenate([hist_v, v[good]])
    j = np.searchsorted(ref_ts, ts - window_us, side="right") - 1
    ok = (j >= 0) & good
    out = np.full(ts.size, np.nan)
    jj = j[ok]
    dt_s = (ts[ok] - ref_ts[jj]) / 1e6
    out[ok] = (v[ok] - ref_v[jj]) / dt_s * per_s
    return out


_ARITH: Mapping[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def evaluate(node: Node, env: Mapping[str, npt.NDArray[Any]], n: int) -> npt.NDArray[Any]:
    """Evaluate a parsed (and type-checked) expression on arrays of ``n`` values.

    ``env`` maps each reference to its values (float64 for numbers, bool, object arrays of
    str for strings and states).
    """
    with np.errstate(all="ignore"):
        out = _eval(node, env)
    arr = np.asarray(out)
    return np.broadcast_to(arr, (n,)) if arr.shape != (n,) else arr


def _eval(node: Node, env: Mapping[str, npt.NDArray[Any]]) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Ref):
        return env[node.path]
    if isinstance(node, Unary):
        inner = _eval(node.operand, env)
        return np.logical_not(inner) if node.op == "not" else np.negative(inner)
    if isinstance(node, Call):
        args = [np.asarray(_eval(a, env), dtype=np.float64) for a in node.args]
        if node.name == "abs":
            return np.abs(args[0])
        fold = np.minimum if node.name == "min" else np.maximum
        result = args[0]
        for arg in args[1:]:
            result = fold(result, arg)
        return result
    assert isinstance(node, Binary)
    left = _eval(node.left, env)
    right = _eval(node.right, env)
    if node.op == "and":
        return np.logical_and(left, right)
    if node.op == "or":
        return np.logical_or(left, right)
    result = _ARITH[node.op](left, right)
    if node.op in ("==", "!=") and not isinstance(result, np.ndarray | bool | np.bool_):
        result = np.asarray(result, dtype=bool)  # object arrays compare elementwise anyway
    return result


@dataclass(slots=True)
class Condition:
    """The delay timer of one alarm: level changes in, activations and clears out."""

    on_us: int
    off_us: int
    active: bool = False
    level: bool | None = None
    since: int = 0
    value: Any = None
    """The value that goes with an activation (the last one seen while the level held)."""
    out: list[Transition] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """A timer is running: the level differs from the alarm's state."""
        return self.level is not None and self.level != self.active

    def advance(self, now: int, value_at: Callable[[int], Any] | None = None) -> None:
        """Fire the running timer if it ran out by ``now``."""
        if self.level is None or self.level == self.active:
            return
        delay = self.on_us if self.level else self.off_us
        if now - self.since < delay:
            return
        at = self.since + delay
        self.active = self.level
        if self.active and value_at is not None:
            self.value = value_at(at)
        self.out.append((self.active, at, self.value if self.active else None))

    def feed(self, ts: I64, code: I8, values: Callable[[int], Any]) -> None:
        """Take the codes of samples at ``ts`` (sorted); ``values(i)`` is sample ``i``'s value."""
        if ts.size == 0:
            return
        level, known = levels(code)
        idx = np.flatnonzero(known)
        if idx.size == 0:
            return
        t = ts[idx]
        lv = level[idx]
        changes = np.flatnonzero(lv[1:] != lv[:-1]) + 1
        if self.level is None or bool(lv[0]) != self.level:
            changes = np.concatenate([np.zeros(1, np.int64), changes])

        def value_at(at: int) -> Any:
            k = int(np.searchsorted(t, at, side="right")) - 1
            return values(int(idx[k])) if k >= 0 else self.value

        for c in changes.tolist():
            tc = int(t[c])
            self.advance(tc, value_at)
            self.level = bool(lv[c])
            self.since = tc
            if self.level:
                self.value = values(int(idx[c]))
            self.advance(tc, value_at)
        self.advance(int(t[-1]), value_at)
        if self.level:
            self.value = values(int(idx[-1])) if not self.active else self.value

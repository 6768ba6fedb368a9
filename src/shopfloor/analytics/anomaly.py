"""Online anomaly detection on selected signals, as anomaly events in the historian.

:class:`AnomalyDetector` scores every sample of the selected signals with a **robust
rolling z-score**: ``|x − median| / (1.4826 · MAD)`` over the ``window`` samples of the
signal before it (1.4826 · MAD estimates the standard deviation of Gaussian noise, and
unlike the mean and standard deviation, median and MAD are not dragged along by the
outliers they are to find). The reference is recomputed every ``refresh`` samples from the
window ending there, so a sample is compared with at most ``window + refresh − 1`` samples
before it and never with itself. Optionally a value repeated ``stuck_samples`` times in a
row on a signal whose scale is known to be positive is anomalous too (a frozen sensor);
its score is ``threshold × run / stuck_samples``.

**Machine state.** A signal of equipment whose state is known (its state signal and state
map, :mod:`shopfloor.analytics._anomaly_gate`) is scored only while the equipment is
``running`` and has been for ``settle_s`` (``gate: running``, the default there; ``gate:
none`` scores whatever the state): a stop, a wait or a start-up is not an anomaly, and the
samples then are kept out of the reference too. With ``baseline: reset`` the reference
restarts, with its warm-up, at every running period; ``keep`` lets the periods share it.
The **drift check** (``drift_after_s``) scores the same deviation against the noise scale,
``1.4826 · MAD(Δx) / √2`` of the window, which a slow drift does not inflate as it does
the MAD of the values; it applies once the equipment has been running ``drift_after_s``
(always, when its state is not known), so that natural slow changes such as warming up
are over, and flags samples above ``drift_threshold`` with the reason ``drift``.

Anomalous samples (score above ``threshold``) of one signal less than ``cooldown_s`` apart
form one **anomaly event**: ``ts`` its first anomalous sample, ``end_ts`` its last (set once
``cooldown_s`` passed without another), ``code`` ``deviation``, ``drift`` or ``stuck``, and
in ``data`` the peak score with its time, value and reference. An event is written when it
starts, when it grows, and once more when it ends, always with the same ``event_id``
(:data:`~shopfloor.edge.events.EVENT_SCHEMA`).

Everything is columnar: a batch is filtered, sorted by signal and time, and scored with
NumPy for all signals at once; signals with the same ``window`` and ``refresh`` share one
ring buffer matrix. State (the last ``window`` values, the current reference, runs of equal
values, open events) carries over from batch to batch, so the events do not depend on how
the samples were cut into batches. Samples are taken in the order of their timestamps
within a batch and in arrival order across batches; bad-quality and null values are
skipped.

:class:`AnomalyEngine` is the pipeline observer (:data:`~shopfloor.edge.pipeline.Observer`)
that runs a detector on each committed batch and stores its events; build it from a factory
file's ``anomaly`` section with :meth:`AnomalyEngine.from_factory`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.analytics._anomaly_gate import RUNNING, StateGates, Steps
from shopfloor.edge.batch import TS_TYPE, ReadingBatch
from shopfloor.edge.events import EVENT_SCHEMA
from shopfloor.historian.base import Historian
from shopfloor.model import (
    STANDARD_STATES,
    AnomalyParams,
    Factory,
    ResolvedSignal,
    select_anomaly_signals,
)

__all__ = ["ANOMALY_KIND", "AnomalyDetector", "AnomalyEngine", "DetectorStats"]

ANOMALY_KIND: Final = "anomaly"
"""The ``kind`` of anomaly events."""

_MAD_SD: Final = 1.4826  # MAD → standard deviation of normally distributed noise
_DIFF_SD: Final = _MAD_SD / np.sqrt(2.0)  # the same from the MAD of first differences
_EPS: Final = 1e-9  # relative floor of the scale when a signal never varied
_BOUNDARY_CHUNK: Final = 4096  # boundaries whose windows are gathered at once
_NO_PERIOD: Final = np.iinfo(np.int64).min + 1  # the epoch key before a signal's first row
_DEVIATION, _DRIFT, _STUCK = 1, 2, 4  # reasons of an anomalous sample (bits)
_REASONS: Final = ((_DEVIATION, "deviation"), (_DRIFT, "drift"), (_STUCK, "stuck"))

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

_NO_EVENTS: Final = EVENT_SCHEMA.empty_table()

EventSink = Callable[[pa.Table], Awaitable[None]]

log = logging.getLogger(__name__)


def _median_rows(a: npt.NDArray[np.float32]) -> F64:
    """Median of each row of ``a`` (no NaN), sorting ``a`` in place.

    Sorting float32 rows (NumPy's SIMD sort) is several times faster than partitioning
    float64 ones; the callers centre the values first, so float32 keeps their precision.
    """
    a.sort(axis=1)
    h = a.shape[1] // 2
    if a.shape[1] % 2:
        return a[:, h].astype(np.float64)
    return (a[:, h - 1].astype(np.float64) + a[:, h]) * 0.5


def _window_stats(
    win: F64, center: F64, by_differences: bool, noise: bool
) -> tuple[F64, F64, F64 | None]:
    """Median, scale and (with ``noise``, or ``by_differences``) noise scale of each row of
    ``win`` (no NaN).

    The noise scale comes from the first differences, the scale from the values unless
    ``by_differences``. ``center`` (one value per row, near its median) is subtracted
    before the float32 arithmetic, so that precision is relative to the spread, not to the
    level.
    """
    c = (win - center[:, None]).astype(np.float32)
    if by_differences:
        d = _median_rows(np.abs(np.diff(c, axis=1))) * _DIFF_SD
        return _median_rows(c) + center, d, d
    noise_scale = _median_rows(np.abs(np.diff(c, axis=1))) * _DIFF_SD if noise else None
    m = _median_rows(c)
    np.subtract(c, m[:, None].astype(np.float32), out=c)
    np.abs(c, out=c)
    return m + center, _median_rows(c) * _MAD_SD, noise_scale


def _window_stats_nan(win: F64, by_differences: bool, noise: bool) -> tuple[F64, F64, F64 | None]:
    """Like :func:`_window_stats` for rows padded with NaN (each has at least 3 values)."""
    m = np.nanmedian(win, axis=1)
    if by_differences or noise:
        d = np.nanmedian(np.abs(np.diff(win, axis=1)), axis=1) * _DIFF_SD
        if by_differences:
            return m, d, d
        return m, np.nanmedian(np.abs(win - m[:, None]), axis=1) * _MAD_SD, d
    return m, np.nanmedian(np.abs(win - m[:, None]), axis=1) * _MAD_SD, None


def _keep_positive(raw: F64, bg: I64, before: F64) -> F64:
    """Scales of boundaries sorted by group ``bg``: a zero one (a constant window) takes the
    last positive one of its group before it, or ``before`` (the group's last one)."""
    pos = np.where(raw > 0, np.arange(bg.size), -1)
    acc = np.maximum.accumulate(pos)
    gfirst = np.maximum.accumulate(np.where(np.r_[True, bg[1:] != bg[:-1]], np.arange(bg.size), 0))
    return np.where(raw > 0, raw, np.where(acc >= gfirst, raw[np.maximum(acc, 0)], before))


def _utc(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@dataclass(slots=True)
class DetectorStats:
    """Counters of a detector since it was built."""

    samples_in: int = 0
    """Rows of the selected signals seen (good quality, with a value)."""
    samples_gated: int = 0
    """Of those, rows not scored because their equipment was not running (or settling)."""
    samples_scored: int = 0
    """Of those, rows scored (gate open, past the warm-up)."""
    anomalous: int = 0
    """Samples that scored above the threshold (or were stuck)."""
    events_started: int = 0
    events_ended: int = 0


class _Events:
    """Event rows under construction (plain column lists; a handful per batch)."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {f.name: [] for f in EVENT_SCHEMA}

    def __len__(self) -> int:
        return len(self.cols["event_id"])

    def add(
        self,
        path: str,
        start: int,
        end: int | None,
        peak: float,
        peak_ts: int,
        peak_value: float,
        median: float,
        scale: float,
        samples: int,
        reasons: int,
        params: AnomalyParams,
    ) -> None:
        asset, _, name = path.rpartition("/")
        names = [r for bit, r in _REASONS if reasons & bit]
        code = names[0] if names else "deviation"
        c = self.cols
        c["event_id"].append(f"{ANOMALY_KIND}:{path}:{start}")
        c["kind"].append(ANOMALY_KIND)
        c["asset"].append(asset)
        c["signal"].append(path)
        c["ts"].append(start)
        c["end_ts"].append(end)
        c["code"].append(code)
        c["severity"].append(None)
        threshold = params.threshold
        if code == "stuck":
            message = f"{name} stuck at {peak_value:.6g}"
        elif code == "drift":
            threshold = params.drift_threshold or params.threshold
            message = f"{name} drifts: {peak_value:.6g} against {median:.6g} ± {scale:.3g} (noise)"
        else:
            message = f"{name} deviates: {peak_value:.6g} against {median:.6g} ± {scale:.3g}"
        c["message"].append(f"{message} (score {peak:.1f}, threshold {threshold:g})")
        c["data"].append(
            json.dumps(
                {
                    "score": round(peak, 3),
                    "threshold": threshold,
                    "method": params.method,
                    "reasons": names,
                    "peak_ts": _utc(peak_ts).isoformat(),
                    "peak_value": peak_value,
                    "median": median,
                    "scale": scale,
                    "samples": samples,
                    "window": params.window,
                }
            )
        )

    def table(self) -> pa.Table:
        if not self.cols["event_id"]:
            return _NO_EVENTS
        arrays = []
        for f in EVENT_SCHEMA:
            if f.name in ("ts", "end_ts"):
                arrays.append(pa.array(self.cols[f.name], pa.int64()).cast(TS_TYPE))
            else:
                arrays.append(pa.array(self.cols[f.name], f.type))
        return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


class _Group:
    """Signals sharing ``window`` and ``refresh``: one ring buffer matrix, scored together."""

    def __init__(
        self,
        window: int,
        refresh: int,
        by_differences: bool,
        signals: list[tuple[str, AnomalyParams]],
    ) -> None:
        n = len(signals)
        self.window = window
        self.refresh = refresh
        self.by_differences = by_differences
        self._probes = np.linspace(0, window - 1, 5).round().astype(np.int64)
        self.paths = [p for p, _ in signals]
        self.params = [c for _, c in signals]
        self.threshold = np.array([c.threshold for _, c in signals], dtype=np.float64)
        self.warmup = np.array([c.warmup for _, c in signals], dtype=np.int64)
        self.cooldown = np.array([round(c.cooldown_s * 1e6) for _, c in signals], dtype=np.int64)
        self.stuck = np.array([c.stuck_samples or 0 for _, c in signals], dtype=np.int64)
        self.min_scale = np.array([c.min_scale for _, c in signals], dtype=np.float64)
        # the drift check: the noise scale (first differences) of the same windows
        self.drift_thr = np.array(
            [
                np.inf if c.drift_after_s is None else (c.drift_threshold or c.threshold)
                for _, c in signals
            ],
            dtype=np.float64,
        )
        self.noise = bool(np.isfinite(self.drift_thr).any())
        # the reference epoch: rows of another period start one at their sample number
        self.ep_key = np.full(n, _NO_PERIOD, dtype=np.int64)
        self.ep_k = np.zeros(n, dtype=np.int64)
        # the last W values of each signal at position (sample number % W); NaN = never
        self.ring = np.full((n, window), np.nan)
        self.count = np.zeros(n, dtype=np.int64)
        self.ref_b = np.full(n, -1, dtype=np.int64)  # sample number the reference ends at
        self.ref_med = np.zeros(n)
        self.ref_scale = np.zeros(n)  # the last positive scale (0 until there is one)
        self.ref_noise = np.zeros(n)  # the same of the noise scale
        self.last_value = np.full(n, np.nan)
        self.run = np.zeros(n, dtype=np.int64)
        # the open event of each signal
        self.ev_open = np.zeros(n, dtype=bool)
        self.ev_start = np.zeros(n, dtype=np.int64)
        self.ev_last = np.zeros(n, dtype=np.int64)
        self.ev_n = np.zeros(n, dtype=np.int64)
        self.ev_peak = np.zeros(n)
        self.ev_peak_ts = np.zeros(n, dtype=np.int64)
        self.ev_peak_value = np.zeros(n)
        self.ev_med = np.zeros(n)
        self.ev_scale = np.zeros(n)
        self.ev_reasons = np.zeros(n, dtype=np.int64)

    # -- the reference ------------------------------------------------------------------

    def _references(
        self, u: I64, c0: I64, starts: I64, counts: I64, v: F64, bg: I64, bb: I64, be: I64
    ) -> tuple[F64, F64, F64]:
        """Median and scale of the windows ending at sample numbers ``bb`` of groups ``bg``.

        A window holds the samples ``[max(b − window, e), b)`` (``e``: where the reference
        epoch began, ``be``): the older ones from the ring (its state before this batch),
        the newer ones from ``v`` (rows ``starts[g]`` … ``starts[g] + counts[g] − 1`` of
        group ``g``); missing ones are NaN. Every ``b`` is at least the group's sample count
        before the batch, ``c0[g]``.
        """
        w = self.window
        hg = np.unique(bg)  # the groups that need a window
        hrow = np.zeros(u.size, dtype=np.int64)
        hrow[hg] = np.arange(hg.size)
        ar = np.arange(w)
        # per group: its history (sample numbers c0 − w … c0 − 1), then its new values
        size = w + counts[hg]
        base = np.r_[0, np.cumsum(size)[:-1]]
        ext = np.empty(int(size.sum()))
        is_new = np.ones(ext.size, dtype=bool)
        hist_pos = (base[:, None] + ar).ravel()
        is_new[hist_pos] = False
        ring_pos = (u[hg] * w)[:, None] + (c0[hg][:, None] + ar) % w
        ext[hist_pos] = np.take(self.ring, ring_pos.ravel())
        lengths = counts[hg]
        before = np.r_[0, np.cumsum(lengths)[:-1]]
        ext[is_new] = v[np.repeat(starts[hg] - before, lengths) + np.arange(int(lengths.sum()))]
        windows = np.lib.stride_tricks.sliding_window_view(ext, w)
        pos = base[hrow[bg]] + bb - c0[bg]  # where each window starts in ext
        med = np.empty(bg.size)
        scale = np.empty(bg.size)
        noise = np.zeros(bg.size)
        diffs, want = self.by_differences, self.noise
        for lo in range(0, bg.size, _BOUNDARY_CHUNK):
            sl = slice(lo, lo + _BOUNDARY_CHUNK)
            win = windows[pos[sl]]  # a copy (fancy indexing)
            lo_k = bb[sl] - w  # the sample number of each window's first value
            full = lo_k >= be[sl]  # else it starts before the epoch: NaN-padded
            if not full.all():
                win[lo_k[:, None] + ar < be[sl][:, None]] = np.nan
            # five values spread over the window: their median is near the window's and,
            # unlike anything carried from earlier batches, depends on the window alone
            center = np.median(win[:, self._probes], axis=1)
            if full.all():
                med[sl], scale[sl], d = _window_stats(win, center, diffs, want)
                if d is not None:
                    noise[sl] = d
            else:
                m = np.empty(win.shape[0])
                sc = np.empty(win.shape[0])
                ns = np.zeros(win.shape[0])
                if full.any():
                    m[full], sc[full], d = _window_stats(win[full], center[full], diffs, want)
                    if d is not None:
                        ns[full] = d
                m[~full], sc[~full], d = _window_stats_nan(win[~full], diffs, want)
                if d is not None:
                    ns[~full] = d
                med[sl], scale[sl], noise[sl] = m, sc, ns
        return med, scale, noise

    # -- scoring ------------------------------------------------------------------------

    def process(
        self,
        slot: I64,
        ts: I64,
        v: F64,
        gate: BOOL | None,
        period: I64 | None,
        settled: BOOL | None,
        out: _Events,
        stats: DetectorStats,
    ) -> None:
        """Score rows sorted by ``(slot, ts)``, update the state, add event rows to ``out``.

        Rows whose ``gate`` is closed are neither scored nor kept (their times still end
        open events); a row whose ``period`` differs from the signal's previous one starts a
        new reference epoch (the reference then holds only samples from there on); rows
        ``settled`` long enough for the drift check get it (``None``: all). Values
        repeated ``stuck_samples`` times or more are kept out of the reference windows (they
        do not advance a signal's sample number), so that a frozen sensor neither collapses
        the scale nor makes its recovery look like a deviation.
        """
        n = slot.size
        if n == 0:
            return
        stats.samples_in += n
        present_at = np.r_[np.flatnonzero(slot[1:] != slot[:-1]), n - 1]
        present, present_ts = slot[present_at], ts[present_at]
        if gate is not None and not gate.all():
            stats.samples_gated += int(n - gate.sum())
            slot, ts, v = slot[gate], ts[gate], v[gate]
            period = None if period is None else period[gate]
            settled = None if settled is None else settled[gate]
            n = slot.size
            if n == 0:
                self._quiet(present, present_ts, out, stats)
                return
        w, refresh = self.window, self.refresh
        starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
        counts = np.diff(np.r_[starts, n])
        ends = starts + counts - 1
        u = slot[starts]
        gid = np.repeat(np.arange(u.size), counts)
        r = np.arange(n) - starts[gid]
        c0 = self.count[u]
        stuck_n = self.stuck[slot]
        repeated = np.zeros(n, dtype=bool)
        runlen = np.zeros(n, dtype=np.int64)
        if stuck_n.any():
            prev = np.empty(n)
            prev[1:] = v[:-1]
            prev[starts] = self.last_value[u]
            brk = v != prev
            lastbrk = np.maximum.accumulate(np.where(brk, np.arange(n), -1))
            cont = lastbrk < starts[gid]
            runlen = np.where(cont, self.run[slot] + r + 1, np.arange(n) - lastbrk + 1)
            repeated = (stuck_n > 0) & (runlen >= stuck_n)
            self.run[u] = runlen[ends]
            self.last_value[u] = v[ends]
        if repeated.any():
            inc = ~repeated
            cum = np.cumsum(inc)
            before = cum - inc - np.r_[0, cum][starts][gid]  # included rows before, per signal
            inc_v = v[inc]
            inc_counts = np.add.reduceat(inc.astype(np.int64), starts)
            inc_starts = np.r_[0, np.cumsum(inc_counts)[:-1]]
            to_ring = inc & (before >= inc_counts[gid] - w)
        else:
            before = r
            inc_v, inc_counts, inc_starts = v, counts, starts
            to_ring = r >= counts[gid] - w  # only a signal's last `window` values matter
        k = c0[gid] + before  # sample number (of the next included sample, if excluded)
        # the reference epoch of each row: where its period's first row is
        if period is None:
            period = np.zeros(n, dtype=np.int64)
        prev = np.empty(n, dtype=np.int64)
        prev[1:] = period[:-1]
        prev[starts] = self.ep_key[u]
        last_new = np.maximum.accumulate(np.where(period != prev, np.arange(n), -1))
        e = np.where(last_new >= starts[gid], k[np.maximum(last_new, 0)], self.ep_k[slot])
        self.ep_key[u] = period[ends]
        self.ep_k[u] = e[ends]
        b = e + ((k - e) // refresh) * refresh  # where the reference window of each row ends
        scored = b - e >= self.warmup[slot]

        med_row = self.ref_med[slot]
        scale_row = self.ref_scale[slot]
        noise_row = self.ref_noise[slot]
        need = np.flatnonzero(scored & (b != self.ref_b[slot]))
        if need.size:
            gn, bn = gid[need], b[need]
            first = np.r_[True, (gn[1:] != gn[:-1]) | (bn[1:] != bn[:-1])]
            bg, bb, be = gn[first], bn[first], e[need][first]
            med, raw_scale, raw_noise = self._references(
                u, c0, inc_starts, inc_counts, inc_v, bg, bb, be
            )
            scale = _keep_positive(raw_scale, bg, self.ref_scale[u[bg]])
            noise = _keep_positive(raw_noise, bg, self.ref_noise[u[bg]])
            bidx = np.cumsum(first) - 1
            med_row[need] = med[bidx]
            scale_row[need] = scale[bidx]
            noise_row[need] = noise[bidx]
            last = np.r_[bg[1:] != bg[:-1], True]
            sl = u[bg[last]]
            self.ref_b[sl] = bb[last]
            self.ref_med[sl] = med[last]
            self.ref_scale[sl] = scale[last]
            self.ref_noise[sl] = noise[last]

        thr = self.threshold[slot]
        floor = np.maximum(self.min_scale[slot], _EPS * np.maximum(1.0, np.abs(med_row)))
        dev = np.abs(v - med_row)
        z = np.where(scored, dev / np.maximum(scale_row, floor), 0.0)
        anomalous = z > thr
        reasons = np.where(anomalous, _DEVIATION, 0)
        score = z
        used_scale = scale_row

        if self.noise:  # the drift check: the same deviation against the noise scale
            zn = dev / np.maximum(noise_row, floor)
            drift = scored & (zn > self.drift_thr[slot]) & (noise_row > 0)
            if settled is not None:
                drift &= settled
            if drift.any():
                higher = drift & (zn > z)
                score = np.where(higher, zn, z)
                used_scale = np.where(higher, noise_row, scale_row)
                reasons |= np.where(drift, _DRIFT, 0)
                anomalous |= drift

        stuck = scored & repeated & (scale_row > 0)
        if stuck.any():
            stuck_score = thr * runlen / np.maximum(stuck_n, 1)
            score = np.where(stuck, np.maximum(score, stuck_score), score)
            reasons |= np.where(stuck, _STUCK, 0)
            anomalous |= stuck

        # state for the next batch
        self.ring[slot[to_ring], k[to_ring] % w] = v[to_ring]
        self.count[u] += inc_counts
        stats.samples_scored += int(scored.sum())
        stats.anomalous += int(anomalous.sum())
        self._events(
            slot,
            ts,
            v,
            score,
            reasons,
            anomalous,
            med_row,
            used_scale,
            present,
            present_ts,
            out,
            stats,
        )

    # -- events -------------------------------------------------------------------------

    def _events(
        self,
        slot: I64,
        ts: I64,
        v: F64,
        score: F64,
        reasons: I64,
        anomalous: BOOL,
        med_row: F64,
        scale_row: F64,
        present: I64,
        last_ts: I64,
        out: _Events,
        stats: DetectorStats,
    ) -> None:
        a = np.flatnonzero(anomalous)
        quiet = present[self.ev_open[present]]
        if a.size == 0 and quiet.size == 0:
            return
        last_ts_of = np.zeros(self.count.size, dtype=np.int64)
        last_ts_of[present] = last_ts
        merged_slots: set[int] = set()
        if a.size:
            aslot, ats = slot[a], ts[a]
            gap = np.r_[0, ats[1:] - ats[:-1]]
            new_run = np.r_[True, aslot[1:] != aslot[:-1]] | (gap > self.cooldown[aslot])
            rstart = np.flatnonzero(new_run)
            rend = np.r_[rstart[1:], a.size] - 1
            run_id = np.cumsum(new_run) - 1
            order = np.lexsort((-score[a], run_id))
            peak_rows = a[order[rstart]]
            why = np.bitwise_or.reduceat(reasons[a], rstart)
            run_slot = aslot[rstart]
            last_of_slot = np.r_[run_slot[1:] != run_slot[:-1], True]
            for i in range(rstart.size):
                s = int(run_slot[i])
                p = int(peak_rows[i])
                start, end = int(ats[rstart[i]]), int(ats[rend[i]])
                samples = int(rend[i] - rstart[i] + 1)
                peak, peak_ts, peak_value = float(score[p]), int(ts[p]), float(v[p])
                med, scale = float(med_row[p]), float(scale_row[p])
                bits = int(why[i])
                if (
                    self.ev_open[s]
                    and s not in merged_slots
                    and start - int(self.ev_last[s]) <= int(self.cooldown[s])
                ):  # continues the event left open by the last batch
                    start = int(self.ev_start[s])
                    samples += int(self.ev_n[s])
                    bits |= int(self.ev_reasons[s])
                    if self.ev_peak[s] >= peak:
                        peak, peak_ts = float(self.ev_peak[s]), int(self.ev_peak_ts[s])
                        peak_value = float(self.ev_peak_value[s])
                        med, scale = float(self.ev_med[s]), float(self.ev_scale[s])
                elif self.ev_open[s] and s not in merged_slots:
                    self._close(s, out, stats)  # the gap ended it
                    stats.events_started += 1
                else:
                    stats.events_started += 1
                merged_slots.add(s)
                closed = not last_of_slot[i] or int(last_ts_of[s]) - end > int(self.cooldown[s])
                out.add(
                    self.paths[s], start, end if closed else None, peak, peak_ts, peak_value,
                    med, scale, samples, bits, self.params[s],
                )  # fmt: skip
                if closed:
                    self.ev_open[s] = False
                    stats.events_ended += 1
                else:
                    self.ev_open[s] = True
                    self.ev_start[s], self.ev_last[s], self.ev_n[s] = start, end, samples
                    self.ev_peak[s], self.ev_peak_ts[s] = peak, peak_ts
                    self.ev_peak_value[s], self.ev_med[s], self.ev_scale[s] = peak_value, med, scale
                    self.ev_reasons[s] = bits
        # open events without anomalous samples in this batch end after the cooldown
        for s in quiet.tolist():
            if s in merged_slots or not self.ev_open[s]:
                continue
            if int(last_ts_of[s]) - int(self.ev_last[s]) > int(self.cooldown[s]):
                self._close(s, out, stats)

    def _quiet(self, present: I64, last_ts: I64, out: _Events, stats: DetectorStats) -> None:
        """End the open events of signals seen without a scored row, once cooled down."""
        for s, t in zip(present.tolist(), last_ts.tolist(), strict=True):
            if self.ev_open[s] and t - int(self.ev_last[s]) > int(self.cooldown[s]):
                self._close(s, out, stats)

    def _close(self, s: int, out: _Events, stats: DetectorStats) -> None:
        out.add(
            self.paths[s], int(self.ev_start[s]), int(self.ev_last[s]), float(self.ev_peak[s]),
            int(self.ev_peak_ts[s]), float(self.ev_peak_value[s]), float(self.ev_med[s]),
            float(self.ev_scale[s]), int(self.ev_n[s]), int(self.ev_reasons[s]), self.params[s],
        )  # fmt: skip
        self.ev_open[s] = False
        stats.events_ended += 1

    def flush(self, out: _Events, stats: DetectorStats) -> None:
        """End every open event at its last anomalous sample."""
        for s in np.flatnonzero(self.ev_open).tolist():
            self._close(s, out, stats)


class AnomalyDetector:
    """Scores batches of readings of the selected signals (see the module docstring).

    ``signals`` maps a historian ``signal_id`` to the signal's path and parameters; the
    asset of an event is the path without its last segment. ``states`` maps an equipment
    path to its state signal's id and its state map (raw code → standard state): the
    signals of that equipment are gated by its state unless their ``gate`` is ``none``
    (a signal with ``gate: running`` needs its equipment here), and its state times their
    drift check (``drift_after_s``) whatever their gate. Not thread-safe: feed it from one
    task at a time.
    """

    def __init__(
        self,
        signals: Mapping[int, tuple[str, AnomalyParams]],
        states: Mapping[str, tuple[int, Mapping[str, str]]] | None = None,
    ) -> None:
        states = states or {}
        by_shape: dict[tuple[int, int, bool], list[tuple[int, str, AnomalyParams]]] = {}
        for sid, (path, params) in sorted(signals.items()):
            if sid < 0:
                raise ValueError(f"signal id {sid} of {path} is negative")
            asset = path.rpartition("/")[0]
            if params.gate == "running" and asset not in states:
                raise ValueError(f"{path} has gate 'running' but no state is given for {asset}")
            shape = (params.window, params.refresh, params.scale_from == "differences")
            by_shape.setdefault(shape, []).append((sid, path, params))
        self.stats = DetectorStats()
        """Counters since the detector was built."""
        self._groups: list[_Group] = []
        size = max(signals, default=-1) + 1
        self._slot = np.full(size, -1, dtype=np.int64)  # signal id → global slot
        gated: dict[str, int] = {}  # equipment path → gate index
        asset_of: list[int] = []  # per global slot: gate index or -1 (state not followed)
        gate_on: list[bool] = []  # per global slot: scored only while running
        settle: list[int] = []
        reset: list[bool] = []
        drift_after: list[int] = []
        offsets = [0]
        for (window, refresh, diffs), members in by_shape.items():
            group = _Group(window, refresh, diffs, [(p, c) for _, p, c in members])
            for i, (sid, path, params) in enumerate(members):
                self._slot[sid] = offsets[-1] + i
                asset = path.rpartition("/")[0]
                # the state is followed for the gate, and for the drift check's running time
                follow = params.gate != "none" or params.drift_after_s is not None
                if follow and asset in states:
                    asset_of.append(gated.setdefault(asset, len(gated)))
                else:
                    asset_of.append(-1)
                gate_on.append(params.gate != "none")
                settle.append(round(params.settle_s * 1e6))
                reset.append(params.baseline == "reset")
                drift_after.append(round((params.drift_after_s or 0.0) * 1e6))
            self._groups.append(group)
            offsets.append(offsets[-1] + len(members))
        self._offsets = np.array(offsets, dtype=np.int64)
        self._gates = StateGates([states[a] for a in gated])
        self._gated_assets = list(gated)
        self._asset_of = np.array(asset_of, dtype=np.int64)
        self._gate_on = np.array(gate_on, dtype=bool)
        self._settle = np.array(settle, dtype=np.int64)
        self._reset = np.array(reset, dtype=bool)
        self._drift_after = np.array(drift_after, dtype=np.int64)

    @property
    def gated_assets(self) -> list[str]:
        """The equipment whose state the detector follows (for the running gate of some
        of its signals, or for the running time of their drift check)."""
        return list(self._gated_assets)

    def states(self) -> dict[str, str | None]:
        """The current standard state of every equipment in :attr:`gated_assets`
        (``None``: not known yet)."""
        return {
            a: None if c < 0 else STANDARD_STATES[c]
            for a, c in zip(self._gated_assets, self._gates.state.tolist(), strict=True)
        }

    @property
    def signal_count(self) -> int:
        """How many signals are scored."""
        return int(self._offsets[-1])

    def process(self, batch: ReadingBatch) -> pa.Table:
        """Score ``batch``; the event rows it started, grew or ended (``EVENT_SCHEMA``)."""
        out = _Events()
        t = batch.table
        if t.num_rows == 0 or self.signal_count == 0:
            return out.table()
        steps = self._gates.steps(t)
        try:
            self._score(t, steps, out)
        finally:
            self._gates.commit(steps)
        return out.table()

    def _score(self, t: pa.Table, steps: Steps, out: _Events) -> None:
        sid = t.column("signal_id").to_numpy()
        known = sid < self._slot.size
        gslot = np.where(known, self._slot[np.where(known, sid, 0)], -1)
        rows = np.flatnonzero(gslot >= 0)
        if rows.size == 0:
            return
        if rows.size < t.num_rows:
            t = t.take(pa.array(rows))
            gslot = gslot[rows]
        good = (t.column("quality").to_numpy() & 0xC0) != 0
        v = t.column("v_float").to_numpy().astype(np.float64, copy=False)
        vi = t.column("v_int")
        if vi.null_count < vi.length():
            ints = pc.fill_null(pc.cast(vi, pa.float64()), np.nan).to_numpy()
            v = np.where(np.isnan(v), ints, v)
        ok = good & ~np.isnan(v)
        ts = pc.cast(t.column("ts"), pa.int64()).to_numpy()
        if not ok.all():
            gslot, ts, v = gslot[ok], ts[ok], v[ok]
        order = np.lexsort((ts, gslot))
        gslot, ts, v = gslot[order], ts[order], v[order]
        gate, period, settled = self._gate(steps, gslot, ts)
        cuts = np.searchsorted(gslot, self._offsets)
        for g, group in enumerate(self._groups):
            lo, hi = int(cuts[g]), int(cuts[g + 1])
            if hi > lo:
                group.process(
                    gslot[lo:hi] - self._offsets[g],
                    ts[lo:hi],
                    v[lo:hi],
                    None if gate is None else gate[lo:hi],
                    None if period is None else period[lo:hi],
                    None if settled is None else settled[lo:hi],
                    out,
                    self.stats,
                )

    def _gate(
        self, steps: Steps, gslot: I64, ts: I64
    ) -> tuple[BOOL | None, I64 | None, BOOL | None]:
        """Per row: is it scored (its equipment running and settled, or not gated), the
        running period it belongs to where the signal's reference restarts with each, and
        has its equipment been running for the drift check's ``drift_after_s`` (always, when
        its state is not known)."""
        if len(self._gates) == 0:
            return None, None, None
        asset = self._asset_of[gslot]
        rows = np.flatnonzero(asset >= 0)
        if rows.size == 0:
            return None, None, None
        state, since = self._gates.join(steps, asset[rows], ts[rows])
        running = state == RUNNING
        t = ts[rows]
        age = t - np.where(running, since, t)  # time running (0 when not running)
        gs = gslot[rows]
        on = self._gate_on[gs]
        gate = np.ones(gslot.size, dtype=bool)
        gate[rows] = ~on | (running & (age >= self._settle[gs]))
        period = np.zeros(gslot.size, dtype=np.int64)
        period[rows] = np.where(on & self._reset[gs], since, 0)
        settled = np.ones(gslot.size, dtype=bool)
        settled[rows] = running & (age >= self._drift_after[gs])
        return gate, period, settled

    def flush(self) -> pa.Table:
        """End every open event at its last anomalous sample (e.g. at the end of a replay)."""
        out = _Events()
        for group in self._groups:
            group.flush(out, self.stats)
        return out.table()


class AnomalyEngine:
    """The pipeline observer: runs an :class:`AnomalyDetector` and stores its events.

    ``detectors`` maps signal paths to their parameters; the paths are looked up in the
    historian's catalog on the first batch (signals it does not know are logged once and
    left out). Events go to ``historian.append_events`` and then to ``event_sink`` when
    given. Scoring runs in a worker thread so that large batches do not stall the loop.
    """

    def __init__(
        self,
        historian: Historian,
        detectors: Mapping[str, AnomalyParams],
        *,
        states: Mapping[str, tuple[str, Mapping[str, str]]] | None = None,
        event_sink: EventSink | None = None,
    ) -> None:
        self.historian = historian
        self.detectors = dict(detectors)
        self.states = dict(states or {})
        """Equipment path → its state signal's path and state map (the running gate)."""
        self.event_sink = event_sink
        self.events_written = 0
        """Event rows stored so far (an event is written again as it grows and ends)."""
        self._detector: AnomalyDetector | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_factory(
        cls, factory: Factory, historian: Historian, *, event_sink: EventSink | None = None
    ) -> AnomalyEngine:
        """The engine of a factory file's ``anomaly`` section, gated by the state of each
        equipment that has a state signal and a state map."""
        detectors = select_anomaly_signals(factory)
        assets = {p.rpartition("/")[0] for p in detectors}
        by_asset: dict[str, list[ResolvedSignal]] = {}
        for sig in factory.signals():
            if sig.asset_path in assets and sig.kind == "state":
                by_asset.setdefault(sig.asset_path, []).append(sig)
        states: dict[str, tuple[str, Mapping[str, str]]] = {}
        for asset, sigs in by_asset.items():
            state_map = factory.state_map(asset)
            if state_map:  # the signal named "state", else the first of kind state
                sig = next((s for s in sigs if s.name == "state"), sigs[0])
                states[asset] = (sig.path, state_map)
        return cls(historian, detectors, states=states, event_sink=event_sink)

    @property
    def detector(self) -> AnomalyDetector | None:
        """The detector, once the first batch resolved the signal ids."""
        return self._detector

    async def _resolve(self) -> AnomalyDetector:
        catalog = await self.historian.signals()
        ids = dict(
            zip(
                catalog.column("path").to_pylist(),
                catalog.column("signal_id").to_pylist(),
                strict=True,
            )
        )
        missing = sorted(p for p in self.detectors if p not in ids)
        if missing:
            log.warning(
                "anomaly detection skips %d signal(s) the historian does not know: %s",
                len(missing),
                ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""),
            )
        states = {
            asset: (int(ids[path]), smap)
            for asset, (path, smap) in self.states.items()
            if path in ids
        }
        ungated = sorted(path for asset, (path, _) in self.states.items() if path not in ids)
        if ungated:
            log.warning(
                "anomaly detection scores %d equipment(s) whatever their state: the historian "
                "does not know their state signal: %s",
                len(ungated),
                ", ".join(ungated[:5]) + (" …" if len(ungated) > 5 else ""),
            )
        signals: dict[int, tuple[str, AnomalyParams]] = {}
        for path, params in self.detectors.items():
            if path not in ids:
                continue
            if params.gate == "running" and path.rpartition("/")[0] not in states:
                params = params.model_copy(update={"gate": "none"})
            signals[int(ids[path])] = (path, params)
        return AnomalyDetector(signals, states)

    async def __call__(self, batch: ReadingBatch) -> None:
        """Score a committed batch and store the events it produced."""
        async with self._lock:
            if self._detector is None:
                self._detector = await self._resolve()
            events = await asyncio.to_thread(self._detector.process, batch)
            await self._store(events)

    async def flush(self) -> None:
        """End and store every open event (when a replay or a test run is over)."""
        async with self._lock:
            if self._detector is not None:
                await self._store(self._detector.flush())

    async def _store(self, events: pa.Table) -> None:
        if events.num_rows == 0:
            return
        await self.historian.append_events(events)
        self.events_written += events.num_rows
        if self.event_sink is not None:
            await self.event_sink(events)

"""Anomaly detection benchmark: injected sensor faults, precision, recall and throughput.

One seeded, reproducible run:

1. **Simulate.** The factory simulator's pure engine (:class:`~shopfloor.sim.FactorySimulation`)
   runs ``stations`` presses in steady production (no failures, idle waits, setups or
   shifts, so that the only anomalies are the injected ones; ``natural_stops`` lets them
   fail and wait as presses do, whose state changes then count as false alarms where they
   are scored), each with four measurements: oil temperature, hydraulic pressure, motor
   current and vibration, sampled every tick.
   After ``warmup_s`` (not recorded; the temperatures settle), sensor faults are injected
   on every signal at random times (:meth:`~shopfloor.sim.FactorySimulation.inject_signal_fault`;
   kinds, durations and magnitudes below, magnitudes in multiples of the signal's noise
   standard deviation σ), at least ``2 × window + tolerance`` apart on a signal. The engine
   keeps them as the ground truth.
2. **Detect.** The samples are cut into batches of ``batch_s`` simulated seconds (all
   signals, in time order, as the pipeline commits them) and streamed through one
   :class:`~shopfloor.analytics.anomaly.AnomalyDetector`; only its ``process`` calls are
   timed (detector samples/s: measurement samples per second of ``process``). With
   ``gate`` (the default) each press also has its state signal, whose samples (the raw
   state code, on every change, as an OPC UA subscription reports them) are in the batches,
   and the detector gets each press's state signal id and state map as
   :meth:`~shopfloor.analytics.anomaly.AnomalyEngine.from_factory` gives it: a press is
   scored only while running and ``settle_s`` after it started, the reference restarting
   with each running period (the parameters' ``gate``, ``settle_s`` and ``baseline``).
3. **Baseline.** The same arrays, at once, through a plain NumPy rolling mean / standard
   deviation z-score over the same window and threshold (cumulative sums, no robustness, no
   state to carry): its samples/s is the baseline of the throughput ratio, and its events
   (merged with the same cooldown) are scored like the detector's for comparison.
4. **Score** at the event level, per signal: an event is a *true positive* when it overlaps
   a fault interval widened by ``tolerance_s`` on both sides (a fault's recovery, e.g. the
   jump back after a level shift, is therefore not a false alarm), else a false positive;
   **precision** = true-positive events / events. A fault is *detected* when an event
   starts inside ``[start − tolerance_s, end)`` — an event that only begins when the fault
   is over (the jump back at the end of a drift) does not count; **recall** = detected
   faults / faults, overall and per kind, with the median detection delay.

Fault kinds: ``spike`` 1–3 s, 8–20 σ; ``level_shift`` 2–15 min, 6–12 σ; ``drift`` 5–20 min,
ramping to 20–40 σ; ``stuck`` 2–15 min; ``noise_burst`` 1–10 min of extra noise of 3–6 σ.
Signs are random.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.analytics.anomaly import AnomalyDetector
from shopfloor.edge.batch import ReadingBatch, to_us
from shopfloor.model import AnomalyParams
from shopfloor.sim import FAULT_KINDS, STATES, FactorySimulation, SignalSpec, StationSpec

__all__ = ["AnomalyBenchConfig", "FaultSpec", "run_anomaly_bench", "score_events"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

Progress = Callable[[str, float, float], None]
"""``progress(phase, done, total)``: called as a phase advances."""

START: Final = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)

STATE_MAP: Final[dict[str, str]] = {str(code): state for code, state in enumerate(STATES)}
"""The presses' state map: the simulator writes a state's index as its raw code."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """How faults of one kind are drawn: duration range (s), magnitude range (σ)."""

    duration_s: tuple[float, float]
    magnitude_sd: tuple[float, float]


FAULTS: Final[dict[str, FaultSpec]] = {
    "spike": FaultSpec((1.0, 3.0), (8.0, 20.0)),
    "level_shift": FaultSpec((120.0, 900.0), (6.0, 12.0)),
    "drift": FaultSpec((300.0, 1200.0), (20.0, 40.0)),
    "stuck": FaultSpec((120.0, 900.0), (0.0, 0.0)),
    "noise_burst": FaultSpec((60.0, 600.0), (3.0, 6.0)),
}
"""The fault kinds of the benchmark and how they are drawn."""

_SIGNALS: Final = (
    SignalSpec("", "", "temperature", unit="CEL", low=10.0, high=70.0),
    SignalSpec("", "", "hydraulic_pressure", unit="BAR", low=0.0, high=350.0),
    SignalSpec("", "", "motor_current", unit="AMP"),
    SignalSpec("", "", "vibration", unit="MMS"),
)


@dataclass(frozen=True, slots=True)
class AnomalyBenchConfig:
    """Sizes and settings of an anomaly benchmark run."""

    stations: int = 50
    hours: float = 24.0
    faults_per_signal_hour: float = 0.25
    """Mean rate of injected faults on each signal (spacing permitting)."""
    kinds: tuple[str, ...] = tuple(FAULT_KINDS)
    batch_s: float = 10.0
    """Simulated seconds per detector batch."""
    tolerance_s: float = 60.0
    warmup_s: float = 3600.0
    """Simulated seconds before recording starts (not scored, no faults)."""
    seed: int = 42
    natural_stops: bool = False
    """Presses fail, wait and stop as the simulator's press defaults say (MTBF 3 h, MTTR
    12 min, short idle waits): their state changes move the measurements and, not being
    injected faults, count as false alarms."""
    params: AnomalyParams = field(default_factory=lambda: AnomalyParams(stuck_samples=30))
    """Detector parameters for every signal (1 s ticks: samples = seconds)."""
    gate: bool = True
    """Give the detector each press's state signal and state map (and the state samples),
    so that ``params.gate`` applies; else it scores whatever the state."""

    def __post_init__(self) -> None:
        if self.stations < 1:
            raise ValueError("stations must be at least 1")
        if self.hours <= 0 or self.batch_s <= 0 or self.tolerance_s < 0:
            raise ValueError("hours and batch_s must be positive, tolerance_s not negative")
        unknown = [k for k in self.kinds if k not in FAULTS]
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be among {', '.join(FAULTS)}; got {unknown}")


def _simulation(cfg: AnomalyBenchConfig) -> FactorySimulation:
    stations = []
    signals = []
    for i in range(cfg.stations):
        path = f"bench/line-{i // 10 + 1}/press-{i + 1}"
        if cfg.natural_stops:
            stations.append(StationSpec.with_defaults(path, "press", setup_min=0.0))
        else:
            stations.append(
                StationSpec(
                    path=path,
                    type="press",
                    ideal_cycle_time_s=12.0,
                    mtbf_min=0.0,  # no failures
                    idle_rate_per_h=0.0,
                    setup_min=0.0,
                    power_kw=45.0,
                )
            )
        for s in _SIGNALS:
            signals.append(
                SignalSpec(f"{path}/{s.name}", path, s.name, unit=s.unit, low=s.low, high=s.high)
            )
    start = START - timedelta(seconds=cfg.warmup_s)
    return FactorySimulation(stations, signals, seed=cfg.seed, start=start, tick_s=1.0)


def _plan(cfg: AnomalyBenchConfig, sim: FactorySimulation, paths: Sequence[str]) -> None:
    """Inject the seeded random faults into ``sim``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(cfg.seed).spawn(4)[3]))
    p = cfg.params
    spacing = 2.0 * p.window + cfg.tolerance_s
    mean_gap = 3600.0 / cfg.faults_per_signal_hour if cfg.faults_per_signal_hour > 0 else math.inf
    begin = cfg.warmup_s + p.warmup + p.refresh + cfg.tolerance_s
    end = cfg.warmup_s + cfg.hours * 3600.0 - cfg.tolerance_s
    for path in paths:
        sd = sim.noise_sd(path)
        t = begin + float(rng.exponential(mean_gap))
        while True:
            kind = str(rng.choice(list(cfg.kinds)))
            spec = FAULTS[kind]
            duration = float(np.round(rng.uniform(*spec.duration_s)))
            if t + duration > end:
                break
            magnitude = float(rng.uniform(*spec.magnitude_sd)) * sd
            if kind in ("spike", "level_shift", "drift") and rng.random() < 0.5:
                magnitude = -magnitude
            sim.inject_signal_fault(path, kind, round(t), duration, magnitude)  # type: ignore[arg-type]
            t += duration + spacing + float(rng.exponential(mean_gap))


def _record(
    cfg: AnomalyBenchConfig, sim: FactorySimulation, paths: Sequence[str], report: Progress
) -> tuple[I64, F64, I8]:
    """Timestamps (µs), values (ticks × signals) and state codes (ticks × stations, indices
    into :data:`~shopfloor.sim.STATES`) of the recorded part of the run."""
    ticks = round(cfg.hours * 3600.0)
    warm = round(cfg.warmup_s)
    where = {s.path: k for k, s in enumerate(sim.signals)}
    idx = np.array([where[p] for p in paths], dtype=np.int64)
    for done in range(0, warm, 600):
        sim.step(min(600, warm - done))
        report("warm-up", done, warm)
    values = np.empty((ticks, len(paths)))
    states = np.empty((ticks, len(sim.stations)), dtype=np.int8)
    ts = np.empty(ticks, dtype=np.int64)
    start_us = to_us(sim.start)
    for k in range(ticks):
        sim.step()
        values[k] = sim.snapshot()[idx]
        states[k] = sim.state_codes()
        ts[k] = start_us + round(sim.elapsed_s * 1e6)
        if k % 1000 == 0:
            report("simulate", k, ticks)
    report("simulate", ticks, ticks)
    return ts, values, states


def _detect(
    cfg: AnomalyBenchConfig,
    paths: Sequence[str],
    stations: Sequence[str],
    ts: I64,
    values: F64,
    states: I8,
    report: Progress,
) -> tuple[pa.Table, float, int, AnomalyDetector]:
    """Stream the samples through a detector; its events, busy seconds, batch count and the
    detector (its counters)."""
    n_sig = len(paths)
    # the state signal of station j has id n_sig + 1 + j; its samples are the changes
    gates = {st: (n_sig + 1 + j, STATE_MAP) for j, st in enumerate(stations)} if cfg.gate else {}
    detector = AnomalyDetector({i + 1: (p, cfg.params) for i, p in enumerate(paths)}, gates)
    changed = np.ones_like(states, dtype=bool)
    changed[1:] = states[1:] != states[:-1]
    per = max(1, round(cfg.batch_s))
    ids = np.arange(1, n_sig + 1, dtype=np.int32)
    events: list[pa.Table] = []
    busy = 0.0
    batches = 0
    for lo in range(0, ts.size, per):
        hi = min(lo + per, ts.size)
        batch = ReadingBatch.from_columns(
            np.tile(ids, hi - lo), np.repeat(ts[lo:hi], n_sig), values[lo:hi].ravel()
        )
        if gates:
            tick, station = np.nonzero(changed[lo:hi])
            if tick.size:
                batch = ReadingBatch.concat(
                    [
                        batch,
                        ReadingBatch.from_columns(
                            n_sig + 1 + station, ts[lo + tick], states[lo + tick, station]
                        ),
                    ]
                )
        t0 = time.perf_counter()
        out = detector.process(batch)
        busy += time.perf_counter() - t0
        batches += 1
        if out.num_rows:
            events.append(out)
        if batches % 100 == 0:
            report("detect", hi, ts.size)
    t0 = time.perf_counter()
    events.append(detector.flush())
    busy += time.perf_counter() - t0
    report("detect", ts.size, ts.size)
    return _final(pa.concat_tables(events)), busy, batches, detector


def _final(events: pa.Table) -> pa.Table:
    """The last row written of each event (events are rewritten as they grow and end)."""
    if events.num_rows == 0:
        return events
    ids = events.column("event_id").to_pylist()
    last = {e: i for i, e in enumerate(ids)}
    return events.take(pa.array(sorted(last.values())))


def _baseline(
    cfg: AnomalyBenchConfig, ts: I64, values: F64
) -> tuple[list[tuple[int, int, int]], float]:
    """Rolling mean / std z-score over the whole arrays; its events and busy seconds."""
    p = cfg.params
    w = p.window
    t0 = time.perf_counter()
    x = values - values[:1]  # offsets keep the squared sums well conditioned
    c1 = np.zeros((x.shape[0] + 1, x.shape[1]))
    c2 = np.zeros_like(c1)
    np.cumsum(x, axis=0, out=c1[1:])
    np.cumsum(x * x, axis=0, out=c2[1:])
    mean = (c1[w:-1] - c1[: -w - 1]) / w  # the w samples before each sample from w on
    var = np.maximum((c2[w:-1] - c2[: -w - 1]) / w - mean * mean, 0.0)
    z = np.abs(x[w:] - mean) / np.maximum(np.sqrt(var), 1e-12)
    flags = z > p.threshold
    busy = time.perf_counter() - t0
    # merge flagged samples into events like the detector does (not timed)
    k, s = np.nonzero(flags.T)  # signal-major
    tt = ts[w:][s]
    sig = k
    cool = round(p.cooldown_s * 1e6)
    new = np.r_[True, (sig[1:] != sig[:-1]) | (tt[1:] - tt[:-1] > cool)] if sig.size else sig
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], sig.size] - 1
    return [(int(sig[a]), int(tt[a]), int(tt[b])) for a, b in zip(starts, ends, strict=True)], busy


def score_events(
    events: Sequence[tuple[int, int, int]],
    faults: Sequence[tuple[int, str, int, int]],
    tolerance_us: int,
    kinds: Sequence[str],
) -> dict[str, Any]:
    """Event-level precision and recall (see the module docstring).

    ``events`` are ``(signal, start_us, end_us)``, ``faults`` ``(signal, kind, start_us,
    end_us)`` with ``end`` exclusive; signals are any hashable ids shared by both.
    """
    by_signal: dict[int, list[tuple[int, int, str]]] = {}
    for sig, kind, start, end in faults:
        by_signal.setdefault(sig, []).append((start, end, kind))
    arrays = {}
    for sig, items in by_signal.items():
        items.sort()
        arrays[sig] = (
            np.array([a for a, _, _ in items], dtype=np.int64),
            np.array([b for _, b, _ in items], dtype=np.int64),
            [k for _, _, k in items],
        )
    detected: dict[tuple[int, int], int] = {}  # (signal, fault start) → first event start
    tp = 0
    tp_by_kind = dict.fromkeys(kinds, 0)
    for sig, ev_start, ev_end in events:
        if sig not in arrays:
            continue
        fs, fe, fk = arrays[sig]
        # faults whose widened interval overlaps [ev_start, ev_end]
        hi = int(np.searchsorted(fs - tolerance_us, ev_end, side="right"))
        lo = int(np.searchsorted(fe + tolerance_us, ev_start, side="left"))
        if hi > lo:
            tp += 1
            tp_by_kind[fk[lo]] = tp_by_kind.get(fk[lo], 0) + 1
        for i in range(lo, hi):
            if fs[i] - tolerance_us <= ev_start < fe[i]:
                key = (sig, int(fs[i]))
                detected[key] = min(detected.get(key, ev_start), ev_start)
    n_faults = len(faults)
    per_kind: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        mine = [(s, a) for s, k, a, _ in faults if k == kind]
        hits = [detected[(s, a)] - a for s, a in mine if (s, a) in detected]
        per_kind[kind] = {
            "faults": len(mine),
            "detected": len(hits),
            "recall": round(len(hits) / len(mine), 4) if mine else None,
            "events": tp_by_kind.get(kind, 0),
            "median_delay_s": round(float(np.median(hits)) / 1e6, 1) if hits else None,
        }
    precision = tp / len(events) if events else None
    recall = len(detected) / n_faults if n_faults else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else None
    )
    return {
        "events": len(events),
        "true_positive_events": tp,
        "false_positive_events": len(events) - tp,
        "faults": n_faults,
        "detected_faults": len(detected),
        "precision": None if precision is None else round(precision, 4),
        "recall": None if recall is None else round(recall, 4),
        "f1": None if f1 is None else round(f1, 4),
        "per_kind": per_kind,
    }


def run_anomaly_bench(cfg: AnomalyBenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and return the figures."""
    report = progress or (lambda phase, done, total: None)
    sim = _simulation(cfg)
    paths = sim.measurement_signals()
    _plan(cfg, sim, paths)
    t0 = time.perf_counter()
    ts, values, states = _record(cfg, sim, paths, report)
    sim_s = time.perf_counter() - t0
    index = {p: i + 1 for i, p in enumerate(paths)}
    truth = sim.signal_faults()
    faults = [(index[f.signal], f.kind, to_us(f.start), to_us(f.end)) for f in truth]
    stations = [s.path for s in sim.stations]
    events, busy, batches, detector = _detect(cfg, paths, stations, ts, values, states, report)
    ev = list(
        zip(
            [index[s] for s in events.column("signal").to_pylist()],
            [to_us(t) for t in events.column("ts").to_pylist()],
            [to_us(t) for t in events.column("end_ts").to_pylist()],
            strict=True,
        )
    )
    report("baseline", 0, 1)
    base_events, base_busy = _baseline(cfg, ts, values)
    report("baseline", 1, 1)
    tol = round(cfg.tolerance_s * 1e6)
    kinds = list(cfg.kinds)
    scored = score_events(ev, faults, tol, kinds)
    base_scored = score_events([(s + 1, a, b) for s, a, b in base_events], faults, tol, kinds)
    samples = int(values.size)
    signal_days = len(paths) * cfg.hours / 24.0
    det_rate = samples / busy if busy > 0 else math.inf
    base_rate = samples / base_busy if base_busy > 0 else math.inf
    codes = events.column("code").to_pylist()
    return {
        "stations": cfg.stations,
        "signals": len(paths),
        "hours": cfg.hours,
        "samples": samples,
        "batches": batches,
        "rows_per_batch": round(samples / batches) if batches else 0,
        "seed": cfg.seed,
        "natural_stops": cfg.natural_stops,
        "gate": cfg.gate,
        "state_samples": int(states.size - (states[1:] == states[:-1]).sum()) if cfg.gate else 0,
        "samples_gated": detector.stats.samples_gated,
        "running_share": round(float((states == STATES.index("running")).mean()), 4),
        "tolerance_s": cfg.tolerance_s,
        "params": cfg.params.model_dump(),
        **scored,
        "false_events_per_signal_day": round(scored["false_positive_events"] / signal_days, 4),
        "stuck_events": codes.count("stuck"),
        "detector_samples_per_s": round(det_rate),
        "baseline_samples_per_s": round(base_rate),
        "ratio": round(det_rate / base_rate, 4),
        "baseline": {
            "method": "rolling mean/std z-score, whole arrays (cumulative sums)",
            "precision": base_scored["precision"],
            "recall": base_scored["recall"],
            "events": base_scored["events"],
            "recall_per_kind": {k: v["recall"] for k, v in base_scored["per_kind"].items()},
        },
        "simulate_s": round(sim_s, 2),
    }

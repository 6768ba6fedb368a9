"""Sensor faults injected into simulated measurements, with their ground truth.

A :class:`SignalFault` corrupts what one measurement signal reports (not the machine
itself) for an interval of simulated time:

* ``spike`` — ``magnitude`` added to the value (usually for one or a few ticks);
* ``level_shift`` — ``magnitude`` added for the whole interval (an offset, a decalibration);
* ``drift`` — an offset growing linearly from 0 to ``magnitude`` over the interval;
* ``stuck`` — the value frozen at what it was when the fault began;
* ``noise_burst`` — Gaussian noise of standard deviation ``magnitude`` added.

The engine (:meth:`shopfloor.sim.FactorySimulation.inject_signal_fault`) applies the faults
after each tick and keeps every injected fault as the ground truth that detectors are scored
against; the extra noise comes from a generator of its own, so injecting faults leaves every
other value of the simulation unchanged.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["FAULT_KINDS", "FaultInjector", "FaultKind", "SignalFault"]

FaultKind = Literal["spike", "level_shift", "drift", "stuck", "noise_burst"]
FAULT_KINDS: tuple[FaultKind, ...] = ("spike", "level_shift", "drift", "stuck", "noise_burst")
"""The kinds of sensor fault the simulator injects."""


@dataclass(frozen=True, slots=True)
class SignalFault:
    """One injected sensor fault: the ground truth is ``[start, end)`` on ``signal``.

    ``magnitude`` is in the signal's unit (see the module docstring; unused for ``stuck``).
    """

    signal: str
    kind: FaultKind
    start: datetime
    end: datetime
    magnitude: float = 0.0


@dataclass(slots=True)
class _Active:
    lag: int  # index into the engine's lag arrays
    start_s: float
    end_s: float
    fault: SignalFault
    hold: float = float("nan")
    started: bool = False


@dataclass(slots=True)
class FaultInjector:
    """The faults of one simulation, applied to its measurement outputs after each tick."""

    rng: np.random.Generator
    pending: list[_Active] = field(default_factory=list)
    active: list[_Active] = field(default_factory=list)
    log: list[SignalFault] = field(default_factory=list)

    def add(self, lag: int, fault: SignalFault, start_s: float, end_s: float) -> None:
        """Schedule ``fault`` on lag signal ``lag`` for simulated seconds ``[start_s, end_s)``."""
        bisect.insort(self.pending, _Active(lag, start_s, end_s, fault), key=lambda a: a.start_s)
        self.log.append(fault)

    def apply(self, t: float, out: npt.NDArray[np.float64]) -> None:
        """Corrupt ``out`` (the measurements at simulated second ``t``) in place."""
        while self.pending and self.pending[0].start_s <= t:
            self.active.append(self.pending.pop(0))
        if not self.active:
            return
        keep: list[_Active] = []
        for a in self.active:
            if t >= a.end_s:
                continue
            keep.append(a)
            f = a.fault
            if not a.started:
                a.started = True
                a.hold = float(out[a.lag])
            if f.kind == "spike" or f.kind == "level_shift":
                out[a.lag] += f.magnitude
            elif f.kind == "drift":
                span = a.end_s - a.start_s
                out[a.lag] += f.magnitude * (t - a.start_s) / span if span > 0 else f.magnitude
            elif f.kind == "stuck":
                out[a.lag] = a.hold
            else:  # noise_burst
                out[a.lag] += f.magnitude * float(self.rng.standard_normal())
        self.active = keep

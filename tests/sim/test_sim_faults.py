"""Sensor faults injected into the simulation engine, and their ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shopfloor.sim import FAULT_KINDS, FactorySimulation, SignalFault, SignalSpec, StationSpec

START = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
P = "plant/press-1"


def _sim(seed: int = 3) -> FactorySimulation:
    station = StationSpec(P, type="press", mtbf_min=0.0, idle_rate_per_h=0.0, setup_min=0.0)
    signals = [
        SignalSpec(f"{P}/temperature", P, "temperature", unit="CEL", low=10.0, high=70.0),
        SignalSpec(f"{P}/pressure", P, "pressure", unit="BAR", low=0.0, high=350.0),
        SignalSpec(f"{P}/vibration", P, "vibration"),
        SignalSpec(f"{P}/good", P, "good", data_type="int", kind="counter"),
    ]
    return FactorySimulation([station], signals, seed=seed, start=START, tick_s=1.0)


def _run(sim: FactorySimulation, ticks: int) -> np.ndarray:
    out = np.empty((ticks, len(sim.signals)))
    for k in range(ticks):
        sim.step()
        out[k] = sim.snapshot()
    return out


def test_each_kind_corrupts_its_interval_only() -> None:
    clean = _run(_sim(), 400)
    sim = _sim()
    assert sim.measurement_signals() == [f"{P}/temperature", f"{P}/pressure", f"{P}/vibration"]
    sd = sim.noise_sd(f"{P}/pressure")
    assert sd > 0
    faults = [
        sim.inject_signal_fault(f"{P}/pressure", "spike", 50, 1, 20 * sd),
        sim.inject_signal_fault(f"{P}/pressure", "level_shift", 100, 30, -8 * sd),
        sim.inject_signal_fault(f"{P}/temperature", "drift", 100, 100, 5.0),
        sim.inject_signal_fault(f"{P}/vibration", "stuck", 200, 50),
        sim.inject_signal_fault(f"{P}/pressure", "noise_burst", 300, 40, 5 * sd),
    ]
    assert sim.signal_faults() == faults
    assert faults[1] == SignalFault(
        f"{P}/pressure",
        "level_shift",
        START + timedelta(seconds=100),
        START + timedelta(seconds=130),
        -8 * sd,
    )
    got = _run(sim, 400)
    temp, pres, vib, good = 0, 1, 2, 3
    # row k holds the values stamped START + (k + 1) s
    row = {t: t - 1 for t in range(1, 401)}
    diff = got - clean
    assert diff[:, good] == pytest.approx(0.0)  # counters untouched
    assert diff[row[50], pres] == pytest.approx(20 * sd)
    assert diff[row[51], pres] == 0.0
    assert diff[row[100] : row[130], pres] == pytest.approx(-8 * sd)
    ramp = diff[row[100] : row[200], temp]
    assert ramp == pytest.approx(5.0 * np.arange(100) / 100)
    assert diff[row[200], temp] == 0.0
    stuck = got[row[200] : row[250], vib]
    assert np.all(stuck == stuck[0])
    assert stuck[0] == clean[row[200], vib]
    assert diff[row[250], vib] == 0.0
    burst = diff[row[300] : row[340], pres]
    assert np.std(burst) > 2 * sd
    assert np.all(diff[row[340] :, :] == 0.0)
    untouched = np.ones(400, dtype=bool)
    untouched[[row[50]]] = False
    untouched[row[100] : row[130]] = False
    untouched[row[300] : row[340]] = False
    assert np.all(diff[untouched, pres] == 0.0)  # other values are exactly the same


def test_faults_are_reproducible() -> None:
    def run() -> np.ndarray:
        sim = _sim(seed=9)
        for i, kind in enumerate(FAULT_KINDS):
            sim.inject_signal_fault(f"{P}/pressure", kind, 20 + 30 * i, 10, 10.0)
        return _run(sim, 200)

    assert np.array_equal(run(), run())


def test_bad_faults_are_refused() -> None:
    sim = _sim()
    with pytest.raises(ValueError, match="unknown fault kind 'meteor'"):
        sim.inject_signal_fault(f"{P}/pressure", "meteor", 10, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a simulated measurement"):
        sim.inject_signal_fault(f"{P}/good", "spike", 10, 5)
    with pytest.raises(KeyError, match="no simulated signal"):
        sim.inject_signal_fault(f"{P}/nope", "spike", 10, 5)
    with pytest.raises(ValueError, match="duration_s"):
        sim.inject_signal_fault(f"{P}/pressure", "spike", 10, 0)
    assert sim.signal_faults() == []

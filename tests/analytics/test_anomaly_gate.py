"""Machine-state gating and the drift check of the anomaly detector: stops, waits and
start-ups are not scored, the reference restarts per running period, the state carries
across batches (checked against a per-sample reference), bad or unknown state codes are
``offline``, the drift check; the factory-file checks and the engine built from a factory
with a DuckDB historian."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest
from pydantic import ValidationError

from shopfloor.analytics import ANOMALY_KIND, AnomalyDetector, AnomalyEngine
from shopfloor.analytics._anomaly_gate import NO_TIME, StateGates
from shopfloor.edge.batch import Quality, ReadingBatch
from shopfloor.historian import SignalInfo, open_historian
from shopfloor.model import (
    STANDARD_STATES,
    AnomalyParams,
    FactoryFileError,
    parse_factory,
    select_anomaly_signals,
)

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = 1_000_000  # one second in µs

ASSET = "p/line/m1"
TEMP = f"{ASSET}/temp"
STATE_ID = 100
STATE_MAP = {"10": "running", "20": "idle", "30": "unplanned_stop", "40": "setup"}
CODE = {name: int(raw) for raw, name in STATE_MAP.items()}
STRING_MAP = {"RUN": "running", "WAIT": "idle", "FAULT": "unplanned_stop"}

F64 = npt.NDArray[np.float64]


def _rows(
    n: int,
    states: Mapping[int, Mapping[int, Any]],
    signals: Mapping[int, F64],
    bad: frozenset[tuple[int, int]] = frozenset(),
) -> pa.Table:
    """Readings of ``n`` one-second ticks: per tick first the state samples
    (``states``: state signal id → {tick: raw code, int, float, str or None}), then one
    sample of every measurement (``signals``: id → values); ``bad`` (id, tick) rows have
    bad quality."""
    cols: dict[str, list[Any]] = {
        k: [] for k in ("signal_id", "ts", "quality", "v_float", "v_int", "v_str")
    }

    def add(sid: int, k: int, value: Any) -> None:
        cols["signal_id"].append(sid)
        cols["ts"].append(T0_US + k * S)
        cols["quality"].append(Quality.BAD if (sid, k) in bad else Quality.GOOD)
        cols["v_float"].append(value if isinstance(value, float) else None)
        cols["v_int"].append(value if isinstance(value, int) else None)
        cols["v_str"].append(value if isinstance(value, str) else None)

    for k in range(n):
        for sid, changes in states.items():
            if k in changes:
                add(sid, k, changes[k])
        for sid, x in signals.items():
            add(sid, k, float(x[k]))
    return pa.table(
        {
            "signal_id": pa.array(cols["signal_id"], pa.int32()),
            "ts": pa.array(cols["ts"], pa.int64()),
            "quality": pa.array(cols["quality"], pa.uint8()),
            "v_float": pa.array(cols["v_float"], pa.float64()),
            "v_int": pa.array(cols["v_int"], pa.int64()),
            "v_str": pa.array(cols["v_str"], pa.string()),
        }
    )


def _feed(det: AnomalyDetector, table: pa.Table, cuts: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Feed ``table`` cut into batches at row positions ``cuts``; the last row written of
    each event, by signal and start."""
    rows: list[dict[str, Any]] = []
    for lo, hi in itertools.pairwise([0, *cuts, table.num_rows]):
        if hi > lo:
            rows += det.process(ReadingBatch(table.slice(lo, hi - lo))).to_pylist()
    rows += det.flush().to_pylist()
    final = {r["event_id"]: r for r in rows}
    return sorted(final.values(), key=lambda r: (r["signal"], r["ts"]))


def _tick(t: datetime | None) -> int:
    assert t is not None
    return round((t - T0).total_seconds())


def _starts(events: list[dict[str, Any]], signal: str = TEMP) -> list[int]:
    return [_tick(e["ts"]) for e in events if e["signal"] == signal]


def _gated(params: AnomalyParams) -> AnomalyDetector:
    return AnomalyDetector({1: (TEMP, params)}, {ASSET: (STATE_ID, STATE_MAP)})


# --------------------------------------------------------------------------- the gate


def test_a_stop_is_not_scored_the_same_deviation_while_running_is() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.normal(50.0, 1.0, n)
    x[1200:1500] = rng.normal(20.0, 1.0, 300)  # the stop: the press cools down
    x[2500:2530] = rng.normal(20.0, 1.0, 30)  # the same while it runs
    changes = {0: CODE["running"], 1200: CODE["unplanned_stop"], 1500: CODE["running"]}
    table = _rows(n, {STATE_ID: changes}, {1: x})
    params = AnomalyParams(window=100, settle_s=60)
    det = _gated(params)
    assert _starts(_feed(det, table, range(0, table.num_rows, 97))) == [2500]
    assert det.gated_assets == [ASSET]
    assert det.states() == {ASSET: "running"}
    s = det.stats
    assert s.samples_in == n
    assert s.samples_gated == 60 + 300 + 60  # settling at the start, the stop, settling again
    # the reference restarts after settling: 100 samples of warm-up in each period
    assert s.samples_scored == (1200 - 60 - 100) + (n - 1560 - 100)

    # gate 'none' scores whatever the state: the stop is an anomaly like the fault
    none = AnomalyDetector(
        {1: (TEMP, params.model_copy(update={"gate": "none"}))}, {ASSET: (STATE_ID, STATE_MAP)}
    )
    events = _feed(none, table)
    assert {1200, 2500} <= set(_starts(events))
    assert none.stats.samples_gated == 0
    assert none.gated_assets == []
    # as does a detector that is not given the state (the default gate needs one)
    assert _feed(AnomalyDetector({1: (TEMP, params)}), table) == events


def test_settling_samples_after_a_start_are_not_scored() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    x = rng.normal(50.0, 1.0, n)
    x[1219] += 20.0  # 119 s after the restart: still settling
    x[1225] += 20.0  # 125 s: scored
    changes = {0: CODE["running"], 1000: CODE["idle"], 1100: CODE["running"]}
    table = _rows(n, {STATE_ID: changes}, {1: x})
    params = AnomalyParams(window=100, refresh=1, settle_s=120, baseline="keep")
    det = _gated(params)
    events = _feed(det, table)
    assert _starts(events) == [1225]
    assert json.loads(events[0]["data"])["samples"] == 1
    assert det.stats.samples_gated == 120 + 100 + 120
    # without settling, the first spike is scored (and the second joins its event)
    events = _feed(_gated(params.model_copy(update={"settle_s": 0.0})), table)
    assert _starts(events) == [1219]
    assert json.loads(events[0]["data"])["samples"] == 2


def test_the_reference_restarts_with_each_running_period_or_is_kept() -> None:
    rng = np.random.default_rng(3)
    n = 2400
    x = rng.normal(50.0, 1.0, n)
    x[1000:1200] = rng.normal(30.0, 3.0, 200)  # a changeover
    x[1200:] += 8.0  # the new product runs 8 σ higher: not a fault
    changes = {0: CODE["running"], 1000: CODE["setup"], 1200: CODE["running"]}
    table = _rows(n, {STATE_ID: changes}, {1: x})
    reset = _gated(AnomalyParams(window=100, settle_s=30))
    assert _feed(reset, table) == []
    keep = _gated(AnomalyParams(window=100, settle_s=30, baseline="keep"))
    events = _feed(keep, table)
    assert _starts(events) == [1230]  # the first sample scored after the changeover
    assert json.loads(events[0]["data"])["median"] == pytest.approx(50.0, abs=0.5)
    # 'keep' has no warm-up after the first period, 'reset' one per period
    assert keep.stats.samples_scored - reset.stats.samples_scored == 100


def test_bad_quality_unknown_and_missing_state_codes_are_offline() -> None:
    rng = np.random.default_rng(4)
    n = 2400
    x = rng.normal(50.0, 1.0, n)
    y = rng.normal(7.0, 0.1, n)
    run = CODE["running"]
    states: dict[int, dict[int, Any]] = {
        STATE_ID: {0: run, 600: run, 800: 99, 1000: run, 1300: None, 1500: run},
        200: {0: "RUN", 1700: "JAM", 1900: "RUN"},  # a second machine with text codes
    }
    bad = frozenset({(STATE_ID, 600)})  # 'running', but of bad quality
    for lo in (600, 800, 1300):
        x[lo : lo + 200] -= 30.0
    y[1700:1900] += 5.0
    table = _rows(n, states, {1: x, 2: y}, bad)
    params = AnomalyParams(window=100, settle_s=0, baseline="keep")
    det = AnomalyDetector(
        {1: (TEMP, params), 2: ("p/line/m2/flow", params)},
        {ASSET: (STATE_ID, STATE_MAP), "p/line/m2": (200, STRING_MAP)},
    )
    cut = int(np.searchsorted(table.column("ts").to_numpy(), T0_US + 900 * S))
    assert det.process(ReadingBatch(table.slice(0, cut))).num_rows == 0
    assert det.states() == {ASSET: "offline", "p/line/m2": "running"}
    assert _feed(det, table.slice(cut)) == []
    assert det.stats.samples_gated == 600 + 200
    assert det.states() == {ASSET: "running", "p/line/m2": "running"}
    # the same faults are found without the gate
    ungated = AnomalyDetector(
        {1: (TEMP, params), 2: ("p/line/m2/flow", params)}
    )  # no states: scored whatever the state
    assert {(e["signal"], _tick(e["ts"])) for e in _feed(ungated, table)} >= {
        (TEMP, 600),
        ("p/line/m2/flow", 1700),
    }


def test_state_gates_map_every_value_column() -> None:
    gates = StateGates([(5, STATE_MAP), (6, STRING_MAP)])
    table = pa.table(
        {
            "signal_id": pa.array([5, 5, 5, 5, 5, 5, 6, 6, 9], pa.int32()),
            "ts": pa.array([T0_US + k * S for k in range(9)], pa.int64()),
            "quality": pa.array([192, 192, 192, 192, 0, 192, 192, 192, 192], pa.uint8()),
            "v_float": pa.array([None, 20.0, None, None, None, None, None, None, 1.0]),
            "v_int": pa.array([10, None, None, None, 10, 77, None, None, None], pa.int64()),
            "v_str": pa.array([None, None, "30", None, None, None, "RUN", "run", None]),
        }
    )
    steps = gates.steps(ReadingBatch(table).table)
    names = [STANDARD_STATES[c] for c in steps.state.tolist()]
    # int, float and text codes; no value, bad quality and unknown codes (also in the
    # wrong case) are offline; signal 9 is not a state signal
    assert names == [
        "running",
        "idle",
        "unplanned_stop",
        "offline",
        "offline",
        "offline",
        "running",
        "offline",
    ]
    assert steps.since.tolist() == [T0_US, *[NO_TIME] * 5, T0_US + 6 * S, NO_TIME]
    assert steps.entered == 2
    gates.commit(steps)
    assert [STANDARD_STATES[c] for c in gates.state.tolist()] == ["offline", "offline"]
    assert gates.transitions == 2
    with pytest.raises(ValueError, match="two equipments"):
        StateGates([(5, STATE_MAP), (5, STRING_MAP)])


def _timeline(rng: np.random.Generator, n: int, codes: Sequence[Any]) -> dict[int, Any]:
    """Random state changes: running periods of 150–700 s, other states of 20–250 s."""
    changes: dict[int, Any] = {}
    k, running = 0, True
    while k < n:
        changes[k] = codes[0] if running else codes[int(rng.integers(1, len(codes)))]
        k += int(rng.integers(150, 700) if running else rng.integers(20, 250))
        running = not running
    return changes


def _expected(
    changes: Mapping[int, str], x: F64, p: AnomalyParams, gated: bool
) -> list[tuple[int, int]]:
    """Per-sample loop: ``(start, end)`` ticks of the events of one signal."""
    anomalous: list[int] = []
    kept: list[float] = []
    state, since, epoch = "", 0, -1
    for k in range(x.size):
        if k in changes:
            if changes[k] == "running" and state != "running":
                since = k
            state = changes[k]
        if gated:
            if state != "running" or k - since < p.settle_s:
                continue
            key = since if p.baseline == "reset" else 0
            if key != epoch:
                epoch = key
                if p.baseline == "reset":
                    kept = []
        b = (len(kept) // p.refresh) * p.refresh
        if b >= p.warmup:
            win = np.array(kept[max(0, b - p.window) : b])
            m = float(np.median(win))
            scale = 1.4826 * float(np.median(np.abs(win - m)))
            if abs(x[k] - m) / scale > p.threshold:
                anomalous.append(k)
        kept.append(float(x[k]))
    events: list[tuple[int, int]] = []
    for k in anomalous:
        if events and k - events[-1][1] <= p.cooldown_s:
            events[-1] = (events[-1][0], k)
        else:
            events.append((k, k))
    return events


def test_the_same_events_however_cut_and_as_a_per_sample_reference() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    values = {sid: rng.standard_t(4, n) for sid in (1, 2, 3, 4)}  # heavy tails: many events
    for x in values.values():
        lo = int(rng.integers(500, 2500))
        x[lo : lo + 60] += 6.0
    raw_a = [CODE[s] for s in ("running", "idle", "unplanned_stop", "setup")]
    raw_b = ["RUN", "WAIT", "FAULT"]
    changes_a = _timeline(rng, n, raw_a)
    changes_b = _timeline(rng, n, raw_b)
    base = AnomalyParams(threshold=4.0, cooldown_s=5.0)
    params = {
        1: ("p/l/a/x", base.model_copy(update={"window": 60, "refresh": 7, "settle_s": 20})),
        2: ("p/l/a/y", base.model_copy(
            update={"window": 40, "min_samples": 10, "settle_s": 0, "baseline": "keep"}
        )),
        3: ("p/l/b/z", base.model_copy(update={"window": 50, "refresh": 5, "settle_s": 45})),
        4: ("p/l/c/w", base.model_copy(update={"window": 60, "refresh": 7})),  # not gated
    }  # fmt: skip
    states = {"p/l/a": (101, STATE_MAP), "p/l/b": (102, STRING_MAP)}
    table = _rows(n, {101: changes_a, 102: changes_b}, values)
    whole = _feed(AnomalyDetector(params, states), table)
    names_a = {k: STATE_MAP[str(c)] for k, c in changes_a.items()}
    names_b = {k: STRING_MAP[c] for k, c in changes_b.items()}
    timelines = {1: names_a, 2: names_a, 3: names_b, 4: {}}
    for sid, (path, p) in params.items():
        got = [(_tick(e["ts"]), _tick(e["end_ts"])) for e in whole if e["signal"] == path]
        want = _expected(timelines[sid], values[sid], p, gated=sid != 4)
        assert len(want) >= 5, path
        assert got == want, path
    cut_rng = np.random.default_rng(6)
    for cuts in (
        sorted(cut_rng.choice(table.num_rows, 300, replace=False).tolist()),
        list(range(0, table.num_rows, 7)),
    ):
        assert _feed(AnomalyDetector(params, states), table, cuts) == whole


def test_the_drift_check_finds_a_slow_drift_the_plain_check_misses() -> None:
    rng = np.random.default_rng(7)
    n = 3700
    k = np.arange(n, dtype=np.float64)
    x = 50.0 - 60.0 * np.exp(-k / 300.0) + rng.normal(0.0, 1.0, n)  # warming up
    x[2500:] += (k[2500:] - 2500.0) * (7.0 / 150.0)  # 7 σ per half window: 56 σ in 20 min
    table = _rows(n, {STATE_ID: {0: CODE["running"]}}, {1: x})
    assert _feed(_gated(AnomalyParams()), table) == []  # the ramp inflates the values' MAD
    drift = _feed(_gated(AnomalyParams(drift_after_s=1200)), table)
    found = [e for e in drift if _tick(e["ts"]) >= 2500]
    assert found, drift
    assert {e["code"] for e in found} == {"drift"}
    data = json.loads(found[0]["data"])
    assert data["reasons"] == ["drift"]
    assert data["threshold"] == 6.0
    assert data["scale"] == pytest.approx(1.0, rel=0.25)  # the noise, not the ramp
    assert not [t for t in _starts(drift) if t < 2500]
    # the drift check right from the start flags the warm-up too
    early = _feed(_gated(AnomalyParams(drift_after_s=0)), table)
    assert [t for t in _starts(early) if t < 1200]
    # with gate 'none' the running time still comes from the state when it is known
    none = AnomalyParams(drift_after_s=1200, gate="none")
    assert not [t for t in _starts(_feed(_gated(none), table)) if t < 1200]
    unknown = _feed(AnomalyDetector({1: (TEMP, none)}), table)
    assert [t for t in _starts(unknown) if t < 1200]


# --------------------------------------------------------------------------- the checks

FACTORY = """\
types:
  - id: machine
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: temperature, data_type: float, unit: CEL}
    states: {1: running, 2: idle, 3: unplanned_stop}
  - id: probe
    signals:
      - {name: temperature, data_type: float, unit: CEL}
  - id: box
    signals:
      - {name: mode, data_type: int, kind: state}
      - {name: temperature, data_type: float, unit: CEL}
  - id: press
    extends: probe
    signals:
      - {name: mode, data_type: int, kind: state}
    states: {1: running, 2: idle}
connections:
  - {name: opc, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
enterprise:
  id: acme
  sites:
    - id: plant
      areas:
        - id: area
          lines:
            - id: line
              equipment:
                - {id: m1, type: machine, connection: opc,
                   bindings: {state: s1, temperature: t1}}
                - {id: s1, type: probe, connection: opc, bindings: {temperature: t2}}
                - {id: b1, type: box, connection: opc, bindings: {mode: b3, temperature: t3}}
"""
LINE = "acme/plant/area/line"


def test_gate_running_needs_a_state_signal_and_a_state_map() -> None:
    text = (
        FACTORY
        + f"""\
anomaly:
  - {{type: probe, gate: running}}
  - {{type: box, gate: running}}
  - {{paths: [{LINE}/m1/temperature, {LINE}/s1/temperature], gate: running}}
  - {{type: machine, gate: running}}
  - {{type: machine, gate: always}}
  - {{type: machine, drift_threshold: 4}}
  - {{paths: [{LINE}/b1/temperature], gate: none}}
"""
    )
    with pytest.raises(FactoryFileError) as info:
        parse_factory(text, "f.yaml")
    found = {i.path: i.message for i in info.value.issues}
    expected = {
        "anomaly[0].gate": "type 'probe' has no signal of kind state",
        "anomaly[1].gate": "type 'box' has no state map ('states')",
        "anomaly[2].gate": "type 'probe' has no signal of kind state",
        "anomaly[4].gate": "'running' or 'none'",
        "anomaly[5]": "drift_threshold sets the drift check",
    }
    assert set(found) == set(expected), "\n".join(map(str, info.value.issues))
    for key, fragment in expected.items():
        assert fragment in found[key], (key, found[key])
    for key in ("anomaly[0].gate", "anomaly[1].gate", "anomaly[2].gate"):
        assert found[key].startswith("gate 'running' needs the equipment's state: ")


def test_gate_running_of_a_type_checks_the_equipment_it_selects() -> None:
    # a press (a probe with a state) is the only equipment of type probe or a subtype
    text = FACTORY.replace(
        "{id: s1, type: probe, connection: opc, bindings: {temperature: t2}}",
        "{id: s1, type: press, connection: opc, bindings: {temperature: t2, mode: m2}}",
    )
    factory = parse_factory(text + "anomaly:\n  - {type: probe, gate: running}\n")
    assert select_anomaly_signals(factory)[f"{LINE}/s1/temperature"].gate == "running"


def test_the_detector_refuses_gate_running_without_a_state() -> None:
    with pytest.raises(ValueError, match="gate 'running' but no state is given for p/line/m1"):
        AnomalyDetector({1: (TEMP, AnomalyParams(gate="running"))})
    with pytest.raises(ValueError, match="gate 'running'"):
        AnomalyDetector({1: (TEMP, AnomalyParams(gate="running"))}, {"p/line/m2": (5, STATE_MAP)})
    with pytest.raises(ValidationError, match="settle_s"):
        AnomalyParams(settle_s=-1)


# --------------------------------------------------------------------------- the engine

ENGINE_FACTORY = FACTORY + "anomaly:\n  - {type: machine, window: 100, settle_s: 30}\n"
ENGINE_FACTORY += "  - {type: probe, window: 100}\n"


def _engine_rows(ids: Mapping[str, int], state: bool = True) -> pa.Table:
    """m1 stops from 600 to 900 s (its temperature drops), both temperatures spike at
    1200 s."""
    rng = np.random.default_rng(8)
    n = 1500
    m1 = rng.normal(60.0, 0.5, n)
    m1[600:900] = rng.normal(30.0, 0.5, 300)
    s1 = rng.normal(20.0, 0.2, n)
    m1[1200] += 20.0
    s1[1200] += 10.0
    changes = {0: 1, 600: 3, 900: 1}
    return _rows(
        n,
        {ids.get(f"{LINE}/m1/state", 999): changes} if state else {},
        {ids[f"{LINE}/m1/temperature"]: m1, ids[f"{LINE}/s1/temperature"]: s1},
    )


async def test_engine_from_a_factory_gates_by_the_state_signal(tmp_path: Path) -> None:
    factory = parse_factory(ENGINE_FACTORY)
    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h:
        ids = await h.register_signals(
            [SignalInfo(s.path, s.data_type, s.unit, s.kind) for s in factory.signals()]  # type: ignore[arg-type]
        )
        engine = AnomalyEngine.from_factory(factory, h)
        assert engine.states == {
            f"{LINE}/m1": (f"{LINE}/m1/state", {"1": "running", "2": "idle", "3": "unplanned_stop"})
        }
        table = _engine_rows(ids)
        for lo in range(0, table.num_rows, 25):
            await engine(ReadingBatch(table.slice(lo, 25)))
        await engine.flush()
        events = await h.read_events(T0, T0 + timedelta(days=1), kinds=[ANOMALY_KIND])
        assert engine.detector is not None
        assert engine.detector.gated_assets == [f"{LINE}/m1"]
        assert engine.detector.stats.samples_gated == 30 + 300 + 30
    got = sorted((r["signal"], _tick(r["ts"])) for r in events.to_pylist())
    # the stop and the restart are not anomalies of m1; the probe has no state: scored
    assert got == [(f"{LINE}/m1/temperature", 1200), (f"{LINE}/s1/temperature", 1200)]


async def test_engine_scores_whatever_the_state_when_the_state_signal_is_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    factory = parse_factory(ENGINE_FACTORY.replace("settle_s: 30", "settle_s: 30, gate: running"))
    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h:
        ids = await h.register_signals(
            [
                SignalInfo(s.path, s.data_type, s.unit, s.kind)  # type: ignore[arg-type]
                for s in factory.signals()
                if s.kind != "state"
            ]
        )
        engine = AnomalyEngine.from_factory(factory, h)
        with caplog.at_level(logging.WARNING, logger="shopfloor.analytics.anomaly"):
            table = _engine_rows(ids, state=False)
            for lo in range(0, table.num_rows, 25):
                await engine(ReadingBatch(table.slice(lo, 25)))
            await engine.flush()
        events = await h.read_events(T0, T0 + timedelta(days=1), kinds=[ANOMALY_KIND])
        assert engine.detector is not None
        assert engine.detector.gated_assets == []
    assert "does not know their state signal" in caplog.text
    starts = {_tick(r["ts"]) for r in events.to_pylist() if r["signal"] == f"{LINE}/m1/temperature"}
    assert {600, 1200} <= starts  # the stop is scored like a fault

"""Online anomaly detection: the robust z-score, events, state across batches, the config,
the pipeline observer with a DuckDB historian, and ``shopfloor bench anomaly``."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from shopfloor.analytics import ANOMALY_KIND, AnomalyDetector, AnomalyEngine
from shopfloor.bench.anomaly import AnomalyBenchConfig, score_events
from shopfloor.cli import _bench_anomaly
from shopfloor.edge.batch import RawBatch, ReadingBatch
from shopfloor.edge.events import EVENT_SCHEMA
from shopfloor.edge.mapper import Mapper, Route
from shopfloor.edge.pipeline import Pipeline
from shopfloor.historian import SignalInfo, open_historian
from shopfloor.model import (
    AnomalyParams,
    AnomalyRule,
    FactoryFileError,
    parse_factory,
    select_anomaly_signals,
)

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = 1_000_000  # one second in µs


def _ts(n: int) -> np.ndarray:
    return T0_US + np.arange(n, dtype=np.int64) * S


def _batch(sid: np.ndarray, ts: np.ndarray, values: np.ndarray) -> ReadingBatch:
    return ReadingBatch.from_columns(sid, ts, values)


def _stream(
    detector: AnomalyDetector, sid: np.ndarray, ts: np.ndarray, values: np.ndarray, cuts: Any
) -> list[dict[str, Any]]:
    """Feed the rows in batches cut at ``cuts``; the last row written of each event."""
    rows: list[dict[str, Any]] = []
    bounds = [0, *cuts, len(sid)]
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            rows += detector.process(_batch(sid[lo:hi], ts[lo:hi], values[lo:hi])).to_pylist()
    rows += detector.flush().to_pylist()
    final: dict[str, dict[str, Any]] = {}
    for row in rows:
        final[row["event_id"]] = row
    return sorted(final.values(), key=lambda r: (r["signal"], r["ts"]))


def _us(t: datetime | None) -> int | None:
    return None if t is None else round((t - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * S)


def _one(values: np.ndarray, params: AnomalyParams, cuts: Any = ()) -> list[dict[str, Any]]:
    det = AnomalyDetector({7: ("a/line/m1/temp", params)})
    return _stream(det, np.full(values.size, 7), _ts(values.size), values, cuts)


# --------------------------------------------------------------------------- the detector


def test_finds_a_spike_and_a_level_shift() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(50.0, 1.0, 4000)
    x[1500] += 15.0
    x[2500:2800] += 9.0
    events = _one(x, AnomalyParams(window=200, threshold=6.0))
    starts = [_us(e["ts"]) for e in events]
    assert T0_US + 1500 * S in starts
    assert T0_US + 2500 * S in starts
    spike = events[starts.index(T0_US + 1500 * S)]
    assert _us(spike["end_ts"]) == T0_US + 1500 * S
    data = json.loads(spike["data"])
    assert data["score"] > 12
    assert data["peak_value"] == pytest.approx(x[1500])
    assert data["median"] == pytest.approx(50.0, abs=0.3)
    assert data["scale"] == pytest.approx(1.0, rel=0.2)
    assert spike["kind"] == ANOMALY_KIND
    assert spike["code"] == "deviation"
    assert spike["asset"] == "a/line/m1"
    assert spike["signal"] == "a/line/m1/temp"
    assert spike["event_id"] == f"anomaly:a/line/m1/temp:{T0_US + 1500 * S}"
    # nothing else than the two faults (the shift's end counts: it is a jump back)
    for e in events:
        t = _us(e["ts"])
        assert t is not None
        assert t == T0_US + 1500 * S or T0_US + 2500 * S <= t <= T0_US + 2810 * S, e


def test_quiet_on_clean_noise() -> None:
    rng = np.random.default_rng(2)
    n, signals = 20_000, 10
    values = rng.normal(100.0, 2.0, (n, signals))
    det = AnomalyDetector({i: (f"a/m/s{i}", AnomalyParams()) for i in range(signals)})
    sid = np.tile(np.arange(signals), n)
    events = _stream(det, sid, np.repeat(_ts(n), signals), values.ravel(), range(0, n * 10, 997))
    # 200,000 Gaussian samples at a robust z above 6: expected well below one event
    assert len(events) <= 2
    assert det.stats.samples_in == n * signals
    assert det.stats.samples_scored == (n - 300) * signals


def test_warm_up_is_respected() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, 500)
    x[30] += 50.0  # before the reference holds 50 samples: not scored
    x[120] += 50.0
    params = AnomalyParams(window=100, min_samples=50, refresh=10)
    det = AnomalyDetector({1: ("a/m/x", params)})
    events = _stream(det, np.ones(500, dtype=np.int64), _ts(500), x, ())
    assert [_us(e["ts"]) for e in events] == [T0_US + 120 * S]
    assert det.stats.samples_scored == 500 - 50
    with pytest.raises(ValidationError, match="min_samples"):
        AnomalyParams(window=100, min_samples=101)


def test_the_same_events_however_the_batches_are_cut() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    a = rng.normal(10.0, 1.0, n)
    a[700] += 20.0
    a[1400:1600] -= 8.0
    b = rng.normal(0.0, 0.5, n)
    b[900:1100] = b[900]  # stuck
    b[2000:2300] += 5.0 * np.sin(np.arange(300) / 10.0)
    c = np.round(rng.normal(100.0, 3.0, n))  # an int signal
    c[2500] = 160
    signals = {
        1: ("p/m1/a", AnomalyParams(window=120, refresh=7)),
        2: ("p/m1/b", AnomalyParams(window=120, refresh=7, stuck_samples=15, cooldown_s=5)),
        3: ("p/m2/c", AnomalyParams(window=64, refresh=1, threshold=5, min_samples=20)),
    }
    sid = np.tile(np.array([1, 2, 3]), n)
    ts = np.repeat(_ts(n), 3)
    values = np.column_stack([a, b, c]).ravel()
    whole = _stream(AnomalyDetector(signals), sid, ts, values, ())
    assert {e["signal"] for e in whole} == {"p/m1/a", "p/m1/b", "p/m2/c"}
    assert any(e["code"] == "stuck" for e in whole)
    cut_rng = np.random.default_rng(5)
    for cuts in (
        list(range(1, 3 * n)),  # one row per batch
        sorted(cut_rng.choice(3 * n, 40, replace=False).tolist()),
        list(range(0, 3 * n, 3 * 61)),
    ):
        assert _stream(AnomalyDetector(signals), sid, ts, values, cuts) == whole


def _reference(x: np.ndarray, p: AnomalyParams) -> list[tuple[int, int, float, int]]:
    """Per-sample loop: ``(start, end, peak score, samples)`` of each event."""
    anomalous: list[tuple[int, float]] = []
    for k in range(x.size):
        b = (k // p.refresh) * p.refresh
        if b < p.warmup:
            continue
        win = x[max(0, b - p.window) : b]
        m = float(np.median(win))
        s = 1.4826 * float(np.median(np.abs(win - m)))
        z = abs(x[k] - m) / s
        if z > p.threshold:
            anomalous.append((k, z))
    events: list[tuple[int, int, float, int]] = []
    cooldown = int(p.cooldown_s)  # one sample per second
    for k, z in anomalous:
        if events and k - events[-1][1] <= cooldown:
            start, _, peak, count = events[-1]
            events[-1] = (start, k, max(peak, z), count + 1)
        else:
            events.append((k, k, z, 1))
    return events


@pytest.mark.parametrize(("window", "refresh", "min_samples"), [(50, 1, None), (64, 9, 20)])
def test_streaming_scores_match_a_per_sample_reference(
    window: int, refresh: int, min_samples: int | None
) -> None:
    rng = np.random.default_rng(window)
    x = rng.standard_t(4, 1500)  # heavy tails: plenty of events
    x[400:460] += 6.0
    params = AnomalyParams(
        window=window, refresh=refresh, min_samples=min_samples, threshold=4.0, cooldown_s=3
    )
    got = [
        (
            (_us(e["ts"]) - T0_US) // S,  # type: ignore[operator]
            (_us(e["end_ts"]) - T0_US) // S,  # type: ignore[operator]
            json.loads(e["data"])["score"],
            json.loads(e["data"])["samples"],
        )
        for e in _one(x, params, cuts=range(0, 1500, 37))
    ]
    want = _reference(x, params)
    assert len(want) >= 10
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert [g[3] for g in got] == [w[3] for w in want]
    assert [g[2] for g in got] == pytest.approx([round(w[2], 3) for w in want], abs=1e-3)


def test_one_event_per_fault_written_open_then_closed() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(0.0, 1.0, 1000)
    x[[500, 510, 520]] += 30.0  # within the 30 s cooldown of each other: one event
    x[600] += 30.0  # 80 s later: another one
    det = AnomalyDetector({1: ("a/m/x", AnomalyParams(window=100, cooldown_s=30))})
    sid, ts = np.ones(1000, dtype=np.int64), _ts(1000)
    first = det.process(_batch(sid[:512], ts[:512], x[:512])).to_pylist()
    assert len(first) == 1
    assert _us(first[0]["ts"]) == T0_US + 500 * S
    assert first[0]["end_ts"] is None  # still open: the cooldown has not passed
    assert json.loads(first[0]["data"])["samples"] == 2
    rest = det.process(_batch(sid[512:], ts[512:], x[512:])).to_pylist()
    assert [r["event_id"] for r in rest] == [first[0]["event_id"], f"anomaly:a/m/x:{ts[600]}"]
    assert _us(rest[0]["end_ts"]) == T0_US + 520 * S
    assert json.loads(rest[0]["data"])["samples"] == 3
    assert _us(rest[1]["end_ts"]) == T0_US + 600 * S
    assert det.stats.events_started == det.stats.events_ended == 2
    assert det.flush().num_rows == 0


def test_a_stuck_sensor_is_one_stuck_event() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(20.0, 0.5, 3000)
    x[1000:1400] = x[1000]
    events = _one(x, AnomalyParams(window=200, stuck_samples=20), cuts=(1100, 1399, 1401))
    assert len(events) == 1
    (e,) = events
    assert e["code"] == "stuck"
    assert _us(e["ts"]) == T0_US + 1019 * S  # the 20th equal value
    assert _us(e["end_ts"]) == T0_US + 1399 * S  # and no deviation once it moves again
    assert json.loads(e["data"])["reasons"] == ["stuck"]


def test_bad_rows_and_other_signals_are_skipped() -> None:
    det = AnomalyDetector({3: ("a/m/x", AnomalyParams(window=8, min_samples=3, refresh=1))})
    table = pa.table(
        {
            "signal_id": pa.array([3, 3, 3, 3, 4, 3, 3], pa.int32()),
            "ts": pa.array([T0_US + k * S for k in range(7)], pa.int64()),
            "quality": pa.array([192, 192, 0, 192, 192, 192, 192], pa.uint8()),
            "v_float": pa.array([1.0, 1.1, 500.0, None, 900.0, 1.05, 0.95]),
        }
    )
    assert det.process(ReadingBatch(table)).num_rows == 0
    assert det.stats.samples_in == 4  # bad quality, null value and signal 4 skipped


def test_int_signals_are_scored() -> None:
    rng = np.random.default_rng(9)
    x = rng.integers(90, 111, 2000)
    x[1500] = 400
    det = AnomalyDetector({5: ("a/m/count_rate", AnomalyParams(window=100))})
    events = det.process(_batch(np.full(2000, 5), _ts(2000), x)).to_pylist()
    assert [(_us(e["ts"]), json.loads(e["data"])["peak_value"]) for e in events] == [
        (T0_US + 1500 * S, 400.0)
    ]


# --------------------------------------------------------------------------- the config

FACTORY = """\
types:
  - id: machine
    signals:
      - {name: state, data_type: int, kind: state}
      - {name: temperature, data_type: float, unit: CEL}
      - {name: status, data_type: string}
  - id: press
    extends: machine
    signals:
      - {name: pressure, data_type: float, unit: BAR}
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
                   bindings: {state: s1, temperature: t1, status: x1}}
                - {id: p1, type: press, connection: opc,
                   bindings: {state: s2, temperature: t2, status: x2, pressure: p2}}
"""


def test_selection_by_type_and_path_last_entry_wins() -> None:
    text = (
        FACTORY
        + """\
anomaly:
  - type: machine
  - type: press
    signals: [pressure]
    window: 50
  - paths: [acme/plant/area/line/m1/temperature]
    threshold: 9
"""
    )
    sel = select_anomaly_signals(parse_factory(text))
    assert sorted(sel) == [
        "acme/plant/area/line/m1/temperature",
        "acme/plant/area/line/p1/pressure",
        "acme/plant/area/line/p1/temperature",
    ]  # measurements of machines, presses included; not the int state nor the string
    assert sel["acme/plant/area/line/p1/pressure"].window == 50
    assert sel["acme/plant/area/line/p1/temperature"] == AnomalyParams()
    assert sel["acme/plant/area/line/m1/temperature"].threshold == 9
    assert sel["acme/plant/area/line/m1/temperature"].window == 300


def test_config_errors_name_file_line_and_key() -> None:
    text = (
        FACTORY
        + """\
anomaly:
  - {type: machine, signals: [temperature, status, nope]}
  - {paths: [acme/plant/area/line/m1/nope, acme/plant/area/line/m1/temperature]}
  - {type: robot}
  - {type: machine, window: 4}
  - {type: machine, min_samples: 500}
  - {window: 100}
  - {type: machine, colour: red}
  - {paths: [acme/plant/area/line/m1/status]}
"""
    )
    with pytest.raises(FactoryFileError) as info:
        parse_factory(text, "f.yaml")
    base = FACTORY.count("\n") + 1  # the line of "anomaly:"
    found = {(i.line, i.path): i.message for i in info.value.issues}
    assert all(i.file == "f.yaml" for i in info.value.issues)
    expected = {
        (base + 1, "anomaly[0].signals[1]"): "is string: anomaly detection needs float or int",
        (base + 1, "anomaly[0].signals[2]"): "type 'machine' has no signal 'nope'",
        (base + 2, "anomaly[1].paths[0]"): "unknown signal 'acme/plant/area/line/m1/nope'",
        (base + 3, "anomaly[2].type"): "unknown type 'robot'",
        (base + 4, "anomaly[3].window"): "greater than or equal to 8",
        (base + 5, "anomaly[4]"): "min_samples (500) is larger than window (300)",
        (base + 6, "anomaly[5]"): "select signals with 'paths' or with 'type'",
        (base + 7, "anomaly[6].colour"): "unknown key 'colour'",
        (base + 8, "anomaly[7].paths[0]"): "is string: anomaly detection needs float or int",
    }
    assert set(found) == set(expected), "\n".join(map(str, info.value.issues))
    for key, fragment in expected.items():
        assert fragment in found[key], (key, found[key])
    line, column = next(
        (i.line, i.column) for i in info.value.issues if i.path == "anomaly[2].type"
    )
    assert (line, column) == (base + 3, text.splitlines()[base + 2].index("type") + 1)
    with pytest.raises(ValidationError, match="either 'paths' or 'type'"):
        AnomalyRule(type="machine", paths=["a/b"])


# --------------------------------------------------------------------------- the observer


async def test_engine_observes_a_pipeline_and_stores_events(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    values = rng.normal(60.0, 0.5, 900)
    values[700] = 80.0
    text = FACTORY + "anomaly:\n  - {type: machine, window: 100, threshold: 6}\n"
    factory = parse_factory(text)
    seen: list[pa.Table] = []

    async def sink(events: pa.Table) -> None:
        seen.append(events)

    async with open_historian(f"duckdb:{tmp_path / 'h.duckdb'}") as h:
        ids = await h.register_signals(
            [SignalInfo(s.path, s.data_type, s.unit, s.kind) for s in factory.signals()]  # type: ignore[arg-type]
        )
        temp = "acme/plant/area/line/p1/temperature"
        engine = AnomalyEngine.from_factory(factory, h, event_sink=sink)
        mapper = Mapper({("opc", "t2"): Route(ids[temp], "float")})
        pipe = Pipeline(h, mapper, flush_interval=0.02, observers=[engine])
        writer = asyncio.create_task(pipe.run())
        for lo in range(0, 900, 90):
            await pipe.sink(
                RawBatch.from_columns(
                    "opc", ["t2"] * 90, _ts(900)[lo : lo + 90], values[lo : lo + 90]
                )
            )
        await pipe.close()
        await writer
        await engine.flush()
        events = await h.read_events(T0, T0 + timedelta(days=1), kinds=[ANOMALY_KIND])
        assert engine.detector is not None
        assert engine.detector.signal_count == 3  # both temperatures and the pressure
    assert events.schema.equals(EVENT_SCHEMA)
    rows = events.to_pylist()
    assert len(rows) == 1
    assert rows[0]["signal"] == temp
    assert rows[0]["asset"] == "acme/plant/area/line/p1"
    assert _us(rows[0]["ts"]) == _us(rows[0]["end_ts"]) == T0_US + 700 * S
    assert json.loads(rows[0]["data"])["score"] > 30
    assert engine.events_written == sum(t.num_rows for t in seen) >= 1


# --------------------------------------------------------------------------- the benchmark


def test_scoring_counts_overlaps_with_tolerance() -> None:
    faults = [(1, "spike", 100 * S, 101 * S), (1, "drift", 1000 * S, 2000 * S)]
    faults.append((2, "stuck", 500 * S, 900 * S))
    events = [
        (1, 95 * S, 95 * S),  # before the spike, within the tolerance: detects it
        (1, 2005 * S, 2100 * S),  # the drift's end: a true positive, but detects nothing
        (2, 5000 * S, 5001 * S),  # a false alarm
        (3, 0, S),  # on a signal without faults: a false alarm
    ]
    r = score_events(events, faults, 10 * S, ["spike", "drift", "stuck"])
    assert r["true_positive_events"] == 2
    assert r["precision"] == 0.5
    assert r["detected_faults"] == 1
    assert r["recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert r["per_kind"]["spike"]["recall"] == 1.0
    assert r["per_kind"]["spike"]["median_delay_s"] == -5.0
    assert r["per_kind"]["drift"]["recall"] == 0.0
    assert r["per_kind"]["drift"]["events"] == 1


def test_bench_anomaly_writes_precision_and_recall(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("other")(lambda: None)  # a group, so that "anomaly" is a subcommand
    _bench_anomaly.register(app)
    out = tmp_path / "anomaly.json"
    args = ["anomaly", "--stations", "2", "--hours", "3", "--faults-per-hour", "1.5"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["bench"] == "anomaly"
    assert doc["signals"] == 8
    assert doc["samples"] == 8 * 3 * 3600
    assert doc["faults"] >= 10
    for key in ("precision", "recall", "f1", "detector_samples_per_s", "ratio"):
        assert doc[key] is not None, key
        assert doc[key] > 0, key
    assert doc["recall"] > 0.5
    assert doc["precision"] > 0.5
    easy = [doc["per_kind"][k] for k in ("spike", "stuck") if doc["per_kind"][k]["faults"]]
    assert easy
    assert all(k["recall"] > 0.5 for k in easy)
    assert set(doc["baseline"]) >= {"precision", "recall", "recall_per_kind"}


def test_bench_config_is_checked() -> None:
    with pytest.raises(ValueError, match="fault kinds"):
        AnomalyBenchConfig(kinds=("meteor",))

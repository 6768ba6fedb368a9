"""The pure simulation engine: every station of the factory stepped together with NumPy.

No I/O and no wall clock: :class:`FactorySimulation` advances in fixed ticks of simulated
time, draws every random number from one seeded generator per concern, and therefore
produces the same states, counters and measurements for the same seed and input, however
it is driven (front-ends: OPC UA here; Modbus, Sparkplug, VDA 5050 and benchmarks later).

Per tick, for all stations at once (arrays, no per-station Python):

1. the shift calendar of each station's site gives work / break / off;
2. repairs, setups and short idle waits count down;
3. an available station pushes its finished part into the buffer after it (blocked when the
   buffer is full), takes a part from the buffer before it (starved when it is empty),
   and advances its cycle; a finished cycle is good or rejected;
4. operating time counts towards the next random failure (exponential MTBF, MTTR);
5. energy integrates the power of the state; measurements follow first-order lags.

Buffer levels are read at the start of a tick and updated at its end, so stations of a
line never depend on their order inside a tick; each buffer sees at most one push and one
pull per tick, which keeps it within ``[0, capacity]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shopfloor.sim._calendar import BREAK, OFF, WORK, ShiftCalendar
from shopfloor.sim._faults import FAULT_KINDS, FaultInjector, FaultKind, SignalFault
from shopfloor.sim._spec import STATES, SignalSpec, StationSpec

if TYPE_CHECKING:
    from shopfloor.sim._build import FactoryLike

__all__ = ["FactorySimulation"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

RUNNING, IDLE, STARVED, BLOCKED, PLANNED_STOP, UNPLANNED_STOP, SETUP, OFFLINE = range(8)

# share of the rated power drawn in each state (order of STATES)
_POWER_SHARE = np.array([1.0, 0.35, 0.35, 0.35, 0.15, 0.2, 0.4, 0.02])

# profiles: how a signal's value is derived
(
    _P_GOOD,
    _P_REJECT,
    _P_TOTAL,
    _P_ENERGY,
    _P_RUNTIME,
    _P_STATE,
    _P_LAG,
    _P_POWER,
    _P_CYCLE,
    _P_RUNNING,
    _P_FAULT,
    _P_SETPOINT,
    _P_EVENT,
    _P_CONST,
) = range(14)

_ENERGY_SCALE = {"KWH": 1.0, "WHR": 1000.0, "MWH": 0.001, "JOU": 3.6e6, "KJO": 3.6e3, "MJ": 3.6}
_TIME_SCALE = {"HUR": 1 / 3600, "MIN": 1 / 60, "SEC": 1.0, "C26": 1000.0}
_POWER_SCALE = {"KWT": 1.0, "WTT": 1000.0, "MAW": 0.001}
_TEMP_UNITS = {"CEL", "FAH", "KEL"}
# nominal running values by name keyword when a signal has no limits
_NOMINAL = (
    ("pressure", 180.0),
    ("force", 4.0e6),
    ("motor_current", 12.0),
    ("current", 250.0),
    ("wire_feed", 8.0),
    ("stroke", 15.0),
    ("voltage", 28.0),
    ("spindle", 3000.0),
    ("rpm", 1500.0),
    ("speed", 0.5),
    ("flow", 12.0),
    ("vibration", 2.5),
)
_SETPOINT_AFFIXES = ("_setpoint", "_sp", "_set", "_target", "setpoint_", "target_")


def _seconds(minutes: float) -> float:
    return math.inf if minutes is None or minutes <= 0 or math.isinf(minutes) else minutes * 60.0


@dataclass
class _Lag:
    """Vectorised first-order lags (measurements) of one kind of target."""

    sig: I64
    st: I64
    run: F64
    idle: F64
    stop: F64
    tau: F64
    sd: F64
    floor: F64
    x: F64
    out: F64
    alpha: F64


class FactorySimulation:
    """A seeded, reproducible factory: stations coupled by buffers, stepped in ticks.

    ``stations`` are coupled per ``line`` in the given order; ``signals`` name the values
    derived from them (counters, states, measurements, setpoints). ``start`` is the
    simulated time of tick 0 (timezone-aware), ``tick_s`` the simulated length of a tick.
    """

    def __init__(
        self,
        stations: Sequence[StationSpec],
        signals: Sequence[SignalSpec] = (),
        *,
        seed: int = 42,
        start: datetime | None = None,
        tick_s: float = 1.0,
    ) -> None:
        if start is None:
            start = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        paths = [s.path for s in stations]
        if len(set(paths)) != len(paths):
            raise ValueError("station paths must be unique")
        self.stations: tuple[StationSpec, ...] = tuple(stations)
        self.signals: tuple[SignalSpec, ...] = tuple(signals)
        self.seed = seed
        self.tick_s = float(tick_s)
        self.start = start.astimezone(UTC)
        self._start_ts = self.start.timestamp()
        self.ticks = 0
        self._index = {p: i for i, p in enumerate(paths)}
        self._sig_index = {s.path: i for i, s in enumerate(self.signals)}
        seq = np.random.SeedSequence(seed)
        flow_seed, meas_seed = seq.spawn(2)
        self._rng = np.random.Generator(np.random.PCG64(flow_seed))
        self._noise = np.random.Generator(np.random.PCG64(meas_seed))
        self._build_stations()
        self._build_signals()
        # sensor faults draw from a generator of their own: other values stay the same
        self._faults = FaultInjector(np.random.Generator(np.random.PCG64(seq.spawn(1)[0])))

    @classmethod
    def from_factory(
        cls,
        factory: FactoryLike,
        *,
        seed: int = 42,
        start: datetime | None = None,
        tick_s: float = 1.0,
    ) -> FactorySimulation:
        """The simulation of a :class:`shopfloor.model.Factory`'s machines (no servers)."""
        from shopfloor.sim._build import build_layout

        layout = build_layout(factory)
        return cls(layout.stations, layout.signals, seed=seed, start=start, tick_s=tick_s)

    # ------------------------------------------------------------------ construction
    def _build_stations(self) -> None:
        st = self.stations
        n = len(st)
        self._n = n
        f = np.float64
        self._ideal = np.array([s.ideal_cycle_time_s for s in st], dtype=f)
        self._slow = np.array([max(s.slowdown, 0.0) for s in st], dtype=f)
        self._reject_p = np.array([min(max(s.reject_rate, 0.0), 1.0) for s in st], dtype=f)
        self._mtbf = np.array([_seconds(s.mtbf_min) for s in st], dtype=f)
        self._mttr = np.array([max(s.mttr_min, 0.0) * 60.0 for s in st], dtype=f)
        self._setup_s = np.array([max(s.setup_min, 0.0) * 60.0 for s in st], dtype=f)
        self._idle_gap = np.array(
            [3600.0 / s.idle_rate_per_h if s.idle_rate_per_h > 0 else math.inf for s in st],
            dtype=f,
        )
        self._idle_len = np.array([max(s.idle_min, 0.0) * 60.0 for s in st], dtype=f)
        self._power = np.outer(np.array([s.power_kw for s in st], dtype=f), _POWER_SHARE)

        # line coupling: buffer i sits after station i (unused for the last of a line);
        # station k pulls from buffer up[k]
        first = np.ones(n, dtype=bool)
        last = np.ones(n, dtype=bool)
        up = np.zeros(n, dtype=np.int64)
        previous: dict[str, int] = {}
        for i, s in enumerate(st):
            if s.line:
                j = previous.get(s.line)
                if j is not None:
                    first[i], last[j], up[i] = False, False, j
                previous[s.line] = i
        self._first, self._last, self._up = first, last, up
        self._cap = np.array([max(int(s.buffer_capacity), 1) for s in st], dtype=np.int64)
        self._buf = np.where(last, 0, self._cap // 2).astype(np.int64)

        # calendars: evaluated once per distinct calendar per tick
        cals: list[ShiftCalendar | None] = []
        cal_idx = np.zeros(n, dtype=np.int64)
        for i, s in enumerate(st):
            if s.calendar not in cals:
                cals.append(s.calendar)
            cal_idx[i] = cals.index(s.calendar)
        self._cals = cals
        self._cal_idx = cal_idx

        # dynamic state
        self._cal_prev = self._calendar_status()
        self._state = np.full(n, IDLE, dtype=np.int64)
        self._state[:] = np.where(
            self._cal_prev == OFF, OFFLINE, np.where(self._cal_prev == BREAK, PLANNED_STOP, IDLE)
        )
        self._has_part = np.zeros(n, dtype=bool)
        self._has_done = np.zeros(n, dtype=bool)
        self._progress = np.zeros(n, dtype=f)
        self._duration = self._ideal.copy()
        self._last_cycle = self._ideal.copy()
        self._fault_left = np.zeros(n, dtype=f)
        self._setup_left = np.zeros(n, dtype=f)
        self._idle_left = np.zeros(n, dtype=f)
        self._ttf = self._exp(self._mtbf)
        self._tti = self._exp(self._idle_gap)
        self._good = np.zeros(n, dtype=np.int64)
        self._reject = np.zeros(n, dtype=np.int64)
        self._cycles = np.zeros(n, dtype=np.int64)
        self._failures = np.zeros(n, dtype=np.int64)
        self._run_s = np.zeros(n, dtype=f)
        self._energy = np.zeros(n, dtype=f)

    def _exp(self, scale: F64) -> F64:
        """Exponential draws (infinite where the scale is infinite)."""
        finite = np.isfinite(scale)
        out = np.full(scale.shape, math.inf)
        if finite.any():
            out[finite] = self._rng.exponential(scale[finite])
        return out

    def _build_signals(self) -> None:
        sigs = self.signals
        m = len(sigs)
        self._num = np.zeros(m, dtype=np.float64)
        self._profile = np.full(m, _P_CONST, dtype=np.int64)
        self._sig_st = np.zeros(m, dtype=np.int64)
        self._scale = np.ones(m, dtype=np.float64)
        self._strings: dict[int, tuple[str, ...]] = {}
        self._raw: dict[int, tuple[Any, ...]] = {}
        by_station: dict[int, dict[str, int]] = {}
        for k, s in enumerate(sigs):
            if s.station not in self._index:
                raise ValueError(f"signal {s.path} names an unknown station {s.station}")
            i = self._index[s.station]
            self._sig_st[k] = i
            by_station.setdefault(i, {})[s.name] = k
            self._profile[k], self._scale[k] = self._classify(s)
            if self._profile[k] == _P_STATE:
                self._raw[k] = self._raw_codes(self.stations[i], s.data_type)
            elif self._profile[k] == _P_EVENT:
                self._strings[k] = tuple(
                    "" if st != "unplanned_stop" else f"fault at {self.stations[i].type}"
                    for st in STATES
                )
            elif self._profile[k] == _P_CONST:
                text = "{}" if s.data_type == "json" else f"{self.stations[i].type.upper()}-P01"
                self._strings[k] = (str(s.initial) if s.initial is not None else text,)
            elif self._profile[k] == _P_SETPOINT:
                self._num[k] = float(self._setpoint_initial(s))
        self._groups = {
            p: (np.flatnonzero(self._profile == p), self._sig_st[self._profile == p])
            for p in range(14)
        }
        # setpoints drive the running target of their measurement
        self._links: dict[int, list[int]] = {}
        lag_sigs = [k for k in range(m) if self._profile[k] == _P_LAG]
        run = np.zeros(len(lag_sigs))
        idle = np.zeros(len(lag_sigs))
        stop = np.zeros(len(lag_sigs))
        tau = np.zeros(len(lag_sigs))
        sd = np.zeros(len(lag_sigs))
        floor = np.full(len(lag_sigs), -math.inf)
        for j, k in enumerate(lag_sigs):
            run[j], idle[j], stop[j], tau[j], sd[j], floor[j] = self._lag_params(sigs[k])
        for k, s in enumerate(sigs):
            if self._profile[k] != _P_SETPOINT:
                continue
            names = by_station[self._sig_st[k]]
            base = s.name
            for affix in _SETPOINT_AFFIXES:
                base = base.removesuffix(affix) if affix.startswith("_") else base
                base = base.removeprefix(affix) if affix.endswith("_") else base
            for name, kk in names.items():
                linked = name == base or name.endswith("_" + base) or name.startswith(base + "_")
                if kk != k and self._profile[kk] == _P_LAG and base and linked:
                    j = lag_sigs.index(kk)
                    self._links.setdefault(k, []).append(j)
                    run[j] = self._num[k]
        lag_idx = np.array(lag_sigs, dtype=np.int64)
        x = stop.copy()
        state0 = self._state[self._sig_st[lag_idx]] if lag_sigs else np.zeros(0, np.int64)
        x = np.where(state0 == RUNNING, run, np.where(state0 <= SETUP, idle, stop))
        self._lag = _Lag(
            sig=lag_idx,
            st=self._sig_st[lag_idx],
            run=run,
            idle=idle,
            stop=stop,
            tau=tau,
            sd=sd,
            floor=floor,
            x=x.astype(np.float64),
            out=x.astype(np.float64),
            alpha=1.0 - np.exp(-self.tick_s / np.maximum(tau, 1e-9)),
        )
        self._is_int = np.array([s.data_type == "int" for s in sigs], dtype=bool)

    @staticmethod
    def _classify(s: SignalSpec) -> tuple[int, float]:
        name = s.name.lower()
        unit = (s.unit or "").upper()
        if s.kind == "state":
            return _P_STATE, 1.0
        if s.kind == "setpoint":
            return _P_SETPOINT, 1.0
        if s.data_type in ("string", "json"):
            message = any(w in name for w in ("fault", "alarm", "error", "message"))
            return (_P_EVENT if message else _P_CONST), 1.0
        if s.data_type == "bool":
            fault = any(w in name for w in ("fault", "alarm", "error"))
            return (_P_FAULT if fault else _P_RUNNING), 1.0
        if s.kind == "counter":
            if "reject" in name or "scrap" in name or "bad" in name:
                return _P_REJECT, 1.0
            if "good" in name:
                return _P_GOOD, 1.0
            if unit in _ENERGY_SCALE or "energy" in name:
                return _P_ENERGY, _ENERGY_SCALE.get(unit, 1.0)
            if unit in _TIME_SCALE or "hour" in name or "runtime" in name:
                return _P_RUNTIME, _TIME_SCALE.get(unit, 1 / 3600)
            return _P_TOTAL, 1.0
        if s.kind == "event":
            return _P_FAULT, 1.0
        if "power" in name or unit in _POWER_SCALE:
            return _P_POWER, _POWER_SCALE.get(unit, 1.0)
        if "cycle_time" in name or (unit in _TIME_SCALE and "time" in name):
            return _P_CYCLE, _TIME_SCALE.get(unit, 1.0)
        return _P_LAG, 1.0

    @staticmethod
    def _nominal(s: SignalSpec) -> float:
        if s.low is not None and s.high is not None:
            return s.low + 0.6 * (s.high - s.low)
        if s.high is not None:
            return 0.6 * s.high
        name = s.name.lower()
        return next((v for key, v in _NOMINAL if key in name), 1.0)

    def _setpoint_initial(self, s: SignalSpec) -> float:
        if s.initial is not None:
            return float(s.initial)
        if s.data_type == "bool":
            return 1.0
        value = self._nominal(s)
        return float(round(value)) if s.data_type == "int" else value

    @classmethod
    def _lag_params(cls, s: SignalSpec) -> tuple[float, float, float, float, float, float]:
        """(run target, idle target, stop target, tau s, noise sd, floor) of a measurement."""
        name = s.name.lower()
        if "temp" in name or (s.unit or "").upper() in _TEMP_UNITS:
            if s.low is not None and s.high is not None:
                span = s.high - s.low
                ambient = 22.0 if s.low <= 22.0 <= s.high else s.low + 0.1 * span
                run, idle = s.low + 0.6 * span, s.low + 0.35 * span
                sd = 0.002 * span
            else:
                ambient, run, idle, sd = 22.0, 55.0, 35.0, 0.2
            return run, max(idle, ambient), ambient, 600.0, sd, -math.inf
        run = cls._nominal(s)
        rest = 0.0 if s.low is None or s.low <= 0.0 else s.low
        floor = 0.0 if rest == 0.0 else -math.inf
        return run, rest, rest, 2.0, abs(run) * 0.01, floor

    @staticmethod
    def _raw_codes(station: StationSpec, data_type: str) -> tuple[Any, ...]:
        codes = station.state_codes
        fallback: dict[str, tuple[str, ...]] = {
            "starved": ("idle",),
            "blocked": ("idle",),
            "setup": ("idle",),
            "planned_stop": ("offline", "idle"),
            "offline": ("planned_stop", "idle"),
            "unplanned_stop": ("offline", "idle"),
            "idle": ("starved", "offline"),
            "running": ("idle",),
        }
        out: list[Any] = []
        for idx, state in enumerate(STATES):
            raw: Any = codes.get(state)
            for other in fallback[state]:
                if raw is None:
                    raw = codes.get(other)
            if raw is None:
                raw = next(iter(codes.values()), idx)
            if data_type == "int":
                text = str(raw)
                raw = int(text) if text.lstrip("-").isdigit() else idx
            elif data_type in ("string", "json"):
                raw = str(raw)
            elif data_type == "float":
                raw = float(raw)
            out.append(raw)
        return tuple(out)

    # ------------------------------------------------------------------ time
    @property
    def elapsed_s(self) -> float:
        """Simulated seconds since ``start``."""
        return self.ticks * self.tick_s

    @property
    def now(self) -> datetime:
        """The current simulated time (UTC)."""
        return self.start + timedelta(seconds=self.elapsed_s)

    def _calendar_status(self) -> I64:
        when = datetime.fromtimestamp(self._start_ts + self.elapsed_s, UTC)
        per_cal = np.array([WORK if c is None else c.status(when) for c in self._cals])
        return per_cal[self._cal_idx].astype(np.int64)

    # ------------------------------------------------------------------ stepping
    def advance(self, seconds: float) -> int:
        """Step as many ticks as fit in ``seconds`` of simulated time; return how many."""
        n = max(math.floor(seconds / self.tick_s + 1e-9), 0)
        self.step(n)
        return n

    def step(self, n: int = 1) -> None:
        """Advance ``n`` ticks."""
        for _ in range(n):
            self._tick()

    def _tick(self) -> None:
        dt = self.tick_s
        self.ticks += 1
        cal = self._calendar_status()
        shift_start = (cal == WORK) & (self._cal_prev == OFF)
        self._cal_prev = cal
        working = cal == WORK
        if shift_start.any():
            self._setup_left[shift_start] = self._setup_s[shift_start]

        fault_left = self._fault_left
        in_fault = fault_left > 0.0
        np.subtract(fault_left, dt, out=fault_left, where=in_fault)
        np.maximum(fault_left, 0.0, out=fault_left)

        ok = working & ~in_fault
        in_setup = ok & (self._setup_left > 0.0)
        self._setup_left[in_setup] -= dt
        in_idle = ok & ~in_setup & (self._idle_left > 0.0)
        self._idle_left[in_idle] -= dt
        avail = ok & ~in_setup & ~in_idle

        first, last, up, buf, cap = self._first, self._last, self._up, self._buf, self._cap
        # push the finished part downstream
        room = last | (buf < cap)
        push = avail & self._has_done & room
        self._has_done &= ~push
        blocked = avail & self._has_done
        # take the next part from upstream
        need = avail & ~self._has_done & ~self._has_part
        pull = need & (first | (buf[up] > 0))
        starved = need & ~pull
        if pull.any():
            k = int(pull.sum())
            self._has_part[pull] = True
            self._progress[pull] = 0.0
            extra = self._rng.exponential(1.0, k) * self._slow[pull]
            self._duration[pull] = self._ideal[pull] * (1.0 + extra)
        # process
        proc = avail & self._has_part
        self._progress[proc] += dt
        done = proc & (self._progress >= self._duration)
        if done.any():
            k = int(done.sum())
            rejected = self._rng.random(k) < self._reject_p[done]
            self._has_part[done] = False
            self._cycles[done] += 1
            self._last_cycle[done] = self._progress[done]
            idx = np.flatnonzero(done)
            self._reject[idx[rejected]] += 1
            self._good[idx[~rejected]] += 1
            self._has_done[idx[~rejected]] = True
        # buffers (levels were read at the start of the tick)
        buf += push & ~last
        np.subtract.at(buf, up[pull & ~first], 1)
        # operating time towards failures
        self._run_s[proc] += dt
        self._ttf[proc] -= dt
        fail = proc & (self._ttf <= 0.0)
        if fail.any():
            self._fault_left[fail] = np.maximum(self._exp(self._mttr[fail]), dt)
            self._ttf[fail] = self._exp(self._mtbf[fail])
            self._failures[fail] += 1
        # short idle waits
        self._tti[avail] -= dt
        wait = avail & (self._tti <= 0.0)
        if wait.any():
            self._idle_left[wait] = self._exp(self._idle_len[wait])
            self._tti[wait] = self._exp(self._idle_gap[wait])

        state = self._state
        state[:] = IDLE
        state[starved] = STARVED
        state[blocked] = BLOCKED
        state[proc] = RUNNING
        state[in_idle] = IDLE
        state[in_setup] = SETUP
        state[working & in_fault] = UNPLANNED_STOP
        state[cal == BREAK] = PLANNED_STOP
        state[cal == OFF] = OFFLINE

        self._energy += self._power[np.arange(self._n), state] * (dt / 3600.0)
        self._step_lags(state)

    def _step_lags(self, state: I64) -> None:
        lag = self._lag
        if lag.sig.size == 0:
            return
        s = state[lag.st]
        target = np.where(s == RUNNING, lag.run, np.where(s <= SETUP, lag.idle, lag.stop))
        target = np.where((s == PLANNED_STOP) | (s == UNPLANNED_STOP), lag.stop, target)
        lag.x += (target - lag.x) * lag.alpha
        lag.out = np.maximum(lag.x + lag.sd * self._noise.standard_normal(lag.x.size), lag.floor)
        if self._faults.pending or self._faults.active:
            self._faults.apply(self.elapsed_s, lag.out)

    # ------------------------------------------------------------------ commands
    def _station(self, path: str) -> int:
        try:
            return self._index[path]
        except KeyError:
            raise KeyError(f"no simulated station {path!r}") from None

    def inject_fault(self, path: str, duration_s: float) -> None:
        """Stop ``path`` with an unplanned stop lasting ``duration_s`` simulated seconds."""
        if duration_s < 0:
            raise ValueError("duration_s must not be negative")
        i = self._station(path)
        self._fault_left[i] = max(self._fault_left[i], float(duration_s))

    def _lag_of(self, path: str) -> int:
        k = self._sig_index.get(path)
        if k is None:
            raise KeyError(f"no simulated signal {path!r}")
        if self._profile[k] != _P_LAG:
            raise ValueError(f"{path} is not a simulated measurement; faults need one")
        return int(np.flatnonzero(self._lag.sig == k)[0])

    def measurement_signals(self) -> list[str]:
        """Paths of the measurement signals (first-order lags) sensor faults can corrupt."""
        return [self.signals[int(k)].path for k in self._lag.sig]

    def noise_sd(self, path: str) -> float:
        """Standard deviation of the noise on measurement ``path`` (in its unit)."""
        return float(self._lag.sd[self._lag_of(path)])

    def inject_signal_fault(
        self,
        path: str,
        kind: FaultKind,
        start_s: float,
        duration_s: float,
        magnitude: float = 0.0,
    ) -> SignalFault:
        """Corrupt measurement ``path`` from ``start_s`` simulated seconds after ``start``
        for ``duration_s`` seconds (see :mod:`shopfloor.sim._faults` for the kinds).

        Returns the fault as recorded in :meth:`signal_faults`, the ground truth: the
        samples stamped in ``[fault.start, fault.end)`` are the corrupted ones.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
        if duration_s <= 0 or not math.isfinite(duration_s):
            raise ValueError("duration_s must be positive and finite")
        if start_s < 0 or not math.isfinite(start_s):
            raise ValueError("start_s must not be negative")
        j = self._lag_of(path)
        fault = SignalFault(
            signal=path,
            kind=kind,
            start=self.start + timedelta(seconds=start_s),
            end=self.start + timedelta(seconds=start_s + duration_s),
            magnitude=float(magnitude),
        )
        self._faults.add(j, fault, float(start_s), float(start_s + duration_s))
        return fault

    def signal_faults(self) -> list[SignalFault]:
        """Every sensor fault injected so far, in the order of injection (the ground truth)."""
        return list(self._faults.log)

    def set_setpoint(self, path: str, value: float) -> None:
        """Change a setpoint signal; a measurement it drives follows while running."""
        k = self._sig_index[path]
        if self._profile[k] != _P_SETPOINT:
            raise ValueError(f"{path} is not a setpoint")
        self._num[k] = float(value)
        for j in self._links.get(k, []):
            self._lag.run[j] = float(value)

    # ------------------------------------------------------------------ reading
    def state_of(self, path: str) -> str:
        """Standard state of a station (or of the station a signal belongs to)."""
        if path in self._sig_index:
            return STATES[int(self._state[self._sig_st[self._sig_index[path]]])]
        return STATES[int(self._state[self._station(path)])]

    def states(self) -> dict[str, str]:
        """Standard state of every station."""
        return {s.path: STATES[int(c)] for s, c in zip(self.stations, self._state, strict=True)}

    def state_codes(self) -> I64:
        """The state of every station as an index into :data:`STATES` (a copy)."""
        return self._state.copy()

    def production(self, path: str) -> dict[str, int]:
        """Good, reject and total cycles and failures so far of one station."""
        i = self._station(path)
        return {
            "good": int(self._good[i]),
            "reject": int(self._reject[i]),
            "cycles": int(self._cycles[i]),
            "failures": int(self._failures[i]),
        }

    def running_seconds(self, path: str) -> float:
        """Simulated seconds ``path`` has spent running."""
        return float(self._run_s[self._station(path)])

    def buffer_level(self, path: str) -> int:
        """Parts in the buffer after station ``path``."""
        return int(self._buf[self._station(path)])

    def snapshot(self) -> F64:
        """Every signal's value as a number (see :meth:`decode`), in ``signals`` order."""
        num = self._num
        g = self._groups
        num[g[_P_GOOD][0]] = self._good[g[_P_GOOD][1]]
        num[g[_P_REJECT][0]] = self._reject[g[_P_REJECT][1]]
        num[g[_P_TOTAL][0]] = self._cycles[g[_P_TOTAL][1]]
        for p, arr in ((_P_ENERGY, self._energy), (_P_RUNTIME, self._run_s)):
            idx, st = g[p]
            num[idx] = arr[st] * self._scale[idx]
        idx, st = g[_P_POWER]
        num[idx] = self._power[st, self._state[st]] * self._scale[idx]
        idx, st = g[_P_CYCLE]
        num[idx] = self._last_cycle[st] * self._scale[idx]
        for p in (_P_STATE, _P_EVENT):
            idx, st = g[p]
            num[idx] = self._state[st]
        idx, st = g[_P_RUNNING]
        num[idx] = self._state[st] == RUNNING
        idx, st = g[_P_FAULT]
        num[idx] = self._state[st] == UNPLANNED_STOP
        num[self._lag.sig] = self._lag.out
        ints = self._is_int & (self._profile == _P_LAG)
        num[ints] = np.round(num[ints])
        return num.copy()

    def decode(self, k: int, x: float) -> Any:
        """The value of signal ``k`` (its data type) from its number in :meth:`snapshot`."""
        profile = self._profile[k]
        if profile == _P_STATE:
            return self._raw[k][int(x)]
        if profile == _P_EVENT:
            return self._strings[k][int(x)]
        if profile == _P_CONST:
            return self._strings[k][0]
        data_type = self.signals[k].data_type
        if data_type == "int":
            return round(x)
        if data_type == "bool":
            return bool(x)
        return float(x)

    def values(self, paths: Iterable[str] | None = None) -> dict[str, Any]:
        """Current value of every signal (or of ``paths``), keyed by signal path."""
        snap = self.snapshot()
        if paths is None:
            return {s.path: self.decode(k, snap[k]) for k, s in enumerate(self.signals)}
        return {p: self.decode(self._sig_index[p], snap[self._sig_index[p]]) for p in paths}

    def counters(self) -> dict[str, int]:
        """Every integer counter signal (good, reject, total …), keyed by signal path."""
        keys = [
            k for k, s in enumerate(self.signals) if s.kind == "counter" and s.data_type == "int"
        ]
        snap = self.snapshot()
        return {self.signals[k].path: int(snap[k]) for k in keys}

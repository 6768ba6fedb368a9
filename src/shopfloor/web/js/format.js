// Formatting of values, units, durations and times; the standard machine states.

/** The standard machine states (PackML / ISO 22400) in display order, with labels. */
export const STATES = [
  ["running", "Running"],
  ["idle", "Idle"],
  ["starved", "Starved"],
  ["blocked", "Blocked"],
  ["planned_stop", "Planned stop"],
  ["unplanned_stop", "Unplanned stop"],
  ["setup", "Setup"],
  ["offline", "Offline"],
];
const STATE_LABEL = Object.fromEntries(STATES);

export function stateLabel(state) {
  return STATE_LABEL[state] || (state ? String(state) : "No data");
}

/** A known standard state or "unknown" (a CSS class suffix). */
export function stateClass(state) {
  return STATE_LABEL[state] ? state : "unknown";
}

let UNITS = {};
export function setUnits(table) {
  UNITS = table || {};
}

/** The symbol of a UN/CEFACT unit code (the code itself when unknown). */
export function unitSymbol(code) {
  if (!code) return "";
  const u = UNITS[code];
  return u ? u[1] || u[0] : code;
}

export function unitName(code) {
  const u = code && UNITS[code];
  return u ? u[0] : code || "";
}

const NF = new Map();
function nf(digits) {
  if (!NF.has(digits)) NF.set(digits, new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits }));
  return NF.get(digits);
}

/** A number with precision that suits its magnitude. */
export function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  if (digits === undefined) {
    const a = Math.abs(v);
    digits = Number.isInteger(v) ? 0 : a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : a === 0 ? 0 : 3;
  }
  return nf(digits).format(v);
}

/** A signal value for display (without its unit). */
export function value(v, dataType) {
  if (v === null || v === undefined) return "–";
  if (dataType === "bool" || typeof v === "boolean") return v ? "ON" : "OFF";
  if (typeof v === "number") return dataType === "int" ? num(v, 0) : num(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** A ratio 0…1 as a percentage. */
export function pct(ratio, digits = 1) {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return "–";
  return `${num(ratio * 100, digits)} %`;
}

/** Seconds as "2 h 05 min", "12 min 30 s", "45 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const sign = seconds < 0 ? "−" : "";
  let t = Math.abs(seconds);
  if (t < 1) return `${sign}${num(t, 1)} s`;
  t = Math.round(t);
  const d = Math.floor(t / 86400);
  const hh = Math.floor((t % 86400) / 3600);
  const mm = Math.floor((t % 3600) / 60);
  const ss = t % 60;
  const p2 = (n) => String(n).padStart(2, "0");
  if (d) return `${sign}${d} d ${hh} h`;
  if (hh) return `${sign}${hh} h ${p2(mm)} min`;
  if (mm) return `${sign}${mm} min ${p2(ss)} s`;
  return `${sign}${ss} s`;
}

const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const DATETIME = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });

// ------------------------------------------------------------------ the factory's clock
// Data times are the factory's: the server tells its clock (dashboard.json: now_ms and
// speed, its seconds per real second; a simulated factory runs ahead of the wall clock),
// and the page runs it on from there. Date.now() is only for real-time things (timers).

let CLOCK = { nowMs: Date.now(), at: performance.now(), speed: 1 };

/** Set the factory's clock from the server's dashboard.json (received just now). */
export function setClock(config) {
  if (!config || !Number.isFinite(config.now_ms)) return;
  const speed = Number.isFinite(config.speed) && config.speed > 0 ? config.speed : 1;
  CLOCK = { nowMs: config.now_ms, at: performance.now(), speed };
}

/** The factory's current time (epoch ms). */
export function now() {
  return CLOCK.nowMs + (performance.now() - CLOCK.at) * CLOCK.speed;
}

/** How fast the factory's clock runs (1: real time). */
export function clockSpeed() {
  return CLOCK.speed;
}

/** A time of day, with the date when it is not the factory's today. */
export function time(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  const d = new Date(ms);
  const today = new Date(now());
  return d.toDateString() === today.toDateString() ? TIME.format(d) : DATETIME.format(d);
}

const HM = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
const DHM = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });

/** A time of day to the minute, with the date when it is not today. */
export function minute(ms) {
  if (!Number.isFinite(ms)) return "–";
  const d = new Date(ms);
  return d.toDateString() === new Date(now()).toDateString() ? HM.format(d) : DHM.format(d);
}

/** "3 s ago", "in 4 min" on the factory's clock (or at `at`). */
export function age(ms, at = now()) {
  if (!Number.isFinite(ms)) return "";
  const dt = (at - ms) / 1000;
  if (Math.abs(dt) < 1.5) return "now";
  return dt > 0 ? `${duration(dt)} ago` : `in ${duration(-dt)}`;
}

/** Epoch milliseconds of an RFC 3339 string. */
export function ms(text) {
  return text ? Date.parse(text) : NaN;
}

/** OPC DA quality byte → good / uncertain / bad. */
export function quality(q) {
  if (typeof q === "string") return q;
  if (q >= 192) return "good";
  if (q >= 64) return "uncertain";
  return "bad";
}

/** A signal or loss name for display: "hydraulic_pressure" → "Hydraulic pressure". */
const ACRONYMS = new Set(["oee", "agv", "plc", "id", "mtbf", "mttr", "nee"]);
export function title(name) {
  const words = String(name || "").replace(/[_-]+/g, " ").trim().split(/\s+/).filter(Boolean);
  return words.map((w, i) => (ACRONYMS.has(w.toLowerCase()) ? w.toUpperCase() : i ? w : w[0].toUpperCase() + w.slice(1))).join(" ");
}

/** A bucket width in seconds as an API duration ("500ms", "10s", "15m", "1h", "1d"). */
export function bucketParam(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

export function bucketLabel(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds % 86400 === 0) return `${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

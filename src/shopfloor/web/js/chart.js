// Trend charts on canvas: downsampled history (min–max band and average per bucket, the
// bucket chosen from the zoom window and the plot's width), raw samples when zoomed in far
// enough, state bands for state signals, live values appended while following. Charts of
// one TrendGroup share their time window: wheel zooms, drag selects a window, Shift+drag
// pans, double-click goes back to the preset.

import { h, icon } from "./dom.js";
import * as fmt from "./format.js";
import { pathParam } from "./api.js";

const NICE_BUCKETS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800].map((x) => x * 1000);
const MIN_SPAN_MS = 10_000;
const MAX_SPAN_MS = 400 * 86400_000;
const REFRESH_LIVE_MS = 10_000;

/** The bucket width (s) for `spanMs` over `px` pixels: about one bucket per 3 px; 0 = raw. */
export function chooseBucket(spanMs, px) {
  const want = spanMs / 1000 / Math.max(60, px / 3);
  if (want < 1) return 0;
  return NICE_BUCKETS.find((b) => b >= want) || Math.ceil(want / 86400) * 86400;
}

/** The shared time window of a set of charts, optionally following the newest data. */
export class TrendGroup extends EventTarget {
  constructor(spanMs = 3600_000) {
    super();
    this.span = spanMs;
    this.live = true;
    this.clockMs = fmt.now();
    this.end = this.clockMs;
    this.start = this.end - spanMs;
    this.history = [];
  }

  /** Follow the newest data with a window of `spanMs`. */
  follow(spanMs = this.span) {
    this.span = spanMs;
    this.live = true;
    this.tick(this.clockMs, true);
  }

  /** Move the live window to end at `clockMs` (the newest data or the factory's clock). */
  tick(clockMs, force = false) {
    this.clockMs = Math.max(clockMs, this.clockMs);
    if (!this.live && !force) return;
    this.end = this.clockMs + this.span * 0.02;
    this.start = this.end - this.span;
    this.dispatchEvent(new CustomEvent("range", { detail: { live: true } }));
  }

  setRange(start, end) {
    const span = Math.min(MAX_SPAN_MS, Math.max(MIN_SPAN_MS, end - start));
    const mid = (start + end) / 2;
    this.history.push([this.start, this.end, this.live]);
    if (this.history.length > 30) this.history.shift();
    this.live = false;
    this.start = mid - span / 2;
    this.end = mid + span / 2;
    this.span = span;
    this.dispatchEvent(new CustomEvent("range", { detail: { live: false } }));
  }

  back() {
    const prev = this.history.pop();
    if (!prev) return false;
    [this.start, this.end, this.live] = prev;
    this.span = this.end - this.start;
    this.dispatchEvent(new CustomEvent("range", { detail: { live: this.live } }));
    return true;
  }
}

function cssVar(el, name, fallback) {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

function niceStep(range, target) {
  const raw = range / Math.max(1, target);
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * p;
}

const HHMM = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
const HHMMSS = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const DAY = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

function timeTick(t, step) {
  const d = new Date(t);
  if (step >= 86400_000 || (d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0 && step >= 3600_000)) return DAY.format(d);
  return step < 60_000 ? HHMMSS.format(d) : HHMM.format(d);
}

/** One signal's chart inside a TrendGroup. */
export class TrendChart {
  /**
   * meta: {path, name, unit, data_type, kind, low, high}; ctx: {api, feed, catalog, asset}.
   * `onRemove`: called when the user closes the chart.
   */
  constructor(meta, group, ctx, onRemove) {
    this.meta = meta;
    this.group = group;
    this.ctx = ctx;
    this.isBand = meta.kind === "state" || meta.data_type === "string" || meta.data_type === "json";
    this.data = null; // {mode: "bucket"|"raw"|"band", t: [], avg/min/max/v: []}
    this.tail = []; // live values after the loaded history: [t, v]
    this.loading = false;
    this.error = null;
    this.hover = null;
    this.drag = null;
    this.loadedKey = "";
    this.lastFetch = 0;
    this.abort = null;
    this.frame = 0;

    this.valueEl = h("span", { class: "chart-value" });
    this.infoEl = h("span", { class: "chart-info" });
    this.canvas = h("canvas", { class: "chart-canvas", "aria-label": `Trend of ${meta.name}`, role: "img" });
    this.el = h("div", { class: ["chart", this.isBand ? "band" : ""], dataset: { signal: meta.path } },
      h("div", { class: "chart-head" },
        h("span", { class: "chart-title", text: fmt.title(meta.name) }),
        meta.unit ? h("span", { class: "chart-unit", text: fmt.unitSymbol(meta.unit) }) : null,
        this.valueEl,
        h("span", { class: "spacer" }),
        this.infoEl,
        onRemove ? h("button", { class: "icon-btn small", type: "button", title: "Remove from trends", onclick: onRemove, text: "×" }) : null),
      this.canvas);

    this.onRange = () => this.rangeChanged();
    group.addEventListener("range", this.onRange);
    this.onValues = (ev) => {
      if (ev.detail.includes(meta.path)) this.liveValue();
    };
    ctx.feed.addEventListener("values", this.onValues);
    this.resize = new ResizeObserver(() => this.redraw(true));
    this.resize.observe(this.canvas);
    this.onTheme = () => this.redraw();
    window.addEventListener("shopfloor-theme", this.onTheme);
    this.bindPointer();
    this.liveValue();
  }

  destroy() {
    this.group.removeEventListener("range", this.onRange);
    this.ctx.feed.removeEventListener("values", this.onValues);
    this.resize.disconnect();
    window.removeEventListener("shopfloor-theme", this.onTheme);
    if (this.abort) this.abort.abort();
    cancelAnimationFrame(this.frame);
  }

  width() {
    return Math.max(100, this.canvas.clientWidth - 64);
  }

  liveValue() {
    const v = this.ctx.feed.get(this.meta.path);
    if (!v) {
      this.valueEl.textContent = "";
      return;
    }
    let text = fmt.value(v.value, this.meta.data_type);
    if (this.meta.kind === "state" && this.ctx.standardState) {
      const st = this.ctx.standardState(v.value);
      if (st && st !== "unknown") text = fmt.stateLabel(st);
    }
    this.valueEl.textContent = `${text}${this.meta.unit ? ` ${fmt.unitSymbol(this.meta.unit)}` : ""}`;
    if (this.data && v.ts > this.lastT()) {
      this.tail.push([v.ts, v.value]);
      if (this.tail.length > 5000) this.tail.splice(0, 1000);
      this.group.tick(v.ts);
      this.redraw();
    }
  }

  lastT() {
    const t = this.data && this.data.t;
    const loaded = t && t.length ? t[t.length - 1] : -Infinity;
    return this.tail.length ? Math.max(loaded, this.tail[this.tail.length - 1][0]) : loaded;
  }

  rangeChanged() {
    const g = this.group;
    const bucket = this.isBand ? -1 : chooseBucket(g.end - g.start, this.width());
    const stale = Date.now() - this.lastFetch > REFRESH_LIVE_MS;
    const covered = this.data && g.start >= this.data.start && g.end <= this.data.end + (g.live ? g.span * 0.25 : 0);
    if (!this.data || bucket !== this.data.bucket || !covered || (g.live && stale)) this.load();
    this.redraw();
  }

  async load() {
    const g = this.group;
    const bucket = this.isBand ? -1 : chooseBucket(g.end - g.start, this.width());
    // Fetch a little more than the window (panning and the live window then need nothing).
    const pad = (g.end - g.start) * 0.25;
    const start = g.start - pad;
    const end = g.end + (g.live ? g.span * 0.5 : pad);
    const key = `${bucket}:${Math.round(start)}:${Math.round(end)}`;
    if (key === this.loadedKey && !g.live) return;
    if (this.abort) this.abort.abort();
    const abort = new AbortController();
    this.abort = abort;
    this.loading = true;
    this.lastFetch = Date.now();
    this.renderInfo();
    const params = { start: new Date(start).toISOString(), end: new Date(end).toISOString(), limit: 10000 };
    if (bucket > 0) params.bucket = fmt.bucketParam(bucket);
    try {
      const res = await this.ctx.api.get(`history/${pathParam(this.meta.path)}`, params, { signal: abort.signal });
      if (abort.signal.aborted) return;
      this.data = this.parse(res, bucket, start, end);
      this.tail = this.tail.filter(([t]) => t > this.lastT());
      this.error = null;
      this.loadedKey = key;
    } catch (err) {
      if (err.name === "AbortError") return;
      this.error = err.message;
    } finally {
      if (this.abort === abort) {
        this.loading = false;
        this.abort = null;
      }
    }
    this.renderInfo();
    this.redraw();
  }

  parse(res, bucket, start, end) {
    const truncated = Boolean(res.next_cursor);
    if (bucket > 0) {
      const t = res.bucket.map((x) => Date.parse(x) + bucket * 500);
      return { mode: "bucket", bucket, start, end, truncated, t, avg: res.avg, min: res.min, max: res.max, count: res.count };
    }
    const t = res.ts.map((x) => Date.parse(x));
    return { mode: this.isBand ? "band" : "raw", bucket, start, end, truncated, t, v: res.value };
  }

  renderInfo() {
    const d = this.data;
    let text = "";
    if (this.error) text = `⚠ ${this.error}`;
    else if (d) {
      const n = d.t.length;
      text = d.mode === "bucket" ? `${fmt.bucketLabel(d.bucket)} buckets · ${fmt.num(n)}` : `raw · ${fmt.num(n)} samples`;
      if (d.truncated) text += " (first page)";
    }
    if (this.loading) text = text ? `${text} · loading…` : "loading…";
    this.infoEl.textContent = text;
    this.infoEl.classList.toggle("error", Boolean(this.error));
    this.el.dataset.bucket = d ? String(d.bucket) : "";
    this.el.dataset.points = d ? String(d.t.length) : "0";
  }

  // ------------------------------------------------------------------ interaction

  bindPointer() {
    const c = this.canvas;
    const tAt = (x) => {
      const g = this.group;
      return g.start + ((x - 56) / this.width()) * (g.end - g.start);
    };
    c.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const g = this.group;
      const t = tAt(ev.offsetX);
      const f = ev.deltaY > 0 ? 1.25 : 0.8;
      g.setRange(t - (t - g.start) * f, t + (g.end - t) * f);
    }, { passive: false });
    c.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      c.setPointerCapture(ev.pointerId);
      this.drag = { x0: ev.offsetX, x1: ev.offsetX, pan: ev.shiftKey, start: this.group.start, end: this.group.end };
    });
    c.addEventListener("pointermove", (ev) => {
      this.hover = ev.offsetX;
      if (this.drag) {
        this.drag.x1 = ev.offsetX;
        if (this.drag.pan) {
          const dt = ((this.drag.x0 - ev.offsetX) / this.width()) * (this.drag.end - this.drag.start);
          this.group.live = false;
          this.group.start = this.drag.start + dt;
          this.group.end = this.drag.end + dt;
          this.group.dispatchEvent(new CustomEvent("range", { detail: { live: false } }));
        }
      }
      this.redraw();
    });
    c.addEventListener("pointerleave", () => {
      this.hover = null;
      this.redraw();
    });
    c.addEventListener("pointerup", () => {
      const d = this.drag;
      this.drag = null;
      if (!d) return;
      if (d.pan) {
        this.group.setRange(this.group.start, this.group.end);
      } else if (Math.abs(d.x1 - d.x0) > 6) {
        const a = tAt(Math.min(d.x0, d.x1));
        const b = tAt(Math.max(d.x0, d.x1));
        this.group.setRange(a, b);
      }
      this.redraw();
    });
    c.addEventListener("dblclick", () => {
      if (!this.group.back()) this.group.follow();
    });
  }

  // ------------------------------------------------------------------ drawing

  redraw(now = false) {
    if (now) {
      this.draw();
      return;
    }
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  points() {
    // Loaded history and the live tail, as [t, lo, avg, hi] within the visible window (+1 each side).
    const d = this.data;
    const out = [];
    if (d) {
      for (let i = 0; i < d.t.length; i++) {
        if (d.mode === "bucket") {
          if (d.avg[i] === null) continue;
          out.push([d.t[i], d.min[i], d.avg[i], d.max[i]]);
        } else {
          const v = typeof d.v[i] === "boolean" ? Number(d.v[i]) : d.v[i];
          if (typeof v === "number") out.push([d.t[i], v, v, v]);
        }
      }
    }
    for (const [t, raw] of this.tail) {
      const v = typeof raw === "boolean" ? Number(raw) : raw;
      if (typeof v === "number") out.push([t, v, v, v]);
    }
    return out;
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const W = c.clientWidth;
    const H = c.clientHeight;
    if (!W || !H) return;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
      c.width = Math.round(W * dpr);
      c.height = Math.round(H * dpr);
    }
    const g2 = c.getContext("2d");
    g2.setTransform(dpr, 0, 0, dpr, 0, 0);
    g2.clearRect(0, 0, W, H);
    const colors = {
      grid: cssVar(c, "--chart-grid", "#333"),
      text: cssVar(c, "--chart-text", "#999"),
      line: cssVar(c, "--chart-line", "#4d8df7"),
      band: cssVar(c, "--chart-band", "rgba(77,141,247,.2)"),
      limit: cssVar(c, "--chart-limit", "#d9822b"),
      cross: cssVar(c, "--chart-cross", "#aaa"),
      tipBg: cssVar(c, "--chart-tip-bg", "#111"),
      tipText: cssVar(c, "--chart-tip-text", "#eee"),
      sel: cssVar(c, "--chart-select", "rgba(77,141,247,.15)"),
    };
    const font = `11px ${cssVar(c, "--font-ui", "sans-serif")}`;
    g2.font = font;
    const L = 56;
    const R = 8;
    const T = 6;
    const B = 20;
    const pw = W - L - R;
    const ph = H - T - B;
    const g = this.group;
    const x = (t) => L + ((t - g.start) / (g.end - g.start)) * pw;

    // time grid
    const step = TIME_STEPS.find((s) => (s / (g.end - g.start)) * pw >= 90) || TIME_STEPS[TIME_STEPS.length - 1];
    const tz = new Date().getTimezoneOffset() * 60_000;
    g2.strokeStyle = colors.grid;
    g2.fillStyle = colors.text;
    g2.lineWidth = 1;
    g2.textAlign = "center";
    g2.textBaseline = "top";
    for (let t = Math.ceil((g.start - tz) / step) * step + tz; t <= g.end; t += step) {
      const px = Math.round(x(t)) + 0.5;
      g2.beginPath();
      g2.moveTo(px, T);
      g2.lineTo(px, T + ph);
      g2.stroke();
      g2.fillText(timeTick(t, step), px, T + ph + 5);
    }

    if (this.isBand) this.drawBand(g2, x, L, T, pw, ph, colors);
    else this.drawLine(g2, x, L, T, pw, ph, colors);

    // "now" marker of the data clock while following
    if (g.live) {
      const px = Math.round(x(g.clockMs)) + 0.5;
      if (px > L && px < L + pw) {
        g2.strokeStyle = colors.limit;
        g2.setLineDash([2, 3]);
        g2.beginPath();
        g2.moveTo(px, T);
        g2.lineTo(px, T + ph);
        g2.stroke();
        g2.setLineDash([]);
      }
    }
    // drag selection
    if (this.drag && !this.drag.pan) {
      const a = Math.max(L, Math.min(this.drag.x0, this.drag.x1));
      const b = Math.min(L + pw, Math.max(this.drag.x0, this.drag.x1));
      g2.fillStyle = colors.sel;
      g2.fillRect(a, T, b - a, ph);
    }
    g2.strokeStyle = colors.grid;
    g2.strokeRect(L + 0.5, T + 0.5, pw - 1, ph - 1);
    if (!this.data && !this.error) {
      g2.fillStyle = colors.text;
      g2.textAlign = "center";
      g2.fillText(this.loading ? "Loading history…" : "", L + pw / 2, T + ph / 2 - 6);
    }
  }

  drawLine(g2, x, L, T, pw, ph, colors) {
    const pts = this.points();
    const g = this.group;
    const vis = pts.filter(([t]) => t >= g.start - (g.end - g.start) * 0.05 && t <= g.end + (g.end - g.start) * 0.05);
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, a, , b] of vis) {
      if (a < lo) lo = a;
      if (b > hi) hi = b;
    }
    if (!Number.isFinite(lo)) {
      g2.fillStyle = colors.text;
      g2.textAlign = "center";
      g2.textBaseline = "middle";
      g2.fillText(this.loading ? "Loading history…" : "No data in this window", L + pw / 2, T + ph / 2);
      return;
    }
    const { low, high } = this.meta;
    const span0 = hi - lo || Math.abs(hi) || 1;
    for (const lim of [low, high]) {
      if (lim === null || lim === undefined) continue;
      if (lim >= lo - span0 * 0.6 && lim <= hi + span0 * 0.6) {
        lo = Math.min(lo, lim);
        hi = Math.max(hi, lim);
      }
    }
    if (hi === lo) {
      hi += Math.abs(hi) * 0.05 || 1;
      lo -= Math.abs(lo) * 0.05 || 1;
    }
    const padY = (hi - lo) * 0.08;
    lo -= padY;
    hi += padY;
    const y = (v) => T + ph - ((v - lo) / (hi - lo)) * ph;

    // value grid
    const vstep = niceStep(hi - lo, Math.max(2, Math.floor(ph / 34)));
    g2.textAlign = "right";
    g2.textBaseline = "middle";
    for (let v = Math.ceil(lo / vstep) * vstep; v <= hi; v += vstep) {
      const py = Math.round(y(v)) + 0.5;
      g2.strokeStyle = colors.grid;
      g2.beginPath();
      g2.moveTo(L, py);
      g2.lineTo(L + pw, py);
      g2.stroke();
      g2.fillStyle = colors.text;
      g2.fillText(fmt.num(Math.abs(v) < vstep / 1e6 ? 0 : v, vstep >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(vstep)))), L - 6, py);
    }
    // limits
    for (const [lim, label] of [[low, "low"], [high, "high"]]) {
      if (lim === null || lim === undefined || lim < lo || lim > hi) continue;
      const py = Math.round(y(lim)) + 0.5;
      g2.strokeStyle = colors.limit;
      g2.setLineDash([5, 4]);
      g2.beginPath();
      g2.moveTo(L, py);
      g2.lineTo(L + pw, py);
      g2.stroke();
      g2.setLineDash([]);
      g2.fillStyle = colors.limit;
      g2.textAlign = "left";
      g2.fillText(`${label} ${fmt.num(lim)}`, L + 4, py + (label === "high" ? 8 : -8));
    }

    g2.save();
    g2.beginPath();
    g2.rect(L, T, pw, ph);
    g2.clip();
    const d = this.data;
    // Devices report by exception: a quiet stretch holds the last value (drawn as a step);
    // only a gap of a quarter of the window breaks the line (the source was away).
    const hold = d && d.mode === "bucket" ? d.bucket * 1000 * 2.5 : 0;
    const gap = Math.max(hold, (g.end - g.start) / 4);
    // min–max band per run of consecutive buckets
    if (d && d.mode === "bucket") {
      g2.fillStyle = colors.band;
      let run = [];
      const flush = () => {
        if (run.length) {
          g2.beginPath();
          run.forEach(([t, a], i) => (i ? g2.lineTo(x(t), y(a)) : g2.moveTo(x(t), y(a))));
          for (let i = run.length - 1; i >= 0; i--) g2.lineTo(x(run[i][0]), y(run[i][3]));
          g2.closePath();
          g2.fill();
        }
        run = [];
      };
      let prev = -Infinity;
      for (const p of vis) {
        if (p[0] - prev > hold) flush();
        run.push(p);
        prev = p[0];
      }
      flush();
    }
    // the average (or raw) line
    g2.strokeStyle = colors.line;
    g2.lineWidth = 1.6;
    g2.lineJoin = "round";
    g2.beginPath();
    let prev = -Infinity;
    const step = this.meta.data_type === "bool" || this.meta.data_type === "int";
    let py0 = null;
    for (const [t, , v] of vis) {
      const px = x(t);
      const py = y(v);
      if (t - prev > gap || py0 === null) g2.moveTo(px, py);
      else if (step || (hold && t - prev > hold)) {
        g2.lineTo(px, py0);
        g2.lineTo(px, py);
      } else g2.lineTo(px, py);
      prev = t;
      py0 = py;
    }
    g2.stroke();
    if (vis.length < pw / 6) {
      g2.fillStyle = colors.line;
      for (const [t, , v] of vis) {
        g2.beginPath();
        g2.arc(x(t), y(v), 2, 0, Math.PI * 2);
        g2.fill();
      }
    }
    g2.restore();

    // crosshair and tooltip
    if (this.hover !== null && this.hover > L && this.hover < L + pw && !this.drag) {
      const g = this.group;
      const tHover = g.start + ((this.hover - L) / pw) * (g.end - g.start);
      let best = null;
      for (const p of vis) if (!best || Math.abs(p[0] - tHover) < Math.abs(best[0] - tHover)) best = p;
      if (best) {
        const px = x(best[0]);
        g2.strokeStyle = colors.cross;
        g2.beginPath();
        g2.moveTo(Math.round(px) + 0.5, T);
        g2.lineTo(Math.round(px) + 0.5, T + ph);
        g2.stroke();
        g2.fillStyle = colors.line;
        g2.beginPath();
        g2.arc(px, y(best[2]), 3.5, 0, Math.PI * 2);
        g2.fill();
        const unit = this.meta.unit ? ` ${fmt.unitSymbol(this.meta.unit)}` : "";
        const lines = [fmt.time(best[0])];
        if (d && d.mode === "bucket" && best[1] !== best[3]) {
          lines.push(`avg ${fmt.num(best[2])}${unit}`, `min ${fmt.num(best[1])} · max ${fmt.num(best[3])}`);
        } else lines.push(`${fmt.num(best[2])}${unit}`);
        this.tooltip(g2, px, T + 6, lines, L, pw, colors);
      }
    }
  }

  drawBand(g2, x, L, T, pw, ph, colors) {
    const d = this.data;
    const g = this.group;
    const segs = [];
    if (d) for (let i = 0; i < d.t.length; i++) segs.push([d.t[i], d.v[i]]);
    for (const [t, v] of this.tail) segs.push([t, v]);
    const bandT = T + 4;
    const bandH = ph - 8;
    if (!segs.length) {
      g2.fillStyle = colors.text;
      g2.textAlign = "center";
      g2.textBaseline = "middle";
      g2.fillText(this.loading ? "Loading history…" : "No data in this window", L + pw / 2, T + ph / 2);
      return;
    }
    const std = this.ctx.standardState;
    g2.save();
    g2.beginPath();
    g2.rect(L, T, pw, ph);
    g2.clip();
    const palette = ["--band-a", "--band-b", "--band-c", "--band-d"].map((n) => cssVar(this.canvas, n, "#556"));
    const seen = new Map();
    const stateColors = {};
    let hoverSeg = null;
    const tHover = this.hover === null ? null : g.start + ((this.hover - L) / pw) * (g.end - g.start);
    for (let i = 0; i < segs.length; i++) {
      const [t0, v] = segs[i];
      const t1 = i + 1 < segs.length ? segs[i + 1][0] : Math.max(g.clockMs, t0);
      if (t1 < g.start || t0 > g.end) continue;
      const st = std && this.meta.kind === "state" ? std(v) : null;
      let color;
      if (st && st !== "unknown") {
        stateColors[st] = stateColors[st] || cssVar(this.canvas, `--state-${st}`, "#888");
        color = stateColors[st];
      } else {
        const key = JSON.stringify(v);
        if (!seen.has(key)) seen.set(key, palette[seen.size % palette.length]);
        color = seen.get(key);
      }
      const a = Math.max(L, x(t0));
      const b = Math.min(L + pw, x(t1));
      g2.fillStyle = color;
      g2.fillRect(a, bandT, Math.max(1, b - a), bandH);
      if (b - a > 60) {
        g2.fillStyle = "#fff";
        g2.textAlign = "left";
        g2.textBaseline = "middle";
        const label = st && st !== "unknown" ? fmt.stateLabel(st) : fmt.value(v, this.meta.data_type);
        g2.fillText(label, a + 6, bandT + bandH / 2, b - a - 10);
      }
      if (tHover !== null && tHover >= t0 && tHover < t1) hoverSeg = [t0, t1, v, st];
    }
    g2.restore();
    if (hoverSeg && !this.drag) {
      const [t0, t1, v, st] = hoverSeg;
      const label = st && st !== "unknown" ? `${fmt.stateLabel(st)} (${fmt.value(v)})` : fmt.value(v, this.meta.data_type);
      this.tooltip(g2, this.hover, T + 2, [label, `${fmt.time(t0)} · ${fmt.duration((t1 - t0) / 1000)}`], L, pw, colors);
    }
  }

  tooltip(g2, px, top, lines, L, pw, colors) {
    const w = Math.max(...lines.map((l) => g2.measureText(l).width)) + 16;
    const hgt = lines.length * 15 + 8;
    let left = px + 10;
    if (left + w > L + pw) left = px - 10 - w;
    g2.fillStyle = colors.tipBg;
    g2.beginPath();
    g2.roundRect(left, top, w, hgt, 4);
    g2.fill();
    g2.fillStyle = colors.tipText;
    g2.textAlign = "left";
    g2.textBaseline = "top";
    lines.forEach((l, i) => g2.fillText(l, left + 8, top + 5 + i * 15));
  }
}

/** Range presets of the trend toolbar. */
export const PRESETS = [
  ["15 min", 15 * 60_000],
  ["1 h", 3600_000],
  ["8 h", 8 * 3600_000],
  ["24 h", 24 * 3600_000],
  ["7 d", 7 * 86400_000],
];

/** The toolbar of a TrendGroup: presets, live follow, the window shown. */
export function trendToolbar(group) {
  const label = h("span", { class: "range-label" });
  const liveBtn = h("button", { class: "btn small live-btn", type: "button", title: "Follow the newest values", onclick: () => group.follow() },
    h("span", { class: "dot" }), "Live");
  const presetBtns = PRESETS.map(([name, span]) =>
    h("button", { class: "btn small", type: "button", dataset: { span: String(span) }, onclick: () => group.follow(span), text: name }));
  const resetBtn = h("button", { class: "icon-btn small", type: "button", title: "Back to the previous window (or double-click a chart)", onclick: () => group.back() || group.follow() }, icon("reset"));
  const update = () => {
    label.textContent = `${fmt.time(group.start)} – ${fmt.time(group.end)}`;
    liveBtn.classList.toggle("on", group.live);
    presetBtns.forEach((b) => b.classList.toggle("on", group.live && Number(b.dataset.span) === group.span));
  };
  group.addEventListener("range", update);
  update();
  return h("div", { class: "trend-toolbar" },
    h("div", { class: "seg" }, presetBtns), liveBtn, resetBtn, h("span", { class: "spacer" }), label,
    h("span", { class: "hint muted", text: "wheel: zoom · drag: select · shift+drag: pan" }));
}

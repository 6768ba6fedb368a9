// KPI panels of an asset: OEE with availability / performance / quality (ISO 22400-2),
// the six big losses as a tree, and the downtime Pareto.

import { h, s, mount, skeleton, errorBox, emptyBox, toast } from "./dom.js";
import * as fmt from "./format.js";

export const WINDOWS = [
  ["shift", "Current shift"],
  ["1h", "Last hour"],
  ["8h", "Last 8 h"],
  ["24h", "Last 24 h"],
  ["7d", "Last 7 days"],
];

const LOSS_LABEL = {
  breakdowns: "Breakdowns",
  setup: "Setup & adjustment",
  small_stops: "Small stops",
  speed_loss: "Reduced speed",
  startup_rejects: "Start-up rejects",
  production_rejects: "Production rejects",
  other_stops: "Other stops",
};
const CATEGORY = [
  ["availability", "Availability losses"],
  ["performance", "Performance losses"],
  ["quality", "Quality losses"],
  ["other", "Other stops"],
];
const REFRESH_MS = 30_000;

/** The KPI section of an asset view; `destroy()` stops its refresh. */
export class KpiSection {
  constructor(asset, ctx) {
    this.asset = asset;
    this.ctx = ctx;
    this.windowKey = sessionStorage.getItem("shopfloor.kpiWindow") || "shift";
    this.paretoBy = "reason";
    this.timer = null;
    this.gen = 0;
    this.oeeBody = h("div", { class: "panel-body" }, skeleton(4));
    this.lossBody = h("div", { class: "panel-body" }, skeleton(6));
    this.paretoBody = h("div", { class: "panel-body" }, skeleton(5));
    this.windowLabel = h("span", { class: "muted small window-label" });
    const select = h("select", { class: "select", "aria-label": "KPI window", onchange: (ev) => this.setWindow(ev.target.value) },
      WINDOWS.map(([k, label]) => h("option", { value: k, selected: k === this.windowKey, text: label })));
    this.byBtns = ["reason", "state"].map((by) => h("button", {
      class: ["btn", "small", by === this.paretoBy ? "on" : ""], type: "button", dataset: { by }, text: `By ${by}`,
      onclick: () => {
        this.setParetoBy(by, true);
        this.loadPareto();
      },
    }));
    const byBtns = this.byBtns;
    this.paretoWidth = 0;
    this.resize = new ResizeObserver(() => {
      const w = this.paretoBody.clientWidth;
      if (this.paretoItems && Math.abs(w - this.paretoWidth) > 24) this.renderPareto(this.paretoItems);
    });
    this.resize.observe(this.paretoBody);
    this.el = h("div", { class: "kpi-section" },
      h("div", { class: "section-head" }, h("h2", { text: "Performance" }), this.windowLabel, h("span", { class: "spacer" }), select),
      h("div", { class: "kpi-grid" },
        h("section", { class: "panel oee-panel", id: "oee-panel" }, h("header", { class: "panel-head" }, h("h3", { text: "OEE" }), h("span", { class: "muted small", text: "ISO 22400-2" })), this.oeeBody),
        h("section", { class: "panel loss-panel", id: "loss-panel" }, h("header", { class: "panel-head" }, h("h3", { text: "Six big losses" }), h("span", { class: "muted small", text: "share of planned busy time" })), this.lossBody),
        h("section", { class: "panel pareto-panel", id: "pareto-panel" }, h("header", { class: "panel-head" }, h("h3", { text: "Downtime Pareto" }), h("span", { class: "spacer" }), h("div", { class: "seg" }, byBtns)), this.paretoBody)));
    this.load();
  }

  destroy() {
    clearTimeout(this.timer);
    this.resize.disconnect();
    this.gen++;
  }

  setParetoBy(by, chosen) {
    this.paretoBy = by;
    this.paretoChosen = this.paretoChosen || chosen;
    this.byBtns.forEach((b) => b.classList.toggle("on", b.dataset.by === by));
  }

  setWindow(key) {
    this.windowKey = key;
    sessionStorage.setItem("shopfloor.kpiWindow", key);
    this.load(true);
  }

  /** The query window: [start, end, by] (by=shift takes the last shift's row). */
  range() {
    const k = this.windowKey;
    if (k === "shift") return { start: "-1d", end: undefined, by: "shift" };
    return { start: `-${k}`, end: undefined, by: undefined };
  }

  async load(reset = false) {
    clearTimeout(this.timer);
    const gen = ++this.gen;
    if (reset) {
      mount(this.oeeBody, skeleton(4));
      mount(this.lossBody, skeleton(6));
      mount(this.paretoBody, skeleton(5));
    }
    const r = this.range();
    const api = this.ctx.api;
    try {
      let [oee, losses] = await Promise.all([
        api.get("kpi/oee", { asset: this.asset.path, start: r.start, end: r.end, by: r.by }),
        api.get("kpi/losses", { asset: this.asset.path, start: r.start, end: r.end, by: r.by }),
      ]);
      if (gen !== this.gen) return;
      if (r.by === "shift" && !oee.rows.length) {
        // a site without shifts: production around the clock, show the last 8 h
        [oee, losses] = await Promise.all([
          api.get("kpi/oee", { asset: this.asset.path, start: "-8h" }),
          api.get("kpi/losses", { asset: this.asset.path, start: "-8h" }),
        ]);
        if (gen !== this.gen) return;
      }
      const row = oee.rows[oee.rows.length - 1] || null;
      this.window = row ? { start: row.window_start, end: row.window_end, shift: row.shift } : { start: oee.start, end: oee.end, shift: null };
      const lossRows = losses.rows.filter((x) => !row || x.window_start === row.window_start);
      this.renderOee(row);
      this.renderLosses(lossRows, row);
      this.windowLabel.textContent = `${this.window.shift ? `${fmt.title(this.window.shift)} shift · ` : ""}${fmt.minute(fmt.ms(this.window.start))} – ${fmt.minute(fmt.ms(this.window.end))}`;
      await this.loadPareto(gen);
    } catch (err) {
      if (gen !== this.gen) return;
      const retry = () => this.load(true);
      mount(this.oeeBody, errorBox(err.message, retry));
      mount(this.lossBody, errorBox(err.message, retry));
      mount(this.paretoBody, errorBox(err.message, retry));
    }
    if (gen === this.gen) this.timer = setTimeout(() => this.load(), REFRESH_MS);
  }

  renderOee(row) {
    if (!row) {
      mount(this.oeeBody, emptyBox("No KPI for this window", "No planned production time or no data yet."));
      return;
    }
    const factor = (key, label, hint) => {
      const v = row[key];
      const over = Number.isFinite(v) && v > 1.0001;
      return h("div", { class: "factor", dataset: { kpi: key } },
        h("div", { class: "factor-head" },
          h("span", { class: "factor-label", text: label }),
          h("span", { class: ["factor-value", over ? "over" : ""], text: fmt.pct(v), title: over ? "above 100 %: the ideal cycle time is longer than the machine's actual one" : hint })),
        h("div", { class: "bar" }, h("div", { class: "bar-fill", style: { width: `${Math.max(0, Math.min(1, v || 0)) * 100}%` } })),
        h("span", { class: "factor-hint muted small", text: hint }));
    };
    const oee = row.oee;
    mount(this.oeeBody,
      h("div", { class: "oee-top" },
        ring(oee, "OEE"),
        h("div", { class: "factors" },
          factor("availability", "Availability", `${fmt.duration(row.actual_production_time_s)} producing of ${fmt.duration(row.planned_busy_time_s)} planned`),
          factor("performance", "Performance", `ideal cycle ${fmt.num(row.ideal_cycle_time_s)} s`),
          factor("quality", "Quality", `${fmt.num(row.good)} good of ${fmt.num(row.produced)}`))),
      h("div", { class: "counts" },
        stat("Good", fmt.num(row.good), "pcs", "good"),
        stat("Reject", fmt.num(row.reject), "pcs", row.reject ? "bad" : ""),
        stat("Produced", fmt.num(row.produced), "pcs"),
        stat("Planned busy", fmt.duration(row.planned_busy_time_s), "")));
  }

  renderLosses(rows, oeeRow) {
    if (!rows.length) {
      mount(this.lossBody, emptyBox("No losses to show", "No planned production time in this window."));
      return;
    }
    const pbt = oeeRow ? oeeRow.planned_busy_time_s : null;
    const max = Math.max(1e-9, ...rows.map((r) => Math.abs(r.share_of_pbt || 0)));
    const lossRow = (r, cat) => h("li", { class: ["loss", `cat-${cat}`], dataset: { loss: r.loss } },
      h("span", { class: "loss-name", text: LOSS_LABEL[r.loss] || fmt.title(r.loss) }),
      h("span", { class: "loss-bar" }, h("span", { class: ["loss-fill", `cat-${r.category}`], style: { width: `${(Math.max(0, r.share_of_pbt || 0) / max) * 100}%` } })),
      h("span", { class: "loss-time num", text: fmt.duration(r.seconds), title: r.seconds < 0 ? "negative: faster than the ideal cycle time" : "" }),
      h("span", { class: "loss-share num muted", text: fmt.pct(r.share_of_pbt) }),
      h("span", { class: "loss-events num muted", text: r.events ? `${fmt.num(r.events)}×` : "" }));
    const groups = CATEGORY.map(([cat, label]) => {
      const items = rows.filter((r) => r.category === cat);
      if (!items.length) return null;
      const sec = items.reduce((a, r) => a + (r.seconds || 0), 0);
      const share = items.reduce((a, r) => a + (r.share_of_pbt || 0), 0);
      return h("li", { class: ["loss-group", `cat-${cat}`] },
        h("div", { class: "loss-group-head" },
          h("span", { class: ["swatch", `cat-${cat}`] }),
          h("span", { class: "loss-name", text: label }),
          h("span", { class: "loss-time num", text: fmt.duration(sec) }),
          h("span", { class: "loss-share num", text: fmt.pct(share) })),
        h("ul", { class: "loss-children" }, items.map((r) => lossRow(r, cat))));
    });
    const effective = oeeRow && pbt ? pbt * (oeeRow.oee || 0) : null;
    mount(this.lossBody,
      h("ul", { class: "loss-tree" },
        h("li", { class: "loss-root" },
          h("div", { class: "loss-group-head" },
            h("span", { class: "loss-name", text: "Planned busy time" }),
            h("span", { class: "loss-time num", text: fmt.duration(pbt) }),
            h("span", { class: "loss-share num", text: pbt ? "100 %" : "" }))),
        groups,
        effective !== null ? h("li", { class: "loss-root effective" },
          h("div", { class: "loss-group-head" },
            h("span", { class: "swatch cat-effective" }),
            h("span", { class: "loss-name", text: "Fully productive time (OEE)" }),
            h("span", { class: "loss-time num", text: fmt.duration(effective) }),
            h("span", { class: "loss-share num", text: fmt.pct(oeeRow.oee) }))) : null));
  }

  async loadPareto(gen = this.gen) {
    const w = this.window;
    if (!w) return;
    const api = this.ctx.api;
    try {
      let res = await api.get("downtime/pareto", { asset: this.asset.path, start: w.start, end: w.end, by: this.paretoBy, limit: 12 });
      if (gen !== this.gen) return;
      if (this.paretoBy === "reason" && !this.paretoChosen && res.items.length === 1 && res.items[0].key === "unassigned") {
        // no reason assigned yet: the states tell more
        this.setParetoBy("state", false);
        res = await api.get("downtime/pareto", { asset: this.asset.path, start: w.start, end: w.end, by: "state", limit: 12 });
        if (gen !== this.gen) return;
      }
      this.renderPareto(res.items);
    } catch (err) {
      if (gen !== this.gen) return;
      mount(this.paretoBody, errorBox(err.message, () => this.loadPareto()));
    }
  }

  renderPareto(items) {
    this.paretoItems = items;
    this.paretoWidth = this.paretoBody.clientWidth;
    const canRecord = this.ctx.canOperate();
    const record = h("button", {
      class: "btn small", type: "button", id: "record-downtime", disabled: !canRecord,
      title: canRecord ? "Compute downtime events from the machine states of this window" : "needs a token with the operate scope",
      onclick: () => this.recordDowntime(record),
    }, canRecord ? "Record downtime" : "Record downtime (operate)");
    if (!items.length) {
      mount(this.paretoBody, emptyBox("No downtime recorded in this window", "Downtime events are computed from the machine states.", record));
      return;
    }
    mount(this.paretoBody, paretoChart(items, this.paretoBy, this.paretoWidth - 32), h("div", { class: "panel-foot" }, h("span", { class: "muted small", text: `${fmt.num(items.reduce((a, r) => a + r.events, 0))} stops · ${fmt.duration(items.reduce((a, r) => a + r.seconds, 0))}` }), h("span", { class: "spacer" }), record));
  }

  async recordDowntime(btn) {
    const w = this.window;
    btn.disabled = true;
    btn.textContent = "Recording…";
    try {
      const res = await this.ctx.api.post("downtime/record", undefined, { asset: this.asset.path, start: w.start, end: w.end });
      const n = Object.values(res.equipment).reduce((a, b) => a + b, 0);
      toast(`${fmt.num(n)} downtime events recorded`, "ok");
      await this.loadPareto();
    } catch (err) {
      toast(`Recording downtime failed: ${err.message}`, "error");
      btn.disabled = false;
      btn.textContent = "Record downtime";
    }
  }
}

function stat(label, value, unit, cls = "") {
  return h("div", { class: ["stat", cls] }, h("span", { class: "stat-label", text: label }), h("span", { class: "stat-value num" }, value, unit ? h("span", { class: "unit", text: ` ${unit}` }) : null));
}

/** A ring gauge of a ratio with the world-class mark at 85 %. */
export function ring(ratio, label) {
  const r = 44;
  const c = 2 * Math.PI * r;
  const v = Number.isFinite(ratio) ? Math.max(0, Math.min(1, ratio)) : 0;
  const grade = !Number.isFinite(ratio) ? "none" : ratio >= 0.85 ? "good" : ratio >= 0.6 ? "fair" : "poor";
  const mark = 0.85 * 2 * Math.PI - Math.PI / 2;
  return h("div", { class: ["ring", grade], dataset: { kpi: "oee" } },
    s("svg", { viewBox: "0 0 120 120", class: "ring-svg", role: "img", "aria-label": `${label} ${fmt.pct(ratio)}` },
      s("circle", { cx: 60, cy: 60, r, class: "ring-track" }),
      s("circle", { cx: 60, cy: 60, r, class: "ring-value", "stroke-dasharray": `${v * c} ${c}`, "stroke-linecap": v < 0.03 ? "butt" : "round", transform: "rotate(-90 60 60)" }),
      s("line", { x1: 60 + Math.cos(mark) * 36, y1: 60 + Math.sin(mark) * 36, x2: 60 + Math.cos(mark) * 52, y2: 60 + Math.sin(mark) * 52, class: "ring-mark" })),
    h("div", { class: "ring-text" }, h("span", { class: "ring-value-text num", id: "oee-value", text: fmt.pct(ratio) }), h("span", { class: "ring-label", text: label })));
}

/** Bars of downtime per key, largest first, with the cumulative share as a line. */
function paretoChart(items, by, width) {
  const W = Math.max(320, Math.round(width || 420));
  const H = 220;
  const L = 44;
  const R = 34;
  const T = 10;
  const B = 52;
  const pw = Math.min(W - L - R, items.length * 110); // few causes: compact, not spread out
  const ph = H - T - B;
  const max = Math.max(...items.map((r) => r.seconds), 1);
  const unit = max >= 7200 ? 3600 : max >= 120 ? 60 : 1;
  const unitLabel = unit === 3600 ? "h" : unit === 60 ? "min" : "s";
  const bw = pw / items.length;
  const kids = [];
  const ticks = 4;
  for (let i = 0; i <= ticks; i++) {
    const y = T + ph - (ph * i) / ticks;
    kids.push(s("line", { x1: L, x2: L + pw, y1: y, y2: y, class: "grid" }));
    kids.push(s("text", { x: L - 6, y: y + 3, class: "axis", "text-anchor": "end" }, fmt.num((max * i) / ticks / unit, max / unit < 10 ? 1 : 0)));
    kids.push(s("text", { x: L + pw + 6, y: y + 3, class: "axis" }, `${(100 * i) / ticks}%`));
  }
  kids.push(s("text", { x: 6, y: T + 8, class: "axis" }, unitLabel));
  items.forEach((r, i) => {
    const bh = (r.seconds / max) * ph;
    const barW = Math.min(bw * 0.7, 64);
    const x = L + i * bw + (bw - barW) / 2;
    const state = by === "state" ? fmt.stateClass(r.key) : null;
    kids.push(s("rect", { x, y: T + ph - bh, width: barW, height: Math.max(1, bh), rx: 2, class: ["pareto-bar", state ? `state-fill-${state}` : ""].join(" ") },
      s("title", {}, `${r.key}: ${fmt.duration(r.seconds)}, ${r.events} stops, ${fmt.pct(r.share)}`)));
    const label = by === "state" ? fmt.stateLabel(r.key) : r.key;
    kids.push(s("text", { x: L + i * bw + bw / 2, y: T + ph + 12, class: "axis label", "text-anchor": "end", transform: `rotate(-35 ${L + i * bw + bw / 2} ${T + ph + 12})` }, label.length > 16 ? `${label.slice(0, 15)}…` : label));
  });
  const pts = items.map((r, i) => `${L + i * bw + bw / 2},${T + ph - r.cumulative_share * ph}`).join(" ");
  kids.push(s("line", { x1: L, x2: L + pw, y1: T + ph * 0.2, y2: T + ph * 0.2, class: "pareto-80" }));
  kids.push(s("polyline", { points: pts, class: "pareto-cum" }));
  items.forEach((r, i) => kids.push(s("circle", { cx: L + i * bw + bw / 2, cy: T + ph - r.cumulative_share * ph, r: 3, class: "pareto-dot" })));
  const Wused = L + pw + R;
  return s("svg", { viewBox: `0 0 ${Wused} ${H}`, width: Wused, height: H, class: "pareto", role: "img", "aria-label": "Downtime Pareto" }, kids);
}


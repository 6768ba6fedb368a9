// The AGV map: every equipment that reports position_x / position_y (VDA 5050 agvPosition,
// metres) drawn on the hall's grid with its heading, state colour, battery and a trail;
// the hall's extent comes from where the vehicles have driven (their recent history).

import { h, s, mount, skeleton, errorBox, emptyBox } from "./dom.js";
import * as fmt from "./format.js";
import { pathParam } from "./api.js";

const FIELDS = ["position_x", "position_y", "heading", "state", "battery_charge", "velocity", "operating_mode", "connection_state", "charging", "driving"];
const TRAIL_S = 15;
const TRAIL_POINTS = 24;
const HISTORY_MS = 10 * 60_000;
const JUMP_M = 3; // farther between two reports: samples were missed, do not draw a chord
const GAP_MS = 10_000;

/** SVG path data of [t, x, y] points, broken where reports are missing. */
function pathData(points) {
  let d = "";
  let prev = null;
  for (const [t, x, y] of points) {
    const jump = !prev || t - prev[0] > GAP_MS || Math.hypot(x - prev[1], y - prev[2]) > JUMP_M;
    d += `${jump ? "M" : "L"}${x},${-y}`;
    prev = [t, x, y];
  }
  return d;
}

export class MapView {
  constructor(ctx) {
    this.ctx = ctx;
    this.vehicles = [];
    this.bounds = null;
    this.trails = new Map(); // asset → [[t, x, y]] (history, then live)
    this.selected = sessionStorage.getItem("shopfloor.mapSelected");
    this.stage = h("div", { class: "map-stage" }, skeleton(8, "map-skeleton"));
    this.fleet = h("div", { class: "fleet" });
    this.meta = h("span", { class: "muted small" });
    this.el = h("div", { class: "view map-view" },
      h("div", { class: "view-head" },
        h("div", {}, h("h1", { text: "AGV map" }), h("p", { class: "muted", text: "Live positions over VDA 5050 (agvPosition, metres); the recent trail of each over the paths driven in the last 10 min." })),
        h("span", { class: "spacer" }), this.meta),
      h("div", { class: "map-grid" }, h("section", { class: "panel map-panel" }, this.stage), h("section", { class: "panel fleet-panel" }, h("header", { class: "panel-head" }, h("h3", { text: "Fleet" })), this.fleet)));
    this.onValues = (ev) => this.onLive(ev.detail);
    this.ticker = setInterval(() => this.renderFleet(), 1000);
    this.init();
  }

  destroy() {
    this.ctx.feed.removeEventListener("values", this.onValues);
    this.ctx.feed.drop("map");
    clearInterval(this.ticker);
  }

  sig(v, name) {
    return `${v.path}/${name}`;
  }

  async init() {
    const { catalog, feed, api } = this.ctx;
    try {
      this.vehicles = await catalog.vehicles();
    } catch (err) {
      mount(this.stage, errorBox(err.message, () => this.init()));
      return;
    }
    if (!this.vehicles.length) {
      mount(this.stage, emptyBox("No vehicles", "No equipment within this token's subtrees reports position_x and position_y."));
      return;
    }
    const signals = [];
    for (const v of this.vehicles) for (const f of FIELDS) signals.push(this.sig(v, f));
    feed.addEventListener("values", this.onValues);
    feed.want("map", { signals });
    // Driven paths of the last minutes: the hall's extent and the roadmap's shape.
    const now = fmt.now(); // the factory's clock, like every data time
    await Promise.all(this.vehicles.map(async (v) => {
      try {
        const params = { start: new Date(now - HISTORY_MS).toISOString(), end: new Date(now + 60_000).toISOString(), limit: 4000 };
        const [xs, ys] = await Promise.all([
          api.get(`history/${pathParam(this.sig(v, "position_x"))}`, params),
          api.get(`history/${pathParam(this.sig(v, "position_y"))}`, params),
        ]);
        const yAt = new Map(ys.ts.map((t, i) => [t, ys.value[i]]));
        const pts = [];
        xs.ts.forEach((t, i) => {
          const y = yAt.get(t);
          if (typeof xs.value[i] === "number" && typeof y === "number") pts.push([Date.parse(t), xs.value[i], y]);
        });
        this.trails.set(v.path, pts);
      } catch {
        this.trails.set(v.path, []);
      }
    }));
    this.build();
    this.onLive(signals);
  }

  position(v) {
    const x = this.ctx.feed.get(this.sig(v, "position_x"));
    const y = this.ctx.feed.get(this.sig(v, "position_y"));
    return x && y && typeof x.value === "number" && typeof y.value === "number" ? { x: x.value, y: y.value, ts: Math.max(x.ts, y.ts) } : null;
  }

  computeBounds() {
    let x0 = Infinity;
    let y0 = Infinity;
    let x1 = -Infinity;
    let y1 = -Infinity;
    const add = (x, y) => {
      x0 = Math.min(x0, x);
      y0 = Math.min(y0, y);
      x1 = Math.max(x1, x);
      y1 = Math.max(y1, y);
    };
    for (const pts of this.trails.values()) for (const [, x, y] of pts) add(x, y);
    for (const v of this.vehicles) {
      const p = this.position(v);
      if (p) add(p.x, p.y);
    }
    if (!Number.isFinite(x0)) return { x0: -5, y0: -5, x1: 20, y1: 15 };
    const snap = 5;
    return { x0: Math.floor((x0 - 2) / snap) * snap, y0: Math.floor((y0 - 2) / snap) * snap, x1: Math.ceil((x1 + 2) / snap) * snap, y1: Math.ceil((y1 + 2) / snap) * snap };
  }

  build() {
    const b = (this.bounds = this.computeBounds());
    const w = b.x1 - b.x0;
    const hgt = b.y1 - b.y0;
    const m = 1.6; // margin for the axis labels (m)
    const grid = [];
    for (let x = b.x0; x <= b.x1; x += 1) grid.push(s("line", { x1: x, x2: x, y1: -b.y0, y2: -b.y1, class: x % 5 === 0 ? "major" : "minor" }));
    for (let y = b.y0; y <= b.y1; y += 1) grid.push(s("line", { x1: b.x0, x2: b.x1, y1: -y, y2: -y, class: y % 5 === 0 ? "major" : "minor" }));
    const labels = [];
    for (let x = b.x0; x <= b.x1; x += 5) labels.push(s("text", { x, y: -b.y0 + 1.1, class: "axis", "text-anchor": "middle" }, `${x}`));
    for (let y = b.y0; y <= b.y1; y += 5) labels.push(s("text", { x: b.x0 - 0.5, y: -y + 0.25, class: "axis", "text-anchor": "end" }, `${y}`));
    labels.push(s("text", { x: b.x1 + 0.4, y: -b.y0 + 0.25, class: "axis unit", "text-anchor": "start" }, "m"));
    this.paths = s("g", { class: "paths" });
    this.trailLayer = s("g", { class: "trails" });
    this.vehicleLayer = s("g", { class: "vehicles" });
    this.marks = new Map();
    for (const v of this.vehicles) {
      const body = s("g", { class: "agv-body" },
        s("rect", { x: -0.75, y: -0.45, width: 1.5, height: 0.9, rx: 0.18, class: "agv-shape" }),
        s("path", { d: "M0.35,-0.28 L0.72,0 L0.35,0.28 Z", class: "agv-nose" }));
      const label = s("text", { x: 0, y: -0.95, class: "agv-label", "text-anchor": "middle" }, v.name);
      const sub = s("text", { x: 0, y: 1.45, class: "agv-sub", "text-anchor": "middle" }, "");
      const g = s("g", { class: "agv", dataset: { asset: v.path }, tabindex: 0, role: "button", "aria-label": v.name, onclick: () => this.select(v.path), ondblclick: () => { location.hash = `#/asset/${v.path}`; } },
        s("circle", { r: 1.25, class: "agv-halo" }), body, label, sub);
      this.vehicleLayer.append(g);
      const trail = s("path", { class: "trail", d: "" });
      this.trailLayer.append(trail);
      const path = s("path", { class: "path", d: pathData(this.trails.get(v.path) || []) });
      this.paths.append(path);
      this.marks.set(v.path, { g, body, sub, trail, path });
    }
    const svg = s("svg", { class: "hall", viewBox: `${b.x0 - m - 0.6} ${-b.y1 - m} ${w + 2 * m + 0.6} ${hgt + 2 * m + 0.6}`, preserveAspectRatio: "xMidYMid meet", role: "img", "aria-label": "Map of the hall with the vehicles" },
      s("rect", { x: b.x0, y: -b.y1, width: w, height: hgt, class: "floor" }),
      s("g", { class: "grid" }, grid), labels, this.paths, this.trailLayer, this.vehicleLayer);
    mount(this.stage, svg, h("div", { class: "map-legend" }, ["running", "idle", "planned_stop", "unplanned_stop", "offline"].map((st) =>
      h("span", { class: "legend-item" }, h("span", { class: ["state-dot", st] }), fmt.stateLabel(st)))));
    this.meta.textContent = `${this.vehicles.length} vehicles · hall ${fmt.num(w)} × ${fmt.num(hgt)} m shown`;
  }

  onLive(changed) {
    if (!this.marks) return;
    const touched = new Set();
    for (const sig of changed) {
      const asset = sig.slice(0, sig.lastIndexOf("/"));
      if (this.marks.has(asset)) touched.add(asset);
    }
    let outside = false;
    for (const path of touched) {
      const v = this.vehicles.find((x) => x.path === path);
      const p = this.position(v);
      if (!p) continue;
      const b = this.bounds;
      if (p.x < b.x0 || p.x > b.x1 || p.y < b.y0 || p.y > b.y1) outside = true;
      const trail = this.trails.get(path) || [];
      const last = trail[trail.length - 1];
      if (!last || last[1] !== p.x || last[2] !== p.y) trail.push([p.ts, p.x, p.y]);
      if (trail.length > 6000) trail.splice(0, 1000);
      this.trails.set(path, trail);
      this.place(v, p);
    }
    if (outside) {
      this.build();
      this.vehicles.forEach((v) => { const p = this.position(v); if (p) this.place(v, p); });
    }
    if (touched.size) this.renderFleet();
  }

  place(v, p) {
    const mark = this.marks.get(v.path);
    const feed = this.ctx.feed;
    const heading = feed.get(this.sig(v, "heading"));
    const theta = heading && typeof heading.value === "number" ? heading.value : 0;
    mark.g.style.transform = `translate(${p.x}px, ${-p.y}px)`;
    mark.body.style.transform = `rotate(${(-theta * 180) / Math.PI}deg)`;
    const st = this.state(v);
    mark.g.setAttribute("class", ["agv", `state-${fmt.stateClass(st)}`, this.selected === v.path ? "selected" : ""].join(" "));
    mark.g.dataset.x = String(p.x);
    mark.g.dataset.y = String(p.y);
    const bat = feed.get(this.sig(v, "battery_charge"));
    mark.sub.textContent = bat && typeof bat.value === "number" ? `${fmt.num(bat.value, 0)} %` : "";
    const trail = this.trails.get(v.path) || [];
    const since = p.ts - TRAIL_S * 1000;
    mark.trail.setAttribute("d", pathData(trail.slice(-TRAIL_POINTS).filter(([t]) => t >= since)));
  }

  state(v) {
    const st = this.ctx.feed.get(this.sig(v, "state"));
    const conn = this.ctx.feed.get(this.sig(v, "connection_state"));
    if (conn && conn.value && conn.value !== "ONLINE") return "offline";
    return st ? this.ctx.catalog.standardState(v.path, st.value) : null;
  }

  select(path) {
    this.selected = this.selected === path ? null : path;
    if (this.selected) sessionStorage.setItem("shopfloor.mapSelected", this.selected);
    else sessionStorage.removeItem("shopfloor.mapSelected");
    this.vehicles.forEach((v) => { const p = this.position(v); if (p) this.place(v, p); });
    const mark = this.selected && this.marks && this.marks.get(this.selected);
    if (mark) this.vehicleLayer.append(mark.g); // drawn on top of the others
    this.renderFleet();
  }

  renderFleet() {
    const feed = this.ctx.feed;
    const val = (v, f) => {
      const x = feed.get(this.sig(v, f));
      return x ? x.value : null;
    };
    mount(this.fleet, h("table", { class: "table fleet-table" },
      h("thead", {}, h("tr", {}, ["Vehicle", "State", "Battery"].map((t) => h("th", { text: t })))),
      h("tbody", {}, this.vehicles.map((v) => {
        const st = this.state(v);
        const bat = val(v, "battery_charge");
        const speed = val(v, "velocity");
        const p = this.position(v);
        const speedUnit = (this.ctx.catalog.typeSignal(v.path, "velocity") || {}).unit;
        const detail = [
          p ? `x ${fmt.num(p.x, 1)} · y ${fmt.num(p.y, 1)} m` : "no position",
          typeof speed === "number" ? `${fmt.num(speed, 2)} ${fmt.unitSymbol(speedUnit || "MTS")}` : null,
          val(v, "operating_mode"),
        ].filter(Boolean).join(" · ");
        return h("tr", { class: ["fleet-row", this.selected === v.path ? "selected" : ""], dataset: { asset: v.path }, onclick: () => this.select(v.path) },
          h("td", {}, h("a", { href: `#/asset/${v.path}`, class: "asset-link", text: v.name, title: val(v, "connection_state") || "" }), h("span", { class: "muted small block num", text: detail })),
          h("td", {}, h("span", { class: ["chip", `state-${fmt.stateClass(st)}`], text: fmt.stateLabel(st) }), val(v, "charging") ? h("span", { class: "muted small block", text: "charging" }) : null),
          h("td", { class: "nowrap" }, typeof bat === "number" ? h("div", { class: "battery" }, h("div", { class: ["battery-fill", bat < 20 ? "low" : ""], style: { width: `${Math.max(0, Math.min(100, bat))}%` } })) : null, h("span", { class: "small num", text: typeof bat === "number" ? `${fmt.num(bat, 0)} %` : "–" })));
      }))));
  }
}

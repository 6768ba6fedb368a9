// The factory as the token sees it: the ISA-95 asset tree, asset types (signals, units,
// state maps) and, fetched per asset when needed, signals with their metadata.

import { STATES } from "./format.js";

const STANDARD = new Set(STATES.map(([s]) => s));
export const LEVELS = ["enterprise", "site", "area", "line", "cell", "equipment"];

export class Catalog {
  constructor(api) {
    this.api = api;
    this.assets = new Map();
    this.types = new Map();
    this.roots = [];
    this.signalCache = new Map();
    this.stateSignals = new Set();
  }

  async load() {
    const [assets, types, states] = await Promise.all([
      this.api.all("assets"),
      this.api.all("types"),
      this.api.all("signals", { kind: "state" }),
    ]);
    this.stateSignals = new Set(states.filter((x) => x.name === "state").map((x) => x.path));
    this.types = new Map(types.map((t) => [t.id, { ...t, byName: new Map(t.signals.map((x) => [x.name, x])) }]));
    this.assets = new Map(assets.map((a) => [a.path, { ...a, children: [] }]));
    this.roots = [];
    for (const a of this.assets.values()) {
      const parent = a.parent && this.assets.get(a.parent);
      if (parent) parent.children.push(a);
      else this.roots.push(a);
    }
  }

  asset(path) {
    return this.assets.get(path);
  }

  type(path) {
    const a = this.assets.get(path);
    return a && a.type ? this.types.get(a.type) : undefined;
  }

  /** Ancestors from the root down to (without) `path`. */
  ancestors(path) {
    const out = [];
    let a = this.assets.get(path);
    while (a && a.parent) {
      a = this.assets.get(a.parent);
      if (a) out.unshift(a);
    }
    return out;
  }

  /** Equipment at or below `path`, in tree order. */
  equipmentUnder(path) {
    const out = [];
    const walk = (a) => {
      if (a.level === "equipment") out.push(a);
      a.children.forEach(walk);
    };
    const start = this.assets.get(path);
    if (start) walk(start);
    return out;
  }

  /** The signal declared by the asset's type (unit, kind, limits), if any. */
  typeSignal(path, name) {
    const t = this.type(path);
    return t ? t.byName.get(name) : undefined;
  }

  /** The full name of the equipment's state signal, or null. */
  stateSignal(path) {
    const a = this.assets.get(path);
    if (!a || a.level !== "equipment") return null;
    return this.stateSignals.has(`${path}/state`) ? `${path}/state` : null;
  }

  /** A raw state value mapped onto the standard states ("unknown" when it maps nowhere). */
  standardState(path, raw) {
    if (raw === null || raw === undefined) return null;
    const t = this.type(path);
    if (t && t.states) {
      const mapped = t.states[String(raw)];
      if (mapped) return mapped;
    }
    return STANDARD.has(raw) ? raw : "unknown";
  }

  /** Whether the equipment counts parts (has a good counter): OEE applies. */
  produces(path) {
    const a = this.assets.get(path);
    if (!a) return false;
    if (a.level !== "equipment") return this.equipmentUnder(path).some((e) => this.produces(e.path));
    return Boolean(this.typeSignal(path, "good_count"));
  }

  /** The asset's own signals with metadata (fetched once). */
  async signals(path) {
    if (!this.signalCache.has(path)) {
      const job = this.api.all("signals", { under: path }).then((items) => items.filter((x) => x.asset === path));
      this.signalCache.set(path, job);
      job.catch(() => this.signalCache.delete(path));
    }
    return this.signalCache.get(path);
  }

  /** Equipment that reports a position (position_x and position_y): vehicles on the map. */
  async vehicles() {
    const out = [];
    const unknown = [];
    for (const a of this.assets.values()) {
      if (a.level !== "equipment") continue;
      if (a.type) {
        if (this.typeSignal(a.path, "position_x") && this.typeSignal(a.path, "position_y")) out.push(a);
      } else unknown.push(a);
    }
    const found = await Promise.all(unknown.map(async (a) => {
      const names = new Set((await this.signals(a.path)).map((x) => x.name));
      return names.has("position_x") && names.has("position_y") ? a : null;
    }));
    return out.concat(found.filter(Boolean));
  }
}

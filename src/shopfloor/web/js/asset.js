// The view of one asset: equipment shows its live values, trends and attributes; lines,
// cells, areas and sites show their KPIs and the state of what is below them.

import { h, icon, mount, skeleton, errorBox, emptyBox } from "./dom.js";
import * as fmt from "./format.js";
import { pathParam } from "./api.js";
import { KpiSection } from "./kpi.js";
import { TrendChart, TrendGroup, trendToolbar } from "./chart.js";
import { STATES } from "./format.js";

const LEVEL_LABEL = { enterprise: "Enterprise", site: "Site", area: "Area", line: "Line", cell: "Cell", equipment: "Equipment" };
const KEY_SIGNALS = ["good_count", "battery_charge", "speed", "active_power"];

export class AssetView {
  constructor(path, ctx) {
    this.path = path;
    this.ctx = ctx;
    this.asset = ctx.catalog.asset(path);
    this.parts = [];
    this.charts = new Map();
    this.tiles = new Map();
    this.cards = new Map();
    this.el = h("div", { class: "view asset-view", dataset: { asset: path } });
    this.onValues = (ev) => this.live(ev.detail);
    ctx.feed.addEventListener("values", this.onValues);
    this.ticker = setInterval(() => {
      this.tick();
      // a live trend window moves on with the factory's clock, also between values
      if (this.group && this.charts.size) this.group.tick(fmt.now());
    }, 1000);
    if (!this.asset) {
      mount(this.el, emptyBox("No such asset", `${path} is not in the tree this token sees.`));
      return;
    }
    this.render();
  }

  destroy() {
    this.ctx.feed.removeEventListener("values", this.onValues);
    this.ctx.feed.drop("asset");
    clearInterval(this.ticker);
    this.parts.forEach((p) => p.destroy());
    this.charts.forEach((c) => c.destroy());
  }

  header() {
    const a = this.asset;
    const cat = this.ctx.catalog;
    const crumbs = cat.ancestors(a.path).map((x) => [h("a", { href: `#/asset/${x.path}`, text: x.name }), h("span", { class: "sep", text: "›" })]);
    const type = cat.type(a.path);
    this.stateChip = h("span", { class: "chip big state-none", id: "asset-state", hidden: a.level !== "equipment" });
    this.stateSince = h("span", { class: "muted small" });
    return h("header", { class: "asset-head" },
      h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, crumbs, h("span", { class: "here", text: a.name })),
      h("div", { class: "asset-title" },
        icon(a.level, "icon big"),
        h("h1", { text: a.name }),
        h("span", { class: "level-badge", text: LEVEL_LABEL[a.level] || a.level }),
        type ? h("span", { class: "type-name muted", text: `${type.name || type.id}` }) : null,
        a.source === "discovered" ? h("span", { class: "tag", text: "discovered" }) : null,
        h("span", { class: "spacer" }),
        this.stateChip, this.stateSince),
      h("div", { class: "asset-path muted small mono", text: a.path }));
  }

  render() {
    const a = this.asset;
    const blocks = [this.header()];
    if (a.level === "equipment") {
      this.valuesBody = h("div", { class: "tiles" }, skeleton(3));
      blocks.push(h("section", { class: "block" },
        h("div", { class: "section-head" }, h("h2", { text: "Live values" }), h("span", { class: "muted small", text: "click a value to add or remove its trend" })),
        this.valuesBody));
      this.trendBody = h("div", { class: "charts" });
      this.group = new TrendGroup(Number(sessionStorage.getItem("shopfloor.trendSpan")) || 3600_000);
      this.group.addEventListener("range", () => { if (this.group.live) sessionStorage.setItem("shopfloor.trendSpan", String(this.group.span)); });
      blocks.push(h("section", { class: "block panel trends", id: "trends" },
        h("div", { class: "section-head" }, h("h2", { text: "Trends" })), trendToolbar(this.group), this.trendBody));
      if (this.ctx.catalog.produces(a.path)) {
        const kpi = new KpiSection(a, this.ctx);
        this.parts.push(kpi);
        blocks.push(h("section", { class: "block" }, kpi.el));
      }
      this.attrBody = h("div", { class: "panel-body" }, skeleton(2));
      blocks.push(h("section", { class: "block panel" }, h("header", { class: "panel-head" }, h("h3", { text: "Attributes" })), this.attrBody));
      this.ctx.feed.want("asset", { subtrees: [a.path] });
      this.loadEquipment();
    } else {
      // a line or cell: its performance first; an area or site: the state of what is below
      const wide = ["enterprise", "site", "area"].includes(a.level);
      if (wide) blocks.push(this.overview());
      if (a.level !== "enterprise" && this.ctx.catalog.produces(a.path)) {
        const kpi = new KpiSection(a, this.ctx);
        this.parts.push(kpi);
        blocks.push(h("section", { class: "block" }, kpi.el));
      }
      if (!wide) blocks.push(this.overview());
    }
    mount(this.el, blocks);
    this.tick();
  }

  // ------------------------------------------------------------------ equipment

  async loadEquipment() {
    const { catalog, api } = this.ctx;
    try {
      const [signals, detail] = await Promise.all([catalog.signals(this.path), api.get(`assets/${pathParam(this.path)}`)]);
      this.signals = signals;
      this.renderTiles();
      this.renderAttributes(detail.attributes || {});
      this.initTrends();
    } catch (err) {
      mount(this.valuesBody, errorBox(err.message, () => this.loadEquipment()));
    }
  }

  renderTiles() {
    const shown = this.signals.filter((x) => !(x.kind === "state" && x.name === "state"));
    if (!shown.length) {
      mount(this.valuesBody, emptyBox("No signals", "This equipment has no signals yet."));
      return;
    }
    this.tiles.clear();
    mount(this.valuesBody, shown.map((sig) => {
      const valueEl = h("span", { class: "tile-value num" });
      const unitEl = h("span", { class: "tile-unit", text: fmt.unitSymbol(sig.unit), title: fmt.unitName(sig.unit) });
      const ageEl = h("span", { class: "tile-age muted small" });
      const qEl = h("span", { class: "quality", hidden: true });
      const hasLimits = typeof sig.low === "number" && typeof sig.high === "number" && sig.high > sig.low;
      const fill = hasLimits ? h("span", { class: "limit-fill" }) : null;
      const limit = hasLimits ? h("div", { class: "limit-bar", title: `limits ${fmt.num(sig.low)} … ${fmt.num(sig.high)} ${fmt.unitSymbol(sig.unit)}` }, fill) : null;
      const tile = h("button", {
        class: ["tile", `kind-${sig.kind}`], type: "button", dataset: { signal: sig.path, name: sig.name },
        title: `${sig.description || fmt.title(sig.name)}${sig.semantic_id ? `\nsemantic id ${sig.semantic_id}` : ""}\n${sig.path}`,
        onclick: () => this.toggleTrend(sig),
      },
      h("span", { class: "tile-head" }, h("span", { class: "tile-name", text: fmt.title(sig.name) }), h("span", { class: "tile-kind muted", text: sig.kind }), qEl),
      h("span", { class: "tile-main" }, valueEl, unitEl),
      limit, ageEl);
      this.tiles.set(sig.path, { tile, valueEl, ageEl, qEl, fill, sig });
      return tile;
    }));
    this.live([...this.tiles.keys()], false);
  }

  renderAttributes(attrs) {
    const entries = Object.entries(attrs);
    if (!entries.length) {
      mount(this.attrBody, h("p", { class: "muted", text: "No attributes." }));
      return;
    }
    mount(this.attrBody, h("dl", { class: "attrs" }, entries.map(([k, v]) => [h("dt", { text: fmt.title(k) }), h("dd", { class: "num", text: typeof v === "object" ? JSON.stringify(v) : fmt.value(v) })])));
  }

  trendKey() {
    return `shopfloor.trends.${this.asset.type || this.path}`;
  }

  initTrends() {
    const saved = sessionStorage.getItem(this.trendKey());
    let names;
    if (saved) names = JSON.parse(saved);
    else {
      const state = this.signals.find((x) => x.name === "state" && x.kind === "state");
      // measurements with engineering limits first: those an operator watches
      const limited = (x) => (typeof x.low === "number" || typeof x.high === "number" ? 0 : 1);
      const meas = this.signals.filter((x) => x.kind === "measurement" && x.data_type === "float" && !x.derived)
        .sort((a, b) => limited(a) - limited(b)).slice(0, 2);
      names = [state, ...meas].filter(Boolean).map((x) => x.name);
    }
    // the live window ends at the factory's now, or at newer data (a clock ahead of the page's)
    const now = fmt.now();
    let newest = now;
    for (const sig of this.signals) {
      const v = this.ctx.feed.get(sig.path);
      if (v && v.ts > newest && v.ts < now + 400 * 86400_000) newest = v.ts;
    }
    this.group.tick(newest, true);
    for (const name of names) {
      const sig = this.signals.find((x) => x.name === name);
      if (sig) this.addTrend(sig, false);
    }
    this.renderTrendEmpty();
  }

  addTrend(sig, save = true) {
    const chart = new TrendChart(sig, this.group, {
      api: this.ctx.api,
      feed: this.ctx.feed,
      standardState: (raw) => this.ctx.catalog.standardState(this.path, raw),
    }, () => this.toggleTrend(sig));
    this.charts.set(sig.path, chart);
    this.trendBody.append(chart.el);
    chart.load();
    const t = this.tiles.get(sig.path);
    if (t) t.tile.classList.add("in-trend");
    if (save) this.saveTrends();
  }

  toggleTrend(sig) {
    const chart = this.charts.get(sig.path);
    if (chart) {
      chart.destroy();
      chart.el.remove();
      this.charts.delete(sig.path);
      const t = this.tiles.get(sig.path);
      if (t) t.tile.classList.remove("in-trend");
      this.saveTrends();
    } else this.addTrend(sig);
    this.renderTrendEmpty();
  }

  renderTrendEmpty() {
    const note = this.trendBody.querySelector(".empty-box");
    if (this.charts.size && note) note.remove();
    if (!this.charts.size && !note) this.trendBody.append(emptyBox("No trends", "Click a live value above to chart its history."));
  }

  saveTrends() {
    sessionStorage.setItem(this.trendKey(), JSON.stringify([...this.charts.values()].map((c) => c.meta.name)));
  }

  // ------------------------------------------------------------------ lines, cells, areas

  overview() {
    const a = this.asset;
    const cat = this.ctx.catalog;
    const body = h("div", { class: "cards" });
    let title;
    if (a.level === "line" || a.level === "cell") {
      title = "Equipment";
      const eqs = cat.equipmentUnder(a.path);
      for (const e of eqs) body.append(this.equipmentCard(e));
      const key = eqs.flatMap((e) => KEY_SIGNALS.filter((n) => cat.typeSignal(e.path, n)).slice(0, 1).map((n) => `${e.path}/${n}`));
      this.ctx.feed.want("asset", { signals: key });
      if (!eqs.length) body.append(emptyBox("No equipment", ""));
    } else {
      title = a.level === "enterprise" ? "Sites" : a.level === "site" ? "Areas" : "Lines";
      for (const c of a.children) body.append(this.groupCard(c));
      if (!a.children.length) body.append(emptyBox("Nothing below", ""));
    }
    return h("section", { class: "block" }, h("div", { class: "section-head" }, h("h2", { text: title }), this.stateLegend()), body);
  }

  stateLegend() {
    return h("div", { class: "legend inline" }, STATES.map(([st, label]) => h("span", { class: "legend-item" }, h("span", { class: ["state-dot", st] }), label)));
  }

  equipmentCard(e) {
    const cat = this.ctx.catalog;
    const keyName = KEY_SIGNALS.find((n) => cat.typeSignal(e.path, n));
    const keySig = keyName ? cat.typeSignal(e.path, keyName) : null;
    const stateEl = h("span", { class: "card-state" });
    const sinceEl = h("span", { class: "card-since muted small" });
    const keyEl = keyName ? h("span", { class: "card-key num" }) : null;
    const parent = cat.asset(e.parent);
    const card = h("a", { class: "card equipment-card state-none", href: `#/asset/${e.path}`, dataset: { asset: e.path } },
      h("span", { class: "card-strip" }),
      h("span", { class: "card-body" },
        h("span", { class: "card-top" }, h("span", { class: "card-name", text: e.name }), parent && parent.level === "cell" ? h("span", { class: "card-cell muted small", text: parent.name }) : null),
        h("span", { class: "card-mid" }, stateEl, sinceEl),
        keyName ? h("span", { class: "card-bottom" }, h("span", { class: "muted small", text: fmt.title(keyName) }), keyEl, h("span", { class: "muted small", text: fmt.unitSymbol(keySig.unit) })) : null));
    this.cards.set(e.path, { card, stateEl, sinceEl, keyEl, keyPath: keyName ? `${e.path}/${keyName}` : null, keySig });
    return card;
  }

  groupCard(c) {
    const cat = this.ctx.catalog;
    const eqs = cat.equipmentUnder(c.path).filter((e) => cat.stateSignal(e.path));
    const bar = h("div", { class: "state-bar" });
    const count = h("span", { class: "muted small" });
    const card = h("a", { class: "card group-card", href: `#/asset/${c.path}`, dataset: { asset: c.path } },
      h("span", { class: "card-body" },
        h("span", { class: "card-top" }, icon(c.level, "icon"), h("span", { class: "card-name", text: c.name }), h("span", { class: "level-badge small", text: LEVEL_LABEL[c.level] })),
        bar, count));
    this.cards.set(c.path, { card, bar, count, eqs });
    return card;
  }

  // ------------------------------------------------------------------ live updates

  stateOf(path) {
    const sig = this.ctx.catalog.stateSignal(path);
    const v = sig && this.ctx.feed.get(sig);
    return v ? { state: this.ctx.catalog.standardState(path, v.value), raw: v.value, ts: v.ts } : null;
  }

  live(changed, flash = true) {
    const feed = this.ctx.feed;
    for (const sig of changed) {
      const t = this.tiles.get(sig);
      if (!t) continue;
      const v = feed.get(sig);
      if (!v) continue;
      t.valueEl.textContent = fmt.value(v.value, t.sig.data_type);
      t.tile.dataset.ts = String(v.ts);
      t.qEl.hidden = v.quality === "good";
      t.qEl.textContent = v.quality;
      t.qEl.className = `quality ${v.quality}`;
      if (t.fill && typeof v.value === "number") {
        const r = (v.value - t.sig.low) / (t.sig.high - t.sig.low || 1);
        t.fill.style.width = `${Math.max(0, Math.min(1, r)) * 100}%`;
        t.fill.classList.toggle("out", v.value < t.sig.low || v.value > t.sig.high);
        t.tile.classList.toggle("out-of-limits", v.value < t.sig.low || v.value > t.sig.high);
      }
      if (flash) {
        t.tile.classList.remove("flash");
        void t.tile.offsetWidth; // restart the animation
        t.tile.classList.add("flash");
      }
    }
    this.tick();
  }

  tick() {
    const now = fmt.now();
    for (const t of this.tiles.values()) {
      const ts = Number(t.tile.dataset.ts);
      t.ageEl.textContent = ts ? `${fmt.time(ts)} · ${fmt.age(ts, now)}` : "no value yet";
    }
    if (this.asset && this.asset.level === "equipment" && this.stateChip) {
      const st = this.stateOf(this.path);
      this.stateChip.className = `chip big state-${st ? fmt.stateClass(st.state) : "none"}`;
      this.stateChip.textContent = st ? fmt.stateLabel(st.state) : "No state";
      this.stateSince.textContent = st ? `since ${fmt.time(st.ts)}` : "";
    }
    for (const [path, c] of this.cards) {
      if (c.stateEl) {
        const st = this.stateOf(path);
        c.card.className = `card equipment-card state-${st ? fmt.stateClass(st.state) : "none"}`;
        c.stateEl.textContent = st ? fmt.stateLabel(st.state) : "No state";
        c.sinceEl.textContent = st ? `since ${fmt.time(st.ts)}` : "";
        if (c.keyEl) {
          const v = this.ctx.feed.get(c.keyPath);
          c.keyEl.textContent = v ? fmt.value(v.value, c.keySig.data_type) : "–";
        }
      } else if (c.bar) {
        const counts = {};
        for (const e of c.eqs) {
          const st = this.stateOf(e.path);
          const k = st ? fmt.stateClass(st.state) : "none";
          counts[k] = (counts[k] || 0) + 1;
        }
        const order = [...STATES.map(([x]) => x), "unknown", "none"];
        mount(c.bar, order.filter((k) => counts[k]).map((k) => h("span", { class: `seg-${k}`, title: `${fmt.stateLabel(k === "none" ? null : k)}: ${counts[k]}`, style: { flexGrow: String(counts[k]) } })));
        c.count.textContent = `${counts.running || 0} of ${c.eqs.length} running${counts.unplanned_stop ? ` · ${counts.unplanned_stop} in unplanned stop` : ""}`;
      }
    }
  }
}

// The factory tree (ISA-95): enterprise › site › area › line › cell › equipment, with the
// live standard state of every equipment and a running / total count on lines and cells.

import { h, icon, mount } from "./dom.js";
import * as fmt from "./format.js";

const OPEN_KEY = "shopfloor.treeOpen";

export class Tree {
  constructor(el, filterEl, ctx) {
    this.el = el;
    this.ctx = ctx;
    this.rows = new Map(); // path → {li, row, dot, badge}
    this.selected = null;
    const saved = sessionStorage.getItem(OPEN_KEY);
    this.open = new Set(saved ? JSON.parse(saved) : []);
    if (!saved) for (const a of ctx.catalog.assets.values()) if (["enterprise", "site", "area"].includes(a.level)) this.open.add(a.path);
    this.query = "";
    filterEl.addEventListener("input", () => {
      this.query = filterEl.value.trim().toLowerCase();
      this.render();
    });
    el.addEventListener("keydown", (ev) => this.key(ev));
    ctx.feed.addEventListener("values", (ev) => this.onValues(ev.detail));
    this.render();
    const states = [];
    for (const a of ctx.catalog.assets.values()) {
      const sig = ctx.catalog.stateSignal(a.path);
      if (sig) states.push(sig);
    }
    this.stateSignals = new Map(states.map((sig) => [sig, sig.slice(0, sig.lastIndexOf("/"))]));
    ctx.feed.want("tree", { signals: states });
  }

  saveOpen() {
    sessionStorage.setItem(OPEN_KEY, JSON.stringify([...this.open]));
  }

  matches(a) {
    if (!this.query) return true;
    const hit = (x) => x.name.toLowerCase().includes(this.query) || x.id.toLowerCase().includes(this.query);
    const any = (x) => hit(x) || x.children.some(any);
    return any(a);
  }

  render() {
    this.rows.clear();
    mount(this.el, this.ctx.catalog.roots.filter((a) => this.matches(a)).map((a) => this.node(a, 0)));
    this.refreshStates();
    if (this.selected) this.mark(this.selected, false);
  }

  node(a, depth) {
    const kids = a.children.filter((c) => this.matches(c));
    const open = this.query ? true : this.open.has(a.path);
    const caret = kids.length
      ? h("button", { class: "caret", type: "button", tabindex: -1, "aria-label": open ? "Collapse" : "Expand", onclick: (ev) => { ev.stopPropagation(); this.toggle(a.path); } }, icon("caret"))
      : h("span", { class: "caret-space" });
    const dot = a.level === "equipment" ? h("span", { class: "state-dot none", title: "No state" }) : null;
    const badge = ["line", "cell", "area"].includes(a.level) ? h("span", { class: "run-badge", hidden: true }) : null;
    const isAgv = a.level === "equipment" && this.ctx.catalog.typeSignal(a.path, "position_x");
    const row = h("div", {
      class: "tree-row", tabindex: -1, dataset: { path: a.path, level: a.level },
      style: { paddingLeft: `${8 + depth * 14}px` },
      onclick: () => this.ctx.navigate(a.path),
    }, caret, icon(isAgv ? "agv" : a.level, `icon level-${a.level}`), h("span", { class: "tree-name", text: a.name, title: a.path }), badge, dot,
    a.source === "discovered" ? h("span", { class: "tag", title: "created at run time from what the device announced", text: "new" }) : null);
    const li = h("li", { role: "treeitem", "aria-expanded": kids.length ? String(open) : undefined, "aria-selected": "false" }, row);
    if (kids.length && open) li.append(h("ul", { role: "group" }, kids.map((c) => this.node(c, depth + 1))));
    this.rows.set(a.path, { li, row, dot, badge });
    return li;
  }

  toggle(path, force) {
    const open = force === undefined ? !this.open.has(path) : force;
    if (open) this.open.add(path);
    else this.open.delete(path);
    this.saveOpen();
    this.render();
  }

  /** Select `path`: open its ancestors and scroll it into view. */
  select(path) {
    let changed = false;
    for (const a of this.ctx.catalog.ancestors(path)) {
      if (!this.open.has(a.path)) {
        this.open.add(a.path);
        changed = true;
      }
    }
    this.selected = path;
    if (changed) {
      this.saveOpen();
      this.render();
    } else this.mark(path, true);
  }

  mark(path, scroll) {
    for (const { li, row } of this.rows.values()) {
      li.setAttribute("aria-selected", "false");
      row.classList.remove("selected");
      row.tabIndex = -1;
    }
    const r = this.rows.get(path);
    if (!r) return;
    r.li.setAttribute("aria-selected", "true");
    r.row.classList.add("selected");
    r.row.tabIndex = 0;
    if (scroll) r.row.scrollIntoView({ block: "nearest" });
  }

  key(ev) {
    const rows = [...this.el.querySelectorAll(".tree-row")];
    const i = rows.indexOf(document.activeElement);
    if (i < 0) return;
    const path = rows[i].dataset.path;
    const focus = (j) => rows[Math.max(0, Math.min(rows.length - 1, j))].focus();
    if (ev.key === "ArrowDown") focus(i + 1);
    else if (ev.key === "ArrowUp") focus(i - 1);
    else if (ev.key === "ArrowRight") this.toggle(path, true);
    else if (ev.key === "ArrowLeft") this.toggle(path, false);
    else if (ev.key === "Enter" || ev.key === " ") this.ctx.navigate(path);
    else return;
    ev.preventDefault();
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      const r = this.rows.get(path);
      if (r) r.row.focus();
    }
  }

  onValues(changed) {
    if (changed.some((sig) => this.stateSignals.has(sig))) this.refreshStates();
  }

  /** The standard state of an equipment from the live feed (null: no value yet). */
  stateOf(path) {
    const sig = this.ctx.catalog.stateSignal(path);
    const v = sig && this.ctx.feed.get(sig);
    return v ? this.ctx.catalog.standardState(path, v.value) : null;
  }

  refreshStates() {
    for (const [path, r] of this.rows) {
      if (r.dot) {
        const st = this.stateOf(path);
        r.dot.className = `state-dot ${st ? fmt.stateClass(st) : "none"}`;
        r.dot.title = fmt.stateLabel(st);
      } else if (r.badge) {
        const eq = this.ctx.catalog.equipmentUnder(path).filter((e) => this.ctx.catalog.stateSignal(e.path));
        const states = eq.map((e) => this.stateOf(e.path)).filter(Boolean);
        if (!states.length) {
          r.badge.hidden = true;
          continue;
        }
        const running = states.filter((x) => x === "running").length;
        const fault = states.includes("unplanned_stop");
        r.badge.hidden = false;
        r.badge.textContent = `${running}/${eq.length}`;
        r.badge.title = `${running} of ${eq.length} running${fault ? ", at least one in an unplanned stop" : ""}`;
        r.badge.classList.toggle("fault", fault);
      }
    }
  }
}

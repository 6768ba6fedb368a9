// Alarms (ISA-18.2): the active list, refreshed every few seconds and on live alarm events,
// the count in the top bar, acknowledgement with a comment (operate scope).

import { h, byId, mount, skeleton, errorBox, emptyBox, toast } from "./dom.js";
import * as fmt from "./format.js";
import { pathParam } from "./api.js";

const POLL_MS = 5000;

const STATE_TEXT = {
  unack_active: ["Active", "unacknowledged"],
  ack_active: ["Active", "acknowledged"],
  rtn_unack: ["Cleared", "unacknowledged"],
  normal: ["Normal", ""],
};

/** "token:3f9c… (operator)" → "operator". */
function who(label) {
  const m = /^token:\S+ \((.+)\)$/.exec(label || "");
  return m ? m[1] : label || "";
}

/** Keeps the active alarm list current for the top bar and the alarms view. */
export class AlarmWatcher extends EventTarget {
  constructor(api, feed, enabled) {
    super();
    this.api = api;
    this.enabled = enabled;
    this.items = null;
    this.error = null;
    this.timer = null;
    this.busy = false;
    feed.addEventListener("events", (ev) => {
      if (ev.detail.some((e) => String(e.kind || "").startsWith("alarm"))) this.refresh();
    });
  }

  start() {
    if (this.enabled) this.refresh();
    else this.dispatchEvent(new CustomEvent("change"));
  }

  stop() {
    clearTimeout(this.timer);
    this.enabled = false;
  }

  async refresh() {
    if (!this.enabled) return;
    clearTimeout(this.timer);
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    try {
      this.items = await this.api.all("alarms", { shelved: true }, { maxPages: 5 });
      this.error = null;
    } catch (err) {
      this.error = err.message;
    } finally {
      this.busy = false;
    }
    this.dispatchEvent(new CustomEvent("change"));
    const again = this.again;
    this.again = false;
    if (again) this.refresh();
    else if (this.enabled) this.timer = setTimeout(() => this.refresh(), document.hidden ? POLL_MS * 4 : POLL_MS);
  }

  unacked() {
    return (this.items || []).filter((a) => !a.acked && a.state !== "normal");
  }

  /** Update the count in the top bar. */
  badge() {
    const el = byId("alarm-count");
    const open = this.unacked();
    el.hidden = !open.length;
    el.textContent = String(open.length);
    el.classList.toggle("critical", open.some((a) => a.priority === "critical" || a.priority === "high"));
  }
}

/** The alarms view. */
export class AlarmsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.filter = sessionStorage.getItem("shopfloor.alarmFilter") || "all";
    this.body = h("div", { class: "alarm-body" }, skeleton(5));
    this.summary = h("div", { class: "alarm-summary" });
    const chips = [["all", "All"], ["unacked", "Unacknowledged"], ["active", "Active"]].map(([k, label]) =>
      h("button", { class: ["btn", "small", k === this.filter ? "on" : ""], type: "button", dataset: { filter: k }, text: label, onclick: () => {
        this.filter = k;
        sessionStorage.setItem("shopfloor.alarmFilter", k);
        chips.forEach((c) => c.classList.toggle("on", c.dataset.filter === k));
        this.render();
      } }));
    this.el = h("div", { class: "view alarms-view" },
      h("div", { class: "view-head" },
        h("div", {}, h("h1", { text: "Alarms" }), h("p", { class: "muted", text: "Active and unacknowledged alarms, most severe first (ISA-18.2)." })),
        h("span", { class: "spacer" }),
        h("div", { class: "seg" }, chips)),
      this.summary,
      h("section", { class: "panel" }, this.body));
    this.onChange = () => this.render();
    ctx.alarms.addEventListener("change", this.onChange);
    if (ctx.alarms.items) this.render();
    ctx.alarms.refresh();
  }

  destroy() {
    this.ctx.alarms.removeEventListener("change", this.onChange);
  }

  render() {
    const w = this.ctx.alarms;
    if (!w.enabled) {
      mount(this.body, emptyBox("Alarms need the live runtime", "This server reads a historian at rest (shopfloor serve): alarms are evaluated by 'shopfloor up' or 'shopfloor demo' with --api-port."));
      return;
    }
    if (w.error && !w.items) {
      mount(this.body, errorBox(w.error, () => w.refresh()));
      return;
    }
    if (!w.items) return;
    const all = w.items;
    const counts = { critical: 0, high: 0, medium: 0, low: 0 };
    all.forEach((a) => { counts[a.priority] = (counts[a.priority] || 0) + 1; });
    mount(this.summary, ["critical", "high", "medium", "low"].map((p) =>
      h("div", { class: ["summary-tile", `prio-${p}`, counts[p] ? "" : "zero"] },
        h("span", { class: "summary-count num", text: String(counts[p]) }), h("span", { class: "summary-label", text: fmt.title(p) }))),
    h("div", { class: "summary-tile neutral" }, h("span", { class: "summary-count num", text: String(w.unacked().length) }), h("span", { class: "summary-label", text: "Unacknowledged" })));
    const shown = all.filter((a) => this.filter === "all" || (this.filter === "unacked" ? !a.acked : a.active));
    if (!shown.length) {
      mount(this.body, emptyBox(all.length ? "No alarm matches the filter" : "No active alarms", all.length ? "" : "Every alarm is in its normal state."));
      return;
    }
    const canAck = this.ctx.canOperate();
    const rows = shown.map((a) => {
      const [st, ack] = STATE_TEXT[a.state] || [a.state, ""];
      const asset = this.ctx.catalog.asset(a.asset);
      const activated = fmt.ms(a.activated_at);
      return h("tr", { class: ["alarm-row", `prio-${a.priority}`, a.state], dataset: { alarm: a.alarm_id, state: a.state } },
        h("td", {}, h("span", { class: ["prio", `prio-${a.priority}`], title: `severity ${a.severity}`, text: a.priority.toUpperCase() })),
        h("td", {}, h("div", { class: "alarm-state" }, h("span", { class: ["state-indicator", a.state] }), h("span", {}, h("strong", { text: st }), ack ? h("span", { class: "muted small block", text: ack }) : null))),
        h("td", {}, h("a", { href: `#/asset/${a.asset}`, class: "asset-link", text: asset ? asset.name : a.asset.split("/").pop(), title: a.asset }),
          h("span", { class: "muted small block", text: this.where(a.asset) })),
        h("td", { class: "alarm-msg" }, h("span", { text: a.message || fmt.title(a.rule) }), h("span", { class: "muted small block", text: a.rule })),
        h("td", { class: "num nowrap" }, this.valueText(a)),
        h("td", { class: "num nowrap" }, h("span", { text: fmt.time(activated) }), h("span", { class: "muted small block", text: fmt.age(activated) })),
        h("td", {}, a.acked ? h("span", { class: "acked", title: a.acked_by || "" }, h("span", { text: `✓ ${who(a.acked_by)}` }), h("span", { class: "muted small block", text: [fmt.time(fmt.ms(a.acked_at)), a.ack_comment].filter(Boolean).join(" · ") })) : null),
        h("td", { class: "actions" }, !a.acked && a.occurrence ? h("button", {
          class: "btn small primary ack-btn", type: "button", disabled: !canAck,
          title: canAck ? "Acknowledge this alarm" : "needs a token with the operate scope",
          onclick: () => this.acknowledge(a),
          text: "Acknowledge",
        }) : null));
    });
    mount(this.body, h("div", { class: "table-scroll" }, h("table", { class: "table alarms" },
      h("thead", {}, h("tr", {}, ["Priority", "State", "Asset", "Alarm", "Value", "Activated", "Acknowledged", ""].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows))));
  }

  /** Where an asset is: the names of its line, cell (below the site). */
  where(path) {
    const names = this.ctx.catalog.ancestors(path).filter((x) => !["enterprise", "site"].includes(x.level)).map((x) => x.name);
    return names.join(" › ");
  }

  valueText(a) {
    if (a.value === null || a.value === undefined) return "–";
    if (a.signal && typeof a.value === "number") {
      const sig = this.ctx.catalog.typeSignal(a.asset, a.signal.slice(a.asset.length + 1));
      if (sig && sig.unit) return `${fmt.value(a.value)} ${fmt.unitSymbol(sig.unit)}`;
    }
    return typeof a.value === "string" && fmt.STATES.some(([x]) => x === a.value) ? fmt.stateLabel(a.value) : fmt.value(a.value);
  }

  acknowledge(alarm) {
    const dialog = byId("ack-dialog");
    const asset = this.ctx.catalog.asset(alarm.asset);
    byId("ack-what").textContent = `${asset ? asset.name : alarm.asset} — ${alarm.message || alarm.rule}`;
    const comment = byId("ack-comment");
    comment.value = "";
    dialog.onclose = async () => {
      if (dialog.returnValue !== "ack") return;
      try {
        await this.ctx.api.post(`events/${pathParam(alarm.occurrence)}/ack`, { comment: comment.value.trim() });
        toast(`Acknowledged: ${alarm.message || alarm.rule}`, "ok");
      } catch (err) {
        toast(`Not acknowledged: ${err.message}`, "error", 7000);
      }
      this.ctx.alarms.refresh();
    };
    dialog.returnValue = "";
    dialog.showModal();
    comment.focus();
  }
}

// Live values: the WebSocket stream (GET api/v1/live, see the live contract) when the
// server has it, REST polling of api/v1/latest otherwise or while the socket is away.
//
// Views declare what they want to follow with want(key, {subtrees, signals}); the feed
// merges every view's interest, fetches a snapshot of what is new, and then keeps
// `values` (signal → {ts, value, quality}) current, announcing changes as "values" events.

import { quality as qualityName } from "./format.js";

const POLL_MS = 2000;
const POLL_HIDDEN_MS = 10000;
const CHUNK = 40;
const RECONNECT_MIN_MS = 2000;
const RECONNECT_MAX_MS = 30000;

export class LiveFeed extends EventTarget {
  /** `livePath`: the WebSocket route relative to the page, or null when the server has none. */
  constructor(api, livePath) {
    super();
    this.api = api;
    this.livePath = livePath;
    this.values = new Map();
    this.groups = new Map();
    this.subscribed = new Set();
    this.mode = "connecting";
    this.detail = "";
    this.ws = null;
    this.backoff = RECONNECT_MIN_MS;
    this.reconnectTimer = null;
    this.pollTimer = null;
    this.polling = false;
    this.stopped = true;
    this.seq = 0;
    this.lastFrame = 0;
  }

  start() {
    this.stopped = false;
    if (this.livePath && "WebSocket" in window) this.connect();
    else this.setMode("polling", this.livePath === null ? "polling the REST API every 2 s" : "this browser has no WebSocket: polling every 2 s");
    this.schedulePoll(0);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.pollTimer);
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
  }

  /** Follow `subtrees` (asset paths: every signal below) and exact `signals` under `key`. */
  want(key, { subtrees = [], signals = [] } = {}) {
    const before = this.interest();
    this.groups.set(key, { subtrees: new Set(subtrees), signals: new Set(signals) });
    this.changed(before);
  }

  drop(key) {
    if (!this.groups.has(key)) return;
    const before = this.interest();
    this.groups.delete(key);
    this.changed(before);
  }

  get(signal) {
    return this.values.get(signal);
  }

  interest() {
    const subtrees = new Set();
    const signals = new Set();
    for (const g of this.groups.values()) {
      g.subtrees.forEach((p) => subtrees.add(p));
      g.signals.forEach((p) => signals.add(p));
    }
    // A signal inside a followed subtree needs no extra subscription.
    const inside = (sig) => [...subtrees].some((t) => sig.startsWith(`${t}/`));
    return { subtrees, signals: new Set([...signals].filter((x) => !inside(x))) };
  }

  patterns(interest) {
    return new Set([...[...interest.subtrees].map((t) => `${t}/**`), ...interest.signals]);
  }

  changed(before) {
    const now = this.interest();
    const added = {
      subtrees: [...now.subtrees].filter((t) => !before.subtrees.has(t)),
      signals: [...now.signals].filter((x) => !before.signals.has(x) && !before.subtrees.has(x)),
    };
    if (added.subtrees.length || added.signals.length) this.fetchLatest(added).catch(() => {});
    if (this.mode === "live") this.resubscribe();
  }

  // ------------------------------------------------------------------ WebSocket

  connect() {
    if (this.stopped) return;
    const url = new URL(this.livePath, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.api.token || "");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.socketLost(`cannot open the live stream: ${err.message}`);
      return;
    }
    this.ws = ws;
    this.subscribed = new Set();
    ws.onopen = () => {
      this.backoff = RECONNECT_MIN_MS;
      this.setMode("live", "WebSocket live stream");
      this.resubscribe();
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), 25000);
    };
    ws.onmessage = (ev) => this.onFrame(ev.data);
    ws.onclose = (ev) => {
      clearInterval(this.pingTimer);
      this.ws = null;
      this.subscribed = new Set();
      if (ev.code === 4401) {
        this.api.dispatchEvent(new CustomEvent("unauthorized", { detail: new Error("the live stream refused the token") }));
        this.setMode("offline", "the token was refused");
        return;
      }
      const why = ev.code === 1013 ? "the server dropped this slow client" : "the live stream closed";
      this.socketLost(`${why}: polling until it is back`);
    };
  }

  socketLost(detail) {
    if (this.stopped) return;
    this.setMode(this.api.online ? "polling" : "offline", detail);
    this.schedulePoll(0);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, RECONNECT_MAX_MS);
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  resubscribe() {
    const want = this.patterns(this.interest());
    const gone = [...this.subscribed].filter((p) => !want.has(p));
    const add = [...want].filter((p) => !this.subscribed.has(p));
    if (gone.length) this.send({ type: "unsubscribe", patterns: gone });
    if (add.length) this.send({ type: "subscribe", id: `dashboard-${++this.seq}`, patterns: add, events: true });
    this.subscribed = want;
  }

  onFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    this.lastFrame = Date.now();
    switch (msg.type) {
      case "values": {
        const changed = [];
        const n = msg.signal ? msg.signal.length : 0;
        for (let i = 0; i < n; i++) {
          if (this.put(msg.signal[i], msg.ts[i], msg.value[i], msg.quality ? msg.quality[i] : "good")) changed.push(msg.signal[i]);
        }
        if (changed.length) this.dispatchEvent(new CustomEvent("values", { detail: changed }));
        break;
      }
      case "events":
        this.dispatchEvent(new CustomEvent("events", { detail: msg.events || [] }));
        break;
      case "error":
        this.detail = `live stream: ${msg.detail || "error"}`;
        this.dispatchEvent(new CustomEvent("mode", { detail: this.mode }));
        break;
      case "dropped":
        this.detail = `live stream dropped ${msg.values_dropped || 0} values (${msg.reason || "slow consumer"})`;
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------ REST

  put(signal, ts, value, q) {
    const old = this.values.get(signal);
    if (old && old.ts > ts) return false;
    if (old && old.ts === ts && old.value === value) return false;
    this.values.set(signal, { ts, value, quality: qualityName(q) });
    return true;
  }

  async fetchLatest({ subtrees, signals }) {
    const changed = [];
    const take = (items) => {
      for (const it of items) if (this.put(it.signal, Date.parse(it.ts), it.value, it.quality)) changed.push(it.signal);
    };
    const jobs = [];
    for (const under of subtrees) jobs.push(this.api.all("latest", { under }, { maxPages: 10 }).then(take));
    const list = [...signals];
    for (let i = 0; i < list.length; i += CHUNK) {
      jobs.push(this.api.get("latest", { signal: list.slice(i, i + CHUNK), limit: 1000 }).then((d) => take(d.items)));
    }
    const results = await Promise.allSettled(jobs);
    if (changed.length) this.dispatchEvent(new CustomEvent("values", { detail: changed }));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  schedulePoll(delay) {
    clearTimeout(this.pollTimer);
    if (this.stopped || this.mode === "live") return;
    this.pollTimer = setTimeout(() => this.poll(), delay);
  }

  async poll() {
    if (this.stopped || this.mode === "live" || this.polling) return;
    this.polling = true;
    try {
      const interest = this.interest();
      await this.fetchLatest({ subtrees: [...interest.subtrees], signals: [...interest.signals] });
      if (this.mode === "offline") this.setMode("polling", this.livePath ? "live stream away: polling every 2 s" : "polling every 2 s");
    } catch (err) {
      if (err && err.name === "NetworkError") this.setMode("offline", "the server does not answer");
    } finally {
      this.polling = false;
      this.schedulePoll(document.hidden ? POLL_HIDDEN_MS : POLL_MS);
    }
  }

  setMode(mode, detail) {
    this.detail = detail || "";
    if (mode === this.mode) {
      this.dispatchEvent(new CustomEvent("mode", { detail: mode }));
      return;
    }
    this.mode = mode;
    this.dispatchEvent(new CustomEvent("mode", { detail: mode }));
    if (mode === "live") clearTimeout(this.pollTimer);
    else this.schedulePoll(0);
  }
}

// The dashboard's entry point: sign-in, the top bar, the factory tree and the views
// (#/asset/<path>, #/alarms, #/map) over the REST API and the live stream.

import { Api, ApiError, initialToken, storeToken } from "./api.js";
import { LiveFeed } from "./live.js";
import { Catalog } from "./model.js";
import { Tree } from "./tree.js";
import { AssetView } from "./asset.js";
import { AlarmWatcher, AlarmsView } from "./alarms.js";
import { MapView } from "./map.js";
import { h, byId, mount, errorBox } from "./dom.js";
import * as fmt from "./format.js";

const THEME_KEY = "shopfloor.theme";

const state = {
  config: null,
  api: null,
  feed: null,
  catalog: null,
  alarms: null,
  tree: null,
  me: null,
  view: null,
  started: false,
};

const ctx = {
  get api() { return state.api; },
  get feed() { return state.feed; },
  get catalog() { return state.catalog; },
  get alarms() { return state.alarms; },
  canOperate: () => Boolean(state.me && (state.me.scope === "operate" || state.me.scope === "admin")),
  navigate: (path) => {
    location.hash = `#/asset/${path}`;
  },
};

// ------------------------------------------------------------------ theme and clock

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  window.dispatchEvent(new CustomEvent("shopfloor-theme", { detail: theme }));
}

function initTheme() {
  const saved = localStorage.getItem(THEME_KEY);
  const prefers = window.matchMedia && window.matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
  applyTheme(saved || prefers);
  byId("theme-toggle").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  });
}

// The factory's time in the top bar (the server's clock: simulated time in the demo).
function startClock() {
  const el = byId("clock");
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  const f = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  const tick = () => {
    const speed = fmt.clockSpeed();
    el.textContent = f.format(new Date(fmt.now()));
    el.title = speed === 1 ? `Factory time, in this browser's time zone (${tz})` : `Simulated factory time (×${fmt.num(speed)}), in this browser's time zone (${tz})`;
  };
  tick();
  setInterval(tick, 1000);
}

async function fetchConfig() {
  const res = await fetch("dashboard.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`dashboard.json: HTTP ${res.status}`);
  const config = await res.json();
  fmt.setClock(config);
  return config;
}

// Follow the server's clock: it may change speed (the demo's simulator starts after the
// API) or drift from the page's (a simulator that cannot keep up).
const CLOCK_SYNC_MS = 15_000;
function syncClock() {
  setInterval(() => fetchConfig().catch(() => {}), CLOCK_SYNC_MS);
}

function banner(text) {
  const el = byId("banner");
  el.hidden = !text;
  el.textContent = text || "";
}

// ------------------------------------------------------------------ sign-in

function showLogin(message) {
  stop();
  byId("boot").hidden = true;
  byId("layout").hidden = true;
  byId("who").hidden = true;
  byId("sign-out").hidden = true;
  const login = byId("login");
  login.hidden = false;
  const err = byId("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  const input = byId("token-input");
  input.value = "";
  input.focus();
}

function initLogin() {
  byId("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = byId("token-input").value.trim();
    if (!token) return;
    const btn = byId("login-submit");
    btn.disabled = true;
    btn.textContent = "Signing in…";
    try {
      const api = new Api(state.config.api, token);
      const me = await api.get("me");
      storeToken(token);
      byId("login").hidden = true;
      await start(token, me);
    } catch (err) {
      const msg = err instanceof ApiError && err.status === 401 ? `The token was not accepted: ${err.message}` : `Sign-in failed: ${err.message}`;
      const el = byId("login-error");
      el.hidden = false;
      el.textContent = msg;
    } finally {
      btn.disabled = false;
      btn.textContent = "Sign in";
    }
  });
  byId("sign-out").addEventListener("click", () => {
    storeToken(null);
    showLogin("Signed out.");
  });
}

// ------------------------------------------------------------------ start and stop

function stop() {
  if (state.view) state.view.destroy();
  state.view = null;
  if (state.feed) state.feed.stop();
  if (state.alarms) state.alarms.stop();
  state.started = false;
}

function renderLivePill() {
  const pill = byId("live-pill");
  const mode = state.feed ? state.feed.mode : "connecting";
  const label = { live: "Live", polling: "Polling", offline: "Offline", connecting: "Connecting" }[mode] || mode;
  pill.dataset.mode = mode;
  pill.querySelector(".label").textContent = label;
  pill.title = state.feed && state.feed.detail ? state.feed.detail : label;
}

async function start(token, me) {
  stop();
  const api = new Api(state.config.api, token);
  state.api = api;
  api.addEventListener("unauthorized", (ev) => {
    storeToken(null);
    showLogin(`The token is no longer accepted: ${ev.detail.message}`);
  });
  api.addEventListener("online", (ev) => banner(ev.detail ? "" : "The server does not answer — retrying…"));
  byId("boot").hidden = false;
  try {
    state.me = me || (await api.get("me"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return; // the login is shown
    byId("boot").hidden = true;
    showFatal(err, () => start(token));
    return;
  }
  const ready = await fetch(api.url("ready"), { cache: "no-store" }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
  state.catalog = new Catalog(api);
  try {
    await state.catalog.load();
  } catch (err) {
    byId("boot").hidden = true;
    showFatal(err, () => start(token, state.me));
    return;
  }
  const who = byId("who");
  who.hidden = false;
  mount(who, h("span", { class: "who-name", text: state.me.name || state.me.id }), h("span", { class: ["scope", state.me.scope], text: state.me.scope }));
  who.title = `token ${state.me.id} · ${state.me.scope} on ${state.me.subtrees.join(", ")}${state.me.expires_at ? ` · expires ${fmt.time(fmt.ms(state.me.expires_at))}` : ""}`;
  byId("sign-out").hidden = false;
  const site = [...state.catalog.assets.values()].filter((a) => a.level === "site");
  const ent = state.catalog.roots[0];
  byId("site-name").textContent = [ent && ent.name, site.length === 1 ? site[0].name : null].filter(Boolean).join(" › ");

  // ?live=off: poll the REST API instead (e.g. behind a proxy that blocks WebSockets)
  const polling = new URLSearchParams(location.search).get("live") === "off";
  state.feed = new LiveFeed(api, polling ? null : state.config.live);
  state.feed.addEventListener("mode", renderLivePill);
  state.alarms = new AlarmWatcher(api, state.feed, Boolean(ready && ready.runtime));
  state.alarms.addEventListener("change", () => state.alarms.badge());
  state.tree = new Tree(byId("tree"), byId("tree-filter"), ctx);
  mount(byId("state-legend"), fmt.STATES.map(([st, label]) => h("span", { class: "legend-item" }, h("span", { class: ["state-dot", st] }), label)));
  state.feed.start();
  state.alarms.start();
  renderLivePill();
  byId("boot").hidden = true;
  byId("layout").hidden = false;
  state.started = true;
  route();
}

function showFatal(err, retry) {
  byId("layout").hidden = false;
  mount(byId("content"), h("div", { class: "view" }, errorBox(err.message, retry)));
}

// ------------------------------------------------------------------ routing

function defaultAsset() {
  const cat = state.catalog;
  const site = [...cat.assets.values()].find((a) => a.level === "site");
  return (site || cat.roots[0] || {}).path;
}

function route() {
  if (!state.started) return;
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  let kind = "asset";
  let view;
  if (state.view) state.view.destroy();
  if (hash === "alarms") {
    kind = "alarms";
    view = new AlarmsView(ctx);
  } else if (hash === "map") {
    kind = "map";
    view = new MapView(ctx);
  } else {
    const path = hash.startsWith("asset/") ? hash.slice(6).replace(/\/$/, "") : defaultAsset();
    if (!path) {
      view = { el: h("div", { class: "view" }, errorBox("This token sees no assets.")), destroy() {} };
    } else {
      view = new AssetView(path, ctx);
      state.tree.select(path);
    }
  }
  state.view = view;
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === kind));
  const content = byId("content");
  mount(content, view.el);
  content.scrollTop = 0;
  const name = kind === "asset" && view.asset ? view.asset.name : kind === "alarms" ? "Alarms" : kind === "map" ? "AGV map" : "";
  document.title = name ? `${name} · shopfloor` : "shopfloor";
}

// ------------------------------------------------------------------ boot

async function boot() {
  initTheme();
  initLogin();
  try {
    state.config = await fetchConfig();
  } catch (err) {
    startClock();
    byId("boot").hidden = true;
    showFatal(new Error(`The server does not answer (${err.message}).`), () => location.reload());
    return;
  }
  startClock();
  syncClock();
  fmt.setUnits(state.config.units);
  window.addEventListener("hashchange", route);
  const token = initialToken();
  if (!token) {
    showLogin();
    return;
  }
  await start(token);
}

boot();

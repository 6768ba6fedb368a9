// Small DOM helpers: elements built from data, never from HTML strings (the page's
// Content-Security-Policy forbids inline styles, and no value of the factory is trusted).

const SVG_NS = "http://www.w3.org/2000/svg";

function assign(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "text") el.textContent = value;
    else if (key === "style") Object.assign(el.style, value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("div", {class: "x"}, child, "text"). */
export function h(tag, attrs, ...children) {
  return append(assign(document.createElement(tag), attrs), children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return append(assign(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** A reference to a symbol of the icon sprite. */
export function icon(name, cls = "icon") {
  return s("svg", { class: cls, viewBox: "0 0 16 16", "aria-hidden": "true" }, s("use", { href: `web/icons.svg#${name}` }));
}

/** Replace every child of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function byId(id) {
  return document.getElementById(id);
}

/** A loading placeholder of `lines` shimmering bars. */
export function skeleton(lines = 3, cls = "") {
  return h("div", { class: ["skeleton", cls], "aria-busy": "true", "aria-label": "Loading" },
    Array.from({ length: lines }, (_, i) => h("div", { class: "sk-line", style: { width: `${90 - i * 17}%` } })));
}

/** An error panel with the message and a retry button. */
export function errorBox(message, retry) {
  return h("div", { class: "error-box", role: "alert" },
    icon("warn", "icon warn"),
    h("div", { class: "error-text" }, h("strong", { text: "Could not load" }), h("span", { text: message })),
    retry ? h("button", { class: "btn small", type: "button", onclick: retry, text: "Retry" }) : null);
}

/** An empty-state note. */
export function emptyBox(title, detail, ...actions) {
  return h("div", { class: "empty-box" }, h("strong", { text: title }), detail ? h("span", { text: detail }) : null, ...actions);
}

let toastSeq = 0;
/** A short message at the bottom right; kind: "ok" | "error" | "info". */
export function toast(message, kind = "info", ms = 4500) {
  const box = byId("toasts");
  const el = h("div", { class: ["toast", kind], role: kind === "error" ? "alert" : "status", "data-seq": ++toastSeq }, message);
  box.append(el);
  setTimeout(() => el.classList.add("leaving"), ms - 300);
  setTimeout(() => el.remove(), ms);
}

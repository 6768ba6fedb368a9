// The REST client: the token (session storage, or #token=… in the URL), JSON requests,
// RFC 9457 problems as ApiError, and paging through `next_cursor`.

const TOKEN_KEY = "shopfloor.token";

/** An API answer that is not 2xx: `status`, `title`, `detail` of the problem document. */
export class ApiError extends Error {
  constructor(status, problem, url) {
    const detail = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem || {};
    this.url = url;
  }
}

/** The server could not be reached at all. */
export class NetworkError extends Error {
  constructor(url, cause) {
    super("the server does not answer");
    this.name = "NetworkError";
    this.url = url;
    this.cause = cause;
  }
}

/** Take `#token=…` from the address (so that it never stays in the history), else storage. */
export function initialToken() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const fromHash = hash.get("token");
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    hash.delete("token");
    const rest = hash.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    return fromHash;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.append(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

/** Encode a signal or asset path for a `{path:path}` route, segment by segment. */
export function pathParam(path) {
  return String(path).split("/").map(encodeURIComponent).join("/");
}

export class Api extends EventTarget {
  /** `base`: the API prefix relative to the page ("api/v1"). */
  constructor(base, token) {
    super();
    this.base = base.replace(/\/$/, "");
    this.token = token;
    this.online = true;
  }

  url(path, params) {
    return `${this.base}/${path.replace(/^\//, "")}${query(params)}`;
  }

  async request(method, path, { params, body, signal } = {}) {
    const url = this.url(path, params);
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: "no-store" });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      this.setOnline(false);
      throw new NetworkError(url, err);
    }
    this.setOnline(true);
    const type = res.headers.get("content-type") || "";
    const data = type.includes("json") ? await res.json().catch(() => null) : null;
    if (!res.ok) {
      const error = new ApiError(res.status, data, url);
      if (res.status === 401) this.dispatchEvent(new CustomEvent("unauthorized", { detail: error }));
      throw error;
    }
    return data;
  }

  setOnline(online) {
    if (online === this.online) return;
    this.online = online;
    this.dispatchEvent(new CustomEvent("online", { detail: online }));
  }

  get(path, params, opts = {}) {
    return this.request("GET", path, { ...opts, params });
  }

  post(path, body, params) {
    return this.request("POST", path, { body, params });
  }

  /** Every item of a paged list (at most `maxPages` pages of `limit`). */
  async all(path, params = {}, { limit = 1000, maxPages = 50, signal } = {}) {
    const items = [];
    let cursor;
    for (let page = 0; page < maxPages; page++) {
      const data = await this.get(path, { ...params, limit, cursor }, { signal });
      items.push(...data.items);
      cursor = data.next_cursor;
      if (!cursor) break;
    }
    return items;
  }
}

// @ts-check
/** The Studio's access to the query service: REST helpers and the live WebSocket feed.
 * The dispatcher and the replay service are reached through the query service's proxy
 * (DISPATCHER, REPLAY prefixes), so the browser only ever talks to this origin.
 *
 * A Loom that requires API keys: the key the user gave is kept in localStorage (KEY_STORAGE)
 * and sent as `Authorization: Bearer <key>` on every request, and as the `access_token` query
 * parameter of the live WebSocket (a browser cannot set its headers). A 401 (no key, or one
 * the server does not know) is told to the onAuthProblem listeners (the shell asks for a key);
 * a 403 (the key lacks a scope) is an ApiError like any other, shown where the call was made. */

export const DISPATCHER = "/studio-api/dispatcher";
export const REPLAY = "/studio-api/replay";
export const KEY_STORAGE = "loom.apiKey";
/** What the key check reads: any query route needs the `read` scope. */
const PROBE = "/api/tasks?limit=1";

/** The stored API key, or null. */
export function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || null;
  } catch {
    return null; // storage disabled: no key
  }
}

/** Keep `key` for the next requests (and page loads). @param {string} key */
export function setKey(key) {
  localStorage.setItem(KEY_STORAGE, key);
}

/** Forget the stored key. */
export function forgetKey() {
  try {
    localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* nothing stored */
  }
}

/** A key as shown: its first 9 characters ("loom_abcd…"). @param {string} key */
export function keyHint(key) {
  return key.length > 9 ? `${key.slice(0, 9)}…` : key;
}

/** Request headers with the key's Authorization when one is stored (or `key` is given).
 * @param {Record<string, string>} headers @param {string | null} [key] */
export function withAuth(headers, key = getKey()) {
  return key ? { ...headers, authorization: `Bearer ${key}` } : headers;
}

/** @typedef {{kind: "unauthorized" | "forbidden", message: string}} AuthProblem */
/** @type {Set<(p: AuthProblem) => void>} */
const authListeners = new Set();
/** Set by the first 401: the live feeds stop reconnecting until the page has a key. */
let refused = false;

/** Be told of a refused key: `unauthorized` (401, a key is needed) or `forbidden` (the live
 * feed's key lacks the `read` scope). @param {(p: AuthProblem) => void} fn */
export function onAuthProblem(fn) {
  authListeners.add(fn);
  return () => authListeners.delete(fn);
}

/** @param {AuthProblem} problem */
function authProblem(problem) {
  if (problem.kind === "unauthorized") refused = true;
  authListeners.forEach((fn) => fn(problem));
}

/**
 * Whether the server takes `key` (or needs none): `ok` with its status, else the refusal's message.
 * A key that lacks `read` (403) is a key the server knows: it is taken.
 * @param {string} key
 * @returns {Promise<{ok: boolean, status: number, message: string}>}
 */
export async function checkKey(key) {
  const resp = await fetch(PROBE, { headers: withAuth({ accept: "application/json" }, key) });
  if (resp.status !== 401) return { ok: true, status: resp.status, message: "" };
  let message = "the key was refused";
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    /* not the error body */
  }
  return { ok: false, status: resp.status, message };
}

/** An HTTP error answer, with the Loom error body when there is one. */
export class ApiError extends Error {
  /** @param {number} status @param {string} message @param {any} body */
  constructor(status, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

/**
 * A path with its query string; null, undefined and "" values are left out, arrays repeat.
 * @param {string} path
 * @param {Record<string, any>} [params]
 */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === null || v === undefined || v === "") continue;
    if (Array.isArray(v)) v.forEach((item) => q.append(k, String(item)));
    else q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}${path.includes("?") ? "&" : "?"}${s}` : path;
}

/** The answer's body: JSON when it parses, else its text (null when empty). @param {Response} resp */
async function bodyOf(resp) {
  const text = await resp.text();
  /** @type {any} */
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  return body;
}

/** @param {Response} resp */
async function answer(resp) {
  const body = await bodyOf(resp);
  if (!resp.ok) throw refusal(resp, body);
  return body;
}

/** The ApiError of a refused request; a 401 is also told to the auth listeners.
 * @param {Response} resp @param {any} body */
function refusal(resp, body) {
  const err = body && typeof body === "object" && body.error ? body.error : null;
  const message = err ? `${err.code}: ${err.message}` : `HTTP ${resp.status}`;
  if (resp.status === 401) authProblem({ kind: "unauthorized", message: err ? err.message : message });
  return new ApiError(resp.status, message, body);
}

/**
 * GET a JSON answer.
 * @param {string} path
 * @param {Record<string, any>} [params]
 * @param {AbortSignal} [signal]
 * @returns {Promise<any>}
 */
export async function getJSON(path, params, signal) {
  const resp = await fetch(withQuery(path, params), { headers: withAuth({ accept: "application/json" }), signal });
  return answer(resp);
}

/**
 * GET a file's bytes (a download the browser could not authorize as a plain link).
 * @param {string} path
 * @param {Record<string, any>} [params]
 * @returns {Promise<Blob>}
 */
export async function getBlob(path, params) {
  const resp = await fetch(withQuery(path, params), { headers: withAuth({}) });
  if (resp.ok) return resp.blob();
  throw refusal(resp, await bodyOf(resp));
}

/**
 * POST a JSON body (or none) and read the JSON answer.
 * @param {string} path
 * @param {unknown} [body]
 * @param {Record<string, any>} [params]
 * @returns {Promise<any>}
 */
export async function postJSON(path, body, params) {
  /** @type {RequestInit} */
  const init = { method: "POST", headers: withAuth({ accept: "application/json" }) };
  if (body !== undefined) {
    init.headers = { ...init.headers, "content-type": "application/json" };
    init.body = JSON.stringify(body);
  }
  return answer(await fetch(withQuery(path, params), init));
}

/** @typedef {{event_type?: string|string[], task_id?: string|string[], trace_id?: string|string[], node_id?: string|string[], session_id?: string|string[]}} LiveFilters */
/** @typedef {{type: "event", data: any} | {type: "chunk", data: any} | {type: "dropped", count: number} | {type: "subscribed", filters: any} | {type: "error", reason: string}} LiveMessage */

/** @type {Set<(up: boolean) => void>} */
const liveListeners = new Set();
let liveOpen = 0;

/** Be told whenever some live socket opens or all close (the shell's indicator). @param {(up: boolean) => void} fn */
export function onLiveState(fn) {
  liveListeners.add(fn);
  fn(liveOpen > 0);
  return () => liveListeners.delete(fn);
}

/** @param {number} delta */
function liveChanged(delta) {
  liveOpen += delta;
  liveListeners.forEach((fn) => fn(liveOpen > 0));
}

/**
 * Open the live feed (WS /ws/events) with server-side filters; reconnects after a drop.
 * @param {LiveFilters} filters
 * @param {(msg: LiveMessage) => void} onMessage
 * @returns {{close: () => void, setFilters: (f: LiveFilters) => void}}
 */
export function openLive(filters, onMessage) {
  let current = cleanFilters(filters);
  /** @type {WebSocket | null} */
  let ws = null;
  let closed = false;
  let wasOpen = false;
  let backoff = 250;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let retry;

  const connect = () => {
    const key = getKey();
    const token = key ? `?access_token=${encodeURIComponent(key)}` : "";
    const sock = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/events${token}`);
    ws = sock;
    sock.onopen = () => {
      backoff = 250;
      wasOpen = true;
      liveChanged(1);
      sock.send(JSON.stringify({ filters: current }));
    };
    sock.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      onMessage(msg);
    };
    sock.onclose = async () => {
      const opened = wasOpen;
      if (wasOpen) liveChanged(-1);
      wasOpen = false;
      if (closed || refused) return;
      // a handshake refused for its key looks like any failed one here: ask the REST side why
      if (!opened && (await keyRefused(onMessage))) return;
      if (closed || refused) return;
      retry = setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  };
  connect();
  return {
    close() {
      closed = true;
      clearTimeout(retry);
      if (ws) ws.close();
    },
    setFilters(f) {
      current = cleanFilters(f);
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ filters: current }));
    },
  };
}

/**
 * After a live socket failed to open: true when the server refuses the key (then the feed
 * stops: a 401 has asked for a key, a 403 is told as the feed's error); false when it takes
 * the key or does not answer (the feed tries again).
 * @param {(msg: LiveMessage) => void} onMessage
 */
async function keyRefused(onMessage) {
  try {
    const resp = await fetch(PROBE, { headers: withAuth({ accept: "application/json" }) });
    if (resp.status !== 401 && resp.status !== 403) return false;
    const err = refusal(resp, await bodyOf(resp));
    if (resp.status === 403) {
      const reason = `live feed: ${err.message}`;
      onMessage({ type: "error", reason });
      authProblem({ kind: "forbidden", message: reason });
    }
    return true;
  } catch {
    return false; // the server is away: the reconnect finds out when it is back
  }
}

/** Filters without empty values (the feed refuses an empty list). @param {LiveFilters} f */
function cleanFilters(f) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const [k, v] of Object.entries(f || {})) {
    if (v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length)) continue;
    out[k] = v;
  }
  return out;
}

// @ts-check
/** The Studio's access to the query service: REST helpers and the live WebSocket feed.
 * The dispatcher and the replay service are reached through the query service's proxy
 * (DISPATCHER, REPLAY prefixes), so the browser only ever talks to this origin. */

export const DISPATCHER = "/studio-api/dispatcher";
export const REPLAY = "/studio-api/replay";

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

/** @param {Response} resp */
async function answer(resp) {
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
  if (!resp.ok) {
    const err = body && typeof body === "object" && body.error ? body.error : null;
    const message = err ? `${err.code}: ${err.message}` : `HTTP ${resp.status}`;
    throw new ApiError(resp.status, message, body);
  }
  return body;
}

/**
 * GET a JSON answer.
 * @param {string} path
 * @param {Record<string, any>} [params]
 * @param {AbortSignal} [signal]
 * @returns {Promise<any>}
 */
export async function getJSON(path, params, signal) {
  const resp = await fetch(withQuery(path, params), { headers: { accept: "application/json" }, signal });
  return answer(resp);
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
  const init = { method: "POST", headers: { accept: "application/json" } };
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
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/events`;
    const sock = new WebSocket(url);
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
    sock.onclose = () => {
      if (wasOpen) liveChanged(-1);
      wasOpen = false;
      if (closed) return;
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

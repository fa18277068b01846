// @ts-check
/** Formatting and DOM helpers shared by the Studio's views. */

/**
 * Build an element: h("div", {class: "x", onclick: fn}, "text", child).
 * @param {string} tag
 * @param {Record<string, any> | null} [attrs]
 * @param {...(Node | string | number | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = String(v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k in el && typeof v !== "string") /** @type {any} */ (el)[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** @param {HTMLElement} el */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Seconds as "850 ms", "12.3 s", "4m 05s", "2h 03m". @param {number | null | undefined} s */
export function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  if (s < 0) s = 0;
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Token counts as "950", "12.3k", "4.1M". @param {number | null | undefined} n */
export function fmtTokens(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

/** USD as "$0.0012", "$1.23". @param {number | null | undefined} usd */
export function fmtCost(usd) {
  if (usd === null || usd === undefined || !Number.isFinite(usd)) return "—";
  if (usd === 0) return "$0";
  if (usd < 0.01) return `$${usd.toPrecision(2)}`;
  return `$${usd.toFixed(2)}`;
}

/** An ISO time as local "HH:MM:SS.mmm" (with the date when not today). @param {string | null | undefined} iso */
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return t;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
}

/** "3s ago", "5m ago", "2h ago", "4d ago". @param {string | null | undefined} iso */
export function fmtAgo(iso) {
  if (!iso) return "—";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(s)) return "—";
  if (s < 60) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** @param {number} n */
function pad(n) {
  return String(n).padStart(2, "0");
}

/** Milliseconds since the epoch of an ISO time with up to microseconds. @param {string} iso */
export function timeMs(iso) {
  return Date.parse(iso);
}

/** A short id: the first 8 characters. @param {string | null | undefined} id */
export function shortId(id) {
  if (!id) return "—";
  return id.length > 12 ? id.slice(0, 8) + "…" : id;
}

/** JSON pretty-printed, or the text as it is. @param {unknown} value */
export function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** The CSS class of a task status or event type. @param {string | null | undefined} status */
export function statusClass(status) {
  return `st st-${String(status || "unknown").replace(/[^a-z_]/gi, "")}`;
}

/**
 * Call fn at most once per animation frame, with the latest arguments.
 * @param {() => void} fn
 */
export function rafThrottle(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

/**
 * @template {(...args: any[]) => void} F
 * @param {F} fn
 * @param {number} ms
 * @returns {(...args: Parameters<F>) => void}
 */
export function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Show a short message at the bottom of the screen. @param {string} text @param {"ok"|"error"} [kind] */
export function toast(text, kind = "ok") {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = text;
  el.className = `toast show ${kind}`;
  clearTimeout(/** @type {any} */ (el).__timer);
  /** @type {any} */ (el).__timer = setTimeout(() => (el.className = "toast"), 4000);
}

/**
 * Offer text as a file download.
 * @param {string} filename
 * @param {BlobPart[]} parts
 * @param {string} type
 */
export function download(filename, parts, type) {
  const url = URL.createObjectURL(new Blob(parts, { type }));
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * Report a Studio moment to an optional test / measurement hook (window.__loomStudioHook).
 * @param {string} kind
 * @param {unknown} payload
 */
export function hook(kind, payload) {
  const fn = /** @type {any} */ (window).__loomStudioHook;
  if (typeof fn === "function") {
    try {
      fn(kind, payload);
    } catch {
      /* a hook never breaks the UI */
    }
  }
}

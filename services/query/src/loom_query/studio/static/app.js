// @ts-check
/** The Studio shell: navigation, the hash router and keyboard shortcuts. Each route's view is
 * the module ./views/<name>.js, imported when first shown; `mount(root, ctx)` renders it and
 * may return a cleanup function, called when the route changes. */

import * as api from "./api.js";
import { setupAuth } from "./auth.js";
import { h, clear } from "./util.js";

/** @typedef {{name: string, label: string, key: string, params: string[], nav: string | null}} Route */

/** @type {Route[]} */
export const ROUTES = [
  { name: "tasks", label: "Tasks", key: "1", params: [], nav: "#/tasks" },
  { name: "trace", label: "Trace", key: "", params: ["taskId"], nav: null },
  { name: "live", label: "Live", key: "2", params: [], nav: "#/live" },
  { name: "approvals", label: "Approvals", key: "3", params: [], nav: "#/approvals" },
  { name: "topology", label: "Topology", key: "4", params: [], nav: "#/topology" },
  { name: "metrics", label: "Metrics", key: "5", params: [], nav: "#/metrics" },
  { name: "memory", label: "Memory", key: "6", params: ["nodeId"], nav: "#/memory" },
  { name: "replay", label: "Replay", key: "7", params: ["taskId"], nav: "#/replay" },
  { name: "compare", label: "Compare", key: "8", params: ["taskA", "taskB"], nav: "#/compare" },
];

/**
 * The route and its parameters of a location hash ("#/trace/abc" -> trace, {taskId: "abc"}).
 * @param {string} hash
 * @returns {{route: Route, params: Record<string, string>}}
 */
export function parseHash(hash) {
  const [path, query] = hash.replace(/^#\/?/, "").split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const route = ROUTES.find((r) => r.name === parts[0]) || ROUTES[0];
  /** @type {Record<string, string>} */
  const params = {};
  route.params.forEach((p, i) => {
    if (parts[i + 1] !== undefined) params[p] = parts[i + 1];
  });
  if (query) new URLSearchParams(query).forEach((v, k) => (params[k] = v));
  return { route, params };
}

const root = /** @type {HTMLElement} */ (document.getElementById("view"));
const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));
/** @type {(() => void) | void} */
let cleanup;
let generation = 0;

/** @param {string} hash */
function navigate(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

function renderNav() {
  clear(nav);
  for (const r of ROUTES) {
    if (!r.nav) continue;
    nav.append(
      h("a", { href: r.nav, "data-route": r.name, title: r.key ? `${r.label} (${r.key})` : r.label }, r.label),
    );
  }
}

async function show() {
  const { route, params } = parseHash(location.hash || "#/tasks");
  const mine = ++generation;
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.warn("cleanup failed", err);
    }
    cleanup = undefined;
  }
  for (const a of nav.querySelectorAll("a")) {
    a.classList.toggle("active", a.getAttribute("data-route") === route.name);
  }
  document.title = `${route.label} · Loom Studio`;
  clear(root);
  root.dataset.view = route.name;
  const container = h("div", { class: `view view-${route.name}` });
  root.append(container);
  let mod;
  try {
    mod = await import(`./views/${route.name}.js`);
  } catch (err) {
    if (mine !== generation) return;
    container.append(h("div", { class: "empty error" }, `The ${route.label} view could not be loaded: ${err}`));
    return;
  }
  if (mine !== generation) return;
  try {
    cleanup = mod.mount(container, { params, navigate, api });
  } catch (err) {
    container.append(h("div", { class: "empty error" }, `The ${route.label} view failed: ${err}`));
    console.warn(err);
  }
}

/** @param {KeyboardEvent} ev */
function onKey(ev) {
  const target = /** @type {HTMLElement} */ (ev.target);
  if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) {
    if (ev.key === "Escape") target.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const route = ROUTES.find((r) => r.key && r.key === ev.key);
  if (route && route.nav) {
    navigate(route.nav);
    ev.preventDefault();
  } else if (ev.key === "g") {
    document.getElementById("goto-input")?.focus();
    ev.preventDefault();
  } else if (ev.key === "?") {
    alert(
      "Keys: 1-8 views · g open a task id · / filter · p pause live updates · j/k move · Enter open · Esc close",
    );
  }
}

function setupGoto() {
  const form = /** @type {HTMLFormElement} */ (document.getElementById("goto"));
  const input = /** @type {HTMLInputElement} */ (document.getElementById("goto-input"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = input.value.trim();
    if (id) navigate(`#/trace/${encodeURIComponent(id)}`);
    input.value = "";
    input.blur();
  });
}

function setupConn() {
  const el = /** @type {HTMLElement} */ (document.getElementById("conn"));
  api.onLiveState((up) => {
    el.classList.toggle("up", up);
    el.title = up ? "live feed connected" : "live feed not connected";
  });
}

renderNav();
setupAuth();
setupGoto();
setupConn();
document.addEventListener("keydown", onKey);
window.addEventListener("hashchange", show);
show();

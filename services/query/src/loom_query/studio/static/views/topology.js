// @ts-check
/**
 * Topology view (#/topology): agents, tools, LLMs and services as a Cytoscape graph of
 * /api/topology, polled and updated in place; a node's recent events in a side panel.
 */
import cytoscape from "../vendor/cytoscape.esm.min.js";

const POLL_MS = 3000;
const EVENTS_LIMIT = 50;
const ERROR_SAMPLE = 1000;
const ERROR_TYPES = new Set(["error", "task.failed", "task.dead"]);
/** the event that counts one call along an edge, by the kind of its target */
const CALL_TYPES = { tool: "tool.result", llm: "llm.request", agent: "agent.action" };

const STYLE = `
.topology-view { display: flex; flex-direction: column; gap: 8px; height: calc(100vh - 120px); min-height: 420px; }
.topology-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: end; }
.topology-bar label { display: flex; flex-direction: column; font-size: 12px; gap: 2px; }
.topology-main { display: flex; gap: 8px; flex: 1; min-height: 0; }
.topology-graph { flex: 1; min-width: 0; border: 1px solid #8884; border-radius: 6px; background: #fff1; }
.topology-side { width: 360px; overflow: auto; border: 1px solid #8884; border-radius: 6px; padding: 8px; font-size: 13px; }
.topology-side table { width: 100%; border-collapse: collapse; }
.topology-side td { border-bottom: 1px solid #8882; padding: 2px 4px; vertical-align: top; }
.topology-status { font-size: 12px; opacity: .75; }
.topology-error { color: #c33; }
.topology-legend span { margin-right: 10px; font-size: 12px; }
`;

/** @param {string} id @param {string} css */
function injectStyle(id, css) {
  if (document.getElementById(id)) return;
  const style = document.createElement("style");
  style.id = id;
  style.textContent = css;
  document.head.appendChild(style);
}

/**
 * A DOM element with attributes and children (strings become text nodes).
 * @param {string} tag @param {Record<string, any>} [attrs] @param {...(Node|string|null|undefined)} children
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** @param {Record<string, any>} params @returns {Record<string, string>} the set ones, as strings */
function clean(params) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const [key, value] of Object.entries(params))
    if (value !== undefined && value !== null && value !== "") out[key] = String(value);
  return out;
}

/** @param {string} value a datetime-local value @returns {string|undefined} ISO 8601 UTC */
function isoOf(value) {
  if (!value) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

/** @param {Date} date @returns {string} the datetime-local value of a time */
function localValue(date) {
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** @param {any} event @returns {boolean} whether an event reports a failure */
function isError(event) {
  return ERROR_TYPES.has(event.type) || Boolean(event.data && event.data.is_error);
}

const COLOURS = { agent: "#3b82f6", tool: "#10b981", llm: "#a855f7", service: "#6b7280" };
const SHAPES = { agent: "round-rectangle", tool: "diamond", llm: "hexagon", service: "ellipse" };

/** @param {number} rate error rate 0..1 @returns {string} the edge colour */
function edgeColour(rate) {
  if (rate <= 0) return "#94a3b8";
  if (rate < 0.1) return "#f59e0b";
  return "#ef4444";
}

/** @param {any} edge topology edge @returns {string} */
function edgeId(edge) {
  return `${edge.from}->${edge.to}`;
}

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string,string>, navigate: (hash: string) => void, api: any}} ctx
 */
export function mount(root, ctx) {
  injectStyle("topology-style", STYLE);
  /** @param {string} path @param {Record<string, any>} [params] */
  const get = (path, params = {}) => ctx.api.getJSON(path, clean(params));
  const trace = /** @type {HTMLInputElement} */ (
    h("input", { name: "trace", placeholder: "trace id", size: 34 })
  );
  const start = /** @type {HTMLInputElement} */ (h("input", { name: "start", type: "datetime-local" }));
  const end = /** @type {HTMLInputElement} */ (h("input", { name: "end", type: "datetime-local" }));
  const status = h("span", { class: "topology-status", "data-testid": "topology-status" });
  const graph = h("div", { class: "topology-graph", "data-testid": "topology-graph" });
  const side = h(
    "aside",
    { class: "topology-side", "data-testid": "topology-side" },
    h("p", { text: "Click a node to see its recent events." }),
  );
  if (ctx.params.trace) trace.value = ctx.params.trace;

  /** @param {number} minutes */
  const preset = (minutes) => {
    const now = new Date();
    start.value = localValue(new Date(now.getTime() - minutes * 60_000));
    end.value = "";
    refresh(true);
  };
  root.append(
    h(
      "div",
      { class: "topology-view" },
      h(
        "form",
        {
          class: "topology-bar",
          onsubmit: (/** @type {Event} */ e) => {
            e.preventDefault();
            refresh(true);
          },
        },
        h("label", {}, "Trace id", trace),
        h("label", {}, "From", start),
        h("label", {}, "To", end),
        h("button", { type: "submit" }, "Apply"),
        h("button", { type: "button", onclick: () => preset(15) }, "15 min"),
        h("button", { type: "button", onclick: () => preset(60) }, "1 h"),
        h("button", { type: "button", onclick: () => preset(24 * 60) }, "24 h"),
        h(
          "button",
          {
            type: "button",
            onclick: () => {
              trace.value = start.value = end.value = "";
              refresh(true);
            },
          },
          "Reset",
        ),
        h(
          "span",
          { class: "topology-legend" },
          ...Object.entries(COLOURS).map(([type, colour]) =>
            h("span", { style: `color:${colour}` }, `■ ${type}`),
          ),
        ),
        status,
      ),
      h("div", { class: "topology-main" }, graph, side),
    ),
  );

  const cy = cytoscape({
    container: graph,
    elements: [],
    maxZoom: 2,
    minZoom: 0.2,
    style: [
      {
        selector: "node",
        style: {
          label: "data(label)",
          "background-color": "data(colour)",
          shape: /** @type {any} */ ("data(shape)"),
          color: "#111",
          "text-outline-color": "#fff",
          "text-outline-width": 2,
          "font-size": 11,
          "text-valign": "bottom",
          "text-margin-y": 4,
          width: "data(size)",
          height: "data(size)",
        },
      },
      { selector: "node:selected", style: { "border-width": 4, "border-color": "#f97316" } },
      {
        selector: "edge",
        style: {
          label: "data(label)",
          width: "data(width)",
          "line-color": "data(colour)",
          "target-arrow-color": "data(colour)",
          "target-arrow-shape": "triangle",
          "curve-style": "bezier",
          "font-size": 10,
          "text-background-color": "#fff",
          "text-background-opacity": 0.8,
          "text-background-padding": "1px",
        },
      },
    ],
  });
  // tests and the console reach the graph through the container
  /** @type {any} */ (graph).cy = cy;
  cy.on("tap", "node", (/** @type {any} */ e) => showNode(e.target.data()));

  /** @type {Map<string, {count: number, calls: number, errors: number}>} per edge, while its event count is the same */
  const errorCache = new Map();
  let timer = 0;
  let stopped = false;
  let generation = 0;
  let selected = "";

  /** @returns {Record<string,string|undefined>} the filters as query parameters */
  function filters() {
    return {
      trace_id: trace.value.trim() || undefined,
      start_time: isoOf(start.value),
      end_time: isoOf(end.value),
    };
  }

  /** @param {any} node a topology node @returns {Record<string, any>} the parameters of its events */
  function eventsFilter(node) {
    const f = filters();
    const base = { trace_id: f.trace_id, start_time: f.start_time, end_time: f.end_time };
    if (node.type === "agent") return { ...base, node_id: node.nodeId || node.name };
    if (node.type === "service") return { ...base, node_id: node.id };
    return { ...base, subject: node.id };
  }

  /** The calls along an edge and how many failed, from its most recent events (at most
   * ERROR_SAMPLE): a call is a tool.result (tool), an llm.request (LLM) or a delegation
   * (agent.action); a failure an event that reports one. Cached while the edge's count holds.
   * @param {any} edge @returns {Promise<{calls: number, errors: number}>} */
  async function edgeErrors(edge) {
    const key = edgeId(edge);
    const cached = errorCache.get(key);
    if (cached && cached.count === edge.count) return cached;
    const from = edge.from.startsWith("agent:") ? edge.from.slice(6) : edge.from;
    const f = filters();
    const page = await get("/api/events", {
      node_id: from,
      subject: edge.to,
      trace_id: f.trace_id,
      start_time: f.start_time,
      end_time: f.end_time,
      limit: ERROR_SAMPLE,
    });
    const events = page.events || [];
    const kind = String(edge.to).split(":", 1)[0];
    const callType = CALL_TYPES[/** @type {keyof CALL_TYPES} */ (kind)];
    const calls = callType
      ? events.filter((/** @type {any} */ e) => e.type === callType).length
      : events.length;
    const entry = { count: edge.count, calls, errors: events.filter(isError).length };
    errorCache.set(key, entry);
    return entry;
  }

  /** Fetch the topology and merge it into the graph (add, update, remove in place).
   * @param {boolean} [filtersChanged] */
  async function refresh(filtersChanged = false) {
    const mine = ++generation;
    window.clearTimeout(timer);
    if (filtersChanged) errorCache.clear();
    try {
      const topo = await get("/api/topology", filters());
      if (stopped || mine !== generation) return;
      const errors = await Promise.all(
        topo.edges.map((/** @type {any} */ e) => edgeErrors(e).catch(() => ({ calls: 0, errors: 0 }))),
      );
      if (stopped || mine !== generation) return;
      const added = merge(topo, errors);
      if (added)
        cy.layout(
          /** @type {any} */ ({ name: "cose", animate: false, randomize: false, fit: true, padding: 30 }),
        ).run();
      status.classList.remove("topology-error");
      status.textContent = `${topo.nodes.length} nodes, ${topo.edges.length} edges · updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (stopped) return;
      status.classList.add("topology-error");
      status.textContent = `topology: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (!stopped && mine === generation) timer = window.setTimeout(() => refresh(), POLL_MS);
  }

  /** @param {any} topo @param {{calls: number, errors: number}[]} errors @returns {boolean} whether an element was added */
  function merge(topo, errors) {
    let added = false;
    const seen = new Set();
    cy.batch(() => {
      for (const node of topo.nodes) {
        seen.add(node.id);
        const data = {
          ...node,
          label: `${node.name}${node.events ? ` (${node.events})` : ""}`,
          colour: COLOURS[/** @type {keyof COLOURS} */ (node.type)] || COLOURS.service,
          shape: SHAPES[/** @type {keyof SHAPES} */ (node.type)] || "ellipse",
          size: Math.min(70, 26 + 6 * Math.log2(1 + node.events + node.callsIn)),
        };
        const existing = cy.getElementById(node.id);
        if (existing.nonempty()) existing.data(data);
        else {
          cy.add({ group: "nodes", data });
          added = true;
        }
      }
      topo.edges.forEach((/** @type {any} */ edge, /** @type {number} */ i) => {
        const id = edgeId(edge);
        seen.add(id);
        const { calls, errors: failed } = errors[i];
        const rate = calls ? Math.min(1, failed / calls) : 0;
        const data = {
          id,
          source: edge.from,
          target: edge.to,
          count: edge.count,
          calls,
          errors: failed,
          errorRate: rate,
          label: rate > 0 ? `${edge.count} · ${(rate * 100).toFixed(0)}% err` : String(edge.count),
          width: Math.min(10, 1 + 1.5 * Math.log2(1 + edge.count)),
          colour: edgeColour(rate),
        };
        const existing = cy.getElementById(id);
        if (existing.nonempty()) existing.data(data);
        else if (cy.getElementById(edge.from).nonempty() && cy.getElementById(edge.to).nonempty()) {
          cy.add({ group: "edges", data });
          added = true;
        }
      });
      cy.elements()
        .filter((/** @type {any} */ el) => !seen.has(el.id()))
        .remove();
    });
    return added;
  }

  /** @param {any} node */
  async function showNode(node) {
    selected = node.id;
    side.replaceChildren();
    side.append(
      h("h3", { text: node.name }),
      h("p", { text: `${node.type} · ${node.events} events · ${node.callsIn} in · ${node.callsOut} out` }),
      ...(node.type === "agent"
        ? [h("a", { href: `#/memory/${encodeURIComponent(node.nodeId || node.name)}` }, "Memory")]
        : []),
      h("p", { text: "Loading events…" }),
    );
    try {
      const page = await get("/api/events", { ...eventsFilter(node), limit: EVENTS_LIMIT });
      if (stopped || selected !== node.id) return;
      const rows = (page.events || []).map((/** @type {any} */ event) =>
        h(
          "tr",
          { class: "topology-event", "data-type": event.type },
          h("td", { text: new Date(event.time).toLocaleTimeString() }),
          h("td", { class: isError(event) ? "topology-error" : undefined, text: event.type }),
          h(
            "td",
            {},
            event.taskid
              ? h(
                  "a",
                  { href: `#/trace/${encodeURIComponent(event.taskid)}`, title: event.traceid || "" },
                  "trace",
                )
              : "",
          ),
        ),
      );
      side.lastElementChild?.replaceWith(
        rows.length
          ? h("table", { "data-testid": "topology-events" }, h("tbody", {}, ...rows))
          : h("p", { "data-testid": "topology-events", text: "No events in this range." }),
      );
    } catch (err) {
      side.lastElementChild?.replaceWith(
        h("p", {
          class: "topology-error",
          text: `events: ${err instanceof Error ? err.message : String(err)}`,
        }),
      );
    }
  }

  refresh(true);
  return () => {
    stopped = true;
    window.clearTimeout(timer);
    cy.destroy();
  };
}

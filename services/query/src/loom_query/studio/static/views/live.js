// @ts-check
/** #/live: every event of the live feed (WS /ws/events) as it happens, newest first, with
 * filters (type, agent, task, session on the server; data.<field>=value here), pause and
 * counts. At most `keep` events stay in memory and only the visible rows are in the DOM, so a
 * feed of thousands of events a second stays responsive. */

import { h, clear, fmtTime, pretty, shortId, hook, rafThrottle, debounce } from "../util.js";
import { VirtualList } from "../virtual.js";

const ROW = 24;

/**
 * Parse "data.tool=calculator status=failed" into [["tool","calculator"], ["status","failed"]].
 * @param {string} text
 * @returns {[string[], string][]}
 */
export function parseDataFilters(text) {
  /** @type {[string[], string][]} */
  const out = [];
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const path = part.slice(0, eq).replace(/^data\./, "").split(".");
    out.push([path, part.slice(eq + 1)]);
  }
  return out;
}

/** @param {any} ev @param {[string[], string][]} filters */
export function dataMatches(ev, filters) {
  for (const [path, want] of filters) {
    /** @type {any} */
    let v = ev.data;
    for (const p of path) v = v && typeof v === "object" ? v[p] : undefined;
    if (v === undefined || v === null) return false;
    if (String(typeof v === "object" ? JSON.stringify(v) : v) !== want) return false;
  }
  return true;
}

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string, string>, navigate: (hash: string) => void, api: typeof import('../api.js')}} ctx
 */
export function mount(root, ctx) {
  const { api } = ctx;
  /** @type {any[]} oldest first; row i shows events[events.length - 1 - i] */
  let events = [];
  /** @type {any[]} */
  let held = [];
  let keep = 5000;
  let paused = false;
  let received = 0;
  let matched = 0;
  let dropped = 0;
  let rate = 0;
  let windowCount = 0;
  /** @type {[string[], string][]} */
  let dataFilters = [];
  /** @type {any} */
  let selected = null;
  /** @type {any[]} events added since the last frame */
  let added = [];

  const input = (/** @type {string} */ id, /** @type {string} */ ph, /** @type {number} */ size) =>
    h("input", { id, placeholder: ph, size, value: ctx.params[id.slice(2)] || "" });
  const typeIn = input("f-type", "type (tool.* …)", 12);
  const agentIn = input("f-agent", "agent", 10);
  const taskIn = input("f-task", "task id", 12);
  const sessionIn = input("f-session", "session", 10);
  const dataIn = input("f-data", "data.field=value", 16);
  const keepSel = h("select", { id: "keep", title: "events kept in memory" }, ...[1000, 5000, 20000, 50000].map((n) => h("option", { value: String(n), selected: n === keep }, `keep ${n}`)));
  const pauseBtn = h("button", { id: "pause", title: "pause (p)" }, "Pause");
  const clearBtn = h("button", { id: "clear" }, "Clear");
  const counts = h("span", { class: "count", id: "live-counts" });
  const scroller = h("div", { class: "vlist panel", id: "live-list" });
  const inspector = h("aside", { class: "inspector panel", id: "inspector" }, h("div", { class: "muted" }, "Click an event to see it whole."));
  root.append(
    h("div", { class: "toolbar" }, h("h2", null, "Live"), typeIn, agentIn, taskIn, sessionIn, dataIn, keepSel, h("span", { class: "grow" }), counts, pauseBtn, clearBtn),
    h("div", { class: "split" }, h("div", { class: "main" }, scroller), inspector),
  );

  const list = new VirtualList(scroller, {
    rowHeight: ROW,
    count: () => events.length,
    render: (i) => row(events[events.length - 1 - i]),
  });

  /** @param {any} ev */
  function row(ev) {
    const d = ev.data || {};
    const text = d.name || d.tool || d.model || d.status || d.content || d.answer || d.error || "";
    return h(
      "div",
      { class: `vrow${selected === ev ? " sel" : ""}`, "data-type": ev.type, "data-event-id": ev.id, onclick: () => inspect(ev) },
      h("span", { class: "c-time" }, fmtTime(ev.time).slice(-12)),
      h("span", { class: "c-type" }, ev.type),
      h("span", { class: "c-agent", title: ev.agentid || ev.source }, ev.agentid || ev.source || ""),
      h("span", { class: "c-task", title: ev.taskid || "" }, ev.taskid ? shortId(ev.taskid) : ""),
      h("span", { class: "c-text" }, typeof text === "string" ? text.slice(0, 200) : JSON.stringify(text).slice(0, 200)),
    );
  }

  /** @param {any} ev */
  function inspect(ev) {
    selected = ev;
    clear(inspector).append(
      h("h3", { class: "mono" }, ev.type),
      ev.taskid ? h("p", null, h("a", { href: `#/trace/${encodeURIComponent(ev.taskid)}` }, `Open the trace of ${shortId(ev.taskid)} →`)) : "",
      h("pre", { class: "json" }, pretty(ev)),
    );
    list.render();
  }

  function renderCounts() {
    counts.textContent = `${received} received · ${matched} shown · ${events.length} kept · ${rate}/s${dropped ? ` · ${dropped} dropped (slow client)` : ""}${paused ? ` · ${held.length} held` : ""}`;
  }

  const flush = rafThrottle(() => {
    if (events.length > keep * 1.2) events = events.slice(events.length - keep);
    const fresh = added;
    added = [];
    const atTop = scroller.scrollTop < ROW;
    if (!atTop && fresh.length) scroller.scrollTop += fresh.length * ROW; // keep the rows in view still
    list.render();
    renderCounts();
    if (fresh.length && atTop) {
      const visible = Math.ceil(scroller.clientHeight / ROW);
      hook("live.shown", { at: Date.now(), events: fresh.slice(-visible).map((e) => ({ id: e.id, time: e.time })) });
    }
  });

  /** @param {any} ev */
  function take(ev) {
    if (dataFilters.length && !dataMatches(ev, dataFilters)) return;
    matched++;
    if (paused) {
      held.push(ev);
      if (held.length > keep) held = held.slice(held.length - keep);
      return;
    }
    events.push(ev);
    added.push(ev);
    flush();
  }

  function filters() {
    /** @type {Record<string, string>} */
    const f = {};
    const v = (/** @type {HTMLElement} */ el) => /** @type {HTMLInputElement} */ (el).value.trim();
    if (v(typeIn)) f.event_type = v(typeIn);
    if (v(agentIn)) f.node_id = v(agentIn);
    if (v(taskIn)) f.task_id = v(taskIn);
    if (v(sessionIn)) f.session_id = v(sessionIn);
    return f;
  }

  const live = api.openLive(filters(), (msg) => {
    if (msg.type === "event") {
      received++;
      windowCount++;
      take(msg.data);
    } else if (msg.type === "dropped") {
      dropped += msg.count;
    } else if (msg.type === "subscribed") {
      scroller.dataset.subscribed = JSON.stringify(msg.filters);
    } else if (msg.type === "error") {
      counts.textContent = msg.reason;
    }
  });
  const rateTimer = setInterval(() => {
    rate = windowCount;
    windowCount = 0;
    renderCounts();
  }, 1000);

  const refilter = debounce(() => {
    dataFilters = parseDataFilters(/** @type {HTMLInputElement} */ (dataIn).value);
    live.setFilters(filters());
  }, 250);
  for (const el of [typeIn, agentIn, taskIn, sessionIn, dataIn]) el.addEventListener("input", refilter);
  keepSel.addEventListener("change", () => {
    keep = Number(/** @type {HTMLSelectElement} */ (keepSel).value);
    flush();
  });
  pauseBtn.addEventListener("click", togglePause);
  clearBtn.addEventListener("click", () => {
    events = [];
    held = [];
    received = matched = dropped = 0;
    list.render();
    renderCounts();
  });

  function togglePause() {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.classList.toggle("on", paused);
    if (!paused && held.length) {
      events.push(...held);
      held = [];
      flush();
    }
    renderCounts();
  }

  /** @param {KeyboardEvent} ev */
  function onKey(ev) {
    const target = /** @type {HTMLElement} */ (ev.target);
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
    if (ev.key === "p") togglePause();
    else if (ev.key === "/") {
      typeIn.focus();
      ev.preventDefault();
    }
  }
  document.addEventListener("keydown", onKey);
  renderCounts();

  return () => {
    live.close();
    clearInterval(rateTimer);
    list.destroy();
    document.removeEventListener("keydown", onKey);
  };
}

// @ts-check
/** #/trace/<taskId>: a task as a waterfall on a time axis (LLM calls, tool calls, thoughts,
 * answers, approvals, status changes, child tasks as nested rows), an inspector for the step
 * clicked, live while the task runs. Events load a page at a time and only the visible rows
 * are rendered, so a trace of 100k events opens as fast as a small one. */

import { h, clear, fmtDuration, fmtTime, fmtTokens, fmtCost, pretty, shortId, statusClass, hook, rafThrottle, debounce, download, toast } from "../util.js";
import { VirtualList } from "../virtual.js";

const PAGE = 1000;
const ROW = 24;
const TERMINAL = new Set(["completed", "failed", "cancelled", "dead"]);
/** The status a task has after each of its events (shown at once; the stored record follows). */
const STATUS_AFTER = /** @type {Record<string, string>} */ ({
  "task.submitted": "pending",
  "task.assigned": "dispatched",
  "task.started": "running",
  "task.retried": "pending",
  "task.resumed": "running",
  "task.completed": "completed",
  "task.failed": "failed",
  "task.cancelled": "cancelled",
  "task.dead": "dead",
  "approval.requested": "input_required",
  "approval.granted": "dispatched",
  "approval.denied": "dispatched",
});

/** @typedef {{id: string, kind: string, label: string, text: string, start: number, end: number | null, events: any[], depth: number, taskId: string, child?: any, open?: boolean}} Row */

/** Builds rows from one task's events, in order, pairing requests with their answers. */
export class RowBuilder {
  /** @param {string} taskId @param {number} depth */
  constructor(taskId, depth) {
    this.taskId = taskId;
    this.depth = depth;
    /** @type {Row[]} */
    this.rows = [];
    /** @type {Map<string, Row>} */
    this.llmOpen = new Map();
    /** @type {Map<string, Row>} */
    this.toolOpen = new Map();
    /** @type {Set<string>} */
    this.seen = new Set();
    this.usage = { calls: 0, input: 0, output: 0, cost: 0 };
  }

  /** @param {string} kind @param {string} label @param {string} text @param {any} ev @param {number} t @param {number | null} end */
  add(kind, label, text, ev, t, end) {
    /** @type {Row} */
    const row = { id: ev.id, kind, label, text, start: t, end, events: [ev], depth: this.depth, taskId: this.taskId };
    this.rows.push(row);
    return row;
  }

  /** Take one event; false when it was seen before. @param {any} ev */
  take(ev) {
    if (this.seen.has(ev.id)) return false;
    this.seen.add(ev.id);
    const t = Date.parse(ev.time);
    const d = ev.data && typeof ev.data === "object" ? ev.data : {};
    const attempt = d.attempt ?? "";
    switch (ev.type) {
      case "llm.request": {
        const row = this.add("llm", `LLM step ${d.step ?? "?"}`, `${d.model || ev.subject || ""} · ${d.message_count ?? "?"} messages`, ev, t, null);
        this.llmOpen.set(`${attempt}:${d.step}`, row);
        break;
      }
      case "llm.usage": {
        const key = `${attempt}:${d.step}`;
        const row = this.llmOpen.get(key) || this.latestOpen(this.llmOpen);
        this.usage.calls += 1;
        this.usage.input += d.input_tokens || 0;
        this.usage.output += d.output_tokens || 0;
        this.usage.cost += d.cost_usd || 0;
        const text = `${d.model || ""} · ${fmtTokens(d.input_tokens)} in / ${fmtTokens(d.output_tokens)} out · ${fmtCost(d.cost_usd)}`;
        if (row) {
          row.events.push(ev);
          row.end = t;
          row.text = text;
          for (const [k, v] of this.llmOpen) if (v === row) this.llmOpen.delete(k);
        } else {
          this.add("llm", `LLM step ${d.step ?? "?"}`, text, ev, t - (d.latency_s || 0) * 1000, t);
        }
        break;
      }
      case "tool.call": {
        const row = this.add("tool", `${d.name || ev.subject || "tool"}`, compact(d.arguments), ev, t, null);
        this.toolOpen.set(d.call_id || ev.id, row);
        break;
      }
      case "tool.result": {
        const row = this.toolOpen.get(d.call_id) || null;
        const text = `${d.is_error ? "⚠ " : "→ "}${compact(d.content)}`;
        if (row) {
          row.events.push(ev);
          row.end = t;
          row.text = `${row.text} ${text}`;
          if (d.is_error) row.kind = "error";
          this.toolOpen.delete(d.call_id);
        } else {
          this.add(d.is_error ? "error" : "tool", `${d.name || "tool"}`, text, ev, t - (d.duration_ms || 0), t);
        }
        break;
      }
      case "agent.thought":
        this.add("thought", "thought", d.content || "", ev, t, null);
        break;
      case "agent.answer":
        this.add("answer", "answer", d.answer || "", ev, t, null);
        break;
      case "agent.action":
        this.add("other", d.agent ? `delegate ${d.agent}` : `action ${d.tool || ""}`, compact(d.arguments || d.parameters), ev, t, null);
        break;
      case "approval.requested":
        this.add("approval", "approval asked", `${d.tool} ${compact(d.arguments)}`, ev, t, null);
        break;
      case "approval.granted":
      case "approval.denied":
        this.add("approval", ev.type.slice(9), `${d.tool}${d.by ? ` by ${d.by}` : ""}${d.reason ? `: ${d.reason}` : ""}${d.edited ? " (edited)" : ""}`, ev, t, null);
        break;
      case "error":
        this.add("error", "error", d.error || d.reason || d.exception || "", ev, t, null);
        break;
      default:
        if (ev.type.startsWith("task.")) {
          const extra = d.reason || (d.restored_steps !== undefined ? `restored ${d.restored_steps} steps` : "");
          this.add("task", ev.type.slice(5), `attempt ${d.attempt ?? "?"}${d.instance_id ? ` · ${d.instance_id}` : ""}${extra ? ` · ${extra}` : ""}`, ev, t, null);
        } else {
          this.add("other", ev.type, compact(d), ev, t, null);
        }
    }
    return true;
  }

  /** @param {Map<string, Row>} open */
  latestOpen(open) {
    let last = null;
    for (const v of open.values()) last = v;
    return last;
  }
}

/** @param {unknown} value */
function compact(value) {
  if (value === undefined || value === null) return "";
  const s = typeof value === "string" ? value : JSON.stringify(value);
  return s.length > 160 ? `${s.slice(0, 160)}…` : s;
}

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string, string>, navigate: (hash: string) => void, api: typeof import('../api.js')}} ctx
 */
export function mount(root, ctx) {
  const { api } = ctx;
  const taskId = ctx.params.taskId;
  if (!taskId) {
    root.append(h("div", { class: "empty" }, "Open a task from the task list, or type its id in the box above (g)."));
    return;
  }
  const started = performance.now();
  let closed = false;
  let paused = false;
  /** @type {any} */
  let task = null;
  /** @type {any[]} */
  let children = [];
  const own = new RowBuilder(taskId, 0);
  /** @type {Map<string, RowBuilder>} child task id -> its rows once expanded */
  const nested = new Map();
  /** @type {Row[]} */
  let flat = [];
  /** @type {Row | null} */
  let selected = null;
  let loadedAll = false;
  /** @type {any[]} live events that came while pages were still loading */
  let backlog = [];
  let firstShown = false;

  const title = h("h2", { class: "mono", title: taskId }, `Trace ${shortId(taskId)}`);
  const statusEl = h("span");
  const pauseBtn = h("button", { id: "pause", title: "pause live updates (p)" }, "Pause");
  const exportLink = h("a", { id: "export", href: `/api/tasks/${encodeURIComponent(taskId)}/events.jsonl`, download: `task-${taskId}.jsonl`, title: "all of this task's events as JSON lines", onclick: exportEvents }, "Export JSONL");
  const cancelBtn = h("button", { id: "cancel", class: "danger", type: "button", hidden: true, title: "cancel this task (and its child tasks)", onclick: cancelTask }, "Cancel");
  const cancelResult = h("span", { id: "cancel-result" });
  const replayLink = h("a", { href: `#/replay/${encodeURIComponent(taskId)}` }, "Replay");
  const compareLink = h("a", { href: `#/compare/${encodeURIComponent(taskId)}`, title: "compare with another run" }, "Compare");
  const parentLink = h("span");
  const loadedEl = h("span", { class: "count", id: "loaded" }, "loading…");
  const summary = h("div", { class: "summary panel", id: "trace-summary" });
  const axis = h("div", { class: "axis" });
  const head = h("div", { class: "wf-head" }, h("div", { class: "c-label" }, "step"), axis);
  const scroller = h("div", { class: "vlist panel", id: "waterfall", tabindex: "0" });
  const inspector = h("aside", { class: "inspector panel", id: "inspector" }, h("div", { class: "muted" }, "Click a step to inspect it (j/k to move, Esc to close)."));
  root.append(
    h("div", { class: "toolbar" }, title, statusEl, parentLink, cancelBtn, cancelResult, h("span", { class: "grow" }), loadedEl, pauseBtn, replayLink, compareLink, exportLink),
    summary,
    h("div", { class: "split" }, h("div", { class: "main" }, head, scroller), inspector),
  );

  const list = new VirtualList(scroller, {
    rowHeight: ROW,
    count: () => flat.length,
    render: renderRow,
    onRender: (first, last) => {
      if (!firstShown && flat.length) {
        firstShown = true;
        performance.mark("loom:trace:first-rows");
        hook("trace.first-rows", { taskId, ms: performance.now() - started, rows: last - first + 1 });
      }
    },
  });
  const rerender = rafThrottle(() => {
    rebuild();
    renderSummary();
    renderAxis();
    list.render();
  });

  // -- time axis ----------------------------------------------------------------------------
  function span() {
    let t0 = Infinity;
    let t1 = -Infinity;
    if (task && task.createdAt) t0 = Date.parse(task.createdAt);
    if (flat.length) {
      t0 = Math.min(t0, flat[0].start);
      for (const r of [flat[0], flat[flat.length - 1]]) t1 = Math.max(t1, r.end ?? r.start);
    }
    for (const b of [own, ...nested.values()]) {
      const last = b.rows[b.rows.length - 1];
      if (last) t1 = Math.max(t1, last.end ?? last.start);
    }
    for (const c of children) {
      if (c.finishedAt) t1 = Math.max(t1, Date.parse(c.finishedAt));
    }
    if (task && task.finishedAt) t1 = Math.max(t1, Date.parse(task.finishedAt));
    else if (task && !TERMINAL.has(task.status)) t1 = Math.max(t1, Date.now());
    if (!Number.isFinite(t0)) t0 = Date.now();
    if (!Number.isFinite(t1) || t1 <= t0) t1 = t0 + 1;
    return [t0, t1];
  }

  function renderAxis() {
    const [t0, t1] = span();
    clear(axis);
    for (let i = 0; i <= 4; i++) {
      axis.append(h("span", { class: "tick", style: { left: `${i * 25}%` } }, `+${fmtDuration(((t1 - t0) * i) / 4000)}`));
    }
  }

  // -- rows ---------------------------------------------------------------------------------
  function childRows() {
    return children.map((c) => {
      const start = Date.parse(c.createdAt || c.updatedAt || "") || 0;
      /** @type {Row} */
      const row = {
        id: `child:${c.taskId}`,
        kind: "child",
        label: `${nested.has(c.taskId) ? "▾" : "▸"} child ${c.targetAgent || ""}`,
        text: `${c.status} · ${shortId(c.taskId)}`,
        start,
        end: c.finishedAt ? Date.parse(c.finishedAt) : null,
        events: [],
        depth: 0,
        taskId: c.taskId,
        child: c,
      };
      return row;
    });
  }

  /** The rows in time order: this task's, each child's row followed by its own when expanded. */
  function rebuild() {
    const kids = childRows().sort((a, b) => a.start - b.start);
    const out = [];
    let k = 0;
    for (const r of own.rows) {
      while (k < kids.length && kids[k].start < r.start) pushChild(out, kids[k++]);
      out.push(r);
    }
    while (k < kids.length) pushChild(out, kids[k++]);
    flat = out;
  }

  /** @param {Row[]} out @param {Row} row */
  function pushChild(out, row) {
    out.push(row);
    const b = nested.get(row.taskId);
    if (b) out.push(...b.rows);
  }

  /** @param {number} i */
  function renderRow(i) {
    const r = flat[i];
    const [t0, t1] = span();
    const total = t1 - t0;
    const left = ((r.start - t0) / total) * 100;
    const lane = h("div", { class: "lane" });
    if (r.end !== null && r.end !== undefined) {
      const width = Math.max(((r.end - r.start) / total) * 100, 0.15);
      lane.append(h("div", { class: `bar k-${r.kind}`, style: { left: `${left}%`, width: `${width}%` } }));
      lane.append(h("span", { class: "dur", style: { left: `${Math.min(left + width, 92)}%` } }, fmtDuration((r.end - r.start) / 1000)));
    } else if (r.kind === "llm" || r.kind === "tool" || r.kind === "child") {
      const now = Math.min(Date.now(), t1);
      lane.append(h("div", { class: `bar k-${r.kind}`, style: { left: `${left}%`, width: `${Math.max(((now - r.start) / total) * 100, 0.15)}%`, opacity: "0.4" } }));
    } else {
      lane.append(h("div", { class: `mark k-${r.kind}`, style: { left: `${left}%` } }));
    }
    return h(
      "div",
      {
        class: `wf-row${selected && selected.id === r.id ? " sel" : ""}`,
        "data-kind": r.kind,
        "data-row-id": r.id,
        onclick: () => select(r),
      },
      h(
        "div",
        { class: "c-label" },
        h("span", { class: "indent", style: { width: `${r.depth * 16}px` } }),
        h("span", { class: `kind k-${r.kind}` }, r.kind),
        h("b", null, r.label),
        h("span", { class: "text", title: r.text }, r.text),
      ),
      lane,
    );
  }

  function renderSummary() {
    clear(summary);
    const u = own.usage;
    let cu = { calls: 0, input: 0, output: 0, cost: 0 };
    for (const b of nested.values()) {
      cu = { calls: cu.calls + b.usage.calls, input: cu.input + b.usage.input, output: cu.output + b.usage.output, cost: cu.cost + b.usage.cost };
    }
    const item = (/** @type {string} */ k, /** @type {any} */ v) => h("span", { class: "item" }, h("span", null, k), typeof v === "string" ? h("b", null, v) : v);
    if (task) {
      clear(statusEl).append(h("span", { class: statusClass(task.status), id: "trace-status" }, task.status));
      cancelBtn.hidden = TERMINAL.has(task.status);
      summary.append(
        item("agent", task.targetAgent || "—"),
        item("attempt", String(task.attempt ?? "—")),
        item("instance", task.instanceId || "—"),
        item("created", fmtTime(task.createdAt)),
        item("duration", task.durationS !== null && task.durationS !== undefined ? fmtDuration(task.durationS) : task.createdAt ? `${fmtDuration((Date.now() - Date.parse(task.createdAt)) / 1000)} (running)` : "—"),
        item("session", task.sessionId ? h("a", { href: `#/tasks?session=${encodeURIComponent(task.sessionId)}` }, shortId(task.sessionId)) : "—"),
      );
      if (task.parentTaskId) clear(parentLink).append(h("a", { href: `#/trace/${encodeURIComponent(task.parentTaskId)}` }, `↰ parent ${shortId(task.parentTaskId)}`));
    }
    summary.append(
      item("LLM calls", String(u.calls)),
      item("tokens", `${fmtTokens(u.input)} in / ${fmtTokens(u.output)} out`),
      item("cost", fmtCost(u.cost)),
      item("children", String(children.length)),
    );
    if (cu.calls) summary.append(item("children's tokens", `${fmtTokens(cu.input + cu.output)} · ${fmtCost(cu.cost)}`));
    loadedEl.textContent = `${own.seen.size} events${loadedAll ? "" : " (loading…)"} · ${flat.length} rows`;
  }

  // -- inspector ----------------------------------------------------------------------------
  /** @param {Row} r */
  function select(r) {
    selected = r;
    list.render();
    if (r.kind === "child" && r.child) {
      toggleChild(r.child);
    }
    renderInspector(r);
  }

  /** @param {Row} r */
  function renderInspector(r) {
    clear(inspector);
    inspector.append(h("h3", null, h("span", { class: `kind k-${r.kind}` }, r.kind), " ", r.label));
    const first = r.events[0];
    const kv = h("dl", { class: "kv" });
    const put = (/** @type {string} */ k, /** @type {any} */ v) => {
      if (v === undefined || v === null || v === "") return;
      kv.append(h("dt", null, k), h("dd", null, v));
    };
    put("start", fmtTime(new Date(r.start).toISOString()));
    if (r.end !== null) put("latency", fmtDuration((r.end - r.start) / 1000));
    if (first) {
      put("task", first.taskid);
      put("agent", first.agentid);
      put("instance", first.instanceid);
      put("attempt", first.data?.attempt);
      put("step", first.data?.step);
      put("trace", first.traceid);
    }
    inspector.append(kv);
    if (r.kind === "child" && r.child) {
      const c = r.child;
      inspector.append(
        h("p", null, h("a", { href: `#/trace/${encodeURIComponent(c.taskId)}` }, "Open this child's trace →")),
        h("h4", null, "Task"),
        h("pre", { class: "json" }, pretty(c)),
      );
      return;
    }
    for (const ev of r.events) readable(ev);
    inspector.append(h("h4", null, r.events.length > 1 ? "Events (JSON)" : "Event (JSON)"));
    for (const ev of r.events) inspector.append(h("pre", { class: "json" }, pretty(ev)));
  }

  /** A readable rendering of one event's data. @param {any} ev */
  function readable(ev) {
    const d = ev.data || {};
    switch (ev.type) {
      case "llm.request":
        inspector.append(h("h4", null, `Prompt · ${d.provider || ""} ${d.model || ""}`));
        if (Array.isArray(d.messages)) {
          for (const m of d.messages) {
            inspector.append(h("div", { class: `msg role-${m.role}` }, h("div", { class: "role" }, m.role, m.name ? ` · ${m.name}` : ""), h("pre", null, typeof m.content === "string" ? m.content : pretty(m.content ?? m.tool_calls ?? m))));
          }
        } else {
          inspector.append(h("div", { class: "muted" }, `${d.message_count ?? "?"} messages (content not captured)`));
        }
        if (d.tools && d.tools.length) inspector.append(h("div", { class: "muted" }, `tools: ${d.tools.join(", ")}`));
        break;
      case "llm.usage":
        inspector.append(h("h4", null, "Completion"));
        if (d.completion) inspector.append(h("pre", null, d.completion));
        if (d.tool_calls && d.tool_calls.length) inspector.append(h("pre", { class: "json" }, pretty(d.tool_calls)));
        inspector.append(
          h("dl", { class: "kv" },
            h("dt", null, "tokens"), h("dd", null, `${d.input_tokens ?? 0} in / ${d.output_tokens ?? 0} out`),
            h("dt", null, "cost"), h("dd", null, fmtCost(d.cost_usd)),
            h("dt", null, "latency"), h("dd", null, fmtDuration(d.latency_s)),
            h("dt", null, "retries"), h("dd", null, String(d.retries ?? 0)),
          ),
        );
        break;
      case "tool.call":
        inspector.append(h("h4", null, `Arguments · ${d.name || ""}`), h("pre", { class: "json" }, pretty(d.arguments)));
        break;
      case "tool.result":
        inspector.append(h("h4", null, d.is_error ? "Error" : "Result"), h("pre", { class: `json${d.is_error ? " error" : ""}` }, pretty(d.content)));
        if (d.duration_ms !== undefined) inspector.append(h("div", { class: "muted" }, `ran ${fmtDuration(d.duration_ms / 1000)}`));
        break;
      case "agent.thought":
        inspector.append(h("h4", null, "Thought"), h("pre", null, d.content || ""));
        break;
      case "agent.answer":
        inspector.append(h("h4", null, "Answer"), h("pre", null, d.answer || ""));
        break;
      case "approval.requested":
        inspector.append(h("h4", null, `Approval asked for ${d.tool}`), h("pre", { class: "json" }, pretty(d.arguments)));
        if (d.reasoning) inspector.append(h("h4", null, "Reasoning"), h("pre", null, d.reasoning));
        break;
      default:
    }
  }

  /** Expand or fold a child task's own rows. @param {any} c */
  async function toggleChild(c) {
    if (nested.has(c.taskId)) {
      nested.delete(c.taskId);
      rerender();
      return;
    }
    const b = new RowBuilder(c.taskId, 1);
    nested.set(c.taskId, b);
    try {
      const page = await api.getJSON("/api/events", { task_id: c.taskId, order: "asc", limit: PAGE });
      for (const ev of page.events) b.take(ev);
    } catch (err) {
      console.warn(err);
    }
    rerender();
  }

  // -- actions ------------------------------------------------------------------------------
  /** The export through fetch (with the API key), saved as a file: a plain link carries no key.
   * @param {Event} ev */
  async function exportEvents(ev) {
    ev.preventDefault();
    try {
      const blob = await api.getBlob(`/api/tasks/${encodeURIComponent(taskId)}/events.jsonl`);
      download(`task-${taskId}.jsonl`, [blob], blob.type || "application/x-ndjson");
    } catch (err) {
      toast(`export failed: ${err instanceof api.ApiError ? err.message : err}`, "error");
    }
  }

  async function cancelTask() {
    cancelBtn.setAttribute("disabled", "");
    clear(cancelResult);
    try {
      await api.postJSON(`${api.DISPATCHER}/api/tasks/${encodeURIComponent(taskId)}/cancel`);
      cancelResult.className = "muted";
      cancelResult.textContent = "cancel asked";
      refreshTask();
    } catch (err) {
      const message = err instanceof api.ApiError ? err.message : String(err);
      cancelResult.className = "error";
      cancelResult.textContent = `not cancelled: ${message}`;
      toast(`not cancelled: ${message}`, "error");
    } finally {
      cancelBtn.removeAttribute("disabled");
    }
  }

  // -- loading ------------------------------------------------------------------------------
  async function loadTask() {
    try {
      const detail = await api.getJSON(`/api/tasks/${encodeURIComponent(taskId)}`, { kind: "task" });
      task = detail.task;
      children = detail.children || [];
      // a status the feed carried that the stored record does not have yet wins
      if (task && latest && Date.parse(latest.time) > Date.parse(task.updatedAt || "")) applyStatus(latest);
    } catch (err) {
      if (!(err instanceof api.ApiError && err.status === 404)) throw err;
    }
    rerender();
  }

  async function loadEvents() {
    /** @type {string | null} */
    let cursor = null;
    do {
      if (closed) return;
      /** @type {any} */
      const page = await api.getJSON("/api/events", { task_id: taskId, order: "asc", limit: PAGE, cursor });
      for (const ev of page.events) own.take(ev);
      cursor = page.nextCursor;
      rerender();
    } while (cursor);
    loadedAll = true;
    const pending = backlog;
    backlog = [];
    pending.forEach(onLiveEvent);
    rerender();
  }

  // -- live ---------------------------------------------------------------------------------
  /** @type {{close: () => void, setFilters: (f: any) => void} | null} */
  let live = null;
  // ingest stores a status a moment after the feed carries it: read the record twice
  const refreshSoon = debounce(() => loadTask().catch(() => {}), 200);
  const refreshLater = debounce(() => loadTask().catch(() => {}), 1500);
  const refreshTask = () => {
    refreshSoon();
    refreshLater();
  };

  /** @type {any} the latest status event of this task from the feed */
  let latest = null;

  /** @param {any} ev */
  function applyStatus(ev) {
    const status = STATUS_AFTER[ev.type];
    if (!status) return;
    if (!latest || Date.parse(ev.time) >= Date.parse(latest.time)) latest = ev;
    if (!task) return;
    task.status = status;
    if (ev.data && ev.data.attempt !== undefined) task.attempt = ev.data.attempt;
    if (TERMINAL.has(status)) {
      task.finishedAt = ev.time;
      if (task.createdAt) task.durationS = (Date.parse(ev.time) - Date.parse(task.createdAt)) / 1000;
    }
  }

  /** @param {any} ev */
  function onLiveEvent(ev) {
    if (!loadedAll) {
      backlog.push(ev);
      return;
    }
    if (ev.taskid === taskId) {
      if (own.take(ev)) rerender();
      if (ev.type.startsWith("task.") || ev.type.startsWith("approval.")) {
        applyStatus(ev);
        rerender();
        refreshTask();
      }
    } else if (ev.parenttaskid === taskId) {
      if (ev.type.startsWith("task.")) refreshTask();
      const b = nested.get(ev.taskid);
      if (b && b.take(ev)) rerender();
    }
  }

  /** Open the feed first and load the stored pages once it is subscribed, so that nothing
   * falls between the two (the backlog and the ids seen remove the overlap). */
  function startLive() {
    /** @type {() => void} */
    let go = () => {};
    const subscribed = new Promise((resolve) => (go = () => resolve(undefined)));
    live = api.openLive({ task_id: taskId }, (msg) => {
      if (msg.type === "subscribed") go();
      else if (msg.type === "event" && !paused) onLiveEvent(msg.data);
    });
    return Promise.race([subscribed, new Promise((resolve) => setTimeout(resolve, 1500))]);
  }

  // a running task's bars grow with the clock
  const tick = setInterval(() => {
    if (!paused && task && !TERMINAL.has(task.status)) rerender();
  }, 1000);

  pauseBtn.addEventListener("click", togglePause);
  function togglePause() {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.classList.toggle("on", paused);
    if (!paused) loadTask().catch(() => {});
  }

  /** @param {KeyboardEvent} ev */
  function onKey(ev) {
    const target = /** @type {HTMLElement} */ (ev.target);
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
    if (ev.key === "p") togglePause();
    else if (ev.key === "Escape") {
      selected = null;
      clear(inspector).append(h("div", { class: "muted" }, "Click a step to inspect it."));
      list.render();
    } else if (ev.key === "j" || ev.key === "k") {
      const at = selected ? flat.findIndex((r) => r.id === selected?.id) : -1;
      const next = Math.max(0, Math.min(flat.length - 1, at + (ev.key === "j" ? 1 : -1)));
      if (flat[next]) {
        selected = flat[next];
        renderInspector(selected);
        list.scrollToIndex(next);
      }
      ev.preventDefault();
    }
  }
  document.addEventListener("keydown", onKey);

  const subscribed = startLive();
  loadTask()
    .then(() => {
      // the whole trace: this task's events and its children's
      if (!closed && live && task && task.traceId) live.setFilters({ trace_id: task.traceId });
    })
    .catch((err) => {
      loadedEl.textContent = String(err);
    });
  subscribed
    .then(loadEvents)
    .catch((err) => {
      loadedEl.textContent = `events: ${err}`;
      loadedEl.classList.add("error");
    });

  return () => {
    closed = true;
    if (live) live.close();
    clearInterval(tick);
    list.destroy();
    document.removeEventListener("keydown", onKey);
  };
}

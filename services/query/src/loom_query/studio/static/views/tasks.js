// @ts-check
/** #/tasks: the task list (GET /api/tasks) with status tabs, filters and cursor paging, kept
 * live from the task.* / approval.* events of the live feed; and a form that submits a task
 * through the dispatcher proxy. */

import { h, clear, fmtDuration, fmtTime, fmtAgo, fmtTokens, fmtCost, shortId, statusClass, debounce, toast } from "../util.js";

const STATUSES = ["pending", "dispatched", "running", "input_required", "completed", "failed", "cancelled", "dead"];
const PAGE = 50;
const STATUS_OF_EVENT = /** @type {Record<string, string>} */ ({
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
});

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string, string>, navigate: (hash: string) => void, api: typeof import('../api.js')}} ctx
 */
export function mount(root, ctx) {
  const { api } = ctx;
  const state = {
    status: ctx.params.status || "",
    agent: ctx.params.agent || "",
    session: ctx.params.session || "",
    q: ctx.params.q || "",
    paused: false,
    /** @type {any[]} */
    tasks: [],
    /** @type {Record<string, number>} */
    counts: {},
    total: 0,
    /** @type {string | null} */
    next: null,
    /** @type {Map<string, any>} usage per task id, when a session is chosen */
    usage: new Map(),
    selected: -1,
    /** @type {Set<string>} */
    fresh: new Set(),
    loading: false,
    /** @type {string | null} */
    error: null,
  };
  let requestNo = 0;

  const agentIn = h("input", { id: "f-agent", placeholder: "agent", value: state.agent, size: 12 });
  const sessionIn = h("input", { id: "f-session", placeholder: "session", value: state.session, size: 14 });
  const qIn = h("input", { id: "f-q", type: "search", placeholder: "search text  ( / )", value: state.q, size: 22 });
  const pauseBtn = h("button", { id: "pause", title: "pause live updates (p)" }, "Pause");
  const submitBtn = h("button", { id: "submit-toggle", class: "primary", title: "submit a task (n)" }, "Submit task…");
  const totalEl = h("span", { class: "count", id: "total" });
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const formHost = h("div");
  const body = h("tbody");
  const moreBtn = h("button", { id: "more" }, "More");
  const foot = h("div", { class: "toolbar" }, moreBtn, h("span", { class: "grow" }), h("span", { class: "muted" }, "j/k move · Enter open · p pause"));
  const table = h(
    "table",
    { class: "grid", id: "tasks-table" },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        h("th", null, "Status"),
        h("th", null, "Task"),
        h("th", null, "Agent"),
        h("th", null, "Session"),
        h("th", null, "Created"),
        h("th", { class: "num" }, "Duration"),
        h("th", { class: "num" }, "Attempt"),
        h("th", { class: "num" }, "Tokens"),
        h("th", { class: "num" }, "Cost"),
        h("th", null, "Input / result"),
      ),
    ),
    body,
  );
  const wrap = h("div", { class: "table-wrap panel" }, table);
  root.append(
    h("div", { class: "toolbar" }, h("h2", null, "Tasks"), agentIn, sessionIn, qIn, totalEl, h("span", { class: "grow" }), pauseBtn, submitBtn),
    formHost,
    tabs,
    wrap,
    foot,
  );

  function params() {
    return {
      status: state.status || undefined,
      agent: state.agent || undefined,
      session: state.session || undefined,
      q: state.q.length >= 3 ? state.q : undefined,
    };
  }

  /** Load the first page again (filters changed, or live: merged with what is shown). @param {boolean} merge */
  async function reload(merge) {
    const mine = ++requestNo;
    state.loading = true;
    try {
      const limit = merge ? Math.min(200, Math.max(PAGE, countFirstPages())) : PAGE;
      const page = await api.getJSON("/api/tasks", { ...params(), limit });
      if (mine !== requestNo) return;
      const before = new Set(state.tasks.map((t) => t.taskId));
      if (merge) {
        const fetched = new Map(page.tasks.map((/** @type {any} */ t) => [t.taskId, t]));
        const rest = state.tasks.filter((t) => !fetched.has(t.taskId) && !t.provisional && olderThanPage(t, page.tasks));
        state.tasks = [...page.tasks, ...rest];
        for (const t of page.tasks) if (!before.has(t.taskId)) state.fresh.add(t.taskId);
        if (!page.nextCursor && !rest.length) state.next = null;
        else if (!rest.length) state.next = page.nextCursor;
      } else {
        state.tasks = page.tasks;
        state.next = page.nextCursor;
      }
      state.counts = page.counts;
      state.total = page.total;
      state.error = null;
      if (state.session) await loadUsage();
    } catch (err) {
      if (mine === requestNo) state.error = String(err);
    } finally {
      state.loading = false;
    }
    if (mine === requestNo) render();
  }

  function countFirstPages() {
    return state.tasks.length;
  }

  /** @param {any} t @param {any[]} page */
  function olderThanPage(t, page) {
    if (!page.length) return true;
    return t.createdAt < page[page.length - 1].createdAt;
  }

  async function loadMore() {
    if (!state.next) return;
    const mine = requestNo;
    try {
      const page = await api.getJSON("/api/tasks", { ...params(), limit: PAGE, cursor: state.next });
      if (mine !== requestNo) return;
      const have = new Set(state.tasks.map((t) => t.taskId));
      state.tasks.push(...page.tasks.filter((/** @type {any} */ t) => !have.has(t.taskId)));
      state.next = page.nextCursor;
    } catch (err) {
      toast(String(err), "error");
    }
    render();
  }

  /** Tokens and cost per task of the chosen session: one request for the whole session. */
  async function loadUsage() {
    try {
      const detail = await api.getJSON(`/api/sessions/${encodeURIComponent(state.session)}`);
      state.usage = new Map(detail.tasks.map((/** @type {any} */ t) => [t.taskId, t.usage]));
    } catch {
      state.usage = new Map();
    }
  }

  function renderTabs() {
    clear(tabs);
    const all = STATUSES.reduce((n, s) => n + (state.counts[s] || 0), 0);
    const tab = (/** @type {string} */ value, /** @type {string} */ label, /** @type {number} */ n) =>
      h(
        "button",
        {
          class: state.status === value ? "on" : "",
          role: "tab",
          "data-status": value || "all",
          onclick: () => {
            state.status = value;
            reload(false);
          },
        },
        label,
        h("span", { class: "n" }, String(n)),
      );
    tabs.append(tab("", "All", all));
    for (const s of STATUSES) tabs.append(tab(s, s.replace("_", " "), state.counts[s] || 0));
  }

  function render() {
    renderTabs();
    totalEl.textContent = state.error ? state.error : `${state.total} task${state.total === 1 ? "" : "s"}`;
    totalEl.classList.toggle("error", !!state.error);
    clear(body);
    state.tasks.forEach((t, i) => body.append(row(t, i)));
    if (!state.tasks.length) {
      body.append(h("tr", null, h("td", { colspan: 10, class: "empty" }, state.loading ? "Loading…" : "No tasks match.")));
    }
    moreBtn.hidden = !state.next;
    state.fresh.clear();
  }

  /** @param {any} t @param {number} i */
  function row(t, i) {
    const usage = state.usage.get(t.taskId);
    const preview = t.error ? `⚠ ${t.error}` : previewOf(t);
    const tr = h(
      "tr",
      {
        class: `row${i === state.selected ? " sel" : ""}${state.fresh.has(t.taskId) ? " fresh" : ""}`,
        "data-task-id": t.taskId,
        "data-status": t.status,
        tabindex: "-1",
        onclick: () => ctx.navigate(`#/trace/${encodeURIComponent(t.taskId)}`),
      },
      h("td", null, h("span", { class: statusClass(t.status) }, t.status)),
      h("td", { class: "mono", title: t.taskId }, h("a", { href: `#/trace/${encodeURIComponent(t.taskId)}` }, shortId(t.taskId)), t.parentTaskId ? h("span", { class: "muted", title: `child of ${t.parentTaskId}` }, " ↳") : null),
      h("td", null, t.targetAgent || "—", t.action && t.action !== "execute" ? h("span", { class: "muted" }, ` ${t.action}`) : null),
      h("td", { class: "mono", title: t.sessionId || "" }, t.sessionId ? h("a", { href: `#/tasks?session=${encodeURIComponent(t.sessionId)}`, onclick: (/** @type {Event} */ e) => e.stopPropagation() }, shortId(t.sessionId)) : "—"),
      h("td", { title: t.createdAt }, fmtTime(t.createdAt), h("span", { class: "muted" }, ` ${fmtAgo(t.createdAt)}`)),
      h("td", { class: "num" }, t.durationS !== null && t.durationS !== undefined ? fmtDuration(t.durationS) : t.createdAt ? h("span", { class: "muted" }, fmtDuration((Date.now() - Date.parse(t.createdAt)) / 1000)) : "—"),
      h("td", { class: "num" }, t.attempt ?? "—"),
      h("td", { class: "num" }, usage ? fmtTokens(usage.inputTokens + usage.outputTokens) : "—"),
      h("td", { class: "num" }, usage ? fmtCost(usage.costUsd) : "—"),
      h("td", { class: "mono", title: preview }, preview),
    );
    return tr;
  }

  // -- live ---------------------------------------------------------------------------------
  const liveReload = debounce(() => reload(true), 250);
  /** @type {Set<string>} task ids seen live that the list did not have yet */
  const waiting = new Set();
  let retries = 0;
  const live = api.openLive({ event_type: ["task.*", "approval.*"] }, (msg) => {
    if (msg.type !== "event" || state.paused) return;
    const ev = msg.data;
    applyEvent(ev);
    liveReload();
  });

  /** Show a task's new status at once, before the stored list catches up. @param {any} ev */
  function applyEvent(ev) {
    const status = STATUS_OF_EVENT[ev.type];
    if (!ev.taskid || !status) return;
    const known = state.tasks.find((t) => t.taskId === ev.taskid);
    if (known) {
      known.status = status;
      if (ev.data && ev.data.attempt !== undefined) known.attempt = ev.data.attempt;
      render();
      return;
    }
    if (ev.type !== "task.submitted" || !matchesFilters(ev)) return;
    waiting.add(ev.taskid);
    retries = 0;
    state.tasks.unshift({
      provisional: true,
      taskId: ev.taskid,
      targetAgent: ev.agentid,
      status,
      attempt: ev.data?.attempt ?? null,
      sessionId: ev.sessionid ?? null,
      parentTaskId: ev.parenttaskid ?? null,
      createdAt: ev.time,
      durationS: null,
    });
    state.fresh.add(ev.taskid);
    render();
  }

  /** @param {any} ev */
  function matchesFilters(ev) {
    if (state.status && state.status !== "pending") return false;
    if (state.agent && state.agent.replace(/^agent:/, "") !== ev.agentid) return false;
    if (state.session && state.session !== ev.sessionid) return false;
    return !state.q;
  }

  // a provisional row stays until the stored list has its task (ingest may lag the feed)
  const confirm = setInterval(() => {
    if (state.paused || !state.tasks.some((t) => t.provisional)) return;
    if (retries++ < 40) reload(true);
  }, 500);

  // -- controls -----------------------------------------------------------------------------
  const refilter = debounce(() => {
    state.agent = agentIn.value.trim();
    state.session = sessionIn.value.trim();
    state.q = qIn.value.trim();
    state.usage = new Map();
    reload(false);
  }, 250);
  for (const input of [agentIn, sessionIn, qIn]) input.addEventListener("input", refilter);
  pauseBtn.addEventListener("click", togglePause);
  moreBtn.addEventListener("click", loadMore);
  submitBtn.addEventListener("click", toggleForm);

  function togglePause() {
    state.paused = !state.paused;
    pauseBtn.textContent = state.paused ? "Resume" : "Pause";
    pauseBtn.classList.toggle("on", state.paused);
    if (!state.paused) reload(true);
  }

  function toggleForm() {
    if (formHost.firstChild) {
      clear(formHost);
      return;
    }
    formHost.append(submitForm(api, (taskId) => {
      toast(`submitted ${taskId}`);
    }));
    /** @type {HTMLElement | null} */ (formHost.querySelector("#submit-prompt"))?.focus();
  }

  /** @param {KeyboardEvent} ev */
  function onKey(ev) {
    const target = /** @type {HTMLElement} */ (ev.target);
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
    if (ev.key === "/") {
      qIn.focus();
      ev.preventDefault();
    } else if (ev.key === "p") togglePause();
    else if (ev.key === "n") toggleForm();
    else if (ev.key === "j" || ev.key === "k") {
      state.selected = Math.max(0, Math.min(state.tasks.length - 1, state.selected + (ev.key === "j" ? 1 : -1)));
      render();
      body.querySelector("tr.sel")?.scrollIntoView({ block: "nearest" });
    } else if (ev.key === "Enter" && state.tasks[state.selected]) {
      ctx.navigate(`#/trace/${encodeURIComponent(state.tasks[state.selected].taskId)}`);
    }
  }
  document.addEventListener("keydown", onKey);

  reload(false);
  return () => {
    live.close();
    clearInterval(confirm);
    document.removeEventListener("keydown", onKey);
    requestNo++;
  };
}

/** "prompt → answer" when the previews hold them, else the raw previews. @param {any} t */
export function previewOf(t) {
  const field = (/** @type {string | null} */ text, /** @type {string} */ name) => {
    const m = text ? new RegExp(`"${name}":\\s*"((?:[^"\\\\]|\\\\.)*)`).exec(text) : null;
    return m ? m[1].replace(/\\"/g, '"') : null;
  };
  const input = field(t.parametersPreview, "prompt") ?? t.parametersPreview ?? "";
  const output = field(t.resultPreview, "answer") ?? t.resultPreview;
  return output ? `${input} → ${output}` : input;
}

/**
 * The submit form: an agent and a prompt, or parameters / metadata as JSON; POST through the
 * dispatcher proxy.
 * @param {typeof import('../api.js')} api
 * @param {(taskId: string) => void} onDone
 */
function submitForm(api, onDone) {
  const agent = h("input", { id: "submit-agent", value: "calculator", size: 16, required: true });
  const prompt = h("textarea", { id: "submit-prompt", rows: 2, placeholder: "what is 6*7?" });
  const paramsIn = h("textarea", { id: "submit-params", rows: 3, class: "mono", placeholder: '{"prompt": "…", "script": [...]}  (instead of the prompt)' });
  const metaIn = h("textarea", { id: "submit-metadata", rows: 1, class: "mono", placeholder: '{"approvalTools": ["calculator"]}' });
  const session = h("input", { id: "submit-session", placeholder: "(none)", size: 20 });
  const result = h("span", { class: "muted", id: "submit-result" });
  const go = h("button", { id: "submit-go", class: "primary", type: "submit" }, "Submit");
  const form = h(
    "form",
    { class: "submit-form panel", id: "submit-form" },
    h("label", { for: "submit-agent" }, "Agent"), agent,
    h("label", { for: "submit-prompt" }, "Prompt"), prompt,
    h("label", { for: "submit-params" }, "Parameters"), paramsIn,
    h("label", { for: "submit-metadata" }, "Metadata"), metaIn,
    h("label", { for: "submit-session" }, "Session"), session,
    h("span"), h("div", { class: "toolbar" }, go, result),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    /** @type {Record<string, any>} */
    const body = { targetAgent: /** @type {HTMLInputElement} */ (agent).value.trim() };
    try {
      const p = /** @type {HTMLTextAreaElement} */ (paramsIn).value.trim();
      body.parameters = p ? JSON.parse(p) : { prompt: /** @type {HTMLTextAreaElement} */ (prompt).value };
      const m = /** @type {HTMLTextAreaElement} */ (metaIn).value.trim();
      if (m) body.metadata = JSON.parse(m);
    } catch (err) {
      result.textContent = `not JSON: ${err}`;
      result.className = "error";
      return;
    }
    const s = /** @type {HTMLInputElement} */ (session).value.trim();
    if (s) body.sessionId = s;
    go.setAttribute("disabled", "");
    try {
      const task = await api.postJSON(`${api.DISPATCHER}/api/tasks`, body);
      result.className = "muted";
      clear(result).append("submitted ", h("a", { href: `#/trace/${encodeURIComponent(task.taskId)}`, "data-task-id": task.taskId }, task.taskId));
      onDone(task.taskId);
    } catch (err) {
      result.textContent = String(err);
      result.className = "error";
    } finally {
      go.removeAttribute("disabled");
    }
  });
  return form;
}

// @ts-check
/**
 * Replay view (#/replay/<taskId>): a replay session of the task in the replay service (through
 * the query's proxy), stepped back and forth, jumped, or played at a speed up to a breakpoint,
 * with the state reconstructed at each step; a deterministic replay and its divergence report;
 * a fork from a step with changes, shown next to the original.
 */

const STYLE = `
.replay-view { display: flex; flex-direction: column; gap: 10px; }
.replay-bar { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.replay-bar input[type=number] { width: 5em; }
.replay-bar label { font-size: 12px; display: flex; gap: 4px; align-items: center; }
.replay-slider { flex: 1; min-width: 160px; }
.replay-position { font-weight: 600; min-width: 9em; }
.replay-panels { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 8px; }
.replay-panel { border: 1px solid #8884; border-radius: 6px; padding: 8px; overflow: auto; max-height: 60vh; font-size: 13px; }
.replay-panel h3 { margin: 0 0 6px; font-size: 14px; }
.replay-panel pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; font-size: 12px; }
.replay-msg { border-left: 3px solid #8886; padding: 2px 6px; margin: 4px 0; }
.replay-msg[data-role=user] { border-color: #3b82f6; }
.replay-msg[data-role=assistant] { border-color: #a855f7; }
.replay-msg[data-role=tool] { border-color: #10b981; }
.replay-note { display: flex; gap: 6px; align-items: center; }
.replay-bar-fill { display: inline-block; height: 6px; background: #f59e0b; border-radius: 3px; }
.replay-error { color: #c33; }
.replay-ok { color: #16a34a; font-weight: 600; }
.replay-bad { color: #dc2626; font-weight: 600; }
.replay-section { border: 1px solid #8884; border-radius: 6px; padding: 8px; }
.replay-section table { border-collapse: collapse; }
.replay-section td, .replay-section th { border-bottom: 1px solid #8883; padding: 2px 8px; text-align: left; vertical-align: top; }
.replay-diff { background: #f59e0b33; }
.replay-fork-form { display: grid; grid-template-columns: repeat(3, minmax(180px, 1fr)); gap: 6px; }
.replay-fork-form label { display: flex; flex-direction: column; font-size: 12px; }
.replay-fork-form textarea { min-height: 4em; font-family: monospace; }
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
 * @param {string} tag @param {Record<string, any>} [attrs] @param {...(Node|string|null|undefined|false)} children
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
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/**
 * Replace an element's children, leaving out null, undefined and false.
 * @param {Element} el @param {...(Node|string|null|undefined|false)} children
 */
function put(el, ...children) {
  el.replaceChildren(
    .../** @type {(Node|string)[]} */ (children.filter((c) => c !== null && c !== undefined && c !== false)),
  );
}

/** @param {unknown} err @returns {string} */
function message(err) {
  return err instanceof Error ? err.message : String(err);
}

/** @param {unknown} value @returns {string} JSON, or the string itself */
function show(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/** @param {string} glob an event type or a glob (tool.*) @returns {RegExp} */
function globRegExp(glob) {
  const escaped = glob
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${escaped}$`);
}

/** @param {any} usage @returns {number|null} */
function tokensOf(usage) {
  if (!usage) return null;
  return Number(usage.inputTokens || 0) + Number(usage.outputTokens || 0);
}

/** @param {any} ctx @returns {string} the task id of the route */
function taskIdOf(ctx) {
  const fromParams = ctx.params && (ctx.params.taskId || ctx.params.task || ctx.params.id);
  if (fromParams) return fromParams;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  return decodeURIComponent(parts[1] || "");
}

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string,string>, navigate: (hash: string) => void, api: any}} ctx
 */
export function mount(root, ctx) {
  injectStyle("replay-style", STYLE);
  const api = ctx.api;
  const base = `${api.REPLAY || "/studio-api/replay"}/api/replay`;
  const taskId = taskIdOf(ctx);
  let stopped = false;
  /** @type {string|null} */
  let sessionId = null;
  let total = 0;
  let index = -1;
  let busy = false;
  let playing = false;
  let playTimer = 0;

  if (!taskId) {
    root.append(h("p", { text: "Open a replay from a task: #/replay/<taskId>." }));
    return () => {};
  }

  // -- layout --------------------------------------------------------------------------------
  const status = h("span", { class: "replay-status", "data-testid": "replay-status" });
  const position = h("span", { class: "replay-position", "data-testid": "replay-position", text: "—" });
  const slider = /** @type {HTMLInputElement} */ (
    h("input", { type: "range", class: "replay-slider", min: 1, max: 1, value: 1, "aria-label": "step" })
  );
  const jumpInput = /** @type {HTMLInputElement} */ (
    h("input", { type: "number", min: 1, name: "jump", "aria-label": "jump to step" })
  );
  const speed = /** @type {HTMLSelectElement} */ (
    h(
      "select",
      { name: "speed", "aria-label": "speed" },
      ...[0.5, 1, 2, 5, 10, 25].map((s) =>
        h("option", { value: s, selected: s === 2 ? "" : undefined }, `${s} steps/s`),
      ),
    )
  );
  const bpSteps = /** @type {HTMLInputElement} */ (
    h("input", { name: "bp-steps", placeholder: "e.g. 4, 9", size: 8 })
  );
  const bpTypes = /** @type {HTMLInputElement} */ (
    h("input", { name: "bp-types", placeholder: "e.g. tool.*, error", size: 14 })
  );
  const scope = /** @type {HTMLSelectElement} */ (
    h(
      "select",
      { name: "scope", "aria-label": "replay scope" },
      h("option", { value: "task" }, "this task"),
      h("option", { value: "trace" }, "its whole trace"),
    )
  );
  const btn = (
    /** @type {string} */ label,
    /** @type {string} */ testid,
    /** @type {() => void} */ fn,
    title = "",
  ) =>
    /** @type {HTMLButtonElement} */ (
      h("button", { type: "button", "data-testid": testid, title, onclick: fn }, label)
    );
  const first = btn("|◀ First", "replay-first", () => jump(0), "first step");
  const back = btn("◀ Back", "replay-back", () => step("backward"));
  const forward = btn("Step ▶", "replay-step", () => step("forward"));
  const last = btn("Last ▶|", "replay-last", () => jump(total - 1), "last step");
  const play = btn("Play", "replay-play", () => (playing ? pause("paused") : startPlay()));
  const eventPanel = h(
    "section",
    { class: "replay-panel", "data-testid": "replay-event" },
    h("h3", { text: "Current event" }),
    h("p", { text: "Step forward to start." }),
  );
  const statePanel = h(
    "section",
    { class: "replay-panel", "data-testid": "replay-state" },
    h("h3", { text: "Task state" }),
  );
  const memoryPanel = h(
    "section",
    { class: "replay-panel", "data-testid": "replay-memory" },
    h("h3", { text: "Memory" }),
  );
  const report = h("div", { "data-testid": "replay-report" });
  const overrides = /** @type {HTMLTextAreaElement} */ (
    h("textarea", {
      name: "overrides",
      rows: 1,
      cols: 48,
      placeholder: 'optional, e.g. {"toolResults": {"0": "21"}}',
    })
  );
  const forkResult = h("div", { "data-testid": "replay-fork-result" });

  root.append(
    h(
      "div",
      { class: "replay-view" },
      h(
        "div",
        { class: "replay-bar" },
        h("strong", { text: "Replay of task " }),
        h("a", { href: `#/trace/${encodeURIComponent(taskId)}`, text: taskId }),
        h("label", {}, "Scope", scope),
        status,
      ),
      h(
        "div",
        { class: "replay-bar" },
        first,
        back,
        forward,
        last,
        position,
        slider,
        h(
          "form",
          {
            class: "replay-bar",
            onsubmit: (/** @type {Event} */ e) => {
              e.preventDefault();
              const n = Number(jumpInput.value);
              if (Number.isInteger(n) && n >= 1) jump(n - 1);
            },
          },
          h("label", {}, "Jump to", jumpInput),
          h("button", { type: "submit", "data-testid": "replay-jump" }, "Go"),
        ),
      ),
      h(
        "div",
        { class: "replay-bar" },
        play,
        h("label", {}, "Speed", speed),
        h("label", {}, "Break at steps", bpSteps),
        h("label", {}, "Break on types", bpTypes),
      ),
      h("div", { class: "replay-panels" }, eventPanel, statePanel, memoryPanel),
      h(
        "section",
        { class: "replay-section" },
        h("h3", { text: "Deterministic replay" }),
        h("p", {
          text: "Runs the agent again against this recording and reports the first step where it diverges.",
        }),
        h("label", { class: "replay-bar" }, "Tamper with the recording first (overrides JSON)", overrides),
        btn("Run deterministic replay", "replay-deterministic", () => deterministic()),
        report,
      ),
      forkSection(),
    ),
  );
  slider.addEventListener("change", () => jump(Number(slider.value) - 1));
  scope.addEventListener("change", () => open());

  // -- the session ---------------------------------------------------------------------------
  function controls() {
    const ready = sessionId !== null && !busy;
    first.disabled = back.disabled = !ready || index <= 0;
    forward.disabled = !ready || index >= total - 1;
    last.disabled = !ready || index >= total - 1;
    play.disabled = sessionId === null || (!playing && index >= total - 1);
    play.textContent = playing ? "Pause" : "Play";
    slider.disabled = !ready || total === 0;
    position.textContent =
      sessionId === null ? "—" : index < 0 ? `Step 0 / ${total}` : `Step ${index + 1} / ${total}`;
    position.dataset.index = String(index);
  }

  async function open() {
    pause();
    sessionId = null;
    index = -1;
    controls();
    status.textContent = "Opening a replay session…";
    status.className = "replay-status";
    try {
      /** @type {Record<string, string>} */
      const selection = { taskId };
      if (scope.value === "trace") {
        const detail = await api.getJSON(`/api/tasks/${encodeURIComponent(taskId)}`);
        const traceId = detail.task && (detail.task.traceId || detail.task.trace_id);
        if (!traceId) throw new Error("the task's trace id is not known");
        delete selection.taskId;
        selection.traceId = traceId;
      }
      const session = await api.postJSON(`${base}/create`, selection);
      if (stopped) return;
      sessionId = session.sessionId;
      total = session.total;
      index = session.index;
      slider.max = String(Math.max(total, 1));
      jumpInput.max = String(total);
      status.textContent = `${total} events`;
    } catch (err) {
      status.textContent = `replay: ${message(err)}`;
      status.className = "replay-status replay-error";
    }
    controls();
  }

  /** @param {string} path @returns {Promise<any>} the frame after a move */
  async function move(path) {
    if (!sessionId || busy) return null;
    busy = true;
    controls();
    try {
      const frame = await api.postJSON(`${base}/${sessionId}/${path}`);
      if (stopped) return null;
      render(frame);
      return frame;
    } catch (err) {
      status.textContent = `replay: ${message(err)}`;
      status.className = "replay-status replay-error";
      pause();
      return null;
    } finally {
      busy = false;
      controls();
    }
  }

  /** @param {"forward"|"backward"} direction */
  function step(direction) {
    return move(`step?direction=${direction}`);
  }

  /** @param {number} target 0-based */
  function jump(target) {
    if (target < 0 || target >= total) return Promise.resolve(null);
    return move(`jump?index=${target}`);
  }

  // -- play ----------------------------------------------------------------------------------
  function breakpoints() {
    const steps = new Set(
      bpSteps.value
        .split(/[\s,]+/)
        .map((s) => Number(s))
        .filter((n) => Number.isInteger(n) && n > 0),
    );
    const types = bpTypes.value
      .split(/[\s,]+/)
      .filter(Boolean)
      .map(globRegExp);
    return { steps, types };
  }

  function startPlay() {
    if (!sessionId || index >= total - 1) return;
    playing = true;
    status.textContent = "Playing…";
    status.className = "replay-status";
    controls();
    tick();
  }

  /** @param {string} [why] */
  function pause(why) {
    const was = playing;
    playing = false;
    window.clearTimeout(playTimer);
    if (was && why) status.textContent = why;
    controls();
  }

  async function tick() {
    if (!playing || stopped) return;
    const frame = await step("forward");
    if (!playing || stopped || !frame) return;
    const { steps, types } = breakpoints();
    const type = String(frame.event?.type || "");
    if (steps.has(frame.index + 1) || types.some((re) => re.test(type))) {
      pause(`Breakpoint at step ${frame.index + 1} (${type})`);
      status.dataset.breakpoint = String(frame.index + 1);
      return;
    }
    if (!frame.hasNext) {
      pause("Reached the last step");
      return;
    }
    playTimer = window.setTimeout(tick, 1000 / Number(speed.value || 1));
  }

  // -- rendering -----------------------------------------------------------------------------
  /** @param {any} frame */
  function render(frame) {
    index = frame.index;
    total = frame.total;
    slider.value = String(index + 1);
    const event = frame.event || {};
    put(
      eventPanel,
      h("h3", { text: "Current event" }),
      h("div", { "data-testid": "replay-event-type", class: "replay-event-type", text: event.type || "?" }),
      h("div", {
        text: `${event.time ? new Date(event.time).toLocaleString() : ""} · ${event.agentid || event.source || ""}`,
      }),
      event.subject ? h("div", { text: `subject: ${event.subject}` }) : null,
      event.taskid
        ? h(
            "div",
            {},
            "task: ",
            h("a", { href: `#/trace/${encodeURIComponent(event.taskid)}`, text: event.taskid }),
          )
        : null,
      h("pre", { text: show(event.data) }),
    );
    const state = frame.state || {};
    const tasks = state.tasks || {};
    const task = tasks[event.taskid] || tasks[taskId] || Object.values(tasks)[0];
    renderTask(task, Object.keys(tasks).length, state.eventsApplied);
    const memory = state.memory || {};
    const key = task ? task.sessionId || task.taskId : null;
    renderMemory(key && memory[key] ? { [key]: memory[key] } : memory);
  }

  /** @param {any} task @param {number} count @param {number} applied */
  function renderTask(task, count, applied) {
    if (!task) {
      put(
        statePanel,
        h("h3", { text: "Task state" }),
        h("p", { text: `No task yet (${applied || 0} events applied).` }),
      );
      return;
    }
    const usage = task.usage || {};
    put(
      statePanel,
      h("h3", { text: `Task state · ${task.agent || "?"}` }),
      h(
        "div",
        { "data-testid": "replay-task-status" },
        `status ${task.status || "—"} · steps ${task.steps} · tokens ${tokensOf(usage)} · ${count} task(s) · ${applied} events applied`,
      ),
      task.answer ? h("div", {}, h("strong", { text: "answer: " }), task.answer) : null,
      task.error ? h("div", { class: "replay-error", text: `error: ${task.error}` }) : null,
      ...(task.errors || []).map((/** @type {any} */ e) =>
        h("div", { class: "replay-error", text: String(e) }),
      ),
      h("h3", { text: `Messages (${(task.messages || []).length})` }),
      ...(task.messages || []).map((/** @type {any} */ m) =>
        h(
          "div",
          { class: "replay-msg", "data-role": m.role },
          h("strong", {
            text: `${m.role}${m.step ? ` · step ${m.step}` : ""}${m.name ? ` · ${m.name}` : ""}: `,
          }),
          String(m.content ?? ""),
          ...(m.toolCalls || []).map((/** @type {any} */ c) =>
            h("pre", { text: `→ ${c.name}(${JSON.stringify(c.arguments)})` }),
          ),
        ),
      ),
      (task.delegations || []).length ? h("h3", { text: "Delegations" }) : null,
      ...(task.delegations || []).map((/** @type {any} */ d) =>
        h("pre", { text: `${d.index}: ${d.agent} ${JSON.stringify(d.parameters)}` }),
      ),
    );
  }

  /** @param {Record<string, any>} memories session key -> tiers */
  function renderMemory(memories) {
    const children = [h("h3", { text: "Memory" })];
    const keys = Object.keys(memories);
    if (!keys.length) children.push(h("p", { text: "No memory yet." }));
    for (const key of keys) {
      children.push(h("div", { text: `session ${key}` }));
      for (const [tier, notes] of Object.entries(memories[key])) {
        children.push(h("strong", { text: `${tier} (${notes.length})` }));
        for (const note of notes) {
          children.push(
            h(
              "div",
              { class: "replay-note", title: note.createdAt || "" },
              h("span", {
                class: "replay-bar-fill",
                style: `width:${Math.round(40 * Number(note.importance || 0))}px`,
              }),
              h("span", { text: `${note.role || "note"}: ${note.content}` }),
            ),
          );
        }
      }
    }
    put(memoryPanel, ...children);
  }

  // -- deterministic replay ------------------------------------------------------------------
  async function deterministic() {
    /** @type {Record<string, any>} */
    const request = { taskId };
    if (overrides.value.trim()) {
      try {
        request.overrides = JSON.parse(overrides.value);
      } catch (err) {
        put(report, h("p", { class: "replay-error", text: `overrides: not JSON (${message(err)})` }));
        return;
      }
    }
    put(report, h("p", { text: "Running the deterministic replay…" }));
    try {
      const body = await api.postJSON(`${base}/deterministic`, request);
      if (stopped) return;
      const verdict =
        body.diverged === null
          ? h("p", { "data-testid": "replay-verdict", text: body.reason || "The replay has not finished." })
          : body.diverged
            ? h("p", {
                class: "replay-bad",
                "data-testid": "replay-verdict",
                text: `Diverged at step ${body.step} (${body.at})`,
              })
            : h("p", {
                class: "replay-ok",
                "data-testid": "replay-verdict",
                text: "No divergence: the replay matches the recording",
              });
      put(
        report,
        verdict,
        body.tampered ? h("p", { text: "(the recording was tampered with before the replay)" }) : null,
        body.reason && body.diverged ? h("p", { "data-testid": "replay-reason", text: body.reason }) : null,
        body.diverged
          ? h(
              "table",
              {},
              h("tr", {}, h("th", { text: "expected" }), h("th", { text: "got" })),
              h(
                "tr",
                {},
                h("td", {}, h("pre", { text: show(body.expected) })),
                h("td", {}, h("pre", { text: show(body.got) })),
              ),
            )
          : null,
        runsTable("original", body.original, "replay", body.replay),
        body.replay?.taskId
          ? h(
              "a",
              {
                href: `#/compare/${encodeURIComponent(taskId)}/${encodeURIComponent(body.replay.taskId)}`,
                "data-testid": "replay-compare-link",
              },
              "Compare side by side",
            )
          : null,
      );
    } catch (err) {
      put(report, h("p", { class: "replay-error", text: `deterministic replay: ${message(err)}` }));
    }
  }

  /** @param {string} aName @param {any} a @param {string} bName @param {any} b */
  function runsTable(aName, a, bName, b) {
    a = a || {};
    b = b || {};
    /** @type {[string, (s: any) => any][]} */
    const rows = [
      ["task", (s) => s.taskId],
      ["status", (s) => s.status],
      ["answer", (s) => s.answer],
      ["error", (s) => s.error],
      ["steps", (s) => s.steps],
      ["tokens", (s) => tokensOf(s.usage)],
      ["cost (USD)", (s) => s.usage?.costUsd],
      ["latency (s)", (s) => (typeof s.latencyS === "number" ? s.latencyS.toFixed(2) : s.latencyS)],
    ];
    return h(
      "table",
      { class: "replay-runs" },
      h("tr", {}, h("th", { text: "" }), h("th", { text: aName }), h("th", { text: bName })),
      ...rows.map(([label, get]) => {
        const x = get(a);
        const y = get(b);
        const differs = !["task", "latency (s)"].includes(label) && show(x) !== show(y);
        return h(
          "tr",
          { class: differs ? "replay-diff" : undefined },
          h("th", { text: label }),
          h("td", { text: show(x) }),
          h("td", { text: show(y) }),
        );
      }),
    );
  }

  // -- fork ----------------------------------------------------------------------------------
  function forkSection() {
    const field = (
      /** @type {string} */ name,
      /** @type {string} */ label,
      /** @type {HTMLElement} */ input,
    ) => {
      input.setAttribute("name", name);
      return h("label", {}, label, input);
    };
    const fromStep = /** @type {HTMLInputElement} */ (h("input", { type: "number", min: 1, value: 1 }));
    const prompt = /** @type {HTMLInputElement} */ (h("input", { placeholder: "unchanged" }));
    const model = /** @type {HTMLInputElement} */ (h("input", { placeholder: "unchanged" }));
    const maxSteps = /** @type {HTMLInputElement} */ (
      h("input", { type: "number", min: 1, placeholder: "unchanged" })
    );
    const tools = /** @type {HTMLInputElement} */ (
      h("input", { placeholder: "comma list; empty: unchanged" })
    );
    const system = /** @type {HTMLTextAreaElement} */ (h("textarea", { placeholder: "unchanged" }));
    const script = /** @type {HTMLTextAreaElement} */ (h("textarea", { placeholder: '[{"answer": "..."}]' }));
    const submit = async (/** @type {Event} */ e) => {
      e.preventDefault();
      /** @type {Record<string, any>} */
      const changes = {};
      if (prompt.value.trim()) changes.prompt = prompt.value;
      if (model.value.trim()) changes.model = model.value.trim();
      if (maxSteps.value) changes.maxSteps = Number(maxSteps.value);
      if (tools.value.trim())
        changes.tools = tools.value
          .split(",")
          .map((t) => t.trim())
          .filter(Boolean);
      if (system.value.trim()) changes.systemPrompt = system.value;
      if (script.value.trim()) {
        try {
          changes.script = JSON.parse(script.value);
        } catch (err) {
          put(forkResult, h("p", { class: "replay-error", text: `script: not JSON (${message(err)})` }));
          return;
        }
      }
      put(forkResult, h("p", { text: "Running the fork…" }));
      try {
        const body = await api.postJSON(`${base}/fork`, {
          taskId,
          fromStep: Number(fromStep.value || 1),
          changes,
        });
        if (stopped) return;
        const same = body.comparison
          ? body.comparison.sameAnswer
            ? "same answer"
            : "different answer"
          : "still running";
        put(
          forkResult,
          h("p", { "data-testid": "replay-fork-verdict", text: `Fork from step ${body.fromStep}: ${same}` }),
          runsTable("original", body.original, "fork", body.fork),
          body.fork?.taskId
            ? h(
                "a",
                {
                  href: `#/compare/${encodeURIComponent(taskId)}/${encodeURIComponent(body.fork.taskId)}`,
                  "data-testid": "replay-fork-compare",
                },
                "Compare side by side",
              )
            : null,
        );
      } catch (err) {
        put(forkResult, h("p", { class: "replay-error", text: `fork: ${message(err)}` }));
      }
    };
    return h(
      "section",
      { class: "replay-section" },
      h("h3", { text: "Fork" }),
      h("p", {
        text: "Run the task again: LLM steps before “from step” come from the recording, the rest run live with the changes.",
      }),
      h(
        "form",
        { class: "replay-fork-form", onsubmit: submit, "data-testid": "replay-fork-form" },
        field("fromStep", "From LLM step", fromStep),
        field("model", "Model", model),
        field("maxSteps", "Max steps", maxSteps),
        field("tools", "Tool subset", tools),
        field("prompt", "Prompt", prompt),
        field("systemPrompt", "System prompt", system),
        field("script", "Script (JSON plan from that step)", script),
        h("div", {}, h("button", { type: "submit", "data-testid": "replay-fork" }, "Fork")),
      ),
      forkResult,
    );
  }

  controls();
  open();
  return () => {
    stopped = true;
    pause(); // the replay session expires in the replay service on its own
  };
}

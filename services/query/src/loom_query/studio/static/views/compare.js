// @ts-check
/**
 * Compare view (#/compare/<taskA>/<taskB>): two tasks side by side: answer, steps, tokens, cost,
 * latency and status, then their steps (from their events) aligned by step number, with the
 * rows that differ highlighted.
 */
import { fmtCost, fmtDuration, fmtTokens, h } from "../util.js";

const STYLE = `
.compare-bar { display: flex; gap: 8px; align-items: end; flex-wrap: wrap; margin-bottom: 8px; }
.compare-bar label { display: flex; flex-direction: column; font-size: 12px; gap: 2px; }
.compare-table { border-collapse: collapse; width: 100%; font-size: 13px; margin-bottom: 12px; }
.compare-table th, .compare-table td { border-bottom: 1px solid #8883; padding: 3px 8px; text-align: left; vertical-align: top; }
.compare-table td { width: 45%; }
.compare-diff td { background: #f59e0b33; }
.compare-step-line { white-space: pre-wrap; word-break: break-word; font-family: monospace; font-size: 12px; }
.compare-step-error { color: #dc2626; }
.compare-error { color: #c33; }
`;

/** @param {string} id @param {string} css */
function injectStyle(id, css) {
  if (document.getElementById(id)) return;
  const style = document.createElement("style");
  style.id = id;
  style.textContent = css;
  document.head.appendChild(style);
}

/** @param {unknown} err @returns {string} */
function message(err) {
  return err instanceof Error ? err.message : String(err);
}

/** @param {unknown} value @param {number} [max] @returns {string} */
function text(value, max = 400) {
  const s = typeof value === "string" ? value : JSON.stringify(value);
  return s && s.length > max ? `${s.slice(0, max)}…` : (s ?? "");
}

/**
 * What a task did per step, from its events (causal order): thoughts, tool calls and results,
 * delegations and the answer, and the tokens of the step's LLM calls.
 * @param {any[]} events
 * @returns {Map<number, {lines: {text: string, error: boolean}[], tokens: number}>}
 */
export function stepsOf(events) {
  /** @type {Map<number, {lines: {text: string, error: boolean}[], tokens: number}>} */
  const steps = new Map();
  let current = 0;
  const at = (/** @type {number} */ n) => {
    let s = steps.get(n);
    if (!s) steps.set(n, (s = { lines: [], tokens: 0 }));
    return s;
  };
  for (const event of events) {
    const data = event.data || {};
    const type = event.type;
    if (typeof data.step === "number") current = data.step;
    if (type === "agent.action" && typeof data.index === "number" && data.tool == null)
      current = data.index + 1;
    if (type === "agent.answer" && typeof data.steps === "number" && data.steps > 0 && !data.children)
      current = data.steps;
    const step = at(current);
    if (type === "llm.usage") step.tokens += Number(data.input_tokens || 0) + Number(data.output_tokens || 0);
    else if (type === "agent.thought" && data.content)
      step.lines.push({ text: `thought: ${text(data.content)}`, error: false });
    else if (type === "agent.action" && data.tool)
      step.lines.push({ text: `call ${data.tool}(${text(data.arguments)})`, error: false });
    else if (type === "agent.action" && data.agent)
      step.lines.push({ text: `delegate → ${data.agent} ${text(data.parameters)}`, error: false });
    else if (type === "tool.result")
      step.lines.push({
        text: `${data.name || "tool"} → ${text(data.content)}`,
        error: Boolean(data.is_error),
      });
    else if (type === "agent.answer") step.lines.push({ text: `answer: ${text(data.answer)}`, error: false });
    else if (type === "error")
      step.lines.push({ text: `error: ${text(data.error || data.reason)}`, error: true });
  }
  if (steps.has(0) && !(/** @type {any} */ (steps.get(0)).lines.length)) steps.delete(0);
  return steps;
}

/** @param {any} ctx @returns {[string, string]} */
function taskIds(ctx) {
  const p = ctx.params || {};
  return [p.taskA || "", p.taskB || ""];
}

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string,string>, navigate: (hash: string) => void, api: any}} ctx
 */
export function mount(root, ctx) {
  injectStyle("compare-style", STYLE);
  const api = ctx.api;
  const [a, b] = taskIds(ctx);
  let stopped = false;
  const inputA = /** @type {HTMLInputElement} */ (h("input", { name: "task-a", value: a, size: 36 }));
  const inputB = /** @type {HTMLInputElement} */ (h("input", { name: "task-b", value: b, size: 36 }));
  const out = h("div", { "data-testid": "compare" });
  root.append(
    h(
      "form",
      {
        class: "compare-bar",
        onsubmit: (/** @type {Event} */ e) => {
          e.preventDefault();
          if (inputA.value.trim() && inputB.value.trim())
            ctx.navigate(
              `#/compare/${encodeURIComponent(inputA.value.trim())}/${encodeURIComponent(inputB.value.trim())}`,
            );
        },
      },
      h("label", {}, "Task A", inputA),
      h("label", {}, "Task B", inputB),
      h("button", { type: "submit" }, "Compare"),
    ),
    out,
  );

  async function load() {
    if (!a || !b) {
      out.replaceChildren(h("p", {}, "Give two task ids to compare."));
      return;
    }
    out.replaceChildren(h("p", {}, "Loading…"));
    try {
      const [da, db] = await Promise.all(
        [a, b].map((id) => api.getJSON(`/api/tasks/${encodeURIComponent(id)}`)),
      );
      if (stopped) return;
      render(da, db);
    } catch (err) {
      out.replaceChildren(
        h("p", { class: "compare-error" }, `compare: ${message(err)}`),
        h("button", { type: "button", onclick: () => load() }, "Retry"),
      );
    }
  }

  /** @param {any} detail */
  function summary(detail) {
    const task = detail.task || {};
    const result = task.result && typeof task.result === "object" ? task.result : {};
    let tokens = 0;
    let cost = 0;
    let priced = false;
    let llmCalls = 0;
    for (const e of detail.events || []) {
      if (e.type !== "llm.usage") continue;
      const d = e.data || {};
      llmCalls += 1;
      tokens += Number(d.input_tokens || 0) + Number(d.output_tokens || 0);
      if (typeof d.cost_usd === "number") {
        cost += d.cost_usd;
        priced = true;
      }
    }
    return {
      agent: task.targetAgent ?? "—",
      status: task.status ?? "—",
      answer: result.answer ?? (typeof task.result === "string" ? task.result : null) ?? task.error ?? "—",
      steps:
        typeof result.steps === "number"
          ? result.steps
          : Array.isArray(result.children)
            ? result.children.length
            : llmCalls || "—",
      tokens: fmtTokens(tokens),
      cost: priced ? fmtCost(cost) : "—",
      latency: fmtDuration(task.durationS),
      events: String(detail.count ?? (detail.events || []).length),
    };
  }

  /** @param {any} da @param {any} db */
  function render(da, db) {
    const sa = summary(da);
    const sb = summary(db);
    const head = h(
      "tr",
      {},
      h("th", {}, ""),
      h("th", {}, h("a", { href: `#/trace/${encodeURIComponent(a)}` }, `A ${a}`)),
      h("th", {}, h("a", { href: `#/trace/${encodeURIComponent(b)}` }, `B ${b}`)),
    );
    const keys = /** @type {(keyof typeof sa)[]} */ ([
      "agent",
      "status",
      "answer",
      "steps",
      "tokens",
      "cost",
      "latency",
      "events",
    ]);
    const differs = (/** @type {keyof typeof sa} */ k) =>
      !["latency", "events"].includes(k) && String(sa[k]) !== String(sb[k]);
    const overview = h(
      "table",
      { class: "compare-table", "data-testid": "compare-summary" },
      head,
      ...keys.map((k) =>
        h(
          "tr",
          { class: differs(k) ? "compare-diff" : null, "data-field": k },
          h("th", {}, k),
          h("td", {}, String(sa[k])),
          h("td", {}, String(sb[k])),
        ),
      ),
    );
    const stepsA = stepsOf(da.events || []);
    const stepsB = stepsOf(db.events || []);
    const numbers = [...new Set([...stepsA.keys(), ...stepsB.keys()])].sort((x, y) => x - y);
    const cell = (/** @type {any} */ s) =>
      s
        ? h(
            "td",
            {},
            ...s.lines.map((/** @type {any} */ l) =>
              h("div", { class: `compare-step-line${l.error ? " compare-step-error" : ""}` }, l.text),
            ),
            s.tokens
              ? h("div", { style: "opacity:.7;font-size:11px" }, `${fmtTokens(s.tokens)} tokens`)
              : null,
          )
        : h("td", { style: "opacity:.6" }, "(no such step)");
    const linesOf = (/** @type {any} */ s) =>
      s ? s.lines.map((/** @type {any} */ l) => l.text).join("\n") : null;
    const rows = numbers.map((n) => {
      const x = stepsA.get(n);
      const y = stepsB.get(n);
      const same = linesOf(x) === linesOf(y);
      return h(
        "tr",
        { class: same ? "compare-step" : "compare-step compare-diff", "data-step": n },
        h("th", {}, n === 0 ? "start" : `step ${n}`),
        cell(x),
        cell(y),
      );
    });
    const diffCount = rows.filter((r) => r.classList.contains("compare-diff")).length;
    out.replaceChildren(
      overview,
      h("h3", {}, `Steps (${numbers.length}; ${diffCount} differ)`),
      h(
        "table",
        { class: "compare-table", "data-testid": "compare-steps" },
        h("tr", {}, h("th", {}, "step"), h("th", {}, "A"), h("th", {}, "B")),
        ...rows,
      ),
    );
  }

  load();
  return () => {
    stopped = true;
  };
}

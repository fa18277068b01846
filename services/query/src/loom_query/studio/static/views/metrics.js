// @ts-check
/**
 * Metrics view (#/metrics): uPlot charts of /api/metrics over a chosen time range: tokens, cost
 * and LLM latency per agent and per model, task throughput and error rate; the cost breakdown.
 */
import uPlot from "../vendor/uPlot.esm.js";
import { fmtCost, fmtDuration, fmtTokens, h } from "../util.js";

const RANGES = [
  { label: "15 min", minutes: 15, bucket: "1m" },
  { label: "1 h", minutes: 60, bucket: "1m" },
  { label: "6 h", minutes: 360, bucket: "5m" },
  { label: "24 h", minutes: 1440, bucket: "15m" },
  { label: "7 d", minutes: 10080, bucket: "1h" },
];
const PALETTE = [
  "#3b82f6",
  "#10b981",
  "#a855f7",
  "#f59e0b",
  "#ef4444",
  "#06b6d4",
  "#84cc16",
  "#ec4899",
  "#6b7280",
];
const REFRESH_MS = 15000;

const STYLE = `
.metrics-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: end; margin-bottom: 8px; }
.metrics-bar label { display: flex; flex-direction: column; font-size: 12px; gap: 2px; }
.metrics-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 10px; }
.metrics-chart { border: 1px solid #8884; border-radius: 6px; padding: 6px; }
.metrics-chart h3 { margin: 0 0 4px; font-size: 14px; }
.metrics-empty { opacity: .7; font-size: 13px; padding: 20px 0; }
.metrics-error { color: #c33; }
.metrics-cost { border-collapse: collapse; font-size: 13px; margin-top: 10px; }
.metrics-cost td, .metrics-cost th { border-bottom: 1px solid #8883; padding: 2px 8px; text-align: left; }
`;

/** @param {string} id @param {string} css */
function injectStyle(id, css) {
  if (document.getElementById(id)) return;
  const style = document.createElement("style");
  style.id = id;
  style.textContent = css;
  document.head.appendChild(style);
}

/** uPlot's own stylesheet, once. */
function injectUplotCss() {
  if (document.getElementById("metrics-uplot-css")) return;
  const link = document.createElement("link");
  link.id = "metrics-uplot-css";
  link.rel = "stylesheet";
  link.href = new URL("../vendor/uPlot.min.css", import.meta.url).href;
  document.head.appendChild(link);
}

/** @param {unknown} err @returns {string} */
function message(err) {
  return err instanceof Error ? err.message : String(err);
}

/** @type {number[]} the bucket times (seconds) of the range being drawn */
let grid = [];

/**
 * The bucket times of a range: multiples of the bucket from start to end (time_bucket's grid).
 * @param {number} startS @param {number} endS @param {number} bucketS @returns {number[]}
 */
function bucketGrid(startS, endS, bucketS) {
  const out = [];
  for (let t = Math.floor(startS / bucketS) * bucketS; t <= endS && out.length < 2000; t += bucketS)
    out.push(t);
  return out;
}

/**
 * Pivot series rows into uPlot data: x = bucket times (seconds) over the whole range, one line
 * per group; a bucket without a row is 0 for counts (``fill``), a gap otherwise.
 * @param {any[]} rows
 * @param {(row: any) => string|null} group the line a row belongs to (null: skip it)
 * @param {(row: any) => number|null} value
 * @param {number|null} [fill]
 * @returns {{xs: number[], names: string[], data: (number|null)[][]}}
 */
function pivot(rows, group, value, fill = 0) {
  const times = [...new Set([...grid, ...rows.map((r) => Date.parse(r.bucket) / 1000)])].sort(
    (a, b) => a - b,
  );
  const at = new Map(times.map((t, i) => [t, i]));
  /** @type {Map<string, (number|null)[]>} */
  const lines = new Map();
  for (const row of rows) {
    const name = group(row);
    if (name === null) continue;
    let line = lines.get(name);
    if (!line) lines.set(name, (line = times.map(() => fill)));
    const i = /** @type {number} */ (at.get(Date.parse(row.bucket) / 1000));
    const v = value(row);
    if (v !== null && v !== undefined) line[i] = (line[i] || 0) + v;
  }
  const names = [...lines.keys()].sort();
  return { xs: times, names, data: names.map((n) => /** @type {(number|null)[]} */ (lines.get(n))) };
}

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string,string>, navigate: (hash: string) => void, api: any}} ctx
 */
export function mount(root, ctx) {
  injectStyle("metrics-style", STYLE);
  injectUplotCss();
  const api = ctx.api;
  let stopped = false;
  let timer = 0;
  /** @type {uPlot[]} */
  let plots = [];
  const range = /** @type {HTMLSelectElement} */ (
    h(
      "select",
      { name: "range", "data-testid": "metrics-range" },
      ...RANGES.map((r, i) => h("option", { value: String(i), selected: i === 1 }, r.label)),
    )
  );
  const status = h("span", { "data-testid": "metrics-status" });
  const charts = h("div", { class: "metrics-grid", "data-testid": "metrics-grid" });
  const cost = h("div", { "data-testid": "metrics-cost" });
  root.append(
    h(
      "div",
      { class: "metrics-bar" },
      h("label", {}, "Time range", range),
      h("button", { type: "button", onclick: () => load() }, "Refresh"),
      status,
    ),
    charts,
    cost,
  );
  range.addEventListener("change", () => load());

  /**
   * @param {string} title @param {{xs: number[], names: string[], data: (number|null)[][]}} p
   * @param {(v: number) => string} fmt @param {[number, number]} [yRange] a fixed y range
   */
  function chart(title, p, fmt, yRange) {
    const box = h("section", { class: "metrics-chart", "data-chart": title }, h("h3", {}, title));
    charts.append(box);
    if (!p.xs.length || !p.names.length) {
      box.append(h("div", { class: "metrics-empty" }, "No data in this range."));
      return;
    }
    const opts = {
      width: Math.max(320, box.clientWidth - 14),
      height: 200,
      scales: yRange
        ? { y: { range: yRange } }
        : {
            y: {
              range: (/** @type {any} */ _u, /** @type {number} */ min, /** @type {number} */ max) => [
                Math.min(0, min),
                max > 0 ? max * 1.1 : 1,
              ],
            },
          },
      series: [
        {},
        ...p.names.map((name, i) => ({
          label: name,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          spanGaps: true,
          points: { show: true, size: 4 },
          value: (/** @type {any} */ _u, /** @type {number|null} */ v) =>
            v === null || v === undefined ? "—" : fmt(v),
        })),
      ],
      axes: [
        {},
        { values: (/** @type {any} */ _u, /** @type {number[]} */ ticks) => ticks.map(fmt), size: 60 },
      ],
    };
    plots.push(new uPlot(/** @type {any} */ (opts), /** @type {any} */ ([p.xs, ...p.data]), box));
  }

  async function load() {
    window.clearTimeout(timer);
    const r = RANGES[Number(range.value)] || RANGES[1];
    const end = new Date();
    const params = {
      start_time: new Date(end.getTime() - r.minutes * 60_000).toISOString(),
      end_time: end.toISOString(),
      bucket: r.bucket,
    };
    status.textContent = "Loading…";
    try {
      const [byAgent, byAction, overall] = await Promise.all([
        api.getJSON("/api/metrics", { ...params, group_by: "agent" }),
        api.getJSON("/api/metrics", { ...params, group_by: "action" }),
        api.getJSON("/api/metrics", { ...params, group_by: "none" }),
      ]);
      if (stopped) return;
      plots.forEach((p) => p.destroy());
      plots = [];
      charts.replaceChildren();
      grid = bucketGrid(
        Date.parse(params.start_time) / 1000,
        Date.parse(params.end_time) / 1000,
        overall.bucketSeconds,
      );
      const agent = (/** @type {any} */ row) => row.agent || null;
      const model = (/** @type {any} */ row) =>
        typeof row.action === "string" && row.action.startsWith("llm:") ? row.action.slice(4) : null;
      const llmRows = (/** @type {any[]} */ rows) => rows.filter((row) => row.llmCalls > 0);
      chart(
        "Tokens per agent",
        pivot(byAgent.series, agent, (row) => row.totalTokens),
        fmtTokens,
      );
      chart(
        "Tokens per model",
        pivot(byAction.series, model, (row) => row.totalTokens),
        fmtTokens,
      );
      chart(
        "Cost per agent (USD)",
        pivot(llmRows(byAgent.series), agent, (row) => row.costUsd),
        fmtCost,
      );
      chart(
        "Cost per model (USD)",
        pivot(llmRows(byAction.series), model, (row) => row.costUsd),
        fmtCost,
      );
      chart(
        "LLM latency p95 per agent",
        pivot(llmRows(byAgent.series), agent, (row) => row.latencyS.llm.p95, null),
        fmtDuration,
      );
      chart(
        "LLM latency p95 per model",
        pivot(llmRows(byAction.series), model, (row) => row.latencyS.llm.p95, null),
        fmtDuration,
      );
      const tasks = overall.series;
      const done = (/** @type {any} */ row) =>
        row.tasks.completed + row.tasks.failed + row.tasks.cancelled + row.tasks.dead;
      chart(
        "Task throughput (finished per bucket)",
        pivot(
          tasks,
          () => "finished",
          (row) => done(row),
        ),
        (v) => String(Math.round(v * 100) / 100),
      );
      chart(
        "Task error rate",
        pivot(
          tasks,
          () => "failed or dead",
          (row) => (done(row) ? (row.tasks.failed + row.tasks.dead) / done(row) : null),
          null,
        ),
        (v) => `${Math.round(v * 100)}%`,
        [0, 1],
      );
      chart(
        "Task latency p50 / p95",
        mergeLines(
          pivot(
            tasks,
            () => "p50",
            (row) => row.latencyS.task.p50,
            null,
          ),
          pivot(
            tasks,
            () => "p95",
            (row) => row.latencyS.task.p95,
            null,
          ),
        ),
        fmtDuration,
      );
      renderCost(byAgent.cost);
      status.textContent = `${r.label}, ${r.bucket} buckets · updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      status.textContent = `metrics: ${message(err)}`;
      status.className = "metrics-error";
    }
    if (!stopped) timer = window.setTimeout(load, REFRESH_MS);
  }

  /** @param {{xs: number[], names: string[], data: (number|null)[][]}} a @param {{xs: number[], names: string[], data: (number|null)[][]}} b */
  function mergeLines(a, b) {
    return { xs: a.xs, names: [...a.names, ...b.names], data: [...a.data, ...b.data] };
  }

  /** @param {any} breakdown */
  function renderCost(breakdown) {
    if (!breakdown) return;
    const table = (/** @type {string} */ title, /** @type {any[]} */ rows) =>
      h(
        "table",
        { class: "metrics-cost", "data-cost": title },
        h("tr", {}, ...[title, "LLM calls", "input", "output", "cost"].map((t) => h("th", {}, t))),
        ...rows.map((row) =>
          h(
            "tr",
            {},
            h("td", {}, row.key ?? "(none)"),
            h("td", {}, String(row.llmCalls)),
            h("td", {}, fmtTokens(row.inputTokens)),
            h("td", {}, fmtTokens(row.outputTokens)),
            h("td", {}, fmtCost(row.costUsd)),
          ),
        ),
      );
    const t = breakdown.total;
    cost.replaceChildren(
      h(
        "h3",
        {},
        `LLM cost over the range: ${fmtCost(t.costUsd)} · ${t.llmCalls} calls · ${fmtTokens(t.inputTokens + t.outputTokens)} tokens`,
      ),
      h(
        "div",
        { style: "display:flex;gap:24px;flex-wrap:wrap" },
        table("agent", breakdown.byAgent),
        table("model", breakdown.byModel),
      ),
    );
  }

  load();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
    plots.forEach((p) => p.destroy());
  };
}

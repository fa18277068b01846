// @ts-check
/**
 * Memory browser (#/memory[/<nodeId>]): pick an agent (the topology's agent nodes, or any id)
 * and see its memory rebuilt by /api/memory/{node}: the tiers as columns, each note with its
 * importance, role, task and time; the sessions with their consolidations and consistency, and
 * a session filter.
 */
import { fmtTime, h } from "../util.js";

const TIERS = ["session", "working", "long_term"];

const STYLE = `
.memory-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: end; margin-bottom: 8px; }
.memory-bar label { display: flex; flex-direction: column; font-size: 12px; gap: 2px; }
.memory-tiers { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; }
.memory-tier { border: 1px solid #8884; border-radius: 6px; padding: 6px; min-height: 80px; max-height: 60vh; overflow: auto; }
.memory-tier h3 { margin: 0 0 6px; font-size: 14px; }
.memory-note { border-bottom: 1px solid #8882; padding: 4px 0; font-size: 13px; }
.memory-note-meta { font-size: 11px; opacity: .75; display: flex; gap: 8px; flex-wrap: wrap; }
.memory-importance { display: inline-block; width: 60px; height: 6px; background: #8883; border-radius: 3px; vertical-align: middle; }
.memory-importance > span { display: block; height: 100%; background: #f59e0b; border-radius: 3px; }
.memory-sessions { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
.memory-sessions td, .memory-sessions th { border-bottom: 1px solid #8883; padding: 2px 8px; text-align: left; }
.memory-sessions tr.memory-selected { background: #3b82f622; }
.memory-bad { color: #dc2626; font-weight: 600; }
.memory-error { color: #c33; }
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

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string,string>, navigate: (hash: string) => void, api: any}} ctx
 */
export function mount(root, ctx) {
  injectStyle("memory-style", STYLE);
  const api = ctx.api;
  const nodeId = ctx.params.nodeId || "";
  let stopped = false;
  const picker = /** @type {HTMLSelectElement} */ (
    h(
      "select",
      { name: "node", "data-testid": "memory-node" },
      h("option", { value: "" }, "— pick an agent —"),
    )
  );
  const typed = /** @type {HTMLInputElement} */ (
    h("input", { name: "node-id", placeholder: "or an agent id", size: 18 })
  );
  const session = /** @type {HTMLSelectElement} */ (
    h(
      "select",
      { name: "session", "data-testid": "memory-session" },
      h("option", { value: "" }, "all sessions"),
    )
  );
  const summary = h("div", { "data-testid": "memory-summary" });
  const sessions = h("div", {});
  const tiers = h("div", { class: "memory-tiers", "data-testid": "memory-tiers" });
  /** @type {any} */
  let body = null;

  root.append(
    h(
      "form",
      {
        class: "memory-bar",
        onsubmit: (/** @type {Event} */ e) => {
          e.preventDefault();
          const id = typed.value.trim() || picker.value;
          if (id) ctx.navigate(`#/memory/${encodeURIComponent(id)}`);
        },
      },
      h("label", {}, "Agent", picker),
      h("label", {}, "Agent id", typed),
      h("button", { type: "submit" }, "Show"),
      h("label", {}, "Session", session),
    ),
    summary,
    sessions,
    tiers,
  );
  picker.addEventListener("change", () => {
    if (picker.value) ctx.navigate(`#/memory/${encodeURIComponent(picker.value)}`);
  });
  session.addEventListener("change", () => render());

  async function loadNodes() {
    try {
      // agents seen over the last week (the topology's default window is shorter)
      const since = new Date(Date.now() - 7 * 86_400_000).toISOString();
      const topo = await api.getJSON("/api/topology", { start_time: since });
      if (stopped) return;
      const agents = topo.nodes.filter((/** @type {any} */ n) => n.type === "agent");
      const ids = agents.map((/** @type {any} */ n) => n.nodeId || n.name);
      if (nodeId && !ids.includes(nodeId)) ids.unshift(nodeId);
      picker.replaceChildren(
        h("option", { value: "" }, "— pick an agent —"),
        ...ids.map((/** @type {string} */ id) => h("option", { value: id, selected: id === nodeId }, id)),
      );
    } catch (err) {
      summary.replaceChildren(h("p", { class: "memory-error", text: `agents: ${message(err)}` }));
    }
  }

  async function load() {
    if (!nodeId) {
      summary.replaceChildren(h("p", { text: "Pick an agent to see its memory." }));
      return;
    }
    summary.replaceChildren(h("p", { text: `Loading the memory of ${nodeId}…` }));
    try {
      body = await api.getJSON(`/api/memory/${encodeURIComponent(nodeId)}`);
      if (stopped) return;
      const keys = (body.sessions || []).map((/** @type {any} */ s) => s.session_id || "");
      const wanted = ctx.params.session || session.value;
      session.replaceChildren(
        h("option", { value: "" }, "all sessions"),
        ...keys.map((/** @type {string} */ k) =>
          h("option", { value: k, selected: k === wanted }, k || "(no session)"),
        ),
      );
      render();
    } catch (err) {
      summary.replaceChildren(h("p", { class: "memory-error", text: `memory: ${message(err)}` }));
    }
  }

  function render() {
    if (!body) return;
    const chosen = session.value;
    const inSession = (/** @type {any} */ e) => !chosen || (e.session_id || e.task_id || "") === chosen;
    const counts = TIERS.map((t) => `${t} ${(body.tiers[t] || []).filter(inSession).length}`).join(" · ");
    summary.replaceChildren(
      h(
        "p",
        {},
        h("strong", {}, body.node_id),
        ` · ${counts} · ${body.events_replayed} memory events replayed`,
        body.truncated ? h("span", { class: "memory-bad" }, " (truncated: older events not replayed)") : null,
      ),
    );
    const rows = (body.sessions || []).map((/** @type {any} */ s) =>
      h(
        "tr",
        { class: (s.session_id || "") === chosen && chosen ? "memory-selected" : null },
        h(
          "td",
          {},
          h(
            "a",
            { href: "#", onclick: (/** @type {Event} */ e) => pick(e, s.session_id || "") },
            s.session_id || "(none)",
          ),
        ),
        h("td", {}, String(s.entries)),
        h("td", {}, String(s.consolidations)),
        h("td", { class: s.consistent ? null : "memory-bad" }, s.consistent ? "yes" : "no"),
        h("td", {}, (s.instances || []).join(", ")),
      ),
    );
    sessions.replaceChildren(
      h(
        "table",
        { class: "memory-sessions", "data-testid": "memory-sessions" },
        h(
          "tr",
          {},
          ...["session", "entries", "consolidations", "consistent", "instances"].map((t) => h("th", {}, t)),
        ),
        ...rows,
      ),
    );
    tiers.replaceChildren(
      ...TIERS.map((tier) => {
        const notes = (body.tiers[tier] || []).filter(inSession);
        return h(
          "section",
          { class: "memory-tier", "data-tier": tier },
          h("h3", {}, `${tier.replace("_", " ")} (${notes.length})`),
          ...notes.map((/** @type {any} */ n) =>
            h(
              "div",
              { class: "memory-note" },
              h("div", {}, n.content),
              h(
                "div",
                { class: "memory-note-meta" },
                h(
                  "span",
                  { class: "memory-importance", title: `importance ${n.importance}` },
                  h("span", { style: `width:${Math.round(100 * Number(n.importance || 0))}%` }),
                ),
                h("span", {}, Number(n.importance).toFixed(2)),
                h("span", {}, n.role || "note"),
                n.task_id
                  ? h(
                      "a",
                      { href: `#/trace/${encodeURIComponent(n.task_id)}` },
                      `task ${String(n.task_id).slice(0, 8)}`,
                    )
                  : null,
                h("span", {}, fmtTime(n.created_at)),
              ),
            ),
          ),
        );
      }),
    );
  }

  /** @param {Event} e @param {string} key */
  function pick(e, key) {
    e.preventDefault();
    session.value = key;
    render();
  }

  loadNodes();
  load();
  return () => {
    stopped = true;
  };
}

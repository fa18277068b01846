// @ts-check
/** #/approvals: the tasks waiting for a decision (status input_required) with the tool call
 * each waits on; approve (optionally with edited arguments) or reject (with a reason) through
 * the dispatcher proxy. The list follows the live feed's approval.* and task.* events. */

import { h, clear, fmtAgo, fmtTime, pretty, shortId, toast, debounce } from "../util.js";

/**
 * @param {HTMLElement} root
 * @param {{params: Record<string, string>, navigate: (hash: string) => void, api: typeof import('../api.js')}} ctx
 */
export function mount(root, ctx) {
  const { api } = ctx;
  let requestNo = 0;
  /** @type {Map<string, HTMLElement>} task id -> its card (kept across reloads: edits survive) */
  const cards = new Map();
  const countEl = h("span", { class: "count", id: "approvals-count" }, "loading…");
  const list = h("div", { class: "cards", id: "approvals" });
  root.append(h("div", { class: "toolbar" }, h("h2", null, "Approvals"), countEl), list);

  async function reload() {
    const mine = ++requestNo;
    try {
      const page = await api.getJSON("/api/tasks", { status: "input_required", limit: 200 });
      if (mine !== requestNo) return;
      render(page.tasks, page.total);
    } catch (err) {
      if (mine === requestNo) countEl.textContent = String(err);
    }
  }

  /** @param {any[]} tasks @param {number} total */
  function render(tasks, total) {
    countEl.textContent = `${total} waiting`;
    const ids = new Set(tasks.map((t) => t.taskId));
    for (const [id, el] of cards) {
      if (!ids.has(id)) {
        el.remove();
        cards.delete(id);
      }
    }
    // oldest request first: it has waited longest
    tasks.sort((a, b) => String(a.pendingApproval?.requestedAt || a.updatedAt).localeCompare(String(b.pendingApproval?.requestedAt || b.updatedAt)));
    for (const t of tasks) {
      let el = cards.get(t.taskId);
      if (!el || el.dataset.key !== String(t.pendingApproval?.key)) {
        const fresh = card(t);
        if (el) el.replaceWith(fresh);
        el = fresh;
        cards.set(t.taskId, el);
      }
      list.append(el);
    }
    if (!tasks.length) {
      if (!list.querySelector(".empty")) list.append(h("div", { class: "empty" }, "Nothing waits for a decision."));
    } else {
      list.querySelector(".empty")?.remove();
    }
  }

  /** @param {any} t */
  function card(t) {
    const p = t.pendingApproval || {};
    const original = pretty(p.arguments || {});
    const args = h("textarea", { class: "mono args", rows: Math.min(12, original.split("\n").length + 1), "aria-label": "arguments" });
    /** @type {HTMLTextAreaElement} */ (args).value = original;
    const reason = h("input", { class: "reason", placeholder: "reason (told to the agent on reject)", size: 36 });
    const status = h("span", { class: "muted" });
    const approve = h("button", { class: "primary approve" }, "Approve");
    const reject = h("button", { class: "danger reject" }, "Reject");
    const el = h(
      "div",
      { class: "card panel", "data-task-id": t.taskId, "data-key": String(p.key) },
      h(
        "div",
        { class: "head" },
        h("b", null, `${t.targetAgent || "?"} wants to call `, h("code", null, p.tool || "?")),
        h("a", { href: `#/trace/${encodeURIComponent(t.taskId)}`, class: "mono", title: t.taskId }, shortId(t.taskId)),
        h("span", { class: "muted", title: p.requestedAt }, `asked ${fmtAgo(p.requestedAt)} · ${fmtTime(p.requestedAt)} · step ${p.step ?? "?"} · attempt ${p.attempt ?? "?"}`),
        t.sessionId ? h("span", { class: "muted" }, `session ${shortId(t.sessionId)}`) : "",
      ),
      p.reasoning ? h("div", null, h("h4", { class: "muted" }, "Reasoning"), h("pre", { class: "json" }, p.reasoning)) : "",
      h(
        "div",
        { class: "actions" },
        h("div", { class: "edit" }, h("div", { class: "muted" }, "Arguments (edit to run the call with others)"), args),
        h("div", null, approve, " ", h("br"), h("br"), reason, " ", reject, h("div", null, status)),
      ),
    );
    const decide = async (/** @type {"approve" | "reject"} */ verb) => {
      /** @type {Record<string, any>} */
      const body = { by: "studio" };
      if (verb === "approve") {
        const text = /** @type {HTMLTextAreaElement} */ (args).value.trim();
        if (text !== original.trim()) {
          try {
            body.arguments = JSON.parse(text);
          } catch (err) {
            status.textContent = `arguments are not JSON: ${err}`;
            status.className = "error";
            return;
          }
        }
      } else {
        const why = /** @type {HTMLInputElement} */ (reason).value.trim();
        if (why) body.reason = why;
      }
      approve.setAttribute("disabled", "");
      reject.setAttribute("disabled", "");
      try {
        await api.postJSON(`${api.DISPATCHER}/api/tasks/${encodeURIComponent(t.taskId)}/${verb}`, body);
        toast(`${verb === "approve" ? "approved" : "rejected"} ${p.tool} of ${shortId(t.taskId)}`);
        el.classList.add("decided");
        status.textContent = verb === "approve" ? "approved" : "rejected";
        setTimeout(reload, 300);
      } catch (err) {
        status.textContent = String(err);
        status.className = "error";
        approve.removeAttribute("disabled");
        reject.removeAttribute("disabled");
      }
    };
    approve.addEventListener("click", () => decide("approve"));
    reject.addEventListener("click", () => decide("reject"));
    return el;
  }

  // ingest may store a status a moment after the feed carried it: look again shortly after
  const soon = debounce(reload, 250);
  const later = debounce(reload, 1500);
  const live = api.openLive({ event_type: ["approval.*", "task.*"] }, (msg) => {
    if (msg.type !== "event") return;
    soon();
    later();
  });
  reload();
  return () => {
    live.close();
    requestNo++;
    clear(list);
  };
}

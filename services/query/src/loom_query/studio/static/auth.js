// @ts-check
/** The API key in the shell: the header's key control (shown while a key is stored: its first
 * characters; click to change or forget it) and the key form, shown when the server refuses a
 * request for its key (401). A saved key is checked against the server first (a wrong one is
 * refused here, with the server's message), then the page loads again with it. A 403 (the key
 * lacks a scope) never asks for a key: the view that made the call shows the message. */

import * as api from "./api.js";
import { h, clear, toast } from "./util.js";

/** @type {{overlay: HTMLElement, required: boolean, setReason: (text: string) => void, lock: () => void} | null} */
let form = null;

/** Show the key control and ask for a key whenever the server refuses one. */
export function setupAuth() {
  renderControl();
  api.onAuthProblem((problem) => {
    if (problem.kind === "unauthorized") askForKey(problem.message);
    else toast(problem.message, "error");
  });
}

function renderControl() {
  const el = /** @type {HTMLElement} */ (document.getElementById("key"));
  const key = api.getKey();
  clear(el);
  el.hidden = !key;
  if (!key) return;
  el.append(
    h(
      "button",
      {
        id: "key-button",
        type: "button",
        title: "the API key this Studio sends: click to change or forget it",
        onclick: () => askForKey(null),
      },
      "key ",
      h("span", { class: "mono", id: "key-hint" }, api.keyHint(key)),
    ),
  );
}

/**
 * Show the key form: `refusal` is the server's reason when it refused a request (the form stays
 * until a key is saved), null when the user opened it to change or forget the key.
 * @param {string | null} refusal
 */
function askForKey(refusal) {
  const stored = api.getKey();
  const reason = refusal === null ? "" : stored ? `The saved key ${api.keyHint(stored)} was refused: ${refusal}.` : "Its services answer only requests that carry a key.";
  if (form) {
    if (refusal !== null) {
      form.lock();
      form.setReason(reason);
    }
    return;
  }
  const required = refusal !== null;
  const title = h("h2", { id: "key-title" }, required ? "This Loom requires an API key" : "API key");
  const reasonEl = h("p", { id: "key-reason" }, reason);
  const input = /** @type {HTMLInputElement} */ (
    h("input", { id: "key-input", type: "password", class: "mono", placeholder: "loom_…", autocomplete: "off", spellcheck: "false", "aria-label": "API key", required: true })
  );
  const error = h("div", { id: "key-error", class: "error", role: "alert" });
  const save = h("button", { id: "key-save", class: "primary", type: "submit" }, "Save");
  const forget = stored ? h("button", { id: "key-forget", class: "danger", type: "button", onclick: forgetKey }, "Forget key") : null;
  const cancel = h("button", { id: "key-cancel", type: "button", onclick: close }, "Cancel");
  const el = /** @type {HTMLFormElement} */ (
    h(
      "form",
      { class: "key-form panel", id: "key-form", autocomplete: "off" },
      title,
      reasonEl,
      h("p", { class: "muted" }, "Ask your Loom's operator for a key (", h("code", null, "loom keys create"), "). It is kept in this browser only."),
      h("label", { for: "key-input" }, "API key"),
      input,
      error,
      h("div", { class: "toolbar" }, save, forget, h("span", { class: "grow" }), required ? null : cancel),
    )
  );
  const overlay = h("div", { class: "key-overlay", id: "key-overlay", role: "dialog", "aria-modal": "true", "aria-labelledby": "key-title" }, el);
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    save.setAttribute("disabled", "");
    error.textContent = "";
    try {
      const checked = await api.checkKey(key);
      if (!checked.ok) {
        error.textContent = `The key was refused: ${checked.message}.`;
        input.select();
        return;
      }
      api.setKey(key);
      location.reload();
    } catch (err) {
      error.textContent = `The key could not be checked: ${err}`;
    } finally {
      save.removeAttribute("disabled");
    }
  });
  overlay.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && form && !form.required) close();
    ev.stopPropagation(); // the shell's shortcuts stay out of the form
  });
  form = {
    overlay,
    required,
    setReason: (text) => (reasonEl.textContent = text),
    lock: () => {
      if (!form || form.required) return;
      form.required = true;
      title.textContent = "This Loom requires an API key";
      cancel.remove();
    },
  };
  document.body.append(overlay);
  input.focus();

  function close() {
    overlay.remove();
    form = null;
  }
}

function forgetKey() {
  api.forgetKey();
  location.reload();
}

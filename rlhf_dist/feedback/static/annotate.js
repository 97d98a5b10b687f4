// The annotator page: log in, then judge pairs with the mouse or the keyboard.
"use strict";
const STRENGTH_KEYS = { q: "0.55", w: "0.7", e: "0.85", r: "1.0" };
const CHOICE_KEYS = { "1": "left", "2": "right", "3": "tie" };
const state = { campaign: "", task: null, choice: null, strength: "0.85", requestId: null, busy: false };

const $ = (id) => document.getElementById(id);

function show(section) {
  for (const id of ["login", "task", "done"]) $(id).hidden = id !== section;
}

function select(kind, value) {
  state[kind] = value;
  const attr = kind === "choice" ? "data-choice" : "data-strength";
  for (const b of document.querySelectorAll(`[${attr}]`)) {
    b.setAttribute("aria-pressed", String(b.getAttribute(attr) === value));
  }
  $("submit").disabled = state.choice === null;
}

function render(task) {
  state.task = task;
  state.requestId = newRequestId();
  $("prompt").textContent = task.prompt;
  $("left").textContent = task.left;
  $("right").textContent = task.right;
  $("reasoning").value = "";
  const p = task.progress;
  $("progress").textContent = `${p.votes} of ${p.wanted} votes collected in "${task.campaign}" · ${p.yours} by you`;
  select("choice", null);
  select("strength", state.strength);
  show("task");
}

async function loadNext() {
  const task = await api("GET", "/api/v1/tasks/next?campaign=" + encodeURIComponent(state.campaign));
  if (task === null) { state.task = null; show("done"); return; }
  render(task);
}

async function submit() {
  if (state.busy || !state.task || state.choice === null) return;
  state.busy = true;
  try {
    await api("POST", "/api/v1/votes", {
      task_id: state.task.task_id, choice: state.choice, confidence: Number(state.strength),
      reasoning: $("reasoning").value, request_id: state.requestId,
    });
    showMessage("");
    await loadNext();
  } catch (err) {
    showMessage(err.message);
    if (err.status === 409) await loadNext();  // lease expired or already voted: move on
  } finally {
    state.busy = false;
  }
}

async function skip() {
  if (state.busy || !state.task) return;
  state.busy = true;
  try {
    await api("POST", `/api/v1/tasks/${state.task.task_id}/skip`);
    await loadNext();
  } catch (err) {
    showMessage(err.message);
  } finally {
    state.busy = false;
  }
}

async function start(campaign) {
  state.campaign = campaign;
  const url = new URL(window.location);
  url.searchParams.set("campaign", campaign);
  history.replaceState(null, "", url);
  await loadNext();
}

async function login(event) {
  event.preventDefault();
  session.token = $("token").value.trim();
  try {
    const me = await api("GET", "/api/v1/me");
    $("who").textContent = `${me.name} (${me.role})`;
    showMessage("");
    const wanted = $("campaign").value.trim();
    if (wanted) return await start(wanted);
    const campaigns = await api("GET", "/api/v1/campaigns");
    if (campaigns.length === 1) return await start(campaigns[0].name);
    const list = $("campaign-list");
    list.replaceChildren();
    for (const c of campaigns) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `${c.name} (${c.kind})`;
      b.addEventListener("click", () => start(c.name).catch((e) => showMessage(e.message)));
      list.append(b);
    }
    list.hidden = false;
    if (!campaigns.length) showMessage("No campaigns yet: ask your admin to import pairs.");
  } catch (err) {
    showMessage(err.message);
  }
}

function onKey(event) {
  if ($("task").hidden || event.altKey || event.metaKey) return;
  const typing = event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement;
  if (event.key === "Enter" && (!typing || event.ctrlKey)) { event.preventDefault(); submit(); return; }
  if (typing || event.ctrlKey) return;
  if (CHOICE_KEYS[event.key]) select("choice", CHOICE_KEYS[event.key]);
  else if (STRENGTH_KEYS[event.key]) select("strength", STRENGTH_KEYS[event.key]);
  else if (event.key === "s") skip();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  for (const b of document.querySelectorAll("[data-choice]")) {
    b.addEventListener("click", () => select("choice", b.dataset.choice));
  }
  for (const b of document.querySelectorAll("[data-strength]")) {
    b.addEventListener("click", () => select("strength", b.dataset.strength));
  }
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  document.addEventListener("keydown", onKey);
  const campaign = new URL(window.location).searchParams.get("campaign");
  if (campaign) $("campaign").value = campaign;
  show("login");
});

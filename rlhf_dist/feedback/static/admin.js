// The admin page: campaign statistics, pair imports, accounts (add, disable, new token), exports.
"use strict";
const $ = (id) => document.getElementById(id);

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "–" : String(value);
  row.append(td);
  return td;
}

async function refresh() {
  const stats = await api("GET", "/api/v1/stats");
  const body = $("stats").querySelector("tbody");
  body.replaceChildren();
  for (const s of stats) {
    const row = document.createElement("tr");
    cell(row, s.campaign); cell(row, s.kind); cell(row, s.pairs);
    cell(row, `${s.votes} / ${s.votes_wanted}`); cell(row, s.pairs_complete);
    cell(row, s.max_votes === null ? "off" :
      `${s.pairs_split} pairs split: +${s.extra_votes} votes (up to ${s.max_votes} each)`);
    cell(row, `${s.choices.A} / ${s.choices.B} / ${s.choices.tie}`);
    cell(row, s.left_rate === null ? null :
      `${(100 * s.left_rate).toFixed(1)}% of ${s.decisive_votes} (binomial p ${s.left_binomial_p})`);
    cell(row, `${s.krippendorff_alpha ?? "–"}, ${s.pairwise_agreement ?? "–"}`);
    cell(row, Object.entries(s.annotators).map(([n, q]) =>
      `${n}: ${q.votes}` + (q.reliability === null ? "" : ` (reliability ${q.reliability})`) +
      (q.flagged ? " FLAGGED" : "")).join(", "));
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Export";
    button.addEventListener("click", () => exportCampaign(s.campaign).catch((e) => showMessage(e.message)));
    cell(row, "").append(button);
    body.append(row);
  }
}

function actionButton(label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", () => onClick().catch((e) => showMessage(e.message)));
  return button;
}

async function refreshAnnotators() {
  const body = $("annotators").querySelector("tbody");
  const rows = await api("GET", "/api/v1/annotators");
  body.replaceChildren();
  for (const a of rows) {
    const row = document.createElement("tr");
    cell(row, a.name); cell(row, a.role); cell(row, a.status); cell(row, a.votes);
    const actions = cell(row, "");
    if (a.status !== "environment") {
      const path = `/api/v1/annotators/${encodeURIComponent(a.name)}`;
      if (a.status !== "disabled") {
        actions.append(actionButton("Disable", async () => {
          if (!window.confirm(`Disable ${a.name}? Their token stops working at once.`)) return;
          await api("POST", `${path}/disable`);
          showMessage(`disabled ${a.name}`, "ok");
          await refreshAnnotators();
        }));
      }
      actions.append(actionButton("New token", async () => {
        const created = await api("POST", `${path}/rotate`);
        $("new-token").textContent = `${created.name}: ${created.token}`;
        showMessage(`new token for ${a.name}; the old one no longer works`, "ok");
        await refreshAnnotators();
      }));
    }
    body.append(row);
  }
}

async function exportCampaign(name) {
  const response = await fetch(`/api/v1/campaigns/${encodeURIComponent(name)}/export`, {
    method: "POST", headers: { "Authorization": "Bearer " + session.token },
  });
  if (!response.ok) throw new Error((await response.json()).error);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `${name}-v${response.headers.get("x-snapshot-version")}.jsonl`;
  link.click();
  showMessage(`exported snapshot v${response.headers.get("x-snapshot-version")} of ${name}`, "ok");
}

async function importPairs(event) {
  event.preventDefault();
  const name = $("import-campaign").value.trim();
  const file = $("import-file").files[0];
  try {
    await api("POST", "/api/v1/campaigns", {
      name, kind: $("import-kind").value, overlap: Number($("import-overlap").value),
      max_votes: $("import-max-votes").value === "" ? null : Number($("import-max-votes").value),
    }).catch((err) => { if (err.status !== 409) throw err; });  // adding to an existing campaign is fine
    const result = await api("POST", `/api/v1/campaigns/${encodeURIComponent(name)}/import?filename=` +
      encodeURIComponent(file.name), file, { "Content-Type": "application/octet-stream" });
    showMessage(`added ${result.added} pairs to ${name}`, "ok");
    await refresh();
  } catch (err) {
    showMessage(err.message);
  }
}

async function addAnnotator(event) {
  event.preventDefault();
  try {
    const created = await api("POST", "/api/v1/annotators",
      { name: $("annotator-name").value.trim(), role: $("annotator-role").value });
    $("new-token").textContent = `${created.name}: ${created.token}`;
    await refreshAnnotators();
  } catch (err) {
    showMessage(err.message);
  }
}

async function login(event) {
  event.preventDefault();
  session.token = $("token").value.trim();
  try {
    const me = await api("GET", "/api/v1/me");
    if (me.role !== "admin") throw new Error(`${me.name} is not an admin`);
    $("who").textContent = `${me.name} (admin)`;
    $("login").hidden = true;
    $("panel").hidden = false;
    showMessage("");
    await refresh();
    await refreshAnnotators();
  } catch (err) {
    showMessage(err.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("import-form").addEventListener("submit", importPairs);
  $("annotator-form").addEventListener("submit", addAnnotator);
});

// Shared by the annotator and admin pages: the token (this tab only) and JSON calls to the API.
"use strict";
const session = {
  get token() { return sessionStorage.getItem("rlhf-dist-token") || ""; },
  set token(value) { sessionStorage.setItem("rlhf-dist-token", value); },
};

class ApiError extends Error {
  constructor(status, field, message) { super(message); this.status = status; this.field = field; }
}

async function api(method, path, body, extraHeaders) {
  const headers = { "Authorization": "Bearer " + session.token, ...(extraHeaders || {}) };
  let payload = body;
  if (body !== undefined && typeof body !== "string" && !(body instanceof Blob)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  if (response.status === 204) return null;
  const isJson = (response.headers.get("content-type") || "").includes("application/json");
  const data = isJson ? await response.json() : await response.text();
  if (!response.ok) {
    throw new ApiError(response.status, isJson ? data.field : "", isJson ? data.error : String(data));
  }
  return data;
}

function showMessage(text, kind) {
  const box = document.getElementById("message");
  box.textContent = text;  // never innerHTML: model and user text is shown as text
  box.className = kind || "error";
  box.hidden = !text;
}

function newRequestId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

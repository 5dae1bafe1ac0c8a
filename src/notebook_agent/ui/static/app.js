// The notebook-agent page: upload, ask, watch the run's events (SSE), browse runs and reports.
// Model and kernel text is only ever set as textContent; HTML outputs go to sandboxed iframes.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
};
const joinText = (t) => (Array.isArray(t) ? t.join("") : t || "");
const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
const BAD = new Set(["model_error", "kernel_error", "failed", "max_errors", "interrupted"]);

const state = { config: null, runId: null, source: null, lastSeq: -1, uploaded: null, view: null };

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => d.msg).join("; ") : response.statusText;
    throw new Error(`${response.status}: ${text}`);
  }
  return body;
}

function message(text, isError) {
  const m = $("form-message");
  m.textContent = text || "";
  m.className = "message" + (isError ? " error" : "");
}

// -- a minimal Python highlighter (tokens become spans with textContent) -------------------
const KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else " +
  "except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield")
  .split(" "));
const BUILTINS = new Set(("print len range sum min max sorted list dict set tuple int float str bool abs round " +
  "enumerate zip map filter open isinstance type any all").split(" "));
const TOKEN = /(#[^\n]*)|([rRbBfFuU]{0,2}(?:"""[\s\S]*?"""|'''[\s\S]*?'''|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))|(\b\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?\b)|([A-Za-z_]\w*)/g;

function highlight(code) {
  const pre = el("pre", "code");
  let last = 0;
  for (const m of code.matchAll(TOKEN)) {
    let cls = null;
    if (m[1]) cls = "tok-com";
    else if (m[2]) cls = "tok-str";
    else if (m[3]) cls = "tok-num";
    else if (KEYWORDS.has(m[4])) cls = "tok-kw";
    else if (BUILTINS.has(m[4])) cls = "tok-bi";
    if (!cls) continue;
    if (m.index > last) pre.append(code.slice(last, m.index));
    pre.append(el("span", cls, m[0]));
    last = m.index + m[0].length;
  }
  pre.append(code.slice(last));
  return pre;
}

// -- outputs ---------------------------------------------------------------------------------
function htmlFrame(html) {
  // sandbox without allow-scripts: nothing in it runs; allow-same-origin only lets us read its height.
  const frame = document.createElement("iframe");
  frame.setAttribute("sandbox", "allow-same-origin");
  frame.setAttribute("referrerpolicy", "no-referrer");
  frame.srcdoc = "<!doctype html><style>body{margin:0;font:13px system-ui,sans-serif}" +
    "table{border-collapse:collapse}th,td{border:1px solid #d8dee4;padding:3px 8px;text-align:right}" +
    "thead th{background:#f6f8fa}</style>" + html;
  frame.addEventListener("load", () => {
    try {
      const doc = frame.contentDocument;
      frame.style.height = Math.min(doc.documentElement.scrollHeight + 4, 600) + "px";
    } catch (e) { frame.style.height = "300px"; }
  });
  return frame;
}

function renderOutput(out) {
  const type = out.output_type;
  if (type === "stream") {
    return el("pre", out.name === "stderr" ? "stream stderr" : "stream", joinText(out.text));
  }
  if (type === "error") {
    const tb = stripAnsi(joinText((out.traceback || []).join("\n")));
    return el("pre", "error", tb || `${out.ename}: ${out.evalue}`);
  }
  if (type === "execute_result" || type === "display_data") {
    const data = out.data || {};
    for (const mime of ["image/png", "image/jpeg", "image/gif"]) {
      if (data[mime]) {
        const img = el("img");
        img.alt = "figure";
        img.src = `data:${mime};base64,${joinText(data[mime]).replace(/\s/g, "")}`;
        return img;
      }
    }
    if (data["text/html"]) return htmlFrame(joinText(data["text/html"]));
    if (data["text/plain"] !== undefined) return el("pre", "result", joinText(data["text/plain"]));
  }
  return el("pre", "result", `[${type} output]`);
}

// -- the notebook view -----------------------------------------------------------------------
const nb = { lastNarration: "", cell: null };

function resetNotebook() {
  $("notebook").replaceChildren();
  $("empty").hidden = true;
  nb.lastNarration = "";
  nb.cell = null;
  progress(null);
}

function progress(text) {
  $("progress").hidden = !text;
  $("progress-text").textContent = text || "";
}

function setStatus(status) {
  const badge = $("run-status");
  badge.textContent = status;
  badge.className = "badge " + (BAD.has(status) ? "bad" : status);
}

// Whether the run's kernel was isolated (run.json's "isolation", known once the kernel started).
function isolationBadge(record, cls) {
  const iso = record && record.isolation;
  if (!iso || typeof iso.isolated !== "boolean") return null;
  const detail = Object.entries(iso).filter(([k]) => k !== "isolated")
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  const badge = el("span", `badge ${cls || ""} ${iso.isolated ? "isolated" : "not-isolated"}`,
    iso.isolated ? "isolated" : "NOT isolated");
  badge.title = (iso.isolated ? "The kernel ran in a sandbox" : "The kernel ran WITHOUT isolation: its code " +
    "could read and write what this server's user can") + (detail ? ` (${detail})` : "");
  return badge;
}

function showIsolation(record) {
  const badge = isolationBadge(record, "isolation");
  const slot = $("run-isolation");
  slot.replaceChildren(...(badge ? [badge] : []));
  state.isolationKnown = !!badge;
}

async function refreshIsolation() {
  const id = state.runId;
  try {
    const record = await api(`/api/runs/${id}`);
    if (state.runId === id) showIsolation(record);
  } catch (e) { /* shown at the end */ }
}

function add(node) {
  $("notebook").append(node);
  return node;
}

function onEvent(ev) {
  if (ev.seq <= state.lastSeq) return;
  state.lastSeq = ev.seq;
  const d = ev.data || {};
  // the kernel has started once the first non-status event comes: its isolation is recorded
  if (!state.isolationKnown && !state.isolationAsked && ev.kind !== "status" && ev.kind !== "done") {
    state.isolationAsked = true;
    refreshIsolation();
  }
  switch (ev.kind) {
    case "status":
      progress(d.text);
      break;
    case "turn":
      if (ev.turn === 1 && state.view === "live") loadRuns();  // the list shows it running
      setStatus("running");
      progress(`step ${ev.turn}: the model is writing…`);
      break;
    case "assistant":
      if (d.text && d.text.trim()) {
        nb.lastNarration = d.text.trim();
        add(el("div", "narration", nb.lastNarration));
      }
      break;
    case "cell": {
      const comment = (d.comment || "").trim();
      if (comment && comment !== nb.lastNarration) add(el("div", "comment", comment));
      const cell = add(el("div", "cell running"));
      const prompt = cell.appendChild(el("div", "prompt", "In [*]:"));
      const body = cell.appendChild(el("div", "body"));
      body.append(highlight(d.code || ""));
      const outputs = body.appendChild(el("div", "outputs"));
      outputs.append(el("div", "running-note", "running…"));
      nb.cell = { cell, prompt, outputs };
      progress(`step ${ev.turn}: running the cell…`);
      break;
    }
    case "result": {
      const r = d.result || {};
      if (!nb.cell) break;
      const { cell, prompt, outputs } = nb.cell;
      cell.classList.remove("running");
      if (r.status !== "ok") cell.classList.add("failed");
      prompt.textContent = `[${r.execution_count ?? " "}]:`;
      outputs.replaceChildren(...(r.outputs || []).map(renderOutput));
      if (r.status === "timeout" || r.status === "dead") {
        outputs.append(el("pre", "error", r.status === "timeout" ? "The cell timed out." : "The kernel died."));
      }
      nb.cell = null;
      progress(`step ${ev.turn}: the model reads the output…`);
      if (state.view === "live") loadRuns();
      break;
    }
    case "notice":
      add(el("div", "notice", d.text));
      break;
    case "answer":
      break;  // shown with the run's end, with its status
    case "end":
    case "done":
      if (ev.kind === "done") finish(d);
      break;
  }
  if (state.view === "live") window.scrollTo(0, document.body.scrollHeight);
}

function finish(d) {
  progress(null);
  setStatus(d.status);
  if (d.answer !== null && d.answer !== undefined) {
    const box = add(el("div", "answer" + (d.status === "answered" ? "" : " best-effort")));
    box.append(el("h3", null, d.status === "answered" ? "Answer" : `Best-effort answer (run ended: ${d.status})`));
    box.append(el("div", null, d.answer));
  }
  add(el("div", "end", `Run ended: ${d.status}${d.detail ? " — " + d.detail : ""}`));
  const links = $("downloads");
  links.replaceChildren();
  const id = state.runId;
  if (d.notebook) {
    const a = el("a", null, "notebook.ipynb");
    a.href = `/api/runs/${id}/notebook.ipynb`;
    a.id = "download-notebook";
    links.append(a);
  }
  if (d.trajectory) {
    const a = el("a", null, "trajectory.json");
    a.href = `/api/runs/${id}/trajectory.json`;
    a.id = "download-trajectory";
    links.append(a);
  }
  if (state.source) { state.source.close(); state.source = null; }
  $("stop").disabled = true;
  $("run").disabled = false;
  document.body.dataset.runDone = d.status;
  if (!state.isolationKnown) refreshIsolation();
  loadRuns();
}

function showRun(record, live) {
  if (state.source) { state.source.close(); state.source = null; }
  showView("run");
  state.runId = record.id;
  state.lastSeq = -1;
  state.view = live ? "live" : "past";
  delete document.body.dataset.runDone;
  resetNotebook();
  $("run-head").hidden = false;
  $("run-question").textContent = record.question;
  $("run-model").textContent = `model: ${record.model}` + (record.files.length ? ` · files: ${record.files.join(", ")}` : "");
  $("downloads").replaceChildren();
  setStatus(record.status);
  state.isolationAsked = false;
  showIsolation(record);
  $("stop").disabled = !!record.ended;
  $("run").disabled = !record.ended && live;
  const source = new EventSource(`/api/runs/${record.id}/events`);
  source.onmessage = (m) => onEvent(JSON.parse(m.data));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) progress("connection to the server lost");
  };
  state.source = source;
  location.hash = `run/${record.id}`;
  highlightCurrent();
}

// -- the form --------------------------------------------------------------------------------
async function uploadSelected() {
  const input = $("files");
  if (!input.files.length) return [];
  if (state.uploaded && state.uploaded.input === input.files) return state.uploaded.ids;
  const form = new FormData();
  for (const f of input.files) form.append("files", f, f.name);
  message(`uploading ${input.files.length} file(s)…`);
  const body = await api("/api/files", { method: "POST", body: form });
  const ids = body.files.map((f) => f.id);
  state.uploaded = { input: input.files, ids };
  return ids;
}

async function submit(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) { message("Write a question first.", true); return; }
  $("run").disabled = true;
  const start = async () => {
    const files = await uploadSelected();
    message("starting…");
    const maxTurns = parseInt($("max-turns").value, 10);
    return api("/api/runs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ question, files, model: $("model").value.trim() || null,
        max_turns: Number.isFinite(maxTurns) ? maxTurns : null }),
    });
  };
  try {
    let body;
    try {
      body = await start();
    } catch (e) {
      // the server removed an old upload to make room for others: send the files again, once
      if (!state.uploaded || !/upload it first/.test(e.message)) throw e;
      state.uploaded = null;
      body = await start();
    }
    message("");
    showRun(body.record, true);
    $("stop").disabled = false;
    loadRuns();
  } catch (e) {
    message(e.message, true);
    $("run").disabled = false;
  }
}

async function stopRun() {
  if (!state.runId) return;
  try {
    const body = await api(`/api/runs/${state.runId}/stop`, { method: "POST" });
    message(body.message);
    $("stop").disabled = true;
  } catch (e) { message(e.message, true); }
}

// -- lists -------------------------------------------------------------------------------------
function when(seconds) {
  return new Date(seconds * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

async function loadRuns() {
  let runs = [];
  try { runs = await api("/api/runs"); } catch (e) { return; }
  const list = $("runs");
  list.replaceChildren();
  if (!runs.length) list.append(el("li", "sub", "No runs yet."));
  for (const r of runs) {
    const li = el("li");
    li.dataset.id = r.id;
    li.append(el("span", "q", r.question));
    const sub = li.appendChild(el("span", "sub"));
    sub.append(el("span", "badge " + (BAD.has(r.status) ? "bad" : r.status), r.status));
    const iso = isolationBadge(r, "small");
    if (iso && !r.isolation.isolated) sub.append(" ", iso);
    sub.append(` ${when(r.created)} · ${r.cells} cell(s)`);
    li.addEventListener("click", () => showRun(r, !r.ended));
    list.append(li);
  }
  highlightCurrent();
}

function highlightCurrent() {
  for (const li of document.querySelectorAll("#runs li")) {
    li.classList.toggle("current", li.dataset.id === state.runId);
  }
}

async function loadReports() {
  const list = $("reports");
  list.replaceChildren();
  let body;
  try { body = await api("/api/reports"); } catch (e) { return; }
  if (!body.reports.length) {
    list.append(el("li", "sub", `No reports under ${body.root} yet.`));
    return;
  }
  for (const r of body.reports) {
    const li = el("li");
    li.append(el("span", "q", r.name));
    li.append(el("span", "sub", `${r.results} result(s) · ${when(r.mtime)}`));
    li.addEventListener("click", () => showReport(r.name));
    list.append(li);
  }
}

async function showReport(name) {
  let body;
  const path = name.split("/").map(encodeURIComponent).join("/");
  try { body = await api(`/api/reports/${path}`); } catch (e) { message(e.message, true); return; }
  if (state.source) { state.source.close(); state.source = null; }
  showView("report");
  $("report-name").textContent = name;
  // The server escapes the markdown before marking it up (see ui/reports.py).
  $("report-body").innerHTML = body.html;
  const plots = $("report-plots");
  plots.replaceChildren();
  for (const src of body.plots) {
    const img = el("img");
    img.src = src;
    img.alt = "plot";
    plots.append(img);
  }
  location.hash = `report/${name}`;
}

function showView(which) {
  $("run-view").hidden = which !== "run";
  $("report-view").hidden = which !== "report";
}

// -- start -------------------------------------------------------------------------------------
async function init() {
  $("ask").addEventListener("submit", submit);
  $("stop").addEventListener("click", stopRun);
  $("refresh-runs").addEventListener("click", loadRuns);
  $("files").addEventListener("change", () => { state.uploaded = null; });
  try {
    const config = await api("/api/config");
    state.config = config;
    $("model").value = config.default_model || "";
    $("max-turns").value = config.max_turns;
    $("max-turns").max = config.max_turns_limit;
    $("files").accept = config.allowed_types.join(",");
    $("files-hint").textContent = `${config.allowed_types.join(" ")} · up to ${config.max_files_per_upload} ` +
      `files, ${config.max_upload_mb} MiB`;
    $("model").title = "A model of the registry or one the operator allowed with --allow-model: " +
      config.models.join(", ");
    const names = $("model-names");
    for (const name of config.models) names.append(Object.assign(el("option"), { value: name }));
  } catch (e) { message(e.message, true); }
  await loadRuns();
  loadReports();
  const [kind, ...rest] = location.hash.slice(1).split("/");
  const id = rest.join("/");
  if (kind === "run" && id) {
    try { showRun(await api(`/api/runs/${id}`), false); } catch (e) { /* gone */ }
  } else if (kind === "report" && id) {
    showReport(decodeURIComponent(id));
  }
  document.body.dataset.ready = "1";
}

init();

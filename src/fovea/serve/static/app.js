// fovea dashboard: live view (MJPEG), counters and decisions (Server-Sent Events), line control
// (REST POSTs), image inspection with any served model. Plain JS, no build step.
"use strict";

const KEY = new URLSearchParams(location.search).get("key");
const INFO_FAULTS = new Set(["arm", "link_connect"]);   // routine link messages, not alarms
const $ = (id) => document.getElementById(id);

function withKey(url) {
  if (!KEY) return url;
  return url + (url.includes("?") ? "&" : "?") + "key=" + encodeURIComponent(KEY);
}

async function api(method, url, body, headers) {
  const h = Object.assign({}, headers || {});
  if (KEY) h["X-API-Key"] = KEY;
  const res = await fetch(url, { method, body, headers: h });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  return { ok: res.ok, status: res.status, data };
}

// ------------------------------------------------------------------ views
document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === b));
  document.querySelectorAll(".view").forEach((v) => v.classList.add("hidden"));
  $("view-" + b.dataset.view).classList.remove("hidden");
  if (b.dataset.view === "inspect") loadModels();
  if (b.dataset.view === "reports") loadReports();
}));

// ------------------------------------------------------------------ live view
function startLive() {
  // a fresh URL each time so the browser opens a new stream after a run (re)starts
  $("live").src = withKey("/stream.mjpg?t=" + Date.now());
}

// ------------------------------------------------------------------ status
function setText(id, v) { const e = $(id); if (e && e.textContent !== String(v)) e.textContent = v; }

function renderStatus(s) {
  const st = $("state");
  st.textContent = s.state;
  st.className = "state " + s.state;
  setText("outcomes", s.outcomes);
  setText("decisions", s.decisions);
  setText("frames", s.frames);
  setText("faults", s.faults);
  const lanes = $("lanes");
  lanes.innerHTML = "";
  Object.keys(s.lanes).sort().forEach((lane) => {
    const tr = document.createElement("tr");
    tr.innerHTML = `<th class="lane-${lane}">${lane}</th><td data-lane="${lane}">${s.lanes[lane]}</td>`;
    lanes.appendChild(tr);
  });
  const body = $("decisions-table").querySelector("tbody");
  body.innerHTML = "";
  s.recent_decisions.slice(0, 12).forEach((d) => {
    const tr = document.createElement("tr");
    const conf = d.confidence == null ? "" : d.confidence.toFixed(2);
    tr.innerHTML = `<td>${d.record}</td><td class="lane-${d.lane}">${d.lane}</td><td>${d.class_name || ""}</td>` +
      `<td>${conf}</td><td>${d.reason}</td>`;
    body.appendChild(tr);
  });
  const list = $("fault-list");
  list.innerHTML = "";
  s.recent_faults.forEach((f) => {
    const li = document.createElement("li");
    li.textContent = `${f.kind}${f.detail ? ": " + f.detail : ""}`;
    list.appendChild(li);
  });
  const alarms = s.recent_faults.filter((f) => !INFO_FAULTS.has(f.kind));
  const banner = $("banner");
  if (s.state === "SAFE") {
    banner.textContent = "Gates disarmed (SAFE): items take the default lane";
    banner.classList.remove("hidden");
  } else if (s.running && alarms.length) {
    banner.textContent = "Fault: " + alarms[0].kind + (alarms[0].detail ? " - " + alarms[0].detail : "");
    banner.classList.remove("hidden");
  } else {
    banner.classList.add("hidden");
  }
  renderSparks(s.latency_ms);
}

function renderSparks(lat) {
  const box = $("sparks");
  Object.keys(lat).forEach((stage) => {
    let row = document.getElementById("spark-" + stage);
    if (!row) {
      row = document.createElement("div");
      row.className = "spark";
      row.id = "spark-" + stage;
      row.innerHTML = `<span>${stage} <b></b></span><canvas width="160" height="24"></canvas>`;
      box.appendChild(row);
    }
    const xs = lat[stage];
    const last = xs.length ? xs[xs.length - 1] : null;
    row.querySelector("b").textContent = last == null ? "-" : last.toFixed(1);
    const c = row.querySelector("canvas");
    const g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    if (xs.length < 2) return;
    const hi = Math.max(...xs) || 1;
    g.strokeStyle = "#4c6ef5";
    g.beginPath();
    xs.forEach((v, i) => {
      const x = (i / (xs.length - 1)) * (c.width - 2) + 1;
      const y = c.height - 2 - (v / hi) * (c.height - 4);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  });
}

// ------------------------------------------------------------------ events
let lastRun = 0;
function connectEvents() {
  const es = new EventSource(withKey("/api/events"));
  es.onopen = () => setText("conn", "live");
  es.onerror = () => setText("conn", "reconnecting...");   // EventSource retries by itself
  es.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === "status") {
      renderStatus(ev);
      if (ev.running && ev.run_id !== lastRun) { lastRun = ev.run_id; startLive(); }
    }
  };
}

// ------------------------------------------------------------------ control
async function control(verb, body) {
  const r = await api("POST", "/api/line/" + verb, body ? JSON.stringify(body) : undefined,
    body ? { "Content-Type": "application/json" } : undefined);
  if (!r.ok) {
    const b = $("banner");
    b.textContent = (r.data && r.data.detail) || ("HTTP " + r.status);
    b.classList.remove("hidden");
    return;
  }
  renderStatus(r.data);
  if (verb === "start") { lastRun = r.data.run_id; startLive(); }
}
$("btn-start").addEventListener("click", () => control("start", { n_objects: Number($("n-objects").value) }));
$("btn-stop").addEventListener("click", () => control("stop"));
$("btn-arm").addEventListener("click", () => control("arm"));
$("btn-disarm").addEventListener("click", () => control("disarm"));

// ------------------------------------------------------------------ inspect
async function loadModels() {
  const r = await api("GET", "/api/models");
  const sel = $("model");
  const keep = sel.value;
  sel.innerHTML = "";
  ((r.data && r.data.models) || []).forEach((m) => {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = `${m.name} (${m.task})`;
    sel.appendChild(o);
  });
  if (keep) sel.value = keep;
  if (!sel.options.length) setText("inspect-msg", "no model is served: start fovea serve with --model NAME=PATH");
}

async function inspect(file) {
  const name = $("model").value;
  if (!name) { await loadModels(); }
  const form = new FormData();
  form.append("file", file, file.name);
  setText("inspect-msg", "");
  const r = await api("POST", "/api/predict/" + encodeURIComponent($("model").value) + "?overlay=1", form);
  if (!r.ok) { setText("inspect-msg", (r.data && r.data.detail) || ("HTTP " + r.status)); return; }
  const p = r.data.predictions[0];
  $("overlay").src = "data:image/png;base64," + p.overlay_png;
  const shown = Object.assign({}, p.result);
  delete shown.anomaly_map; delete shown.mask;
  $("result").textContent = JSON.stringify(shown, null, 1);
}
$("file").addEventListener("change", (e) => { if (e.target.files.length) inspect(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) inspect(e.dataTransfer.files[0]);
});

// ------------------------------------------------------------------ reports
async function loadReports() {
  const r = await api("GET", "/api/reports");
  const ul = $("reports");
  ul.innerHTML = "";
  const items = (r.data && r.data.reports) || [];
  if (!items.length) { ul.innerHTML = "<li>none (start fovea serve with --reports DIR)</li>"; return; }
  items.forEach((it) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = withKey(it.url);
    a.target = "_blank";
    a.textContent = `${it.name} (${new Date(it.mtime * 1000).toLocaleString()})`;
    li.appendChild(a);
    ul.appendChild(li);
  });
}

connectEvents();
api("GET", "/api/line").then((r) => { if (r.ok) { renderStatus(r.data); if (r.data.running) { lastRun = r.data.run_id; startLive(); } } });

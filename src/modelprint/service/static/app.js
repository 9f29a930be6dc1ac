// modelprint's page: identify an uploaded image, show its residual spectrum beside the best match's, list the
// gallery. Plain JS, no build step. The bearer token lives in sessionStorage (gone when the tab closes). Every
// server-provided string is inserted with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "modelprint-token";
const $ = (id) => document.getElementById(id);

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const why = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${why}`);
  }
  return body;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// ---- spectra: one colour scale for both images (viridis-like ramp)
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + f * (RAMP[i + 1][k] - c)));
}

function draw(canvas, grid, lo, hi) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!grid) return;
  const n = grid.length;
  const img = ctx.createImageData(n, n);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const [r, g, b] = colour((grid[y][x] - lo) / (hi - lo || 1));
      const o = 4 * (y * n + x);
      img.data.set([r, g, b, 255], o);
    }
  }
  const tmp = document.createElement("canvas");
  tmp.width = tmp.height = n;
  tmp.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

function drawScale(lo, hi) {
  const canvas = $("colour-scale");
  const ctx = canvas.getContext("2d");
  for (let y = 0; y < canvas.height; y++) {
    const [r, g, b] = colour(1 - y / (canvas.height - 1));
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(0, y, canvas.width, 1);
  }
  $("scale-max").textContent = hi.toFixed(1);
  $("scale-min").textContent = lo.toFixed(1);
}

function showSpectra(entry) {
  const grids = [entry.image, entry.model_mean].filter(Boolean);
  const values = grids.flat(2);
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  draw($("spectrum-image"), entry.image, lo, hi);
  draw($("spectrum-model"), entry.model_mean, lo, hi);
  $("spectrum-model-caption").textContent = entry.model_mean
    ? `mean spectrum of ${entry.model}` : `${entry.model}: no mean spectrum stored`;
  drawScale(lo, hi);
}

// ---- identify
function showResult(data) {
  const row = data.results[0];
  const unknown = row.prediction === "unknown";
  const prediction = $("prediction");
  prediction.textContent = row.prediction;
  prediction.className = unknown ? "unknown" : "";
  const threshold = row.threshold === null ? "no threshold" : `threshold ${row.threshold.toFixed(3)}`;
  $("decision").textContent = unknown
    ? `best similarity ${row.similarity.toFixed(3)} is below the ${threshold} (${data.threshold_source}): unknown model`
    : `best similarity ${row.similarity.toFixed(3)} reaches the ${threshold} (${data.threshold_source})`;
  const body = $("topk-table").tBodies[0];
  body.replaceChildren();
  row.top_k.forEach((c, i) => {
    const tr = body.insertRow();
    cell(tr, String(i + 1));
    cell(tr, c.model);
    cell(tr, c.similarity.toFixed(3), "num");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(0, c.similarity) * 10}rem`;
    tr.insertCell().append(bar);
  });
  if (data.spectra && data.spectra[0]) showSpectra(data.spectra[0]);
  $("result").hidden = false;
}

async function identify(file) {
  showError("");
  $("busy").hidden = false;
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const k = Math.max(1, parseInt($("top-k").value, 10) || 3);
    const data = await call(`/v1/identify?spectra=true&top_k=${k}`, { method: "POST", body: form });
    if (data.warnings.length) showError(data.warnings.join(" "));
    showResult(data);
  } catch (e) {
    $("result").hidden = true;
    showError(e.message);
  } finally {
    $("busy").hidden = true;
  }
}

// ---- gallery
async function loadGallery() {
  showError("");
  try {
    const data = await call("/v1/models");
    const body = $("gallery-table").tBodies[0];
    body.replaceChildren();
    for (const m of data.models) {
      const tr = body.insertRow();
      cell(tr, m.name);
      cell(tr, String(m.n_images), "num");
      cell(tr, String(m.n_embeddings), "num");
      cell(tr, m.methods.map((t) => t.split("@")[0]).join(", "));
      cell(tr, m.created);
      cell(tr, m.notes);
    }
    const cal = $("calibration-table").tBodies[0];
    cal.replaceChildren();
    for (const [tag, c] of Object.entries(data.calibration)) {
      const tr = cal.insertRow();
      cell(tr, tag.split("@")[0]);
      cell(tr, c ? c.unknown_threshold.toFixed(4) : "not calibrated", "num");
      cell(tr, c ? c.verify_threshold.toFixed(4) : "—", "num");
      cell(tr, c ? c.rule : "too few models or images to calibrate");
    }
  } catch (e) {
    showError(e.message);
  }
}

// ---- wiring
function show(view) {
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== view; });
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
  if (view === "gallery-view") loadGallery();
}

window.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    showError("");
  });
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.view)));
  $("identify-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const file = $("file-input").files[0];
    if (file) identify(file); else showError("choose an image first");
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) {
      $("drop-text").textContent = file.name;
      identify(file);
    }
  });
  $("file-input").addEventListener("change", () => {
    const file = $("file-input").files[0];
    if (file) $("drop-text").textContent = file.name;
  });
  fetch("/v1/version", { headers: headers() })
    .then((r) => (r.ok ? r.json() : null))
    .then((v) => { if (v) $("version").textContent = `modelprint ${v.modelprint} · ${v.method.split("@")[0]}`; })
    .catch(() => {});
});

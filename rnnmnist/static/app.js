// The drawing page: strokes on #pad go to /api/predict as a PNG while you draw; the answer, the
// probabilities and the reading trace come back and are drawn here. No libraries, nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
const SIDE = 28;
// photo: the pad shows an uploaded photo, which the next stroke replaces (ink on a photo reads as neither).
const state = { model: null, result: null, step: SIDE, inflight: false, pending: null, lastSent: 0, ink: false, photo: false };

// --- the model
fetch("/api/model")
  .then((r) => r.json())
  .then((m) => {
    state.model = m;
    const c = m.config;
    const acc = m.metrics && m.metrics.test_accuracy != null ? `, ${(100 * m.metrics.test_accuracy).toFixed(1)}% on the test set` : "";
    const dirs = c.bidirectional ? "bidirectional " : "";
    const reads = c.mode === "rows" ? "reads 28 rows of 28 pixels" : c.mode === "pixels" ? "reads 784 pixels one by one" : "reads 784 pixels in a fixed random order";
    $("model").textContent = `${dirs}${c.cell.toUpperCase()} ${c.hidden_size}${c.layers > 1 ? "×" + c.layers : ""}, ${reads}${acc} · ${m.checkpoint} on ${m.device} · rnnmnist ${m.rnnmnist_version}`;
    if (!m.trace) $("decided").textContent = "This model is bidirectional: it has read the whole image at every step, so there is no reading trace.";
  })
  .catch(() => { $("model").textContent = "could not load the model's details"; });

// --- drawing
function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  state.ink = false;
  state.photo = false;
  pad.dataset.photo = "false";
}
clearPad();

function point(e) {
  const box = pad.getBoundingClientRect();
  return [((e.clientX - box.left) / box.width) * pad.width, ((e.clientY - box.top) / box.height) * pad.height];
}

let last = null;
pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  state.photoToken = null; // a photo still loading is not drawn over the stroke
  if (state.photo) clearPad();
  last = point(e);
  stroke(last, last);
});
pad.addEventListener("pointermove", (e) => {
  if (!last) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) {
    const p = point(ev);
    stroke(last, p);
    last = p;
  }
  if (performance.now() - state.lastSent > 150) predictPad();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!last) return;
    last = null;
    predictPad();
  });
}

function stroke(a, b) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = pad.width / 14;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(a[0], a[1]);
  ctx.lineTo(b[0], b[1]);
  ctx.stroke();
  state.ink = true;
}

$("clear").addEventListener("click", () => {
  state.photoToken = null;
  clearPad();
  state.pending = null;
  showResult(null);
  setStatus(EMPTY_PAD);
});

$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  $("upload").value = "";
  if (!file) return;
  const url = URL.createObjectURL(file);
  const img = new Image();
  const token = (state.photoToken = {});
  img.onload = () => {
    if (state.photoToken === token) { // not drawn on, cleared, or another photo chosen meanwhile
      clearPad();
      const s = Math.min(pad.width / img.width, pad.height / img.height);
      ctx.drawImage(img, (pad.width - img.width * s) / 2, (pad.height - img.height * s) / 2, img.width * s, img.height * s);
      state.ink = true;
      state.photo = true;
      pad.dataset.photo = "true";
    }
    URL.revokeObjectURL(url);
  };
  img.onerror = () => URL.revokeObjectURL(url); // the server says what is wrong with it
  img.src = url;
  send(file, file.name);
});

// --- predicting: at most one request in flight; the latest drawing wins
function predictPad() {
  if (!state.ink) return;
  state.lastSent = performance.now();
  pad.toBlob((blob) => send(blob, "drawing.png"), "image/png");
}

async function send(blob, name) {
  if (state.inflight) {
    state.pending = [blob, name];
    return;
  }
  state.inflight = true;
  document.body.dataset.busy = "true";
  try {
    const form = new FormData();
    form.append("file", blob, name);
    const response = await fetch("/api/predict?trace=" + (state.model && !state.model.trace ? "false" : "true") + "&show=true", { method: "POST", body: form });
    let body;
    try { body = await response.json(); } catch { body = { error: `the server answered ${response.status}` }; }
    if (state.pending === null && response.ok) {
      showResult(body);
      setStatus(`${name}: ${body.decided_at ? describeDecision(body) : "done"}`);
    } else if (!response.ok && state.pending === null) {
      showResult(null);
      setStatus(body.error || `the server answered ${response.status}`, true);
    }
  } catch (err) {
    setStatus("cannot reach the server: " + err.message, true);
  } finally {
    state.inflight = false;
    document.body.dataset.predictions = String(Number(document.body.dataset.predictions) + 1);
    const next = state.pending;
    state.pending = null;
    if (next) send(next[0], next[1]);
    else document.body.dataset.busy = "false";
  }
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

// --- showing a result
// Why an image is not one digit (the API's "reason"), in words for a person.
const NOT_A_DIGIT = {
  "no ink": "I can't see anything drawn there. Draw a digit (0–9).",
  "more than one character": "That looks like more than one character. Draw one digit at a time.",
  "not like any digit": "That doesn't look like a digit to me. Draw one digit, 0–9.",
};
const EMPTY_PAD = "Nothing drawn yet — draw a digit (0–9).";

// The network's answer: its prediction, or when the image is not a digit, what it would have said.
function answerOf(r) {
  return r.prediction !== null && r.prediction !== undefined ? r.prediction : r.top3[0][0];
}

function unitName() {
  return state.model && state.model.config.mode !== "rows" ? "pixel" : "row";
}

function describeDecision(r) {
  const steps = r.trace.length;
  return `decided at ${unitName()} ${r.decided_at} of ${steps}`;
}

function stride() {
  const r = state.result;
  return r && r.trace ? Math.max(1, Math.floor(r.trace.length / SIDE)) : 1;
}

function probsAt(rows) {
  const r = state.result;
  if (!r) return null;
  if (!r.trace || rows >= SIDE) return r.probabilities;
  return r.trace[rows * stride() - 1];
}

function showResult(r) {
  state.result = r;
  state.step = SIDE;
  $("step").value = SIDE;
  $("step").disabled = $("play").disabled = !(r && r.trace);
  const refused = Boolean(r && r.is_digit === false); // a model of another data set gives no is_digit
  document.body.dataset.digit = !r ? "" : refused ? "no" : "yes";
  const sure = r ? `${(100 * r.confidence).toFixed(1)}%` : "";
  $("digit").textContent = !r ? "–" : refused ? "?" : String(r.prediction);
  $("confidence").textContent = !r ? "" : refused ? `not a digit · closest: ${answerOf(r)} (${sure})` : `${sure} sure`;
  $("verdict").hidden = !refused;
  $("verdict").textContent = refused ? NOT_A_DIGIT[r.reason] || "That doesn't look like a single digit." : "";
  $("bars").classList.toggle("refused", refused);
  if (r && r.trace) {
    const rows = Math.floor((r.decided_at - 1) / stride()) + 1;
    const where = unitName() === "pixel" ? `pixel ${r.decided_at} of ${r.trace.length} (image row ${rows})` : `row ${r.decided_at} of 28`;
    const what = refused ? "top guess" : "top answer";
    $("decided").textContent = `Decided at ${where}: from there on, ${answerOf(r)} stayed its ${what}.`;
  } else if (state.model && state.model.trace) {
    $("decided").textContent = "";
  }
  render();
}

function render() {
  renderBars();
  renderSeen();
  renderChart();
  const r = state.result;
  $("step-label").textContent = r && r.trace ? `after ${unitName() === "row" ? "row" : "image row"} ${state.step} of 28` : "";
}

function renderBars() {
  const bars = $("bars");
  const probs = probsAt(state.step);
  $("bars-title").textContent = state.result && state.step < SIDE ? `Probabilities after row ${state.step}` : "Probabilities";
  if (!bars.childElementCount) {
    for (let d = 0; d < 10; d++) {
      bars.insertAdjacentHTML("beforeend", `<span class="label">${d}</span><span class="track"><span class="fill"></span></span><span class="pct"></span>`);
    }
  }
  const top = probs ? probs.indexOf(Math.max(...probs)) : -1;
  const tracks = bars.querySelectorAll(".track");
  const pcts = bars.querySelectorAll(".pct");
  for (let d = 0; d < 10; d++) {
    const p = probs ? probs[d] : 0;
    tracks[d].querySelector(".fill").style.width = `${100 * p}%`;
    tracks[d].classList.toggle("top", d === top);
    pcts[d].textContent = probs ? `${(100 * p).toFixed(1)}%` : "";
  }
}

// Canvases are drawn at the size CSS gives them (in CSS pixels, at least twice as many device pixels), so
// text keeps the size it is given on any screen and stays sharp on high-density ones.
function surface(id) {
  const c = $(id);
  const width = Math.round(c.clientWidth) || c.width;
  const height = Math.round(c.clientHeight) || c.height;
  const scale = Math.max(2, window.devicePixelRatio || 1);
  if (c.width !== width * scale || c.height !== height * scale) {
    c.width = width * scale;
    c.height = height * scale;
  }
  c.dataset.width = width;
  c.dataset.height = height;
  delete c.dataset.minFont;
  const g = c.getContext("2d");
  g.setTransform(scale, 0, 0, scale, 0, 0);
  return { g, width, height };
}

// Canvas text is never smaller than this many CSS pixels (legible on a phone).
const MIN_FONT = 12;
function setFont(id, g, px) {
  const c = $(id);
  g.font = `${px}px system-ui, sans-serif`;
  // What a reader sees: the font size in CSS pixels (the canvas may be shown at another size than drawn).
  const shown = (px * c.clientWidth) / Number(c.dataset.width || c.clientWidth || 1);
  c.dataset.minFont = String(Math.min(Number(c.dataset.minFont || Infinity), shown));
}

function box(x, y, w, h) {
  return JSON.stringify([x, y, w, h].map((v) => Math.round(v * 10) / 10));
}

function renderSeen() {
  const { g, width, height } = surface("seen");
  const c = { width, height };
  const cell = c.height / SIDE;
  g.fillStyle = "#fff";
  g.fillRect(0, 0, c.width, c.height);
  const r = state.result;
  if (!r || !r.image) {
    g.fillStyle = "#111";
    g.fillRect(0, 0, SIDE * cell, SIDE * cell);
    return;
  }
  const ordered = state.model ? state.model.config.mode !== "permuted" : true;
  for (let y = 0; y < SIDE; y++) {
    const unread = ordered && y >= state.step;
    for (let x = 0; x < SIDE; x++) {
      const v = Math.round(255 * r.image[y][x]);
      g.fillStyle = unread ? `rgb(${40 + v / 5},${40 + v / 5},${60 + v / 5})` : `rgb(${v},${v},${v})`;
      g.fillRect(x * cell, y * cell, cell + 0.5, cell + 0.5);
    }
  }
  if (!r.trace) return;
  // Beside each row: the answer after that row, and a bar of the final answer's probability then. The
  // "decided" label has a column of its own on the right, so it never covers a bar.
  const fontPx = Math.max(MIN_FONT, Math.round(cell * 0.85));
  setFont("seen", g, fontPx);
  g.textBaseline = "middle";
  const labelWidth = g.measureText("decided").width + 8;
  const x0 = SIDE * cell + 6;
  const digitWidth = g.measureText("0").width + 6;
  const barMax = Math.max(0, c.width - x0 - digitWidth - labelWidth);
  // Where rows are shorter than the text, the answer is written every `every` rows (bars stay on each row).
  const every = Math.ceil(fontPx / cell);
  const decidedRow = Math.floor((r.decided_at - 1) / stride());
  for (let y = 0; y < SIDE; y++) {
    const probs = r.trace[(y + 1) * stride() - 1];
    const top = probs.indexOf(Math.max(...probs));
    const right = top === answerOf(r);
    const faded = y >= state.step;
    g.globalAlpha = faded ? 0.3 : 1;
    g.fillStyle = right ? "#1f7a4d" : "#98a2b3";
    g.fillRect(x0 + digitWidth, y * cell + 1, barMax * probs[answerOf(r)], cell - 2);
    g.fillStyle = right ? "#1f7a4d" : "#475467";
    if ((SIDE - 1 - y) % every === 0) g.fillText(String(top), x0 + 2, y * cell + cell / 2);
    g.globalAlpha = 1;
  }
  const seen = $("seen");
  seen.dataset.barsBox = box(x0 + digitWidth, 0, barMax, SIDE * cell);
  const lineY = decidedRow * cell;
  g.strokeStyle = "#d92d20";
  g.lineWidth = 2;
  g.beginPath();
  g.moveTo(0, lineY);
  g.lineTo(x0 + digitWidth + barMax, lineY);
  g.stroke();
  // The label sits in its column, centred on the line, kept inside the canvas at the top and bottom.
  const labelY = Math.min(Math.max(lineY, fontPx / 2 + 1), c.height - fontPx / 2 - 1);
  const labelX = x0 + digitWidth + barMax + 4;
  g.fillStyle = "#d92d20";
  g.fillText("decided", labelX, labelY);
  seen.dataset.labelBox = box(labelX, labelY - fontPx / 2, labelWidth - 4, fontPx);
}

function renderChart() {
  const { g, width, height } = surface("chart");
  const c = { width, height };
  g.clearRect(0, 0, c.width, c.height);
  const r = state.result;
  const left = 40, right = 30, top = 10, bottom = 26;
  const w = c.width - left - right, h = c.height - top - bottom;
  g.strokeStyle = "#d7dbe3";
  g.fillStyle = "#667085";
  setFont("chart", g, 14);
  g.lineWidth = 1;
  for (const p of [0, 0.5, 1]) {
    const y = top + h * (1 - p);
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + w, y); g.stroke();
    g.fillText(`${100 * p}%`, 2, y + 4);
  }
  const steps = r && r.trace ? r.trace.length : SIDE;
  g.fillText(`${unitName()}s read →`, left, c.height - 6);
  if (!r || !r.trace) return;
  const x = (t) => left + (w * t) / steps; // after step t (1-based)
  const drawLine = (d, color, width) => {
    g.strokeStyle = color;
    g.lineWidth = width;
    g.beginPath();
    r.trace.forEach((probs, i) => (i ? g.lineTo(x(i + 1), top + h * (1 - probs[d])) : g.moveTo(x(1), top + h * (1 - probs[d]))));
    g.stroke();
  };
  for (let d = 0; d < 10; d++) if (d !== answerOf(r)) drawLine(d, "#c3c9d5", 1);
  drawLine(answerOf(r), "#1f7a4d", 3);
  g.fillStyle = "#1f7a4d";
  g.fillText(String(answerOf(r)), x(steps) + 4, top + h * (1 - r.trace[steps - 1][answerOf(r)]) + 4);
  g.strokeStyle = "#d92d20";
  g.setLineDash([4, 3]);
  g.lineWidth = 1.5;
  g.beginPath(); g.moveTo(x(r.decided_at), top); g.lineTo(x(r.decided_at), top + h); g.stroke();
  g.setLineDash([]);
  if (state.step < SIDE) {
    g.strokeStyle = "#1d2330";
    g.beginPath(); g.moveTo(x(state.step * stride()), top); g.lineTo(x(state.step * stride()), top + h); g.stroke();
  }
}

// --- scrubbing through the rows
$("step").addEventListener("input", () => {
  state.step = Number($("step").value);
  render();
});

let timer = null;
$("play").addEventListener("click", () => {
  clearInterval(timer);
  state.step = 1;
  timer = setInterval(() => {
    $("step").value = state.step;
    render();
    if (state.step >= SIDE) clearInterval(timer);
    else state.step += 1;
  }, 110);
});

// The canvases follow the page's width (a turned phone, a resized window).
if (window.ResizeObserver) new ResizeObserver(() => render()).observe($("chart"));
render();

// The SALICON page: uploads images one at a time to POST /api/saliency
// (format=json&keep=true) and draws the map and the heatmap overlay. The
// sliders redraw from the map already received: the net does not run again.
"use strict";

const $ = (id) => document.getElementById(id);
const DISPLAY_MAX = 1024;   // canvases are drawn at most this many pixels on a side

let health = null;          // GET /api/health
let current = null;         // the result on show
const results = [];         // every upload of this page, in order
const pending = [];         // files waiting to be sent
let sending = false;

// ------------------------------------------------------------ messages

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// The served model the uploads go to (the server's models and the page's choice).
function chosenModel() {
  const models = (health && health.models) || [];
  return models.find((m) => m.name === $("model-select").value) || models[0] || health;
}

function describeHealth(h) {
  const m = chosenModel() || h;
  const sizes = Object.entries(m.input_sizes).map(([k, v]) => `${k} ${v[0]}x${v[1]}`).join(", ");
  const name = m.name ? `${m.name} (${m.model}; ${sizes})` : `${m.model} (${sizes})`;
  return `Model ${name} on ${m.device}, ${m.precision}; post-processing: ${m.postprocess}; ` +
         `salicon ${h.version}.`;
}

function fillModelChoice(h) {
  const models = h.models || [];
  const select = $("model-select");
  select.replaceChildren(...models.map((m) => {
    const sizes = Object.values(m.input_sizes).map((v) => `${v[0]}x${v[1]}`).join(" / ");
    return new Option(`${m.name} (${sizes}, ${m.precision})`, m.name, m.name === h.default_model);
  }));
  $("model-choice").hidden = models.length < 2;
  select.onchange = () => { $("model-info").textContent = describeHealth(health); };
}

async function loadHealth() {
  try {
    const r = await fetch("/api/health");
    health = await r.json();
    fillModelChoice(health);
    $("model-info").textContent = describeHealth(health);
    const mb = (health.limits.max_upload_bytes / 1e6).toFixed(0);
    const mp = health.limits.max_pixels ? `${(health.limits.max_pixels / 1e6).toFixed(0)} megapixels` : "no pixel limit";
    const formats = health.formats || [];
    const listed = formats.length > 1 ? `${formats.slice(0, -1).join(", ")} or ${formats[formats.length - 1]}` : formats.join("");
    let videos = "";
    if (health.video) {
      const l = health.limits;
      const frame = l.max_video_pixels ? `${(l.max_video_pixels / 1e6).toFixed(1)} megapixels a frame` : "any frame size";
      videos = ` Videos: up to ${l.max_video_seconds} s and ${frame}.`;
    }
    $("limits").textContent = `${listed}; up to ${mb} MB and ${mp} per image.${videos}`;
  } catch (e) {
    $("model-info").textContent = "The server does not answer: is salicon serve still running?";
  }
}

async function loadExamples() {
  const r = await fetch("/api/examples");
  const list = await r.json();
  const box = $("examples");
  for (const ex of list) {
    const b = document.createElement("button");
    b.className = "button example";
    b.type = "button";
    b.dataset.name = ex.name;
    b.innerHTML = `<img alt="" src="${ex.url}">${ex.name}`;
    b.addEventListener("click", async () => {
      const blob = await (await fetch(ex.url)).blob();
      enqueue([new File([blob], ex.name, { type: blob.type })]);
    });
    box.appendChild(b);
  }
}

// ------------------------------------------------------------- uploads

function enqueue(files) {
  clearError();
  for (const f of files) pending.push(f);
  if (!sending) sendNext();
}

function localProblem(file) {
  if (file.size === 0) return `${file.name}: the file is empty (0 bytes); choose an image file`;
  if (health && file.size > health.limits.max_upload_bytes) {
    return `${file.name}: ${(file.size / 1e6).toFixed(1)} MB exceeds the upload limit of ` +
           `${(health.limits.max_upload_bytes / 1e6).toFixed(1)} MB`;
  }
  return null;
}

function setProgress(value, text) {
  $("progress").hidden = false;
  if (value === null) $("progress-bar").removeAttribute("value");
  else $("progress-bar").value = value;
  $("progress-text").textContent = text;
}

async function sendNext() {
  const file = pending.shift();
  if (!file) {
    sending = false;
    $("progress").hidden = true;
    return;
  }
  sending = true;
  const problem = localProblem(file);
  if (problem) {
    addFailure(file, problem);
    return sendNext();
  }
  try {
    if (isVideo(file)) {
      await sendVideo(file);   // media.js: a job on the server, polled, then played here
      sendNext();
      return;
    }
    const entry = await upload(file);
    $("progress").hidden = true;
    results.push(entry);
    addThumbnail(entry);
    await show(entry);
  } catch (e) {
    addFailure(file, e.message);
  }
  sendNext();
}

function upload(file) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    const model = chosenModel();
    const query = model && model.name ? `&model=${encodeURIComponent(model.name)}` : "";
    xhr.open("POST", `/api/saliency?format=json&keep=true${query}`);
    xhr.responseType = "json";
    const waiting = pending.length ? ` (${pending.length} more waiting)` : "";
    let timer = null;
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) setProgress(50 * e.loaded / e.total, `Uploading ${file.name}…${waiting}`);
    };
    xhr.upload.onload = () => {
      // The net runs now: the bar follows the server's measured time per image.
      const started = performance.now();
      const expected = model && model.seconds_per_image ? model.seconds_per_image : null;
      const tick = () => {
        const s = (performance.now() - started) / 1000;
        const about = expected ? ` (about ${expected.toFixed(1)} s per image on ${health.device})` : "";
        const value = expected ? 50 + 49 * Math.min(1, s / expected) : null;
        setProgress(value, `Computing the saliency map of ${file.name}: ${s.toFixed(1)} s${about}${waiting}`);
      };
      tick();
      timer = setInterval(tick, 200);
    };
    xhr.onload = () => {
      clearInterval(timer);
      const body = xhr.response || {};
      if (xhr.status !== 200) {
        reject(new Error(body.error || `${file.name}: the server answered ${xhr.status}`));
        return;
      }
      if (model) model.seconds_per_image = body.seconds;
      resolve({ file, url: URL.createObjectURL(file), ...body });
    };
    xhr.onerror = () => { clearInterval(timer); reject(new Error(`${file.name}: the server cannot be reached`)); };
    setProgress(0, `Uploading ${file.name}…${waiting}`);
    xhr.send(form);
  });
}

function addFailure(file, message) {
  $("progress").hidden = true;
  showError(message);
  const b = document.createElement("button");
  b.className = "failed";
  b.type = "button";
  b.textContent = `${file.name}: failed`;
  b.title = message;
  b.addEventListener("click", () => showError(message));
  $("gallery").appendChild(b);
  $("gallery-section").hidden = false;
}

function addThumbnail(entry) {
  const b = document.createElement("button");
  b.type = "button";
  b.innerHTML = `<img alt="" src="${entry.url}"><span></span>`;
  b.querySelector("span").textContent = entry.name;
  b.addEventListener("click", () => { clearError(); show(entry); });
  entry.thumb = b;
  $("gallery").appendChild(b);
  $("gallery-section").hidden = false;
}

// ------------------------------------------------------------- drawing

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot draw this image"));
    img.src = src;
  });
}

function pixels(img, w, h) {
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0, w, h);
  return ctx.getImageData(0, 0, w, h).data;
}

// The same 'jet' colormap and opacity rule as salicon.visualize.overlay.
function jet(v) {
  const c = (centre) => Math.min(1, Math.max(0, 1.5 - Math.abs(4 * v - 4 * centre)));
  return [c(0.75) * 255, c(0.5) * 255, c(0.25) * 255];
}

async function show(entry) {
  current = entry;
  $("video-result").hidden = true;
  for (const r of results) if (r.thumb) r.thumb.classList.toggle("selected", r === entry);
  $("result").dataset.state = "drawing";
  const scale = Math.min(1, DISPLAY_MAX / Math.max(entry.width, entry.height));
  const w = Math.max(1, Math.round(entry.width * scale)), h = Math.max(1, Math.round(entry.height * scale));
  let image;
  try {
    image = await loadImage(entry.url);
  } catch (e) {
    image = null;  // e.g. TIFF: the server reads it, this browser does not; show the map alone
  }
  const map = await loadImage(`data:image/png;base64,${entry.map_png}`);
  entry.view = { w, h, scale, map: pixels(map, w, h), image: image ? pixels(image, w, h) : null };
  $("result-name").textContent = entry.name;
  $("result").dataset.name = entry.name;
  $("result-details").textContent =
    `${entry.width}x${entry.height} pixels; computed in ${entry.seconds.toFixed(2)} s. Most salient points: ` +
    entry.peaks.map((p, i) => `${i + 1} (${p.x}, ${p.y})`).join(", ") + ".";
  $("result").hidden = false;
  draw();
  $("result").dataset.state = "ready";
}

function draw() {
  if (!current || !current.view) return;
  const { w, h, scale, map, image } = current.view;
  const alpha = $("opacity").value / 100, threshold = $("threshold").value / 100;
  $("opacity-value").textContent = alpha.toFixed(2);
  $("threshold-value").textContent = threshold.toFixed(2);

  const over = $("overlay-canvas"), gray = $("map-canvas");
  for (const c of [over, gray]) { c.width = w; c.height = h; }
  const octx = over.getContext("2d"), gctx = gray.getContext("2d");
  const out = octx.createImageData(w, h), mout = gctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    let s = map[4 * i] / 255;
    if (s < threshold) s = 0;
    const heat = jet(s), weight = alpha * Math.sqrt(s);
    for (let k = 0; k < 3; k++) {
      const base = image ? image[4 * i + k] : 0;
      out.data[4 * i + k] = base * (1 - weight) + heat[k] * weight;
      mout.data[4 * i + k] = s * 255;
    }
    out.data[4 * i + 3] = 255;
    mout.data[4 * i + 3] = 255;
  }
  octx.putImageData(out, 0, 0);
  gctx.putImageData(mout, 0, 0);
  if ($("show-peaks").checked) drawPeaks(octx, current.peaks, scale, w);

  const q = `threshold=${threshold.toFixed(2)}`;
  const d = current.downloads;
  if (d) {
    $("download-map-png").href = `${d.map_png}?${q}`;
    $("download-map-npy").href = `${d.map_npy}?${q}`;
    $("download-overlay").href = `${d.overlay_png}?alpha=${alpha.toFixed(2)}&${q}`;
  }
}

function drawPeaks(ctx, peaks, scale, w) {
  const r = Math.max(8, Math.round(w / 60));
  ctx.lineWidth = Math.max(2, r / 4);
  ctx.font = `bold ${Math.round(r * 1.2)}px system-ui, sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  peaks.forEach((p, i) => {
    const x = p.x * scale, y = p.y * scale;
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = "rgba(255,255,255,0.85)";
    ctx.fill();
    ctx.strokeStyle = "#111";
    ctx.stroke();
    ctx.fillStyle = "#111";
    ctx.fillText(String(i + 1), x, y + 1);
  });
}

// --------------------------------------------------------------- wiring

function wire() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (e) => { enqueue([...e.target.files]); e.target.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    enqueue([...e.dataTransfer.files]);
  });
  for (const id of ["opacity", "threshold", "show-peaks"]) $(id).addEventListener("input", draw);
}

wire();
loadHealth();
loadExamples();

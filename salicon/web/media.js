// Videos and the webcam on the SALICON page (loaded after app.js, whose helpers it uses).
// A video upload becomes a job on the server (POST /api/video); its progress is polled,
// then both result videos are fetched once (the server deletes them after a full
// download) and played here from memory. The webcam sends one picture at a time to
// POST /api/saliency and draws the heatmap over that same picture.
"use strict";

const VIDEO_SUFFIXES = [".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv"];

function isVideo(file) {
  const name = file.name.toLowerCase();
  return (file.type || "").startsWith("video/") || VIDEO_SUFFIXES.some((s) => name.endsWith(s));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function sendVideo(file) {
  const problem = localProblem(file);
  if (problem) { addFailure(file, problem); return; }
  if (health && !health.video) {
    addFailure(file, `${file.name}: this server does not take videos`);
    return;
  }
  const model = chosenModel();
  const query = model && model.name ? `&model=${encodeURIComponent(model.name)}` : "";
  const form = new FormData();
  form.append("file", file, file.name);
  setProgress(null, `Uploading ${file.name}…`);
  let job;
  try {
    const r = await fetch(`/api/video?overlay=true${query}`, { method: "POST", body: form });
    job = await r.json();
    if (r.status !== 202) throw new Error(job.error || `${file.name}: the server answered ${r.status}`);
    while (job.status === "queued" || job.status === "running") {
      const p = job.progress;
      const total = p.total_frames ? ` of ${p.total_frames}` : "";
      setProgress(p.fraction === null ? null : 100 * p.fraction,
        job.status === "queued" ? `${file.name}: waiting for the server…` :
          `${file.name}: ${p.frames}${total} frames (${p.computed} maps computed, ${job.options.sampling})`);
      await sleep(400);
      const s = await fetch(`/api/jobs/${job.id}`);
      job = await s.json();
      if (!s.ok) throw new Error(job.error || `${file.name}: the server answered ${s.status}`);
    }
    if (job.status !== "done") throw new Error(job.error || `${file.name}: the job was ${job.status}`);
    setProgress(100, `${file.name}: fetching the result…`);
    const stem = file.name.replace(/\.[^.]*$/, "");
    const entry = { name: file.name, job, video: true, urls: {} };
    for (const what of Object.keys(job.files)) {
      const r = await fetch(job.files[what]);
      if (!r.ok) throw new Error(`${file.name}: ${what}: the server answered ${r.status}`);
      entry.urls[what] = URL.createObjectURL(await r.blob());
    }
    entry.stem = stem;
    $("progress").hidden = true;
    results.push(entry);
    addVideoThumbnail(entry);
    showVideo(entry);
    if (job.error) showError(job.error);  // the clip broke: the result has the frames before the break
  } catch (e) {
    addFailure(file, e.message);
  }
}

function showVideo(entry) {
  current = null;
  for (const r of results) if (r.thumb) r.thumb.classList.toggle("selected", r === entry);
  $("result").hidden = true;
  const box = $("video-result");
  $("video-name").textContent = entry.name;
  const player = $("video-player");
  player.src = entry.urls["overlay.mp4"] || entry.urls["map.mp4"];
  const links = { "overlay.mp4": "download-video-overlay", "map.mp4": "download-video-map" };
  for (const [what, id] of Object.entries(links)) {
    const a = $(id);
    a.hidden = !entry.urls[what];
    if (entry.urls[what]) { a.href = entry.urls[what]; a.download = `${entry.stem}_${what}`; }
  }
  const p = entry.job.progress;
  $("video-details").textContent = `${p.frames} frames, ${p.computed} maps computed (${entry.job.options.sampling}) ` +
    `in ${entry.job.seconds.toFixed(1)} s by ${entry.job.options.model}. The server has deleted its copies.`;
  box.hidden = false;
  box.dataset.state = "ready";
}

function addVideoThumbnail(entry) {
  const b = document.createElement("button");
  b.type = "button";
  b.innerHTML = `<span class="film">▶</span><span></span>`;
  b.querySelector("span:last-child").textContent = entry.name;
  b.addEventListener("click", () => { clearError(); showVideo(entry); });
  entry.thumb = b;
  $("gallery").appendChild(b);
  $("gallery-section").hidden = false;
}

// ------------------------------------------------------------- webcam

const webcam = { running: false, stream: null, latencies: [], frames: 0, started: 0 };
const WEBCAM_SIDE = 640;   // pictures are sent at most this many pixels on a side

function grab(video) {
  const scale = Math.min(1, WEBCAM_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const c = document.createElement("canvas");
  c.width = Math.max(1, Math.round(video.videoWidth * scale));
  c.height = Math.max(1, Math.round(video.videoHeight * scale));
  c.getContext("2d").drawImage(video, 0, 0, c.width, c.height);
  return c;
}

function toJpeg(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

function drawLive(picture, mapImage) {
  const w = picture.width, h = picture.height;
  const out = $("webcam-canvas");
  out.width = w; out.height = h;
  const ctx = out.getContext("2d");
  const image = picture.getContext("2d").getImageData(0, 0, w, h).data;
  const map = pixels(mapImage, w, h);
  const alpha = $("opacity").value / 100;
  const frame = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const s = map[4 * i] / 255, heat = jet(s), weight = alpha * Math.sqrt(s);
    for (let k = 0; k < 3; k++) frame.data[4 * i + k] = image[4 * i + k] * (1 - weight) + heat[k] * weight;
    frame.data[4 * i + 3] = 255;
  }
  ctx.putImageData(frame, 0, 0);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function webcamLoop() {
  const video = $("webcam-video");
  const model = chosenModel();
  const query = model && model.name ? `&model=${encodeURIComponent(model.name)}` : "";
  while (webcam.running) {
    if (video.readyState < 2 || !video.videoWidth) { await sleep(50); continue; }
    const picture = grab(video);
    const form = new FormData();
    form.append("file", await toJpeg(picture), "webcam.jpg");
    const sent = performance.now();
    let r;
    try {
      r = await fetch(`/api/saliency?format=png${query}`, { method: "POST", body: form });
    } catch (e) {
      showError("The server cannot be reached; the webcam stopped.");
      stopWebcam();
      return;
    }
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      if (r.status === 503) { await sleep(200); continue; }   // busy: try the next picture a little later
      showError(body.error || `The server answered ${r.status}; the webcam stopped.`);
      stopWebcam();
      return;
    }
    const mapImage = await loadImage(URL.createObjectURL(await r.blob()));
    const latency = performance.now() - sent;
    if (!webcam.running) return;
    drawLive(picture, mapImage);
    webcam.frames += 1;
    webcam.latencies.push(latency);
    if (webcam.latencies.length > 20) webcam.latencies.shift();
    const rate = webcam.frames / ((performance.now() - webcam.started) / 1000);
    const section = $("webcam");
    section.dataset.state = "live";
    section.dataset.frames = String(webcam.frames);
    section.dataset.latency = String(Math.round(latency));
    $("webcam-stats").textContent = `Latency ${Math.round(median(webcam.latencies))} ms (median of the last ` +
      `${webcam.latencies.length}); ${rate.toFixed(1)} maps a second; ${picture.width}x${picture.height} pictures; ` +
      `${webcam.frames} so far.`;
  }
}

async function startWebcam() {
  clearError();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser gives no camera to this page (cameras need https:// or localhost).");
    return;
  }
  try {
    webcam.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    showError(`The camera is not available: ${e.message}`);
    return;
  }
  const video = $("webcam-video");
  video.srcObject = webcam.stream;
  await video.play().catch(() => {});
  Object.assign(webcam, { running: true, latencies: [], frames: 0, started: performance.now() });
  $("webcam").hidden = false;
  $("webcam").dataset.state = "starting";
  $("webcam-start").disabled = true;
  webcamLoop();
}

function stopWebcam() {
  webcam.running = false;
  if (webcam.stream) for (const t of webcam.stream.getTracks()) t.stop();
  webcam.stream = null;
  $("webcam").dataset.state = "off";
  $("webcam-start").disabled = false;
}

$("webcam-start").addEventListener("click", startWebcam);
$("webcam-stop").addEventListener("click", () => { stopWebcam(); $("webcam").hidden = true; });

// feverdream studio's page: plain browser JavaScript, no build step. Everything it shows comes
// from the studio's JSON API; the studio keeps the state (drafts, the render queue).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { board: null, sha: "", view: null, jobs: [], timer: null, cursor: null, made: null, shown: "" };

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new Error("the studio is not answering: is `feverdream studio` still running?");
  }
  if (response.status === 403) {
    throw new Error("the studio refused this tab (it restarted, or the token is missing): " +
      "open the URL `feverdream studio` printed; your text is kept in this tab until then");
  }
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok && response.status !== 422) throw new Error(data.error || response.statusText);
  return data;
}

// Every button's action: a failure is shown, never lost in the console.
function act(action) {
  return async (...args) => {
    try {
      $("notice").textContent = "";
      return await action(...args);
    } catch (error) {
      $("notice").textContent = error.message;
      return undefined;
    }
  };
}

// --- storyboards -----------------------------------------------------------------------------

async function loadBoards(select) {
  const data = await api("/api/boards");
  $("folder").textContent = data.shown;
  $("folder").title = data.folder;
  const list = $("boards");
  list.replaceChildren();
  const from = $("new-from");
  for (const option of [...from.options]) if (!option.value.startsWith("example:")) option.remove();
  for (const name of data.boards) {
    const button = document.createElement("button");
    button.textContent = name;
    button.dataset.board = name;
    button.onclick = act(() => openBoard(name));
    if (name === state.board) button.classList.add("current");
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
    from.append(new Option(`from ${name}`, name));
  }
  showNewHint();
  const wanted = select || new URLSearchParams(location.hash.slice(1)).get("board");
  if (wanted && data.boards.includes(wanted)) await openBoard(wanted);
}

async function openBoard(name) {
  const data = await api(`/api/board/${encodeURIComponent(name)}`);
  state.board = name;
  state.sha = data.sha256;
  state.view = null;
  $("plot").replaceChildren();
  clearResult();
  history.replaceState(null, "", `#board=${encodeURIComponent(name)}`);
  for (const b of document.querySelectorAll("#boards button")) {
    b.classList.toggle("current", b.dataset.board === name);
  }
  $("board-name").textContent = name;
  $("text").disabled = false;
  $("text").value = data.draft ?? data.saved;
  $("discard").hidden = data.draft === null;
  $("save-state").textContent = data.draft === null ? "saved"
    : data.changed ? "unsaved edits restored; the file was changed outside the studio since: Save replaces it, Discard shows it"
    : "unsaved edits restored (the file is unchanged)";
  for (const id of ["save", "preview-button", "render-button"]) $(id).disabled = false;
  showLines();
  await validate();
  $("caption").value = state.view ? state.view.caption : "";
  showResult(await api(`/api/result/${encodeURIComponent(name)}`));
  updateJobs();
}

function edited() {
  $("save-state").textContent = "unsaved";
  $("discard").hidden = false;
  showLines();
  clearTimeout(state.timer);
  state.timer = setTimeout(act(validate), 300);
}

async function validate() {
  const name = state.board;
  const text = $("text").value;
  const view = await api("/api/view", { name, text, base: state.sha });
  if (name !== state.board || text !== $("text").value) return; // typed on since
  showView(view);
}

async function save() {
  const view = await api("/api/save", { name: state.board, text: $("text").value, base: state.sha });
  showView(view);
  if (view.ok) {
    state.sha = view.sha256;
    $("save-state").textContent = "saved";
    $("discard").hidden = true;
  } else {
    $("save-state").textContent = "not saved: fix the error first (your text is kept)";
  }
}

async function discard() {
  const data = await api("/api/discard", { name: state.board });
  state.sha = data.sha256;
  $("text").value = data.saved;
  $("discard").hidden = true;
  $("save-state").textContent = "saved";
  showLines();
  await validate();
}

// --- the editor: line numbers, and the error at its line ---------------------------------------

function showLines(badLine) {
  const lines = $("text").value.split("\n");
  const gutter = $("gutter");
  const backdrop = $("backdrop");
  gutter.replaceChildren();
  backdrop.replaceChildren();
  lines.forEach((line, i) => {
    const number = document.createElement("div");
    number.textContent = String(i + 1);
    const shadow = document.createElement("div");
    const words = document.createElement("span"); // its width: where the line's text ends
    words.textContent = line || " ";
    shadow.append(words);
    if (i + 1 === badLine) {
      number.className = "bad";
      shadow.className = "bad";
      shadow.id = "bad-line";
    }
    gutter.append(number);
    backdrop.append(shadow);
  });
  syncScroll();
}

function syncScroll() {
  const text = $("text");
  $("backdrop").scrollTop = text.scrollTop;
  $("backdrop").scrollLeft = text.scrollLeft;
  $("gutter").scrollTop = text.scrollTop;
  const note = $("error-at-line");
  if (note.hidden) return;
  note.style.top = `${note.dataset.top - text.scrollTop}px`;
  note.style.left = `${Math.max(note.dataset.left - text.scrollLeft, 8)}px`;
}

function showView(view) {
  state.view = view.ok ? view : state.view;
  state.valid = view.ok;
  const error = view.ok ? null : view.error;
  const line = error && error.line;
  showLines(line);
  $("error").textContent = error ? error.text : "";
  const note = $("error-at-line");
  note.hidden = !line;
  if (line) {
    // On the bad line itself, after its text (or over the end of a long one), so that the
    // lines around it stay readable; the whole message is under the editor.
    note.textContent = `line ${line}: ${error.key ? error.key + ": " : ""}${error.message}`;
    note.dataset.line = line;
    note.dataset.top = 6 + (line - 1) * 18;
    const ends = $("bad-line") ? $("bad-line").firstChild.offsetWidth : 0;
    note.dataset.left = Math.min(6 + ends + 16, $("code").clientWidth * 0.6);
    syncScroll();
  }
  if (view.ok) drawPlan(view);
  else {
    $("summary").textContent = state.view
      ? "out of date: the text has an error; this is the plan of its last valid version"
      : "fix the error to see the plan";
  }
  for (const id of ["preview-button", "render-button"]) $(id).disabled = !view.ok;
  $("plan").classList.toggle("stale", !view.ok);
}

// --- the plan plot -----------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#c86bff", "#6bd0ff", "#ffb86b", "#6be3a4", "#ff6b9d", "#e3e36b", "#9d8cff"];

function svg(tag, attrs, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

function panels(view) {
  const out = [
    { label: "zoom", series: { zoom: view.series.zoom } },
    { label: "rotate °/frame", series: { rotate: view.series.rotate } },
    { label: "pan px/frame", series: { x: view.series.pan_x, y: view.series.pan_y } },
  ];
  if (view.series.translate_x) { // a storyboard that moves the 3D camera: the 2D keys where it moves them too
    const still = { zoom: 1, rotate: 0, x: 0, y: 0 };
    const moved = (panel) => Object.entries(panel.series).some(([name, values]) => values.some((v) => v !== still[name]));
    out.splice(0, out.length, ...out.filter(moved));
    const s = view.series;
    out.push({ label: "translate x, y px/frame", series: { x: s.translate_x, y: s.translate_y } });
    out.push({ label: "translate z /frame", series: { z: s.translate_z } });
    out.push({ label: "rotate_3d °/frame", series: { x: s.rotate_3d_x, y: s.rotate_3d_y, z: s.rotate_3d_z } });
    out.push({ label: "fov °", series: { fov: s.fov } });
  }
  out.push({ label: "prompt weights", series: view.prompts, aims: view.aims });
  if (view.waveform) out.push({ label: "soundtrack", series: { loudness: view.waveform }, wave: true });
  return out;
}

function drawPlan(view) {
  const plot = $("plot");
  plot.replaceChildren();
  const width = plot.clientWidth || 600;
  const height = plot.clientHeight || 460;
  const left = 88;
  const right = 8;
  const all = panels(view);
  const rowHeight = (height - 20) / all.length;
  const end = Math.max(view.duration, 1e-6);
  const x = (t) => left + (t / end) * (width - left - right);
  plot.setAttribute("viewBox", `0 0 ${width} ${height}`);
  plot.dataset.frames = String(view.n_frames);
  all.forEach((panel, row) => {
    const top = 6 + row * rowHeight;
    const h = rowHeight - 14;
    const values = Object.values(panel.series).flat();
    let lo = Math.min(...values, panel.wave ? 0 : Infinity);
    let hi = Math.max(...values);
    if (hi - lo < 1e-9) { // a constant: a small band around it, not a range it never takes
      const pad = Math.abs(hi) > 1e-9 ? Math.abs(hi) * 0.02 : 1;
      lo -= pad;
      hi += pad;
    }
    const y = (v) => top + h - ((v - lo) / (hi - lo)) * h;
    svg("rect", { x: left, y: top, width: width - left - right, height: h, fill: "#17131f" }, plot);
    const label = svg("text", { x: 4, y: top + 12 }, plot);
    label.textContent = panel.label;
    svg("text", { x: 4, y: top + h }, plot).textContent = Number(lo.toPrecision(4)).toString();
    svg("text", { x: 4, y: top + 24 }, plot).textContent = Number(hi.toPrecision(4)).toString();
    for (const beat of view.beats) {
      svg("line", { x1: x(beat), x2: x(beat), y1: top, y2: top + h, stroke: "#ff5c7a",
        "stroke-opacity": 0.25, class: "beat" }, plot);
    }
    for (const mark of view.keyframes) {
      svg("line", { x1: x(mark.t), x2: x(mark.t), y1: top, y2: top + h, stroke: "#ddd",
        "stroke-opacity": 0.5, "stroke-dasharray": "4 3", class: "keyframe" }, plot);
    }
    Object.entries(panel.series).forEach(([name, series], i) => {
      const points = series.map((v, f) => `${x(view.t[f] ?? f / view.fps).toFixed(1)},${y(v).toFixed(1)}`);
      const line = svg("polyline", { points: points.join(" "), fill: "none",
        stroke: COLOURS[i % COLOURS.length], "stroke-width": 1.5, class: "series" }, plot);
      svg("title", {}, line).textContent = name;
      if (!panel.aims) return;
      const aims = panel.aims[name].map((v, f) => `${x(view.t[f] ?? f / view.fps).toFixed(1)},${y(v).toFixed(1)}`);
      const aim = svg("polyline", { points: aims.join(" "), fill: "none", stroke: COLOURS[i % COLOURS.length],
        "stroke-width": 1, "stroke-dasharray": "1 3", class: "aim" }, plot);
      svg("title", {}, aim).textContent = `the engine's aim: ${name}`;
    });
  });
  const axis = svg("text", { x: left, y: height - 4 }, plot);
  axis.textContent = `time (s), 0 – ${view.duration.toFixed(2)}; dashed: keyframes, red: beats; ` +
    `dotted: a full render's aim, ${view.aim_lead} frames ahead so that the picture shows each prompt on time`;
  state.cursor = svg("line", { x1: -10, x2: -10, y1: 0, y2: height - 16, stroke: "#c86bff" }, plot);
  plot.onclick = (event) => {
    const box = plot.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    const t = Math.min(Math.max((px - left) / (width - left - right), 0), 1) * end;
    showFrame(Math.min(view.n_frames - 1, Math.round(t * view.fps)));
  };
  $("summary").textContent =
    `${view.title}: ${view.duration.toFixed(2)} s at ${view.fps} fps, ${view.n_frames} frames, ${view.keyframes.length} keyframes`;
  $("estimate").textContent = ["preview", "render"].map((kind) => describeEstimate(kind, view.estimate[kind])).join("   ·   ");
  showNeeds(view);
}

function describeEstimate(kind, e) {
  const work = `${kind} ${e.canvas}: ${e.optimised} optimised frames, ${e.steps} steps`;
  if (e.seconds === null) return `${work} (time on ${e.device}: not measured here yet; the first ${kind} measures it)`;
  return `${work} ≈ ${formatSeconds(e.seconds)} on ${e.device} (${e.seconds_per_step.toFixed(2)} s/step measured here)`;
}

// Before a render that would download its models: which, how big, where to, and the time;
// and the way out without downloading, the shapes models.
function showNeeds(view) {
  const models = view.models;
  $("needs").hidden = models.download.length === 0;
  if (!models.download.length) return;
  const missing = models.needed.filter((m) => m.downloads)
    .map((m) => `• ${m.name} (${m.role}), ${m.bytes ? "about " + formatBytes(m.bytes) : "size not stated"}`);
  const e = view.estimate.preview;
  const time = e.seconds === null
    ? `Time on ${e.device}: not measured here yet; \`feverdream bench --storyboard ${state.board}\` ` +
      "in this folder projects it without downloading (on a CPU, real models take hours a render)."
    : `Time: a preview ≈ ${formatSeconds(e.seconds)} on ${e.device}, measured here.`;
  $("needs-text").textContent = [
    "This storyboard's models are not on this machine yet:",
    ...missing,
    `${formatBytes(models.download_bytes)}, downloaded once into ${models.folder} by the first ` +
      `Preview or Render (or ahead, in a terminal: \`feverdream models download ${models.download.join(" ")}\`).`,
    time,
  ].join("\n");
}

function formatBytes(n) {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${Math.round(n / 1e6)} MB`;
}

// The storyboard's text with `models:` naming the shapes models, as an edit the artist sees.
function withShapesModels(text) {
  const lines = text.split("\n");
  const block = ["models:", "  vqgan: shapes", "  clip: shapes"];
  const start = lines.findIndex((line) => /^models\s*:/.test(line));
  if (start >= 0) {
    let end = start + 1;
    while (end < lines.length && /^[ \t]+\S/.test(lines[end])) end += 1;
    lines.splice(start, end - start, ...block);
  } else {
    const keyframes = lines.findIndex((line) => /^keyframes\s*:/.test(line));
    lines.splice(keyframes >= 0 ? keyframes : lines.length, 0, ...block);
  }
  return lines.join("\n");
}

function useShapes() {
  $("text").value = withShapesModels($("text").value);
  edited();
}

function showFrame(frame) {
  const view = state.view;
  const t = view.t[frame];
  const x = state.cursor.ownerSVGElement.viewBox.baseVal;
  const left = 88;
  const px = left + (t / Math.max(view.duration, 1e-6)) * (x.width - left - 8);
  state.cursor.setAttribute("x1", px);
  state.cursor.setAttribute("x2", px);
  const prompts = Object.entries(view.prompts)
    .map(([text, w]) => [text, w[frame]])
    .filter(([, w]) => w > 0)
    .map(([text, w]) => `  ${w.toFixed(3)}  ${text}`);
  $("frame-values").textContent = [
    `frame ${frame}  t ${t.toFixed(3)} s`,
    `zoom ${view.series.zoom[frame].toFixed(4)}  rotate ${view.series.rotate[frame].toFixed(3)}°  ` +
      `pan ${view.series.pan_x[frame].toFixed(2)}, ${view.series.pan_y[frame].toFixed(2)} px`,
    ...(view.series.translate_x ? [
      `translate ${["x", "y", "z"].map((a) => view.series[`translate_${a}`][frame].toFixed(3)).join(", ")}  ` +
      `rotate_3d ${["x", "y", "z"].map((a) => view.series[`rotate_3d_${a}`][frame].toFixed(3)).join(", ")}°  ` +
      `fov ${view.series.fov[frame].toFixed(1)}°`] : []),
    "prompts:", ...prompts,
  ].join("\n");
  $("frame-values").dataset.frame = String(frame);
}

function formatSeconds(s) {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// --- renders -------------------------------------------------------------------------------

async function startRender(kind, fresh = false) {
  const models = state.view && state.view.models;
  if (models && models.download.length && !confirm(
    `This ${kind} first downloads ${models.download.join(" and ")} ` +
    `(${formatBytes(models.download_bytes)}) into ${models.folder}. Download them now?`)) return;
  // A render renders the file: edits not yet saved are saved first (and a text with an
  // error is not rendered at all).
  if ($("save-state").textContent !== "saved") {
    await save();
    if ($("save-state").textContent !== "saved") {
      throw new Error("fix the storyboard's error first: a render renders the saved file");
    }
  }
  await api("/api/render", { name: state.board, kind, fresh });
}

async function startOver() {
  const job = currentJob();
  if (!job) return;
  const where = job.kind === "preview" ? "preview" : "render";
  if (!confirm(`Start the ${where} over? The frames it made before are replaced.`)) return;
  await startRender(job.kind, true);
}

async function stopRender() {
  const job = currentJob();
  if (job) await api("/api/stop", { job: job.id });
}

function currentJob() {
  const mine = state.jobs.filter((j) => j.board === state.board);
  return mine.find((j) => ["running", "stopping", "queued"].includes(j.state)) || mine[mine.length - 1];
}

function updateJobs() {
  const queue = $("queue");
  queue.replaceChildren();
  for (const job of state.jobs.filter((j) => ["queued", "running", "stopping"].includes(j.state))) {
    const item = document.createElement("li");
    item.textContent = `#${job.id} ${job.kind} ${job.board}: ${job.state}`;
    queue.append(item);
  }
  const job = currentJob();
  const active = job && ["running", "stopping", "queued"].includes(job.state);
  $("stop-button").disabled = !job || !["running", "queued"].includes(job.state);
  if (!job) return;
  const progress = $("progress");
  const running = ["running", "stopping"].includes(job.state);
  if (running && !["download", "frames", "encoding"].includes(job.stage)) {
    progress.removeAttribute("value"); // busy, with nothing to count yet
  } else {
    progress.max = Math.max(job.total, 1);
    progress.value = job.state === "done" ? progress.max : job.done;
  }
  $("progress-text").textContent = `#${job.id} ${job.kind}: ${describeJob(job)}`;
  $("job-message").textContent = job.message;
  $("job-message").className = job.state === "failed" ? "error" : "";
  $("job-details").hidden = !job.details;
  $("job-details-text").textContent = job.details;
  $("start-over").hidden = !(job.state === "failed" && job.changed);
  for (const id of ["preview-button", "render-button"]) {
    const button = $(id);
    const kind = id.startsWith("preview") ? "preview" : "render";
    const stopped = state.jobs.filter((j) => j.board === state.board && j.kind === kind).pop();
    const resume = stopped && stopped.state === "stopped";
    button.textContent = kind === "preview" ? (resume ? "Resume preview" : "Preview")
      : (resume ? "Resume render" : "Render");
    button.disabled = Boolean(active && job.kind === kind) || !state.valid;
  }
  if (job.newest_frame && job.board === state.board) {
    const newest = $("newest");
    const src = `/files/outputs/${job.newest_frame}`;
    if (newest.dataset.src !== src) {
      newest.dataset.src = src;
      newest.src = src;
      newest.hidden = false;
    }
  }
  if (state.finished !== `${job.id}:${job.state}` && ["done", "stopped"].includes(job.state)) {
    state.finished = `${job.id}:${job.state}`;
    validate(); // the estimate now has this machine's time per step
  }
  if (job.state === "done" && job.video && state.shown !== `${job.id}`) {
    state.shown = `${job.id}`; // once per render, not at every event of another one
    showResult({ [job.kind]: { video: job.video, contact_sheet: job.contact_sheet } }, job.check);
  }
}

// What a render is doing, in words, with the time left: the seconds per step measured here
// times the steps still to take, as the plan's estimate counts them.
function describeJob(job) {
  if (!["running", "stopping"].includes(job.state)) return job.state;
  let text = job.activity || job.state;
  if (job.state === "stopping") text += " (stopping after the frame being made)";
  if (job.eta_s !== null) text += `, about ${formatSeconds(job.eta_s)} left`;
  else if (job.stage !== "encoding") text += ", time left: known after the first frame";
  if (job.stage === "frames" && job.loss !== null) text += `, loss ${job.loss.toFixed(3)}`;
  return text;
}

// --- the result, and posting ---------------------------------------------------------------------

function clearResult() {
  state.made = null;
  state.shown = "";
  const video = $("video");
  video.removeAttribute("src");
  video.dataset.src = "";
  video.hidden = true;
  $("contact").hidden = true;
  $("newest").hidden = true;
  $("newest").dataset.src = "";
  $("check").textContent = "";
  $("result-kind").textContent = "";
  $("post-button").disabled = true;
  $("progress").value = 0;
  $("progress-text").textContent = "";
  $("job-message").textContent = "";
  $("job-details").hidden = true;
  $("start-over").hidden = true;
  $("post-log").textContent = "";
  $("post-log").dataset.state = "";
}

function showResult(made, checked) {
  const kind = made.render ? "render" : made.preview ? "preview" : null;
  if (!kind) return;
  const result = made[kind];
  const video = $("video");
  const src = `/files/outputs/${result.video}`;
  video.dataset.src = src;
  video.dataset.canPlay = "no";
  video.src = `${src}?v=${Date.now()}`; // a new render may have replaced the file
  video.hidden = false;
  $("result-kind").textContent = `${kind}: ${result.video}`;
  const contact = $("contact");
  contact.hidden = !result.contact_sheet;
  if (result.contact_sheet) contact.src = `/files/outputs/${result.contact_sheet}?v=${Date.now()}`;
  $("post-button").disabled = !state.loggedIn;
  state.made = result;
  if (checked) showCheck(checked);
  else api(`/api/check?video=${encodeURIComponent(result.video)}`).then(showCheck, (e) => showCheck({ summary: String(e), problems: ["cannot read it"] }));
}

function showCheck(checked) {
  const verdict = checked.problems.length
    ? `TikTok would refuse it: ${checked.problems.join("; ")}`
    : "TikTok would accept it.";
  $("check").textContent = `${checked.summary}\n${verdict}`;
  $("check").className = checked.problems.length ? "error" : "ok";
}

async function loadTikTok() {
  const account = await api("/api/tiktok");
  const status = $("tiktok-state");
  if (!account.logged_in) {
    status.textContent = account.error || "Not logged in to TikTok: run `feverdream tiktok login`, then reload.";
    return; // the post controls stay off
  }
  state.loggedIn = true;
  for (const input of document.querySelectorAll("#post input, #caption")) input.disabled = false;
  showMode();
  if (state.made) $("post-button").disabled = false;
  status.textContent = `Logged in as ${account.name}; allowed: ${account.scopes.join(", ")}`;
  const privacy = $("privacy");
  privacy.replaceChildren(new Option("choose who can see it", ""));
  for (const level of account.privacy_options) privacy.append(new Option(level, level));
}

async function post() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  const privacy = $("privacy").value;
  if (mode === "direct") {
    if (!privacy) { $("post-log").textContent = "choose who can see it first"; return; }
    if (!confirm(`Post ${state.made.video} to TikTok now, visible to ${privacy}?`)) return;
  }
  try {
    // A draft's caption goes too: TikTok takes none for a draft, and the log repeats it.
    await api("/api/post", { video: state.made.video, mode, privacy: mode === "direct" ? privacy : "", caption: $("caption").value });
  } catch (error) {
    $("post-log").textContent = `error: ${error.message}`;
  }
}

function showPost(posting) {
  if (posting.state === "idle" || !state.made || posting.video !== state.made.video) return;
  const lines = [...posting.lines];
  if (posting.url) lines.push(posting.url);
  $("post-log").textContent = `${posting.state}: ${posting.video}\n${lines.join("\n")}`;
  $("post-log").dataset.state = posting.state;
  $("post-button").disabled = posting.state === "posting";
}

// A draft takes no privacy and no caption (both are chosen in the TikTok app): said, not dropped.
function showMode() {
  const draft = document.querySelector("input[name=mode]:checked").value === "draft";
  $("caption-note").hidden = !draft;
  $("privacy").disabled = draft || !state.loggedIn;
}

// --- wiring --------------------------------------------------------------------------------------

function listen() {
  const events = new EventSource("/api/events");
  events.onopen = () => { $("connection").textContent = ""; };
  events.onerror = () => { $("connection").textContent = "studio not answering: is it still running?"; };
  events.onmessage = (message) => {
    const data = JSON.parse(message.data);
    state.jobs = data.jobs;
    updateJobs();
    showPost(data.post);
  };
}

$("text").addEventListener("input", edited);
$("text").addEventListener("scroll", syncScroll);
$("save").onclick = act(save);
$("discard").onclick = act(discard);
$("preview-button").onclick = act(() => startRender("preview"));
$("render-button").onclick = act(() => startRender("render"));
$("stop-button").onclick = act(stopRender);
$("start-over").onclick = act(startOver);
$("post-button").onclick = act(post);
$("use-shapes").onclick = act(useShapes);
for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", showMode);
// Closing or leaving the tab: the last keystrokes reach the draft even inside the debounce.
window.addEventListener("pagehide", () => {
  if (!state.board || $("save-state").textContent === "saved") return;
  const draft = JSON.stringify({ name: state.board, text: $("text").value, base: state.sha });
  navigator.sendBeacon("/api/draft", new Blob([draft], { type: "application/json" }));
});
$("video").addEventListener("canplay", () => { $("video").dataset.canPlay = "yes"; });
// What a new storyboard starts from, said before it is made: a newcomer's first click works.
const NEW_HINTS = {
  "example:shapes": "feverdream's own small models, shipped with it: nothing to download, a preview in under a minute; they know colours and shapes only",
  "example:real": "the real VQGAN and CLIP, for art: 1.3 GB downloaded once; on a CPU a render takes hours",
};
function showNewHint() {
  const from = $("new-from").value;
  $("new-hint").textContent = NEW_HINTS[from] || `a copy of ${from}`;
}
$("new-from").addEventListener("change", showNewHint);
showNewHint();
$("new-form").onsubmit = async (event) => {
  event.preventDefault();
  $("new-error").textContent = "";
  try {
    let name = $("new-name").value.trim();
    if (name && !/\.ya?ml$/.test(name)) name += ".yaml";
    const from = $("new-from").value;
    const made = await api("/api/new", from.startsWith("example:")
      ? { name, example: from.slice("example:".length) } : { name, from });
    $("new-name").value = "";
    await loadBoards(made.name);
  } catch (error) {
    $("new-error").textContent = error.message;
  }
};
window.addEventListener("resize", () => state.view && drawPlan(state.view));
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "s") { event.preventDefault(); if (state.board) act(save)(); }
});

act(loadBoards)();
act(loadTikTok)();
listen();

"use strict";
// The rlprune page: the job list (#), a job (#job=ID) and a comparison (#compare=ID,ID).
// Every API call carries the bearer token the server wrote into the page; a job's events come
// from its event stream, resumed from the last event id after a break or a resume.
const headers = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"};
const $ = (id) => document.getElementById(id);
const STAGES = {pretrain: "pre-training", search: "search", selection: "selection",
                finetune: "fine-tune", export: "export"};
const NUMBERS = new Set(["target", "episodes", "warmup", "finetune_epochs"]);
const LIVE = ["queued", "running"], STOPPED = ["cancelled", "interrupted"];
const PLOT = {displaylogo: false, responsive: true};
const selected = new Set();
let current = null;  // the job or comparison on screen

function say(text, kind) { const m = $("message"); m.textContent = text || ""; m.className = kind || "error"; }
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                     '"': "&quot;", "'": "&#39;"}[c]));
}
function pct(x) { return typeof x === "number" ? (100 * x).toFixed(2) + "%" : ""; }
async function api(path, options) {
  const r = await fetch(path, Object.assign({headers}, options || {}));
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}
function jobUrl(id, rest) { return `/v1/jobs/${encodeURIComponent(id)}${rest || ""}`; }
function duration(j) {
  const start = j.started || j.created;
  const end = j.ended || (LIVE.includes(j.state) ? Date.now() / 1000 : null);
  if (!start || !end) return "";
  const s = Math.max(0, Math.round(end - start));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
function progressText(j) {
  const p = j.progress || {};
  if (p.stage && LIVE.includes(j.state)) {
    return `${STAGES[p.stage] || p.stage}${p.steps ? ` ${p.step || 0}/${p.steps}` : ""}`;
  }
  return p.episodes ? `${p.episodes_done || 0}/${p.episodes}` : (p.method || "");
}
function show(section) {
  for (const s of ["list", "job", "compare"]) $(s).hidden = s !== section;
}
function stopFollowing() {
  if (current && current.control) current.control.abort();
  if (current && current.timer) clearTimeout(current.timer);
  if (current && current.ticker) clearInterval(current.ticker);
  current = null;
}

// -- the job list ------------------------------------------------------------------------
async function refresh() {
  if (!$("list").hidden) {
    try {
      const jobs = await api("/v1/jobs");
      document.querySelector("#jobs tbody").innerHTML = jobs.reverse().map(jobRow).join("");
      $("compare-button").disabled = selected.size < 2;
    } catch (e) { say(e.message); }
  }
}
function jobRow(j) {
  const c = j.config || {}, acc = (j.result || {}).accuracy || {};
  const id = esc(j.id), tick = selected.has(j.id) ? " checked" : "";
  const act = LIVE.includes(j.state) ? "cancel" : STOPPED.includes(j.state) ? "resume" : "";
  return `<tr data-id="${id}"><td><input type="checkbox" class="pick" data-id="${id}"${tick}></td>` +
    `<td><a href="#job=${id}">${id}</a></td><td>${esc(j.kind)}</td><td>${esc(c.model)}</td>` +
    `<td>${esc(c.dataset)}</td><td>${esc(c.granularity || "weight")}</td>` +
    `<td class="num">${esc(c.target ?? (c.targets || []).join(", "))}</td>` +
    `<td class="state state-${esc(j.state)}">${esc(j.state)}</td>` +
    `<td class="progress">${esc(progressText(j))}</td>` +
    `<td class="num">${pct(acc.finetuned)}</td><td class="num">${duration(j)}</td>` +
    `<td>${act ? `<button data-act="${act}" data-id="${id}">${act}</button>` : ""}</td></tr>`;
}
$("jobs").addEventListener("click", async (ev) => {
  const pick = ev.target.closest("input.pick");
  if (pick) {
    if (pick.checked) selected.add(pick.dataset.id); else selected.delete(pick.dataset.id);
    $("compare-button").disabled = selected.size < 2;
    return;
  }
  const b = ev.target.closest("button"); if (!b) return;
  try { await api(jobUrl(b.dataset.id, `/${b.dataset.act}`), {method: "POST"}); say(""); }
  catch (e) { say(e.message); }
  refresh();
});
$("compare-button").addEventListener("click", () => {
  location.hash = "compare=" + [...selected].map(encodeURIComponent).join(",");
});
$("submit").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const config = {};
  for (const [k, v] of new FormData(ev.target).entries()) {
    // a number where one is asked; anything else as typed, for the server to name
    config[k] = NUMBERS.has(k) && v.trim() !== "" && isFinite(Number(v)) ? Number(v) : v;
  }
  try {
    const j = await api("/v1/jobs", {method: "POST", body: JSON.stringify({kind: "search", config})});
    say(`submitted ${j.id}`, "ok"); refresh();
  } catch (e) { say(e.message); }
});

// -- one job -----------------------------------------------------------------------------
function openJob(id) {
  show("job");
  const c = current = {id, lastId: 0, rewards: [], best: null, sparsities: {}, state: null};
  $("job-title").textContent = id;
  $("job-summary").textContent = $("job-stage").textContent = $("job-stage-message").textContent = "";
  $("job-episode").textContent = "0"; $("job-best").textContent = "-";
  document.querySelector("#result tbody").innerHTML = $("files").innerHTML = "";
  Plotly.purge("curve"); Plotly.purge("bars");
  loadJob(c).then((ok) => { if (ok) follow(c); });
  // the record again now and then while the job lives: its duration, what the stream lacks
  c.ticker = setInterval(() => { if (LIVE.includes(c.state)) loadJob(c); }, 3000);
}
async function loadJob(c) {
  try {
    const j = await api(jobUrl(c.id));
    if (c === current) renderJob(c, j);
    return true;
  } catch (e) {
    if (c === current) { $("job-title").textContent = `no job ${c.id}`; say(e.message); }
    return false;
  }
}
function renderJob(c, j) {
  const cfg = j.config || {};
  c.warmup = cfg.warmup; c.granularity = cfg.granularity || "weight";
  $("job-summary").textContent = `${j.kind} · ${cfg.model} on ${cfg.dataset} · ` +
    `${c.granularity} · target ${cfg.target ?? (cfg.targets || []).join(", ")} · ${duration(j)}`;
  setState(c, j.state);
  const p = j.progress || {};
  if (p.episodes) $("job-episode").textContent = `${p.episodes_done || 0}/${p.episodes}`;
  if (typeof p.best_reward === "number" && c.best === null) $("job-best").textContent = p.best_reward.toFixed(4);
  setStage(c, LIVE.includes(j.state) ? p.stage : null, p.step, p.steps);
  renderResult(j.result || {});
  const files = (j.result || {}).files || [];
  $("files").innerHTML = files.map((f) => `<li><a href="${esc(f.url)}" target="_blank">` +
    `${esc(f.name)}</a> <span class="hint">${(f.bytes / 1e6).toFixed(3)} MB</span></li>`).join("");
}
function setState(c, state) {
  c.state = state;
  $("job-state").textContent = state; $("job-state").className = `state-${state}`;
  $("cancel").hidden = !LIVE.includes(state); $("resume").hidden = !STOPPED.includes(state);
  if (!LIVE.includes(state)) setStage(c, null);
}
function setStage(c, stage, step, steps, message) {
  if (stage !== undefined) c.stage = stage;
  const bar = $("stage-progress");
  if (!c.stage) {
    $("job-stage").textContent = c.state === "finished" ? "all stages done" : "";
    $("job-stage-message").textContent = ""; bar.hidden = true; return;
  }
  $("job-stage").textContent = `stage: ${STAGES[c.stage] || c.stage}` + (steps ? ` ${step || 0}/${steps}` : "");
  bar.hidden = !steps; bar.max = steps || 1; bar.value = step || 0;
  if (message) $("job-stage-message").textContent = message;
}
function renderResult(result) {
  const acc = result.accuracy || {};
  const rows = result.rows || [["test accuracy, dense", pct(acc.dense)],
    ["test accuracy, pruned (no fine-tune)", pct(acc.pruned)],
    ["test accuracy, fine-tuned", pct(acc.finetuned)]].filter((r) => r[1]);
  document.querySelector("#result tbody").innerHTML = rows.map(
    ([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("");
}
function onEvent(c, kind, e) {
  if (kind === "job") {
    setState(c, e.state);
    if (!LIVE.includes(e.state)) loadJob(c);
    return;
  }
  if (e.kind === "episode") {
    c.rewards[e.episode - 1] = e.reward;
    $("job-episode").textContent = `${e.episode}/${e.episodes}`;
    $("job-best").textContent = e.best_reward.toFixed(4);
    if (e.best_episode === e.episode) { c.best = {episode: e.episode, reward: e.reward}; c.sparsities = e.sparsities; }
    setStage(c, "search", e.episode, e.episodes);
    drawSoon(c);
  } else if (e.kind === "stage") {
    setStage(c, e.stage, 0, e.steps, e.message);
    if (e.accuracy) renderResult({accuracy: e.accuracy});
  } else if (["selection_step", "finetune_epoch", "pretrain_epoch"].includes(e.kind)) {
    setStage(c, undefined, e.step ?? e.epoch, e.steps ?? e.epochs);
  }
}
async function follow(c) {
  // the job's server-sent events, read with fetch so that they carry the bearer header
  const control = c.control = new AbortController();
  const h = Object.assign({}, headers);
  if (c.lastId) h["Last-Event-ID"] = String(c.lastId);
  try {
    const r = await fetch(jobUrl(c.id, "/events"), {headers: h, signal: control.signal});
    if (!r.ok) { say((await r.json()).detail); return; }
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        let kind = "message", data = "", id = null;
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
          else if (line.startsWith("id: ")) id = Number(line.slice(4));
        }
        if (data && c === current) onEvent(c, kind, JSON.parse(data));
        if (id !== null) c.lastId = id;
      }
    }
  } catch (e) {
    if (e.name === "AbortError") return;
  }
  if (c === current) afterStream(c);
}
async function afterStream(c) {
  // the stream ends when the job stops: a cancelled or interrupted job may be resumed (here
  // or elsewhere), so keep looking and follow it again from where the stream left off
  await loadJob(c);
  if (c !== current || ["finished", "failed"].includes(c.state)) return;
  c.timer = setTimeout(() => { if (c === current) (LIVE.includes(c.state) ? follow(c) : afterStream(c)); },
                       LIVE.includes(c.state) ? 200 : 1500);
}
function drawSoon(c) {
  if (c.drawTimer) return;
  c.drawTimer = setTimeout(() => { c.drawTimer = null; if (c === current) { drawCurve(c); drawBars(c); } }, 250);
}
function drawCurve(c) {
  const x = [], y = [], best = []; let top = -Infinity;
  c.rewards.forEach((r, i) => { if (r === undefined) return; x.push(i + 1); y.push(r); top = Math.max(top, r); best.push(top); });
  const traces = [
    {x, y, mode: "lines", name: "reward", line: {color: "#9a9a9a", width: 1},
     hovertemplate: "episode %{x}<br>reward %{y:.4f}<extra></extra>"},
    {x, y: best, mode: "lines", name: "best so far", line: {color: "#0969da", width: 2},
     hovertemplate: "episode %{x}<br>best %{y:.4f}<extra></extra>"}];
  if (c.best) traces.push({x: [c.best.episode], y: [c.best.reward], mode: "markers",
    name: `best episode (${c.best.episode})`, marker: {size: 11, color: "#d1242f", symbol: "star"},
    hovertemplate: "best episode %{x}<br>reward %{y:.4f}<extra></extra>"});
  const warm = c.warmup && x.length ? [{type: "rect", xref: "x", yref: "paper", x0: 0.5,
    x1: Math.min(c.warmup, x[x.length - 1]) + 0.5, y0: 0, y1: 1, fillcolor: "#eeeeee",
    line: {width: 0}, layer: "below"}] : [];
  const note = warm.length ? [{x: 1, y: 1, xref: "x", yref: "paper", xanchor: "left",
    yanchor: "bottom", text: `warm-up: ${c.warmup} random episodes`, showarrow: false}] : [];
  Plotly.react("curve", traces, {xaxis: {title: {text: "episode"}}, yaxis: {title: {text: "reward"}},
    shapes: warm, annotations: note, margin: {t: 28, r: 10, b: 45, l: 60},
    legend: {orientation: "h", x: 1, xanchor: "right", y: 1.12}}, PLOT);
}
function drawBars(c) {
  const names = Object.keys(c.sparsities || {});
  const what = c.granularity === "channel" ? "channels removed" : "weights pruned";
  $("bars-title").textContent = c.granularity === "channel"
    ? "Channels removed per group, best episode" : "Per-layer sparsity of the best episode";
  Plotly.react("bars", [{type: "bar", x: names, y: names.map((n) => c.sparsities[n]),
    marker: {color: "#0969da"}, name: what,
    hovertemplate: `%{x}<br>${what} %{y:.1%}<extra></extra>`}],
    {xaxis: {title: {text: c.granularity === "channel" ? "channel group" : "layer"}, type: "category"},
     yaxis: {title: {text: what}, tickformat: ".0%", range: [0, 1]},
     margin: {t: 10, r: 10, b: 60, l: 60}}, PLOT);
}
for (const act of ["cancel", "resume"]) {
  $(act).addEventListener("click", async () => {
    const c = current; if (!c) return;
    try {
      await api(jobUrl(c.id, `/${act}`), {method: "POST"}); say("");
      if (act === "resume") { clearTimeout(c.timer); setState(c, "queued"); c.timer = setTimeout(() => follow(c), 200); }
    } catch (e) { say(e.message); }
  });
}
$("policy").addEventListener("click", async () => {
  if (!current) return;
  const r = await fetch(jobUrl(current.id, "/policy"), {headers});
  if (!r.ok) { say((await r.json()).detail); return; }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([await r.text()], {type: "application/json"}));
  a.download = `${current.id}-policy.json`; a.click();
});

// -- a comparison ------------------------------------------------------------------------
async function openCompare(ids) {
  show("compare");
  const c = current = {ids};
  $("compare-ids").textContent = ids.join(", ");
  try {
    const jobs = await Promise.all(ids.map((id) => api(jobUrl(id))));
    const curves = await Promise.all(ids.map((id) => api(jobUrl(id, "/episodes"))));
    if (c !== current) return;
    Plotly.react("compare-curve", curves.map((h, i) => {
      let top = -Infinity;
      const cfg = jobs[i].config || {};
      return {x: h.episode, y: h.reward.map((r) => (top = Math.max(top, r))), mode: "lines",
              name: `${ids[i]} (${cfg.model}, target ${cfg.target})`,
              hovertemplate: `${esc(ids[i])}<br>episode %{x}<br>best %{y:.4f}<extra></extra>`};
    }), {xaxis: {title: {text: "episode"}}, yaxis: {title: {text: "best reward so far"}},
         margin: {t: 10, r: 10, b: 45, l: 60}, legend: {orientation: "h", y: -0.25}}, PLOT);
    compareTable(jobs);
  } catch (e) { say(e.message); }
}
function compareTable(jobs) {
  const keys = [], values = jobs.map(() => ({}));
  const add = (k, i, v) => { if (!keys.includes(k)) keys.push(k); values[i][k] = v; };
  jobs.forEach((j, i) => {
    const cfg = j.config || {};
    add("state", i, j.state); add("model", i, cfg.model); add("dataset", i, cfg.dataset);
    add("granularity", i, cfg.granularity || "weight"); add("target", i, cfg.target);
    add("episodes", i, cfg.episodes); add("duration", i, duration(j));
    for (const [k, v] of ((j.result || {}).rows || [])) add(k, i, v);
  });
  document.querySelector("#compare-table thead").innerHTML = "<tr><th></th>" +
    jobs.map((j) => `<th><a href="#job=${esc(j.id)}">${esc(j.id)}</a></th>`).join("") + "</tr>";
  document.querySelector("#compare-table tbody").innerHTML = keys.map((k) => `<tr><td>${esc(k)}</td>` +
    values.map((v) => `<td>${esc(v[k])}</td>`).join("") + "</tr>").join("");
}

// -- where the address points --------------------------------------------------------------
function route() {
  stopFollowing(); say("");
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith("job=")) openJob(hash.slice(4));
  else if (hash.startsWith("compare=")) openCompare(hash.slice(8).split(",").filter(Boolean));
  else { show("list"); refresh(); }
}
window.addEventListener("hashchange", route);
setInterval(refresh, 1500);
route();

"""The service's web page: one HTML document with a small script, no build step.

The job table refreshes every second; a job's page draws its reward curve and the best
episode's per-layer sparsities from the job's server-sent events as they arrive, and has
the buttons to cancel, resume and download the policy. The server writes the token into the
page it serves to a browser holding the page's session cookie (`guard`); the page sends it as
the bearer header on every API call, the event stream included (read with fetch, since an
EventSource cannot send headers).
"""

import json

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rlprune</title>
<style>
 body{font:14px system-ui,sans-serif;margin:24px;color:#222}
 table{border-collapse:collapse;margin:8px 0}
 td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
 th{background:#f4f4f4} .num{text-align:right}
 button{margin-right:4px} form label{margin-right:10px}
 #curve,#bars{border:1px solid #ccc;background:#fff}
 .state-finished{color:#1a7f37} .state-failed{color:#c0392b} .state-running{color:#0969da}
 .hidden{display:none} #message{color:#c0392b}
</style></head><body>
<h1>rlprune</h1>
<p id="message"></p>
<section id="list">
<form id="submit">
 <label>model <input name="model" value="vgg-mini" size="14"></label>
 <label>dataset <input name="dataset" value="mnist5k" size="10"></label>
 <label>granularity <select name="granularity"><option>weight</option>
   <option>channel</option></select></label>
 <label>FC rule <select name="fc_rule"><option>3sigma</option><option>agent</option>
   <option>none</option></select></label>
 <label>target <input name="target" value="0.9" size="5"></label>
 <label>episodes <input name="episodes" value="400" size="5"></label>
 <label>warm-up <input name="warmup" value="100" size="5"></label>
 <label>fine-tune epochs <input name="finetune_epochs" value="3" size="3"></label>
 <button type="submit" id="submit-button">Submit search</button>
</form>
<table id="jobs"><thead><tr><th>job</th><th>kind</th><th>state</th><th class="num">episodes</th>
<th class="num">best reward</th><th class="num">sparsity</th><th></th></tr></thead>
<tbody></tbody></table>
</section>
<section id="job" class="hidden">
<p><a href="#" id="back">all jobs</a></p>
<h2 id="job-title"></h2>
<p>state <b id="job-state"></b>, episode <span id="job-episode">0</span>,
 best reward <span id="job-best">-</span></p>
<p><button id="cancel">Cancel</button><button id="resume">Resume</button>
 <button id="policy">Download policy</button></p>
<h3>Reward per episode</h3><svg id="curve" width="640" height="220"></svg>
<h3>Per-layer sparsity of the best episode</h3><svg id="bars" width="640" height="220"></svg>
</section>
<script>
const token = __TOKEN__;
const headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"};
const $ = (id) => document.getElementById(id);
function say(text) { $("message").textContent = text || ""; }
async function api(path, options) {
  const r = await fetch(path, Object.assign({headers}, options || {}));
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}
function fmt(x, digits) { return x === null || x === undefined ? "" : x.toFixed(digits); }
async function refresh() {
  if (location.hash.startsWith("#job=")) return;
  try {
    const jobs = await api("/v1/jobs");
    const rows = jobs.map((j) => {
      const p = j.progress || {};
      const eps = p.episodes ? `${p.episodes_done || 0}/${p.episodes}` : (p.method || "");
      return `<tr data-id="${j.id}"><td><a href="#job=${j.id}">${j.id}</a></td>` +
        `<td>${j.kind}</td><td class="state state-${j.state}">${j.state}</td>` +
        `<td class="num">${eps}</td><td class="num">${fmt(p.best_reward, 4)}</td>` +
        `<td class="num">${fmt(p.achieved_sparsity, 4)}</td><td>` +
        `<button data-act="cancel" data-id="${j.id}">cancel</button>` +
        `<button data-act="resume" data-id="${j.id}">resume</button></td></tr>`;
    });
    document.querySelector("#jobs tbody").innerHTML = rows.join("");
  } catch (e) { say(e.message); }
}
$("jobs").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button"); if (!b) return;
  try { await api(`/v1/jobs/${b.dataset.id}/${b.dataset.act}`, {method: "POST"}); say(""); }
  catch (e) { say(e.message); }
  refresh();
});
$("submit").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target), config = {};
  for (const [k, v] of f.entries()) {
    config[k] = ["model", "dataset", "granularity", "fc_rule"].includes(k) ? v : Number(v);
  }
  try {
    const body = JSON.stringify({kind: "search", config});
    const j = await api("/v1/jobs", {method: "POST", body});
    say(`submitted ${j.id}`); refresh();
  }
  catch (e) { say(e.message); }
});
let source = null;
function drawCurve(rewards) {
  const svg = $("curve"), w = 640, h = 220;
  if (!rewards.length) { svg.innerHTML = ""; return; }
  const lo = Math.min(...rewards), hi = Math.max(...rewards), span = (hi - lo) || 1;
  const x = (i) => 10 + (w - 20) * (rewards.length > 1 ? i / (rewards.length - 1) : 0.5);
  const y = (r) => h - 10 - (h - 20) * (r - lo) / span;
  let best = -Infinity;
  const pts = rewards.map((r, i) => `${x(i)},${y(r)}`).join(" ");
  const bestPts = rewards.map((r, i) => {
    best = Math.max(best, r); return `${x(i)},${y(best)}`;
  }).join(" ");
  svg.innerHTML = `<polyline id="reward-line" fill="none" stroke="#999" points="${pts}"/>` +
    `<polyline fill="none" stroke="#0969da" stroke-width="2" points="${bestPts}"/>`;
}
function drawBars(sparsities) {
  const svg = $("bars"), names = Object.keys(sparsities || {}), w = 640, h = 220;
  const bw = (w - 20) / Math.max(1, names.length);
  svg.innerHTML = names.map((n, i) => {
    const s = sparsities[n], bh = (h - 40) * s;
    return `<rect class="bar" x="${10 + i * bw}" y="${h - 30 - bh}" width="${bw * 0.8}" ` +
      `height="${bh}" fill="#0969da"><title>${n}: ${(100 * s).toFixed(1)}%</title></rect>` +
      `<text x="${10 + i * bw}" y="${h - 15}" font-size="9">${n.slice(-10)}</text>`;
  }).join("");
}
function openJob(id) {
  $("list").classList.add("hidden"); $("job").classList.remove("hidden");
  $("job-title").textContent = id; $("job").dataset.id = id;
  const rewards = []; let best = -Infinity;
  drawCurve(rewards); drawBars({});
  follow(id, (kind, e) => {
    if (kind === "run" && e.kind === "episode") {
      rewards.push(e.reward); $("job-episode").textContent = `${e.episode}/${e.episodes}`;
      $("job-best").textContent = e.best_reward.toFixed(4);
      if (e.reward >= best) { best = e.reward; drawBars(e.sparsities); }
      drawCurve(rewards);
    } else if (kind === "run" && e.kind === "state") { $("job-state").textContent = e.state; }
    else if (kind === "job") { $("job-state").textContent = e.state; }
  });
}
async function follow(id, onEvent) {
  // the job's server-sent events, read with fetch so that they carry the bearer header
  if (source) source.abort();
  const control = new AbortController(); source = control;
  try {
    const r = await fetch(`/v1/jobs/${id}/events`, {headers, signal: control.signal});
    if (!r.ok) { say((await r.json()).detail); return; }
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        let kind = "message", data = "";
        for (const line of block.split("\\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(kind, JSON.parse(data));
      }
    }
  } catch (e) { if (e.name !== "AbortError") say(e.message); }
}
function route() {
  if (location.hash.startsWith("#job=")) { openJob(location.hash.slice(5)); }
  else { if (source) source.abort(); $("job").classList.add("hidden");
         $("list").classList.remove("hidden"); refresh(); }
}
$("back").addEventListener("click", (ev) => { ev.preventDefault(); location.hash = ""; });
for (const act of ["cancel", "resume"]) {
  $(act).addEventListener("click", async () => {
    try { await api(`/v1/jobs/${$("job").dataset.id}/${act}`, {method: "POST"}); say(""); }
    catch (e) { say(e.message); }
  });
}
$("policy").addEventListener("click", async () => {
  const r = await fetch(`/v1/jobs/${$("job").dataset.id}/policy`, {headers});
  if (!r.ok) { say((await r.json()).detail); return; }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([await r.text()], {type: "application/json"}));
  a.download = `${$("job").dataset.id}-policy.json`; a.click();
});
window.addEventListener("hashchange", route);
setInterval(refresh, 1000);
route();
</script></body></html>
"""


def page_html(token: str) -> str:
    """The page, with the token its API calls carry."""
    return PAGE.replace("__TOKEN__", json.dumps(token))

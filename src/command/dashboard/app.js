// The dashboard page: reads /api/status every 2 s and draws it. Everything the share says
// goes into the page as text (textContent), never as markup.
"use strict";

const REFRESH_MS = 2000;
const COLORS = ["#2563eb", "#15803d", "#b45309", "#9333ea", "#0891b2", "#be123c", "#4d7c0f", "#c2410c"];
const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function duration(secs) {
  if (secs === null || secs === undefined || !isFinite(secs)) return "-";
  secs = Math.round(secs);
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m" + String(secs % 60).padStart(2, "0") + "s";
  if (secs < 86400) return Math.floor(secs / 3600) + "h" + String(Math.floor(secs % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(secs / 86400) + "d" + String(Math.floor(secs % 86400 / 3600)).padStart(2, "0") + "h";
}

function stateWord(state) {
  return { working: "working", idle: "idle", stopped: "stopped", gone_quiet: "gone quiet" }[state] || "history only";
}

// ---- the token, for the controls ---------------------------------------------------------
function token() {
  const match = location.hash.match(/token=([0-9a-f]+)/);
  if (match) {
    sessionStorage.setItem("token", match[1]);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("token") || $("token").value.trim();
}

async function control(action, path) {
  $("message").textContent = "…";
  try {
    const response = await fetch("/api/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Token": token() },
      body: JSON.stringify({ path: path || "" }),
    });
    const text = await response.text();
    let message = text;
    try { message = JSON.parse(text).message; } catch (_) { /* plain text */ }
    $("message").textContent = (response.ok ? "" : "refused: ") + message;
    if (response.status === 403 && /token/.test(text)) {
      sessionStorage.removeItem("token");
      $("token-box").hidden = false;
    }
  } catch (err) {
    $("message").textContent = "could not reach the dashboard: " + err;
  }
  refresh();
}

// ---- drawing -------------------------------------------------------------------------------
function drawTotals(data) {
  const t = data.totals;
  const cards = [];
  const card = (label, value, detail) => cards.push(el("div", { class: "card" }, el("b", {}, value), label, detail ? el("div", { class: "muted" }, detail) : null));
  if (!t) {
    card("library", "reading…");
  } else {
    card("saved so far", bytes(t.saved_bytes), t.converted + " files converted");
    card("candidates left", String(t.candidates.files), bytes(t.candidates.bytes));
    card("estimated saving left", bytes(t.estimated_saving_bytes));
    const live = data.hosts.some((h) => h.state === "working" || h.state === "idle");
    card("done at this pace in", duration(data.eta_secs), data.pace_bytes_per_sec
      ? bytes(data.pace_bytes_per_sec) + "/s of originals"
      : live ? "pace known after the running hosts finish a file" : "no host running");
    card("media files", String(t.files.files), bytes(t.files.bytes));
    card("failed", String(t.failed.files), t.failed_out.files + " given up");
    card("kept: not smaller", String(t.not_smaller.files));
    // The words of `status` and `cache stats` (output::unsurveyed_line).
    if (t.unknown.files > 0) {
      card("not surveyed by ffprobe yet", String(t.unknown.files),
        bytes(t.unknown.bytes) + ", counted as neither candidates nor skips; `cache build` surveys them");
    }
  }
  $("totals").replaceChildren(...cards);
}

function drawHosts(data) {
  const rows = data.hosts.map((h) => {
    const p = h.presence;
    const doing = p && p.jobs.length
      ? p.jobs.map((j) => j.file + " " + (j.percent !== null ? j.percent.toFixed(1) + "%" : j.phase)).join(", ")
      : (p && p.problem) || "";
    const machine = p ? [p.os, "v" + p.version, p.encoders.join(" "), p.gpus.join(", ")].filter(Boolean).join(" · ") : "";
    const seen = !p ? (h.last_converted_at || "")
      : p.unchanged_clock === "watched_from_start" ? "over " + duration(p.unchanged_secs) + " ago"
      : p.unchanged_secs !== null ? duration(p.unchanged_secs) + " ago"
      : p.seen_at + " (its clock)";
    const state = h.state || "history";
    return el("tr", { "data-host": h.host },
      el("td", {}, h.host),
      el("td", { class: "state " + state, "data-state": state }, stateWord(h.state)),
      el("td", { class: "file" }, doing),
      el("td", { class: "num" }, String(h.converted) + (p ? " (" + p.run_converted + " this run)" : "")),
      el("td", { class: "num" }, bytes(h.saved_bytes)),
      el("td", { class: "muted" }, machine),
      el("td", { class: "muted" }, seen));
  });
  $("hosts").tBodies[0].replaceChildren(...rows);
}

function drawJobs(data) {
  if (!data.in_progress.length) {
    $("jobs").replaceChildren(el("p", { class: "muted" }, "No host is converting a file."));
    return;
  }
  $("jobs").replaceChildren(...data.in_progress.map((j) => {
    const percent = j.percent === null ? 0 : j.percent;
    const bar = el("div", { class: "bar" }, el("div", {}));
    bar.firstChild.style.width = Math.max(0, Math.min(100, percent)) + "%";
    const facts = [j.host, j.phase, j.percent === null ? null : percent.toFixed(1) + "%",
      j.fps ? j.fps.toFixed(0) + " fps" : null, j.eta_secs ? "ETA " + duration(j.eta_secs) : null];
    return el("div", { class: "job", "data-file": j.file, "data-host": j.host, "data-percent": String(percent) },
      el("div", { class: "file" }, j.file), bar, el("div", { class: "muted" }, facts.filter(Boolean).join(" · ")));
  }));
}

function drawChart(data) {
  const history = data.history;
  if (!history.length) {
    $("chart").replaceChildren(el("p", { class: "muted" }, "Nothing converted yet."));
    $("legend").replaceChildren();
    return;
  }
  const days = [...new Set(history.map((d) => d.day))].sort();
  // The day before the first, at zero, so that even one day draws a rise.
  const first = new Date(days[0] + "T00:00:00Z");
  if (!isNaN(first)) days.unshift(new Date(first - 86400000).toISOString().slice(0, 10));
  const hosts = [...new Set(history.map((d) => d.host))].sort();
  const perHost = hosts.map((host) => {
    let sum = 0;
    return days.map((day) => {
      for (const d of history) if (d.day === day && d.host === host) sum += d.saved_bytes;
      return sum;
    });
  });
  const total = days.map((_, i) => perHost.reduce((s, series) => s + series[i], 0));
  const W = 640, H = 220, L = 64, B = 24, T = 10, R = 10;
  const max = Math.max(1, ...total);
  const x = (i) => L + (days.length === 1 ? (W - L - R) / 2 : i * (W - L - R) / (days.length - 1));
  const y = (v) => H - B - v / max * (H - B - T);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "space saved over time, by host");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  for (const f of [0, 0.5, 1]) {
    add("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), stroke: "currentColor", "stroke-opacity": 0.15 });
    add("text", { x: L - 6, y: y(max * f) + 4, "text-anchor": "end", "font-size": 11, fill: "currentColor" }, bytes(max * f));
  }
  add("text", { x: L, y: H - 6, "font-size": 11, fill: "currentColor" }, days[0]);
  if (days.length > 1) add("text", { x: W - R, y: H - 6, "text-anchor": "end", "font-size": 11, fill: "currentColor" }, days[days.length - 1]);
  const line = (series, color, width) => {
    const points = series.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    add("polyline", { points, fill: "none", stroke: color, "stroke-width": width });
    series.forEach((v, i) => add("circle", { cx: x(i), cy: y(v), r: 2.5, fill: color }));
  };
  if (hosts.length > 1) line(total, "currentColor", 2.5);
  perHost.forEach((series, i) => line(series, COLORS[i % COLORS.length], 2));
  svg.style.color = getComputedStyle(document.body).color;
  $("chart").replaceChildren(svg);
  const legend = hosts.map((host, i) => el("span", {}, el("i", {}), host + ": " + bytes(perHost[i][days.length - 1])));
  legend.forEach((node, i) => { node.firstChild.style.background = COLORS[i % COLORS.length]; });
  if (hosts.length > 1) legend.unshift(el("span", {}, el("b", {}, "all: " + bytes(total[days.length - 1]))));
  $("legend").replaceChildren(...legend);
}

function drawLists(data) {
  const t = data.totals;
  $("failures-count").textContent = t ? "(" + t.failed.files + ")" : "";
  $("kept-count").textContent = t ? "(" + t.not_smaller.files + ")" : "";
  $("failures").tBodies[0].replaceChildren(...data.failures.map((f) => el("tr", { "data-file": f.file },
    el("td", { class: "file" }, f.file),
    el("td", {}, f.error),
    el("td", { class: "num" }, String(f.attempts) + (f.given_up ? " (given up)" : "")),
    el("td", {}, f.host),
    el("td", {}, data.control ? el("button", { type: "button", className: "retry", onclick: () => control("retry", f.file) }, "Retry") : ""))));
  $("kept").tBodies[0].replaceChildren(...data.not_smaller.map((k) => el("tr", {},
    el("td", { class: "file" }, k.file), el("td", {}, k.detail), el("td", {}, k.host))));
  $("priority-section").hidden = !data.priority.length;
  $("priority").replaceChildren(...data.priority.map((p) => el("li", {}, p + " ",
    data.control ? el("button", { type: "button", onclick: () => control("unpriority", p) }, "Remove") : "")));
}

function draw(data) {
  $("library").textContent = data.library;
  const read = data.library_read_secs === null ? "reading the library…"
    : "library read in " + data.library_read_secs.toFixed(2) + " s, " + duration(data.library_read_ago_secs) + " ago";
  $("state").textContent = read;
  const paused = $("paused");
  paused.hidden = !data.paused;
  if (data.paused) {
    paused.textContent = "Paused by " + data.paused.host + " since " + data.paused.since
      + (data.paused.reason ? " (" + data.paused.reason + ")" : "") + ": no host starts a new file.";
  }
  $("controls").hidden = !data.control;
  if (data.control) {
    $("pause").hidden = !!data.paused;
    $("resume").hidden = !data.paused;
    $("token-box").hidden = !!token();
  }
  drawTotals(data);
  drawHosts(data);
  drawJobs(data);
  drawChart(data);
  drawLists(data);
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    draw(await response.json());
  } catch (err) {
    $("state").textContent = "the dashboard does not answer: " + err;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

$("pause").addEventListener("click", () => control("pause"));
$("resume").addEventListener("click", () => control("resume"));
$("front").addEventListener("submit", (event) => {
  event.preventDefault();
  control("priority", $("front-path").value.trim());
});
token();
refresh();

// rgrid console: the live parts (server-sent events) and confirmations.
// Whatever a job printed is added as text (textContent), never as HTML;
// rows come from the server already escaped.
"use strict";

function paused(source, why) {
  source.close();
  const note = document.getElementById("live-note");
  if (note) { note.textContent = why; note.hidden = false; }
}

function stopsWhenTold(source) {
  source.addEventListener("busy", (message) => paused(source,
    "Live updates paused: " + JSON.parse(message.data) + ". Close another console tab and reload."));
  source.addEventListener("logged-out", () => paused(source,
    "Live updates stopped: this session ended. Log in again to continue."));
}

function followLog(pre) {
  const maxLines = Number(pre.dataset.lines) || 1000;
  const source = new EventSource(pre.dataset.events);
  let lines = pre.textContent.split("\n").length;
  source.addEventListener("log", (message) => {
    const chunk = JSON.parse(message.data);
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const span = document.createElement("span");
    span.className = chunk.stream === "stderr" ? "stderr" : "stdout";
    span.textContent = chunk.data;
    pre.appendChild(span);
    lines += chunk.data.split("\n").length - 1;
    while (lines > maxLines && pre.firstChild) {
      lines -= (pre.firstChild.textContent.split("\n").length - 1) || 1;
      pre.removeChild(pre.firstChild);
    }
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("status", (message) => {
    const badge = document.getElementById("status");
    const status = JSON.parse(message.data);
    if (badge) { badge.textContent = status; badge.className = "badge " + status; }
  });
  source.addEventListener("end", () => {
    source.close();
    // The page shows outputs, cost and the buttons for an ended run.
    window.location.reload();
  });
  stopsWhenTold(source);
}

function followRows(table) {
  const source = new EventSource(table.dataset.live);
  source.addEventListener("row", (message) => {
    const row = JSON.parse(message.data);
    const old = document.getElementById("row-" + row.id);
    if (!old) return;
    const template = document.createElement("template");
    template.innerHTML = row.html.trim();
    old.replaceWith(template.content.firstElementChild);
  });
  source.addEventListener("end", () => source.close());
  stopsWhenTold(source);
}

function followBatch(section) {
  const source = new EventSource(section.dataset.events);
  source.addEventListener("progress", (message) => {
    const p = JSON.parse(message.data);
    document.getElementById("progress-bar").value = p.ended;
    document.getElementById("progress-ended").textContent = p.ended;
    const eta = document.getElementById("progress-eta");
    if (eta) eta.textContent = p.eta_s === null ? "—" : formatSeconds(p.eta_s);
    for (const cell of section.querySelectorAll("[id^=count-]")) {
      cell.textContent = p.counts[cell.id.slice(6)] || 0;
    }
  });
  source.addEventListener("end", () => { source.close(); window.location.reload(); });
  stopsWhenTold(source);
}

function formatSeconds(s) {
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

document.addEventListener("DOMContentLoaded", () => {
  const log = document.getElementById("log");
  if (log && log.dataset.events && !log.dataset.final) followLog(log);
  if (log) log.scrollTop = log.scrollHeight;
  const table = document.getElementById("runs");
  if (table && table.dataset.live) followRows(table);
  const progress = document.getElementById("progress");
  if (progress && progress.dataset.events) followBatch(progress);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});

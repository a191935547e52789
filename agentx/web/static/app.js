// agentx's own script (no libraries): sortable tables, the live run status, chat with live progress.
"use strict";
const csrf = () => document.querySelector('meta[name="csrf"]').content;

async function post(url, body) {
  const response = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json",
    "X-CSRF-Token": csrf()}, body: JSON.stringify(body), credentials: "same-origin"});
  const data = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(data.error || data.detail || response.statusText);
  return data;
}

// -- sortable tables: a click on a header sorts in the page (the link sorts on the server without JS)
function sortable(table) {
  table.querySelectorAll("th a[data-key]").forEach((link, column) => {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const body = table.tBodies[0];
      const rows = Array.from(body.rows).filter((row) => row.cells.length > column);
      const asc = table.dataset.sorted !== String(column) || table.dataset.dir === "desc";
      const value = (row) => {
        const cell = row.cells[column];
        const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
        const number = parseFloat(raw);
        return raw === "" ? null : (isNaN(number) || /[a-z]/i.test(raw) && !/^[-+]?\d/.test(raw) ? raw : number);
      };
      rows.sort((a, b) => {
        const x = value(a), y = value(b);
        if (x === null) return 1;
        if (y === null) return -1;
        const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return asc ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
      table.dataset.sorted = String(column);
      table.dataset.dir = asc ? "asc" : "desc";
    });
  });
}

// -- the run in progress, the queue and the recent requests, refreshed every 2 s
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

function renderRequests(status) {
  const queue = document.querySelector("#queue tbody");
  if (queue) queue.innerHTML = status.queued.map((q) => `<tr><td>${q.id}</td><td>${esc(q.summary)}</td>` +
    `<td>${esc(q.source)}</td><td><form method="post" action="/requests/${q.id}/cancel"><input type="hidden" ` +
    `name="csrf" value="${esc(csrf())}"><button>cancel</button></form></td></tr>`).join("") ||
    '<tr><td colspan="4" class="muted">empty</td></tr>';
  const recent = document.querySelector("#recent tbody");
  if (recent) recent.innerHTML = status.recent.map((q) => `<tr><td>${q.id}</td><td>${esc(q.summary)}</td>` +
    `<td>${esc(q.source)}</td><td>${esc(q.status)}</td><td>${esc(q.elapsed_s ?? "-")}</td>` +
    `<td class="error">${esc(q.error || "")}</td></tr>`).join("");
}

function pollRun(box) {
  const render = (status) => {
    renderRequests(status);
    const r = status.running;
    if (!r) { box.innerHTML = '<p class="muted">Nothing is running.</p>'; return; }
    const kernels = r.kernels.map((k) => `<tr><td>${esc(k.id)}</td><td>${esc(k.experiment_id || "-")}</td>` +
      `<td>${esc(k.arm)}</td><td>${esc(k.tier)}</td><td>${esc(k.seed)}</td><td>${esc(k.sandbox)}</td>` +
      `<td>${esc(k.elapsed_s)}</td></tr>`).join("") || '<tr><td colspan="7" class="muted">no kernel running right now</td></tr>';
    box.innerHTML = `<p><b>request ${r.id}</b> ${esc(r.summary)} <span class="muted">(${esc(r.source)}, ${esc(r.elapsed_s)} s)</span></p>` +
      `<p>stage: <span class="stage">${esc(r.stage)}</span></p><table><tr><th>kernel (run)</th><th>experiment</th><th>arm</th>` +
      `<th>tier</th><th>seed</th><th>sandbox</th><th>elapsed s</th></tr>${kernels}</table>` +
      `<pre class="log">${esc(r.lines.join("\n"))}</pre>`;
  };
  const tick = () => fetch(box.dataset.poll, {credentials: "same-origin"}).then((r) => r.json()).then(render).catch(() => {});
  setInterval(tick, 2000);
}

// -- chat
function chat() {
  const log = document.getElementById("chat");
  const conversation = log.dataset.conversation;
  const progress = document.getElementById("chat-progress");
  const outcome = document.getElementById("chat-outcome");
  const add = (m) => {
    const div = document.createElement("div");
    div.className = `msg ${m.role} ${m.kind}`;
    div.dataset.id = m.id;
    div.innerHTML = `<span class="who">${m.role}</span> `;
    div.appendChild(document.createTextNode(m.text));
    if (m.kind === "proposal") {
      const button = document.createElement("button");
      button.textContent = "run this experiment";
      button.className = "confirm";
      button.dataset.id = m.id;
      confirmable(button);
      div.appendChild(document.createTextNode(" "));
      div.appendChild(button);
    }
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
  };
  const confirmable = (button) => button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const reply = await post(`/api/chat/${button.dataset.id}/confirm`, {conversation,
        tier: document.getElementById("chat-tier").value});
      add(reply);
      follow(reply.request_id);
    } catch (error) { add({role: "agentx", kind: "refusal", text: error.message, id: 0}); }
  });
  log.querySelectorAll("button.confirm").forEach(confirmable);
  const follow = (requestId) => {
    progress.hidden = false;
    progress.textContent = `request ${requestId}: waiting for the worker\n`;
    outcome.innerHTML = "";
    const source = new EventSource(`/api/requests/${requestId}/events`);
    source.addEventListener("progress", (event) => {
      const p = JSON.parse(event.data);
      progress.textContent += `${p.at.slice(11, 19)} ${p.line}\n`;
      progress.scrollTop = progress.scrollHeight;
    });
    source.addEventListener("done", (event) => {
      source.close();
      const done = JSON.parse(event.data);
      const div = document.createElement("div");
      div.className = "verdict";
      if (done.request.status === "failed") div.textContent = `request ${requestId} failed: ${done.request.error}`;
      done.experiments.forEach((e) => {
        const line = document.createElement("p");
        const signed = (v) => `${v >= 0 ? "+" : ""}${v.toFixed(4)}`;
        const effect = e.delta === null ? "" : ` effect ${signed(e.delta)} [${signed(e.ci_low)}, ${signed(e.ci_high)}]`;
        line.innerHTML = `<a href="/experiments/${e.id}">${e.id}</a> <b class="decision ${e.decision || e.status}">` +
          `${e.decision || e.status}</b>${effect}` + (e.pr ? ` · <a class="pr-link" href="/prs/${e.pr}">pull request #${e.pr}</a>` : "");
        div.appendChild(line);
      });
      outcome.appendChild(div);
    });
  };
  document.getElementById("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("chat-text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    add({role: "user", kind: "text", text, id: 0});
    try { add(await post("/api/chat", {text, conversation})); }
    catch (error) { add({role: "agentx", kind: "refusal", text: error.message, id: 0}); }
  });
  log.querySelectorAll("a.follow").forEach((a) => a.addEventListener("click", (e) => { e.preventDefault(); follow(a.dataset.request); }));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(sortable);
  const box = document.getElementById("run-status");
  if (box) pollRun(box);
  if (document.getElementById("chat")) chat();
});

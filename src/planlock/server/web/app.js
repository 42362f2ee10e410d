// planlock approval page: no build step, no external script. Every value from the server is
// inserted as text (never as HTML): plans and call arguments may carry untrusted strings.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { token: sessionStorage.getItem("planlock-token") || "", selected: null, stream: null, statuses: {} };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function say(text, error = false) {
  const m = $("message");
  m.textContent = text;
  m.className = "show" + (error ? " error" : "");
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { m.className = ""; }, 4000);
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const response = await fetch(path, { ...options, headers });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.detail || `${response.status} ${response.statusText}`);
  return body;
}

// -- signing in ---------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  try {
    const me = await api("/api/me");
    sessionStorage.setItem("planlock-token", token);
    $("whoami").textContent = `${me.name} (${me.roles.join(", ")})`;
    $("token").value = "";
    $("placeholder").textContent = "Pick a request or a run on the left.";
    await refresh();
  } catch (err) {
    sessionStorage.removeItem("planlock-token");
    state.token = "";
    $("whoami").textContent = "";
    say(`sign-in failed: ${err.message}`, true);
  }
}

$("login").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("planlock-token");
  location.reload();
});

// -- lists ----------------------------------------------------------------------------------

async function refresh() {
  if (!state.token) return;
  let pending = [];
  try { pending = await api("/api/approvals"); } catch { /* a submitter sees runs only */ }
  const list = $("pending");
  list.replaceChildren(...pending.map((a) => el("li",
    { "data-testid": "pending-item", "data-id": a.id, class: state.selected === a.id ? "selected" : "", onclick: () => showApproval(a.id) },
    el("span", { class: "goal" }, a.goal || a.run_id),
    el("span", { class: "meta" }, `${a.kind} · by ${a.submitted_by ?? "?"} · ${a.created_at.slice(0, 19).replace("T", " ")}`))));
  if (!pending.length) list.replaceChildren(el("li", { class: "empty" }, "nothing waiting"));
  $("pending-count").textContent = pending.length;
  const runs = await api("/api/runs?limit=20");
  $("runs").replaceChildren(...runs.map((r) => el("li", { "data-testid": "run-item", onclick: () => showRun(r.run_id) },
    el("span", { class: "goal" }, r.goal || r.run_id),
    el("span", { class: "meta" }, el("span", { class: `status ${r.status}` }, r.status), ` · ${r.run_id.slice(-8)}`))));
}

// -- the graph ------------------------------------------------------------------------------

const COLORS = { allow: "#2f855a", require_approval: "#b7791f", deny: "#c53030" };
const FILLS = { started: "#dbe8f8", finished: "#d7efdf", failed: "#f8d7d7", skipped: "#eceef1" };

function drawGraph(graph) {
  const W = 184, H = 48, GX = 56, GY = 16, PAD = 14;
  const byLevel = {};
  for (const n of graph.nodes) (byLevel[n.level] ||= []).push(n);
  const pos = {};
  let rows = 1;
  for (const [level, nodes] of Object.entries(byLevel)) {
    nodes.forEach((n, i) => { pos[n.id] = { x: PAD + level * (W + GX), y: PAD + i * (H + GY) }; });
    rows = Math.max(rows, nodes.length);
  }
  const levels = Object.keys(byLevel).length || 1;
  const width = PAD * 2 + levels * W + (levels - 1) * GX, height = PAD * 2 + rows * H + (rows - 1) * GY;
  // Scaled to the box's width (never above its natural size, never below half of it: a wider
  // graph scrolls, its scrollbars styled so they stay visible), so no step hides off to the side.
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "plan dependency graph", "data-testid": "graph" });
  root.style.maxWidth = `${width}px`;
  root.style.minWidth = `${Math.ceil(width / 2)}px`;
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#7a8394" }));
  defs.append(marker);
  root.append(defs);
  for (const e of graph.edges) {
    const a = pos[e.source], b = pos[e.target];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    root.append(svg("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, fill: "none", stroke: "#7a8394", "stroke-width": 1.4, "marker-end": "url(#arrow)", "data-edge": `${e.source}->${e.target}` }));
  }
  for (const n of graph.nodes) {
    const p = pos[n.id];
    const g = svg("g", { "data-node": n.id, transform: `translate(${p.x},${p.y})` });
    const status = state.statuses[n.id];
    g.append(svg("rect", { width: W, height: H, rx: 6, fill: FILLS[status] || "#fff", stroke: COLORS[n.action] || "#7a8394", "stroke-width": n.action === "allow" ? 1.4 : 2.6 }));
    const title = `${n.id} · ${n.tool}`;
    const note = status || { require_approval: "needs approval", deny: "denied" }[n.action] || "";
    g.append(svg("text", { x: 10, y: 19, "font-weight": 600 }, title.length > 25 ? title.slice(0, 24) + "…" : title));
    g.append(svg("text", { x: 10, y: 36, fill: "#6b7280" }, note ? `${n.effect} · ${note}` : n.effect));
    g.append(svg("title", {}, `step ${n.id}: ${n.tool} (${n.effect}, ${n.action})`));
    root.append(g);
  }
  return root;
}

// -- one approval request ---------------------------------------------------------------------

function tag(text, cls) { return el("span", { class: `tag ${cls}` }, text.replace("_", " ")); }

function stepsTable(detail) {
  const byStep = Object.fromEntries(detail.report.steps.map((s) => [s.step, s]));
  const node = Object.fromEntries(detail.graph.nodes.map((n) => [n.id, n]));
  const rows = detail.plan.steps.map((s) => {
    const risk = byStep[s.id];
    const n = node[s.id] || { effect: "?", action: "allow" };
    return el("tr", { "data-step": s.id },
      el("td", {}, s.id), el("td", {}, s.tool), el("td", {}, tag(n.effect, "effect")),
      el("td", {}, tag(n.action, n.action)),
      el("td", {}, el("code", {}, [...Object.entries(s.args).map(([k, v]) => `${k} = ${JSON.stringify(v)}`),
        ...(s.when ? [`only if ${JSON.stringify(s.when)}`] : [])].join("\n"))),
      el("td", {}, risk ? risk.reasons.map((r) => r.message).join("; ") : ""));
  });
  return el("table", { "data-testid": "steps" },
    el("thead", {}, el("tr", {}, ...["step", "tool", "effect", "policy", "arguments", "why"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function flowsTable(flows) {
  if (!flows.length) return el("p", { class: "empty", "data-testid": "flows" }, "No untrusted data reaches a sensitive parameter.");
  return el("table", { "data-testid": "flows" },
    el("thead", {}, el("tr", {}, ...["step", "tool", "parameter", "untrusted sources", "policy"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...flows.map((f) => el("tr", {}, el("td", {}, f.step), el("td", {}, f.tool), el("td", {}, f.param),
      el("td", {}, f.sources.join(", ")), el("td", {}, tag(f.action, f.action))))));
}

async function showApproval(id) {
  state.selected = id;
  state.statuses = {};
  stopStream();
  let d;
  try { d = await api(`/api/approvals/${encodeURIComponent(id)}`); } catch (err) { say(err.message, true); return; }
  const graphBox = el("div", { class: "graph", id: "graph-box" }, drawGraph(d.graph));
  const reason = el("textarea", { id: "reason", "data-testid": "reason", placeholder: "Reason (journaled; required to deny)" });
  const label = el("input", { id: "endorse-label", "data-testid": "endorse-label", placeholder: "What is this value? e.g. landlord", maxlength: "200" });
  const decide = (approve, endorse = false) => async () => {
    try {
      const body = { plan_hash: d.plan_hash, args_hash: d.args_hash, reason: reason.value };
      if (endorse) {
        if (!label.value.trim()) { say("an endorsement needs a label", true); return; }
        body.label = label.value.trim();
      }
      const verb = endorse ? "endorse" : approve ? "approve" : "deny";
      await api(`/api/approvals/${encodeURIComponent(id)}/${verb}`, { method: "POST", body: JSON.stringify(body) });
      say(`${endorse ? "approved and endorsed" : approve ? "approved" : "denied"}: run ${d.run_id.slice(-8)}`);
      for (const b of document.querySelectorAll(".decide button")) b.disabled = true;
      follow(d.run_id, d.graph);
      refresh();
    } catch (err) { say(err.message, true); }
  };
  const offers = d.kind === "call" ? (d.endorsable || []) : [];
  // A loop's calls come as one request: args = {calls: [{item, args}, ...]} (batch_request).
  const batch = d.kind === "call" && Array.isArray(d.args?.calls) && d.args.calls.every((c) => c && "item" in c);
  const call = d.kind === "call"
    ? [el("h4", {}, batch ? `The calls waiting: step ${d.step_id}, ${d.args.calls.length} items (one answer for all)` : `The call waiting: step ${d.step_id}`),
       el("code", { "data-testid": "call-args" }, JSON.stringify(d.args, null, 2)),
       el("p", { class: "facts" }, `arguments hash ${d.args_hash}`)]
    : [];
  if (offers.length) {
    call.push(el("h4", {}, "Endorse instead of approving each time"),
      el("ul", { class: "why", "data-testid": "endorsable" }, ...offers.map((o) => el("li", {},
        batch
          ? `${o.param}: a value of the calls above (hash ${o.value_hash.slice(0, 12)}…, from ${o.source}, to ${o.target})`
          : `${o.param} = ${JSON.stringify(d.args?.[o.param])} (from ${o.source}, to ${o.target})`))),
      el("p", { class: "facts" }, "Endorsing approves this call and lets the same value from the same source through without asking from now on."));
  }
  const pendingAttrs = d.status !== "pending" ? { disabled: "" } : {};
  const endorseBox = offers.length
    ? [label, el("button", { class: "endorse", "data-testid": "endorse", onclick: decide(true, true), ...pendingAttrs }, "Approve and endorse")]
    : [];
  $("detail").replaceChildren(
    el("h3", { "data-testid": "goal" }, d.goal || "(no goal)"),
    el("div", { class: "facts" }, "run ", el("code", {}, d.run_id), " · plan ", el("code", { "data-testid": "plan-hash" }, d.plan_hash.slice(0, 16)),
      ` · submitted by ${d.submitted_by ?? "?"} · ${d.kind} request · expires ${(d.expires_at || "").slice(0, 16).replace("T", " ")}`),
    el("ul", { class: "why", "data-testid": "why" }, ...d.why.map((w) => el("li", {}, w))),
    ...((d.warnings || []).length ? [el("h4", {}, "The plan may not serve the whole goal"),
      el("ul", { class: "why", "data-testid": "warnings" }, ...d.warnings.map((w) => el("li", {}, `⚠ ${w.message}`)))] : []),
    ...call,
    el("div", { class: "cols" },
      el("div", {}, el("h4", {}, "Dependency graph"), graphBox),
      el("div", {}, el("h4", {}, `Steps · effects: ${d.report.effects.join(", ")}`), stepsTable(d), el("h4", {}, "Data flows into sensitive parameters"), flowsTable(d.report.flows))),
    el("div", { class: "decide" }, reason,
      el("button", { class: "approve", "data-testid": "approve", onclick: decide(true), ...(d.status !== "pending" ? { disabled: "" } : {}) }, "Approve"),
      el("button", { class: "deny", "data-testid": "deny", onclick: decide(false), ...(d.status !== "pending" ? { disabled: "" } : {}) }, "Deny"),
      ...endorseBox),
    el("div", { class: "progress" }, el("h4", {}, "Run progress ", el("span", { class: "status", id: "run-status", "data-testid": "run-status" }, d.status)),
      el("ol", { id: "events", "data-testid": "events" })));
  refresh();
}

async function showRun(runId) {
  state.selected = null;
  state.statuses = {};
  stopStream();
  let r;
  try { r = await api(`/api/runs/${encodeURIComponent(runId)}`); } catch (err) { say(err.message, true); return; }
  $("detail").replaceChildren(
    el("h3", {}, r.goal || "(no goal)"),
    el("div", { class: "facts" }, "run ", el("code", {}, r.run_id), ` · submitted by ${r.submitted_by} · plan ${r.plan_hash.slice(0, 16)}`),
    el("div", { class: "progress" }, el("h4", {}, "Run progress ", el("span", { class: `status ${r.status}`, id: "run-status", "data-testid": "run-status" }, r.status)),
      el("ol", { id: "events", "data-testid": "events" })));
  follow(runId, null);
}

// -- live progress (Server-Sent Events over fetch, so the token travels in a header) -----------

function stopStream() { if (state.stream) state.stream.abort(); state.stream = null; }

const STEP_STATUS = { step_started: "started", step_finished: "finished", step_failed: "failed", step_skipped: "skipped" };

function describe(e) {
  const d = e.data;
  if (e.kind.startsWith("step_")) return `step ${d.step ?? d.step_id ?? ""} ${e.kind.slice(5)}${d.tool ? " (" + d.tool + ")" : ""}`;
  if (e.kind === "approval_granted") return `approved by ${d.by}${d.reason ? ": " + d.reason : ""}`;
  if (e.kind === "approval_denied") return `denied by ${d.by}: ${d.reason}`;
  if (e.kind === "run_finished") return `run finished: ${d.status}`;
  if (e.kind === "run_claimed") return `claimed by worker ${d.worker}`;
  if (e.kind === "endorsement_added") return `endorsed by ${d.by} as "${d.label}" (${d.source})`;
  if (e.kind === "endorsement_used") return `step ${d.step} ${d.param}: endorsed by ${d.by} as "${d.label}"`;
  return e.kind.replace(/_/g, " ");
}

async function follow(runId, graph) {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  const list = $("events");
  try {
    const response = await fetch(`/api/runs/${encodeURIComponent(runId)}/events`, { headers: { Authorization: `Bearer ${state.token}` }, signal: controller.signal });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        const event = JSON.parse(data);
        if (event.kind === "http_request") continue;
        list.append(el("li", { "data-kind": event.kind }, `${event.at.slice(11, 19)}  ${describe(event)}`));
        const step = event.data.step ?? event.data.step_id;
        if (STEP_STATUS[event.kind] && step !== undefined) {
          state.statuses[step] = STEP_STATUS[event.kind];
          if (graph) $("graph-box")?.replaceChildren(drawGraph(graph));
        }
        const status = $("run-status");
        if (event.kind === "run_claimed") { status.textContent = "running"; status.className = "status running"; }
        if (event.kind === "run_finished") { status.textContent = event.data.status; status.className = `status ${event.data.status}`; refresh(); }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") say(`event stream: ${err.message}`, true);
  }
}

if (state.token) signIn(state.token);
setInterval(refresh, 5000);

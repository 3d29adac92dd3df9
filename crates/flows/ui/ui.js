// The flow service's web UI: plain JavaScript, no build step. Filters
// live in the URL's hash (#action=deny&namespace=shop&view=graph&flow=0),
// so a view can be shared as a link. Every value from the server is put
// in the page as text, never as HTML.
"use strict";

const FILTERS = ["namespace", "name", "action", "reporter", "policy", "tier", "port", "proto", "label", "since"];
const $ = (s) => document.querySelector(s);
const state = { flows: [], page: 0, more: false, live: null, selected: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function hash() { return new URLSearchParams(location.hash.slice(1)); }

function setHash(changes) {
  const h = hash();
  for (const [k, v] of Object.entries(changes)) { if (v === "" || v == null) h.delete(k); else h.set(k, v); }
  history.replaceState(null, "", "#" + h.toString());
}

// The API's query string for the filters in the hash.
function apiQuery(extra) {
  const h = hash(), q = new URLSearchParams();
  for (const f of FILTERS) {
    const v = h.get(f);
    if (!v) continue;
    if (f === "since") q.set("from", String(Math.floor(Date.now() / 1000) - Number(v)));
    else q.set(f, v);
  }
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  return q.toString();
}

async function api(path, extra) {
  const r = await fetch(path + "?" + apiQuery(extra));
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function endpoint(f, side) {
  const ns = f[side + "_namespace"], name = f[side + "_name"], ip = f[side + "_ip"];
  const port = side === "source" ? f.source_port : undefined;
  const id = ns && ns !== "-" ? ns + "/" + name : name;
  if (!ip) return port ? id + " (:" + port + ")" : id;
  const at = port ? (ip.includes(":") ? "[" + ip + "]" : ip) + ":" + port : ip;
  return id + " (" + at + ")";
}

function entry(text) {
  const p = text.split("|");
  if (p.length !== 5) return { text, readable: text };
  const [index, tier, policy, action, rule] = p;
  const readable = Number(rule) < 0 ? policy + " → " + action
    : tier === "__PROFILE__" ? "profile " + policy.replace(/^__PROFILE__\./, "") + " rule " + rule + " → " + action
    : tier + "/" + policy + " rule " + rule + " → " + action;
  return { index, tier, policy, action, rule, readable };
}

function decided(f) { return f.policies.length ? entry(f.policies[f.policies.length - 1]) : { readable: "-" }; }

function time(t) { return new Date(t * 1000).toLocaleTimeString([], { hour12: false }); }

function row(f, fresh) {
  const tr = el("tr", {
    class: "flow" + (fresh ? " fresh" : ""),
    "data-action": f.action,
    "data-source": endpoint(f, "source"),
    "data-dest": endpoint(f, "dest"),
  },
    el("td", {}, time(f.end_time)), el("td", {}, f.node), el("td", {}, f.reporter),
    el("td", {}, endpoint(f, "source")), el("td", {}, endpoint(f, "dest")),
    el("td", {}, f.proto + (f.dest_port != null ? "/" + f.dest_port : "")),
    el("td", { class: "action " + f.action }, f.action),
    el("td", { class: "decided" }, decided(f).readable),
    el("td", {}, f.packets));
  tr.addEventListener("click", () => select(f, tr));
  return tr;
}

function render() {
  const body = $("#flows tbody");
  body.replaceChildren(...state.flows.map((f) => row(f)));
  $("#empty").hidden = state.flows.length > 0;
  $("#more").hidden = !state.more;
  const n = Number(hash().get("flow"));
  if (hash().has("flow") && state.flows[n]) select(state.flows[n], body.children[n]);
}

function select(f, tr) {
  for (const r of document.querySelectorAll("tr.flow.selected")) r.classList.remove("selected");
  if (tr) tr.classList.add("selected");
  state.selected = f;
  const d = $("#detail");
  d.hidden = false;
  d.dataset.action = f.action;
  $("#detail-title").textContent = endpoint(f, "source") + " → " + endpoint(f, "dest");
  const fields = [
    ["action", f.action], ["reporter", f.reporter], ["node", f.node],
    ["protocol", f.proto + (f.dest_port != null ? " port " + f.dest_port : "")],
    ["packets in / out", f.packets_in + " / " + f.packets_out], ["bytes in / out", f.bytes_in + " / " + f.bytes_out],
    ["connections", f.num_flows + " (started " + f.num_flows_started + ", completed " + f.num_flows_completed + ", live " + f.num_flows_live + ")"],
    ["from", time(f.start_time)], ["to", time(f.end_time)],
  ];
  for (const side of ["source", "dest"]) {
    const l = f[side + "_labels"] || {};
    const text = Object.entries(l).map(([k, v]) => k + "=" + v).join(", ");
    if (text) fields.push([side + " labels", text]);
  }
  $("#detail-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const list = (trace) => trace.map((t, i) => {
    const e = entry(t);
    return el("li", { class: "trace-entry" + (i === trace.length - 1 ? " decided" : ""), "data-tier": e.tier || "", "data-policy": e.policy || "", "data-action": e.action || "" }, e.readable);
  });
  $("#trace").replaceChildren(...list(f.policies));
  const pending = f.pending_policies || [];
  $("#pending").replaceChildren(...(pending.length ? list(pending) : [el("li", {}, "none recorded")]));
}

async function loadFlows(page) {
  try {
    const res = await api("/api/v1/flows", page ? { page: String(page) } : {});
    state.page = page;
    state.flows = page ? state.flows.concat(res.flows) : res.flows;
    state.more = res.more;
    $("#error").textContent = "";
    render();
  } catch (e) { $("#error").textContent = e.message; }
}

function follow() {
  if (state.live) { state.live.close(); state.live = null; }
  if (!$("#live").checked) return;
  state.live = new EventSource("/api/v1/flows/stream?" + apiQuery());
  state.live.addEventListener("flow", (ev) => {
    const f = JSON.parse(ev.data);
    state.flows.unshift(f);
    if (state.flows.length > 1000) state.flows.pop();
    $("#flows tbody").prepend(row(f, true));
    $("#empty").hidden = true;
  });
}

async function loadHints() {
  for (const field of ["namespace", "name", "policy", "tier"]) {
    try {
      const values = await (await fetch("/api/v1/hints?field=" + field)).json();
      $("#hint-" + field).replaceChildren(...values.map((v) => el("option", { value: v })));
    } catch (e) { /* hints are a convenience */ }
  }
}

async function loadPolicies() {
  try {
    const rows = await api("/api/v1/policies");
    $("#policies tbody").replaceChildren(...rows.map((r) => el("tr", { class: "rule" },
      el("td", {}, r.tier), el("td", {}, r.policy), el("td", {}, r.rule < 0 ? "-" : r.rule),
      el("td", { class: "action " + r.action }, r.action), el("td", {}, r.reporter), el("td", {}, r.flows),
      el("td", {}, r.allowed_packets), el("td", {}, r.denied_packets))));
  } catch (e) { $("#error").textContent = e.message; }
}

// Namespaces around a circle, each namespace's endpoints around its own.
async function loadGraph() {
  let edges;
  try { edges = await api("/api/v1/graph"); } catch (e) { $("#error").textContent = e.message; return; }
  const g = $("#graph");
  g.replaceChildren();
  const defs = svg("defs");
  for (const a of ["allow", "deny"]) {
    // Fixed size, tip at the edge of the destination's circle (radius 22).
    const m = svg("marker", { id: "arrow-" + a, viewBox: "0 0 10 10", refX: "32", refY: "5", markerWidth: "10", markerHeight: "10", markerUnits: "userSpaceOnUse", orient: "auto" });
    m.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: a === "allow" ? "#1a7f37" : "#cf222e" }));
    defs.append(m);
  }
  g.append(defs);
  const nodes = [...new Set(edges.flatMap((e) => [e.source, e.dest]))].sort();
  const groups = {};
  for (const n of nodes) { const ns = n.includes("/") ? n.split("/")[0] : "(outside)"; (groups[ns] = groups[ns] || []).push(n); }
  const names = Object.keys(groups).sort(), pos = {};
  const spread = names.length > 1;
  names.forEach((ns, i) => {
    const a = (2 * Math.PI * i) / names.length + Math.PI;
    const cx = 500 + (spread ? 310 : 0) * Math.cos(a), cy = 320 + (spread ? 170 : 0) * Math.sin(a);
    const members = groups[ns], r = members.length > 1 ? Math.min(110, 50 + 8 * members.length) : 0;
    g.append(svg("circle", { class: "ns", cx, cy, r: r + 38 }));
    g.append(svg("text", { class: "ns-label", x: cx, y: cy - r - 44, "text-anchor": "middle" }, ns));
    members.forEach((n, j) => {
      const b = (2 * Math.PI * j) / members.length - Math.PI / 2;
      pos[n] = [cx + r * Math.cos(b), cy + r * Math.sin(b)];
    });
  });
  const max = Math.max(1, ...edges.map((e) => e.allowed_packets + e.denied_packets));
  for (const e of edges) {
    const [x1, y1] = pos[e.source], [x2, y2] = pos[e.dest];
    for (const a of ["allow", "deny"]) {
      const packets = a === "allow" ? e.allowed_packets : e.denied_packets;
      if (!packets) continue;
      const bend = a === "allow" ? 0.15 : -0.15;
      const mx = (x1 + x2) / 2 + bend * (y2 - y1), my = (y1 + y2) / 2 - bend * (x2 - x1);
      const path = svg("path", {
        class: "edge " + a, d: `M ${x1} ${y1} Q ${mx} ${my} ${x2} ${y2}`,
        "stroke-width": 1.5 + 5 * (packets / max), "marker-end": `url(#arrow-${a})`,
        "data-source": e.source, "data-dest": e.dest,
      });
      path.append(svg("title", {}, `${e.source} → ${e.dest}: ${packets} ${a === "allow" ? "allowed" : "denied"} packets`));
      g.append(path);
    }
  }
  for (const n of nodes) {
    const [x, y] = pos[n];
    const node = svg("g", { class: "node", "data-id": n });
    node.append(svg("circle", { cx: x, cy: y, r: 22 }));
    node.append(svg("text", { x, y: y + 36 }, n.includes("/") ? n.split("/")[1] : n));
    node.addEventListener("click", () => { setHash({ name: n.split("/").pop(), view: "flows" }); start(); });
    g.append(node);
  }
}

function show(view) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.view === view);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  $("#detail").hidden = view !== "flows" || !state.selected;
  if (view === "graph") loadGraph();
  if (view === "policies") loadPolicies();
}

function start() {
  const h = hash();
  for (const f of FILTERS) { const i = $("#filters [name=" + f + "]"); if (i) i.value = h.get(f) || ""; }
  state.selected = null;
  $("#detail").hidden = true;
  const view = h.get("view") || "flows";
  show(view);
  loadFlows(0);
  follow();
}

$("#filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const changes = { flow: "" };
  for (const f of FILTERS) changes[f] = $("#filters [name=" + f + "]").value.trim();
  setHash(changes);
  start();
});
$("#clear").addEventListener("click", () => { history.replaceState(null, "", "#"); start(); });
$("#more").addEventListener("click", () => loadFlows(state.page + 1));
$("#close").addEventListener("click", () => { $("#detail").hidden = true; state.selected = null; });
$("#live").addEventListener("change", follow);
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => { setHash({ view: b.dataset.view }); show(b.dataset.view); });
window.addEventListener("hashchange", start);
loadHints();
start();

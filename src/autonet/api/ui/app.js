// The autonet dashboard: polls the API and updates the page in place (no reload).
// Credentials: a bearer token from the URL fragment (#token=...), kept for the tab's
// session, or typed into the form the page shows when the API answers 401.
"use strict";

const API = "/api/v1";
const POLL_MS = 1000;
const GRAPH_MS = 3000;
const FLOWS_MS = 2000;
const MAX_EVENTS = 200;

const state = { token: null, lastEvent: 0, selected: null, graphKey: "", graphAt: 0, flowsAt: 0 };

function takeToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("autonet-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  }
  state.token = sessionStorage.getItem("autonet-token");
}

class Unauthorized extends Error {}

async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const reply = await fetch(API + path, { headers });
  if (reply.status === 401) throw new Unauthorized("the API wants a valid token");
  if (!reply.ok) {
    let message = `${reply.status}`;
    try { message = (await reply.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${message}`);
  }
  return (reply.headers.get("content-type") || "").includes("json") ? reply.json() : reply.text();
}

function rate(bps) {
  if (!bps) return "0";
  const units = [["G", 1e9], ["M", 1e6], ["k", 1e3]];
  for (const [unit, size] of units) if (bps >= size) return `${(bps / size).toFixed(1)}${unit}`;
  return `${Math.round(bps)}`;
}

// Rows are keyed by data-name and updated in place, so a watcher sees them change.
function syncTable(id, rows, cells) {
  const body = document.querySelector(`#${id} tbody`);
  const seen = new Set();
  for (const row of rows) {
    seen.add(row.name);
    let tr = body.querySelector(`tr[data-name="${CSS.escape(row.name)}"]`);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.name = row.name;
      body.appendChild(tr);
    }
    tr.dataset.state = row.state || "";
    const values = cells(row);
    while (tr.children.length < values.length) tr.appendChild(document.createElement("td"));
    values.forEach(([cls, text], i) => {
      const td = tr.children[i];
      td.className = cls;
      if (td.textContent !== String(text)) td.textContent = String(text);
    });
  }
  for (const tr of [...body.querySelectorAll("tr")]) if (!seen.has(tr.dataset.name)) tr.remove();
}

function byName(list, key) {
  return Object.fromEntries((list || []).map((row) => [row[key], row]));
}

async function refreshObjects() {
  const [automatons, instances, hosts, load] = await Promise.all([
    api("/objects/automatons"), api("/objects/instances"), api("/objects/hosts"),
    api("/load").catch(() => ({})),
  ]);
  const loadOf = {
    automaton: byName(load.automatons, "automaton"),
    instance: byName(load.instances, "instance"),
    host: byName(load.hosts, "host"),
  };
  const blank = {};
  syncTable("automatons", automatons.map((a) => ({ ...a, state: a.status.state })), (a) => {
    const l = loadOf.automaton[a.name] || blank;
    const runs = a.spec.image ? `image ${a.spec.image}` : a.spec.external ? "attached (CNI)" : (a.spec.command || []).join(" ");
    return [["name", a.name], ["network", a.spec.network], ["runs", runs], ["ready", `${a.status.ready ?? 0}/${a.spec.replicas ?? 1}`],
      ["failed", a.status.failed ?? 0], ["rx", rate(l.rx_bps)], ["tx", rate(l.tx_bps)], ["flows", l.flows ?? 0]];
  });
  syncTable("instances", instances.map((i) => ({ ...i, state: i.status.state })), (i) => {
    const l = loadOf.instance[i.name] || blank;
    return [["name", i.name], ["automaton", i.spec.automaton], ["host", i.status.host || ""],
      ["state", i.status.state || ""], ["ipv4", i.status.ipv4 || ""], ["rx", rate(l.rx_bps)],
      ["tx", rate(l.tx_bps)], ["reason", i.status.reason || ""]];
  });
  for (const tr of document.querySelectorAll("#instances tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.name === state.selected);
  }
  syncTable("hosts", hosts.map((h) => ({ ...h, state: h.status.state })), (h) => {
    const l = loadOf.host[h.name] || blank;
    return [["name", h.name], ["state", h.status.state || ""], ["instances", h.status.instances ?? 0],
      ["rx", rate(l.rx_bps)], ["tx", rate(l.tx_bps)]];
  });
  // The graph changes when automatons, their instances or hosts change state.
  const key = JSON.stringify([automatons.map((a) => [a.name, a.status.ready, a.status.failed, a.spec.replicas]),
    hosts.map((h) => [h.name, h.status.state]), instances.length]);
  if (key !== state.graphKey || Date.now() - state.graphAt > GRAPH_MS * 10) {
    state.graphKey = key;
    await refreshGraph();
  }
}

async function refreshGraph() {
  state.graphAt = Date.now();
  const svg = await api("/graph?format=svg");
  const holder = document.getElementById("graph");
  const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
  const root = doc.documentElement;
  for (const script of root.querySelectorAll("script")) script.remove();
  holder.replaceChildren(document.importNode(root, true));
}

async function refreshEvents() {
  const reply = await api(`/events?after=${state.lastEvent}`);
  const list = document.getElementById("events");
  for (const e of reply.events) {
    const li = document.createElement("li");
    li.dataset.kind = e.kind;
    li.dataset.name = e.name;
    li.dataset.state = e.state;
    const when = new Date(e.time * 1000).toLocaleTimeString();
    const where = e.host ? ` on ${e.host}` : "";
    li.textContent = `${when} ${e.kind} ${e.name}${where}: ${e.state}${e.reason ? ` (${e.reason})` : ""}`;
    list.prepend(li);
  }
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  state.lastEvent = reply.last;
}

async function refreshFlows() {
  if (!state.selected || Date.now() - state.flowsAt < FLOWS_MS) return;
  state.flowsAt = Date.now();
  const name = state.selected;
  const rows = await api(`/instances/${encodeURIComponent(name)}/flows`);
  if (name !== state.selected) return;
  // Keyed by the 5-tuple: flow IDs are 64-bit and lose their low bits as JavaScript numbers.
  const tuple = (f) => `${f.protocol} ${f.local_address}:${f.local_port} ${f.peer_address}:${f.peer_port}`;
  syncTable("flows", rows.map((f) => ({ ...f, name: tuple(f) })), (f) => [
    ["protocol", f.protocol], ["state", f.state || "-"], ["local", `${f.local_address}:${f.local_port}`],
    ["peer", `${f.peer_address}:${f.peer_port}`], ["peer-automaton", f.peer_automaton || "-"],
    ["tx", f.tx_bytes], ["rx", f.rx_bytes]]);
}

function setStatus(text, kind) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.dataset.state = kind;
}

async function tick() {
  try {
    await Promise.all([refreshObjects(), refreshEvents(), refreshFlows()]);
    setStatus(`live, updated ${new Date().toLocaleTimeString()}`, "live");
    document.getElementById("login").hidden = true;
  } catch (error) {
    if (error instanceof Unauthorized) {
      document.getElementById("login").hidden = false;
      setStatus("not signed in", "error");
    } else {
      setStatus(String(error.message || error), "error");
    }
  }
  setTimeout(tick, POLL_MS);
}

document.getElementById("instances").addEventListener("click", (event) => {
  const tr = event.target.closest("tr[data-name]");
  if (!tr) return;
  state.selected = tr.dataset.name;
  state.flowsAt = 0;
  document.getElementById("flows-of").textContent = state.selected;
  document.querySelector("#flows tbody").replaceChildren();
});

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("autonet-token", state.token);
});

window.addEventListener("hashchange", takeToken);  // a token pasted into the open page's address
takeToken();
tick();

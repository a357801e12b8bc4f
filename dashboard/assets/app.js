// Sigil dashboard: polls the server's /api/ every few seconds and renders
// one view chosen by the URL's hash. Everything is built with DOM calls
// and textContent, never parsed as markup: names, paths and SPIFFE IDs come
// from the network and are shown as text. Cells carry data-col and
// data-value (the raw figure) and rows data-namespace/data-service, so
// tests and scripts can read the page.
"use strict";

const REFRESH_MS = 3000;
let timer = null;
let generation = 0;

function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") n.className = v; else n.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

function svg(tag, attrs, ...children) {
  const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return n;
}

function win() { return document.getElementById("window").value; }

async function getJSON(path, params) {
  const q = new URLSearchParams(params || {});
  const res = await fetch("api/" + path + "?" + q.toString(), { headers: { "Accept": "application/json" } });
  const body = await res.json();
  if (!res.ok) throw new Error(path + ": " + (body.error || res.status));
  return body;
}

// Formatting. Every figure cell keeps its raw value in data-value.
function rateClass(r) { return r === undefined || r === null ? "muted" : r >= 0.99 ? "ok" : r >= 0.95 ? "warn" : "bad"; }
function pct(r) { return r === undefined || r === null ? "-" : (r * 100).toFixed(2) + "%"; }
function ms(v) { return v === undefined || v === null ? "-" : v < 10 ? v.toFixed(2) + " ms" : v.toFixed(0) + " ms"; }
function rps(v) { return v ? v.toFixed(2) : "0"; }
function bytes(n) { return n < 1024 ? n + " B" : n < 1 << 20 ? (n / 1024).toFixed(1) + " KiB" : (n / (1 << 20)).toFixed(1) + " MiB"; }
function until(t, now) {
  const s = Math.round((Date.parse(t) - Date.parse(now)) / 1000);
  const a = Math.abs(s);
  const txt = a < 120 ? a + "s" : a < 7200 ? Math.round(a / 60) + "m" : a < 172800 ? (a / 3600).toFixed(1) + "h" : Math.round(a / 86400) + "d";
  return s < 0 ? "expired " + txt + " ago" : "in " + txt;
}
function num(col, value, text, cls, id) {
  return el("td", { class: "num " + (cls || ""), "data-col": col, "data-value": value === undefined || value === null ? "" : String(value), id: id }, text);
}
function goldenCells(g, prefix) {
  const id = c => prefix ? prefix + "-" + c : undefined;
  return [
    num("success", g.success_rate, pct(g.success_rate), rateClass(g.success_rate), id("success")),
    num("rps", g.rps, rps(g.rps), "", id("rps")),
    num("p50", g.p50_ms, ms(g.p50_ms), "", id("p50")),
    num("p95", g.p95_ms, ms(g.p95_ms), "", id("p95")),
    num("p99", g.p99_ms, ms(g.p99_ms), "", id("p99")),
  ];
}
const goldenHeads = ["Success", "RPS", "P50", "P95", "P99"];
function table(id, heads, rows, empty) {
  const head = el("tr", {}, ...heads.map(h => el("th", { class: goldenHeads.includes(h) || /^(Meshed|Weight|TCP|Bytes)/.test(h) ? "num" : "" }, h)));
  const body = rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: String(heads.length) }, empty))];
  return el("table", { id: id }, el("thead", {}, head), el("tbody", {}, ...body));
}
function svcLink(ns, name) { return el("a", { href: "#/service/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name) }, name); }

// Views: each returns the nodes to show.
const views = {
  async overview() {
    const d = await getJSON("overview", { window: win() });
    const rows = d.rows.map(r => el("tr", { "data-namespace": r.namespace, "data-service": r.name },
      el("td", { "data-col": "namespace" }, r.namespace),
      el("td", { "data-col": "service" }, svcLink(r.namespace, r.name)),
      num("meshed", r.meshed, r.meshed + "/" + r.endpoints, "", "svc-" + r.namespace + "-" + r.name + "-meshed"),
      ...goldenCells(r, "svc-" + r.namespace + "-" + r.name),
      num("tcp", r.tcp_connections, String(r.tcp_connections)),
    ));
    return [el("h2", {}, "Services"), table("services", ["Namespace", "Service", "Meshed", ...goldenHeads, "TCP conns"], rows, "No services registered yet")];
  },

  async service(ns, name) {
    const d = await getJSON("service", { namespace: ns, name: name, window: win() });
    const s = d.service;
    const card = (label, value, cls) => el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value " + (cls || "") }, value));
    const edgeRows = (edges, peer) => edges.map(e => el("tr", { "data-peer": peer(e) },
      el("td", { class: "id", "data-col": "peer" }, peer(e)),
      el("td", { "data-col": "service" }, svcLink(e.destination_namespace, e.destination_service)),
      ...goldenCells(e)));
    const statRows = (rows, key) => rows.map(r => el("tr", { "data-key": r[key] || "" },
      el("td", { "data-col": key }, r[key] || "(none)"), num("meshed", r.meshed, String(r.meshed)), ...goldenCells(r)));
    return [
      el("h2", {}, ns + "/" + name),
      el("div", { class: "cards", id: "service-summary" },
        card("Success", pct(s.success_rate), rateClass(s.success_rate)), card("RPS", rps(s.rps)),
        card("P50", ms(s.p50_ms)), card("P95", ms(s.p95_ms)), card("P99", ms(s.p99_ms)),
        card("Meshed", s.meshed + "/" + s.endpoints), card("TCP", s.tcp_connections + " conns, " + bytes(s.bytes_sent + s.bytes_received)),
        // What a dryrun Policy resource would have denied (docs/policy-resource.md).
        ...(s.dryrun_denied ? [card("Dry-run denied", String(s.dryrun_denied), "warn")] : [])),
      el("p", { class: "muted" }, "Identities: " + ((d.identities || []).join(", ") || "none registered")),
      el("h2", {}, "Inbound, by caller identity"),
      table("inbound", ["Source identity", "Service", ...goldenHeads], edgeRows(d.inbound || [], e => e.source), "No inbound traffic in the window"),
      el("h2", {}, "Outbound, by destination identity"),
      table("outbound", ["Destination identity", "Service", ...goldenHeads], edgeRows(d.outbound || [], e => e.destination), "No outbound traffic in the window"),
      el("h2", {}, "Subsets"),
      table("subsets", ["Subset", "Meshed", ...goldenHeads], statRows(d.subsets || [], "subset"), "No traffic by subset in the window"),
      el("h2", {}, "Routes"),
      table("routes", ["Route", "Meshed", ...goldenHeads], statRows(d.routes || [], "route"), "No traffic by route in the window"),
    ];
  },

  async canaries() {
    const d = await getJSON("canaries", { window: win() });
    if (!d.canaries.length) return [el("h2", {}, "Canaries"), el("p", { class: "muted" }, "No VirtualService route splits traffic by weight.")];
    const out = [el("h2", {}, "Canaries: weighted routes, subsets side by side")];
    for (const c of d.canaries) {
      const key = c.namespace + "/" + c.virtual_service + "/" + c.route;
      out.push(el("h2", {}, "VirtualService " + c.namespace + "/" + c.virtual_service + ", route " + c.route + " (" + c.hosts.join(", ") + ")"));
      const bar = el("div", { class: "weightbar" });
      c.rows.forEach((r, i) => { const s = el("span", { class: "w" + (i % 4), title: (r.subset || r.service) + " " + r.weight + "%" }); s.style.width = r.weight + "%"; bar.append(s); });
      out.push(bar);
      const rows = c.rows.map((r, i) => {
        const g = r.stats || {};
        return el("tr", { "data-canary": key, "data-subset": r.subset || "" },
          el("td", { "data-col": "destination" }, el("span", { class: "w" + (i % 4) }, "\u00a0\u00a0"), " ", r.service + "." + r.namespace + (r.subset ? " / " + r.subset : "")),
          num("weight", r.weight, r.weight + "%"),
          ...goldenCells(g));
      });
      out.push(table("canary-" + key, ["Destination", "Weight", ...goldenHeads], rows, ""));
    }
    return out;
  },

  async graph() {
    const d = await getJSON("graph", { window: win() });
    if (!d.nodes.length) return [el("h2", {}, "Service graph"), el("p", { class: "muted" }, "No traffic observed in the window.")];
    const W = 280, H = 70, BW = 180, BH = 36;
    const pos = {};
    let cols = 0, rows = 0;
    for (const n of d.nodes) { pos[n.id] = { x: 20 + n.column * W, y: 20 + n.row * H }; cols = Math.max(cols, n.column + 1); rows = Math.max(rows, n.row + 1); }
    const width = cols * W - (W - BW) + 40, height = rows * H + 20;
    const g = svg("svg", { class: "graph", id: "graph", viewBox: "0 0 " + width + " " + height, width: String(width), height: String(height) });
    const colour = r => r === undefined || r === null ? "#9aa0a6" : r >= 0.99 ? "#1a7f37" : r >= 0.95 ? "#b7791f" : "#c62828";
    for (const e of d.edges) {
      const a = pos[e.from], b = pos[e.to];
      const x1 = a.x + BW, y1 = a.y + BH / 2, x2 = b.x, y2 = b.y + BH / 2;
      const p = e.from === e.to
        ? "M" + (a.x + BW - 20) + " " + a.y + " c 30 -30 50 10 20 " + BH
        : "M" + x1 + " " + y1 + " C" + (x1 + 40) + " " + y1 + " " + (x2 - 40) + " " + y2 + " " + x2 + " " + y2;
      g.append(svg("path", { d: p, stroke: colour(e.success_rate), "data-from": e.from, "data-to": e.to, "data-success": e.success_rate === undefined ? "" : String(e.success_rate) },
        svg("title", {}, e.source + " \u2192 " + e.destination_service + "." + e.destination_namespace + ": " + pct(e.success_rate) + ", " + rps(e.rps) + " rps")));
      if (e.from !== e.to) {
        g.append(svg("text", { x: String((x1 + x2) / 2), y: String((y1 + y2) / 2 - 6), "text-anchor": "middle" }, rps(e.rps) + " rps"));
      }
    }
    for (const n of d.nodes) {
      const p = pos[n.id];
      const label = n.label.length > 26 ? "\u2026" + n.label.slice(-25) : n.label;
      g.append(svg("g", { "data-node": n.id },
        svg("rect", { x: String(p.x), y: String(p.y), width: String(BW), height: String(BH), rx: "6", class: n.id.startsWith("id:") ? "identity" : "" }),
        svg("text", { x: String(p.x + 8), y: String(p.y + 22) }, label), svg("title", {}, n.label)));
    }
    return [el("h2", {}, "Service graph (edges coloured by success rate)"),
      el("p", { class: "legend" }, el("span", { class: "ok" }, "\u25a0 \u2265 99%"), el("span", { class: "warn" }, "\u25a0 \u2265 95%"), el("span", { class: "bad" }, "\u25a0 < 95%")), g];
  },

  async identities() {
    const d = await getJSON("identities");
    const auth = d.authorities.map(a => el("tr", { "data-authority": String(a.id) },
      el("td", { "data-col": "kind" }, a.kind + (a.upstream ? " (upstream)" : "")),
      el("td", { "data-col": "status", class: a.status === "active" ? "ok" : "muted" }, a.status),
      el("td", { "data-col": "not_after", "data-value": a.not_after }, a.not_after + " (" + until(a.not_after, d.now) + ")"),
      el("td", { "data-col": "next" }, a.prepare_next_at ? "successor prepared " + until(a.prepare_next_at, d.now) + ", active " + until(a.activate_next_at, d.now) : ""),
      el("td", { class: "id" }, a.kid || "")));
    const svids = d.svids.map(s => {
      const left = (Date.parse(s.not_after) - Date.parse(d.now)) / 1000;
      return el("tr", { "data-spiffe-id": s.spiffe_id },
        el("td", { class: "id", "data-col": "spiffe_id" }, s.spiffe_id),
        el("td", { "data-col": "kind" }, s.kind),
        el("td", { "data-col": "services" }, (s.services || []).join(", ")),
        el("td", { class: "id", "data-col": "node" }, s.node || s.agent || ""),
        el("td", { "data-col": "not_after", "data-value": s.not_after, class: left <= 0 ? "bad" : left < 300 ? "warn" : "" }, s.not_after + " (" + until(s.not_after, d.now) + ")"),
        el("td", { class: "id" }, s.serial));
    });
    return [
      el("h2", {}, "Certificate authority (trust bundle sequence " + d.bundle_sequence + ")"),
      table("authorities", ["Kind", "Status", "Expires", "Rotation", "Key ID"], auth, "No authorities"),
      el("h2", {}, "Identities and their X.509-SVIDs"),
      table("svids", ["SPIFFE ID", "Kind", "Services", "Node", "Expires", "Serial"], svids, "No SVIDs issued since this server started"),
    ];
  },

  async denials() {
    const d = await getJSON("denials", { limit: "100" });
    const rows = d.denials.map(x => el("tr", { "data-decision-id": x.decision_id },
      el("td", { "data-col": "time" }, x.time),
      el("td", { class: "id", "data-col": "source" }, x.source),
      el("td", { "data-col": "service" }, svcLink(x.namespace, x.service)),
      el("td", { "data-col": "method" }, x.method),
      el("td", { class: "id", "data-col": "path" }, x.path),
      el("td", { class: "id" }, x.decision_id)));
    return [el("h2", {}, "Recent policy denials"), table("denials", ["Time", "Source identity", "Service", "Method", "Path", "Decision ID"], rows, "No denials recorded")];
  },
};

// route reads the hash: #/VIEW[/ARGS...][?window=5m]. A window in the
// hash chooses the window's select (links and tests can fix it).
function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const w = new URLSearchParams(query || "").get("window");
  const sel = document.getElementById("window");
  if (w && [...sel.options].some(o => o.value === w)) sel.value = w;
  const parts = path.split("/").map(decodeURIComponent);
  if (parts[0] === "service" && parts.length === 3) return ["overview", "service", parts.slice(1)];
  if (parts[0] !== "service" && Object.hasOwn(views, parts[0])) return [parts[0], parts[0], []];
  return ["overview", "overview", []];
}

async function render() {
  clearTimeout(timer);
  const my = ++generation;
  const [nav, view, args] = route();
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.view === nav));
  const err = document.getElementById("error");
  try {
    const nodes = await views[view](...args);
    if (my !== generation) return;
    document.getElementById("view").replaceChildren(...nodes);
    err.hidden = true;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.rendered = view;
  } catch (e) {
    if (my !== generation) return;
    err.textContent = String(e.message || e);
    err.hidden = false;
  }
  timer = setTimeout(render, REFRESH_MS);
}

window.addEventListener("hashchange", render);
document.getElementById("window").addEventListener("change", render);
render();

// sysmanage-node stats page: polls the documented admin API and renders it.
// No framework, no build step, no third-party request. Reads:
// GET /api/v1/status (and GET /api/v1/sessions?key=K on demand). Writes, with
// the admin token as a bearer header: POST .../{drain|maintenance|enable},
// PUT .../weight, POST /api/v1/reload, DELETE /api/v1/sessions/{key},
// POST /api/v1/sessions/{key}/move. The token is kept in sessionStorage only.
"use strict";

const TOKEN_KEY = "sysmanage-node-admin-token";
const HISTORY = 150; // sparkline points (5 minutes at 2 s)
const STALE_MS = 5000; // a peer not heard for longer is shown as stale

const page = {
  status: null, // the last answer
  at: 0, // when it came (ms)
  prev: null, // the one before, for rates
  prevAt: 0,
  history: new Map(), // pool -> {rps: [], p99: []}
  timer: null,
  sort: new Map(), // table id -> {key, dir}
};

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// ---- formatting ----

function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function ms(v) {
  return v === null || v === undefined ? "–" : v < 10 ? num(v, 2) : num(v, 1);
}

function bytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${num(v, i ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function since(unixMs) {
  return unixMs ? `${duration((Date.now() - unixMs) / 1000)} ago` : "–";
}

// ---- the API ----

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers.Authorization = `Bearer ${token()}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
  }
  const ctl = new AbortController();
  const timeout = setTimeout(() => ctl.abort(), 10000);
  try {
    const r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ctl.signal,
      cache: "no-store",
      credentials: "omit",
    });
    const text = await r.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (_) {
      json = null;
    }
    if (!r.ok) {
      const msg = (json && json.error) || text || r.statusText;
      const details = json && json.details ? `: ${json.details.join("; ")}` : "";
      throw new Error(`${r.status} ${msg}${details}`);
    }
    return json;
  } finally {
    clearTimeout(timeout);
  }
}

function banner(text, ok) {
  const b = $("banner");
  b.textContent = text;
  b.className = ok ? "banner ok" : "banner";
  b.hidden = !text;
}

// ---- polling ----

async function poll() {
  clearTimeout(page.timer);
  try {
    const status = await api("GET", "/api/v1/status");
    page.prev = page.status;
    page.prevAt = page.at;
    page.status = status;
    page.at = Date.now();
    render(status);
    if ($("banner").dataset.kind === "poll") {
      banner("");
      $("banner").dataset.kind = "";
    }
  } catch (e) {
    banner(`Cannot reach the node's admin API (${e.message}); showing the last answer.`, false);
    $("banner").dataset.kind = "poll";
  }
  const every = Number($("refresh").value);
  if (every > 0) page.timer = setTimeout(poll, every);
}

// Per second, between the last two answers; null without two answers.
function rate(now, before) {
  if (before === undefined || before === null || !page.prevAt) return null;
  const dt = (page.at - page.prevAt) / 1000;
  return dt > 0 ? Math.max(0, (now - before) / dt) : null;
}

// ---- rendering: keyed rows updated in place (focus and sorting survive) ----

// Sets a row's cells; flashes the row when `sig` changed since last time.
function upsertRow(tbody, id, cells, sig) {
  let tr = tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
  const fresh = !tr;
  if (fresh) {
    tr = document.createElement("tr");
    tr.dataset.id = id;
    for (let i = 0; i < cells.length; i++) tr.appendChild(document.createElement("td"));
    tbody.appendChild(tr);
  }
  cells.forEach((c, i) => {
    const td = tr.children[i];
    if (c.make) {
      if (!td.firstChild) td.appendChild(c.make());
    } else if (td.textContent !== c.text) {
      td.textContent = c.text;
    }
    td.dataset.v = c.v !== undefined ? String(c.v) : c.text || "";
    td.className = c.cls || "";
    if (c.title) td.title = c.title;
  });
  if (!fresh && tr.dataset.sig !== sig) {
    tr.classList.remove("flash");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("flash");
  }
  tr.dataset.sig = sig;
  tr.dataset.seen = "1";
  return tr;
}

// Drops rows not set since `markUnseen`.
function markUnseen(tbody) {
  for (const tr of tbody.rows) tr.dataset.seen = "";
}
function dropUnseen(tbody) {
  for (const tr of [...tbody.rows]) if (!tr.dataset.seen) tr.remove();
}

function stateCell(state, extra) {
  return { text: state + (extra || ""), v: state, cls: `text state state-${state.split(" ")[0]}` };
}

function render(s) {
  renderNode(s);
  renderTotals(s);
  renderPools(s);
  renderCluster(s);
  renderListeners(s);
  renderZones(s);
  renderEvents(s);
  applyFilter();
  document.querySelectorAll("table.sortable").forEach(applySort);
  renderMode(s);
}

function renderNode(s) {
  const n = s.node;
  $("node-name").textContent = n.name;
  $("node-version").textContent = `version ${n.version}`;
  document.title = `${n.name} · sysmanage-node stats`;
  const facts = [
    `up ${duration(n.uptime_seconds)}`,
    `CPU ${n.cpu_percent === undefined ? "–" : num(n.cpu_percent, 1) + " %"}`,
    `memory ${bytes(n.memory_bytes)}`,
    `config ${n.config_source}`,
    `updated ${new Date(page.at).toLocaleTimeString()}`,
  ];
  $("node-facts").textContent = facts.join(" · ");
}

function renderMode(s) {
  const writes = s.node.admin_writes;
  let text;
  if (!writes) text = "Read-only: write actions are off on this node (no admin token is configured: admin.token_file).";
  else if (!token()) text = "Read-only: enter the admin token to drain, put into maintenance, set weights, reload or move sessions.";
  else text = "Admin actions enabled with the token kept in this tab (sessionStorage). Each asks for confirmation.";
  $("mode").textContent = text;
  const can = writes && !!token();
  document.querySelectorAll("button.write").forEach((b) => (b.disabled = !can));
  $("token-button").textContent = token() ? "Forget admin token" : "Enter admin token";
  $("token-button").disabled = !writes && !token();
}

function renderTotals(s) {
  const t = s.totals;
  const items = [
    ["Requests/s", num(t.requests_per_second, 1)],
    ["5xx share", `${num(t.error_rate * 100, 2)} %`],
    ["Open connections", num(t.active_connections)],
    ["WebSocket tunnels", num(t.websocket_tunnels)],
    ["Retries", num(t.retries)],
    ["Rate-limited", num(t.rate_limited)],
    ["p50 / p95 / p99 ms", `${ms(t.p50_ms)} / ${ms(t.p95_ms)} / ${ms(t.p99_ms)}`],
    ["Requests", num(t.requests)],
  ];
  const dl = $("totals");
  if (dl.children.length !== items.length) {
    dl.textContent = "";
    for (const [k] of items) {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = k;
      div.append(dt, document.createElement("dd"));
      dl.appendChild(div);
    }
  }
  items.forEach(([, v], i) => (dl.children[i].lastChild.textContent = v));
}

const SERVER_COLUMNS = [
  ["server", "Server", "text"],
  ["state", "State", "text"],
  ["since", "Since", "num"],
  ["weight", "Weight", "num"],
  ["conns", "Conns", "num"],
  ["tunnels", "Tunnels", "num"],
  ["sessions", "Sessions", "num"],
  ["rps", "Req/s", "num"],
  ["err", "5xx/s", "num"],
  ["retries", "Retries", "num"],
  ["latency", "p50 / p95 / p99 ms", "num"],
  ["check", "Last check", "text"],
  ["failed", "Failed checks", "num", "col-wide"],
  ["passive", "Passive failures", "num", "col-wide"],
  ["nodes", "Nodes up", "num", "col-cluster"],
  ["actions", "Actions", "text"],
];

function poolTable(pool) {
  const id = `pool-${pool.name}`;
  let section = document.querySelector(`section.pool[data-pool="${CSS.escape(pool.name)}"]`);
  if (section) return section;
  section = document.createElement("section");
  section.className = "pool";
  section.dataset.pool = pool.name;
  const h = document.createElement("h3");
  const title = document.createElement("span");
  title.className = "pool-title";
  const spark = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  spark.setAttribute("class", "spark");
  spark.setAttribute("width", "140");
  spark.setAttribute("height", "26");
  spark.setAttribute("role", "img");
  const rps = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  rps.setAttribute("class", "rps");
  const p99 = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  p99.setAttribute("class", "p99");
  spark.append(rps, p99);
  const legend = document.createElement("small");
  legend.className = "legend";
  h.append(title, spark, legend);
  const wrap = document.createElement("div");
  wrap.className = "scroll";
  const table = document.createElement("table");
  table.className = "grid sortable";
  table.id = id;
  const cap = document.createElement("caption");
  cap.className = "sr-only";
  cap.textContent = `Servers of pool ${pool.name}`;
  const thead = document.createElement("thead");
  const tr = document.createElement("tr");
  for (const [key, label, type, cls] of SERVER_COLUMNS) {
    const th = document.createElement("th");
    th.scope = "col";
    th.dataset.key = key;
    th.dataset.type = type;
    if (type === "text") th.classList.add("text");
    if (cls) th.classList.add(cls);
    th.textContent = label;
    tr.appendChild(th);
  }
  thead.appendChild(tr);
  table.append(cap, thead, document.createElement("tbody"));
  wrap.appendChild(table);
  section.append(h, wrap);
  $("pools").appendChild(section);
  makeSortable(table);
  return section;
}

function renderPools(s) {
  const clustered = !!s.cluster;
  const names = new Set(s.pools.map((p) => p.name));
  for (const sec of [...document.querySelectorAll("section.pool")]) {
    if (!names.has(sec.dataset.pool)) sec.remove();
  }
  for (const pool of s.pools) {
    const section = poolTable(pool);
    section.classList.toggle("standalone", !clustered);
    const active = pool.servers.find((x) => x.active);
    section.querySelector(".pool-title").textContent =
      `${pool.name} · ${pool.balance} · ${pool.available}/${pool.total} available` +
      (active ? ` · active server ${active.name}` : "");
    const tbody = section.querySelector("tbody");
    markUnseen(tbody);
    let rpsSum = 0;
    let p99Max = null;
    for (const sv of pool.servers) {
      rpsSum += sv.requests_per_second || 0;
      if (sv.p99_ms !== null && sv.p99_ms !== undefined) p99Max = Math.max(p99Max || 0, sv.p99_ms);
      const errRate = sv.responses_5xx_per_second;
      const check = sv.last_check ? `${sv.last_check.ok ? "ok" : "failed"} ${ms(sv.last_check.latency_ms)} ms` : "–";
      const badges = (sv.backup ? " (backup)" : "") + (sv.active ? " (active)" : "");
      const nodes = clustered && sv.nodes_reporting ? `${sv.nodes_up}/${sv.nodes_reporting}` : "–";
      const cells = [
        { text: sv.name, cls: "text", title: sv.addr },
        stateCell(sv.state, badges),
        { text: since(sv.changed_at_unix_ms), v: -sv.changed_at_unix_ms },
        { text: `${sv.weight} (${sv.effective_weight})`, v: sv.effective_weight },
        { text: num(sv.active_connections), v: sv.active_connections },
        { text: num(sv.websocket_tunnels), v: sv.websocket_tunnels || 0 },
        { text: sv.sessions === null || sv.sessions === undefined ? "–" : num(sv.sessions), v: sv.sessions || 0 },
        { text: num(sv.requests_per_second, 1), v: sv.requests_per_second },
        { text: num(errRate, 1), v: errRate || 0 },
        { text: num(sv.retries), v: sv.retries || 0 },
        { text: `${ms(sv.p50_ms)} / ${ms(sv.p95_ms)} / ${ms(sv.p99_ms)}`, v: sv.p99_ms || 0 },
        { text: check, cls: `text ${sv.last_check && !sv.last_check.ok ? "state-down" : ""}` },
        { text: num(sv.checks_failed), v: sv.checks_failed || 0, cls: "col-wide" },
        { text: num(sv.passive_failures), v: sv.passive_failures || 0, cls: "col-wide" },
        { text: nodes, v: sv.nodes_up || 0, cls: "col-cluster" },
        { make: () => actionButtons(pool.name, sv.name), cls: "text", v: "" },
      ];
      const sig = [sv.state, sv.admin, sv.weight, sv.active, sv.last_check && sv.last_check.ok, nodes].join("|");
      const tr = upsertRow(tbody, `${pool.name}/${sv.name}`, cells, sig);
      tr.dataset.filter = `${pool.name} ${sv.name} ${sv.addr} ${sv.state}`.toLowerCase();
      const w = tr.querySelector("button[data-act=weight]");
      if (w) w.dataset.current = sv.weight;
    }
    dropUnseen(tbody);
    drawSpark(section, pool.name, rpsSum, p99Max);
  }
}

// A closed disclosure per row (the table stays narrow); open, it holds the
// four actions.
function actionButtons(pool, server) {
  const details = document.createElement("details");
  details.className = "actions";
  const summary = document.createElement("summary");
  summary.textContent = "Actions";
  summary.setAttribute("aria-label", `Actions on ${pool}/${server}`);
  const span = document.createElement("span");
  details.append(summary, span);
  for (const [act, label] of [
    ["drain", "Drain"],
    ["maintenance", "Maint"],
    ["enable", "Enable"],
    ["weight", "Weight"],
  ]) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "write";
    b.dataset.act = act;
    b.textContent = label;
    b.setAttribute("aria-label", `${label} ${pool}/${server}`);
    b.addEventListener("click", () => serverAction(pool, server, act, b));
    span.appendChild(b);
  }
  return details;
}

function drawSpark(section, pool, rps, p99) {
  let h = page.history.get(pool);
  if (!h) page.history.set(pool, (h = { rps: [], p99: [] }));
  h.rps.push(rps);
  h.p99.push(p99 || 0);
  if (h.rps.length > HISTORY) {
    h.rps.shift();
    h.p99.shift();
  }
  const svg = section.querySelector("svg.spark");
  const line = (values) => {
    const max = Math.max(...values, 1e-9);
    const step = 140 / Math.max(HISTORY - 1, 1);
    const x0 = 140 - step * (values.length - 1);
    return values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(24 - (v / max) * 22).toFixed(1)}`).join(" ");
  };
  svg.querySelector(".rps").setAttribute("points", line(h.rps));
  svg.querySelector(".p99").setAttribute("points", line(h.p99));
  const label = `requests/s now ${num(rps, 1)} (max ${num(Math.max(...h.rps), 1)}); slowest server's p99 now ${ms(p99)} ms`;
  svg.setAttribute("aria-label", label);
  const legend = section.querySelector(".legend");
  legend.textContent = "";
  const a = document.createElement("span");
  a.className = "legend-rps";
  a.textContent = `req/s ${num(rps, 1)}`;
  const b = document.createElement("span");
  b.className = "legend-p99";
  b.textContent = ` · p99 ${ms(p99)} ms`;
  legend.append(a, b);
}

function renderCluster(s) {
  const sec = $("cluster-section");
  sec.hidden = !s.cluster;
  if (!s.cluster) return;
  const c = s.cluster;
  const sync = c.syncing ? "catching up on sessions" : c.last_sync && c.last_sync.error ? `last catch-up failed: ${c.last_sync.error}` : "sessions in sync";
  $("cluster-facts").textContent =
    `${c.live} live, ${c.dead} dead · gossip on ${c.gossip_addr} · ${sync} · ` +
    `${num(c.datagrams_dropped)} datagrams dropped (${num(c.auth_failures)} failed authentication)`;
  const tbody = $("members").tBodies[0];
  markUnseen(tbody);
  for (const m of c.members) {
    const stale = !m.is_self && m.state === "live" && m.last_heard_ms !== null && m.last_heard_ms > STALE_MS;
    // A live member that drains (`ctl drain-node`) shows as draining.
    const draining = m.state === "live" && m.draining_since_unix_ms != null;
    const state = stale ? "stale" : draining ? "draining" : m.state;
    const heard = m.is_self ? "self" : m.last_heard_ms === null ? "–" : `${num(m.last_heard_ms / 1000, 1)} s ago`;
    const cells = [
      { text: m.name + (m.is_self ? " (this node)" : ""), cls: "text" },
      stateCell(state, stale ? ` (view ${num(m.last_heard_ms / 1000, 0)} s old)` : ""),
      { text: m.addr, cls: "text" },
      { text: String(m.generation), v: m.generation },
      { text: heard, v: m.is_self ? 0 : m.last_heard_ms || 0 },
      { text: m.version || "–", cls: "text" },
      { text: m.sessions === null ? "–" : num(m.sessions), v: m.sessions || 0 },
      { text: m.connections === null ? "–" : num(m.connections), v: m.connections || 0 },
    ];
    upsertRow(tbody, `${m.name}@${m.addr}`, cells, [state, m.generation].join("|"));
  }
  dropUnseen(tbody);
}

function renderListeners(s) {
  const tbody = $("listeners").tBodies[0];
  const before = new Map((page.prev ? page.prev.listeners : []).map((l) => [l.name, l]));
  markUnseen(tbody);
  for (const l of s.listeners) {
    const p = before.get(l.name) || {};
    const hs = l.tls ? rate(l.tls_handshakes, p.tls_handshakes) : null;
    const cells = [
      { text: l.name, cls: "text" },
      { text: l.address || l.bind, cls: "text", title: `configured: ${l.bind}` },
      { text: l.tls ? "yes" : "no", cls: "text" },
      { text: num(l.connections), v: l.connections || 0 },
      { text: num(l.accepted), v: l.accepted || 0 },
      { text: l.tls ? num(hs, 1) : "–", v: hs || 0 },
      { text: l.tls ? num(l.tls_handshake_failures) : "–", v: l.tls_handshake_failures || 0 },
    ];
    upsertRow(tbody, l.name, cells, l.address || l.bind);
  }
  dropUnseen(tbody);
}

function renderZones(s) {
  const tbody = $("zones").tBodies[0];
  const before = new Map(((page.prev && page.prev.rate_limits) || []).map((z) => [z.name, z]));
  markUnseen(tbody);
  for (const z of s.rate_limits || []) {
    const r = rate(z.rejected, (before.get(z.name) || {}).rejected);
    const cells = [
      { text: z.name, cls: "text" },
      { text: z.limit, cls: "text" },
      { text: z.cluster ? "cluster" : "node", cls: "text" },
      { text: `${num(z.keys)} of ${num(z.max_keys)}`, v: z.keys },
      { text: num(z.rejected), v: z.rejected },
      { text: num(r, 1), v: r || 0 },
    ];
    upsertRow(tbody, z.name, cells, String(z.rejected > 0 && r > 0));
  }
  dropUnseen(tbody);
  if (!(s.rate_limits || []).length && !tbody.rows.length) {
    const tr = tbody.insertRow();
    tr.dataset.id = "none";
    const td = tr.insertCell();
    td.colSpan = 6;
    td.className = "text muted";
    td.textContent = "No rate-limit zones are configured.";
  }
}

function renderEvents(s) {
  const ol = $("events");
  const key = s.events.length ? `${s.events[0].at_unix_ms}|${s.events.length}` : "";
  if (ol.dataset.key === key) return;
  ol.dataset.key = key;
  ol.textContent = "";
  for (const e of s.events) {
    const li = document.createElement("li");
    const t = document.createElement("time");
    t.dateTime = new Date(e.at_unix_ms).toISOString();
    t.textContent = new Date(e.at_unix_ms).toLocaleTimeString();
    const where = [e.pool, e.server].filter(Boolean).join("/");
    li.append(t, `${e.kind}${where ? " " + where : ""}: ${e.message}`);
    ol.appendChild(li);
  }
}

// ---- sorting and filtering ----

function makeSortable(table) {
  for (const th of table.tHead.rows[0].cells) {
    if (th.dataset.key === "actions") continue;
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = th.textContent;
    th.textContent = "";
    th.appendChild(b);
    b.addEventListener("click", () => {
      const cur = page.sort.get(table.id);
      const dir = cur && cur.key === th.dataset.key && cur.dir === "ascending" ? "descending" : "ascending";
      page.sort.set(table.id, { key: th.dataset.key, dir });
      applySort(table);
    });
  }
}

function applySort(table) {
  const s = page.sort.get(table.id);
  const heads = [...table.tHead.rows[0].cells];
  heads.forEach((th) => th.removeAttribute("aria-sort"));
  if (!s) return;
  const col = heads.findIndex((th) => th.dataset.key === s.key);
  if (col < 0) return;
  heads[col].setAttribute("aria-sort", s.dir);
  const numeric = heads[col].dataset.type === "num";
  const tbody = table.tBodies[0];
  const rows = [...tbody.rows];
  const val = (tr) => (tr.cells[col] ? tr.cells[col].dataset.v || "" : "");
  const sorted = [...rows].sort((a, b) => {
    const x = val(a);
    const y = val(b);
    const c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
    return s.dir === "ascending" ? c : -c;
  });
  // Move rows only when the order changed: moving a row takes focus away.
  if (sorted.some((r, i) => r !== rows[i])) sorted.forEach((r) => tbody.appendChild(r));
}

function applyFilter() {
  const f = $("filter").value.trim().toLowerCase();
  document.querySelectorAll("section.pool tbody tr").forEach((tr) => {
    tr.classList.toggle("hidden", !!f && !tr.dataset.filter.includes(f));
  });
}

// ---- actions ----

async function act(description, method, path, body) {
  try {
    const r = await api(method, path, body);
    banner(`${description}: done.`, true);
    await poll();
    return r;
  } catch (e) {
    const hint = e.message.startsWith("401") ? " Nothing was changed; check the token." : "";
    banner(`${description} failed: ${e.message}.${hint}`, false);
    return null;
  }
}

async function serverAction(pool, server, action, button) {
  const base = `/api/v1/pools/${encodeURIComponent(pool)}/servers/${encodeURIComponent(server)}`;
  if (action === "weight") {
    const w = prompt(`New weight for ${pool}/${server} (1-256), until the next reload:`, button.dataset.current || "");
    if (w === null) return;
    if (!/^\d+$/.test(w.trim())) {
      banner(`Weight must be a whole number from 1 to 256, not "${w}".`, false);
      return;
    }
    if (!confirm(`Set the weight of ${pool}/${server} to ${w.trim()}?`)) return;
    await act(`Weight of ${pool}/${server}`, "PUT", `${base}/weight`, { weight: Number(w.trim()) });
    return;
  }
  const what = { drain: "Drain", maintenance: "Put into maintenance", enable: "Enable" }[action];
  if (!confirm(`${what} ${pool}/${server}?`)) return;
  await act(`${what} ${pool}/${server}`, "POST", `${base}/${action}`);
}

async function reloadConfig() {
  if (!confirm("Reload the configuration from its file?")) return;
  const r = await act("Reload", "POST", "/api/v1/reload");
  if (r && r.warnings && r.warnings.length) banner(`Reloaded with warnings: ${r.warnings.join("; ")}`, true);
}

async function lookupSession(ev) {
  ev.preventDefault();
  const key = $("session-key").value.trim();
  const out = $("session-result");
  out.textContent = "";
  if (!key) return;
  let records;
  try {
    records = await api("GET", `/api/v1/sessions?key=${encodeURIComponent(key)}`);
  } catch (e) {
    out.textContent = `No session: ${e.message}`;
    return;
  }
  for (const r of records) {
    const p = document.createElement("p");
    p.textContent = `${r.pool}: ${r.key} → ${r.server} (written by ${r.origin}, expires ${new Date(r.expires_at_unix_ms).toLocaleString()}) `;
    const unpin = document.createElement("button");
    unpin.type = "button";
    unpin.className = "write";
    unpin.textContent = "Unpin";
    unpin.addEventListener("click", async () => {
      if (!confirm(`Unpin ${r.key} from every pool? Its next connection picks a server anew.`)) return;
      await act(`Unpin ${r.key}`, "DELETE", `/api/v1/sessions/${encodeURIComponent(r.key)}`);
      lookupSession(new Event("submit"));
    });
    const move = document.createElement("button");
    move.type = "button";
    move.className = "write";
    move.textContent = "Move…";
    move.addEventListener("click", async () => {
      const pool = (page.status.pools || []).find((x) => x.name === r.pool);
      const names = pool ? pool.servers.map((x) => x.name).join(", ") : "";
      const to = prompt(`Move ${r.key} in pool ${r.pool} to which server? (${names})`, "");
      if (!to) return;
      if (!confirm(`Pin ${r.key} to ${r.pool}/${to.trim()}?`)) return;
      await act(`Move ${r.key}`, "POST", `/api/v1/sessions/${encodeURIComponent(r.key)}/move`, {
        pool: r.pool,
        server: to.trim(),
      });
      lookupSession(new Event("submit"));
    });
    p.append(unpin, " ", move);
    out.appendChild(p);
  }
  if (page.status) renderMode(page.status);
}

// ---- the token ----

function tokenButton() {
  if (token()) {
    sessionStorage.removeItem(TOKEN_KEY);
    banner("The admin token is forgotten; the page is read-only.", true);
    if (page.status) renderMode(page.status);
    return;
  }
  $("token-form").hidden = false;
  $("token-button").hidden = true;
  $("token-input").focus();
}

function tokenSubmit(ev) {
  ev.preventDefault();
  const v = $("token-input").value.trim();
  $("token-input").value = "";
  $("token-form").hidden = true;
  $("token-button").hidden = false;
  if (v) sessionStorage.setItem(TOKEN_KEY, v);
  if (page.status) renderMode(page.status);
  $("token-button").focus();
}

function tokenCancel() {
  $("token-input").value = "";
  $("token-form").hidden = true;
  $("token-button").hidden = false;
  $("token-button").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  $("refresh").addEventListener("change", poll);
  $("filter").addEventListener("input", applyFilter);
  $("token-button").addEventListener("click", tokenButton);
  $("token-form").addEventListener("submit", tokenSubmit);
  $("token-cancel").addEventListener("click", tokenCancel);
  $("reload-button").addEventListener("click", reloadConfig);
  $("session-form").addEventListener("submit", lookupSession);
  poll();
});

// toolgate's dashboard: plain DOM over the admin API (/admin/api), no framework, no CDN.
// Everything shown is built with textContent: tool names, descriptions and arguments come
// from agents and upstream servers, and must never become markup.
"use strict";

const REFRESH_MS = 2000;
const state = { token: sessionStorage.getItem("toolgate-admin-token"), tab: "overview", timer: null, policies: [] };

const $ = (id) => document.getElementById(id);

function element(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = cell instanceof Node ? document.createElement("td") : element("td", cell);
    if (cell instanceof Node) td.appendChild(cell);
    tr.appendChild(td);
  }
  return tr;
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch("/admin/api" + path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || "HTTP " + response.status);
  return data;
}

function showError(e) {
  $("error").textContent = e ? String(e.message || e) : "";
}

// ---- sign-in ------------------------------------------------------------------------
async function signIn(token) {
  state.token = token;
  try {
    const me = await api("GET", "");
    sessionStorage.setItem("toolgate-admin-token", token);
    $("whoami").textContent = me.you.name + " (" + me.you.role + ")";
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    $("login-error").textContent = "";
    show(state.tab);
  } catch (e) {
    state.token = null;
    sessionStorage.removeItem("toolgate-admin-token");
    $("login-error").textContent = "Not signed in: " + e.message;
  }
}

function signOut() {
  sessionStorage.removeItem("toolgate-admin-token");
  location.reload();
}

// ---- tabs ---------------------------------------------------------------------------
const renderers = {};

function show(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.tab === tab);
  }
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== tab;
  clearInterval(state.timer);
  const refresh = () => renderers[tab]().then(() => showError(null), showError);
  refresh();
  // The live pages follow the log as it grows.
  if (tab === "overview" || tab === "calls" || tab === "approvals") state.timer = setInterval(refresh, REFRESH_MS);
}

// ---- overview: calls and denials per server, per minute, over the last hour ----------
const REFUSED = new Set(["deny", "hide", "rate_limited"]);

renderers.overview = async () => {
  const [{ servers }, { records }] = await Promise.all([
    api("GET", "/servers"),
    api("GET", "/audit?since=1h&limit=100000"),
  ]);
  const now = Date.now();
  const cards = $("server-cards");
  cards.replaceChildren();
  for (const server of servers) {
    const calls = records.filter((r) => r.server === server.name && r.method === "tools/call");
    const denials = calls.filter((r) => REFUSED.has(r.decision));
    const card = element("div", null, "card");
    card.appendChild(element("h3", server.name + (server.ready ? "" : " (upstream not running)")));
    const counts = element("div", null, "counts");
    const callCount = element("span", calls.length);
    callCount.id = "calls-" + server.name;
    const denialCount = element("span", denials.length);
    denialCount.id = "denials-" + server.name;
    counts.append(element("span", "calls "), callCount, element("span", "denials "), denialCount);
    card.appendChild(counts);
    card.appendChild(plot(calls, denials, now));
    cards.appendChild(card);
  }
};

// Two polylines, calls (dark) and denials (red), one point per minute of the last hour.
function plot(calls, denials, now) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 90");
  svg.setAttribute("preserveAspectRatio", "none");
  const perMinute = (list) => {
    const bins = new Array(60).fill(0);
    for (const r of list) {
      const age = Math.floor((now - Date.parse(r.ts)) / 60000);
      if (age >= 0 && age < 60) bins[59 - age] += 1;
    }
    return bins;
  };
  const series = [[perMinute(calls), "#1d2330"], [perMinute(denials), "#a3261c"]];
  const top = Math.max(1, ...series[0][0]);
  for (const [bins, colour] of series) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colour);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("points", bins.map((n, i) => i * 10 + "," + (85 - (n / top) * 80)).join(" "));
    svg.appendChild(line);
  }
  return svg;
}

// ---- the live log of calls ----------------------------------------------------------
renderers.calls = async () => {
  const filters = new URLSearchParams({ limit: "200" });
  for (const [key, value] of new FormData($("call-filter"))) if (value) filters.set(key, value);
  const { records } = await api("GET", "/audit?" + filters);
  const rows = $("call-rows");
  rows.replaceChildren();
  for (const r of records.slice().reverse()) {
    const tr = row([r.ts, r.grant, r.server, r.tool || r.method, r.decision, r.rule || "", r.upstream_status || ""]);
    tr.children[4].className = "decision-" + r.decision;
    tr.dataset.requestId = r.request_id;
    rows.appendChild(tr);
  }
};

// ---- approvals ----------------------------------------------------------------------
renderers.approvals = async () => {
  const { approvals } = await api("GET", "/approvals?status=pending");
  const rows = $("approval-rows");
  rows.replaceChildren();
  $("approvals-empty").hidden = approvals.length > 0;
  for (const a of approvals) {
    const buttons = element("span");
    for (const verdict of ["approve", "deny"]) {
      const button = element("button", verdict === "approve" ? "Approve" : "Deny");
      button.className = verdict;
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          await api("POST", "/approvals/" + encodeURIComponent(a.id) + "/" + verdict, { reason: "from the dashboard" });
          await renderers.approvals();
        } catch (e) {
          showError(e);
          button.disabled = false;
        }
      });
      buttons.appendChild(button);
    }
    const tr = row([a.created, a.grant, a.server, a.tool, JSON.stringify(a.arguments), a.message || a.rule, buttons]);
    tr.dataset.approvalId = a.id;
    rows.appendChild(tr);
  }
};

// ---- servers and their tools --------------------------------------------------------
renderers.servers = async () => {
  const { servers } = await api("GET", "/servers");
  const list = $("server-list");
  list.replaceChildren();
  for (const server of servers) {
    const card = element("div", null, "card");
    card.appendChild(element("h3", server.name + " — " + server.upstream.transport + (server.ready ? "" : " (not running)")));
    const table = element("table");
    table.appendChild(row(["tool", "category", "risk", "why"]));
    card.appendChild(table);
    list.appendChild(card);
    api("GET", "/servers/" + encodeURIComponent(server.name) + "/tools").then(({ tools }) => {
      for (const t of tools) {
        const tr = row([t.name, t.category, t.risk, (t.evidence || []).join("; ")]);
        tr.children[2].className = "risk-" + t.risk;
        table.appendChild(tr);
      }
    }, (e) => card.appendChild(element("p", String(e.message), "error")));
  }
};

// ---- grants -------------------------------------------------------------------------
renderers.grants = async () => {
  const { grants } = await api("GET", "/grants");
  const rows = $("grant-rows");
  rows.replaceChildren();
  for (const g of grants) {
    const policies = Object.keys(g.policies || {}).join(", ");
    rows.appendChild(row([g.name, g.origin, g.status, policies, g.expires || ""]));
  }
};

// ---- policies, and trying a call against one ----------------------------------------
renderers.policies = async () => {
  const { policies } = await api("GET", "/policies");
  state.policies = policies;
  const rows = $("policy-rows");
  rows.replaceChildren();
  const select = $("evaluate-policy");
  const chosen = select.value;
  select.replaceChildren();
  policies.forEach((p, i) => {
    const file = p.file || {};
    const status = file.status === "invalid" ? "invalid: " + file.errors.join("; ") : file.status;
    rows.appendChild(row([p.grant, p.server, p.source, p.version, status]));
    const option = element("option", p.grant + " on " + p.server);
    option.value = String(i);
    select.appendChild(option);
  });
  if (chosen) select.value = chosen;
};

async function evaluate(event) {
  event.preventDefault();
  const output = $("evaluate-result");
  try {
    const policy = state.policies[Number($("evaluate-policy").value)];
    const args = JSON.parse($("evaluate-arguments").value || "{}");
    const d = await api("POST", "/policies/evaluate", {
      grant: policy.grant, server: policy.server, tool: $("evaluate-tool").value, arguments: args,
    });
    output.textContent = d.decision + (d.rule ? "\nrule: " + d.rule : "") + (d.message ? "\nmessage: " + d.message : "")
      + (d.limits.length ? "\nlimits: " + d.limits.join(", ") : "");
    output.dataset.decision = d.decision;
  } catch (e) {
    output.textContent = "Not decided: " + e.message;
  }
}

// ---- wiring -------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token").value.trim());
  });
  $("logout").addEventListener("click", signOut);
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => show(button.dataset.tab));
  }
  $("call-filter").addEventListener("input", () => renderers.calls().catch(showError));
  $("evaluate-form").addEventListener("submit", evaluate);
  if (state.token) signIn(state.token);
});

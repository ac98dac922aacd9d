/* layerforge dashboard: plain JS, no build step. Hash routes:
 *   #/                  campaigns
 *   #/campaigns/ID      one campaign (Pareto front, hypervolume, funnel, candidates)
 *   #/candidates/ID     one candidate (curve, LaTeX, export)
 * Live updates come from the campaign's server-sent event stream. */
"use strict";

const API = "/api/v1";
const view = document.getElementById("view");
const banner = document.getElementById("error-banner");
const tokenInput = document.getElementById("api-token");
let cleanup = [];  // timers and event sources of the current page

tokenInput.value = localStorage.getItem("layerforge-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("layerforge-token", tokenInput.value));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function showError(message) {
  banner.textContent = message;
  banner.hidden = !message;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method && options.method !== "GET" && tokenInput.value) {
    headers["Authorization"] = "Bearer " + tokenInput.value;
  }
  const response = await fetch(API + path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

const fmt = (v, digits = 4) => (v === null || v === undefined) ? "–" : (typeof v === "number" ? v.toFixed(digits) : String(v));
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  return s < 90 ? s + " s" : s < 5400 ? Math.round(s / 60) + " min" : (s / 3600).toFixed(1) + " h";
}
const badge = (status) => el("span", { class: "badge " + status, "data-testid": "status-badge", text: status });

function leave() {
  for (const stop of cleanup) { try { stop(); } catch (e) { /* already stopped */ } }
  cleanup = [];
}

function every(ms, fn) {
  const id = setInterval(fn, ms);
  cleanup.push(() => clearInterval(id));
}

// ------------------------------------------------------------------ campaign list

async function campaignList() {
  view.replaceChildren(el("h1", { text: "Campaigns" }),
    el("table", { id: "campaign-table", "data-testid": "campaign-table" },
      el("thead", {}, el("tr", {}, ["id", "name", "space", "strategy", "status", "progress", "created"].map((h) => el("th", { text: h })))),
      el("tbody", { id: "campaign-rows" })),
    el("p", { class: "muted", id: "campaign-empty", hidden: "", text: "No campaigns yet: POST a spec to /api/v1/campaigns or run `layerforge submit SPEC.json`." }));
  async function refresh() {
    const page = await api("/campaigns?limit=100");
    const rows = page.items.map((c) => el("tr", {
      class: "clickable", "data-testid": "campaign-row", "data-id": c.id,
      onclick: () => { location.hash = "#/campaigns/" + c.id; },
    },
      el("td", { text: c.id }),
      el("td", {}, el("a", { href: "#/campaigns/" + c.id, text: c.name })),
      el("td", { text: c.space_kind }), el("td", { text: c.strategy }),
      el("td", {}, badge(c.status)),
      el("td", {}, el("progress", { max: c.progress.budget || 1, value: c.progress.candidates }),
        " " + c.progress.candidates + " / " + c.progress.budget),
      el("td", { text: new Date(c.created_at).toLocaleString() })));
    document.getElementById("campaign-rows").replaceChildren(...rows);
    document.getElementById("campaign-empty").hidden = rows.length > 0;
  }
  await refresh();
  every(3000, () => refresh().catch((e) => showError(e.message)));
}

// ------------------------------------------------------------------ campaign page

const ID_AXIS = "candidate id";

async function campaignPage(id) {
  const state = { detail: null, pareto: null, cursors: [null], pageIndex: 0, status: "", lastEvent: 0 };
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/", text: "← campaigns" })),
    el("h1", { id: "campaign-title" }),
    el("div", { class: "controls" },
      el("button", { id: "pause-button", "data-testid": "pause", onclick: () => act("pause") }, "Pause"),
      el("button", { id: "resume-button", "data-testid": "resume", onclick: () => act("resume") }, "Resume"),
      el("button", { id: "cancel-button", "data-testid": "cancel", onclick: () => act("cancel") }, "Cancel"),
      el("span", { id: "live-indicator", class: "muted" })),
    el("div", { class: "stats", id: "campaign-stats", "data-testid": "campaign-stats" }),
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", { text: "Pareto front" }),
        el("div", { class: "controls" },
          el("label", {}, "x ", el("select", { id: "x-objective", "data-testid": "x-objective" })),
          el("label", {}, "y ", el("select", { id: "y-objective", "data-testid": "y-objective" })),
          el("span", { class: "muted", id: "pareto-count" })),
        el("div", { id: "pareto-plot", class: "plot", "data-testid": "pareto-plot" })),
      el("section", { class: "card" }, el("h2", { text: "Hypervolume" }),
        el("div", { id: "hv-plot", class: "plot", "data-testid": "hv-plot" })),
      el("section", { class: "card" }, el("h2", { text: "Rejection funnel" }),
        el("div", { id: "funnel-plot", class: "plot", "data-testid": "funnel-plot" }))),
    el("section", { class: "card", style: "margin-top:1rem" },
      el("h2", { text: "Candidates" }),
      el("div", { class: "controls" },
        el("label", {}, "status ", el("select", { id: "candidate-status", onchange: (e) => { state.status = e.target.value; state.cursors = [null]; state.pageIndex = 0; loadCandidates(); } },
          ["", "completed", "rejected", "running", "proposed", "failed", "duplicate"].map((s) => el("option", { value: s, text: s || "any" })))),
        el("button", { id: "candidates-prev", onclick: () => { state.pageIndex -= 1; loadCandidates(); } }, "‹ previous"),
        el("button", { id: "candidates-next", onclick: () => { state.pageIndex += 1; loadCandidates(); } }, "next ›"),
        el("span", { id: "candidates-page", class: "muted" })),
      el("table", { id: "candidates-table", "data-testid": "candidates-table" },
        el("thead", { id: "candidates-head" }), el("tbody", { id: "candidates-rows" }))));

  async function act(action) {
    try { await api("/campaigns/" + id + "/" + action, { method: "POST" }); showError(""); await refresh(); }
    catch (e) { showError(e.message); }
  }

  function objectiveNames() { return state.detail.objectives.map((o) => o.name); }

  function fillAxes() {
    const xs = document.getElementById("x-objective"), ys = document.getElementById("y-objective");
    if (xs.options.length) return;
    const names = objectiveNames().concat([ID_AXIS]);
    for (const select of [xs, ys]) for (const n of names) select.append(el("option", { value: n, text: n }));
    xs.value = names.length > 2 ? names[0] : ID_AXIS;
    ys.value = names.length > 2 ? names[1] : names[0];
    xs.onchange = ys.onchange = drawPareto;
  }

  function drawStats() {
    const d = state.detail;
    document.getElementById("campaign-title").replaceChildren(d.name + " ", badge(d.status));
    const stats = [["candidates", d.progress.candidates + " / " + d.progress.budget],
      ["completed", d.counts.completed], ["rejected", d.counts.rejected],
      ["hypervolume", fmt(d.hypervolume)], ["elapsed", duration(d.elapsed_seconds)],
      ["left (estimate)", d.estimate.remaining_seconds === null ? "–" : duration(d.estimate.remaining_seconds)]];
    for (const [name, value] of Object.entries(d.best)) stats.push(["best " + name, fmt(value)]);
    document.getElementById("campaign-stats").replaceChildren(...stats.map(([k, v]) => el("div", { "data-stat": k }, el("span", { text: k }), String(v))));
    document.getElementById("pause-button").disabled = !["queued", "running"].includes(d.status);
    document.getElementById("resume-button").disabled = d.status !== "paused";
    document.getElementById("cancel-button").disabled = !["queued", "running", "paused"].includes(d.status);
  }

  function drawPareto() {
    const p = state.pareto;
    if (!p) return;
    const xName = document.getElementById("x-objective").value, yName = document.getElementById("y-objective").value;
    const value = (point, name) => name === ID_AXIS ? point.candidate_id : point.values[name];
    const trace = (points, name, marker) => ({
      type: "scatter", mode: "markers", name,
      x: points.map((q) => value(q, xName)), y: points.map((q) => value(q, yName)),
      text: points.map((q) => "#" + q.candidate_id + " " + q.text), customdata: points.map((q) => q.candidate_id),
      hovertemplate: "%{text}<br>%{x}, %{y}<extra></extra>", marker,
    });
    const isBase = (q) => q.origin === "baseline";
    const traces = [
      trace(p.dominated.filter((q) => !isBase(q)), "dominated", { color: "#b8bcc6", size: 8 }),
      trace(p.front.filter((q) => !isBase(q)), "Pareto front", { color: "#2f6fdf", size: 11 }),
      trace(p.front.concat(p.dominated).filter(isBase), "baseline", { color: "#d9480f", size: 15, symbol: "star" }),
    ];
    document.getElementById("pareto-count").textContent = p.front.length + " on the front, " + p.dominated.length + " dominated";
    const layout = { margin: { t: 10, r: 10, b: 45, l: 55 }, xaxis: { title: { text: xName } }, yaxis: { title: { text: yName } },
      legend: { orientation: "h" }, hovermode: "closest" };
    const plot = document.getElementById("pareto-plot");
    Plotly.react(plot, traces, layout, { displaylogo: false, responsive: true });
    if (!plot.dataset.bound) {
      plot.dataset.bound = "1";
      plot.on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        if (point && point.customdata !== undefined) location.hash = "#/candidates/" + point.customdata;
      });
    }
  }

  async function drawHistory() {
    const h = await api("/campaigns/" + id + "/hypervolume?max_points=1000");
    Plotly.react("hv-plot", [{ type: "scatter", mode: "lines", x: h.points.map((p) => p.evaluations), y: h.points.map((p) => p.hypervolume), line: { color: "#2f6fdf" } }],
      { margin: { t: 10, r: 10, b: 45, l: 55 }, xaxis: { title: { text: "evaluations" } }, yaxis: { title: { text: "hypervolume" } } },
      { displaylogo: false, responsive: true });
  }

  function drawFunnel() {
    const d = state.detail;
    const stages = Object.keys(d.funnel);
    const labels = stages.concat(["completed"]);
    const counts = stages.map((s) => d.funnel[s].rejected).concat([d.counts.completed]);
    Plotly.react("funnel-plot", [{ type: "bar", x: labels, y: counts, marker: { color: labels.map((l) => l === "completed" ? "#2f9e44" : "#e8590c") } }],
      { margin: { t: 10, r: 10, b: 45, l: 45 }, yaxis: { title: { text: "candidates" } } }, { displaylogo: false, responsive: true });
  }

  async function loadCandidates() {
    const names = objectiveNames();
    const params = new URLSearchParams({ limit: "20" });
    if (state.status) params.set("status", state.status);
    if (names.length) params.set("sort", names[0]);
    const cursor = state.cursors[state.pageIndex];
    if (cursor) params.set("cursor", cursor);
    const page = await api("/campaigns/" + id + "/candidates?" + params);
    state.cursors[state.pageIndex + 1] = page.next_cursor;
    document.getElementById("candidates-head").replaceChildren(el("tr", {}, ["id", "layer", "origin", "status"].concat(names).map((h) => el("th", { text: h }))));
    document.getElementById("candidates-rows").replaceChildren(...page.items.map((c) => el("tr", {
      class: "clickable", "data-testid": "candidate-row", "data-id": c.id, onclick: () => { location.hash = "#/candidates/" + c.id; },
    }, el("td", { text: c.id }), el("td", {}, el("a", { href: "#/candidates/" + c.id }, el("code", { text: c.text }))),
      el("td", { text: c.origin }), el("td", {}, badge(c.status)), names.map((n) => el("td", { text: fmt(c.objectives[n]) })))));
    document.getElementById("candidates-prev").disabled = state.pageIndex === 0;
    document.getElementById("candidates-next").disabled = !page.next_cursor;
    document.getElementById("candidates-page").textContent = "page " + (state.pageIndex + 1);
  }

  async function refresh() {
    state.detail = await api("/campaigns/" + id);
    fillAxes();
    drawStats();
    drawFunnel();
    state.pareto = await api("/campaigns/" + id + "/pareto");
    drawPareto();
    await drawHistory();
    if (state.pageIndex === 0) await loadCandidates();
  }

  await refresh();
  await loadCandidates();

  // Live: refresh (at most every 1.5 s) when the event stream reports progress.
  let pending = null;
  const schedule = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh().catch((e) => showError(e.message)); }, 1500);
  };
  cleanup.push(() => pending && clearTimeout(pending));
  if (window.EventSource && !["completed", "cancelled", "failed"].includes(state.detail.status)) {
    const source = new EventSource(API + "/campaigns/" + id + "/events");
    const live = document.getElementById("live-indicator");
    live.textContent = "● live";
    for (const kind of ["progress", "candidate", "status", "transfer", "resumed"]) {
      source.addEventListener(kind, (e) => { state.lastEvent = Number(e.lastEventId) || state.lastEvent; schedule(); });
    }
    source.addEventListener("end", () => { source.close(); live.textContent = "finished"; schedule(); });
    cleanup.push(() => source.close());
  }
}

// ------------------------------------------------------------------ candidate page

async function candidatePage(id) {
  const c = await api("/candidates/" + id);
  const formats = ["pytorch", "numpy", "jax", "latex", "sympy", "json"];
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/campaigns/" + c.campaign_id, id: "back-to-campaign", text: "← campaign " + c.campaign_id })),
    el("h1", {}, "Candidate " + c.id + " ", badge(c.status)),
    el("div", { class: "grid" },
      el("section", { class: "card" },
        el("h2", { text: "Layer" }),
        el("p", {}, el("code", { id: "candidate-text", "data-testid": "candidate-text", text: c.text })),
        el("h2", { text: "LaTeX" }),
        el("pre", {}, el("code", { id: "candidate-latex", "data-testid": "candidate-latex", text: c.latex || "(no LaTeX form)" })),
        el("h2", { text: "Export" }),
        el("div", { class: "controls", id: "export-buttons" }, formats.map((f) => el("a", {
          class: "button", href: API + "/candidates/" + c.id + "/export?format=" + f, download: "",
          "data-testid": "export-" + f, id: "export-" + f, text: f,
        }))),
        el("h2", { text: "Objectives" }),
        el("table", { id: "candidate-objectives" }, Object.entries(c.objectives).map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: fmt(v) })))),
        c.rejection ? el("p", { id: "candidate-rejection" }, "Rejected at ", el("b", { text: c.rejection.stage }), ": " + c.rejection.reason) : null,
        el("h2", { text: "Lineage" }),
        c.lineage.length ? el("ol", { id: "candidate-lineage" }, c.lineage.map((a) => el("li", {}, el("a", { href: "#/candidates/" + a.id, text: "#" + a.id }), " ", el("code", { text: a.text }), " (" + a.origin + ")")))
          : el("p", { class: "muted", text: "origin: " + c.origin })),
      el("section", { class: "card" },
        el("h2", { text: c.space === "normact" ? "Layer response" : "Function and derivative" }),
        el("div", { id: "curve-plot", class: "plot", "data-testid": "curve-plot" }),
        el("p", { class: "muted", id: "curve-description" }))),
    el("section", { class: "card", style: "margin-top:1rem" }, el("h2", { text: "Evaluations" }),
      el("table", { id: "candidate-evaluations" },
        el("tr", {}, ["id", "kind", "seed", "status", "attempts", "error"].map((h) => el("th", { text: h }))),
        c.evaluations.map((e) => el("tr", {}, [e.id, e.kind, e.seed, e.status, e.attempts, e.error || ""].map((v) => el("td", { text: v })))))));
  try {
    const curve = await api("/candidates/" + id + "/curve?points=201");
    const traces = [{ type: "scatter", mode: curve.kind === "activation" ? "lines" : "markers", name: curve.kind === "activation" ? "f(x)" : "output", x: curve.x, y: curve.y, line: { color: "#2f6fdf" }, marker: { size: 4 } }];
    if (curve.dy) traces.push({ type: "scatter", mode: "lines", name: "df/dx", x: curve.x, y: curve.dy, line: { color: "#e8590c", dash: "dash" } });
    Plotly.newPlot("curve-plot", traces, { margin: { t: 10, r: 10, b: 45, l: 50 }, xaxis: { title: { text: "x" } }, legend: { orientation: "h" } }, { displaylogo: false, responsive: true });
    document.getElementById("curve-description").textContent = curve.description;
  } catch (e) {
    document.getElementById("curve-description").textContent = e.message;
  }
}

// ------------------------------------------------------------------ router

async function route() {
  leave();
  showError("");
  const hash = location.hash || "#/";
  let match;
  try {
    if ((match = hash.match(/^#\/campaigns\/(\d+)$/))) await campaignPage(match[1]);
    else if ((match = hash.match(/^#\/candidates\/(\d+)$/))) await candidatePage(match[1]);
    else await campaignList();
    document.body.dataset.ready = hash;
  } catch (e) {
    showError(e.message);
  }
}

window.addEventListener("hashchange", route);
route();

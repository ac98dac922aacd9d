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

// PNG / SVG drawn by Plotly in the browser, CSV from the API (the same route scripts use).
function downloads(plotId, csvUrl, stem) {
  const image = (format) => () => Plotly.downloadImage(plotId, { format, filename: stem, width: 1000, height: 640, scale: format === "png" ? 2 : 1 });
  return el("div", { class: "downloads", "data-testid": plotId + "-downloads" }, el("span", { class: "muted", text: "download" }),
    el("button", { type: "button", "data-testid": plotId + "-png", onclick: image("png") }, "PNG"),
    el("button", { type: "button", "data-testid": plotId + "-svg", onclick: image("svg") }, "SVG"),
    el("a", { class: "button", href: csvUrl, download: "", "data-testid": plotId + "-csv" }, "CSV"));
}

// The campaign's proxy-fidelity warnings (campaign detail `fidelity.warnings`), if any.
function fidelityWarnings(detail, id) {
  const warnings = (detail && detail.fidelity && Array.isArray(detail.fidelity.warnings)) ? detail.fidelity.warnings : [];
  if (!warnings.length) return null;
  return el("div", { class: "warning", id, "data-testid": "fidelity-warnings" },
    el("b", { text: "Proxy fidelity: " }), "these proxies may not tell the layers apart reliably.",
    el("ul", {}, warnings.map((w) => el("li", { text: String(w) }))));
}

// Why a campaign failed (campaign detail `error`), above everything else on its page.
function failureNotice(target, detail) {
  const failed = detail.status === "failed" || Boolean(detail.error);
  target.hidden = !failed;
  if (!failed) { target.replaceChildren(); return; }
  target.replaceChildren(el("b", { text: "This campaign " + (detail.status === "failed" ? "failed" : "reported an error") + ": " }),
    el("span", { "data-testid": "campaign-error-reason", text: detail.error || "no reason was recorded" }));
}

// LaTeX typeset by the locally served KaTeX (raw source when KaTeX is missing or fails).
function renderLatex(target, latex) {
  if (!latex) { target.textContent = "(no LaTeX form)"; return; }
  if (window.katex) {
    try { katex.render(latex, target, { displayMode: true, throwOnError: false }); return; }
    catch (e) { /* fall through to the raw source */ }
  }
  target.textContent = latex;
}

const fmtBox = (values) => Object.entries(values).map(([k, v]) => k + " = " + String(v)).join(", ");

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
      el("td", { title: c.error || null }, badge(c.status),
        c.error ? el("div", { class: "failure-reason", "data-testid": "campaign-row-error", text: c.error }) : null),
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
    el("div", { class: "failure", id: "campaign-error", "data-testid": "campaign-error", role: "alert", hidden: "" }),
    el("div", { class: "controls" },
      el("button", { id: "pause-button", "data-testid": "pause", onclick: () => act("pause") }, "Pause"),
      el("button", { id: "resume-button", "data-testid": "resume", onclick: () => act("resume") }, "Resume"),
      el("button", { id: "cancel-button", "data-testid": "cancel", onclick: () => act("cancel") }, "Cancel"),
      el("span", { id: "live-indicator", class: "muted" })),
    el("div", { class: "stats", id: "campaign-stats", "data-testid": "campaign-stats" }),
    el("p", { class: "warning", id: "campaign-waiting", "data-testid": "campaign-waiting", hidden: "" }),
    el("p", { class: "muted", id: "hv-reference", "data-testid": "hv-reference" }),
    el("div", { id: "campaign-fidelity" }),
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", { text: "Pareto front" }),
        el("div", { class: "controls" },
          el("label", {}, "x ", el("select", { id: "x-objective", "data-testid": "x-objective" })),
          el("label", {}, "y ", el("select", { id: "y-objective", "data-testid": "y-objective" })),
          el("label", { title: "log scale, for cost objectives" }, el("input", { type: "checkbox", id: "log-x", "data-testid": "log-x" }), " log x"),
          el("label", { title: "log scale, for cost objectives" }, el("input", { type: "checkbox", id: "log-y", "data-testid": "log-y" }), " log y"),
          el("span", { class: "muted", id: "pareto-count" })),
        el("div", { id: "pareto-plot", class: "plot", "data-testid": "pareto-plot" }),
        downloads("pareto-plot", API + "/campaigns/" + id + "/pareto/download?format=csv", "campaign-" + id + "-pareto")),
      el("section", { class: "card" }, el("h2", { text: "Hypervolume" }),
        el("div", { id: "hv-plot", class: "plot", "data-testid": "hv-plot" }),
        downloads("hv-plot", API + "/campaigns/" + id + "/hypervolume/download?format=csv", "campaign-" + id + "-hypervolume")),
      el("section", { class: "card" }, el("h2", { text: "Rejection funnel" }),
        el("div", { id: "funnel-plot", class: "plot", "data-testid": "funnel-plot" }))),
    el("section", { class: "card", style: "margin-top:1rem", id: "transfer-card", "data-testid": "transfer-card", hidden: "" },
      el("h2", { text: "Confirmed on held-out runs" }),
      el("p", { class: "muted", id: "transfer-note" }),
      el("table", { id: "transfer-table", "data-testid": "transfer-table" },
        el("thead", { id: "transfer-head" }), el("tbody", { id: "transfer-rows" }))),
    el("section", { class: "card", style: "margin-top:1rem" },
      el("h2", { text: "Candidates" }),
      el("div", { class: "controls" },
        el("label", {}, "status ", el("select", { id: "candidate-status", onchange: (e) => { state.status = e.target.value; state.cursors = [null]; state.pageIndex = 0; loadCandidates(); } },
          ["", "completed", "rejected", "running", "proposed", "failed", "duplicate", "cancelled"].map((s) => el("option", { value: s, text: s || "any" })))),
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
    document.getElementById("log-x").onchange = document.getElementById("log-y").onchange = drawPareto;
  }

  // Costs (runtime, nodes, params) are minimized and positive: they may use a log scale.
  function isCost(name) {
    const objective = state.detail.objectives.find((o) => o.name === name);
    return Boolean(objective && !objective.maximize);
  }
  function maximized(name) {
    const objective = state.detail.objectives.find((o) => o.name === name);
    return Boolean(objective && objective.maximize);
  }

  function drawStats() {
    const d = state.detail;
    document.getElementById("campaign-title").replaceChildren(d.name + " ", badge(d.status));
    failureNotice(document.getElementById("campaign-error"), d);
    const stats = [["candidates", d.progress.candidates + " / " + d.progress.budget],
      ["completed", d.counts.completed], ["rejected", d.counts.rejected],
      ["hypervolume", d.hypervolume_normalized === null || d.hypervolume_normalized === undefined ? fmt(d.hypervolume) : fmt(d.hypervolume_normalized, 3) + " of the box"],
      ["elapsed", duration(d.elapsed_seconds)],
      ["left (estimate)", d.estimate.remaining_seconds === null ? "–" : duration(d.estimate.remaining_seconds)]];
    for (const [name, value] of Object.entries(d.best)) stats.push(["best " + name, fmt(value)]);
    document.getElementById("campaign-stats").replaceChildren(...stats.map(([k, v]) => el("div", { "data-stat": k }, el("span", { text: k }), String(v))));
    const box = d.hypervolume_box;
    document.getElementById("hv-reference").textContent = box
      ? "Hypervolume as a fraction of the box from the reference point (" + fmtBox(box.reference) + ") to the ideal point (" + fmtBox(box.ideal) + "); raw value " + fmt(d.hypervolume, 4) + "."
      : "No reference point recorded for this campaign.";
    const waiting = document.getElementById("campaign-waiting");
    waiting.hidden = !d.waiting;  // the campaign waits for evaluators (no Ray node can take work)
    waiting.textContent = d.waiting ? "Waiting: " + d.waiting : "";
    document.getElementById("campaign-fidelity").replaceChildren(...[fidelityWarnings(d, "campaign-fidelity-warnings")].filter(Boolean));
    document.getElementById("pause-button").disabled = !["queued", "running"].includes(d.status);
    document.getElementById("resume-button").disabled = d.status !== "paused";
    document.getElementById("cancel-button").disabled = !["queued", "running", "paused"].includes(d.status);
  }

  // The 2-D front of the chosen axes: the points no other point beats on both, by x.
  function front2d(points, xName, yName) {
    const sx = maximized(xName) ? -1 : 1, sy = maximized(yName) ? -1 : 1;
    const finite = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    finite.sort((a, b) => sx * a.x - sx * b.x || sy * a.y - sy * b.y);
    const front = [];
    let best = Infinity;
    for (const p of finite) if (sy * p.y < best) { front.push(p); best = sy * p.y; }
    return front.sort((a, b) => a.x - b.x);
  }

  function drawPareto() {
    const p = state.pareto;
    if (!p) return;
    const xName = document.getElementById("x-objective").value, yName = document.getElementById("y-objective").value;
    const logX = document.getElementById("log-x"), logY = document.getElementById("log-y");
    logX.disabled = !isCost(xName); logY.disabled = !isCost(yName);
    if (logX.disabled) logX.checked = false;
    if (logY.disabled) logY.checked = false;
    const value = (point, name) => name === ID_AXIS ? point.candidate_id : point.values[name];
    const trace = (points, name, marker) => ({
      type: "scatter", mode: "markers", name,
      x: points.map((q) => value(q, xName)), y: points.map((q) => value(q, yName)),
      text: points.map((q) => "#" + q.candidate_id + " " + q.text), customdata: points.map((q) => q.candidate_id),
      hovertemplate: "%{text}<br>%{x}, %{y}<extra></extra>", marker,
    });
    const isBase = (q) => q.origin === "baseline";
    const all = p.front.concat(p.dominated);
    const baseline = all.filter(isBase);
    const traces = [
      trace(p.dominated.filter((q) => !isBase(q)), "dominated", { color: "#b8bcc6", size: 8 }),
      trace(p.front.filter((q) => !isBase(q)), "Pareto front", { color: "#2f6fdf", size: 11 }),
      trace(baseline, "baseline", { color: "#d9480f", size: 15, symbol: "star" }),
    ];
    const shapes = [];
    if (xName !== ID_AXIS && yName !== ID_AXIS && xName !== yName) {
      // the front of these two objectives as a staircase over the points
      const steps = front2d(all.map((q) => ({ x: value(q, xName), y: value(q, yName) })), xName, yName);
      traces.push({ type: "scatter", mode: "lines", name: "front (staircase)", x: steps.map((q) => q.x), y: steps.map((q) => q.y),
        line: { color: "#2f6fdf", width: 1.5, shape: maximized(xName) ? "vh" : "hv" }, hoverinfo: "skip", meta: "staircase" });
    }
    for (const q of baseline) {  // what beats the baseline lies beyond these lines
      if (xName !== ID_AXIS && Number.isFinite(value(q, xName))) shapes.push({ type: "line", xref: "x", yref: "paper", x0: value(q, xName), x1: value(q, xName), y0: 0, y1: 1, line: { color: "#d9480f", width: 1, dash: "dot" } });
      if (yName !== ID_AXIS && Number.isFinite(value(q, yName))) shapes.push({ type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: value(q, yName), y1: value(q, yName), line: { color: "#d9480f", width: 1, dash: "dot" } });
    }
    document.getElementById("pareto-count").textContent = p.front.length + " on the front, " + p.dominated.length + " dominated";
    const layout = { margin: { t: 40, r: 10, b: 45, l: 60 },
      xaxis: { title: { text: xName }, type: logX.checked ? "log" : "linear" },
      yaxis: { title: { text: yName }, type: logY.checked ? "log" : "linear" },
      // above the plot area, clear of both axes and their titles
      legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom" },
      shapes, hovermode: "closest" };
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
    const normalized = Boolean(h.box);
    const ys = h.points.map((p) => normalized ? p.hypervolume_normalized : p.hypervolume);
    Plotly.react("hv-plot", [{ type: "scatter", mode: "lines", name: "hypervolume", x: h.points.map((p) => p.evaluations), y: ys, line: { color: "#2f6fdf" } }],
      { margin: { t: 10, r: 10, b: 45, l: 60 }, xaxis: { title: { text: "evaluations" } },
        yaxis: normalized ? { title: { text: "hypervolume (fraction of the box)" }, range: [0, 1] } : { title: { text: "hypervolume" } } },
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

  // The transfer stage's verdicts: the search's best, the baseline and the scale controls
  // re-trained on held-out runs with several seeds; "beats baseline" only when more than 2
  // pooled seed SDs above it on every run (search/confirm.py).
  async function drawTransfer() {
    const t = await api("/campaigns/" + id + "/transfer");
    const card = document.getElementById("transfer-card");
    card.hidden = !t.rows.length;
    if (!t.rows.length) return;
    const runs = t.rows[0].proxies.map((p) => p.name);
    const seeds = Math.max(...t.rows.map((r) => r.runs || 0));
    document.getElementById("transfer-note").textContent = t.confirmed.length
      ? t.confirmed.length + " candidate(s) beat the baseline by more than 2 pooled seed SDs on every held-out run (mean ± SD over " + seeds + " seeds)."
      : "No candidate beats the baseline by more than 2 pooled seed SDs on every held-out run (mean ± SD over " + seeds + " seeds): the search proxy's ranking did not hold.";
    const verdict = (r) => r.control ? (r.beats_baseline === true ? "scale control (raw): beats baseline by scale alone" : "scale control (raw)") : r.origin === "baseline" ? "baseline"
      : r.beats_baseline === true ? "beats baseline" : r.beats_baseline === false ? "not confirmed" : "too few seeds";
    const cell = (p) => p.mean === null || p.mean === undefined ? "–" : (100 * p.mean).toFixed(1) + " ± " + (100 * (p.sd || 0)).toFixed(1);
    document.getElementById("transfer-head").replaceChildren(el("tr", {}, ["layer", "origin"].concat(runs, ["margins (SDs)", "verdict"]).map((h) => el("th", { text: h }))));
    document.getElementById("transfer-rows").replaceChildren(...t.rows.map((r) => el("tr", {
      "data-testid": "transfer-row", "data-verdict": verdict(r), class: r.beats_baseline === true && !r.control ? "confirmed" : "",
    }, el("td", {}, r.control ? el("code", { text: r.text }) : el("a", { href: "#/candidates/" + r.candidate_id }, el("code", { text: r.text }))),
      el("td", { text: r.control ? "control" : r.origin }), r.proxies.map((p) => el("td", { text: cell(p) })),
      el("td", { text: (r.margins || []).map((m) => m === null ? "–" : m.toFixed(1)).join(" / ") || "–" }),
      el("td", { text: verdict(r) }))));
  }

  async function refresh() {
    state.detail = await api("/campaigns/" + id);
    fillAxes();
    drawStats();
    drawFunnel();
    state.pareto = await api("/campaigns/" + id + "/pareto");
    drawPareto();
    await drawHistory();
    if (["completed", "cancelled", "failed"].includes(state.detail.status)) await drawTransfer();
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

const EXPORT_WARNINGS = {
  rejected: "was rejected", failed: "failed its evaluation", cancelled: "was cancelled",
  duplicate: "is a duplicate of another candidate", proposed: "has not been evaluated yet", running: "is still being evaluated",
};

async function candidatePage(id) {
  const c = await api("/candidates/" + id);
  const campaign = await api("/campaigns/" + c.campaign_id).catch(() => null);
  const formats = ["pytorch", "numpy", "jax", "latex", "sympy", "json"];
  const warned = EXPORT_WARNINGS[c.status];
  const exportWarning = warned ? el("p", { class: "warning", id: "export-warning", "data-testid": "export-warning" },
    el("b", { text: "This candidate " + warned }),
    c.rejection ? " at stage " + c.rejection.stage + ": " + c.rejection.reason : "",
    ". Its code runs, but nothing shows it trains well; every export carries this warning.") : null;
  const rendered = el("div", { id: "candidate-latex-rendered", "data-testid": "candidate-latex-rendered" });
  renderLatex(rendered, c.latex);
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/campaigns/" + c.campaign_id, id: "back-to-campaign", text: "← campaign " + c.campaign_id })),
    el("h1", {}, "Candidate " + c.id + " ", badge(c.status)),
    el("div", { id: "candidate-fidelity" }, fidelityWarnings(campaign, "candidate-fidelity-warnings")),
    el("div", { class: "grid" },
      el("section", { class: "card" },
        el("h2", { text: "Layer" }),
        el("p", {}, el("code", { id: "candidate-text", "data-testid": "candidate-text", text: c.text })),
        rendered,
        el("details", {}, el("summary", { text: "LaTeX source" }),
          el("pre", {}, el("code", { id: "candidate-latex", "data-testid": "candidate-latex", text: c.latex || "(no LaTeX form)" }))),
        el("h2", { text: "Export" }),
        exportWarning,
        el("div", { class: "controls", id: "export-buttons" }, formats.map((f) => el("a", {
          class: "button" + (warned ? " warn" : ""), href: API + "/candidates/" + c.id + "/export?format=" + f, download: "",
          title: warned ? "this candidate " + warned : "download as " + f,
          "data-testid": "export-" + f, id: "export-" + f, text: warned ? f + " (" + c.status + ")" : f,
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
    const activation = curve.kind === "activation";
    const traces = [{ type: "scatter", mode: activation ? "lines" : "markers", name: activation ? "f(x)" : "output", x: curve.x, y: curve.y, line: { color: "#2f6fdf" }, marker: { size: 4 } }];
    if (curve.dy) traces.push({ type: "scatter", mode: "lines", name: "df/dx", x: curve.x, y: curve.dy, line: { color: "#e8590c", dash: "dash" } });
    if (curve.baseline_y) {  // the baseline every campaign of this space is measured against
      traces.push({ type: "scatter", mode: activation ? "lines" : "markers", name: curve.baseline + " (baseline)", x: curve.x, y: curve.baseline_y,
        line: { color: "#868e96", width: 1.5, dash: "dot" }, marker: { size: 3, color: "#868e96" }, meta: "baseline" });
    }
    if (curve.baseline_dy) {
      traces.push({ type: "scatter", mode: "lines", name: curve.baseline + "' (baseline)", x: curve.x, y: curve.baseline_dy,
        line: { color: "#c1c7cf", width: 1.2, dash: "dashdot" }, meta: "baseline" });
    }
    Plotly.newPlot("curve-plot", traces, { margin: { t: 40, r: 10, b: 45, l: 50 }, xaxis: { title: { text: "x" } },
      legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom" } }, { displaylogo: false, responsive: true });
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

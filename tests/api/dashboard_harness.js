// Runs the dashboard's own api/static/app.js under Node with a minimal DOM, on answers the
// test recorded from the real API, and prints what one page rendered (as JSON).
//
//   node dashboard_harness.js APP_JS RESPONSES_JSON HASH
//
// RESPONSES_JSON maps an API path without its query ("/campaigns/1") to the JSON body the
// server answered. Only what app.js uses of the DOM exists here; Plotly is a no-op (the
// plots are not the subject), so a test reads the page's text and the elements' state.
"use strict";
const fs = require("fs");
const vm = require("vm");

const [appPath, responsesPath, hash] = process.argv.slice(2);
const responses = JSON.parse(fs.readFileSync(responsesPath, "utf8"));

class FakeNode {
  constructor(tag) {
    this.tagName = tag; this.children = []; this.attributes = {}; this.dataset = {};
    this.hidden = false; this.ownText = ""; this.value = ""; this.checked = false; this.disabled = false;
  }
  setAttribute(key, value) {
    this.attributes[key] = String(value);
    if (key === "id") this.id = String(value);
    if (key === "hidden") this.hidden = true;
    if (key === "value") this.value = String(value);
  }
  addEventListener() {}
  on() {}
  append(...nodes) { for (const n of nodes) this.children.push(n instanceof FakeNode ? n : new FakeText(String(n))); }
  replaceChildren(...nodes) { this.ownText = ""; this.children = []; this.append(...nodes); }
  get textContent() { return this.ownText + this.children.map((c) => c.textContent).join(""); }
  set textContent(value) { this.ownText = String(value); this.children = []; }
  get options() { return this.children.filter((c) => c.tagName === "option"); }
  find(id) {
    if (this.id === id) return this;
    for (const child of this.children) { const found = child.find(id); if (found) return found; }
    return null;
  }
}
class FakeText extends FakeNode {
  constructor(text) { super("#text"); this.ownText = text; }
}

const body = new FakeNode("body");
for (const id of ["api-token", "error-banner", "view"]) {
  const node = new FakeNode(id === "api-token" ? "input" : "div");
  node.setAttribute("id", id);
  body.append(node);
}
const document = {
  body,
  createElement: (tag) => new FakeNode(tag),
  createTextNode: (text) => new FakeText(text),
  getElementById: (id) => body.find(id),
};
const fetch = async (url) => {
  const path = url.replace(/^\/api\/v1/, "").split("?")[0];
  if (!(path in responses)) return { ok: false, status: 404, statusText: "not recorded", json: async () => ({}) };
  return { ok: true, status: 200, json: async () => responses[path] };
};
const context = {
  document, fetch, Node: FakeNode, URLSearchParams, console, setTimeout, clearTimeout,
  setInterval: () => 0, clearInterval: () => {},
  location: { hash },
  localStorage: { getItem: () => null, setItem: () => {} },
  Plotly: { react: () => {}, newPlot: () => {}, downloadImage: () => {} },
};
context.window = { addEventListener: () => {} };
vm.createContext(context);
vm.runInContext(fs.readFileSync(appPath, "utf8"), context, { filename: appPath });

const started = Date.now();
(function report() {
  if (!body.dataset.ready && Date.now() - started < 10000) { setTimeout(report, 20); return; }
  const node = (id) => body.find(id);
  const describe = (id) => (node(id) ? { hidden: node(id).hidden, text: node(id).textContent } : null);
  process.stdout.write(JSON.stringify({
    ready: body.dataset.ready || null,
    banner: describe("error-banner"),
    failure: describe("campaign-error"),
    waiting: describe("campaign-waiting"),
    title: describe("campaign-title"),
    rows: describe("campaign-rows"),
  }));
})();

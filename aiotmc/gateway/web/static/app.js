"use strict";
// The dashboard page: a WebSocket of hub events, rendered with textContent only (no HTML
// from the server is ever parsed), and a control form posting to /api/command.
const $ = (id) => document.getElementById(id);
const state = { backoff: 500 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function timeOf(t) {
  return new Date(t * 1000).toTimeString().slice(0, 8);
}

function formatValue(v) {
  if (typeof v === "number" && !Number.isInteger(v)) return v.toPrecision(6);
  return String(v);
}

function known(name) {
  const list = $("known");
  if (![...list.options].some((o) => o.value === name)) list.append(el("option", { value: name }));
}

function onStatus(e) {
  known(e.instrument);
  let row = $("instrument-" + e.instrument);
  if (!row) {
    row = el("tr", { id: "instrument-" + e.instrument }, el("td", {}, e.instrument),
             el("td", {}), el("td", {}));
    $("instruments").append(row);
  }
  row.dataset.state = e.state;
  row.children[1].className = e.state;
  row.children[1].textContent = e.state;
  row.children[2].textContent = e.detail || "";
}

function onReading(r) {
  known(r.instrument);
  let row = $("value-" + r.path);
  if (!row) {
    row = el("tr", { id: "value-" + r.path }, el("td", {}, r.instrument), el("td", {}, r.channel),
             el("td", { class: "value" }), el("td", {}, r.unit), el("td", {}), el("td", {}));
    $("values").append(row);
  }
  row.children[2].textContent = formatValue(r.value);
  row.children[4].textContent = r.quality;
  row.children[4].className = r.quality === "good" ? "ok" : "refused";
  row.children[5].textContent = timeOf(r.timestamp);
}

function onAlert(a) {
  const id = "alert-" + [a.rule, a.instrument, a.channel || ""].join("/");
  let item = $(id);
  if (!item) {
    item = el("li", { id });
    $("alerts").prepend(item);
  }
  item.className = a.state;
  item.dataset.state = a.state;
  item.textContent = timeOf(a.timestamp) + " [" + a.severity + "] " + a.state + " " + a.rule +
    " " + a.instrument + (a.channel ? "/" + a.channel : "") + ": " + a.summary;
}

function apply(e) {
  if (e.type === "reading") onReading(e);
  else if (e.type === "status") onStatus(e);
  else if (e.type === "alert") onAlert(e);
}

function setConnection(cls, text) {
  $("conn").className = "pill " + cls;
  $("conn").textContent = text;
}

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + "/ws");
  ws.onopen = () => { state.backoff = 500; setConnection("live", "live"); };
  ws.onmessage = (message) => {
    const msg = JSON.parse(message.data);
    if (msg.type === "hello") {
      $("gateway").textContent = msg.gateway.site + "/" + msg.gateway.host;
      $("user").textContent = msg.user;
      $("roles").textContent = "(" + msg.roles.join(", ") + ")";
      for (const [name, s] of Object.entries(msg.instruments)) onStatus({ instrument: name, ...s });
      msg.values.forEach(onReading);
      msg.resolved.forEach(onAlert);
      msg.alerts.forEach(onAlert);
    } else if (msg.type === "batch") {
      msg.events.forEach(apply);
      $("dropped").textContent = msg.dropped;
    }
  };
  ws.onclose = (ev) => {
    if (ev.code === 4401 || ev.code === 1008) { location.assign("/login"); return; }
    setConnection("down", "disconnected");
    setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 5000);
  };
}

function parseValue(text) {
  const t = text.trim();
  if (t === "") return null;
  if (t === "true" || t === "false") return t === "true";
  const n = Number(t);
  return Number.isFinite(n) ? n : t;
}

async function sendCommand(ev) {
  ev.preventDefault();
  const body = {
    instrument: $("control-instrument").value,
    operation: $("control-operation").value,
    value: parseValue($("control-value").value),
  };
  const what = body.instrument + " " + body.operation + (body.value === null ? "" : " " + body.value);
  let text, cls;
  try {
    const r = await fetch("/api/command", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const result = await r.json();
    if (r.ok && result.ok) {
      cls = "ok";
      text = "done: " + what + (result.answer ? " \u2192 " + result.answer : "");
    } else {
      cls = "refused";
      const verb = r.status >= 500 ? "failed" : "refused";
      text = verb + ": " + what + ": " + (result.detail || result.error);
    }
  } catch (err) {
    cls = "refused";
    text = "failed: " + what + ": " + err;
  }
  $("results").prepend(el("li", { class: cls }, text));
}

$("control").addEventListener("submit", sendCommand);
connect();

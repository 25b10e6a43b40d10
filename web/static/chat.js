// supportflow chat page: vanilla JS, no dependencies.
//
// State lives in sessionStorage ({session_id, customer_id, outbox}) and the URL (?session=...),
// so a reload resumes the conversation: the server sends the session's history on connect,
// and the page rebuilds its timeline from it (keyed by message id / turn id: nothing twice).
// Messages not yet acknowledged by the server stay in the outbox and are resent, with the
// same message id, after a reconnect; the server and the pipeline both de-duplicate by it.
"use strict";

(() => {
  const STORE_KEY = "supportflow.chat";
  const FATAL_CLOSE = new Set([4400, 4403, 4404]);
  const $ = (id) => document.getElementById(id);

  const state = {
    sessionId: null,
    customerId: null,
    items: [], // timeline, in the order the server saw things: {key, type, data, status, reason}
    byKey: new Map(),
    answered: new Set(), // message ids some reply answers
    outbox: new Map(), // message_id -> {text}: sent by the page, not yet acknowledged by the server
    omitted: 0,
    ws: null,
    ready: false,
    retry: 0,
    retryTimer: null,
    names: new Map(),
  };

  // -- persistence ---------------------------------------------------------------------------

  function save() {
    if (!state.sessionId) {
      sessionStorage.removeItem(STORE_KEY);
      return;
    }
    const outbox = [...state.outbox].map(([id, m]) => ({ message_id: id, text: m.text }));
    sessionStorage.setItem(
      STORE_KEY,
      JSON.stringify({ session_id: state.sessionId, customer_id: state.customerId, outbox }),
    );
  }

  function load() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    } catch {
      return null;
    }
  }

  function newMessageId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `m-${Date.now().toString(36)}-${hex}`;
  }

  // -- timeline ------------------------------------------------------------------------------

  function keyOf(e) {
    return e.type === "message" ? `m:${e.message_id}` : `r:${e.turn_id}`;
  }

  function addItem(item) {
    state.byKey.set(item.key, item);
    state.items.push(item);
  }

  function addEvent(e) {
    const key = keyOf(e);
    const existing = state.byKey.get(key);
    if (e.type === "message") {
      state.outbox.delete(e.message_id);
      if (existing) {
        existing.status = "sent";
        if (e.text) existing.data = e;
        return;
      }
      addItem({ key, type: "message", data: e, status: "sent" });
      return;
    }
    if (existing) return; // a reply is shown once, however often it arrives
    addItem({ key, type: "reply", data: e });
    for (const id of e.answers || []) state.answered.add(id);
  }

  function resetTimeline(events, omitted) {
    state.items = [];
    state.byKey = new Map();
    state.answered = new Set();
    state.omitted = omitted || 0;
    for (const e of events) addEvent(e);
    for (const [id, m] of state.outbox) {
      const key = `m:${id}`;
      if (!state.byKey.has(key)) {
        addItem({ key, type: "message", data: { message_id: id, text: m.text }, status: "sending" });
      }
    }
  }

  // -- rendering -----------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c);
    return node;
  }

  function time(iso) {
    const d = iso ? new Date(iso) : null;
    return d && !Number.isNaN(d.getTime()) ? d.toLocaleTimeString() : "";
  }

  function renderMessage(item) {
    const m = item.data;
    let status = item.status;
    if (status === "sent" && state.answered.has(m.message_id)) status = "answered";
    const label = {
      sending: "sending…",
      sent: "sent · waiting for the agent",
      answered: "answered",
      rejected: `not sent: ${item.reason || "rejected"}`,
    }[status];
    return el(
      "li",
      { class: `msg ${status}`, "data-message-id": m.message_id, "data-status": status },
      m.text || "",
      el("span", { class: "meta" }, [time(m.sent_at), label].filter(Boolean).join(" · ")),
    );
  }

  function renderReply(item) {
    const r = item.data;
    const tag = { reply: "agent", handoff: "handed to a human", error: "error" }[r.kind] || r.kind;
    const ms = r.timings && typeof r.timings.total_ms === "number" ? `${Math.round(r.timings.total_ms)} ms` : "";
    const meta = [time(r.created_at), r.model, ms, `turn ${r.turn_index}`].filter(Boolean).join(" · ");
    return el(
      "li",
      {
        class: `reply kind-${r.kind}`,
        "data-turn-id": r.turn_id,
        "data-kind": r.kind,
        "data-session-id": r.session_id,
        "data-answers": (r.answers || []).join(" "),
      },
      el("span", { class: "tag" }, tag),
      r.text || "",
      el("span", { class: "meta" }, meta),
    );
  }

  function render() {
    const log = $("log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    const nodes = state.items.map((i) => (i.type === "message" ? renderMessage(i) : renderReply(i)));
    if (state.omitted > 0) {
      nodes.unshift(el("li", { class: "omitted" }, `${state.omitted} earlier entries not kept by the server`));
    }
    log.replaceChildren(...nodes);
    if (atBottom) log.scrollTop = log.scrollHeight;

    const waiting = state.items.filter(
      (i) => i.type === "message" && i.status !== "rejected" && !state.answered.has(i.data.message_id),
    );
    $("pending").hidden = waiting.length === 0;
    $("pending").dataset.count = String(waiting.length);
    const sending = waiting.filter((i) => i.status === "sending").length;
    $("pending-text").textContent =
      sending > 0
        ? `Sending ${sending} message${sending > 1 ? "s" : ""}…`
        : `Agent is answering ${waiting.length} message${waiting.length > 1 ? "s" : ""}…`;
    const handedOff = state.items.some((i) => i.type === "reply" && i.data.kind === "handoff");
    $("handoff-banner").hidden = !handedOff;
    $("chat").dataset.handoff = handedOff ? "yes" : "no";
  }

  function setConn(s) {
    const c = $("conn");
    c.dataset.state = s;
    c.textContent = { connecting: "connecting…", open: "connected", closed: "reconnecting…" }[s] || s;
  }

  function setWho() {
    const name = state.names.get(state.customerId);
    $("who").textContent = state.customerId ? `Customer ${state.customerId}${name ? ` · ${name}` : ""}` : "";
    $("session-label").textContent = state.sessionId || "";
  }

  // -- socket --------------------------------------------------------------------------------

  function sendFrame(id, text) {
    state.ws.send(JSON.stringify({ type: "send", message_id: id, text }));
  }

  function connect() {
    clearTimeout(state.retryTimer);
    const q = new URLSearchParams({ session_id: state.sessionId });
    if (state.customerId) q.set("customer_id", state.customerId);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws?${q}`);
    state.ws = ws;
    state.ready = false;
    setConn("connecting");
    ws.onmessage = (ev) => {
      if (ws === state.ws) handle(JSON.parse(ev.data));
    };
    ws.onclose = (ev) => {
      if (ws !== state.ws) return;
      state.ws = null;
      state.ready = false;
      if (FATAL_CLOSE.has(ev.code)) {
        forget(ev.code === 4404 ? "That conversation is no longer held by the server; start a new one." : ev.reason);
        return;
      }
      setConn("closed");
      const delay = Math.min(5000, 300 * 2 ** state.retry++);
      state.retryTimer = setTimeout(connect, delay);
    };
  }

  function handle(m) {
    switch (m.type) {
      case "hello":
        state.ready = true;
        state.retry = 0;
        state.customerId = m.customer_id;
        setWho();
        resetTimeline(m.events || [], m.omitted);
        save();
        render();
        setConn("open");
        for (const [id, msg] of state.outbox) sendFrame(id, msg.text);
        break;
      case "message":
      case "reply":
        addEvent(m);
        save();
        render();
        break;
      case "rejected": {
        const item = m.message_id ? state.byKey.get(`m:${m.message_id}`) : null;
        if (item && item.status === "sending") {
          state.outbox.delete(m.message_id);
          item.status = "rejected";
          item.reason = m.reason;
          save();
          render();
        } else {
          console.warn("server rejected a frame:", m.reason);
        }
        break;
      }
      default:
        break;
    }
  }

  // -- actions -------------------------------------------------------------------------------

  function send(text) {
    if (!text.trim() || !state.sessionId) return;
    const id = newMessageId();
    state.outbox.set(id, { text });
    save();
    addItem({ key: `m:${id}`, type: "message", data: { message_id: id, text }, status: "sending" });
    render();
    if (state.ws && state.ready) sendFrame(id, text);
  }

  function setUrlSession(sid) {
    const url = new URL(location.href);
    if (sid) url.searchParams.set("session", sid);
    else url.searchParams.delete("session");
    url.searchParams.delete("customer");
    history.replaceState(null, "", url);
  }

  function openSession(sid, cid, outbox) {
    state.sessionId = sid;
    state.customerId = cid;
    state.outbox = new Map((outbox || []).map((o) => [o.message_id, { text: o.text }]));
    setUrlSession(sid);
    save();
    $("start").hidden = true;
    $("chat").hidden = false;
    setWho();
    resetTimeline([], 0);
    render();
    connect();
    $("text").focus();
  }

  function closeSocket() {
    clearTimeout(state.retryTimer);
    const ws = state.ws;
    state.ws = null;
    state.ready = false;
    if (ws) ws.close(1000, "new conversation");
  }

  function forget(notice) {
    closeSocket();
    state.sessionId = null;
    state.customerId = null;
    state.outbox = new Map();
    save();
    setUrlSession(null);
    showStart(notice);
  }

  async function loadCustomers() {
    try {
      const r = await fetch("/api/customers");
      const list = await r.json();
      for (const c of list) state.names.set(c.id, c.name);
      return list;
    } catch {
      return [];
    }
  }

  async function showStart(notice) {
    $("chat").hidden = true;
    $("start").hidden = false;
    $("start-notice").hidden = !notice;
    $("start-notice").textContent = notice || "";
    const list = await loadCustomers();
    const select = $("customer");
    const wanted = new URL(location.href).searchParams.get("customer") || select.value;
    select.replaceChildren(
      ...list.map((c) => el("option", { value: c.id, textContent: c.name ? `${c.id} · ${c.name}` : c.id })),
    );
    if (wanted && list.some((c) => c.id === wanted)) select.value = wanted;
  }

  async function start(customerId) {
    $("start-btn").disabled = true;
    try {
      const r = await fetch("/api/sessions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ customer_id: customerId }),
      });
      if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
      const s = await r.json();
      openSession(s.session_id, s.customer_id, []);
    } catch (err) {
      $("start-notice").hidden = false;
      $("start-notice").textContent = `Could not start a conversation: ${err.message}`;
    } finally {
      $("start-btn").disabled = false;
    }
  }

  // -- wiring --------------------------------------------------------------------------------

  $("start-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if ($("customer").value) start($("customer").value);
  });
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const box = $("text");
    send(box.value);
    box.value = "";
    box.focus();
  });
  $("text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("new-btn").addEventListener("click", () => forget(null));

  const saved = load();
  const sid = new URL(location.href).searchParams.get("session") || (saved && saved.session_id);
  loadCustomers().then(setWho);
  if (sid) {
    const same = saved && saved.session_id === sid;
    openSession(sid, same ? saved.customer_id : null, same ? saved.outbox : []);
  } else {
    showStart(null);
  }
})();

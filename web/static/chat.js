// supportflow chat page: vanilla JS, no dependencies.
//
// State lives in sessionStorage ({session_id, customer_id, customer_name, token, outbox}) and the URL
// (?session=...), so a reload resumes the conversation: the server sends the session's history on connect,
// and the page rebuilds its timeline from it (keyed by message id / turn id: nothing twice).
// Who the customer is comes from the identity token (the DEMO login mints one for a seeded customer),
// never from the page: the server takes the customer from the token on every request and socket.
// Replies are shown in turn order (placeReply), whatever order they arrive in.
// Messages not yet acknowledged by the server stay in the outbox and are resent, with the
// same message id, after a reconnect; the server and the pipeline both de-duplicate by it.
// While a reply is written, its deltas ({type: "delta"}, contract/deltas.py) build a "streaming" bubble:
// ordered by seq, duplicates dropped, nothing past a missing seq shown, a retraction empties it; the
// final reply replaces it in place. Dropped deltas are logged with their reason (console.warn
// "delta dropped (<reason>)": another session, unknown turn, after the final, duplicate, seq gap).
"use strict";

(() => {
  const STORE_KEY = "supportflow.chat";
  const FATAL_CLOSE = new Set([4400, 4403, 4404]);
  const IDENTITY_CLOSE = 4401;
  const $ = (id) => document.getElementById(id);

  const state = {
    sessionId: null,
    customerId: null,
    customerName: null,
    token: null,
    demoLogin: false,
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
    streams: new Map(), // turn_id -> {pieces: Map(seq -> {kind, text}), shown}: replies being written
    droppedDeltas: [], // {reason, turn_id, seq}, also logged
  };
  window.supportflowChat = { droppedDeltas: state.droppedDeltas };

  // -- persistence ---------------------------------------------------------------------------

  function save() {
    if (!state.sessionId) {
      sessionStorage.removeItem(STORE_KEY);
      return;
    }
    const outbox = [...state.outbox].map(([id, m]) => ({ message_id: id, text: m.text }));
    sessionStorage.setItem(
      STORE_KEY,
      JSON.stringify({
        session_id: state.sessionId,
        customer_id: state.customerId,
        customer_name: state.customerName,
        token: state.token,
        outbox,
      }),
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

  // Where a reply goes: before the higher-numbered replies that arrived earlier, never before a message
  // it answers, nor before a higher-numbered reply whose messages came first (numbers restarted after
  // the pipeline lost the session's state). The server sorts its history the same way (web/store.py).
  function placeReply(items, reply) {
    const position = new Map();
    items.forEach((it, i) => {
      if (it.type === "message") position.set(it.data.message_id, i);
    });
    const first = (answers) => {
      const found = (answers || []).filter((m) => position.has(m)).map((m) => position.get(m));
      return found.length ? Math.min(...found) : null;
    };
    const answers = new Set(reply.answers || []);
    const mine = first(reply.answers);
    let at = items.length;
    for (let i = items.length; i > 0; i--) {
      const prev = items[i - 1];
      if (prev.type === "message") {
        if (answers.has(prev.data.message_id)) break;
        continue;
      }
      if (prev.data.turn_index <= reply.turn_index) break;
      const theirs = first(prev.data.answers);
      if (mine !== null && theirs !== null && theirs < mine) break;
      at = i - 1;
    }
    return at;
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
    finishStream(e.turn_id);
    const item = { key, type: "reply", data: e };
    state.byKey.set(key, item);
    state.items.splice(placeReply(state.items, e), 0, item);
    for (const id of e.answers || []) state.answered.add(id);
  }

  // -- reply deltas ----------------------------------------------------------------------------

  function dropDelta(reason, d) {
    state.droppedDeltas.push({ reason, turn_id: d.turn_id, seq: d.seq });
    console.warn(`delta dropped (${reason}): ${d.turn_id} seq ${d.seq}`);
  }

  function waitingForReply() {
    return state.items.some(
      (i) => i.type === "message" && i.status !== "rejected" && !state.answered.has(i.data.message_id),
    );
  }

  // The deltas after the latest retraction, up to the first missing seq.
  function assemble(pieces) {
    let parts = [];
    for (let seq = 1; pieces.has(seq); seq++) {
      const p = pieces.get(seq);
      if (p.kind === "retract") parts = [];
      else parts.push(p.text);
    }
    return parts.join("");
  }

  function addDelta(d) {
    if (d.session_id !== state.sessionId || !String(d.turn_id).startsWith(`${state.sessionId}#`)) {
      dropDelta("another session", d);
      return false;
    }
    if (state.byKey.has(`r:${d.turn_id}`)) {
      dropDelta("after the final", d);
      return false;
    }
    let s = state.streams.get(d.turn_id);
    if (!s) {
      if (!waitingForReply()) {
        dropDelta("unknown turn", d);
        return false;
      }
      s = { pieces: new Map(), shown: "" };
      state.streams.set(d.turn_id, s);
      addItem({ key: `s:${d.turn_id}`, type: "stream", data: { turn_id: d.turn_id, session_id: d.session_id } });
    }
    if (!Number.isInteger(d.seq) || d.seq < 1 || s.pieces.has(d.seq)) {
      dropDelta("duplicate", d);
      return false;
    }
    s.pieces.set(d.seq, { kind: d.kind, text: d.text || "" });
    s.shown = assemble(s.pieces);
    return true;
  }

  // The final reply of a turn arrived: its streaming bubble goes (the reply takes its place).
  function finishStream(turnId) {
    const s = state.streams.get(turnId);
    if (!s) return;
    let contiguous = 0;
    while (s.pieces.has(contiguous + 1)) contiguous++;
    for (const seq of [...s.pieces.keys()].sort((a, b) => a - b)) {
      if (seq > contiguous) dropDelta("seq gap", { turn_id: turnId, seq });
    }
    state.streams.delete(turnId);
    const key = `s:${turnId}`;
    state.byKey.delete(key);
    state.items = state.items.filter((i) => i.key !== key);
  }

  function resetTimeline(events, omitted) {
    state.streams = new Map();
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

  function renderStream(item) {
    const s = state.streams.get(item.data.turn_id) || { shown: "" };
    return el(
      "li",
      {
        class: `reply kind-reply streaming${s.shown ? "" : " empty"}`,
        "data-turn-id": item.data.turn_id,
        "data-kind": "streaming",
        "data-streaming": "yes",
        "data-session-id": item.data.session_id,
      },
      el("span", { class: "tag" }, "agent"),
      el("span", { class: "stream-text" }, s.shown || "…"),
      el("span", { class: "meta" }, "writing…"),
    );
  }

  function render() {
    const log = $("log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    const renderers = { message: renderMessage, reply: renderReply, stream: renderStream };
    const nodes = state.items.map((i) => renderers[i.type](i));
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
    const name = state.customerName || state.names.get(state.customerId);
    $("who").textContent = state.customerId ? `Customer ${state.customerId}${name ? ` · ${name}` : ""}` : "";
    $("session-label").textContent = state.sessionId || "";
  }

  // -- socket --------------------------------------------------------------------------------

  function sendFrame(id, text) {
    state.ws.send(JSON.stringify({ type: "send", message_id: id, text }));
  }

  function connect() {
    clearTimeout(state.retryTimer);
    const q = new URLSearchParams({ session_id: state.sessionId, token: state.token || "" });
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
      if (ev.code === IDENTITY_CLOSE) {
        relogin(ev.reason);
        return;
      }
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
        if (m.customer_name) state.customerName = m.customer_name;
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
      case "delta":
        if (addDelta(m)) render();
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

  function openSession(sid, cid, name, token, outbox) {
    state.sessionId = sid;
    state.customerId = cid;
    state.customerName = name || null;
    state.token = token;
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
    state.customerName = null;
    state.token = null;
    state.outbox = new Map();
    save();
    setUrlSession(null);
    showStart(notice);
  }

  // The running pack's words (GET /api/pack): the page names its business, never one of its own.
  async function loadPack() {
    try {
      const r = await fetch("/api/pack");
      if (!r.ok) return;
      const pack = await r.json();
      $("business").textContent = `· ${pack.title}`;
      $("customer-search").placeholder = `id or name, e.g. ${pack.customer_example}`;
      const seen = ["account", ...pack.context];
      const listed = seen.length > 1 ? `${seen.slice(0, -1).join(", ")} and ${seen.at(-1)}` : seen[0];
      $("sees").textContent = `The agent sees only the signed-in customer's own ${listed}.`;
    } catch {
      // the generic wording stays
    }
  }

  async function loadConfig() {
    try {
      const r = await fetch("/api/config");
      state.demoLogin = Boolean((await r.json()).demo_login);
    } catch {
      state.demoLogin = false;
    }
    $("demo-label").hidden = !state.demoLogin;
  }

  // DEMO login only: the seeded customers whose id starts with, or name contains, the query.
  async function loadCustomers(query) {
    if (!state.demoLogin) return [];
    try {
      const r = await fetch(`/api/customers?${new URLSearchParams({ q: query || "" })}`);
      if (!r.ok) return [];
      const list = await r.json();
      for (const c of list) state.names.set(c.id, c.name);
      return list;
    } catch {
      return [];
    }
  }

  async function fillPicker(query, wanted) {
    const list = await loadCustomers(query);
    const select = $("customer");
    select.replaceChildren(
      ...list.map((c) => el("option", { value: c.id, textContent: c.name ? `${c.id} · ${c.name}` : c.id })),
    );
    if (wanted && list.some((c) => c.id === wanted)) select.value = wanted;
  }

  async function demoToken(customerId) {
    const r = await fetch("/api/demo/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ customer_id: customerId }),
    });
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    return r.json();
  }

  // The token was refused (expired, or the server restarted with a new demo key): sign in again.
  async function relogin(reason) {
    if (!state.demoLogin || !state.customerId) {
      forget(`Please sign in again (${reason || "identity token refused"}).`);
      return;
    }
    try {
      state.token = (await demoToken(state.customerId)).token;
      save();
      connect();
    } catch (err) {
      forget(`Please sign in again: ${err.message}`);
    }
  }

  async function showStart(notice) {
    $("chat").hidden = true;
    $("start").hidden = false;
    $("start-notice").hidden = !notice;
    $("start-notice").textContent = notice || "";
    const wanted = new URL(location.href).searchParams.get("customer") || "";
    if (wanted) $("customer-search").value = wanted;
    await fillPicker($("customer-search").value, wanted);
  }

  async function start(customerId) {
    $("start-btn").disabled = true;
    try {
      const login = await demoToken(customerId);
      const r = await fetch("/api/sessions", {
        method: "POST",
        headers: { Authorization: `Bearer ${login.token}` },
      });
      if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
      const s = await r.json();
      openSession(s.session_id, s.customer_id, s.customer_name || login.name, login.token, []);
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
  let searchTimer = null;
  $("customer-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => fillPicker($("customer-search").value, null), 150);
  });

  const saved = load();
  const sid = new URL(location.href).searchParams.get("session") || (saved && saved.session_id);
  loadPack();
  loadConfig().then(() => {
    // A session is only reopened with the token it was opened with (same tab): a bare link is no sign-in.
    if (sid && saved && saved.session_id === sid && saved.token) {
      openSession(sid, saved.customer_id, saved.customer_name, saved.token, saved.outbox);
    } else {
      showStart(sid ? "Sign in to continue that conversation." : null);
    }
  });
})();

// supportflow operator view: live counts over Server-Sent Events (/api/ops/stream), an inline SVG chart.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const W = 960;
  const H = 220;
  const PAD = { l: 40, r: 56, t: 12, b: 26 };

  const fmt = (v) => (v === null || v === undefined ? "–" : String(Math.round(v)));

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart(series) {
    const chart = $("chart");
    const nodes = [];
    const iw = W - PAD.l - PAD.r;
    const ih = H - PAD.t - PAD.b;
    const n = series.length || 1;
    const bw = iw / n;
    const maxTurns = niceMax(Math.max(1, ...series.map((m) => m.turns)));
    const lat = series.flatMap((m) => [m.p50_ms, m.p99_ms]).filter((v) => v !== null);
    const maxLat = niceMax(Math.max(1, ...lat));
    const y = (v) => PAD.t + ih - (v / maxTurns) * ih;
    const yl = (v) => PAD.t + ih - (v / maxLat) * ih;

    for (let i = 0; i <= 4; i++) {
      const v = (maxTurns * i) / 4;
      nodes.push(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), stroke: "#e3e5ea" }));
      nodes.push(svg("text", { x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#6b7280" },
        String(Math.round(v * 10) / 10)));
      const lv = (maxLat * i) / 4;
      nodes.push(svg("text", { x: W - PAD.r + 6, y: yl(lv) + 4, "font-size": 11, fill: "#1b8a4a" },
        `${Math.round(lv)}${i === 4 ? " ms" : ""}`));
    }
    series.forEach((m, i) => {
      const x = PAD.l + i * bw + 2;
      const w = Math.max(1, bw - 4);
      const ok = m.turns - m.handoffs - m.errors;
      let top = PAD.t + ih;
      for (const [count, color, kind] of [[ok, "#2f6fed", "ok"], [m.handoffs, "#e3a008", "handoff"],
        [m.errors, "#c62828", "error"]]) {
        if (count <= 0) continue;
        const h = (count / maxTurns) * ih;
        top -= h;
        const rect = svg("rect", { x, y: top, width: w, height: h, fill: color, "data-kind": kind });
        rect.append(svg("title", {}, `${new Date(m.start * 1000).toLocaleTimeString()}: ${count} ${kind}`));
        nodes.push(rect);
      }
      if (m.dead_letters > 0) {
        const c = svg("circle", { cx: x + w / 2, cy: PAD.t + ih + 8, r: 4, fill: "#6b21a8" });
        c.append(svg("title", {}, `${m.dead_letters} dead letters`));
        nodes.push(c);
      }
      if (i % 5 === 0 || i === n - 1) {
        const label = new Date(m.start * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        nodes.push(svg("text", { x: x + w / 2, y: H - 4, "text-anchor": "middle", "font-size": 10, fill: "#6b7280" },
          label));
      }
    });
    for (const [key, color] of [["p50_ms", "#1b8a4a"], ["p99_ms", "#111"]]) {
      const pts = series
        .map((m, i) => (m[key] === null ? null : `${PAD.l + i * bw + bw / 2},${yl(m[key])}`))
        .filter(Boolean);
      if (pts.length > 0) {
        nodes.push(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
        for (const p of pts) {
          const [cx, cy] = p.split(",");
          nodes.push(svg("circle", { cx, cy, r: 2.5, fill: color }));
        }
      }
    }
    chart.replaceChildren(...nodes);
  }

  function render(s) {
    $("v-tpm").textContent = String(s.turns_per_minute);
    $("v-p50").textContent = fmt(s.p50_ms);
    $("v-p99").textContent = fmt(s.p99_ms);
    $("v-lat-window").textContent = `(last ${Math.round(s.latency_window_s / 60)} min, ${s.latency_samples} turns)`;
    $("v-turns").textContent = String(s.turns);
    $("v-handoffs").textContent = String(s.handoffs);
    $("v-errors").textContent = String(s.errors);
    $("v-dead").textContent = String(s.dead_letters);
    $("v-sockets").textContent = String(s.sockets);
    drawChart(s.series);
    const rows = (s.recent_dead_letters || []).map((d) => {
      const tr = document.createElement("tr");
      for (const v of [new Date(d.received_at * 1000).toLocaleTimeString(), d.stage, d.reason, d.session_id || "–"]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(td);
      }
      return tr;
    });
    if (rows.length > 0) $("dl-rows").replaceChildren(...rows);
    $("footnote").textContent =
      `Counted by this web process since ${new Date(s.since * 1000).toLocaleString()} ` +
      `(its own subscriptions: ${(s.subscriptions || []).join(", ")}). ` +
      `Latency = reply's timings.total_ms (first message sent → reply built). ` +
      `Duplicate deliveries dropped: ${s.duplicate_turns}; unparseable replies: ${s.bad_replies}.`;
    document.body.dataset.updated = String(s.now);
  }

  function setLive(state) {
    const live = $("live");
    live.dataset.state = state;
    live.textContent = { open: "live", closed: "reconnecting…", connecting: "connecting…" }[state];
  }

  const source = new EventSource("/api/ops/stream");
  source.onopen = () => setLive("open");
  source.onerror = () => setLive("closed"); // EventSource retries by itself
  source.onmessage = (ev) => {
    setLive("open");
    render(JSON.parse(ev.data));
  };
})();

// capaswarm dashboard: renders /api/v1/state snapshots pushed over server-sent events.
// Every string from the ledger came from a peer, so it is untrusted: it only ever reaches the
// page through textContent / setAttribute, never innerHTML (and the CSP forbids inline script).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const fmtInt = (n) => (n == null ? "–" : Math.round(n).toLocaleString("en-US"));
  const fmtNum = (n, digits) => (n == null ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }));
  const fmtUsd = (n) => (n == null ? "–" : "$" + (Math.abs(n) < 1 ? Number(n).toFixed(4) : fmtNum(n, 2)));
  const fmtPct = (x) => (x == null ? "–" : (100 * x).toFixed(1) + "%");
  function fmtBytes(n) {
    if (n == null) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }
  function fmtDuration(s) {
    if (s == null) return "– (nothing training)";
    if (s < 1) return "reached";
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    return m + "m " + Math.floor(s % 60) + "s";
  }
  function ago(t, now) {
    const s = Math.max(0, now - t);
    return s < 90 ? Math.round(s) + " s ago" : fmtDuration(s) + " ago";
  }
  const setText = (id, text) => { $(id).textContent = text; };

  function td(tr, text, opts) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (opts && opts.cls) cell.className = opts.cls;
    if (opts && opts.col) cell.dataset.col = opts.col;
    if (opts && opts.value != null) cell.dataset.value = String(opts.value);
    if (opts && opts.title) cell.title = opts.title;
    tr.appendChild(cell);
    return cell;
  }

  // --- charts ------------------------------------------------------------------------------
  function makeChart(canvas, label, color) {
    if (typeof Chart === "undefined") return null; // vendored file missing: tables still work
    return new Chart(canvas, {
      type: "line",
      data: { datasets: [{ label: label, data: [], borderColor: color, backgroundColor: color, pointRadius: 2, tension: 0.2 }] },
      options: {
        animation: false, parsing: false, responsive: true, maintainAspectRatio: false,
        scales: {
          x: { type: "linear", title: { display: true, text: "round", color: "#8a96a3" }, ticks: { color: "#8a96a3", precision: 0 }, grid: { color: "#2a323c" } },
          y: { ticks: { color: "#8a96a3" }, grid: { color: "#2a323c" } },
        },
        plugins: { legend: { display: false } },
      },
    });
  }
  let lossChart = null, tpsChart = null;
  function updateChart(chart, canvas, points) {
    canvas.dataset.points = String(points.length);
    if (!chart) return;
    chart.data.datasets[0].data = points;
    chart.update("none");
  }

  // --- panels -------------------------------------------------------------------------------
  function renderHeader(s) {
    setText("run-id", s.run.run_id);
    setText("run-round", fmtInt(s.run.round));
    setText("run-hash", s.run.manifest_hash.slice(0, 12));
    $("progress").value = s.swarm.progress;
    setText("progress-text", fmtInt(s.swarm.tokens) + " of " + fmtInt(s.run.target_tokens) + " tokens (" + fmtPct(s.swarm.progress) + ")");
  }

  function renderCards(s) {
    const w = s.swarm;
    setText("tokens", fmtInt(w.tokens));
    setText("tokens-confirmed", fmtInt(w.confirmed_tokens));
    setText("tokens-unconfirmed", fmtInt(w.unconfirmed_tokens));
    setText("tps", fmtNum(w.tokens_per_s, 0));
    setText("peers-count", fmtInt(w.peers));
    setText("peers-by-state", Object.entries(w.by_state).map(([k, v]) => v + " " + k).join(" · "));
    setText("rejected-total", fmtInt(s.rejections_total));
    const reasons = Object.entries(s.rejections).filter(([, v]) => v > 0).map(([k, v]) => k + " " + v);
    setText("rejected-reasons", reasons.length ? reasons.join(" · ") : "none");
  }

  function renderCost(s) {
    const w = s.swarm;
    setText("cost-per-m", fmtUsd(w.usd_per_million_tokens));
    setText("cost-burn", fmtUsd(w.burn_usd_per_hour) + " / h");
    setText("cost-usd", fmtUsd(w.usd));
    setText("cost-eta", fmtDuration(w.eta_s));
    setText("cost-to-target", fmtUsd(w.usd_to_target));
    setText("cost-hours", fmtNum(w.compute_hours, 2) + " / " + fmtNum(w.gpu_hours, 2));
    const n = s.network;
    setText("net-sent", fmtBytes(n.bytes_sent));
    setText("net-received", fmtBytes(n.bytes_received));
    setText("net-payload", fmtBytes(n.payload_bytes));
    setText("net-ratio", n.compression_ratio == null ? "–" : fmtNum(n.compression_ratio, 2) + "×");
  }

  function renderLeaderboard(s) {
    const body = $("leaderboard").tBodies[0];
    body.replaceChildren();
    s.leaderboard.forEach((e, i) => {
      const tr = document.createElement("tr");
      td(tr, String(i + 1));
      td(tr, e.name, { cls: "name", col: "name", title: e.name });
      td(tr, fmtInt(e.peers), { cls: "num", col: "peers", value: e.peers });
      td(tr, fmtInt(e.tokens), { cls: "num", col: "tokens", value: e.tokens });
      td(tr, fmtNum(e.gpu_hours, 3), { cls: "num", col: "gpu_hours", value: e.gpu_hours });
      td(tr, fmtPct(e.share), { cls: "num", col: "share", value: e.share });
      td(tr, fmtUsd(e.usd), { cls: "num", col: "usd", value: e.usd });
      td(tr, fmtPct(e.confirmed_share), { cls: "num", col: "confirmed_share", value: e.confirmed_share });
      body.appendChild(tr);
    });
  }

  function renderPeers(s) {
    const body = $("peers").tBodies[0];
    body.replaceChildren();
    const now = s.generated_at;
    for (const p of s.peers) {
      const tr = document.createElement("tr");
      tr.dataset.peerId = p.peer_id;
      tr.dataset.state = p.state;
      const stateCell = td(tr, "", { col: "state" });
      const badge = document.createElement("span");
      badge.className = "state state-" + p.state;
      badge.textContent = p.state;
      stateCell.appendChild(badge);
      td(tr, p.name, { cls: "name", col: "name", title: p.name });
      td(tr, p.peer_id.slice(-10), { cls: "peer-id", col: "peer_id", title: p.peer_id });
      td(tr, (p.device_count > 1 ? p.device_count + "× " : "") + p.device, { col: "device" });
      td(tr, fmtInt(p.last_round), { cls: "num", col: "round", value: p.last_round });
      td(tr, fmtInt(p.tokens), { cls: "num", col: "tokens", value: p.tokens });
      td(tr, fmtInt(p.unconfirmed_tokens), { cls: "num", col: "unconfirmed", value: p.unconfirmed_tokens });
      td(tr, fmtNum(p.tokens_per_s, 0), { cls: "num", col: "tokens_per_s", value: p.tokens_per_s });
      td(tr, fmtPct(p.network_wait_share), { cls: "num", col: "network_wait", value: p.network_wait_share });
      td(tr, fmtUsd(p.price_usd_per_hour), { cls: "num", col: "price", value: p.price_usd_per_hour, title: "price from " + p.price_source });
      td(tr, fmtUsd(p.usd_per_million_tokens), { cls: "num", col: "usd_per_million_tokens" });
      td(tr, fmtInt(p.failed_rounds), { cls: "num", col: "failed_rounds", value: p.failed_rounds });
      td(tr, ago(p.last_seen, now), { cls: "num", col: "last_seen" });
      body.appendChild(tr);
    }
    setText("peers-note", s.peers_truncated ? "(first " + s.peers.length + " of " + s.swarm.peers + ")" : "");
  }

  const EVENT_TEXT = { join: "joined", leave: "left", offline: "went offline", failed_round: "failed round", rejected: "rejected report" };
  function renderEvents(s) {
    const list = $("events");
    list.replaceChildren();
    for (const e of s.events) {
      const li = document.createElement("li");
      li.dataset.kind = e.kind;
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = new Date(e.at * 1000).toLocaleTimeString();
      const kind = document.createElement("span");
      kind.className = "kind kind-" + e.kind;
      kind.textContent = EVENT_TEXT[e.kind] || e.kind;
      const who = document.createElement("span");
      who.textContent = (e.name || (e.peer_id ? e.peer_id.slice(-10) : "unknown peer")) + (e.detail ? " · " + e.detail : "");
      li.append(when, kind, who);
      list.appendChild(li);
    }
  }

  function render(s) {
    renderHeader(s);
    renderCards(s);
    renderCost(s);
    renderLeaderboard(s);
    renderPeers(s);
    renderEvents(s);
    const loss = s.loss.filter((r) => r.val_bpb != null).map((r) => ({ x: r.round, y: r.val_bpb }));
    const tps = s.loss.filter((r) => r.tokens_per_s != null).map((r) => ({ x: r.round, y: r.tokens_per_s }));
    updateChart(lossChart, $("loss-chart"), loss);
    updateChart(tpsChart, $("tps-chart"), tps);
    document.body.dataset.ledgerVersion = String(s.ledger_version);
  }

  function setConnected(live) {
    const el = $("conn");
    el.textContent = live ? "live" : "reconnecting";
    el.className = "conn " + (live ? "conn-live" : "conn-wait");
  }

  function start() {
    lossChart = makeChart($("loss-chart"), "val bpb", "#4fb3ff");
    tpsChart = makeChart($("tps-chart"), "tokens/s", "#3fb950");
    fetch("/api/v1/state").then((r) => r.json()).then(render).catch(() => setConnected(false));
    const source = new EventSource("/api/v1/events");
    source.addEventListener("snapshot", (ev) => { setConnected(true); render(JSON.parse(ev.data)); });
    source.onerror = () => setConnected(false); // EventSource reconnects by itself
  }

  document.addEventListener("DOMContentLoaded", start);
})();

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
  // several lines over time (x: minutes since the first point); legend on
  function makeTimeChart(canvas, lines) {
    if (typeof Chart === "undefined") return null;
    return new Chart(canvas, {
      type: "line",
      data: { datasets: lines.map(([label, color, dash]) => ({ label: label, data: [], borderColor: color, backgroundColor: color,
        pointRadius: 1, borderDash: dash || [], stepped: true })) },
      options: {
        animation: false, parsing: false, responsive: true, maintainAspectRatio: false,
        scales: {
          x: { type: "linear", title: { display: true, text: "minutes", color: "#8a96a3" }, ticks: { color: "#8a96a3" }, grid: { color: "#2a323c" } },
          y: { beginAtZero: true, ticks: { color: "#8a96a3" }, grid: { color: "#2a323c" } },
        },
        plugins: { legend: { labels: { color: "#8a96a3", boxWidth: 12 } } },
      },
    });
  }
  function updateLines(chart, canvas, lines) {
    canvas.dataset.points = String(lines.length ? lines[0].length : 0);
    if (!chart) return;
    lines.forEach((points, i) => { chart.data.datasets[i].data = points; });
    chart.update("none");
  }
  let lossChart = null, tpsChart = null, burnChart = null, spendChart = null;
  function updateChart(chart, canvas, points) {
    canvas.dataset.points = String(points.length);
    if (!chart) return;
    chart.data.datasets[0].data = points;
    chart.update("none");
  }

  // --- panels -------------------------------------------------------------------------------
  function renderHeader(s) {
    setText("run-id", s.run.run_id);
    // the run's round is the highest with a confirmed claim; a higher claimed one is shown apart
    const claimed = s.run.claimed_round != null && s.run.claimed_round > s.run.round ? " (claimed " + fmtInt(s.run.claimed_round) + ")" : "";
    setText("run-round", fmtInt(s.run.round) + claimed);
    setText("run-hash", s.run.manifest_hash.slice(0, 12));
    setText("join-line", s.run.join_line || "");
    $("progress").value = s.swarm.progress;
    setText("progress-text", fmtInt(s.swarm.tokens) + " of " + fmtInt(s.run.target_tokens) + " tokens (" + fmtPct(s.swarm.progress) + ")" +
      (s.run.epochs != null ? " · " + fmtNum(s.run.epochs, 2) + " epochs of the corpus" : ""));
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

  const range = (lo, mid, hi, fmt) => (mid == null ? fmt(null) : fmt(mid) + " (" + fmt(lo) + " – " + fmt(hi) + ")");
  function renderPlan(s) {
    const p = s.plan;
    if (!p) return;
    const b = p.budget;
    setText("plan-seq", p.seq == null ? "(no plan yet)" : "#" + p.seq + " at round " + fmtInt(p.round));
    setText("plan-cap", (b.cap_usd_per_hour == null ? "none" : fmtUsd(b.cap_usd_per_hour) + " / h")
      + (b.total_usd == null ? "" : " · total " + fmtUsd(b.total_usd))
      + (p.cap_usd_per_hour != null && p.cap_usd_per_hour !== b.cap_usd_per_hour ? " · planning under " + fmtUsd(p.cap_usd_per_hour) + " / h" : ""));
    setText("plan-burn", fmtUsd(s.swarm.burn_usd_per_hour) + " / h · " + fmtUsd(p.burn_usd_per_hour) + " / h");
    setText("plan-spend", fmtUsd(s.swarm.usd) + " · " + (p.usd_to_target == null ? "–" : fmtUsd(s.swarm.usd + p.usd_to_target)));
    setText("plan-eta", range(p.eta_low_s, p.eta_s, p.eta_high_s, fmtDuration));
    setText("plan-usd", range(p.usd_to_target_low, p.usd_to_target, p.usd_to_target_high, fmtUsd));
    setText("plan-tps", fmtNum(p.tokens_per_s, 0));
    setText("plan-round-tokens", fmtInt(p.round_tokens) + " (manifest: " + fmtInt(s.run.round_tokens) + ")");
    setText("plan-standby", fmtInt(p.standby || 0) + " peer(s)");
    const notes = $("plan-notes");
    notes.replaceChildren();
    for (const n of p.notes || []) {
      const li = document.createElement("li");
      li.textContent = n;
      notes.appendChild(li);
    }
    const rows = s.plans || [];
    const t0 = rows.length ? rows[0].made_at : 0;
    const at = (r) => (r.made_at - t0) / 60;
    updateLines(burnChart, $("burn-chart"), [
      rows.map((r) => ({ x: at(r), y: r.ledger_burn })),
      rows.map((r) => ({ x: at(r), y: r.planned_burn })),
      rows.filter((r) => r.cap_usd_per_hour != null).map((r) => ({ x: at(r), y: r.cap_usd_per_hour })),
    ]);
    updateLines(spendChart, $("spend-chart"), [
      rows.map((r) => ({ x: at(r), y: r.spent_usd })),
      rows.filter((r) => r.usd_to_target != null).map((r) => ({ x: at(r), y: r.spent_usd + r.usd_to_target })),
    ]);
  }

  // flags raised against a peer (reducers' outlier reports, validators' verdicts): reason x reporters
  function flagText(flags) {
    const parts = Object.entries(flags || {}).map(([reason, n]) => reason + " ×" + n);
    return parts.length ? " ⚑ " + parts.join(", ") : "";
  }

  function renderLeaderboard(s) {
    const body = $("leaderboard").tBodies[0];
    body.replaceChildren();
    s.leaderboard.forEach((e, i) => {
      const tr = document.createElement("tr");
      td(tr, String(i + 1));
      tr.dataset.peerId = e.peer_id; // rows are peers: two peers may carry one name
      td(tr, e.name + flagText(e.flags), { cls: "name", col: "name", title: e.name });
      td(tr, e.peer_id.slice(-10), { cls: "peer-id", col: "peer_id", title: e.peer_id });
      td(tr, fmtInt(e.tokens), { cls: "num", col: "tokens", value: e.tokens });
      td(tr, fmtInt(e.credited_tokens), { cls: "num", col: "credited", value: e.credited_tokens });
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
      if (p.flagged) {  // >= 2 reducers reported it as an outlier; its credit stays unconfirmed
        tr.dataset.flagged = "true";
        const flag = document.createElement("span");
        flag.className = "flag";
        flag.textContent = "flagged";
        flag.title = (p.flag.dissent ? "named by " + p.flag.reducers + " members for claiming reducer failures no one else saw"
                                     : "reported as an outlier by " + p.flag.reducers + " reducers")
          + " (first in round " + p.flag.first_round + "); credit unconfirmed";
        stateCell.appendChild(flag);
      }
      td(tr, p.name, { cls: "name", col: "name", title: p.name });
      if (p.flags && Object.keys(p.flags).length) tr.dataset.flags = flagText(p.flags).slice(3);
      td(tr, p.peer_id.slice(-10), { cls: "peer-id", col: "peer_id", title: p.peer_id });
      td(tr, (p.device_count > 1 ? p.device_count + "× " : "") + p.device, { col: "device" });
      const role = p.role || "–", reach = p.reachability || "–";
      td(tr, role + " / " + reach, { col: "role", title: "role / reachability (the coordinator's dial-back verdict)" });
      const VERSION_NOTE = { too_old: " (too old for this run)", older: " (older than the coordinator)", unknown: "", ok: "" };
      const v = td(tr, (p.software_version || "?") + (VERSION_NOTE[p.version_status] || ""), { col: "version", title: "capaswarm version" });
      v.dataset.versionStatus = p.version_status;
      if (p.version_status === "too_old" || p.version_status === "older") v.classList.add("warn");
      td(tr, fmtInt(p.last_round), { cls: "num", col: "round", value: p.last_round });
      td(tr, fmtInt(p.tokens), { cls: "num", col: "tokens", value: p.tokens });
      td(tr, fmtInt(p.unconfirmed_tokens), { cls: "num", col: "unconfirmed", value: p.unconfirmed_tokens });
      td(tr, fmtNum(p.tokens_per_s, 0), { cls: "num", col: "tokens_per_s", value: p.tokens_per_s });
      td(tr, fmtPct(p.network_wait_share), { cls: "num", col: "network_wait", value: p.network_wait_share });
      td(tr, fmtUsd(p.price_usd_per_hour), { cls: "num", col: "price", value: p.price_usd_per_hour, title: "price from " + p.price_source });
      td(tr, fmtUsd(p.usd_per_million_tokens), { cls: "num", col: "usd_per_million_tokens" });
      td(tr, fmtInt(p.failed_rounds), { cls: "num", col: "failed_rounds", value: p.failed_rounds });
      const plan = p.plan_state || "active";
      td(tr, plan, { cls: "plan-" + plan, col: "plan", value: plan, title: p.plan_reason || "" });
      td(tr, ago(p.last_seen, now), { cls: "num", col: "last_seen" });
      const credit = td(tr, "", { col: "certificate" });
      if (p.tokens > 0) { // this volunteer's own attribution certificate, signed by the run key
        const link = document.createElement("a");
        link.href = "/api/v1/certificate?peer=" + encodeURIComponent(p.peer_id);
        link.download = "";
        link.textContent = "certificate";
        link.title = "download your attribution certificate; check it with: swarm certificate verify FILE";
        credit.appendChild(link);
      }
      body.appendChild(tr);
    }
    setText("peers-note", s.peers_truncated ? "(first " + s.peers.length + " of " + s.swarm.peers + ")" : "");
  }

  const EVENT_TEXT = { join: "joined", leave: "left", offline: "went offline", failed_round: "failed round", rejected: "rejected report",
    pause: "paused", resume: "resumed", standby: "put on standby", active: "activated", budget: "budget changed",
    standby_work: "trained on standby" };
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
    renderPlan(s);
    renderLeaderboard(s);
    renderPeers(s);
    renderEvents(s);
    const loss = s.loss.filter((r) => r.val_bpb != null).map((r) => ({ x: r.round, y: r.val_bpb }));
    const tps = s.loss.filter((r) => r.tokens_per_s != null).map((r) => ({ x: r.round, y: r.tokens_per_s }));
    updateChart(lossChart, $("loss-chart"), loss);
    updateChart(tpsChart, $("tps-chart"), tps);
    document.body.dataset.ledgerVersion = String(s.ledger_version);
  }

  function setConnected(mode) {
    const el = $("conn");
    el.textContent = mode;
    el.className = "conn " + (mode === "live" ? "conn-live" : "conn-wait");
  }
  // why the live stream is not open (the server's own words), or "" when it is
  function setReason(text) {
    const el = $("conn-reason");
    el.textContent = text;
    el.hidden = !text;
  }

  // The live stream is read with fetch and a small server-sent-events parser, not EventSource: an
  // EventSource the server refuses (HTTP 429: this address holds its share of streams, or every
  // slot is taken) closes for good and never says why. Here the page reads the refusal's reason and
  // Retry-After, shows the reason, polls /api/v1/state meanwhile and asks for the stream again,
  // backing off (Retry-After, doubled per refusal, jittered, at most a minute). A stream the server
  // ends (its lifetime) is reopened at once; one silent for three keepalives is dropped and reopened.
  const POLL_MS = 3000, MAX_BACKOFF_MS = 60000, SILENT_MS = 45000, REOPEN_MS = 500;
  let pollTimer = null, refusals = 0, failures = 0;
  function poll() {
    fetch("/api/v1/state", { cache: "no-store" })
      .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then((s) => { setConnected("polling"); render(s); })
      .catch(() => setConnected("reconnecting"));
  }
  function startPolling() {
    if (pollTimer !== null) return;
    poll();
    pollTimer = setInterval(poll, POLL_MS);
  }
  function stopPolling() {
    if (pollTimer !== null) clearInterval(pollTimer);
    pollTimer = null;
  }
  const backoff = (baseMs, n) => Math.min(MAX_BACKOFF_MS, baseMs * Math.pow(2, Math.max(0, n - 1))) * (1 + Math.random() / 4);

  function dispatch(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (event === "snapshot" && data.length) render(JSON.parse(data.join("\n")));
  }

  async function follow(response, controller) {
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "", watchdog = null;
    const arm = () => { clearTimeout(watchdog); watchdog = setTimeout(() => controller.abort(), SILENT_MS); };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  async function refused(response) {
    refusals++;
    let detail = "HTTP " + response.status;
    try {
      const body = await response.json();
      detail = body.detail || body.error || detail;
    } catch (e) { /* not JSON: the status says enough */ }
    const wait = backoff(1000 * (Number(response.headers.get("Retry-After")) || 10), refusals);
    setReason("live updates refused: " + detail + " (polling; next try in " + Math.round(wait / 1000) + " s)");
    startPolling();
    return wait;
  }

  async function connect() {
    const controller = new AbortController();
    let wait = REOPEN_MS;
    try {
      const response = await fetch("/api/v1/events", { cache: "no-store", signal: controller.signal,
        headers: { Accept: "text/event-stream" } });
      if (!response.ok) {
        wait = await refused(response);
      } else {
        refusals = 0;
        failures = 0;
        stopPolling();
        setReason("");
        setConnected("live");
        await follow(response, controller);
        setConnected("reconnecting");
      }
    } catch (e) {
      failures++; // the coordinator is unreachable, or the stream went silent
      setConnected("reconnecting");
      wait = backoff(2000, failures);
    }
    setTimeout(connect, wait);
  }

  function start() {
    lossChart = makeChart($("loss-chart"), "val bpb", "#4fb3ff");
    tpsChart = makeChart($("tps-chart"), "tokens/s", "#3fb950");
    burnChart = makeTimeChart($("burn-chart"), [["burn $/h (ledger)", "#4fb3ff"], ["planned $/h", "#a371f7"], ["cap $/h", "#f85149", [6, 4]]]);
    spendChart = makeTimeChart($("spend-chart"), [["spent $", "#3fb950"], ["forecast $ at target", "#d29922", [6, 4]]]);
    fetch("/api/v1/state").then((r) => r.json()).then(render).catch(() => setConnected("reconnecting"));
    connect();
  }

  document.addEventListener("DOMContentLoaded", start);
})();

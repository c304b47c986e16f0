// Cyclone's dashboard: polls /api/state every second and redraws, without reloading the page.
// No libraries: charts are inline SVG drawn here, tables are built with the DOM (textContent
// only, so nothing the master sends is ever read as HTML).
"use strict";

(function () {
  const POLL_MS = 1000;
  const PANELS_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const STATUSES = ["ok", "failed", "timeout", "crashed", "quarantined"];
  let panelsKey = "";
  let panelsFetched = 0;
  let selectedFailure = null;
  let lastUpdate = 0;
  window.cycloneDashboard = { updates: 0 };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value; else node.setAttribute(name, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(n, digits) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }

  function millis(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms >= 1000 ? fmt(ms / 1000, 2) + " s" : fmt(ms, ms < 10 ? 2 : 1) + " ms";
  }

  function ago(epoch, now) {
    const s = Math.max(0, now - epoch);
    return s < 120 ? s.toFixed(1) + " s ago" : (s / 60).toFixed(0) + " min ago";
  }

  function duration(seconds) {
    const s = Math.floor(seconds || 0);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h " : "") + String(m).padStart(h ? 2 : 1, "0") + "m " + String(r).padStart(2, "0") + "s";
  }

  function setLink(state, text) {
    $("link").className = "link " + state;
    $("link-text").textContent = text;
  }

  // -- the header and the tiles -------------------------------------------------------------

  function drawHeader(s) {
    const gen = s.generator || {};
    const phase = s.draining ? "stopping" : "running";
    $("run").textContent = `run ${s.run_id} · master ${s.master_id} · generator ${gen.name || "?"}` +
      `${gen.exhausted ? " (done)" : ""} · ${phase} · up ${duration(s.uptime_s)}` + (gen.error ? ` · generator failed: ${gen.error}` : "");
  }

  function drawTiles(s) {
    const c = s.counts;
    const tiles = [
      ["submitted", c.submitted, ""], ["queued", c.queued, ""], ["in flight", c.in_flight, ""],
      ["done", s.done, ""], ["succeeded", c.succeeded, "ok"], ["failed", c.failed, c.failed ? "bad" : ""],
      ["quarantined", c.quarantined, c.quarantined ? "bad" : ""], ["retried", c.retried, ""],
      ["tasks/s", s.tasks_per_second, "", 1], ["round trip p50", s.latency_ms_p50, "", "ms"],
      ["round trip p99", s.latency_ms_p99, "", "ms"],
      ["controllers", s.controllers.count, ""], ["workers", s.controllers.workers, ""],
    ];
    const box = $("counts");
    box.replaceChildren();
    for (const [name, value, cls, digits] of tiles) {
      const tile = el("div", { class: "tile " + cls, id: "count-" + name.replace(/[^a-z0-9]+/g, "-") });
      tile.dataset.value = value === null || value === undefined ? "" : String(value);
      tile.append(el("div", { class: "value" }, digits === "ms" ? millis(value) : fmt(value, digits)));
      tile.append(el("div", { class: "name" }, name));
      box.append(tile);
    }
  }

  // -- charts ------------------------------------------------------------------------------

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function lineChart(id, times, lines) {
    const W = 600, H = 170, L = 52, R = 10, T = 18, B = 22;
    const chart = $(id);
    chart.replaceChildren();
    const values = lines.flatMap((line) => line.values.filter((v) => v !== null && v !== undefined));
    if (times.length < 2 || values.length === 0) {
      chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "waiting for samples"));
      return;
    }
    const t0 = times[0], t1 = times[times.length - 1];
    const ymax = niceMax(Math.max(...values));
    const x = (t) => L + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (W - L - R);
    const y = (v) => T + (1 - v / ymax) * (H - T - B);
    for (const frac of [0, 0.5, 1]) {
      const v = ymax * frac;
      chart.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis" }));
      chart.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v, ymax < 10 ? 2 : 0)));
    }
    const span = t1 - t0;
    chart.append(svg("text", { x: L, y: H - 5, class: "tick" }, "-" + duration(span)));
    chart.append(svg("text", { x: W - R, y: H - 5, "text-anchor": "end", class: "tick" }, "now"));
    let legendX = L;
    lines.forEach((line, index) => {
      let d = "";
      let pen = false;
      line.values.forEach((v, i) => {
        if (v === null || v === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + x(times[i]).toFixed(1) + " " + y(v).toFixed(1) + " ";
        pen = true;
      });
      if (d) chart.append(svg("path", { d: d, class: "line s" + index }));
      chart.append(svg("rect", { x: legendX, y: 4, width: 10, height: 10, class: "s" + index }));
      const last = line.values.filter((v) => v !== null && v !== undefined).pop();
      const label = svg("text", { x: legendX + 14, y: 13, class: "legend tick" }, `${line.name} ${fmt(last, ymax < 10 ? 2 : 0)}`);
      chart.append(label);
      legendX += 24 + 7 * (line.name.length + 8);
    });
  }

  function drawCharts(s) {
    const series = s.series;
    lineChart("chart-load", series.t, [{ name: "queued", values: series.queued }, { name: "in flight", values: series.in_flight }]);
    lineChart("chart-done", series.t, [{ name: "done", values: series.done }]);
    lineChart("chart-rate", series.t, [{ name: "tasks/s", values: series.rate }]);
    lineChart("chart-latency", series.t, [{ name: "p50", values: series.p50_ms }, { name: "p99", values: series.p99_ms }]);
  }

  // -- tables ------------------------------------------------------------------------------

  function row(cells, cls) {
    const tr = el("tr", cls ? { class: cls } : {});
    for (const cell of cells) {
      if (cell instanceof Node) { const td = el("td"); td.append(cell); tr.append(td); continue; }
      const [text, tdCls] = Array.isArray(cell) ? cell : [cell, ""];
      tr.append(el("td", tdCls ? { class: tdCls } : {}, text));
    }
    return tr;
  }

  function drawControllers(s) {
    $("hosts").textContent = s.controllers.hosts ? `(${s.controllers.hosts})` : "";
    const body = $("controllers").tBodies[0];
    body.replaceChildren();
    const departed = {};
    for (const gone of s.controllers.departed) (departed[gone.host] = departed[gone.host] || []).push(gone);
    for (const group of s.controllers.by_host) {
      let first = true;
      for (const ctl of group.controllers) {
        body.append(row([first ? group.host : "", ctl.id + (ctl.draining ? " (draining)" : ""), [fmt(ctl.workers), "num"],
          [fmt(ctl.in_flight), "num"], ago(ctl.last_seen, s.now)], ctl.draining ? "draining" : ""));
        first = false;
      }
      for (const gone of departed[group.host] || []) {
        const what = gone.lost ? `lost: ${gone.reason}` : "left";
        body.append(row([first ? group.host : "", `${gone.id} (${what})`, [fmt(gone.workers), "num"],
          [gone.requeued ? `${gone.requeued} requeued` : "–", "num"], ago(gone.at, s.now)], gone.lost ? "lost" : "gone"));
        first = false;
      }
    }
    if (!body.rows.length) body.append(row([["no controller yet", "muted"], "", "", "", ""]));
  }

  function drawOutcomes(s) {
    const body = $("outcomes").tBodies[0];
    body.replaceChildren();
    for (const [type, counts] of Object.entries(s.outcomes)) {
      const total = STATUSES.reduce((sum, st) => sum + (counts[st] || 0), 0) || 1;
      const bar = el("div", { class: "bar" });
      for (const st of STATUSES) {
        if (!counts[st]) continue;
        const part = el("span", { class: "b-" + st, title: `${st}: ${counts[st]}` });
        part.style.width = (100 * counts[st] / total).toFixed(2) + "%";
        bar.append(part);
      }
      const cells = [type, ...STATUSES.map((st) => [fmt(counts[st] || 0), "num"]), bar];
      body.append(row(cells));
    }
    if (!body.rows.length) body.append(row([["no results yet", "muted"]]));
  }

  function drawSinks(s) {
    const body = $("sinks").tBodies[0];
    body.replaceChildren();
    for (const sink of s.sinks) {
      const error = sink.last_error ? sink.last_error + (sink.failing ? "" : " (recovered)") : "–";
      body.append(row([sink.name, [fmt(sink.backlog), "num"], [fmt(sink.delivered), "num"], [fmt(sink.errors), "num"],
        [error, "error"]], sink.failing ? "lost" : ""));
    }
  }

  function drawFailures(s) {
    const body = $("failures").tBodies[0];
    body.replaceChildren();
    for (const f of s.failures) {
      const tr = row([f.task_id, f.task_type, f.key || "", [f.status, "status-" + f.status], f.controller || "",
        [f.error, "error"]], f.task_id === selectedFailure ? "selected" : "");
      tr.dataset.task = f.task_id;
      tr.addEventListener("click", () => showFailure(f.task_id));
      body.append(tr);
    }
    if (!body.rows.length) body.append(row([["no failure", "muted"]]));
  }

  async function showFailure(taskId) {
    selectedFailure = taskId;
    const box = $("failure-detail");
    const reply = await fetch("/api/failures/" + encodeURIComponent(taskId), { cache: "no-store" });
    box.replaceChildren();
    box.hidden = false;
    if (!reply.ok) {
      box.append(el("p", { class: "muted" }, `task ${taskId} is no longer among the latest failures`));
      return;
    }
    const f = await reply.json();
    box.append(el("h2", {}, `task ${f.task_id} (${f.task_type}${f.key ? ", " + f.key : ""}): ${f.status}`));
    const table = el("table", { id: "attempts" });
    table.append(row(["attempt", "status", "controller", "finished", "error"].map((h) => h)));
    table.rows[0].classList.add("muted");
    for (const a of f.history) {
      table.append(row([[fmt(a.attempt), "num"], [a.status, "status-" + a.status], a.controller || "",
        a.finished_at ? new Date(a.finished_at * 1000).toLocaleTimeString() : "", [a.error, "error"]]));
    }
    const ended = f.started_at ? new Date((f.started_at + f.duration) * 1000).toLocaleTimeString() : "";
    table.append(row([[fmt(f.attempt), "num"], [f.status, "status-" + f.status], f.controller || "", ended, [f.error, "error"]]));
    box.append(table);
  }

  // -- the plugins' panels -----------------------------------------------------------------

  function shade(cell, range, better) {
    if (cell.status !== "ok" || !better || cell.value === null || range.max <= range.min) return null;
    let t = (cell.value - range.min) / (range.max - range.min);
    if (better === "lower") t = 1 - t;
    return `hsl(140, 55%, ${(58 - 26 * t).toFixed(0)}%)`; // darker green: better
  }

  function drawPanel(panel) {
    const box = el("div", { class: "panel", id: "panel-" + panel.name });
    box.append(el("h2", {}, panel.title));
    const legend = el("div", { class: "legend-row" });
    for (const st of ["ok", "slow", "failed", "off", "unknown"]) {
      const item = el("span");
      item.append(el("span", { class: "swatch cell s-" + st }), st);
      legend.append(item);
    }
    if (panel.better) legend.append(el("span", {}, `darker green: ${panel.better} ${panel.unit || "value"} is better`));
    if (panel.dropped) legend.append(el("span", { class: "notice" }, `${panel.dropped} cells beyond the grid's limit not shown`));
    box.append(legend);
    const okValues = panel.cells.filter((c) => c.status === "ok" && c.value !== null).map((c) => c.value);
    const range = { min: Math.min(...okValues), max: Math.max(...okValues) };
    const byRow = {};
    for (const cell of panel.cells) (byRow[cell.row] = byRow[cell.row] || {})[cell.column] = cell;
    const table = el("table", { class: "grid" });
    const head = el("tr");
    head.append(el("th"));
    for (const column of panel.columns) head.append(el("th", {}, column));
    table.append(head);
    for (const name of panel.rows) {
      const tr = el("tr");
      tr.append(el("th", {}, name));
      for (const column of panel.columns) {
        const cell = byRow[name][column];
        if (!cell) { tr.append(el("td", { class: "blank" })); continue; }
        const td = el("td", { class: "cell s-" + cell.status, title: `${name} ${column}: ${cell.detail || cell.status}` }, cell.label);
        const colour = shade(cell, range, panel.better);
        if (colour) td.style.backgroundColor = colour;
        tr.append(td);
      }
      table.append(tr);
    }
    box.append(table);
    return box;
  }

  async function updatePanels(s) {
    const key = JSON.stringify(s.panels);
    const section = $("panels");
    if (!s.panels.length) { section.hidden = true; return; }
    if (key === panelsKey || Date.now() - panelsFetched < PANELS_MS) return;
    panelsFetched = Date.now();
    const reply = await fetch("/api/panels", { cache: "no-store" });
    if (!reply.ok) return;
    const data = await reply.json();
    const filled = data.panels.filter((panel) => panel.cells.length); // a panel shows once it has cells
    section.hidden = !filled.length;
    section.replaceChildren(...filled.map(drawPanel));
    panelsKey = key;
  }

  // -- the loop ----------------------------------------------------------------------------

  async function poll() {
    try {
      const reply = await fetch("/api/state", { cache: "no-store" });
      if (reply.status === 403) {
        setLink("denied", "no access: open the address with its token, as the master printed it");
        return; // no point asking again without a token
      }
      if (!reply.ok) throw new Error("HTTP " + reply.status);
      const s = await reply.json();
      if (s.counts) {
        drawHeader(s); drawTiles(s); drawCharts(s); drawControllers(s); drawOutcomes(s); drawSinks(s); drawFailures(s);
        await updatePanels(s);
        window.cycloneDashboard.updates += 1;
        lastUpdate = Date.now();
        setLink("live", "live");
      }
    } catch (error) {
      const since = lastUpdate ? " since " + new Date(lastUpdate).toLocaleTimeString() : "";
      setLink("stale", "master not answering" + since);
    }
    setTimeout(poll, POLL_MS);
  }

  poll();
})();

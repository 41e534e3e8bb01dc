/* lmdev dashboard: a small single-page app over the read-only JSON API (/api/...).
   Text from the store is only ever put in the page with textContent: nothing is evaluated.
   window.lmdev exposes the drawn charts for tests and benchmarks (window.lmdev.charts). */
(function () {
  "use strict";

  const COLORS = ["#5aa9ff", "#f2994a", "#3fb950", "#e5534b", "#b083f0", "#39c5cf", "#d29922", "#ec6cb9",
    "#8ddb8c", "#a5d6ff"];
  const POLL_MS = 1000;
  const MAX_CHARTS_PER_GROUP = 24;
  const state = { timers: [], streams: [], charts: new Map(), smoothing: 0.6, xmode: "step", log: false, plan: false };
  const lmdev = { charts: state.charts, ready: false, firstChartAt: null, renders: 0 };
  window.lmdev = lmdev;

  // -- helpers ---------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = v;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || ("HTTP " + status));
      this.status = status; this.hint = err.hint; this.kind = err.kind;
    }
  }

  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  }

  function banner(message, hint) {
    const b = document.getElementById("banner");
    b.replaceChildren();
    if (!message) { b.hidden = true; return; }
    b.append(el("strong", { text: message }));
    if (hint) b.append(el("span", { class: "hint", text: hint }));
    b.hidden = false;
  }

  function showError(view, err) {
    if (err instanceof ApiError && err.status === 404) {
      view.replaceChildren(el("div", { class: "empty", id: "not-found" },
        el("h1", { text: "Not found" }), el("p", { text: err.message }), el("a", { href: "#/", text: "Back to the runs" })));
      return;
    }
    banner(err.message || String(err), err.hint || "");
    view.replaceChildren(el("div", { class: "empty", text: "Nothing to show." }));
  }

  function fmtNum(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "string") return v.toUpperCase() === "NAN" ? "NaN" : v === "inf" ? "+Inf" : v === "-inf" ? "−Inf" : v;
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
    return Number.isInteger(v) ? String(v) : v.toPrecision(5).replace(/\.?0+$/, "");
  }
  function fmtAxis(v, bytes) {
    if (v === null || v === undefined) return "";
    if (bytes && v >= 0) return fmtBytes(v).replace(".0 ", " ");
    const a = Math.abs(v);
    if (a >= 1e9) return +(v / 1e9).toPrecision(3) + "G";
    if (a >= 1e6) return +(v / 1e6).toPrecision(3) + "M";
    if (a >= 1e4) return +(v / 1e3).toPrecision(3) + "k";
    return String(+v.toPrecision(6));
  }
  function fmtDur(s) {
    if (s === null || s === undefined) return "–";
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, x = s % 60;
    return h ? `${h}h ${m}m ${x}s` : m ? `${m}m ${x}s` : `${x}s`;
  }
  function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; }
  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    if (n < 0) return "−" + fmtBytes(-n);
    const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]; let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function fmtHeadroom(b) { return b < 0 ? `over by ${fmtBytes(-b)}` : `headroom ${fmtBytes(b)}`; }
  function badge(status) { return el("span", { class: "badge " + status, text: status }); }
  function clearTimers() {
    state.timers.forEach(clearInterval); state.timers = [];
    state.streams.forEach((es) => es.close()); state.streams = [];
  }
  function every(ms, fn) { state.timers.push(setInterval(fn, ms)); }
  function destroyCharts() { for (const c of state.charts.values()) c.plot.destroy(); state.charts.clear(); }
  function params(hash) { const i = hash.indexOf("?"); return new URLSearchParams(i < 0 ? "" : hash.slice(i + 1)); }
  // Chart settings live in the address (#/run/ID?smoothing=0.8&x=wall&log=1): a reload or a shared
  // link shows the same chart. Read on every route; written with replaceState (no hashchange).
  function readSettings(hash) {
    const p = params(hash);
    const sm = parseFloat(p.get("smoothing"));
    if (p.has("smoothing") && isFinite(sm)) state.smoothing = Math.min(0.99, Math.max(0, sm));
    if (["step", "wall", "rel"].includes(p.get("x"))) state.xmode = p.get("x");
    if (p.has("log")) state.log = p.get("log") === "1";
  }
  function writeSettings() {
    const hash = location.hash || "#/";
    const i = hash.indexOf("?");
    const p = params(hash);
    p.set("smoothing", String(state.smoothing)); p.set("x", state.xmode); p.set("log", state.log ? "1" : "0");
    history.replaceState(null, "", (i < 0 ? hash : hash.slice(0, i)) + "?" + p.toString());
  }
  // Schedules and counters (learning rate, epoch, ...) are drawn as they are: smoothing a step
  // function only blurs where it changes.
  const SCHEDULE = /(^|[\/_.-])(lr|learning[_-]?rate|epoch|epochs|step|global[_-]?step|momentum|weight[_-]?decay|warmup|batch[_-]?size|beta[12]?|temperature|lr[_-]?scale)$/i;
  function isSchedule(key) { return SCHEDULE.test(key); }
  function groupOf(key) { const i = key.indexOf("/"); return i < 0 ? "(no prefix)" : key.slice(0, i); }
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  // TensorBoard's smoothing: an exponential moving average, debiased so the first points are not
  // pulled towards zero. Non-finite values stay gaps and do not enter the average.
  function smooth(values, weight) {
    if (!weight) return values.slice();
    const out = new Array(values.length);
    let last = 0, n = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || !isFinite(v)) { out[i] = null; continue; }
      last = last * weight + (1 - weight) * v; n++;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    return out;
  }

  function xValues(s, mode, start) {
    if (mode === "step") return s.step;
    if (mode === "wall") return s.time;
    return s.time.map((t) => t - start);
  }

  // -- charts ----------------------------------------------------------------------------------

  // steps are whole numbers: no tick at step 2.5
  const STEP_INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9].map((p) => m * p)).sort((a, b) => a - b);
  function chartOpts(width, title, series, xmode, logScale, extra) {
    const grid = { stroke: cssVar("--grid"), width: 1 };
    const axis = { stroke: cssVar("--muted"), grid, ticks: grid };
    return Object.assign({
      width, height: 220, title: undefined, padding: [8, xmode === "wall" ? 56 : 36, 0, 0],
      scales: { x: { time: xmode === "wall" }, y: logScale ? { distr: 3 } : {} },
      axes: [Object.assign({}, axis, xmode === "rel" ? { label: "seconds" } : {}, xmode === "step" ? { incrs: STEP_INCRS } : {}),
        Object.assign({ size: 78, values: (u, splits) => splits.map((v) => fmtAxis(v, /bytes/.test(title))) }, axis)],
      series: [{ label: xmode === "step" ? "step" : xmode === "wall" ? "time" : "s" }].concat(series),
      cursor: { sync: { key: "lmdev-" + (extra && extra.syncKey || "m") }, drag: { x: true, y: false } },
      legend: { live: true },
    }, extra && extra.opts || {});
  }

  function widthOf(node) { return Math.max(300, Math.floor(node.getBoundingClientRect().width) - 4); }

  // A chart of one metric (raw + smoothed) or of several (compare): named = {label: series}.
  // opts: xmode, logScale, smoothing (a number, or a function of the label), start (a number or
  // {label: start}), colors / dashes ({label: ...}), hidden (a Set of labels), markers
  // ([{step, time, text}]: resumes, fork points). A series with ``inherited`` (a fork's parent's
  // points up to the fork step) is drawn continuing it: the parent's part dashed, in its color.
  function drawChart(card, id, named, opts) {
    const { xmode, logScale, start } = opts;
    const names = Object.keys(named);
    const smoothingOf = (n) => (typeof opts.smoothing === "function" ? opts.smoothing(n) : opts.smoothing);
    const xs = new Set();
    const perName = names.map((n) => {
      const s = named[n];
      const st = start !== null && typeof start === "object" ? start[n] : start;
      let x = xValues(s, xmode, st), v = s.value, nI = 0;
      const inh = s.inherited;
      if (inh && inh.step && inh.step.length) { nI = inh.step.length; x = xValues(inh, xmode, st).concat(x); v = inh.value.concat(v); }
      x.forEach((xv) => xs.add(xv));
      return { n, x, v, nI, s };
    });
    const single = names.length === 1 && !perName[0].nI;
    // one x array for all series (uPlot's aligned data); series without a point at an x get gaps
    const xAll = single ? perName[0].x : Array.from(xs).sort((a, b) => a - b);
    const data = [xAll];
    const series = [];
    const groups = [];
    perName.forEach(({ n, x, v, nI }, i) => {
      let raw = v;
      if (logScale) raw = raw.map((y) => (y !== null && y > 0 ? y : null));
      const smoothing = smoothingOf(n);
      const sm = smooth(raw, smoothing);
      const color = (opts.colors && opts.colors[n]) || COLORS[i % COLORS.length];
      const dash = opts.dashes && opts.dashes[n];
      const show = !(opts.hidden && opts.hidden.has(n));
      const align = (arr) => {
        if (single) return arr;
        const m = new Map(); x.forEach((xv, j) => m.set(xv, arr[j]));
        return xAll.map((xv) => (m.has(xv) ? m.get(xv) : undefined));
      };
      const part = (arr, from, to) => arr.map((y, j) => (j >= from && j < to ? y : null));
      const base = names.length === 1 && !opts.useNames ? "" : n;
      if (smoothing > 0) {
        series.push({ label: base ? base + " raw" : "raw", stroke: color + "66", width: 1, spanGaps: false, show, dash,
          points: { show: false } });
        data.push(align(raw)); groups.push(n);
      }
      if (nI) {
        series.push({ label: base ? base + " (parent)" : "parent", stroke: color, width: 1.4, dash: [5, 4], spanGaps: false, show, points: { show: false } });
        data.push(align(part(sm, 0, nI + 1))); groups.push(n);
      }
      series.push({ label: base || (smoothing > 0 ? "smoothed" : "value"), stroke: color, width: 1.6, dash,
        spanGaps: false, show, points: { show: raw.length - nI < 60 } });
      data.push(align(nI ? part(sm, nI, sm.length) : sm)); groups.push(n);
    });
    const markers = (opts.markers || []).map((m) => ({ text: m.text,
      x: xmode === "step" ? m.step : xmode === "wall" ? m.time : m.time - (typeof start === "number" ? start : 0) }))
      .filter((m) => m.x !== null && m.x !== undefined && isFinite(m.x));
    let entry = state.charts.get(id);
    const width = widthOf(card);
    const signature = series.map((s) => s.label).join("|") + xmode + logScale;
    if (entry && entry.signature === signature) {
      entry.markers = markers;
      if (entry.zoomed) {  // keep the user's x and y ranges: draw the new points inside them
        const { x, y } = entry.plot.scales;
        const keep = { x: [x.min, x.max], y: [y.min, y.max] };
        entry.plot.setData(data, false);
        entry.plot.batch(() => { entry.plot.setScale("x", { min: keep.x[0], max: keep.x[1] }); entry.plot.setScale("y", { min: keep.y[0], max: keep.y[1] }); });
      } else entry.plot.setData(data);
    } else {
      if (entry) entry.plot.destroy();
      const host = card.querySelector(".plot");
      host.replaceChildren();
      const made = { zoomed: false, markers };
      const o = chartOpts(width, id, series, xmode, logScale, opts);
      // a drag-zoom sets the x scale inside the data; a double-click (uPlot's reset) sets it back
      o.hooks = { setSelect: [(u) => { if (u.select.width > 0) made.zoomed = true; }], draw: [(u) => drawMarkers(u, made.markers)] };
      const plot = new uPlot(o, data, host);
      plot.over.addEventListener("dblclick", () => { made.zoomed = false; });
      entry = Object.assign(made, { plot, signature });
      state.charts.set(id, entry);
    }
    entry.raw = named; entry.data = data; entry.labels = series.map((s) => s.label); entry.groups = groups;
    lmdev.renders++;
    if (lmdev.firstChartAt === null) lmdev.firstChartAt = performance.now();
    // flags: NaN / Inf are gaps; say where they are
    const note = card.querySelector(".note");
    const parts = [];
    names.forEach((n) => {
      const s = named[n];
      if (s.nonfinite) {
        const first = s.flags.length ? s.flags[0] : null;
        const at = first ? ` (first: ${first[1]} at step ${s.step[first[0]]})` : "";
        parts.push((names.length === 1 ? "" : n + ": ") + `${s.nonfinite} non-finite value${s.nonfinite > 1 ? "s" : ""}${at}, shown as gaps`);
      }
    });
    const counts = names.map((n) => named[n]).filter((s) => s.downsampled);
    if (parts.length) { note.textContent = "⚠ " + parts.join("; "); note.classList.add("flagged"); card.dataset.flagged = "1"; }
    else if (counts.length) { note.textContent = `${counts[0].returned} of ${counts[0].count} points (shape-preserving downsampling)`; note.classList.remove("flagged"); }
    else { note.textContent = ""; note.classList.remove("flagged"); }
    return entry;
  }

  // vertical dashed lines with a label: a run's resumes, a fork's starting point
  function drawMarkers(u, markers) {
    if (!markers || !markers.length) return;
    const ctx = u.ctx; const dpr = devicePixelRatio || 1;
    ctx.save();
    ctx.strokeStyle = cssVar("--warn"); ctx.fillStyle = cssVar("--warn"); ctx.lineWidth = dpr;
    ctx.setLineDash([4 * dpr, 3 * dpr]); ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";  // uPlot leaves its axes' alignment set
    for (const m of markers) {
      if (m.x < u.scales.x.min || m.x > u.scales.x.max) continue;
      const px = Math.round(u.valToPos(m.x, "x", true));
      ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height); ctx.stroke();
      ctx.fillText(m.text, px + 3 * dpr, u.bbox.top + 11 * dpr);
    }
    ctx.restore();
  }

  // toggle every series of a label (its raw, parent and main lines) on or off
  function showGroup(entry, label, show) {
    entry.plot.batch(() => entry.groups.forEach((g, i) => { if (g === label) entry.plot.setSeries(i + 1, { show }); }));
  }

  function chartCard(id, title) {
    return el("div", { class: "card chart", "data-key": id }, el("h3", { text: title }), el("div", { class: "plot" }),
      el("div", { class: "note" }));
  }

  // -- lineage ---------------------------------------------------------------------------------

  // where a run comes from (the run it was forked from, at which step), what came of it (its
  // forks) and its resumes: a line each, with links
  function renderLineage(box, run) {
    const lin = run.lineage || { parent: null, forks: [], resumes: [] };
    const runLink = (f) => el("a", { href: "#/run/" + encodeURIComponent(f.id), text: f.name, "data-run": f.id });
    const at = (step) => (step === null || step === undefined ? "" : ` at step ${step}`);
    const rows = [];
    if (lin.parent) rows.push(el("div", { class: "lineage-parent" }, lin.parent.kind === "compressed" ? "compressed from " : "forked from ",
      runLink(lin.parent), at(lin.parent.step),
      lin.parent.status === "deleted" ? el("span", { class: "muted", text: " (deleted)" }) : null));
    const forks = lin.forks.filter((f) => f.kind !== "compressed"), variants = lin.forks.filter((f) => f.kind === "compressed");
    if (variants.length) rows.push(el("div", { class: "lineage-variants" }, `${variants.length} compressed variant${variants.length > 1 ? "s" : ""}: `,
      variants.map((f, i) => el("span", null, i ? ", " : "", runLink(f)))));
    if (forks.length) rows.push(el("div", { class: "lineage-forks" }, `${forks.length} fork${forks.length > 1 ? "s" : ""}: `,
      forks.map((f, i) => el("span", { class: "lineage-fork" }, i ? ", " : "", runLink(f), at(f.step), " ", badge(f.status)))));
    if (lin.resumes.length) rows.push(el("div", { class: "lineage-resumes" }, `resumed ${lin.resumes.length} time${lin.resumes.length > 1 ? "s" : ""}: `,
      lin.resumes.map((r) => `from step ${r.step === null ? "?" : r.step}` + (r.dropped ? ` (${r.dropped} later points replaced)` : "")).join("; ")));
    box.replaceChildren(...rows);
    box.hidden = !rows.length;
  }
  function lineageMarkers(run) {
    const lin = run.lineage || { parent: null, resumes: [] };
    const out = lin.resumes.map((r) => ({ step: r.step, time: r.time, text: "resumed" }));
    if (lin.parent && lin.parent.step !== null && lin.parent.step !== undefined) out.push({ step: lin.parent.step, time: run.start_time, text: "fork of " + lin.parent.name });
    return out;
  }

  // -- media (histograms, images, text, tables) --------------------------------------------------

  // The Media tab: per key, by kind — a histogram as a heat strip over the steps (one column per
  // logged step, darker where more values fell) with the histogram at one step below it; an image
  // at one step; text and tables listed per step. A slider picks the step. window.lmdev.media
  // holds what is shown, for tests.
  function mediaView(pane, run) {
    const shown = (lmdev.media = {});
    const base = `/api/runs/${encodeURIComponent(run.id)}/media`;
    async function load() {
      const keys = run.media_keys || [];
      if (!keys.length) { pane.replaceChildren(el("div", { class: "empty", text: "No media logged." })); return; }
      pane.replaceChildren(...keys.map((k) => el("div", { class: "card media", "data-key": k.key, "data-kind": k.kind },
        el("h3", null, k.key + " ", el("span", { class: "muted small", text: k.kind })), el("div", { class: "media-body" }))));
      for (const k of keys) {
        const d = await api(`${base}?key=${encodeURIComponent(k.key)}`);
        const items = d.items.filter((x) => x.key === k.key);
        const body = pane.querySelector(`.card.media[data-key="${CSS.escape(k.key)}"] .media-body`);
        if (!items.length) { body.replaceChildren(el("p", { class: "muted", text: "Nothing logged yet." })); continue; }
        if (k.kind === "histogram") histogramView(body, k.key, items);
        else if (k.kind === "image") stepView(body, k.key, items, (it) => el("figure", { class: "media-image" },
          it.url ? el("img", { src: it.url, alt: `${k.key} at step ${it.step}`, width: it.payload.width, height: it.payload.height })
            : el("span", { class: "muted", text: "(the image file is missing)" }),
          el("figcaption", { class: "small muted", text: it.payload.caption || "" })));
        else if (k.kind === "table") stepView(body, k.key, items, (it) => el("table", { class: "media-table" },
          el("thead", null, el("tr", null, (it.payload.columns || []).map((c) => el("th", { text: String(c) })))),
          el("tbody", null, (it.payload.rows || []).map((r) => el("tr", null, r.map((v) => el("td", { text: typeof v === "string" ? v : JSON.stringify(v) })))))));
        else textList(body, k.key, items);
      }
    }
    // a step slider over items (in step order) and what to show at the chosen step
    function stepView(body, key, items, render) {
      const slider = el("input", { type: "range", class: "media-step", "data-key": key, min: 0, max: items.length - 1, step: 1, value: items.length - 1 });
      const label = el("span", { class: "mono small media-step-label" });
      const out = el("div", { class: "media-at" });
      const show = () => { const it = items[+slider.value]; label.textContent = `step ${it.step}`; out.replaceChildren(render(it)); shown[key].step = it.step; };
      shown[key] = { kind: items[0].kind, steps: items.map((x) => x.step), step: null };
      slider.addEventListener("input", show);
      body.replaceChildren(el("div", { class: "toolbar" }, el("label", null, "Step", slider), label), out);
      show();
    }
    function textList(body, key, items) {
      shown[key] = { kind: "text", steps: items.map((x) => x.step) };
      body.replaceChildren(el("table", { class: "media-text" }, el("thead", null, el("tr", null, el("th", { text: "Step" }), el("th", { text: "Text" }))),
        el("tbody", null, items.slice().reverse().map((it) => el("tr", null, el("td", { class: "num", text: String(it.step) }),
          el("td", null, el("pre", { text: it.payload.text || "" })))))));
    }
    function histogramView(body, key, items) {
      const ok = items.filter((it) => (it.payload.edges || []).length === (it.payload.counts || []).length + 1 && it.payload.counts.length);
      const lo = Math.min(...ok.map((it) => it.payload.edges[0])), hi = Math.max(...ok.map((it) => it.payload.edges[it.payload.edges.length - 1]));
      const rows = 48;
      // each step's counts moved onto one common grid of value bins (by bucket centre)
      const grid = ok.map((it) => {
        const col = new Array(rows).fill(0); const e = it.payload.edges;
        const rh = (hi - lo) / rows;
        it.payload.counts.forEach((c, i) => {  // spread a bucket over the rows it overlaps
          const a = e[i], z = e[i + 1];
          if (!(rh > 0) || !(z > a)) { col[0] += c; return; }
          for (let r = Math.max(0, Math.floor((a - lo) / rh)); r < rows && lo + r * rh < z; r++) {
            const part = Math.min(z, lo + (r + 1) * rh) - Math.max(a, lo + r * rh);
            if (part > 0) col[r] += c * part / (z - a);
          }
        });
        return col;
      });
      const strip = el("canvas", { class: "hist-strip", "data-key": key });
      const bars = el("canvas", { class: "hist-bars", "data-key": key });
      const w = Math.max(300, body.getBoundingClientRect().width - 10), h = 140, dpr = devicePixelRatio || 1;
      for (const [c, ch] of [[strip, h], [bars, 110]]) { c.width = w * dpr; c.height = ch * dpr; c.style.width = w + "px"; c.style.height = ch + "px"; }
      const ctx = strip.getContext("2d"); ctx.scale(dpr, dpr);
      const left = 56, cw = (w - left) / Math.max(1, grid.length);
      const accent = cssVar("--accent");
      grid.forEach((col, x) => {
        const m = Math.max(1, ...col);
        col.forEach((c, r) => { if (!c) return; ctx.globalAlpha = Math.sqrt(c / m); ctx.fillStyle = accent;
          ctx.fillRect(left + x * cw, h - (r + 1) * (h / rows), Math.ceil(cw), Math.ceil(h / rows)); });
      });
      ctx.globalAlpha = 1; ctx.fillStyle = cssVar("--muted"); ctx.font = "11px system-ui, sans-serif";
      ctx.fillText(fmtNum(hi), 2, 11); ctx.fillText(fmtNum(lo), 2, h - 2);
      const marker = el("div", { class: "hist-marker" });
      const wrap = el("div", { class: "hist-wrap" }, strip, marker);
      stepView(body, key, ok, (it) => {
        const b = bars.getContext("2d"); b.setTransform(dpr, 0, 0, dpr, 0, 0); b.clearRect(0, 0, w, 110);
        const counts = it.payload.counts, m = Math.max(1, ...counts), bw = (w - left) / counts.length;
        b.fillStyle = accent;
        counts.forEach((c, i) => b.fillRect(left + i * bw, 108 - 100 * c / m, Math.max(1, bw - 1), 100 * c / m));
        b.fillStyle = cssVar("--muted"); b.font = "11px system-ui, sans-serif";
        b.fillText(fmtNum(it.payload.edges[0]), left, 108); b.textAlign = "right"; b.fillText(fmtNum(it.payload.edges[it.payload.edges.length - 1]), w - 2, 108); b.textAlign = "left";
        marker.style.left = (left + ok.indexOf(it) * cw) + "px"; marker.style.width = Math.max(2, cw) + "px";
        shown[key].counts = counts.slice();
        return el("div", null, bars, el("div", { class: "small muted", text: `${counts.reduce((a, c) => a + c, 0)} values at step ${it.step}, ${counts.length} buckets` }));
      });
      body.prepend(wrap);
      Object.assign(shown[key], { rows, lo, hi, columns: grid.length });
    }
    return { load };
  }

  // -- data check ------------------------------------------------------------------------------

  // the report of `lmdev data check` (docs/schemas/data.md) that `lmdev train` stores with a run
  function renderDataCheck(pane, r) {
    const c = r.counts || {};
    const badgeOf = (sev) => badge(sev === "severe" ? "failed" : sev === "warn" ? "warning" : "info");
    pane.replaceChildren(
      el("p", { id: "data-check-status" }, "Data check before training: ", el("span", { class: "badge " + (r.status === "severe" ? "failed" : r.status === "warn" ? "warning" : "finished"), text: r.status || "?" }),
        ` — ${c.severe || 0} severe, ${c.warn || 0} warnings, ${c.info || 0} notes; ${(r.checks || []).join(", ")} in ${fmtNum(r.seconds)} s`),
      el("table", { id: "data-check-splits" }, el("thead", null, el("tr", null, ["Split", "Source", "Kind", "Rows", "Columns", "Label", "Classes"].map((h) => el("th", { text: h })))),
        el("tbody", null, (r.splits || []).map((x) => el("tr", null, [x.name, x.source, x.kind, x.rows, x.columns, x.label || "–", x.classes].map((v, i) => el("td", { class: i >= 3 && i !== 5 ? "num" : "", text: String(v) })))))),
      el("h2", { text: "Findings" }),
      (r.findings || []).length ? el("table", { id: "data-check-findings" }, el("thead", null, el("tr", null, ["Severity", "Finding", "Split", "Rows", "Fix"].map((h) => el("th", { text: h })))),
        el("tbody", null, r.findings.map((f) => el("tr", { "data-id": f.id }, el("td", null, badgeOf(f.severity)),
          el("td", null, el("div", { text: f.message }), el("div", { class: "muted mono small", text: f.id })),
          el("td", { text: f.split || "–" }), el("td", { class: "num", text: f.count === null || f.count === undefined ? "–" : String(f.count) }),
          el("td", { class: "small", text: f.fix || "" })))))
        : el("p", { class: "muted", text: "No findings: the data looks sound." }));
  }

  // -- explanations ----------------------------------------------------------------------------

  // the explanations `lmdev explain` kept with a run (docs/schemas/explain.md), newest step first
  function attrColour(score, scale) {
    const a = scale > 0 ? Math.min(1, Math.abs(score) / scale) : 0;
    return score >= 0 ? `rgba(248, 81, 73, ${(0.85 * a).toFixed(3)})` : `rgba(90, 169, 255, ${(0.85 * a).toFixed(3)})`;
  }
  function barList(rows, cls) {  // rows: [name, score]; the bar's length is |score| against the largest
    const scale = Math.max(0, ...rows.map(([, s]) => Math.abs(Number(s) || 0)));
    return el("div", { class: "xbars " + (cls || "") }, rows.map(([name, s]) => {
      const v = Number(s) || 0;
      const bar = el("span", { class: "xbar-fill" + (v < 0 ? " neg" : "") });
      bar.style.width = (scale > 0 ? (100 * Math.abs(v) / scale) : 0).toFixed(1) + "%";
      return el("div", { class: "xbar", "data-name": String(name) }, el("span", { class: "xbar-name mono small", text: String(name), title: String(name) }),
        el("span", { class: "xbar-track" }, bar), el("span", { class: "num small", text: fmtNum(v) }));
    }));
  }
  function explainItem(x, it) {
    const scores = (it.scores || []).map((v) => Number(v) || 0);
    const scale = Math.max(0, ...scores.map(Math.abs));
    const head = el("div", { class: "small" }, el("b", { text: x.kind === "tokens" ? "text" : String(it.input) }), " — predicted ",
      el("b", { class: "mono", text: x.kind === "tokens" ? JSON.stringify(it.target) : String(it.target) }),
      it.label !== null && it.label !== undefined ? [", label ", el("b", { text: String(it.label) })] : null,
      it.delta !== null && it.delta !== undefined ? el("span", { class: "muted", text: ` (completeness gap ${fmtNum(it.delta)})` }) : null);
    let body;
    if (x.kind === "tokens") {
      body = el("div", { class: "xtokens mono" }, (it.tokens || []).map((t, j) => {
        const s = el("span", { class: "xtoken", text: String(t).replace(/\n/g, "⏎"), title: `${JSON.stringify(t)} @${j}: ${fmtNum(scores[j])}` });
        s.style.background = attrColour(scores[j] || 0, scale);
        return s;
      }));
    } else if (x.kind === "image" && (x.image_shape || []).length === 2) {
      const [h, w] = x.image_shape.map(Number);
      body = el("div", { class: "xgrid" }, scores.slice(0, h * w).map((v, j) => {
        const c = el("span", { class: "xcell", title: `${(x.features || [])[j] || j}: ${fmtNum(v)}` });
        c.style.background = attrColour(v, scale);
        return c;
      }));
      body.style.gridTemplateColumns = `repeat(${w}, 14px)`;
    } else {
      const order = scores.map((_, j) => j).sort((a, b) => Math.abs(scores[b]) - Math.abs(scores[a])).slice(0, 10);
      body = barList(order.map((j) => [(x.features || [])[j] || "f" + j, scores[j]]));
    }
    return el("div", { class: "xitem" }, head, body);
  }
  function renderExplanations(pane, d) {
    const list = (d.explanations || []).slice().reverse();
    pane.replaceChildren(el("p", { class: "muted small", text: "Kept by `lmdev explain RUN[@STEP]`; red pushes towards the prediction, blue against it." }),
      ...list.map((x) => el("div", { class: "card explanation", "data-file": String(x.file) },
        el("h2", null, el("span", { class: "xmethod", text: String(x.method) }), ` at step ${Number(x.step)}`,
          el("span", { class: "muted small", text: ` · ${x.model} · ${x.kind} · ${x.file}` })),
        (x.importance || []).length ? [el("h3", { text: `Feature importance (mean |attribution| over ${Number(x.sample) || 0} rows)` }),
          barList(x.importance.slice(0, 15).map((f) => [f.feature, f.score]), "importance")] : null,
        (x.items || []).map((it) => explainItem(x, it)))),
      ...(d.skipped || []).map((s) => el("p", { class: "muted small", text: `skipped ${s.file}: ${s.problem}` })));
  }

  // -- runs page -------------------------------------------------------------------------------

  async function runsPage(view) {
    const st = { sort: "start_time", dir: -1, q: "", status: "", project: "", selected: new Set(), runs: [] };
    const search = el("input", { type: "search", id: "run-search", placeholder: "Search name, id, tag, host…", size: 30 });
    const statusSel = el("select", { id: "status-filter" }, ["", "running", "finished", "failed", "killed"].map(
      (s) => el("option", { value: s, text: s || "any status" })));
    const projectSel = el("select", { id: "project-filter" }, el("option", { value: "", text: "any project" }));
    const cmpBtn = el("button", { class: "primary", id: "compare-selected", disabled: true, text: "Compare selected" });
    const count = el("span", { class: "muted small" });
    const table = el("table", { id: "runs-table" });
    view.replaceChildren(el("h1", { text: "Runs" }),
      el("div", { class: "toolbar" }, search, statusSel, projectSel, cmpBtn, count), table);
    search.addEventListener("input", () => { st.q = search.value.toLowerCase(); render(); });
    statusSel.addEventListener("change", () => { st.status = statusSel.value; render(); });
    projectSel.addEventListener("change", () => { st.project = projectSel.value; render(); });
    cmpBtn.addEventListener("click", () => { location.hash = "#/compare?runs=" + encodeURIComponent([...st.selected].join(",")); });

    function keyColumns(runs) {
      const freq = new Map();
      for (const r of runs) for (const k of Object.keys(r.metrics || {})) freq.set(k, (freq.get(k) || 0) + 1);
      const pri = (k) => (k.startsWith("final/") ? 10 : 0) + (/val.*loss/.test(k) ? 0 : /loss/.test(k) ? 1 : /acc/.test(k) ? 2 : 3);
      return [...freq.keys()].sort((a, b) => pri(a) - pri(b) || freq.get(b) - freq.get(a) || a.localeCompare(b)).slice(0, 4);
    }

    // the stored spellings of a metric the runs table shows under one name (Keras' val_loss is val/loss)
    function spelledAs(key) {
      const names = new Set();
      for (const r of st.runs) for (const a of ((r.metrics || {})[key] || {}).aliases || []) if (a !== key) names.add(a);
      return names.size ? "; also logged as " + [...names].sort().join(", ") : "";
    }

    function sortValue(r, key) {
      if (key.startsWith("m:")) {
        const m = (r.metrics || {})[key.slice(2)];
        return m && typeof m.last === "number" ? m.last : null;
      }
      if (key === "status") return r.live_status;
      return r[key];
    }

    function render() {
      const runs = st.runs.filter((r) => {
        if (st.status && r.live_status !== st.status) return false;
        if (st.project && r.project !== st.project) return false;
        if (!st.q) return true;
        const hay = [r.name, r.id, r.host, r.project, ...(r.tags || [])].join(" ").toLowerCase();
        return st.q.split(/\s+/).every((w) => hay.includes(w));
      });
      runs.sort((a, b) => {
        const x = sortValue(a, st.sort), y = sortValue(b, st.sort);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * st.dir;
      });
      const keys = keyColumns(st.runs);
      const cols = [["", null], ["Name", "name"], ["Status", "status"], ["Project", "project"], ["Started", "start_time"],
        ["Duration", "duration"]].concat(keys.map((k) => [k, "m:" + k])).concat([["Tags", null], ["Host", "host"]]);
      const head = el("tr", null, cols.map(([label, key]) => {
        const th = el("th", { class: key ? "sortable" : "", text: label, title: key && key.startsWith("m:") ? "last (best)" + spelledAs(label) : null });
        if (key === st.sort) th.classList.add(st.dir > 0 ? "sorted-asc" : "sorted-desc");
        if (key) th.addEventListener("click", () => { st.dir = st.sort === key ? -st.dir : (key === "name" ? 1 : -1); st.sort = key; render(); });
        return th;
      }));
      const body = el("tbody");
      for (const r of runs) {
        const box = el("input", { type: "checkbox", "aria-label": "select " + r.name, "data-id": r.id });
        box.checked = st.selected.has(r.id);
        box.addEventListener("change", () => { box.checked ? st.selected.add(r.id) : st.selected.delete(r.id); updateBtn(); });
        const cells = [el("td", null, box),
          el("td", null, el("a", { href: "#/run/" + encodeURIComponent(r.id), text: r.name, class: "run-link" }),
            el("div", { class: "muted small mono", text: r.id })),
          el("td", null, badge(r.live_status)), el("td", { text: r.project }), el("td", { text: fmtTime(r.start_time) }),
          el("td", { class: "num", text: fmtDur(r.duration) })];
        for (const k of keys) {
          const m = (r.metrics || {})[k];
          cells.push(el("td", { class: "num" }, m ? fmtNum(m.last) : "–",
            m ? el("span", { class: "muted small", text: " (" + fmtNum(m.best) + ")" }) : null));
        }
        cells.push(el("td", null, (r.tags || []).map((t) => el("span", { class: "tag", text: t }))));
        cells.push(el("td", { class: "small", text: r.host }));
        body.append(el("tr", { "data-run": r.id }, cells));
      }
      table.replaceChildren(el("thead", null, head), body);
      if (!runs.length) table.append(el("tbody", null, el("tr", null, el("td", { colspan: cols.length, class: "empty",
        text: st.runs.length ? "No run matches the filter." : "No runs yet: `lmdev demo` or `lmdev train` records some." }))));
      count.textContent = `${runs.length} of ${st.runs.length} runs`;
      updateBtn();
    }
    function updateBtn() { cmpBtn.disabled = st.selected.size < 2; cmpBtn.textContent = `Compare selected (${st.selected.size})`; }

    async function load() {
      const data = await api("/api/runs");
      st.runs = data.runs;
      const projects = [...new Set(data.runs.map((r) => r.project))].sort();
      if (projectSel.options.length !== projects.length + 1) {
        projectSel.replaceChildren(el("option", { value: "", text: "any project" }), ...projects.map((p) => el("option", { value: p, text: p })));
        projectSel.value = st.project;
      }
      render();
      if (!lmdev.ready) lmdev.tableAt = performance.now();
      lmdev.ready = true;
    }
    await load();
    every(5000, () => { if (!document.hidden) load().catch(() => {}); });
  }

  // -- run page --------------------------------------------------------------------------------

  async function runPage(view, runId) {
    const run = await api("/api/runs/" + encodeURIComponent(runId));
    const keys = run.summaries.map((s) => s.key);
    const summaryOf = new Map(run.summaries.map((s) => [s.key, s]));
    const head = el("div", null,
      el("h1", null, run.name + " ", el("span", { id: "run-status" }, badge(run.live_status))),
      el("div", { class: "meta" },
        el("span", null, "id ", el("b", { class: "mono", text: run.id })),
        el("span", null, "project ", el("b", { text: run.project })),
        el("span", null, "started ", el("b", { text: fmtTime(run.start_time) })),
        el("span", null, "duration ", el("b", { id: "run-duration", text: fmtDur(run.duration) })),
        el("span", null, "host ", el("b", { text: run.host || "–" })),
        run.git_commit ? el("span", null, "git ", el("b", { class: "mono", text: run.git_commit.slice(0, 10) + (run.git_dirty ? " (dirty)" : "") })) : null,
        run.exit_code !== null && run.exit_code !== undefined ? el("span", null, "exit code ", el("b", { text: String(run.exit_code) })) : null,
        (run.tags || []).length ? el("span", null, (run.tags || []).map((t) => el("span", { class: "tag", text: t }))) : null),
      el("div", { id: "lineage" }));
    renderLineage(head.querySelector("#lineage"), run);

    const slider = el("input", { type: "range", id: "smoothing", min: 0, max: 0.99, step: 0.01, value: state.smoothing });
    const sliderVal = el("span", { class: "mono", text: state.smoothing.toFixed(2) });
    const xSel = el("select", { id: "xaxis" }, [["step", "step"], ["wall", "wall time"], ["rel", "relative time"]].map(
      ([v, t]) => el("option", { value: v, text: t })));
    xSel.value = state.xmode;
    const logBox = el("input", { type: "checkbox", id: "logscale" });
    logBox.checked = state.log;
    const keySearch = el("input", { type: "search", id: "key-search", placeholder: `Search ${keys.length} metrics…`, size: 28 });
    const toolbar = el("div", { class: "toolbar" },
      el("label", null, "Smoothing", slider, sliderVal), el("label", null, "X axis", xSel),
      el("label", null, logBox, "log scale"), keySearch, el("span", { id: "live", class: "muted small" }));

    const tabs = ["Metrics", "Media", "System", "Config", "Events", "Artifacts", "Output", "Data check", "Explanations"];
    const panes = {};
    const tabBar = el("div", { class: "tabs" });
    for (const t of tabs) {
      panes[t] = el("section", { id: "pane-" + t.toLowerCase().replace(" ", "-"), hidden: t !== "Metrics" });
      // Media, Data check and Explanations only when the run has some
      const b = el("button", { type: "button", text: t, "data-tab": t, class: t === "Metrics" ? "active" : "",
        hidden: (t === "Media" && !(run.media_keys || []).length) || t === "Data check" || t === "Explanations" });
      b.addEventListener("click", () => {
        tabBar.querySelectorAll("button").forEach((x) => x.classList.toggle("active", x === b));
        for (const k of tabs) panes[k].hidden = k !== t;
        if (t === "System") loadSystem();
        if (t === "Media") loadMedia();
        if (t === "Output") panes.Output.querySelectorAll("pre").forEach((pre) => { pre.scrollTop = pre.scrollHeight; });
      });
      tabBar.append(b);
    }
    view.replaceChildren(head, toolbar, tabBar, ...tabs.map((t) => panes[t]));

    // metrics, grouped by prefix; a group's charts are made when it is open
    const groups = new Map();
    for (const k of keys) { const g = groupOf(k); if (!groups.has(g)) groups.set(g, []); groups.get(g).push(k); }
    const cache = new Map(); // key -> series
    const openGroups = new Set();
    const singlePoint = (g) => groups.get(g).every((k) => (summaryOf.get(k) || {}).count <= 1);
    const groupNames = [...groups.keys()].sort((a, b) => {
      const p = (g) => (singlePoint(g) ? 9 : g === "train" ? 0 : g === "val" ? 1 : g === "test" ? 2 : 3);
      return p(a) - p(b) || a.localeCompare(b);
    });
    let autoOpen = 0;
    function visibleKeys(g) {
      const q = keySearch.value.trim().toLowerCase();
      return groups.get(g).filter((k) => !q || k.toLowerCase().includes(q));
    }
    function renderGroups() {
      const pane = panes.Metrics;
      pane.replaceChildren();
      if (!keys.length) { pane.append(el("div", { class: "empty", text: "This run has no metrics yet." })); return; }
      let shownGroups = 0;
      for (const g of groupNames) {
        const ks = visibleKeys(g);
        if (!ks.length) continue;
        shownGroups++;
        const det = el("details", { class: "group", "data-group": g });
        if (openGroups.has(g)) det.open = true;
        det.append(el("summary", null, g + " ", el("span", { class: "muted", text: `(${ks.length})` })));
        const grid = el("div", { class: "grid" });
        det.append(grid);
        det.addEventListener("toggle", () => {
          if (det.open) { openGroups.add(g); fillGroup(grid, ks); } else { openGroups.delete(g); grid.replaceChildren(); dropCharts(ks); }
        });
        pane.append(det);
        if (det.open) fillGroup(grid, ks);
      }
      if (!shownGroups) pane.append(el("div", { class: "empty", text: "No metric matches the search." }));
    }
    function dropCharts(ks) { for (const k of ks) { const c = state.charts.get(k); if (c) { c.plot.destroy(); state.charts.delete(k); } } }
    async function fillGroup(grid, ks) {
      const shown = ks.slice(0, MAX_CHARTS_PER_GROUP);
      grid.replaceChildren(...shown.map((k) => chartCard(k, k)));
      if (ks.length > shown.length) grid.append(el("div", { class: "muted small", text: `${ks.length - shown.length} more: narrow the search to see them.` }));
      const need = shown.filter((k) => !cache.has(k));
      if (need.length) await fetchKeys(need);
      for (const k of shown) drawKey(k, grid);
    }
    async function fetchKeys(ks) {
      for (let i = 0; i < ks.length; i += 40) {
        const part = ks.slice(i, i + 40);
        const lin = run.lineage && run.lineage.parent && run.lineage.parent.kind !== "compressed" ? "&lineage=1" : "";
        const d = await api(`/api/runs/${encodeURIComponent(run.id)}/metrics?keys=${encodeURIComponent(part.join(","))}${lin}`);
        for (const [k, s] of Object.entries(d.series)) cache.set(k, Object.assign({}, s, { inherited: (d.inherited || {})[k] }));
      }
    }
    function drawKey(k, root) {
      const card = (root || view).querySelector(`.card[data-key="${CSS.escape(k)}"]`);
      const s = cache.get(k);
      if (!card || !s) return;
      drawChart(card, k, { [k]: s }, { xmode: state.xmode, logScale: state.log, smoothing: isSchedule(k) ? 0 : state.smoothing,
        start: run.start_time, markers: lineageMarkers(run) });
    }
    function redrawAll() { for (const k of cache.keys()) drawKey(k); }
    // the groups open at first: train/val/test and the first ones, up to a few charts
    for (const g of groupNames) {
      if (autoOpen >= 12) break;
      const n = groups.get(g).length;
      if (n <= MAX_CHARTS_PER_GROUP && !singlePoint(g)) { openGroups.add(g); autoOpen += n; }
    }
    renderGroups();

    slider.addEventListener("input", () => { state.smoothing = +slider.value; sliderVal.textContent = state.smoothing.toFixed(2); writeSettings(); redrawAll(); });
    xSel.addEventListener("change", () => { state.xmode = xSel.value; writeSettings(); redrawAll(); if (!panes.System.hidden) loadSystem(); });
    logBox.addEventListener("change", () => { state.log = logBox.checked; writeSettings(); redrawAll(); });
    keySearch.addEventListener("input", () => { renderGroups(); });

    // system charts: one per metric kind, every device/rank a series, on the run's time axis
    let sysLoaded = false;
    async function loadSystem() {
      const pane = panes.System;
      const d = await api(`/api/runs/${encodeURIComponent(run.id)}/system`);
      const names = Object.keys(d.series);
      if (!names.length) { pane.replaceChildren(el("div", { class: "empty", text: "No system samples (telemetry was off)." })); return; }
      const kinds = new Map();
      for (const n of names) {
        const parts = n.split("/"); const kind = parts[1]; const who = parts[0] + (parts[2] ? "/" + parts[2] : "");
        if (!kinds.has(kind)) kinds.set(kind, {});
        kinds.get(kind)[who] = Object.assign({ step: d.series[n].time.map(() => 0) }, d.series[n]);
      }
      const xmode = state.xmode === "wall" ? "wall" : "rel";
      if (!sysLoaded) {
        pane.replaceChildren(el("p", { class: "muted small", text: "Sampled by the run's telemetry; x axis: " + (xmode === "wall" ? "wall time" : "seconds since the run started") + "." }),
          el("div", { class: "grid" }, [...kinds.keys()].sort().map((k) => chartCard("sys:" + k, k))));
        sysLoaded = true;
      }
      for (const [kind, named] of kinds) {
        const card = pane.querySelector(`.card[data-key="${CSS.escape("sys:" + kind)}"]`);
        if (card) drawChart(card, "sys:" + kind, named, { xmode, logScale: false, smoothing: 0, start: run.start_time, syncKey: "sys", useNames: true });
      }
    }

    if (run.summary && Object.keys(run.summary).length) panes.Config.append(el("h2", { text: "Summary" }),
      el("table", { id: "run-summary" }, el("tbody", null, Object.entries(run.summary).map(([k, v]) => el("tr", null,
        el("td", { class: "mono small", text: k }), el("td", { class: "num", text: typeof v === "number" ? fmtNum(v) : JSON.stringify(v) }))))),
      el("h2", { text: "Config" }));
    panes.Config.append(el("pre", { id: "config", text: JSON.stringify(run.config, null, 2) }),
      el("h2", { text: "Versions" }), el("pre", { text: JSON.stringify(run.framework_versions || {}, null, 2) }),
      run.command ? el("div", null, el("h2", { text: "Command" }), el("pre", { text: run.command.join(" ") })) : null);

    async function loadEvents() {
      const d = await api(`/api/runs/${encodeURIComponent(run.id)}/events`);
      const rows = d.events.slice().reverse().map((e) => el("tr", null, el("td", { class: "small", text: fmtTime(e.time) }),
        el("td", null, badge(e.level)), el("td", { text: e.message }),
        el("td", { class: "mono small", text: Object.keys(e.data || {}).length ? JSON.stringify(e.data) : "" })));
      panes.Events.replaceChildren(rows.length ? el("table", { id: "events" }, el("thead", null, el("tr", null,
        ["Time", "Level", "Message", "Data"].map((h) => el("th", { text: h })))), el("tbody", null, rows))
        : el("div", { class: "empty", text: "No events." }));
    }
    async function loadArtifacts() {
      const d = await api(`/api/runs/${encodeURIComponent(run.id)}/artifacts`);
      const rows = d.artifacts.map((a) => el("tr", null,
        el("td", { class: "mono small" }, a.download ? el("a", { href: a.download, text: a.path, download: "" }) : a.path,
          a.exists ? null : el("span", { class: "muted", text: " (missing)" })),
        el("td", { text: a.kind }), el("td", { class: "num", text: fmtBytes(a.size) }),
        el("td", { class: "mono small", text: a.sha256, title: "sha256" }), el("td", { class: "small", text: fmtTime(a.time) })));
      panes.Artifacts.replaceChildren(rows.length ? el("table", { id: "artifacts" }, el("thead", null, el("tr", null,
        ["Path", "Kind", "Size", "sha256", "Time"].map((h) => el("th", { text: h })))), el("tbody", null, rows))
        : el("div", { class: "empty", text: "No artifacts." }));
      // the data check `lmdev train` ran before training (an artifact of kind data-check)
      const check = d.artifacts.filter((a) => a.kind === "data-check" && a.download && a.exists).pop();
      if (check && !panes["Data check"].dataset.loaded) {
        panes["Data check"].dataset.loaded = "1";
        try {
          renderDataCheck(panes["Data check"], await api(check.download));
          tabBar.querySelector('button[data-tab="Data check"]').hidden = false;
        } catch (e) { delete panes["Data check"].dataset.loaded; }
      }
      // what `lmdev explain` kept with the run (artifacts of kind explanation): reload when they change
      const explained = d.artifacts.filter((a) => a.kind === "explanation").map((a) => a.sha256).join(",");
      if (explained && panes.Explanations.dataset.loaded !== explained) {
        panes.Explanations.dataset.loaded = explained;
        try {
          renderExplanations(panes.Explanations, await api(`/api/runs/${encodeURIComponent(run.id)}/explanations`));
          tabBar.querySelector('button[data-tab="Explanations"]').hidden = false;
        } catch (e) { delete panes.Explanations.dataset.loaded; }
      }
    }
    let media = null;
    async function loadMedia() { media = media || mediaView(panes.Media, run); await media.load(); }
    async function loadOutput() {
      const d = await api(`/api/runs/${encodeURIComponent(run.id)}/output`);
      const names = Object.keys(d.files);
      panes.Output.replaceChildren(...(names.length ? names.map((n) => el("div", null,
        el("h2", { text: n + (d.files[n].truncated ? " (last 64 KiB)" : "") }), el("pre", { text: d.files[n].tail })))
        : [el("div", { class: "empty", text: "No captured output for this run (runs started with `lmdev run` keep it)." })]));
      panes.Output.querySelectorAll("pre").forEach((pre) => { pre.scrollTop = pre.scrollHeight; });  // the tail is what matters
    }
    await Promise.all([loadEvents(), loadArtifacts(), loadOutput()]);

    // live updates: poll a cheap state endpoint; fetch only when something new was recorded
    let cursor = JSON.stringify(run.cursor);
    let knownKeys = keys.length;
    const live = document.getElementById("live");
    async function poll() {
      await apply(await api(`/api/runs/${encodeURIComponent(run.id)}/state`));
    }
    async function apply(s) {
      document.getElementById("run-status").replaceChildren(badge(s.live_status));
      document.getElementById("run-duration").textContent = fmtDur(s.duration);
      live.textContent = s.live_status === "running" ? "● live" : "";
      const c = JSON.stringify(s.cursor);
      if (c === cursor) return;
      cursor = c;
      const fresh = await api("/api/runs/" + encodeURIComponent(run.id));
      run.lineage = fresh.lineage; renderLineage(document.getElementById("lineage"), run);
      if (fresh.summaries.length !== knownKeys) {  // new metric keys: regroup
        knownKeys = fresh.summaries.length;
        for (const sm of fresh.summaries) if (!summaryOf.has(sm.key)) { summaryOf.set(sm.key, sm); keys.push(sm.key); const g = groupOf(sm.key); if (!groups.has(g)) { groups.set(g, []); groupNames.push(g); if (groups.size <= 4) openGroups.add(g); } groups.get(g).push(sm.key); }
        cache.clear(); renderGroups();
      } else {
        const open = [...cache.keys()];
        if (open.length) { await fetchKeys(open); redrawAll(); }
      }
      if (!panes.System.hidden) loadSystem();
      loadEvents(); loadArtifacts(); loadOutput();
    }
    if (run.live_status === "running") live.textContent = "● live";
    // server-sent events push each change; where they are unavailable, poll instead
    if (window.EventSource) {
      const es = new EventSource(`/api/runs/${encodeURIComponent(run.id)}/stream`);
      state.streams.push(es);
      let busy = Promise.resolve();
      es.onmessage = (e) => {
        const s = JSON.parse(e.data);
        if (s.live_status !== "running") es.close();  // the last word on a finished run
        busy = busy.then(() => apply(s)).catch(() => {});
      };
      es.onerror = () => {  // the server went away or the stream cannot be had: poll instead
        if (es.readyState === EventSource.CLOSED && !state.streams.includes(es)) return;
        es.close();
        every(POLL_MS, () => { if (!document.hidden) poll().catch(() => {}); });
      };
    } else {
      every(POLL_MS, () => { if (!document.hidden) poll().catch(() => {}); });
    }
    lmdev.ready = true;
  }

  // -- compare page ----------------------------------------------------------------------------

  // Several runs and several metrics on one chart. Everything that defines the chart lives in the
  // address (#/compare?runs=A,B&keys=val/loss,train/loss&smoothing=0.6&x=step&log=0&hide=LABEL):
  // a reload or a shared link shows the same chart. Colour: the run; dash: the metric.
  const DASHES = [undefined, [6, 4], [2, 3], [10, 3, 2, 3]];
  async function comparePage(view, hash) {
    const p = params(hash);
    const split = (v) => (v || "").split(",").filter(Boolean);
    const ids = split(p.get("runs"));
    let keys = split(p.get("keys") || p.get("key"));
    const hidden = new Set(p.getAll("hide"));
    if (!ids.length) {
      view.replaceChildren(el("h1", { text: "Compare" }), el("p", { class: "muted", text: "Select runs on the Runs page and press “Compare selected”." }),
        el("a", { href: "#/", text: "Go to the runs" }));
      lmdev.ready = true;
      return;
    }
    const url = (withKeys) => "/api/compare?lineage=1&runs=" + encodeURIComponent(ids.join(",")) +
      (withKeys && keys.length ? "&keys=" + encodeURIComponent(keys.join(",")) : "");
    let d = await api(url(true));  // the keys asked for come in the first answer
    let fetched = keys.join(",");
    const offered = d.common_keys.length ? d.common_keys : d.keys;
    keys = keys.filter((k) => d.keys.includes(k));
    if (!keys.length) { const k = ["val/loss", "train/loss", "loss"].find((x) => offered.includes(x)) || offered[0]; if (k) keys = [k]; }
    const keySel = el("select", { id: "compare-key", title: "the first metric" }, offered.map((k) => el("option", { value: k, text: k })));
    if (keys[0]) keySel.value = keys[0];
    const addKey = el("select", { id: "compare-add-key" });
    const keyChips = el("span", { id: "compare-keys", class: "chips" });
    const slider = el("input", { type: "range", id: "smoothing", min: 0, max: 0.99, step: 0.01, value: state.smoothing });
    const xSel = el("select", { id: "xaxis" }, [["step", "step"], ["rel", "relative time"], ["wall", "wall time"]].map(([v, t]) => el("option", { value: v, text: t })));
    xSel.value = state.xmode;
    const logBox = el("input", { type: "checkbox", id: "logscale" }); logBox.checked = state.log;
    const addRun = el("select", { id: "compare-add-run" }, el("option", { value: "", text: "add a run…" }));
    const runChips = el("div", { id: "compare-runs", class: "legend-list" });
    const legend = el("div", { id: "compare-legend", class: "legend-list" });
    const card = chartCard("compare", keys.join(", "));
    const diff = el("section", { id: "config-diff" });
    view.replaceChildren(el("h1", { text: `Compare ${d.runs.length} run${d.runs.length > 1 ? "s" : ""}` }), runChips,
      el("div", { class: "toolbar" }, el("label", null, "Metric", keySel), el("label", null, "and", addKey), keyChips),
      el("div", { class: "toolbar" }, el("label", null, "Smoothing", slider), el("label", null, "X axis", xSel),
        el("label", null, logBox, "log scale"), addRun),
      legend, card, el("h2", { text: "Config differences" }), diff);
    const colorOf = new Map(d.runs.map((r, i) => [r.id, COLORS[i % COLORS.length]]));

    function saveUrl() {
      const q = params(location.hash);
      q.set("runs", ids.join(",")); q.set("keys", keys.join(",")); q.delete("key");
      q.set("smoothing", String(state.smoothing)); q.set("x", state.xmode); q.set("log", state.log ? "1" : "0");
      q.delete("hide"); [...hidden].sort().forEach((h) => q.append("hide", h));
      history.replaceState(null, "", "#/compare?" + q.toString());
    }
    function renderControls() {
      addKey.replaceChildren(el("option", { value: "", text: "add a metric…" }),
        ...offered.filter((k) => !keys.includes(k)).map((k) => el("option", { value: k, text: k })));
      keyChips.replaceChildren(...keys.map((k, i) => el("span", { class: "chip", "data-key": k },
        dashSample(i), k, keys.length > 1 ? el("button", { type: "button", class: "chip-x", title: "remove " + k, text: "×",
          onclick: () => { keys = keys.filter((x) => x !== k); keySel.value = keys[0]; changed(true); } }) : null)));
      runChips.replaceChildren(...d.runs.map((r) => el("span", { class: "chip", "data-run": r.id },
        swatch(colorOf.get(r.id)), el("a", { href: "#/run/" + encodeURIComponent(r.id), text: r.name }), " ",
        el("span", { class: "muted mono small", text: r.id.slice(0, 8) }),
        r.parent_id ? el("span", { class: "muted small", text: ` (fork${r.fork_step !== null ? " at step " + r.fork_step : ""})` }) : null,
        ids.length > 1 ? el("button", { type: "button", class: "chip-x", title: "remove " + r.name, text: "×",
          onclick: () => { location.hash = "#/compare?" + withRuns(ids.filter((x) => x !== r.id)); } }) : null)));
    }
    function withRuns(list) { const q = params(location.hash); q.set("runs", list.join(",")); return q.toString(); }
    function swatch(color) { const s = el("span", { class: "swatch" }); s.style.background = color; return s; }
    function dashSample(i) {
      const c = el("canvas", { class: "dash-sample", width: 28, height: 8 }); const ctx = c.getContext("2d");
      ctx.strokeStyle = cssVar("--fg"); ctx.lineWidth = 2; ctx.setLineDash(DASHES[i % DASHES.length] || []);
      ctx.beginPath(); ctx.moveTo(0, 4); ctx.lineTo(28, 4); ctx.stroke(); return c;
    }
    function labelOf(r, k, seen) {
      let name = r.name; if (seen.has(name) && seen.get(name) !== r.id) name += " " + r.id.slice(0, 6); seen.set(name, r.id);
      return keys.length > 1 ? `${name} · ${k}` : name;
    }
    async function draw(refetch) {
      if (!keys.length) { card.querySelector(".note").textContent = "These runs have no metrics."; lmdev.ready = true; return; }
      if (refetch && fetched !== keys.join(",")) d = await api(url(true));
      fetched = null;  // the next refetch (a new key, a live update) asks again
      card.querySelector("h3").textContent = keys.join(", ");
      const named = {}, start = {}, colors = {}, dashes = {}, schedule = {};
      const seen = new Map();
      keys.forEach((k, ki) => {
        for (const r of d.runs) {
          const s = (d.by_key[k] || {})[r.id];
          if (!s) continue;
          const label = labelOf(r, k, seen);
          named[label] = Object.assign({}, s, { inherited: ((d.inherited || {})[k] || {})[r.id] });
          start[label] = r.start_time; colors[label] = colorOf.get(r.id); dashes[label] = DASHES[ki % DASHES.length];
          schedule[label] = isSchedule(k);
        }
      });
      const markers = state.xmode === "step" ? d.runs.filter((r) => r.parent_id && r.fork_step !== null)
        .map((r) => ({ step: r.fork_step, text: "fork: " + r.name })) : [];
      const entry = drawChart(card, "compare", named, { xmode: state.xmode, logScale: state.log, smoothing: (n) => (schedule[n] ? 0 : state.smoothing),
        start, colors, dashes, hidden, markers, syncKey: "c", useNames: true, opts: { legend: { show: false } } });
      legend.replaceChildren(...Object.keys(named).map((label) => el("button", { type: "button", class: "legend-item" + (hidden.has(label) ? " off" : ""),
        "data-label": label, title: "show or hide", onclick: (e) => {
          const on = hidden.has(label); on ? hidden.delete(label) : hidden.add(label);
          e.currentTarget.classList.toggle("off", !on); showGroup(entry, label, on); saveUrl();
        } }, swatch(colors[label]), label)));
    }
    function changed(refetch) { saveUrl(); renderControls(); draw(refetch); }
    keySel.addEventListener("change", () => { keys = [keySel.value].concat(keys.slice(1).filter((k) => k !== keySel.value)); changed(true); });
    addKey.addEventListener("change", () => { if (addKey.value && !keys.includes(addKey.value)) keys.push(addKey.value); changed(true); });
    slider.addEventListener("input", () => { state.smoothing = +slider.value; saveUrl(); draw(false); });
    xSel.addEventListener("change", () => { state.xmode = xSel.value; saveUrl(); draw(false); });
    logBox.addEventListener("change", () => { state.log = logBox.checked; saveUrl(); draw(false); });
    addRun.addEventListener("change", () => { if (addRun.value) location.hash = "#/compare?" + withRuns(ids.concat([addRun.value])); });
    renderControls();
    saveUrl();
    await draw(true);
    if (!d.config_diff.length) diff.append(el("p", { class: "muted", text: "The configs are the same." }));
    else diff.append(el("table", { id: "diff-table" }, el("thead", null, el("tr", null, el("th", { text: "key" }),
      d.runs.map((r) => el("th", { text: r.name })))), el("tbody", null, d.config_diff.map((row) => el("tr", null,
      el("td", { class: "mono small", text: row.key }), row.values.map((v, i) => el("td", { class: "mono small" + (row.missing[i] ? " muted" : ""),
        text: row.missing[i] ? "(missing)" : JSON.stringify(v) })))))));
    lmdev.ready = true;
    api("/api/runs").then((all) => {
      addRun.append(...all.runs.filter((r) => !ids.includes(r.id)).map((r) => el("option", { value: r.id, text: `${r.name} (${r.id.slice(0, 8)})` })));
    }).catch(() => {});
    // live: while a run is running, its new points are drawn (a drag-zoom is kept)
    if (d.runs.some((r) => r.status === "running")) every(2000, () => { if (!document.hidden) draw(true).catch(() => {}); });
  }

  // -- hyper-parameters page -------------------------------------------------------------------

  // The runs of a project as parallel coordinates: one axis per config value that differs between
  // them (flattened: optimizer.lr), the last axis a final metric; each run a line coloured by
  // that metric (best: bright). Below, the same as a table, best first. In the address:
  // #/hparams?project=P&metric=val/loss
  async function hparamsPage(view, hash) {
    const p = params(hash);
    let project = p.get("project") || "", metric = p.get("metric") || "";
    const all = await api("/api/runs");
    const projects = [...new Set(all.runs.map((r) => r.project))].sort();
    if (!project && projects.length === 1) project = projects[0];
    let d = await api("/api/hparams?" + new URLSearchParams(Object.assign(project ? { project } : {}, metric ? { metric } : {})));
    if (!metric) {
      metric = ["val/loss", "train/loss", "loss"].find((k) => d.metrics.includes(k)) || d.metrics[0] || "";
      if (metric) d = await api("/api/hparams?" + new URLSearchParams(Object.assign(project ? { project } : {}, { metric })));
    }
    const projSel = el("select", { id: "hp-project" }, el("option", { value: "", text: "any project" }), projects.map((x) => el("option", { value: x, text: x })));
    projSel.value = project;
    const metricSel = el("select", { id: "hp-metric" }, d.metrics.map((k) => el("option", { value: k, text: k })));
    metricSel.value = metric;
    const go = () => { location.hash = "#/hparams?" + new URLSearchParams({ project: projSel.value, metric: metricSel.value }).toString(); };
    projSel.addEventListener("change", go); metricSel.addEventListener("change", go);
    const canvas = el("canvas", { id: "hp-canvas" });
    const table = el("table", { id: "hp-table" });
    view.replaceChildren(el("h1", { text: "Hyper-parameters" }),
      el("p", { class: "muted", text: "Each line is a run: its config values (those that differ between the runs) and its final metric." }),
      el("div", { class: "toolbar" }, el("label", null, "Project", projSel), el("label", null, "Final metric", metricSel)),
      el("div", { class: "card" }, canvas), el("h2", { text: "Runs" }), table);
    const runs = d.runs.filter((r) => r.value !== null && typeof r.value === "number");
    const axes = d.params.map((k) => axisOf(k, runs.map((r) => r.config[k])));
    if (metric) axes.push(Object.assign(axisOf(metric, runs.map((r) => r.value)), { metric: true }));
    lmdev.hparams = { axes: axes.map((a) => ({ key: a.key, kind: a.kind, log: a.log })), runs: runs.map((r) => r.id) };
    drawParallel(canvas, axes, runs, d.higher_is_better);
    const order = runs.slice().sort((a, b) => (d.higher_is_better ? b.value - a.value : a.value - b.value));
    table.replaceChildren(el("thead", null, el("tr", null, el("th", { text: "Run" }), d.params.map((k) => el("th", { class: "mono small", text: k })),
      el("th", { text: metric + (d.higher_is_better ? " ▲" : " ▼") }))),
      el("tbody", null, order.map((r) => el("tr", { "data-run": r.id }, el("td", null, el("a", { href: "#/run/" + encodeURIComponent(r.id), text: r.name })),
        d.params.map((k) => el("td", { class: "mono small", text: r.config[k] === undefined ? "–" : JSON.stringify(r.config[k]) })),
        el("td", { class: "num", text: fmtNum(r.value) })))));
    if (!runs.length) table.append(el("tbody", null, el("tr", null, el("td", { class: "empty", text: metric ? `No run has ${metric}.` : "No runs with metrics." }))));
    lmdev.ready = true;
  }

  // an axis: numbers (log when all positive over more than two decades) or categories
  function axisOf(key, values) {
    const nums = values.filter((v) => typeof v === "number" && isFinite(v));
    if (nums.length && nums.length === values.filter((v) => v !== undefined && v !== null).length) {
      let lo = Math.min(...nums), hi = Math.max(...nums);
      const log = lo > 0 && hi / lo > 100;
      if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
      if (lo === hi) { lo -= 1; hi += 1; }
      return { key, kind: "number", log, lo, hi, pos: (v) => (typeof v !== "number" ? null : ((log ? Math.log10(v) : v) - lo) / (hi - lo)) };
    }
    const cats = [...new Set(values.map((v) => JSON.stringify(v === undefined ? null : v)))].sort();
    return { key, kind: "category", cats, pos: (v) => (cats.length < 2 ? 0.5 : cats.indexOf(JSON.stringify(v === undefined ? null : v)) / (cats.length - 1)) };
  }

  function drawParallel(canvas, axes, runs, higherBetter) {
    const dpr = devicePixelRatio || 1;
    const w = Math.max(400, canvas.parentElement.getBoundingClientRect().width - 26), h = 340;
    canvas.width = w * dpr; canvas.height = h * dpr; canvas.style.width = w + "px"; canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d"); ctx.scale(dpr, dpr);
    const top = 46, bottom = h - 24, left = 60, right = w - 60;
    if (!axes.length || !runs.length) { ctx.fillStyle = cssVar("--muted"); ctx.fillText("Nothing to draw: no run has this metric and a config.", left, top + 20); return; }
    const xOf = (i) => (axes.length === 1 ? (left + right) / 2 : left + (i * (right - left)) / (axes.length - 1));
    const yOf = (t) => bottom - t * (bottom - top);
    const m = axes[axes.length - 1];
    const rank = (r) => { const t = m.pos(r.value); return t === null ? 0 : higherBetter ? t : 1 - t; };
    ctx.lineWidth = 1.5;
    for (const r of runs.slice().sort((a, b) => rank(a) - rank(b))) {  // the best drawn last, on top
      const q = rank(r);
      ctx.strokeStyle = `hsla(${Math.round(10 + 190 * q)}, 80%, 55%, ${0.35 + 0.65 * q})`;
      ctx.beginPath();
      axes.forEach((a, i) => { const t = a.pos(a.metric ? r.value : r.config[a.key]); const y = yOf(t === null ? 0 : t); i ? ctx.lineTo(xOf(i), y) : ctx.moveTo(xOf(i), y); });
      ctx.stroke();
    }
    ctx.strokeStyle = cssVar("--muted"); ctx.fillStyle = cssVar("--fg"); ctx.font = "12px system-ui, sans-serif"; ctx.textAlign = "center";
    axes.forEach((a, i) => {
      const x = xOf(i);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      ctx.fillText(a.key + (a.log ? " (log)" : ""), x, top - 24);
      const ticks = a.kind === "category" ? a.cats.map((c, j) => [a.cats.length < 2 ? 0.5 : j / (a.cats.length - 1), c]) :
        [0, 0.5, 1].map((t) => { const v = a.lo + t * (a.hi - a.lo); return [t, fmtNum(a.log ? Math.pow(10, v) : v)]; });
      ctx.fillStyle = cssVar("--muted");
      for (const [t, label] of ticks) ctx.fillText(String(label).slice(0, 14), x, yOf(t) + (t === 1 ? -4 : t === 0 ? 14 : 4));
      ctx.fillStyle = cssVar("--fg");
    });
  }

  // -- compression page ------------------------------------------------------------------------

  // the variants `lmdev compress` recorded as runs: what was done to which run, and what it gave
  async function compressionPage(view) {
    const d = await api("/api/compress");
    const keys = [...new Set(d.runs.flatMap((r) => Object.keys(r.measured)))].sort((a, b) => {
      const p = (k) => (k === "size_ratio" ? 0 : k === "file_bytes" ? 1 : k.startsWith("speedup") ? 2 : k.startsWith("latency") ? 3 : 4);
      return p(a) - p(b) || a.localeCompare(b);
    });
    const fmt = (k, v) => (v === null || v === undefined ? "–" : k === "file_bytes" ? fmtBytes(v) : k === "size_ratio" || k.startsWith("speedup") ? fmtNum(v) + "×" : fmtNum(v));
    view.replaceChildren(el("h1", { text: "Compression" }),
      el("p", { class: "muted", text: "The variants `lmdev compress --out` wrote, each recorded as a run beside the run it came from." }),
      d.runs.length ? el("table", { id: "compress-table" }, el("thead", null, el("tr", null, ["Variant", "Source", "Method", "Settings", "Started"].map((h) => el("th", { text: h })),
        keys.map((k) => el("th", { class: "mono small", text: k })))),
        el("tbody", null, d.runs.map((r) => el("tr", { "data-run": r.id },
          el("td", null, el("a", { href: "#/run/" + encodeURIComponent(r.id), text: r.name }), " ", badge(r.status)),
          el("td", null, r.source ? (r.source.name ? el("a", { href: "#/run/" + encodeURIComponent(r.source.id), text: r.source.name }) : r.source.id) : "–"),
          el("td", { text: [r.settings.method, r.settings.backend].filter(Boolean).join(" / ") || "–" }),
          el("td", { class: "mono small", text: Object.entries(r.settings).filter(([k]) => k !== "method" && k !== "backend").map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ") }),
          el("td", { class: "small", text: fmtTime(r.start_time) }),
          keys.map((k) => el("td", { class: "num", text: fmt(k, r.measured[k]) }))))))
        : el("div", { class: "empty", text: "No compressed variants recorded yet: `lmdev compress SOURCE --out DIR` records one." }));
    lmdev.ready = true;
  }

  // -- machine page ----------------------------------------------------------------------------

  async function machinePage(view) {
    view.replaceChildren(el("h1", { text: "Machine" }), el("p", { class: "muted", text: "Running lmdev doctor…" }));
    const d = await api("/api/machine");
    const refresh = el("button", { type: "button", text: "Run doctor again" });
    refresh.addEventListener("click", async () => { refresh.disabled = true; await api("/api/machine?refresh=1"); render(); });
    const out = [el("h1", { text: "Machine" })];
    const r = d.doctor;
    if (!r) out.push(el("div", { class: "banner", text: "doctor failed: " + (d.doctor_error || "unknown error") }));
    else {
      const h = r.facts.host || {}; const acc = r.facts.accelerators || {};
      out.push(el("div", { class: "meta" },
        el("span", null, "status ", badge(r.summary.status === "ok" ? "finished" : r.summary.status === "errors" ? "error" : "warning")),
        el("span", null, "host ", el("b", { text: h.hostname || "–" })), el("span", null, "OS ", el("b", { text: h.os_name || h.os || "–" })),
        el("span", null, "CPU ", el("b", { text: ((h.cpu || {}).model || "–") + ` (${(h.cpu || {}).threads || "?"} threads)` })),
        el("span", null, "RAM ", el("b", { text: fmtBytes((h.memory || {}).total_bytes) })),
        el("span", null, "GPUs ", el("b", { text: (acc.gpus || []).map((g) => g.name).join(", ") || "none" })),
        el("span", null, "collected ", el("b", { text: r.collected_at })), refresh));
      out.push(el("h2", { text: `Findings: ${r.summary.errors} errors, ${r.summary.warnings} warnings, ${r.summary.infos} notes` }));
      const order = { error: 0, warning: 1, info: 2 };
      const fs = r.findings.slice().sort((a, b) => order[a.severity] - order[b.severity]);
      if (!fs.length) out.push(el("p", { class: "muted", text: "No findings: this machine looks right." }));
      for (const f of fs) out.push(el("div", { class: "finding " + f.severity, "data-id": f.id },
        el("div", null, badge(f.severity), " ", el("strong", { text: f.title }), " ", el("span", { class: "muted mono small", text: f.id })),
        el("div", { class: "small muted", text: f.evidence }), el("div", { class: "fix" }, el("b", { text: "Fix: " }), f.fix)));
      out.push(el("h2", { text: "Facts" }), factTables(r.facts));
    }
    out.push(el("h2", { text: "Benchmarks" }));
    if (d.bench) out.push(benchTables(d.bench));
    else out.push(el("p", { class: "muted", text: `No saved bench results (${d.bench_path}): run \`lmdev bench\` to measure this machine.` }));
    view.replaceChildren(...out);
    lmdev.ready = true;
    async function render() { await machinePage(view); }
  }

  // The doctor's facts as one table per section (host, accelerators, software, ...): dotted keys,
  // bytes in binary units, lists joined.
  function flatFacts(v, prefix, out) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) flatFacts(x, prefix ? prefix + "." + k : k, out);
    } else if (Array.isArray(v) && v.some((x) => x && typeof x === "object")) {
      v.forEach((x, i) => flatFacts(x, `${prefix}[${i}]`, out));
    } else out.push([prefix, v]);
    return out;
  }
  function factValue(k, v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number" && /bytes/.test(k)) return fmtBytes(v) + (/_s$|per_s/.test(k) ? "/s" : "");
    if (Array.isArray(v)) return v.join(", ") || "–";
    return typeof v === "boolean" ? (v ? "yes" : "no") : String(v);
  }
  function factTables(facts) {
    const box = el("div", { id: "facts" });
    for (const [section, v] of Object.entries(facts || {})) {
      const rows = flatFacts(v, "", []);
      if (!rows.length) continue;
      box.append(el("details", { open: section === "host" || section === "accelerators" },
        el("summary", { text: section }), el("table", { class: "facts", "data-section": section }, el("tbody", null,
          rows.map(([k, x]) => el("tr", null, el("td", { class: "mono small", text: k || section }), el("td", { text: factValue(k, x) })))))));
    }
    return box;
  }
  function fmtRate(v, unit) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const p = [["P", 1e15], ["T", 1e12], ["G", 1e9], ["M", 1e6], ["k", 1e3]].find(([, f]) => Math.abs(v) >= f);
    return p ? `${+(v / p[1]).toPrecision(3)} ${p[0]}${unit}` : `${+v.toPrecision(3)} ${unit}`;
  }
  // lmdev bench's results (docs/schemas/bench.md): the best matmul per dtype beside the datasheet
  // peak, and the measured bandwidths.
  function benchTables(b) {
    const rows = [];
    const dev = (name, d) => {
      for (const [dtype, runs] of Object.entries(d.matmul || {})) {
        const ok = (runs || []).filter((x) => typeof x.flops === "number");
        const best = ok.reduce((a, x) => (!a || x.flops > a.flops ? x : a), null);
        const peak = (d.peak_flops || {})[dtype];
        const err = (runs || []).find((x) => x.error);
        rows.push([name, "matmul " + dtype, best ? fmtRate(best.flops, "FLOP/s") + ` (n=${best.size})` : "failed: " + ((err || {}).error || "?"),
          peak ? fmtRate(peak, "FLOP/s") : "–", best && peak ? (100 * best.flops / peak).toFixed(1) + " %" : "–"]);
      }
      if (d.memory_bandwidth_bytes_s) rows.push([name, "memory bandwidth", fmtBytes(d.memory_bandwidth_bytes_s) + "/s", "–",
        d.memory_bandwidth_percent_of_peak ? d.memory_bandwidth_percent_of_peak.toFixed(1) + " %" : "–"]);
      for (const dir of ["h2d", "d2h"]) for (const [kind, v] of Object.entries(d[dir + "_bytes_s"] || {}))
        rows.push([name, `${dir} (${kind})`, fmtBytes(v) + "/s", "–", "–"]);
    };
    if (b.cpu) dev("CPU " + (b.cpu.model || ""), b.cpu);
    (b.gpus || []).forEach((g) => dev(`GPU ${g.index} ${g.name || ""}`, g));
    if (b.disk) {
      if (b.disk.write_bytes_s) rows.push(["disk " + (b.disk.path || ""), "write", fmtBytes(b.disk.write_bytes_s) + "/s", "–", "–"]);
      if (b.disk.read_bytes_s) rows.push(["disk " + (b.disk.path || ""), "read", fmtBytes(b.disk.read_bytes_s) + "/s", "–", "–"]);
    }
    if (b.allreduce && b.allreduce.bus_bandwidth_bytes_s) rows.push([`${b.allreduce.devices} GPUs`, "all-reduce bus bandwidth",
      fmtBytes(b.allreduce.bus_bandwidth_bytes_s) + "/s", "–", b.allreduce.percent_of_peak ? b.allreduce.percent_of_peak.toFixed(1) + " %" : "–"]);
    return el("div", null, el("p", { class: "muted small", text: `measured ${b.created || "?"}${b.quick ? " (quick)" : ""} on ${b.hostname || "?"}; peaks: ${(b.cpu || {}).peak_source || "the catalog's datasheets"}` }),
      el("table", { id: "bench" }, el("thead", null, el("tr", null, ["Device", "Measure", "Measured", "Datasheet peak", "% of peak"].map((h) => el("th", { text: h })))),
        el("tbody", null, rows.map((r) => el("tr", null, r.map((c, i) => el("td", { class: i >= 2 ? "num" : "", text: c })))))));
  }

  // -- plan page -------------------------------------------------------------------------------

  async function planPage(view) {
    const o = await api("/api/plan/options");
    const f = {
      model: el("select", { id: "plan-model" }, o.models.map((m) => el("option", { value: m, text: m }))),
      task: el("select", { id: "plan-task" }, o.tasks.map((m) => el("option", { value: m, text: m }))),
      precision: el("select", { id: "plan-precision" }, o.precisions.map((m) => el("option", { value: m, text: m }))),
      optimizer: el("select", { id: "plan-optimizer" }, o.optimizers.map((m) => el("option", { value: m, text: m }))),
      batch: el("input", { type: "number", id: "plan-batch", min: 1, value: 1 }),
      seq: el("input", { type: "number", id: "plan-seq", min: 1, value: 2048 }),
      devices: el("input", { type: "number", id: "plan-devices", min: 1, value: 1 }),
      hardware: el("select", { id: "plan-hardware" }, o.hardware.map((m) => el("option", { value: m, text: m === "this" ? "this machine" : m }))),
    };
    f.task.value = "train"; f.precision.value = "auto";
    const go = el("button", { class: "primary", type: "button", id: "plan-go", text: "Plan" });
    const result = el("section", { id: "plan-result" });
    view.replaceChildren(el("h1", { text: "Plan" }), el("p", { class: "muted", text: "The same planner as `lmdev plan`: will it fit, and how long will it take?" }),
      el("div", { class: "form-grid" }, Object.entries(f).map(([k, input]) => el("label", null, k, input))), go, result);
    go.addEventListener("click", run);
    async function run() {
      const q = new URLSearchParams(Object.fromEntries(Object.entries(f).map(([k, i]) => [k, i.value])));
      result.replaceChildren(el("p", { class: "muted", text: "Planning…" }));
      let p;
      try { p = await api("/api/plan?" + q.toString()); } catch (e) { result.replaceChildren(el("div", { class: "banner", text: e.message + (e.hint ? " — " + e.hint : "") })); return; }
      const mem = p.memory; const cap = p.hardware.memory_bytes - (p.hardware.used_bytes || 0);
      const parts = ["weights", "gradients", "optimizer", "activations", "logits", "kv_cache", "overhead"];
      const scale = Math.max(mem.total_bytes, cap);
      const bar = el("div", { class: "bar", id: "plan-bar" });
      const legend = el("div", { class: "legend-list" });
      parts.forEach((part, i) => {
        const b = mem[part + "_bytes"] || 0; if (!b) return;
        const s = el("span", { title: `${part}: ${fmtBytes(b)}` }); s.style.width = (100 * b / scale) + "%"; s.style.background = COLORS[i];
        bar.append(s);
        const sw = el("span", { class: "swatch" }); sw.style.background = COLORS[i];
        legend.append(el("span", null, sw, `${part} ${fmtBytes(b)}`));
      });
      const capLine = el("div", { class: "small muted", text: `capacity ${fmtBytes(cap)} per device (${p.hardware.name}); needs ${fmtBytes(mem.total_bytes)}` });
      result.replaceChildren(el("h2", { id: "plan-verdict" }, el("span", { class: "badge " + (p.fits ? "finished" : "failed"), text: p.fits ? "fits" : "does not fit" }), " " + p.model.name + " on " + p.hardware.name,
        el("span", { class: "muted", text: ` — ${fmtHeadroom(p.headroom_bytes)}, max batch ${p.max_batch}, max sequence ${p.max_seq}` })),
        bar, legend, capLine,
        ...((p.warnings || []).length ? [el("ul", { id: "plan-warnings" }, p.warnings.map((w) => el("li", { text: w })))] : []),
        el("h2", { text: "Recommendations" }), p.recommendations.length ? el("table", { id: "plan-recs" }, el("thead", null, el("tr", null,
          ["Change", "Memory", "Fits", "Trade-off"].map((h) => el("th", { text: h })))), el("tbody", null, p.recommendations.map((r) => el("tr", null,
          el("td", { text: r.description || r.action }), el("td", { class: "num", text: fmtBytes(r.total_bytes) }),
          el("td", null, el("span", { class: "badge " + (r.fits ? "finished" : "failed"), text: r.fits ? "fits" : "too big" })),
          el("td", { class: "small muted", text: r.tradeoff || "" }))))) : el("p", { class: "muted", text: "None needed." }),
        el("details", null, el("summary", { text: "The whole plan (lmdev plan --json)" }), el("pre", { text: JSON.stringify(p, null, 2) })));
    }
    lmdev.ready = true;
  }

  // -- router ----------------------------------------------------------------------------------

  async function route() {
    clearTimers(); destroyCharts(); banner(null);
    lmdev.ready = false; lmdev.firstChartAt = null;
    const view = document.getElementById("view");
    const hash = location.hash || "#/";
    const path = hash.split("?")[0];
    readSettings(hash);
    const page = path.startsWith("#/run/") ? "runs" : path.slice(2) || "runs";
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === page));
    try {
      const health = await api("/api/health");
      document.getElementById("store-path").textContent = health.store;
      if (!health.ok) {
        banner(health.error.message, health.error.hint);
        if (path !== "#/machine" && path !== "#/plan") {
          view.replaceChildren(el("div", { class: "empty", id: "store-error", text: "No runs to show until the store is readable." }));
          lmdev.ready = true;
          return;
        }
      }
      if (path === "#/" || path === "") await runsPage(view);
      else if (path.startsWith("#/run/")) await runPage(view, decodeURIComponent(path.slice(6)));
      else if (path === "#/compare") await comparePage(view, hash);
      else if (path === "#/hparams") await hparamsPage(view, hash);
      else if (path === "#/compression") await compressionPage(view);
      else if (path === "#/machine") await machinePage(view);
      else if (path === "#/plan" && (await state.planReady, state.plan)) await planPage(view);
      else throw new ApiError(404, { error: { message: "There is no page " + path.slice(1) + "." } });
    } catch (err) {
      showError(view, err);
      lmdev.ready = true;
    }
  }

  function theme(t) {
    document.documentElement.dataset.theme = t;
    document.getElementById("theme").textContent = t === "dark" ? "Light" : "Dark";
    try { localStorage.setItem("lmdev-theme", t); } catch (e) { /* private mode */ }
  }

  window.addEventListener("DOMContentLoaded", async () => {
    let t = null;
    try { t = localStorage.getItem("lmdev-theme"); } catch (e) { t = null; }
    theme(t || (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark"));
    document.getElementById("theme").addEventListener("click", () => {
      theme(document.documentElement.dataset.theme === "dark" ? "light" : "dark");
      route();
    });
    // whether the planner is installed: asked beside the first page, not before it
    state.planReady = api("/api/plan/options").then(() => { state.plan = true; document.getElementById("nav-plan").hidden = false; })
      .catch(() => { state.plan = false; });
    window.addEventListener("hashchange", route);
    route();
  });
})();

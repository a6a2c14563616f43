/* The dashboard's script: grid, filters, cell panel, what-changed strip, toolkit diff, chart,
   history. Reads the JSON in #rknn-data; builds every element with textContent (never HTML
   from data), so nothing in a matrix can inject markup. */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("rknn-data").textContent);
  const S = D.statuses, T = D.targets, V = D.variants, C = D.cells, X = D.details;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k];
      else if (k === "text") e.textContent = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  const str = (i) => (i >= 0 ? D.strings[i] : "");
  const cellId = (i) => V[C[i][0]].id + "-" + T[C[i][1]].join("-");
  const status = (i) => S[C[i][2]];
  const at = new Map();
  C.forEach((c, i) => at.set(c[0] * T.length + c[1], i));
  const uniq = (xs) => Array.from(new Set(xs));
  const passColour = (S.find((s) => !s.failing && s.ran) || S[0]).colour;

  // ---- state and filters ------------------------------------------------------------------
  const state = {
    search: "", form: "", family: "", platform: "", toolkit: "", quant: "", signature: "",
    sort: "group", sortTarget: -1, statuses: new Set(S.map((s) => s.name)), only: null,
    onlyLabel: "", placement: "", overlay: false,
  };
  const toolkits = uniq(T.map((t) => t[1]));
  function fill(id, values) {
    const select = $(id);
    for (const v of values) select.append(el("option", { value: v, text: v }));
  }
  fill("f-form", uniq(V.map((v) => v.form)));
  fill("f-family", uniq(V.map((v) => v.family)));
  fill("f-platform", uniq(T.map((t) => t[0])));
  fill("f-toolkit", toolkits);
  fill("f-quant", uniq(T.map((t) => t[2])));
  D.signatures.forEach((s, i) => $("f-signature").append(el("option", { value: String(i), text: s })));
  const P = D.placements || [];
  P.forEach((label, k) => $("f-placement").append(el("option", { value: String(k), text: label })));
  $("f-placement").append(el("option", { value: "-1", text: "no layer table" }));
  $("f-overlay").addEventListener("change", () => { state.overlay = $("f-overlay").checked; render(); });
  const present = new Set(C.map((c) => c[2]));
  S.forEach((s, i) => {
    if (!present.has(i)) return;
    const box = el("input", { type: "checkbox", value: s.name, checked: "" });
    box.addEventListener("change", () => {
      if (box.checked) state.statuses.add(s.name); else state.statuses.delete(s.name);
      render();
    });
    $("f-status").append(el("label", { class: "chip " + s.name }, box, " " + s.symbol + " " + s.name));
  });
  for (const name of ["search", "form", "family", "platform", "toolkit", "quant", "signature", "placement", "sort"]) {
    const input = $("f-" + name);
    input.addEventListener(name === "search" ? "input" : "change", () => {
      state[name] = input.value;
      if (name === "sort") state.sortTarget = -1;
      render();
    });
  }
  function setFilter(name, value) { state[name] = value; $("f-" + name).value = value; }
  function reset() {
    for (const n of ["search", "form", "family", "platform", "toolkit", "quant", "signature", "placement"]) setFilter(n, "");
    setFilter("sort", "group");
    state.sortTarget = -1; state.only = null; state.onlyLabel = "";
    state.statuses = new Set(S.map((s) => s.name));
    for (const box of $("f-status").querySelectorAll("input")) box.checked = true;
  }
  $("f-reset").addEventListener("click", () => { reset(); render(); });
  function showOnly(indices, label) {
    reset();
    state.only = new Set(indices); state.onlyLabel = label;
    render();
    $("grid-section").scrollIntoView();
  }

  // ---- grid -------------------------------------------------------------------------------
  function cellMatches(i) {
    if (state.only && !state.only.has(i)) return false;
    if (!state.statuses.has(status(i).name)) return false;
    if (state.signature !== "" && C[i][3] !== Number(state.signature)) return false;
    if (state.placement !== "" && C[i][4] !== Number(state.placement)) return false;
    return true;
  }
  const filtering = () => state.only || state.signature !== "" || state.placement !== ""
    || state.statuses.size !== S.length;

  function render() {
    const cols = [];
    T.forEach((t, ti) => {
      if ((!state.platform || t[0] === state.platform) && (!state.toolkit || t[1] === state.toolkit)
          && (!state.quant || t[2] === state.quant)) cols.push(ti);
    });
    const needle = state.search.trim().toLowerCase();
    const rows = [];
    let shownCells = 0;
    V.forEach((v, vi) => {
      if ((state.form && v.form !== state.form) || (state.family && v.family !== state.family)) return;
      let any = false, failing = 0, idHit = !needle || v.id.toLowerCase().includes(needle);
      const cells = cols.map((ti) => {
        const i = at.get(vi * T.length + ti);
        if (i === undefined) return -1;
        if (!idHit && cellId(i).toLowerCase().includes(needle)) idHit = true;
        if (cellMatches(i)) { any = true; if (status(i).failing) failing++; }
        return i;
      });
      if (!idHit || (filtering() && !any)) return;
      rows.push({ vi, cells, failing });
    });
    if (state.sortTarget >= 0) {
      const k = cols.indexOf(state.sortTarget);
      const rank = (r) => (r.cells[k] < 0 ? 99 : (status(r.cells[k]).failing ? 0 : 50) + C[r.cells[k]][2]);
      rows.sort((a, b) => rank(a) - rank(b) || a.vi - b.vi);
    } else if (state.sort === "failures") rows.sort((a, b) => b.failing - a.failing || a.vi - b.vi);
    else if (state.sort === "id") rows.sort((a, b) => (V[a.vi].id < V[b.vi].id ? -1 : 1));

    const table = $("grid");
    table.textContent = "";
    const head = el("thead");
    const r1 = el("tr"), r2 = el("tr"), r3 = el("tr");
    r1.append(el("th", { rowspan: "3", text: "variant" }));
    let j = 0;
    while (j < cols.length) {
      const p = T[cols[j]][0];
      let k = j;
      while (k < cols.length && T[cols[k]][0] === p) k++;
      r1.append(el("th", { class: "platform", colspan: String(k - j), text: p }));
      let m = j;
      while (m < k) {
        const tk = T[cols[m]][1];
        let n = m;
        while (n < k && T[cols[n]][1] === tk) n++;
        r2.append(el("th", { class: "tk", colspan: String(n - m), text: tk }));
        for (let q = m; q < n; q++) {
          const th = el("th", { class: "q", "data-t": String(cols[q]), title: "sort by this column", text: T[cols[q]][2] });
          if (cols[q] === state.sortTarget) th.textContent += " ▲";
          r3.append(th);
        }
        m = n;
      }
      j = k;
    }
    head.append(r1, r2, r3);
    const body = el("tbody");
    let group = null;
    for (const r of rows) {
      const v = V[r.vi];
      if (state.sort === "group" && state.sortTarget < 0 && group !== v.form + " › " + v.family) {
        group = v.form + " › " + v.family;
        body.append(el("tr", { class: "group" }, el("th", { colspan: String(cols.length + 1), text: group })));
      }
      const tr = el("tr");
      tr.append(el("td", { class: "id", text: v.id }));
      for (const i of r.cells) {
        if (i < 0) { tr.append(el("td", { class: "missing" })); continue; }
        const s = status(i);
        const match = cellMatches(i);
        if (match) shownCells++;
        const sig = C[i][3] >= 0 ? " · " + D.signatures[C[i][3]] : "";
        const pl = C[i][4] >= 0 ? " · " + P[C[i][4]] : "";
        const overlay = state.overlay && C[i][4] >= 0 ? " pl" + C[i][4] : "";
        tr.append(el("td", {
          class: "c " + s.name + (match ? "" : " dim") + overlay, "data-i": String(i),
          title: cellId(i) + " · " + s.name + sig + pl, text: s.symbol,
        }));
      }
      body.append(tr);
    }
    table.append(head, body);
    let text = rows.length + " variants × " + cols.length + " targets; " + shownCells + " of " + C.length + " cells shown";
    if (state.onlyLabel) text += " (" + state.onlyLabel + ")";
    $("grid-count").textContent = text;
  }
  $("grid").addEventListener("click", (ev) => {
    const td = ev.target.closest("td.c");
    if (td) return openPanel(Number(td.dataset.i));
    const th = ev.target.closest("th.q");
    if (th) { state.sortTarget = Number(th.dataset.t); render(); }
  });

  // ---- cell panel -------------------------------------------------------------------------
  function fmt(x) {
    if (x === null || x === undefined) return "–";
    if (typeof x === "number") return Math.abs(x) >= 1e-3 && Math.abs(x) < 1e5 ? String(+x.toPrecision(6)) : x.toExponential(3);
    return String(x);
  }
  function table(headers, rows) {
    const t = el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))));
    const b = el("tbody");
    for (const row of rows) b.append(el("tr", {}, ...row));
    t.append(b);
    return t;
  }
  function copy(text, button) {
    const done = () => { button.textContent = "copied"; setTimeout(() => { button.textContent = "copy"; }, 1500); };
    const fallback = () => {
      const area = el("textarea", {}); area.value = text; document.body.append(area); area.select();
      try { document.execCommand("copy"); done(); } catch (e) { button.textContent = "select and copy"; }
      area.remove();
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
    else fallback();
  }
  function openPanel(i) {
    const d = X[i], s = status(i), t = T[C[i][1]], v = V[C[i][0]];
    const body = $("panel-body");
    body.textContent = "";
    body.append(el("h2", { class: "cell-title", text: v.id }));
    body.append(el("p", { text: t[0] + " · rknn-toolkit2 " + t[1] + " · " + t[2] + " · " + v.form + " › " + v.family }));
    body.append(el("p", {}, el("span", { class: "chip " + s.name, id: "panel-status", text: s.symbol + " " + s.name }), " " + s.meaning));
    if (d.signature) {
      const link = el("a", { href: "#grid-section", text: "all cells with this signature" });
      link.addEventListener("click", () => { reset(); setFilter("signature", String(C[i][3])); render(); });
      body.append(el("h3", { text: "signature" }), el("p", {}, el("code", { text: d.signature }), " ", C[i][3] >= 0 ? link : null));
    }
    if (d.reason >= 0) body.append(el("h3", { text: "reason" }), el("pre", { class: "reason", text: str(d.reason) }));
    for (const [heading, text] of d.notes) body.append(el("h3", { text: heading }), el("pre", { class: "reason", text: text }));
    if (d.metrics.length) {
      body.append(el("h3", { text: "metrics against their bounds" }), table(["output", "metric", "value", "bound", ""],
        d.metrics.map((m) => [
          el("td", { text: m.output }), el("td", { text: m.metric }),
          el("td", { class: m.held === false ? "bad" : m.held ? "ok" : "", text: fmt(m.value) }),
          el("td", { text: m.op ? m.op + " " + fmt(m.bound) : "not checked" }),
          el("td", { text: m.held === null ? "" : m.held ? "✓ within" : "✗ broken" }),
        ])));
    }
    if (d.placement) placementPanel(body, d.placement);
    const times = Object.entries(d.timings);
    body.append(el("h3", { text: "timings and memory" }), table(["what", "value"], [
      ...times.map(([k, x]) => [el("td", { text: k }), el("td", { text: fmt(x) + " s" })]),
      [el("td", { text: "peak memory" }), el("td", { text: d.peak_rss_mb === null ? "–" : fmt(d.peak_rss_mb) + " MB" })],
      [el("td", { text: "cached result" }), el("td", { text: d.cached ? "yes" : "no" })],
      [el("td", { text: "finished" }), el("td", { text: d.finished || "–" })],
      [el("td", { text: "job" }), el("td", { text: d.job_id || "–" })],
    ]));
    if (d.shapes) {
      body.append(el("h3", { text: "listed shapes (--rknn-dims)" }), table(["shape", "status", "cosine", "rel_l2", "internal memory"], d.shapes.rows.map((r) => {
        const st = S.find((x) => x.name === r.status);
        return [el("td", { text: r.dims }), el("td", { class: st ? "chip " + st.name : "", text: (st ? st.symbol + " " : "") + r.status, title: r.reason || "" }),
          el("td", { text: r.cosine === null ? "–" : r.cosine.toFixed(6) }), el("td", { text: r.rel_l2 === null ? "–" : (100 * r.rel_l2).toFixed(3) + " %" }),
          el("td", { text: r.internal_bytes === null ? "–" : fmt(r.internal_bytes / 1024) + " KB" })];
      })));
      const u = d.shapes.unlisted;
      body.append(el("p", { class: "unlisted", text: "unlisted " + u.dims + ": " + u.answer + (u.message ? " (" + u.message + ")" : "") }));
    }
    if (d.fixes.length) {
      body.append(el("h3", { text: "the advisor's fixes" }), table(["fix", "status", "detail"], d.fixes.map((f) => {
        const st = S.find((x) => x.name === f.status);
        return [el("td", { text: f.fix }), el("td", { class: st ? "chip " + st.name : "", text: (st ? st.symbol + " " : "") + f.status }),
          el("td", { text: Object.keys(f.detail).length ? JSON.stringify(f.detail) : "" })];
      })));
    }
    if (d.log_head >= 0) {
      body.append(el("h3", { text: d.log_tail >= 0 ? "toolkit log: head" : "toolkit log" }), el("pre", { class: "log-head", text: str(d.log_head) }));
      if (d.log_tail >= 0) body.append(el("h3", { text: "toolkit log: tail" }), el("pre", { class: "log-tail", text: str(d.log_tail) }));
    }
    const button = el("button", { type: "button", id: "copy-rerun", text: "copy" });
    button.addEventListener("click", () => copy(d.rerun, button));
    body.append(el("h3", { text: "re-run this cell" }), el("div", { class: "cmd" }, el("pre", { id: "rerun", text: d.rerun }), button));
    $("panel").hidden = false;
    $("panel").focus();
    history.replaceState(null, "", "#cell=" + encodeURIComponent(cellId(i)));
  }
  function kib(x) { return x === null || x === undefined ? "–" : (x / 1024).toFixed(1) + " KiB"; }
  function placementPanel(body, p) {
    body.append(el("h3", { text: "where it runs (the compiler's plan, not a board measurement)" }));
    if (p.error) { body.append(el("pre", { class: "reason", id: "placement-error", text: "layer table not read: " + p.error })); return; }
    const att = p.attention_on_npu === null ? "no attention op found" : p.attention_on_npu ? "attention fully on the NPU" : "attention on the CPU";
    body.append(el("p", { id: "placement-summary", text: p.npu_ops + " ops on the NPU, " + p.cpu_ops + " on the CPU; " + att
      + (p.fused.length ? "; fused kernels: " + p.fused.join(", ") : "") }));
    const m = p.memory || {}, cy = p.cycles || {};
    body.append(table(["memory", "value"], [
      [el("td", { text: "internal" }), el("td", { text: kib(m.internal_bytes) })],
      [el("td", { text: "weights" }), el("td", { text: kib(m.weight_bytes) })],
      [el("td", { text: "model file" }), el("td", { text: kib(m.model_bytes) })],
      [el("td", { text: "cycle estimates (DDR/NPU/total)" }), el("td", { text: cy.ops_with_estimate ? cy.ddr + " / " + cy.npu + " / " + cy.total + " over " + cy.ops_with_estimate + " ops" : "none given" })],
    ]));
    const layers = table(["id", "op", "type", "target", "name"], p.layers.map(([id, op, dtype, target, attention, name]) => [
      el("td", { text: String(id) + (attention ? " ◆" : "") }), el("td", { text: op }), el("td", { text: dtype }),
      el("td", { text: target }), el("td", { text: name })]));
    layers.id = "layer-table";
    p.layers.forEach(([, , , target, attention], k) => {
      layers.tBodies[0].rows[k].className = (target === "CPU" ? "cpu" : "") + (attention ? " att" : "");
    });
    const summary = "layer table (" + p.layers.length + " ops; CPU rows highlighted, ◆ attention)"
      + (p.layers_left_out ? ", " + p.layers_left_out + " more left out" : "");
    const details = el("details", {}, el("summary", { text: summary }), layers);
    details.open = p.cpu_ops > 0;
    body.append(details);
  }
  function closePanel() { $("panel").hidden = true; }
  $("panel-close").addEventListener("click", closePanel);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePanel(); });

  // ---- what changed, toolkit diff ---------------------------------------------------------
  function diffOf(a, b) { return D.diffs.find((x) => x.a === a && x.b === b); }
  function card(report, cls) {
    const indices = report.changes.map((c) => c[0]).filter((i) => i >= 0);
    const c = el("div", { class: "card " + cls }, el("div", { text: report.headline }));
    if (report.placement) c.append(el("div", { class: "placement-head", text: "placement: " + report.placement.headline }));
    if (indices.length) {
      const a = el("a", { href: "#grid-section", text: "show the " + indices.length + " changed cells" });
      a.addEventListener("click", (ev) => { ev.preventDefault(); showOnly(indices, report.label); });
      c.append(a);
    }
    return c;
  }
  const tone = (r) => (r.counts.regressed || (r.placement && r.placement.regressions) ? "bad" : r.counts.fixed ? "good" : "");
  const strip = $("changed-strip");
  for (const m of D.models || []) {
    const c = el("div", { class: "card model " + m.tone }, el("div", { text: "your model " + m.line }));
    const a = el("a", { href: "#grid-section", text: "show its " + m.cells.length + " cells" });
    a.addEventListener("click", (ev) => { ev.preventDefault(); showOnly(m.cells, m.name); });
    c.append(a);
    strip.append(c);
  }
  if (D.changed.previous) strip.append(card(D.changed.previous, tone(D.changed.previous)));
  else strip.append(el("div", { class: "card", text: "No earlier run given: pytest-rknn merge --history DIR (or --rknn-baseline) adds the change since the last run." }));
  if (D.changed.toolkit) {
    const pair = diffOf(D.changed.toolkit.a, D.changed.toolkit.b);
    for (const r of pair.reports) strip.append(card(r, tone(r)));
  }
  function renderDiff() {
    const out = $("diff-out");
    out.textContent = "";
    const pair = diffOf($("d-a").value, $("d-b").value);
    if (!pair) { out.append(el("p", { text: toolkits.length < 2 ? "One toolkit version only: nothing to compare." : "Pick two different versions." })); return; }
    for (const r of pair.reports) {
      out.append(el("h3", { class: "diff-head", text: r.headline }));
      if (r.placement) {
        out.append(el("p", { class: "placement-head", text: "placement: " + r.placement.headline }));
        if (r.placement.changes.length) {
          const moved = el("ul", { class: "placement-changes" });
          for (const [i, kind, key, before, after] of r.placement.changes.slice(0, 300)) {
            const link = el("a", { href: "#", class: "cell-link", text: key });
            link.addEventListener("click", (ev) => { ev.preventDefault(); if (i >= 0) openPanel(i); });
            moved.append(el("li", {}, kind + " ", link, ": CPU ops " + before + " → " + after));
          }
          out.append(moved);
        }
      }
      if (!r.changes.length) continue;
      const list = el("ul");
      for (const [i, kind, key, before, after] of r.changes.slice(0, 300)) {
        const link = el("a", { href: "#", class: "cell-link", text: key });
        link.addEventListener("click", (ev) => { ev.preventDefault(); if (i >= 0) openPanel(i); });
        list.append(el("li", {}, kind + " ", link, ": " + before + " → " + after));
      }
      out.append(list);
    }
  }
  for (const id of ["d-a", "d-b"]) { fill(id, toolkits); $(id).addEventListener("change", renderDiff); }
  if (toolkits.length >= 2) { $("d-a").value = toolkits[toolkits.length - 2]; $("d-b").value = toolkits[toolkits.length - 1]; }
  renderDiff();
  const chips = $("chips-out");
  if (D.chips && D.chips.length) { const ul = el("ul"); for (const line of D.chips) ul.append(el("li", { text: line })); chips.append(ul); }
  else chips.append(el("p", { text: "No toolkit with layer tables for two chips." }));

  // ---- chart ------------------------------------------------------------------------------
  fill("c-toolkit", toolkits);
  fill("c-quant", uniq(T.map((t) => t[2])));
  $("c-toolkit").value = toolkits[toolkits.length - 1] || "";
  function renderChart() {
    const out = $("chart");
    out.textContent = "";
    const tk = $("c-toolkit").value, q = $("c-quant").value;
    const W = 330, H = 250, L = 46, B = 36;
    for (const platform of uniq(T.map((t) => t[0]))) {
      const points = new Map();
      C.forEach((c, i) => {
        const t = T[c[1]], v = V[c[0]];
        if (t[0] !== platform || t[1] !== tk || t[2] !== q || !v.kv || !v.d || !status(i).ran) return;
        const k = v.kv + "," + v.d;
        if (!points.has(k)) points.set(k, { kv: v.kv, d: v.d, cells: [], pass: 0 });
        const p = points.get(k); p.cells.push(i); if (!status(i).failing && status(i).ran) p.pass++;
      });
      const box = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
      const label = svg("text", { x: L, y: 14, "font-size": 13, "font-weight": "bold" });
      label.textContent = platform + " · " + tk + " · " + q + " (" + points.size + " points)";
      box.append(label);
      const all = Array.from(points.values());
      const lx = all.map((p) => Math.log2(p.kv)), ly = all.map((p) => Math.log2(p.d));
      const x0 = Math.floor(Math.min(0, ...lx)), x1 = Math.ceil(Math.max(1, ...lx)), y0 = Math.floor(Math.min(0, ...ly)), y1 = Math.ceil(Math.max(1, ...ly));
      const X_ = (x) => L + (W - L - 10) * (x - x0) / Math.max(1, x1 - x0), Y_ = (y) => H - B - (H - B - 24) * (y - y0) / Math.max(1, y1 - y0);
      box.append(svg("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#888" }), svg("line", { x1: L, y1: 24, x2: L, y2: H - B, stroke: "#888" }));
      // Every power of two on the axis, labelled no closer than 30 px (1024 -> 1k).
      const every = Math.max(1, Math.ceil(30 / ((W - L - 10) / Math.max(1, x1 - x0))));
      const short = (n) => (n >= 1024 && n % 1024 === 0 ? n / 1024 + "k" : String(n));
      for (let x = x0; x <= x1; x++) {
        box.append(svg("line", { x1: X_(x), y1: H - B, x2: X_(x), y2: H - B + 3, stroke: "#888" }));
        if ((x - x0) % every) continue;
        const t = svg("text", { x: X_(x), y: H - B + 14, "font-size": 10, "text-anchor": "middle" }); t.textContent = short(2 ** x); box.append(t);
      }
      for (let y = y0; y <= y1; y++) { const t = svg("text", { x: L - 4, y: Y_(y) + 3, "font-size": 10, "text-anchor": "end" }); t.textContent = String(2 ** y); box.append(t); }
      const xl = svg("text", { x: (W + L) / 2, y: H - 6, "font-size": 11, "text-anchor": "middle" }); xl.textContent = "kv length"; box.append(xl);
      const yl = svg("text", { x: 12, y: (H - B) / 2, "font-size": 11, transform: "rotate(-90 12 " + (H - B) / 2 + ")", "text-anchor": "middle" }); yl.textContent = "head dim"; box.append(yl);
      for (const p of all) {
        const cx = X_(Math.log2(p.kv)), cy = Y_(Math.log2(p.d));
        const g = svg("g", { class: "pt", tabindex: "0" });
        const title = svg("title", {});
        title.textContent = "kv " + p.kv + ", head dim " + p.d + ": " + p.pass + "/" + p.cells.length + " pass";
        g.append(title);
        if (p.pass === p.cells.length) g.append(svg("circle", { cx, cy, r: 6, fill: passColour }));
        else if (p.pass > 0) g.append(svg("circle", { cx, cy, r: 6, fill: "#fff", stroke: "#f0b400", "stroke-width": 2 }), svg("path", { class: "half", d: `M${cx},${cy - 6}A6,6 0 0,0 ${cx},${cy + 6}Z`, fill: "#f0b400" }));  // ◐, as in the legend
        else g.append(svg("path", { d: `M${cx - 5},${cy - 5}L${cx + 5},${cy + 5}M${cx - 5},${cy + 5}L${cx + 5},${cy - 5}`, stroke: "#d63a3a", "stroke-width": 3 }));
        g.addEventListener("click", () => showOnly(p.cells, platform + " " + tk + " " + q + ": kv " + p.kv + ", head dim " + p.d));
        box.append(g);
      }
      out.append(box);
    }
  }
  // Dynamic-shape cells: each listed length's verdict and error (rel_l2, log scale), per chip.
  function renderLengths() {
    const out = $("lengths-chart");
    if (!out) return;
    out.textContent = "";
    const tk = $("c-toolkit").value, q = $("c-quant").value;
    const W = 330, H = 250, L = 46, B = 36;
    for (const platform of uniq(T.map((t) => t[0]))) {
      const points = [];
      C.forEach((c, i) => {
        const t = T[c[1]], d = D.details[i];
        if (t[0] !== platform || t[1] !== tk || t[2] !== q || !d.shapes) return;
        for (const r of d.shapes.rows) if (r.length) points.push({ i, r, name: V[c[0]].id || "" });
      });
      if (!points.length) continue;
      const box = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
      const label = svg("text", { x: L, y: 14, "font-size": 13, "font-weight": "bold" });
      label.textContent = platform + " · " + tk + " · " + q + " (" + points.length + " shapes)";
      box.append(label);
      const lx = points.map((p) => Math.log2(p.r.length));
      const ly = points.map((p) => Math.log10(Math.max(1e-6, p.r.rel_l2 === null ? 1 : p.r.rel_l2)));
      const x0 = Math.floor(Math.min(...lx)), x1 = Math.ceil(Math.max(x0 + 1, ...lx)), y0 = Math.floor(Math.min(-4, ...ly)), y1 = Math.ceil(Math.max(0, ...ly));
      const X_ = (x) => L + (W - L - 10) * (x - x0) / Math.max(1, x1 - x0), Y_ = (y) => H - B - (H - B - 24) * (y - y0) / Math.max(1, y1 - y0);
      box.append(svg("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#888" }), svg("line", { x1: L, y1: 24, x2: L, y2: H - B, stroke: "#888" }));
      for (let x = x0; x <= x1; x++) { const t = svg("text", { x: X_(x), y: H - B + 14, "font-size": 10, "text-anchor": "middle" }); t.textContent = String(2 ** x); box.append(t); }
      for (let y = y0; y <= y1; y++) { const t = svg("text", { x: L - 4, y: Y_(y) + 3, "font-size": 10, "text-anchor": "end" }); t.textContent = "1e" + y; box.append(t); }
      const xl = svg("text", { x: (W + L) / 2, y: H - 6, "font-size": 11, "text-anchor": "middle" }); xl.textContent = "length"; box.append(xl);
      const yl = svg("text", { x: 12, y: (H - B) / 2, "font-size": 11, transform: "rotate(-90 12 " + (H - B) / 2 + ")", "text-anchor": "middle" }); yl.textContent = "rel_l2"; box.append(yl);
      points.forEach((p, k) => {
        const cx = X_(lx[k]), cy = Y_(ly[k]);
        const g = svg("g", { class: "pt", tabindex: "0" });
        const title = svg("title", {});
        title.textContent = p.name + " " + p.r.dims + ": " + p.r.status + (p.r.rel_l2 === null ? "" : ", rel_l2 " + (100 * p.r.rel_l2).toFixed(3) + " %");
        g.append(title);
        if (p.r.status === "pass") g.append(svg("circle", { cx, cy, r: 5, fill: passColour }));
        else g.append(svg("path", { d: `M${cx - 5},${cy - 5}L${cx + 5},${cy + 5}M${cx - 5},${cy + 5}L${cx + 5},${cy - 5}`, stroke: "#d63a3a", "stroke-width": 3 }));
        g.addEventListener("click", () => showOnly([p.i], platform + " " + tk + " " + q + ": " + p.r.dims));
        box.append(g);
      });
      out.append(box);
    }
  }
  $("c-toolkit").addEventListener("change", renderChart);
  $("c-quant").addEventListener("change", renderChart);
  $("c-toolkit").addEventListener("change", renderLengths);
  $("c-quant").addEventListener("change", renderLengths);
  renderChart();
  renderLengths();

  // ---- history ----------------------------------------------------------------------------
  if (D.history && $("history-out")) {
    const h = D.history, out = $("history-out");
    out.append(el("p", { text: h.runs.length + " runs, " + h.runs[0] + " … " + h.runs[h.runs.length - 1] + "; " + h.flip_count + " cells flipped between consecutive runs." }));
    out.append(table(["target", "pass rate over the runs", "pass / ran per run"], h.targets.map((t) => {
      const spark = svg("svg", { width: 120, height: 24, class: "spark" });
      const pts = t.series.map((e, k) => (e && e[1] ? [4 + k * 112 / Math.max(1, h.runs.length - 1), 20 - 16 * e[0] / e[1]] : null)).filter(Boolean);
      spark.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: "#2e62d6", "stroke-width": 2 }));
      for (const p of pts) spark.append(svg("circle", { cx: p[0], cy: p[1], r: 2, fill: "#2e62d6" }));
      return [el("td", { text: t.target }), el("td", {}, spark), el("td", { text: t.series.map((e) => (e ? e[0] + "/" + e[1] : "–")).join(" → ") })];
    })));
    if (h.placement && h.placement.length) {
      out.append(el("h3", { text: "placement between consecutive runs" }));
      const ul = el("ul", { id: "history-placement" });
      for (const [run, line] of h.placement) ul.append(el("li", { text: run + ": " + line }));
      out.append(ul);
    }
    if (h.flips.length) {
      out.append(el("h3", { text: "cells that flipped (newest first)" }));
      const list = el("ul");
      for (const [run, i, kind, key, before, after] of h.flips) {
        const link = el("a", { href: "#", class: "cell-link", text: key });
        link.addEventListener("click", (ev) => { ev.preventDefault(); if (i >= 0) openPanel(i); });
        list.append(el("li", {}, run + " " + kind + " ", link, ": " + before + " → " + after));
      }
      out.append(list);
    }
  }

  // ---- overview and signatures links; start -----------------------------------------------
  for (const td of document.querySelectorAll("td.ov[data-target]")) {
    td.addEventListener("click", () => {
      const [p, tk, q] = td.dataset.target.split("|");
      reset(); setFilter("platform", p); setFilter("toolkit", tk); setFilter("quant", q);
      render(); $("grid-section").scrollIntoView();
    });
  }
  for (const a of document.querySelectorAll("a.sig-link")) {
    a.addEventListener("click", () => { reset(); setFilter("signature", a.dataset.signature); render(); });
  }
  render();
  const wanted = decodeURIComponent((location.hash.match(/^#cell=(.+)$/) || [])[1] || "");
  if (wanted) { const i = C.findIndex((_, k) => cellId(k) === wanted); if (i >= 0) openPanel(i); }
})();

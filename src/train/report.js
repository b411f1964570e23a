// Draws the charts of a parallama run report from the JSON in #report-data: every
// <figure class="chart" data-chart="ID"> gets the chart of that id, as an SVG sized to its box,
// with the values under the pointer (mouse or touch) shown beside it. Redrawn when the window
// changes size. When done, <body data-charts="DRAWN/TOTAL"> says how many charts found their data;
// any error is listed in #report-status.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf"];
  const errors = [];
  window.addEventListener("error", (e) => { errors.push(String(e.message)); showStatus(); });

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    if (a >= 1000) return Math.round(v).toLocaleString("en");
    return String(Number(v.toPrecision(4)));
  }
  // About n round tick values from lo to hi.
  function ticks(lo, hi, n) {
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
      out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    return out;
  }
  function bounds(values, zero) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) if (v !== null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo === Infinity) return null;
    if (zero) lo = Math.min(lo, 0);
    if (hi === lo) { hi += Math.abs(hi) * 0.05 || 1; lo -= zero && lo === 0 ? 0 : Math.abs(lo) * 0.05 || 1; }
    return [lo, hi];
  }

  function frame(box, spec, xb, yb, xLabels) {
    const width = Math.max(240, box.clientWidth), height = Math.round(Math.min(320, Math.max(200, width * 0.5)));
    const m = { l: 58, r: 12, t: 10, b: 38 };
    const svg = el("svg", { width: width, height: height, viewBox: `0 0 ${width} ${height}`,
                            role: "img", "aria-label": spec.title });
    const pw = width - m.l - m.r, ph = height - m.t - m.b;
    const X = (x) => m.l + (pw * (x - xb[0])) / (xb[1] - xb[0]);
    const Y = (y) => m.t + ph - (ph * (y - yb[0])) / (yb[1] - yb[0]);
    for (const t of ticks(yb[0], yb[1], Math.max(3, Math.round(ph / 50)))) {
      el("line", { x1: m.l, x2: m.l + pw, y1: Y(t), y2: Y(t), class: "grid" }, svg);
      el("text", { x: m.l - 6, y: Y(t) + 4, "text-anchor": "end" }, svg).textContent = fmt(t);
    }
    if (!xLabels)
      for (const t of ticks(xb[0], xb[1], Math.max(2, Math.round(pw / 90))))
        el("text", { x: X(t), y: m.t + ph + 16, "text-anchor": "middle" }, svg).textContent = fmt(t);
    el("line", { x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph, class: "axis" }, svg);
    el("line", { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph, class: "axis" }, svg);
    el("text", { x: m.l + pw / 2, y: height - 4, "text-anchor": "middle", class: "label" }, svg)
      .textContent = spec.x_label;
    el("text", { x: 12, y: m.t + ph / 2, "text-anchor": "middle", class: "label",
                 transform: `rotate(-90 12 ${m.t + ph / 2})` }, svg).textContent = spec.y_label;
    return { svg, X, Y, m, pw, ph };
  }

  function legend(fig, spec) {
    const div = document.createElement("div");
    div.className = "legend";
    spec.series.forEach((s, i) => {
      const span = document.createElement("span");
      span.innerHTML = `<i style="background:${COLORS[i % COLORS.length]}"></i>`;
      span.appendChild(document.createTextNode(s.name));
      div.appendChild(span);
    });
    return div;
  }

  function lineChart(box, spec, tip) {
    const xs = [].concat(...spec.series.map((s) => s.x)), ys = [].concat(...spec.series.map((s) => s.y));
    const xb = bounds(xs, false), yb = bounds(ys, !!spec.from_zero);
    if (!xb || !yb) throw new Error(`chart ${spec.id}: no values`);
    const f = frame(box, spec, xb, yb, null);
    spec.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      let d = "";
      s.x.forEach((x, k) => {
        if (s.y[k] === null || !isFinite(s.y[k])) return;
        d += `${d ? "L" : "M"}${f.X(x).toFixed(1)},${f.Y(s.y[k]).toFixed(1)}`;
      });
      el("path", { d: d, fill: "none", stroke: color, "stroke-width": 1.6 }, f.svg);
      if (s.dots) s.x.forEach((x, k) => el("circle", { cx: f.X(x), cy: f.Y(s.y[k]), r: 3, fill: color }, f.svg));
    });
    const rule = el("line", { y1: f.m.t, y2: f.m.t + f.ph, class: "rule", visibility: "hidden" }, f.svg);
    f.svg.addEventListener("pointermove", (ev) => {
      const r = f.svg.getBoundingClientRect();
      const x = xb[0] + ((ev.clientX - r.left - f.m.l) / f.pw) * (xb[1] - xb[0]);
      let at = null, lines = [];
      spec.series.forEach((s) => {
        let best = -1;
        s.x.forEach((sx, k) => { if (best < 0 || Math.abs(sx - x) < Math.abs(s.x[best] - x)) best = k; });
        if (best < 0) return;
        if (at === null || Math.abs(s.x[best] - x) < Math.abs(at - x)) at = s.x[best];
        lines.push(`${s.name}: ${fmt(s.y[best])}${spec.unit ? " " + spec.unit : ""}` +
                   (s.x[best] !== at ? ` (at ${fmt(s.x[best])})` : ""));
      });
      rule.setAttribute("x1", f.X(at)); rule.setAttribute("x2", f.X(at));
      rule.setAttribute("visibility", "visible");
      tip(ev, `${spec.x_label} ${fmt(at)}`, lines);
    });
    f.svg.addEventListener("pointerleave", () => { rule.setAttribute("visibility", "hidden"); tip(null); });
    return f.svg;
  }

  function barChart(box, spec, tip) {
    const n = spec.categories.length, k = spec.series.length;
    const total = spec.stacked ? spec.categories.map((_, c) => spec.series.reduce((a, s) => a + s.y[c], 0)) : [];
    const yb = bounds(spec.stacked ? total : [].concat(...spec.series.map((s) => s.y)), true);
    if (!n || !yb) throw new Error(`chart ${spec.id}: no values`);
    const f = frame(box, spec, [0, n], yb, spec.categories);
    const slot = f.pw / n, bw = spec.stacked ? slot * 0.7 : (slot * 0.8) / k;
    spec.categories.forEach((cat, c) => {
      let base = 0;
      spec.series.forEach((s, i) => {
        const v = s.y[c] || 0, x = f.m.l + c * slot + slot * (spec.stacked ? 0.15 : 0.1) + (spec.stacked ? 0 : i * bw);
        const top = f.Y(base + v), bottom = f.Y(base);
        const r = el("rect", { x: x, y: top, width: Math.max(1, bw - 1), height: Math.max(0, bottom - top),
                               fill: COLORS[i % COLORS.length] }, f.svg);
        r.addEventListener("pointermove", (ev) =>
          tip(ev, cat, spec.series.map((t) => `${t.name}: ${fmt(t.y[c])}${spec.unit ? " " + spec.unit : ""}`)));
        if (spec.stacked) base += v;
      });
      if (n <= 24 || c % Math.ceil(n / 24) === 0)
        el("text", { x: f.m.l + (c + 0.5) * slot, y: f.m.t + f.ph + 16, "text-anchor": "middle" }, f.svg).textContent = cat;
    });
    f.svg.addEventListener("pointerleave", () => tip(null));
    return f.svg;
  }

  function showStatus() {
    const box = document.getElementById("report-status");
    if (!box) return;
    box.hidden = errors.length === 0;
    box.textContent = errors.join("\n");
    document.body.setAttribute("data-errors", String(errors.length));
  }

  function draw(data) {
    const tipBox = document.getElementById("report-tip");
    const tip = (ev, head, lines) => {
      if (!ev) { tipBox.hidden = true; return; }
      tipBox.innerHTML = "";
      const b = document.createElement("b"); b.textContent = head; tipBox.appendChild(b);
      for (const l of lines) { const d = document.createElement("div"); d.textContent = l; tipBox.appendChild(d); }
      tipBox.hidden = false;
      const w = tipBox.offsetWidth, x = ev.clientX + 14 + w > window.innerWidth ? ev.clientX - 14 - w : ev.clientX + 14;
      tipBox.style.left = `${Math.max(4, x) + window.scrollX}px`;
      tipBox.style.top = `${ev.clientY + 14 + window.scrollY}px`;
    };
    const byId = {};
    for (const c of data.charts || []) byId[c.id] = c;
    const figures = document.querySelectorAll("figure.chart");
    let drawn = 0;
    figures.forEach((fig) => {
      const spec = byId[fig.dataset.chart];
      const box = fig.querySelector(".plot");
      box.innerHTML = "";
      try {
        if (!spec) throw new Error(`chart ${fig.dataset.chart}: no data in the report`);
        const svg = spec.kind === "bar" ? barChart(box, spec, tip) : lineChart(box, spec, tip);
        box.appendChild(svg);
        const old = fig.querySelector(".legend");
        if (old) old.remove();
        if (spec.series.length > 1) fig.insertBefore(legend(fig, spec), box);
        ++drawn;
      } catch (e) {
        errors.push(String(e.message));
      }
    });
    document.body.setAttribute("data-charts", `${drawn}/${figures.length}`);
    showStatus();
  }

  let data = null;
  try {
    data = JSON.parse(document.getElementById("report-data").textContent);
  } catch (e) {
    errors.push(`the report's data cannot be read: ${e.message}`);
    document.body.setAttribute("data-charts", `0/${document.querySelectorAll("figure.chart").length}`);
    showStatus();
    return;
  }
  draw(data);
  let pending = 0;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => { errors.length = 0; draw(data); }, 120);
  });
})();

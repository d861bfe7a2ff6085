// Small inline-SVG line charts: one series over epochs, with marked epochs and horizontal lines.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function fmt(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "n/a";
  const a = Math.abs(v);
  return a !== 0 && (a < 0.01 || a >= 1e4) ? v.toExponential(1) : v.toFixed(a < 1 ? 3 : 2);
}

/**
 * A chart of one or more series over epochs: `series` is [{name, color, points: [[step,
 * value|null], ...]}] (one series: `lineChart`).
 *
 * Options: title; lines: [{value, label, kind: "chance" | "threshold"}]; marks: [{step, label,
 * kind: "alarm" | "current"}]; width, height. Lines, not dots, past `DOTS_UP_TO` points a series
 * (200 epochs of dots are a wall); hovering shows every series' value at the nearest epoch.
 */
export function seriesChart(series, { title, lines = [], marks = [], width = 190, height = 96 } = {}) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.appendChild(caption);
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" }, figure);
  const all = series.flatMap((s) => s.points);
  const finite = all.filter((p) => p[1] !== null && Number.isFinite(p[1]));
  const steps = all.map((p) => p[0]).concat(marks.map((m) => m.step));
  const values = finite.map((p) => p[1]).concat(lines.map((l) => l.value));
  const left = 44, right = 8, top = 6, bottom = 18;
  if (!finite.length) {
    el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, svg).textContent =
      "no finite values";
    return figure;
  }
  let x0 = Math.min(...steps), x1 = Math.max(...steps);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  let y0 = Math.min(...values), y1 = Math.max(...values);
  if (y0 === y1) { y0 -= 0.5 * (Math.abs(y0) || 1); y1 += 0.5 * (Math.abs(y1) || 1); }
  const pad = 0.06 * (y1 - y0);
  y0 -= pad; y1 += pad;
  const X = (s) => left + ((s - x0) / (x1 - x0)) * (width - left - right);
  const Y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (height - top - bottom);
  el("rect", { x: left, y: top, width: width - left - right, height: height - top - bottom, class: "frame" }, svg);
  // Enough decimals that the two axis labels differ (a confidence of 0.9996..1.0 is not "1.000").
  const span = y1 - y0 - 2 * pad;
  const digits = Math.min(6, Math.max(2, Math.ceil(-Math.log10(span || 1)) + 1));
  const tick = (v) => (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? fmt(v) : v.toFixed(digits));
  for (const [v, anchor] of [[y1 - pad, "hi"], [y0 + pad, "lo"]]) {
    el("text", { x: left - 4, y: Y(v) + 4, "text-anchor": "end", class: "tick " + anchor }, svg).textContent = tick(v);
  }
  for (const s of [Math.min(...steps), Math.max(...steps)]) {
    el("text", { x: X(s), y: height - 4, "text-anchor": "middle", class: "tick" }, svg).textContent = String(s);
  }
  for (const line of lines) {
    el("line", { x1: left, x2: width - right, y1: Y(line.value), y2: Y(line.value), class: "hline " + line.kind }, svg);
    el("text", { x: width - right - 2, y: Y(line.value) - 3, "text-anchor": "end", class: "hlabel " + line.kind }, svg)
      .textContent = `${line.label} ${fmt(line.value)}`;
  }
  for (const mark of marks) {
    el("line", { x1: X(mark.step), x2: X(mark.step), y1: top, y2: height - bottom, class: "vmark " + mark.kind }, svg);
    if (mark.label) {
      el("text", { x: X(mark.step) + 3, y: top + 10, class: "vlabel " + mark.kind }, svg).textContent = mark.label;
    }
  }
  for (const { name, color, points } of series) {
    const style = color ? `stroke: ${color}; fill: ${color}` : null;
    const dots = points.length <= DOTS_UP_TO;
    // One polyline per stretch of finite values, so a NaN epoch shows as a gap.
    let stretch = [];
    const flush = () => {
      if (stretch.length > 1) {
        const line = el("polyline", { points: stretch.join(" "), class: "series" }, svg);
        if (style) line.setAttribute("style", `stroke: ${color}`);
      }
      stretch = [];
    };
    for (const [s, v] of points) {
      if (v === null || !Number.isFinite(v)) { flush(); continue; }
      stretch.push(`${X(s).toFixed(1)},${Y(v).toFixed(1)}`);
      if (dots) {
        const dot = el("circle", { cx: X(s), cy: Y(v), r: 2.2, class: "dot" }, svg);
        if (style) dot.setAttribute("style", style);
        el("title", {}, dot).textContent = `${name ? name + ", " : ""}epoch ${s}: ${fmt(v)}`;
      }
    }
    flush();
  }
  hover(figure, svg, series, { X, left, right, top, bottom, width, height, x0, x1 });
  return figure;
}

/** Most points a series shows as dots as well as a line. */
export const DOTS_UP_TO = 40;

/** A vertical rule following the pointer and a line of text: each series' value there. */
function hover(figure, svg, series, { X, left, right, top, bottom, width, height, x0, x1 }) {
  const rule = el("line", { x1: 0, x2: 0, y1: top, y2: height - bottom, class: "hover", visibility: "hidden" }, svg);
  const readout = document.createElement("div");
  readout.className = "readout";
  figure.appendChild(readout);
  const stepsOf = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const maps = series.map((s) => new Map(s.points));
  svg.addEventListener("mousemove", (event) => {
    const box = svg.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * width;
    const target = x0 + ((x - left) / (width - left - right)) * (x1 - x0);
    let best = stepsOf[0];
    for (const s of stepsOf) if (Math.abs(s - target) < Math.abs(best - target)) best = s;
    rule.setAttribute("x1", X(best));
    rule.setAttribute("x2", X(best));
    rule.setAttribute("visibility", "visible");
    readout.textContent = `epoch ${best}: ` + series.map((s, i) => `${series.length > 1 ? s.name + " " : ""}${fmt(maps[i].get(best))}`).join(" · ");
  });
  svg.addEventListener("mouseleave", () => {
    rule.setAttribute("visibility", "hidden");
    readout.textContent = "";
  });
}

/** A chart of one series: `points` is [[step, value|null], ...]; options as `seriesChart`. */
export function lineChart(points, options = {}) {
  return seriesChart([{ name: "", color: null, points }], options);
}

export { fmt };

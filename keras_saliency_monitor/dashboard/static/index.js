// The SALIENCY dashboard's page. TensorBoard loads this module in an iframe whose base URL is
// the plugin's route prefix (data/plugin/saliency/) and calls render(). Everything it fetches is
// a relative URL of this plugin; it loads nothing from elsewhere.

import { lineChart, fmt } from "./chart.js";
import { decodePng, drawOverlay, greyOf, heatLayer, probeCanvases } from "./paint.js";

const state = {
  runs: [],
  shown: new Set(),
  data: new Map(), // run -> {index, probes, maps: Map(step -> Promise<Uint8Array>), masks}
  luts: {},
  cmap: "inferno",
  clip: 99,
  opacity: 0.8,
  sigma: 0, // Gaussian smoothing in pixels of the probe images (the callback's `smoothing`)
  adopted: false, // display options taken from the first run's probe set (its grid's own)
  tile: 88,
  columns: -1, // -1: as many as fit the width (first and last always among them); 0: all
  fitColumns: 8,
  page: 0,
  order: "probe",
  classFilter: "",
  onlyWrong: false,
  layout: "side",
  showMask: true,
  detail: null,
};

const ORDERS = {
  probe: "probe number",
  wrong: "misclassified first (last epoch)",
  focus: "lowest focus (last epoch)",
  change: "largest change since previous epoch (last epoch)",
  class: "by true class",
};

// ------------------------------------------------------------------------------------ helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

async function getJson(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function getPng(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return decodePng(response);
}

const q = (params) => new URLSearchParams(params).toString();

function status(text, isError = false) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function className(probeSet, c) {
  if (c === null || c === undefined) return "?";
  const names = probeSet && probeSet.class_names;
  return names && c >= 0 && c < names.length ? names[c] : String(c);
}

function lastInfo(run) {
  const { index } = state.data.get(run);
  const steps = index.steps;
  return steps.length ? index.epochs[String(steps[steps.length - 1])] : null;
}

function isWrong(index, info, k) {
  const label = index.probe_set && index.probe_set.probes[k] ? index.probe_set.probes[k].label : null;
  return label !== null && label !== undefined && info && !index.probe_set.regression && info.classes[k] !== label;
}

// ------------------------------------------------------------------------------ epoch paging

/** Columns shown for `steps`: the first and last always, the middle page by page. */
export function visibleSteps(steps, page, columns) {
  if (!columns || steps.length <= columns) return steps.slice();
  const middle = steps.slice(1, -1);
  const per = Math.max(1, columns - 2);
  const p = Math.min(page, Math.ceil(middle.length / per) - 1);
  return [steps[0], ...middle.slice(p * per, (p + 1) * per), steps[steps.length - 1]];
}

/** The columns per run actually used: "fit" is resolved from the page width. */
function columns() {
  return state.columns === -1 ? state.fitColumns : state.columns;
}

function fitColumns() {
  const width = document.getElementById("runs").clientWidth || window.innerWidth;
  const runs = Math.max(1, [...state.shown].filter((r) => state.data.has(r)).length);
  const per = state.layout === "side" ? (width - 20 * (runs - 1)) / runs : width;
  // 110 px for the probe captions, 8 px of spacing per column.
  return Math.max(3, Math.floor((per - 110) / (state.tile + 8)));
}

function pageCount(steps, columns) {
  if (!columns || steps.length <= columns) return 1;
  return Math.ceil((steps.length - 2) / Math.max(1, columns - 2));
}

function maxPages() {
  let n = 1;
  for (const run of state.shown) {
    const d = state.data.get(run);
    if (d) n = Math.max(n, pageCount(d.index.steps, columns()));
  }
  return n;
}

function goToEpoch(step) {
  for (const run of state.shown) {
    const steps = state.data.get(run).index.steps;
    const i = steps.indexOf(step);
    const c = columns();
    if (i > 0 && i < steps.length - 1 && c && steps.length > c) {
      state.page = Math.floor((i - 1) / Math.max(1, c - 2));
      return true;
    }
    if (i >= 0) return true; // first, last, or everything on one page: always visible
  }
  return false;
}

// ------------------------------------------------------------------------------- data access

function mapsOf(run, step) {
  const d = state.data.get(run);
  if (!d.maps.has(step)) {
    const promise = getPng("maps?" + q({ run, step })).then(greyOf);
    promise.catch(() => d.maps.delete(step)); // retried on the next paint
    d.maps.set(step, promise);
  }
  return d.maps.get(step);
}

/** Fetches the maps of several steps of a run (maps_batch, 32 steps a request) into the cache. */
function prefetchMaps(run, steps) {
  const d = state.data.get(run);
  const wanted = steps.filter((s) => !d.maps.has(s));
  for (let i = 0; i < wanted.length; i += 32) fetchBatch(run, d, wanted.slice(i, i + 32));
}

function fetchBatch(run, d, wanted) {
  const batch = fetch("maps_batch?" + q({ run, steps: wanted.join(",") })).then(async (response) => {
    if (!response.ok) throw new Error(`maps_batch: HTTP ${response.status}`);
    const buffer = await response.arrayBuffer();
    const length = new DataView(buffer).getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    const blobs = new Map();
    let offset = 4 + length;
    header.steps.forEach((s, i) => {
      blobs.set(s, new Blob([new Uint8Array(buffer, offset, header.sizes[i])], { type: "image/png" }));
      offset += header.sizes[i];
    });
    return blobs;
  });
  for (const s of wanted) {
    const promise = batch.then((blobs) => decodePng(blobs.get(s))).then(greyOf);
    promise.catch(() => d.maps.delete(s)); // retried on the next paint
    d.maps.set(s, promise);
  }
}

async function loadRun(run) {
  performance.mark(`saliency:load ${run}`);
  const [index, images] = await Promise.all([
    getJson("run?" + q({ run })),
    getPng("images?" + q({ run })),
  ]);
  const n = index.probe_set ? index.probe_set.num_probes : 0;
  const old = state.data.get(run);
  state.data.set(run, {
    index,
    probes: probeCanvases(images, n),
    maps: old ? old.maps : new Map(),
    masks: old ? old.masks : null,
  });
  performance.mark(`saliency:loaded ${run}`);
}

/** The run's object masks as one edge canvas per probe (null without masks). */
function masksOf(run) {
  const d = state.data.get(run);
  if (!d.index.has_masks) return Promise.resolve(null);
  if (!d.masks) {
    const n = d.index.probe_set.num_probes;
    d.masks = getPng("masks?" + q({ run })).then((decoded) => maskEdges(decoded, n));
    d.masks.catch(() => { d.masks = null; });
  }
  return d.masks;
}

/** Outline of each probe's mask: pixels inside with a 4-neighbour outside, in cyan. */
function maskEdges(decoded, n) {
  const w = decoded.width;
  const h = Math.floor(decoded.height / n);
  const out = [];
  for (let k = 0; k < n; k++) {
    const inside = (x, y) => x >= 0 && y >= 0 && x < w && y < h && decoded.rgba[4 * ((k * h + y) * w + x)] > 127;
    const edge = new ImageData(w, h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (inside(x, y) && !(inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1))) {
          edge.data.set([0, 229, 255, 255], 4 * (y * w + x));
        }
      }
    }
    const canvas = new OffscreenCanvas(w, h);
    canvas.getContext("2d").putImageData(edge, 0, 0);
    out.push(canvas);
  }
  return out;
}

// ---------------------------------------------------------------------------------- painting

function settingsKey() {
  return `${state.cmap}|${state.clip}|${state.sigma}`;
}

/** Smoothing in map pixels: stored maps may be smaller than the images (downsampled). */
function mapSigma(ps, info) {
  return ps && ps.width ? (state.sigma * info.map_width) / ps.width : state.sigma;
}

/** Starts from the display options the monitor itself used for the grid (probe_set.render). */
function adoptRenderOptions(index) {
  const r = index.probe_set && index.probe_set.render;
  if (state.adopted || !r) return false;
  state.adopted = true;
  if (r.cmap in state.luts) state.cmap = r.cmap;
  if (r.clip_percentile > 0 && r.clip_percentile <= 100) state.clip = r.clip_percentile;
  if (r.smoothing >= 0) state.sigma = r.smoothing;
  if (r.alpha >= 0 && r.alpha <= 1) state.opacity = r.alpha;
  return true;
}

async function paintTile(canvas) {
  const run = canvas.dataset.run;
  const step = Number(canvas.dataset.step);
  const k = Number(canvas.dataset.probe);
  const d = state.data.get(run);
  if (!d) return;
  const info = d.index.epochs[String(step)];
  const key = settingsKey();
  if (canvas._key !== key) {
    const grey = await mapsOf(run, step);
    canvas._layer = heatLayer(grey, info, k, { lut: state.luts[state.cmap], clip: state.clip, sigma: mapSigma(d.index.probe_set, info) });
    canvas._key = key;
  }
  drawOverlay(canvas, d.probes[k], canvas._layer, state.opacity);
  canvas.dataset.drawn = key + "|" + state.opacity;
  if (!performance.getEntriesByName("saliency:first-tile").length) performance.mark("saliency:first-tile");
}

let paintGeneration = 0;

async function paintAll() {
  const canvases = [...document.querySelectorAll("canvas.tile")];
  const needed = new Map();
  for (const c of canvases) {
    if (!needed.has(c.dataset.run)) needed.set(c.dataset.run, new Set());
    needed.get(c.dataset.run).add(Number(c.dataset.step));
  }
  for (const [run, steps] of needed) prefetchMaps(run, [...steps]);
  const generation = ++paintGeneration;
  document.body.dataset.painted = "0";
  try {
    await Promise.all(canvases.map(paintTile));
    // Only the latest repaint says "done": an older one may finish after a newer one started.
    if (generation === paintGeneration) document.body.dataset.painted = "1";
    status("");
  } catch (err) {
    status(`Could not draw the maps: ${err.message}`, true);
  }
  if (state.detail) paintDetail();
}

// ---------------------------------------------------------------------------------- building

function orderedProbes(run) {
  const { index } = state.data.get(run);
  const ps = index.probe_set;
  const info = lastInfo(run);
  let probes = ps.probes.map((p) => p.probe);
  if (state.classFilter !== "") probes = probes.filter((k) => String(ps.probes[k].label) === state.classFilter);
  if (state.onlyWrong) probes = probes.filter((k) => isWrong(index, info, k));
  const metric = (name) => (info && info.per_probe && info.per_probe[name]) || null;
  const ascending = (values) => (a, b) => {
    const va = values[a], vb = values[b];
    if (va === null && vb === null) return a - b;
    if (va === null) return 1;
    if (vb === null) return -1;
    return va - vb || a - b;
  };
  if (state.order === "wrong") {
    probes.sort((a, b) => Number(isWrong(index, info, b)) - Number(isWrong(index, info, a)) || a - b);
  } else if (state.order === "focus" && metric("focus")) {
    probes.sort(ascending(metric("focus")));
  } else if (state.order === "change" && metric("stability")) {
    // stability = rank correlation with the previous epoch's map: lowest = largest change.
    probes.sort(ascending(metric("stability")));
  } else if (state.order === "class") {
    probes.sort((a, b) => (ps.probes[a].label ?? -1) - (ps.probes[b].label ?? -1) || a - b);
  }
  return probes;
}

function orderNote(run) {
  const info = lastInfo(run);
  const has = (name) => info && info.per_probe && info.per_probe[name];
  if (state.order === "focus" && !has("focus")) return "No focus numbers in this run (it has no object masks): probes in number order.";
  if (state.order === "change" && !has("stability")) return "No change numbers yet (one logged epoch): probes in number order.";
  return "";
}

function tileCaption(index, info, k) {
  const ps = index.probe_set;
  if (!info) return h("div", { class: "tcap", text: "" });
  let text;
  if (ps.regression) {
    text = `out ${fmt(info.outputs ? info.outputs[k] : null)}`;
  } else {
    const conf = info.confidences ? ` ${info.confidences[k].toFixed(2)}` : "";
    text = `${className(ps, info.classes[k])}${conf}`;
  }
  const wrong = isWrong(index, info, k);
  const cap = h("div", { class: "tcap" + (wrong ? " wrong" : ""), text });
  cap.title = `epoch ${info.step}: explained class ${ps.regression ? "(regression)" : className(ps, info.classes[k])}` +
    (info.confidences ? `, confidence ${info.confidences[k].toFixed(3)}` : "") +
    (wrong ? " (misclassified)" : "");
  return cap;
}

function buildFilmstrip(run) {
  const d = state.data.get(run);
  const { index } = d;
  const ps = index.probe_set;
  const steps = visibleSteps(index.steps, state.page, columns());
  const all = index.steps;
  const head = h("tr", {}, h("th", { class: "corner", text: "probe" }));
  steps.forEach((s, i) => {
    const tags = [];
    if (s === all[0]) tags.push("first");
    if (s === all[all.length - 1]) tags.push("last");
    const gap = i > 0 && all.indexOf(s) - all.indexOf(steps[i - 1]) > 1;
    const th = h("th", { class: "epoch" + (gap ? " gap" : ""), "data-step": s },
      h("span", { class: "ep", text: `epoch ${s}` }),
      tags.length ? h("span", { class: "eptag", text: tags.join(", ") }) : null);
    if (index.alarm && index.alarm.step === s) th.append(h("span", { class: "alarmtag", text: "alarm" }));
    head.append(th);
  });
  const body = h("tbody");
  for (const k of orderedProbes(run)) {
    const p = ps.probes[k];
    const label = p.label === null || p.label === undefined ? null : (p.label_name ?? className(ps, p.label));
    const row = h("tr", { "data-probe": k },
      h("th", { class: "caption", scope: "row" },
        h("div", { class: "pname", text: `probe ${k}` }),
        label !== null ? h("div", { class: "truth", text: `true: ${label}` }) : null,
        h("div", { class: "pindex", text: `data index ${p.index}` })));
    steps.forEach((s, i) => {
      const info = index.epochs[String(s)];
      const gap = i > 0 && all.indexOf(s) - all.indexOf(steps[i - 1]) > 1;
      const canvas = h("canvas", {
        class: "tile", "data-run": run, "data-step": s, "data-probe": k,
        width: Math.round(state.tile * devicePixelRatio), height: Math.round(state.tile * devicePixelRatio),
        title: `${run} · probe ${k} · epoch ${s}: click for details`,
      });
      canvas.style.width = canvas.style.height = `${state.tile}px`;
      canvas.tabIndex = 0; // reachable with the keyboard: Enter or Space opens the detail
      canvas.addEventListener("click", () => openDetail(run, k, s));
      canvas.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openDetail(run, k, s); }
      });
      const cell = h("td", { class: "cell" + (gap ? " gap" : "") }, h("div", { class: "tilebox" }, canvas));
      if (info && info.flat && info.flat[k]) cell.firstChild.append(h("span", { class: "badge flat", text: "flat map", title: "This map is nearly constant: its picture carries no location." }));
      if (info && info.non_finite && info.non_finite[k]) cell.firstChild.append(h("span", { class: "badge nonfinite", text: "non-finite", title: "The map held NaN or infinity." }));
      cell.append(tileCaption(index, info, k));
      row.append(cell);
    });
    body.append(row);
  }
  return h("table", { class: "filmstrip" }, h("thead", {}, head), body);
}

/** Chance and alarm-threshold lines of a number, from the probe set's `chance` and `thresholds`
 * maps (name -> value; older logs: focus_lift's chance 1.0 and `alarm_threshold`). */
function referenceLines(ps, name) {
  const lines = [];
  const chance = (ps.chance || {})[name] ?? (name === "focus_lift" ? 1.0 : null);
  if (chance !== null && chance !== undefined) lines.push({ value: chance, label: "chance", kind: "chance" });
  const threshold = (ps.thresholds || {})[name] ?? (name === "focus_lift" ? ps.alarm_threshold : null);
  if (threshold !== null && threshold !== undefined) {
    if (lines.length && lines[0].value === threshold) {
      // One line, one label: two labels at the same height would overprint each other.
      lines[0] = { value: threshold, label: "chance = alarm threshold", kind: "threshold" };
    } else {
      lines.push({ value: threshold, label: "alarm threshold", kind: "threshold" });
    }
  }
  return lines;
}

function runCharts(run) {
  const { index } = state.data.get(run);
  const ps = index.probe_set || {};
  const box = h("div", { class: "charts" });
  const marks = index.alarm ? [{ step: index.alarm.step, label: "alarm", kind: "alarm" }] : [];
  for (const [name, series] of Object.entries(index.scalars || {})) {
    box.append(lineChart(series, { title: `saliency/${name}`, lines: referenceLines(ps, name), marks }));
  }
  return box;
}

function buildRun(run) {
  const d = state.data.get(run);
  const { index } = d;
  const ps = index.probe_set;
  const section = h("section", { class: "run", "data-run": run });
  const n = index.steps.length;
  section.append(h("h2", {}, h("span", { class: "runname", text: run }),
    h("span", { class: "runmeta", text: ps ? ` · ${ps.num_probes} probes · ${n} logged epoch${n === 1 ? "" : "s"} (${index.steps[0]}-${index.steps[n - 1]}) · ${ps.method}` : "" })));
  if (index.alarm) section.append(h("div", { class: "alarm", text: index.alarm.text }));
  if (!ps || !n) {
    section.append(h("p", { class: "note", text: "No saliency maps logged in this run yet." }));
    return section;
  }
  section.append(runCharts(run));
  const note = orderNote(run);
  if (note) section.append(h("p", { class: "note", text: note }));
  section.append(h("div", { class: "scroller" }, buildFilmstrip(run)));
  return section;
}

function buildAll() {
  const box = document.getElementById("runs");
  box.className = "runs " + state.layout;
  state.fitColumns = fitColumns();
  box.replaceChildren(...[...state.runs].filter((r) => state.shown.has(r) && state.data.has(r)).map(buildRun));
  updatePager();
  updateClassFilter();
  performance.mark("saliency:built");
  return paintAll();
}

function updatePager() {
  const pages = maxPages();
  state.page = Math.min(state.page, pages - 1);
  const slider = document.getElementById("page");
  slider.max = String(pages - 1);
  slider.value = String(state.page);
  slider.disabled = pages === 1;
  document.getElementById("prev").disabled = state.page === 0;
  document.getElementById("next").disabled = state.page >= pages - 1;
  document.getElementById("pagetext").textContent = `page ${state.page + 1} of ${pages}`;
}

function updateClassFilter() {
  const select = document.getElementById("classfilter");
  const classes = new Map();
  for (const run of state.shown) {
    const d = state.data.get(run);
    const ps = d && d.index.probe_set;
    if (!ps) continue;
    for (const p of ps.probes) if (p.label !== null && p.label !== undefined) classes.set(String(p.label), p.label_name ?? className(ps, p.label));
  }
  const current = state.classFilter;
  select.replaceChildren(h("option", { value: "", text: "all classes" }),
    ...[...classes].sort((a, b) => Number(a[0]) - Number(b[0])).map(([v, name]) => h("option", { value: v, text: name })));
  select.value = classes.has(current) ? current : "";
  state.classFilter = select.value;
}

// ------------------------------------------------------------------------------ probe detail

function openDetail(run, k, step) {
  state.detail = { run, k, step };
  const dialog = document.getElementById("detail");
  dialog.hidden = false;
  buildDetail();
}

function closeDetail() {
  state.detail = null;
  document.getElementById("detail").hidden = true;
}

function buildDetail() {
  const { run, k, step } = state.detail;
  const { index } = state.data.get(run);
  const ps = index.probe_set;
  const p = ps.probes[k];
  const panel = document.getElementById("detailbody");
  const label = p.label === null || p.label === undefined ? "" : ` · true: ${p.label_name ?? className(ps, p.label)}`;
  const steps = index.steps;
  const slider = h("input", { type: "range", id: "detailstep", min: 0, max: steps.length - 1, value: steps.indexOf(step), "aria-label": "epoch" });
  slider.addEventListener("input", () => { state.detail.step = steps[Number(slider.value)]; paintDetail(); });
  const maskBox = h("input", { type: "checkbox", id: "detailmask", checked: state.showMask });
  maskBox.addEventListener("change", () => { state.showMask = maskBox.checked; paintDetail(); });
  const size = 240;
  const mk = (id) => {
    const c = h("canvas", { id, width: Math.round(size * devicePixelRatio), height: Math.round(size * devicePixelRatio) });
    c.style.width = c.style.height = `${size}px`;
    return c;
  };
  const pictures = h("div", { class: "pictures" },
    h("figure", {}, mk("detailimage"), h("figcaption", { text: "image" })),
    h("figure", {}, h("div", { class: "tilebox" }, mk("detailoverlay")), h("figcaption", { id: "detailcap" })));
  // The probe's own numbers over the epochs: confidence plus every per-probe metric logged.
  const names = new Set();
  for (const s of steps) for (const name of Object.keys(index.epochs[String(s)].per_probe || {})) names.add(name);
  const charts = h("div", { class: "charts", id: "detailcharts" });
  const table = h("table", { class: "numbers" });
  const cols = ["epoch", ps.regression ? "output" : "explained class", ...(ps.regression ? [] : ["confidence"]), "flat", ...names];
  table.append(h("thead", {}, h("tr", {}, ...cols.map((c) => h("th", { text: c })))));
  const tb = h("tbody");
  for (const s of steps) {
    const info = index.epochs[String(s)];
    const cells = [String(s),
      ps.regression ? fmt(info.outputs ? info.outputs[k] : null) : className(ps, info.classes[k]),
      ...(ps.regression ? [] : [info.confidences ? info.confidences[k].toFixed(3) : "n/a"]),
      info.flat && info.flat[k] ? "flat map" : "",
      ...[...names].map((n) => fmt(info.per_probe && info.per_probe[n] ? info.per_probe[n][k] : null))];
    tb.append(h("tr", { "data-step": s, class: isWrong(index, info, k) ? "wrong" : "" }, ...cells.map((c) => h("td", { text: c }))));
  }
  table.append(tb);
  panel.replaceChildren(
    h("h2", {}, h("span", { text: `${run} · probe ${k}${label} · data index ${p.index}` }),
      h("button", { class: "close", text: "close", onclick: closeDetail, "aria-label": "close probe detail" })),
    h("div", { class: "detailnav" },
      index.has_masks ? control("object mask", maskBox) : null,
      h("button", { text: "◀", "aria-label": "previous epoch", onclick: () => stepDetail(-1) }),
      slider,
      h("button", { text: "▶", "aria-label": "next epoch", onclick: () => stepDetail(1) }),
      h("span", { id: "detailepoch" })),
    pictures, charts, h("div", { class: "tablebox" }, table));
  panel.dataset.names = JSON.stringify([...names]);
  paintDetail();
}

function stepDetail(delta) {
  const steps = state.data.get(state.detail.run).index.steps;
  const i = Math.max(0, Math.min(steps.length - 1, steps.indexOf(state.detail.step) + delta));
  state.detail.step = steps[i];
  document.getElementById("detailstep").value = String(i);
  paintDetail();
}

async function paintDetail() {
  const { run, k, step } = state.detail;
  const panel = document.getElementById("detailbody");
  panel.dataset.painted = "0";
  const d = state.data.get(run);
  const { index } = d;
  const ps = index.probe_set;
  const info = index.epochs[String(step)];
  document.getElementById("detailepoch").textContent = `epoch ${step}`;
  const image = document.getElementById("detailimage");
  const ctx = image.getContext("2d");
  ctx.imageSmoothingEnabled = false; // the probe's own pixels
  ctx.drawImage(d.probes[k].original, 0, 0, image.width, image.height);
  const conf = !ps.regression && info.confidences ? ` (confidence ${info.confidences[k].toFixed(2)})` : "";
  const what = ps.regression ? `output ${fmt(info.outputs ? info.outputs[k] : null)}` : `explained: ${className(ps, info.classes[k])}${conf}`;
  document.getElementById("detailcap").textContent = `overlay at epoch ${step} · ${what}` + (info.flat && info.flat[k] ? " · flat map" : "");
  const names = JSON.parse(panel.dataset.names || "[]");
  const charts = document.getElementById("detailcharts");
  const steps = index.steps;
  const figs = [];
  if (!ps.regression && steps.some((s) => index.epochs[String(s)].confidences)) {
    figs.push(lineChart(steps.map((s) => [s, index.epochs[String(s)].confidences ? index.epochs[String(s)].confidences[k] : null]),
      { title: "confidence of the explained class", marks: [{ step, kind: "current" }] }));
  }
  for (const name of names) {
    const lines = referenceLines(ps, name);
    const pts = steps.map((s) => { const pp = index.epochs[String(s)].per_probe || {}; return [s, pp[name] ? pp[name][k] : null]; });
    figs.push(lineChart(pts, { title: name, lines, marks: [{ step, kind: "current" }] }));
  }
  charts.replaceChildren(...figs);
  for (const tr of document.querySelectorAll("#detailbody table.numbers tbody tr")) tr.classList.toggle("current", Number(tr.dataset.step) === step);
  const grey = await mapsOf(run, step);
  if (!state.detail || state.detail.step !== step) return; // moved on meanwhile
  const layer = heatLayer(grey, info, k, { lut: state.luts[state.cmap], clip: state.clip, sigma: mapSigma(ps, info) });
  const overlay = document.getElementById("detailoverlay");
  drawOverlay(overlay, d.probes[k], layer, state.opacity);
  const edges = state.showMask ? await masksOf(run) : null;
  if (edges && state.detail && state.detail.step === step) {
    const octx = overlay.getContext("2d");
    octx.imageSmoothingEnabled = false; // crisp outline
    octx.drawImage(edges[k], 0, 0, overlay.width, overlay.height);
  }
  panel.dataset.painted = "1";
}

// ---------------------------------------------------------------------------------- controls

function control(label, input) {
  return h("label", { class: "control" }, h("span", { text: label }), input);
}

function buildToolbar() {
  const cmap = h("select", { id: "cmap" }, ...Object.keys(state.luts).map((n) => h("option", { value: n, text: n })));
  cmap.value = state.cmap;
  cmap.addEventListener("change", () => { state.cmap = cmap.value; paintAll(); });
  const clip = h("input", { id: "clip", type: "number", min: 50, max: 100, step: 0.5, value: state.clip });
  clip.addEventListener("change", () => {
    const v = Number(clip.value);
    if (v > 0 && v <= 100) { state.clip = v; paintAll(); } else clip.value = String(state.clip);
  });
  const opacity = h("input", { id: "opacity", type: "range", min: 0, max: 1, step: 0.05, value: state.opacity });
  opacity.addEventListener("input", () => { state.opacity = Number(opacity.value); paintAll(); });
  const sigmas = [...new Set([0, 0.5, 1, 2, 3, 4, state.sigma])].sort((a, b) => a - b);
  const sigma = h("select", { id: "smoothing", title: "Gaussian sigma, in pixels of the probe images" },
    ...sigmas.map((s) => h("option", { value: s, text: s ? `${s} px` : "none" })));
  sigma.value = String(state.sigma);
  sigma.addEventListener("change", () => { state.sigma = Number(sigma.value); paintAll(); });
  const order = h("select", { id: "order" }, ...Object.entries(ORDERS).map(([v, t]) => h("option", { value: v, text: t })));
  order.addEventListener("change", () => { state.order = order.value; buildAll(); });
  const classFilter = h("select", { id: "classfilter" });
  classFilter.addEventListener("change", () => { state.classFilter = classFilter.value; buildAll(); });
  const onlyWrong = h("input", { id: "onlywrong", type: "checkbox" });
  onlyWrong.addEventListener("change", () => { state.onlyWrong = onlyWrong.checked; buildAll(); });
  const colSelect = h("select", { id: "columns" }, ...[-1, 4, 6, 8, 12, 16, 24, 0].map((c) => h("option", { value: c, text: c === -1 ? "fit width" : c ? String(c) : "all" })));
  colSelect.value = String(state.columns);
  colSelect.addEventListener("change", () => { state.columns = Number(colSelect.value); state.page = 0; buildAll(); });
  const tile = h("select", { id: "tilesize" }, ...[[56, "small"], [88, "medium"], [128, "large"], [192, "huge"]].map(([v, t]) => h("option", { value: v, text: t })));
  tile.value = String(state.tile);
  tile.addEventListener("change", () => { state.tile = Number(tile.value); buildAll(); });
  const layout = h("select", { id: "layout" }, h("option", { value: "side", text: "side by side" }), h("option", { value: "stacked", text: "stacked" }));
  layout.addEventListener("change", () => { state.layout = layout.value; buildAll(); });
  const page = h("input", { id: "page", type: "range", min: 0, max: 0, value: 0, "aria-label": "epoch page" });
  page.addEventListener("input", () => { state.page = Number(page.value); buildAll(); });
  const goto = h("input", { id: "goto", type: "number", min: 0, placeholder: "epoch", "aria-label": "go to epoch" });
  goto.addEventListener("change", () => { if (goToEpoch(Number(goto.value))) buildAll(); });
  const runs = h("div", { class: "runpick", id: "runpick" }, ...state.runs.map((run) => {
    const box = h("input", { type: "checkbox", checked: state.shown.has(run), "data-run": run });
    box.addEventListener("change", async () => {
      if (box.checked) state.shown.add(run); else state.shown.delete(run);
      if (box.checked && !state.data.has(run)) await loadRun(run);
      buildAll();
    });
    return h("label", {}, box, h("span", { text: run }));
  }));
  return h("div", { class: "toolbar" },
    h("div", { class: "group" }, h("strong", { text: "Runs" }), runs),
    h("div", { class: "group" }, h("strong", { text: "Display" }),
      control("colormap", cmap), control("clip percentile", clip), control("opacity", opacity),
      control("smoothing", sigma), control("tile", tile), control("layout", layout)),
    h("div", { class: "group" }, h("strong", { text: "Probes" }),
      control("order", order), control("true class", classFilter), control("misclassified only", onlyWrong)),
    h("div", { class: "group" }, h("strong", { text: "Epochs" }),
      control("columns", colSelect),
      h("button", { id: "prev", text: "◀ earlier", onclick: () => { state.page = Math.max(0, state.page - 1); buildAll(); } }),
      page,
      h("button", { id: "next", text: "later ▶", onclick: () => { state.page = Math.min(maxPages() - 1, state.page + 1); buildAll(); } }),
      h("span", { id: "pagetext" }), control("go to epoch", goto),
      h("button", { id: "reload", text: "reload", onclick: () => refresh() })));
}

// ---------------------------------------------------------------------------------- loading

async function refresh() {
  try {
    const runs = await getJson("runs");
    const known = new Set(state.runs);
    state.runs = runs;
    for (const run of runs) if (!known.has(run)) state.shown.add(run);
    await Promise.all([...state.shown].filter((r) => runs.includes(r)).map(loadRun));
    document.getElementById("toolbar").replaceChildren(buildToolbar());
    if (state.detail) buildDetail(); // its table lists the epochs: new ones included
    await buildAll();
  } catch (err) {
    status(`Could not reload: ${err.message}`, true);
  }
}

/** Reloads when TensorBoard has new epochs or runs (polled; the iframe gets no reload event). */
async function checkForNewData() {
  if (document.hidden) return;
  try {
    const runs = await getJson("runs");
    let changed = runs.some((r) => !state.runs.includes(r));
    for (const run of state.shown) {
      if (changed || !runs.includes(run) || !state.data.has(run)) continue;
      const index = await getJson("run?" + q({ run }));
      changed = JSON.stringify(index.steps) !== JSON.stringify(state.data.get(run).index.steps);
    }
    if (changed) await refresh();
  } catch (err) {
    status(`Could not check for new data: ${err.message}`, true);
  }
}

export async function render() {
  document.head.append(h("link", { rel: "stylesheet", href: new URL("./style.css", import.meta.url).href }));
  document.title = "Saliency";
  document.body.append(
    h("div", { id: "toolbar" }),
    h("div", { id: "status", role: "status", text: "Loading saliency runs..." }),
    h("div", { id: "runs", class: "runs" }),
    h("div", { id: "detail", class: "detail", hidden: true, role: "dialog", "aria-label": "probe detail" },
      h("div", { id: "detailbody", class: "detailbody" })));
  document.getElementById("detail").addEventListener("click", (e) => { if (e.target.id === "detail") closeDetail(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDetail(); });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (state.columns === -1 && fitColumns() !== state.fitColumns) buildAll(); }, 200);
  });
  try {
    const [runs, colormaps] = await Promise.all([getJson("runs"), getJson("colormaps")]);
    for (const name of colormaps.names) state.luts[name] = Uint8Array.from(colormaps.luts[name]);
    state.cmap = colormaps.names[0];
    state.runs = runs;
    if (!runs.length) {
      status("No run holds saliency maps yet. Train with SaliencyMonitor(log_dir=...) and point TensorBoard at that log dir.");
      return;
    }
    runs.forEach((r) => state.shown.add(r));
    document.getElementById("toolbar").replaceChildren(buildToolbar());
    // Each run is drawn as soon as it arrives, so the first filmstrip does not wait for the rest.
    await Promise.all(runs.map(async (run) => {
      await loadRun(run);
      if (adoptRenderOptions(state.data.get(run).index)) {
        document.getElementById("toolbar").replaceChildren(buildToolbar());
      }
      await buildAll();
    }));
    document.body.dataset.ready = "1";
    setInterval(checkForNewData, 30000);
  } catch (err) {
    status(`Could not load the saliency data: ${err.message}`, true);
  }
}

// The SALIENCY dashboard's page. TensorBoard loads this module in an iframe whose base URL is
// the plugin's route prefix (data/plugin/saliency/) and calls render(). Everything it fetches is
// a relative URL of this plugin; it loads nothing from elsewhere.
//
// Live: it polls every POLL_MS while visible (and at once on TensorBoard's reload, which reaches
// it as a message, see host.js), asking each run only for the epochs past the last one it holds.
// One bad epoch or picture becomes a card naming the run, the epoch and what failed; the rest
// loads and updates as usual.

import { fmt, lineChart, seriesChart } from "./chart.js";
import * as host from "./host.js";
import { decodePng, drawOverlay, greyOf, heatLayer, probeCanvases } from "./paint.js";

/** Polling period while the tab is visible: TensorBoard re-reads the log dir every 5 s, so a new
 * epoch shows at most about 5 + 3 s after it is written. */
const POLL_MS = 3000;

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
  columns: -2, // -2: key epochs, as many as fit; -1: as many as fit, paged; 0: all
  fitColumns: 8,
  page: 0,
  order: "probe",
  classFilter: "",
  onlyWrong: false,
  layout: "side", // "side" (runs side by side, stacking past what fits), "stacked", "probe"
  probe: 0, // the probe of the "one probe across runs" view
  showMask: true,
  detail: null,
  charts: false, // the numbers' charts unfolded
  errors: new Map(), // "run|step|what" -> {run, step, what}: shown as cards
  hostRuns: null, // the runs TensorBoard lists (experimental.GetRuns / RunsChanged), or null
};

/** The state kept in TensorBoard's URL ("p.saliency.<key>"), so a reload keeps the view. */
const URL_KEYS = ["cmap", "order", "layout", "probe", "columns", "tile", "charts"];

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

/** A run's colour: TensorBoard's default palette, by the run's place among all runs. */
function runColor(run) {
  const i = state.runs.indexOf(run);
  return host.RUN_COLORS[(i < 0 ? 0 : i) % host.RUN_COLORS.length];
}

/** Records a failure (shown as a card until the page reloads); `step` null: the whole run. */
function addError(run, step, what) {
  const key = `${run}|${step}|${what}`;
  if (state.errors.has(key)) return;
  state.errors.set(key, { run, step, what });
  showCards();
}

function showCards() {
  const box = document.getElementById("cards");
  if (!box) return;
  box.replaceChildren(...[...state.errors.values()].map(({ run, step, what }) =>
    h("div", { class: "card error", role: "alert", "data-run": run, "data-step": step ?? "" },
      h("strong", { text: step === null ? `${run}` : `${run} · epoch ${step}` }),
      h("span", { text: `: ${what}. ${step === null ? "This run is not shown" : "This epoch is skipped"}; the rest loads as usual.` }))));
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

/**
 * Key epochs of a long run, `count` at most: the first, the last, the alarm's, then the largest
 * changes (lowest mean `stability`, the rank correlation with the previous epoch's map) for half
 * the rest, and evenly spaced ones for the other half. Returns [steps, Set of "change" steps].
 */
export function keyEpochs(index, count) {
  const steps = index.steps;
  if (steps.length <= count) return [steps.slice(), new Set()];
  const chosen = new Set([steps[0], steps[steps.length - 1]]);
  if (index.alarm && steps.includes(index.alarm.step)) chosen.add(index.alarm.step);
  const change = (s) => {
    const info = index.epochs[String(s)] || {};
    if (info.means) return Number.isFinite(info.means.stability) ? 1 - info.means.stability : null;
    const finite = ((info.per_probe || {}).stability || []).filter((v) => v !== null && Number.isFinite(v));
    return finite.length ? 1 - finite.reduce((a, b) => a + b, 0) / finite.length : null;
  };
  const ranked = steps.slice(1).map((s) => [s, change(s)]).filter(([, c]) => c !== null).sort((a, b) => b[1] - a[1]);
  const changes = new Set();
  for (const [s] of ranked) {
    if (changes.size >= Math.floor((count - chosen.size) / 2)) break;
    if (!chosen.has(s)) { chosen.add(s); changes.add(s); }
  }
  const rest = count - chosen.size;
  const every = (steps.length - 1) / (rest + 1);
  for (let i = 1; i <= rest; i++) chosen.add(steps[Math.round(i * every)]);
  for (const s of steps) { if (chosen.size >= count) break; chosen.add(s); } // spacing collided
  return [steps.filter((s) => chosen.has(s)), changes];
}

/** The epochs a run shows now: key epochs, or a page of them. */
function shownSteps(index) {
  if (state.columns === -2) return keyEpochs(index, Math.max(3, state.fitColumns))[0];
  return visibleSteps(index.steps, state.page, columns());
}

/** The columns per run actually used: "fit" is resolved from the page width. */
function columns() {
  if (state.columns === -2) return 0; // key epochs: one page
  return state.columns === -1 ? state.fitColumns : state.columns;
}

function fitColumns() {
  const width = document.getElementById("runs").clientWidth || window.innerWidth;
  const runs = state.layout === "side" ? runsPerRow(Math.max(1, shownRuns().length)) : 1;
  const per = (width - 20 * (runs - 1)) / runs;
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
    if (i >= 0 && state.columns === -2 && !shownSteps(state.data.get(run).index).includes(step)) {
      state.columns = -1; // not a key epoch: page to it
      document.getElementById("columns").value = "-1";
      return goToEpoch(step);
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
    forgetOnHttpError(d, step, promise);
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
    forgetOnHttpError(d, s, promise);
    d.maps.set(s, promise);
  }
}

/** A failed request is retried on the next paint; a PNG that does not decode stays failed (its
 * card says so) until the run is reloaded. */
function forgetOnHttpError(d, step, promise) {
  promise.catch((err) => { if (/HTTP/.test(err.message) && d.maps.get(step) === promise) d.maps.delete(step); });
}

/** Loads a run from scratch (index and probe images); a failure becomes the run's card. */
async function loadRun(run) {
  performance.mark(`saliency:load ${run}`);
  try {
    const index = await getJson("run?" + q({ run, compact: 1 }));
    index.errors.forEach((e) => addError(run, e.step, e.what));
    const ps = index.probe_set;
    if (!ps) return false; // no probe set yet (or an unreadable one: its card says so)
    let probes;
    try {
      const decoded = await getPng("images?" + q({ run }));
      if (decoded.height % ps.num_probes) {
        throw new Error(`they are ${decoded.height} px high, not a multiple of num_probes=${ps.num_probes}`);
      }
      probes = probeCanvases(decoded, ps.num_probes);
    } catch (err) {
      addError(run, null, `its probe images could not be read (${err.message})`);
      return false;
    }
    state.data.set(run, { index, probes, maps: new Map(), masks: null });
    performance.mark(`saliency:loaded ${run}`);
    return true;
  } catch (err) {
    addError(run, null, `its index could not be read (${err.message})`);
    return false;
  }
}

/** Fetches what is new in a loaded run (the epochs past its last step); true when it changed. */
async function updateRun(run) {
  const d = state.data.get(run);
  if (!d) return loadRun(run);
  const old = d.index;
  const last = old.steps.length ? old.steps[old.steps.length - 1] : -1;
  const fresh = await getJson("run?" + q({ run, after: last, compact: 1 }));
  fresh.errors.forEach((e) => addError(run, e.step, e.what));
  // A new fit in the same directory (another probe set) or vanished epochs: start over.
  if (JSON.stringify(fresh.probe_set) !== JSON.stringify(old.probe_set) || old.steps.some((s) => !fresh.steps.includes(s))) {
    state.data.delete(run);
    return loadRun(run);
  }
  Object.assign(old.epochs, fresh.epochs);
  const steps = fresh.steps.filter((s) => String(s) in old.epochs);
  for (const [name, points] of Object.entries(fresh.scalars)) {
    const series = old.scalars[name] || (old.scalars[name] = []);
    for (const p of points) if (!series.length || p[0] > series[series.length - 1][0]) series.push(p);
  }
  const changed = steps.length !== old.steps.length || JSON.stringify(fresh.alarm) !== JSON.stringify(old.alarm);
  old.steps = steps;
  old.alarm = fresh.alarm;
  if ("has_masks" in fresh) old.has_masks = fresh.has_masks;
  return changed;
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
  if (r.cmap in state.luts && !state.urlCmap) state.cmap = r.cmap;
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
  if (canvas.dataset.drawn === key + "|" + state.opacity) return;
  try {
    if (canvas._key !== key) {
      const grey = await mapsOf(run, step);
      canvas._layer = heatLayer(grey, info, k, { lut: state.luts[state.cmap], clip: state.clip, sigma: mapSigma(d.index.probe_set, info) });
      canvas._key = key;
    }
  } catch (err) {
    canvas.classList.add("failed");
    canvas.dataset.drawn = "failed";
    addError(run, step, `its maps could not be drawn (${err.message})`);
    return;
  }
  drawOverlay(canvas, d.probes[k], canvas._layer, state.opacity);
  canvas.dataset.drawn = key + "|" + state.opacity;
  if (!performance.getEntriesByName("saliency:first-tile").length) performance.mark("saliency:first-tile");
}

let paintGeneration = 0;

// Tiles are drawn when they come into view: at 200 epochs x 64 probes "all columns" drawing
// every tile took 121 s and 320 MB of JS heap (issue 18); off-screen ones cost nothing now.
const tileObserver = new IntersectionObserver((entries) => {
  for (const entry of entries) if (entry.isIntersecting) paintTile(entry.target);
}, { rootMargin: "300px" });

function inView(node) {
  const r = node.getBoundingClientRect();
  return r.bottom > -300 && r.top < innerHeight + 300 && r.right > -300 && r.left < innerWidth + 300;
}

async function paintAll() {
  const canvases = [...document.querySelectorAll("canvas.tile")];
  const visible = canvases.filter(inView);
  const needed = new Map();
  for (const c of visible) {
    if (!needed.has(c.dataset.run)) needed.set(c.dataset.run, new Set());
    needed.get(c.dataset.run).add(Number(c.dataset.step));
  }
  for (const [run, steps] of needed) if (state.data.has(run)) prefetchMaps(run, [...steps]);
  const generation = ++paintGeneration;
  document.body.dataset.painted = "0";
  tileObserver.disconnect();
  for (const c of canvases) tileObserver.observe(c);
  await Promise.all(visible.map(paintTile));
  // Only the latest repaint says "done": an older one may finish after a newer one started.
  if (generation === paintGeneration) document.body.dataset.painted = "1";
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
  const steps = shownSteps(index);
  const changes = state.columns === -2 ? keyEpochs(index, Math.max(3, state.fitColumns))[1] : new Set();
  const all = index.steps;
  const head = h("tr", {}, h("th", { class: "corner", text: "probe" }));
  steps.forEach((s, i) => {
    const tags = [];
    if (s === all[0]) tags.push("first");
    if (s === all[all.length - 1]) tags.push("last");
    const gap = i > 0 && all.indexOf(s) - all.indexOf(steps[i - 1]) > 1;
    if (changes.has(s)) tags.push("big change");
    // One line of tags, cut with an ellipsis: the header keeps one height in every run, so
    // probe rows line up across runs side by side.
    const line = h("span", { class: "eptags", style: `max-width: ${state.tile}px` });
    if (index.alarm && index.alarm.step === s) line.append(h("span", { class: "alarmtag", text: "alarm " }));
    line.append(h("span", { class: "eptag", text: tags.join(", ") }));
    line.title = line.textContent;
    head.append(h("th", { class: "epoch" + (gap ? " gap" : ""), "data-step": s },
      h("span", { class: "ep", text: `epoch ${s}` }), line));
  });
  const body = h("tbody");
  for (const k of orderedProbes(run)) {
    const p = ps.probes[k];
    const label = p.label === null || p.label === undefined ? null : (p.label_name ?? className(ps, p.label));
    const row = h("tr", { "data-probe": k },
      h("th", { class: "caption", scope: "row" },
        h("div", { class: "pname", text: `probe ${k}` }),
        label !== null ? h("div", { class: "truth", text: `true: ${label}`, title: label }) : null,
        h("div", { class: "pindex", text: `data index ${p.index}` })));
    steps.forEach((s, i) => {
      const gap = i > 0 && all.indexOf(s) - all.indexOf(steps[i - 1]) > 1;
      row.append(tileCell(run, index, k, s, gap, false));
    });
    body.append(row);
  }
  return h("table", { class: "filmstrip" }, h("thead", {}, head), body);
}

/** One filmstrip cell: the tile (a canvas drawn when it comes into view), badges, caption. */
function tileCell(run, index, k, s, gap, withEpoch) {
  const info = index.epochs[String(s)];
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
  if (withEpoch) cell.append(h("div", { class: "tcap ep", text: `epoch ${s}` }));
  const cap = tileCaption(index, info, k);
  cap.style.maxWidth = `${state.tile}px`; // long class names: an ellipsis, not a wider column
  cell.append(cap);
  return cell;
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

/** The runs drawn, in TensorBoard's run order. */
function shownRuns() {
  return state.runs.filter((r) => state.shown.has(r) && state.data.has(r));
}

/** One chart per number, every shown run overlaid in its colour (folded away by default). */
function buildNumbers() {
  const runs = shownRuns();
  const names = [...new Set(runs.flatMap((r) => Object.keys(state.data.get(r).index.scalars || {})))].sort();
  const box = h("details", { id: "numbers", class: "numbers", open: state.charts },
    h("summary", { text: `numbers: ${names.length} chart${names.length === 1 ? "" : "s"}, runs overlaid` }));
  box.addEventListener("toggle", () => { state.charts = box.open; saveUrl("charts", box.open ? "1" : ""); if (box.open) fillNumbers(box, runs, names); });
  if (state.charts) fillNumbers(box, runs, names);
  return box;
}

function fillNumbers(box, runs, names) {
  if (box.querySelector(".charts")) return;
  const charts = h("div", { class: "charts" });
  for (const name of names) {
    const series = runs.filter((r) => state.data.get(r).index.scalars[name])
      .map((r) => ({ name: r, color: runColor(r), points: state.data.get(r).index.scalars[name] }));
    const first = state.data.get(runs.find((r) => state.data.get(r).index.scalars[name])).index;
    const marks = runs.map((r) => state.data.get(r).index.alarm).filter(Boolean)
      .map((a) => ({ step: a.step, label: "alarm", kind: "alarm" }));
    charts.append(seriesChart(series, { title: `saliency/${name}`, lines: referenceLines(first.probe_set || {}, name), marks, width: 240, height: 110 }));
  }
  box.append(h("div", { class: "legend" }, ...runs.map((r) => h("span", { class: "swatch", style: `--run: ${runColor(r)}`, text: r }))), charts);
}

function buildRun(run) {
  const d = state.data.get(run);
  const { index } = d;
  const ps = index.probe_set;
  const section = h("section", { class: "run", "data-run": run, style: `--run: ${runColor(run)}` });
  const n = index.steps.length;
  const head = h("div", { class: "runhead" });
  head.append(h("h2", { title: run }, h("span", { class: "runname", text: run }),
    h("span", { class: "runmeta", text: ps ? ` · ${ps.num_probes} probes · ${n} logged epoch${n === 1 ? "" : "s"}${n ? ` (${index.steps[0]}-${index.steps[n - 1]})` : ""} · ${ps.method}` : "" })));
  if (index.alarm) {
    // The alarm's first sentence; the rest (signals, probes) unfolds: a paragraph here would
    // push this run's filmstrip, and its neighbours' (aligned), below the fold.
    const text = index.alarm.text;
    const cut = text.indexOf(". ");
    head.append(h("details", { class: "alarm" },
      h("summary", { text: cut > 0 ? text.slice(0, cut + 1) : text, title: "the alarm's full text" }),
      cut > 0 ? h("div", { text: text.slice(cut + 2) }) : null));
  }
  section.append(head);
  if (!ps || !n) {
    section.append(h("p", { class: "note", text: "No saliency maps logged in this run yet." }));
    return section;
  }
  const note = orderNote(run);
  if (note) head.append(h("p", { class: "note", text: note }));
  section.append(h("div", { class: "scroller" }, buildFilmstrip(run)));
  return section;
}

/** One probe across every run: a row per run, the same epochs as the filmstrips. */
function buildProbeView() {
  const runs = shownRuns().filter((r) => state.data.get(r).index.steps.length);
  const table = h("table", { class: "filmstrip probeview" });
  const body = h("tbody");
  for (const run of runs) {
    const { index } = state.data.get(run);
    const ps = index.probe_set;
    if (state.probe >= ps.num_probes) continue;
    const steps = shownSteps(index);
    const k = state.probe;
    const p = ps.probes[k];
    const label = p.label === null || p.label === undefined ? null : (p.label_name ?? className(ps, p.label));
    const row = h("tr", { "data-run": run, "data-probe": k, style: `--run: ${runColor(run)}` },
      h("th", { class: "caption runcap", scope: "row", title: run },
        h("div", { class: "pname", text: run }),
        label !== null ? h("div", { class: "truth", text: `true: ${label}` }) : null));
    for (const s of steps) row.append(tileCell(run, index, k, s, false, true));
    body.append(row);
  }
  table.append(body);
  return h("section", { class: "run probe", "data-probe": state.probe },
    h("div", { class: "runhead" }, h("h2", { text: `probe ${state.probe} across ${runs.length} runs` })),
    h("div", { class: "scroller" }, table));
}

/** Runs per row of the side-by-side layout: as many as leave each 4 tiles, at most 3;
 * past that the runs wrap, so a probe's row lines up across the runs of one row. */
function runsPerRow(count) {
  const width = document.getElementById("runs").clientWidth || window.innerWidth;
  const fit = Math.floor((width + 20) / (130 + 4 * (state.tile + 8) + 20));
  return Math.max(1, Math.min(count, 3, fit));
}

function buildAll() {
  const box = document.getElementById("runs");
  const runs = shownRuns();
  box.className = "runs " + (state.layout === "probe" ? "stacked" : state.layout);
  if (state.layout === "side") box.style.setProperty("--per-row", String(runsPerRow(runs.length)));
  state.fitColumns = fitColumns();
  if (state.layout === "probe") {
    box.replaceChildren(buildProbeView());
  } else {
    box.replaceChildren(...runs.map(buildRun));
  }
  const numbers = document.getElementById("numbers");
  const fresh = buildNumbers();
  if (numbers) numbers.replaceWith(fresh); else box.before(fresh);
  alignHeads();
  updatePager();
  updateClassFilter();
  updateProbePicker();
  performance.mark("saliency:built");
  return paintAll();
}

/** Side by side: every run's header (name, alarm, note) as tall as the tallest, so that probe
 * k's row sits at the same height in every run. */
function alignHeads() {
  const heads = [...document.querySelectorAll("#runs.side .runhead")];
  for (const head of heads) head.style.minHeight = "";
  const tallest = Math.max(0, ...heads.map((head) => head.getBoundingClientRect().height));
  for (const head of heads) head.style.minHeight = `${tallest}px`;
  for (const alarm of document.querySelectorAll("#runs.side details.alarm")) {
    alarm.ontoggle = alignHeads; // unfolding one re-aligns the rows
  }
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

function updateProbePicker() {
  const select = document.getElementById("probe");
  const n = Math.max(0, ...shownRuns().map((r) => state.data.get(r).index.probe_set.num_probes));
  if (select.options.length !== n) {
    select.replaceChildren(...Array.from({ length: n }, (_, k) => h("option", { value: k, text: `probe ${k}` })));
  }
  select.value = String(Math.min(state.probe, Math.max(0, n - 1)));
  select.disabled = state.layout !== "probe";
}

function saveUrl(key, value) {
  try {
    host.writeUrlState(key, value);
  } catch (err) {
    status(`Could not keep the view in the URL: ${err.message}`, true);
  }
}

/** Takes the view from TensorBoard's URL (written by saveUrl); unknown values are ignored. */
function applyUrlState(data) {
  const int = (v) => (/^-?\d+$/.test(v ?? "") ? Number(v) : null);
  if (data.cmap in state.luts) { state.cmap = data.cmap; state.urlCmap = true; }
  if (data.order in ORDERS) state.order = data.order;
  if (["side", "stacked", "probe"].includes(data.layout)) state.layout = data.layout;
  if (int(data.probe) !== null && int(data.probe) >= 0) state.probe = int(data.probe);
  if ([-2, -1, 4, 6, 8, 12, 16, 24, 0].includes(int(data.columns))) state.columns = int(data.columns);
  if ([56, 88, 128, 192].includes(int(data.tile))) state.tile = int(data.tile);
  state.charts = data.charts === "1";
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

let focusBefore = null; // what had the focus before the dialog opened: it gets it back

async function openDetail(run, k, step) {
  const before = document.activeElement;
  const numbers = await probeNumbers(run, k);
  if (!state.detail) focusBefore = before;
  state.detail = { run, k, step, numbers };
  document.getElementById("detail").hidden = false;
  buildDetail();
  document.querySelector("#detailbody button.close").focus();
}

/** A probe's numbers over every epoch, {name: Map(step -> value)}: the run index holds them
 * for the last epoch only (see the plugin's `compact`). */
async function probeNumbers(run, k) {
  try {
    const { numbers } = await getJson("probe?" + q({ run, probe: k }));
    return Object.fromEntries(Object.entries(numbers).map(([name, pts]) => [name, new Map(pts)]));
  } catch (err) {
    addError(run, null, `probe ${k}'s numbers could not be read (${err.message})`);
    return {};
  }
}

/** Rebuilds the open detail with the numbers of new epochs, keeping the focus where it was. */
async function refreshDetail() {
  const detail = state.detail;
  const numbers = await probeNumbers(detail.run, detail.k);
  if (state.detail !== detail) return; // closed or moved on meanwhile
  detail.numbers = numbers;
  const focused = document.activeElement && document.activeElement.id;
  buildDetail();
  const again = focused && document.getElementById(focused);
  (again || document.querySelector("#detailbody button.close")).focus();
}

function closeDetail() {
  if (!state.detail) return;
  state.detail = null;
  document.getElementById("detail").hidden = true;
  if (focusBefore && focusBefore.isConnected) focusBefore.focus();
  focusBefore = null;
}

/** The dialog's keyboard: Tab cycles inside it, arrows step through epochs, Esc closes it. */
function dialogKeys(e) {
  if (!state.detail) return;
  if (e.key === "Escape") { e.preventDefault(); closeDetail(); return; }
  if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
    if (e.target && e.target.id === "detailstep") return; // the slider steps by itself
    e.preventDefault();
    stepDetail(e.key === "ArrowLeft" ? -1 : 1);
    return;
  }
  if (e.key !== "Tab") return;
  const focusable = [...document.querySelectorAll("#detailbody button, #detailbody input, #detailbody select, #detailbody [tabindex]")]
    .filter((node) => !node.disabled && node.offsetParent !== null);
  if (!focusable.length) return;
  const first = focusable[0], last = focusable[focusable.length - 1];
  const inside = document.getElementById("detail").contains(document.activeElement);
  if (e.shiftKey && (document.activeElement === first || !inside)) { e.preventDefault(); last.focus(); }
  else if (!e.shiftKey && (document.activeElement === last || !inside)) { e.preventDefault(); first.focus(); }
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
  const numbers = state.detail.numbers;
  const names = new Set(Object.keys(numbers));
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
      ...[...names].map((n) => fmt(numbers[n].get(s) ?? null))];
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
    const pts = steps.map((s) => [s, state.detail.numbers[name].get(s) ?? null]);
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
  cmap.addEventListener("change", () => { state.cmap = cmap.value; saveUrl("cmap", cmap.value); paintAll(); });
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
  order.value = state.order;
  order.addEventListener("change", () => { state.order = order.value; saveUrl("order", order.value); buildAll(); });
  const classFilter = h("select", { id: "classfilter" });
  classFilter.addEventListener("change", () => { state.classFilter = classFilter.value; buildAll(); });
  const onlyWrong = h("input", { id: "onlywrong", type: "checkbox" });
  onlyWrong.addEventListener("change", () => { state.onlyWrong = onlyWrong.checked; buildAll(); });
  const colSelect = h("select", { id: "columns" }, ...[-2, -1, 4, 6, 8, 12, 16, 24, 0].map((c) => h("option", { value: c, text: c === -2 ? "key epochs" : c === -1 ? "fit width" : c ? String(c) : "all" })));
  colSelect.value = String(state.columns);
  colSelect.addEventListener("change", () => { state.columns = Number(colSelect.value); state.page = 0; saveUrl("columns", colSelect.value); buildAll(); });
  const tile = h("select", { id: "tilesize" }, ...[[56, "small"], [88, "medium"], [128, "large"], [192, "huge"]].map(([v, t]) => h("option", { value: v, text: t })));
  tile.value = String(state.tile);
  tile.addEventListener("change", () => { state.tile = Number(tile.value); saveUrl("tile", tile.value); buildAll(); });
  const layout = h("select", { id: "layout" }, h("option", { value: "side", text: "side by side" }), h("option", { value: "stacked", text: "stacked" }),
    h("option", { value: "probe", text: "one probe across runs" }));
  layout.value = state.layout;
  layout.addEventListener("change", () => { state.layout = layout.value; saveUrl("layout", layout.value); buildAll(); });
  const probe = h("select", { id: "probe", "aria-label": "probe shown across runs" });
  probe.addEventListener("change", () => { state.probe = Number(probe.value); saveUrl("probe", probe.value); buildAll(); });
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
    return h("label", { title: run, style: `--run: ${runColor(run)}` }, box, h("span", { class: "swatch", text: run }));
  }));
  return h("div", { class: "toolbar" },
    h("div", { class: "group" }, h("strong", { text: "Runs" }), runs),
    h("div", { class: "group" }, h("strong", { text: "Display" }),
      control("colormap", cmap), control("clip percentile", clip), control("opacity", opacity),
      control("smoothing", sigma), control("tile", tile), control("layout", layout), control("probe", probe)),
    h("div", { class: "group" }, h("strong", { text: "Probes" }),
      control("order", order), control("true class", classFilter), control("misclassified only", onlyWrong)),
    h("div", { class: "group" }, h("strong", { text: "Epochs" }),
      control("columns", colSelect),
      h("button", { id: "prev", text: "◀ earlier", onclick: () => { state.page = Math.max(0, state.page - 1); buildAll(); } }),
      page,
      h("button", { id: "next", text: "later ▶", onclick: () => { state.page = Math.min(maxPages() - 1, state.page + 1); buildAll(); } }),
      h("span", { id: "pagetext" }), control("go to epoch", goto),
      h("button", { id: "reload", text: "reload", onclick: () => poll() })));
}

// ---------------------------------------------------------------------------------- loading

/** Asks for what is new: the run list, then each shown run's epochs past its last one. Runs
 * loaded for the first time are drawn as each arrives. Returns once every run was asked. */
let polling = null;

function poll() {
  if (!polling) polling = pollOnce().finally(() => { polling = null; });
  return polling;
}

async function pollOnce() {
  let runs;
  try {
    runs = await getJson("runs");
  } catch (err) {
    status(`Could not check for new data: ${err.message}`, true);
    return;
  }
  const added = runs.filter((r) => !state.runs.includes(r));
  state.runs = runs;
  for (const run of added) state.shown.add(run);
  if (added.length || !document.getElementById("runpick")) {
    document.getElementById("toolbar").replaceChildren(buildToolbar());
  }
  if (!runs.length) {
    status("No run holds saliency maps yet. Train with SaliencyMonitor(log_dir=...) and point TensorBoard at that log dir; this page shows each epoch as it is written.");
    return;
  }
  status("");
  const changed = await Promise.all(runs.filter((r) => state.shown.has(r)).map(async (run) => {
    let news;
    try {
      news = await updateRun(run);
    } catch (err) {
      addError(run, null, `its new epochs could not be read (${err.message})`);
      return false;
    }
    const d = state.data.get(run);
    if (news && d && adoptRenderOptions(d.index)) document.getElementById("toolbar").replaceChildren(buildToolbar());
    if (news) await buildAll(); // each run drawn as soon as it is in
    return news;
  }));
  if (state.detail && changed.some(Boolean) && state.data.has(state.detail.run)) await refreshDetail();
}

/** Polls every POLL_MS while the page is visible, and at once when it becomes visible again. */
function startPolling() {
  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    if (!document.hidden) timer = setTimeout(() => poll().finally(schedule), POLL_MS);
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else poll().finally(schedule);
  });
  schedule();
}

function applyTheme(dark) {
  document.documentElement.classList.toggle("dark", dark);
}

export async function render() {
  document.head.append(h("link", { rel: "stylesheet", href: new URL("./style.css", import.meta.url).href }));
  document.title = "Saliency";
  applyTheme(host.isDark());
  host.watchTheme(applyTheme);
  document.body.append(
    h("div", { id: "toolbar" }),
    h("div", { id: "status", role: "status", text: "Loading saliency runs..." }),
    h("div", { id: "cards", class: "cards" }),
    h("div", { id: "runs", class: "runs" }),
    h("div", { id: "detail", class: "detail", hidden: true, role: "dialog", "aria-modal": "true", "aria-label": "probe detail" },
      h("div", { id: "detailbody", class: "detailbody" })));
  document.getElementById("detail").addEventListener("click", (e) => { if (e.target.id === "detail") closeDetail(); });
  document.addEventListener("keydown", dialogKeys);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (state.data.size) buildAll(); }, 200);
  });
  const link = host.connect();
  // TensorBoard's reload (button or auto-reload) and new runs: look for new data at once.
  link.listen("experimental.DataReloaded", () => { document.body.dataset.reloads = String(Number(document.body.dataset.reloads || 0) + 1); poll(); });
  link.listen("experimental.RunsChanged", (runs) => { state.hostRuns = runs; poll(); });
  try {
    const [colormaps, urlState] = await Promise.all([getJson("colormaps"), host.readUrlState(link)]);
    for (const name of colormaps.names) state.luts[name] = Uint8Array.from(colormaps.luts[name]);
    state.cmap = colormaps.names[0];
    applyUrlState(urlState || {});
  } catch (err) {
    status(`Could not load the saliency data: ${err.message}`, true);
  }
  await poll();
  document.body.dataset.ready = "1";
  startPolling();
}

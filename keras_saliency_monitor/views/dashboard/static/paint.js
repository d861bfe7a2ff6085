// Pixels of the SALIENCY dashboard: decoding the stored PNGs and recolouring maps on <canvas>.
//
// The stored maps are 8-bit grey per probe (storage contract): q = pixel / 255, and the raw value
// is scale * q ("linear8") or scale * q^2 ("sqrt8"). Display normalisation happens here, as in
// the callback's render.normalize_maps: each map is divided by its own clip percentile (numpy's
// "linear" interpolation), saturating at 1, then coloured through a 256-entry colormap table with
// a per-pixel opacity t (render.overlay's maps01), drawn over a dimmed grey copy of the image
// (render.dim_grey).

/** Decodes a PNG response (or Blob) into RGBA bytes, without colour management (exact grey
 * levels). */
export async function decodePng(response) {
  const blob = response instanceof Blob ? response : await response.blob();
  const bitmap = await createImageBitmap(blob, {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  bitmap.close();
  return { width: canvas.width, height: canvas.height, rgba };
}

/** The grey channel of a decoded PNG (all channels are equal for a grey PNG). */
export function greyOf(decoded) {
  const n = decoded.width * decoded.height;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = decoded.rgba[4 * i];
  return out;
}

/**
 * The probe images as canvases, one per probe: [original, dimmed grey backdrop].
 * `decoded` holds the N images stacked vertically.
 */
export function probeCanvases(decoded, numProbes) {
  const w = decoded.width;
  const h = Math.floor(decoded.height / numProbes);
  const out = [];
  for (let k = 0; k < numProbes; k++) {
    const part = decoded.rgba.subarray(4 * k * h * w, 4 * (k + 1) * h * w);
    const original = new ImageData(new Uint8ClampedArray(part), w, h);
    const grey = new ImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      const mean = (part[4 * i] + part[4 * i + 1] + part[4 * i + 2]) / 3;
      // render.dim_grey: luminance squeezed into [0.15, 0.75].
      const g = Math.min(255, Math.floor((mean * (0.6 / 255) + 0.15) * 255 + 0.5));
      grey.data[4 * i] = grey.data[4 * i + 1] = grey.data[4 * i + 2] = g;
      grey.data[4 * i + 3] = 255;
    }
    out.push({ original: toCanvas(original), backdrop: toCanvas(grey), width: w, height: h });
  }
  return out;
}

function toCanvas(imageData) {
  const canvas = new OffscreenCanvas(imageData.width, imageData.height);
  canvas.getContext("2d").putImageData(imageData, 0, 0);
  return canvas;
}

/** Relative map values (raw / scale, in [0, 1]) of probe k from the stacked grey bytes. */
export function relativeValues(grey, info, k) {
  const h = info.map_height;
  const w = info.map_width;
  const q = grey.subarray(k * h * w, (k + 1) * h * w);
  const out = new Float32Array(h * w);
  const square = info.encoding === "sqrt8";
  for (let i = 0; i < out.length; i++) {
    const v = q[i] / 255;
    out[i] = square ? v * v : v;
  }
  return out;
}

/**
 * Separable Gaussian blur (sigma in map pixels), as render.smooth_maps does it with
 * scipy.ndimage.gaussian_filter: borders "reflect"ed, kernel cut at 4 sigma (scipy's truncate).
 */
export function gaussianBlur(values, w, h, sigma) {
  if (!(sigma > 0)) return values;
  const radius = Math.max(1, Math.floor(4 * sigma + 0.5));
  const kernel = new Float32Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) {
    kernel[i + radius] = Math.exp((-i * i) / (2 * sigma * sigma));
    sum += kernel[i + radius];
  }
  for (let i = 0; i < kernel.length; i++) kernel[i] /= sum;
  const reflect = (i, n) => {
    // scipy "reflect" (d c b a | a b c d | d c b a), repeated for kernels wider than the map.
    const period = 2 * n;
    let j = ((i % period) + period) % period;
    return j < n ? j : period - 1 - j;
  };
  const tmp = new Float32Array(values.length);
  const out = new Float32Array(values.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let t = -radius; t <= radius; t++) acc += kernel[t + radius] * values[y * w + reflect(x + t, w)];
      tmp[y * w + x] = acc;
    }
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let t = -radius; t <= radius; t++) acc += kernel[t + radius] * tmp[reflect(y + t, h) * w + x];
      out[y * w + x] = acc;
    }
  }
  return out;
}

/** numpy.percentile(values, p) with linear interpolation (values are not modified). */
export function percentile(values, p) {
  const sorted = Float32Array.from(values).sort();
  const pos = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** The same percentile from the 8-bit codes directly (exact, no sort): for unsmoothed maps. */
function percentileOfCodes(q, p, square) {
  const counts = new Uint32Array(256);
  for (let i = 0; i < q.length; i++) counts[q[i]]++;
  const pos = (p / 100) * (q.length - 1);
  const lo = Math.floor(pos);
  const codeAt = (rank) => {
    let seen = 0;
    for (let c = 0; c < 256; c++) {
      seen += counts[c];
      if (seen > rank) return c;
    }
    return 255;
  };
  const value = (c) => (square ? (c / 255) * (c / 255) : c / 255);
  const a = value(codeAt(lo));
  const b = value(codeAt(Math.min(q.length - 1, lo + 1)));
  return a + (b - a) * (pos - lo);
}

/**
 * The heat layer of probe k as RGBA at map resolution: colour lut[t], opacity t, where
 * t = min(value / clip percentile, 1) (render.normalize_maps; a zero percentile falls back to
 * the map's maximum). Returns null when the map is empty (all zero or not finite).
 */
export function heatLayer(grey, info, k, { lut, clip, sigma }) {
  const h = info.map_height;
  const w = info.map_width;
  if ((info.non_finite && info.non_finite[k]) || !(info.scale[k] > 0)) return null;
  const square = info.encoding === "sqrt8";
  const q = grey.subarray(k * h * w, (k + 1) * h * w);
  const layer = new ImageData(w, h);
  const px = new Uint32Array(layer.data.buffer);
  const little = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  const pack = (r, g, b, a) => (little ? ((a << 24) | (b << 16) | (g << 8) | r) >>> 0 : ((r << 24) | (g << 16) | (b << 8) | a) >>> 0);
  if (!(sigma > 0)) {
    // Unsmoothed: the display colour depends on the 8-bit code only, so 256 entries suffice.
    let top = percentileOfCodes(q, clip, square);
    if (!(top > 0)) top = 1; // the maximum of a relative map is 1 by construction
    const table = new Uint32Array(256);
    for (let c = 0; c < 256; c++) {
      const v = square ? (c / 255) * (c / 255) : c / 255;
      const t = Math.min(v / top, 1);
      const i = Math.floor(t * 255 + 0.5);
      table[c] = pack(lut[3 * i], lut[3 * i + 1], lut[3 * i + 2], Math.floor(t * 255 + 0.5));
    }
    for (let i = 0; i < q.length; i++) px[i] = table[q[i]];
    return layer;
  }
  const values = gaussianBlur(relativeValues(grey, info, k), w, h, sigma);
  let top = percentile(values, clip);
  if (!(top > 0)) top = values.reduce((m, v) => Math.max(m, v), 0);
  if (!(top > 0)) return null;
  for (let p = 0; p < values.length; p++) {
    const t = Math.min(Math.max(values[p] / top, 0), 1);
    const i = Math.floor(t * 255 + 0.5);
    px[p] = pack(lut[3 * i], lut[3 * i + 1], lut[3 * i + 2], i);
  }
  return layer;
}

let scratch = null;

/** Draws image backdrop + heat layer into `canvas` (any size; the map is scaled up smoothly). */
export function drawOverlay(canvas, probe, layer, opacity, { original = false } = {}) {
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.globalAlpha = 1;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(original ? probe.original : probe.backdrop, 0, 0, canvas.width, canvas.height);
  if (!layer) return;
  if (!scratch || scratch.width !== layer.width || scratch.height !== layer.height) {
    scratch = new OffscreenCanvas(layer.width, layer.height);
  }
  scratch.getContext("2d").putImageData(layer, 0, 0);
  ctx.globalAlpha = opacity;
  ctx.drawImage(scratch, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 1;
}

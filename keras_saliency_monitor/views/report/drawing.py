"""Drawing the report, pure: runs in, uint8 arrays, PNG and GIF bytes, SVG charts and
HTML text out."""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time

import numpy as np
from matplotlib.colors import TABLEAU_COLORS
from PIL import Image, ImageDraw

from keras_saliency_monitor.drawing import render
from keras_saliency_monitor.views.report.reading import Progress, Run, _ranges

# Layout of the drawn images, in pixels. Tiles are enlarged by an integer factor (nearest: pixels
# stay crisp) until their longer side reaches MIN_TILE, or shrunk to MAX_TILE.
MIN_TILE = 64
MAX_TILE = 128
SEP = 2  # between tiles
LABEL_WIDTH = 120  # row labels of the filmstrip (probe number and label)
HEADER_HEIGHT = 18  # column headers of the filmstrip (the epoch)
TITLE_HEIGHT = 26  # run title band
CAPTION_HEIGHT = 14  # probe caption under each GIF tile
DEFAULT_MAX_EPOCHS = 12  # filmstrip columns
HTML_MAX_FRAMES = 60  # frames of the animation embedded in the HTML page (the .gif keeps all)
GIF_FRAME_MS = 400
GIF_LAST_FRAME_MS = 1600
_GREY = 16  # the background's level (R = G = B)
_BACKGROUND = (_GREY,) * 3
_TITLE_BG = (40, 40, 40)
_TEXT = (235, 235, 235)
_DIM_TEXT = (170, 170, 170)
_ALARM = (255, 120, 90)


# ==================================================================================================
# Drawing (pure: runs in, uint8 arrays / PNG bytes / text out)
# ==================================================================================================


def sample_columns(steps, max_columns: int) -> list:
    """At most ``max_columns`` of ``steps``, evenly spaced, always the first and the last."""
    steps = list(steps)
    if len(steps) <= max_columns:
        return steps
    if max_columns == 1:
        return [steps[-1]]
    index = np.round(np.linspace(0, len(steps) - 1, max_columns)).astype(int)
    return [steps[i] for i in index]  # spacing >= 1, so the rounded indices are distinct


def tile_display_size(h: int, w: int) -> tuple[int, int]:
    """Size a (h, w) tile is drawn at: enlarged by an integer factor to MIN_TILE, or shrunk."""
    longer = max(h, w)
    if longer < MIN_TILE:
        factor = math.ceil(MIN_TILE / longer)
        return h * factor, w * factor
    if longer > MAX_TILE:
        scale = MAX_TILE / longer
        return max(1, round(h * scale)), max(1, round(w * scale))
    return h, w


def _resize(tiles: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if tiles.shape[1:3] == (h, w):
        return tiles
    method = Image.NEAREST if h >= tiles.shape[1] else Image.LANCZOS
    return np.stack([np.asarray(Image.fromarray(t).resize((w, h), method)) for t in tiles])


def _draw_text(draw, xy, text, size, width, fill=_TEXT):
    render.draw_text(draw, xy, text, render.load_font(size), width, fill)


def _alarm_step(run: Run):
    return run.alarms[0][0] if run.alarms else None


def _run_title(run: Run) -> str:
    title = run.name
    step = _alarm_step(run)
    if step is not None:
        title += f"   ALARM at epoch {step}"
    return title


def _filmstrip_block(run: Run, probes, max_epochs: int, progress) -> np.ndarray:
    columns = sample_columns(run.steps, max_epochs)
    rows = list(range(run.num_probes)) if probes is None else list(probes)
    sample = run.probe_images(columns[0], rows[:1])
    th, tw = tile_display_size(*sample.shape[1:3])
    width = LABEL_WIDTH + SEP + len(columns) * (tw + SEP)
    height = TITLE_HEIGHT + HEADER_HEIGHT + len(rows) * (th + SEP) + SEP
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, width, TITLE_HEIGHT - 1], fill=_TITLE_BG)
    alarm = _alarm_step(run) is not None
    _draw_text(draw, (6, 5), _run_title(run), 14, width - 12, _ALARM if alarm else _TEXT)
    array = np.asarray(canvas).copy()
    y0 = TITLE_HEIGHT + HEADER_HEIGHT
    for j, step in enumerate(columns):
        tiles = _resize(run.probe_images(step, rows), (th, tw))
        x = LABEL_WIDTH + SEP + j * (tw + SEP)
        for i, tile in enumerate(tiles):
            y = y0 + i * (th + SEP)
            array[y : y + th, x : x + tw] = tile
        progress.advance()
    canvas = Image.fromarray(array)
    draw = ImageDraw.Draw(canvas)
    for j, step in enumerate(columns):
        x = LABEL_WIDTH + SEP + j * (tw + SEP)
        color = _ALARM if alarm and step >= _alarm_step(run) else _DIM_TEXT
        _draw_text(draw, (x + 2, TITLE_HEIGHT + 2), f"epoch {step}", 11, tw - 2, color)
    for i, probe in enumerate(rows):
        y = y0 + i * (th + SEP)
        caption = run.probe_caption(probe)
        _draw_text(draw, (6, y + 2), caption.split(" ", 1)[0], 12, LABEL_WIDTH - 10)
        if " " in caption:
            _draw_text(draw, (6, y + 18), caption.split(" ", 1)[1], 12, LABEL_WIDTH - 10)
    return np.asarray(canvas)


def filmstrip(runs, probes=None, max_epochs=DEFAULT_MAX_EPOCHS, progress=None) -> np.ndarray:
    """The runs' filmstrips stacked: per run a title band, a header of epochs, a row per probe.

    Args:
        runs: the :class:`Run` objects.
        probes: probe indices to show (rows), None for all.
        max_epochs: at most this many columns per run (see :func:`sample_columns`).

    Returns:
        (H, W, 3) uint8. Per run block: width ``LABEL_WIDTH + SEP + columns * (tile_w + SEP)``,
        height ``TITLE_HEIGHT + HEADER_HEIGHT + rows * (tile_h + SEP) + SEP`` (tile size from
        :func:`tile_display_size`); blocks stacked top to bottom, narrower ones padded.
    """
    progress = progress or Progress(enabled=False)
    blocks = [_filmstrip_block(run, probes, max_epochs, progress) for run in runs]
    width = max(b.shape[1] for b in blocks)
    pads = [((0, 0), (0, width - b.shape[1]), (0, 0)) for b in blocks]
    return np.concatenate([np.pad(b, p, constant_values=_GREY) for b, p in zip(blocks, pads)])


def _panel_layout(run: Run, probes, labels) -> dict:
    """Geometry of a run's animation panel, fixed for all its frames (GIF frames share a size)."""
    rows = list(range(run.num_probes)) if probes is None else list(probes)
    ref = run.probe_images(run.steps[0], rows[:1])
    th, tw = tile_display_size(*ref.shape[1:3])
    n = len(rows)
    cols = n if n <= 4 else math.ceil(math.sqrt(n))  # a few probes: one row
    cell_h = th + CAPTION_HEIGHT
    font = render.load_font(14)
    # Wide enough for the name (with the alarm mark) and the longest epoch label of any frame.
    title_w = font.getlength(render.fit_text(f"{run.name}  ALARM", font, math.inf)) + 24
    title_w += max(font.getlength(render.fit_text(label, font, math.inf)) for label in labels)
    width = max(SEP + cols * (tw + SEP), math.ceil(title_w))
    height = TITLE_HEIGHT + math.ceil(n / cols) * (cell_h + SEP) + SEP
    return dict(rows=rows, th=th, tw=tw, cols=cols, cell_h=cell_h, width=width, height=height)


def _panel(run: Run, step, label: str, layout: dict) -> np.ndarray:
    """One run at one epoch: a title band (name left, epoch right) over the captioned tiles."""
    rows, th, tw, cols, cell_h = (layout[k] for k in ("rows", "th", "tw", "cols", "cell_h"))
    width, height = layout["width"], layout["height"]
    array = np.full((height, width, 3), _BACKGROUND, np.uint8)
    if step is not None:
        tiles = _resize(run.probe_images(step, rows), (th, tw))
        for k, tile in enumerate(tiles):
            r, c = divmod(k, cols)
            y, x = TITLE_HEIGHT + SEP + r * (cell_h + SEP), SEP + c * (tw + SEP)
            array[y : y + th, x : x + tw] = tile
    canvas = Image.fromarray(array)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, width, TITLE_HEIGHT - 1], fill=_TITLE_BG)
    alarm = _alarm_step(run) is not None and step is not None and step >= _alarm_step(run)
    font = render.load_font(14)
    label = render.fit_text(label, font, math.inf)
    label_w = font.getlength(label)
    name = f"{run.name}  ALARM" if alarm else run.name
    _draw_text(draw, (6, 5), name, 14, width - label_w - 24, _ALARM if alarm else _TEXT)
    draw.text((width - 6 - label_w, 5), label, font=font, fill=_DIM_TEXT)
    if step is not None:
        for k, probe in enumerate(rows):
            r, c = divmod(k, cols)
            y, x = TITLE_HEIGHT + SEP + r * (cell_h + SEP) + th, SEP + c * (tw + SEP)
            _draw_text(draw, (x + 1, y + 1), run.probe_caption(probe), 10, tw - 2, _DIM_TEXT)
    return np.asarray(canvas)


def gif_frames(runs, probes=None, epochs=None, progress=None) -> tuple[list, list]:
    """Frames of the animation: one per logged epoch (union over runs), runs side by side.

    A run that did not log an epoch shows its latest earlier one ("epoch 4 (last)"), or an
    empty panel before its first.

    Args:
        runs: the :class:`Run` objects.
        probes: probe indices to show, None for all.
        epochs: the epochs to draw, None for every logged one.

    Returns:
        ``(frames, epochs)``: (H, W, 3) uint8 frames of one size, and their epochs.
    """
    progress = progress or Progress(enabled=False)
    all_steps = sorted(set().union(*(r.steps for r in runs)))
    steps = all_steps if epochs is None else list(epochs)
    plans = []  # per run: [(step shown or None, label)] per frame
    for run in runs:
        plan = []
        for step in steps:
            earlier = [s for s in run.steps if s <= step]
            if not earlier:
                plan.append((None, f"epoch {step}: none yet"))
            elif earlier[-1] == step:
                plan.append((step, f"epoch {step}"))
            else:
                plan.append((earlier[-1], f"epoch {earlier[-1]} (last)"))
        plans.append(plan)
    layouts = [_panel_layout(r, probes, [lab for _, lab in p]) for r, p in zip(runs, plans)]
    height = max(layout["height"] for layout in layouts)
    gap = np.full((height, 4 * SEP, 3), _BACKGROUND, np.uint8)
    frames = []
    for k in range(len(steps)):
        row = []
        for run, plan, layout in zip(runs, plans, layouts):
            if row:
                row.append(gap)
            panel = _panel(run, plan[k][0], plan[k][1], layout)
            pad = ((0, height - panel.shape[0]), (0, 0), (0, 0))
            row.append(np.pad(panel, pad, constant_values=_GREY))
        frames.append(np.concatenate(row, axis=1))
        progress.advance()
    return frames, steps


def encode_gif(frames, frame_ms=GIF_FRAME_MS, last_ms=GIF_LAST_FRAME_MS) -> bytes:
    """Animated GIF (loops forever; the last frame lingers), one adaptive palette per frame.

    Fast octree quantisation: ~100x faster than median cut on a 540x270 frame (a few ms against
    0.8 s on a busy core) for a mean colour error of 7 instead of 5 levels out of 255.
    """
    images = [
        Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        for f in frames
    ]
    durations = [frame_ms] * (len(images) - 1) + [last_ms]
    out = io.BytesIO()
    images[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=durations,
        loop=0,
        disposal=1,
        optimize=False,
    )
    return out.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", optimize=True)
    return out.getvalue()


_SALIENCY_ORDER = (
    "shortcut",
    "border_ratio",
    "focus_lift",
    "focus",
    "pointing_game",
    "concentration",
    "stability",
)


def _series(runs) -> list[tuple[str, list]]:
    """Plots to draw: [(title, [(run, split or None, {step: value})])], saliency first."""
    names = sorted(
        {k for r in runs for k in r.scalars},
        key=lambda k: (_SALIENCY_ORDER.index(k) if k in _SALIENCY_ORDER else 99, k),
    )
    plots = [
        (f"saliency/{k}", [(r, None, r.scalars[k]) for r in runs if k in r.scalars]) for k in names
    ]
    metrics = sorted(
        {k for r in runs for k in r.metrics},
        key=lambda k: ({"loss": 0, "accuracy": 1}.get(k, 2), k),
    )
    for k in metrics:
        lines = [(r, split, s) for r in runs for split, s in r.metrics.get(k, {}).items()]
        plots.append((k, lines))
    return plots


# Chart colours: one per run (comparison) or per split (one run); Tableau's 10, readable on white.
_PALETTE = tuple(TABLEAU_COLORS.values())  # "#1f77b4", "#ff7f0e", ...
_ALARM_LINE = "#d9534f"
_REFERENCES = {
    "saliency/focus_lift": (1.0, "1.0 = chance: no more saliency on the object"),
    "saliency/border_ratio": (1.0, "1.0 = chance: as dense at the edges as inside"),
    "saliency/shortcut": (1.0, "above 1.0: some alarm signal is past its threshold"),
}


def _nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    span = hi - lo
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1, round(step))
    index = math.ceil(lo / step - 1e-6)
    ticks = []
    while index * step <= hi + 1e-6 * step:
        ticks.append(float(f"{index * step:.12g}"))  # 0.30000000000000004 -> 0.3
        index += 1
    return ticks


def _tick_label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2g}"


# Kept over matplotlib: 21 charts take 760 ms, 500 kB there vs 1.5 ms, 70 kB here (libraries.py).
def svg_chart(title, lines, alarm_step=None, reference=None, width=300, height=180) -> str:
    """A line chart as inline SVG (no namespace URL needed inside HTML, no script, no font file).

    Args:
        title: shown above the plot.
        lines: ``[(label, colour, dashed, {step: value})]``; NaN and inf values leave gaps.
        alarm_step: epoch to mark with a red vertical line, or None.
        reference: ``(value, text)`` of a dotted horizontal line (e.g. chance level), or None.

    Returns:
        The ``<svg>`` element. Each point carries a ``<title>`` (a tooltip with epoch and value).
    """
    esc = html.escape
    left, right, top, bottom = 46, 10, 22, 28
    legend = [(label, color, dashed) for label, color, dashed, _ in lines if label]
    legend_rows = math.ceil(len(legend) / 2)
    total_h = height + 14 * legend_rows
    pw, ph = width - left - right, height - top - bottom
    points = [(s, v) for *_, series in lines for s, v in series.items() if math.isfinite(v)]
    out = [
        f'<svg class="chart" width="{width}" height="{total_h}" viewBox="0 0 {width} {total_h}" '
        f'role="img" aria-label="{esc(title)}">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" class="ct">{esc(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>',
    ]
    if points:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        x0, x1 = min(xs), max(xs)
        if x1 == x0:
            x0, x1 = x0 - 1, x1 + 1
        y0, y1 = min(ys), max(ys)
        if reference is not None:
            y0, y1 = min(y0, reference[0]), max(y1, reference[0])
        if y1 == y0:
            pad = abs(y0) * 0.1 or 0.5
            y0, y1 = y0 - pad, y1 + pad
        else:
            pad = 0.06 * (y1 - y0)
            y0, y1 = y0 - pad, y1 + pad

        def sx(x):
            return left + (x - x0) / (x1 - x0) * pw

        def sy(y):
            return top + (y1 - y) / (y1 - y0) * ph

        for t in _nice_ticks(y0, y1):
            y = sy(t)
            out.append(
                f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            )
            out.append(
                f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" class="tick">'
                f"{_tick_label(t)}</text>"
            )
        for t in _nice_ticks(x0, x1, 6, integer=True):
            x = sx(t)
            out.append(
                f'<text x="{x:.1f}" y="{top + ph + 12}" text-anchor="middle" class="tick">'
                f"{int(t)}</text>"
            )
        out.append(
            f'<text x="{left + pw / 2}" y="{top + ph + 24}" text-anchor="middle" class="tick">'
            "epoch</text>"
        )
        if reference is not None:
            y = sy(reference[0])
            out.append(
                f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#888" '
                f'stroke-dasharray="1 2"><title>{esc(reference[1])}</title></line>'
            )
        if alarm_step is not None and x0 <= alarm_step <= x1:
            x = sx(alarm_step)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" '
                f'stroke="{_ALARM_LINE}" stroke-dasharray="3 2">'
                f"<title>alarm at epoch {alarm_step}</title></line>"
            )
        for label, color, dashed, series in lines:
            steps = sorted(series)
            segment, segments = [], []
            for step in steps:  # NaN/inf split the line
                if math.isfinite(series[step]):
                    segment.append(step)
                elif segment:
                    segments.append(segment)
                    segment = []
            if segment:
                segments.append(segment)
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            for seg in segments:
                coords = " ".join(f"{sx(s):.1f},{sy(series[s]):.1f}" for s in seg)
                out.append(
                    f'<polyline points="{coords}" fill="none" stroke="{color}" '
                    f'stroke-width="1.6"{dash}/>'
                )
            if len(steps) <= 60:
                name = f"{esc(label)} " if label else ""
                for step in steps:
                    value = series[step]
                    if math.isfinite(value):
                        out.append(
                            f'<circle cx="{sx(step):.1f}" cy="{sy(value):.1f}" r="2.2" '
                            f'fill="{color}"><title>{name}epoch {step}: {value:.4g}</title>'
                            "</circle>"
                        )
    else:
        out.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" class="tick">'
            "no finite value</text>"
        )
    for k, (label, color, dashed) in enumerate(legend):
        x = left + (k % 2) * (pw / 2)
        y = height + 14 * (k // 2) + 2
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(
            f'<line x1="{x:.1f}" x2="{x + 18:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{x + 22:.1f}" y="{y + 4:.1f}" class="tick">{esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def charts_html(runs, per_run: bool) -> str:
    """Every saliency scalar and Keras metric as SVG charts ("" when there is nothing to plot).

    One run (``per_run``): train and validation in two colours, validation dashed, the alarm
    marked. Several runs: one colour per run, validation dashed.
    """
    colors = {r.name: _PALETTE[i % len(_PALETTE)] for i, r in enumerate(runs)}
    charts = []
    for title, entries in _series(runs):
        lines = []
        for run, split, series in entries:
            if per_run:
                label = split or ""
                color = _PALETTE[1] if split == "validation" else _PALETTE[0]
            else:
                label = run.name + (f" {split}" if split else "")
                color = colors[run.name]
            lines.append((label, color, split == "validation", series))
        alarm = None
        if per_run and title.startswith("saliency/"):
            alarm = _alarm_step(runs[0])
        reference = _REFERENCES.get(title)
        charts.append(svg_chart(title, lines, alarm, reference))
    return f'<div class="charts">{"".join(charts)}</div>' if charts else ""


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _marks_html(run: Run) -> str:
    """Which probes had a flat or a broken map at which epochs ("" when none): their tiles are
    framed in blue or red."""
    notes = []
    for key, what, color in (("flat", "flat map", "blue"), ("non_finite", "NaN/inf map", "red")):
        hits = {}
        for step in run.steps:
            for probe, flagged in enumerate(run.epochs[step].get(key) or []):
                if flagged:
                    hits.setdefault(probe, []).append(step)
        if hits:
            listed = "; ".join(
                f"#{probe} at epoch{'s' if len(steps) > 1 else ''} {_ranges(steps)}"
                for probe, steps in sorted(hits.items())
            )
            notes.append(f"{what} ({color} frame): {html.escape(listed)}")
    return "".join(f'<p class="meta">{note}</p>' for note in notes)


def _probes_html(run: Run) -> str:
    """The probes as a table (probe, index in probe_data, label), from the stored probe set."""
    probes = run.probe_set.get("probes", [])
    if not any(p.get("label") is not None for p in probes):
        return '<p class="meta">No probe labels logged (the probe data had no labels).</p>'
    head = "".join(f"<th>{h}</th>" for h in ("probe", "index in probe_data", "label"))
    body = "".join(
        f"<tr><td>{int(p['probe'])}</td><td>{int(p['index'])}</td>"
        f"<td>{html.escape(run.labels.get(int(p['probe']), ''))}</td></tr>"
        for p in probes
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;
background:#fafafa}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.2em;margin:0 0 8px}
h3{font-size:1em;margin:14px 0 6px}
.meta{color:#666;font-size:.9em;margin-bottom:16px}
.runs{display:flex;gap:20px;align-items:flex-start;overflow-x:auto}
.run{flex:1 1 0;min-width:340px;background:#fff;border:1px solid #ddd;border-radius:6px;
padding:12px}
.run.alarmed{border-color:#d9534f}
img{max-width:100%;height:auto;display:block}
img.pixels{image-rendering:pixelated}
.alarm{background:#fdecea;border-left:4px solid #d9534f;padding:8px 10px;margin:8px 0;
white-space:pre-wrap;font-size:.9em}
.ok{color:#2d7a2d;font-size:.9em;margin:8px 0}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:2px 8px}
th{background:#f0f0f0}.numbers td:first-child{color:#555}
pre{font-size:.85em;white-space:pre-wrap}
.charts{display:flex;flex-wrap:wrap;gap:6px}
svg.chart{font-size:10px;background:#fff}svg.chart .ct{font-size:12px;font-weight:600}
svg.chart .frame{fill:none;stroke:#bbb}svg.chart .grid{stroke:#eee}
svg.chart .tick{fill:#555}
section.top{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;margin-bottom:20px}
"""


def _last_numbers(run: Run) -> str:
    rows = []
    for name in sorted(
        run.scalars, key=lambda k: _SALIENCY_ORDER.index(k) if k in _SALIENCY_ORDER else 99
    ):
        series = run.scalars[name]
        rows.append((f"saliency/{name}", series[max(series)]))
    for name in ("loss", "accuracy"):
        for split, series in run.metrics.get(name, {}).items():
            rows.append((f"{split} {name}", series[max(series)]))
    if not rows:
        return ""
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in rows)
    return f'<h3>Last epoch ({run.steps[-1]})</h3><table class="numbers">{body}</table>'


def html_page(runs, logdir, probes=None, max_epochs=DEFAULT_MAX_EPOCHS, progress=None) -> str:
    """One self-contained HTML page: images as data URIs, no script, nothing fetched."""
    progress = progress or Progress(enabled=False)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Saliency report: {esc(os.fspath(logdir))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Saliency report</h1>",
        f'<div class="meta">log dir <code>{esc(os.fspath(logdir))}</code> &middot; '
        f"{len(runs)} run{'s' if len(runs) != 1 else ''}: "
        + ", ".join(f"<b>{esc(r.name)}</b>" for r in runs)
        + f" &middot; generated {esc(time.strftime('%Y-%m-%d %H:%M'))} by "
        "keras-saliency-monitor</div>",
    ]
    all_steps = sorted(set().union(*(r.steps for r in runs)))
    frames, steps = gif_frames(runs, probes, sample_columns(all_steps, HTML_MAX_FRAMES), progress)
    note = "" if len(steps) == len(all_steps) else f" ({len(steps)} of {len(all_steps)} shown)"
    parts.append('<section class="top"><h2>Every epoch, side by side</h2>')
    parts.append(
        f'<p class="meta">One frame per logged epoch{note}, epochs {steps[0]}-{steps[-1]}.</p>'
    )
    parts.append(
        f'<img class="pixels" alt="animation of the saliency overlays of '
        f'{esc(", ".join(r.name for r in runs))}" '
        f'src="{_data_uri("image/gif", encode_gif(frames))}">'
    )
    if len(runs) > 1:
        charts = charts_html(runs, per_run=False)
        if charts:
            parts.append("<h3>The runs compared</h3>")
            parts.append(charts)
    parts.append("</section>")
    parts.append('<div class="runs">')
    for run in runs:
        alarmed = bool(run.alarms)
        parts.append(f'<section class="run{" alarmed" if alarmed else ""}">')
        parts.append(f"<h2>{esc(run.name)}</h2>")
        for step, text in run.alarms:
            parts.append(
                f'<div class="alarm"><b>Shortcut alarm</b> (epoch {step}). {esc(text)}</div>'
            )
        if not alarmed and ("shortcut" in run.scalars or "focus_lift" in run.scalars):
            parts.append('<div class="ok">No shortcut alarm.</div>')
        parts.append(
            f'<div class="meta">{len(run.steps)} logged epochs ({run.steps[0]}-'
            f"{run.steps[-1]}), {run.num_probes} probes &middot; <code>{esc(run.path)}</code>"
            "</div>"
        )
        strip = filmstrip([run], probes, max_epochs, progress)
        parts.append("<h3>Filmstrip (rows: probes, columns: epochs)</h3>")
        parts.append(
            f'<img class="pixels" alt="filmstrip of {esc(run.name)}" '
            f'src="{_data_uri("image/png", encode_png(strip))}">'
        )
        parts.append(_marks_html(run))
        charts = charts_html([run], per_run=True)
        if charts:
            parts.append("<h3>Curves</h3>")
            parts.append(charts)
        parts.append(_last_numbers(run))
        parts.append("<h3>Probes</h3>")
        parts.append(_probes_html(run))
        parts.append("</section>")
    parts.append("</div></body></html>")
    return "\n".join(parts)

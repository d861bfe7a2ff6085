"""Hand-written pieces against the maintained libraries that could replace them (issue 14).

1. **TFRecord CRC32C**, ms per MB of event payload: `writer._crc32c` (google-crc32c), TensorBoard's
   pure-Python `masked_crc32c` (what its `RecordWriter` uses) and `tf.io.TFRecordWriter` (a whole
   record written and flushed; needs TensorFlow imported).
2. **Grid captions**: thread CPU of `render.make_grid` on the callback's grid (16 probes of 112 px,
   2 per row, captions sized for TensorBoard's card) with and without its 32 caption lines.
3. **Charts**: thread CPU and bytes of 21 charts of 2 lines x 8 epochs (the demo report's count):
   `report.svg_chart` against the same chart drawn by matplotlib (`Figure`, no pyplot; SVG with
   text as text, base64 in a `data:` URI, as the page would embed it).
4. **Progress bar**: import time, in a fresh interpreter, of tqdm and of `keras.utils.Progbar`.

Medians; sides alternate pair by pair. Usage: ``python benchmarks/libraries.py`` (~1 min).
"""

from __future__ import annotations

import base64
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c  # noqa: E402

from keras_saliency_monitor import render, report, writer  # noqa: E402


def paired(cases: dict, pairs: int, clock=time.thread_time) -> dict:
    """{name: median seconds}: every case once per round, the order reversed every other round."""
    times = {name: [] for name in cases}
    for k in range(pairs + 1):
        for name, fn in list(cases.items())[:: 1 if k % 2 else -1]:
            start = clock()
            fn()
            if k:  # round 0 warms up
                times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def crc() -> None:
    payload = np.random.default_rng(0).integers(0, 256, 2_000_000, np.uint8).tobytes()
    mb = len(payload) / 1e6
    fast = paired({"writer._crc32c (google-crc32c)": lambda: writer._crc32c(payload)}, 9)
    slow = paired({"TensorBoard masked_crc32c": lambda: masked_crc32c(payload[:200_000])}, 3)
    start = time.perf_counter()
    import tensorflow as tf

    tf_import = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, tf.io.TFRecordWriter(f"{tmp}/r") as records:
        tfio = paired(
            {"tf.io.TFRecordWriter": lambda: (records.write(payload), records.flush())}, 9
        )
    print("\n## TFRecord CRC32C\n\n| implementation | ms per MB |\n|---|---:|")
    for name, seconds in {**fast, **tfio}.items():
        print(f"| {name} | {1e3 * seconds / mb:.3f} |")
    for name, seconds in slow.items():
        print(f"| {name} | {1e3 * seconds / 0.2:.1f} |")
    print(f"\n`import tensorflow`: {tf_import:.1f} s")


def captions() -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (16, 112, 112, 3), np.uint8)
    text = [f"#{k} true circle\npred square 0.93" for k in range(16)]
    width = render.TENSORBOARD_CARD_WIDTH
    got = paired(
        {
            "with captions": lambda: render.make_grid(
                tiles, tiles, text, columns=2, display_width=width
            ),
            "without": lambda: render.make_grid(tiles, tiles, None, columns=2, display_width=width),
        },
        21,
    )
    print("\n## Grid captions (16 probes, 32 lines)\n\n| make_grid | thread CPU ms |\n|---|---:|")
    for name, seconds in got.items():
        print(f"| {name} | {1e3 * seconds:.2f} |")


def matplotlib_chart(title, lines, alarm_step=None, reference=None) -> str:
    """`report.svg_chart`'s chart drawn by matplotlib, as the page would embed it."""
    figure = Figure(figsize=(3.0, 1.9), dpi=100)
    figure.subplots_adjust(left=0.16, right=0.97, top=0.87, bottom=0.35)
    ax = figure.add_subplot()
    for label, color, dashed, series in lines:
        steps = sorted(series)
        ax.plot(steps, [series[s] for s in steps], color=color, ls="--" if dashed else "-",
                marker="o", ms=2.5, label=label or None)  # fmt: skip
    if reference is not None:
        ax.axhline(reference[0], color="#888", ls=":", label=reference[1])
    if alarm_step is not None:
        ax.axvline(alarm_step, color="#d9534f", ls="--", label=f"alarm at epoch {alarm_step}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("epoch", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(color="#eee")
    figure.legend(loc="lower center", ncols=2, fontsize=6.5, frameon=False)
    out = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(out, format="svg", metadata={"Date": None})
    return f'<img src="data:image/svg+xml;base64,{base64.b64encode(out.getvalue()).decode()}">'


def charts() -> None:
    rng = np.random.default_rng(0)
    specs = []
    for k in range(21):
        lines = [
            (label, color, label == "validation", dict(enumerate(rng.normal(size=8).cumsum())))
            for label, color in (("train", "#1f77b4"), ("validation", "#ff7f0e"))
        ]
        specs.append((f"saliency/metric_{k}", lines, 2 if k % 3 else None, (1.0, "chance")))
    sizes = {}

    def run(name, fn):
        sizes[name] = sum(len(fn(*spec)) for spec in specs)

    got = paired(
        {
            "report.svg_chart (ours)": lambda: run("report.svg_chart (ours)", report.svg_chart),
            "matplotlib": lambda: run("matplotlib", matplotlib_chart),
        },
        5,
    )
    print("\n## Charts (21 charts of 2 lines x 8 epochs)\n")
    print("| engine | thread CPU ms | HTML bytes |\n|---|---:|---:|")
    for name, seconds in got.items():
        print(f"| {name} | {1e3 * seconds:.1f} | {sizes[name]:,} |")


def imports() -> None:
    print("\n## Progress bar: import time in a fresh interpreter\n\n| import | s |\n|---|---:|")
    for statement in ("import tqdm", "from keras.utils import Progbar"):
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        command = [sys.executable, "-c", code]
        runs = [
            float(
                subprocess.check_output(command, text=True, stderr=subprocess.DEVNULL).split()[-1]
            )
            for _ in range(3)
        ]
        print(f"| `{statement}` | {statistics.median(runs):.3f} |")


if __name__ == "__main__":
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"load {os.getloadavg()[0]:.1f}")
    captions()
    charts()
    imports()
    crc()


# ---------------------------------------------------------------- issue 14, helper 14m: metrics.py
# Gradient floors per logged epoch from this README: vanilla, 32 probes 64x64 (overhead.py) and
# MobileNetV2, 16 probes 224x224 (storage.py).
METRIC_FLOORS_MS = {(32, 64): 42.6, (16, 224): 786.0}


def metric_ranks() -> None:
    """`metrics._centred_ranks` (packed float32 sort) against `scipy.stats.rankdata`, and the whole
    `metrics.rank_maps` call as `SaliencyMonitor._measure` makes it, on the training thread, once
    per logged epoch; plus the scipy.special / np.nanmean calls the epoch's numbers make."""
    from scipy import special, stats

    from keras_saliency_monitor import metrics

    def rankdata_maps(maps):  # rank_maps with scipy's ranks in place of ours
        flat = maps.reshape(len(maps), -1)
        ranks = stats.rankdata(flat, axis=1) - (flat.shape[1] + 1) / 2.0
        finite = np.isfinite(flat).all(axis=1)
        return metrics.RankedMaps(ranks, np.einsum("nk,nk->n", ranks, ranks), finite)

    def row(n, size):
        maps = np.abs(rng.standard_normal((n, size, size))).astype(np.float32)
        flat = maps.reshape(n, -1)
        centre = (flat.shape[1] + 1) / 2.0
        assert np.array_equal(metrics._centred_ranks(flat), stats.rankdata(flat, axis=1) - centre)
        got = paired(
            {
                "ours": lambda: metrics._centred_ranks(flat),
                "rankdata": lambda: stats.rankdata(flat, axis=1) - centre,
                "rank_maps": lambda: metrics.rank_maps(maps),
                "rank_maps rankdata": lambda: rankdata_maps(maps),
            },
            9,
        )
        ms = {k: 1e3 * v for k, v in got.items()}
        floor = METRIC_FLOORS_MS.get((n, size))
        added = ms["rank_maps rankdata"] - ms["rank_maps"]
        share = f"+{added:.1f} ms = {100 * added / floor:.1f}% of {floor:g} ms" if floor else ""
        print(
            f"| {n} x {size}x{size} | {ms['ours']:.2f} | {ms['rankdata']:.2f} | "
            f"{ms['rank_maps']:.2f} | {ms['rank_maps rankdata']:.2f} | {share} |"
        )

    rng = np.random.default_rng(0)
    print("\n## Pixel ranks of float32 saliency maps (thread CPU ms, medians of 9 pairs)\n")
    print("| maps | ours | rankdata | rank_maps ours | rank_maps rankdata | added / floor |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, size in ((16, 64), (32, 64), (16, 224), (32, 224)):
        row(n, size)
    # The small per-epoch calls now made through scipy.special and np.nanmean (32 probes, 10
    # classes): their whole cost per epoch, against the smallest floor.
    logits = rng.normal(size=(3, 32, 10)) * 4
    values = rng.random((12, 32))
    values[:, ::7] = np.nan
    got = paired(
        {
            "probe_skill": lambda: metrics.probe_skill(logits[0]),
            "object_reliance": lambda: metrics.object_reliance(*logits),
            "object_reliance sigmoid": lambda: metrics.object_reliance(*logits, kind="sigmoid"),
            "12 x nanmean": lambda: [metrics.nanmean(v) for v in values],
            "special.softmax (32, 10)": lambda: special.softmax(logits[0], axis=1),
        },
        9,
    )
    print("\n| per-epoch call (32 probes, 10 classes) | thread CPU us |\n|---|---:|")
    for name, seconds in got.items():
        print(f"| {name} | {1e6 * seconds:.0f} |")


if __name__ == "__main__":
    metric_ranks()

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
from PIL import Image, ImageDraw  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c  # noqa: E402

from keras_saliency_monitor.drawing import render  # noqa: E402
from keras_saliency_monitor.storage import writer
from keras_saliency_monitor.views import report


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


# ------------------------------------------------------------------------------------------------
# render.py, store.py, report.py, arrays.py (issue 14, second session).
# ------------------------------------------------------------------------------------------------


def numpy_block_mean(tiles: np.ndarray, factor: int) -> np.ndarray:
    """The block mean render.py and store.py had before Pillow's `Image.reduce` (edge-padded)."""
    n, h, w = tiles.shape[:3]
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    pad = ((0, 0), (0, hp - h), (0, wp - w)) + ((0, 0),) * (tiles.ndim - 3)
    blocks = np.pad(tiles, pad, mode="edge").reshape(
        n, hp // factor, factor, wp // factor, factor, *tiles.shape[3:]
    )
    if tiles.dtype != np.uint8:
        return blocks.mean(axis=(2, 4))
    return ((blocks.sum(axis=(2, 4), dtype=np.uint32) + factor**2 // 2) // factor**2).astype(
        np.uint8
    )


def pil_composite(display, heat, maps01, alpha):
    """`render.overlay` done by Pillow: `Image.composite` with an 8-bit opacity mask."""
    masks = np.rint(alpha * np.clip(maps01, 0, 1) * 255).astype(np.uint8)
    return np.stack(
        [
            np.asarray(Image.composite(Image.fromarray(h), Image.fromarray(d), Image.fromarray(m)))
            for d, h, m in zip(display, heat, masks)
        ]
    )


def pil_frames(tiles, which, color):
    """`render.frame_tiles` done by Pillow: `ImageDraw.rectangle(outline=..., width=t)` per tile."""
    out = np.array(tiles, copy=True)
    t = max(1, min(out.shape[1:3]) // 12)
    for k in np.flatnonzero(which):
        image = Image.fromarray(out[k])
        ImageDraw.Draw(image).rectangle(
            [0, 0, image.width - 1, image.height - 1], outline=tuple(color), width=t
        )
        out[k] = np.asarray(image)
    return out


def rendering() -> None:
    """Thread CPU per call at the callback's scale: 16 or 32 probes, 64-224 px, grid tiles 112."""
    rng = np.random.default_rng(0)
    print("\n## Session 2: render.py / store.py (thread CPU ms, medians of 15 pairs)\n")
    print("| piece | case | ours (before) | library | max difference |\n|---|---|---:|---:|---|")
    for n, side in ((16, 128), (16, 224), (32, 224), (16, 300)):
        factor = render.tile_factor((side, side), 112)
        images = rng.integers(0, 256, (n, side, side, 3), np.uint8)
        maps = rng.gamma(1.0, 1.0, (n, side, side)).astype(np.float32)
        for what, x in (("RGB uint8", images), ("maps float32", maps)):
            got = paired(
                {
                    "numpy": lambda x=x, f=factor: numpy_block_mean(x, f),
                    "pil": lambda x=x, f=factor: render.downscale_images(x, f),
                },
                15,
            )
            diff = np.abs(
                numpy_block_mean(x, factor).astype(float) - render.downscale_images(x, factor)
            ).max()
            print(
                f"| block-mean downscale | {n} {what} {side} -> {side // factor} px | "
                f"{1e3 * got['numpy']:.2f} | {1e3 * got['pil']:.2f} (`Image.reduce`) | {diff:.2g} |"
            )
    for n in (16, 32):
        maps01 = rng.random((n, 112, 112)).astype(np.float32)
        cmap = matplotlib.colormaps["inferno"]
        got = paired(
            {
                "ours": lambda m=maps01: render.colorize(m, "inferno"),
                "mpl": lambda m=maps01, c=cmap: c(m, bytes=True)[..., :3],
            },
            15,
        )
        ours, lib = render.colorize(maps01, "inferno"), cmap(maps01, bytes=True)[..., :3]
        share = (ours != lib).any(axis=-1).mean()
        top = render.colorize(np.ones((1, 1, 1)))[0, 0, 0], np.array(cmap(1.0, bytes=True)[:3])
        ends = f"{top[0]} vs {top[1]}"
        print(
            f"| colorize | {n} maps 112 px, inferno | {1e3 * got['ours']:.2f} | "
            f"{1e3 * got['mpl']:.2f} (`cmap(x, bytes=True)`) | {share:.0%} of pixels; "
            f"end colour {ends} |"
        )
        display = rng.integers(0, 256, (n, 112, 112, 3), np.uint8)
        heat = render.colorize(maps01)
        got = paired(
            {
                "ours": lambda d=display, h=heat, m=maps01: render.overlay(d, h, 0.8, maps01=m),
                "pil": lambda d=display, h=heat, m=maps01: pil_composite(d, h, m, 0.8),
            },
            15,
        )
        diff = np.abs(
            render.overlay(display, heat, 0.8, maps01=maps01).astype(int)
            - pil_composite(display, heat, maps01, 0.8)
        ).max()
        print(
            f"| per-pixel blend | {n} tiles 112 px | {1e3 * got['ours']:.2f} | "
            f"{1e3 * got['pil']:.2f} (`Image.composite`, 8-bit mask) | {diff} levels |"
        )
        which = np.arange(n) % 4 == 0
        got = paired(
            {
                "ours": lambda d=display, w=which: render.frame_tiles(d, w, render.FAULT_COLOR),
                "pil": lambda d=display, w=which: pil_frames(d, w, render.FAULT_COLOR),
            },
            15,
        )
        diff = np.abs(
            render.frame_tiles(display, which, render.FAULT_COLOR).astype(int)
            - pil_frames(display, which, render.FAULT_COLOR)
        ).max()
        print(
            f"| frames | {n} tiles 112 px, {which.sum()} framed | {1e3 * got['ours']:.3f} | "
            f"{1e3 * got['pil']:.3f} (`ImageDraw.rectangle`) | {diff} |"
        )
        small = rng.integers(0, 256, (n, 28, 28, 3), np.uint8)
        got = paired(
            {
                "ours": lambda t=small: render.upscale_nearest(t, 96),
                "pil": lambda t=small: np.stack(
                    [np.asarray(Image.fromarray(i).resize((112, 112), Image.NEAREST)) for i in t]
                ),
            },
            15,
        )
        print(
            f"| nearest upscale | {n} tiles 28 -> 112 px | {1e3 * got['ours']:.3f} (`np.repeat`) | "
            f"{1e3 * got['pil']:.3f} (`Image.resize`, NEAREST) | 0 |"
        )


def report_io() -> None:
    """The report's file handling: run discovery before anything is loaded, and its output."""
    from keras_saliency_monitor.storage import arrays, store

    print("\n## Session 2: report.py / arrays.py\n")
    with tempfile.TemporaryDirectory() as tmp:
        for run in ("a", "b", "c"):
            for sub in ("saliency", "train", "validation"):
                with writer.EventWriter(os.path.join(tmp, run, sub), fsync=False) as w:
                    if sub == "saliency":
                        w.add_blob_sequence(store.MAPS_TAG, [b"{}", b""], 0, store.PLUGIN_NAME)
                    w.add_scalar("epoch_loss", 1.0, 0)
        print("Run discovery, fresh interpreter, imports included (median of 3):\n")
        print("| discovery | s |\n|---|---:|")
        for name, code in (
            (
                "report.find_runs (os.walk + mmap tag search)",
                "from keras_saliency_monitor.views import report; report.find_runs(sys.argv[1])",
            ),
            (
                "tensorboard io_wrapper.GetLogdirSubdirectories (directories only)",
                "from tensorboard.backend.event_processing import io_wrapper; "
                "list(io_wrapper.GetLogdirSubdirectories(sys.argv[1]))",
            ),
        ):
            timed = (
                f"import sys, time; t = time.perf_counter(); {code}; print(time.perf_counter()-t)"
            )
            command = [sys.executable, "-c", timed, tmp]
            out = [
                subprocess.check_output(command, text=True, stderr=subprocess.DEVNULL)
                for _ in "123"
            ]
            print(f"| {name} | {statistics.median(float(o.split()[-1]) for o in out):.3f} |")
        data = np.random.default_rng(0).integers(0, 256, 1_400_000, np.uint8).tobytes()

        def unsynced(path):  # report._write_atomic before arrays.atomic_file: no fsync
            fd, tmp_path = tempfile.mkstemp(dir=tmp, prefix=".report.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp_path, path)

        def synced(path):
            with arrays.atomic_file(path, prefix=".report.", overwrite=True, mode=0o644) as f:
                f.write(data)

        got = paired(
            {
                "before": lambda: unsynced(os.path.join(tmp, "a.html")),
                "after": lambda: synced(os.path.join(tmp, "b.html")),
            },
            9,
            clock=time.perf_counter,
        )
        print(
            f"\nReport output, 1.4 MB, wall ms: mkstemp + replace {1e3 * got['before']:.1f}, "
            f"`arrays.atomic_file` (+ fsync) {1e3 * got['after']:.1f}"
        )


# ------------------------------------------------------------ metrics.py, stability.py (issue 14)
# Gradient floors per logged epoch from this README: vanilla, 32 probes 64x64 (overhead.py) and
# MobileNetV2, 16 probes 224x224 (storage.py).
METRIC_FLOORS_MS = {(32, 64): 42.6, (16, 224): 786.0}


def metric_ranks() -> None:
    """`stability._centred_ranks` (packed float32) against `scipy.stats.rankdata`, and the whole
    `stability.rank_maps` call as `SaliencyMonitor._measure` makes it, on the training thread, once
    per logged epoch; plus the scipy.special / np.nanmean calls the epoch's numbers make."""
    from scipy import special, stats

    from keras_saliency_monitor.signals import learning, metrics, reliance, stability

    def rankdata_maps(maps):  # rank_maps with scipy's ranks in place of ours
        flat = maps.reshape(len(maps), -1)
        ranks = stats.rankdata(flat, axis=1) - (flat.shape[1] + 1) / 2.0
        finite = np.isfinite(flat).all(axis=1)
        return stability.RankedMaps(ranks, np.einsum("nk,nk->n", ranks, ranks), finite)

    def row(n, size):
        maps = np.abs(rng.standard_normal((n, size, size))).astype(np.float32)
        flat = maps.reshape(n, -1)
        centre = (flat.shape[1] + 1) / 2.0
        assert np.array_equal(stability._centred_ranks(flat), stats.rankdata(flat, axis=1) - centre)
        got = paired(
            {
                "ours": lambda: stability._centred_ranks(flat),
                "rankdata": lambda: stats.rankdata(flat, axis=1) - centre,
                "rank_maps": lambda: stability.rank_maps(maps),
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
            "probe_skill": lambda: learning.probe_skill(logits[0]),
            "object_reliance": lambda: reliance.object_reliance(*logits),
            "object_reliance sigmoid": lambda: reliance.object_reliance(*logits, kind="sigmoid"),
            "12 x nanmean": lambda: [metrics.nanmean(v) for v in values],
            "special.softmax (32, 10)": lambda: special.softmax(logits[0], axis=1),
        },
        9,
    )
    print("\n| per-epoch call (32 probes, 10 classes) | thread CPU us |\n|---|---:|")
    for name, seconds in got.items():
        print(f"| {name} | {1e6 * seconds:.0f} |")


# --------------------------------------------------------------------------------------------------
# Writer, launcher and command line (issue 14, second session). "Before" is writer.py at PRE_SWAP,
# loaded from git, so the comparison stays reproducible after the swap.
# --------------------------------------------------------------------------------------------------

PRE_SWAP = "68426d3"  # main before this session's swaps (summaries, buckets, seams)


def source_at(commit: str, name: str) -> str:
    """The path of a copy of `keras_saliency_monitor/<name>.py` as it was at `commit`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.check_output(
        ["git", "-C", root, "show", f"{commit}:keras_saliency_monitor/{name}.py"]
    )
    path = os.path.join(tempfile.mkdtemp(), f"{name}_{commit}.py")
    with open(path, "wb") as f:
        f.write(source)
    return path


# --- gradients / probes / methods / targets, today against the code before the swaps. ---


def _module_at(rev: str, name: str):
    """``keras_saliency_monitor.<name>`` as it was at git ``rev``, loaded beside today's."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    show = ["git", "-C", root, "show", f"{rev}:keras_saliency_monitor/{name}.py"]
    path = os.path.join(tempfile.mkdtemp(), f"{name}_at_{rev}.py")  # a file: AutoGraph reads it
    with open(path, "w") as f:
        f.write(subprocess.check_output(show, text=True))
    spec = importlib.util.spec_from_file_location(f"_{name}_at_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summaries() -> None:
    """Thread CPU of one epoch's numbers as the callback writes them, and of one big histogram."""
    old = _module_at(PRE_SWAP, "writer")
    rng = np.random.default_rng(0)
    per_probe = [rng.random(32) for _ in range(3)]
    big = rng.normal(size=1_000_000)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, module in (("hand-written (before)", old), ("TensorBoard *_pb (now)", writer)):
            w = module.EventWriter(os.path.join(tmp, label[:4]), fsync=False)

            def epoch(w=w):
                for k in range(8):
                    w.add_scalar(f"saliency/metric_{k}", 0.5 + k, 3)
                for k, values in enumerate(per_probe):
                    w.add_histogram(f"saliency/h{k}_per_probe", values, 3)
                w.add_text("saliency/alarm", "**alarm** at epoch 3", 3)

            results[label] = (epoch, lambda w=w: w.add_histogram("big", big, 3))
        epochs = paired({name: fns[0] for name, fns in results.items()}, 41)
        bigs = paired({name: fns[1] for name, fns in results.items()}, 5)
    print("\n## Summaries: TensorBoard's scalar_pb / text_pb / histogram_pb\n")
    print("One epoch: 8 scalars, 3 histograms of 32 values, 1 text.\n")
    print("| summaries | one epoch, ms | one histogram of 1M values, ms |")
    print("|---|---:|---:|")
    for name in results:
        print(f"| {name} | {1e3 * epochs[name]:.3f} | {1e3 * bigs[name]:.0f} |")


def last_steps() -> None:
    """Thread CPU to find the last step of a 200-epoch log: ours against TensorBoard's reader.

    The log: per epoch a 448x224 noise grid (a ~300 kB PNG, as large as the callback's), 8
    scalars and 3 histograms. TensorBoard's `EventFileLoader` imports TensorFlow and reads through
    its C++ record reader; without TensorFlow, its stub reader checks CRCs in pure Python (timed
    on the first 20 epochs).
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as stub

    old = _module_at(PRE_SWAP, "writer")
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 256, (448, 224, 3), np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        with writer.EventWriter(f"{tmp}/run", fsync=False) as w:
            for epoch in range(200):
                if epoch == 20:
                    w.flush()
                    head = open(w.path, "rb").read()
                w.add_images("saliency/overlays", grid, epoch)
                for k in range(8):
                    w.add_scalar(f"saliency/metric_{k}", 0.5, epoch)
                for k in range(3):
                    w.add_histogram(f"saliency/h{k}_per_probe", rng.random(32), epoch)
            path = w.path
        with open(f"{tmp}/head", "wb") as f:
            f.write(head)
        size = os.path.getsize(path) / 1e6

        def stub_reader(file):
            reader, best = stub.PyRecordReader_New(file.encode()), None
            while True:
                try:
                    reader.GetNext()
                except errors.OutOfRangeError:
                    return best
                step = event_pb2.Event.FromString(reader.record()).step
                best = step if best is None else max(best, step)

        start = time.perf_counter()
        import tensorflow  # noqa: F401 - EventFileLoader's record reader

        tf_import = time.perf_counter() - start
        got = paired(
            {
                "writer.last_step (ours, protobuf decodes the step)": lambda: writer.last_step(
                    f"{tmp}/run"
                ),
                "writer.last_step (before, our varint decoder)": lambda: old.last_step(
                    f"{tmp}/run"
                ),
                "EventFileLoader (TF's C++ reader)": lambda: max(
                    e.step for e in EventFileLoader(path).Load()
                ),
            },
            5,
        )
        stub_20 = paired({"stub": lambda: stub_reader(f"{tmp}/head")}, 1)["stub"]
    print(f"\n## Last step of a 200-epoch log ({size:.0f} MB)\n")
    print("| reader | thread CPU ms |\n|---|---:|")
    for name, seconds in got.items():
        print(f"| {name} | {1e3 * seconds:.1f} |")
    print(
        f"| TensorBoard's stub reader, no TensorFlow (x10 from 20 epochs) | {1e4 * stub_20:.0f} |"
    )
    print(f"\n`import tensorflow` (EventFileLoader's reader needs it): {tf_import:.1f} s")


def stuck_exit() -> None:
    """Wall time for a process to exit with one job stuck forever (a write on a hung disk).

    `ThreadPoolExecutor` joins its threads at interpreter exit, even after `shutdown(wait=False,
    cancel_futures=True)`; `BackgroundWorker` gives up after its exit bound (set to 3 s here; 30 s
    by default), or at once once abandoned (what the callback does on a stalled writer).
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stuck = "import threading; job = threading.Event().wait\n"
    scripts = {
        "ThreadPoolExecutor, shutdown(wait=False, cancel_futures=True)": stuck
        + "from concurrent.futures import ThreadPoolExecutor\n"
        "pool = ThreadPoolExecutor(1); pool.submit(job)\n"
        "pool.shutdown(wait=False, cancel_futures=True)\n",
        "BackgroundWorker, exit bound 3 s": stuck + f"import sys; sys.path.insert(0, {root!r})\n"
        "from keras_saliency_monitor.storage import writer\n"
        "writer._EXIT_TIMEOUT_SECONDS = 3.0\n"
        "writer.BackgroundWorker().submit(job)\n",
        "BackgroundWorker, abandon()": stuck + f"import sys; sys.path.insert(0, {root!r})\n"
        "from keras_saliency_monitor.storage import writer\n"
        "worker = writer.BackgroundWorker(); worker.submit(job); worker.abandon()\n",
    }
    print("\n## Process exit with a job stuck forever\n\n| worker | exit after, s |\n|---|---:|")
    for name, script in scripts.items():
        start = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-c", script], timeout=15, stderr=subprocess.DEVNULL)
            took = f"{time.perf_counter() - start:.1f}"
        except subprocess.TimeoutExpired:
            took = "never (killed after 15)"
        print(f"| {name} | {took} |")


def version_flag() -> None:
    """Wall time of `--version` in a fresh interpreter: our lazy metadata action vs argparse's."""
    run = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('c', {!r}); "
        "cli = importlib.util.module_from_spec(spec); spec.loader.exec_module(cli); "
        "sys.exit(cli.main(['--version']))"
    )
    here = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "keras_saliency_monitor",
        "cli.py",
    )
    commands = {
        "own action, importlib.metadata (before)": run.format(source_at(PRE_SWAP, "cli")),
        "argparse action='version', __version__ (now)": run.format(here),
    }
    got = paired(
        {
            name: lambda c=code: subprocess.run(
                [sys.executable, "-c", c], check=True, stdout=subprocess.DEVNULL
            )
            for name, code in commands.items()
        },
        7,
        clock=time.perf_counter,
    )
    print("\n## `--version` in a fresh interpreter\n\n| version flag | wall ms |\n|---|---:|")
    for name, seconds in got.items():
        print(f"| {name} | {1e3 * seconds:.0f} |")


class _PrunedDraw:
    """The alternative to ``probes._StreamDraw`` that was tried and not kept: every key and id
    is kept, and the held images are pruned to ``probes._draw_keys``' draw of what was seen
    whenever more than 2 * num_probes are held (fewer lines, no bisect or cuts)."""

    def __init__(self, num_probes, seed):
        from keras_saliency_monitor.monitor import probes

        self._draw_keys = probes._draw_keys
        self._rng, self._n = np.random.default_rng(seed), num_probes
        self._keys, self._ids, self._held, self.seen = [], [], {}, 0

    def _draw(self, by_position=False):
        ids = None if by_position else np.concatenate(self._ids)
        return self._draw_keys(ids, np.concatenate(self._keys), self._n)

    def add(self, x, ids, y):
        self._keys.append(self._rng.random(len(x)))
        self._ids.append(np.zeros(len(x), np.int64) if ids is None else np.asarray(ids, np.int64))
        new = range(self.seen, self.seen + len(x))
        if len(self._held) + len(x) > 2 * self._n:
            keep = set(self._draw().tolist())
            self._held = {p: item for p, item in self._held.items() if p in keep}
            new = [p for p in new if p in keep]
        for p in new:
            j = p - self.seen
            self._held[p] = (np.array(x[j]), None if y is None else np.array(y[j]))
        self.seen += len(x)

    def result(self, by_position):
        positions = self._draw(by_position)
        items = [self._held[p] for p in positions.tolist()]
        x = np.stack([image for image, _ in items])
        y = None if items[0][1] is None else np.stack([label for _, label in items])
        return positions, x, y, np.concatenate(self._ids)[positions]


def seams() -> None:
    """Logits through the gradient runners, the pruned streaming draw, scipy's softmax."""
    import keras

    from keras_saliency_monitor.attribution import gradients, targets
    from keras_saliency_monitor.monitor import probes

    old_gradients = _module_at(PRE_SWAP, "gradients")
    old_targets = _module_at(PRE_SWAP, "targets")
    print(f"\n## gradients, probes, targets: today against `{PRE_SWAP}`\n")
    print("| piece | before | after | same result |")
    print("|---|---:|---:|---|")

    # Explainer.logits (object reliance, every logged epoch): 2 x 32 probes of 64x64, chunks of 32.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    x = np.random.default_rng(0).random((64, 64, 64, 3), np.float32)
    logits_fn, head = targets.build_logits_fn(model)
    make = dict(batch_size=32, variables=list(model.variables))
    before = old_gradients.CompiledLogits(logits_fn, (64, 64, 3), **make)
    after = gradients.CompiledLogits(logits_fn, (64, 64, 3), **make)
    same = np.array_equal(before(x), after(x))
    t = paired({"before": lambda: before(x), "after": lambda: after(x)}, 25, time.process_time)
    print(
        f"| `Explainer.logits`, 64 images 64x64 (TF, process CPU) | {1e3 * t['before']:.2f} ms "
        f"| {1e3 * t['after']:.2f} ms | {same} |"
    )
    # The gradient's chunk loop (now also JAX's): 16 probes, then 400 rows as SmoothGrad sends.
    before = old_gradients.InputGradient(logits_fn, head, (64, 64, 3), **make)
    after = gradients.InputGradient(logits_fn, head, (64, 64, 3), **make)
    for n in (16, 400):
        xs, requested = x[np.arange(n) % 64], np.full(n, -1, np.int32)
        call = {
            "before": lambda xs=xs, r=requested: before(xs, r),
            "after": lambda xs=xs, r=requested: after(xs, r),
        }
        same = all(np.array_equal(u, v) for u, v in zip(call["before"](), call["after"]()))
        t = paired(
            call,
            51 if n == 16 else 7,
            time.process_time,  # TensorFlow's own threads included; less noisy than wall here
        )
        print(
            f"| `InputGradient`, {n} images 64x64 (TF, process CPU) | {1e3 * t['before']:.2f} ms "
            f"| {1e3 * t['after']:.2f} ms | {same} |"
        )

    # The streaming draw: 4096 uint8 images 32x32x3, 10 classes, 16 probes, chunks of 1 and 64.
    pool = np.random.default_rng(1).integers(0, 256, (4096, 32, 32, 3), np.uint8)
    labels = np.arange(4096) % 10

    def draw_with(draw_class, batch):
        draw = draw_class(16, 3)
        for i in range(0, len(pool), batch):
            draw.add(pool[i : i + batch], labels[i : i + batch], labels[i : i + batch])
        return draw.result(by_position=False)

    for batch in (1, 64):
        a, b = draw_with(probes._StreamDraw, batch), draw_with(_PrunedDraw, batch)
        same = all(np.array_equal(u, v) for u, v in zip(a, b))
        t = paired(
            {
                "ours": lambda batch=batch: draw_with(probes._StreamDraw, batch),
                "pruned": lambda batch=batch: draw_with(_PrunedDraw, batch),
            },
            5,
        )
        print(
            f"| streaming draw of 16 probes from 4096 images, chunks of {batch}: ours vs pruned "
            f"to `_draw_keys` | {1e3 * t['ours']:.1f} ms | {1e3 * t['pruned']:.1f} ms "
            f"(kept ours) | {same} |"
        )

    # demo_data's background blotches: bilinear 4x4 -> 64x64 upsampling of 300 grids.
    from scipy import ndimage

    from keras_saliency_monitor import demo_data

    coarse = np.random.default_rng(3).uniform(-0.15, 0.15, (300, 4, 4, 3)).astype(np.float32)
    ours = demo_data._upsample(coarse, 64)
    zoom = dict(zoom=(1, 16, 16, 1), order=1, grid_mode=True, mode="nearest")
    error = np.abs(ndimage.zoom(coarse, **zoom) - ours).max()
    t = paired(
        {
            "ours": lambda: demo_data._upsample(coarse, 64),
            "zoom": lambda: ndimage.zoom(coarse, **zoom),
        },
        3,
    )
    print(
        f"| `demo_data._upsample` (ours) vs `scipy.ndimage.zoom`, 300 grids 4 -> 64 | "
        f"{1e3 * t['ours']:.0f} ms | {1e3 * t['zoom']:.0f} ms (kept ours) | max diff {error:.1e} |"
    )

    # targets.confidences, once per logged epoch: 32 probes, 10 classes.
    z = np.random.default_rng(2).normal(size=(32, 10)).astype(np.float32)
    classes = z.argmax(axis=1)
    softmax = targets.ScoreHead("softmax", 10, "")
    a, b = old_targets.confidences(z, classes, softmax), targets.confidences(z, classes, softmax)
    t = paired(
        {
            "before": lambda: old_targets.confidences(z, classes, softmax),
            "after": lambda: targets.confidences(z, classes, softmax),
        },
        51,
    )
    print(
        f"| `targets.confidences`, 32 x 10 softmax | {1e6 * t['before']:.0f} us | "
        f"{1e6 * t['after']:.0f} us | max diff {np.abs(a - b).max():.1e} |"
    )


if __name__ == "__main__":
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"load {os.getloadavg()[0]:.1f}")
    # Sections named on the command line, else all of them.
    for section in sys.argv[1:] or [
        "captions",
        "charts",
        "imports",
        "crc",
        "rendering",
        "report_io",
        "metric_ranks",
        "summaries",
        "last_steps",
        "stuck_exit",
        "version_flag",
        "seams",
    ]:
        globals()[section]()

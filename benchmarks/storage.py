"""What the monitor stores per logged epoch, and what storing it costs the background thread.

The issue's case: 16 probes of 224x224, MobileNetV2 (``weights=None``), vanilla gradients. In one
process this script measures:

1. **Choice of map storage** (``store.encode_maps``): for each stored side (56, 112, 224 px),
   encoding (``linear8``, ``sqrt8``) and PNG zlib level (1, 6, 9): bytes of the maps PNG, encode
   time, and fidelity: the overlay re-rendered from the decoded maps against the overlay rendered
   from the float maps at the same resolution (quantisation only), and against the full-size
   float overlay (quantisation + downsampling, what a reader shows when it scales the stored map
   up). Errors are in 0..255 RGB levels (mean and 99th percentile of |difference|). Two kinds of
   maps: raw vanilla gradients of the untrained model (speckle) and the same smoothed with
   sigma 4 px (closer to what a trained model's saliency looks like).
2. **Bytes per logged epoch**: the growth of the event file of ``<log_dir>/saliency`` per logged
   epoch written by the monitor's background job, and the first epoch's extra (the probe set,
   written once per fit). For reference, the storage before issue 10 (a 1024 px grid of
   full-size overlays plus one PNG tile per probe), emulated with the same writer.
3. **Background CPU per logged epoch**: the thread CPU time of the monitor's write job
   (``SaliencyMonitor._write_epoch``: render the grid, encode the maps and the grid, write,
   flush) against the **gradient floor**: one compiled, batched ``GradientTape`` pass over the 16
   probes (``overhead.Floor``, written independently of the package). Pairs alternate their
   order; ratios are medians of per-pair ratios. The job's wall time is reported too, and where
   its time goes.

Usage::

    python benchmarks/storage.py            # ~3 min on 2 busy cores
    python benchmarks/storage.py --quick    # fewer pairs and configurations
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from overhead import Floor, make_images, median, ms  # noqa: E402

from keras_saliency_monitor import SaliencyMonitor  # noqa: E402
from keras_saliency_monitor.drawing import render
from keras_saliency_monitor.storage import store
from keras_saliency_monitor.storage import writer as writer_module  # noqa: E402

SIZE = 224
PROBES = 16
CLASSES = 10


def build_model() -> keras.Model:
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def event_bytes(directory: str) -> int:
    return sum(
        os.path.getsize(os.path.join(directory, name))
        for name in os.listdir(directory)
        if "tfevents" in name
    )


# --------------------------------------------------------------------------------------------------
# (1) map storage: bytes, time, fidelity
# --------------------------------------------------------------------------------------------------


def _overlay(backdrop, maps):
    return render.heat_overlays(backdrop, maps, alpha=0.8).astype(np.int16)


def _errors(a, b) -> tuple[float, float]:
    diff = np.abs(a - b)
    return float(diff.mean()), float(np.percentile(diff, 99))


def storage_choices(maps_by_kind, display, levels, sides, reps) -> list[dict]:
    rows = []
    for kind, maps in maps_by_kind.items():
        full = _overlay(render.dim_grey(display), maps)
        for side in sides:
            factor = render.tile_factor(maps.shape[1:], side)
            small = store.downsample_maps(maps, side)
            backdrop = render.dim_grey(render.downscale_images(display, factor))
            exact = _overlay(backdrop, small)
            for encoding in store.ENCODINGS:
                for level in levels:
                    times = []
                    for _ in range(reps):
                        start = time.thread_time()
                        blobs = store.encode_maps(
                            small,
                            step=0,
                            classes=[0] * len(maps),
                            encoding=encoding,
                            max_side=side,
                            compress_level=level,
                            flat=[False] * len(maps),
                        )
                        times.append(time.thread_time() - start)
                    info = json.loads(blobs[0])
                    decoded = store.decode_maps(blobs[1], info)
                    quant = _errors(_overlay(backdrop, decoded), exact)
                    up = decoded.repeat(factor, axis=1).repeat(factor, axis=2)
                    up = up[:, : maps.shape[1], : maps.shape[2]]
                    scaled = _errors(_overlay(render.dim_grey(display), up), full)
                    rows.append(
                        dict(
                            kind=kind,
                            side=small.shape[1],
                            encoding=encoding,
                            level=level,
                            bytes=len(blobs[1]) + len(blobs[0]),
                            ms=1e3 * median(times),
                            quant=quant,
                            scaled=scaled,
                        )
                    )
    return rows


# --------------------------------------------------------------------------------------------------
# (2) + (3) bytes per epoch and the write job against the floor
# --------------------------------------------------------------------------------------------------


class _Parts:
    """Thread CPU time spent inside some functions while active (wrapped on the class/module)."""

    def __init__(self, targets):
        self.totals = {name: 0.0 for name, _, _ in targets}
        self._undo = []
        for name, owner, attr in targets:
            original = getattr(owner, attr)

            def wrapped(*args, _original=original, _name=name, **kwargs):
                start = time.thread_time()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.totals[_name] += time.thread_time() - start

            setattr(owner, attr, wrapped)
            self._undo.append((owner, attr, original))

    def restore(self):
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


def write_job_vs_floor(model, x, y, pairs) -> dict:
    log_dir = tempfile.mkdtemp(prefix="ksm-storage-")
    try:
        monitor = SaliencyMonitor(log_dir, (x, y), num_probes=PROBES, background=False, strict=True)
        monitor.set_model(model)
        monitor.on_train_begin()
        floor = Floor(model)
        probes = monitor.probes.x
        explanation = monitor.explainer.explain(probes, monitor.probes.labels)
        numbers, per_probe = monitor._measure(explanation)
        broken = np.zeros(len(probes), bool)
        events = os.path.join(log_dir, "saliency")
        sizes = []

        def job(epoch):
            before = event_bytes(events) if os.path.isdir(events) else 0
            cpu, wall = time.thread_time(), time.perf_counter()
            monitor._write_epoch(epoch, explanation, numbers, per_probe, None, broken)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            sizes.append(event_bytes(events) - before)
            return cpu, wall

        for _ in range(2):  # warm-up: compiled gradient, font and colormap caches
            floor(probes)
        epoch = 0
        job(epoch)  # the first logged epoch also writes the probe set
        epoch += 1
        floors, cpus, walls = [], [], []
        for rep in range(pairs):
            if rep % 2 == 0:
                start = time.perf_counter()
                floor(probes)
                f = time.perf_counter() - start
                c, w = job(epoch)
            else:
                c, w = job(epoch)
                start = time.perf_counter()
                floor(probes)
                f = time.perf_counter() - start
            epoch += 1
            floors.append(f)
            cpus.append(c)
            walls.append(w)
        parts = _Parts(
            [
                ("render overlays", render, "heat_overlays"),
                ("compose grid", render, "make_grid"),
                ("encode maps (+JSON)", store, "encode_maps"),
                ("grid JPEG", store, "image_blobs"),
                ("flush + fsync", writer_module.EventWriter, "flush"),
            ]
        )
        try:
            total = 0.0
            for _ in range(max(3, pairs // 2)):
                c, _ = job(epoch)
                total += c
                epoch += 1
        finally:
            parts.restore()
        share = {name: t / total for name, t in parts.totals.items()}
        grid = _last_grid(monitor, explanation, numbers, per_probe, broken, epoch)
        grid_shape = None
        provider, ctx, eid = store.open_logdir(log_dir)
        steps = store.read_run(provider, ctx, eid, store.saliency_runs(provider, ctx, eid)[0])
        from tensorboard.backend.event_processing import plugin_event_accumulator as pea

        acc = pea.EventAccumulator(events, size_guidance={pea.TENSORS: 1})
        acc.Reload()
        event = acc.Tensors("saliency/overlays")[-1]
        grid_shape = [int(v) for v in event.tensor_proto.string_val[:2]]
        return dict(
            floor=median(floors),
            cpu=median(cpus),
            wall=median(walls),
            cpu_ratio=median([c / f for c, f in zip(cpus, floors)]),
            wall_ratio=median([w / f for w, f in zip(walls, floors)]),
            first_bytes=sizes[0],
            bytes=median(sizes[1:]),
            share=share,
            grid_wh=grid_shape,
            grid_png=len(event.tensor_proto.string_val[2]),
            grid=grid,
            steps=len(steps["steps"]),
            pairs=pairs,
        )
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def _last_grid(monitor, explanation, numbers, per_probe, broken, epoch):
    """The grid (uint8) the write job draws, caught on its way to the encoder."""
    caught = []
    make_grid = render.make_grid

    def catch(*args, **kwargs):
        caught.append(make_grid(*args, **kwargs))
        return caught[-1]

    render.make_grid = catch
    try:
        monitor._write_epoch(epoch, explanation, numbers, per_probe, None, broken)
    finally:
        render.make_grid = make_grid
    return caught[-1]


def grid_encodings(grid, reps) -> list[tuple[str, int, float]]:
    """Bytes and thread CPU ms of the grid as PNG (the writer's settings, and zlib 6) and JPEG."""
    from PIL import Image

    image = Image.fromarray(grid)
    candidates = {
        "PNG zlib 1 + Z_RLE (EventWriter.add_images)": lambda: writer_module._encode_png(grid),
        "PNG zlib 6": lambda: _save(image, format="PNG", compress_level=6),
    }
    for quality in (85, 90, 95):
        candidates[f"JPEG quality {quality}"] = lambda q=quality: _save(
            image, format="JPEG", quality=q
        )
    rows = []
    for name, encode in candidates.items():
        times = []
        for _ in range(reps):
            start = time.thread_time()
            data = encode()
            times.append(time.thread_time() - start)
        rows.append((name, len(data), 1e3 * median(times)))
    return rows


def _save(image, **kwargs) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, **kwargs)
    return out.getvalue()


def previous_storage_bytes(model, x, y) -> dict:
    """Bytes and thread CPU of one epoch as written before issue 10: a 1024 px grid of full-size
    overlays and captions, plus one overlay PNG per probe (``saliency/probes``)."""
    log_dir = tempfile.mkdtemp(prefix="ksm-storage-old-")
    try:
        monitor = SaliencyMonitor(log_dir, (x, y), num_probes=PROBES, background=False)
        monitor.set_model(model)
        monitor.on_train_begin()
        explanation = monitor.explainer.explain(monitor.probes.x, monitor.probes.labels)
        display = monitor._log.display
        w = writer_module.EventWriter(log_dir)
        cpu = []
        for step in range(3):
            start = time.thread_time()
            overlays = render.heat_overlays(render.dim_grey(display), explanation.maps)
            captions = [f"true {c}  pred {c} 0.50" for c in monitor.probes.labels]
            grid = render.make_grid(display, overlays, captions, max_width=1024)
            w.add_images("saliency/overlays", grid, step)
            w.add_images("saliency/probes", overlays, step)
            w.flush()
            cpu.append(time.thread_time() - start)
        w.close()
        return dict(bytes=event_bytes(log_dir) / 3, cpu=median(cpu))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def machine() -> str:
    try:
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    import tensorflow as tf

    return (
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, nproc={os.cpu_count()}"
        f", load average {load}, Python {platform.python_version()}, TensorFlow {tf.__version__},"
        f" Keras {keras.__version__}, NumPy {np.__version__}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs and configurations")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(machine())
    keras.utils.set_random_seed(0)
    model = build_model()
    x, y = make_images(PROBES, SIZE)
    y = y % CLASSES

    job = write_job_vs_floor(model, x, y, pairs=5 if args.quick else 11)
    print(
        f"\n## Per logged epoch, {PROBES} probes of {SIZE}x{SIZE}, MobileNetV2 (weights=None), "
        f"{job['pairs']} pairs\n"
    )
    print("| quantity | value | target |")
    print("|---|---:|---:|")
    print(f"| gradient floor (wall) | {ms(job['floor'])} ms | |")
    print(f"| write job, thread CPU | {ms(job['cpu'])} ms | |")
    print(f"| write job CPU / floor | **{job['cpu_ratio']:.3f}** | <= 0.25 |")
    print(f"| write job wall / floor | {job['wall_ratio']:.3f} | |")
    print(f"| events per logged epoch | **{job['bytes'] / 1e6:.3f} MB** | <= 1 MB |")
    print(f"| first logged epoch (with the probe set) | {job['first_bytes'] / 1e6:.3f} MB | |")
    w, h = job["grid_wh"]
    print(f"| grid image | {w}x{h} px, {job['grid_png'] / 1e3:.0f} kB | |")
    print("\nShare of the write job's thread CPU:\n")
    print("| part | share |")
    print("|---|---:|")
    for name, share in job["share"].items():
        print(f"| {name} | {100 * share:.0f}% |")

    h, w = job["grid"].shape[:2]
    print(f"\nGrid encodings ({w}x{h} px, the write job's own grid):\n")
    print("| encoding | bytes | thread CPU ms |")
    print("|---|---:|---:|")
    for name, size, cpu_ms in grid_encodings(job["grid"], reps=3 if args.quick else 7):
        print(f"| {name} | {size:,} | {cpu_ms:.1f} |")

    old = previous_storage_bytes(model, x, y)
    print(
        f"\nBefore issue 10 (emulated: 1024 px grid of full-size overlays + {PROBES} tile PNGs): "
        f"{old['bytes'] / 1e6:.2f} MB per logged epoch, {ms(old['cpu'])} ms thread CPU "
        f"({old['cpu'] / job['floor']:.2f}x the floor above)."
    )

    explanation = SaliencyMonitor(
        tempfile.mkdtemp(prefix="ksm-storage-x-"), (x, y), num_probes=PROBES
    )
    explanation.set_model(model)
    explanation.on_train_begin()
    raw = explanation.explainer.explain(explanation.probes.x).maps
    maps_by_kind = {
        "raw vanilla": raw,
        "smoothed (sigma 4)": render.smooth_maps(raw, 4.0),
        "heavy-tailed (raw^3)": raw**3,
    }
    sides = (112,) if args.quick else (56, 112, 224)
    levels = (1, 6) if args.quick else (1, 6, 9)
    rows = storage_choices(
        maps_by_kind, explanation._log.display, levels, sides, reps=3 if args.quick else 5
    )
    print("\n## Map storage: bytes per epoch (16 maps), encode time, fidelity of the overlay\n")
    print(
        "| maps | side | encoding | zlib | bytes | encode ms | quantisation: mean / p99 | "
        "scaled up to 224: mean / p99 |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['side']} | {r['encoding']} | {r['level']} | {r['bytes']:,} | "
            f"{r['ms']:.1f} | {r['quant'][0]:.2f} / {r['quant'][1]:.0f} | "
            f"{r['scaled'][0]:.2f} / {r['scaled'][1]:.0f} |"
        )
    print(f"\nTook {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

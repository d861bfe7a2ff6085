"""How much training time SaliencyMonitor costs, measured against the physical floor.

The floor of gradient saliency is one compiled, batched forward + backward pass over the probe
batch. This script writes that floor itself (its own ``tf.function`` around a ``GradientTape``, on
the same model and the same probes, warmed up) and measures, in one process, pair by pair
(floor and monitor alternate, the order flips every pair):

* ``block``: how long ``SaliencyMonitor.on_epoch_end`` holds the training thread (the hooks are
  driven directly: ``set_model``, ``on_train_begin``, then ``on_epoch_end`` with fake logs; the
  background writer is idle when the call starts);
* ``total``: the whole work of one epoch, ``on_epoch_end`` plus the time until the background
  worker has rendered, PNG-encoded and written the epoch;

for 8/32/128 probes, 64x64 and 128x128 images and every method registered in
``attribution.methods.METHODS`` at run time, on a small 3-conv CNN. Ratios are medians
of per-pair ratios. After each configuration ``on_train_end`` runs and the event file is read back
with TensorBoard's reader: every epoch's grid must be there.

Then:

* where the time over the floor goes (the pieces of ``on_epoch_end`` timed by wrapping them);
* back-pressure: does ``submit`` wait for the writer when epochs come back to back (tight loop),
  and when each epoch trains for about a second (realistic loop)?
* the slope: block time vs probes (vanilla) and vs samples (smoothgrad), with a fitted line;
* the monitor's share of a demo-like training epoch (``model.fit`` with and without it,
  alternating);
* the sanity check (``sanity_cost``, its own section): what the once-per-fit model-randomisation
  check costs, per randomised block, in saliency passes of the same method.

Usage::

    python benchmarks/overhead.py            # full run, ~10 min on 2 cores
    python benchmarks/overhead.py --quick    # a subset, < 2 min
    python benchmarks/overhead.py --sanity   # the sanity check's section only, < 1 min

Timings on a shared machine are noisy: only ratios measured in this one process mean much.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the floor and the monitor on the same CPU
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from keras_saliency_monitor import SaliencyMonitor  # noqa: E402
from keras_saliency_monitor.attribution import methods

GRID_TAG = "saliency/overlays"
# A model that has learned its training data (training skill 0.93): the alarm's forward passes
# (interventions, issue 22) run only from then on, so this is the cost a training run pays.
FAKE_LOGS = {"loss": 0.2, "accuracy": 0.95}
NUM_CLASSES = 3
# The methods of the issue, in table order; any other registered method is appended.
KNOWN_METHODS = ("vanilla", "gradient_x_input", "smoothgrad", "integrated_gradients", "gradcam")
# Private pieces of on_epoch_end timed when they exist (the callback is free to change them).
WRAPPED_HOOK_PARTS = ("_measure", "_numbers", "_check_alarm")


# --------------------------------------------------------------------------------------------------
# Model, data and the floor
# --------------------------------------------------------------------------------------------------


def build_cnn(size: int) -> keras.Model:
    """The small 3-conv CNN of the issue: Conv 16/32/64 with pooling, GAP, Dense softmax."""
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def make_images(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Demo-like shape images when the demo data module is there, else smooth random images."""
    try:
        from keras_saliency_monitor.demo_data import make_shapes

        data = make_shapes(n, image_size=size, num_classes=NUM_CLASSES, seed=seed)
        return data.x.astype(np.float32), data.y.astype(np.int32)
    except ImportError:
        rng = np.random.default_rng(seed)
        coarse = rng.random((n, size // 8, size // 8, 3), dtype=np.float32)
        x = coarse.repeat(8, axis=1).repeat(8, axis=2)
        x += rng.normal(0, 0.08, x.shape).astype(np.float32)
        return x, (np.arange(n) % NUM_CLASSES).astype(np.int32)


class Floor:
    """One compiled, batched GradientTape gradient of the predicted class's logit.

    Written here, independently of the package: the logits are the Dense head's kernel and bias
    applied to the features (the softmax left out), the score is the largest logit per example,
    and the result is brought back to numpy, as any monitor has to.
    """

    def __init__(self, model: keras.Model):
        head = model.layers[-1]
        features = keras.Model(model.inputs, head.input)
        shape = tuple(model.inputs[0].shape[1:])

        @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32)])
        def gradient(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = tf.matmul(features(x, training=False), head.kernel) + head.bias
                score = tf.reduce_sum(tf.reduce_max(logits, axis=1))
            return tape.gradient(score, x)

        self._gradient = gradient

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._gradient(x).numpy()


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def present_methods() -> list[str]:
    names = list(methods.METHODS)
    return [m for m in KNOWN_METHODS if m in names] + [m for m in names if m not in KNOWN_METHODS]


def method_options(name: str, n: int) -> tuple[dict, int]:
    """Options giving ``name`` n samples or steps (if it has them), and its number of passes."""
    defaults = methods.METHODS[name].defaults
    for key in ("samples", "steps", "num_samples", "n_samples", "num_steps"):
        if key in defaults:
            return {key: n}, n
    return {}, 1


def timed(fn, *args, **kwargs) -> float:
    """Wall time of one call, in seconds (arguments are built before the clock starts)."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def median(values) -> float:
    return float(statistics.median(values))


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f}"


def drain_fn(monitor):
    """The monitor's 'wait until the background writer is done', or None without one."""
    worker = monitor._writing.worker
    drain = getattr(worker, "drain", None)
    if drain is None:
        return None

    def run():
        errors = drain()
        if errors:
            raise RuntimeError(f"background job failed: {errors[0].exception!r}")

    return run


@contextlib.contextmanager
def monitor_faults_are_errors():
    """The monitor turns faults into warnings; a benchmark must not time a failing monitor."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, RuntimeWarning) and str(w.message).startswith("SaliencyMonitor"):
            raise RuntimeError(f"the monitor faulted during the benchmark: {w.message}")


def grid_steps(log_dir: str) -> list[int]:
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(os.path.join(log_dir, "saliency"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    try:
        return sorted(e.step for e in acc.Tensors(GRID_TAG))
    except KeyError:
        return []


def start_monitor(model, x, y, log_dir, method, options, **kwargs) -> SaliencyMonitor:
    # strict: a fault raises out of the hook instead of becoming a warning and a skipped image,
    # so the benchmark never times a monitor that silently does less.
    monitor = SaliencyMonitor(
        log_dir, (x, y), num_probes=len(x), method=method, strict=True, **options, **kwargs
    )
    monitor.set_model(model)
    monitor.on_train_begin()
    return monitor


# --------------------------------------------------------------------------------------------------
# (1) floor / block / total
# --------------------------------------------------------------------------------------------------


def measure_config(model, floor, x, y, method, n, reps, warmup=2, **extra) -> dict:
    options, passes = method_options(method, n)
    log_dir = tempfile.mkdtemp(prefix="ksm-bench-")
    try:
        with monitor_faults_are_errors():
            monitor = start_monitor(model, x, y, log_dir, method, options, **extra)
            drain = drain_fn(monitor)
            probes = monitor.probes.x  # the same images, in the monitor's order
            epoch = 0
            for _ in range(warmup):
                floor(probes)
                monitor.on_epoch_end(epoch, dict(FAKE_LOGS))
                epoch += 1
                if drain:
                    drain()
            floors, blocks, totals = [], [], []
            for rep in range(reps):

                def run_monitor():
                    nonlocal epoch
                    block = timed(monitor.on_epoch_end, epoch, dict(FAKE_LOGS))
                    wait = timed(drain) if drain else 0.0
                    epoch += 1
                    return block, block + wait

                if rep % 2 == 0:  # alternate the order inside the pair
                    f = timed(floor, probes)
                    b, t = run_monitor()
                else:
                    b, t = run_monitor()
                    f = timed(floor, probes)
                floors.append(f)
                blocks.append(b)
                totals.append(t)
            monitor.on_train_end()
        steps = grid_steps(log_dir)
        complete = steps == list(range(epoch))
        traces = getattr(monitor.explainer, "trace_count", None)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    f = np.asarray(floors)
    return dict(
        method=method,
        probes=len(x),
        size=x.shape[1],
        passes=passes,
        options=options,
        floor=median(f),
        block=median(blocks),
        total=median(totals),
        block_ratio=median(np.asarray(blocks) / f),
        total_ratio=median(np.asarray(totals) / f),
        block_per_pass=median(np.asarray(blocks) / (passes * f)),
        images_complete=complete,
        traces=traces,
    )


TABLE_HEADER = (
    "| method | probes | size | n | floor ms | block ms | block/floor | block/(n*floor) "
    "| total ms | total/floor | all images | traces |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|"
)


def table_row(r) -> str:
    return (
        f"| {r['method']} | {r['probes']} | {r['size']}x{r['size']} | {r['passes']} "
        f"| {ms(r['floor'])} | {ms(r['block'])} | {r['block_ratio']:.2f} "
        f"| {r['block_per_pass']:.2f} | {ms(r['total'])} | {r['total_ratio']:.2f} "
        f"| {'yes' if r['images_complete'] else 'NO'} | {r['traces']} |"
    )


# --------------------------------------------------------------------------------------------------
# (2) where the time over the floor goes
# --------------------------------------------------------------------------------------------------


class _Timer:
    """Wraps a callable and adds its wall time to a list (delegates attributes)."""

    def __init__(self, fn, sink: list):
        self._fn, self._sink = fn, sink

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._fn(*args, **kwargs)
        finally:
            self._sink.append(time.perf_counter() - start)

    def __getattr__(self, name):
        return getattr(self._fn, name)


def _instrument(monitor) -> dict[str, list]:
    """Time the pieces of on_epoch_end by wrapping them on this instance only."""
    parts: dict[str, list] = {}
    explainer = monitor.explainer
    if getattr(explainer, "_grad", None) is not None:
        # Every gradient pass (the compiled call, chunking, numpy conversion) goes through _grad.
        parts["gradient calls"] = []
        explainer._grad = _Timer(explainer._grad, parts["gradient calls"])
    parts["explain"] = []
    explainer.explain = _Timer(explainer.explain, parts["explain"])
    # The alarm's forward passes on painted probes (interventions, object reliance), in numbers.
    parts["painted forward"] = []
    explainer.logits = _Timer(explainer.logits, parts["painted forward"])
    for name in WRAPPED_HOOK_PARTS:
        if callable(getattr(monitor, name, None)):
            parts[name] = []
            setattr(monitor, name, _Timer(getattr(monitor, name), parts[name]))
    parts["_wait_for_writes"] = []  # the bounded wait for the previous epoch's write job
    monitor._writing.wait = _Timer(monitor._writing.wait, parts["_wait_for_writes"])
    worker = monitor._writing.worker
    if worker is not None:
        parts["submit"] = []
        worker.submit = _Timer(worker.submit, parts["submit"])
    return parts


def profile_parts(model, floor, x, y, method, n, reps, masks=None, label=None) -> dict:
    options, passes = method_options(method, n)
    log_dir = tempfile.mkdtemp(prefix="ksm-bench-")
    extra = {} if masks is None else {"masks": masks}
    try:
        with monitor_faults_are_errors():
            monitor = start_monitor(model, x, y, log_dir, method, options, **extra)
            drain = drain_fn(monitor)
            for epoch in range(2):
                monitor.on_epoch_end(epoch, dict(FAKE_LOGS))
                if drain:
                    drain()
            parts = _instrument(monitor)
            floors, calls = [], []
            per_epoch: dict[str, list] = {name: [] for name in parts}
            for rep in range(reps):
                epoch = 2 + rep
                floors.append(timed(floor, monitor.probes.x))
                seen = {name: len(values) for name, values in parts.items()}
                calls.append(timed(monitor.on_epoch_end, epoch, dict(FAKE_LOGS)))
                for name, values in parts.items():
                    # A piece called several times per epoch (chunks, samples): the sum.
                    per_epoch[name].append(sum(values[seen[name] :]))
                if drain:
                    drain()
            monitor.on_train_end()
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    out = {"label": label or f"{method} {len(x)}x{x.shape[1]}", "floor": median(floors)}
    out["on_epoch_end"] = median(calls)
    for name, values in per_epoch.items():
        out[name] = median(values)
    return out


def print_profile(profiles):
    print("\nWhere the time goes (medians, ms; pieces are nested: explain contains the gradient")
    print("calls; numbers = _measure/_numbers, which contains the painted probes' forward passes;")
    print("the rest of on_epoch_end is everything not listed)")
    for p in profiles:
        floor = p["floor"]
        explain = p.get("explain", float("nan"))
        grad = p.get("gradient calls", float("nan"))
        numbers = p.get("_measure", p.get("_numbers", 0.0))
        forward = p.get("painted forward", 0.0)
        alarm = p.get("_check_alarm", 0.0)
        submit = p.get("submit", 0.0)
        wait = p.get("_wait_for_writes", 0.0)
        rest = p["on_epoch_end"] - explain - numbers - alarm - submit - wait
        print(
            f"  {p['label']:<34} floor {ms(floor):>6} | on_epoch_end {ms(p['on_epoch_end']):>6} "
            f"({p['on_epoch_end'] / floor:.2f}x) = gradient calls {ms(grad)} "
            f"(+{ms(grad - floor)} over floor) + rest of explain {ms(explain - grad)} "
            f"+ numbers {ms(numbers)} (of which painted forward {ms(forward)}, "
            f"{forward / floor:.2f}x) + alarm {ms(alarm)} + wait for last write {ms(wait)} "
            f"+ submit {ms(submit)} + other {ms(rest)}",
            flush=True,
        )


# --------------------------------------------------------------------------------------------------
# (3) back-pressure: tight loop vs a realistic loop
# --------------------------------------------------------------------------------------------------


def backpressure(model, x, y, epochs, gap_seconds, train_data) -> dict:
    """on_epoch_end called `epochs` times with no drain in between.

    gap_seconds = 0: back to back (tight loop). Otherwise about that many seconds of real
    training steps of the same model between calls, as in a fit.
    """
    log_dir = tempfile.mkdtemp(prefix="ksm-bench-")
    tx, ty = train_data
    try:
        with monitor_faults_are_errors():
            monitor = start_monitor(model, x, y, log_dir, "vanilla", {})
            drain = drain_fn(monitor)
            monitor.on_epoch_end(0, dict(FAKE_LOGS))
            if drain:
                drain()
            # Where the training thread can wait for the writer: the queue in submit, or a wait
            # for the previous epoch's write at the start of on_epoch_end.
            submits: list = []
            worker = monitor._writing.worker
            if worker is not None:
                worker.submit = _Timer(worker.submit, submits)
            waits: list = []
            monitor._writing.wait = _Timer(monitor._writing.wait, waits)
            blocks, waited = [], []
            batch = 0
            for epoch in range(1, epochs + 1):
                if gap_seconds:
                    start = time.perf_counter()
                    while time.perf_counter() - start < gap_seconds:
                        i = (batch * 32) % (len(tx) - 32)
                        model.train_on_batch(tx[i : i + 32], ty[i : i + 32])
                        batch += 1
                seen = len(submits), len(waits)
                blocks.append(timed(monitor.on_epoch_end, epoch, dict(FAKE_LOGS)))
                waited.append(sum(submits[seen[0] :]) + sum(waits[seen[1] :]))
            end = timed(monitor.on_train_end)
        complete = grid_steps(log_dir) == list(range(epochs + 1))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    waited = np.asarray(waited)
    return dict(
        block=median(blocks),
        wait=median(waited),
        wait_max=float(waited.max()),
        waited=int((waited > 2e-3).sum()),
        epochs=epochs,
        train_end=end,
        complete=complete,
    )


# --------------------------------------------------------------------------------------------------
# (4) slope: cost vs probes x samples
# --------------------------------------------------------------------------------------------------


def fit_line(xs, ys) -> tuple[float, float, float]:
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = slope * xs + intercept
    r2 = 1 - ((ys - pred) ** 2).sum() / max(((ys - ys.mean()) ** 2).sum(), 1e-30)
    return slope, intercept, r2


def slopes(model_by_size, size, probe_counts, sample_counts, reps, data) -> list[str]:
    lines = []
    model = model_by_size[size]
    floor = Floor(model)
    rows = []
    for p in probe_counts:
        x, y = data(p, size)
        rows.append(measure_config(model, floor, x, y, "vanilla", 1, reps))
    s, c, r2 = fit_line(probe_counts, [r["block"] for r in rows])
    fs, fc, fr2 = fit_line(probe_counts, [r["floor"] for r in rows])
    lines.append(
        f"vanilla, {size}x{size}, probes {probe_counts}: block = {1e3 * s:.3f} ms/probe x probes "
        f"+ {1e3 * c:.1f} ms (R^2 {r2:.3f}); floor = {1e3 * fs:.3f} ms/probe + {1e3 * fc:.1f} ms "
        f"(R^2 {fr2:.3f}); slope ratio {s / fs:.2f}"
    )
    if "smoothgrad" in methods.METHODS:
        x, y = data(32, size)
        rows = [
            measure_config(model, floor, x, y, "smoothgrad", n, max(7, reps // 2))
            for n in sample_counts
        ]
        # In units of the floor measured in the same pairs: robust to the load drifting
        # between configurations on a shared machine.
        s, c, r2 = fit_line(sample_counts, [r["block_ratio"] for r in rows])
        f = median([r["floor"] for r in rows])
        lines.append(
            f"smoothgrad, 32 probes {size}x{size}, samples {sample_counts}: block = "
            f"{s:.3f} floor/sample x samples + {c:.2f} floor (R^2 {r2:.3f}); with the median "
            f"floor of {ms(f)} ms: {1e3 * s * f:.1f} ms per sample = "
            f"{1e3 * s * f / 32:.3f} ms per probe x sample"
        )
    else:
        lines.append("smoothgrad: not registered in methods.METHODS yet, slope vs samples skipped")
    return lines


# --------------------------------------------------------------------------------------------------
# (5) share of a demo-like training epoch
# --------------------------------------------------------------------------------------------------


def demo_share(pairs, epochs, n_train) -> dict:
    """Wall and process CPU time of model.fit with and without the monitor, alternating.

    CPU time (all threads of this process) is much less disturbed by other processes on a
    shared machine than wall time, and it counts the background writer's work too.
    """
    try:
        from keras_saliency_monitor.demo_data import make_demo_splits

        splits = make_demo_splits(n_train=n_train, n_val=300, n_probes=24, image_size=64)
        train, val, probes = splits["train_clean"], splits["val"], splits["probes_clean"]
        tx, ty, vx, vy = train.x, train.y, val.x, val.y
        px, py, masks = probes.x, probes.y, probes.masks
        source = "demo_data.make_demo_splits"
    except ImportError:
        tx, ty = make_images(n_train, 64, seed=1)
        vx, vy = make_images(300, 64, seed=2)
        px, py = make_images(24, 64, seed=3)
        masks = None
        source = "synthetic 64x64 (demo_data not importable)"
    keras.utils.set_random_seed(0)
    model = build_cnn(64)
    fit_args = dict(batch_size=32, validation_data=(vx, vy), verbose=0)
    log_dir = tempfile.mkdtemp(prefix="ksm-bench-")
    extra = {} if masks is None else {"masks": masks}
    # One monitor for all fits, as one run: traced once (in the warm-up fit), and each fit's
    # on_train_begin only resets per-run state.
    monitor = SaliencyMonitor(log_dir, (px, py), num_probes=len(px), strict=True, **extra)
    blocks: list = []
    try:
        with monitor_faults_are_errors():
            model.fit(tx, ty, epochs=1, callbacks=[monitor], **fit_args)  # warm-up: all traces
            monitor.on_epoch_end = _Timer(monitor.on_epoch_end, blocks)
            without, with_, cpu_without, cpu_with = [], [], [], []
            for pair in range(pairs):
                for use in (False, True) if pair % 2 == 0 else (True, False):
                    callbacks = [monitor] if use else []
                    cpu = time.process_time()
                    t = timed(model.fit, tx, ty, epochs=epochs, callbacks=callbacks, **fit_args)
                    cpu = time.process_time() - cpu
                    (with_ if use else without).append(t / epochs)
                    (cpu_with if use else cpu_without).append(cpu / epochs)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    diffs = np.asarray(with_) - np.asarray(without)
    cpu_diffs = np.asarray(cpu_with) - np.asarray(cpu_without)
    return dict(
        cpu_without=median(cpu_without),
        cpu_overhead=median(cpu_diffs),
        cpu_share=median(cpu_diffs / np.asarray(cpu_without)),
        spread=(float(diffs.min()), float(diffs.max())),
        source=source,
        n_train=len(tx),
        epochs=epochs,
        pairs=pairs,
        without=median(without),
        with_=median(with_),
        overhead=median(diffs),
        share=median(diffs / np.asarray(without)),
        block=median(blocks) if blocks else float("nan"),
    )


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# The sanity check: once per fit, at most one saliency pass per randomised block
# --------------------------------------------------------------------------------------------------


def sanity_cost(model, x, y, method, options, blocks, reps) -> dict:
    """Time of the callback's sanity check against one saliency pass of the same method.

    The check as the callback runs it (``SanityCheck.run`` with the epoch's maps and classes
    given), in alternating pairs against ``Explainer.explain`` on the same probes (the order flips
    every pair): ``per_block`` = median over pairs of check / (blocks x pass). ``first`` is the
    first check of a monitor, which also copies the model and traces the copy's gradient (once per
    monitor; a later fit re-copies the weights only).
    """
    from keras_saliency_monitor.attribution.explain import Explainer
    from keras_saliency_monitor.attribution.sanity import SanityCheck

    explainer = Explainer(method, **options).bind(model, x.shape[1:])
    trained = explainer.explain(x, y)
    check = SanityCheck(method, max_blocks=blocks, **options)
    first = timed(check.run, model, x, trained.maps, trained.classes, y)
    passes, checks = [], []
    for rep in range(reps):
        sides = [("pass", explainer.explain, (x, y)), ("check", check.run, (model, x))]
        for name, fn, args in sides if rep % 2 == 0 else sides[::-1]:
            extra = (trained.maps, trained.classes, y) if name == "check" else ()
            (passes if name == "pass" else checks).append(timed(fn, *args, *extra))
    ratios = [c / (blocks * p) for c, p in zip(checks, passes)]
    return {
        "pass": median(passes),
        "check": median(checks),
        "per_block": median(ratios),
        "first": first,
        "first_per_block": first / (blocks * median(passes)),
    }


def print_sanity_cost(model, data, reps) -> None:
    print("\nSanity check (once per fit, 4 blocks, 32 probes 64x64; cost in saliency passes):")
    x, y = data(32, 64)
    for method, options in (("vanilla", {}), ("smoothgrad", {"samples": 8})):
        r = sanity_cost(model, x, y, method, options, 4, reps)
        ok = "met" if r["per_block"] <= 1.0 else "NOT met"
        print(
            f"  {method}{' n=8' if options else ''}: one pass {ms(r['pass'])} ms, check "
            f"{ms(r['check'])} ms = {r['per_block']:.2f} passes per block (target <= 1: {ok}); "
            f"a monitor's first check, with the copy and its trace: {ms(r['first'])} ms = "
            f"{r['first_per_block']:.2f} passes per block",
            flush=True,
        )


class _InLine:
    """An executor that runs each call at once on the calling thread: the monitor's forward
    passes made in line, one after the other, as before they went to the worker thread."""

    def submit(self, fn, *args):
        from concurrent import futures

        done = futures.Future()
        done.set_result(fn(*args))
        return done


def worker_vs_in_line(model, floor, x, y, reps, **extra) -> dict:
    """on_epoch_end / floor with the alarm's forward passes on the worker thread (the library)
    and made in line (the same numbers), two monitors on one model, alternated with the floor
    in every pair (the order flips every pair); medians of the per-pair ratios."""
    from keras_saliency_monitor.monitor import epoch_numbers

    on_worker = epoch_numbers._forward_worker
    log_dirs = [tempfile.mkdtemp(prefix="ksm-bench-") for _ in range(2)]
    sides = {}
    try:
        with monitor_faults_are_errors():
            for name, log_dir in zip(("worker", "in line"), log_dirs):
                monitor = start_monitor(model, x, y, log_dir, "vanilla", {}, **extra)
                sides[name] = (monitor, drain_fn(monitor), [])

            def run(name, epoch):
                monitor, drain, ratios = sides[name]
                epoch_numbers._forward_worker = on_worker if name == "worker" else _InLine
                try:
                    block = timed(monitor.on_epoch_end, epoch, dict(FAKE_LOGS))
                finally:
                    epoch_numbers._forward_worker = on_worker
                if drain:
                    drain()
                return block

            for epoch in range(2):  # warm-up: traced, past the first epoch
                for name in sides:
                    run(name, epoch)
            for rep in range(reps):
                names = list(sides) if rep % 2 == 0 else list(sides)[::-1]
                for name in names:
                    f = timed(floor, x)
                    sides[name][2].append(run(name, 2 + rep) / f)
            for monitor, _, _ in sides.values():
                monitor.on_train_end()
    finally:
        for log_dir in log_dirs:
            shutil.rmtree(log_dir, ignore_errors=True)
    return {name: median(ratios) for name, (_, _, ratios) in sides.items()}


def with_training(model, floor, x, y, reps, **extra) -> float:
    """on_epoch_end / floor with 8 training batches before each side (caches as cold as in a
    fit, where the epoch end follows training, not another epoch end); medians of the per-pair
    ratios, the floor first in every pair (each side follows its own training)."""
    tx, ty = make_images(256, x.shape[1], seed=1)

    def train():
        for i in range(0, len(tx), 32):
            model.train_on_batch(tx[i : i + 32], ty[i : i + 32])

    log_dir = tempfile.mkdtemp(prefix="ksm-bench-")
    weights = model.get_weights()
    try:
        with monitor_faults_are_errors():
            monitor = start_monitor(model, x, y, log_dir, "vanilla", {}, **extra)
            drain = drain_fn(monitor)
            ratios = []
            for epoch in range(2 + reps):
                train()
                f = timed(floor, monitor.probes.x)
                train()
                block = timed(monitor.on_epoch_end, epoch, dict(FAKE_LOGS))
                if drain:
                    drain()
                if epoch >= 2:  # warm-up: traced, past the first epoch
                    ratios.append(block / f)
            monitor.on_train_end()
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
        model.set_weights(weights)  # the other sections measure the untrained model
    return median(ratios)


def alarm_cost(reps: int) -> int:
    """Issue 22's targets: on_epoch_end at most 1.5x the floor without masks, 1.75x with.

    Vanilla, 32 probes of 64x64, the library's defaults, a model past the alarm's gate
    (FAKE_LOGS: faked logs, a real model that has not trained), so every forward pass the alarm
    asks for (interventions; with masks, object reliance) runs every epoch; block/floor is the
    median of per-pair ratios, sides alternated. Then where the time goes, with and without
    masks (``profile_parts``), the passes on the worker against in line (``worker_vs_in_line``),
    the ratio with training between epoch ends (``with_training``), and the load average again.
    """
    keras.utils.set_random_seed(0)
    model = build_cnn(64)
    floor = Floor(model)
    x, y = make_images(32, 64, seed=32)
    masks = np.zeros(x.shape[:3], bool)
    masks[:, 16:48, 16:48] = True
    print(f"# alarm cost at defaults (vanilla, 32 probes 64x64, {reps} pairs); {machine()}")
    for label, extra, target in (
        ("without masks", {}, 1.5),
        ("with masks", {"masks": masks}, 1.75),
        ("without masks, interventions off", {"alarm_intervention_threshold": None}, None),
        (
            "with masks, interventions off",
            {"masks": masks, "alarm_intervention_threshold": None},
            None,
        ),
    ):
        r = measure_config(model, floor, x, y, "vanilla", 1, reps, **extra)
        verdict = "" if target is None else f" (target <= {target}: "
        verdict += "" if target is None else ("met)" if r["block_ratio"] <= target else "NOT met)")
        print(
            f"  {label}: floor {ms(r['floor'])} ms, on_epoch_end {ms(r['block'])} ms, "
            f"block/floor {r['block_ratio']:.2f}{verdict}",
            flush=True,
        )
    print_profile(
        [
            profile_parts(model, floor, x, y, "vanilla", 1, reps, label="without masks"),
            profile_parts(model, floor, x, y, "vanilla", 1, reps, masks=masks, label="with masks"),
        ]
    )
    print("\nThe forward passes on the worker thread vs in line (the same numbers), on_epoch_end /")
    print("floor, medians of alternated pairs in one process:")
    models = [("the 3-conv CNN", model, floor, reps)]
    # A model people train, 15x the 3-conv CNN's compute per pixel: the numpy numbers, the same
    # per pixel, weigh less against its gradient; the painted images' forward passes do not.
    keras.utils.set_random_seed(0)
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=NUM_CLASSES)
    resnet.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    models.append(("ResNet50", resnet, Floor(resnet), max(7, reps // 2)))
    for name, net, net_floor, pairs in models:
        for label, extra in (("without masks", {}), ("with masks", {"masks": masks})):
            r = worker_vs_in_line(net, net_floor, x, y, pairs, **extra)
            print(
                f"  {name}, {label} ({pairs} pairs): on the worker {r['worker']:.2f}, "
                f"in line {r['in line']:.2f}",
                flush=True,
            )
    print("\nWith 8 training batches before each side of a pair (as in a fit), on_epoch_end /")
    print("floor on the 3-conv CNN, medians of the per-pair ratios:")
    for label, extra in (("without masks", {}), ("with masks", {"masks": masks})):
        r = with_training(model, floor, x, y, reps, **extra)
        print(f"  {label} ({reps} pairs): {r:.2f}", flush=True)
    print(f"# done; {machine()}")
    return 0


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{os.cpu_count()} CPUs ({cpu}); load average {load}; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, NumPy {np.__version__}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset that runs in < 2 min")
    parser.add_argument("--reps", type=int, default=None, help="pairs per configuration (>= 7)")
    parser.add_argument("--sanity", action="store_true", help="the sanity check's section only")
    parser.add_argument(
        "--alarm", action="store_true", help="only the cost at defaults without and with masks"
    )
    args = parser.parse_args(argv)
    if args.sanity:
        keras.utils.set_random_seed(0)
        print(f"machine: {machine()}")
        print_sanity_cost(build_cnn(64), lambda p, size: make_images(p, size, seed=p), 9)
        return 0
    if args.alarm:
        return alarm_cost(max(7, args.reps or 15))
    quick = args.quick
    reps = max(7, args.reps or (7 if quick else 9))
    probe_counts = (8, 32) if quick else (8, 32, 128)
    sizes = (64,) if quick else (64, 128)
    n = 2 if quick else 8  # samples (smoothgrad) / steps (integrated gradients) in the table
    keras.utils.set_random_seed(0)
    started = time.time()
    print(f"# keras-saliency-monitor overhead benchmark ({'quick' if quick else 'full'})")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/overhead.py{' --quick' if quick else ''}")
    names = present_methods()
    missing = [m for m in KNOWN_METHODS if m not in names]
    print(f"methods: {names}" + (f" (not registered yet, skipped: {missing})" if missing else ""))
    print(f"{reps} pairs per configuration after 2 warm-up calls; medians; ratios are medians of")
    print(f"per-pair ratios; n = samples/steps ({n}) for methods that have them, else 1.\n")

    cache: dict = {}

    def data(p, size):
        if (p, size) not in cache:
            cache[(p, size)] = make_images(p, size, seed=p)
        return cache[(p, size)]

    models = {size: build_cnn(size) for size in sizes}
    rows = []
    print(TABLE_HEADER, flush=True)
    for size in sizes:
        floor = Floor(models[size])
        for p in probe_counts:
            x, y = data(p, size)
            for method in names:
                rows.append(measure_config(models[size], floor, x, y, method, n, reps))
                print(table_row(rows[-1]), flush=True)
    target = [r for r in rows if (r["method"], r["probes"], r["size"]) == ("vanilla", 32, 64)]
    if target:
        r = target[0]
        verdict = "met" if r["block_ratio"] <= 1.25 and r["images_complete"] else "NOT met"
        print(f"\ntarget vanilla 32x64x64x3: block/floor {r['block_ratio']:.2f} <= 1.25: {verdict}")
    for r in rows:
        if r["method"] == "smoothgrad":
            ok = "met" if r["block_per_pass"] <= 1.25 else "NOT met"
            print(
                f"target smoothgrad n={r['passes']} {r['probes']}x{r['size']}: "
                f"block/(n*floor) {r['block_per_pass']:.2f} <= 1.25: {ok}"
            )

    floor64 = Floor(models[64])
    profiles = []
    x, y = data(32, 64)
    for method in names:
        profiles.append(profile_parts(models[64], floor64, x, y, method, n, reps))
    masks = np.zeros(x.shape[:3], bool)
    masks[:, 16:48, 16:48] = True
    profiles.append(
        profile_parts(
            models[64], floor64, x, y, "vanilla", 1, reps, masks, "vanilla 32x64 with masks"
        )
    )
    print_profile(profiles)

    print("\nBack-pressure (vanilla, background writer, no drain between epochs):")
    tx, ty = make_images(256, 64, seed=99)
    cases = [(32, 64, 0.0), (32, 64, 0.5 if quick else 1.0)]
    if not quick:
        cases.append((128, 128, 0.0))
    for p, size, gap in cases:
        x, y = data(p, size)
        if size != 64:
            tx_s, ty_s = make_images(64, size, seed=98)
        else:
            tx_s, ty_s = tx, ty
        epochs = 10 if gap else 20
        b = backpressure(models[size], x, y, epochs, gap, (tx_s, ty_s))
        kind = "tight loop" if not gap else f"~{gap:g} s of training per epoch"
        print(
            f"  {p} probes {size}x{size}, {kind}: block {ms(b['block'])} ms, of which waiting "
            f"for the writer median {ms(b['wait'])} ms max {ms(b['wait_max'])} ms; > 2 ms in "
            f"{b['waited']}/{b['epochs']} epochs; on_train_end {ms(b['train_end'])} ms; "
            f"all images {'yes' if b['complete'] else 'NO'}",
            flush=True,
        )

    print("\nSlope (cost vs probes x samples):")
    sample_counts = (1, 2, 4) if quick else (1, 2, 4, 8, 16, 25)
    probe_slope = (8, 16, 32) if quick else (8, 16, 32, 64, 128)
    for line in slopes(models, 64, probe_slope, sample_counts, reps, data):
        print("  " + line, flush=True)

    print_sanity_cost(models[64], data, reps)

    d = demo_share(pairs=2 if quick else 6, epochs=2, n_train=300 if quick else 1500)
    print(
        f"\nShare of a demo-like epoch ({d['source']}, {d['n_train']} train + 300 val images "
        f"64x64, batch 32, 24 probes with masks, {d['epochs']}-epoch fits, {d['pairs']} pairs): "
        f"epoch {ms(d['without'])} ms without, {ms(d['with_'])} ms with the monitor: "
        f"+{ms(d['overhead'])} ms = {100 * d['share']:.1f}% (median of paired differences; they "
        f"range over {ms(d['spread'][0])}..{ms(d['spread'][1])} ms); on_epoch_end blocks "
        f"{ms(d['block'])} ms. Process CPU time per epoch: {ms(d['cpu_without'])} ms without, "
        f"+{ms(d['cpu_overhead'])} ms = {100 * d['cpu_share']:.1f}% with the monitor (all "
        "threads, the writer's too)"
    )
    print(f"\ntook {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

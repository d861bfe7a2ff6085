"""Cost of each saliency method over the vanilla floor, as ratios measured in one process.

    python benchmarks/methods.py [--reps 9] [--probes 32] [--batch-size 32]

The floor is one compiled, warmed-up ``InputGradient`` call over the probes: the least any
gradient method can cost. Each method runs through ``Explainer.explain`` (what the callback calls
every epoch, including the clean-image call and the host-side work). Floor and method are timed
in alternating pairs of about equal duration, so drift in the machine's load hits both (for
SmoothGrad and IG the floor side of a pair is n back-to-back floor calls; for the other methods
each side is a few back-to-back calls); the table gives per-call medians over the repetitions and
the median of the per-pair ratios. For SmoothGrad and IG,
``ratio / n`` is the cost per sample or step in units of one vanilla call (target: at most 1.25).

A second table times the methods added beside a reference in alternating pairs against that
reference directly: SmoothGrad-Squared and VarGrad against SmoothGrad with the same samples
(target: at most 1.1x), Grad-CAM++ against Grad-CAM.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from keras_saliency_monitor.attribution import gradients, targets  # noqa: E402
from keras_saliency_monitor.attribution.explain import Explainer  # noqa: E402

CASES = [  # (label, method, options, n for ratio / n)
    ("vanilla", "vanilla", {}, None),
    ("gradient_x_input", "gradient_x_input", {}, None),
    ("gradcam", "gradcam", {}, None),
    ("gradcam_plus_plus", "gradcam_plus_plus", {}, None),
    ("smoothgrad n=25", "smoothgrad", {"samples": 25}, 25),
    ("smoothgrad_squared n=25", "smoothgrad_squared", {"samples": 25}, 25),
    ("vargrad n=25", "vargrad", {"samples": 25}, 25),
    ("smoothgrad n=50", "smoothgrad", {"samples": 50}, 50),
    ("integrated_gradients n=64", "integrated_gradients", {"steps": 64}, 64),
]


SINGLE = 8  # calls per side of a pair for the single-call methods
# (label, reference label): timed against each other in alternating pairs (second table).
AGAINST = [
    ("smoothgrad_squared n=25", "smoothgrad n=25"),
    ("vargrad n=25", "smoothgrad n=25"),
    ("gradcam_plus_plus", "gradcam"),
]


def small_cnn(size=64, classes=3):
    """The benchmark model: three conv blocks on 64x64x3, global pooling, softmax head."""
    inp = keras.Input((size, size, 3))
    h = inp
    for width in (16, 32, 64):
        h = layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.Dense(classes, activation="softmax")(h))


def _timed(fn) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="repetitions (>= 7)")
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = small_cnn()
    x = np.random.default_rng(0).uniform(size=(args.probes, 64, 64, 3)).astype("float32")

    logits_fn, head = targets.build_logits_fn(model)
    floor = gradients.InputGradient(logits_fn, head, x.shape[1:], batch_size=args.batch_size)
    requested = np.full(len(x), -1, np.int32)
    explainers = {}
    for label, method, options, _ in CASES:
        explainers[label] = Explainer(method, batch_size=args.batch_size, **options)
        explainers[label].bind(model, x.shape[1:]).explain(x)  # trace and warm up
    for _ in range(3):
        floor(x, requested)

    # Alternating pairs (floor, method) of about equal wall time, so a change in the machine's
    # load (2 shared cores) hits both sides alike: for SmoothGrad and IG the floor side is n
    # back-to-back floor calls against one explain(); for the single-call methods each side is
    # SINGLE back-to-back calls. Times are reported per call.
    floor_ms = {label: [] for label, *_ in CASES}  # (wall, cpu) per call
    method_ms = {label: [] for label, *_ in CASES}
    for _ in range(args.reps):
        for label, _, _, n in CASES:
            floor_calls, method_calls = (n, 1) if n else (SINGLE, SINGLE)
            explainer = explainers[label]

            def run_floor(k=floor_calls):
                for _ in range(k):
                    floor(x, requested)

            def run_method(k=method_calls, e=explainer):
                for _ in range(k):
                    e.explain(x)

            floor_ms[label].append(np.array(_timed(run_floor)) / floor_calls)
            method_ms[label].append(np.array(_timed(run_method)) / method_calls)

    print(
        f"{args.probes} probes 64x64x3, batch_size={args.batch_size}, {args.reps} alternating "
        f"pairs; keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'method':<27}{'ms':>8}{'floor ms':>9}{'ratio':>7}{'ratio/n':>8}"
        f"{'cpu ratio':>10}{'cpu ratio/n':>12}"
    )
    print(header)
    print("-" * len(header))
    for label, _, _, n in CASES:
        method, fl = np.array(method_ms[label]), np.array(floor_ms[label])  # (reps, 2)
        wall, cpu = np.median(method / fl, axis=0)  # medians of the per-pair ratios
        cells = [f"{label:<27}{np.median(method[:, 0]):8.1f}{np.median(fl[:, 0]):9.1f}"]
        cells.append(f"{wall:7.2f}" + (f"{wall / n:8.3f}" if n else " " * 8))
        cells.append(f"{cpu:10.2f}" + (f"{cpu / n:12.3f}" if n else ""))
        print("".join(cells))
    against_reference(explainers, x, args.reps)
    traces = {label: e.trace_count for label, e in explainers.items()}
    print(f"trace counts at the end of the run: {traces}")
    print(
        "ratio: wall time over the floor; cpu ratio: this process's CPU time over the floor's "
        "(less sensitive to other processes on shared cores). Target: ratio/n <= 1.25."
    )


def against_reference(explainers, x, reps):
    """Second table: each added method against its reference, in alternating pairs of calls."""
    print()
    print(f"{'method':<27}{'against':<18}{'ratio':>7}{'cpu ratio':>10}")
    for label, reference in AGAINST:
        calls = 1 if "n=" in label else SINGLE
        ratios = []
        for rep in range(reps):
            times = {}
            # Which side runs first alternates pair by pair.
            order = (reference, label) if rep % 2 == 0 else (label, reference)
            for side in order:

                def run(e=explainers[side], k=calls):
                    for _ in range(k):
                        e.explain(x)

                times[side] = np.array(_timed(run))
            ratios.append(times[label] / times[reference])
        wall, cpu = np.median(np.array(ratios), axis=0)
        print(f"{label:<27}{reference:<18}{wall:7.2f}{cpu:10.2f}")
    print("Target for SmoothGrad-Squared and VarGrad: at most 1.1x SmoothGrad, same samples.")


if __name__ == "__main__":
    main()

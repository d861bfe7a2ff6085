"""What a repeated ``compute_saliency`` call costs, against the gradient floor.

A user calling ``compute_saliency(model, batch)`` in a loop or a notebook cell pays, per call:

* ``floor``: one compiled, batched ``tf.GradientTape`` gradient of the predicted class's logit,
  written independently of the package (``overhead.Floor``: its own ``tf.function``, the Dense
  head's kernel and bias applied by hand so the softmax is left out), warmed up, result brought
  back to numpy;
* ``repeated``: ``compute_saliency(model, x)`` again with the same model, method and options
  (served by the package's weak-keyed cache of bound explainers);
* ``uncached``: the same call with the cache emptied first, i.e. a new view, a new compiled
  function and a trace every call (what every call cost before the cache).

All three are measured in one process, pair by pair (floor and call alternate, the order flips
every pair); ratios are medians of per-pair ratios. Models: the small 3-conv CNN of
``benchmarks/overhead.py`` at 64x64 and MobileNetV2 (``weights=None``: no download) at 96x96,
8 images each. The maps of the repeated call are checked against the floor's gradient.

Usage::

    python benchmarks/repeated_calls.py           # ~3 min on 2 busy cores
    python benchmarks/repeated_calls.py --quick   # fewer pairs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# The overhead benchmark's independent floor, small CNN and clock.
from overhead import Floor, build_cnn, timed  # noqa: E402

from keras_saliency_monitor import compute_saliency  # noqa: E402
from keras_saliency_monitor.attribution.explain import _CACHE  # noqa: E402


def mobilenet(size: int) -> keras.Model:
    return keras.applications.MobileNetV2(
        input_shape=(size, size, 3), weights=None, classes=10, classifier_activation="softmax"
    )


def pairs(floor, call, n: int) -> tuple[list[float], list[float]]:
    """n pairs of (floor, call) timings, the order flipping every pair, after 2 warm-ups."""
    for _ in range(2):
        floor()
        call()
    a, b = [], []
    for i in range(n):
        if i % 2:
            b.append(timed(call))
            a.append(timed(floor))
        else:
            a.append(timed(floor))
            b.append(timed(call))
    return a, b


def ratio(a, b) -> float:
    return statistics.median(y / x for x, y in zip(a, b))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs")
    args = parser.parse_args(argv)
    n = 5 if args.quick else 11
    n_uncached = 3 if args.quick else 5
    rng = np.random.default_rng(0)
    print(f"keras {keras.__version__}, tensorflow {tf.__version__}, backend tensorflow, CPU")
    print(
        f"{'model':<22} {'floor ms':>9} {'repeated ms':>12} {'repeated/floor':>15} "
        f"{'uncached ms':>12} {'uncached/floor':>15}"
    )
    for name, build, size in (
        ("small CNN 64x64", build_cnn, 64),
        ("MobileNetV2 96x96", mobilenet, 96),
    ):
        keras.utils.set_random_seed(0)
        model = build(size)
        x = rng.random((8, size, size, 3), dtype=np.float32)
        floor = Floor(model)

        # The cached call gives the floor's map: max over channels of |d max-logit / dx|.
        np.testing.assert_allclose(
            compute_saliency(model, x), np.abs(floor(x)).max(-1), rtol=1e-4, atol=1e-6
        )

        def repeated(model=model, x=x):
            return compute_saliency(model, x)

        def uncached(model=model, x=x):
            _CACHE.clear()
            return compute_saliency(model, x)

        def bare(floor=floor, x=x):
            return floor(x)

        f, r = pairs(bare, repeated, n)
        f2, u = pairs(bare, uncached, n_uncached)
        print(
            f"{name:<22} {1e3 * statistics.median(f):9.1f} {1e3 * statistics.median(r):12.1f} "
            f"{ratio(f, r):15.2f} {1e3 * statistics.median(u):12.1f} {ratio(f2, u):15.2f}"
        )


if __name__ == "__main__":
    main()

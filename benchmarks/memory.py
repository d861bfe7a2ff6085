"""Peak memory of drawing the probe set from a dataset, against the probes' own bytes.

``SaliencyMonitor.__init__`` reads up to 4,096 examples of a ``tf.data.Dataset`` to draw a
stratified, seeded probe set. This script measures, in one process, pair by pair (the order flips
every pair), the peak resident memory (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``
before each side) above the memory in use just before:

* ``monitor``: ``SaliencyMonitor(log_dir, dataset, num_probes=16)``;
* ``bare``: one plain pass over the same dataset that keeps nothing (what reading the pool costs
  tf.data itself, whoever reads it).

The pool is 4,096 float32 images of 224x224x3 (2.3 GiB if held at once), 10 classes, made on the
fly by ``tf.data`` (so the pool itself is never in memory), batched by 32. The 16 probes take
16 x 224 x 224 x 3 x 4 bytes = 9.2 MiB. The target of issue 13: under +200 MB.

Usage::

    python benchmarks/memory.py            # 3 pairs, ~2 min on 2 busy cores
    python benchmarks/memory.py --pairs 1 --size 96

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from keras_saliency_monitor import SaliencyMonitor  # noqa: E402

MIB = 1 << 20


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_above_now(fn):
    """(peak RSS while fn() runs minus RSS before, seconds): VmHWM reset first."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak) to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    del result
    return peak - before, seconds


def _dataset(n, size, classes, batch):
    def image(i):
        seed = tf.stack([tf.cast(i, tf.int32), 0])
        return tf.random.stateless_uniform((size, size, 3), seed=seed), i % classes

    return tf.data.Dataset.range(n).map(image).batch(batch)


def _bare(ds):
    for _ in ds:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--pool", type=int, default=4096)
    parser.add_argument("--probes", type=int, default=16)
    args = parser.parse_args()

    ds = _dataset(args.pool, args.size, 10, 32)
    probe_bytes = args.probes * args.size * args.size * 3 * 4
    log_dir = tempfile.mkdtemp(prefix="ksm-memory-")
    _bare(ds.take(2))  # warm up tf.data and the map function
    sides = {
        "monitor": lambda: SaliencyMonitor(log_dir, ds, num_probes=args.probes),
        "bare": lambda: _bare(ds),
    }
    results = {name: [] for name in sides}
    for pair in range(args.pairs):
        order = ["monitor", "bare"] if pair % 2 == 0 else ["bare", "monitor"]
        for name in order:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[name].append(_peak_above_now(sides[name]))
    print(
        f"pool {args.pool} images {args.size}x{args.size}x3 float32 from tf.data (batch 32), "
        f"{args.probes} probes = {probe_bytes / MIB:.1f} MiB; {args.pairs} pairs, medians"
    )
    medians = {}
    for name, values in results.items():
        peak = statistics.median(v[0] for v in values)
        seconds = statistics.median(v[1] for v in values)
        medians[name] = peak
        print(
            f"  {name:8s} peak +{peak / MIB:7.1f} MiB ({peak / probe_bytes:5.2f}x the probes' "
            f"bytes)  {seconds:6.1f} s   all: {[round(v[0] / MIB, 1) for v in values]}"
        )
    extra = medians["monitor"] - medians["bare"]
    print(
        f"  monitor - bare: {extra / MIB:+.1f} MiB ({extra / probe_bytes:+.2f}x the probes' "
        f"bytes); target: monitor peak < +200 MB -> "
        f"{'met' if medians['monitor'] < 200e6 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

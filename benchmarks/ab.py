"""Before/after: the same benchmarks on two source trees of the package, whole runs alternating.

Each run is a fresh process whose ``PYTHONPATH`` is one tree, so the two packages never share a
process; the order alternates (A B B A A B ...) so that drift on a shared machine hits both sides.
Make the "before" tree with e.g. ``git worktree add /tmp/before 68426d3``.

Usage::

    python benchmarks/ab.py BEFORE AFTER --logdir runs/demo   # ~25 min on 2 busy cores

Prints, per side: ``on_epoch_end`` of vanilla at 32 probes of 64x64 without and with masks
(``overhead.profile_parts``, 9 epochs after 2 warm-up ones), the write job per logged epoch
(``storage.py --quick``), and the process CPU of ``report LOGDIR --out page.html``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

PARTS = """
import json, keras, numpy as np, overhead
keras.utils.set_random_seed(0)
model = overhead.build_cnn(64)
floor = overhead.Floor(model)
x, y = overhead.make_images(32, 64, seed=32)
masks = np.zeros(x.shape[:3], bool)
masks[:, 16:48, 16:48] = True
out = {}
for m, label in ((None, "plain"), (masks, "masks")):
    p = overhead.profile_parts(model, floor, x, y, "vanilla", 1, 9, m, label)
    out[label] = 1e3 * p["on_epoch_end"]
print(json.dumps(out))
"""


def run(tree: str, args: list, cwd: str) -> tuple[str, float]:
    """Output and child process CPU seconds of ``python *args`` with ``tree`` as the package."""
    env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return out, cpu


def measure(tree: str, logdir: str | None) -> dict:
    bench = os.path.join(tree, "benchmarks")
    parts = json.loads(run(tree, ["-c", PARTS], bench)[0].splitlines()[-1])
    storage, _ = run(tree, [os.path.join(bench, "storage.py"), "--quick"], tree)
    job = re.search(r"\| write job, thread CPU \| ([\d.]+) ms", storage)
    got = {
        "on_epoch_end ms": parts["plain"],
        "on_epoch_end with masks ms": parts["masks"],
        "write job ms": float(job.group(1)) if job else float("nan"),
    }
    if logdir:
        with tempfile.TemporaryDirectory() as tmp:
            page = os.path.join(tmp, "page.html")
            command = ["-m", "keras_saliency_monitor", "report", logdir, "--out", page]
            got["report CPU s"] = run(tree, [*command, "--no-progress"], tree)[1]
    return got


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", help="source tree of the package before the change")
    parser.add_argument("after", help="source tree after it")
    parser.add_argument("--logdir", help="a demo log dir to time `report` on (else skipped)")
    parser.add_argument("--runs", type=int, default=4, help="runs per side (default 4)")
    args = parser.parse_args(argv)
    trees = [os.path.abspath(args.before), os.path.abspath(args.after)]
    results: dict = {t: [] for t in trees}
    for i in range(args.runs):
        for tree in trees if i % 2 == 0 else trees[::-1]:
            results[tree].append(measure(tree, args.logdir))
            print(f"run {i + 1}: {tree}: {results[tree][-1]}", flush=True)
    print("\n| median of runs | before | after |\n|---|---:|---:|")
    for key in results[trees[0]][0]:
        values = [statistics.median(r[key] for r in results[t]) for t in trees]
        print(f"| {key} | {values[0]:.2f} | {values[1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

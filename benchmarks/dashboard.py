"""Time to first filmstrip of the SALIENCY dashboard, in headless Chromium.

Two log dirs: the demo's (two runs, 8 epochs, 12 probes of 64x64) and a 50-epoch run with 32
probes of 64x64 (the demo's CNN trained for 50 short epochs on 96 shapes images, with the real
SaliencyMonitor). Each is served by its own TensorBoard on 127.0.0.1 (through the package's
launcher), fully loaded before timing starts.

One measurement: a fresh browser context (empty cache) navigates to ``<url>/#saliency``; we time

- ``shell``: navigation -> the dashboard's iframe is attached (TensorBoard's own page: the bare
  baseline, whatever plugin is shown);
- ``first``: navigation -> the first filmstrip tile is drawn on its canvas (the figure the issue
  asks for: <= 2 s for the demo, <= 4 s for the 50-epoch run);
- ``all``: navigation -> every run loaded and every visible tile drawn;
- ``plugin`` = first - shell: what the dashboard itself adds.

The two log dirs are measured alternately, pair by pair, so that load from other processes on
the machine falls on both alike; medians over ``--repeats`` pairs.

Usage:
    python benchmarks/dashboard.py [--demo-dir runs/demo] [--repeats 7] [--work /tmp/ksm_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def make_long_run(log_dir, epochs=50, num_probes=32, n_train=96, seed=0):
    """A 50-epoch, 32-probe run of the demo's CNN on shapes images (about a minute on 2 cores)."""
    import keras

    from keras_saliency_monitor import SaliencyMonitor
    from keras_saliency_monitor.demo import build_model
    from keras_saliency_monitor.demo_data import make_shapes

    train = make_shapes(n_train, seed=seed)
    probes = make_shapes(num_probes, seed=seed + 1)
    keras.utils.set_random_seed(seed)
    model = build_model(64, len(train.class_names))
    monitor = SaliencyMonitor(
        os.path.join(log_dir, "long"),
        (probes.x, probes.y),
        num_probes=num_probes,
        masks=probes.masks,
        class_names=list(train.class_names),
        seed=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train.x, train.y, epochs=epochs, batch_size=32, verbose=0, callbacks=[monitor])


def _json(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def wait_loaded(board, timeout=300):
    """Blocks until TensorBoard serves every logged step of every saliency run."""
    deadline = time.monotonic() + timeout
    base = board.url + "data/plugin/saliency/"
    previous = None
    while time.monotonic() < deadline:
        runs = _json(base + "runs")
        counts = [
            len(_json(base + "run?" + urllib.parse.urlencode({"run": r}))["steps"]) for r in runs
        ]
        if runs and counts == previous:  # stable between two polls a few seconds apart
            return dict(zip(runs, counts))
        previous = counts
        time.sleep(3)
    raise TimeoutError(f"{board.logdir} did not finish loading")


def measure(browser, url):
    """One cold load: (shell, first, all) seconds from navigation."""
    browser.new_page()
    t0 = time.perf_counter()
    browser.navigate(url)
    iframe = browser.page.locator("iframe[src*='plugin_entry.html?name=saliency']")
    iframe.wait_for(state="attached", timeout=60_000)
    shell = time.perf_counter() - t0
    browser.frame = iframe.element_handle().content_frame()
    browser.frame.wait_for_selector("canvas.tile[data-drawn]", timeout=60_000)
    first = time.perf_counter() - t0
    browser.wait_ready()
    return shell, first, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default=None, help="demo log dir (default: run the demo)")
    parser.add_argument("--work", default="/tmp/ksm_dashboard_bench")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    from keras_saliency_monitor import launcher
    from keras_saliency_monitor.dashboard.browser import DashboardBrowser

    demo_dir = args.demo_dir or os.path.join(args.work, "demo")
    if not os.path.isdir(demo_dir) or not os.listdir(demo_dir):
        from keras_saliency_monitor.demo import run_demo

        run_demo(demo_dir, verbose=0)
    long_dir = os.path.join(args.work, "long50")
    if not os.path.isdir(long_dir):
        make_long_run(long_dir)

    boards = {"demo": launcher.launch(demo_dir), "50 epochs x 32 probes": launcher.launch(long_dir)}
    try:
        for name, board in boards.items():
            print(f"{name}: {board.logdir} loaded: {wait_loaded(board)}", flush=True)
        times = {name: [] for name in boards}
        with DashboardBrowser(viewport=(1600, 1000)) as browser:
            for board in boards.values():  # warm-up: TensorBoard's caches, Chromium's start
                measure(browser, board.url)
            for i in range(args.repeats):
                order = list(boards) if i % 2 == 0 else list(boards)[::-1]
                for name in order:
                    times[name].append(measure(browser, boards[name].url))
            if browser.external or browser.errors:
                print("WARNING:", browser.external, browser.errors)
        print(f"\nmedians over {args.repeats} cold loads (seconds from navigation):")
        print(f"{'log dir':24} {'shell':>7} {'first tile':>11} {'all drawn':>10} {'plugin':>8}")
        for name, rows in times.items():
            shell, first, done = (statistics.median(col) for col in zip(*rows))
            plugin = statistics.median(f - s for s, f, _ in rows)
            print(f"{name:24} {shell:7.2f} {first:11.2f} {done:10.2f} {plugin:8.2f}")
        print(f"load average: {os.getloadavg()} on {os.cpu_count()} cores")
    finally:
        for board in boards.values():
            board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

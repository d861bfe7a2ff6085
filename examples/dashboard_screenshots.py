"""Screenshots of the SALIENCY dashboard for the docs' dashboard guide, in headless Chromium.

Runs the demo into the log dir first when it holds no runs, starts TensorBoard on loopback
(through the package's launcher), opens the SALIENCY tab with the same browser code as the tests
(``keras_saliency_monitor.views.dashboard.browser``), and writes:

- ``dashboard_overview.png``: both runs side by side (charts folded, alarm, filmstrips);
- ``dashboard_filmstrip.png``: the shortcut run's filmstrip at 1:1, captions as on screen;
- ``dashboard_detail.png``: one probe's detail (image, overlay, its numbers over the epochs);
- with ``--six-dir``: ``dashboard_six_runs.png``, six runs at 1440x900 (side by side, wrapping,
  probe rows aligned), and ``dashboard_six_runs_probe.png``, one probe across the six runs;
- with ``--long-dir``: ``dashboard_long_run.png``, a long run at 1440x900 (key epochs).

Usage:
    python examples/dashboard_screenshots.py [--log-dir runs/demo] [--out docs/images]
        [--demo-epochs N] [--six-dir DIR] [--long-dir DIR]

Needs the ``[test]`` extra (playwright) and a system Chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_saliency_monitor.views import launcher
from keras_saliency_monitor.views.dashboard.browser import DashboardBrowser


def take(logdir: str, out: str, width: int = 1400) -> list[str]:
    """Writes the three screenshots into ``out``; returns their paths."""
    os.makedirs(out, exist_ok=True)
    paths = []
    board = launcher.launch(logdir)
    try:
        with DashboardBrowser(viewport=(width, 900)) as browser:
            frame = browser.open(board.url)
            browser.wait_ready()
            path = os.path.join(out, "dashboard_overview.png")
            browser.page.screenshot(path=path)
            paths.append(path)

            # One run at a time, 1:1: the width a README shows without scaling.
            frame.select_option("#layout", "stacked")
            frame.select_option("#columns", "8")
            browser.wait_painted()
            runs = frame.locator("section.run").evaluate_all("s => s.map(x => x.dataset.run)")
            run = next((r for r in runs if r.startswith("shortcut")), runs[-1])
            table = frame.locator(f"section.run[data-run='{run}'] table.filmstrip")
            # The first 6 probes are enough for a README picture.
            table.locator("tbody tr").evaluate_all(
                "rows => rows.forEach((r, i) => { if (i >= 6) r.style.display = 'none'; })"
            )
            path = os.path.join(out, "dashboard_filmstrip.png")
            table.screenshot(path=path)
            paths.append(path)

            frame.locator(f"canvas.tile[data-run='{run}'][data-probe='0']").last.click()
            body = frame.locator("#detailbody")
            frame.wait_for_selector("#detailbody[data-painted='1']")
            path = os.path.join(out, "dashboard_detail.png")
            body.screenshot(path=path)
            paths.append(path)
            if browser.external or browser.errors:
                raise RuntimeError(f"external requests {browser.external}, errors {browser.errors}")
    finally:
        board.stop()
    return paths


def take_page(logdir: str, path: str, viewport=(1440, 900), layout=None) -> str:
    """A screenshot of the whole SALIENCY tab on ``logdir`` at ``viewport``, as first shown, or
    in ``layout`` (e.g. ``"probe"``: one probe across every run)."""
    board = launcher.launch(logdir)
    try:
        with DashboardBrowser(viewport=viewport) as browser:
            frame = browser.open(board.url)
            browser.wait_ready()
            if layout:
                frame.select_option("#layout", layout)
                browser.wait_painted()
            browser.page.screenshot(path=path)
            if browser.external or browser.errors:
                raise RuntimeError(f"external requests {browser.external}, errors {browser.errors}")
    finally:
        board.stop()
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default="runs/demo")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument(
        "--demo-epochs", type=int, default=None, help="epochs per demo run, when it is run"
    )
    parser.add_argument("--six-dir", default=None, help="a log dir of six runs")
    parser.add_argument("--long-dir", default=None, help="a log dir of one long run")
    args = parser.parse_args(argv)
    for logdir, name, layout in ((args.six_dir, "dashboard_six_runs.png", None),
                                 (args.six_dir, "dashboard_six_runs_probe.png", "probe"),
                                 (args.long_dir, "dashboard_long_run.png", None)):  # fmt: skip
        if logdir:
            os.makedirs(args.out, exist_ok=True)
            print(take_page(logdir, os.path.join(args.out, name), layout=layout))
    if not os.path.isdir(args.log_dir) or not os.listdir(args.log_dir):
        from keras_saliency_monitor.demo import run_demo

        run_demo(args.log_dir, epochs=args.demo_epochs)
    for path in take(args.log_dir, args.out, args.width):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

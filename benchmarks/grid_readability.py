"""How tall the `saliency/overlays` captions are on screen in TensorBoard's Images dashboard.

TensorBoard scales every image to its card's width (350 px at default size). This script starts
the real ``tensorboard`` on a log dir (the project's launcher, loopback only), opens the Images
dashboard in headless Debian Chromium (Playwright driving ``/usr/bin/chromium``; nothing is
downloaded), takes a screenshot at 1400x1000, and measures in that screenshot, for the first grid
card: the card image's displayed width, and the ink height of the first probe's two caption lines
(light text on the dark caption strip, found by pixel values).

Usage::

    keras-saliency-monitor demo --log-dir runs/demo          # once, about a minute
    python benchmarks/grid_readability.py runs/demo --out grid.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_saliency_monitor.views import launcher  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
STRIP_GREY = 40  # render._STRIP: the caption strip's grey level
INK = 100  # caption text is light (render._TEXT = 235) on the strip, blurred when scaled down


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in a 1-d bool array."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2], edges[1::2]))


def caption_lines(card: np.ndarray) -> list[int]:
    """Ink heights (px) of the caption lines of the top-left cell of a screenshot of a grid."""
    grey = card.mean(axis=-1)
    width = grey.shape[1]
    left = grey[:, : width // 2]  # cell 0 spans the left half (2 probes per row)
    strip_rows = np.abs(np.median(left, axis=1) - STRIP_GREY) < 12
    # Rows dense with text are brighter than the strip: close gaps of a few rows.
    merged = []
    for start, stop in _runs(strip_rows):
        if merged and start - merged[-1][1] <= 3:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    runs = [r for r in merged if r[1] - r[0] >= 4]
    if not runs:
        return []
    top, bottom = runs[0]
    ink = (left[top:bottom] > INK).any(axis=1)
    return [stop - start for start, stop in _runs(ink)]


def measure(logdir: str, out: str, wait: float) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ImportError(
            "benchmarks/grid_readability.py drives Chromium with Playwright: pip install "
            "playwright (the system Chromium is used; no `playwright install` needed)."
        ) from None

    board = launcher.launch(logdir, port=0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(board.url.rstrip("/") + "/#images")
            deadline = time.monotonic() + wait
            box = None
            while time.monotonic() < deadline and box is None:
                time.sleep(0.5)
                box = page.evaluate(
                    """() => {
                      function walk(root) {
                        for (const el of root.querySelectorAll('*')) {
                          if (el.tagName === 'IMG' && el.complete && el.naturalWidth > 0
                              && el.src.includes('individualImage')) {
                            const r = el.getBoundingClientRect();
                            return {x: r.x, y: r.y, width: r.width, height: r.height,
                                    natural: el.naturalWidth};
                          }
                          if (el.shadowRoot) { const f = walk(el.shadowRoot); if (f) return f; }
                        }
                        return null;
                      }
                      return walk(document);
                    }"""
                )
            if box is None:
                raise RuntimeError(f"no grid image appeared in {wait:g} s")
            page.screenshot(path=out)
            browser.close()
    finally:
        board.stop()
    shot = np.asarray(Image.open(out).convert("RGB"))
    x, y = round(box["x"]), round(box["y"])
    w = round(box["width"])
    h = min(round(box["height"]), shot.shape[0] - y)
    card = shot[y : y + h, x : x + w]
    return dict(displayed=w, natural=box["natural"], lines=caption_lines(card))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", help="a log dir with saliency events, e.g. runs/demo")
    parser.add_argument("--out", default="grid_readability.png", help="screenshot file")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the grid")
    args = parser.parse_args(argv)
    result = measure(args.logdir, args.out, args.wait)
    print(
        f"grid card: {result['natural']} px wide, shown {result['displayed']} px wide "
        f"(scale {result['displayed'] / result['natural']:.2f}); caption lines of probe 0: "
        f"{[int(v) for v in result['lines']]} px of ink; screenshot {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

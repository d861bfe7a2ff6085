"""Faithfulness of every method on the shortcut suite's clean models: the sanity curve and the
deletion curve's area against a random order. The table of benchmarks/README.md.

    python benchmarks/faithfulness.py               # 3 clean kinds x 2 seeds, ~5 min on 2 cores
    python benchmarks/faithfulness.py --seeds 1     # ~2 min

For each clean kind of ``benchmarks/shortcuts.py`` (no shortcut: the class is the shape) and seed,
the suite's tiny CNN is trained on 480 images, then for 16 fresh probes and every method in
``keras_saliency_monitor.attribution.methods.METHODS`` (at its defaults):

* sanity curve: ``sanity_check`` (Adebayo et al. 2018), the mean Spearman rank correlation of the
  probes' maps with the trained maps after the top 1, 2, 3 and 4 layer blocks are re-initialised
  (cascading), and the SSIM after all four. Lower means the maps depend on what was learned.
* deletion (RISE, Petsiuk et al. 2018): pixels are set to 0 (black, the suite's background) in
  16 equal steps, most salient first; the area under the explained class's softmax probability
  over the fraction deleted (trapezoid, 17 points) is divided by the same area for a random order
  (the mean over 4 seeded permutations per probe). Below 1: the map ranks pixels the model needs
  ahead of chance; 1 = no better than a random ranking.

Means over probes, then over runs. Not ROAR (Hooker et al. 2019): nothing is retrained, so
deletion mixes the model's reliance on pixels with its reaction to out-of-distribution images.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import shortcuts  # noqa: E402  (benchmarks/shortcuts.py: the suite's images and model)
from scipy import special  # noqa: E402

STEPS = 16  # deletion steps
RANDOM_ORDERS = 4  # random permutations per probe for the reference curve


def deletion_area(logits_fn, x, classes, order) -> np.ndarray:
    """(N,) area under p(class) as pixels are zeroed in ``order`` (N, H*W), 1/STEPS at a time."""
    n, h, w, _ = x.shape
    per_step = int(np.ceil(h * w / STEPS))
    curves = []
    current = x.copy().reshape(n, h * w, -1)
    rows = np.arange(n)[:, None]
    for k in range(STEPS + 1):
        if k:
            current[rows, order[:, (k - 1) * per_step : k * per_step]] = 0.0
        probs = special.softmax(logits_fn(current.reshape(x.shape)), axis=1)
        curves.append(probs[np.arange(n), classes])
    curves = np.array(curves)  # (STEPS + 1, N)
    return ((curves[1:] + curves[:-1]) / 2).mean(axis=0)  # trapezoid over [0, 1]


def one_run(kind, seed, epochs):
    from keras_saliency_monitor import sanity_check
    from keras_saliency_monitor.attribution import methods
    from keras_saliency_monitor.attribution.explain import Explainer

    x, y, _ = shortcuts.make_images(kind, 480, 10_000 * seed + 1)
    px, _, _ = shortcuts.make_images(kind, 16, 10_000 * seed + 2)
    model = shortcuts.build_model(seed)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    rng = np.random.default_rng(seed)
    n, h, w, _ = px.shape
    out = {}
    for method in methods.METHODS:
        explainer = Explainer(method).bind(model, px.shape[1:])
        e = explainer.explain(px)
        order = np.argsort(-e.maps.reshape(n, -1), axis=1, kind="stable")
        area = deletion_area(explainer.logits, px, e.classes, order)
        random_area = np.mean(
            [
                deletion_area(
                    explainer.logits,
                    px,
                    e.classes,
                    np.stack([rng.permutation(h * w) for _ in range(n)]),
                )
                for _ in range(RANDOM_ORDERS)
            ],
            axis=0,
        )
        s = sanity_check(model, px, method, blocks=4, warn=False)
        out[method] = {
            "rho": s.rank_correlation,
            "ssim": float(s.ssim[-1]),
            "deletion": float(np.mean(area / random_area)),
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    import keras

    start = time.time()
    runs = []
    for kind in shortcuts.CLEAN_KINDS:
        for seed in range(args.seeds):
            runs.append(one_run(kind, seed, args.epochs))
            print(f"  {kind} seed {seed} done ({time.time() - start:.0f} s)", flush=True)
    print(
        f"{len(runs)} runs ({', '.join(shortcuts.CLEAN_KINDS)} x {args.seeds} seeds), 16 probes "
        f"each, {args.epochs} epochs; keras {keras.__version__}, {keras.backend.backend()}\n"
    )
    print(
        "| method | rank corr. top 1 | top 2 | top 3 | top 4 | SSIM top 4 | deletion AUC / random |"
    )
    print("|---|---|---|---|---|---|---|")
    for method in runs[0]:
        rho = np.mean([r[method]["rho"] for r in runs], axis=0)
        ssim = np.mean([r[method]["ssim"] for r in runs])
        deletion = np.mean([r[method]["deletion"] for r in runs])
        cells = " | ".join(f"{v:.2f}" for v in rho)
        print(f"| {method} | {cells} | {ssim:.2f} | {deletion:.2f} |")
    print(f"\ntook {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

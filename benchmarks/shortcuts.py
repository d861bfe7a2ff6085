"""Does the alarm catch shortcuts, and stay silent on clean runs? A suite generated in code.

    python benchmarks/shortcuts.py            # 8 kinds x 3 seeds, 5 methods: ~5 min, 2 busy cores
    python benchmarks/shortcuts.py --seeds 5  # the alarm guide's table: ~8 min
    python benchmarks/shortcuts.py --quick    # 8 kinds x 1 seed, 6 epochs: ~2 min

Every (kind, seed) trains one tiny CNN once, on 32x32 images of three shapes (circle, square,
triangle: the class) on a dark blotchy background. After every epoch the probes (16 validation
images, drawn like the training data, artefacts included, as a user's validation split would be)
are explained with every method against the same weights, and each method's maps go through the
monitor's own measurement and alarm (`metrics.shortcut_indicators` and `alarm.ShortcutAlarm`, which
`SaliencyMonitor._measure` and `_check_alarm` call), at the library's defaults, once with the
object masks and once without. It ends with the cost of the indicators against the gradient.

Kinds (the shortcut is perfectly predictive of the class in training unless said otherwise):

* ``watermark``: a 4x4 checkerboard of a class colour and black in the bottom-right corner.
* ``frame``: a one-pixel frame of a class colour around the image.
* ``stamp``: a label in a random corner of each image: a class glyph (3x5 pixels, class
  colour) on a black 5x7 box.
* ``background``: the background is tinted with a class colour.
* ``partial``: the watermark, but right for only 80% of the training images (a random class's
  mark on the others), so the model uses both the mark and the shape.
* ``clean_random``, ``clean_centred``, ``clean_large``: no shortcut; shapes at random
  positions, at the centre, or filling most of the image.

"shortcut-free accuracy" is measured on images drawn like the kind's but without the artefact (for
``background``: a random, class-independent tint). A shortcut run is "full" when it is < 0.6.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

SIZE = 32
NUM_CLASSES = 3
COLOURS = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.2, 0.4, 1.0]], np.float32)
# 3x5 glyphs, one per class ("T", "L", "X"-like), for the stamp.
GLYPHS = np.array(
    [
        [[1, 1, 1], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]],
        [[1, 0, 1], [1, 0, 1], [0, 1, 0], [1, 0, 1], [1, 0, 1]],
    ],
    bool,
)
SHORTCUT_KINDS = ("watermark", "frame", "stamp", "background", "partial")
FIXED_PLACE = ("watermark", "frame", "stamp")
CLEAN_KINDS = ("clean_random", "clean_centred", "clean_large")
KINDS = SHORTCUT_KINDS + CLEAN_KINDS
METHODS = ("vanilla", "gradient_x_input", "smoothgrad", "integrated_gradients", "gradcam")
_KIND_NAMES = ("circle", "square", "triangle")


def _artefact_boxes(kind):
    """Boxes (y0, x0, y1, x1) the shapes keep clear of, so masks and artefacts never overlap."""
    s = SIZE
    if kind in ("watermark", "partial"):
        return [(s - 6, s - 6, s, s)]
    if kind == "stamp":
        return [(0, 0, 9, 7), (0, s - 7, 9, s), (s - 9, 0, s, 7), (s - 9, s - 7, s, s)]
    return []


def make_images(kind, n, seed, shortcut=True, class_rate=1.0):
    """``n`` images of ``kind``: (x float32 (n, S, S, 3) in [0, 1], y int32 (n,), masks bool).

    With ``shortcut=False`` the artefact is left out (the shortcut-free test set).
    ``class_rate`` is the fraction of images whose artefact names their own class (the others
    carry a random class's artefact).
    """
    from keras_saliency_monitor.demo_data import _shape_mask, _upsample

    rng = np.random.default_rng(seed)
    s = SIZE
    y = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int32)
    marked = np.where(rng.random(n) < class_rate, y, rng.integers(0, NUM_CLASSES, n))
    x = np.empty((n, s, s, 3), np.float32)
    x[...] = rng.uniform(0.1, 0.45, size=(n, 1, 1, 3))
    for grid, amp in ((4, 0.15), (8, 0.08)):
        x += _upsample(rng.uniform(-amp, amp, size=(n, grid, grid, 3)).astype(np.float32), s)
    if kind == "background":
        tint = COLOURS[marked] if shortcut else COLOURS[rng.integers(0, NUM_CLASSES, n)]
        x = 0.6 * x + 0.25 * tint[:, None, None, :]
    masks = np.zeros((n, s, s), bool)
    keep_out = _artefact_boxes(kind)  # also without the artefact: the same layout
    lo, hi = (0.38, 0.46) if kind == "clean_large" else (0.16, 0.26)
    for i in range(n):
        shape = _KIND_NAMES[y[i]]
        radius = rng.uniform(lo, hi) * s
        reach = 1.2 * radius + 1.0
        for _ in range(200):
            if kind == "clean_centred":
                cy, cx = s / 2 + rng.uniform(-1.0, 1.0, size=2)
            elif kind == "clean_large":
                cy, cx = s / 2 + rng.uniform(-2.0, 2.0, size=2)
            else:
                margin = reach if kind != "frame" else reach + 1
                cy, cx = rng.uniform(min(margin, s / 2), max(s - margin, s / 2), size=2)
            clear = all(
                cy + reach <= y0 or cy - reach >= y1 or cx + reach <= x0 or cx - reach >= x1
                for y0, x0, y1, x1 in keep_out
            )
            if clear:
                break
        mask = _shape_mask(shape, cy, cx, radius, 0.0, s)
        if kind == "frame":
            mask[[0, -1], :] = False
            mask[:, [0, -1]] = False
        under = x[i][mask].mean(axis=0)
        colour = np.clip(under + rng.uniform(0.3, 0.6, size=3), 0.0, 1.0)
        x[i][mask] = colour
        masks[i] = mask
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.05)
    if shortcut:
        _draw_artefacts(kind, x, marked, rng)
    np.clip(x, 0.0, 1.0, out=x)
    return x, y, masks


def _draw_artefacts(kind, x, marked, rng):
    s = SIZE
    if kind in ("watermark", "partial"):
        checker = (np.add.outer(np.arange(4), np.arange(4)) % 2 == 0)[None, :, :, None]
        x[:, s - 5 : s - 1, s - 5 : s - 1] = checker * COLOURS[marked][:, None, None, :]
    elif kind == "frame":
        c = COLOURS[marked][:, None, :]
        x[:, 0], x[:, -1] = c, c
        x[:, :, 0], x[:, :, -1] = c, c
    elif kind == "stamp":
        corners = rng.integers(0, 4, len(x))
        for i, (c, k) in enumerate(zip(marked, corners)):
            # A label: the glyph in its class colour on a black 5x7 box, one pixel in.
            y0 = 1 if k < 2 else s - 8
            x0 = 1 if k % 2 == 0 else s - 6
            box = x[i, y0 : y0 + 7, x0 : x0 + 5]
            box[...] = 0.0
            box[1:6, 1:4][GLYPHS[c]] = COLOURS[c]


def build_model(seed, head="max"):
    """A tiny CNN (about 15k parameters): the demo's architecture at 32x32.

    ``head="average"`` swaps global max pooling for global average pooling (the head of most
    ImageNet networks), a check that the signals do not depend on the pooling.
    """
    import keras
    from keras import layers

    pooling = {"max": layers.GlobalMaxPooling2D, "average": layers.GlobalAveragePooling2D}[head]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            layers.Rescaling(2.0, offset=-1.0),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            pooling(),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train_and_explain(kind, seed, epochs, n_train=480, n_probes=16, head="max"):
    """Train one model; every epoch, every method's maps of the same probes.

    Returns:
        dict with ``maps`` {method: (E, N, S, S) float32}, ``masks`` (N, S, S), ``labels`` (N,),
        ``classes`` {method: (E, N)}, ``free_acc`` (E,) shortcut-free accuracy per epoch,
        ``train_acc`` (E,), ``seconds`` {"fit": s, method: s per epoch}.
    """
    import keras

    from keras_saliency_monitor import metrics
    from keras_saliency_monitor.explain import Explainer

    rate = 0.8 if kind == "partial" else 1.0
    x, y, _ = make_images(kind, n_train, 10_000 * seed + 1, class_rate=rate)
    px, py, pmasks = make_images(kind, n_probes, 10_000 * seed + 2, class_rate=rate)
    fx, fy, _ = make_images(kind, 240, 10_000 * seed + 3, shortcut=False)
    model = build_model(seed, head)
    explainers = {m: Explainer(m).bind(model, px.shape[1:]) for m in METHODS}
    # The object-reliance check's inputs: fixed probes and masks, built once per run; both halves
    # go through one forward call, as in the callback.
    painted = np.concatenate(metrics.reliance_inputs(px, pmasks))
    out = {
        "maps": {m: [] for m in METHODS},
        "classes": {m: [] for m in METHODS},
        "logits": [],
        "reliance": [],
        "free_acc": [],
        "train_acc": [],
        "seconds": {"fit": 0.0, "reliance": 0.0, **{m: 0.0 for m in METHODS}},
    }

    class Collect(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for m, explainer in explainers.items():
                start = time.perf_counter()
                e = explainer.explain(px)
                out["seconds"][m] += time.perf_counter() - start
                out["maps"][m].append(e.maps)
                out["classes"][m].append(e.classes)
            out["logits"].append(e.logits)  # the same weights for every method
            # Forward passes only, and the same for every method (the class explained is the
            # predicted one); timed apart, as the cost of the check.
            start = time.perf_counter()
            logits = explainers["vanilla"].logits
            without = np.split(logits(painted), 2)
            out["reliance"].append(metrics.object_reliance(e.logits, *without, labels=py))
            out["seconds"]["reliance"] += time.perf_counter() - start
            out["train_acc"].append(float(logs["accuracy"]))
            pred = np.argmax(self.model.predict(fx, verbose=0, batch_size=120), axis=1)
            out["free_acc"].append(float(np.mean(pred == fy)))

    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[Collect()])
    spent = sum(out["seconds"][m] for m in (*METHODS, "reliance"))
    out["seconds"]["fit"] = time.perf_counter() - start - spent
    out["maps"] = {m: np.stack(v) for m, v in out["maps"].items()}
    out["classes"] = {m: np.stack(v) for m, v in out["classes"].items()}
    out.update(masks=pmasks, labels=py, images=px)
    return out


def evaluate(run, masked):
    """Feed one run's maps, epoch by epoch, through the monitor's measurement and alarm.

    Returns:
        ``{method: (epoch of first alarm or None, [saliency_shortcut per epoch], last epoch's
        run-level numbers)}``.
    """
    from keras_saliency_monitor import metrics
    from keras_saliency_monitor.alarm import ShortcutAlarm

    out = {}
    contrast = metrics.mask_contrast(run["masks"])
    for method, maps in run["maps"].items():
        alarm = ShortcutAlarm()  # the callback's defaults
        fired, scores = None, []
        for epoch, epoch_maps in enumerate(maps):
            numbers, per_probe = metrics.shortcut_indicators(
                epoch_maps, run["masks"] if masked else None, contrast if masked else None
            )
            numbers["probe_skill"] = metrics.probe_skill(run["logits"][epoch], run["labels"])
            if masked:
                numbers["object_reliance"], per_probe["object_reliance"] = run["reliance"][epoch]
            scores.append(alarm.shortcut_score(numbers))
            if alarm.update(epoch, numbers, per_probe) is not None:
                fired = epoch
        out[method] = (fired, scores, numbers)
    return out


def indicator_cost(repeats=15):
    """Median times against the vanilla gradient of the same 16 probes, alternated pair by pair.

    Returns rows ``(size, gradient s, indicators s, indicators ratio, reliance s, reliance
    ratio)``: `shortcut_indicators` (numpy, with masks) and the object-reliance check (its two
    forward passes per probe, compiled once, and `object_reliance`; its inputs are built once
    per run, as the callback does).
    """
    from keras_saliency_monitor import metrics
    from keras_saliency_monitor.explain import Explainer

    rows = []
    for size in (32, 64):
        global SIZE
        saved, SIZE = SIZE, size
        try:
            model = build_model(0)
            px, _, pmasks = make_images("clean_random", 16, 5)
        finally:
            SIZE = saved
        explainer = Explainer("vanilla").bind(model, px.shape[1:])
        first = explainer.explain(px)
        maps = first.maps
        contrast = metrics.mask_contrast(pmasks)
        painted = np.concatenate(metrics.reliance_inputs(px, pmasks))  # one call for both
        explainer.logits(px)  # compiled before timing, as the gradient
        times = {"gradient": [], "indicators": [], "reliance": []}
        for _ in range(repeats):  # alternate the sides pair by pair
            start = time.perf_counter()
            explainer.explain(px)
            times["gradient"].append(time.perf_counter() - start)
            start = time.perf_counter()
            metrics.shortcut_indicators(maps, pmasks, contrast)  # as the callback: contrast once
            times["indicators"].append(time.perf_counter() - start)
            start = time.perf_counter()
            metrics.object_reliance(first.logits, *np.split(explainer.logits(painted), 2))
            times["reliance"].append(time.perf_counter() - start)
        grad = np.array(times["gradient"])
        rows.append(
            (
                size,
                np.median(grad),
                np.median(times["indicators"]),
                np.median(np.array(times["indicators"]) / grad),
                np.median(times["reliance"]),
                np.median(np.array(times["reliance"]) / grad),
            )
        )
    return rows


def _rate(values):
    values = list(values)
    return f"{sum(values)}/{len(values)}" if values else "-"


def table(results, seeds, kinds=KINDS):
    """The printed table: per kind and method, alarms without and with masks."""
    lines = []
    header = f"| kind | shortcut-free acc | {' | '.join(METHODS)} |"
    lines += [header, "|" + " --- |" * (2 + len(METHODS))]
    for kind in kinds:
        accs = [results[(kind, s)]["free_acc"] for s in seeds]
        cells = []
        for method in METHODS:
            parts = []
            for masked in (False, True):
                fired = [results[(kind, s)]["alarms"][masked][method][0] for s in seeds]
                hit = [f is not None for f in fired]
                first = [f for f in fired if f is not None]
                epoch = f" e{int(np.median(first))}" if first else ""
                parts.append(_rate(hit) + epoch)
            cells.append(" / ".join(parts))
        acc_text = ", ".join(f"{a:.2f}" for a in accs)
        lines.append(f"| {kind} | {acc_text} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Cells: runs that alarmed without masks / with masks, eN = median epoch of the first"
    )
    lines.append("alarm (0-based). Summary at the defaults:")
    for masked in (False, True):

        def hits(kinds, full_only=False, masked=masked):
            out = []
            for kind in kinds:
                for s in seeds:
                    r = results.get((kind, s))
                    if r is None:
                        continue
                    r = results[(kind, s)]
                    if full_only and r["free_acc"] >= 0.6:
                        continue
                    out += [r["alarms"][masked][m][0] is not None for m in METHODS]
            return out

        fixed, full = hits(FIXED_PLACE), hits(SHORTCUT_KINDS, full_only=True)
        partial, clean = hits(("partial",)), hits(CLEAN_KINDS)
        fixed, full, partial, clean = (v or [False] for v in (fixed, full, partial, clean))
        lines.append(
            f"- {'with' if masked else 'without'} masks: fixed-place shortcut runs detected "
            f"{_rate(fixed)} ({100 * np.mean(fixed):.0f}%), full shortcut runs detected "
            f"{_rate(full)} ({100 * np.mean(full):.0f}%), partial {_rate(partial)}, "
            f"clean runs alarmed {_rate(clean)} (false-alarm rate {100 * np.mean(clean):.0f}%)"
        )
    lines.append("")
    lines.append("Last epoch's signals, min-max over seeds: border ratio (no masks) and focus lift")
    lines.append("(masks; mask contrast in the kind's column):")
    lines.append("")
    lines.append(f"| kind (mask contrast) | object reliance | {' | '.join(METHODS)} |")
    lines.append("|" + " --- |" * (2 + len(METHODS)))
    for kind in kinds:
        runs = [results[(kind, s)]["alarms"][True] for s in seeds]
        contrast = [r[METHODS[0]][2]["mask_contrast"] for r in runs]
        reliance = [r[METHODS[0]][2]["object_reliance"] for r in runs]
        cells = []
        for method in METHODS:
            border = [r[method][2]["border_ratio"] for r in runs]
            lift = [r[method][2]["focus_lift"] for r in runs]
            cells.append(f"{min(border):.2f}-{max(border):.2f} / {min(lift):.2f}-{max(lift):.2f}")
        lines.append(
            f"| {kind} ({min(contrast):.1f}-{max(contrast):.1f}) | "
            f"{min(reliance):.2f}-{max(reliance):.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 6 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--head", choices=("max", "average"), default="max", help="global pooling of the CNN"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    seeds = range(1) if args.quick else range(args.seeds)
    epochs = 6 if args.quick else args.epochs
    kinds = [k for k in args.kinds.split(",") if k]
    results = {}
    start = time.perf_counter()
    for seed in seeds:
        for kind in kinds:
            run = train_and_explain(kind, seed, epochs, head=args.head)
            results[(kind, seed)] = {
                "free_acc": run["free_acc"][-1],
                "alarms": {masked: evaluate(run, masked) for masked in (False, True)},
                "seconds": run["seconds"],
            }
            fired = {
                ("M" if masked else "-") + m[:5]: v[0]
                for masked in (False, True)
                for m, v in results[(kind, seed)]["alarms"][masked].items()
            }
            print(
                f"{kind:14s} seed {seed}: shortcut-free acc {run['free_acc'][-1]:.2f}, first "
                f"alarm {fired} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    print()
    print(table(results, list(seeds), kinds))
    print("\nCost of the shortcut indicators (16 probes, numpy, with masks) and of the object")
    print("reliance check (32 forward passes) against the vanilla gradient of the same probes")
    print("(medians of 15 alternated pairs):")
    for size, grad, ind, ratio, rel, rel_ratio in indicator_cost():
        print(
            f"- {size}x{size}: gradient {1e3 * grad:.2f} ms, indicators {1e3 * ind:.2f} ms "
            f"(ratio {ratio:.2f}), object reliance {1e3 * rel:.2f} ms (ratio {rel_ratio:.2f})"
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

"""One picture per saliency method, from the demo's data, drawn by the project's own renderer.

    python examples/method_gallery.py [--out docs/images] [--epochs 6]

Trains a small CNN for a few epochs on the demo's clean "shapes" images (the class is the shape:
circle, square, triangle), then explains the same four held-out probes with every method and
writes ``<out>/method_<name>.png``: a 2 x 2 grid, per probe the image and its saliency map over a
dimmed grey copy (raw map, normalised per probe at its 99th percentile, no smoothing), captioned
with the true class and the explained (predicted) class and its probability. Everything is generated
and seeded in code; a run takes a minute or two on a laptop CPU.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from PIL import Image  # noqa: E402

from keras_saliency_monitor.attribution import methods  # noqa: E402
from keras_saliency_monitor.attribution.explain import explain  # noqa: E402
from keras_saliency_monitor.demo_data import make_demo_splits  # noqa: E402
from keras_saliency_monitor.drawing import render

# Options shown in the gallery: the defaults, spelled out so the captions say what was run.
OPTIONS = {
    "vanilla": {},
    "gradient_x_input": {},
    "smoothgrad": {"samples": 25, "noise": 0.15, "seed": 0},
    "smoothgrad_squared": {"samples": 25, "noise": 0.15, "seed": 0},
    "vargrad": {"samples": 25, "noise": 0.15, "seed": 0},
    "integrated_gradients": {"steps": 64, "baseline": None},
    "gradcam": {"layer": None},
    "gradcam_plus_plus": {"layer": None},
}


def small_cnn(size: int, classes: int) -> keras.Model:
    """Four conv layers, global max pooling and a softmax head.

    Max pooling, not average: whether a shape is present is a "somewhere" question, and with
    average pooling this net stays at chance for the few epochs the gallery trains.
    """
    inp = keras.Input((size, size, 3))
    h = layers.Rescaling(2.0, offset=-1.0, name="center")(inp)  # [0, 1] -> [-1, 1]
    for width in (16, 32, 64):
        h = layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(h)
    h = layers.GlobalMaxPooling2D()(h)
    out = layers.Dense(classes, activation="softmax", name="head")(h)
    model = keras.Model(inp, out, name="shapes_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def true_colours(x):
    return np.clip(x, 0.0, 1.0)


def dimmed_grey(x):
    return 0.15 + 0.6 * np.repeat(true_colours(x).mean(axis=-1, keepdims=True), 3, axis=-1)


def pick_probes(y: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` probes cycling through the classes (one of each first)."""
    order = [np.flatnonzero(y == c) for c in np.unique(y)]
    picked = [order[i % len(order)][i // len(order)] for i in range(count)]
    return np.asarray(picked)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("docs", "images"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--probes", type=int, default=4)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    data = make_demo_splits(seed=0)
    train, val, probes = data["train_clean"], data["val"], data["probes_clean"]
    model = small_cnn(train.x.shape[1], len(train.class_names))
    model.fit(
        train.x,
        train.y,
        validation_data=(val.x, val.y),
        epochs=args.epochs,
        batch_size=32,
        verbose=2,
    )

    idx = pick_probes(probes.y, args.probes)
    x, y, names = probes.x[idx], probes.y[idx], probes.class_names
    os.makedirs(args.out, exist_ok=True)
    for name in methods.METHODS:
        result = explain(model, x, method=name, **OPTIONS[name])
        # Left tile: the probe in its true colours. Right tile: the heatmap over a dimmed grey
        # copy, where the colormap reads clearly whatever the shape's and background's colours.
        display, _ = render.render_overlays(x, result.maps, display_fn=true_colours)
        _, overlays = render.render_overlays(x, result.maps, alpha=0.8, display_fn=dimmed_grey)
        captions = [
            f"true {names[t]}  pred {names[c]} {p:.2f}"
            for t, c, p in zip(y, result.classes, result.confidences)
        ]
        grid = render.make_grid(display, overlays, captions, columns=2)
        path = os.path.join(args.out, f"method_{name}.png")
        Image.fromarray(grid).save(path, optimize=True)
        extra = ""
        if "completeness_gap" in result.extras:
            rel = np.abs(result.extras["completeness_gap"]) / np.abs(result.extras["score_delta"])
            extra = f", IG completeness gap {np.median(rel):.1%} of |f(x) - f(x')| (median)"
        if "layer" in result.extras:
            extra = f", layer {result.extras['layer']!r}"
        size_kb = os.path.getsize(path) // 1024
        print(f"{path}: {grid.shape[1]}x{grid.shape[0]} px, {size_kb} KB{extra}")


if __name__ == "__main__":
    main()

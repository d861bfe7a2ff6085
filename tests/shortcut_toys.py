"""Tiny datasets and a CNN for the alarm's end-to-end tests: a coloured blob is the object.

The class is the colour of a 4x4 blob at a random place on a noisy grey background (``clean``),
or a class-coloured mark that the blob's colour does not agree with (the shortcuts), or the
blob again with the same mark on every image (``uninformative``: no class information in it).
"""

import keras
import numpy as np

COLOURS = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]], np.float32)
# The marks' colours differ from the objects': a model that learned a mark does not read the
# object's colour with the same features.
MARKS = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.7, 0.7, 0.7]], np.float32)


def blobs(kind="clean", n=96, size=24, seed=0):
    """``(x, y)``: ``kind`` is "clean", "uninformative", "corner", "frame" or "centre"."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.4, 0.05, size=(n, size, size, 3)).astype(np.float32)
    y = (np.arange(n) % 3).astype(np.int32)
    shortcut = kind in ("corner", "frame", "centre")
    for i in range(n):
        colour = rng.integers(3) if shortcut else y[i]  # the object's colour: the class if clean
        r, c = rng.integers(4, size - 8, size=2)
        x[i, r : r + 4, c : c + 4] = COLOURS[colour]
        mark = MARKS[y[i]]
        if kind == "uninformative":
            x[i, -4:-1, -4:-1] = MARKS[1]  # the same white mark on every image
        elif kind == "corner":
            x[i, -4:-1, -4:-1] = mark
        elif kind == "frame":
            x[i, 0, :] = x[i, -1, :] = x[i, :, 0] = x[i, :, -1] = mark
        elif kind == "centre":
            h = size // 2
            x[i, h - 1 : h + 2, h - 1 : h + 2] = mark
    return x, y


def cnn(size=24, seed=0, batch_norm=False):
    """Same-padded convolutions and global max pooling; with ``batch_norm``, a BatchNorm at
    Keras's default momentum (0.99) on the pooled features, as at the end of a ResNet."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            *([keras.layers.BatchNormalization()] if batch_norm else []),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model

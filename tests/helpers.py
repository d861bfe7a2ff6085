"""Shared test helpers: tiny models and data, and reading events back with TensorBoard's reader."""

import glob
import io
import os

import keras
import numpy as np
from keras import layers
from PIL import Image
from tensorboard.backend.event_processing import plugin_event_accumulator as pea


class CountBatches(keras.callbacks.Callback):
    """Counts trained batches: a fail-fast error must come before the first one."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


def tiny_data(n=48, size=12, classes=3, seed=0):
    """Images whose class is the position of a bright square: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.1, size=(n, size, size, 3)).astype("float32")
    y = np.arange(n) % classes
    for i in range(n):
        r = 1 + 3 * y[i]
        x[i, r : r + 3, 2:5, :] += 1.0
    return x, y.astype("int32")


def tiny_cnn(size=12, classes=3, dropout=False, batchnorm=False):
    parts = [keras.Input((size, size, 3)), layers.Conv2D(4, 3, activation="relu")]
    if batchnorm:
        parts.append(layers.BatchNormalization())
    parts.append(layers.Flatten())
    if dropout:
        parts.append(layers.Dropout(0.3))
    parts.append(layers.Dense(classes, activation="softmax"))
    model = keras.Sequential(parts)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def accumulator(run_dir):
    acc = pea.EventAccumulator(run_dir, size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return acc


def read_images(run_dir, tag):
    """{step: [decoded uint8 images]} for a TF2 image summary tag, via TensorBoard's reader."""
    out = {}
    for event in accumulator(run_dir).Tensors(tag):
        blobs = event.tensor_proto.string_val[2:]  # [width, height, png...]
        out[event.step] = [np.asarray(Image.open(io.BytesIO(b))) for b in blobs]
    return out


def read_scalars(run_dir, tag):
    from tensorboard.util import tensor_util

    return {
        e.step: float(tensor_util.make_ndarray(e.tensor_proto))
        for e in accumulator(run_dir).Tensors(tag)
    }


def event_files(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))


def write_stored_run(run_dir, steps, num_probes=3, size=16, seed=0):
    """A run's saliency events written without a model: the probe set (no labels) at the first
    step and random maps at every step, as SaliencyMonitor stores them (store.py)."""
    from keras_saliency_monitor.storage import store
    from keras_saliency_monitor.storage.writer import EventWriter

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (num_probes, size, size, 3), np.uint8)
    with EventWriter(run_dir) as writer:
        blobs = store.encode_probe_set(images, indices=list(range(num_probes)))
        writer.add_blob_sequence(store.PROBE_SET_TAG, blobs, steps[0], store.PLUGIN_NAME)
        for step in steps:
            maps = rng.uniform(0, 1, (num_probes, size, size)).astype(np.float32)
            blobs = store.encode_maps(maps, step=step, classes=[0] * num_probes)
            writer.add_blob_sequence(store.MAPS_TAG, blobs, step, store.PLUGIN_NAME)

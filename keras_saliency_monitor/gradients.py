"""The one place that talks to the backend's autodiff: a compiled, batched, chunked gradient.

``InputGradient`` wraps ``logits_fn`` (from :mod:`targets`) in a single ``tf.function`` with a fixed
input signature (batch dimension ``None``), so it is traced once per run whatever the batch size of
the last chunk, and every method (vanilla, SmoothGrad samples, IG steps) goes through the same call
in chunks of at most ``batch_size`` images: peak memory is bounded by the chunk, not by the
number of probes x samples.

The scores of a chunk are summed before differentiating. With ``training=False`` the examples of a
batch do not interact (BatchNorm uses its moving statistics, Dropout is off), so the gradient of the
sum with respect to example i is exactly the gradient of example i's own score.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np

from keras_saliency_monitor import targets


def _require_tensorflow():
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "keras-saliency-monitor needs the TensorFlow backend of Keras 3; the active backend is "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing keras."
        )
    import tensorflow as tf

    return tf


class GradientResult(NamedTuple):
    """Output of one :class:`InputGradient` call, numpy arrays."""

    grads: np.ndarray  # (N, H, W, C) float32: d score / d input
    logits: np.ndarray  # (N, K) float32: the logits (pre-activation scores) of the chosen output
    classes: np.ndarray  # (N,) int32: the class whose score was differentiated


class InputGradient:
    """Compiled gradient of one class score per example with respect to the input.

    Args:
        logits_fn: ``x -> (N, K)`` float32 logits, traceable (see :func:`targets.build_logits_fn`).
        head: the :class:`targets.ScoreHead` describing the logits.
        input_shape: the shape of one example, ``(H, W, C)``.
        target: a callable target (``logits -> (N,)`` scores), or None for class selection.
        batch_size: the largest chunk sent through the compiled call at once.
    """

    def __init__(self, logits_fn, head, input_shape, *, target=None, batch_size=32):
        tf = _require_tensorflow()
        self._tf = tf
        self._logits_fn = logits_fn
        self._head = head
        self._target = target if callable(target) else None
        self.batch_size = int(batch_size)
        self.trace_count = 0  # incremented by Python at trace time only: a retrace detector
        spec = (
            tf.TensorSpec((None, *input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        )
        self._compiled = tf.function(self._step, input_signature=spec)

    def _step(self, x, requested):
        self.trace_count += 1
        tf = self._tf
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = self._logits_fn(x)
            scores, classes = targets.scores_and_classes(
                logits, requested, self._head, self._target
            )
            total = tf.reduce_sum(scores)
        grads = tape.gradient(total, x)
        if grads is None:  # the output does not depend on the input at all
            grads = tf.zeros_like(x)
        return grads, logits, classes

    def __call__(self, x: np.ndarray, requested: np.ndarray) -> GradientResult:
        """Gradients for ``x`` (N, H, W, C), in chunks of ``batch_size``.

        Args:
            x: float32 images.
            requested: (N,) int32 classes, -1 for "predicted"
                (see :func:`targets.requested_classes`).
        """
        x = np.asarray(x, np.float32)
        requested = np.asarray(requested, np.int32)
        parts = []
        for start in range(0, len(x), self.batch_size):
            stop = start + self.batch_size
            g, z, c = self._compiled(x[start:stop], requested[start:stop])
            parts.append((g.numpy(), z.numpy(), c.numpy()))
        if not parts:
            raise ValueError("No images to explain: the probe batch is empty.")
        return GradientResult(*(np.concatenate(p, axis=0) for p in zip(*parts)))

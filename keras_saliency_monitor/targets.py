"""Which scalar to differentiate: the pre-activation logit behind a softmax or sigmoid.

Saliency of a softmax *probability* mixes in every other class (d p_c / dx depends on all logits)
and saturates once the model is confident, so the score we differentiate is the logit. This module
finds it in the user's model without cloning or mutating anything:

- a separate ``Softmax`` layer or ``Activation("softmax" | "sigmoid")`` at the output: the logits
  are that layer's input tensor, reached through a new Functional view over the same layers;
- a softmax or sigmoid fused into the last ``Dense``: we take the view up to the Dense layer's input
  and apply its kernel and bias ourselves (the same variables, so nothing is copied);
- anything else (linear output, regression): the output itself.

Subclassed models have no graph to inspect; their output is used as it is, with a warning when it
looks like probabilities.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

_SQUASHES = ("softmax", "sigmoid")


class ScoreHead(NamedTuple):
    """How the model's chosen output was turned into logits."""

    kind: str  # "softmax" | "sigmoid" | "linear": the activation that was stripped, if any
    num_outputs: int  # C: the width of the logits (1 for binary sigmoid and scalar regression)
    description: str  # human-readable, e.g. "softmax fused into Dense 'head' (stripped)"

    @property
    def binary(self) -> bool:
        """A single sigmoid unit: class 1 when the logit is > 0, class 0 otherwise."""
        return self.kind == "sigmoid" and self.num_outputs == 1

    @property
    def num_classes(self) -> int | None:
        """Number of classes a class `target` may index, None for regression-like outputs."""
        if self.binary:
            return 2
        if self.kind == "linear" and self.num_outputs == 1:
            return None
        return self.num_outputs


def _activation_name(fn) -> str:
    """Name of a Keras activation function or layer attribute ('' when unknown)."""
    if fn is None:
        return ""
    if isinstance(fn, str):
        return fn
    return getattr(fn, "__name__", "") or ""


def _graph_of(model) -> bool:
    """True when the model has a symbolic graph we can take a view of (Functional or Sequential)."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def _select_output(model, output):
    """Return (index, KerasTensor) of the chosen output of a graph model."""
    outputs = list(model.outputs)
    if output is None:
        if len(outputs) > 1:
            names = getattr(model, "output_names", None) or list(range(len(outputs)))
            raise ValueError(
                "Invalid value for argument `output`: the model has "
                f"{len(outputs)} outputs ({names}); pass output=<index or name> to choose the "
                "one to explain."
            )
        return 0, outputs[0]
    if isinstance(output, (int, np.integer)) and not isinstance(output, bool):
        if not -len(outputs) <= int(output) < len(outputs):
            raise ValueError(
                f"Invalid value for argument `output`: expected an index in [0, {len(outputs)}) "
                f"for a model with {len(outputs)} outputs, received output={output}."
            )
        return int(output) % len(outputs), outputs[int(output)]
    if isinstance(output, str):
        names = list(getattr(model, "output_names", None) or [])
        for i, t in enumerate(outputs):
            layer = t._keras_history.operation
            if output == layer.name or (i < len(names) and names[i] == output):
                return i, t
        raise ValueError(
            f"Invalid value for argument `output`: no output named {output!r}; the model's "
            f"outputs are {names or [t._keras_history.operation.name for t in outputs]}."
        )
    raise TypeError(
        "Invalid type for argument `output`: expected an int index or a str name, received "
        f"{type(output).__name__}."
    )


def _inputs(model):
    """A single input as a tensor, not a one-element list (a list makes Keras warn at call)."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _producer(tensor):
    """The layer that produced a KerasTensor and the input tensors of that call."""
    op, node_index, _ = tensor._keras_history
    node = op._inbound_nodes[node_index]
    return op, list(node.input_tensors)


def build_logits_fn(model, output=None) -> tuple[Callable, ScoreHead]:
    """Build ``logits_fn(x) -> (N, C) float32`` for the chosen output of ``model``.

    Args:
        model: a built Keras 3 model.
        output: for multi-output models, the index or name of the output to explain.

    Returns:
        ``(logits_fn, head)``. ``logits_fn`` runs with ``training=False`` and is traceable by
        ``tf.function``; it never changes the model.

    Raises:
        ValueError: when ``output`` does not name an output of the model.
    """
    if not _graph_of(model):
        if output is not None:
            raise ValueError(
                "Invalid value for argument `output`: choosing an output by index or name needs "
                "a Functional or Sequential model; this model is subclassed. Wrap it so that it "
                "returns the one output to explain."
            )
        return _subclassed_logits_fn(model)

    _, out = _select_output(model, output)
    layer, inputs = _producer(out)
    act = ""
    if isinstance(layer, keras.layers.Softmax):
        act = "softmax"
    elif isinstance(layer, keras.layers.Activation):
        act = _activation_name(layer.activation)
    if act in _SQUASHES and len(inputs) == 1:
        view = keras.Model(_inputs(model), inputs[0])
        desc = f"{act} layer '{layer.name}' stripped"

        def logits_fn(x):
            return _flat(view(x, training=False))

        return logits_fn, ScoreHead(act, _width(inputs[0]), desc)

    fused = _activation_name(getattr(layer, "activation", None))
    if isinstance(layer, keras.layers.Dense) and fused in _SQUASHES and len(inputs) == 1:
        view = keras.Model(_inputs(model), inputs[0])
        dense = layer

        def logits_fn(x):
            features = view(x, training=False)
            # The Dense layer's own computation minus its activation, on the same variables.
            z = ops.matmul(ops.cast(features, dense.compute_dtype), dense.kernel)
            if dense.bias is not None:
                z = ops.add(z, dense.bias)
            return _flat(z)

        desc = f"{fused} fused into Dense '{layer.name}' stripped"
        return logits_fn, ScoreHead(fused, _width(out), desc)

    if fused in _SQUASHES:
        warnings.warn(
            f"The output layer '{layer.name}' ({type(layer).__name__}) applies {fused} inside "
            "a layer type we cannot split; saliency is taken of its probabilities, which saturate. "
            "Put the activation in a separate Activation layer to get logits.",
            stacklevel=3,
        )
    view = keras.Model(_inputs(model), out) if len(model.outputs) > 1 else model

    def logits_fn(x):
        return _flat(view(x, training=False))

    kind = fused if fused in _SQUASHES else "linear"
    return logits_fn, ScoreHead(kind, _width(out), f"output of '{layer.name}' used as is")


def _subclassed_logits_fn(model):
    warnings.warn(
        f"Model {model.name!r} is subclassed, so a softmax or sigmoid at its end cannot be "
        "stripped; its raw output is differentiated. Return logits from call() for exact "
        "logit saliency.",
        stacklevel=3,
    )

    def logits_fn(x):
        return _flat(model(x, training=False))

    width = None
    try:
        width = int(np.prod(model.output_shape[1:]))
    except Exception:  # noqa: BLE001 - subclassed models often have no static output shape
        pass
    return logits_fn, ScoreHead("linear", width or 0, "subclassed model output used as is")


def _width(tensor) -> int:
    shape = tensor.shape[1:]
    if any(d is None for d in shape):
        raise ValueError(
            f"The model's output has an unknown size {tuple(tensor.shape)}; saliency needs a "
            "fixed number of outputs per example."
        )
    return int(np.prod(shape)) if shape else 1


def _flat(z):
    """(N, ...) -> (N, C) float32: class scores are taken in float32 even under mixed precision."""
    z = ops.cast(z, "float32")
    if len(z.shape) == 1:
        return ops.expand_dims(z, -1)
    if len(z.shape) > 2:
        return ops.reshape(z, (ops.shape(z)[0], -1))
    return z


def validate_target(target):
    """Check the `target` argument's type and value; return it unchanged.

    Accepts "predicted", "label", a non-negative int class index, or a callable
    ``target(logits) -> (N,)`` scores built from ``keras.ops``.
    """
    if callable(target):
        return target
    if isinstance(target, str):
        if target not in ("predicted", "label"):
            raise ValueError(
                'Invalid value for argument `target`: expected "predicted", "label", an int class '
                f"index or a callable, received target={target!r}."
            )
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if target < 0:
            raise ValueError(
                "Invalid value for argument `target`: a class index must be >= 0, received "
                f"target={target}."
            )
        return int(target)
    raise TypeError(
        'Invalid type for argument `target`: expected "predicted", "label", an int class index '
        f"or a callable, received {type(target).__name__}."
    )


def requested_classes(target, n: int, labels, head: ScoreHead) -> np.ndarray:
    """Per-example class requests as int32 (N,): -1 means "the predicted class".

    Raises:
        ValueError: for target="label" without labels, or a class index out of range.
    """
    if callable(target) or target == "predicted":
        return np.full((n,), -1, np.int32)
    if target == "label":
        if labels is None:
            raise ValueError(
                'Invalid value for argument `target`: target="label" needs labels; pass probe '
                'data as (x, y) (or labels=... to compute_saliency), or use target="predicted".'
            )
        cls = np.asarray(labels).astype(np.int64).reshape(-1)
    else:
        cls = np.full((n,), int(target), np.int64)
    if head.num_classes is None:
        if np.any(cls != 0):
            raise ValueError(
                "Invalid value for argument `target`: the model's output is a single linear unit "
                '(regression); use target="predicted" or 0.'
            )
    elif np.any(cls >= head.num_classes) or np.any(cls < 0):
        bad = int(cls[(cls >= head.num_classes) | (cls < 0)][0])
        raise ValueError(
            f"Invalid value for argument `target`: class {bad} is out of range for a model with "
            f"{head.num_classes} classes ({head.description}); expected 0..{head.num_classes - 1}."
        )
    return cls.astype(np.int32)


def scores_and_classes(logits, requested, head: ScoreHead, target=None):
    """Select one differentiable score per example (backend ops, traceable).

    Args:
        logits: (N, C) float32 tensor.
        requested: (N,) int32 tensor, -1 for the predicted class.
        head: the ScoreHead of the logits.
        target: a callable target, or None.

    Returns:
        ``(scores (N,), classes (N,) int32)``. For a binary sigmoid the score of class 1 is the
        logit and that of class 0 its negation (the logit of the complementary event), so the
        gradient points towards the chosen class either way.
    """
    if callable(target):
        scores = ops.reshape(ops.cast(target(logits), "float32"), (-1,))
        return scores, ops.cast(ops.argmax(logits, axis=-1), "int32")
    if head.binary:
        z = logits[:, 0]
        predicted = ops.cast(z > 0, "int32")
        classes = ops.where(requested < 0, predicted, requested)
        sign = ops.cast(classes, "float32") * 2.0 - 1.0
        return z * sign, classes
    if head.num_classes is None:
        return logits[:, 0], ops.zeros_like(requested)
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    classes = ops.where(requested < 0, predicted, requested)
    onehot = ops.one_hot(classes, head.num_outputs, dtype="float32")
    return ops.sum(logits * onehot, axis=-1), classes


def confidences(logits: np.ndarray, classes: np.ndarray, head: ScoreHead) -> np.ndarray | None:
    """The model's probability for the chosen class (numpy), None for regression outputs."""
    logits = np.asarray(logits, np.float64)
    rows = np.arange(len(classes))
    if head.kind == "softmax":
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return p[rows, classes]
    if head.binary:
        p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.where(classes == 1, p1, 1.0 - p1)
    if head.kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits[rows, classes]))
    return None

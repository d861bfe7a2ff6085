"""Which scalar to differentiate: the pre-activation logit behind a softmax or sigmoid.

Saliency of a softmax *probability* mixes in every other class (d p_c / dx depends on all logits)
and saturates once the model is confident, so the score we differentiate is the logit. This module
finds it in the user's model without cloning or mutating anything:

- a separate ``Softmax`` layer or ``Activation("softmax" | "sigmoid")`` at the output: the logits
  are that layer's input tensor, reached through a new Functional view over the same layers;
- a softmax or sigmoid fused into the last ``Dense``: we take the view up to the Dense layer's input
  and apply its kernel and bias ourselves (the same variables, so nothing is copied);
- anything else (linear output, regression): the output itself.

Models without a graph (subclassed, or a ``Sequential`` without ``keras.Input`` before ``fit``
builds it) are run once on a probe: that forward pass gives the output's width and shows whether
the output is produced by a squashing layer among ``model.layers``, which is then run without its
activation (a temporary override during each pass; see :func:`overridden`). Otherwise their output
is used as it is, with a warning when it looks like probabilities.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops
from scipy import special

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


def build_logits_fn(model, output=None, sample=None) -> tuple[Callable, ScoreHead]:
    """Build ``logits_fn(x) -> (N, C) float32`` for the chosen output of ``model``.

    Args:
        model: a Keras 3 model: Functional, Sequential (built or not) or subclassed.
        output: for multi-output models, the index or name of the output to explain.
        sample: one batch of images (a probe) for models without a graph: a real forward pass
            on it (``training=False``) gives the output's width and shows which layer the pass
            ends in. Zeros of the model's input shape when None.

    Returns:
        ``(logits_fn, head)``. ``logits_fn`` runs with ``training=False`` and is traceable
        (``tf.function``, ``jax.jit``); it never changes the model.

    Raises:
        ValueError: when ``output`` does not name an output of the model.
    """
    if not _graph_of(model):
        if sample is None:
            raise ValueError(
                f"Model {model.name!r} has no graph ({model_kind(model)}); explaining it needs "
                "one forward pass on a probe image. Pass images so that one can be taken."
            )
        if output is not None:
            raise ValueError(
                "Invalid value for argument `output`: choosing an output by index or name needs "
                f"a Functional or Sequential model; this model is {model_kind(model)}. Make "
                "call() return the one output to explain."
            )
        return _forward_pass_logits_fn(model, sample)

    tensor, finish, head = logits_tensor(model, output, warn=True)
    # Always a view, never the model itself: what the compiled gradient keeps must not hold the
    # user's model alive (explain's cache is keyed on it weakly).
    view = keras.Model(_inputs(model), tensor)

    def logits_fn(x):
        return finish(view(x, training=False))

    if head.kind == "linear" and sample is not None:
        _warn_if_squashed_before_output(model, output, head, logits_fn, sample)
    return logits_fn, head


def _squash_in(op) -> str:
    """'softmax' / 'sigmoid' when ``op`` squashes: a layer (see :func:`_squash_of`), a layer
    with a fused squashing activation (Conv2D, ...), a ``Lambda`` of a function of that name,
    or a ``keras.ops`` call on a symbolic tensor (``keras.ops.softmax(t)``)."""
    act = _squash_of(op) or _activation_name(getattr(op, "activation", None))
    if isinstance(op, keras.layers.Lambda):
        act = _activation_name(getattr(op, "function", None))
    if not isinstance(op, keras.layers.Layer):
        act = type(op).__name__.lower()
    return act if act in _SQUASHES else ""


def _hidden_squash(out):
    """The softmax/sigmoid behind the layers that end the graph at ``out``, if any.

    Walks back from the output through single-input layers without weights (Reshape, Flatten,
    pooling, Lambda, Dropout: they pass a squashed value on) and stops at the first layer with
    weights. Returns ``(squash, op, [ops after it])`` or None.
    """
    after = []
    tensor = out
    for _ in range(32):  # a chain of weightless layers is short; a bound keeps odd graphs finite
        op, inputs = _producer(tensor)
        act = _squash_in(op)
        if act:
            return act, op, after
        if len(inputs) != 1 or getattr(op, "weights", None):
            return None
        after.append(op)
        tensor = inputs[0]
    return None


def _warn_if_squashed_before_output(model, output, head, logits_fn, sample):
    """Warn when a softmax/sigmoid that is not the output layer makes the output probabilities.

    Only a final ``Softmax``/``Activation`` layer or a ``Dense`` with a fused softmax/sigmoid can
    be stripped; one followed by other layers (``Dense(softmax)`` then ``Reshape``,
    ``Conv2D(activation="softmax")`` then ``GlobalAveragePooling2D``, ``Lambda(softmax)`` after a
    ``Dense``) is explained as probabilities, which mix in every class and saturate. Found by
    walking the graph back from the output, or (a ``Lambda`` of an anonymous function) by the
    output of one forward pass on ``sample`` (``training=False``): rows in [0, 1] summing to 1.
    """
    _, output_tensor = _select_output(model, output)
    found = _hidden_squash(output_tensor)
    if found is None and head.num_outputs > 1:
        out = logits_fn(sample)
        if hasattr(out, "detach"):  # torch: np.array on a tensor in a graph warns (numpy 2)
            out = out.detach().cpu().numpy()
        values = np.asarray(ops.convert_to_numpy(out), np.float64)
        rows = values.reshape(len(values), -1)
        if rows.size and np.all((rows >= 0) & (rows <= 1)):
            if np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
                found = ("softmax", _producer(output_tensor)[0], [])
    if found is None:
        return
    act, op, after = found
    name = getattr(op, "name", type(op).__name__)
    where = f"layer '{name}' ({type(op).__name__})"
    if after:
        chain = " -> ".join(f"{type(a).__name__} '{a.name}'" for a in reversed(after))
        where += f", followed by {chain},"
    else:
        where += " produces the output and"
    warnings.warn(
        f"Model {model.name!r}: its output looks like {act} probabilities: {where} applies "
        f"{act} in a place where it cannot be stripped, so saliency is taken of probabilities "
        "(they mix in every class and saturate), not of logits. To explain logits, make the "
        f"{act} the model's last layer: e.g. a linear layer, then the reshaping or pooling, then "
        f"keras.layers.Activation({act!r}) (stripped here without changing the model); or "
        "return logits and train with from_logits=True in the loss.",
        stacklevel=5,
    )


def logits_tensor(model, output=None, warn=False) -> tuple[Any, Callable, ScoreHead]:
    """Where the logits of a Functional or Sequential model's chosen output are in its graph.

    Returns ``(tensor, finish, head)``: ``finish(value of tensor)`` are the (N, C) float32
    logits. ``tensor`` is the input of a final Softmax/Activation layer (softmax or sigmoid), the
    input of a Dense with a fused softmax/sigmoid (``finish`` applies its kernel and bias, on the
    same variables), or else the output itself. Grad-CAM's views (``gradients``) use it too.
    With ``warn``, a softmax/sigmoid inside another layer type, which cannot be split, warns.
    """
    _, out = _select_output(model, output)
    layer, inputs = _producer(out)
    act = _squash_of(layer) if len(inputs) == 1 else ""
    if act and not isinstance(layer, keras.layers.Dense):
        desc = f"{act} layer '{layer.name}' stripped"
        return inputs[0], _flat, ScoreHead(act, _width(inputs[0]), desc)

    fused = _activation_name(getattr(layer, "activation", None))
    if act:  # a Dense with a softmax/sigmoid activation
        dense = layer

        def finish(features):
            # The Dense layer's own computation minus its activation, on the same variables.
            z = ops.matmul(ops.cast(features, dense.compute_dtype), dense.kernel)
            if dense.bias is not None:
                z = ops.add(z, dense.bias)
            return _flat(z)

        desc = f"{fused} fused into Dense '{layer.name}' stripped"
        return inputs[0], finish, ScoreHead(fused, _width(out), desc)

    if fused in _SQUASHES and warn:
        warnings.warn(
            f"The output layer '{layer.name}' ({type(layer).__name__}) applies {fused} inside "
            "a layer type we cannot split; saliency is taken of its probabilities, which saturate. "
            "Put the activation in a separate Activation layer to get logits.",
            stacklevel=4,
        )
    kind = fused if fused in _SQUASHES else "linear"
    return out, _flat, ScoreHead(kind, _width(out), f"output of '{layer.name}' used as is")


def model_kind(model) -> str:
    """How a model without a graph came to be, for messages: subclassed or an unbuilt Sequential."""
    if isinstance(model, keras.Sequential):
        return "a Sequential model not built yet (no keras.Input)"
    return "subclassed"


def sublayers(layer, prefix=()) -> list[tuple[tuple, object]]:
    """Every layer tracked inside ``layer``, depth first, as ``(path, layer)`` pairs.

    ``path`` is the chain of layers from ``layer``'s direct children down to the one listed.
    """
    out = []
    for child in getattr(layer, "_layers", None) or []:
        if isinstance(child, keras.layers.InputLayer):
            continue
        path = (*prefix, child)
        out.append((path, child))
        out.extend(sublayers(child, path))
    return out


@contextlib.contextmanager
def overridden(obj, name, value):
    """Set ``obj.name = value`` for the duration of the block, then restore what was there.

    Used on the user's layers for one forward pass at a time (a trace, or one eager call), on
    the training thread: the model is the same object with the same attributes before and after.
    ``object.__setattr__`` keeps Keras's attribute tracking out of it.
    """
    missing = object()
    before = obj.__dict__.get(name, missing)
    object.__setattr__(obj, name, value)
    try:
        yield
    finally:
        if before is missing:
            object.__delattr__(obj, name)
        else:
            object.__setattr__(obj, name, before)


def _squash_of(layer) -> str:
    """'softmax' / 'sigmoid' when ``layer`` is a Softmax, a squashing Activation or Dense."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, (keras.layers.Activation, keras.layers.Dense)):
        act = _activation_name(getattr(layer, "activation", None))
        return act if act in _SQUASHES else ""
    return ""


def _watched_call(layer, on_output):
    """``layer.call``, plus ``on_output(layer, output)`` after each call."""
    original = layer.call

    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        on_output(layer, out)
        return out

    return call


@contextlib.contextmanager
def watching(layers, on_output):
    """Call ``on_output(layer, output)`` whenever one of ``layers`` runs during the block."""
    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(overridden(layer, "call", _watched_call(layer, on_output)))
        yield


@contextlib.contextmanager
def _recording(layers):
    """Record each layer's last output during the block: ``{id(layer): output}``."""
    seen = {}
    with watching(layers, lambda layer, out: seen.__setitem__(id(layer), out)):
        yield seen


@contextlib.contextmanager
def _unsquashed(layer):
    """``layer`` without its final softmax/sigmoid for the duration of the block."""
    if isinstance(layer, keras.layers.Softmax):

        def identity(inputs, mask=None):
            return inputs

        with overridden(layer, "call", identity):
            yield
    else:  # Dense or Activation: their own call, with a linear activation
        with overridden(layer, "activation", keras.activations.linear):
            yield


def _forward_pass_logits_fn(model, sample):
    """Logits of a model without a graph (subclassed, or a Sequential built by ``fit``).

    One real forward pass on ``sample`` (``training=False``) gives the output's width. The last
    softmax/sigmoid is stripped when the pass can be seen to end in it: a ``Dense`` with a
    squashing activation, a ``Softmax`` or an ``Activation`` layer among the model's layers whose
    output *is* the model's output. During each later pass that layer runs without its
    activation (a temporary override, restored at once). Otherwise the raw output is explained,
    with a warning when it looks like probabilities.
    """
    candidates = [layer for _, layer in sublayers(model) if _squash_of(layer)]
    with _recording(candidates) as seen:
        out = model(sample, training=False)
    if isinstance(out, (list, tuple, dict)):
        raise ValueError(
            f"Model {model.name!r} returns {type(out).__name__} of outputs; saliency of a model "
            "without a graph needs call() to return the single output to explain."
        )
    width = int(np.prod(tuple(out.shape)[1:])) if len(out.shape) > 1 else 1
    model_ref = weakref.ref(model)  # the compiled gradient must not keep the model alive

    def run(x):
        return _flat(model_ref()(x, training=False))

    last = None
    for layer in candidates:
        if seen.get(id(layer)) is out:
            last = layer
    if last is not None:
        act = _squash_of(last)
        layer_ref = weakref.ref(last)

        def logits_fn(x):
            with _unsquashed(layer_ref()):
                return run(x)

        desc = f"{act} of {type(last).__name__} '{last.name}' stripped (seen in a forward pass)"
        return logits_fn, ScoreHead(act, width, desc)

    values = np.asarray(keras.ops.convert_to_numpy(out), np.float64).reshape(len(out), -1)
    in_unit = values.size and np.all((values >= 0) & (values <= 1))
    if in_unit and (width == 1 or np.allclose(values.sum(axis=1), 1.0, atol=1e-3)):
        warnings.warn(
            f"Model {model.name!r} ({model_kind(model)}) outputs what look like probabilities, "
            "and no final Dense(activation='softmax'/'sigmoid'), Softmax or Activation layer "
            "among its layers produces its output, so none can be stripped: saliency is taken of "
            "the probabilities, which saturate. Return logits from call() (apply the softmax "
            "in the loss: from_logits=True), or end call() with such a layer.",
            stacklevel=4,
        )
    return run, ScoreHead("linear", width, f"output of {model_kind(model)} model used as is")


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


def check_target_output(target, head: ScoreHead) -> None:
    """Fail fast when a callable ``target`` does not map (N, C) logits to (N,) scores.

    The callable is run once on a small fixed (2, C) logits tensor (no model involved).

    Raises:
        ValueError: when calling it fails or its result is not shaped (N,).
    """
    if not callable(target):
        return
    n, width = 2, max(1, int(head.num_outputs))
    logits = ops.convert_to_tensor(
        np.linspace(-1.0, 1.0, n * width, dtype=np.float32).reshape(n, width)
    )
    try:
        shape = tuple(int(d) for d in ops.shape(target(logits)))
    except Exception as err:  # noqa: BLE001 - the user's function; reported with its error
        raise ValueError(
            "Invalid value for argument `target`: the target callable failed on logits of shape "
            f"({n}, {width}) with {type(err).__name__}: {err}. Expected a function of (N, C) "
            "logits returning (N,) scores, built from keras.ops."
        ) from err
    if shape != (n,):
        raise ValueError(
            "Invalid value for argument `target`: the target callable must return one score per "
            f"example, shape (N,); for logits of shape ({n}, {width}) it returned shape {shape}. "
            "Select one score per row, e.g. target=lambda z: z[:, 2] or "
            "lambda z: z[:, 0] - z[:, 1] (a sum over classes would explain all of them at once)."
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
        return special.softmax(logits, axis=1)[rows, classes]
    if head.binary:
        p1 = special.expit(logits[:, 0])
        return np.where(classes == 1, p1, 1.0 - p1)
    if head.kind == "sigmoid":
        return special.expit(logits[rows, classes])
    return None

"""The one place that talks to the backend's autodiff: compiled, batched, chunked gradients.

Two compiled gradients, one per kind of method:

- :class:`InputGradient`: d score / d input (vanilla, gradient x input, SmoothGrad, IG);
- :class:`LayerGradient`: a layer's activations and d score / d activations (Grad-CAM).

Each wraps one ``tf.function`` with a fixed input signature (batch dimension ``None``), so it is
traced once per run whatever the batch size of the last chunk, and every call (the clean probes,
SmoothGrad's noisy samples, IG's path points) goes through it in chunks of at most ``batch_size``
images: peak memory is bounded by the chunk, not by the number of probes x samples.

The scores of a chunk are summed before differentiating. With ``training=False`` the examples of a
batch do not interact (BatchNorm uses its moving statistics, Dropout is off), so the gradient of the
sum with respect to example i is exactly the gradient of example i's own score.

The second half of the module builds the model *view* Grad-CAM differentiates through: one forward
pass that returns both a layer's activations and the logits, found by name or automatically, also
inside a nested backbone (a Functional or Sequential model used as a layer) and in ``Sequential``
models. Views are new Functional models over the user's existing layers and tensors: nothing is
cloned, no layer is called on new symbolic inputs, and the user's model is not changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

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
    scores: np.ndarray | None = None  # (N,) float32: the differentiated score itself


class LayerGradientResult(NamedTuple):
    """Output of one :class:`LayerGradient` call, numpy arrays."""

    activations: np.ndarray  # (N, h, w, k) float32: the layer's output
    grads: np.ndarray  # (N, h, w, k) float32: d score / d activations
    logits: np.ndarray  # (N, K) float32: the logits of the chosen output
    classes: np.ndarray  # (N,) int32: the class whose score was differentiated
    scores: np.ndarray  # (N,) float32: the differentiated score itself


class _CompiledGradient:
    """One ``tf.function`` over ``(x, requested)``, called in chunks of ``batch_size`` images."""

    result_type: type = GradientResult

    def __init__(self, head, input_shape, *, target=None, batch_size=32):
        tf = _require_tensorflow()
        self._tf = tf
        self._head = head
        self._target = target if callable(target) else None
        self.batch_size = int(batch_size)
        self.trace_count = 0  # incremented by Python at trace time only: a retrace detector
        spec = (
            tf.TensorSpec((None, *input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        )
        # Traced once, at the first call; later calls go to that concrete function directly,
        # skipping tf.function's per-call argument matching (about a millisecond per chunk).
        self._compiled = tf.function(self._traced_step, input_signature=spec)
        self._concrete = None

    def _traced_step(self, x, requested):
        self.trace_count += 1
        return self._step(x, requested)

    def _step(self, x, requested):  # pragma: no cover - overridden
        raise NotImplementedError

    def _scores(self, logits, requested):
        return targets.scores_and_classes(logits, requested, self._head, self._target)

    def __call__(self, x: np.ndarray, requested: np.ndarray):
        """Run the compiled step over ``x`` (N, H, W, C) in chunks of ``batch_size``.

        Args:
            x: float32 images.
            requested: (N,) int32 classes, -1 for "predicted"
                (see :func:`targets.requested_classes`).
        """
        x = np.asarray(x, np.float32)
        requested = np.asarray(requested, np.int32)
        if len(x) == 0:
            raise ValueError("No images to explain: the probe batch is empty.")
        if self._concrete is None:
            self._concrete = self._compiled.get_concrete_function()
        tf = self._tf
        parts = []
        for start in range(0, len(x), self.batch_size):
            stop = start + self.batch_size
            out = self._concrete(tf.constant(x[start:stop]), tf.constant(requested[start:stop]))
            # np.asarray shares the result tensor's buffer (.numpy() would copy it).
            parts.append([np.asarray(t) for t in out])
        if len(parts) == 1:
            return self.result_type(*parts[0])
        return self.result_type(*(np.concatenate(p, axis=0) for p in zip(*parts)))


class InputGradient(_CompiledGradient):
    """Compiled gradient of one class score per example with respect to the input.

    Args:
        logits_fn: ``x -> (N, K)`` float32 logits, traceable (see :func:`targets.build_logits_fn`).
        head: the :class:`targets.ScoreHead` describing the logits.
        input_shape: the shape of one example, ``(H, W, C)``.
        target: a callable target (``logits -> (N,)`` scores), or None for class selection.
        batch_size: the largest chunk sent through the compiled call at once.

    Calling it returns a :class:`GradientResult`.
    """

    result_type = GradientResult

    def __init__(self, logits_fn, head, input_shape, *, target=None, batch_size=32):
        self._logits_fn = logits_fn
        super().__init__(head, input_shape, target=target, batch_size=batch_size)

    def _step(self, x, requested):
        tf = self._tf
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = self._logits_fn(x)
            scores, classes = self._scores(logits, requested)
            total = tf.reduce_sum(scores)
        grads = tape.gradient(total, x)
        if grads is None:  # the output does not depend on the input at all
            grads = tf.zeros_like(x)
        return grads, logits, classes, scores


class LayerGradient(_CompiledGradient):
    """Compiled activations of one layer and the gradient of the class score with respect to them.

    Args:
        layer_fn: ``x -> (activations (N, h, w, k), logits (N, K) float32)`` from one forward
            pass, traceable (see :func:`build_layer_fn`).
        head: the :class:`targets.ScoreHead` describing the logits.
        input_shape: the shape of one example, ``(H, W, C)``.
        target: a callable target (``logits -> (N,)`` scores), or None for class selection.
        batch_size: the largest chunk sent through the compiled call at once.

    Calling it returns a :class:`LayerGradientResult`.
    """

    result_type = LayerGradientResult

    def __init__(self, layer_fn, head, input_shape, *, target=None, batch_size=32):
        self._layer_fn = layer_fn
        super().__init__(head, input_shape, target=target, batch_size=batch_size)

    def _step(self, x, requested):
        tf = self._tf
        with tf.GradientTape() as tape:
            # Watching the input records every op downstream of it, so the gradient reaches the
            # activations even through a frozen (trainable=False) backbone.
            tape.watch(x)
            activations, logits = self._layer_fn(x)
            scores, classes = self._scores(logits, requested)
            total = tf.reduce_sum(scores)
        grads = tape.gradient(total, activations)
        if grads is None:  # the score does not depend on this layer
            grads = tf.zeros_like(activations)
        activations = tf.cast(activations, tf.float32)
        return activations, tf.cast(grads, tf.float32), logits, classes, scores


# ------------------------------------------------------------------------------------------------
# Model views for Grad-CAM: a layer's activations and the logits from one forward pass.
# ------------------------------------------------------------------------------------------------


class LayerChoice(NamedTuple):
    """A layer of a (possibly nested) model, as the chain of layers that leads to it."""

    path: tuple  # (outer layer, ..., layer): all but the last are nested models
    name: str  # "/"-joined names, e.g. "backbone/conv3"


def _is_graph_model(layer) -> bool:
    """A Functional or Sequential model (used as a layer) whose graph we can look into."""
    return isinstance(layer, keras.Model) and targets._graph_of(layer)


def _graph_nodes(outputs) -> list:
    """The nodes of the graph that computes ``outputs``, walking back from them to the inputs."""
    seen, nodes, stack = set(), [], list(outputs)
    while stack:
        tensor = stack.pop()
        op, node_index, _ = tensor._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(node.input_tensors)
    return nodes


def _nodes_by_layer(model, outputs=None) -> dict:
    """{id(layer): [nodes]} for the nodes of ``model``'s graph that ``outputs`` depend on."""
    found = {}
    for node in _graph_nodes(outputs if outputs is not None else model.outputs):
        found.setdefault(id(node.operation), []).append(node)
    return found


_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


def _spatial(tensor) -> bool:
    """A 4-D (N, h, w, k) tensor with more than one spatial position."""
    shape = tuple(tensor.shape)
    if len(shape) != 4:
        return False
    h, w = shape[1], shape[2]
    return h is None or w is None or h * w > 1


def _candidates(model, outputs=None, prefix=()) -> list[LayerChoice]:
    """Layers with a 4-D spatial output that ``outputs`` depend on, in graph order, recursing
    into nested models (listed after their own layers)."""
    nodes = _nodes_by_layer(model, outputs)
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or id(layer) not in nodes:
            continue
        path = (*prefix, layer)
        if _is_graph_model(layer):
            out.extend(_candidates(layer, None, path))
        if any(_spatial(t) for n in nodes[id(layer)] for t in n.output_tensors[:1]):
            out.append(LayerChoice(path, "/".join(p.name for p in path)))
    return out


def _all_layers(model, prefix=()) -> list[LayerChoice]:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = (*prefix, layer)
        out.append(LayerChoice(path, "/".join(p.name for p in path)))
        if _is_graph_model(layer):
            out.extend(_all_layers(layer, path))
    return out


def find_layer(model, layer=None, output=None) -> LayerChoice:
    """The layer Grad-CAM reads: ``layer`` by name, or the last one with a 4-D output.

    Automatic choice: the last layer, in graph order, with a 4-D ``(N, h, w, k)`` output of more
    than one spatial position that the explained output depends on, looking inside nested
    Functional or Sequential models (the backbone of the usual transfer-learning model) and
    picking their inner layer rather than the nested model itself. Pooling layers
    (``MaxPooling2D``, ``AveragePooling2D``) are passed over when another candidate exists: they
    only downsample the maps of the layer before, which Grad-CAM then shows at the finer
    resolution (VGG-16's ``block5_conv3`` rather than ``block5_pool``, as in Selvaraju et al.).

    Args:
        model: a built Functional or Sequential Keras model.
        layer: a layer name, searched in the model and its nested models, or a "/"-separated
            path such as ``"backbone/conv3"``; None to choose automatically.
        output: the output being explained, for multi-output models.

    Returns:
        A :class:`LayerChoice`.

    Raises:
        ValueError: when the model has no graph, no 4-D layer, or ``layer`` names no suitable
            layer (the message lists the candidates).
    """
    if not targets._graph_of(model):
        raise ValueError(
            "Invalid value for argument `method`: method='gradcam' needs a Functional or "
            "Sequential model to read a layer's activations; this model is subclassed. Wrap "
            "it in a Functional model or use a gradient method such as 'smoothgrad'."
        )
    _, out = targets._select_output(model, output)
    candidates = _candidates(model, [out])
    names = [c.name for c in candidates]
    if layer is None:
        auto = [c for c in candidates if not _is_graph_model(c.path[-1])]
        # A trailing pooling layer only downsamples the maps before it: take those, at the
        # finer resolution (Selvaraju et al. read VGG-16's last conv layer, before pool5).
        auto = [c for c in auto if not isinstance(c.path[-1], _POOLING)] or auto
        if not auto:
            raise ValueError(
                "Invalid value for option `layer` of method='gradcam': the model has no layer "
                "with a 4-D (N, h, w, k) output to take Grad-CAM from; use a gradient method "
                "such as 'smoothgrad' instead."
            )
        return auto[-1]
    everything = _all_layers(model)
    if "/" in layer:
        matches = [c for c in everything if c.name == layer]
    else:
        matches = [c for c in everything if c.path[-1].name == layer]
    if not matches:
        raise ValueError(
            f"Invalid value for option `layer` of method='gradcam': no layer named {layer!r}. "
            f"Layers with a 4-D output (candidates): {names}."
        )
    if len(matches) > 1:
        raise ValueError(
            f"Invalid value for option `layer` of method='gradcam': {layer!r} is ambiguous, it "
            f"names {[m.name for m in matches]}; pass the full path."
        )
    choice = matches[0]
    if choice.name not in names:
        raise ValueError(
            f"Invalid value for option `layer` of method='gradcam': layer {choice.name!r} has "
            "no 4-D (N, h, w, k) output (with more than one position) that the explained output "
            f"depends on. Candidates: {names}."
        )
    return choice


def _logits_tensor(model, output):
    """(tensor, finish) such that ``finish(value of tensor)`` are the logits.

    The same stripping as :func:`targets.build_logits_fn`, expressed as a tensor of the model's
    graph so that it can be an output of a multi-output view: the input of a final
    Softmax/Activation layer, the input of a Dense with a fused softmax/sigmoid (``finish``
    applies its kernel and bias), or the output itself.
    """
    _, out = targets._select_output(model, output)
    layer, inputs = targets._producer(out)
    act = ""
    if isinstance(layer, keras.layers.Softmax):
        act = "softmax"
    elif isinstance(layer, keras.layers.Activation):
        act = targets._activation_name(layer.activation)
    if act in targets._SQUASHES and len(inputs) == 1:
        return inputs[0], targets._flat
    fused = targets._activation_name(getattr(layer, "activation", None))
    if isinstance(layer, keras.layers.Dense) and fused in targets._SQUASHES and len(inputs) == 1:
        dense = layer

        def finish(features):
            z = ops.matmul(ops.cast(features, dense.compute_dtype), dense.kernel)
            if dense.bias is not None:
                z = ops.add(z, dense.bias)
            return targets._flat(z)

        return inputs[0], finish
    return out, targets._flat


def _depends_on(tensor, sources, stop) -> bool:
    """True when ``tensor`` is computed from one of ``sources`` without passing through ``stop``."""
    ids = {id(s) for s in sources}
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        if t is stop or id(t) in seen:
            continue
        seen.add(id(t))
        if id(t) in ids:
            return True
        op, node_index, _ = t._keras_history
        stack.extend(op._inbound_nodes[node_index].input_tensors)
    return False


def _tap(model, path, target) -> Callable:
    """``fn(x) -> (activations of path[-1], value of target)`` in one forward pass.

    ``target`` is a tensor of ``model``'s graph. For a layer of ``model`` itself this is one
    two-output view. For a layer inside a nested model ``sub`` the pass is chained from three
    views over existing tensors: the outer graph up to ``sub``'s input, ``sub``'s own graph
    tapped recursively, and the outer graph from ``sub``'s output (plus the model's inputs, for
    branches that bypass ``sub``) to ``target``. Run it inside :class:`_InferencePass`.
    """
    inputs = targets._inputs(model)
    layer = path[0]
    nodes = _nodes_by_layer(model, [target]).get(id(layer), [])
    if len(nodes) != 1:
        raise ValueError(
            f"Invalid value for option `layer` of method='gradcam': layer {layer.name!r} is "
            f"used {len(nodes)} times on the way to the explained output; Grad-CAM needs a "
            "layer used once."
        )
    node = nodes[0]
    if len(path) == 1:
        view = keras.Model(inputs, [node.output_tensors[0], target])

        def fn(x):
            activations, value = view(x, training=False)
            return activations, value

        return fn

    if len(node.input_tensors) != 1 or len(layer.outputs) != 1:
        raise ValueError(
            f"Invalid value for option `layer` of method='gradcam': the nested model "
            f"{layer.name!r} has several inputs or outputs; pass a layer outside it."
        )
    t_in, t_out = node.input_tensors[0], node.output_tensors[0]
    inner = _tap(layer, path[1:], layer.outputs[0])
    pre = None if t_in is inputs else keras.Model(inputs, t_in)
    post, needs_x = None, False
    if target is not t_out:
        # A keras.Function, not a keras.Model: a Model whose inputs include an intermediate
        # tensor clones that part of the graph, calling the user's layers on new symbolic
        # inputs (which adds nodes to them); a Function maps the existing graph as it is.
        needs_x = _depends_on(target, model.inputs, t_out)
        post = keras.Function([*model.inputs, t_out] if needs_x else [t_out], target)

    def fn(x):
        h = x if pre is None else pre(x, training=False)
        activations, s = inner(h)
        if post is None:
            return activations, s
        return activations, post([x, s] if needs_x else [s])

    return fn


class _InferencePass(keras.layers.Layer):
    """Runs ``fn`` inside a Keras call with ``training=False``.

    Every layer called within inherits ``training=False`` from the call context, including those
    run by a ``keras.Function`` view (which has no ``training`` argument of its own). float32 and
    no autocasting, so the images reach the model exactly as given.
    """

    def __init__(self, fn):
        super().__init__(dtype="float32", autocast=False, trainable=False, name="saliency_view")
        self._fn = fn

    def call(self, x, training=False):
        return self._fn(x)


def build_layer_fn(model, layer=None, output=None) -> tuple[Callable, LayerChoice]:
    """Build ``layer_fn(x) -> (activations, logits (N, K) float32)`` for Grad-CAM.

    Args:
        model: a built Functional or Sequential Keras 3 model.
        layer: the layer's name or "/"-path, or None for the automatic choice
            (see :func:`find_layer`).
        output: for multi-output models, the index or name of the output to explain.

    Returns:
        ``(layer_fn, choice)``. ``layer_fn`` runs with ``training=False`` and is traceable by
        ``tf.function``; it never changes the model.
    """
    choice = find_layer(model, layer, output)
    target, finish = _logits_tensor(model, output)
    tapped = _InferencePass(_tap(model, choice.path, target))

    def layer_fn(x):
        activations, value = tapped(x, training=False)
        return activations, finish(value)

    return layer_fn, choice

"""The one place that talks to the backend's autodiff: compiled, batched, chunked gradients.

Two gradients, one per kind of method:

- :class:`InputGradient`: d score / d input (vanilla, gradient x input, SmoothGrad, IG);
- :class:`LayerGradient`: a layer's activations and d score / d activations (Grad-CAM).

Everything about them is backend-free (``keras.ops``) except one seam, :class:`_Runner`, with one
implementation per Keras backend:

- TensorFlow: ``tf.GradientTape`` inside one ``tf.function`` with a fixed input signature (batch
  dimension ``None``), traced once per run whatever the size of the last chunk;
- JAX: ``jax.grad`` inside one ``jax.jit``. The model's variables are *arguments* of the jitted
  function (read through ``keras.StatelessScope``), so new weights after each epoch are new
  argument values, not a retrace; every chunk is padded to one row count, so it is traced once;
- PyTorch: ``torch.autograd.grad`` eagerly (nothing to compile), with respect to the input only
  (the weights' ``.grad`` are never written), under ``torch.no_grad`` for the bookkeeping.

Every call (the clean probes, SmoothGrad's noisy samples, IG's path points) goes through it in
chunks of at most ``batch_size`` images: peak memory is bounded by the chunk, not by the number of
probes x samples.

The scores of a chunk are summed before differentiating. With ``training=False`` the examples of a
batch do not interact (BatchNorm uses its moving statistics, Dropout is off), so the gradient of the
sum with respect to example i is exactly the gradient of example i's own score.

The second half of the module finds the layer Grad-CAM reads and taps its output in the same
forward pass that computes the logits. Under TensorFlow, Functional and Sequential models get a
*view*: a new Functional model over the user's existing layers and tensors (nothing is cloned, no
layer is called on new symbolic inputs). Otherwise (subclassed models, and the JAX and PyTorch
backends, whose autodiff cannot differentiate with respect to an intermediate value without an
input for it) the layer's ``call`` is wrapped for the duration of each pass
(:func:`targets.overridden`): it records its output and adds a zero tensor to it, the input the
gradient is taken with respect to.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_saliency_monitor.attribution import targets

BACKENDS = ("tensorflow", "jax", "torch")


def active_backend() -> str:
    """The active Keras backend, checked to be one this module has a seam for."""
    name = keras.backend.backend()
    if name not in BACKENDS:
        raise RuntimeError(
            f"keras-saliency-monitor supports the Keras backends {list(BACKENDS)}; the active "
            f"backend is {name!r}. Set KERAS_BACKEND to one of them before importing keras."
        )
    return name


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


# ------------------------------------------------------------------------------------------------
# The backend seam: run ``differentiate(x, requested) -> tuple of tensors`` over numpy chunks.
# ------------------------------------------------------------------------------------------------


class _Runner:
    """Runs one step function over a numpy chunk and returns numpy arrays.

    The owner's ``wrt`` says what to differentiate with respect to: "input", "activations", or
    None for a forward pass only (:class:`CompiledLogits`), which returns ``forward``'s aux.
    """

    rows = None  # JAX: the one chunk size compiled for; callers send chunks of at most this

    def __init__(self, owner, input_shape, variables):
        self._owner = owner  # the _CompiledGradient: its trace_count and step
        self.input_shape = tuple(input_shape)
        self.variables = list(variables)

    def __call__(self, x: np.ndarray, requested: np.ndarray) -> list:  # pragma: no cover
        raise NotImplementedError


class _TensorFlowRunner(_Runner):
    def __init__(self, owner, input_shape, variables):
        super().__init__(owner, input_shape, variables)
        import tensorflow as tf

        self._tf = tf
        spec = (
            tf.TensorSpec((None, *input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        )
        # Traced once, at the first call; later calls go to that concrete function directly,
        # skipping tf.function's per-call argument matching (about a millisecond per chunk).
        self._compiled = tf.function(self._traced, input_signature=spec)
        self._concrete = None

    def _traced(self, x, requested):
        self._owner.trace_count += 1
        tf = self._tf
        if self._owner.wrt is None:
            return self._owner.forward(x, requested, None)[1]
        with tf.GradientTape() as tape:
            # Watching the input records every op downstream of it, so the gradient reaches a
            # layer's activations even through a frozen (trainable=False) backbone.
            tape.watch(x)
            total, aux = self._owner.forward(x, requested, None)
        wrt = x if self._owner.wrt == "input" else aux[0]
        grads = tape.gradient(total, wrt)
        if grads is None:  # the score does not depend on it at all
            grads = tf.zeros_like(wrt)
        return self._owner.pack(grads, aux)

    def __call__(self, x, requested):
        if self._concrete is None:
            self._concrete = self._compiled.get_concrete_function()
        tf = self._tf
        out = self._concrete(tf.constant(x), tf.constant(requested))
        # np.asarray shares the result tensor's buffer (.numpy() would copy it).
        return [np.asarray(t) for t in out]


class _JaxRunner(_Runner):
    def __init__(self, owner, input_shape, variables):
        super().__init__(owner, input_shape, variables)
        import jax

        self._jax = jax
        self._compiled = jax.jit(self._traced)

    def _traced(self, values, x, requested):
        self._owner.trace_count += 1
        jax = self._jax
        owner = self._owner
        mapping = list(zip(self.variables, values))

        def total_of(wrt):
            # The variables are this function's arguments: reading them through the scope
            # makes them inputs of the compiled computation, not constants baked into it.
            with keras.StatelessScope(state_mapping=mapping):
                if owner.wrt == "activations":
                    return owner.forward(x, requested, wrt)
                return owner.forward(wrt, requested, None)

        if owner.wrt is None:
            return total_of(x)[1]
        start = x if owner.wrt == "input" else jax.numpy.zeros((x.shape[0], *owner.tap_shape))
        grads, aux = jax.grad(total_of, has_aux=True)(start)
        return owner.pack(grads, aux)

    def __call__(self, x, requested):
        n = len(x)
        if self.rows is None:
            # The first chunk's size (the probes, up to batch_size): padding every call to
            # batch_size instead would compute, say, 32 rows for 8 probes every epoch.
            self.rows = n
        if n < self.rows:  # pad to the compiled row count; padded rows are dropped after
            x = np.concatenate([x, np.repeat(x[-1:], self.rows - n, axis=0)])
            requested = np.concatenate([requested, np.repeat(requested[-1:], self.rows - n)])
        values = [v.value for v in self.variables]
        out = self._compiled(values, x, requested)
        return [np.asarray(t)[:n] for t in out]


class _TorchRunner(_Runner):
    def __init__(self, owner, input_shape, variables):
        super().__init__(owner, input_shape, variables)
        import torch

        self._torch = torch

    def __call__(self, x, requested):
        torch = self._torch
        owner = self._owner
        if owner.trace_count == 0:
            owner.trace_count = 1  # eager: nothing is compiled; counts the one set-up, as others
        differentiate = owner.wrt is not None
        # enable_grad: also inside a caller's torch.no_grad().
        with torch.enable_grad() if differentiate else torch.no_grad():
            xt = ops.convert_to_tensor(x).detach().requires_grad_(differentiate)
            total, aux = owner.forward(xt, ops.convert_to_tensor(requested), None)
            if not differentiate:
                return [t.cpu().numpy() for t in aux]
            wrt = xt if owner.wrt == "input" else aux[0]
            # Only with respect to the input (or the tapped activations): the weights' .grad
            # are not written, nor is any graph kept beyond this call.
            (grads,) = torch.autograd.grad(total, [wrt], allow_unused=True)
        with torch.no_grad():
            if grads is None:
                grads = torch.zeros_like(wrt)
            out = owner.pack(grads.detach(), tuple(a.detach() for a in aux))
            return [t.cpu().numpy() for t in out]


_RUNNERS = {"tensorflow": _TensorFlowRunner, "jax": _JaxRunner, "torch": _TorchRunner}


class _CompiledGradient:
    """One compiled step over ``(x, requested)``, called in chunks of ``batch_size`` images."""

    result_type: type = GradientResult
    wrt = "input"  # "input", "activations", or None: forward only (CompiledLogits)
    tap_shape = None  # (h, w, k) of the tapped activations, for layer gradients

    def __init__(self, head, input_shape, *, target=None, batch_size=32, variables=()):
        self._head = head
        self._target = target if callable(target) else None
        self.batch_size = int(batch_size)
        self.trace_count = 0  # incremented by Python at trace time only: a retrace detector
        self.backend = active_backend()
        self._runner = _RUNNERS[self.backend](self, input_shape, variables)

    def forward(self, x, requested, delta):  # pragma: no cover - overridden
        """``(total score, aux tuple)`` of one chunk, traceable; ``delta`` for layer taps."""
        raise NotImplementedError

    def pack(self, grads, aux):  # pragma: no cover - overridden
        raise NotImplementedError

    def _scores(self, logits, requested):
        return targets.scores_and_classes(logits, requested, self._head, self._target)

    def __call__(self, x: np.ndarray, requested: np.ndarray):
        """Run the compiled step over ``x`` (N, H, W, C) in chunks of ``batch_size`` (JAX: of at
        most the first chunk's size, the one row count it compiled).

        Args:
            x: float32 images.
            requested: (N,) int32 classes, -1 for "predicted"
                (see :func:`targets.requested_classes`).
        """
        x = np.asarray(x, np.float32)
        requested = np.asarray(requested, np.int32)
        if len(x) == 0:
            raise ValueError("No images to explain: the probe batch is empty.")
        size = min(self.batch_size, self._runner.rows or self.batch_size)
        parts = [
            self._runner(x[i : i + size], requested[i : i + size]) for i in range(0, len(x), size)
        ]
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
        variables: the model's variables (``model.variables``): arguments of the compiled
            function under JAX.

    Calling it returns a :class:`GradientResult`.
    """

    result_type = GradientResult

    def __init__(self, logits_fn, head, input_shape, *, target=None, batch_size=32, variables=()):
        self._logits_fn = logits_fn
        super().__init__(
            head, input_shape, target=target, batch_size=batch_size, variables=variables
        )

    def forward(self, x, requested, delta):
        logits = self._logits_fn(x)
        scores, classes = self._scores(logits, requested)
        return ops.sum(scores), (logits, classes, scores)

    def pack(self, grads, aux):
        logits, classes, scores = aux
        return ops.cast(grads, "float32"), logits, classes, scores


class LayerGradient(_CompiledGradient):
    """Compiled activations of one layer and the gradient of the class score with respect to them.

    Args:
        layer_fn: ``(x, delta) -> (activations (N, h, w, k), logits (N, K) float32)`` from one
            forward pass, traceable, where ``delta`` (None, or zeros shaped like the
            activations) is added to the activations on their way on (see
            :func:`build_layer_fn`).
        head: the :class:`targets.ScoreHead` describing the logits.
        input_shape: the shape of one example, ``(H, W, C)``.
        tap_shape: ``(h, w, k)``, the shape of one example's activations.
        target: a callable target (``logits -> (N,)`` scores), or None for class selection.
        batch_size: the largest chunk sent through the compiled call at once.
        variables: the model's variables (arguments of the compiled function under JAX).

    Calling it returns a :class:`LayerGradientResult`.
    """

    result_type = LayerGradientResult
    wrt = "activations"

    def __init__(
        self, layer_fn, head, input_shape, tap_shape, *, target=None, batch_size=32, variables=()
    ):
        self._layer_fn = layer_fn
        self.tap_shape = tuple(int(d) for d in tap_shape)
        super().__init__(
            head, input_shape, target=target, batch_size=batch_size, variables=variables
        )

    def forward(self, x, requested, delta):
        activations, logits = self._layer_fn(x, delta)
        scores, classes = self._scores(logits, requested)
        return ops.sum(scores), (activations, logits, classes, scores)

    def pack(self, grads, aux):
        activations, logits, classes, scores = aux
        return (
            ops.cast(activations, "float32"),
            ops.cast(grads, "float32"),
            logits,
            classes,
            scores,
        )


class _Logits(NamedTuple):
    logits: np.ndarray  # (N, K) float32


class CompiledLogits(_CompiledGradient):
    """``x -> (N, K)`` float32 logits, forward only (no gradient), compiled once per run.

    The same backend seam as the gradients, without the tape: a ``tf.function`` with a fixed
    input signature, a ``jax.jit`` with the variables as arguments (chunks padded to one row
    count), or an eager call under ``torch.no_grad``. For the object-reliance check, which
    compares the logits of probes with parts of them removed.

    Args:
        logits_fn: ``x -> (N, K)`` float32 logits, traceable (:func:`targets.build_logits_fn`).
        input_shape: the shape of one example, ``(H, W, C)``.
        batch_size: the largest chunk sent through the compiled call at once.
        variables: the model's variables (arguments of the compiled function under JAX).
    """

    result_type = _Logits
    wrt = None  # forward only

    def __init__(self, logits_fn, input_shape, *, batch_size=32, variables=()):
        self._logits_fn = logits_fn
        super().__init__(None, input_shape, batch_size=batch_size, variables=variables)

    def forward(self, x, requested, delta):
        return None, (ops.cast(self._logits_fn(x), "float32"),)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The logits of ``x`` (N, H, W, C), in chunks of ``batch_size`` (JAX: of the first)."""
        return super().__call__(x, np.full(len(x), -1, np.int32)).logits


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


def _spatial_shape(shape) -> bool:
    """A 4-D (N, h, w, k) shape with more than one spatial position (or unknown h, w)."""
    return len(shape) == 4 and (shape[1] is None or shape[2] is None or shape[1] * shape[2] > 1)


def _token_shape(shape) -> bool:
    """A 3-D (N, tokens, d) shape of more than one token: a transformer block's output."""
    return len(shape) == 3 and (shape[1] is None or shape[1] > 1)


def _readable_shape(shape) -> bool:
    """What a named layer may output: a 4-D map, or tokens (laid out on the patch grid)."""
    return _spatial_shape(shape) or _token_shape(shape)


def _candidates(model, outputs=None, prefix=(), accept=_spatial_shape) -> list[LayerChoice]:
    """Layers whose output shape ``accept``s (default: 4-D spatial) that ``outputs`` depend on,
    in graph order, recursing into nested models (listed after their own layers)."""
    nodes = _nodes_by_layer(model, outputs)
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or id(layer) not in nodes:
            continue
        path = (*prefix, layer)
        if _is_graph_model(layer):
            out.extend(_candidates(layer, None, path, accept))
        if any(accept(tuple(t.shape)) for n in nodes[id(layer)] for t in n.output_tensors[:1]):
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
            f"find_layer needs a Functional or Sequential model; {model.name!r} is "
            f"{targets.model_kind(model)}: use find_layer_by_pass, which watches a forward pass."
        )
    _, out = targets._select_output(model, output)
    candidates = _candidates(model, [out])
    where = "that the explained output depends on"
    tokens = _candidates(model, [out], accept=_readable_shape) if layer is not None else None
    return _pick(candidates, layer, _all_layers(model), where, tokens)


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


def _pick(candidates, layer, everything, where, named=None):
    """The :class:`LayerChoice` Grad-CAM reads among ``candidates`` (see :func:`find_layer`).

    A layer named by the user may also be one of ``named`` (those with a transformer's
    (N, tokens, d) output, which Grad-CAM lays out on the patch grid); the automatic choice
    reads 4-D outputs only.
    """
    names = [c.name for c in candidates]
    if layer is None:
        # A nested model is passed over for the layers inside it that are candidates too.
        auto = [
            c
            for c in candidates
            if not any(
                len(o.path) > len(c.path) and o.path[: len(c.path)] == c.path for o in candidates
            )
        ]
        # A trailing pooling layer only downsamples the maps before it: take those, at the
        # finer resolution (Selvaraju et al. read VGG-16's last conv layer, before pool5).
        auto = [c for c in auto if not isinstance(c.path[-1], _POOLING)] or auto
        if not auto:
            raise ValueError(
                "Invalid value for option `layer` of method='gradcam': the model has no layer "
                f"with a 4-D (N, h, w, k) output {where} to take Grad-CAM from; use a gradient "
                "method such as 'smoothgrad' instead."
            )
        return auto[-1]
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
    if choice.name not in names and choice.name not in [c.name for c in named or ()]:
        raise ValueError(
            f"Invalid value for option `layer` of method='gradcam': layer {choice.name!r} has "
            f"no 4-D (N, h, w, k) output (with more than one position) nor (N, tokens, d) "
            f"transformer output {where}. "
            f"Candidates: {names}."
        )
    return choice


def find_layer_by_pass(model, layer, sample) -> LayerChoice:
    """:func:`find_layer` for a model without a graph: the layers seen in one forward pass.

    Every layer tracked by the model (``model.layers`` and the layers inside them) is watched
    during one pass on ``sample`` (``training=False``); candidates are those that ran once and
    returned a 4-D ``(N, h, w, k)`` tensor, in the order they ran.

    Raises:
        ValueError: when no layer qualifies, ``layer`` names none, or the named layer did not run
            exactly once (its output could not be captured in the same forward pass).
    """
    every = targets.sublayers(model)
    runs, order, shapes = {}, [], {}

    def on_output(sub, out):
        runs[id(sub)] = runs.get(id(sub), 0) + 1
        order.append(id(sub))
        shapes[id(sub)] = tuple(getattr(out, "shape", ()))

    with targets.watching([sub for _, sub in every], on_output):
        model(sample, training=False)
    position = {i: k for k, i in enumerate(order)}  # the last time each layer ran
    everything = [LayerChoice(path, "/".join(p.name for p in path)) for path, _ in every]
    four_d = [
        c
        for c in everything
        if runs.get(id(c.path[-1])) == 1 and _spatial_shape(shapes[id(c.path[-1])])
    ]
    four_d.sort(key=lambda c: position[id(c.path[-1])])
    tokens = [
        c
        for c in everything
        if runs.get(id(c.path[-1])) == 1 and _token_shape(shapes[id(c.path[-1])])
    ]
    if layer is not None:
        for c in everything:
            if layer in (c.name, c.path[-1].name) and runs.get(id(c.path[-1]), 0) != 1:
                raise ValueError(
                    f"Invalid value for option `layer` of method='gradcam': layer {c.name!r} ran "
                    f"{runs.get(id(c.path[-1]), 0)} times in one forward pass of the "
                    f"{targets.model_kind(model)} model {model.name!r}; Grad-CAM captures a layer "
                    "that runs exactly once. Name another layer (candidates: "
                    f"{[x.name for x in four_d]}), assign each use its own layer in __init__, "
                    "or build the model with the Functional API."
                )
    return _pick(four_d, layer, everything, "in a forward pass", tokens)


def _call_tap(layer, logits_fn) -> Callable:
    """``layer_fn(x, delta)`` that captures ``layer``'s output in the forward pass of ``logits_fn``.

    For the duration of each pass the layer's ``call`` is wrapped (and then restored): it records
    its output and passes ``output + delta`` on, so that the gradient with respect to ``delta``
    (zeros) is the gradient with respect to the activations, under every backend.
    """
    layer_ref = weakref.ref(layer)

    def layer_fn(x, delta=None):
        tapped = layer_ref()
        seen = []
        original = tapped.call

        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            seen.append(out)
            return out if delta is None else ops.add(out, ops.cast(delta, out.dtype))

        with targets.overridden(tapped, "call", call):
            logits = logits_fn(x)
        if len(seen) != 1:
            raise ValueError(
                f"Invalid value for option `layer` of method='gradcam': layer {tapped.name!r} "
                f"ran {len(seen)} times in the forward pass of the explained output; Grad-CAM "
                "captures a layer that runs exactly once. Name another layer."
            )
        return seen[0], logits

    return layer_fn


def build_layer_fn(model, layer=None, output=None, logits_fn=None, sample=None):
    """Build ``layer_fn(x, delta=None) -> (activations, logits (N, K) float32)`` for Grad-CAM.

    Args:
        model: a Keras 3 model (Functional, Sequential, or subclassed).
        layer: the layer's name or "/"-path, or None for the automatic choice
            (see :func:`find_layer`, :func:`find_layer_by_pass`).
        output: for multi-output models, the index or name of the output to explain.
        logits_fn: the model's ``logits_fn`` (:func:`targets.build_logits_fn`), through which
            the layer is tapped when no graph view is used.
        sample: a batch of one or more images: the forward pass that finds a layer of a model
            without a graph, and checks the tap once.

    Returns:
        ``(layer_fn, choice, tap_shape)``: ``tap_shape`` is ``(h, w, k)``. ``layer_fn`` runs with
        ``training=False`` and is traceable; it never changes the model.
    """
    graph = targets._graph_of(model)
    if graph:
        choice = find_layer(model, layer, output)
    else:
        choice = find_layer_by_pass(model, layer, sample)
    if graph and keras.backend.backend() == "tensorflow":
        target, finish, _ = targets.logits_tensor(model, output)
        tapped = _InferencePass(_tap(model, choice.path, target))

        def layer_fn(x, delta=None):
            activations, value = tapped(x, training=False)
            return activations, finish(value)

    else:
        layer_fn = _call_tap(choice.path[-1], logits_fn)
    if sample is None:
        raise ValueError("build_layer_fn needs a sample image batch to check the tap.")
    activations, _ = layer_fn(ops.convert_to_tensor(np.asarray(sample[:1], np.float32)))
    return layer_fn, choice, tuple(int(d) for d in activations.shape[1:])

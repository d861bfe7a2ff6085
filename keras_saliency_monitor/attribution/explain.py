"""Binding a model to a method: the :class:`Explainer` and the public one-shot functions.

``Explainer`` checks its arguments without a model, then ``bind(model, input_shape)`` builds the
logits view and the compiled gradient once; ``explain(x)`` can then be called every epoch with no
retracing. ``compute_attributions`` and ``compute_saliency`` wrap it, and keep the bound explainer
for the same model, method and options in a cache keyed weakly on the model: a loop over batches
pays the trace once, and a model that is no longer used is freed with its compiled functions.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import numbers
import weakref
from typing import NamedTuple

import keras
import numpy as np

from keras_saliency_monitor.attribution import gradients, methods, targets
from keras_saliency_monitor.attribution.checks import check_model, positive_int


class Explanation(NamedTuple):
    """What one explained batch produced (all numpy)."""

    maps: np.ndarray  # (N, H, W) float32 >= 0, raw (not normalised)
    attributions: np.ndarray  # (N, H, W, C) float32 signed, raw (or (N, H, W, 1) for maps-only)
    logits: np.ndarray  # (N, K) float32 logits of the explained output
    classes: np.ndarray  # (N,) int32: the class explained for each example
    confidences: np.ndarray | None  # (N,) probability of that class; None for regression
    extras: dict  # method-specific diagnostics, e.g. IG's completeness gap


def _inputs(model):
    """The model's symbolic inputs, or None for a model without a graph."""
    try:
        return model.inputs
    except (AttributeError, ValueError):
        return None


def model_input_shape(model):
    """The shape of one example the model takes, with None for free dimensions (or None)."""
    inputs = _inputs(model)
    if inputs:
        if len(inputs) != 1:
            raise ValueError(_several_inputs_message(inputs))
        return tuple(inputs[0].shape[1:])
    return None


def _several_inputs_message(inputs) -> str:
    """Why a model with several inputs is refused, and a wrapper that makes it fit."""
    shapes = [tuple(t.shape[1:]) for t in inputs]
    image = next((k for k, shape in enumerate(shapes) if len(shape) == 3), 0)
    others = ", ".join(
        f"keras.layers.Lambda(lambda t: keras.ops.zeros((keras.ops.shape(t)[0], "
        f"{', '.join(str(1 if d is None else d) for d in shape)})))(image)"
        if k != image
        else "image"
        for k, shape in enumerate(shapes)
    )
    return (
        f"Invalid value for argument `model`: the model has {len(inputs)} inputs of shapes "
        f"{shapes}; saliency is computed for a model with a single image input (N, H, W, C). "
        "Explain the image input through a single-input wrapper that supplies the others "
        f"itself (here as zeros; use the values to hold fixed): image = keras.Input("
        f"{shapes[image]}); wrapped = keras.Model(image, model([{others}])); then explain "
        "`wrapped`, e.g. compute_saliency(wrapped, images). It shares the model's weights, so "
        "during training it follows them (call it from a keras.callbacks.LambdaCallback at "
        "epoch ends; SaliencyMonitor itself watches single-input models only)."
    )


def check_input_shape(model, input_shape, argument="probe_data"):
    """Raise a clear ValueError when images of ``input_shape`` do not fit the model."""
    expected = model_input_shape(model)
    if expected is None:
        return
    ok = len(expected) == len(input_shape) and all(
        e is None or e == g for e, g in zip(expected, input_shape)
    )
    if not ok:
        raise ValueError(
            f"Invalid value for argument `{argument}`: images of shape {tuple(input_shape)} do "
            f"not match the model's input shape {expected}. Pass images shaped like the model's "
            "training inputs (resize or add a channel axis)."
        )


class Explainer:
    """Explains batches of images with one method and one target, compiled once.

    Args:
        method: one of ``methods.METHODS`` (see :func:`compute_attributions`). Defaults to
            "vanilla".
        target: "predicted", "label", an int class index, or a callable ``logits -> (N,)`` score
            built from ``keras.ops``. Defaults to "predicted".
        output: index or name of the output to explain for multi-output models.
        batch_size: largest chunk of images per compiled call. Defaults to 32.
        **options: the method's options (see ``methods.METHODS[method].defaults``).

    Raises:
        ValueError, TypeError: for an unknown method, an unknown option or a bad option value,
            naming it (before any model is seen).
    """

    def __init__(self, method="vanilla", target="predicted", output=None, batch_size=32, **options):
        self.method = methods.get_method(method)
        self.options = methods.validate_options(method, options)
        self.target = targets.validate_target(target)
        self.output = output
        self.batch_size = positive_int("batch_size", batch_size)
        self._model_ref = None  # weak: a cached explainer must not keep its model alive
        self.head = None
        self.layer = None  # for layer methods (Grad-CAM): the LayerChoice read, after bind
        self._grad = None
        self._logits = None  # gradients.CompiledLogits, built at the first logits() call
        self._logits_fn = None
        self._input_shape = None

    def __deepcopy__(self, memo):
        """An unbound copy: the same method, target and options; the model, its logits view and
        the compiled functions stay with this one (the copy binds its own)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        bound = ("_model_ref", "head", "layer", "_grad", "_logits", "_logits_fn", "_input_shape")
        for name, value in vars(self).items():
            setattr(new, name, None if name in bound else copy.deepcopy(value, memo))
        return new

    @property
    def model(self):
        """The bound model (None before ``bind``, or once the model was garbage-collected)."""
        return None if self._model_ref is None else self._model_ref()

    @property
    def trace_count(self) -> int:
        """How many times the compiled gradient has been traced (1 in a healthy run)."""
        return 0 if self._grad is None else self._grad.trace_count

    def bind(self, model, input_shape, sample=None, argument="probe_data"):
        """Build the logits view and compiled gradient for ``model`` (no-op if already bound).

        Input methods get a :class:`gradients.InputGradient`; layer methods (Grad-CAM) a
        :class:`gradients.LayerGradient` over the chosen layer. Either way one compiled function
        serves every ``explain`` call of the run.

        Args:
            model: a Keras 3 model: Functional, Sequential (built or not) or subclassed.
            input_shape: the shape of one image, ``(H, W, C)``.
            sample: one or more images (probes) for the forward pass that models without a graph
                need (subclassed, or a Sequential without ``keras.Input``: this pass builds it,
                as ``fit`` would). Zeros of ``input_shape`` when None.
            argument: the caller's name for the images, for messages ("images" in
                :func:`compute_saliency`). Defaults to "probe_data".

        Raises:
            ValueError: when the images do not fit the model, the model is channels-first or
                takes integer ids, a class target is out of range, a callable target does not
                return (N,) scores, or an option does not fit the model (e.g. Grad-CAM's
                ``layer`` names no 4-D layer).
        """
        input_shape = tuple(int(d) for d in input_shape)
        if self.model is model and self._input_shape == input_shape:
            return self
        declared = model_input_shape(model)
        inputs = _inputs(model)
        check_model(model, inputs[0].dtype if inputs else None)
        check_input_shape(model, input_shape, argument)
        if sample is None:
            sample = np.zeros((1, *input_shape), np.float32)
        sample = np.asarray(sample[:1], np.float32)
        if declared is None and isinstance(model, keras.Sequential):
            # A Sequential without keras.Input gets its graph from its first call: the same
            # build fit does at its first batch (with training=False, nothing else changes).
            model(sample, training=False)
            check_input_shape(model, input_shape, argument)
        logits_fn, head = targets.build_logits_fn(model, self.output, sample)
        if isinstance(self.target, int) and head.num_classes is not None:
            targets.requested_classes(self.target, 1, None, head)  # range check, fails fast
        targets.check_target_output(self.target, head)
        if self.method.check_shape is not None:
            self.method.check_shape(self.options, input_shape)
        compiled = dict(
            target=self.target, batch_size=self.batch_size, variables=list(model.variables)
        )
        layer = None
        if self.method.wrt == "layer":
            layer_fn, layer, tap_shape = gradients.build_layer_fn(
                model, self.options["layer"], self.output, logits_fn, sample
            )
            if len(tap_shape) == 2:  # a transformer's tokens: they must form the patch grid
                methods.token_grid(tap_shape[0], input_shape[:2], f"layer {layer.name!r}")
            grad = gradients.LayerGradient(layer_fn, head, input_shape, tap_shape, **compiled)
        else:
            grad = gradients.InputGradient(logits_fn, head, input_shape, **compiled)
        self._grad, self.layer = grad, layer
        self._logits_fn, self._logits = logits_fn, None
        self._model_ref, self.head, self._input_shape = weakref.ref(model), head, input_shape
        return self

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The explained output's logits of ``x`` (N, H, W, C): forward only, compiled once."""
        if self._logits_fn is None:
            raise RuntimeError("Explainer.logits() called before bind(model, input_shape).")
        if self._logits is None:
            self._logits = gradients.CompiledLogits(
                self._logits_fn,
                self._input_shape,
                batch_size=self.batch_size,
                variables=list(self.model.variables),
            )
        return self._logits(x)

    def explain(self, x: np.ndarray, labels=None) -> Explanation:
        """Attributions and saliency maps for ``x`` (N, H, W, C) against the current weights."""
        if self._grad is None:
            raise RuntimeError("Explainer.explain() called before bind(model, input_shape).")
        x = np.asarray(x, np.float32)
        requested = targets.requested_classes(self.target, len(x), labels, self.head)
        # The one call every method needs: it fixes the explained class of each example.
        first = self._grad(x, requested)
        attributions, extras = self.method.attribute(self._grad, x, first, **self.options)
        maps = self.method.to_map(attributions).astype(np.float32, copy=False)
        if self.layer is not None:
            extras = {**extras, "layer": self.layer.name}
        conf = targets.confidences(first.logits, first.classes, self.head)
        return Explanation(
            maps,
            attributions.astype(np.float32, copy=False),
            first.logits,
            first.classes,
            conf,
            extras,
        )


def _as_images(images) -> np.ndarray:
    x = np.asarray(images)
    if x.dtype.kind not in "fiub":
        raise TypeError(
            "Invalid type for argument `images`: expected a numeric array (N, H, W, C), "
            f"received dtype {x.dtype}."
        )
    if x.ndim != 4:
        raise ValueError(
            "Invalid value for argument `images`: expected a batch of images (N, H, W, C), "
            f"received shape {x.shape}. For one image use images[None]."
        )
    return x.astype(np.float32, copy=False)


def explain(
    model,
    images,
    method="vanilla",
    target="predicted",
    labels=None,
    output=None,
    batch_size=32,
    **options,
) -> Explanation:
    """All outputs of one explained batch, through a cached :class:`Explainer` (see
    :func:`cached_explainer`)."""
    x = _as_images(images)
    explainer = cached_explainer(model, x, method, target, output, batch_size, options)
    return explainer.explain(x, labels)


# The bound explainers of compute_saliency / compute_attributions, per model (weakly: the entry
# goes when the model does) and per method, target, options and image shape; the last few per
# model are kept (a loop that builds a new callable target every call must not grow it).
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
CACHE_PER_MODEL = 8


def _freeze(value):
    """A hashable stand-in for an argument value, equal for equal values (arrays by content)."""
    if value is None or isinstance(value, (str, bytes, bool, numbers.Number)):
        return (type(value).__name__, value)
    if isinstance(value, (np.ndarray, list, tuple)):
        try:
            array = np.ascontiguousarray(value)
        except ValueError:  # ragged
            array = None
        if array is None or array.dtype.kind == "O":
            return ("seq", tuple(_freeze(v) for v in value))
        digest = hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()
        return ("array", array.shape, array.dtype.str, digest)
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    return ("object", id(value), value)  # callables: the same object, not an equal one


def cached_explainer(model, x, method, target, output, batch_size, options) -> Explainer:
    """The bound :class:`Explainer` for these arguments, built (and traced) once per model.

    The key holds the backend, method, target, output, batch size, image shape and options
    (arrays by content, callables by identity). Arguments are validated before the cache is
    looked at, so a bad call fails the same way the first time and every time.
    """
    explainer = Explainer(method, target, output, batch_size, **options)
    key = (
        keras.backend.backend(),
        explainer.method.name,
        _freeze(target),
        _freeze(output),
        explainer.batch_size,
        tuple(x.shape[1:]),
        _freeze(explainer.options),
    )
    try:
        per_model = _CACHE.setdefault(model, collections.OrderedDict())
    except TypeError:  # not weak-referenceable: no cache
        return explainer.bind(model, x.shape[1:], sample=x[:1], argument="images")
    hit = per_model.get(key)
    if hit is not None and hit.model is model:
        per_model.move_to_end(key)
        return hit
    explainer.bind(model, x.shape[1:], sample=x[:1], argument="images")
    per_model[key] = explainer
    while len(per_model) > CACHE_PER_MODEL:
        per_model.popitem(last=False)
    return explainer


def compute_attributions(
    model,
    images,
    method="vanilla",
    target="predicted",
    labels=None,
    output=None,
    batch_size=32,
    **options,
) -> np.ndarray:
    """Attributions of each image's class score, shaped like the input.

    Signed for vanilla, gradient x input and integrated gradients; smoothgrad returns mean
    magnitudes and gradcam a non-negative single-channel map.

    The score is the pre-activation logit (a final softmax or sigmoid is stripped without touching
    the model). The model runs with ``training=False``; nothing about it, nor NumPy's global RNG
    or Keras's seed generators, changes. All gradient evaluations (SmoothGrad's samples, IG's
    steps) go through one compiled function in chunks of at most ``batch_size`` images.

    Methods and their options (keyword arguments; any other option is a ``TypeError``):

    - ``"vanilla"`` (Simonyan et al. 2013): d score / d input. Map: max over channels of |.|.
    - ``"gradient_x_input"``: gradient times input. Map: |sum over channels|.
    - ``"smoothgrad"`` (Smilkov et al. 2017): the mean over ``samples`` noisy copies
      ``x + sigma * eps`` of |gradient|, per channel (non-negative). Map: max over channels, so
      ``noise=0`` gives exactly the vanilla map.

      - ``samples``: number of noisy copies. Defaults to 25.
      - ``noise``: sigma as a fraction of each image's own range, ``sigma = noise * (max(x_i) -
        min(x_i))``. Defaults to 0.15.
      - ``seed``: seed of the draws, ``np.random.default_rng(seed).standard_normal((samples, H,
        W, C), float32)``, shared by all images and identical on every call. Defaults to 0.
    - ``"smoothgrad_squared"`` (Hooker et al. 2019) and ``"vargrad"`` (Adebayo et al. 2018): the
      mean of gradient**2 and the variance of the gradient over SmoothGrad's noisy copies (same
      options, same draws for the same ``seed``), per channel. Map: max over channels. One pass
      gives both: :func:`explain`'s ``extras`` holds the other one.
    - ``"integrated_gradients"`` (Sundararajan et al. 2017): (x - x') times the average gradient
      on the straight path from the baseline x' to x, midpoint rule. Map: |sum over channels|.

      - ``steps``: intervals of the midpoint rule (``steps`` gradient evaluations at
        ``alpha = (k + 0.5) / steps``, plus one at the baseline for f(x')). Defaults to 64.
      - ``baseline``: None (zeros), a float (constant image), ``"blur"`` (the image blurred by a
        Gaussian of sigma max(H, W) / 16 pixels), an array broadcastable to the images, or a
        deterministic callable ``x -> baseline``. Defaults to None.

      :func:`explain` also returns ``extras["completeness_gap"]`` (N,): sum of attributions
      minus (f(x) - f(x')), and ``extras["score_delta"]`` = f(x) - f(x'). More steps shrink it.
    - ``"gradcam"`` (Selvaraju et al. 2017): ReLU of the sum of a layer's activation maps
      weighted by the spatial mean of their gradients, resized bilinearly to the input. Returned
      as (N, H, W, 1) (no per-channel attribution); the map is that channel. On a subclassed
      model the layer's output is captured in the same forward pass (it must run once).

      - ``layer``: layer name, also of a layer inside a nested model, or a path such as
        ``"backbone/conv3"``. Defaults to None: the last layer with a 4-D (N, h, w, k) output,
        looking inside nested backbones and passing over a trailing pooling layer (the last
        conv block's output). ``explain(...).extras["layer"]`` names the layer used.
        A named transformer block's (N, tokens, d) output is read on its patch grid, leading
        class tokens dropped.
    - ``"gradcam_plus_plus"`` (Chattopadhay et al. 2018): Grad-CAM with the paper's per-position
      weights (eq. 19, without the per-image factor exp(logit)); option ``layer`` as Grad-CAM.

    Args:
        model: a Keras 3 model (any backend; Functional, Sequential or subclassed) taking
            (N, H, W, C) float images, channels last.
        images: array (N, H, W, C), in the value range the model was trained on.
        method: "vanilla" (default), "gradient_x_input", "smoothgrad", "smoothgrad_squared",
            "vargrad", "integrated_gradients", "gradcam" or "gradcam_plus_plus".
        target: "predicted" (default), "label" (needs ``labels``), an int class, or a callable
            ``logits -> (N,)`` scores.
        labels: (N,) int class ids, for target="label".
        output: index or name of the output to explain, for multi-output models.
        batch_size: images per compiled call; bounds memory. Defaults to 32.
        **options: the method's options (above).

    Returns:
        float32 array (N, H, W, C) (Grad-CAM: (N, H, W, 1)), raw (not normalised).

    Raises:
        ValueError, TypeError: for an invalid argument or option, naming it.

    Example:
        >>> attr = compute_attributions(model, x_val[:8], method="integrated_gradients", steps=128)
    """
    return explain(
        model, images, method, target, labels, output, batch_size, **options
    ).attributions


def compute_saliency(
    model,
    images,
    method="vanilla",
    target="predicted",
    labels=None,
    output=None,
    batch_size=32,
    **options,
) -> np.ndarray:
    """Non-negative saliency maps (N, H, W), raw (no normalisation: rendering does that).

    Arguments, methods and options are those of :func:`compute_attributions`; each method's map:
    vanilla and smoothgrad, max over channels of |attribution| (Simonyan et al. 2013);
    gradient_x_input and integrated_gradients, |sum over channels|; gradcam, the Grad-CAM map
    itself.

    Example:
        >>> maps = compute_saliency(model, x_val[:8])  # (8, H, W) >= 0
        >>> maps = compute_saliency(model, x_val[:8], method="smoothgrad", samples=50, noise=0.1)
    """
    return explain(model, images, method, target, labels, output, batch_size, **options).maps

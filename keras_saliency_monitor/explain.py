"""Binding a model to a method: the :class:`Explainer` and the public one-shot functions.

``Explainer`` checks its arguments without a model, then ``bind(model, input_shape)`` builds the
logits view and the compiled gradient once; ``explain(x)`` can then be called every epoch with no
retracing. ``compute_attributions`` and ``compute_saliency`` are one-shot wrappers around it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from keras_saliency_monitor import gradients, methods, targets


class Explanation(NamedTuple):
    """What one explained batch produced (all numpy)."""

    maps: np.ndarray  # (N, H, W) float32 >= 0, raw (not normalised)
    attributions: np.ndarray  # (N, H, W, C) float32 signed, raw (or (N, H, W, 1) for maps-only)
    logits: np.ndarray  # (N, K) float32 logits of the explained output
    classes: np.ndarray  # (N,) int32: the class explained for each example
    confidences: np.ndarray | None  # (N,) probability of that class; None for regression
    extras: dict  # method-specific diagnostics, e.g. IG's completeness gap


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(
            "Invalid type for argument `batch_size`: expected a positive int, received "
            f"{type(batch_size).__name__}."
        )
    if batch_size < 1:
        raise ValueError(
            "Invalid value for argument `batch_size`: expected a positive int, received "
            f"batch_size={batch_size}."
        )
    return int(batch_size)


def model_input_shape(model):
    """The shape of one example the model takes, with None for free dimensions (or None)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        if len(inputs) != 1:
            raise ValueError(
                f"The model has {len(inputs)} inputs; saliency is computed for models with a "
                "single image input."
            )
        return tuple(inputs[0].shape[1:])
    return None


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
        method: one of ``methods.METHODS``. Defaults to "vanilla".
        target: "predicted", "label", an int class index, or a callable ``logits -> (N,)`` score
            built from ``keras.ops``. Defaults to "predicted".
        output: index or name of the output to explain for multi-output models.
        batch_size: largest chunk of images per compiled call. Defaults to 32.
        **options: the method's options (see ``methods.METHODS[method].defaults``).
    """

    def __init__(self, method="vanilla", target="predicted", output=None, batch_size=32, **options):
        self.method = methods.get_method(method)
        self.options = methods.validate_options(method, options)
        self.target = targets.validate_target(target)
        self.output = output
        self.batch_size = check_batch_size(batch_size)
        self.model = None
        self.head = None
        self._grad = None
        self._input_shape = None

    @property
    def trace_count(self) -> int:
        """How many times the compiled gradient has been traced (1 in a healthy run)."""
        return 0 if self._grad is None else self._grad.trace_count

    def bind(self, model, input_shape):
        """Build the logits view and compiled gradient for ``model`` (no-op if already bound)."""
        input_shape = tuple(int(d) for d in input_shape)
        if self.model is model and self._input_shape == input_shape:
            return self
        check_input_shape(model, input_shape)
        logits_fn, head = targets.build_logits_fn(model, self.output)
        if isinstance(self.target, int) and head.num_classes is not None:
            targets.requested_classes(self.target, 1, None, head)  # range check, fails fast
        self._grad = gradients.InputGradient(
            logits_fn, head, input_shape, target=self.target, batch_size=self.batch_size
        )
        self.model, self.head, self._input_shape = model, head, input_shape
        return self

    def explain(self, x: np.ndarray, labels=None) -> Explanation:
        """Attributions and saliency maps for ``x`` (N, H, W, C) against the current weights."""
        if self.model is None:
            raise RuntimeError("Explainer.explain() called before bind(model, input_shape).")
        x = np.asarray(x, np.float32)
        requested = targets.requested_classes(self.target, len(x), labels, self.head)
        first = self._grad(x, requested)
        attributions, extras = self.method.attribute(self._grad, x, first, **self.options)
        maps = self.method.to_map(attributions).astype(np.float32, copy=False)
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
    """One-shot :class:`Explainer` run: all outputs of one explained batch."""
    x = _as_images(images)
    explainer = Explainer(method, target, output, batch_size, **options)
    return explainer.bind(model, x.shape[1:]).explain(x, labels)


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
    """Signed attributions of each image's class score, shaped like the input.

    The score is the pre-activation logit (a final softmax or sigmoid is stripped without touching
    the model). The model runs with ``training=False``; nothing about it changes.

    Args:
        model: a Keras 3 model (TensorFlow backend) taking (N, H, W, C) images.
        images: array (N, H, W, C), in the value range the model was trained on.
        method: "vanilla" or "gradient_x_input" (and the methods registered in ``methods``).
        target: "predicted" (default), "label" (needs ``labels``), an int class, or a callable
            ``logits -> (N,)`` scores.
        labels: (N,) int class ids, for target="label".
        output: index or name of the output to explain, for multi-output models.
        batch_size: images per compiled call; bounds memory. Defaults to 32.
        **options: the method's options.

    Returns:
        float32 array (N, H, W, C), raw (not normalised).

    Example:
        >>> attr = compute_attributions(model, x_val[:8], method="gradient_x_input")
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

    ``vanilla`` is Simonyan et al. 2013: max over channels of |d score / d input|. Arguments are
    those of :func:`compute_attributions`.

    Example:
        >>> maps = compute_saliency(model, x_val[:8])  # (8, H, W) >= 0
    """
    return explain(model, images, method, target, labels, output, batch_size, **options).maps

"""Argument checks shared by the modules, in one message style: argument, expected, received."""

from __future__ import annotations

import math
import warnings

import numpy as np


def positive_int(name: str, value) -> int:
    """Return ``value`` as an int, or raise naming the argument ``name``.

    Raises:
        TypeError: for anything but an int (bool included).
        ValueError: for an int below 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected a positive int, received "
            f"{type(value).__name__}."
        )
    if value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a positive int, received "
            f"{name}={value}."
        )
    return int(value)


def seed(name: str, value) -> int | None:
    """Return ``value`` as a seed for ``np.random.default_rng``: an int >= 0, or None.

    None draws fresh entropy (another probe set each run); any int is reproducible.

    Raises:
        TypeError: for anything but an int or None (a str, a float such as 1.5, bool).
        ValueError: for a negative int.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected an int >= 0 (or None for a fresh draw "
            f"each run), received {name}={value!r} of type {type(value).__name__}. Pass e.g. "
            f"{name}=0."
        )
    if value < 0:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected an int >= 0, received {name}={value}. "
            f"Pass e.g. {name}={abs(int(value))}."
        )
    return int(value)


def real_number(name: str, value, low=None, high=None, what="a number") -> float:
    """Return ``value`` as a float in ``[low, high]``, or raise naming the argument ``name``.

    Args:
        name: the argument's name, for the message.
        value: what was passed.
        low, high: inclusive bounds, or None for no bound.
        what: the expectation in words, e.g. "an opacity in [0, 1]".

    Raises:
        TypeError: for anything but a real number (a str such as "0.5", None and bool included).
        ValueError: for NaN, infinity or a number outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected {what}, received "
            f"{name}={value!r} of type {type(value).__name__}. Pass a number, e.g. {name}=1."
        )
    number = float(value)
    if (
        not math.isfinite(number)
        or (low is not None and number < low)
        or (high is not None and number > high)
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected {what}, received {name}={value!r}."
        )
    return number


def class_names_count(class_names, head) -> None:
    """Warn when ``class_names`` does not hold one name per class of the model.

    Fewer names leave the other classes' captions as bare numbers; more names suggest a list
    meant for another model (or another class order).

    Args:
        class_names: the names given, or None.
        head: the bound model's ``targets.ScoreHead`` (``num_classes`` is None for regression).
    """
    n = head.num_classes
    if class_names is None or n is None or len(class_names) == n:
        return
    fewer = len(class_names) < n
    what = (
        f"classes {len(class_names)}..{n - 1} are shown by number"
        if fewer
        else f"the last {len(class_names) - n} names are never used"
    )
    warnings.warn(
        f"Argument `class_names` has {len(class_names)} names but the model has {n} classes "
        f"({head.description}): {what}. Pass one name per class, in the model's class order.",
        UserWarning,
        stacklevel=3,
    )


def check_model(model, input_dtype=None) -> None:
    """Fail fast on models whose saliency would be silently wrong.

    - channels-first layers (``data_format="channels_first"``): maps, probes and rendering all
      take the channel axis last, so such a model would get maps shaped like its channel axis;
    - integer inputs (an ``Embedding`` layer, or an integer/bool ``keras.Input``): token or
      category ids have no gradient, so every map would be zero.

    Args:
        model: the Keras model.
        input_dtype: the model's declared input dtype (``model.inputs[0].dtype``), if any.

    Raises:
        ValueError: naming the argument, what was found and what to do.
    """
    from keras_saliency_monitor.attribution.targets import sublayers

    layers = [layer for _, layer in sublayers(model)]
    first = [layer for layer in layers if getattr(layer, "data_format", None) == "channels_first"]
    if first:
        raise ValueError(
            "Invalid value for argument `model`: layer "
            f"{first[0].name!r} ({type(first[0]).__name__}) uses data_format='channels_first'; "
            "saliency maps, probes and rendering take images as (N, H, W, C) with channels "
            "last. Build the model with data_format='channels_last' (the Keras default; "
            "keras.config.set_image_data_format('channels_last')) and feed (N, H, W, C) images."
        )
    import keras

    embeddings = [layer for layer in layers if isinstance(layer, keras.layers.Embedding)]
    dtype = str(input_dtype or "")
    integer = dtype.startswith(("int", "uint")) or dtype == "bool"
    if embeddings or integer:
        what = (
            f"an Embedding layer {embeddings[0].name!r}"
            if embeddings
            else f"an input of dtype {dtype}"
        )
        raise ValueError(
            f"Invalid value for argument `model`: the model has {what}, so it takes integer ids; "
            "these have no gradient and every saliency map would be zero. Saliency needs a "
            "model whose input is a float image (N, H, W, C); for a text or categorical model "
            "explain the embeddings instead (attributions with respect to an Embedding output "
            "are not supported here)."
        )

"""Attribution methods, written against a gradient function rather than a model.

Every method receives ``grad(x, classes) -> GradientResult`` (see :mod:`gradients`), the probe
images ``x`` (N, H, W, C) and ``first``, the result of the one gradient call on the clean images
that every method needs anyway (it fixes the explained class per example and gives the logits).
Because methods only see a gradient function they can be tested on analytic functions with no
network.

A method returns signed attributions shaped like the input; ``to_map`` reduces them to a
non-negative (N, H, W) saliency map. Method options are validated up front by
:func:`validate_options` so a typo fails in ``__init__``, not at the end of the first epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np


class Method(NamedTuple):
    """One attribution method."""

    name: str
    attribute: Callable  # (grad, x, first, **options) -> (attributions (N,H,W,C), extras dict)
    to_map: Callable  # attributions (N,H,W,C) -> saliency (N,H,W) >= 0
    defaults: dict  # option name -> default value; the only options the method accepts
    check: Callable | None = None  # options dict -> None, raising ValueError/TypeError


def max_abs_over_channels(attributions: np.ndarray) -> np.ndarray:
    """Simonyan et al. 2013: the saliency of a pixel is max over channels of |attribution|."""
    return np.max(np.abs(attributions), axis=-1)


def abs_sum_over_channels(attributions: np.ndarray) -> np.ndarray:
    """|sum over channels|: keeps additive methods' per-pixel totals (gradient x input, IG)."""
    return np.abs(np.sum(attributions, axis=-1))


def _vanilla(grad, x, first, **_):
    return first.grads, {}


def _gradient_x_input(grad, x, first, **_):
    return first.grads * x, {}


METHODS: dict[str, Method] = {
    "vanilla": Method("vanilla", _vanilla, max_abs_over_channels, {}),
    "gradient_x_input": Method("gradient_x_input", _gradient_x_input, abs_sum_over_channels, {}),
}


def get_method(name) -> Method:
    """Look a method up by name, with an error that lists the valid names."""
    if not isinstance(name, str):
        raise TypeError(
            f"Invalid type for argument `method`: expected one of {sorted(METHODS)} as a str, "
            f"received {type(name).__name__}."
        )
    if name not in METHODS:
        raise ValueError(
            f"Invalid value for argument `method`: expected one of {sorted(METHODS)}, "
            f"received method={name!r}."
        )
    return METHODS[name]


def validate_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Return the method's full option dict (defaults filled in), rejecting unknown options."""
    method = get_method(name)
    unknown = sorted(set(options) - set(method.defaults))
    if unknown:
        allowed = sorted(method.defaults) or "none"
        raise TypeError(
            f"Unknown option(s) {unknown} for method={name!r}; its options are: {allowed}."
        )
    merged = {**method.defaults, **options}
    if method.check is not None:
        method.check(merged)
    return merged

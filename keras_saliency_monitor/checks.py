"""Argument checks shared by the modules, in one message style: argument, expected, received."""

from __future__ import annotations

import math

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

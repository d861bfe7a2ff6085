"""Argument checks shared by the modules, in one message style: argument, expected, received."""

from __future__ import annotations

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

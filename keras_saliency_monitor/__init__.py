"""keras-saliency-monitor: see what your image model looks at while it trains.

Public API (everything else is private by module)::

    from keras_saliency_monitor import SaliencyMonitor, compute_saliency, compute_attributions
    from keras_saliency_monitor import sanity_check  # the model-randomisation check

The names are resolved lazily so that the command line (``report``, ``tensorboard``, ``--help``)
and the numpy-only modules do not pay for importing TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["SaliencyMonitor", "compute_attributions", "compute_saliency", "sanity_check"]
__version__ = "0.1.0"

_WHERE = {
    "SaliencyMonitor": "keras_saliency_monitor.monitor.callback",
    "compute_attributions": "keras_saliency_monitor.attribution.explain",
    "compute_saliency": "keras_saliency_monitor.attribution.explain",
    "sanity_check": "keras_saliency_monitor.attribution.sanity",
}

if TYPE_CHECKING:
    from keras_saliency_monitor.attribution.explain import compute_attributions, compute_saliency
    from keras_saliency_monitor.attribution.sanity import sanity_check
    from keras_saliency_monitor.monitor.callback import SaliencyMonitor


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_saliency_monitor' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

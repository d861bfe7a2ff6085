"""Forwarding module: this path is ``keras_saliency_monitor.attribution.explain``.

The methods guide imports ``explain`` from this path. It stays importable here,
as the very same module object.
"""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("keras_saliency_monitor.attribution.explain")

"""Forwarding module: this path is ``keras_saliency_monitor.storage.arrays``.

The reports guide loads the raw maps (``load_arrays``) from this path. It stays importable here,
as the very same module object.
"""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("keras_saliency_monitor.storage.arrays")

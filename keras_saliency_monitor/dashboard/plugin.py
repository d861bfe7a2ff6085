"""Forwarding module: ``keras_saliency_monitor.dashboard.plugin`` is
``keras_saliency_monitor.views.dashboard.plugin`` (the entry point's former target).
"""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("keras_saliency_monitor.views.dashboard.plugin")

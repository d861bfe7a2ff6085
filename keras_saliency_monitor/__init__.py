"""keras-saliency-monitor: see what your image model looks at while it trains.

Public API (everything else is private by module)::

    from keras_saliency_monitor import SaliencyMonitor, compute_saliency, compute_attributions
"""

from keras_saliency_monitor.callback import SaliencyMonitor
from keras_saliency_monitor.explain import compute_attributions, compute_saliency

__all__ = ["SaliencyMonitor", "compute_attributions", "compute_saliency"]
__version__ = "0.1.0"

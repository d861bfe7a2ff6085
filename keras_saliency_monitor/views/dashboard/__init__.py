"""The SALIENCY dashboard: a TensorBoard dynamic plugin (``plugin.py``) and its frontend
(``static/``), registered through the ``tensorboard_plugins`` entry point of this package."""

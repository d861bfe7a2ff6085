"""Forwarding package: the dashboard lives in ``keras_saliency_monitor.views.dashboard``.

Only ``plugin`` is kept here, for installs whose ``tensorboard_plugins`` entry point still names
``keras_saliency_monitor.dashboard.plugin:SaliencyLoader``.
"""

"""The SALIENCY dashboard's backend: a TensorBoard dynamic plugin named ``"saliency"``.

TensorBoard finds it through the ``tensorboard_plugins`` entry point of this package (see
``pyproject.toml``), so with the package installed a plain ``tensorboard --logdir runs`` shows a
SALIENCY tab for every run that holds the monitor's events. The frontend is plain ES-module files
in ``static/``, served by the routes below and loaded by TensorBoard in an iframe; nothing is
fetched from elsewhere.

Every byte the routes send is read through ``context.data_provider`` by the functions of
:mod:`keras_saliency_monitor.store`, the same reading code the HTML report uses, so loading and
reloading behave as in TensorBoard's own dashboards.

Routes (under ``/data/plugin/saliency/``):
    ``runs``: JSON list of the runs holding saliency maps.
    ``run?run=R``: JSON index of one run (``store.read_run``).
    ``images?run=R``: PNG of the probe images stacked vertically.
    ``masks?run=R``: PNG of the object masks, or 404 without masks.
    ``maps?run=R&step=S``: PNG of the stored maps of one logged epoch.
    ``colormaps``: JSON ``{"names": [...], "luts": {name: [r, g, b, ...] (256 x 3)}}``.
    ``static/<file>``: the frontend (``static/index.js`` is the entry module).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import mimetypes

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from keras_saliency_monitor import store

__all__ = ["COLORMAPS", "SaliencyLoader", "SaliencyPlugin"]

#: Colormaps offered by the page's colormap menu (matplotlib names). The first is the page's
#: default: the callback's default ``cmap``, so the dashboard matches the grid.
COLORMAPS = ("inferno", "viridis", "magma", "jet", "turbo", "hot", "gray")

_STATIC = "static"
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


class SaliencyLoader(base_plugin.TBLoader):
    """Loads :class:`SaliencyPlugin` and keeps every logged epoch of its data in TensorBoard.

    TensorBoard keeps a reservoir sample of 10 steps per tag for plugins it does not know.
    ``fix_flags`` runs in ``TensorBoard.configure``, before the data ingester is built from
    ``flags.samples_per_plugin`` (tensorboard 2.21: ``program.py``), so adding ``saliency=0``
    there makes plain ``tensorboard --logdir runs`` keep every epoch. ``0`` means "all" on both
    ingesters: the Rust data server gets ``saliency=all`` (``data/server_ingester.py``) and the
    Python loader's reservoir of size 0 is unbounded. A value the user passed is kept.
    """

    def fix_flags(self, flags):
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            samples.setdefault(store.PLUGIN_NAME, 0)

    def load(self, context):
        return SaliencyPlugin(context)


class SaliencyPlugin(base_plugin.TBPlugin):
    """Serves the SALIENCY dashboard: the probes' maps of every logged epoch, per run."""

    plugin_name = store.PLUGIN_NAME

    def __init__(self, context):
        self._provider = context.data_provider

    def is_active(self):
        # TensorBoard marks the plugin enabled when its data provider lists summaries of plugin
        # "saliency" (``data_plugin_names``); this fallback is asked only when it does not.
        return False

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Saliency")

    def get_plugin_apps(self):
        return {
            "/runs": self._serve_runs,
            "/run": self._serve_run,
            "/images": self._serve_images,
            "/masks": self._serve_masks,
            "/maps": self._serve_maps,
            "/colormaps": self._serve_colormaps,
            "/static/*": self._serve_static,
        }

    # ------------------------------------------------------------------------------ helpers
    def _where(self, request):
        return (
            self._provider,
            plugin_util.context(request.environ),
            plugin_util.experiment_id(request.environ),
        )

    def _run_arg(self, request):
        run = request.args.get("run")
        if not run:
            raise errors.InvalidArgumentError("Missing query parameter `run`.")
        provider, ctx, eid = self._where(request)
        if run not in store.saliency_runs(provider, ctx, eid):
            raise errors.NotFoundError(f"No saliency data for run {run!r}.")
        return run

    # ------------------------------------------------------------------------------- routes
    @wrappers.Request.application
    def _serve_runs(self, request):
        return http_util.Respond(
            request, store.saliency_runs(*self._where(request)), "application/json"
        )

    @wrappers.Request.application
    def _serve_run(self, request):
        run = self._run_arg(request)
        index = store.read_run(*self._where(request), run)
        return http_util.Respond(request, index, "application/json")

    @wrappers.Request.application
    def _serve_images(self, request):
        run = self._run_arg(request)
        png = store.read_probe_images(*self._where(request), run)
        if not png:
            raise errors.NotFoundError(f"Run {run!r} has no probe set yet.")
        return http_util.Respond(request, png, "image/png")

    @wrappers.Request.application
    def _serve_masks(self, request):
        run = self._run_arg(request)
        png = store.read_masks(*self._where(request), run)
        if not png:
            raise errors.NotFoundError(f"Run {run!r} has no object masks.")
        return http_util.Respond(request, png, "image/png")

    @wrappers.Request.application
    def _serve_maps(self, request):
        run = self._run_arg(request)
        try:
            step = int(request.args.get("step", ""))
        except ValueError:
            raise errors.InvalidArgumentError(
                f"Invalid query parameter `step`: expected an int, received "
                f"{request.args.get('step')!r}."
            ) from None
        try:
            png = store.read_maps(*self._where(request), run, step)
        except KeyError:
            raise errors.NotFoundError(f"Run {run!r} has no maps at step {step}.") from None
        return http_util.Respond(request, png, "image/png")

    @wrappers.Request.application
    def _serve_colormaps(self, request):
        return http_util.Respond(request, _colormap_json(), "application/json", expires=3600)

    @wrappers.Request.application
    def _serve_static(self, request):
        name = request.path.rsplit("/static/", 1)[-1]
        files = _static_files()
        if name not in files:  # only the package's own files, by exact name
            raise errors.NotFoundError(f"No static file {name!r}.")
        suffix = name[name.rfind(".") :]
        content_type = _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0]
        return http_util.Respond(request, files[name], content_type or "application/octet-stream")


@functools.lru_cache(maxsize=1)
def _static_files() -> dict:
    """The frontend files, read once: ``{file name: bytes}``."""
    root = importlib.resources.files(__package__).joinpath(_STATIC)
    return {entry.name: entry.read_bytes() for entry in root.iterdir() if entry.is_file()}


@functools.lru_cache(maxsize=1)
def _colormap_json() -> str:
    """256-entry RGB lookup tables of :data:`COLORMAPS`, computed from matplotlib once."""
    import matplotlib
    import numpy as np

    luts = {}
    for name in COLORMAPS:
        rgb = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
        luts[name] = np.round(rgb * 255).astype(int).reshape(-1).tolist()
    return json.dumps({"names": list(COLORMAPS), "luts": luts}, separators=(",", ":"))

"""The SALIENCY dashboard's backend: a TensorBoard dynamic plugin named ``"saliency"``.

TensorBoard finds it through the ``tensorboard_plugins`` entry point of this package (see
``pyproject.toml``), so with the package installed a plain ``tensorboard --logdir runs`` shows a
SALIENCY tab for every run that holds the monitor's events. The frontend is plain ES-module files
in ``static/``, served by the routes below and loaded by TensorBoard in an iframe; nothing is
fetched from elsewhere.

Every byte the routes send is read through ``context.data_provider`` by the functions of
``storage/store.py``, the same reading code the HTML report uses, so loading and
reloading behave as in TensorBoard's own dashboards.

Routes (under ``/data/plugin/saliency/``):
    ``runs``: JSON list of the runs holding saliency maps.
    ``run?run=R[&after=S]``: JSON index of one run (``store.read_run_since``: the epochs past
    step S only, every readable step listed, unreadable epochs named in ``errors`` instead of
    failing the request; plus ``has_masks`` when ``after`` is absent). The page polls it with
    the last step it holds.
    With ``&compact=1`` (the page's request) the per-probe numbers of every epoch but the last
    are replaced by their means over the probes.
    ``probe?run=R&probe=K``: JSON ``{"numbers": {name: [[step, value], ...]}}``: probe K's
    per-probe numbers over every epoch (the page's probe detail).
    ``images?run=R``: PNG of the probe images stacked vertically.
    ``masks?run=R``: PNG of the object masks, or 404 without masks.
    ``maps?run=R&step=S``: PNG of the stored maps of one logged epoch.
    ``maps_batch?run=R&steps=S1,S2,...``: the PNGs of several epochs in one response (the
    page's first request for a filmstrip page): a 4-byte big-endian header length, a JSON header
    ``{"steps": [...], "sizes": [...]}``, then the PNGs back to back.
    ``colormaps``: JSON ``{"names": [...], "luts": {name: [r, g, b, ...] (256 x 3)}}``.
    ``static/<file>``: the frontend (``static/index.js`` is the entry module).
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.resources
import json
import mimetypes
import struct

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from keras_saliency_monitor.storage import store

__all__ = ["COLORMAPS", "SaliencyLoader", "SaliencyPlugin"]

#: Colormaps offered by the page's colormap menu (matplotlib names). The first is the page's
#: default: the callback's default ``cmap``, so the dashboard matches the grid.
COLORMAPS = ("inferno", "viridis", "magma", "jet", "turbo", "hot", "gray")

#: Most epochs one ``maps_batch`` request may ask for.
MAX_BATCH = 64

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
        # TensorBoard's reload (its button and its auto-reload) reaches the page as an
        # `experimental.DataReloaded` message from the host (tensorboard 2.21's plugin API); the
        # page also polls on its own every few seconds while visible, for TensorBoard re-reads
        # the log dir every 5 s but reloads its page only every 30 s.
        return base_plugin.FrontendMetadata(
            disable_reload=False, es_module_path="/static/index.js", tab_name="Saliency"
        )

    def get_plugin_apps(self):
        return {
            "/runs": self._serve_runs,
            "/run": self._serve_run,
            "/probe": self._serve_probe,
            "/images": self._serve_images,
            "/masks": self._serve_masks,
            "/maps": self._serve_maps,
            "/maps_batch": self._serve_maps_batch,
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

    @staticmethod
    def _run_arg(request):
        # Not checked against the run list here: that is one more round trip to the data server
        # on the page's critical path. A run without our data reads as empty and gets a 404.
        run = request.args.get("run")
        if not run:
            raise errors.InvalidArgumentError("Missing query parameter `run`.")
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
        after = _int_arg(request, "after", "an int (the last step the page holds)", "-1")
        provider, ctx, eid = self._where(request)
        # Added to the index so the page asks for masks only when they exist (a 404 would be a
        # console error); read meanwhile, on another thread. Not on a poll (after >= 0): that
        # would read the masks' PNG every few seconds; a new probe set makes the page reload.
        masks = _POOL.submit(store.read_masks, provider, ctx, eid, run) if after < 0 else None
        index = store.read_run_since(_PrefetchingProvider(provider, after), ctx, eid, run, after)
        if masks is not None:
            index["has_masks"] = masks.result() is not None
        if request.args.get("compact") == "1":
            _compact(index)
        if index["probe_set"] is None and not index["steps"] and not index["errors"]:
            raise errors.NotFoundError(f"No saliency data for run {run!r}.")
        return http_util.Respond(request, index, "application/json")

    @wrappers.Request.application
    def _serve_probe(self, request):
        run = self._run_arg(request)
        k = _int_arg(request, "probe", "an int >= 0")
        if k < 0:
            raise errors.InvalidArgumentError(
                f"Invalid query parameter `probe`: expected an int >= 0, received {k}."
            )
        provider, ctx, eid = self._where(request)
        index = store.read_run_since(_PrefetchingProvider(provider), ctx, eid, run)
        numbers = {}
        for step in index["steps"]:
            for name, values in (index["epochs"][str(step)].get("per_probe") or {}).items():
                value = values[k] if k < len(values) else None
                numbers.setdefault(name, []).append([step, value])
        return http_util.Respond(
            request, {"run": run, "probe": k, "numbers": numbers}, "application/json"
        )

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
        step = _int_arg(request, "step", "an int")
        try:
            png = store.read_maps(*self._where(request), run, step)
        except KeyError:
            raise errors.NotFoundError(f"Run {run!r} has no maps at step {step}.") from None
        return http_util.Respond(request, png, "image/png")

    @wrappers.Request.application
    def _serve_maps_batch(self, request):
        run = self._run_arg(request)
        text = request.args.get("steps", "")
        try:
            steps = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            steps = None
        if not steps or len(steps) > MAX_BATCH:
            raise errors.InvalidArgumentError(
                f"Invalid query parameter `steps`: expected 1 to {MAX_BATCH} comma-separated "
                f"ints, received {text!r}."
            )
        provider, ctx, eid = self._where(request)
        # One request instead of one per column: the browser opens at most 6 connections per
        # host, and each read is a round trip to the data server, so they run concurrently here.
        pngs = list(_POOL.map(lambda s: _maps_or_none(provider, ctx, eid, run, s), steps))
        missing = [s for s, png in zip(steps, pngs) if png is None]
        if missing:
            raise errors.NotFoundError(f"Run {run!r} has no maps at steps {missing}.")
        header = json.dumps({"steps": steps, "sizes": [len(p) for p in pngs]}).encode("utf-8")
        body = b"".join([struct.pack(">I", len(header)), header, *pngs])
        return http_util.Respond(request, body, "application/octet-stream")

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


# Blob reads of one /run request run on these threads at once (see _PrefetchingProvider).
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="saliency-blobs")


class _PrefetchingProvider:
    """A per-request view of a ``DataProvider`` that reads the blobs ``store.read_run_since`` will
    ask for concurrently, as soon as it lists a blob sequence.

    ``read_run_since`` reads one JSON blob per new epoch, one after the other. Through
    TensorBoard's Rust data server each ``read_blob`` is a gRPC call with about 45 ms of
    latency, whatever its size: measured on a 50-epoch run, 50 sequential calls took 2.2-2.6 s
    and the same 50 calls on 8 threads 0.05-0.07 s (tensorboard 2.21, data server 0.7.2, 2
    cores). Everything else is passed through unchanged; nothing outlives the request, so
    nothing can go stale.
    """

    def __init__(self, provider, after=-1):
        self._provider = provider
        self._after = after  # steps up to here are not read (the page holds them)
        self._pending = {}

    def __getattr__(self, name):
        return getattr(self._provider, name)

    def read_blob_sequences(self, ctx, **kwargs):
        result = self._provider.read_blob_sequences(ctx, **kwargs)
        for tags in result.values():
            for data in tags.values():
                for datum in data:
                    # Blob [0] is each step's JSON, which read_run_since reads past `after`.
                    if datum.step <= self._after:
                        continue
                    key = datum.values[0].blob_key if datum.values else None
                    if key is not None and key not in self._pending:
                        self._pending[key] = _POOL.submit(
                            self._provider.read_blob, ctx, blob_key=key
                        )
        return result

    def read_blob(self, ctx, *, blob_key):
        pending = self._pending.pop(blob_key, None)
        if pending is not None:
            return pending.result()
        return self._provider.read_blob(ctx, blob_key=blob_key)


def _int_arg(request, name, expected, default=""):
    """The int query parameter ``name``; a clear 400 (naming it) when it is not one."""
    text = request.args.get(name, default)
    try:
        return int(text)
    except ValueError:
        raise errors.InvalidArgumentError(
            f"Invalid query parameter `{name}`: expected {expected}, received {text!r}."
        ) from None


def _compact(index):
    """Drops the per-probe numbers of every epoch but the last from ``index`` (in place),
    keeping each number's mean over the probes (``"means"``).

    The page needs every probe's numbers only for the last epoch (ordering) and for one probe
    at a time (its detail: the ``probe`` route); at 200 epochs x 64 probes they are about three
    quarters of the run index's bytes (2.7 MB in all, issue 18).
    """
    steps = sorted(int(s) for s in index["epochs"])
    for step in steps[:-1]:
        info = index["epochs"][str(step)]
        per_probe = info.pop("per_probe", None) or {}
        means = {}
        for name, values in per_probe.items():
            finite = [v for v in values if v is not None]
            means[name] = sum(finite) / len(finite) if finite else None
        info["means"] = means
    return index


def _maps_or_none(provider, ctx, eid, run, step):
    try:
        return store.read_maps(provider, ctx, eid, run, step)
    except KeyError:
        return None


@functools.lru_cache(maxsize=1)
def _static_files() -> dict:
    """The frontend files, read once: ``{file name: bytes}``."""
    root = importlib.resources.files(__package__).joinpath(_STATIC)
    return {entry.name: entry.read_bytes() for entry in root.iterdir() if entry.is_file()}


@functools.lru_cache(maxsize=1)
def _colormap_json() -> str:
    """256-entry RGB lookup tables of :data:`COLORMAPS`: the callback's own tables (render.py,
    from matplotlib), so the page colours a map exactly as the grid and the report do."""
    import numpy as np

    from keras_saliency_monitor.drawing import render  # imports matplotlib: only when first asked

    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None]
    luts = {name: render.colorize(ramp, name)[0].reshape(-1).tolist() for name in COLORMAPS}
    return json.dumps({"names": list(COLORMAPS), "luts": luts}, separators=(",", ":"))

"""SaliencyMonitor: the Keras callback. Wiring only; the work lives in the other modules.

Reading order: ``__init__`` validates and draws the fixed probe set; ``on_train_begin`` binds the
model (one compiled gradient per run), decides whether this process writes (the chief) and resets
per-run state; ``on_epoch_end`` computes the maps and numbers on the training thread (the numbers
must be in ``logs`` before the next callback reads them) and hands rendering, PNG encoding and
writing to a background worker; ``on_train_end`` drains the worker and flushes the event file.

Faults during training (non-finite maps, a failing disk, any exception while computing or writing)
go through ``faults`` (:class:`faults.Faults`): one warning per kind of fault and run, every
occurrence counted; with ``strict=True`` they are raised instead, out of ``fit``.

Durability: the write job of a logged epoch runs while the next epoch trains; every
``on_epoch_end`` first waits for the job still running (a no-op when writing is faster than an
epoch), so at most one epoch's events are ever in flight. With ``durable=True`` ``on_epoch_end``
returns only after its own epoch is on disk.
"""

from __future__ import annotations

import os
import time
import warnings

import keras
import numpy as np

from keras_saliency_monitor import arrays, logdirs, metrics, probes, render, store
from keras_saliency_monitor.alarm import ShortcutAlarm
from keras_saliency_monitor.checks import positive_int, real_number
from keras_saliency_monitor.distribution import is_chief
from keras_saliency_monitor.explain import Explainer
from keras_saliency_monitor.faults import Faults
from keras_saliency_monitor.writer import BackgroundWorker, EventWriter, last_step

# Chance level of the logged numbers (README table "Numbers: catching a shortcut").
_CHANCE = {
    "focus_lift": 1.0,
    "border_ratio": 1.0,
    "place_agreement": 1.0,
    "probe_skill": 0.0,
    "object_reliance": 0.0,
}
SUBDIR = logdirs.SALIENCY_DIR  # events in <log_dir>/saliency, beside Keras TensorBoard's train/
GRID_TAG = "saliency/overlays"  # one labelled grid per logged epoch (Images dashboard)
INFO_TAG = "saliency/probes_info"  # text: which probes, their labels (first logged step)
ALARM_TAG = store.ALARM_TAG  # text: the shortcut alarm, when it fires
PROBE_SET_TAG = store.PROBE_SET_TAG  # dashboard data: probes and their images, once per fit
MAPS_TAG = store.MAPS_TAG  # dashboard data: quantised maps and per-probe numbers, every step
FAULT_COLOR = render.FAULT_COLOR  # frame around the overlay tile of a non-finite map
FLAT_COLOR = render.FLAT_COLOR  # frame around the overlay tile of a flat (near-constant) map
# Grid layout, chosen with screenshots of TensorBoard's Images dashboard (350 px wide cards):
# two probes per row, tiles of at most 112 px, captions about 15 px tall on screen.
GRID_COLUMNS = 2
GRID_TILE = 112


def _class_names(class_names):
    """``class_names`` as a list of str (None stays None); a bare string is refused."""
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)):
        raise TypeError(
            "Invalid type for argument `class_names`: expected a sequence of names, one per "
            f"class, received the string {class_names!r} (it would be split into letters). Pass "
            f"e.g. class_names=[{class_names!r}, ...]."
        )
    if isinstance(class_names, (dict, set, frozenset)) or not hasattr(class_names, "__iter__"):
        raise TypeError(
            "Invalid type for argument `class_names`: expected a list or tuple of names in class "
            f"order, received {type(class_names).__name__}. Pass e.g. class_names=['cat', 'dog']."
        )
    return [c.decode() if isinstance(c, bytes) else str(c) for c in class_names]


class SaliencyMonitor(keras.callbacks.Callback):
    """Logs gradient saliency of a fixed probe set to TensorBoard at epoch ends.

    At each logged epoch ``e`` it computes saliency maps of the probes against the current weights
    (``training=False``; nothing about the model, its optimizer or any RNG changes) and writes, at
    step ``e`` under ``<log_dir>/saliency``: a labelled grid of image + overlay pairs
    (``saliency/overlays``, readable at TensorBoard's default card size), the data of the
    SALIENCY dashboard (``saliency/probe_set`` once per fit, ``saliency/maps`` every logged
    epoch; see ``store``), and scalars under ``saliency/``. The same numbers go into ``logs``
    with the prefix ``saliency_`` so ``EarlyStopping``, ``CSVLogger`` and ``History`` see them.

    Args:
        log_dir: directory of the run; events go to ``<log_dir>/saliency``. Use the same
            ``log_dir`` as ``keras.callbacks.TensorBoard`` to see both in one run. A relative
            path is made absolute here, so an ``os.chdir`` later does not move the run.
        probe_data: images (N, H, W, C), ``(x, y)`` with sparse, one-hot or string labels
            (string labels need ``class_names``), a list of same-sized images, a
            ``tf.data.Dataset`` of x or (x, y) (batched or not), or a ``keras.utils.PyDataset``;
            datasets are read in one streaming pass (at most 4,096 examples) that keeps only
            the drawn probes.
            Images are given exactly as the model sees them (any value range).
        num_probes: how many probes to draw, once, stratified by class when labels exist.
            Defaults to 16.
        method: "vanilla" (default), "gradient_x_input", "smoothgrad" (options ``samples``,
            ``noise``, ``seed``), "integrated_gradients" (``steps``, ``baseline``) or "gradcam"
            (``layer``); options are passed as keyword arguments (see ``methods.METHODS``).
        target: which class score to explain: "predicted" (default), "label", an int class, or a
            callable ``logits -> (N,)`` scores built with ``keras.ops``.
        masks: optional object masks aligned with ``probe_data``: (N, H, W) bool or float, (N, 4)
            boxes ``(y0, x0, y1, x1)`` in pixels, or a callable ``(x_i, y_i) -> (H, W)``. With
            masks, ``saliency_focus`` (fraction of saliency inside the mask),
            ``saliency_focus_lift`` (against the other probes' masks: 1.0 = chance) and
            ``saliency_mask_contrast`` are logged, and the alarm also watches the lift. With
            masks (2 probes or more) ``saliency_object_reliance`` is logged too: the share of the
            model's confidence (above chance) lost when each probe's object is painted over,
            beyond a same-shape patch elsewhere (0 = chance, 1 = all of it; 2 forward passes per
            probe); the alarm fires below ``alarm_reliance_threshold``.
        every_n_epochs: log epochs ``0, n, 2n, ...``. Defaults to 1.
        seed: seed of the probe draw. Defaults to 0.
        output: index or name of the output to explain, for multi-output models.
        class_names: optional sequence of class names, in class order, for captions (and to map
            string labels to class ids).
        display_fn: optional ``x -> images in [0, 1]`` used for display only (e.g. to undo a
            standardisation). By default each image is min-max rescaled for display.
        batch_size: images per compiled gradient call; bounds memory. Defaults to 32.
        clip_percentile: per-map percentile mapped to the top of the colormap. Defaults to 99.
        smoothing: Gaussian sigma in pixels applied to maps before display. Defaults to 0.
        cmap: matplotlib colormap name. Defaults to "inferno" (perceptually uniform).
        alpha: heatmap opacity at full saliency, over a dimmed grey copy of the image (the
            colour image is shown beside it). Defaults to 0.8.
        max_grid_width: cap on the grid image's width in pixels. Defaults to 1024.
        pointing_tolerance: pixels within which the most salient pixel counts as a hit on the
            mask for ``saliency_pointing_game``. Defaults to 0.
        alarm_threshold: with masks, the focus lift (1.0 = chance) below which the alarm counts
            an epoch as off the object; used when the masks differ enough to tell
            (``saliency_mask_contrast`` >= 2). None switches this signal off. Defaults to 1.25.
        alarm_border_threshold: the border ratio (saliency density in the image's outer band
            over the density inside it; 1.0 = chance) above which the alarm counts an epoch as
            looking at the edges (watermarks, tags, stamps, frames). Works without masks. None
            switches this signal off. Defaults to 1.0.
        alarm_reliance_threshold: with masks, the object reliance (``saliency_object_reliance``:
            how much painting over each probe's object lowers the model's confidence, beyond
            painting over a patch of the same shape elsewhere; 0 = chance, about 1 = the
            prediction falls to chance without the object) below which the alarm counts an
            epoch as not resting on the object. A number in (0, 1), or None to switch this
            signal off. Defaults to 0.25.
        alarm_patience: the alarm warns once when some signal has been past its threshold for
            this many consecutive counted epochs after ``alarm_warmup`` logged ones; the
            per-epoch number behind it is ``saliency_shortcut`` (> 1.0 = past a threshold). An
            epoch counts once the model predicts the probes clearly better than chance
            (``saliency_probe_skill`` >= 0.5). Defaults to 2.
        alarm_warmup: logged epochs ignored by the alarm at the start of a run. Defaults to 1.
        stop_on_alarm: also stop training (``model.stop_training = True``) when the alarm fires.
            Defaults to False.
        save_arrays: also save each logged epoch's raw maps (float32, with classes, logits and
            labels) to ``<log_dir>/saliency/arrays/epoch_NNNN.npz`` for notebooks; load them with
            ``keras_saliency_monitor.arrays.load_arrays(log_dir)``. Defaults to False.
        background: render, encode and write on a background thread. Defaults to True.
        durable: return from ``on_epoch_end`` only once that epoch's events are flushed and
            synced to disk, so a hard kill (SIGKILL, OOM killer, preemption) after an epoch's end
            loses nothing of it; costs the render and write time on the training thread. By
            default a logged epoch's write overlaps the next epoch's training and is waited for
            at the next epoch end, so a hard kill loses at most the most recent logged epoch.
            Defaults to False.
        strict: raise faults during training (non-finite maps, failing disk, any exception while
            computing, rendering or writing, including those of the background thread at the
            next hook) out of ``fit`` instead of warning once per kind and going on. Defaults to
            False.
        **method_options: options of the method (see ``methods.METHODS[method].defaults``).

    Attributes:
        history: ``{step: {name: value}}``, the numbers put into ``logs`` this far; the step is
            the epoch, except in a later fit into the same ``log_dir`` (see below).
        faults: ``{kind: [where, ...]}``, every fault of the current run ("non_finite",
            "compute", "write", "stalled"); only the first of each kind is warned about.

    Raises:
        ValueError, TypeError: for invalid arguments, naming the argument and the fix.

    Several fits, one directory: a later ``fit`` (same monitor or a new one, this process or
    another) whose first epoch is already logged in ``log_dir`` continues at the step after the
    last one logged (with ``initial_epoch`` beyond it, at that epoch), so no step is reused and no
    file overwritten. A second monitor writing to the same ``log_dir`` at the same time is refused
    in ``on_train_begin`` with a ``ValueError``.

    Multi-process training (TF_CONFIG): every process computes the numbers into ``logs`` (so
    ``EarlyStopping`` decides the same everywhere); only the chief (or worker 0 when the cluster has
    no chief) creates the directory and writes events.

    Example:
        >>> monitor = SaliencyMonitor("runs/exp1", (x_val, y_val), num_probes=16)
        >>> model.fit(x, y, epochs=20, callbacks=[monitor])
    """

    # Longest wait of the training thread for one write job; beyond it the writer counts as stuck,
    # and nothing is waited for any more in that fit.
    WRITE_TIMEOUT_SECONDS = 60.0
    # Longest wait at the end of a fit whose writer has stalled (a last chance to close the file).
    STALLED_END_SECONDS = 1.0

    def __init__(
        self,
        log_dir,
        probe_data,
        num_probes=16,
        method="vanilla",
        target="predicted",
        masks=None,
        every_n_epochs=1,
        seed=0,
        *,
        output=None,
        class_names=None,
        display_fn=None,
        batch_size=32,
        clip_percentile=99.0,
        smoothing=0.0,
        cmap="inferno",
        alpha=0.8,
        max_grid_width=1024,
        pointing_tolerance=0,
        alarm_threshold=1.25,
        alarm_border_threshold=1.0,
        alarm_reliance_threshold=0.25,
        alarm_patience=2,
        alarm_warmup=1,
        stop_on_alarm=False,
        save_arrays=False,
        background=True,
        durable=False,
        strict=False,
        **method_options,
    ):
        super().__init__()
        if is_chief():
            self.log_dir = logdirs.check_log_dir(log_dir)
        elif isinstance(log_dir, (str, os.PathLike)):
            self.log_dir = os.path.abspath(log_dir)  # never touched by a non-writing process
        else:
            logdirs.check_log_dir(log_dir)  # raises the TypeError
        self.every_n_epochs = positive_int("every_n_epochs", every_n_epochs)
        self.explainer = Explainer(method, target, output, batch_size, **method_options)
        if display_fn is not None and not callable(display_fn):
            raise TypeError(
                "Invalid type for argument `display_fn`: expected a callable x -> images in "
                f"[0, 1] (or None), received {type(display_fn).__name__}."
            )
        alpha = real_number("alpha", alpha, 0, 1, "an opacity in [0, 1]")
        smoothing = real_number("smoothing", smoothing, 0, None, "a Gaussian sigma >= 0 (0: none)")
        clip_percentile = real_number(
            "clip_percentile", clip_percentile, 0, 100, "a percentile in (0, 100]"
        )
        self.render_options = dict(
            clip_percentile=clip_percentile,
            sigma=smoothing,
            cmap=cmap,
            alpha=alpha,
            display_fn=display_fn,
        )
        self.max_grid_width = positive_int("max_grid_width", max_grid_width)
        if self.max_grid_width < 32:
            raise ValueError(
                "Invalid value for argument `max_grid_width`: expected at least 32 pixels, "
                f"received max_grid_width={max_grid_width}."
            )
        self.class_names = _class_names(class_names)
        self.pointing_tolerance = real_number(
            "pointing_tolerance", pointing_tolerance, 0, None, "a distance in pixels >= 0"
        )
        self.alarm = ShortcutAlarm(
            alarm_threshold,
            alarm_border_threshold,
            alarm_patience,
            alarm_warmup,
            reliance_threshold=alarm_reliance_threshold,
        )
        self.stop_on_alarm = bool(stop_on_alarm)
        self.alarm_message = None  # the alarm's text once it fired in the current run
        self.save_arrays = bool(save_arrays)
        self.background = bool(background)
        self.durable = bool(durable)
        self.strict = bool(strict)
        self.probes = probes.select_probes(
            probe_data,
            num_probes,
            seed,
            masks,
            class_names=self.class_names,
            require_labels=isinstance(target, str) and target == "label",
        )
        # Rendering the fixed probe images once checks display_fn, cmap and clip_percentile now,
        # not at the end of the first epoch. Full size for the stored probe set; the grid's
        # tiles (and the heat drawn over their dimmed grey copy) at most GRID_TILE px a side.
        self._display, _ = render.render_overlays(
            self.probes.x, np.zeros(self.probes.x.shape[:3], np.float32), **self.render_options
        )
        self._grid_factor = render.tile_factor(self._display.shape[1:3], GRID_TILE)
        self._grid_display = render.downscale_images(self._display, self._grid_factor)
        self._backdrop = render.dim_grey(self._grid_display)  # what the heat is drawn over
        self._writer = None
        self._worker = None
        self._lock_file = None  # open, locked file in the events directory while a fit writes
        self._last_step = None  # the largest step this monitor (or its log_dir) has logged
        self._step_offset = None  # step - epoch in the current fit, fixed at its first epoch
        self._chief = True
        self._previous_ranked = None
        self._mask_contrast = None  # metrics.mask_contrast of the probes' masks, when first needed
        self._reliance_inputs = None  # metrics.reliance_inputs of the probes, when first needed
        self._info_written = False
        self._stalled = False  # a write job outlived WRITE_TIMEOUT_SECONDS: stop waiting for it
        self._wait_seconds = []  # time the training thread waited for write jobs, per wait
        self.history = {}  # step (the epoch, in a first fit) -> the numbers logged at it
        self.faults = Faults(self.strict, self._release_before_raise)  # kind -> [where, ...]

    # ---------------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None):
        self._check_image_model()
        # One probe is the forward pass that models without a graph (subclassed, Sequential
        # without keras.Input) are measured with.
        # The bind also runs a callable target once, so a broken one fails here, not in epoch 0.
        self.explainer.bind(self.model, self.probes.x.shape[1:], sample=self.probes.x[:1])
        labels = self.probes.labels
        if labels is not None and self.explainer.head.num_classes is not None:
            self._check_labels(labels)
        self._chief = is_chief()
        # A fit that ended in an exception never reached on_train_end: release what it left.
        self._release_writer(self._write_timeout(end=True), "train begin")
        self._step_offset = None
        if self._chief:
            events_dir = os.path.join(self.log_dir, SUBDIR)
            try:
                os.makedirs(events_dir, exist_ok=True)
            except OSError as err:
                raise ValueError(
                    f"Invalid value for argument `log_dir`: cannot create {events_dir!r} ({err}). "
                    "Pass a writable directory."
                ) from None
            if self._lock_file is None:
                self._lock_file = logdirs.lock_events_dir(events_dir)
            # Continue after whatever this directory holds already (an earlier fit, a killed
            # process), so that no step is ever reused and no arrays file overwritten.
            for found in (last_step(events_dir), arrays.last_saved_epoch(self.log_dir)):
                if found is not None and (self._last_step is None or found > self._last_step):
                    self._last_step = found
            # A new event file per fit: the previous fit closed its own.
            self._writer = EventWriter(events_dir)
            self._worker = BackgroundWorker(synchronous=not self.background)
        self._previous_ranked = None
        self._info_written = False
        self._stalled = False
        self._wait_seconds = []
        self.faults = Faults(self.strict, self._release_before_raise)
        self.alarm.reset()
        self.alarm_message = None

    def on_epoch_begin(self, epoch, logs=None):
        self._report_write_errors()  # strict mode: a failed write stops fit at the next hook

    def on_epoch_end(self, epoch, logs=None):
        # The previous epoch's write had a whole epoch to finish: wait for what is left of it
        # (usually nothing) so that at most one epoch's events are ever in flight.
        idle = self._wait_for_writes(self._write_timeout(), epoch)
        step = self._step(epoch)
        if epoch % self.every_n_epochs:
            return
        self._last_step = step  # consumed even if writing fails: a step is never reused
        try:
            explanation = self.explainer.explain(self.probes.x, self.probes.labels)
            numbers, per_probe = self._measure(explanation)
            self.history[step] = numbers
            if logs is not None:
                logs.update(numbers)
            message = self._check_alarm(epoch, numbers, per_probe)
        except Exception as err:  # noqa: BLE001 - a monitor never kills the training it watches
            self.faults.record("compute", f"epoch {epoch}", err)
            return
        broken = ~(
            np.isfinite(explanation.maps).all(axis=(1, 2))
            & np.isfinite(explanation.logits).all(axis=1)
        )
        if broken.any():
            self.faults.record(
                "non_finite",
                f"epoch {epoch}",
                FloatingPointError(
                    f"NaN or inf in the saliency of {int(broken.sum())} of {len(broken)} probes "
                    f"at epoch {epoch}: the model's weights or activations have diverged. Their "
                    "numbers are NaN and their tiles are framed in red"
                ),
            )
        if not self._chief:
            return  # numbers computed, as on every process; only the chief writes
        if not idle:
            return  # the writer is stuck (reported as "stalled"); skip this epoch's images
        try:
            self._worker.submit(
                self._write_epoch,
                epoch,
                explanation,
                numbers,
                per_probe,
                message,
                broken,
                job_name=f"writing epoch {epoch}",
            )
        except Exception as err:  # noqa: BLE001
            self.faults.record("write", f"epoch {epoch}", err)
            return
        if self.durable:
            self._wait_for_writes(self._write_timeout(), epoch)

    def on_train_end(self, logs=None):
        # Bounded whatever the disk does: at most WRITE_TIMEOUT_SECONDS in all (STALLED_END_SECONDS
        # once a write has stalled), then the event file is closed on the worker thread, so a
        # job stuck in the file system can hold neither this thread nor the process.
        timeout = self._write_timeout(end=True)
        start = time.monotonic()
        try:
            self._wait_for_writes(timeout, "train end")
        finally:
            left = max(0.0, timeout - (time.monotonic() - start))
            self._release_writer(left, "train end")

    def _step(self, epoch):
        """The TensorBoard step (and ``save_arrays`` file number) of ``epoch`` in this fit.

        ``epoch`` itself in a first fit (or with an ``initial_epoch`` after the last logged
        step); a later fit into the same directory that starts at an epoch already logged
        continues after the last logged step. Fixed at the fit's first epoch end.
        """
        if self._step_offset is None:
            last = self._last_step
            self._step_offset = 0 if last is None or epoch > last else last + 1 - epoch
        return epoch + self._step_offset

    # ---------------------------------------------------------------- helpers
    def _check_labels(self, labels):
        n = self.explainer.head.num_classes
        if labels.max() >= n or labels.min() < 0:
            raise ValueError(
                f"Invalid value for argument `probe_data`: labels range over "
                f"[{labels.min()}, {labels.max()}] but the model has {n} classes "
                f"({self.explainer.head.description}). Pass labels of this model's classes, "
                'or use target="predicted".'
            )

    def _measure(self, explanation):
        """Scalars for ``logs`` (prefix ``saliency_``) and the per-probe values behind them."""
        maps = explanation.maps
        per_probe = {"concentration": metrics.concentration(maps)}
        # Each epoch's maps are ranked once; the next epoch's stability reuses these ranks.
        ranked = metrics.rank_maps(maps)
        if self._previous_ranked is not None:
            per_probe["stability"] = metrics.rank_correlation_of(self._previous_ranked, ranked)
        self._previous_ranked = ranked
        masks = self.probes.masks
        if masks is not None:
            per_probe["focus"] = metrics.focus(maps, masks)
            per_probe["pointing_game"] = metrics.pointing_game(
                maps, masks, tolerance=self.pointing_tolerance
            )
        # Shortcut indicators (mask-free ones always; the lift against the other probes' masks
        # with masks). Run-level values are not plain means of the per-probe ones.
        if masks is not None and self._mask_contrast is None:
            self._mask_contrast = metrics.mask_contrast(masks)  # fixed probes: once per monitor
        run, indicators = metrics.shortcut_indicators(maps, masks, self._mask_contrast)
        per_probe.update(indicators)
        head = self.explainer.head
        run["probe_skill"] = metrics.probe_skill(explanation.logits, self.probes.labels, head.kind)
        if masks is not None and len(masks) >= 2:
            # Object reliance: forward passes only, 2 per probe (object, then a same-shape patch
            # elsewhere, painted over); the painted probes are fixed, so built once per monitor.
            # Both halves in one call (as two: 0.85x the vanilla gradient's time; as one: 0.64x).
            if self._reliance_inputs is None:
                painted = metrics.reliance_inputs(self.probes.x, masks)
                self._reliance_inputs = np.concatenate(painted)
            without = np.split(self.explainer.logits(self._reliance_inputs), 2)
            run["object_reliance"], per_probe["object_reliance"] = metrics.object_reliance(
                explanation.logits, *without, kind=head.kind, labels=self.probes.labels
            )
        extras = explanation.extras
        if "completeness_gap" in extras:
            # Integrated gradients: |sum of attributions - (f(x) - f(baseline))| relative to
            # |f(x) - f(baseline)|; raise `steps` while this is more than a few percent.
            delta = np.abs(np.asarray(extras["score_delta"], np.float64))
            gap = np.abs(np.asarray(extras["completeness_gap"], np.float64))
            per_probe["completeness_gap"] = np.where(
                delta > 0, gap / np.maximum(delta, 1e-12), np.nan
            )
        numbers = {"saliency_" + k: metrics.nanmean(v) for k, v in per_probe.items()}
        numbers.update({"saliency_" + k: float(v) for k, v in run.items()})
        numbers["saliency_shortcut"] = float(self.alarm.shortcut_score(run))
        return numbers, per_probe

    def _check_alarm(self, epoch, numbers, per_probe):
        """Feed the shortcut signals to the alarm; warn (and stop, if asked) when it fires."""
        names = None
        if self.probes.labels is not None:
            names = [self._class_name(c) for c in self.probes.labels]
        message = self.alarm.update(epoch, numbers, per_probe, names)
        if message is None:
            return None
        self.alarm_message = message
        warnings.warn(message, UserWarning, stacklevel=3)
        if self.stop_on_alarm and self.model is not None:
            self.model.stop_training = True
        return message

    def _class_name(self, c):
        c = int(c)
        if self.class_names is not None and 0 <= c < len(self.class_names):
            return self.class_names[c]
        return str(c)

    def _probes_info(self):
        """Markdown table of the probes (numbered from 0), for TensorBoard's text dashboard."""
        rows = ["| probe | index in probe_data | label |", "|---|---|---|"]
        for k, i in enumerate(self.probes.indices):
            label = "" if self.probes.labels is None else self._class_name(self.probes.labels[k])
            rows.append(f"| {k} | {int(i)} | {label} |")
        return "\n".join(rows)

    def _probe_set_blobs(self):
        """The ``saliency/probe_set`` blobs: probes, labels, display images and masks."""
        o = self.render_options
        return store.encode_probe_set(
            self._display,
            indices=self.probes.indices,
            labels=self.probes.labels,
            class_names=self.class_names,
            masks=self.probes.masks,
            method=self.explainer.method.name,
            regression=self.explainer.head.num_classes is None,
            # Added to the contract: how the monitor renders, so readers start from the same.
            extra={
                "render": {
                    "clip_percentile": float(o["clip_percentile"]),
                    "smoothing": float(o["sigma"]),
                    "cmap": getattr(o["cmap"], "name", str(o["cmap"])),
                    "alpha": float(o["alpha"]),
                },
                # Reference lines of the dashboard's charts, per `saliency/<name>` number.
                "chance": dict(_CHANCE),
                "thresholds": self._alarm_thresholds(),
            },
        )

    def _alarm_thresholds(self):
        """``{number name: threshold}`` of the alarm's signals that are switched on."""
        a = self.alarm
        pairs = {
            "focus_lift": a.lift_threshold,
            "border_ratio": a.border_threshold,
            "object_reliance": a.reliance_threshold,
            "shortcut": 1.0,  # the alarm's own score: above 1.0 some signal is past its threshold
            "probe_skill": a.min_skill,
        }
        return {k: float(v) for k, v in pairs.items() if v is not None}

    def _captions(self, explanation, broken, flat):
        """One short caption per probe: number (0-based) and true label; the explained class
        and its probability (or the output); a mark for a broken or flat map."""
        regression = self.explainer.head.num_classes is None
        conf = explanation.confidences
        captions = []
        for i, c in enumerate(explanation.classes):
            first = f"#{i}"
            if self.probes.labels is not None:
                first += f" true {self._class_name(self.probes.labels[i])}"
            if regression:
                second = f"out {explanation.logits[i, 0]:.3g}"
            else:
                conf_text = "" if conf is None else f" {conf[i]:.2f}"
                second = f"pred {self._class_name(c)}{conf_text}"
            lines = [first, second]
            if broken[i]:
                lines.append("NON-FINITE MAP")
            elif flat[i]:
                lines.append("FLAT MAP")
            captions.append("\n".join(lines))
        return captions

    def _write_epoch(self, epoch, explanation, numbers, per_probe, message, broken):
        """Render, encode and write one epoch (runs on the background worker).

        The numbers go first, so a failure while rendering still leaves them logged; then the
        dashboard's data (the probe set at a fit's first logged step, the quantised maps), then
        the grid; the flush at the end hands everything to the operating system (and the disk)
        before the job counts as done.
        """
        epoch = self._step(epoch)  # the step this epoch is written at (see _step)
        w = self._writer
        try:
            for key, value in numbers.items():
                w.add_scalar("saliency/" + key[len("saliency_") :], value, epoch)
            for key, values in per_probe.items():
                finite = values[np.isfinite(values)]
                if finite.size:
                    w.add_histogram(f"saliency/{key}_per_probe", finite, epoch)
            if not self._info_written:
                w.add_text(INFO_TAG, self._probes_info(), epoch)
                blobs = self._probe_set_blobs()
                w.add_blob_sequence(PROBE_SET_TAG, blobs, epoch, store.PLUGIN_NAME)
                self._info_written = True
            if message is not None:
                w.add_text(ALARM_TAG, message, epoch)
            maps = explanation.maps
            flat = render.flat_maps(maps) & ~broken
            # One downsampling serves both the stored maps and the grid's tiles.
            small = store.downsample_maps(maps, GRID_TILE)
            regression = self.explainer.head.num_classes is None
            blobs = store.encode_maps(
                small,
                step=epoch,
                classes=explanation.classes,
                confidences=explanation.confidences,
                outputs=explanation.logits[:, 0] if regression else None,
                flat=flat,
                non_finite=broken,
                per_probe=per_probe,
                max_side=GRID_TILE,
            )
            w.add_blob_sequence(MAPS_TAG, blobs, epoch, store.PLUGIN_NAME)
            o = self.render_options
            overlays = render.heat_overlays(  # non-finite maps come out all zero
                self._backdrop,
                small,
                clip_percentile=o["clip_percentile"],
                sigma=o["sigma"] / self._grid_factor,
                cmap=o["cmap"],
                alpha=o["alpha"],
            )
            overlays = render.mark_tiles(overlays, flat, broken)
            grid = render.make_grid(
                self._grid_display,
                overlays,
                self._captions(explanation, broken, flat),
                max_width=self.max_grid_width,
                columns=GRID_COLUMNS,
                display_width=render.TENSORBOARD_CARD_WIDTH,
            )
            # As tf.summary.image writes it, but JPEG: a fifth of the PNG's bytes, 1/15 the time.
            w.add_blob_sequence(GRID_TAG, store.image_blobs(grid), epoch, "images")
            if self.save_arrays:
                self._save_arrays(epoch, explanation)
        finally:
            w.flush()

    def _save_arrays(self, epoch, explanation):
        extra = {
            "classes": explanation.classes,
            "logits": explanation.logits,
            "indices": self.probes.indices,
        }
        if explanation.confidences is not None:
            extra["confidences"] = explanation.confidences
        if self.probes.labels is not None:
            extra["labels"] = self.probes.labels
        arrays.save_epoch(self.log_dir, epoch, explanation.maps, **extra)

    def _wait_for_writes(self, timeout, where):
        """Wait (at most ``timeout`` s) until no write job runs; report the jobs' errors.

        Returns:
            False when a job is still running: the writer is stuck (a hung network file system),
            and waiting for it again would hold training up every epoch.
        """
        if self._worker is None:
            return True
        start = time.perf_counter()
        idle = self._worker.wait(timeout)
        self._wait_seconds.append(time.perf_counter() - start)
        self._report_write_errors()
        if not idle and not self._stalled:
            self.faults.record(
                "stalled",
                f"epoch {where}" if isinstance(where, int) else where,
                TimeoutError(
                    f"a write job has been running for over {timeout:g} s; images are skipped "
                    "until it finishes"
                ),
            )
        self._stalled = not idle
        return idle

    def _write_timeout(self, end=False):
        """How long the training thread may wait for the writer now.

        WRITE_TIMEOUT_SECONDS until a write stalls; after that, nothing for the rest of the fit
        (STALLED_END_SECONDS at its end), so one fit waits for a stuck disk at most once.
        """
        if "stalled" not in self.faults:
            return self.WRITE_TIMEOUT_SECONDS
        return min(self.STALLED_END_SECONDS, self.WRITE_TIMEOUT_SECONDS) if end else 0.0

    def _release_writer(self, timeout, where):
        """Close the event file and stop the worker thread, waiting ``timeout`` s at most.

        The file is closed by a job on the worker thread, after the writes queued before it, so
        this thread never blocks on a file held by a stuck write. A worker that does not finish
        in time is abandoned (its daemon thread keeps its job; nothing waits for it, not even
        interpreter exit). Afterwards no thread of ours refers to this callback, the model or
        the file, and the events directory is unlocked for the next writer.
        """
        worker, writer = self._worker, self._writer
        self._worker = self._writer = None
        try:
            if worker is None:
                return
            if writer is not None:
                worker.submit(writer.close, job_name=f"closing the event file at {where}")
            stopped = worker.shutdown(timeout)
            for name, err, tb in worker.take_errors():
                self.faults.record("write", name, err, tb)
            if not stopped and not self._stalled:
                self._stalled = True
                self.faults.record(
                    "stalled",
                    where,
                    TimeoutError(
                        f"writing has not finished after {timeout:g} s; the event file is left "
                        "to a background thread and closed if the disk comes back"
                    ),
                )
        finally:
            lock_file, self._lock_file = self._lock_file, None
            logdirs.unlock(lock_file)

    def _check_image_model(self):
        """Fail fast, with the right fix, for a model whose input is not an image (H, W, C)."""
        try:
            inputs = self.model.inputs
        except (AttributeError, ValueError):
            return  # a subclassed model not built yet: the bind checks it on the first call
        if not inputs or len(inputs) != 1 or len(inputs[0].shape) == 4:
            return  # several inputs: the bind explains what is supported
        shape = tuple(inputs[0].shape[1:])
        if len(shape) == 2:  # (H, W) grayscale without a channel axis
            fix = (
                f"Give the model a channel axis: keras.Input({(*shape, 1)}), followed by "
                f"keras.layers.Reshape({shape}) if its layers expect (H, W)."
            )
        else:
            fix = (
                "SaliencyMonitor explains image models; for a model on vectors or sequences use "
                "compute_attributions on its inputs instead."
            )
        raise ValueError(
            "Invalid value for argument `probe_data`: probes are images of shape "
            f"{self.probes.x.shape[1:]} but the model takes inputs of shape {shape}, not images "
            f"(H, W, C). {fix}"
        )

    def _report_write_errors(self):
        if self._worker is None:
            return
        for name, err, tb in self._worker.take_errors():
            self.faults.record("write", name, err, tb)

    def _release_before_raise(self, where):
        """Strict mode: the fault's error ends fit, and Keras then skips on_train_end."""
        if self._worker is not None:
            self._release_writer(self._write_timeout(end=True), where)

"""SaliencyMonitor: the Keras callback. Wiring only; the work lives in the modules below.

An epoch's flow, and where each step lives:

- ``__init__`` checks the arguments, draws the fixed probe set (``probes``) and prepares how the
  probes are shown (``epoch_log``: display images, names, captions).
- ``on_train_begin`` binds the model (``explain``: one compiled gradient per run), decides
  whether this process writes (``distribution``: the chief) and opens the events directory
  (``writing``: lock, step numbers, event file, background worker).
- ``on_epoch_end`` waits for the previous epoch's write job (``writing``: at most one epoch in
  flight), then on the training thread computes the maps (``explain``) and the numbers
  (``epoch_numbers``; they must be in ``logs`` before the next callback reads them: the alarm's
  forward passes on painted probes run on a worker thread beside the gradient and the numpy
  numbers, and the hook waits for them), feeds the shortcut alarm (``alarm``), and hands the
  write job to the background worker (``epoch_log``: render, encode and write the epoch's events).
- ``on_train_end`` waits for the last job, then closes the event file (``writing``).

Faults during training (non-finite maps, a failing disk, any exception while computing or writing)
go through ``faults``: one warning per kind and run, every one counted; ``strict=True`` raises.
"""

from __future__ import annotations

import copy
import os
import warnings

import keras

from keras_saliency_monitor.attribution import checks
from keras_saliency_monitor.attribution.checks import positive_int, real_number
from keras_saliency_monitor.attribution.explain import Explainer
from keras_saliency_monitor.attribution.sanity import CannotCopy, SanityCheck
from keras_saliency_monitor.drawing import render
from keras_saliency_monitor.monitor import probes
from keras_saliency_monitor.monitor.distribution import is_chief
from keras_saliency_monitor.monitor.epoch_log import GRID_TAG, INFO_TAG, EpochLog  # noqa: F401 - tags
from keras_saliency_monitor.monitor.epoch_numbers import EpochNumbers, non_finite
from keras_saliency_monitor.monitor.faults import Faults
from keras_saliency_monitor.monitor.writing import Writing
from keras_saliency_monitor.signals.alarm import ShortcutAlarm
from keras_saliency_monitor.storage import logdirs
from keras_saliency_monitor.storage.store import ALARM_TAG  # noqa: F401 - the tags, importable from here


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
            ``log_dir`` as ``keras.callbacks.TensorBoard`` to see both in one run. A leading
            ``~`` is expanded and a relative path made absolute here, so an ``os.chdir`` later
            does not move the run.
        probe_data: images (N, H, W, C), ``(x, y)`` with sparse, one-hot or string labels
            (string labels need ``class_names``; multi-hot rows, with several classes or none
            per image, are not class labels: a warning, and probes are drawn as for x alone), a
            list of same-sized images, a ``tf.data.Dataset`` of x or (x, y) (batched or not),
            or a ``keras.utils.PyDataset``; datasets are read in one streaming pass (at most
            4,096 examples) that keeps only the drawn probes.
            Images are given exactly as the model sees them (any value range).
        num_probes: how many probes to draw, once, stratified by class when labels exist.
            Defaults to 16.
        method: "vanilla" (default), "gradient_x_input", "smoothgrad", "smoothgrad_squared" or
            "vargrad" (options ``samples``, ``noise``, ``seed``), "integrated_gradients"
            (``steps``, ``baseline``), "gradcam" or "gradcam_plus_plus" (``layer``); options are
            passed as keyword arguments (see ``methods.METHODS``).
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
            probe, the first 16 probes in two turns of 8, pooled over the last 2 logged epochs);
            the alarm fires below ``alarm_reliance_threshold``.
        every_n_epochs: log epochs ``0, n, 2n, ...``. Defaults to 1. On the epochs in
            between, ``logs`` repeat the last logged epoch's numbers, so that callbacks see a
            value at every epoch as Keras's convention has it (``EarlyStopping`` warns about a
            missing one); a repeated value is no improvement, so give ``EarlyStopping`` on a
            ``saliency_`` number a ``patience`` of at least ``every_n_epochs``.
        seed: seed of the probe draw: an int >= 0, or None for a fresh draw. Defaults to 0.
        output: index or name of the output to explain, for multi-output models.
        class_names: optional sequence of class names, in class order, for captions (and to map
            string labels to class ids); one per class of the model (a different count warns).
            Control characters in a name (a newline) are shown escaped in captions.
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
            looking at the edges, used only where the model cannot be asked (a regression
            output); for classifiers it is quoted as the maps' evidence (clean models range
            0.03-1.32 by architecture, issue 22). None switches this signal off. Defaults to 1.0.
        alarm_reliance_threshold: with masks, the object reliance (``saliency_object_reliance``:
            how much painting over each probe's object lowers the model's confidence, beyond
            painting over a patch of the same shape elsewhere; 0 = chance, about 1 = the
            prediction falls to chance without the object) below which the alarm counts an
            epoch as not resting on the object. A number in (0, 1), or None to switch this
            signal off. Defaults to 0.25.
        alarm_intervention_threshold: without masks, the share of the model's confidence above
            chance that painting the probes' outer band (``saliency_band_lost``), or the place
            their maps agree on (``saliency_hot_lost``), must take beyond a same-area control
            painted elsewhere (``saliency_band_chance``, ``saliency_hot_chance``: the chance
            level, measured on the run) for the alarm to count an epoch. These forward passes
            (6 for each of the first 8 probes) run once the model has learned its training
            data. None switches both off. Defaults to 0.3 (set on the TUNE seeds of
            ``benchmarks/shortcuts.py``; see ``alarm``).
        alarm_patience: the alarm warns once when some signal has been past its threshold for
            this many consecutive counted epochs after ``alarm_warmup`` logged ones. An epoch
            counts once the model has learned its training data: training skill from Keras's
            ``logs`` (``saliency_train_skill``, from the accuracy or a cross-entropy loss;
            without them the probes' skill) >= 0.5. With labels the alarm also watches the gap:
            training data fitted (skill >= 0.8) while the probes are predicted about as right
            as chance. Defaults to 2.
        alarm_warmup: logged epochs ignored by the alarm at the start of a run. Defaults to 1.
        stop_on_alarm: also stop training (``model.stop_training = True``) when the alarm fires.
            ``saliency_shortcut`` in ``logs`` is the alarm's state (0.0, then 1.0 from the epoch
            it fired on); ``EarlyStopping`` stops when a number stops improving, so it cannot
            stop on this flag: use ``stop_on_alarm``. Defaults to False.
        save_arrays: also save each logged epoch's raw maps (float32, with classes, logits and
            labels) to ``<log_dir>/saliency/arrays/epoch_NNNN.npz`` for notebooks; load them with
            ``keras_saliency_monitor.storage.arrays.load_arrays(log_dir)``. Defaults to False.
        background: render, encode and write on a background thread. Defaults to True.
        durable: return from ``on_epoch_end`` only once that epoch's events are flushed and
            synced to disk, so a hard kill (SIGKILL, OOM killer, preemption) after an epoch's end
            loses nothing of it; costs the render and write time on the training thread. By
            default a logged epoch's write overlaps the next epoch's training and is waited for
            at the next epoch end, so a hard kill loses at most the most recent logged epoch.
            Defaults to False.
        sanity_blocks: the model-randomisation sanity check (Adebayo et al. 2018, see
            ``keras_saliency_monitor.sanity_check``), run once per fit, at
            the first logged epoch at which the model has learned something from its training
            data (the alarm's gate, ``ShortcutAlarm.learned``: the training skill from Keras's
            ``logs`` >= 0.5, else ``saliency_probe_skill``; at once for regression),
            the top ``sanity_blocks`` layer blocks of a copy of the model are re-initialised one
            after another and the probes' maps compared with the trained ones; logged as
            ``saliency_sanity_rank_correlation`` and ``saliency_sanity_ssim`` (all blocks
            random) and ``saliency_sanity_*_top{k}`` (the curve), with a warning when the maps
            survive randomisation; every epoch's ``logs`` carry these keys, NaN but at the epoch
            the check ran (History's lists line up; TensorBoard gets the one point). Costs one
            saliency pass per block and keeps a copy of the weights. 0 or None switches it off.
            Defaults to 4.
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
        alarm_message: the alarm's text once it fired in the current run, else None (it is
            also warned as a ``UserWarning`` and logged as text at ``saliency/alarm``).
        alarm: the ``ShortcutAlarm``; after ``fit``, ``alarm.fired_at`` is the 0-based epoch it
            fired at (None if it did not), ``alarm.verdict()`` the run's verdict in words (its
            text, or why there was none: too few counted epochs, or no signal past its
            threshold, with the last scores), ``alarm.counted`` the epochs it counted.

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
        alarm_intervention_threshold=0.3,
        alarm_patience=2,
        alarm_warmup=1,
        stop_on_alarm=False,
        save_arrays=False,
        background=True,
        durable=False,
        strict=False,
        sanity_blocks=4,
        **method_options,
    ):
        super().__init__()
        if isinstance(log_dir, (str, os.PathLike)):
            log_dir = os.path.expanduser(log_dir)  # "~/runs/exp1" as a shell would read it
        if is_chief():
            self.log_dir = logdirs.check_log_dir(log_dir)
        elif isinstance(log_dir, (str, os.PathLike)):
            self.log_dir = os.path.abspath(log_dir)  # never touched by a non-writing process
        else:
            logdirs.check_log_dir(log_dir)  # raises the TypeError
        self.every_n_epochs = positive_int("every_n_epochs", every_n_epochs)
        self.explainer = Explainer(method, target, output, batch_size, **method_options)
        self._sanity = None  # the once-per-fit model-randomisation check, when switched on
        if sanity_blocks:
            blocks = positive_int("sanity_blocks", sanity_blocks)
            self._sanity = SanityCheck(
                method, target=target, output=output, batch_size=batch_size,
                max_blocks=blocks, **method_options,
            )  # fmt: skip
        self._sanity_due = False  # set at each fit's start, cleared once the check ran
        self._sanity_keys = {}  # NaN for each of the check's numbers (see _sanity_placeholders)
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
            intervention_threshold=alarm_intervention_threshold,
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
        # Renders the probes: a bad display_fn, cmap or clip_percentile fails now, not at epoch 0.
        self._log = EpochLog(
            self.probes,
            self.explainer,
            self.alarm,
            None if self.class_names is None else list(map(render.one_line, self.class_names)),
            self.render_options,
            self.max_grid_width,
            self.log_dir if self.save_arrays else None,
        )
        self._measure = EpochNumbers(
            self.probes, self.explainer, self.alarm, self.pointing_tolerance
        )
        self._writing = Writing()  # events directory, step numbers, event file, worker
        self._chief = True  # whether this process writes (decided again at each fit's start)
        self.history = {}  # step (the epoch, in a first fit) -> the numbers logged at it
        self._last_numbers = {}  # this fit's last logged numbers, repeated on skipped epochs
        self.faults = Faults(self.strict, self._release_before_raise)  # kind -> [where, ...]

    # ---------------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None):
        self._check_image_model()
        # One probe is the forward pass that models without a graph (subclassed, Sequential
        # without keras.Input) are measured with.
        # The bind also runs a callable target once, so a broken one fails here, not in epoch 0.
        self.explainer.bind(self.model, self.probes.x.shape[1:], sample=self.probes.x[:1])
        self._check_labels()
        checks.class_names_count(self.class_names, self.explainer.head)
        self._chief = is_chief()
        # A fit that ended in an exception never reached on_train_end: release what it left.
        self._writing.release(self._write_timeout(end=True), "train begin")
        self.faults = Faults(self.strict, self._release_before_raise)
        # Start-up reads wait WRITE_TIMEOUT_SECONDS at most; `params` identifies this fit (a
        # lock left by an interrupted fit on this thread is taken over, not refused).
        log_dir = self.log_dir if self._chief else None
        self._writing.open(
            self.faults, log_dir, self.background, self._write_timeout(), self.params
        )
        self._measure.reset()
        self._last_numbers = {}
        self._sanity_due = self._sanity is not None
        self._sanity_keys = self._sanity_placeholders()
        self._log.reset()
        self.alarm.reset()
        self.alarm_message = None

    def on_epoch_begin(self, epoch, logs=None):
        self._writing.record_errors()  # strict mode: a failed write stops fit at the next hook

    def on_epoch_end(self, epoch, logs=None):
        # The previous epoch's write had a whole epoch to finish: wait for what is left of it
        # (usually nothing) so that at most one epoch's events are ever in flight.
        idle = self._writing.wait(self._write_timeout(), epoch)
        step = self._writing.step(epoch)
        if epoch % self.every_n_epochs:
            if logs is not None:
                logs.update(self._last_numbers)  # a value at every epoch (see every_n_epochs)
            return
        self._writing.last_step = step  # consumed even if writing fails: a step is never reused
        try:
            self._measure.start()  # object reliance's forward pass, beside the gradient
            explanation = self.explainer.explain(self.probes.x, self.probes.labels)
            numbers, per_probe = self._measure(explanation, logs)
            numbers.update({**self._sanity_keys, **self._check_sanity(epoch, explanation, numbers)})
            message = self._check_alarm(epoch, numbers, per_probe)
            self.history[step] = self._last_numbers = numbers
            if logs is not None:
                logs.update(numbers)
        except Exception as err:  # noqa: BLE001 - a monitor never kills the training it watches
            self._measure.settle()  # no forward pass of ours goes on beside the training
            self.faults.record("compute", f"epoch {epoch}", err)
            return
        except BaseException:  # an interrupt: it goes on, once our forward passes are over
            self._measure.settle()
            raise
        broken = non_finite(explanation)
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
        job = (epoch, explanation, numbers, per_probe, message, broken)  # see _write_epoch
        try:
            self._writing.worker.submit(self._write_epoch, *job, job_name=f"writing epoch {epoch}")
        except Exception as err:  # noqa: BLE001
            self.faults.record("write", f"epoch {epoch}", err)
            return
        if self.durable:
            self._writing.wait(self._write_timeout(), epoch)

    def on_train_end(self, logs=None):
        # At most WRITE_TIMEOUT_SECONDS in all (STALLED_END_SECONDS once a write has stalled).
        self._writing.finish(self._write_timeout(end=True), "train end")

    def __deepcopy__(self, memo):
        """A copy with the same arguments, probes and history, for a fit of its own (keras-tuner
        copies callbacks per trial): not bound to a model, and holding no lock, event file or
        writer thread of this monitor's."""
        memo[id(self._model)] = None
        memo[id(self._writing)] = Writing()
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))  # explainer: unbound (explain)
        return new

    # ---------------------------------------------------------------- helpers
    def _write_epoch(self, epoch, explanation, numbers, per_probe, message, broken):
        """The write job of one logged epoch (runs on the background worker; see epoch_log)."""
        w = self._writing
        self._log.write(w.writer, w.step(epoch), explanation, numbers, per_probe, message, broken)

    def _check_alarm(self, epoch, numbers, per_probe):
        """Feed the shortcut signals to the alarm; warn (and stop, if asked) when it fires."""
        message = self.alarm.update(
            epoch,
            numbers,
            per_probe,
            self._log.label_names(),
            self.probes.indices,
            self._measure.place,
        )
        numbers["saliency_shortcut"] = self.alarm.state(epoch)  # 1.0 from the alarm's epoch on
        if message is None:
            return None
        self.alarm_message = message
        warnings.warn(message, UserWarning, stacklevel=3)
        if self.stop_on_alarm and self.model is not None:
            self.model.stop_training = True
        return message

    def _sanity_placeholders(self):
        """NaN for each ``saliency_sanity_*`` number of this fit's check, logged at every epoch
        but the one it runs at: History's lists then line up with the epochs (a list of one
        value beside lists of N broke ``pandas.DataFrame(history.history)``), and CSVLogger,
        which takes its columns from the first epoch, keeps the check's row. TensorBoard gets
        only the measured point. {} when the model's blocks cannot be read (the check reports
        why when it runs)."""
        if self._sanity is None:
            return {}
        try:
            return dict.fromkeys(self._sanity.number_names(self.model), float("nan"))
        except Exception:  # noqa: BLE001 - the check itself records the fault when it runs
            return {}

    def _check_sanity(self, epoch, explanation, numbers):
        """The sanity check's numbers at a fit's first logged epoch at which the model has learned
        something (the alarm's gate; {} otherwise, or when it fails: a "sanity" fault,
        and the epoch goes on). An untrained model's maps are as weight-independent as a random
        one's: checked at epoch 0 of the test suite's 1-epoch fits, vanilla maps "survived" at
        rank correlation 0.57, a false warning."""
        # The alarm's gate: training skill from Keras's logs (the probes' skill without it; NaN,
        # a regression, does not wait). A model that learned a shortcut, shown artefact-free
        # probes, predicts them at chance, yet its maps are the trained model's to check.
        if not self._sanity_due or not self.alarm.learned(numbers):
            return {}
        self._sanity_due = False
        p = self.probes
        try:
            result = self._sanity.run(
                self.model, p.x, explanation.maps, explanation.classes, p.labels
            )
        except CannotCopy as err:  # not a fault of this run: the model's kind; said once
            self._sanity = None
            warnings.warn(f"SaliencyMonitor: sanity check switched off. {err}", stacklevel=3)
            return {}
        except Exception as err:  # noqa: BLE001 - a monitor never kills the training it watches
            self.faults.record("sanity", f"epoch {epoch}", err)
            return {}
        if result.message is not None:
            warnings.warn(result.message, UserWarning, stacklevel=3)
        return result.numbers()

    def _write_timeout(self, end=False):
        """How long the training thread may wait for the writer now.

        WRITE_TIMEOUT_SECONDS until a write stalls; after that, nothing for the rest of the fit
        (STALLED_END_SECONDS at its end), so one fit waits for a stuck disk at most once.
        """
        if "stalled" not in self.faults:
            return self.WRITE_TIMEOUT_SECONDS
        return min(self.STALLED_END_SECONDS, self.WRITE_TIMEOUT_SECONDS) if end else 0.0

    def _release_before_raise(self, where):
        """Strict mode: the fault's error ends fit, and Keras then skips on_train_end."""
        self._writing.release(self._write_timeout(end=True), where)

    def _check_labels(self):
        labels, n = self.probes.labels, self.explainer.head.num_classes
        if labels is not None and n is not None and (labels.max() >= n or labels.min() < 0):
            raise ValueError(
                f"Invalid value for argument `probe_data`: labels range over "
                f"[{labels.min()}, {labels.max()}] but the model has {n} classes "
                f"({self.explainer.head.description}). Pass labels of this model's classes, "
                'or use target="predicted".'
            )

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

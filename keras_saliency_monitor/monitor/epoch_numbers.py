"""The numbers of a logged epoch, computed from its maps on the training thread.

They must be in ``logs`` before the next callback (``EarlyStopping``, ``CSVLogger``) reads them.
The math is in :mod:`metrics`; what depends only on the fixed probes is computed once.

The alarm's forward passes on painted probes run on one worker thread beside the training
thread's own work, which then waits for them: object reliance's (fixed images) beside the epoch's
gradient (:meth:`EpochNumbers.start`), the interventions' (painted from the maps) beside the numpy
numbers. A row's logits do not depend on the other rows of its call, so the numbers are those of
one call made in turn; ``on_epoch_end`` returns only once every pass is done.
"""

from __future__ import annotations

import os
import threading
from concurrent import futures

import numpy as np

from keras_saliency_monitor.signals import (
    interventions,
    learning,
    metrics,
    place,
    reliance,
    stability,
)

__all__ = ["EpochNumbers", "non_finite"]

# Object reliance asks at most this many probes (2 forward passes each): the suite that set its
# threshold (benchmarks/shortcuts.py) used 16; at 32 probes of 64x64, all of them cost 0.76x the
# gradient floor of benchmarks/overhead.py, the first 16 half that.
RELIANCE_PROBES = 16
# Those probes take turns in this many groups (interventions.rotation and Window, as the
# interventions'): each logged epoch paints one group (16 images, not 32) and the logged
# saliency_object_reliance pools every probe's latest values from the last RELIANCE_WINDOW
# logged epochs (the first logged epoch of a run rests on its own group only). Saves: 16
# forward images an epoch, about 0.18x the gradient floor with masks at 32 probes 64x64
# (benchmarks/overhead.py's model; docs/guides/performance.md, Round 3, measures it with the
# worker thread: 2.24 -> 1.98 x the floor). Costs: half of each value is an epoch old.
# Checked on issue 22's TUNE seeds 0-1 (benchmarks/shortcuts.py, 26 runs x 2 masks monitors,
# against main): the same alarms at the same epochs naming the same signals; the lowest
# reliance of a control at an epoch past the gate 0.66 -> 0.61 (threshold 0.25), lower values
# only before the gate opens.
RELIANCE_WINDOW = 2


# One worker thread per process runs the forward passes (concurrent.futures' thread, not ours).
# Measured on benchmarks/overhead.py's model, 32 probes 64x64, 2 CPU cores, median on_epoch_end
# over the gradient floor in alternated pairs: 1.75 -> 1.65 without masks, 2.20 -> 1.90 with.
# Sending the band and centre sets before the gradient as well made no difference beyond noise.
_worker_lock = threading.Lock()
_worker = None  # (pid, executor): a forked child makes its own (its copy has no thread)


def _forward_worker() -> futures.ThreadPoolExecutor:
    global _worker
    with _worker_lock:
        if _worker is None or _worker[0] != os.getpid():
            pool = futures.ThreadPoolExecutor(1, thread_name_prefix="saliency-forward")
            _worker = (os.getpid(), pool)
        return _worker[1]


def non_finite(explanation) -> np.ndarray:
    """(N,) bool: the probes whose map or logits hold a NaN or an inf."""
    return ~(
        np.isfinite(explanation.maps).all(axis=(1, 2)) & np.isfinite(explanation.logits).all(axis=1)
    )


class EpochNumbers:
    """Scalars for ``logs`` (prefix ``saliency_``) and the per-probe values behind them.

    Built from the monitor's probe set, ``Explainer`` (bound before the first call), alarm (its
    score is logged as ``saliency_shortcut``) and ``pointing_tolerance``. Call :meth:`start`
    before the epoch's gradient, then the instance with the epoch's explanation.
    """

    def __init__(self, probes, explainer, alarm, pointing_tolerance):
        self.probes, self.explainer, self.alarm = probes, explainer, alarm
        self.pointing_tolerance = pointing_tolerance
        self._previous_ranked = None  # the last epoch's ranked maps, for stability
        self._mask_contrast = None  # metrics.mask_contrast of the probes' masks, when first needed
        self._reliance_inputs = None  # per reliance group: its 2 painted sets in one kept batch
        self._reliance_window = None  # interventions.Window of object reliance's turns, per run
        self._relied_group = None  # the probes of the reliance pass on its way
        self._offsets = None  # interventions.control_offsets: the controls' places, per monitor
        self._prepared = None  # interventions.prepare of the asked probes, per monitor
        self._painted_images = None  # the interventions' painted probes, kept (per monitor)
        self._window = None  # interventions.Window: which probes take their turn, per run
        self._relied = self._painted = None  # this epoch's forward passes (Futures)
        self._overlap = False  # start() sends only once this run's functions are traced
        self.place = None  # (H, W) bool: where the last epoch's maps agreed (for the alarm)

    def __getstate__(self):
        """Copies (keras-tuner deep-copies callbacks) hold no forward pass of this one's."""
        return {**self.__dict__, "_relied": None, "_painted": None}

    def reset(self):
        """A new run: stability, the interventions' and object reliance's windows start over."""
        self.settle()
        self._previous_ranked = None
        self._window = self._reliance_window = None
        # A new fit may trace the gradient again at its first epoch: that epoch's forward
        # passes wait for it (two threads tracing one model's layers at once is not safe).
        self._overlap = False

    def start(self):
        """Before the epoch's gradient: send object reliance's forward pass (its painted probes
        are fixed) to the worker, to run while the gradient is computed. The call with the
        explanation collects it; without ``start`` it sends it itself."""
        self.settle()
        if self._overlap:
            self._relied = self._send_reliance()

    def settle(self):
        """Wait for any forward pass still on the worker (an epoch that failed part way); its
        result is dropped. Nothing of the monitor's then runs beside the training."""
        futures.wait([f for f in (self._relied, self._painted) if f is not None])
        self._relied = self._painted = None

    def _send_reliance(self):
        """Object reliance's forward pass sent to the worker: the 2 painted sets of this epoch's
        group of the first RELIANCE_PROBES probes (their turns: RELIANCE_WINDOW); each group's
        batch is built once per monitor. None unless at least two probes have masks."""
        masks = self.probes.masks
        if masks is None or len(masks) < 2:
            return None
        n = min(len(masks), RELIANCE_PROBES)
        if self._reliance_window is None:
            self._reliance_window = interventions.Window(n, RELIANCE_WINDOW, reliance.SETS)
        window = self._reliance_window
        if self._reliance_inputs is None:
            # Painted from all n probes at once: each probe's control is another probe's mask
            # whichever group it is in, so its values do not depend on the turns.
            painted = reliance.reliance_inputs(self.probes.x[:n], masks[:n])
            groups = (interventions.rotation(n, t, window.window) for t in range(window.window))
            self._reliance_inputs = [np.concatenate([s[g] for s in painted]) for g in groups]
        self._relied_group = window.asked()
        batch = self._reliance_inputs[window.turn % window.window]
        return _forward_worker().submit(self.explainer.logits, batch)

    def __call__(self, explanation, logs=None):
        """The numbers of one logged epoch; ``logs`` are Keras's (the training skill)."""
        if self._relied is None:  # not started: reliance's pass runs beside the numbers
            self._relied = self._send_reliance()
        try:
            out = self._numbers(explanation, logs)
        finally:
            self.settle()  # after an error too: nothing left running beside the training
        self._overlap = True
        return out

    def _numbers(self, explanation, logs):
        maps = explanation.maps
        head, labels, logits = self.explainer.head, self.probes.labels, explanation.logits
        # The model's skills first: they decide whether the interventions ask, and the probes
        # they paint from this epoch's maps are sent to the worker before the numbers below.
        run = {
            "probe_skill": learning.probe_skill(logits, labels, head.kind),
            "train_skill": learning.training_skill(
                logs, head.num_classes, head.kind, _crossentropy(self.explainer.model)
            ),
        }
        # The metrics below compute in float64: the maps are converted once, not by each of them
        # (the same values, so the same numbers).
        wide = maps.astype(np.float64)
        ask = (
            head.num_classes is not None
            and self.alarm.intervention_threshold is not None
            and self.alarm.learned(run)
            and bool(np.isfinite(maps).all())
        )
        self.place = None
        first = slice(0, min(len(maps), interventions.MAX_PROBES))  # the probes that take turns
        if not ask:
            # An epoch the gate holds back empties the window: the next asked epoch pools only
            # what is measured from then on, not values from before the pause.
            self._window = None
        else:
            # The interventions' sets of this epoch's group of the first MAX_PROBES probes,
            # which take turns over interventions.WINDOW epochs; sent now, to run beside the
            # numbers below (painted into a kept array: the worker is done before the next).
            if self._prepared is None:
                self._offsets = interventions.control_offsets(first.stop, *maps.shape[1:])
                self._prepared = interventions.prepare(self.probes.x[first])
            if self._window is None:
                self._window = interventions.Window(first.stop)
            asked = self._window.asked()
            rows = len(interventions.INTERVENTIONS) * len(asked)
            if self._painted_images is None or len(self._painted_images) != rows:
                self._painted_images = np.empty((rows,) + self.probes.x.shape[1:], np.float32)
            painted = interventions.painted_probes(
                self._prepared.x,
                wide[first],
                self._offsets,
                self._prepared,
                asked,
                out=self._painted_images,
            )
            self.place = painted.hot
            self._painted = _forward_worker().submit(self.explainer.logits, painted.images)
        # Each epoch's maps are ranked once; the next epoch's stability reuses these ranks, and
        # the concentration reads the ranking's sorted values (one sort of each map, not two).
        ranked = stability.rank_maps(maps)
        per_probe = {"concentration": place.concentration(maps, ranked.ascending)}
        if self._previous_ranked is not None:
            per_probe["stability"] = stability.rank_correlation_of(self._previous_ranked, ranked)
        self._previous_ranked = ranked._replace(ascending=None)  # the ranks are enough
        masks = self.probes.masks
        if masks is not None:
            per_probe["focus"] = metrics.focus(wide, masks)
            per_probe["pointing_game"] = metrics.pointing_game(
                wide, masks, tolerance=self.pointing_tolerance
            )
        # Shortcut indicators (mask-free ones always; the lift against the other probes' masks
        # with masks). Run-level values are not plain means of the per-probe ones.
        if masks is not None and self._mask_contrast is None:
            self._mask_contrast = metrics.mask_contrast(masks)  # fixed probes: once per monitor
        shortcut, indicators = place.shortcut_indicators(wide, masks, self._mask_contrast)
        per_probe.update(indicators)
        run = {**shortcut, **run}
        p, _, chance = learning.probe_chance_p(logits, labels, head.kind)
        if np.isfinite(p):  # classes and labels: the gap between training data and probes
            run["probe_chance_p"], run["probe_chance"] = p, chance
            right = learning.predicted_classes(logits) == labels
            per_probe["probe_accuracy"] = right.astype(np.float64)
        if self._relied is not None:  # object reliance: this epoch's group, pooled with the last
            # Neither a closed gate nor non-finite maps empties this window (the interventions'
            # is emptied): reliance reads no map and is measured at every logged epoch, so the
            # other group was asked one logged epoch earlier, with no pause to pool across.
            relied, window = self._relied_group, self._reliance_window
            lost, per = window.pool(
                relied,
                logits[relied],
                self._relied.result(),
                head.kind,
                None if labels is None else labels[relied],
            )
            # lost(object) - lost(control), each the ratio of the sums, as object_reliance
            run["object_reliance"] = lost["object"] - lost["control"]
            per_probe["object_reliance"] = np.full(len(maps), np.nan)
            per_probe["object_reliance"][: window.n] = per["object"] - per["control"]
        if ask:
            numbers, by_probe = self._window.add(
                asked,
                logits[first][asked],
                self._painted.result(),
                head.kind,
                None if labels is None else labels[first][asked],
            )
            run.update(numbers)
            run["band_excess"] = run["band_lost"] - run["band_chance"]
            run["hot_excess"] = run["hot_lost"] - run["hot_chance"]
            for key, values in by_probe.items():  # NaN for the probes not in the window
                per_probe[key] = np.full(len(maps), np.nan)
                per_probe[key][first] = values
        # Not measured (before the model has learned; no accuracy or cross-entropy in logs):
        # NaN, so that every logged epoch carries the same keys (CSVLogger takes its columns from
        # the first epoch; History's lists line up by index), as saliency_stability does.
        for key in _INTERVENTION_KEYS:
            run.setdefault(key, float("nan"))
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
        # The alarm's state (0.0, 1.0 once it fired), set by the callback after the alarm saw
        # this epoch; a key from the start, so a callback reading logs finds it every epoch.
        numbers["saliency_shortcut"] = 0.0
        # A run's first logged epoch has no stability yet: NaN, so that every logged epoch
        # carries the same keys (CSVLogger takes its columns from the first; History's lists
        # then line up by index), as Keras's own callbacks do.
        numbers.setdefault("saliency_stability", float("nan"))
        return numbers, per_probe


# The intervention numbers, measured only once the model has learned (NaN before).
_INTERVENTION_KEYS = (
    "band_lost",
    "band_chance",
    "band_excess",
    "hot_lost",
    "hot_chance",
    "hot_excess",
    "faithfulness",
)


def _crossentropy(model) -> bool:
    """Whether the model's compiled loss is a cross-entropy (its chance level is log K)."""
    loss = getattr(model, "loss", None)
    names = loss if isinstance(loss, (list, tuple)) else [loss]
    if len(names) != 1 or names[0] is None:
        return False
    one = names[0]
    name = one if isinstance(one, str) else getattr(one, "name", None) or type(one).__name__
    name = getattr(one, "__name__", name) if callable(one) and not isinstance(one, str) else name
    return "crossentropy" in str(name).lower().replace("_", "")

"""The numbers of a logged epoch, computed from its maps on the training thread.

They must be in ``logs`` before the next callback (``EarlyStopping``, ``CSVLogger``) reads them.
The math is in :mod:`metrics`; what depends only on the fixed probes is computed once.
"""

from __future__ import annotations

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


def non_finite(explanation) -> np.ndarray:
    """(N,) bool: the probes whose map or logits hold a NaN or an inf."""
    return ~(
        np.isfinite(explanation.maps).all(axis=(1, 2)) & np.isfinite(explanation.logits).all(axis=1)
    )


class EpochNumbers:
    """Scalars for ``logs`` (prefix ``saliency_``) and the per-probe values behind them.

    Built from the monitor's probe set, ``Explainer`` (bound before the first call), alarm (its
    score is logged as ``saliency_shortcut``) and ``pointing_tolerance``.
    """

    def __init__(self, probes, explainer, alarm, pointing_tolerance):
        self.probes, self.explainer, self.alarm = probes, explainer, alarm
        self.pointing_tolerance = pointing_tolerance
        self._previous_ranked = None  # the last epoch's ranked maps, for stability
        self._mask_contrast = None  # metrics.mask_contrast of the probes' masks, when first needed
        self._reliance_inputs = None  # reliance.reliance_inputs of the probes, when first needed
        self._batch = None  # the reliance inputs, then room for the painted probes (per monitor)
        self._offsets = None  # interventions.control_offsets: the controls' places, per monitor
        self._prepared = None  # interventions.prepare of the asked probes, per monitor
        self._window = None  # interventions.Window: which probes take their turn, per run
        self.place = None  # (H, W) bool: where the last epoch's maps agreed (for the alarm)

    def reset(self):
        """A new run: stability and the interventions' window start over."""
        self._previous_ranked = None
        self._window = None

    def __call__(self, explanation, logs=None):
        """The numbers of one logged epoch; ``logs`` are Keras's (the training skill)."""
        maps = explanation.maps
        # Each epoch's maps are ranked once; the next epoch's stability reuses these ranks, and
        # the concentration reads the ranking's sorted values (one sort of each map, not two).
        ranked = stability.rank_maps(maps)
        per_probe = {"concentration": place.concentration(maps, ranked.ascending)}
        if self._previous_ranked is not None:
            per_probe["stability"] = stability.rank_correlation_of(self._previous_ranked, ranked)
        self._previous_ranked = ranked._replace(ascending=None)  # the ranks are enough
        # The metrics below compute in float64: the maps are converted once, not by each of them
        # (the same values, so the same numbers).
        wide = maps.astype(np.float64)
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
        run, indicators = place.shortcut_indicators(wide, masks, self._mask_contrast)
        per_probe.update(indicators)
        head, labels, logits = self.explainer.head, self.probes.labels, explanation.logits
        run["probe_skill"] = learning.probe_skill(logits, labels, head.kind)
        run["train_skill"] = learning.training_skill(
            logs, head.num_classes, head.kind, _crossentropy(self.explainer.model)
        )
        p, _, chance = learning.probe_chance_p(logits, labels, head.kind)
        if np.isfinite(p):  # classes and labels: the gap between training data and probes
            run["probe_chance_p"], run["probe_chance"] = p, chance
            right = learning.predicted_classes(logits) == labels
            per_probe["probe_accuracy"] = right.astype(np.float64)
        # Forward passes on painted probes, all in one batched call: the interventions (6 sets
        # of one turn of the first interventions.MAX_PROBES probes, which take turns over
        # interventions.WINDOW epochs, once the model has learned something: before, the alarm
        # counts nothing) and, with masks, object reliance (2 sets of N, fixed, so built once
        # per monitor).
        batch = None  # the images of that one call
        relied = slice(0, min(len(maps), RELIANCE_PROBES))  # the first probes, fixed
        if masks is not None and len(masks) >= 2:
            if self._reliance_inputs is None:
                painted = reliance.reliance_inputs(self.probes.x[relied], masks[relied])
                self._reliance_inputs = np.concatenate(painted)
            batch = self._reliance_inputs
        ask = (
            head.num_classes is not None
            and self.alarm.intervention_threshold is not None
            and self.alarm.learned(run)
            and ranked.finite.all()
        )
        self.place = None
        first = slice(0, min(len(maps), interventions.MAX_PROBES))  # the probes that take turns
        if not ask:
            # An epoch the gate holds back empties the window: the next asked epoch pools only
            # what is measured from then on, not values from before the pause.
            self._window = None
        else:
            if self._offsets is None:
                self._offsets = interventions.control_offsets(first.stop, *maps.shape[1:])
                self._prepared = interventions.prepare(self.probes.x[first])
            if self._window is None:
                self._window = interventions.Window(first.stop)
            asked = self._window.asked()
            tail = None
            if batch is not None:
                # The probes are painted straight into a batch that keeps the reliance inputs
                # in front, not concatenated onto them every epoch (the same images in the same
                # order, so the same chunks and logits; 0.4 ms of 56 images 64x64 saved).
                n2, rows = len(batch), len(interventions.INTERVENTIONS) * len(asked)
                if self._batch is None or self._batch.shape[0] != n2 + rows:
                    self._batch = np.empty((n2 + rows,) + batch.shape[1:], np.float32)
                    self._batch[:n2] = batch
                tail, batch = self._batch[n2:], self._batch
            painted = interventions.painted_probes(
                self._prepared.x, wide[first], self._offsets, self._prepared, asked, out=tail
            )
            self.place = painted.hot
            batch = painted.images if batch is None else batch
        if batch is not None:
            out = self.explainer.logits(batch)
            if masks is not None and len(masks) >= 2:
                n2 = len(self._reliance_inputs)
                without, out = np.split(out[:n2], 2), out[n2:]
                run["object_reliance"], relied_values = reliance.object_reliance(
                    logits[relied],
                    *without,
                    kind=head.kind,
                    labels=None if labels is None else labels[relied],
                )
                per_probe["object_reliance"] = np.full(len(maps), np.nan)
                per_probe["object_reliance"][relied] = relied_values
            if ask:
                numbers, by_probe = self._window.add(
                    asked,
                    logits[first][asked],
                    out,
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

"""The numbers of a logged epoch, computed from its maps on the training thread.

They must be in ``logs`` before the next callback (``EarlyStopping``, ``CSVLogger``) reads them.
The math is in :mod:`metrics`; what depends only on the fixed probes is computed once.
"""

from __future__ import annotations

import numpy as np

from keras_saliency_monitor import metrics

__all__ = ["EpochNumbers", "non_finite"]


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
        self._reliance_inputs = None  # metrics.reliance_inputs of the probes, when first needed

    def reset(self):
        """A new run: stability starts over."""
        self._previous_ranked = None

    def __call__(self, explanation):
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
        # A run's first logged epoch has no stability yet: NaN, so that every logged epoch
        # carries the same keys (CSVLogger takes its columns from the first; History's lists
        # then line up by index), as Keras's own callbacks do.
        numbers.setdefault("saliency_stability", float("nan"))
        return numbers, per_probe

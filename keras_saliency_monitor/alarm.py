"""The shortcut alarm: several signals, one plain-words warning, at most once per run.

Each signal is a run-level number the callback logs, compared with a threshold:

* ``border_ratio`` (no masks needed): saliency energy (the squared map) density in the image's
  outer band (1/8 of the side on every edge) over the density inside it; 1.0 = chance (a uniform
  map). Objects sit inside the image, so a model that looks at them scores well below 1;
  watermarks, corner tags, stamps and frames sit at the edges and push it above. Fires above
  ``border_threshold`` (1.0).
* ``focus_lift`` (masks): focus on each probe's own mask over its focus on the other probes' masks
  (a permutation baseline, 1.0 = chance, see ``metrics.focus_lift``). Fires below
  ``lift_threshold`` (1.25), but only when the masks differ enough to tell (``mask_contrast``, the
  lift of a perfect map, at least ``min_mask_contrast``, 2.0): objects that all sit in the middle
  leave the lift near 1.0 whatever the model looks at.
* ``object_reliance`` (masks): the share of the model's confidence above chance that goes when
  each probe's object is painted over, beyond what goes when a patch of the same shape elsewhere
  is painted over (``metrics.object_reliance``; 0 = chance, 1 = all of it). It asks the model,
  not the maps: painting over the object leaves a watermark, frame, stamp or tinted background
  in place, so a shortcut model's prediction hardly moves, whatever any saliency method shows.
  Fires below ``reliance_threshold`` (0.25), whatever the masks' contrast.

The alarm counts an epoch only once the model has learned something: ``probe_skill``
(``metrics.probe_skill``: 0 = chance, 1 = every probe right) at least ``min_skill`` (0.5). A fresh
network's maps say nothing about the object, and it has learned no shortcut either.

``shortcut_score`` folds them into one per-epoch number for ``logs`` (``saliency_shortcut``): the
largest of ``value / threshold`` (signals that fire above), ``threshold / value`` (the lift, which
fires below) and ``(1 - value) / (1 - threshold)`` (object reliance, whose chance is 0), each
capped at ``MAX_SCORE``; above
1.0 some signal is past its threshold this epoch. The alarm fires when the score has been above 1.0
for ``patience`` consecutive logged epochs after ``warmup`` logged epochs (the maps of a fresh
network are noise). Pure Python and numpy, so it is tested without a model.
"""

from __future__ import annotations

import numbers

import numpy as np

DEFAULT_LIFT_THRESHOLD = 1.25
DEFAULT_BORDER_THRESHOLD = 1.0
DEFAULT_MIN_MASK_CONTRAST = 2.0
DEFAULT_MIN_SKILL = 0.5
DEFAULT_RELIANCE_THRESHOLD = 0.25
MAX_SCORE = 100.0  # cap of each signal's score in `saliency_shortcut`


def _check_threshold(name, value, scale="a positive number (1.0 = chance)", top=np.inf):
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (np.isfinite(value) and 0 < value < top)
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected {scale} or None to switch this "
            f"signal off, received {name}={value!r}."
        )
    return float(value)


def _check_count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected an int >= {low}, received "
            f"{name}={value!r}."
        )
    return int(value)


class ShortcutAlarm:
    """Watches the shortcut signals epoch by epoch and fires at most once per run.

    Args:
        lift_threshold: with masks, focus lift (permutation baseline) below which an epoch counts
            as off the object. None switches the masked signal off. Defaults to 1.25.
        border_threshold: border ratio above which an epoch counts as looking at the image's
            edges. None switches the signal off. Defaults to 1.0.
        patience: consecutive logged epochs past a threshold needed to fire. Defaults to 2.
        warmup: logged epochs ignored at the start of a run. Defaults to 1.
        min_mask_contrast: the masked signal is used only when the masks allow a lift of at least
            this much (``metrics.mask_contrast``). Defaults to 2.0.
        min_skill: epochs count only once the model predicts the probes at least this far from
            chance towards perfect (``probe_skill``; a missing or NaN skill, e.g. for a
            regression, does not hold them back). Defaults to 0.5.
        reliance_threshold: with masks, object reliance (0 = chance, 1 = the object carries all
            of the model's confidence) below which an epoch counts as the model deciding on
            something else. None switches the signal off. Defaults to 0.25.

    Raises:
        ValueError: for a threshold that is not a positive number or None, a ``patience`` below 1
            or a ``warmup`` below 0; the message names the callback's argument.
    """

    def __init__(
        self,
        lift_threshold=DEFAULT_LIFT_THRESHOLD,
        border_threshold=DEFAULT_BORDER_THRESHOLD,
        patience=2,
        warmup=1,
        min_mask_contrast=DEFAULT_MIN_MASK_CONTRAST,
        min_skill=DEFAULT_MIN_SKILL,
        reliance_threshold=DEFAULT_RELIANCE_THRESHOLD,
    ):
        self.lift_threshold = _check_threshold("alarm_threshold", lift_threshold)
        self.border_threshold = _check_threshold("alarm_border_threshold", border_threshold)
        self.reliance_threshold = _check_threshold(
            "alarm_reliance_threshold",
            reliance_threshold,
            "a number between 0 (chance) and 1 (the object carries all of the confidence)",
            top=1.0,
        )
        self.min_mask_contrast = float(min_mask_contrast)
        self.min_skill = float(min_skill)
        self.patience = _check_count("alarm_patience", patience, 1)
        self.warmup = _check_count("alarm_warmup", warmup, 0)
        self.reset()

    def reset(self):
        """Forget the run so far (a new ``fit``)."""
        self.seen = 0  # logged epochs seen in this run
        self.streak = 0  # consecutive logged epochs with some signal past its threshold
        self.fired_at = None  # epoch at which the alarm fired, or None

    def scores(self, numbers) -> dict:
        """``{signal: score}`` for the signals that apply; a score above 1.0 is past the threshold.

        Args:
            numbers: the run-level numbers of one epoch, keys with or without ``saliency_``.
        """
        get = _getter(numbers)
        out = {}
        border = get("border_ratio")
        if self.border_threshold is not None and np.isfinite(border):
            out["border_ratio"] = border / self.border_threshold
        lift, contrast = get("focus_lift"), get("mask_contrast")
        if (
            self.lift_threshold is not None
            and np.isfinite(lift)
            and np.isfinite(contrast)
            and contrast >= self.min_mask_contrast
        ):
            # Capped at MAX_SCORE: a lift of 0 (no saliency on any object) must not log 1e12.
            out["focus_lift"] = min(self.lift_threshold / max(lift, 1e-12), MAX_SCORE)
        reliance = get("object_reliance")
        if self.reliance_threshold is not None and np.isfinite(reliance):
            # Chance is 0, not a positive floor, so a ratio to the threshold would explode at
            # chance: the score is the shortfall from full reliance (1.0) relative to the
            # threshold's, (1 - r) / (1 - t): 1.0 at the threshold, 1/(1 - t) at chance.
            t = self.reliance_threshold
            out["object_reliance"] = min((1.0 - reliance) / (1.0 - t), MAX_SCORE)
        return out

    def shortcut_score(self, numbers) -> float:
        """The per-epoch number behind the alarm (``saliency_shortcut``): the largest score.

        Above 1.0 some signal is past its threshold; NaN when no signal applies.
        """
        scores = self.scores(numbers)
        return max(scores.values()) if scores else float("nan")

    def update(self, epoch, numbers, per_probe, probe_names=None) -> str | None:
        """Record one logged epoch; return the alarm text the first time it fires, else None.

        Args:
            epoch: the 0-based epoch.
            numbers: the run-level numbers (``saliency_border_ratio``, ``saliency_focus_lift``,
                ``saliency_mask_contrast``, ``saliency_object_reliance``,
                ``saliency_probe_skill``; keys with or without the prefix). A signal whose
                number is missing or NaN does not apply this epoch.
            per_probe: ``{name: (N,) values}``: ``border_share``, ``focus_lift`` and
                ``object_reliance`` name the probes in the message.
            probe_names: optional (N,) labels of the probes, e.g. their class names.
        """
        self.seen += 1
        if self.fired_at is not None or self.seen <= self.warmup:
            return None
        scores = self.scores(numbers)
        # An untrained model (skill below min_skill; False for NaN: no skill measured) or no
        # signal measured (NaN maps): the epoch neither counts nor resets.
        if not scores or _getter(numbers)("probe_skill") < self.min_skill:
            return None
        over = {k: v for k, v in scores.items() if v > 1.0}
        self.streak = self.streak + 1 if over else 0
        if self.streak < self.patience:
            return None
        self.fired_at = epoch
        get = _getter(numbers)
        reasons = []
        if "border_ratio" in over:
            reasons.append(self._border_words(get("border_ratio"), per_probe, probe_names))
        if "focus_lift" in over:
            reasons.append(self._lift_words(get("focus_lift"), per_probe, probe_names))
        if "object_reliance" in over:
            reasons.append(self._reliance_words(get("object_reliance"), per_probe, probe_names))
        return (
            f"Saliency alarm at epoch {epoch}: the model may be learning a shortcut instead of "
            f"the object (past the threshold for {self.streak} logged epochs in a row). "
            + " ".join(reasons)
        )

    def _border_words(self, value, per_probe, names):
        return _signal_words(
            f"border_ratio = {value:.2f} (alarm above {self.border_threshold:g}; 1.0 = chance)",
            "saliency is denser in the image's outer band than in its middle, where objects "
            "usually are; look for a watermark, tag, stamp or frame at the edges.",
            "Share of saliency at the edges, highest first",
            _probe_list(per_probe.get("border_share", []), largest=True, names=names),
        )

    def _lift_words(self, value, per_probe, names):
        return _signal_words(
            f"focus_lift = {value:.2f} (alarm below {self.lift_threshold:g}; 1.0 = chance)",
            "saliency lands on each probe's own object mask hardly more than on the other "
            "probes' masks, so it does not follow the object; look at the background, borders "
            "and marks.",
            "Focus lift per probe, lowest first",
            _probe_list(per_probe.get("focus_lift", []), largest=False, names=names),
        )

    def _reliance_words(self, value, per_probe, names):
        return _signal_words(
            f"object_reliance = {value:.2f} (alarm below {self.reliance_threshold:g}; 0 = chance)",
            "painting over each probe's object changes the model's score hardly more than "
            "painting over a patch of the same shape elsewhere in the image, so the model "
            "decides on something else; look at the background, borders and marks.",
            "Object reliance per probe, lowest first",
            _probe_list(per_probe.get("object_reliance", []), largest=False, names=names),
        )


def _signal_words(reading, meaning, probes_title, probes):
    """One signal's sentence: its value and threshold, what it suggests, the probes concerned."""
    return f"Signal {reading}: {meaning}" + (f" {probes_title}: {probes}." if probes else "")


def _getter(numbers):
    def get(key):
        value = numbers.get("saliency_" + key, numbers.get(key))
        try:
            return float(value)
        except (TypeError, ValueError):
            return float("nan")

    return get


def _probe_list(values, largest, names, count=3):
    """``"probe 4 (cat) 0.93, ..."`` for the ``count`` most extreme finite values (0-based)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return ""
    finite = np.isfinite(values)
    key = np.where(finite, -values if largest else values, np.inf)
    order = [int(i) for i in np.argsort(key, kind="stable")[:count] if finite[i]]
    return ", ".join(
        f"probe {i}" + (f" ({names[i]})" if names is not None else "") + f" {values[i]:.2f}"
        for i in order
    )

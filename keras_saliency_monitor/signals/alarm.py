"""The shortcut alarm: several signals, one plain-words warning, at most once per run.

The alarm asks the model rather than reading its maps: attribution lands on a mark in proportion
to how visible it is, not to whether the model decides on it (Clark et al. 2026; Adebayo et al.,
ICLR 2022), and a constant on the maps measures the architecture more than the shortcut (border
ratios of clean models ran from 0.03 to 1.32 by padding and data in issue 22's 134 runs, learned
frames from 0.42 up). Each signal is a run-level number the callback logs, compared with a
threshold against a chance level measured on the same run:

* ``band`` (no masks): the share of the model's confidence above chance lost when the outer band
  of every probe (1/8 of the side) is painted with the interior's mean colour
  (``saliency_band_lost``), minus the share lost when as many pixels in the middle are painted
  (``saliency_band_chance``). Fires above ``intervention_threshold``. Corner and edge marks,
  stamps and frames sit in the band; objects mostly in the middle.
* ``hot`` (no masks): the same for the place where the probes' saliency agrees (the hottest 5%
  of their mean map, ``saliency_hot_lost``) against as many pixels right around it
  (``saliency_hot_chance``). A mark at a fixed place, the middle included, is where every map
  agrees and what the decision goes with, not its surroundings; centred objects lose about as
  much either way. It must also be a fixed place, not each object's own telling part where
  objects usually sit: the excess must reach ``HOT_SHARE`` (0.6) of ``saliency_faithfulness``,
  what each probe's own hottest 5% takes beyond a moved copy. A task whose class is a place
  (the tests' toy: the class is the row of a bright square) follows a fixed place by this
  definition, and ``hot`` fires there: the alarm cannot tell such a task from a shortcut, and
  its text says so.
* ``gap`` (labels): the model fits its training data (training skill from Keras's ``logs`` at
  least ``gap_skill``) while the probes are predicted about as right as chance (a one-sided
  binomial test at the run's probe count cannot tell them from guessing: p >= ``gap_p``). With
  artefact-free probes, a shortcut looks exactly like this; so does a model that does not
  generalise at all (overfitting, or BatchNorm statistics that differ in inference mode).
* ``focus_lift`` (masks): focus on each probe's own mask over its focus on the other probes'
  masks (a permutation baseline, 1.0 = chance, ``metrics.focus_lift``). Fires below
  ``lift_threshold`` (1.25), when the masks differ enough to tell (``mask_contrast`` at least
  ``min_mask_contrast``, 2.0) and the model, asked, does not clearly rely on the object
  (``object_reliance`` below twice its threshold, or not measured).
* ``object_reliance`` (masks): the share of the confidence above chance that goes when each
  probe's object is painted over, beyond a same-shape patch elsewhere (0 = chance;
  ``reliance.object_reliance``). Fires below ``reliance_threshold`` (0.25).
* ``border_ratio``: saliency energy density in the outer band over the density inside it (1.0 =
  chance). It is the maps' evidence named beside ``band``; it fires on its own only where the
  model cannot be asked (a regression output, or no probe predicted right), above
  ``border_threshold`` (1.0).

Every signal but ``gap`` asks the probes, so it counts only while they are predicted well
enough to ask (``probes_tell``): not about as right as chance (``probes_at_chance``, the gap's
binomial test) and the probes' skill at least ``min_skill`` (0.5). Otherwise the confidence
lost is measured on probes right by luck, or on a few barely right, and the maps are those of a
model that cannot tell the probes apart. Set on TUNE seeds 0-3 (replayed: the 2 false alarms with
masks, a MobileNetV2 at chance in inference mode with training skill 0.75 and object reliance
0.00, went; no detection changed) and new seeds 60-67 (a logo control fired hot at probe skill
0.34 early in training; the chance test alone let it through). A run below ``gap_skill`` then
gets the verdict "no verdict: the probes are predicted too poorly to ask ...".

``faithfulness`` (the deletion test, ``interventions``) and ``place_agreement`` are logged and
quoted as evidence; neither fires.

An epoch counts only once the model has learned something from its training data: the training
skill read from ``logs`` (accuracy, or a cross-entropy loss against ``log K``; 0 = chance,
1 = perfect) at least ``min_skill`` (0.5). Without either in ``logs`` the probes' skill
(``learning.probe_skill``) stands in, as before. The alarm fires when some signal has been past
its threshold for ``patience`` consecutive counted epochs after ``warmup`` logged ones.

``saliency_shortcut`` (``state``) is 0.0 until the alarm fires and 1.0 from that epoch on, so a
callback reading it stops a run only where the alarm does. Pure Python and numpy, tested without
a model.
"""

from __future__ import annotations

import numbers

import numpy as np

DEFAULT_LIFT_THRESHOLD = 1.25
DEFAULT_BORDER_THRESHOLD = 1.0
DEFAULT_MIN_MASK_CONTRAST = 2.0
DEFAULT_MIN_SKILL = 0.5
DEFAULT_RELIANCE_THRESHOLD = 0.25
# The band and hot signals: the share of the confidence above chance lost beyond the same-area
# control. Set on benchmarks/shortcuts.py's TUNE seeds 0 and 1 (26 runs, 4 monitors each; real
# photographs and shapes at 32/64/128 px, 6 architectures): the clean, close-up, texture, logo
# and white-frame controls reached at most 0.16 (2 counted epochs in a row), learned shortcuts
# the alarm needs these for 0.30-1.24 (edge marks under valid padding and a flatten head 0.31 and
# 0.33, a stamp in a random corner 0.41, a mark on a centred object 0.36). 0.25 and 0.3 caught
# the same 7 of 9 learned cues with probes that carry them, with no false alarm; 0.5 caught 2.
DEFAULT_INTERVENTION_THRESHOLD = 0.3
# The gap: training skill (0 = chance, 1 = all right) at least this, probes not better than
# chance at this one-sided binomial level.
DEFAULT_GAP_SKILL = 0.8
DEFAULT_GAP_P = 0.05
# The hot signal must also take at least this share of what each probe's own hottest 5% takes
# beyond its moved copy (``saliency_faithfulness``, the deletion test at each probe's own place):
# a mark at one fixed place is where every probe's own map points, so the one place does about
# what the probes' own places do. Set on TUNE seeds 0-3 and new seeds 8-55: on the epochs past
# the 0.3 threshold, the 9 learned cues hot caught (probes carrying them) had an excess of
# 0.66-1.48 times their faithfulness (0.84-1.32 at the last epoch); the uninformative-logo
# controls (48 runs, valid padding at 32 and 64 px, seeds 8-55), whose agreed place is the
# telling middle of centred objects, 0.26-0.67 (4 runs fired without it, all on logo-free
# probes). Any share from 0.5 to 0.7 gave the same alarms on these runs; 0.8 lost a learned
# centred mark.
HOT_SHARE = 0.6
MAX_SCORE = 100.0  # cap of each signal's score


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


# The order in which the fired signals are told: what the model was asked first.
_ORDER = ("band", "hot", "gap", "object_reliance", "focus_lift", "border_ratio")


class ShortcutAlarm:
    """Watches the shortcut signals epoch by epoch and fires at most once per run.

    Args:
        lift_threshold: with masks, focus lift (permutation baseline) below which an epoch counts
            as off the object. None switches the signal off. Defaults to 1.25.
        border_threshold: border ratio above which an epoch counts as looking at the image's
            edges, where the model cannot be asked (see the module). None switches the signal
            off. Defaults to 1.0.
        patience: consecutive counted epochs past a threshold needed to fire. Defaults to 2.
        warmup: logged epochs ignored at the start of a run. Defaults to 1.
        min_mask_contrast: the lift is used only when the masks allow a lift of at least this
            much (``metrics.mask_contrast``). Defaults to 2.0.
        min_skill: epochs count only once the training skill read from ``logs`` is at least
            this (0 = chance, 1 = every training example right; without an accuracy or a
            cross-entropy loss in ``logs``, the probes' skill, and a NaN skill does not hold
            epochs back). The signals that ask the probes (all but the gap) also need the
            probes' skill at least this (``probes_tell``). Defaults to 0.5.
        reliance_threshold: with masks, object reliance below which an epoch counts as the
            model deciding on something else. None switches the signal off. Defaults to 0.25.
        intervention_threshold: share of the confidence above chance that painting the outer
            band (or the place where the maps agree) must take beyond its same-area control.
            None switches both off. Defaults to 0.3.
        gap_skill: training skill from which a model counts as fitting its training data for
            the gap signal. None switches the gap off. Defaults to 0.8.

    Attributes:
        fired_at: the 0-based epoch at which the alarm fired in this run, or None.
        message: the alarm's text once it fired, else None.
        counted: epochs counted this far (past warm-up, the model having learned).

    Raises:
        ValueError: for a threshold out of range, a ``patience`` below 1 or a ``warmup``
            below 0; the message names the callback's argument.
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
        intervention_threshold=DEFAULT_INTERVENTION_THRESHOLD,
        gap_skill=DEFAULT_GAP_SKILL,
    ):
        share = "a share of the confidence above chance in (0, 1)"
        self.lift_threshold = _check_threshold("alarm_threshold", lift_threshold)
        self.border_threshold = _check_threshold("alarm_border_threshold", border_threshold)
        self.reliance_threshold = _check_threshold(
            "alarm_reliance_threshold",
            reliance_threshold,
            "a number between 0 (chance) and 1 (the object carries all of the confidence)",
            top=1.0,
        )
        self.intervention_threshold = _check_threshold(
            "alarm_intervention_threshold", intervention_threshold, share, top=1.0
        )
        self.gap_skill = _check_threshold(
            "alarm_gap_skill", gap_skill, "a training skill in (0, 1] (1 = all right)", top=1.0001
        )
        self.gap_p = DEFAULT_GAP_P
        self.min_mask_contrast = float(min_mask_contrast)
        self.min_skill = float(min_skill)
        self.patience = _check_count("alarm_patience", patience, 1)
        self.warmup = _check_count("alarm_warmup", warmup, 0)
        self.reset()

    def reset(self):
        """Forget the run so far (a new ``fit``)."""
        self.seen = 0  # logged epochs seen in this run
        self.counted = 0  # of those, epochs past warm-up with the model having learned
        self.streak = 0  # consecutive counted epochs with some signal past its threshold
        self.fired_at = None  # epoch at which the alarm fired, or None
        self.message = None  # the alarm's text once it fired
        self.last = {}  # the numbers of the last logged epoch
        self.last_scores = {}  # and the signals' scores then

    def learned(self, numbers) -> bool:
        """Whether the model had learned something at this epoch (the alarm's gate)."""
        get = _getter(numbers)
        train = get("train_skill")
        if np.isfinite(train):
            return train >= self.min_skill
        return not get("probe_skill") < self.min_skill  # NaN (no skill measured) passes

    def probes_at_chance(self, numbers) -> bool:
        """Whether the probes are predicted about as right as chance: a one-sided binomial test
        at the run's probe count cannot tell the model from a guesser (``probe_chance_p`` at
        least ``gap_p``) and the probes' skill is at most ``GAP_PROBE_SKILL`` (NaN: the p-value
        alone). False without labels (the p-value is NaN)."""
        get = _getter(numbers)
        p = get("probe_chance_p")
        return bool(np.isfinite(p) and p >= self.gap_p and not get("probe_skill") > GAP_PROBE_SKILL)

    def probes_tell(self, numbers) -> bool:
        """Whether the probes are predicted well enough to ask (every signal but the gap): not
        at chance (``probes_at_chance``) and the probes' skill at least ``min_skill`` (NaN, no
        labels, passes), the gate the alarm used before it read the training skill."""
        skill = _getter(numbers)("probe_skill")
        return not self.probes_at_chance(numbers) and not skill < self.min_skill

    def _gap(self, get):
        """The gap's score (training data fitted, probes at chance), or None when it does not
        apply."""
        train, p = get("train_skill"), get("probe_chance_p")
        if self.gap_skill is None or not np.isfinite(train) or not np.isfinite(p):
            return None
        if train < self.gap_skill or get("probe_skill") > GAP_PROBE_SKILL:
            return None
        return min(p / self.gap_p, MAX_SCORE)

    def scores(self, numbers) -> dict:
        """``{signal: score}`` for the signals that apply; a score above 1.0 is past the threshold.

        Args:
            numbers: the run-level numbers of one epoch, keys with or without ``saliency_``.
        """
        get = _getter(numbers)
        out = {}
        gap = self._gap(get)
        if gap is not None:
            out["gap"] = gap
        if not self.probes_tell(numbers):
            # Every other signal asks the probes (the confidence lost on the probes predicted
            # right, right by luck here; the maps of a model that cannot tell them apart), so
            # only the gap speaks. TUNE seed 3: a MobileNetV2 white-frame control at chance in
            # inference mode (training skill 0.75) had object reliance 0.00 and lift 1.13.
            return out
        t = self.intervention_threshold
        for name in ("band", "hot"):
            lost, chance = get(name + "_lost"), get(name + "_chance")
            if t is not None and np.isfinite(lost) and np.isfinite(chance):
                bar = t
                faith = get("faithfulness")
                if name == "hot" and np.isfinite(faith):
                    # A fixed place, not each object: the one place must take at least
                    # HOT_SHARE of what each probe's own hottest region takes beyond its moved
                    # copy (the deletion test at the probes' own places).
                    bar = max(t, HOT_SHARE * faith)
                out[name] = float(np.clip((lost - chance) / bar, -MAX_SCORE, MAX_SCORE))
        border = get("border_ratio")
        asked = "band" in out or "hot" in out
        if self.border_threshold is not None and np.isfinite(border) and not asked:
            out["border_ratio"] = min(border / self.border_threshold, MAX_SCORE)
        lift, contrast = get("focus_lift"), get("mask_contrast")
        reliance = get("object_reliance")
        # The model asked about the object answers first: where it clearly relies on it
        # (reliance at least twice its threshold), the maps' lift is evidence, not an alarm (TUNE
        # seed 1: a clean flatten model at 128 px, lift 1.23 while reliance was 0.97).
        relies = (
            self.reliance_threshold is not None
            and np.isfinite(reliance)
            and reliance >= 2 * self.reliance_threshold
        )
        if (
            self.lift_threshold is not None
            and np.isfinite(lift)
            and np.isfinite(contrast)
            and contrast >= self.min_mask_contrast
            and not relies
        ):
            # Capped at MAX_SCORE: a lift of 0 (no saliency on any object) must not log 1e12.
            out["focus_lift"] = min(self.lift_threshold / max(lift, 1e-12), MAX_SCORE)
        if self.reliance_threshold is not None and np.isfinite(reliance):
            # Chance is 0, so the score is the shortfall from full reliance relative to the
            # threshold's, (1 - r) / (1 - t): 1.0 at the threshold, 1/(1 - t) at chance.
            r = self.reliance_threshold
            out["object_reliance"] = min((1.0 - reliance) / (1.0 - r), MAX_SCORE)
        return out

    def shortcut_score(self, numbers) -> float:
        """The largest of the signals' scores this epoch (above 1.0: some signal is past its
        threshold); NaN when none applies. Not the alarm: that needs ``patience`` epochs."""
        scores = self.scores(numbers)
        return max(scores.values()) if scores else float("nan")

    def state(self, epoch) -> float:
        """``saliency_shortcut``: 1.0 from the epoch the alarm fired on, else 0.0."""
        return 1.0 if self.fired_at is not None and epoch >= self.fired_at else 0.0

    def update(
        self, epoch, numbers, per_probe, probe_names=None, probe_rows=None, place=None
    ) -> str | None:
        """Record one logged epoch; return the alarm text the first time it fires, else None.

        Args:
            epoch: the 0-based epoch.
            numbers: the run-level numbers (keys with or without ``saliency_``). A signal whose
                numbers are missing or NaN does not apply this epoch.
            per_probe: ``{name: (N,) values}``: ``band_excess``, ``hot_excess``,
                ``probe_accuracy``, ``object_reliance``, ``focus_lift`` and ``border_share``
                name the probes in the message.
            probe_names: optional (N,) labels of the probes, e.g. their class names.
            probe_rows: optional (N,) rows of the probes in ``probe_data``.
            place: optional ``(H, W)`` bool, the place the maps agree on (``hot``).
        """
        self.seen += 1
        self.last = dict(numbers)
        self.last_scores = self.scores(numbers)
        if self.fired_at is not None or self.seen <= self.warmup:
            return None
        scores = self.last_scores
        # An untrained model or no signal measured (NaN maps): the epoch neither counts nor
        # resets the streak.
        if not scores or not self.learned(numbers):
            return None
        self.counted += 1
        over = {k: v for k, v in scores.items() if v > 1.0}
        self.streak = self.streak + 1 if over else 0
        if self.streak < self.patience:
            return None
        self.fired_at = epoch
        words = _Words(self, _getter(numbers), per_probe, probe_names, probe_rows, place)
        reasons = [getattr(words, name)() for name in _ORDER if name in over]
        suspicion = (
            "the model fits its training data but not the probes, a shortcut or a model that "
            "does not generalise"
            if set(over) == {"gap"}
            else "the model may be learning a shortcut instead of the object"
        )
        self.message = " ".join(
            [
                f"Saliency alarm at epoch {epoch}: {suspicion} (past the threshold for "
                f"{self.streak} counted epochs in a row).",
                *reasons,
                words.maps(),
            ]
        ).strip()
        return self.message

    def _last_scores_text(self) -> str:
        shown = ", ".join(
            f"{name} {v:.2f}" for name, v in sorted(self.last_scores.items(), key=_by_order)
        )
        return f"Last epoch's scores (1.0 = threshold): {shown or 'none measured'}."

    def verdict(self) -> str:
        """The run's verdict in plain words: the alarm's text, or why there was none."""
        if self.message is not None:
            return self.message
        if self.seen == 0:
            return "no verdict: no epoch was logged."
        get = _getter(self.last)
        train = get("train_skill")
        named = self.gap_skill is not None and train >= self.gap_skill  # the gap speaks then
        if not self.probes_tell(self.last) and self.learned(self.last) and not named:
            return (
                f"no verdict: the probes are predicted too poorly to ask at the last epoch "
                f"(probe skill {get('probe_skill'):.2f} against {self.min_skill:g}; accuracy "
                f"{get('probe_accuracy'):.2f} against a chance of {get('probe_chance'):.2f}, "
                f"which a guesser matches with p = {get('probe_chance_p'):.2f}), so the signals "
                f"that ask them are withheld, while the training skill, {train:.2f} "
                f"(0 = chance), is below the "
                f"{self.gap_skill or float('nan'):g} at which the gap is named. Train longer, "
                "or check that the probes come from the training data's distribution and that "
                "the model predicts them in inference mode as in training (BatchNorm). "
                + self._last_scores_text()
            )
        if self.counted == 0:
            skill = (
                f"training skill {train:.2f}"
                if np.isfinite(train)
                else f"probe skill {get('probe_skill'):.2f}"
            )
            return (
                f"no verdict: the alarm counted none of the {self.seen} logged epochs (warm-up "
                f"{self.warmup}; an epoch counts once the model has learned its training data, "
                f"{skill} at the last one against {self.min_skill:g}; 0 = chance). Train longer."
            )
        if self.counted < self.patience:
            return (
                f"no verdict yet: only {self.counted} of {self.seen} logged epochs counted, and "
                f"the alarm needs {self.patience} in a row past a threshold. Train longer. "
                + self._last_scores_text()
            )
        return (
            f"no alarm: no signal stayed past its threshold for {self.patience} counted epochs "
            f"in a row ({self.counted} of {self.seen} logged epochs counted). "
            + self._last_scores_text()
        )


GAP_PROBE_SKILL = 0.25  # and the probes' skill at most this (a guard for small probe sets)


def _by_order(item):
    return _ORDER.index(item[0]) if item[0] in _ORDER else len(_ORDER)


class _Words:
    """One sentence group per fired signal: the evidence, its chance, what to do, which probes."""

    def __init__(self, alarm, get, per_probe, names, rows, place):
        self.alarm, self.get, self.per_probe = alarm, get, per_probe
        self.names, self.rows, self.place = names, rows, place

    def _probes(self, key, title, largest):
        values = self.per_probe.get(key, [])
        listed = _probe_list(values, largest=largest, names=self.names, rows=self.rows)
        return f" {title}: {listed}." if listed else ""

    def maps(self):
        """The maps' own evidence, as numbers with their chance levels."""
        parts = []
        for key, text in (
            ("border_ratio", "border_ratio {:.2f}"),
            ("place_agreement", "place_agreement {:.2f}"),
        ):
            value = self.get(key)
            if np.isfinite(value):
                parts.append(text.format(value))
        return f"The maps: {', '.join(parts)} (1.0 = chance for each)." if parts else ""

    def _intervention(self, name, painted, control, meaning, confirm, key):
        lost, chance = self.get(name + "_lost"), self.get(name + "_chance")
        t = self.alarm.intervention_threshold
        return (
            f"Signal {name}: painting {painted} with the rest's mean colour took "
            f"{lost:.2f} of the model's confidence above chance on the probes it predicts "
            f"right, against {chance:.2f} for {control} (the chance level, measured on this "
            f"run); excess {lost - chance:.2f}, alarm above {t:g}. {meaning}"
            + self._probes(key, "Probes that lose most beyond the control, highest first", True)
            + f" To confirm: {confirm}"
        )

    def band(self):
        return self._intervention(
            "band",
            "the outer band of every probe (1/8 of the side on each edge)",
            "as many pixels painted in the middle",
            "The decision goes with something at the image's edges: look there for a "
            "watermark, tag, stamp or frame, also where the maps are spread out.",
            "paint the same band on held-out images (interventions.fill with "
            "place.border_band) and compare model.evaluate with and without it; a large drop "
            "where the object is intact is the shortcut.",
            "band_excess",
        )

    def hot(self):
        return self._intervention(
            "hot",
            "the place where the probes' maps agree (the hottest 5% of their mean map"
            f"{_where(self.place)})",
            "as many pixels right around that place",
            "The decision goes with one fixed place, whatever the image, as much as with what "
            f"each probe's own map points at (faithfulness {self.get('faithfulness'):.2f}): "
            "look there for a mark, logo or stamp, also one painted over the object. If the "
            "class is, by design, where something is in the image, this is the task, not a "
            "shortcut.",
            "paint that place on held-out images and compare model.evaluate with and without "
            "it; with object masks, the monitor's object_reliance asks the same of the object.",
            "hot_excess",
        )

    def gap(self):
        get = self.get
        p, acc = get("probe_chance_p"), get("probe_accuracy")
        chance = get("probe_chance")
        train = get("train_skill")
        return (
            f"Signal gap: the model fits its training data (training skill {train:.2f} from "
            f"Keras's logs; 0 = chance, 1 = all right) but predicts the probes about as right "
            f"as chance: accuracy {acc:.2f} against a chance of {chance:.2f} (a guesser does as "
            f"well with p = {p:.2f}). Either its training data carry a cue these probes lack "
            "(a shortcut: a mark, frame or background in the training images only), or it does "
            "not generalise (overfitting, or BatchNorm statistics that differ in inference "
            "mode)."
            + self._wrong()
            + " To confirm: model.evaluate the training images themselves (inference mode, "
            "as the probes): high there and low on the probes means something the training "
            "images carry; low on both points at BatchNorm (try momentum=0.9) or overfitting."
        )

    def _wrong(self, count=3):
        correct = np.asarray(self.per_probe.get("probe_accuracy", []), np.float64)
        wrong = np.flatnonzero(correct == 0)[:count]
        listed = ", ".join(_probe_label(int(i), self.names, self.rows) for i in wrong)
        return f" Probes predicted wrong: {listed}." if listed else ""

    def focus_lift(self):
        a = self.alarm
        return (
            f"Signal focus_lift = {self.get('focus_lift'):.2f} (alarm below "
            f"{a.lift_threshold:g}; 1.0 = chance, the other probes' masks): saliency lands on "
            "each probe's own object mask hardly more than on the other probes' masks, so it "
            "does not follow the object; look at the background, borders and marks."
            + self._probes("focus_lift", "Focus lift per probe, lowest first", False)
        )

    def object_reliance(self):
        a = self.alarm
        return (
            f"Signal object_reliance = {self.get('object_reliance'):.2f} (alarm below "
            f"{a.reliance_threshold:g}; 0 = chance, a same-shape patch elsewhere): painting "
            "over each probe's object changes the model's score hardly more than painting over "
            "a patch of the same shape elsewhere in the image, so the model decides on "
            "something else; look at the background, borders and marks."
            + self._probes("object_reliance", "Object reliance per probe, lowest first", False)
            + " To confirm: model.evaluate held-out images with the objects painted over; "
            "accuracy well above chance without them is the shortcut."
        )

    def border_ratio(self):
        return (
            f"Signal border_ratio = {self.get('border_ratio'):.2f} (alarm above "
            f"{self.alarm.border_threshold:g}; 1.0 = chance): saliency is denser in the image's "
            "outer band than in its middle, where objects usually are; look for a watermark, "
            "tag, stamp or frame at the edges (the model could not be asked: no confidence to "
            "measure)."
            + self._probes("border_share", "Share of saliency at the edges, highest first", True)
        )


def _where(place):
    """``", around row 60, column 4 of the 64x64 image"`` for a place, or ``""``."""
    if place is None or not np.any(place):
        return ""
    rows, cols = np.nonzero(place)
    h, w = np.shape(place)
    return f", around row {rows.mean():.0f}, column {cols.mean():.0f} of the {h}x{w} image"


def _getter(numbers):
    def get(key):
        value = numbers.get("saliency_" + key, numbers.get(key))
        try:
            return float(value)
        except (TypeError, ValueError):
            return float("nan")

    return get


def _probe_list(values, largest, names, rows=None, count=3):
    """``"probe 4 (cat, row 17) 0.93, ..."`` for the ``count`` most extreme finite values.

    Probes are numbered from 0 as in the dashboard; ``row`` is the probe's row in
    ``probe_data``.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return ""
    finite = np.isfinite(values)
    key = np.where(finite, -values if largest else values, np.inf)
    order = [int(i) for i in np.argsort(key, kind="stable")[:count] if finite[i]]

    return ", ".join(f"{_probe_label(i, names, rows)} {values[i]:.2f}" for i in order)


def _probe_label(i, names, rows):
    """``"probe 4 (cat, row 17 of probe_data)"``: numbered from 0 as in the dashboard."""
    parts = ([] if names is None else [str(names[i])]) + (
        [] if rows is None else [f"row {int(rows[i])} of probe_data"]
    )
    return f"probe {i}" + (f" ({', '.join(parts)})" if parts else "")

"""The shortcut alarm: sustained low focus lift, said once in plain words.

``saliency_focus_lift`` is the share of saliency inside the object masks divided by the masks' share
of the image: 1.0 means the model looks at the object no more than at any other pixel. A model that
learned a shortcut (a watermark, a border, the background) keeps it near or below 1 while its
training accuracy climbs. The alarm fires when the lift stays below ``threshold`` for ``patience``
consecutive logged epochs after ``warmup`` logged epochs (early maps of a fresh network are noise).
Pure Python and numpy, so it is tested without a model.
"""

from __future__ import annotations

import numpy as np


class FocusAlarm:
    """Watches the focus lift epoch by epoch and fires at most once per run.

    Args:
        threshold: lift below which an epoch counts as off target. None disables the alarm.
        patience: consecutive off-target logged epochs needed to fire.
        warmup: logged epochs ignored at the start of a run.
    """

    def __init__(self, threshold=1.5, patience=2, warmup=1):
        if threshold is not None and not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(
                "Invalid value for argument `alarm_threshold`: expected a positive number (a "
                f"focus lift; 1.0 = chance) or None to disable, received {threshold!r}."
            )
        for name, value, low in (("alarm_patience", patience, 1), ("alarm_warmup", warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(
                    f"Invalid value for argument `{name}`: expected an int >= {low}, received "
                    f"{value!r}."
                )
        self.threshold = threshold
        self.patience = int(patience)
        self.warmup = int(warmup)
        self.reset()

    def reset(self):
        """Forget the run so far (a new ``fit``)."""
        self.seen = 0  # logged epochs seen in this run
        self.streak = 0  # consecutive off-target logged epochs
        self.fired_at = None  # epoch at which the alarm fired, or None

    def update(self, epoch, lift, per_probe_lift, probe_names=None) -> str | None:
        """Record one logged epoch; return the alarm text the first time it fires, else None.

        Args:
            epoch: the 0-based epoch.
            lift: mean focus lift over probes (NaN is ignored: it neither counts nor resets).
            per_probe_lift: (N,) lift of each probe, to name the probes most off target.
            probe_names: optional (N,) labels for the probes in the message.
        """
        self.seen += 1
        if self.threshold is None or self.fired_at is not None or not np.isfinite(lift):
            return None
        if self.seen <= self.warmup:
            return None
        self.streak = self.streak + 1 if lift < self.threshold else 0
        if self.streak < self.patience:
            return None
        self.fired_at = epoch
        per_probe = np.asarray(per_probe_lift, np.float64)
        order = np.argsort(np.where(np.isfinite(per_probe), per_probe, np.inf))[:3]
        worst = ", ".join(
            f"probe {i}"
            + (f" ({probe_names[i]})" if probe_names is not None else "")
            + f" lift {per_probe[i]:.2f}"
            for i in order
            if np.isfinite(per_probe[i])
        )
        return (
            f"Saliency alarm at epoch {epoch}: the model's saliency focus lift has been below "
            f"{self.threshold:g} for {self.streak} logged epochs (now {lift:.2f}; 1.0 = no more "
            "on the object masks than anywhere else). It may be learning a shortcut (background, "
            f"watermark, border) instead of the object. Most off target: {worst}."
        )

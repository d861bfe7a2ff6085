"""Has the model learned its training data, and does that carry over to the probes?

The alarm waits until the model has learned something before it counts an epoch. It reads that
from Keras's ``logs`` of the epoch (the training accuracy, or the loss against its chance
level), not from the probes: a model that learned a shortcut from its training data, shown
probes without the shortcut, predicts them at chance and would look as if it had learned
nothing. That gap (training data fitted, probes at chance) is itself the first sign of a
shortcut when the probes are artefact-free, so it is measured here too (:func:`probe_chance_p`).
Pure numpy and scipy.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special, stats

__all__ = [
    "accuracy_key",
    "predicted_classes",
    "probe_chance_p",
    "probe_skill",
    "training_skill",
]

# Keras's names for an accuracy metric, in the order they are looked for; any other key ending
# in "accuracy" or "_acc" (a multi-output model's "head_accuracy") comes after them.
_ACCURACY_KEYS = (
    "accuracy",
    "acc",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
)


def accuracy_key(logs):
    """The key of the training accuracy in an epoch's ``logs``, or None (``val_*`` excluded)."""
    if not logs:
        return None
    for key in _ACCURACY_KEYS:
        if key in logs:
            return key
    for key in logs:
        k = str(key)
        if not k.startswith(("val_", "saliency_")) and k.endswith(("accuracy", "_acc")):
            return k
    return None


def _finite(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def training_skill(logs, num_classes, kind="softmax", loss_is_crossentropy=False):
    """How far the epoch's training predictions are from chance towards perfect.

        skill = (accuracy - chance) / (1 - chance)            with an accuracy in logs, else
        skill = 1 - loss / log(K)                             for a cross-entropy loss

    ``chance`` is ``1 / K`` (1/2 for one sigmoid unit); ``log(K)`` is the cross-entropy of a
    model that predicts every class alike (``log 2`` per unit for sigmoid units). 0 = chance,
    1 = every training example right (or a loss of 0).

    Args:
        logs: the epoch's ``logs`` from Keras (training keys; ``val_*`` are not read).
        num_classes: K, the number of classes of the head (1 for one sigmoid unit), or None.
        kind: the head's activation, ``"softmax"``, ``"linear"`` or ``"sigmoid"``.
        loss_is_crossentropy: whether ``logs["loss"]`` is a cross-entropy, so that ``log(K)``
            is its chance level.

    Returns:
        A float ``<= 1``, or NaN when neither an accuracy nor a cross-entropy loss is logged,
        or the output is not a classification.
    """
    if not logs or num_classes is None or (num_classes == 1 and kind != "sigmoid"):
        return float("nan")
    k = 2 if num_classes == 1 else int(num_classes)
    chance = 0.5 if kind == "sigmoid" else 1.0 / k
    key = accuracy_key(logs)
    accuracy = None if key is None else _finite(logs[key])
    if accuracy is not None:
        return (accuracy - chance) / (1.0 - chance)
    loss = _finite(logs.get("loss")) if loss_is_crossentropy else None
    if loss is None:
        return float("nan")
    level = math.log(2.0) if kind == "sigmoid" else math.log(k)
    return 1.0 - loss / level


def predicted_classes(logits) -> np.ndarray:
    """``(N,)`` int: the predicted class of each row of ``(N, K)`` logits (for one sigmoid unit,
    ``K = 1``: class 1 where the logit is > 0)."""
    z = np.asarray(logits)
    return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)


def probe_chance_p(logits, labels, kind="softmax"):
    """One-sided binomial p-value of the probes' accuracy under guessing.

    The probability that a model guessing among K classes gets at least as many of the N
    probes right as this one did: small = clearly better than chance; at least 0.05 = about as
    right as chance for this many probes (the chance level is measured against the run's own
    probe count, not fixed).

    Args:
        logits: ``(N, K)`` logits of the probes.
        labels: ``(N,)`` int class ids, or None.
        kind: the head's activation.

    Returns:
        ``(p_value, accuracy, chance)``; NaNs without labels, for a regression or a
        multi-label head.
    """
    nan = (float("nan"),) * 3
    z = np.asarray(logits, np.float64)
    if labels is None or z.ndim != 2 or len(z) == 0:
        return nan
    labels = np.asarray(labels)
    n, k = z.shape
    if labels.shape != (n,) or (k == 1 and kind != "sigmoid") or (k > 1 and kind == "sigmoid"):
        return nan
    right = int(np.sum(predicted_classes(z) == labels))
    chance = 0.5 if k == 1 else 1.0 / k
    return _binomial_tail(right, n, chance), right / n, chance


@functools.lru_cache(maxsize=1024)
def _binomial_tail(right: int, n: int, chance: float) -> float:
    """P(at least ``right`` of ``n`` right | guessing at ``chance``), remembered: a run asks
    the same few counts every epoch, and scipy's call costs 0.3 ms (a fifth of the numbers'
    own numpy on benchmarks/overhead.py's 32 probes), the lookup a microsecond."""
    return float(stats.binom.sf(right - 1, n, chance))


def probe_skill(logits, labels=None, kind: str = "softmax") -> float:
    """How far the model's predictions on the probes are from chance towards perfect.

        skill = (score - chance) / (1 - chance)

    `score` is the share of probes predicted as labelled when `labels` are
    given, otherwise the mean probability of the predicted class; `chance` is
    `1 / K` for `K` classes (1/2 for a single sigmoid unit). 0 = chance (a
    fresh network), 1 = every probe right (or fully confident). A shortcut is
    something the model has learned, so the alarm waits until it predicts the
    probes (artefacts included) clearly better than chance.

    Args:
        logits: `(N, K)` logits of the probes (`K = 1` for a single sigmoid
            unit or a scalar regression).
        labels: Optional `(N,)` int class labels.
        kind: `"softmax"` (or `"linear"` for logits read with a softmax, e.g.
            `from_logits=True`) or `"sigmoid"`, the activation of the head.

    Returns:
        A float `<= 1`; NaN for a regression output (`K = 1`, not sigmoid), a
        multi-label sigmoid head without labels, or no probes.
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or len(z) == 0:
        return float("nan")
    n, k = z.shape
    if k == 1 and kind != "sigmoid":
        return float("nan")  # regression: no classes to be right about
    chance = 1.0 / (2 if k == 1 else k)  # one sigmoid unit: two classes
    if labels is not None:
        right = predicted_classes(z) == np.asarray(labels).reshape(-1)
        score = float(np.mean(right))
    elif k == 1:  # one sigmoid unit: class 1 when the logit is > 0
        score = float(np.mean(special.expit(np.abs(z[:, 0]))))
    elif kind == "sigmoid":
        return float("nan")  # independent units: no probability of "the" predicted class
    else:
        score = float(np.mean(special.softmax(z, axis=1).max(axis=1)))  # p of the argmax
    return (score - chance) / (1.0 - chance)

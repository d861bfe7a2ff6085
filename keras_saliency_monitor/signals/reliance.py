"""Object reliance: does the model's decision rest on the object (numpy, with masks)?

Each probe's object is painted over, and a region of the same shape elsewhere as its control
(:func:`reliance_inputs`); :func:`object_reliance` is the confidence the object takes away
beyond the control's. Painted (``interventions.fill``) and read (``interventions.confidence_lost``)
by the same functions as the mask-free interventions. The monitor asks its probes in turns and
pools the last two logged epochs (``monitor.epoch_numbers.RELIANCE_WINDOW``) with
``interventions.Window`` over :data:`SETS`: over one epoch, the very number of
:func:`object_reliance`.
"""

from __future__ import annotations

import numpy as np

from keras_saliency_monitor.signals import interventions

__all__ = ["SETS", "object_reliance", "reliance_inputs"]

# The painted sets of `reliance_inputs`, in its order (names for `interventions.Window`).
SETS = ("object", "control")


def reliance_inputs(images, masks):
    """The images the object-reliance check feeds the model: each probe without its object, and
    without a region of the same shape elsewhere.

    Probe n's object (its mask) is filled with the mean colour of the rest of the image. Its
    control is probe m's mask (the other probe whose mask overlaps n's least) minus n's own
    mask, placed on image n and filled the same way: a region of about the object's shape at
    another place (a permutation baseline, as `focus_lift`'s).

    Args:
        images: `(N, H, W, C)` float images, N >= 2.
        masks: `(N, H, W)` object masks: bool, or weights in `[0, 1]` (above 0.5 counts).

    Returns:
        `(without_object, without_control)`, two float32 arrays shaped like `images`.

    Raises:
        ValueError: for fewer than 2 probes (no other probe's mask to place), or masks that do
            not match the images.
    """
    images = np.asarray(images, np.float32)
    masks = np.asarray(masks)
    masks = masks > 0.5 if masks.dtype != bool else masks
    n = len(images)
    if n < 2 or images.ndim != 4 or masks.shape != images.shape[:3]:
        raise ValueError(
            "Invalid value for argument `masks`: expected (N, H, W) masks for (N, H, W, C) "
            f"images with N >= 2, received masks of shape {masks.shape} for images of shape "
            f"{images.shape}. The check places another probe's mask, so it needs 2 probes."
        )
    flat = masks.reshape(n, -1).astype(np.float64)
    overlap = flat @ flat.T
    np.fill_diagonal(overlap, np.inf)
    # Ties (e.g. no overlap at all) go to the next probe in a cyclic order, not always probe 0.
    offset = (np.arange(n)[None, :] - np.arange(n)[:, None]) % n
    other = np.lexsort((offset, overlap), axis=1)[:, 0]
    control = masks[other] & ~masks
    return interventions.fill(images, masks), interventions.fill(images, control)


def object_reliance(logits, without_object, without_control, kind: str = "softmax", labels=None):
    """The share of the model's confidence that its object carries, beyond any region's.

        reliance_n = (p(control removed) - p(object removed)) / (p(intact) - chance)

    `p` is the probability of the class the model predicts for the intact probe, read from the
    logits of the intact probe, of the probe with its object painted over, and of the probe
    with a region of the object's shape painted over elsewhere (see `reliance_inputs`);
    `chance` is `1 / K` (1/2 for sigmoid units). 0 = chance: painting over the object costs the
    prediction no more than painting over any region, as for a model that decides on a
    watermark, a frame, a stamp or the background, which stay in place. 1 = painting over the
    object takes the prediction all the way to chance. The run-level value is the same ratio of
    the sums over the probes, so probes the model is unsure of count for little; with `labels`,
    over the probes it predicts right only: what its right answers rest on (a model half-way
    through learning the object gets some probes right by it and guesses the others, and
    painting over a guessed probe's object says nothing; measured on the suite's clean large
    objects under average pooling: lowest counted epoch 0.26 over all probes, 0.43 over the
    right ones, while full shortcut runs did not change).

    Probabilities, not logits: painting over a bright object moves a shortcut model's logits
    too (its features see the object's colour), but not its decision. Measured on the shortcut
    suite (benchmarks/shortcuts.py, seed 0): the ratio of logit changes was 1.1-42 on full
    shortcut runs, overlapping clean runs (4-78); the share of confidence, over 5 seeds and
    every epoch the alarm counts, is at most 0.31 on full shortcut runs and at least 0.81 on
    clean ones.

    Args:
        logits: `(N, K)` logits of the intact probes.
        without_object, without_control: `(N, K)` logits of the two inputs of
            `reliance_inputs`.
        kind: `"softmax"` (or `"linear"`) or `"sigmoid"`, the head's activation, as
            `probe_skill`.
        labels: optional `(N,)` int class labels: the run-level value then sums over the probes
            predicted right (NaN if none is). Other shapes (multi-hot rows) are ignored.

    Returns:
        `(run, per_probe)`: the float run-level reliance and the `(N,)` per-probe values:
        negative when the control region matters more, a little above 1 when painting over the
        object pushes the class below chance. NaN for a regression output (`K = 1`, not
        sigmoid), and where the intact probe is predicted at chance.
    """
    # reliance = lost(object) - lost(control): the same p, chance and counted probes on both.
    run_object, object_lost = interventions.confidence_lost(logits, without_object, kind, labels)
    run_control, control_lost = interventions.confidence_lost(logits, without_control, kind, labels)
    return run_object - run_control, object_lost - control_lost

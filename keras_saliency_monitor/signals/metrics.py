"""Numbers that say where a saliency map looks and how it changes (numpy and scipy).

Every metric takes raw saliency maps of shape `(N, H, W)`, one per probe, with
values `>= 0` as returned by `compute_saliency`. The maps are not normalised and
no range is assumed: each metric is invariant to a positive rescaling of a map,
so the maps of different epochs and methods can be compared as they are.

Every metric returns a float64 array of shape `(N,)`, one value per probe, so
the caller can log the mean (`nanmean`) and the spread. A probe gets NaN where
the metric is undefined for it: an all-zero map, an empty mask, a constant map
for a rank correlation, or a map holding NaN or inf (e.g. after the weights
diverged). NaN is a value, not an error: these functions raise only for
arguments of the wrong shape, type or range.

Example:

```python
boxes = np.array([[8, 8, 40, 40], [0, 16, 32, 64]])     # (y0, x0, y1, x1)
masks = masks_from_boxes(boxes, height=64, width=64)     # (2, 64, 64) bool
per_probe = focus(maps, masks)                           # (2,) float64
logs["saliency_focus"] = nanmean(per_probe)
```

This module holds the checks shared by every family, the masks and the numbers that read them
(focus, lift, pointing game); the other families sit beside it: ``place`` (border and place,
without masks), ``stability`` (rank correlations), ``reliance`` (what painting the object over
costs the model) and ``learning.probe_skill``.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "focus",
    "focus_chance",
    "focus_lift",
    "mask_contrast",
    "mean_focus_lift",
    "masks_from_boxes",
    "nanmean",
    "pointing_game",
]


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


def _check_maps(
    maps, name: str = "maps", *, nonnegative: bool = True, keep_float32: bool = False
) -> np.ndarray:
    """Validates saliency maps and returns them as a float `(N, H, W)` array.

    Args:
        maps: Array-like of shape `(N, H, W)`, real-valued.
        name: Argument name used in error messages.
        nonnegative: Whether negative values are rejected. NaN and inf pass:
            they make the affected probe's result NaN instead.
        keep_float32: Whether to return float32 when that holds the values
            exactly (float16, float32, bool, 8- and 16-bit ints), for callers
            whose sorts are faster on it; otherwise float64 is returned.

    Returns:
        float64 (or float32, see `keep_float32`) array of shape `(N, H, W)`;
        no copy when the input already has that dtype.

    Raises:
        ValueError: If `maps` is not a real array of shape `(N, H, W)` with
            `H, W >= 1`, or holds negative values when `nonnegative` is set.
    """
    raw = np.asarray(maps)
    if raw.dtype.kind not in "biuf":
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a real-valued array of shape "
            f"(N, H, W), received dtype {raw.dtype}."
        )
    if raw.ndim != 3 or raw.shape[1] == 0 or raw.shape[2] == 0:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected shape (N, H, W) with H, W >= 1, "
            f"one saliency map per probe, received shape {raw.shape}."
        )
    exact_in_float32 = raw.dtype.kind == "b" or raw.dtype.itemsize <= 2 or raw.dtype == np.float32
    dtype = np.float32 if keep_float32 and exact_in_float32 else np.float64
    arr = raw.astype(dtype, copy=False)
    # `arr < 0` is False for NaN, so NaN maps pass here and become NaN results.
    if nonnegative and np.any(arr < 0):
        minimum = float(arr[arr < 0].min())
        raise ValueError(
            f"Invalid value for argument `{name}`: expected saliency maps with values >= 0 "
            f"as returned by `compute_saliency`, received a minimum of {minimum}. "
            "Reduce signed attributions first, e.g. the max over channels of their absolute value."
        )
    return arr


def _check_masks(masks, maps: np.ndarray, name: str = "masks") -> np.ndarray:
    """Validates object masks against validated maps; returns float64 weights.

    Args:
        masks: Array-like of shape `(N, H, W)`: bool, or numbers in `[0, 1]`
            (soft masks: the weight of each pixel).
        maps: The validated maps, float64 of shape `(N, H, W)`.
        name: Argument name used in error messages.

    Returns:
        float64 array of shape `(N, H, W)` with values in `[0, 1]`.

    Raises:
        ValueError: If the shape differs from `maps.shape`, the dtype is not
            bool or real, or a value lies outside `[0, 1]` (or is NaN).
    """
    raw = np.asarray(masks)
    if raw.dtype.kind not in "biuf":
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a bool array or soft weights in "
            f"[0, 1] of shape (N, H, W) = {maps.shape}, received dtype {raw.dtype}."
        )
    if raw.shape != maps.shape:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected shape (N, H, W) = {maps.shape} "
            f"matching the probe maps, received {raw.shape}. Pass one mask per probe at the "
            "resolution of the maps (`masks_from_boxes` turns boxes into masks)."
        )
    arr = raw.astype(np.float64, copy=False)
    if raw.dtype.kind != "b":
        # Written so that NaN fails the check too.
        inside = (arr >= 0.0) & (arr <= 1.0)
        if not inside.all():
            bad = arr[~inside]
            raise ValueError(
                f"Invalid value for argument `{name}`: expected bool masks or soft weights in "
                f"[0, 1], received {bad.size} value(s) outside it, e.g. {float(bad[0])}."
            )
    return arr


def _check_tolerance(tolerance) -> float:
    """Returns `tolerance` as a float after checking it is finite and >= 0."""
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, numbers.Real)
        or not np.isfinite(tolerance)
        or tolerance < 0
    ):
        raise ValueError(
            "Invalid value for argument `tolerance`: expected a finite number of pixels >= 0, "
            f"received tolerance={tolerance!r}."
        )
    return float(tolerance)


def _check_size(value, name: str) -> int:
    """Returns `value` as an int after checking it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a positive int (pixels), "
            f"received {name}={value!r}."
        )
    return int(value)


# ----------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------


def masks_from_boxes(boxes, height: int, width: int, *, name: str = "boxes") -> np.ndarray:
    """Turns bounding boxes into boolean object masks.

    Pixel `(i, j)` covers the square `[i, i + 1) x [j, j + 1)`. A box is clipped
    to the image, then every pixel it overlaps is in its mask: rows
    `floor(y0) .. ceil(y1) - 1` and columns `floor(x0) .. ceil(x1) - 1`. For
    integer boxes that is exactly rows `y0 .. y1 - 1` and columns `x0 .. x1 - 1`
    (`y1` and `x1` exclusive, like slices).

    Args:
        boxes: Array-like of shape `(N, 4)`, one `(y0, x0, y1, x1)` box per
            probe, in pixels of the `(height, width)` image; int or float.
        height: Image height in pixels, `H`.
        width: Image width in pixels, `W`.
        name: Argument name to use in error messages, e.g. `"masks"` when the
            boxes came in through a `masks=` argument. Defaults to `"boxes"`.

    Returns:
        bool array of shape `(N, H, W)`, True inside each probe's box. Every
        mask has at least one True pixel.

    Raises:
        ValueError: If `boxes` is not a finite real array of shape `(N, 4)`, if
            a box does not satisfy `y0 < y1` and `x0 < x1` after clipping to the
            image (inverted, empty, or entirely outside), or if `height` or
            `width` is not a positive int.

    Example:

    >>> masks_from_boxes([[1, 0, 3, 2]], height=4, width=3).astype(int)[0]
    array([[0, 0, 0],
           [1, 1, 0],
           [1, 1, 0],
           [0, 0, 0]])
    """
    height = _check_size(height, "height")
    width = _check_size(width, "width")
    form = (
        "an array of shape (N, 4) of (y0, x0, y1, x1) boxes in pixels of the "
        f"{height}x{width} image"
    )
    raw = np.asarray(boxes)
    if raw.dtype.kind not in "iuf":
        raise ValueError(
            f"Invalid value for argument `{name}`: expected {form}, received dtype {raw.dtype}."
        )
    if raw.ndim != 2 or raw.shape[1] != 4:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected {form}, received shape {raw.shape}."
        )
    b = raw.astype(np.float64)
    if not np.isfinite(b).all():
        raise ValueError(
            f"Invalid value for argument `{name}`: expected {form} with finite coordinates, "
            "received NaN or inf."
        )
    y0 = np.clip(b[:, 0], 0, height)
    x0 = np.clip(b[:, 1], 0, width)
    y1 = np.clip(b[:, 2], 0, height)
    x1 = np.clip(b[:, 3], 0, width)
    bad = (y0 >= y1) | (x0 >= x1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        clipped = (y0[i], x0[i], y1[i], x1[i])
        raise ValueError(
            f"Invalid value for argument `{name}`: expected {form} with y0 < y1 and x0 < x1 "
            f"after clipping to the image (y1, x1 exclusive); received {name}[{i}] = "
            f"{tuple(raw[i].tolist())}, which clips to {tuple(float(v) for v in clipped)}. "
            "Boxes in (x0, y0, x1, y1) order must be reordered to (y0, x0, y1, x1)."
        )
    rows = np.arange(height)
    cols = np.arange(width)
    # (N, H) and (N, W) memberships; their outer product is the (N, H, W) mask.
    in_rows = (rows >= np.floor(y0)[:, None]) & (rows < np.ceil(y1)[:, None])
    in_cols = (cols >= np.floor(x0)[:, None]) & (cols < np.ceil(x1)[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------


def _focus(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """`focus` on validated float64 `(N, H, W)` arrays; returns `(N,)`."""
    n, h, w = maps.shape
    flat_maps = maps.reshape(n, h * w)
    total = flat_maps.sum(axis=1)
    inside = np.einsum("nk,nk->n", flat_maps, masks.reshape(n, h * w))
    # NaN or inf anywhere in a (non-negative) map makes its total non-finite.
    defined = np.isfinite(total) & (total > 0)
    out = np.full(n, np.nan)
    np.divide(inside, total, out=out, where=defined)
    return out


def focus(maps, masks) -> np.ndarray:
    """Fraction of each map's saliency mass that lies inside its object mask.

    This is the relevance mass accuracy of Arras, Osman and Samek (2022),
    "CLEVR-XAI: A benchmark dataset for the ground truth evaluation of neural
    network explanations", Information Fusion 81:

        focus_n = sum_{h,w} S_n[h, w] * M_n[h, w] / sum_{h,w} S_n[h, w]

    1.0 means all saliency is on the object, 0.0 all of it off the object. A
    map that ignores the mask scores about the mask's share of the image; see
    `focus_lift` for the score relative to that chance level. With a soft mask
    (weights in `[0, 1]`) each pixel's saliency counts with its weight.

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.
        masks: Object masks, shape `(N, H, W)`: bool, or float weights in
            `[0, 1]`.

    Returns:
        float64 array of shape `(N,)` with values in `[0, 1]`. NaN for a probe
        whose map is all zero or holds NaN or inf.

    Raises:
        ValueError: If `maps` is not `(N, H, W)` and `>= 0`, or `masks` does not
            match it in shape or lies outside `[0, 1]`.
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps)
    return _focus(maps, masks)


def focus_chance(maps, masks) -> np.ndarray:
    """Each map's focus on the *other* probes' masks: the chance level of `focus`.

        chance_n = mean_{m != n} focus(S_n, M_m)

    A permutation baseline: it is what `focus` would be if the saliency map did
    not depend on where this probe's object is, only on where objects tend to be
    (centre bias) and where the map tends to be (e.g. a fixed watermark). With a
    single probe there are no other masks, and the chance level falls back to
    the mask's share of the image (the focus of a uniform map).

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.
        masks: Object masks, shape `(N, H, W)`: bool, or float weights in
            `[0, 1]`.

    Returns:
        float64 array of shape `(N,)` with values in `[0, 1]`. NaN for a probe
        whose map is all zero or holds NaN or inf.

    Raises:
        ValueError: As `focus`.
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps)
    return _focus_and_chance(maps, masks)[1]


def _focus_and_chance(maps: np.ndarray, masks: np.ndarray):
    """(own focus, permutation chance), each `(N,)`, on validated arrays."""
    n, h, w = maps.shape
    flat = maps.reshape(n, h * w)
    total = flat.sum(axis=1)
    defined = np.isfinite(total) & (total > 0)
    weights = masks.reshape(n, h * w)
    used = np.where(defined[:, None], flat, 0.0)
    # Empty masks are no object: no focus of their own, and not part of the others' chance.
    nonempty = weights.sum(axis=1) > 0
    own = np.full(n, np.nan)
    np.divide(np.einsum("nk,nk->n", used, weights), total, out=own, where=defined)
    own[~nonempty] = np.nan
    # The saliency mass of map n on the other probes' masks, summed: one product of map n with
    # the other masks' summed weight per pixel (O(N K)), not the (N, N) masses of every map on
    # every mask (O(N^2 K): 1.1 of 1.2 ms for 32 maps 64x64). Both sum non-negative terms, so
    # they agree to rounding (tests/test_metrics.py); this one never subtracts the own mass.
    # einsum, not `@`: no BLAS thread pool on the training thread (see `concentration`).
    # An empty mask's weights are all 0, so it adds nothing to the pixels' summed weight.
    others_weight = weights.sum(axis=0) - weights  # (N, K): the other masks' weight per pixel
    kept = np.einsum("nk,nk->n", used, others_weight)
    count = nonempty.sum() - nonempty  # (N,): other probes with a mask
    others = kept / np.maximum(count, 1)
    chance = np.full(n, np.nan)
    np.divide(others, total, out=chance, where=defined & (count > 0))
    # No other mask (a single probe): the chance level of a uniform map, the mask's share.
    alone = defined & (count == 0)
    chance[alone] = weights.mean(axis=1)[alone]
    return own, chance


def focus_lift(maps, masks, baseline: str = "permutation") -> np.ndarray:
    """Focus relative to its chance level, probe by probe.

        lift_n = focus(S_n, M_n) / chance_n

    With `baseline="permutation"` (the default) `chance_n` is `focus_chance`:
    the map's focus on the other probes' masks. 1.0 then means the map lands on
    its own object no more than on where the other probes' objects are, which
    is what a map unrelated to the object scores, also when objects and maps
    both sit near the centre (centre bias) and the masks' share of the image
    says nothing about chance. Above 1 the map follows its own object; the
    largest value a map can reach depends on how much the masks differ (see
    `mask_contrast`); if every probe has the same mask, every map scores 1.0.

    With `baseline="area"` `chance_n` is the mask's share of the image (the
    focus of a uniform map): the ratio of the relevance mass accuracy of Arras
    et al. (2022) to its expectation under a uniform map. It is biased upwards
    when maps and objects both favour the centre (a lift of 2 for unrelated
    masks is common), so it is not a chance level for real data.

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.
        masks: Object masks, shape `(N, H, W)`: bool, or float weights in
            `[0, 1]`.
        baseline: `"permutation"` (default) or `"area"`. With one probe,
            `"permutation"` falls back to `"area"`.

    Returns:
        float64 array of shape `(N,)`, values `>= 0`. NaN where focus or its
        chance level is undefined or zero (an empty mask, an all-zero map, a map
        holding NaN or inf, or a map with no mass on any other probe's mask).

    Raises:
        ValueError: As `focus`, or for an unknown `baseline`.
    """
    if baseline not in ("permutation", "area"):
        raise ValueError(
            'Invalid value for argument `baseline`: expected "permutation" or "area", '
            f"received baseline={baseline!r}."
        )
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps)
    if baseline == "area":
        own = _focus(maps, masks)
        chance = masks.mean(axis=(1, 2))
    else:
        own, chance = _focus_and_chance(maps, masks)
    out = np.full(maps.shape[0], np.nan)
    np.divide(own, chance, out=out, where=np.isfinite(own) & (chance > 0))
    return out


def mean_focus_lift(maps, masks) -> float:
    """The run-level focus lift: mean focus over mean chance (permutation baseline).

        lift = mean_n focus(S_n, M_n) / mean_n chance_n

    over the probes where both are defined. A ratio of means rather than a mean
    of ratios: one probe whose map misses every other mask (chance 0) does not
    make it infinite. For masks shuffled across probes it is about 1.0: a map's
    focus on a shuffled-in mask is, on average over shuffles, its chance level.

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.
        masks: Object masks, shape `(N, H, W)`.

    Returns:
        A float; NaN if no probe is defined or the chance level is 0.
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps)
    own, chance = _focus_and_chance(maps, masks)
    both = np.isfinite(own) & np.isfinite(chance)
    if not both.any() or chance[both].sum() <= 0:
        return float("nan")
    return float(own[both].sum() / chance[both].sum())


def mask_contrast(masks) -> float:
    """The highest run-level focus lift these masks allow: the lift of maps equal to the masks.

    It measures how much the probes' masks differ from each other, so how much
    `mean_focus_lift` can say. Masks at random places score several; objects
    that all sit in the middle score little above 1.0, and identical masks
    score exactly 1.0: a map on the object cannot then be told from a map on a
    fixed place in the middle, and the lift is not evidence either way.

    Args:
        masks: Object masks, shape `(N, H, W)`: bool, or float weights in
            `[0, 1]`.

    Returns:
        A float `>= 1`; inf for disjoint masks, NaN for fewer than two
        non-empty masks.
    """
    raw = np.asarray(masks)
    if raw.ndim != 3:
        raise ValueError(
            "Invalid value for argument `masks`: expected shape (N, H, W), one mask per probe, "
            f"received shape {raw.shape}."
        )
    weights = _check_masks(raw, np.empty(raw.shape))
    weights = weights[weights.sum(axis=(1, 2)) > 0]
    if len(weights) < 2:
        return float("nan")
    own, chance = _focus_and_chance(weights, weights)
    # Disjoint masks: a perfect map never lands on another probe's mask.
    return float(own.sum() / chance.sum()) if chance.sum() > 0 else float("inf")


def pointing_game(maps, masks, tolerance: float = 0) -> np.ndarray:
    """Whether each map's most salient pixel lies on, or near, the object.

    The pointing game of Zhang, Bargal, Lin, Brandt, Shen and Sclaroff (2018),
    "Top-down neural attention by excitation backprop", IJCV 126: a hit (1.0)
    if the maximum of the map lies within `tolerance` pixels of the object, a
    miss (0.0) otherwise. The mean over probes is the hit rate.

    Distances are Euclidean, between pixel centres, at the resolution of the
    maps: a hit when `min over mask pixels (i, j) of sqrt((r - i)^2 + (c - j)^2)
    <= tolerance`, with `(r, c)` the most salient pixel. This equals dilating
    the mask with a disk of radius `tolerance`. Zhang et al. use 15 pixels on
    the original image; scale it to the map resolution. A pixel belongs to the
    mask where its weight is > 0, so a soft mask counts by its support. If
    several pixels share the maximum, the first in C (row-major) order is
    taken, i.e. the top-most, then left-most one.

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.
        masks: Object masks, shape `(N, H, W)`: bool, or float weights in
            `[0, 1]`.
        tolerance: Hit radius in pixels, a finite number `>= 0`; 0 means the
            maximum must be on a mask pixel. Defaults to `0`.

    Returns:
        float64 array of shape `(N,)` of 0.0 (miss) and 1.0 (hit). NaN for a
        probe whose mask is empty, or whose map is all zero (it points
        nowhere) or holds NaN or inf.

    Raises:
        ValueError: As `focus`, or if `tolerance` is negative or not finite.
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps)
    tolerance = _check_tolerance(tolerance)
    n, h, w = maps.shape
    flat = maps.reshape(n, h * w)
    # argmax returns the first maximum in C order, or the first NaN if any.
    peak_index = np.argmax(flat, axis=1)  # (N,)
    peak = flat[np.arange(n), peak_index]
    r, c = np.divmod(peak_index, w)
    support = masks > 0  # (N, H, W)
    if tolerance < 1:
        # Centres of distinct pixels are at least 1 apart: only the peak itself counts.
        hit = support[np.arange(n), r, c]
    else:
        # Squared distances from the peak: (N, H) rows and (N, W) columns,
        # broadcast to (N, H, W). One pass, no per-probe distance transform.
        dy2 = (np.arange(h)[None, :] - r[:, None]) ** 2
        dx2 = (np.arange(w)[None, :] - c[:, None]) ** 2
        near = (dy2[:, :, None] + dx2[:, None, :]) <= tolerance * tolerance
        hit = (near & support).any(axis=(1, 2))
    defined = np.isfinite(peak) & (peak > 0) & support.any(axis=(1, 2))
    return np.where(defined, hit.astype(np.float64), np.nan)


def nanmean(x) -> float:
    """Mean over the values that are not NaN, as a Python float.

    Use it to summarise per-probe metrics, where NaN marks probes for which the
    metric is undefined. Unlike `np.nanmean` it emits no `RuntimeWarning`
    when every value is NaN (or there are none).

    Args:
        x: Array-like of any shape, e.g. the `(N,)` output of a metric.

    Returns:
        The mean of the non-NaN values, or NaN if there are none.
    """
    values = np.asarray(x, dtype=np.float64)
    missing = np.isnan(values)
    count = values.size - int(np.count_nonzero(missing))
    if count == 0:  # np.nanmean warns ("Mean of empty slice"); that is plain NaN here
        return float("nan")
    # np.nanmean's own arithmetic (NaNs as 0, summed, over the count): the same value, without
    # its checks and copies (about 15 us a call, a dozen calls an epoch).
    return float(np.where(missing, 0.0, values).sum() / count)

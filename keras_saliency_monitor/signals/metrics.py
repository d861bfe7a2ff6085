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
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from scipy import special

__all__ = [
    "border_band",
    "border_ratio",
    "border_share",
    "concentration",
    "focus",
    "focus_chance",
    "focus_lift",
    "mask_contrast",
    "mean_focus_lift",
    "masks_from_boxes",
    "nanmean",
    "place_agreement",
    "pointing_game",
    "probe_skill",
    "rank_correlation",
    "shortcut_indicators",
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
    # cross[n, m] = saliency mass of map n inside mask m. einsum, not `@`: no BLAS thread pool
    # on the training thread (see `concentration`); N x N x H*W is small.
    cross = np.einsum("nk,mk->nm", np.where(defined[:, None], flat, 0.0), weights)
    own = np.full(n, np.nan)
    np.divide(np.diagonal(cross), total, out=own, where=defined)
    # Empty masks are no object: no focus of their own, and not part of the others' chance.
    nonempty = weights.sum(axis=1) > 0
    own[~nonempty] = np.nan
    count = nonempty.sum() - nonempty  # (N,): other probes with a mask
    kept = np.einsum("nm,m->n", cross, nonempty.astype(np.float64))
    kept -= np.diagonal(cross) * nonempty
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


# ----------------------------------------------------------------------------
# Mask-free shortcut indicators
# ----------------------------------------------------------------------------


def border_band(height: int, width: int, fraction: float = 1 / 8) -> np.ndarray:
    """The outer band of an image: `(H, W)` bool, True within `fraction` of the side of an edge.

    The band is `max(1, round(fraction * min(H, W)))` pixels wide on every side.
    """
    height = _check_size(height, "height")
    width = _check_size(width, "width")
    if not (isinstance(fraction, numbers.Real) and 0 < fraction < 0.5):
        raise ValueError(
            "Invalid value for argument `fraction`: expected a number in (0, 0.5), the band's "
            f"width as a fraction of the image side, received fraction={fraction!r}."
        )
    b = max(1, round(fraction * min(height, width)))
    band = np.ones((height, width), bool)
    band[b : height - b, b : width - b] = False
    return band


def border_share(maps, fraction: float = 1 / 8, power: float = 2.0) -> np.ndarray:
    """Share of each map's saliency energy in the outer band of the image (`border_band`).

        share_n = sum_{band} S_n^power / sum S_n^power

    With the default `power=2` the squared map is used, the saliency's energy
    (as in SmoothGrad-squared, Hooker et al. 2019): a map's hot spots count
    more than the faint leak that gradients spread around them. Measured on the
    shortcut suite (`benchmarks/shortcuts.py`), the energy separated the runs
    better than the plain mass (`power=1`): the alarm caught a stamp in a
    random corner in 19 of 20 runs of the four gradient methods instead of 13,
    while clean runs stayed at a border ratio of at most 0.45. A uniform map
    scores the band's share of the image (about 0.44 for the default band)
    whatever the power.

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.
        fraction: Width of the band as a fraction of the shorter side.
        power: Exponent applied to the map first, `> 0`; 1 gives the share of
            the saliency mass.

    Returns:
        float64 array of shape `(N,)` in `[0, 1]`; NaN for an all-zero map or
        one holding NaN or inf.
    """
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not power > 0:
        raise ValueError(
            "Invalid value for argument `power`: expected a number > 0 (2 = saliency energy), "
            f"received power={power!r}."
        )
    maps = _check_maps(maps)
    return _border_share(maps, border_band(maps.shape[1], maps.shape[2], fraction), power)


def _border_share(maps: np.ndarray, band: np.ndarray, power: float) -> np.ndarray:
    """`border_share` on validated maps and a validated `(H, W)` band."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    # Divide by each map's maximum first, so that squaring cannot overflow; a map with NaN or
    # inf stays non-finite and comes out NaN.
    peak = flat.max(axis=1, initial=0.0)
    usable = ((peak > 0) & np.isfinite(peak))[:, None]
    scaled = np.divide(flat, peak[:, None], out=np.zeros_like(flat), where=usable)
    scaled[~np.isfinite(peak)] = np.nan
    if power != 1:
        scaled **= power
    return _focus(scaled.reshape(maps.shape), np.broadcast_to(band, maps.shape))


def border_ratio(share, band_share: float) -> np.ndarray | float:
    """Saliency (energy) density in the border band over the density inside it.

        ratio = (share / band_share) / ((1 - share) / (1 - band_share))

    1.0 is chance: a uniform map, or any map as dense at the edges as in the
    middle. Objects usually sit inside the image, so a model looking at them
    scores well below 1; artefacts at a fixed place at the edges (a
    watermark, a corner tag, a stamp, a frame) push it above 1.

    Args:
        share: `border_share` values (any shape), or their mean over probes for
            the run-level number.
        band_share: the band's share of the image, `border_band(...).mean()`.

    Returns:
        The ratio, elementwise; inf where all mass is in the band, NaN where
        `share` is NaN.
    """
    s = np.asarray(share, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (s / band_share) / ((1.0 - s) / (1.0 - band_share))
    return float(out) if out.ndim == 0 else out


def place_agreement(maps, top: float = 0.05) -> np.ndarray:
    """How much each map sits where the *other* probes' maps sit (mask-free).

    For probe `n`, the other probes' normalised maps are averaged; their
    hottest `top` share of pixels is the place where saliency agrees. The
    value is the share of probe `n`'s mass in that place divided by `top`.
    1.0 is chance (uniform maps, or maps at places independent of each other);
    `1 / top` means every map has all its mass exactly where the others have
    theirs: a fixed place, whatever the image. A model looking at objects
    that move scores near 1; objects that all sit in the middle raise it too,
    so it is informative, not an alarm on its own.

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.
        top: Share of the pixels that make up the agreed place, in `(0, 1)`.

    Returns:
        float64 array of shape `(N,)` in `[0, 1 / top]`; NaN for a probe whose
        map is all zero or not finite, and for every probe when fewer than two
        maps are defined.
    """
    if not (isinstance(top, numbers.Real) and 0 < top < 1):
        raise ValueError(
            "Invalid value for argument `top`: expected a share of the pixels in (0, 1), "
            f"received top={top!r}."
        )
    maps = _check_maps(maps)
    n, h, w = maps.shape
    flat = maps.reshape(n, h * w)
    total = flat.sum(axis=1)
    defined = np.isfinite(total) & (total > 0)
    out = np.full(n, np.nan)
    if defined.sum() < 2:
        return out
    p = flat[defined] / total[defined, None]
    others = (p.sum(axis=0) - p) / (len(p) - 1)  # leave-one-out mean map, (n, K)
    k = max(1, int(round(top * h * w)))
    hot = np.argpartition(others, h * w - k, axis=1)[:, h * w - k :]  # (n, k)
    inside = np.take_along_axis(p, hot, axis=1).sum(axis=1)
    out[defined] = inside / (k / (h * w))
    return out


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


def concentration(maps) -> np.ndarray:
    """Gini coefficient of each map: how concentrated its saliency is.

    With `x_(1) <= ... <= x_(n)` the `n = H * W` values of a map in ascending
    order (`i` 1-based),

        G = sum_i (2 i - n - 1) x_(i) / (n * sum_i x_(i))

    0 means a uniform map; the maximum, `(n - 1) / n` (-> 1 for large maps),
    means all mass in one pixel. Of the sparsity measures compared by Hurley
    and Rickard (2009), "Comparing measures of sparsity", IEEE Trans.
    Information Theory 55(10), the Gini index is one of two that satisfy all
    six of their criteria; it is scale-invariant, so raw maps of any magnitude
    compare. A rising G over epochs means the saliency gathers on fewer pixels.

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.

    Returns:
        float64 array of shape `(N,)` with values in `[0, (n - 1) / n]`. NaN for
        a probe whose map is all zero or holds NaN or inf.

    Raises:
        ValueError: If `maps` is not `(N, H, W)` with values `>= 0`.
    """
    # float32 maps are sorted as they are (the order is exact and the sort
    # faster), then summed in float64.
    maps = _check_maps(maps, keep_float32=True)
    n_probes = maps.shape[0]
    size = maps.shape[1] * maps.shape[2]
    ascending = np.sort(maps.reshape(n_probes, size), axis=1).astype(np.float64, copy=False)
    total = ascending.sum(axis=1)
    weights = 2.0 * np.arange(1, size + 1) - size - 1.0  # (n,): 2i - n - 1
    # einsum, not `@`: a BLAS call here runs on OpenBLAS's thread pool, which contends with
    # TensorFlow's threads on the training thread right after the gradient (5-10% of a call).
    numerator = np.einsum("nk,k->n", ascending, weights)
    defined = np.isfinite(total) & (total > 0)
    out = np.full(n_probes, np.nan)
    np.divide(numerator, size * total, out=out, where=defined)
    # Rounding can leave a uniform map at -1e-17; G >= 0 for non-negative values.
    return np.maximum(out, 0.0)


def _centred_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of each row of `x` minus their mean, ties given their average rank.

    Equals `scipy.stats.rankdata(x, axis=1) - (M + 1) / 2` for finite input; the
    values are multiples of 1/2. float32 input (what the callback ranks) takes our
    own path: one sort of int64 words packing (value key, flat index) instead of
    an argsort and a gather; anything else goes to `scipy.stats.rankdata`.

    Args:
        x: float32 or float64 array of shape `(N, M)`.

    Returns:
        float64 array of shape `(N, M)`. A row holding NaN has no meaningful ranks (all NaN
        from rankdata): `rank_maps` flags it as not finite.
    """
    n, m = x.shape
    if x.dtype != np.float32 or n == 0 or n * m >= 2**31:
        from scipy import stats  # ~0.8 s to import, and only this path needs it

        return stats.rankdata(x, axis=1) - (m + 1) / 2.0
    # Ours, not rankdata (benchmarks/libraries.py): 2.3 vs 11.8 ms for 32 maps 64x64, +23% of
    # the 42.6 ms gradient floor per epoch on the training thread; 18 vs 89 ms at 16x224x224, +9%.
    # Each int64 word holds an order key of the value in its high 32 bits
    # and the flat index r * M + c in its low 32 bits, so one plain sort
    # per row yields both the sorted keys and the permutation.
    packed = np.empty((n, m), dtype=np.int64)
    words = packed.view(np.int32).reshape(n, m, 2)
    lo, hi = (0, 1) if np.little_endian else (1, 0)
    # The key: an int32 in the order of the floats. Non-negative floats
    # already compare like their bit patterns (the common case: saliency
    # is >= 0); for negative ones, flip the 31 magnitude bits, after `+ 0`
    # has turned -0.0 into +0.0 so that the two zeros tie.
    bits = x.view(np.int32)
    if (bits < 0).any():  # a sign bit is set somewhere
        bits = (x + np.float32(0)).view(np.int32)
        key = bits >> 31  # 0 or -1
        key &= 0x7FFFFFFF
        key ^= bits
        bits = key
    words[:, :, hi] = bits
    words[:, :, lo] = np.arange(n * m, dtype=np.int32).reshape(n, m)
    packed.sort(axis=1)
    ascending = words[:, :, hi]  # (N, M) strided view: the sorted keys
    # Runs of equal values in sorted order; every row starts a new run, so in
    # the flattened (N * M,) view a run never spans two rows.
    starts_run = np.empty(n * m, dtype=bool)
    starts_run.reshape(n, m)[:, 0] = True
    np.not_equal(ascending[:, 1:], ascending[:, :-1], out=starts_run.reshape(n, m)[:, 1:])
    ends_run = np.empty(n * m, dtype=bool)
    ends_run[:-1] = starts_run[1:]
    ends_run[-1] = True
    # Centred ranks in sorted order: the 1-based position in the row minus
    # (M + 1) / 2, then the average over each run of ties.
    sorted_ranks = np.tile(np.arange(1.0, m + 1.0) - (m + 1) / 2.0, n)  # (N * M,)
    tied = np.flatnonzero(~(starts_run & ends_run))  # positions in runs of length > 1
    if tied.size:
        # Typically few for float maps, many in few runs for quantised ones.
        is_start = starts_run[tied]
        starts = tied[is_start] % m  # position in the row
        lengths = np.diff(np.append(np.flatnonzero(is_start), tied.size))
        # Average of the 1-based positions start + 1 .. start + length, centred.
        average = starts + (lengths + 1) / 2.0 - (m + 1) / 2.0
        sorted_ranks[tied] = np.repeat(average, lengths)
    packed &= 0xFFFFFFFF  # keep the low 32 bits: the flat indices
    ranks = np.empty(n * m)
    ranks[packed.ravel()] = sorted_ranks  # back to pixel order
    return ranks.reshape(n, m)


def rank_correlation(maps_a, maps_b) -> np.ndarray:
    """Spearman rank correlation between two sets of maps, probe by probe.

    Spearman (1904), "The proof and measurement of association between two
    things", Am. J. Psychology 15: the Pearson correlation of the pixel ranks,

        rho_n = cov(R(a_n), R(b_n)) / (std(R(a_n)) * std(R(b_n)))

    where `R` ranks the `H * W` values of a map, tied values getting the average
    of their ranks (as `scipy.stats.spearmanr`). Adebayo et al. (2018), "Sanity
    checks for saliency maps", NeurIPS, compare saliency maps this way. Between
    two epochs' maps of the same probes it measures stability: 1.0 means the
    same pixel ordering, near 0 a reshuffle. Ranks ignore any rescaling of a
    map, so a change in gradient magnitude alone does not count. float32 maps
    (what `compute_saliency` returns) are ranked faster than float64 ones.

    Args:
        maps_a: Maps, shape `(N, H, W)`, e.g. of the previous epoch. Any real
            values: signed attributions are accepted too.
        maps_b: Maps of the same probes, same shape, e.g. of this epoch.

    Returns:
        float64 array of shape `(N,)` with values in `[-1, 1]`. NaN for a probe
        where either map is constant (e.g. all zero) or holds NaN or inf.

    Raises:
        ValueError: If `maps_a` is not `(N, H, W)`, or `maps_b` differs from it
            in shape.
    """
    a = _check_maps(maps_a, "maps_a", nonnegative=False, keep_float32=True)
    b = _check_maps(maps_b, "maps_b", nonnegative=False, keep_float32=True)
    if b.shape != a.shape:
        raise ValueError(
            f"Invalid value for argument `maps_b`: expected shape (N, H, W) = {a.shape} "
            f"matching `maps_a`, received {b.shape}."
        )
    return rank_correlation_of(rank_maps(a), rank_maps(b))


class RankedMaps(NamedTuple):
    """Maps reduced to what `rank_correlation` needs, so that each map is ranked once."""

    ranks: np.ndarray  # (N, H * W) float64: centred pixel ranks, ties averaged
    sum_squares: np.ndarray  # (N,) float64: sum of the squared centred ranks
    finite: np.ndarray  # (N,) bool: the map holds no NaN or inf


def rank_maps(maps) -> RankedMaps:
    """Ranks each map's pixels once, for `rank_correlation_of`.

    The callback ranks each epoch's maps once and correlates them with the previous epoch's
    ranks, instead of ranking both epochs' maps again every epoch (`rank_correlation`).

    Args:
        maps: Maps, shape `(N, H, W)`, any real values.

    Returns:
        A `RankedMaps`.
    """
    m = _check_maps(maps, nonnegative=False, keep_float32=True)
    flat = m.reshape(m.shape[0], m.shape[1] * m.shape[2])
    # Ranks minus their mean (size + 1) / 2: multiples of 1/2, so the sums of
    # products are exact for maps of up to about 500 x 500 pixels.
    ranks = _centred_ranks(flat)
    return RankedMaps(ranks, np.einsum("nk,nk->n", ranks, ranks), np.isfinite(flat).all(axis=1))


def rank_correlation_of(a: RankedMaps, b: RankedMaps) -> np.ndarray:
    """`rank_correlation` of two sets of maps ranked by `rank_maps`, probe by probe.

    Raises:
        ValueError: If `a` and `b` were ranked from maps of different shapes.
    """
    if a.ranks.shape != b.ranks.shape:
        raise ValueError(
            "Invalid value for argument `b`: expected maps ranked from the same (N, H * W) = "
            f"{a.ranks.shape} as `a`, received {b.ranks.shape}."
        )
    cross = np.einsum("nk,nk->n", a.ranks, b.ranks)
    spread = np.sqrt(a.sum_squares * b.sum_squares)
    defined = a.finite & b.finite & (spread > 0)
    out = np.full(len(cross), np.nan)
    np.divide(cross, spread, out=out, where=defined)
    return np.clip(out, -1.0, 1.0)


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
    if k == 1:  # one sigmoid unit: class 1 when the logit is > 0
        predicted = (z[:, 0] > 0).astype(np.int64)
        confidence = special.expit(np.abs(z[:, 0]))
        k = 2
    else:
        predicted = np.argmax(z, axis=1)
        if kind == "sigmoid":
            confidence = None  # independent units: no probability of "the" predicted class
        else:
            confidence = special.softmax(z, axis=1).max(axis=1)  # probability of the argmax
    if labels is not None:
        score = float(np.mean(predicted == np.asarray(labels).reshape(-1)))
    elif confidence is not None:
        score = float(np.mean(confidence))
    else:
        return float("nan")
    chance = 1.0 / k
    return (score - chance) / (1.0 - chance)


def shortcut_indicators(maps, masks=None, contrast=None):
    """The numbers the shortcut alarm reads, from one epoch's maps (and masks, if any).

    Args:
        maps: Raw saliency maps, shape `(N, H, W)`, values `>= 0`.
        masks: Optional object masks, shape `(N, H, W)`.
        contrast: `mask_contrast(masks)` if already known (the masks are fixed
            for a run, so a caller measuring every epoch computes it once).

    Returns:
        `(run, per_probe)`: `run` holds the run-level `border_ratio` (from the
        mean `border_share`), `place_agreement` (mean) and, with masks,
        `focus_lift` (`mean_focus_lift`) and `mask_contrast`; `per_probe` holds
        `(N,)` arrays `border_share`, `place_agreement` and, with masks,
        `focus_lift`.
    """
    maps = _check_maps(maps)
    band = border_band(maps.shape[1], maps.shape[2])
    per_probe = {
        "border_share": _border_share(maps, band, 2.0),
        "place_agreement": place_agreement(maps),
    }
    run = {
        "border_ratio": border_ratio(nanmean(per_probe["border_share"]), float(band.mean())),
        "place_agreement": nanmean(per_probe["place_agreement"]),
    }
    if masks is not None:
        weights = _check_masks(masks, maps)
        own, chance = _focus_and_chance(maps, weights)
        lift = np.full(len(own), np.nan)
        np.divide(own, chance, out=lift, where=np.isfinite(own) & (chance > 0))
        per_probe["focus_lift"] = lift
        both = np.isfinite(own) & np.isfinite(chance)
        total_chance = chance[both].sum()
        run["focus_lift"] = float(own[both].sum() / total_chance) if total_chance > 0 else np.nan
        run["mask_contrast"] = mask_contrast(weights) if contrast is None else float(contrast)
    return run, per_probe


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
    return _fill(images, masks), _fill(images, control)


def _fill(images, regions):
    out = images.copy()
    for i, region in enumerate(regions):
        rest = images[i][~region]
        if region.any() and len(rest):
            out[i][region] = rest.mean(axis=0)
    return out


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
    z = [np.asarray(a, np.float64) for a in (logits, without_object, without_control)]
    n, k = z[0].shape
    if n == 0 or (k == 1 and kind != "sigmoid"):
        return float("nan"), np.full(n, np.nan)
    if k == 1:  # one sigmoid unit: the probability of the side the intact probe is on
        side = np.where(z[0][:, 0] > 0, 1.0, -1.0)
        p = [special.expit(side * a[:, 0]) for a in z]
        chance = 0.5
    else:
        rows, cls = np.arange(n), np.argmax(z[0], axis=1)
        if kind == "sigmoid":
            p = [special.expit(a[rows, cls]) for a in z]
            chance = 0.5
        else:
            p = [special.softmax(a, axis=1)[rows, cls] for a in z]
            chance = 1.0 / k
    above = p[0] - chance
    per_probe = np.full(n, np.nan)
    np.divide(p[2] - p[1], above, out=per_probe, where=above > 1e-6)
    counted = np.ones(n, bool)
    labels = None if labels is None else np.asarray(labels)
    if labels is not None and labels.shape == (n,):  # class ids (not multi-hot rows)
        predicted = (z[0][:, 0] > 0) if k == 1 else np.argmax(z[0], axis=1)
        counted = predicted == labels
    total = above[counted].sum()
    run = (p[2] - p[1])[counted].sum() / total if total > 1e-6 else np.nan
    return float(run), per_probe


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
    # np.nanmean warns ("Mean of empty slice") when nothing is left; that is plain NaN here.
    return float("nan") if np.isnan(values).all() else float(np.nanmean(values))

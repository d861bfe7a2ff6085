"""Mask-free shortcut indicators: where the maps look, read without masks (numpy).

The border band and the share of saliency in it (:func:`border_share`, :func:`border_ratio`),
the place where the probes' maps agree (:func:`place_agreement`), how concentrated each map is
(:func:`concentration`), and :func:`shortcut_indicators`, the numbers the alarm reads. The
conventions (raw ``(N, H, W)`` maps, NaN where undefined) are those of
:mod:`~keras_saliency_monitor.signals.metrics`.
"""

from __future__ import annotations

import numbers

import numpy as np

from keras_saliency_monitor.signals.metrics import (
    _check_maps,
    _check_masks,
    _check_size,
    _focus,
    _focus_and_chance,
    mask_contrast,
    nanmean,
)

__all__ = [
    "border_band",
    "border_ratio",
    "border_share",
    "concentration",
    "place_agreement",
    "shortcut_indicators",
]


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
    usable = (peak > 0) & np.isfinite(peak)
    if usable.all():  # the usual epoch: the same quotients, without zero-filling first
        scaled = np.divide(flat, peak[:, None])
    else:
        scaled = np.divide(flat, peak[:, None], out=np.zeros_like(flat), where=usable[:, None])
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
    # The same values as flat[defined] / total[defined, None] and (sum - p) / (n - 1), with two
    # fewer (N, H * W) arrays made per call (no copy when every map is defined; in place).
    if defined.all():
        p = flat / total[:, None]
    else:
        p = flat[defined] / total[defined, None]
    others = np.subtract(p.sum(axis=0), p)
    others /= len(p) - 1  # leave-one-out mean map, (n, K)
    k = max(1, int(round(top * h * w)))
    hot = np.argpartition(others, h * w - k, axis=1)[:, h * w - k :]  # (n, k)
    inside = np.take_along_axis(p, hot, axis=1).sum(axis=1)
    out[defined] = inside / (k / (h * w))
    return out


def concentration(maps, ascending=None) -> np.ndarray:
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
        ascending: optional float32 `(N, H * W)`: each of these maps' values sorted ascending,
            as `np.sort` gives them, when already at hand (`stability.rank_maps(maps).ascending`:
            the ranking's sort, shared, saves a sort of every map per epoch); None sorts here.

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
    if ascending is None or np.shape(ascending) != (n_probes, size):
        ascending = np.sort(maps.reshape(n_probes, size), axis=1)
    ascending = ascending.astype(np.float64, copy=False)
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

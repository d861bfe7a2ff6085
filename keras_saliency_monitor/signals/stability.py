"""How a map changes: rank correlations between two sets of maps (numpy).

Spearman's rank correlation per probe (:func:`rank_correlation`), and its two halves for maps
ranked once and compared many times (:func:`rank_maps`, :func:`rank_correlation_of`: the
epoch-to-epoch stability and the sanity check). The conventions are those of
:mod:`~keras_saliency_monitor.signals.metrics`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from keras_saliency_monitor.signals.metrics import _check_maps

__all__ = ["RankedMaps", "rank_correlation", "rank_correlation_of", "rank_maps"]


def _centred_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of each row of `x` minus their mean, ties given their average rank (see
    `_ranks_and_sorted`)."""
    return _ranks_and_sorted(x)[0]


def _ranks_and_sorted(x: np.ndarray):
    """Ranks of each row of `x` minus their mean, ties given their average rank.

    Equals `scipy.stats.rankdata(x, axis=1) - (M + 1) / 2` for finite input; the
    values are multiples of 1/2. float32 input (what the callback ranks) takes our
    own path: one sort of int64 words packing (value key, flat index) instead of
    an argsort and a gather; anything else goes to `scipy.stats.rankdata`.

    Args:
        x: float32 or float64 array of shape `(N, M)`.

    Returns:
        `(ranks, ascending)`. `ranks`: float64 array of shape `(N, M)`; a row holding NaN has
        no meaningful ranks (all NaN from rankdata): `rank_maps` flags it as not finite.
        `ascending`: float32 `(N, M)`, each row's values sorted ascending, what `np.sort` gives
        (the sort is ours anyway, so `place.concentration` need not sort again), or None where
        our path did not sort the values themselves (not float32, or a sign bit set: -0.0,
        negative values, negative NaN).
    """
    n, m = x.shape
    if x.dtype != np.float32 or n == 0 or n * m >= 2**31:
        from scipy import stats  # ~0.8 s to import, and only this path needs it

        return stats.rankdata(x, axis=1) - (m + 1) / 2.0, None
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
    signed = bool((bits < 0).any())  # a sign bit is set somewhere
    if signed:
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
    # Centred ranks in sorted order: the 1-based position in the row minus (M + 1) / 2, the
    # same for every row; then, for each run of ties, the average of its positions.
    centred = np.arange(1.0, m + 1.0) - (m + 1) / 2.0  # (M,)
    tied = np.flatnonzero(~(starts_run & ends_run))  # positions in runs of length > 1
    if tied.size:
        # Typically few for float maps, many in few runs for quantised ones.
        is_start = starts_run[tied]
        starts = tied[is_start] % m  # position in the row
        lengths = np.diff(np.append(np.flatnonzero(is_start), tied.size))
        # Average of the 1-based positions start + 1 .. start + length, centred.
        average = starts + (lengths + 1) / 2.0 - (m + 1) / 2.0
    # Without a sign bit the keys are the floats' own bits, so the sorted keys are the sorted
    # values, bit for bit (NaN last, as np.sort puts them); read before the keys are cleared.
    values = None if signed else ascending.view(np.float32).copy()
    packed &= 0xFFFFFFFF  # keep the low 32 bits: the flat indices
    # Back to pixel order: every row's positions at once (broadcast, not an (N * M,) tiled
    # copy: 0.3 of rank_maps' 2.2 ms at 32 maps of 64x64), then the tied positions' averages.
    ranks = np.empty(n * m)
    ranks[packed] = centred
    if tied.size:
        ranks[packed.ravel()[tied]] = np.repeat(average, lengths)
    return ranks.reshape(n, m), values


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
    # (N, H * W) float32: each map's values sorted ascending (for place.concentration), or None
    # where the ranking did not sort the values themselves (see _ranks_and_sorted).
    ascending: np.ndarray | None = None


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
    ranks, ascending = _ranks_and_sorted(flat)
    squares = np.einsum("nk,nk->n", ranks, ranks)
    return RankedMaps(ranks, squares, np.isfinite(flat).all(axis=1), ascending)


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

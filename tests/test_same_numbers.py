"""The faster paths of an epoch's numbers give the numbers of the formulas they replaced.

Issue 22's cost cuts must not move a logged number or an alarm: each test keeps the replaced
formula here, as it was written before the cut (or the definition), and compares the new function
with it on random maps that include ties, zeros, all-zero maps, NaN and inf. "Identical" means
bit for bit; where the summation order had to change, the bound is stated next to the test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_saliency_monitor.signals import metrics

SEEDS = range(12)


def _random_maps(rng, n=9, h=11, w=13, dtype=np.float32):
    """(N, H, W) maps >= 0 with the awkward cases: ties, zeros, an all-zero map, NaN, inf."""
    maps = rng.random((n, h, w)).astype(dtype)
    maps[0] = np.round(maps[0] * 4) / 4  # few distinct values: many ties
    maps[1, : h // 2] = 0  # half zero
    maps[2] = 0  # all zero: undefined
    maps[3, 2, 3] = np.nan  # broken
    maps[4, 0, 0] = np.inf
    maps[5] = maps[6]  # two identical maps
    maps[7] *= rng.random((h, w)) < 0.1  # sparse
    return maps[rng.permutation(n)]


def _random_masks(rng, n=9, h=11, w=13, soft=False):
    masks = rng.random((n, h, w)) < rng.uniform(0.05, 0.6, (n, 1, 1))
    masks[rng.integers(n)] = False  # an empty mask: no object
    if soft:
        return masks * rng.random((n, h, w))
    return masks


def _old_focus_and_chance(maps, masks):
    """metrics._focus_and_chance before issue 22's cut (main 0e86a9c): every map on every mask
    (an (N, N) einsum), then the others' mass as the sum over all masks minus the own one."""
    n = len(maps)
    flat, weights = maps.reshape(n, -1), masks.reshape(n, -1)
    total = flat.sum(axis=1)
    defined = np.isfinite(total) & (total > 0)
    cross = np.einsum("nk,mk->nm", np.where(defined[:, None], flat, 0.0), weights)
    with_object = weights.sum(axis=1) > 0
    safe_total = np.where(defined, total, 1.0)
    own = np.where(defined & with_object, np.diagonal(cross) / safe_total, np.nan)
    others = with_object.sum() - with_object
    summed = np.einsum("nm,m->n", cross, with_object.astype(np.float64))
    summed -= np.diagonal(cross) * with_object
    chance = np.where(defined & (others > 0), summed / np.maximum(others, 1) / safe_total, np.nan)
    return own, np.where(defined & (others == 0), weights.mean(axis=1), chance)


def _fsum_chance(maps, masks):
    """The definition, summed exactly (math.fsum): mean over the other non-empty masks m of
    focus(S_n, M_m)."""
    n = len(maps)
    out = np.full(n, np.nan)
    nonempty = [masks[m].sum() > 0 for m in range(n)]
    for i in range(n):
        total = math.fsum(maps[i].ravel())
        others = [m for m in range(n) if m != i and nonempty[m]]
        if not (np.isfinite(total) and total > 0) or not others:
            continue
        mass = [math.fsum((maps[i] * masks[m]).ravel()) for m in others]
        out[i] = math.fsum(mass) / len(others) / total
    return out


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_focus_and_chance_equals_the_all_pairs_formula(seed, soft):
    # Own focus: the same einsum over the same operands, bit for bit. Chance: the other masks'
    # weights are summed per pixel before the product instead of after, so the two differ by
    # rounding: both add non-negative terms (no cancellation), so the relative gap is below
    # 1e-12; the new one is never further than the old from the exactly summed definition.
    rng = np.random.default_rng(seed)
    maps = metrics._check_maps(_random_maps(rng))
    masks = metrics._check_masks(_random_masks(rng, soft=soft), maps)
    own, chance = metrics._focus_and_chance(maps, masks)
    old_own, old_chance = _old_focus_and_chance(maps, masks)
    np.testing.assert_array_equal(own, old_own)
    np.testing.assert_allclose(chance, old_chance, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(np.isnan(chance), np.isnan(old_chance))
    exact = _fsum_chance(maps, masks)
    np.testing.assert_allclose(chance, exact, rtol=1e-13, atol=0)


def test_focus_and_chance_single_probe_and_all_empty_masks():
    rng = np.random.default_rng(0)
    maps = metrics._check_maps(rng.random((1, 5, 6)))
    masks = metrics._check_masks(rng.random((1, 5, 6)) < 0.3, maps)
    for a, b in zip(metrics._focus_and_chance(maps, masks), _old_focus_and_chance(maps, masks)):
        np.testing.assert_array_equal(a, b)
    maps = metrics._check_maps(rng.random((4, 5, 6)))
    empty = np.zeros((4, 5, 6))
    for a, b in zip(metrics._focus_and_chance(maps, empty), _old_focus_and_chance(maps, empty)):
        np.testing.assert_array_equal(a, b)


def test_focus_and_chance_on_the_monitors_shape():
    # 32 maps of 64x64, box masks, as benchmarks/overhead.py measures.
    rng = np.random.default_rng(1)
    maps = metrics._check_maps(rng.gamma(0.5, size=(32, 64, 64)).astype(np.float32))
    y0, x0 = rng.integers(0, 40, (2, 32))
    boxes = np.stack([y0, x0, y0 + 24, x0 + 20], axis=1)
    masks = metrics._check_masks(metrics.masks_from_boxes(boxes, 64, 64), maps)
    own, chance = metrics._focus_and_chance(maps, masks)
    old_own, old_chance = _old_focus_and_chance(maps, masks)
    np.testing.assert_array_equal(own, old_own)
    np.testing.assert_allclose(chance, old_chance, rtol=1e-12, atol=0)

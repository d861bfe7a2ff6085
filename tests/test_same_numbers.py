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

from keras_saliency_monitor.signals import interventions, metrics, place, reliance, stability

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


def _old_concentration(maps):
    """place.concentration before issue 22's cut: its own sort of every map, then the Gini sum
    (the same weights and float64 sums)."""
    values = np.asarray(maps, np.float32 if np.asarray(maps).dtype == np.float32 else np.float64)
    n, size = len(values), values[0].size
    ascending = np.sort(values.reshape(n, size), axis=1).astype(np.float64)
    total = ascending.sum(axis=1)
    weights = 2.0 * np.arange(1, size + 1) - size - 1.0
    gini = np.einsum("nk,k->n", ascending, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(np.isfinite(total) & (total > 0), gini / (size * total), np.nan)
    return np.maximum(out, 0.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_concentration_from_the_rankings_sort_is_bit_identical(seed):
    rng = np.random.default_rng(seed)
    maps = _random_maps(rng)
    ranked = stability.rank_maps(maps)
    assert ranked.ascending is not None  # float32 maps without a sign bit: the sort is shared
    np.testing.assert_array_equal(
        ranked.ascending[np.isfinite(ranked.ascending).all(axis=1)],
        np.sort(maps.reshape(len(maps), -1), axis=1)[np.isfinite(ranked.ascending).all(axis=1)],
    )
    shared = place.concentration(maps, ranked.ascending)
    np.testing.assert_array_equal(shared, _old_concentration(maps))
    np.testing.assert_array_equal(shared, place.concentration(maps))
    # The ranks themselves did not change: the same as ranking without the sorted values.
    np.testing.assert_array_equal(ranked.ranks, stability._centred_ranks(maps.reshape(9, -1)))


@pytest.mark.parametrize("case", ["negative_zero", "float64", "float16", "negative_nan"])
def test_concentration_without_a_shared_sort_sorts_itself(case):
    # Where the ranking's keys are not the values' own bits (a sign bit set) or the ranking is
    # scipy's (not float32), nothing is shared and concentration sorts as before.
    rng = np.random.default_rng(3)
    maps = _random_maps(rng)
    if case == "negative_zero":
        maps[np.nan_to_num(maps) < 0.2] = -0.0
    elif case == "float64":
        maps = maps.astype(np.float64)
    elif case == "float16":
        maps = maps.astype(np.float16)
    else:
        maps[1, 0, 0] = -np.float32(np.nan)
    ranked = stability.rank_maps(maps)
    if case == "float16":  # held exactly in float32, so ranked (and sorted) as float32
        assert ranked.ascending is not None
    else:
        assert ranked.ascending is None
    np.testing.assert_array_equal(
        place.concentration(maps, ranked.ascending), _old_concentration(maps.astype(np.float32))
    )


def test_painted_probes_into_a_batchs_tail_are_the_new_arrays_bit_for_bit():
    rng = np.random.default_rng(4)
    x = rng.random((8, 16, 12, 3), dtype=np.float32)
    maps = _random_maps(rng, n=8, h=16, w=12)
    maps[np.isnan(maps) | np.isinf(maps)] = 0.5  # the monitor asks only finite maps
    offsets = interventions.control_offsets(8, 16, 12)
    prepared = interventions.prepare(x)
    for asked in (np.arange(4), np.arange(4, 8), None):
        new = interventions.painted_probes(x, maps, offsets, prepared, asked)
        batch = np.full((5 + len(new.images),) + x.shape[1:], -7.0, np.float32)
        into = interventions.painted_probes(x, maps, offsets, prepared, asked, out=batch[5:])
        np.testing.assert_array_equal(into.images, new.images)
        np.testing.assert_array_equal(batch[5:], new.images)  # written in place
        assert (batch[:5] == -7.0).all()  # the head of the batch is left alone
        np.testing.assert_array_equal(into.hot, new.hot)
    with pytest.raises(ValueError, match="argument `out`"):
        interventions.painted_probes(x, maps, offsets, prepared, np.arange(4), out=batch[:3])


def test_epoch_numbers_ask_the_model_the_concatenated_batch_and_leave_its_head_alone(tmp_path):
    # With masks, the forward pass gets this epoch's group of the reliance inputs, then this
    # epoch's painted probes (written into a kept batch, not concatenated): the very images
    # concatenation gave.
    keras = pytest.importorskip("keras")
    from keras_saliency_monitor import SaliencyMonitor

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((12, 16, 16, 3), dtype=np.float32)
    y = np.arange(12) % 2
    masks = np.zeros((12, 16, 16), bool)
    for i in range(12):
        masks[i, i % 5 : i % 5 + 8, 3:11] = True
    monitor = SaliencyMonitor(str(tmp_path), (x, y), num_probes=12, masks=masks, seed=0)
    monitor.set_model(model)
    monitor.on_train_begin()
    seen = []
    logits = monitor.explainer.logits
    monitor.explainer.logits = lambda images: seen.append(images.copy()) or logits(images)
    numbers = monitor._measure
    for epoch in range(3):
        logs = {"loss": 0.1, "accuracy": 0.99}
        if epoch:  # as the callback does: reliance's pass sent before the gradient
            numbers.start()
        window_turn = numbers._window.turn if numbers._window is not None else 0
        reliance_turn = epoch % 2  # reliance's 12 probes take turns in 2 groups of 6
        before = len(seen)
        explanation = monitor.explainer.explain(monitor.probes.x, monitor.probes.labels)
        numbers(explanation, logs)
        asked = interventions.rotation(8, window_turn)
        painted = interventions.painted_probes(
            numbers._prepared.x,
            explanation.maps[:8],
            numbers._offsets,
            numbers._prepared,
            asked,
        )
        group = interventions.rotation(12, reliance_turn)
        reliance_part = np.concatenate(
            [s[group] for s in reliance.reliance_inputs(monitor.probes.x, monitor.probes.masks)]
        )
        # Two calls on the worker (reliance's beside the gradient, then the interventions'
        # beside the numbers): in order, the images of the one concatenated batch.
        assert len(seen) - before == 2
        sent = np.concatenate(seen[before:])
        np.testing.assert_array_equal(sent, np.concatenate([reliance_part, painted.images]))
        kernel = model.layers[0].kernel
        kernel.assign(kernel * 1.1 + 0.01)  # new weights, new maps next epoch
    monitor.on_train_end()


def _old_place_agreement(maps, top=0.05):
    """place.place_agreement before issue 22's cut: the defined maps' shares copied out, the
    leave-one-out mean made in new arrays, then the same partition (row by row here) and sum."""
    maps = np.asarray(maps, np.float64)
    n = len(maps)
    size = maps[0].size
    mass = maps.reshape(n, size).sum(axis=1)
    ok = np.isfinite(mass) & (mass > 0)
    if ok.sum() < 2:
        return np.full(n, np.nan)
    shares = maps.reshape(n, size)[ok] / mass[ok, None]
    loo = (shares.sum(axis=0) - shares) / (len(shares) - 1)
    k = max(1, int(round(top * size)))
    result = np.full(n, np.nan)
    for row, i in enumerate(np.flatnonzero(ok)):
        chosen = np.argpartition(loo[row], size - k)[size - k :]
        result[i] = shares[row][chosen].sum() / (k / size)
    return result


def _old_border_share(maps, fraction=1 / 8, power=2.0):
    """place.border_share before issue 22's cut: every map divided into a zero-filled array."""
    maps = np.asarray(maps, np.float64)
    n = len(maps)
    rows = maps.reshape(n, -1)
    peak = rows.max(axis=1, initial=0.0)
    ok = (peak > 0) & np.isfinite(peak)
    scaled = np.zeros_like(rows)
    np.divide(rows, peak[:, None], out=scaled, where=ok[:, None])
    scaled[~np.isfinite(peak)] = np.nan
    scaled **= power
    band = np.broadcast_to(place.border_band(*maps.shape[1:], fraction), maps.shape)
    energy = scaled.sum(axis=1)
    inside = np.einsum("nk,nk->n", scaled, band.reshape(n, -1))
    result = np.full(n, np.nan)
    np.divide(inside, energy, out=result, where=np.isfinite(energy) & (energy > 0))
    return result


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("all_defined", [False, True])
def test_place_agreement_and_border_share_are_bit_identical_to_the_copying_formulas(
    seed, all_defined
):
    rng = np.random.default_rng(seed)
    maps = _random_maps(rng).astype(np.float64)
    if all_defined:  # the usual epoch, where both now skip a copy
        maps = rng.random(maps.shape) ** 3
        maps[0] = np.round(maps[0] * 2) / 2 + 0.25  # ties at the cut
    for top in (0.05, 0.3):
        np.testing.assert_array_equal(
            place.place_agreement(maps, top), _old_place_agreement(maps, top)
        )
    for power in (1.0, 2.0, 0.5):
        np.testing.assert_array_equal(
            place.border_share(maps, power=power), _old_border_share(maps, power=power)
        )

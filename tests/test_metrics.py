"""Tests for keras_saliency_monitor.signals.metrics: numpy only, checked against hand-computed
values and independent references (scipy)."""

import math
import re
import warnings

import numpy as np
import pytest
from scipy import ndimage, stats

from keras_saliency_monitor.signals import learning, metrics, place, reliance, stability


def _rng(seed=0):
    return np.random.default_rng(seed)


def _box_mask(h, w, y0, x0, y1, x1):
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# ----------------------------------------------------------------------------
# masks_from_boxes
# ----------------------------------------------------------------------------


def test_masks_from_boxes_area_and_exclusive_ends():
    masks = metrics.masks_from_boxes([[2, 3, 5, 9], [0, 0, 8, 10]], height=8, width=10)
    assert masks.dtype == bool and masks.shape == (2, 8, 10)
    np.testing.assert_array_equal(masks[0], _box_mask(8, 10, 2, 3, 5, 9))
    assert masks[0].sum() == (5 - 2) * (9 - 3)
    assert masks[1].all()


def test_masks_from_boxes_clips_to_image():
    masks = metrics.masks_from_boxes(np.array([[-4, 6, 3, 99]]), height=8, width=10)
    np.testing.assert_array_equal(masks[0], _box_mask(8, 10, 0, 6, 3, 10))


def test_masks_from_boxes_fractional_box_covers_every_overlapped_pixel():
    masks = metrics.masks_from_boxes([[1.5, 0.2, 3.1, 1.0]], height=5, width=4)
    np.testing.assert_array_equal(masks[0], _box_mask(5, 4, 1, 0, 4, 1))


def test_masks_from_boxes_doc_example():
    got = metrics.masks_from_boxes([[1, 0, 3, 2]], height=4, width=3).astype(int)[0]
    np.testing.assert_array_equal(got, [[0, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_masks_from_boxes_empty_list_of_boxes():
    assert metrics.masks_from_boxes(np.zeros((0, 4)), height=3, width=3).shape == (0, 3, 3)


@pytest.mark.parametrize(
    "boxes, fragment",
    [
        (np.zeros(4), "received shape (4,)"),
        (np.zeros((2, 3)), "received shape (2, 3)"),
        ([["a", "b", "c", "d"]], "received dtype"),
        ([[0, 0, np.nan, 4]], "finite"),
        ([[0, 0, 4, 4], [5, 1, 5, 3]], "boxes[1] = (5, 1, 5, 3)"),  # y0 == y1
        ([[4, 1, 2, 3]], "boxes[0] = (4, 1, 2, 3)"),  # y0 > y1
        ([[1, 5, 3, 4]], "boxes[0]"),  # x0 > x1
        ([[20, 0, 30, 4]], "clips to (10.0, 0.0, 10.0, 4.0)"),  # entirely below the image
    ],
)
def test_masks_from_boxes_errors_name_the_argument_and_the_form(boxes, fragment):
    with pytest.raises(ValueError) as info:
        metrics.masks_from_boxes(boxes, height=10, width=10)
    message = str(info.value)
    assert "`boxes`" in message
    assert "(y0, x0, y1, x1)" in message
    assert fragment in message


def test_masks_from_boxes_error_uses_the_callers_argument_name():
    with pytest.raises(ValueError, match=r"argument `masks`.*masks\[0\]"):
        metrics.masks_from_boxes([[3, 3, 1, 1]], height=10, width=10, name="masks")


@pytest.mark.parametrize("height, width", [(0, 4), (4, -1), (2.5, 4), (True, 4)])
def test_masks_from_boxes_rejects_bad_image_size(height, width):
    with pytest.raises(ValueError, match="`height`|`width`"):
        metrics.masks_from_boxes([[0, 0, 1, 1]], height=height, width=width)


# ----------------------------------------------------------------------------
# focus and focus_lift
# ----------------------------------------------------------------------------


def test_focus_all_mass_inside_is_one_and_lift_is_inverse_share():
    mask = _box_mask(8, 8, 2, 2, 6, 4)  # 8 of 64 pixels: share 1/8
    saliency = np.where(mask, _rng().random((8, 8)) + 0.1, 0.0)
    np.testing.assert_allclose(metrics.focus(saliency[None], mask[None]), [1.0])
    np.testing.assert_allclose(metrics.focus_lift(saliency[None], mask[None]), [8.0])


def test_focus_of_a_uniform_map_is_the_mask_share_and_lift_is_one():
    masks = metrics.masks_from_boxes([[0, 0, 4, 4], [1, 2, 7, 8], [0, 0, 8, 8]], 8, 8)
    maps = np.full((3, 8, 8), 0.37)
    np.testing.assert_allclose(metrics.focus(maps, masks), [16 / 64, 36 / 64, 1.0])
    np.testing.assert_allclose(metrics.focus_lift(maps, masks, baseline="area"), [1.0, 1.0, 1.0])


def test_focus_on_a_2x2_map_by_hand():
    saliency = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    mask = np.array([[[True, False], [False, True]]])
    # Inside: 1 + 4 = 5 of a total 10.
    np.testing.assert_allclose(metrics.focus(saliency, mask), [0.5])
    # Share 2/4, so lift 0.5 / 0.5 = 1.
    np.testing.assert_allclose(metrics.focus_lift(saliency, mask), [1.0])
    # Soft mask: 0.5 * 1 + 1.0 * 4 = 4.5 of 10; share (0.5 + 1) / 4 = 0.375.
    soft = np.array([[[0.5, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(metrics.focus(saliency, soft), [0.45])
    np.testing.assert_allclose(metrics.focus_lift(saliency, soft), [0.45 / 0.375])


def test_focus_matches_the_definition_on_random_maps_and_ignores_scale():
    rng = _rng(1)
    maps = rng.random((5, 12, 9)) ** 3
    masks = rng.random((5, 12, 9)) < 0.3
    expected = np.array([maps[i][masks[i]].sum() / maps[i].sum() for i in range(5)])
    got = metrics.focus(maps, masks)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(metrics.focus(maps * 1e-9, masks), expected, rtol=1e-12)
    np.testing.assert_allclose(metrics.focus(maps.astype(np.float32), masks), expected, rtol=1e-6)
    np.testing.assert_allclose(
        metrics.focus_lift(maps, masks, baseline="area"),
        expected / masks.mean(axis=(1, 2)),
        rtol=1e-12,
    )
    # Permutation baseline: the same map's focus on each other probe's mask, averaged.
    chance = np.array(
        [
            np.mean([maps[i][masks[j]].sum() / maps[i].sum() for j in range(5) if j != i])
            for i in range(5)
        ]
    )
    np.testing.assert_allclose(metrics.focus_chance(maps, masks), chance, rtol=1e-12)
    np.testing.assert_allclose(metrics.focus_lift(maps, masks), expected / chance, rtol=1e-12)


def test_focus_nan_only_for_undefined_probes():
    maps = np.ones((4, 3, 3))
    maps[1] = 0.0  # all zero: no mass to locate
    maps[2, 0, 0] = np.nan
    maps[3, 1, 1] = np.inf
    masks = np.zeros((4, 3, 3), dtype=bool)
    masks[:, 0, :] = True
    got = metrics.focus(maps, masks)
    np.testing.assert_allclose(got[0], 1 / 3)
    assert np.isnan(got[1:]).all()


def test_focus_lift_is_nan_for_an_empty_mask():
    maps = _rng().random((2, 4, 4))
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2] = True
    np.testing.assert_allclose(metrics.focus(maps, masks)[1], 0.0)  # focus itself is defined
    lift = metrics.focus_lift(maps, masks)
    assert np.isfinite(lift[0]) and np.isnan(lift[1])


def _centre_biased_probes(n=24, size=32, seed=0):
    """Objects (discs) near the centre, and maps that favour the centre and the object."""
    rng = _rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    centres = size / 2 + rng.normal(0, size / 10, size=(n, 2))
    radii = rng.uniform(size / 10, size / 5, size=n)
    masks = np.stack(
        [(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r for (cy, cx), r in zip(centres, radii)]
    )
    centre = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2))
    maps = centre[None] * (1.0 + 2.0 * masks) + 0.05 * rng.random((n, size, size))
    return maps, masks


def test_lift_on_masks_shuffled_across_probes_is_chance_under_centre_bias():
    maps, masks = _centre_biased_probes()
    # The area baseline is fooled by centre bias: unrelated masks near the centre score ~2.
    rng = _rng(3)
    shuffled = masks[np.roll(np.arange(len(masks)), 1)]  # every probe gets another's mask
    area = metrics.nanmean(metrics.focus_lift(maps, shuffled, baseline="area"))
    assert area > 1.5
    lifts = []
    for _ in range(20):
        perm = rng.permutation(len(masks))
        while (perm == np.arange(len(masks))).any():  # a derangement: no probe keeps its mask
            perm = rng.permutation(len(masks))
        lifts.append(metrics.mean_focus_lift(maps, masks[perm]))
    assert abs(np.mean(lifts) - 1.0) < 0.3 and max(abs(v - 1.0) for v in lifts) < 0.3, lifts
    # The true masks: the maps do favour their own objects.
    assert metrics.mean_focus_lift(maps, masks) > 1.3


def test_lift_of_maps_on_their_own_disjoint_masks_and_ceiling():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 0, :2] = masks[1, 2, 2:] = masks[2, 3, :] = True
    maps = masks.astype(float)
    # No mass on the other masks: the chance level is 0, the lift undefined, the ceiling infinite.
    assert np.isnan(metrics.focus_lift(maps, masks)).all()
    assert metrics.mask_contrast(masks) == np.inf
    # Identical masks: every map scores chance, and the masks allow nothing more.
    same = np.broadcast_to(masks[:1], masks.shape)
    np.testing.assert_allclose(metrics.focus_lift(_rng().random((3, 4, 4)), same), 1.0)
    assert metrics.mask_contrast(same) == pytest.approx(1.0)


def test_mask_contrast_by_hand():
    # Masks of 2 pixels each; probe 0 and 1 share one pixel, probe 2 shares none.
    masks = np.zeros((3, 1, 6), bool)
    masks[0, 0, [0, 1]] = masks[1, 0, [1, 2]] = masks[2, 0, [4, 5]] = True
    # Map i = mask i: own focus 1; chance of 0 = (1/2 + 0) / 2, of 1 = 1/4, of 2 = 0.
    assert metrics.mask_contrast(masks) == pytest.approx(3 / (0.25 + 0.25 + 0.0))


def test_focus_lift_rejects_an_unknown_baseline():
    with pytest.raises(ValueError, match="`baseline`"):
        metrics.focus_lift(np.ones((2, 2, 2)), np.ones((2, 2, 2), bool), baseline="uniform")


# ----------------------------------------------------------------------------
# mask-free shortcut indicators, on hand-built maps with known answers
# ----------------------------------------------------------------------------


def test_border_band_width_and_share():
    band = place.border_band(32, 32)  # 4 pixels on each side
    assert band.sum() == 32 * 32 - 24 * 24
    assert place.border_band(5, 5).sum() == 25 - 9  # at least one pixel
    with pytest.raises(ValueError, match="`fraction`"):
        place.border_band(8, 8, fraction=0.5)


def test_border_ratio_uniform_ring_and_centre():
    n, size = 4, 32
    band = place.border_band(size, size)
    share = band.mean()
    uniform = np.ones((n, size, size))
    ring = np.broadcast_to(band, (n, size, size)).astype(float)
    centre = np.zeros((n, size, size))
    centre[:, 14:18, 14:18] = 1.0
    np.testing.assert_allclose(place.border_share(uniform), share)
    assert place.border_ratio(share, share) == pytest.approx(1.0)  # chance
    assert place.border_ratio(place.border_share(ring), share).tolist() == [np.inf] * n
    assert place.border_ratio(metrics.nanmean(place.border_share(centre)), share) == 0.0
    # A thin one-pixel frame holding half the mass: density 0.5 / (124 / 1024) on the frame.
    frame = np.zeros((size, size))
    frame[[0, -1], :] = frame[:, [0, -1]] = 1.0
    half = frame / frame.sum() + (1 - frame) / (1 - frame).sum()
    got = place.border_share(half[None], power=1)[0]
    expected = 0.5 + 0.5 * (band.sum() - frame.sum()) / (size * size - frame.sum())
    assert got == pytest.approx(expected)
    # Energy (the default, power 2): each frame pixel's value is 0.5 / 124, each other pixel's
    # 0.5 / 900; squares weigh the frame (900 / 124)^2 times more per pixel.
    a, b = (0.5 / frame.sum()) ** 2, (0.5 / (size * size - frame.sum())) ** 2
    in_band = frame.sum() * a + (band.sum() - frame.sum()) * b
    energy = in_band / (frame.sum() * a + (size * size - frame.sum()) * b)
    assert place.border_share(half[None])[0] == pytest.approx(energy)
    assert energy > got
    ratio = place.border_ratio(got, share)
    assert ratio == pytest.approx((expected / share) / ((1 - expected) / (1 - share)))
    assert ratio > 1.0


def test_border_share_is_scale_free_and_nan_for_broken_maps():
    maps = _rng(5).random((3, 16, 16))
    np.testing.assert_allclose(place.border_share(maps * 1e300), place.border_share(maps))
    maps[1, 3, 3] = np.nan
    maps[2, 0, 0] = np.inf
    got = place.border_share(maps)
    assert np.isfinite(got[0]) and np.isnan(got[1:]).all()
    assert np.isnan(place.border_share(np.zeros((1, 4, 4)))).all()
    with pytest.raises(ValueError, match="`power`"):
        place.border_share(maps, power=0)


def _hot_pixel_maps(positions, size=16, floor=0.0):
    maps = np.full((len(positions), size, size), floor)
    for i, (r, c) in enumerate(positions):
        maps[i, r, c] += 1.0
    return maps


def test_place_agreement_fixed_moving_and_uniform():
    size, n, top = 16, 8, 0.05
    k = round(top * size * size)  # 13 pixels make up the agreed place
    fixed = _hot_pixel_maps([(2, 13)] * n, size)
    np.testing.assert_allclose(place.place_agreement(fixed, top), size * size / k)  # 1 / top
    moving = _hot_pixel_maps([(i, (5 * i) % size) for i in range(n)], size)
    # The other probes' hot pixels fill 7 of the 13 places, never this probe's pixel.
    np.testing.assert_allclose(place.place_agreement(moving, top), 0.0)
    np.testing.assert_allclose(place.place_agreement(np.ones((n, size, size)), top), 1.0)
    # One map alone agrees with nothing: undefined.
    assert np.isnan(place.place_agreement(fixed[:1])).all()


def test_probe_skill_by_hand():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    # 3 of 4 right against labels; chance 1/3: (3/4 - 1/3) / (2/3) = 0.625.
    assert learning.probe_skill(logits, np.array([0, 1, 2, 1])) == pytest.approx(0.625)
    # Without labels: the mean softmax probability of the argmax, from chance 1/3.
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = (p.max(axis=1).mean() - 1 / 3) / (2 / 3)
    assert learning.probe_skill(logits) == pytest.approx(expected)
    # Equal logits (a fresh network): chance, 0.
    assert learning.probe_skill(np.zeros((5, 4))) == pytest.approx(0.0)
    # One sigmoid unit: class 1 when the logit is > 0; chance 1/2.
    binary = np.array([[2.0], [-1.0], [0.5], [-3.0]])
    assert learning.probe_skill(binary, np.array([1, 0, 0, 0]), "sigmoid") == pytest.approx(0.5)
    # Regression, or no probes: undefined.
    assert np.isnan(learning.probe_skill(binary, kind="linear"))
    assert np.isnan(learning.probe_skill(np.zeros((0, 3))))


def test_sigmoid_heads_with_huge_logits_give_exact_probabilities_without_warnings():
    # exp(800) overflows float64; the probabilities must still come out, with no RuntimeWarning.
    def sigmoid(t):
        return 1 / (1 + math.exp(-t))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skill = learning.probe_skill(np.array([[1000.0], [-1000.0]]), kind="sigmoid")
        run, per_probe = reliance.object_reliance(
            np.array([[800.0], [-3.0]]),  # intact: confident class 1, then class 0
            np.array([[-800.0], [2.0]]),  # object painted over: both flip
            np.array([[800.0], [-3.0]]),  # control painted over: nothing moves
            kind="sigmoid",
        )
    assert skill == 1.0  # both fully confident: (1 - 1/2) / (1 - 1/2)
    # (p(control) - p(object)) / (p(intact) - 1/2), p of the intact probe's side.
    second = (sigmoid(3) - sigmoid(-2)) / (sigmoid(3) - 0.5)
    np.testing.assert_allclose(per_probe, [1.0 / 0.5, second], rtol=1e-12)
    np.testing.assert_allclose(run, (1.0 + sigmoid(3) - sigmoid(-2)) / (0.5 + sigmoid(3) - 0.5))


def test_shortcut_indicators_on_hand_built_maps():
    size, n = 32, 6
    fixed = _hot_pixel_maps([(29, 29)] * n, size, floor=1e-3)  # a fixed corner hot spot
    rng = _rng(4)
    spots = rng.integers(8, 24, size=(n, 2))
    moving = _hot_pixel_maps([tuple(p) for p in spots], size, floor=1e-3)
    masks = np.zeros((n, size, size), bool)
    for i, (r, c) in enumerate(spots):
        masks[i, r - 2 : r + 3, c - 2 : c + 3] = True  # objects where the moving spots are
    run_fixed, probe_fixed = place.shortcut_indicators(fixed, masks)
    run_moving, probe_moving = place.shortcut_indicators(moving, masks)
    assert run_fixed["border_ratio"] > 1.0 > run_moving["border_ratio"]
    assert run_fixed["place_agreement"] > 5 * run_moving["place_agreement"]
    assert run_fixed["focus_lift"] == pytest.approx(1.0, abs=0.05)  # off every object alike
    assert run_moving["focus_lift"] > 3.0
    assert run_fixed["mask_contrast"] == run_moving["mask_contrast"] > 2.0
    assert set(probe_fixed) == {"border_share", "place_agreement", "focus_lift"}
    run_free, probe_free = place.shortcut_indicators(fixed)
    assert set(run_free) == {"border_ratio", "place_agreement"}
    assert all(v.shape == (n,) for v in probe_free.values())


# ----------------------------------------------------------------------------
# pointing_game
# ----------------------------------------------------------------------------


def test_pointing_game_hit_and_miss():
    maps = np.zeros((2, 6, 6))
    maps[0, 1, 1] = 5.0  # peak in the mask
    maps[1, 5, 5] = 5.0  # peak outside it
    maps += 0.1
    masks = metrics.masks_from_boxes([[0, 0, 3, 3], [0, 0, 3, 3]], 6, 6)
    got = metrics.pointing_game(maps, masks)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [1.0, 0.0])


def test_pointing_game_tolerance_in_euclidean_pixels():
    maps = np.zeros((2, 20, 20))
    maps[:, 10, 10] = 1.0
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[0, 10, 13:16] = True  # nearest mask pixel 3 px to the right
    masks[1, 12, 12] = True  # 2 px down and 2 px right: sqrt(8) ~ 2.83 px
    np.testing.assert_array_equal(metrics.pointing_game(maps[:1], masks[:1], tolerance=0), [0])
    np.testing.assert_array_equal(metrics.pointing_game(maps[:1], masks[:1], tolerance=2), [0])
    np.testing.assert_array_equal(metrics.pointing_game(maps[:1], masks[:1], tolerance=3), [1])
    # Euclidean, not Chebyshev (which would count the diagonal pixel as 2 px away).
    np.testing.assert_array_equal(metrics.pointing_game(maps[1:], masks[1:], tolerance=2), [0])
    np.testing.assert_array_equal(metrics.pointing_game(maps[1:], masks[1:], tolerance=2.8), [0])
    np.testing.assert_array_equal(metrics.pointing_game(maps[1:], masks[1:], tolerance=2.83), [1])


def test_pointing_game_ties_take_the_first_maximum_in_c_order():
    maps = np.zeros((1, 4, 6))
    maps[0, 0, 5] = 2.0  # first maximum in row-major order
    maps[0, 3, 0] = 2.0
    on_second = np.zeros((1, 4, 6), dtype=bool)
    on_second[0, 3, 0] = True
    np.testing.assert_array_equal(metrics.pointing_game(maps, on_second), [0.0])
    np.testing.assert_array_equal(metrics.pointing_game(maps, ~on_second), [1.0])


def test_pointing_game_matches_a_distance_transform_reference():
    rng = _rng(2)
    maps = rng.random((40, 15, 17))
    masks = np.zeros((40, 15, 17), dtype=bool)
    for i in range(40):
        y, x = rng.integers(0, 12), rng.integers(0, 14)
        masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
    for tolerance in (0, 1, 1.5, 2, 4, 7.5):
        expected = []
        for i in range(40):
            # Euclidean distance of every pixel to the nearest mask pixel.
            distance = ndimage.distance_transform_edt(~masks[i])
            peak = np.unravel_index(np.argmax(maps[i]), maps[i].shape)
            expected.append(float(distance[peak] <= tolerance))
        got = metrics.pointing_game(maps, masks, tolerance=tolerance)
        np.testing.assert_array_equal(got, expected, err_msg=f"tolerance={tolerance}")


def test_pointing_game_soft_mask_counts_its_support():
    maps = np.zeros((1, 3, 3))
    maps[0, 2, 2] = 1.0
    soft = np.zeros((1, 3, 3))
    soft[0, 2, 2] = 0.1
    np.testing.assert_array_equal(metrics.pointing_game(maps, soft), [1.0])


def test_pointing_game_nan_for_empty_mask_and_blank_or_broken_map():
    maps = np.ones((4, 5, 5))
    maps[1] = 0.0
    maps[2, 4, 4] = np.nan
    maps[3, 0, 0] = np.inf
    masks = np.ones((4, 5, 5), dtype=bool)
    empty = masks.copy()
    empty[0] = False
    got = metrics.pointing_game(maps, empty, tolerance=3)
    assert np.isnan(got).all()
    got = metrics.pointing_game(maps, masks)
    np.testing.assert_array_equal(got[0], 1.0)
    assert np.isnan(got[1:]).all()


@pytest.mark.parametrize("tolerance", [-1, np.nan, np.inf, "3", None, True])
def test_pointing_game_rejects_bad_tolerance(tolerance):
    with pytest.raises(ValueError, match="`tolerance`"):
        metrics.pointing_game(np.ones((1, 2, 2)), np.ones((1, 2, 2), bool), tolerance=tolerance)


# ----------------------------------------------------------------------------
# concentration
# ----------------------------------------------------------------------------


def test_concentration_of_a_uniform_map_is_zero():
    np.testing.assert_allclose(place.concentration(np.full((2, 7, 9), 3.3)), [0, 0], atol=1e-15)


def test_concentration_of_a_single_pixel_is_n_minus_one_over_n():
    maps = np.zeros((1, 8, 8))
    maps[0, 3, 5] = 42.0
    np.testing.assert_allclose(place.concentration(maps), [63 / 64], rtol=1e-15)


def test_concentration_of_1_2_3_4_by_hand():
    # n = 4, sum = 10, weights 2i - n - 1 = -3, -1, 1, 3:
    # G = (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 10 / 40 = 0.25.
    # Cross-check with the mean absolute difference: sum over ordered pairs of
    # |x_i - x_j| = 2 * (1 + 2 + 3 + 1 + 2 + 1) = 20, over 2 n^2 mean = 80: 0.25.
    maps = np.array([[[3.0, 1.0], [4.0, 2.0]]])  # any pixel order
    np.testing.assert_allclose(place.concentration(maps), [0.25], rtol=1e-15)


def test_concentration_matches_the_mean_absolute_difference_definition():
    rng = _rng(3)
    maps = rng.random((6, 5, 7)) ** 4
    maps[2] = np.round(maps[2], 1)  # ties
    flat = maps.reshape(6, -1)
    n = flat.shape[1]
    pairwise = np.abs(flat[:, :, None] - flat[:, None, :]).sum(axis=(1, 2))
    expected = pairwise / (2 * n * n * flat.mean(axis=1))
    np.testing.assert_allclose(place.concentration(maps), expected, rtol=1e-12)
    np.testing.assert_allclose(place.concentration(maps * 1e6), expected, rtol=1e-12)
    np.testing.assert_allclose(
        place.concentration(maps.astype(np.float32)),
        place.concentration(maps.astype(np.float32).astype(np.float64)),
        rtol=1e-12,
    )


def test_concentration_nan_for_blank_or_broken_maps():
    maps = np.ones((3, 4, 4))
    maps[1] = 0.0
    maps[2, 0, 0] = np.nan
    got = place.concentration(maps)
    np.testing.assert_allclose(got[0], 0.0, atol=1e-15)
    assert np.isnan(got[1:]).all()


# ----------------------------------------------------------------------------
# rank_correlation
# ----------------------------------------------------------------------------


def _scipy_spearman(a, b):
    return np.array(
        [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_rank_correlation_matches_scipy_with_ties(dtype):
    rng = _rng(4)
    low = 0 if dtype == np.uint8 else -3
    a = rng.integers(low, 6, (9, 13, 11)).astype(dtype)  # many ties
    b = (a.astype(np.int64) + rng.integers(0, 3, a.shape)).astype(dtype)
    np.testing.assert_allclose(stability.rank_correlation(a, b), _scipy_spearman(a, b), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_correlation_matches_scipy_on_continuous_maps(dtype):
    rng = _rng(5)
    a = rng.standard_normal((7, 16, 16)).astype(dtype)
    b = (a + rng.standard_normal(a.shape)).astype(dtype)
    np.testing.assert_allclose(stability.rank_correlation(a, b), _scipy_spearman(a, b), atol=1e-12)
    # Non-negative maps, as saliency is, take a shortcut in the float32 path.
    a, b = np.abs(a), np.abs(b)
    np.testing.assert_allclose(stability.rank_correlation(a, b), _scipy_spearman(a, b), atol=1e-12)


def test_rank_correlation_float32_and_float64_paths_agree():
    rng = _rng(6)
    a = np.round(rng.random((4, 10, 10)) * 7, 1).astype(np.float32)
    a[0, :3] = -0.0  # signed zeros tie with zeros
    a[0, 3:5] = 0.0
    b = rng.random((4, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(
        stability.rank_correlation(a, b),
        stability.rank_correlation(a.astype(np.float64), b.astype(np.float64)),
        atol=1e-15,
    )
    np.testing.assert_allclose(stability.rank_correlation(a, b), _scipy_spearman(a, b), atol=1e-12)


def test_rank_correlation_identical_reversed_and_rescaled():
    rng = _rng(7)
    a = rng.random((3, 6, 6))
    np.testing.assert_allclose(stability.rank_correlation(a, a), [1, 1, 1], atol=1e-15)
    np.testing.assert_allclose(stability.rank_correlation(a, 1 - a), [-1, -1, -1], atol=1e-15)
    # Only the ordering counts: a monotone transform changes nothing.
    np.testing.assert_allclose(stability.rank_correlation(a, 5 * a**3), [1, 1, 1], atol=1e-15)


def test_rank_correlation_nan_for_constant_or_broken_maps():
    rng = _rng(8)
    a = rng.random((4, 5, 5))
    b = rng.random((4, 5, 5))
    a[1] = 0.0
    b[2] = 7.0
    a[3, 2, 2] = np.nan
    got = stability.rank_correlation(a, b)
    assert np.isfinite(got[0])
    assert np.isnan(got[1:]).all()


def test_rank_correlation_shape_mismatch_names_maps_b():
    with pytest.raises(ValueError, match=r"`maps_b`.*\(2, 4, 4\).*\(2, 4, 5\)"):
        stability.rank_correlation(np.ones((2, 4, 4)), np.ones((2, 4, 5)))


def test_rank_correlation_leaves_its_inputs_alone():
    rng = _rng(9)
    a = rng.random((3, 4, 4)).astype(np.float32)
    b = rng.random((3, 4, 4))
    a0, b0 = a.copy(), b.copy()
    stability.rank_correlation(a, b)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


# ----------------------------------------------------------------------------
# nanmean
# ----------------------------------------------------------------------------


def test_nanmean_skips_nan_and_returns_a_python_float():
    got = metrics.nanmean(np.array([1.0, np.nan, 3.0]))
    assert type(got) is float and got == 2.0


@pytest.mark.parametrize("values", [[np.nan, np.nan], []])
def test_nanmean_of_nothing_is_nan_without_a_warning(values):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = metrics.nanmean(np.array(values))
    assert type(got) is float and np.isnan(got)


# ----------------------------------------------------------------------------
# Validation and the shared contract
# ----------------------------------------------------------------------------


def test_mask_shape_mismatch_message():
    maps = np.ones((16, 64, 64))
    expected = (
        "Invalid value for argument `masks`: expected shape (N, H, W) = (16, 64, 64) "
        "matching the probe maps, received (16, 32, 32)."
    )
    for function in (metrics.focus, metrics.focus_lift, metrics.pointing_game):
        with pytest.raises(ValueError, match=re.escape(expected)):
            function(maps, np.ones((16, 32, 32), dtype=bool))


@pytest.mark.parametrize("maps", [np.ones((4, 4)), np.ones((2, 4, 4, 3)), np.ones((2, 0, 4))])
def test_maps_of_the_wrong_shape_name_the_argument(maps):
    with pytest.raises(ValueError, match=r"argument `maps`: expected shape \(N, H, W\)"):
        place.concentration(maps)
    with pytest.raises(ValueError, match=r"argument `maps_a`: expected shape \(N, H, W\)"):
        stability.rank_correlation(maps, maps)


def test_negative_maps_are_rejected_with_the_fix():
    maps = np.ones((1, 3, 3))
    maps[0, 1, 1] = -0.5
    with pytest.raises(ValueError, match=r"`maps`.*>= 0.*-0\.5.*absolute value"):
        metrics.focus(maps, np.ones((1, 3, 3), bool))
    with pytest.raises(ValueError, match="`maps`"):
        place.concentration(maps)


@pytest.mark.parametrize("bad", [1.5, -0.1, np.nan])
def test_mask_values_outside_unit_interval_are_rejected(bad):
    masks = np.zeros((1, 3, 3))
    masks[0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"`masks`.*\[0, 1\]"):
        metrics.focus(np.ones((1, 3, 3)), masks)


def test_non_numeric_maps_are_rejected():
    with pytest.raises(ValueError, match="`maps`.*real-valued"):
        place.concentration(np.full((1, 2, 2), "x"))


_MASKED = {
    "focus": metrics.focus,
    "focus_lift": metrics.focus_lift,
    "pointing_game": metrics.pointing_game,
}
_UNMASKED = {
    "concentration": place.concentration,
    "rank_correlation": lambda maps: stability.rank_correlation(maps, maps[::-1]),
}


@pytest.mark.parametrize("name", sorted(_MASKED) + sorted(_UNMASKED))
@pytest.mark.parametrize("n", [0, 1, 5])
def test_every_metric_returns_float64_per_probe(name, n):
    rng = _rng(10)
    maps = rng.random((n, 6, 7)).astype(np.float32)
    masks = rng.random((n, 6, 7)) < 0.5
    masks[:, 0, 0] = True
    if name in _MASKED:
        got = _MASKED[name](maps, masks)
    else:
        got = _UNMASKED[name](maps)
    assert got.dtype == np.float64 and got.shape == (n,)
    assert np.isfinite(got).all()

"""Tests for the synthetic demo dataset (no training here)."""

import numpy as np
import pytest

from keras_saliency_monitor import demo_data
from keras_saliency_monitor.demo_data import ShapesData, make_demo_splits, make_shapes

N = 60


def _corner_patches(data: ShapesData) -> np.ndarray:
    top, left, side = demo_data.watermark_box(data.x.shape[1])
    return data.x[:, top : top + side, left : left + side].reshape(len(data.x), -1)


@pytest.mark.parametrize("num_classes", [3, 4])
@pytest.mark.parametrize("watermark", [False, True])
def test_shapes_dtypes_ranges(num_classes, watermark):
    data = make_shapes(N, num_classes=num_classes, watermark=watermark, seed=3)
    assert isinstance(data, ShapesData)
    assert data.x.shape == (N, 64, 64, 3) and data.x.dtype == np.float32
    assert data.y.shape == (N,) and data.y.dtype == np.int32
    assert data.masks.shape == (N, 64, 64) and data.masks.dtype == bool
    assert data.watermark_masks.shape == (N, 64, 64) and data.watermark_masks.dtype == bool
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert np.isfinite(data.x).all()
    assert set(np.unique(data.y)) == set(range(num_classes))
    assert data.class_names == demo_data.CLASS_NAMES[:num_classes]
    assert data.class_names[:3] == ("circle", "square", "triangle")


def test_other_image_size():
    data = make_shapes(12, image_size=48, watermark=True, seed=1)
    assert data.x.shape == (12, 48, 48, 3)
    assert data.masks.any(axis=(1, 2)).all()
    top, left, side = demo_data.watermark_box(48)
    assert top + side <= 48 and data.watermark_masks[0].sum() == side * side


def test_deterministic_in_seed():
    a = make_shapes(N, watermark=True, seed=7)
    b = make_shapes(N, watermark=True, seed=7)
    for field_a, field_b in zip(a, b):
        np.testing.assert_array_equal(field_a, field_b)
    c = make_shapes(N, watermark=True, seed=8)
    assert not np.array_equal(a.x, c.x)
    assert not np.array_equal(a.masks, c.masks)
    assert not np.array_equal(a.y, c.y)


def test_global_numpy_rng_untouched():
    np.random.seed(123)
    before = np.random.get_state()
    make_shapes(20, watermark=True, seed=0)
    make_demo_splits(n_train=9, n_val=6, n_probes=3, seed=0)
    after = np.random.get_state()
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def test_masks_are_exactly_the_shape_pixels():
    seed = 5
    data = make_shapes(N, seed=seed)
    # Same random draws, shapes not painted: the background-only rendering.
    background = demo_data._render(N, 64, 3, seed, draw_shapes=False)
    np.testing.assert_array_equal(background.masks, data.masks)
    inside = data.masks
    # Outside the mask the image is the background, bit for bit ...
    np.testing.assert_array_equal(data.x[~inside], background.x[~inside])
    # ... and every pixel inside it differs from the background.
    assert (data.x[inside] != background.x[inside]).any(axis=-1).all()
    # Brighter than the background under it (what makes the shape quick to learn).
    for i in range(N):
        lift = data.x[i][inside[i]].mean() - background.x[i][inside[i]].mean()
        assert lift > 0.15
    # Non-empty, sized like a shape, and a single colour (up to the pixel noise).
    area = inside.mean(axis=(1, 2))
    assert (area > 0.01).all() and (area < 0.4).all()
    for i in range(10):
        pixels = data.x[i][inside[i]]
        assert pixels.std(axis=0).max() < 2 * demo_data._PIXEL_NOISE


def test_shapes_stay_inside_and_clear_of_the_watermark():
    data = make_shapes(200, watermark=True, seed=2)
    assert not (data.masks & data.watermark_masks).any()
    # Never touching the image border.
    assert not data.masks[:, 0, :].any() and not data.masks[:, -1, :].any()
    assert not data.masks[:, :, 0].any() and not data.masks[:, :, -1].any()
    # Not even a neighbour of the watermark square.
    top, left, side = demo_data.watermark_box(64)
    near = np.zeros((64, 64), dtype=bool)
    near[top - 2 :, left - 2 :] = True
    assert not (data.masks & near).any()


def test_shape_masks_differ_by_class():
    # Same-size shapes of different classes have clearly different areas relative to their
    # bounding box (circle ~0.79, square 1.0 axis aligned or less rotated, triangle ~0.5).
    data = make_shapes(300, seed=4)
    rows = data.masks.any(axis=2)
    cols = data.masks.any(axis=1)
    box = rows.sum(axis=1) * cols.sum(axis=1)
    fill = data.masks.sum(axis=(1, 2)) / box
    means = [fill[data.y == c].mean() for c in range(3)]
    assert means[2] < means[0] and means[2] < means[1]


def test_watermark_is_perfectly_predictive():
    fit = make_shapes(30, watermark=True, seed=10)
    test = make_shapes(150, watermark=True, seed=11)
    # The watermark mask is the same fixed square on every image.
    top, left, side = demo_data.watermark_box(64)
    assert (test.watermark_masks.sum(axis=(1, 2)) == side * side).all()
    assert test.watermark_masks[:, top : top + side, left : left + side].all()
    # All images of a class carry the identical mark, and marks differ between classes.
    patches = _corner_patches(test)
    for c in range(3):
        assert (patches[test.y == c] == patches[test.y == c][0]).all()
    # A nearest-centroid rule fitted on one sample recovers every label of another from the
    # watermark pixels alone.
    fit_patches = _corner_patches(fit)
    centroids = np.stack([fit_patches[fit.y == c].mean(axis=0) for c in range(3)])
    dist = ((patches[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(dist.argmin(axis=1), test.y)


def test_no_watermark_when_disabled():
    clean = make_shapes(150, watermark=False, seed=12)
    marked = make_shapes(150, watermark=True, seed=12)
    assert not clean.watermark_masks.any()
    np.testing.assert_array_equal(clean.y, marked.y)
    np.testing.assert_array_equal(clean.masks, marked.masks)
    # Identical except inside the watermark square.
    outside = ~marked.watermark_masks
    np.testing.assert_array_equal(clean.x[outside], marked.x[outside])
    assert not np.array_equal(clean.x, marked.x)
    # The corner of a clean image carries no class information for the same rule.
    fit = make_shapes(30, watermark=True, seed=10)
    fit_patches = _corner_patches(fit)
    centroids = np.stack([fit_patches[fit.y == c].mean(axis=0) for c in range(3)])
    patches = _corner_patches(clean)
    dist = ((patches[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    assert (dist.argmin(axis=1) == clean.y).mean() < 0.5
    # No checkerboard there: neighbouring pixels are close, unlike in the mark.
    top, left, side = demo_data.watermark_box(64)

    def step(x):  # mean over pixels of the largest channel change to the right neighbour
        corner = x[:, top : top + side, left : left + side]
        return np.abs(np.diff(corner, axis=2)).max(axis=-1).mean()

    assert step(clean.x) < 0.3
    assert step(marked.x) > 0.9


@pytest.mark.parametrize("n,num_classes", [(300, 3), (301, 3), (80, 4), (7, 3)])
def test_classes_balanced(n, num_classes):
    counts = np.bincount(make_shapes(n, num_classes=num_classes, seed=1).y, minlength=num_classes)
    assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_demo_splits():
    splits = make_demo_splits(n_train=30, n_val=12, n_probes=9, seed=0)
    assert set(splits) == {
        "train_clean",
        "train_watermark",
        "val",
        "val_watermark",
        "probes_clean",
        "probes_watermark",
    }
    sizes = {"train": 30, "val": 12, "probes": 9}
    for name, data in splits.items():
        assert isinstance(data, ShapesData)
        assert len(data.x) == sizes[name.split("_")[0]]
        assert data.watermark_masks.any() == name.endswith("_watermark")
    for clean, marked in (
        ("train_clean", "train_watermark"),
        ("val", "val_watermark"),
        ("probes_clean", "probes_watermark"),
    ):
        a, b = splits[clean], splits[marked]
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.x[~b.watermark_masks], b.x[~b.watermark_masks])
    # Probes are class balanced; train, val and probes are different images.
    assert np.bincount(splits["probes_clean"].y).tolist() == [3, 3, 3]
    flat = [
        splits[k].x.reshape(len(splits[k].x), -1) for k in ("train_clean", "val", "probes_clean")
    ]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not (flat[i][:, None, :100] == flat[j][None, :, :100]).all(axis=-1).any()
    # Deterministic.
    again = make_demo_splits(n_train=30, n_val=12, n_probes=9, seed=0)
    np.testing.assert_array_equal(again["val"].x, splits["val"].x)
    other = make_demo_splits(n_train=30, n_val=12, n_probes=9, seed=1)
    assert not np.array_equal(other["val"].x, splits["val"].x)


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=-1), dict(n=2.5), dict(n=4, num_classes=1), dict(n=4, num_classes=5)],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_shapes(**kwargs)
    with pytest.raises(ValueError):
        make_demo_splits(n_train=0)

"""Probe sampling: stratified, seeded, fixed; every input kind; validation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_saliency_monitor.probes import select_probes


def _data(n=60, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 6, 6, 3)).astype("float32")
    y = rng.integers(0, classes, size=n)
    return x, y


def test_stratified_seeded_and_fixed():
    x, y = _data()
    a = select_probes((x, y), num_probes=9, seed=3)
    b = select_probes((x, y), num_probes=9, seed=3)
    c = select_probes((x, y), num_probes=9, seed=4)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    # 3 classes, 9 probes: exactly 3 of each class, and the labels are those of the chosen images.
    assert np.bincount(a.labels, minlength=3).tolist() == [3, 3, 3]
    np.testing.assert_array_equal(a.labels, y[a.indices])
    np.testing.assert_array_equal(a.x, x[a.indices])
    assert len(set(a.indices.tolist())) == 9


def test_rare_class_is_represented():
    x, _ = _data(40)
    y = np.zeros(40, int)
    y[[5, 17]] = 1  # 2 examples of class 1 among 40
    p = select_probes((x, y), num_probes=8, seed=0)
    assert set(np.nonzero(y[p.indices] == 1)[0].tolist()) != set()
    assert (p.labels == 1).sum() == 2


def test_global_numpy_rng_untouched():
    x, y = _data()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    select_probes((x, y), num_probes=9, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_one_hot_labels_and_x_alone():
    x, y = _data()
    onehot = np.eye(3, dtype="float32")[y]
    a = select_probes((x, y), 6, seed=0)
    b = select_probes((x, onehot), 6, seed=0)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = select_probes(x, 6, seed=0)
    assert c.labels is None and len(c.x) == 6


def test_tf_data_batched_and_unbatched_and_pydataset():
    x, y = _data(30)
    ref = select_probes((x, y), 6, seed=2)
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    for ds in (batched, unbatched):
        p = select_probes(ds, 6, seed=2)
        np.testing.assert_array_equal(p.indices, ref.indices)
        np.testing.assert_array_equal(p.x, ref.x)

    class Seq(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]

    p = select_probes(Seq(), 6, seed=2)
    np.testing.assert_array_equal(p.x, ref.x)


def test_grayscale_without_channel_axis_and_masks_follow_probes():
    x, y = _data()
    gray = x[..., 0]
    masks = np.zeros((60, 6, 6), bool)
    for i in range(60):
        masks[i, i % 6, :] = True  # row i % 6 marks image i
    p = select_probes((gray, y), 5, seed=0, masks=masks)
    assert p.x.shape == (5, 6, 6, 1)
    for k, i in enumerate(p.indices):
        assert p.masks[k, i % 6].all() and p.masks[k].sum() == 6


@pytest.mark.parametrize(
    "data, kwargs, error, match",
    [
        (np.zeros((4, 6, 6, 3)), {"num_probes": 0}, ValueError, "`num_probes`"),
        (np.zeros((4, 6, 6, 3)), {"num_probes": 2.5}, TypeError, "`num_probes`"),
        (np.zeros((0, 6, 6, 3)), {}, ValueError, "at least one image"),
        (np.zeros((4, 6)), {}, ValueError, r"\(N, H, W, C\)"),
        ("images/", {}, TypeError, "string"),
        (np.array([["a"]]), {}, TypeError, "numeric"),
        (np.full((4, 6, 6, 3), np.nan), {}, ValueError, "NaN or inf"),
        (np.zeros((4, 6, 6, 3)), {"masks": np.zeros((4, 5, 6))}, ValueError, "`masks`"),
        (np.zeros((4, 6, 6, 3)), {"masks": np.zeros((3, 6, 6))}, ValueError, "`masks`"),
    ],
)
def test_invalid_probe_data(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        select_probes(data, **{"num_probes": 2, **kwargs})


def test_fewer_images_than_probes_warns_and_uses_all():
    x, y = _data(5)
    with pytest.warns(UserWarning, match="fewer than num_probes"):
        p = select_probes((x, y), 16, seed=0)
    assert len(p.x) == 5

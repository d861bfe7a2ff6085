"""Probe sampling: stratified, seeded, fixed; every input kind; validation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_saliency_monitor.monitor.probes import select_probes


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


# --------------------------------------------------------------------------------------------------
# The streaming draw: same probes as from arrays, bounded memory, every input layout read right.
# --------------------------------------------------------------------------------------------------


class _Batches(keras.utils.PyDataset):
    """A PyDataset over arrays, made batch by batch (nothing but the batch is held)."""

    def __init__(self, x, y=None, batch=32):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        s = slice(i * self.batch, (i + 1) * self.batch)
        xb = np.array(self.x[s])  # a fresh copy, as a loader makes
        return xb if self.y is None else (xb, self.y[s])


@pytest.mark.parametrize("classes, num_probes", [(50, 16), (3, 16), (7, 40), (1, 5), (None, 9)])
def test_stream_draws_exactly_what_the_arrays_draw(classes, num_probes):
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(500, 4, 4, 1)).astype("float32")
    y = None if classes is None else rng.integers(0, classes, 500)
    data = x if y is None else (x, y)
    ref = select_probes(data, num_probes, seed=5)
    for stream in (_Batches(x, y, 19), tf.data.Dataset.from_tensor_slices(data).batch(23)):
        p = select_probes(stream, num_probes, seed=5)
        np.testing.assert_array_equal(p.indices, ref.indices)
        np.testing.assert_array_equal(p.x, ref.x)
        if y is not None:
            np.testing.assert_array_equal(p.labels, ref.labels)
    if y is not None:  # stratified: every class present as often as the others (+-1)
        counts = np.bincount(ref.labels, minlength=classes)
        assert counts.max() - counts[counts > 0].min() <= 1
        assert (counts > 0).sum() == min(classes, num_probes)


def test_stream_holds_about_num_probes_images_not_the_pool():
    import tracemalloc

    x = np.zeros((2048, 32, 32, 3), np.uint8)  # 6 MiB pool; a batch is 96 KiB
    y = np.arange(2048) % 10
    tracemalloc.start()
    try:
        p = select_probes(_Batches(x, y, 32), 16, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(p.x) == 16
    assert peak < 0.1 * x.nbytes, peak  # the old read-all-then-join held the pool twice


def test_batched_grayscale_tf_data_is_read_as_batches():
    x, y = _data(30)
    gray = x[..., 0]  # (30, 6, 6): batches of (B, H, W)
    ref = select_probes((gray, y), 6, seed=1)
    p = select_probes(tf.data.Dataset.from_tensor_slices((gray, y)).batch(8), 6, seed=1)
    assert p.x.shape == (6, 6, 6, 1)
    np.testing.assert_array_equal(p.indices, ref.indices)
    np.testing.assert_array_equal(p.labels, y[ref.indices])


def test_a_list_of_images_is_a_batch_not_x_and_y():
    x, _ = _data(5)
    for data in (list(x), tuple(x)):
        p = select_probes(data, 3, seed=0)
        assert p.labels is None and p.x.shape == (3, 6, 6, 3)
        np.testing.assert_array_equal(p.x, x[p.indices])


def test_string_labels_map_through_class_names():
    x, y = _data(30)
    names = ["cat", "dog", "emu"]
    strings = np.asarray(names)[y]
    ref = select_probes((x, y), 6, seed=0)
    for labels in (strings, strings.astype(object), np.char.encode(strings)):
        p = select_probes((x, labels), 6, seed=0, class_names=names)
        np.testing.assert_array_equal(p.labels, ref.labels)
    ds = tf.data.Dataset.from_tensor_slices((x, strings)).batch(7)
    p = select_probes(ds, 6, seed=0, class_names=names)
    np.testing.assert_array_equal(p.labels, ref.labels)


def test_float_labels_that_turn_out_fractional_are_not_classes():
    x, _ = _data(40)
    y = np.zeros(40, "float32")
    y[20:] = np.linspace(0.5, 3.5, 20)  # integral in the first batch, fractional later
    ref = select_probes((x, y), 6, seed=0)
    p = select_probes(tf.data.Dataset.from_tensor_slices((x, y)).batch(10), 6, seed=0)
    assert ref.labels is None and p.labels is None
    np.testing.assert_array_equal(p.indices, ref.indices)


def test_some_empty_masks_warn_and_many_probes_warn():
    x, y = _data(12)
    masks = np.ones((12, 6, 6), bool)
    masks[0] = False
    with pytest.warns(UserWarning, match="masks of 1 of 12 probes are empty"):
        select_probes((x, y), 12, seed=0, masks=masks)
    big = np.zeros((300, 2, 2, 1), "float32")
    with pytest.warns(UserWarning, match="num_probes=300 is more than 256"):
        select_probes(big, 300)


# Issue 19: seeds and multi-hot labels.


@pytest.mark.parametrize(
    "seed, error", [("abc", TypeError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_a_bad_seed_names_the_argument(seed, error):
    x = np.zeros((6, 4, 4, 3), np.float32)
    with pytest.raises(error, match=r"`seed`.*Pass e\.g\. seed="):
        select_probes(x, 2, seed=seed)


def test_seed_none_and_numpy_ints_are_seeds():
    x = np.arange(6 * 48, dtype=np.float32).reshape(6, 4, 4, 3)
    assert len(select_probes(x, 2, seed=None).x) == 2
    a, b = select_probes(x, 3, seed=np.int64(4)), select_probes(x, 3, seed=4)
    np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize(
    "row, multi",
    [([1, 0, 1], True), ([0, 0, 0], True), ([0.5, 0.5, 0], True), ([0.1, 0.8, 0.1], False)],
)
def test_rows_that_name_one_class_are_labels_and_others_are_not(row, multi):
    x = np.zeros((6, 4, 4, 3), np.float32)
    y = np.eye(3)[np.arange(6) % 3]
    y[4] = row
    if multi:
        with pytest.warns(UserWarning, match="multi-hot"):
            assert select_probes((x, y), 6).labels is None
    else:
        assert sorted(select_probes((x, y), 6).labels.tolist()) == [0, 0, 1, 1, 2, 2]

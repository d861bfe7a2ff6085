"""SaliencyMonitor in real fits: event files read back with TensorBoard's reader."""

import os

import keras
import numpy as np
import pytest

from keras_saliency_monitor import SaliencyMonitor, compute_saliency
from keras_saliency_monitor.monitor.callback import GRID_TAG
from keras_saliency_monitor.storage import store

from .helpers import read_images, read_scalars, tiny_cnn, tiny_data


def test_fit_logs_one_grid_per_epoch_not_blank(tmp_path):
    x, y = tiny_data()
    model = tiny_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, class_names=["a", "b", "c"])
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[monitor])
    run = os.path.join(tmp_path, "saliency")
    grids = read_images(run, GRID_TAG)
    assert sorted(grids) == [0, 1, 2, 3]
    for (grid,) in grids.values():
        assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[1] <= 1024
        # Not a near-black grid: real brightness and contrast.
        assert grid.mean() > 30 and grid.std() > 20
    provider, ctx, eid = store.open_logdir(run)
    index = store.read_run(provider, ctx, eid, ".")
    assert index["steps"] == [0, 1, 2, 3] and index["probe_set"]["num_probes"] == 6
    # The numbers are in History (so EarlyStopping/CSVLogger see them) and in TensorBoard.
    assert len(history.history["saliency_concentration"]) == 4
    logged = read_scalars(run, "saliency/concentration")
    np.testing.assert_allclose(
        [logged[e] for e in range(4)], history.history["saliency_concentration"], rtol=1e-6
    )
    assert "saliency_stability" in history.history  # from epoch 1 on


def test_maps_are_those_of_the_current_weights(tmp_path):
    """The monitor's epoch-end maps equal compute_saliency on the weights at that epoch end."""
    x, y = tiny_data()
    model = tiny_cnn()
    seen = {}

    class Grab(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = compute_saliency(self.model, monitor.probes.x)

    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, background=False)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor, Grab()])
    last = monitor.explainer.explain(monitor.probes.x).maps
    np.testing.assert_allclose(last, seen[1], rtol=1e-5, atol=1e-7)


def _deterministic_fit(tmp_path, with_monitor):
    """All variables (weights, BatchNorm statistics, seed-generator states), NumPy's RNG state."""
    keras.utils.set_random_seed(7)
    x, y = tiny_data(64)
    model = tiny_cnn(dropout=True, batchnorm=True)
    callbacks = []
    if with_monitor:
        callbacks.append(SaliencyMonitor(tmp_path, (x, y), num_probes=6))
    model.fit(x, y, epochs=3, batch_size=16, shuffle=True, verbose=0, callbacks=callbacks)
    return [v.numpy() for v in model.variables], np.random.get_state()[1].copy()


def test_deterministic_fit_bit_identical_with_and_without_monitor(tmp_path):
    # CPU kernels of these layers are deterministic for a fixed seed; op determinism is not
    # switched on because TensorFlow cannot switch it off again for the other tests.
    v0, rng0 = _deterministic_fit(tmp_path / "a", with_monitor=False)
    v1, rng1 = _deterministic_fit(tmp_path / "b", with_monitor=True)
    assert len(v0) == len(v1)
    for a, b in zip(v0, v1):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rng0, rng1)  # NumPy's global RNG advanced identically


def test_global_numpy_rng_not_advanced_by_monitor(tmp_path):
    x, y = tiny_data()
    model = tiny_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, background=False)
    monitor.set_model(model)
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    monitor.on_train_begin()
    for epoch in range(2):
        monitor.on_epoch_end(epoch, logs={})
    monitor.on_train_end()
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_beside_keras_tensorboard_with_integer_update_freq(tmp_path):
    """Keras's TensorBoard installs record_if(step % N == 0); our own writer records anyway."""
    x, y = tiny_data()
    model = tiny_cnn()
    tb = keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq=5)
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[tb, monitor])
    assert sorted(read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)) == [0, 1, 2]
    assert os.path.isdir(os.path.join(tmp_path, "train"))


def test_every_n_epochs_and_one_instance_serves_two_fits(tmp_path):
    x, y = tiny_data()
    model = tiny_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, every_n_epochs=2)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[monitor])
    run = os.path.join(tmp_path, "saliency")
    assert sorted(read_images(run, GRID_TAG)) == [0, 2, 4]
    model.fit(x, y, initial_epoch=5, epochs=7, batch_size=16, verbose=0, callbacks=[monitor])
    assert sorted(read_images(run, GRID_TAG)) == [0, 2, 4, 6]
    assert monitor.explainer.trace_count == 1  # traced once, reused across fits


def test_hooks_with_fake_logs_put_numbers_in_logs(tmp_path):
    x, y = tiny_data()
    model = tiny_cnn()
    masks = np.zeros(x.shape[:3], bool)
    masks[:, :6] = True
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, masks=masks, background=False)
    monitor.set_model(model)
    monitor.on_train_begin()
    logs = {"loss": 1.0}
    monitor.on_epoch_end(0, logs)
    maps = compute_saliency(model, monitor.probes.x)
    expected_focus = np.mean((maps * masks[:6]).sum((1, 2)) / maps.sum((1, 2)))
    assert logs["loss"] == 1.0
    np.testing.assert_allclose(logs["saliency_focus"], expected_focus, rtol=1e-5)
    monitor.on_train_end()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_probes": 0}, ValueError, "`num_probes`"),
        ({"every_n_epochs": 0}, ValueError, "`every_n_epochs`"),
        ({"method": "saliency"}, ValueError, "`method`"),
        ({"target": "best"}, ValueError, "`target`"),
        ({"cmap": "no-such-map"}, ValueError, "cmap"),
        ({"log_dir": 3}, TypeError, "`log_dir`"),
        ({"display_fn": "x"}, TypeError, "`display_fn`"),
        ({"samples": 10}, TypeError, "Unknown option"),
    ],
)
def test_bad_arguments_fail_in_init(tmp_path, kwargs, error, match):
    x, y = tiny_data()
    args = {"log_dir": tmp_path, "probe_data": (x, y), **kwargs}
    with pytest.raises(error, match=match):
        SaliencyMonitor(**args)


def test_log_dir_that_is_a_file_fails_in_init(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    x, y = tiny_data()
    with pytest.raises(ValueError, match="existing file"):
        SaliencyMonitor(f, (x, y))


def test_shape_mismatch_and_label_range_fail_before_the_first_batch(tmp_path):
    x, y = tiny_data()
    batches = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            batches.append(batch)

    model = tiny_cnn()
    wrong = SaliencyMonitor(tmp_path, (x[:, :10, :10], y), num_probes=4)
    with pytest.raises(ValueError, match="do not match the model's input shape"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[wrong, Count()])
    too_many = SaliencyMonitor(tmp_path, (x, y + 5), num_probes=4)
    with pytest.raises(ValueError, match="3 classes"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[too_many, Count()])
    assert batches == []

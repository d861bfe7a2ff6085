"""Never disturb, never lose: bad input fails fast, faults during training never kill ``fit``."""

import os
import shutil
import threading
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_saliency_monitor import SaliencyMonitor, compute_saliency
from keras_saliency_monitor.drawing import render
from keras_saliency_monitor.monitor.callback import GRID_TAG
from keras_saliency_monitor.storage import store
from keras_saliency_monitor.storage.writer import BackgroundWorker

from .helpers import CountBatches, event_files, read_images, read_scalars, tiny_cnn, tiny_data


class AtEpoch(keras.callbacks.Callback):
    """Runs ``fn(model)`` at the begin or end of the given epochs (a fault injector)."""

    def __init__(self, epochs, fn, when="end"):
        super().__init__()
        self.epochs, self.fn, self.when = set(epochs), fn, when

    def on_epoch_begin(self, epoch, logs=None):
        if self.when == "begin" and epoch in self.epochs:
            self.fn(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if self.when == "end" and epoch in self.epochs:
            self.fn(self.model)


@pytest.fixture(scope="module")
def _compiled_model():
    """One compiled tiny CNN for the module: its train step is traced once, not once per test."""
    model = tiny_cnn()
    x, y = tiny_data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    state = [v.numpy() for v in model.variables + model.optimizer.variables]
    return model, state


@pytest.fixture
def model(_compiled_model):
    """The module's model with its weights and optimizer state as they were at the start."""
    model, state = _compiled_model
    for variable, value in zip(model.variables + model.optimizer.variables, state):
        variable.assign(value)
    return model


def _our_warnings(record, kind=None):
    """The monitor's fault warnings among recorded ones (optionally of one kind)."""
    prefix = "SaliencyMonitor: " + (f"{kind} fault" if kind else "")
    return [w for w in record if str(w.message).startswith(prefix)]


def _red_pixels(image):
    # The grid is a JPEG: pure red comes back within a few levels.
    r, g, b = (image[..., c].astype(int) for c in range(3))
    return int(np.sum((r > 220) & (g < 40) & (b < 40)))


# --------------------------------------------------------------------------------------------------
# Bad input fails fast: in __init__, one case per test, naming the argument.
# --------------------------------------------------------------------------------------------------

_X, _Y = tiny_data(12)
_NAN = _X.copy()
_NAN[3, 2, 2, 1] = np.nan
_INF = _X.copy()
_INF[5, 0, 0, 0] = np.inf


def _file(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a directory")
    return path


def _case(id, kwargs, error, match):
    return pytest.param(kwargs, error, match, id=id)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        _case("num_probes-zero", {"num_probes": 0}, ValueError, r"`num_probes`.*num_probes=0"),
        _case("num_probes-negative", {"num_probes": -3}, ValueError, r"`num_probes`.*=-3"),
        _case("num_probes-float", {"num_probes": 2.0}, TypeError, r"`num_probes`.*float"),
        _case("num_probes-str", {"num_probes": "4"}, TypeError, r"`num_probes`.*str"),
        _case(
            "probe_data-empty-array",
            {"probe_data": np.zeros((0, 12, 12, 3), "float32")},
            ValueError,
            r"`probe_data`.*empty array",
        ),
        _case(
            "probe_data-empty-dataset",
            {"probe_data": tf.data.Dataset.from_tensor_slices(_X[:0])},
            ValueError,
            r"`probe_data`.*empty dataset",
        ),
        _case(
            "probe_data-rank-2",
            {"probe_data": _X.reshape(12, -1)},
            ValueError,
            r"`probe_data`.*\(N, H, W, C\).*\(12, 432\)",
        ),
        _case(
            "probe_data-rank-5",
            {"probe_data": _X[..., None]},
            ValueError,
            r"`probe_data`.*\(N, H, W, C\).*\(12, 12, 12, 3, 1\)",
        ),
        _case("probe_data-string", {"probe_data": "data/"}, TypeError, r"`probe_data`.*string"),
        _case(
            "probe_data-nan",
            {"probe_data": (_NAN, _Y)},
            ValueError,
            r"`probe_data`.*NaN or inf in image\(s\) \[3\]",
        ),
        _case(
            "probe_data-inf",
            {"probe_data": (_INF, _Y)},
            ValueError,
            r"`probe_data`.*NaN or inf in image\(s\) \[5\]",
        ),
        _case(
            "masks-shape",
            {"masks": np.ones((12, 10, 12))},
            ValueError,
            r"`masks`.*\(N, 12, 12\).*\(12, 10, 12\)",
        ),
        _case(
            "masks-count",
            {"masks": np.ones((11, 12, 12))},
            ValueError,
            r"`masks`.*one mask per probe-data image \(12\), received 11",
        ),
        _case(
            "masks-values", {"masks": np.full((12, 12, 12), 2.0)}, ValueError, r"`masks`.*\[0, 1\]"
        ),
        _case("method-unknown", {"method": "saliency"}, ValueError, r"`method`.*'saliency'"),
        _case("method-type", {"method": 3}, TypeError, r"`method`"),
        _case("method-option", {"noise": 0.1}, TypeError, r"'noise'.*method='vanilla'"),
        _case("every_n_epochs-zero", {"every_n_epochs": 0}, ValueError, r"`every_n_epochs`.*=0"),
        _case("every_n_epochs-float", {"every_n_epochs": 1.5}, TypeError, r"`every_n_epochs`"),
        _case("target-negative", {"target": -1}, ValueError, r"`target`.*>= 0"),
        _case(
            "target-label-without-labels",
            {"target": "label", "probe_data": _X},
            ValueError,
            r"`target`.*labels",
        ),
        _case("batch_size-zero", {"batch_size": 0}, ValueError, r"`batch_size`"),
        _case("log_dir-type", {"log_dir": 7}, TypeError, r"`log_dir`.*int"),
        _case("log_dir-url", {"log_dir": "gs://bucket/run"}, ValueError, r"`log_dir`.*is a URL"),
        _case("log_dir-file", {"log_dir": "FILE"}, ValueError, r"`log_dir`.*is an existing file"),
        _case(
            "log_dir-under-a-file",
            {"log_dir": "FILE/sub"},
            ValueError,
            r"`log_dir`.*cannot be created.*is a file",
        ),
        _case(
            "log_dir-events-dir-is-a-file",
            {"log_dir": "FILE_PARENT"},
            ValueError,
            r"`log_dir`.*saliency' is an existing file",
        ),
    ],
)
def test_bad_input_fails_in_init(tmp_path, kwargs, error, match):
    kwargs = dict(kwargs)
    if kwargs.get("log_dir") == "FILE":
        kwargs["log_dir"] = _file(tmp_path)
    elif kwargs.get("log_dir") == "FILE/sub":
        kwargs["log_dir"] = _file(tmp_path) / "sub"  # e.g. '/tmp/x/file/sub'
    elif kwargs.get("log_dir") == "FILE_PARENT":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "saliency").write_text("a file where the events directory goes")
        kwargs["log_dir"] = tmp_path / "run"
    args = {"log_dir": tmp_path / "run", "probe_data": (_X, _Y), "num_probes": 4, **kwargs}
    with pytest.raises(error, match=match):
        SaliencyMonitor(**args)
    assert not os.path.isdir(tmp_path / "run" / "saliency")  # failing validation creates nothing


@pytest.mark.parametrize(
    "kwargs, data, match",
    [
        ({}, (_X[:, :10, :10], _Y), r"`probe_data`.*\(10, 10, 3\).*input shape"),
        ({}, (_X[..., :1], _Y), r"`probe_data`.*\(12, 12, 1\).*input shape"),
        ({"target": 7}, (_X, _Y), r"`target`.*class 7 is out of range.*3 classes"),
        ({"target": "label"}, (_X, _Y + 3), r"`probe_data`.*labels.*3 classes"),
    ],
    ids=["probe-shape", "probe-channels", "target-class-range", "label-range"],
)
def test_model_mismatch_fails_before_the_first_batch(tmp_path, kwargs, data, match, model):
    x, y = tiny_data()
    monitor = SaliencyMonitor(tmp_path, data, num_probes=4, **kwargs)  # no model yet: accepted
    count = CountBatches()
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor, count])
    assert count.batches == 0


# --------------------------------------------------------------------------------------------------
# Faults during training never kill fit.
# --------------------------------------------------------------------------------------------------


def _poison(model):
    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_nan_weights_mid_run_warn_once_and_log_marked_grids(tmp_path, model):
    x, y = tiny_data()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = model.fit(
            x, y, epochs=4, batch_size=16, verbose=0, callbacks=[AtEpoch([1], _poison), monitor]
        )
    assert len(_our_warnings(record)) == 1  # one warning for three faulty epochs: no spam
    (warning,) = _our_warnings(record, "non_finite")
    assert "6 of 6 probes at epoch 1" in str(warning.message)
    assert monitor.faults == {"non_finite": ["epoch 1", "epoch 2", "epoch 3"]}
    # The numbers are NaN from epoch 1 on, in logs and in TensorBoard; nothing stopped.
    concentration = history.history["saliency_concentration"]
    assert np.isfinite(concentration[0]) and np.isnan(concentration[1:]).all()
    run = os.path.join(tmp_path, "saliency")
    logged = read_scalars(run, "saliency/concentration")
    assert sorted(logged) == [0, 1, 2, 3] and np.isnan(logged[3])
    # Every epoch has its grid; those after the fault frame each overlay tile in red.
    grids = read_images(run, GRID_TAG)
    assert sorted(grids) == [0, 1, 2, 3]
    assert _red_pixels(grids[0][0]) == 0
    assert _red_pixels(grids[3][0]) > 6 * 4 * 20
    provider, ctx, eid = store.open_logdir(run)
    epochs = store.read_run(provider, ctx, eid, ".")["epochs"]
    assert epochs["0"]["non_finite"] == [False] * 6 and epochs["3"]["non_finite"] == [True] * 6


def test_nan_weights_in_strict_mode_raise_out_of_fit(tmp_path, model):
    x, y = tiny_data()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, strict=True)
    with pytest.raises(FloatingPointError, match="NaN or inf in the saliency"):
        model.fit(
            x, y, epochs=3, batch_size=16, verbose=0, callbacks=[AtEpoch([1], _poison), monitor]
        )


def test_exception_while_computing_warns_and_later_epochs_are_logged(tmp_path, monkeypatch, model):
    x, y = tiny_data()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4)
    explain = monitor.explainer.explain
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("injected: out of memory in the gradient")
        return explain(*args, **kwargs)

    monkeypatch.setattr(monitor.explainer, "explain", flaky)
    with pytest.warns(RuntimeWarning, match="compute fault at epoch 1: MemoryError: injected"):
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[monitor])
    assert sorted(read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)) == [0, 2]
    assert len(history.history["loss"]) == 3
    assert sorted(monitor.history) == [0, 2]


def _failing_on_call(monkeypatch, n):
    """Make render.make_grid raise on its n-th call (1-based), once."""
    make_grid = render.make_grid
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError("injected rendering failure")
        return make_grid(*args, **kwargs)

    monkeypatch.setattr(render, "make_grid", failing)


@pytest.mark.parametrize("background", [True, False])
def test_exception_while_rendering_warns_and_later_epochs_are_logged(
    tmp_path, monkeypatch, background, model
):
    x, y = tiny_data()
    _failing_on_call(monkeypatch, 2)  # the grid of epoch 1
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, background=background)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[monitor])
    (warning,) = _our_warnings(record)
    assert "write fault at writing epoch 1: RuntimeError: injected rendering failure" in str(
        warning.message
    )
    assert "Traceback" in str(warning.message)  # the worker thread's traceback comes along
    assert monitor.faults == {"write": ["writing epoch 1"]}
    assert len(history.history["loss"]) == 4
    run = os.path.join(tmp_path, "saliency")
    assert sorted(read_images(run, GRID_TAG)) == [0, 2, 3]
    assert sorted(read_scalars(run, "saliency/concentration")) == [0, 1, 2, 3]  # written first


@pytest.mark.parametrize("durable", [False, True])
def test_strict_mode_raises_a_background_error_out_of_fit(tmp_path, monkeypatch, durable, model):
    x, y = tiny_data()
    _failing_on_call(monkeypatch, 1)
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, strict=True, durable=durable)
    count = CountBatches()
    with pytest.raises(RuntimeError, match="injected rendering failure"):
        model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[monitor, count])
    # Durable: raised at epoch 0's end; otherwise at the next hook (epoch 1's begin or end).
    assert count.batches in ((3,) if durable else (3, 6))


def test_strict_mode_raises_at_train_end_for_the_last_epoch(tmp_path, monkeypatch, model):
    x, y = tiny_data()
    _failing_on_call(monkeypatch, 2)
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, strict=True)
    with pytest.raises(RuntimeError, match="injected rendering failure"):
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])


def test_log_dir_removed_mid_run_is_recreated(tmp_path, model):
    x, y = tiny_data()
    # durable: nothing is being written when the directory goes, so the test has no race.
    monitor = SaliencyMonitor(tmp_path / "run", (x, y), num_probes=4, durable=True)
    remove = AtEpoch([2], lambda m: shutil.rmtree(tmp_path / "run"), when="begin")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[remove, monitor])
    assert _our_warnings(record) == [] and monitor.faults == {}
    run = os.path.join(tmp_path, "run", "saliency")
    assert sorted(read_images(run, GRID_TAG)) == [2, 3]


def test_log_dir_replaced_by_a_file_mid_run_warns_once_and_goes_on(tmp_path, model):
    """A regular file where the directory was blocks writes even for root."""
    x, y = tiny_data()
    run = tmp_path / "saliency"
    # durable: nothing is being written when the directory is swapped, so the test has no race.
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, durable=True)

    def block(model):
        shutil.rmtree(run)
        run.write_text("not a directory")

    def unblock(model):
        run.unlink()

    callbacks = [AtEpoch([1], block, "begin"), AtEpoch([4], unblock, "begin"), monitor]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=callbacks)
    assert len(history.history["saliency_concentration"]) == 6
    (warning,) = _our_warnings(record)
    assert "write fault" in str(warning.message) and "Cannot create" in str(warning.message)
    assert monitor.faults == {"write": [f"writing epoch {e}" for e in (1, 2, 3)]}
    assert sorted(read_images(str(run), GRID_TAG)) == [4, 5]


def test_log_dir_made_read_only_mid_run(tmp_path, model):
    """chmod 0o500 blocks a non-root user (warned, fit goes on); root writes anyway."""
    x, y = tiny_data()
    monitor = SaliencyMonitor(tmp_path / "run", (x, y), num_probes=4, durable=True)

    def lock(model):
        shutil.rmtree(tmp_path / "run" / "saliency")  # the writer must create it again
        os.chmod(tmp_path / "run", 0o500)

    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            model.fit(
                x,
                y,
                epochs=3,
                batch_size=16,
                verbose=0,
                callbacks=[AtEpoch([1], lock, "begin"), monitor],
            )
    finally:
        os.chmod(tmp_path / "run", 0o700)
    run = os.path.join(tmp_path, "run", "saliency")
    if os.geteuid() == 0:  # permissions do not apply to root
        assert _our_warnings(record) == [] and sorted(read_images(run, GRID_TAG)) == [1, 2]
    else:
        assert len(_our_warnings(record, "write")) == 1 and monitor.faults["write"]
        assert not os.path.exists(run)


# --------------------------------------------------------------------------------------------------
# Durability policy: at most one epoch in flight; durable=True, none.
# --------------------------------------------------------------------------------------------------


def _gated_monitor(tmp_path, model, **kwargs):
    """A monitor whose write jobs record their start and end and wait for ``gate``."""
    x, y = tiny_data()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, **kwargs)
    monitor.set_model(model)
    monitor.on_train_begin()
    order, gate = [], threading.Event()
    write = monitor._write_epoch

    def gated(epoch, *args):
        gate.wait(60)
        write(epoch, *args)
        order.append(("written", epoch))

    monitor._write_epoch = gated
    submit = monitor._writing.worker.submit

    def recording_submit(fn, *args, **kwargs):
        if args:  # a write job (closing the event file at the end takes no epoch)
            order.append(("submitted", args[0]))
        submit(fn, *args, **kwargs)

    monitor._writing.worker.submit = recording_submit
    return monitor, order, gate


def test_default_policy_overlaps_the_write_and_waits_at_the_next_epoch_end(tmp_path, model):
    monitor, order, gate = _gated_monitor(tmp_path, model)
    monitor.on_epoch_end(0, {})
    assert monitor._writing.worker.pending == 1  # returned while epoch 0 is still being written
    # Epoch 1's end must wait for epoch 0's write; the gate opens while it waits (or before:
    # the order below holds either way).
    threading.Timer(0.3, gate.set).start()
    monitor.on_epoch_end(1, {})
    assert order[:3] == [("submitted", 0), ("written", 0), ("submitted", 1)]
    monitor.on_train_end()
    assert order[-1] == ("written", 1)
    assert sorted(read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)) == [0, 1]


def test_durable_policy_returns_with_the_epoch_on_disk(tmp_path, model):
    monitor, order, gate = _gated_monitor(tmp_path, model, durable=True)
    gate.set()
    for epoch in range(2):
        monitor.on_epoch_end(epoch, {})
        assert monitor._writing.worker.pending == 0 and order[-1] == ("written", epoch)
        # Readable by another reader right now (flushed), before any further hook.
        assert sorted(read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)) == list(
            range(epoch + 1)
        )
    monitor.on_train_end()


def test_stuck_writer_holds_training_up_once_then_images_are_skipped(tmp_path, model):
    monitor, order, gate = _gated_monitor(tmp_path, model)
    monitor.WRITE_TIMEOUT_SECONDS = 0.2  # e.g. a hung network file system
    logs = [{} for _ in range(4)]
    monitor.on_epoch_end(0, logs[0])  # its write hangs at the gate
    with pytest.warns(RuntimeWarning, match="stalled fault at epoch 1"):
        monitor.on_epoch_end(1, logs[1])  # waits 0.2 s, then skips epoch 1's images
    monitor.on_epoch_end(2, logs[2])  # does not wait again while the writer is stuck
    waits = monitor._writing.wait_seconds  # one per on_epoch_end so far
    assert len(waits) == 3 and waits[1] >= 0.19 and waits[2] < 0.1
    gate.set()
    monitor.on_epoch_end(3, logs[3])  # may or may not find the writer free again
    monitor.on_train_end()
    assert all("saliency_concentration" in log for log in logs)  # numbers never skipped
    written = [e for kind, e in order if kind == "written"]
    assert written[0] == 0 and 1 not in written and 2 not in written


def test_worker_wait_and_take_errors(tmp_path):
    worker = BackgroundWorker()
    gate = threading.Event()

    def fail():
        gate.wait(60)
        raise OSError("disk gone")

    worker.submit(fail)
    assert worker.wait(0) is False and worker.take_errors() == []
    gate.set()
    assert worker.wait(60) is True
    (error,) = worker.take_errors()
    assert isinstance(error.exception, OSError) and "disk gone" in error.traceback
    assert worker.take_errors() == [] and worker.drain() == []
    worker.close()


# --------------------------------------------------------------------------------------------------
# Large probe sets: chunked, and equal to an unchunked computation.
# --------------------------------------------------------------------------------------------------


class _RecordBatchSize(keras.layers.Layer):
    """Identity that records the batch size of every call it runs in (graph mode too)."""

    def __init__(self, sizes, **kwargs):
        super().__init__(**kwargs)
        self.record = sizes.append  # not the list itself: Keras would track a copy of it

    def call(self, x):
        def record(n):
            self.record(int(n))
            return n

        n = tf.py_function(record, [tf.shape(x)[0]], tf.int32)
        with tf.control_dependencies([n]):
            return tf.identity(x)


def _one_epoch_of_300_probes(tmp_path, *first_layers):
    """A small CNN (after ``first_layers``) watched with 300 probes in chunks of 16, one epoch:
    the monitor and the epoch's logs, after checking there was no fault and that the chunked
    maps equal one unchunked pass (``compute_saliency`` with a batch of 300)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 32, 32, 3)).astype("float32")
    y = np.arange(300) % 3
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            *first_layers,
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    with pytest.warns(UserWarning, match="num_probes=300 is more than 256"):
        monitor = SaliencyMonitor(  # no sanity check: its passes on a copy would count too
            tmp_path, (x, y), num_probes=300, batch_size=16, background=False, sanity_blocks=0
        )
    monitor.set_model(model)
    monitor.on_train_begin()
    logs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the grid shows the probes that fit
        monitor.on_epoch_end(0, logs)
    monitor.on_train_end()
    assert monitor.faults == {} and np.isfinite(logs["saliency_concentration"])
    return monitor, model


def _chunked_equals_unchunked(monitor, model):
    chunked = monitor.explainer.explain(monitor.probes.x).maps
    whole = compute_saliency(model, monitor.probes.x, batch_size=300)
    assert chunked.shape == whole.shape == (300, 32, 32)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-8)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the batch-size recorder is a TF layer"
)
def test_large_probe_set_is_chunked_and_equals_unchunked(tmp_path):
    sizes = []  # batch sizes the model saw: memory is bounded by the chunk, not by 300
    monitor, model = _one_epoch_of_300_probes(tmp_path, _RecordBatchSize(sizes))
    assert max(sizes) == 16 and sum(sizes) == 300  # vanilla: one pass over the probes
    assert monitor.explainer.trace_count == 1  # the last, smaller chunk did not retrace
    _chunked_equals_unchunked(monitor, model)
    provider, ctx, eid = store.open_logdir(os.path.join(tmp_path, "saliency"))
    index = store.read_run(provider, ctx, eid, ".")
    assert index["probe_set"]["num_probes"] == 300 and len(index["epochs"]["0"]["classes"]) == 300
    assert len(event_files(os.path.join(tmp_path, "saliency"))) == 1


def test_large_probe_set_chunked_equals_unchunked_on_every_backend(tmp_path):
    """The part of the test above that every backend has (JAX pads the last chunk to the
    first's row count, PyTorch runs eagerly): 300 probes in chunks of 16, the epoch without a
    fault, and maps equal to one unchunked pass."""
    _chunked_equals_unchunked(*_one_epoch_of_300_probes(tmp_path))


def test_a_large_uint8_pool_is_not_copied_to_float32(tmp_path):
    """Only the drawn probes are converted: 16 of 2,000 images, not a 98 MB float32 pool."""
    import tracemalloc

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2000, 64, 64, 3), dtype=np.uint8)  # 24.6 MB
    y = np.arange(2000) % 10
    masks = np.zeros((2000, 64, 64), bool)
    masks[:, 16:48, 16:48] = True
    tracemalloc.start()
    try:
        monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=16, masks=masks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * x.nbytes
    assert monitor.probes.x.dtype == np.float32 and monitor.probes.x.shape == (16, 64, 64, 3)
    np.testing.assert_array_equal(monitor.probes.x, x[monitor.probes.indices])
    assert monitor.probes.masks.shape == (16, 64, 64) and monitor.probes.masks[:, 20, 20].all()

"""Adversarial inputs and faults: one table, plus a stuck disk, leaks and a reused log directory.

Each row of the table is a bad input or a fault:

- ``init``: ``SaliencyMonitor(...)`` raises, with the argument named in the message;
- ``begin``: the monitor is accepted without a model, and ``fit`` raises before its first batch;
- ``fault``: something breaks during training; ``fit`` returns, and the row checks what was kept.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor.drawing import render
from keras_saliency_monitor.monitor.callback import GRID_TAG
from keras_saliency_monitor.storage import arrays, writer

from .helpers import CountBatches, read_images, read_scalars, tiny_cnn, tiny_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_X, _Y = tiny_data(12)  # (12, 12, 12, 3) images of 3 classes
_THREAD = "keras-saliency-monitor-writer"


class AtEpoch(keras.callbacks.Callback):
    """Runs ``fn()`` at the beginning of the given epochs (a fault injector)."""

    def __init__(self, epochs, fn):
        super().__init__()
        self.epochs, self.fn = set(epochs), fn

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in self.epochs:
            self.fn(self.model)


@pytest.fixture(scope="module")
def _compiled_model():
    model = tiny_cnn()
    x, y = tiny_data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # traced once for the module
    state = [v.numpy() for v in model.variables + model.optimizer.variables]
    return model, state


@pytest.fixture
def model(_compiled_model):
    """The module's model with its weights and optimizer state as at the start."""
    model, state = _compiled_model
    for variable, value in zip(model.variables + model.optimizer.variables, state):
        variable.assign(value)
    return model


def _fit(model, monitor, epochs=3, extra=(), **kwargs):
    x, y = tiny_data()
    return model.fit(
        x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[*extra, monitor], **kwargs
    )


# --------------------------------------------------------------------------------------------------
# Inputs for the rows
# --------------------------------------------------------------------------------------------------


def _nan_masks():
    masks = np.ones((12, 12, 12), "float32")
    masks[4, 3, 3] = np.nan
    return masks


def _failing_mask(x, y):
    return {"cat": np.ones(x.shape[:2])}[y]  # KeyError: y is an int


def _generator():
    yield _X[0], _Y[0]


def _dict_dataset():
    return tf.data.Dataset.from_tensor_slices(({"image": _X}, _Y)).batch(4)


def _empty_dataset():
    return tf.data.Dataset.from_tensor_slices((_X[:0], _Y[:0]))


def _float_labels():
    return _Y.astype("float32") + 0.37  # regression targets, not class ids


def _strings(names):
    return np.asarray(names)[_Y % len(names)]


def _dense_model():
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _gray_model():
    """A model on (H, W) images with no channel axis."""
    model = keras.Sequential(
        [keras.Input((12, 12)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


_MODELS = {"DENSE": _dense_model, "GRAY2D": _gray_model}


def _init(id, kwargs, error, argument, match=None):
    return pytest.param("init", kwargs, error, argument, match, id=id)


def _begin(id, kwargs, error, argument, match=None):
    return pytest.param("begin", kwargs, error, argument, match, id=id)


BAD_INPUTS = [
    # Numbers given as strings or None: named, not a raw comparison error.
    _init("alpha-str", {"alpha": "0.5"}, TypeError, "alpha", r"alpha='0.5'.*Pass a number"),
    _init("alpha-above-1", {"alpha": 1.5}, ValueError, "alpha", r"\[0, 1\]"),
    _init("alpha-nan", {"alpha": float("nan")}, ValueError, "alpha"),
    _init("smoothing-none", {"smoothing": None}, TypeError, "smoothing", "smoothing=None"),
    _init("smoothing-negative", {"smoothing": -1.0}, ValueError, "smoothing", ">= 0"),
    _init("clip_percentile-str", {"clip_percentile": "99"}, TypeError, "clip_percentile"),
    _init("pointing_tolerance-str", {"pointing_tolerance": "1"}, TypeError, "pointing_tolerance"),
    _init("pointing_tolerance-neg", {"pointing_tolerance": -2}, ValueError, "pointing_tolerance"),
    _init("max_grid_width-small", {"max_grid_width": 8}, ValueError, "max_grid_width"),
    _init("display_fn-not-callable", {"display_fn": 3}, TypeError, "display_fn"),
    _init("num_probes-zero", {"num_probes": 0}, ValueError, "num_probes"),
    _init("num_probes-str", {"num_probes": "4"}, TypeError, "num_probes"),
    _init("every_n_epochs-zero", {"every_n_epochs": 0}, ValueError, "every_n_epochs"),
    _init("batch_size-zero", {"batch_size": 0}, ValueError, "batch_size"),
    _init("method-unknown", {"method": "lime"}, ValueError, "method"),
    _init("target-unknown-str", {"target": "labels"}, ValueError, "target"),
    _init("target-float", {"target": 1.5}, TypeError, "target"),
    # class_names: a bare string would be split into letters.
    _init("class_names-str", {"class_names": "cat"}, TypeError, "class_names", "split into"),
    _init("class_names-dict", {"class_names": {0: "cat"}}, TypeError, "class_names", "order"),
    # log_dir.
    _init("log_dir-int", {"log_dir": 7}, TypeError, "log_dir"),
    _init("log_dir-empty", {"log_dir": ""}, ValueError, "log_dir", "empty"),
    _init("log_dir-url", {"log_dir": "s3://bucket/run"}, ValueError, "log_dir", "URL"),
    # probe_data shapes and kinds.
    _init("probe_data-none", {"probe_data": None}, ValueError, "probe_data"),
    _init(
        "probe_data-single-image",
        {"probe_data": _X[0]},
        ValueError,
        "probe_data",
        r"single image of shape \(12, 12, 3\).*x\[None\]",
    ),
    _init(
        "probe_data-generator",
        {"probe_data": "GENERATOR"},
        TypeError,
        "probe_data",
        "generator.*tf.data",
    ),
    _init(
        "probe_data-dict-dataset", {"probe_data": "DICT_DATASET"}, TypeError, "probe_data", "dict"
    ),
    _init(
        "probe_data-dict-inputs",
        {"probe_data": ({"image": _X}, _Y)},
        TypeError,
        "probe_data",
        r"dict.*d\['image'\]",
    ),
    _init(
        "probe_data-ragged-list",
        {"probe_data": [_X[0], _X[1, :8], _X[2, :5]]},
        TypeError,
        "probe_data",
        "ragged",
    ),
    _init("probe_data-empty-dataset", {"probe_data": "EMPTY_DATASET"}, ValueError, "probe_data"),
    _init(
        "probe_data-label-count",
        {"probe_data": (_X, _Y[:5])},
        ValueError,
        "probe_data",
        "as many labels as images",
    ),
    _init(
        "probe_data-nan-image",
        {"probe_data": (np.where(np.arange(12)[:, None, None, None] == 2, np.nan, _X), _Y)},
        ValueError,
        "probe_data",
        r"NaN or inf in image\(s\) \[2\]",
    ),
    # Labels.
    _init(
        "target-label-float-labels",
        {"probe_data": (_X, _float_labels()), "target": "label"},
        ValueError,
        "target",
        r"not class ids \(e\.g\. 0\.37",
    ),
    _init(
        "target-label-no-labels",
        {"probe_data": _X, "target": "label"},
        ValueError,
        "target",
        "has none",
    ),
    _init(
        "string-labels-without-class_names",
        {"probe_data": (_X, _strings(["cat", "dog", "emu"]))},
        ValueError,
        "class_names",
        "string labels",
    ),
    _init(
        "string-labels-not-in-class_names",
        {"probe_data": (_X, _strings(["cat", "dog", "emu"])), "class_names": ["cat", "dog"]},
        ValueError,
        "class_names",
        r"\['emu'\]",
    ),
    # Masks.
    _init("masks-nan", {"masks": _nan_masks()}, ValueError, "masks", "NaN in the masks"),
    _init("masks-above-1", {"masks": np.full((12, 12, 12), 2.0)}, ValueError, "masks", r"\[0, 1\]"),
    _init(
        "masks-all-empty",
        {"masks": np.zeros((12, 12, 12), bool)},
        ValueError,
        "masks",
        "all-zero masks for every drawn probe",
    ),
    _init(
        "masks-normalised-boxes",
        {"masks": np.tile([[0.2, 0.2, 0.7, 0.7]], (12, 1))},
        ValueError,
        "masks",
        r"normalised.*boxes \* \[12, 12, 12, 12\]",
    ),
    _init(
        "masks-callable-fails",
        {"masks": _failing_mask},
        ValueError,
        "masks",
        "mask callable raised KeyError",
    ),
    _init("masks-wrong-count", {"masks": np.ones((5, 12, 12))}, ValueError, "masks"),
    _init(
        "masks-callable-ragged",
        {"masks": lambda x, y: np.ones((12, 12 - y))},
        ValueError,
        "masks",
        r"\(H, W\) = \(12, 12\)",
    ),
    # Needs the model: raised in on_train_begin, before the first batch.
    _begin(
        "model-1d-input",
        {"model": "DENSE"},
        ValueError,
        "probe_data",
        r"shape \(20,\), not images",
    ),
    _begin(
        "model-2d-input",
        {"model": "GRAY2D", "probe_data": (_X[..., 0], _Y)},
        ValueError,
        "probe_data",
        r"keras.Input\(\(12, 12, 1\)\)",
    ),
    _begin(
        "target-callable-raises",
        {"target": lambda z: z[:, 99] if z.shape[1] > 99 else {}["score"]},
        ValueError,
        "target",
        "target callable failed.*KeyError",
    ),
    _begin(
        "target-callable-shape",
        {"target": lambda z: z},
        ValueError,
        "target",
        r"returned shape \(2, 3\)",
    ),
    _begin("target-class-range", {"target": 9}, ValueError, "target", "out of range"),
    _begin(
        "probe_data-shape-mismatch",
        {"probe_data": (_X[:, :10, :10], _Y)},
        ValueError,
        "probe_data",
        "input shape",
    ),
    _begin(
        "log_dir-second-writer",
        {"log_dir": "SHARED"},
        ValueError,
        "log_dir",
        "being written by another SaliencyMonitor",
    ),
]


def _resolve(kwargs, tmp_path):
    kwargs = dict(kwargs)
    special = {
        "GENERATOR": _generator,
        "DICT_DATASET": _dict_dataset,
        "EMPTY_DATASET": _empty_dataset,
    }
    if isinstance(kwargs.get("probe_data"), str) and kwargs["probe_data"] in special:
        kwargs["probe_data"] = special[kwargs["probe_data"]]()
    return {"log_dir": tmp_path / "run", "probe_data": (_X, _Y), "num_probes": 4, **kwargs}


@pytest.mark.parametrize("when, kwargs, error, argument, match", BAD_INPUTS)
def test_bad_input_is_refused_before_training(
    tmp_path, model, when, kwargs, error, argument, match
):
    kwargs = _resolve(kwargs, tmp_path)
    if when == "init":
        with pytest.raises(error, match=match) as info:
            SaliencyMonitor(**kwargs)
        assert f"`{argument}`" in str(info.value)
        assert not os.path.exists(tmp_path / "run")  # a refused monitor creates nothing
        return
    if "model" in kwargs:
        model = _MODELS[kwargs.pop("model")]()
    extra = []
    if kwargs["log_dir"] == "SHARED":
        kwargs["log_dir"] = tmp_path / "run"
        extra = [SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=4)]  # the first writer
    monitor = SaliencyMonitor(**kwargs)  # accepted without a model
    count = CountBatches()
    x = np.zeros((len(_X), *model.inputs[0].shape[1:]), "float32")
    y = np.zeros(len(x), "int32")
    with pytest.raises(error, match=match) as info:
        model.fit(x, y, epochs=1, verbose=0, callbacks=[*extra, monitor, count])
    assert f"`{argument}`" in str(info.value)
    assert count.batches == 0
    for m in extra:
        m.on_train_end()  # the first writer's fit never got to its end


# --------------------------------------------------------------------------------------------------
# Faults during training: fit returns; the row checks what was kept.
# --------------------------------------------------------------------------------------------------


def _sync_fails_once(monkeypatch, tmp_path, model):
    sync, calls = writer._sync, []

    def failing(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(5, "injected I/O error")
        sync(fd)

    monkeypatch.setattr(writer, "_sync", failing)
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4, durable=True)
    history = _fit(model, monitor, epochs=4)
    run = os.path.join(tmp_path, "saliency")
    assert len(history.history["loss"]) == 4
    assert monitor.faults == {"write": ["writing epoch 1"]}
    assert {0, 2, 3} <= set(read_images(run, GRID_TAG))  # epoch 1's file was dropped at most


def _render_fails_once(monkeypatch, tmp_path, model):
    make_grid, calls = render.make_grid, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected")
        return make_grid(*args, **kwargs)

    monkeypatch.setattr(render, "make_grid", failing)
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    _fit(model, monitor, epochs=3)
    run = os.path.join(tmp_path, "saliency")
    assert sorted(read_images(run, GRID_TAG)) == [0, 2]
    assert sorted(read_scalars(run, "saliency/concentration")) == [0, 1, 2]  # written first


def _explain_fails_once(monkeypatch, tmp_path, model):
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    explain, calls = monitor.explainer.explain, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("injected")
        return explain(*args, **kwargs)

    monkeypatch.setattr(monitor.explainer, "explain", failing)
    _fit(model, monitor, epochs=3)
    assert monitor.faults == {"compute": ["epoch 0"]} and sorted(monitor.history) == [1, 2]
    assert sorted(read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)) == [1, 2]


def _nan_weights(monkeypatch, tmp_path, model):
    def poison(model):
        kernel = model.layers[0].kernel
        kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    _fit(model, monitor, epochs=3, extra=[AtEpoch([1], poison)])
    assert monitor.faults == {"non_finite": ["epoch 1", "epoch 2"]}
    assert sorted(read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)) == [0, 1, 2]


def _chdir_mid_run(monkeypatch, tmp_path, model):
    monkeypatch.chdir(tmp_path)
    monitor = SaliencyMonitor("relative/run", (_X, _Y), num_probes=4, durable=True)
    (tmp_path / "elsewhere").mkdir()
    _fit(model, monitor, epochs=3, extra=[AtEpoch([1], lambda m: os.chdir(tmp_path / "elsewhere"))])
    assert monitor.log_dir == str(tmp_path / "relative" / "run")
    run = os.path.join(tmp_path, "relative", "run", "saliency")
    assert sorted(read_images(run, GRID_TAG)) == [0, 1, 2]  # one run, not split in two
    assert not os.path.exists(tmp_path / "elsewhere" / "relative")


def _arrays_of_an_earlier_run(monkeypatch, tmp_path, model):
    before = arrays.save_epoch(tmp_path, 0, np.full((1, 2, 2), 7.0))  # an earlier run's file
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4, save_arrays=True)
    _fit(model, monitor, epochs=2)
    saved = arrays.load_arrays(tmp_path)
    assert sorted(saved) == [0, 1, 2] and monitor.faults == {}
    np.testing.assert_array_equal(saved[0]["maps"], np.full((1, 2, 2), 7.0))  # kept as it was
    assert saved[1]["maps"].shape == (4, 12, 12) and os.path.exists(before)


def _log_dir_deleted(monkeypatch, tmp_path, model):
    import shutil

    monitor = SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=4, durable=True)
    _fit(model, monitor, epochs=3, extra=[AtEpoch([1], lambda m: shutil.rmtree(tmp_path / "run"))])
    assert monitor.faults == {}
    assert sorted(read_images(os.path.join(tmp_path, "run", "saliency"), GRID_TAG)) == [1, 2]


def _some_masks_empty(monkeypatch, tmp_path, model):
    masks = np.ones((12, 12, 12), bool)
    masks[_Y == 0] = False  # class 0 has no object mask
    with pytest.warns(UserWarning, match="masks of 2 of 6 probes are empty"):
        monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=6, masks=masks)
    history = _fit(model, monitor, epochs=2)
    assert np.isfinite(history.history["saliency_focus_lift"]).all()  # the others' mean


FAULTS = [
    pytest.param(_sync_fails_once, id="fault-sync-oserror"),
    pytest.param(_render_fails_once, id="fault-render-error"),
    pytest.param(_explain_fails_once, id="fault-explain-memoryerror"),
    pytest.param(_nan_weights, id="fault-nan-weights"),
    pytest.param(_chdir_mid_run, id="fault-chdir-mid-run"),
    pytest.param(_arrays_of_an_earlier_run, id="fault-arrays-exist"),
    pytest.param(_log_dir_deleted, id="fault-log-dir-deleted"),
    pytest.param(_some_masks_empty, id="fault-some-masks-empty"),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_during_training_keeps_fit_going(tmp_path, monkeypatch, model, fault):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the one fault warning per kind
        fault(monkeypatch, tmp_path, model)


def test_the_table_has_at_least_forty_rows():
    assert len(BAD_INPUTS) + len(FAULTS) >= 40


# --------------------------------------------------------------------------------------------------
# Never hang: a stuck disk.
# --------------------------------------------------------------------------------------------------


def _stuck_second_sync(monkeypatch, release):
    """Make the writer's sync block on its second call until ``release`` is set."""
    sync, calls = writer._sync, []

    def stuck(fd):
        calls.append(fd)
        if len(calls) == 2:
            release.wait(600)
        sync(fd)

    monkeypatch.setattr(writer, "_sync", stuck)


def test_stuck_disk_fit_returns_within_the_bound(tmp_path, monkeypatch, model):
    release = threading.Event()
    _stuck_second_sync(monkeypatch, release)
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    monitor.WRITE_TIMEOUT_SECONDS = 2.0
    bound = monitor.WRITE_TIMEOUT_SECONDS + monitor.STALLED_END_SECONDS
    try:
        start = time.monotonic()
        with pytest.warns(RuntimeWarning, match="stalled fault"):
            history = _fit(model, monitor, epochs=4)
        took = time.monotonic() - start
        # The fit itself takes well under a second per epoch here; the monitor adds at most
        # one WRITE_TIMEOUT_SECONDS wait and STALLED_END_SECONDS at the end.
        assert took < bound + 8.0, took
        assert sum(monitor._writing.wait_seconds) < bound + 0.5
        assert len(history.history["saliency_concentration"]) == 4  # numbers never skipped
        assert set(monitor.faults) == {"stalled"}
    finally:
        release.set()
    # Once the disk comes back, the abandoned thread finishes its job, closes the file and ends.
    deadline = time.monotonic() + 10
    while any(t.name == _THREAD for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == _THREAD for t in threading.enumerate())
    assert 0 in read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)


STUCK_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import keras, numpy as np
    from keras_saliency_monitor import SaliencyMonitor
    from keras_saliency_monitor.storage import writer

    sync, calls = writer._sync, []

    def stuck(fd):  # a hung file system: the second sync never comes back (in this run)
        calls.append(fd)
        if len(calls) == 2:
            time.sleep(3600)
        sync(fd)

    writer._sync = stuck
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 12, 12, 3)).astype("float32")
    y = np.arange(32) % 3
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    monitor = SaliencyMonitor(sys.argv[1], (x, y), num_probes=4)
    monitor.WRITE_TIMEOUT_SECONDS = 2.0
    start = time.monotonic()
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[monitor])
    print("FIT_SECONDS", time.monotonic() - start, "FAULTS", sorted(monitor.faults), flush=True)
    """
)


def test_stuck_disk_process_exits(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(STUCK_CHILD)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,  # would be an hour if anything waited for the stuck sync
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    fit_seconds = float(proc.stdout.split("FIT_SECONDS")[1].split()[0])
    assert "['stalled']" in proc.stdout
    assert fit_seconds < 2.0 + 1.0 + 20.0  # bound + a first-trace fit on a loaded machine
    # The process exits: the exit handler waits neither for the abandoned worker nor the file.
    assert took < 120, took


# --------------------------------------------------------------------------------------------------
# Never leak: no thread, file or reference to the model after fit.
# --------------------------------------------------------------------------------------------------


def _open_files_under(path):
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            out.append(target)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_model_thread_or_file_survives_fit(tmp_path):
    x, y = tiny_data()
    refs = []
    threads = []
    for i in range(3):
        model = tiny_cnn()
        monitor = SaliencyMonitor(tmp_path / f"run{i}", (x, y), num_probes=4)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
        assert _open_files_under(tmp_path) == []  # the event file and the lock are closed
        threads.append(sum(t.name == _THREAD for t in threading.enumerate()))
        refs.append((weakref.ref(model), weakref.ref(monitor)))
        del model, monitor
        gc.collect()
    assert threads == [0, 0, 0]
    assert [(m() is None, c() is None) for m, c in refs] == [(True, True)] * 3


def test_a_later_fit_opens_a_new_event_file(tmp_path, model):
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    _fit(model, monitor, epochs=1)
    _fit(model, monitor, epochs=1)
    files = sorted(os.listdir(tmp_path / "saliency"))
    assert len([f for f in files if "tfevents" in f]) == 2
    assert _open_files_under(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# Never overwrite: two fits into one directory.
# --------------------------------------------------------------------------------------------------


def test_two_fits_into_one_dir_keep_every_epoch_at_distinct_steps(tmp_path, model):
    run = os.path.join(tmp_path, "saliency")
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4, save_arrays=True)
    _fit(model, monitor, epochs=2)  # stage 1
    _fit(model, monitor, epochs=2)  # stage 2, same monitor, epochs 0..1 again
    assert sorted(read_images(run, GRID_TAG)) == [0, 1, 2, 3]
    assert sorted(read_scalars(run, "saliency/concentration")) == [0, 1, 2, 3]
    assert sorted(arrays.load_arrays(tmp_path)) == [0, 1, 2, 3]
    assert sorted(monitor.history) == [0, 1, 2, 3]
    # A new monitor (or a new process) continues after what the directory holds...
    again = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4, save_arrays=True)
    _fit(model, again, epochs=1)
    assert sorted(read_images(run, GRID_TAG)) == [0, 1, 2, 3, 4]
    # ... and an initial_epoch after the last logged step is honoured as it is.
    _fit(model, again, epochs=8, initial_epoch=7)
    assert sorted(read_images(run, GRID_TAG)) == [0, 1, 2, 3, 4, 7]
    assert sorted(arrays.load_arrays(tmp_path)) == [0, 1, 2, 3, 4, 7]
    assert again.faults == {} and monitor.faults == {}


def test_last_step_reads_every_event_file(tmp_path):
    assert writer.last_step(tmp_path) is None
    with writer.EventWriter(tmp_path) as w:
        w.add_scalar("a", 1.0, 0)
    assert writer.last_step(tmp_path) == 0  # a step of 0 is left out of the proto
    with writer.EventWriter(tmp_path) as w:
        w.add_images("b", np.zeros((2, 64, 64, 3), np.uint8), 12)
        w.add_scalar("a", 1.0, 5)
    assert writer.last_step(tmp_path) == 12
    # A torn record at the end (a killed writer) ends that file's scan.
    path = sorted(p for p in os.listdir(tmp_path) if "tfevents" in p)[-1]
    with open(tmp_path / path, "ab") as f:
        f.write(io.BytesIO(b"\x40\x00\x00\x00\x00\x00\x00\x00\x00").read())
    assert writer.last_step(tmp_path) == 12


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_a_writer_in_another_process_is_refused_until_it_dies(tmp_path, model):
    events = tmp_path / "saliency"
    events.mkdir()
    holder = textwrap.dedent(
        f"""
        import fcntl, os, sys
        f = open({str(events / ".writer.lock")!r}, "a+")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write(f"process {{os.getpid()}} on somehost\\n"); f.flush()
        print("LOCKED", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "LOCKED"
        monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
        count = CountBatches()
        with pytest.raises(ValueError, match=rf"`log_dir`.*process {proc.pid} on somehost"):
            _fit(model, monitor, epochs=1, extra=[count])
        assert count.batches == 0
    finally:
        proc.kill()  # the kernel drops a dead process's lock
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    _fit(model, monitor, epochs=1)
    assert sorted(read_images(str(events), GRID_TAG)) == [0]


# ==================================================================================================
# Issue 19, inputs half (helper 19b): models, arguments and messages.
# Each test below fails on main 6de9219.
# ==================================================================================================


def _dense_then_lambda_softmax():
    i = keras.Input((12, 12, 3))
    z = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(i))
    return keras.Model(i, keras.layers.Lambda(keras.activations.softmax, name="probs")(z)), "probs"


def _dense_softmax_then_reshape():
    i = keras.Input((12, 12, 3))
    p = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.Flatten()(i))
    return keras.Model(i, keras.layers.Reshape((3,), name="reshaped")(p)), "head"


def _conv_softmax_then_pooling():
    i = keras.Input((12, 12, 3))
    p = keras.layers.Conv2D(3, 3, activation="softmax", name="cam")(i)
    return keras.Model(i, keras.layers.GlobalAveragePooling2D(name="pool")(p)), "cam"


def _anonymous_lambda_softmax():
    i = keras.Input((12, 12, 3))
    z = keras.layers.Dense(3)(keras.layers.Flatten()(i))
    return keras.Model(
        i, keras.layers.Lambda(lambda t: keras.ops.softmax(t), name="anon")(z)
    ), "anon"


@pytest.mark.parametrize(
    "build",
    [
        _dense_then_lambda_softmax,
        _dense_softmax_then_reshape,
        _conv_softmax_then_pooling,
        _anonymous_lambda_softmax,
    ],
)
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the expected gradient is a tf.GradientTape"
)
def test_a_softmax_before_the_last_layer_warns_naming_it_and_the_fix(build):
    """Defect 8: a softmax that cannot be stripped is explained as probabilities, with a warning
    that names the layer and the fix; the model is neither cloned nor changed."""
    from keras_saliency_monitor import compute_saliency

    model, culprit = build()
    before = [v.numpy().copy() for v in model.variables]
    layers_before = [(layer.name, getattr(layer, "activation", None)) for layer in model.layers]
    with pytest.warns(UserWarning, match=rf"softmax.*'{culprit}'.*Activation\('softmax'\)"):
        maps = compute_saliency(model, _X[:4])
    assert maps.shape == (4, 12, 12)
    assert [(layer.name, getattr(layer, "activation", None)) for layer in model.layers] == (
        layers_before
    )
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.variables))
    # What is explained is the output itself (the probabilities), as the warning says.
    x = tf.constant(_X[:4])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = model(x, training=False)
        score = tf.reduce_sum(out * tf.one_hot(tf.argmax(out, axis=-1), 3), axis=-1)
    expected = tf.reduce_max(tf.abs(tape.gradient(score, x)), axis=-1).numpy()
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-7)


def test_a_softmax_model_strippable_or_linear_does_not_warn(model):
    from keras_saliency_monitor import compute_saliency

    i = keras.Input((12, 12, 3))
    linear = keras.Model(
        i, keras.layers.Reshape((3,))(keras.layers.Dense(3)(keras.layers.Flatten()(i)))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_saliency(model, _X[:4])  # Dense(softmax) last: stripped
        compute_saliency(linear, _X[:4])


def test_the_hidden_softmax_warning_comes_before_fit_trains(tmp_path):
    hidden, _ = _dense_softmax_then_reshape()
    hidden.compile("adam", "sparse_categorical_crossentropy")
    monitor = SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=4)
    with pytest.warns(UserWarning, match="'head'.*cannot be stripped"):
        hidden.fit(_X, _Y, epochs=1, verbose=0, callbacks=[monitor])


def test_stability_is_logged_at_every_epoch_for_csvlogger_and_history(tmp_path, model):
    """Defect 9: saliency_stability is NaN at a run's first epoch, so CSVLogger has the column and
    History's list lines up with the epochs."""
    import csv

    path = tmp_path / "log.csv"
    monitor = SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=4, save_arrays=True)
    logger = keras.callbacks.CSVLogger(str(path))  # after the monitor, as Keras runs them in order
    history = model.fit(_X, _Y, epochs=3, verbose=0, callbacks=[monitor, logger])
    stability = history.history["saliency_stability"]
    assert len(stability) == 3 and np.isnan(stability[0]) and np.isfinite(stability[1:]).all()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["saliency_stability"].lower() == "nan"
    # Every logged epoch carries the same saliency keys (the alarm's interventions, measured only
    # once the model has learned, are NaN before), so none is lost to CSVLogger's first row.
    keys = [{k for k in row if k.startswith("saliency_")} for row in rows]
    assert keys[0] == keys[-1] and {"saliency_band_lost", "saliency_train_skill"} <= keys[0]
    # The sanity check's numbers too: measured once a fit, NaN at the other epochs.
    per_epoch = [k for k in history.history if k.startswith("saliency_")]
    assert all(len(history.history[k]) == 3 for k in per_epoch)
    assert [float(r["saliency_stability"]) for r in rows[1:]] == pytest.approx(stability[1:])
    # Epoch e's value: the mean Spearman correlation of epoch e-1's and epoch e's maps.
    from scipy import stats

    saved = arrays.load_arrays(tmp_path / "run")
    for e in (1, 2):
        a, b = saved[e - 1]["maps"], saved[e]["maps"]
        rho = [stats.spearmanr(a[k].ravel(), b[k].ravel()).statistic for k in range(len(a))]
        assert stability[e] == pytest.approx(np.mean(rho), abs=1e-6)


def test_skipped_epochs_repeat_the_last_numbers_so_early_stopping_does_not_warn(tmp_path, model):
    """Keras's convention, a value at every epoch: EarlyStopping on a saliency number with
    every_n_epochs=2 sees one at the skipped epochs too (the last logged), and never warns."""
    monitor = SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=4, every_n_epochs=2)
    stop = keras.callbacks.EarlyStopping("saliency_concentration", patience=10, mode="max")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(_X, _Y, epochs=4, verbose=0, callbacks=[monitor, stop])
    assert not [w for w in caught if "saliency_concentration" in str(w.message)]
    values = history.history["saliency_concentration"]
    assert len(values) == 4
    assert values[1] == values[0] and values[3] == values[2]
    assert values[0] == monitor.history[0]["saliency_concentration"]
    assert values[2] == monitor.history[2]["saliency_concentration"]


def _raises(x):
    return 1 // 0


BAD_INPUTS_19B = [
    _init("seed-str", {"seed": "abc"}, TypeError, "seed", r"seed='abc'.*Pass e\.g\. seed=0"),
    _init("seed-negative", {"seed": -1}, ValueError, "seed", r"int >= 0.*seed=-1"),
    _init("seed-float", {"seed": 1.5}, TypeError, "seed", r"seed=1\.5"),
    _init(
        "display_fn-raises",
        {"display_fn": _raises},
        ValueError,
        "display_fn",
        r"raised ZeroDivisionError.*display_fn=None",
    ),
]


@pytest.mark.parametrize("when, kwargs, error, argument, match", BAD_INPUTS_19B)
def test_bad_input_19b_is_refused_before_training(
    tmp_path, model, when, kwargs, error, argument, match
):
    """Defect 10: the arguments' messages name the argument, what was received and the fix."""
    test_bad_input_is_refused_before_training(tmp_path, model, when, kwargs, error, argument, match)


def test_compute_saliency_names_images_not_probe_data(model):
    from keras_saliency_monitor import compute_saliency

    with pytest.raises(ValueError, match=r"`images`.*\(10, 10, 3\)") as info:
        compute_saliency(model, _X[:2, :10, :10])
    assert "probe_data" not in str(info.value)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the expected gradient is a tf.GradientTape"
)
def test_a_two_input_model_is_refused_with_a_fix_that_works(tmp_path):
    """The message's wrapper is run as written: it explains the image input."""
    import re

    from keras_saliency_monitor import compute_saliency

    image, meta = keras.Input((12, 12, 3)), keras.Input((5,))
    flat = keras.layers.Concatenate()([keras.layers.Flatten()(image), meta])
    two = keras.Model([image, meta], keras.layers.Dense(3)(flat))
    with pytest.raises(ValueError, match=r"`model`.*2 inputs.*wrapped") as info:
        compute_saliency(two, _X[:2])
    snippet = re.search(r"(image = keras\.Input.*?); then explain", str(info.value)).group(1)
    scope = {"keras": keras, "model": two}
    exec(snippet.replace("; ", "\n"), scope)  # noqa: S102 - the fix the message gives
    maps = compute_saliency(scope["wrapped"], _X[:2])
    x = tf.constant(_X[:2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = two([x, tf.zeros((2, 5))], training=False)
        score = tf.reduce_max(out, axis=-1)
    expected = tf.reduce_max(tf.abs(tape.gradient(score, x)), axis=-1).numpy()
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-7)
    # The monitor gives the same message before a batch trains.
    two.compile("adam", "mse")
    count = CountBatches()
    monitor = SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=4)
    with pytest.raises(ValueError, match=r"`model`.*2 inputs.*wrapped"):
        two.fit(
            [_X, np.zeros((12, 5))],
            np.zeros((12, 3)),
            epochs=1,
            verbose=0,
            callbacks=[monitor, count],
        )
    assert count.batches == 0


def test_tilde_in_log_dir_is_the_home_directory(tmp_path, monkeypatch, model):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monitor = SaliencyMonitor("~/runs/exp1", (_X, _Y), num_probes=4)
    assert monitor.log_dir == str(home / "runs" / "exp1")
    _fit(model, monitor, epochs=1)
    assert sorted(read_images(str(home / "runs" / "exp1" / "saliency"), GRID_TAG)) == [0]
    assert os.listdir(cwd) == []


def test_multi_hot_labels_are_not_cut_to_one_class(tmp_path):
    from keras_saliency_monitor.monitor import probes

    multi = np.eye(3)[_Y]
    multi[5, 0] = 1.0  # example 5: classes 0 and 2
    with pytest.warns(UserWarning, match=r"multi-hot.*\[1\.0, 0\.0, 1\.0\]"):
        monitor = SaliencyMonitor(tmp_path / "run", (_X, multi), num_probes=4)
    assert monitor.probes.labels is None  # not argmax'ed into class 0
    with pytest.raises(ValueError, match=r"`target`.*multi-hot") as info:
        SaliencyMonitor(tmp_path / "run", (_X, multi), num_probes=4, target="label")
    assert "target=<class index>" in str(info.value)
    # The same from a dataset, where only a later batch is multi-hot.
    dataset = tf.data.Dataset.from_tensor_slices((_X, multi)).batch(4)
    with pytest.warns(UserWarning, match="multi-hot"):
        assert probes.select_probes(dataset, 4).labels is None
    # One-hot and smoothed one-hot rows are still class labels.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smoothed = np.eye(3)[_Y] * 0.9 + 0.1 / 3
        for y in (np.eye(3)[_Y], smoothed):
            labels = SaliencyMonitor(tmp_path / "run", (_X, y), num_probes=6).probes.labels
            assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]


def test_a_newline_in_a_class_name_does_not_fake_a_caption_line(tmp_path, model):
    names = ["cat\nNON-FINITE MAP", "dog", "emu"]
    monitor = SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=3, class_names=names)
    _fit(model, monitor, epochs=1)
    explanation = monitor.explainer.explain(monitor.probes.x, monitor.probes.labels)
    ok = np.zeros(3, bool)
    captions = monitor._log.captions(explanation, ok, ok, False)
    assert [len(c.split("\n")) for c in captions] == [2, 2, 2]
    assert any("true cat\\nNON-FINITE MAP" in c for c in captions)
    assert monitor.class_names == names  # string labels still map by the names as given


def test_class_names_fewer_than_the_classes_warn_before_training(tmp_path, model):
    monitor = SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=4, class_names=["cat", "dog"])
    with pytest.warns(UserWarning, match=r"`class_names` has 2 names but the model has 3 classes"):
        _fit(model, monitor, epochs=1)


def test_deepcopy_after_fit_gives_a_monitor_for_another_fit(tmp_path, model):
    """keras-tuner deep-copies callbacks per trial: a copy after a fit must work, and must hold
    none of the original's model, lock or writer."""
    import copy

    monitor = SaliencyMonitor(tmp_path / "run", (_X, _Y), num_probes=4)
    _fit(model, monitor, epochs=2)
    clone = copy.deepcopy(monitor)
    assert clone.model is None and clone.explainer.model is None
    assert monitor.explainer.model is model  # the original stays bound
    np.testing.assert_array_equal(clone.probes.x, monitor.probes.x)
    _fit(model, clone, epochs=2)  # into the same directory: continues after step 1
    assert sorted(read_images(str(tmp_path / "run" / "saliency"), GRID_TAG)) == [0, 1, 2, 3]
    assert sorted(clone.history) == [0, 1, 2, 3] and sorted(monitor.history) == [0, 1]


# ==================================================================================================
# Issue 19 (storage half): locks that hold, start-up reads, corrupt records, interrupted fits.
# Each test fails on main 6de9219.
# ==================================================================================================


def _in_thread(fn, timeout, unblock=None):
    """Runs ``fn()`` on a thread; returns ``(finished, result or exception)``. A run still going
    after ``timeout`` s (a hang: the bound is 20-60x what it takes here) is unblocked with
    ``unblock()`` so that the test fails instead of hanging."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["value"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    finished = not thread.is_alive()
    if not finished and unblock is not None:
        unblock()
        thread.join(timeout)
    return finished, box.get("value")


def _event_files_in(path):
    return sorted(n for n in os.listdir(path) if "tfevents" in n) if os.path.isdir(path) else []


def test_19_2_a_deleted_log_dir_is_locked_again_before_the_writer_recreates_it(tmp_path, model):
    run = tmp_path / "run"
    first = SaliencyMonitor(run, (_X, _Y), num_probes=4, durable=True)
    refused = {}

    def second_fit_starts(model):  # another fit (here: another thread) after the deletion
        second = _OtherTrainingThread(SaliencyMonitor(run, (_X, _Y), num_probes=4), model)
        second.end()
        refused["error"] = second.error

    delete = AtEpoch([1], lambda m: __import__("shutil").rmtree(run))
    _fit(model, first, epochs=3, extra=[delete, AtEpoch([2], second_fit_starts)])
    # Epoch 1's write made the directory again, and took its lock first.
    assert isinstance(refused["error"], ValueError), refused
    assert "being written by another SaliencyMonitor" in str(refused["error"])
    assert first.faults == {}
    assert sorted(read_scalars(str(run / "saliency"), "saliency/concentration")) == [1, 2]


class _OtherTrainingThread:
    """A second monitor's fit on a thread of its own: ``on_train_begin`` now, ``on_train_end``
    when ``end()`` is called (the thread lives in between, as a training thread does)."""

    def __init__(self, monitor, model):
        monitor.set_model(model)
        self.begun, self.finish, self.error = threading.Event(), threading.Event(), None

        def fit():
            try:
                monitor.on_train_begin()
            except BaseException as err:  # noqa: BLE001 - handed to the test
                self.error = err
            self.begun.set()
            self.finish.wait(120)
            monitor.on_train_end()

        self.thread = threading.Thread(target=fit, daemon=True)
        self.thread.start()
        assert self.begun.wait(60)

    def end(self):
        self.finish.set()
        self.thread.join(60)


def test_19_2_a_writer_that_lost_its_deleted_dir_to_another_stops_writing_there(tmp_path, model):
    run = tmp_path / "run"
    first = SaliencyMonitor(run, (_X, _Y), num_probes=4, durable=True)
    other = []

    def delete_and_take(model):  # the directory is deleted, and another monitor starts there
        __import__("shutil").rmtree(run)
        other.append(_OtherTrainingThread(SaliencyMonitor(run, (_X, _Y), num_probes=4), model))

    try:
        with pytest.warns(RuntimeWarning, match="write fault"):
            _fit(model, first, epochs=3, extra=[AtEpoch([1], delete_and_take)])
        assert other[0].error is None
        assert len(first.faults["write"]) == 2  # epochs 1 and 2 were not written into its dir
        assert _event_files_in(run / "saliency") == []  # the second has written nothing yet
    finally:
        for thread in other:
            thread.end()


_LOCK_CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("logdirs_copy", sys.argv[1])
logdirs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(logdirs)
try:
    lock = logdirs.lock_events_dir(sys.argv[2])
except ValueError as err:
    print("REFUSED", err)
else:
    print("NONE" if lock is None else "LOCKED")
"""


# The other user runs a system Python (the venv may be out of its reach); stdlib only.
_SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() != 0 or not os.path.exists(_SYSTEM_PYTHON),
    reason="needs root, to run as another user, and a system Python",
)
def test_19_3_a_lock_file_left_by_another_user_still_locks(request):
    import pathlib
    import tempfile

    from keras_saliency_monitor.storage import logdirs

    shared = pathlib.Path(tempfile.mkdtemp(prefix="ksm-lock-"))  # /tmp: the other user's reach
    request.addfinalizer(lambda: __import__("shutil").rmtree(shared, ignore_errors=True))
    events = shared / "saliency"
    events.mkdir()
    for d in (shared, events):
        os.chmod(d, 0o777)
    module = shared / "logdirs_copy.py"
    module.write_text(open(logdirs.__file__).read())
    holder = logdirs.lock_events_dir(events)  # root's lock file, 0644: read-only for nobody
    os.chmod(events / logdirs.LOCK_NAME, 0o644)

    def as_nobody():
        proc = subprocess.run(
            [_SYSTEM_PYTHON, "-c", _LOCK_CHILD, str(module), str(events)],
            capture_output=True,
            text=True,
            user=65534,
            timeout=120,
        )
        return proc.stdout.strip() + proc.stderr.strip()

    try:
        assert as_nobody().startswith("REFUSED")  # main: NONE (no lock, no warning)
    finally:
        logdirs.unlock(holder)
    assert as_nobody() == "LOCKED"  # a read-only lock file still locks


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_19_3_a_lock_file_that_cannot_be_opened_is_refused_by_name(tmp_path, model):
    events = tmp_path / "saliency"
    (events / ".writer.lock").mkdir(parents=True)  # e.g. made by hand, or by a broken tool
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    count = CountBatches()
    with pytest.raises(ValueError, match=r"`log_dir`: cannot open the lock file .*\.writer\.lock"):
        _fit(model, monitor, epochs=1, extra=[count])
    assert count.batches == 0


def _interrupt(model):
    raise KeyboardInterrupt


def test_19_4_after_ctrl_c_a_new_monitor_takes_the_dir_and_no_thread_is_left(
    tmp_path, model, monkeypatch
):
    monkeypatch.setattr(writer.BackgroundWorker, "idle_seconds", 0.5, raising=False)
    before = sum(t.name == _THREAD for t in threading.enumerate())
    kept = []  # reachable, as IPython keeps them through sys.last_traceback
    for _ in range(3):
        monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
        kept.append(monitor)
        with pytest.raises(KeyboardInterrupt):
            _fit(model, monitor, epochs=3, extra=[AtEpoch([1], _interrupt)])
    # An exception in another callback leaves the same; a new monitor still starts there.
    failing = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    kept.append(failing)
    with pytest.raises(ZeroDivisionError):
        _fit(model, failing, epochs=3, extra=[AtEpoch([1], lambda m: 1 / 0)])
    last = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    _fit(model, last, epochs=1)
    assert sorted(read_scalars(str(tmp_path / "saliency"), "saliency/concentration")) == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert last.faults == {} and all(m.faults == {} for m in kept)
    # Idle writer threads end by themselves (0.5 s here); bounded by 60 s, 100x that.
    deadline = time.monotonic() + 60
    while sum(t.name == _THREAD for t in threading.enumerate()) > before:
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        time.sleep(0.1)
    assert _open_files_under(tmp_path) == []


def test_19_4_two_monitors_of_one_fit_are_refused_naming_this_process(tmp_path, model):
    first = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    second = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    with pytest.raises(ValueError, match="in this process, in a fit on thread"):
        _fit(model, second, epochs=1, extra=[first])
    first.on_train_end()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_19_5_a_fifo_named_like_an_event_file_does_not_hang_fit(tmp_path, model):
    events = tmp_path / "saliency"
    events.mkdir()
    fifo = events / "events.out.tfevents.0000000000.fifo"
    os.mkfifo(fifo)
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)

    def unblock():  # main: on_train_begin waits in open() for a writer, for good
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    # The fit takes 1-3 s; 120 s is a bound a loaded machine keeps.
    finished, result = _in_thread(lambda: _fit(model, monitor, epochs=2), 120, unblock)
    assert finished, "fit hung before its first batch on a FIFO"
    assert not isinstance(result, BaseException), result
    assert monitor.faults == {}
    os.unlink(fifo)  # TensorBoard's own reader would wait on it too
    assert sorted(read_scalars(str(events), "saliency/concentration")) == [0, 1]


def test_19_5_a_hung_disk_at_start_up_is_waited_for_within_the_bound(tmp_path, model, monkeypatch):
    from keras_saliency_monitor.monitor import writing

    hung = threading.Event()
    real = writing.last_step

    def last_step(path):  # a hung network file system: the start-up read never comes back
        hung.wait()
        return real(path)

    monkeypatch.setattr(writing, "last_step", last_step)
    monitor = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    monitor.WRITE_TIMEOUT_SECONDS = 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finished, result = _in_thread(lambda: _fit(model, monitor, epochs=2), 120, hung.set)
    assert finished, "fit waited for the hung start-up read"
    assert not isinstance(result, BaseException), result
    assert list(monitor.faults) == ["stalled"]
    assert any("start of fit" in str(w.message) for w in caught)
    assert sorted(monitor.history) == [0, 1]  # the numbers still reached logs
    assert "saliency_concentration" in result.history
    hung.set()  # the disk comes back: the late start-up lets go of the lock it took
    deadline = time.monotonic() + 60
    again = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
    while True:
        try:
            _fit(model, again, epochs=1)
            break
        except ValueError:
            assert time.monotonic() < deadline, "the late start-up kept the lock"
            time.sleep(0.1)
    assert again.faults == {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_19_6_a_process_forked_during_fit_does_not_keep_the_lock(tmp_path, model):
    r, w = os.pipe()
    children = []

    def fork(model):  # e.g. a data loader's worker, started during training
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
            pid = os.fork()
        if pid == 0:
            os.read(r, 1)
            os._exit(0)
        children.append(pid)

    try:
        first = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
        _fit(model, first, epochs=2, extra=[AtEpoch([1], fork)])
        assert len(children) == 1  # still alive, holding a copy of the lock file
        second = SaliencyMonitor(tmp_path, (_X, _Y), num_probes=4)
        _fit(model, second, epochs=1)  # main: refused, naming the parent
    finally:
        os.write(w, b"x" * len(children))
        for pid in children:
            os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    assert second.faults == {}


def test_19_7_last_step_checks_record_crcs(tmp_path):
    from tensorboard.compat.proto.event_pb2 import Event

    with writer.EventWriter(tmp_path) as w:
        for step in range(4):
            w.add_scalar("a", 1.0, step)
    (path,) = [tmp_path / n for n in _event_files_in(tmp_path)]
    forged = bytearray(writer._tfrecord(Event(wall_time=1.0, step=2**49).SerializeToString()))
    forged[-1] ^= 0xFF  # its payload CRC no longer matches: a corrupt record
    good_tail = writer._tfrecord(Event(wall_time=2.0, step=2).SerializeToString())
    with open(path, "ab") as f:
        f.write(bytes(forged) + good_tail)  # framing goes on past the corrupt record
    assert writer.last_step(tmp_path) == 3  # main: 562949953421312
    # A corrupt length ends the file: nothing after it can be framed.
    data = bytearray(path.read_bytes())
    data[-len(good_tail) - len(forged)] ^= 0x01
    path.write_bytes(bytes(data))
    assert writer.last_step(tmp_path) == 3


def _reused_dir(tmp_path, model, second_kwargs):
    """A log dir written by a fit with 4 probes (seed 0), then one with ``second_kwargs``."""
    run = tmp_path / "run"
    x, y = tiny_data(48)
    first = SaliencyMonitor(run, (x, y), num_probes=4, seed=0)
    _fit(model, first, epochs=2)
    second = SaliencyMonitor(run, (x, y), **{"num_probes": 4, "seed": 0, **second_kwargs})
    _fit(model, second, epochs=2)
    return run, first, second


def _check_each_epoch_has_its_own_probes(run, first, second):
    from keras_saliency_monitor.storage import store
    from keras_saliency_monitor.views import report

    runs = report.load_runs(run)
    assert [r.steps for r in runs] == [[0, 1], [2, 3]]  # main: one run, steps 0-3
    for loaded, monitor in zip(runs, (first, second)):
        np.testing.assert_array_equal(loaded.display, monitor._log.display)  # lossless PNG
        for step in loaded.steps:
            assert loaded.maps(step).shape[0] == len(monitor.probes.indices)
    # What the dashboard is handed: the latest probe set and only the epochs computed on it.
    provider, ctx, eid = store.open_logdir(run)
    index = store.read_run(provider, ctx, eid, "saliency")
    n = index["probe_set"]["num_probes"]
    assert n == len(second.probes.indices) and index["steps"] == [2, 3]
    assert all(len(info["scale"]) == n for info in index["epochs"].values())
    assert [g["steps"] for g in index["probe_sets"]] == [[0, 1], [2, 3]]
    # The live page's reader (what the plugin's /run route serves): the same epochs on a full
    # read, and a poll past step 2 keeps step 2 and never lists the first probe set's 0-1.
    live = store.read_run_since(provider, ctx, eid, "saliency")
    assert live["steps"] == [2, 3] and sorted(live["epochs"]) == ["2", "3"]
    assert live["probe_set"]["num_probes"] == n and live["errors"] == []
    assert store.read_run_since(provider, ctx, eid, "saliency", after=2)["steps"] == [2, 3]
    older = store.read_run(provider, ctx, eid, "saliency", probe_set=0)
    assert older["steps"] == [0, 1] and older["probe_set"]["num_probes"] == 4
    png = store.read_probe_images(provider, ctx, eid, "saliency", probe_set=0)
    np.testing.assert_array_equal(store.decode_images(png, 4), first._log.display)
    for ext in ("html", "png", "gif"):  # main: ValueError display_u8 and heat_u8 ...
        summary = report.write_report(run, run.parent / f"r.{ext}")
        assert summary.runs == [r.name for r in runs] and summary.skipped == []
    assert runs[0].name == "run (epochs 0-1, 4 probes)"


def test_19_1_a_dir_reused_with_more_probes_shows_each_epoch_with_its_probes(tmp_path, model):
    _check_each_epoch_has_its_own_probes(*_reused_dir(tmp_path, model, {"num_probes": 6}))


def test_19_1_a_dir_reused_with_other_probes_of_one_count_is_not_drawn_over(tmp_path, model):
    run, first, second = _reused_dir(tmp_path, model, {"seed": 1})
    assert not np.array_equal(first.probes.indices, second.probes.indices)
    _check_each_epoch_has_its_own_probes(run, first, second)


def test_19_1_a_dir_reused_with_the_same_probes_stays_one_run(tmp_path, model):
    from keras_saliency_monitor.views import report

    run, first, second = _reused_dir(tmp_path, model, {})
    (loaded,) = report.load_runs(run)
    assert loaded.name == "run" and loaded.steps == [0, 1, 2, 3]


def test_19_report_writes_the_good_runs_and_names_the_bad_file(tmp_path, capsys):
    from keras_saliency_monitor import cli
    from keras_saliency_monitor.storage import store
    from keras_saliency_monitor.storage.writer import EventWriter
    from keras_saliency_monitor.views import report

    from .helpers import write_stored_run

    write_stored_run(str(tmp_path / "good" / "saliency"), [0, 1])
    bad = tmp_path / "bad" / "saliency"
    with EventWriter(bad) as w:  # its probe images are not a PNG (a corrupt file)
        blobs = store.encode_probe_set(np.zeros((3, 16, 16, 3), np.uint8), indices=[0, 1, 2])
        w.add_blob_sequence(store.PROBE_SET_TAG, [blobs[0], b"garbage", b""], 0, "saliency")
        maps = store.encode_maps(np.ones((3, 16, 16), np.float32), step=0, classes=[0, 0, 0])
        w.add_blob_sequence(store.MAPS_TAG, maps, 0, store.PLUGIN_NAME)
    (bad_file,) = [str(bad / n) for n in _event_files_in(bad)]
    summary = report.write_report(tmp_path, tmp_path / "r.html")  # main: UnidentifiedImageError
    assert summary.runs == ["good"]
    (note,) = summary.skipped
    assert "bad" in note and bad_file in note and "UnidentifiedImageError" in note
    assert os.path.getsize(tmp_path / "r.html") > 0
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "r.gif")]) == 0
    assert bad_file in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_19_5_report_skips_a_run_holding_a_fifo_naming_it_and_writes_the_others(tmp_path, capsys):
    from keras_saliency_monitor import cli
    from keras_saliency_monitor.views import report

    from .helpers import write_stored_run

    write_stored_run(str(tmp_path / "good" / "saliency"), [0, 1])
    write_stored_run(str(tmp_path / "held" / "saliency"), [0, 1])
    fifo = tmp_path / "held" / "saliency" / "events.out.tfevents.0000000000.fifo"
    os.mkfifo(fifo)
    train_fifo = tmp_path / "good" / "train" / "events.out.tfevents.0000000001.fifo"
    train_fifo.parent.mkdir()
    os.mkfifo(train_fifo)  # a metrics split with only a FIFO: left out, the run is drawn

    def unblock():  # main: the report waits in open() on the FIFO, for good
        for path in (fifo, train_fifo):
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    out = tmp_path / "r.html"
    # Alone this takes 1-2 s; 120 s is a bound a loaded machine keeps.
    finished, summary = _in_thread(lambda: report.write_report(tmp_path, out), 120, unblock)
    assert finished, "the report hung on a FIFO named like an event file"
    assert not isinstance(summary, BaseException), summary
    assert summary.runs == ["good"]
    curves, held = sorted(summary.skipped)
    assert held.startswith("skipped run held") and str(fifo) in held
    assert "not a regular file" in held and "move it out of the log dir" in held
    assert curves.startswith("run good: skipped its train curves") and str(train_fifo) in curves
    assert os.path.getsize(out) > 0
    assert cli.main(["report", str(tmp_path / "held"), "--out", str(tmp_path / "h.html")]) != 0
    assert str(fifo) in capsys.readouterr().err


def test_19_load_arrays_skips_a_corrupt_npz_naming_it(tmp_path):
    good = arrays.save_epoch(tmp_path, 0, np.ones((2, 4, 4)))
    bad = arrays.save_epoch(tmp_path, 1, np.ones((2, 4, 4)))
    with open(bad, "r+b") as f:
        f.truncate(40)
    with pytest.warns(RuntimeWarning, match=bad):  # main: zipfile.BadZipFile, nothing loaded
        loaded = arrays.load_arrays(tmp_path)
    assert sorted(loaded) == [0]
    np.testing.assert_array_equal(loaded[0]["maps"], np.load(good)["maps"])


def test_19_saved_arrays_have_the_permissions_of_the_event_files(tmp_path):
    path = arrays.save_epoch(tmp_path, 0, np.ones((2, 4, 4)))
    with writer.EventWriter(tmp_path / "saliency") as w:
        w.add_scalar("a", 1.0, 0)
    event_mode = os.stat(w.path).st_mode & 0o777
    assert os.stat(path).st_mode & 0o777 == event_mode  # main: 0600 against 0644

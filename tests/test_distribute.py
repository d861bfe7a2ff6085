"""Distributed training: each epoch is computed and logged once; only one process writes.

tf.distribute: MirroredStrategy fits log each epoch once; only the chief writes.

Keras 3 ``fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so the
multi-process rule (every process computes the numbers into ``logs``, only the chief writes) is
tested by setting TF_CONFIG and driving the hooks directly.

keras.distribution (JAX): a DataParallel fit over 2 CPU devices logs each epoch once; with several
processes only process 0 writes, tested by setting the process id keras.distribution.initialize
reads and driving the hooks.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor.monitor.callback import GRID_TAG
from keras_saliency_monitor.monitor.distribution import is_chief

from .helpers import read_images, read_scalars, tiny_cnn, tiny_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLUSTER = {"worker": ["w0:2222", "w1:2222"]}
WITH_CHIEF = {"chief": ["c0:2222"], "worker": ["w0:2222", "w1:2222"]}


def _tf_config(cluster, task_type, index=0):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize(
    "tf_config, chief",
    [
        (None, True),  # single process
        ("", True),
        (json.dumps({"cluster": CLUSTER}), True),  # no task: not multi-worker training
        (_tf_config(CLUSTER, "worker", 0), True),  # no chief in the cluster: worker 0
        (_tf_config(CLUSTER, "worker", 1), False),
        (_tf_config(WITH_CHIEF, "chief", 0), True),
        (_tf_config(WITH_CHIEF, "worker", 0), False),  # worker 0 is not the chief here
        (_tf_config(WITH_CHIEF, "worker", 1), False),
        (_tf_config({"master": ["m:1"], "worker": ["w:1"]}, "master"), True),  # TF1 name
        (_tf_config(WITH_CHIEF, "evaluator"), False),
        (_tf_config({"ps": ["p:1"], "worker": ["w:1"]}, "ps"), False),
    ],
)
def test_is_chief_reads_tf_config(monkeypatch, tf_config, chief):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert is_chief() is chief


def _run_hooks(log_dir, model, x, y, epochs=3):
    """Drive a monitor's hooks as fit would; return the logs it filled."""
    monitor = SaliencyMonitor(log_dir, (x, y), num_probes=6)
    monitor.set_model(model)
    monitor.on_train_begin()
    all_logs = []
    for epoch in range(epochs):
        logs = {"loss": 1.0}
        monitor.on_epoch_begin(epoch, logs)
        monitor.on_epoch_end(epoch, logs)
        all_logs.append(logs)
    monitor.on_train_end()
    return monitor, all_logs


def test_every_process_computes_the_same_numbers_and_only_the_chief_writes(tmp_path, monkeypatch):
    x, y = tiny_data()
    model = tiny_cnn()
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"

    monkeypatch.setenv("TF_CONFIG", _tf_config(WITH_CHIEF, "chief"))
    _, chief_logs = _run_hooks(chief_dir, model, x, y)
    monkeypatch.setenv("TF_CONFIG", _tf_config(WITH_CHIEF, "worker", 0))
    worker, worker_logs = _run_hooks(worker_dir, model, x, y)

    # Same numbers in logs on every process: EarlyStopping etc. decide alike everywhere
    # (assert_equal: NaN, e.g. the first epoch's stability, equals NaN).
    np.testing.assert_equal(chief_logs, worker_logs)
    assert all("saliency_concentration" in logs for logs in worker_logs)
    assert sorted(worker.history) == [0, 1, 2]
    # Only the chief created a directory and wrote events.
    assert not worker_dir.exists()
    assert worker._writing.writer is None and worker._writing.worker is None
    run = os.path.join(chief_dir, "saliency")
    assert sorted(read_images(run, GRID_TAG)) == [0, 1, 2]
    logged = read_scalars(run, "saliency/concentration")
    assert [logged[e] for e in range(3)] == pytest.approx(
        [logs["saliency_concentration"] for logs in chief_logs], rel=1e-6
    )


def test_non_chief_never_touches_the_log_dir(tmp_path, monkeypatch):
    """A worker may not even see the chief's log_dir (e.g. a path on the chief's machine)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TF_CONFIG", _tf_config(CLUSTER, "worker", 1))
    x, y = tiny_data()
    monitor, logs = _run_hooks(blocker / "run", tiny_cnn(), x, y, epochs=1)
    assert "saliency_concentration" in logs[0] and blocker.is_file()
    monkeypatch.setenv("TF_CONFIG", _tf_config(CLUSTER, "worker", 0))
    with pytest.raises(ValueError, match="`log_dir`.*cannot be created"):
        SaliencyMonitor(blocker / "run", (x, y), num_probes=6)


MIRRORED = textwrap.dedent(
    """
    import json, os, sys
    import tensorflow as tf

    # Two logical CPU devices; this must happen before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from keras_saliency_monitor import SaliencyMonitor, compute_saliency
    from tests.helpers import tiny_cnn, tiny_data

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = tiny_data()
    with strategy.scope():
        model = tiny_cnn()
        monitor = SaliencyMonitor(sys.argv[1], (x, y), num_probes=6)
    calls = []
    explain = monitor.explainer.explain

    def counting(*args, **kwargs):
        calls.append(1)
        return explain(*args, **kwargs)

    monitor.explainer.explain = counting
    with strategy.scope():
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[monitor])
    last = explain(monitor.probes.x).maps
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "variable": type(model.layers[0].kernel.value).__name__,
        "explain_calls": len(calls),
        "traces": monitor.explainer.trace_count,
        "concentration": history.history["saliency_concentration"],
        "max_abs_diff": float(np.abs(last - compute_saliency(model, monitor.probes.x)).max()),
        "scale": float(np.abs(last).max()),
    }))
    """
)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute needs the TensorFlow backend"
)
def test_mirrored_strategy_fit_logs_each_epoch_once(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert "Mirrored" in result["variable"]  # really a distributed model
    assert result["explain_calls"] == 3 and result["traces"] == 1  # once per epoch, not per replica
    run = os.path.join(tmp_path, "saliency")
    grids = read_images(run, GRID_TAG)
    assert {step: len(images) for step, images in grids.items()} == {0: 1, 1: 1, 2: 1}
    logged = read_scalars(run, "saliency/concentration")
    assert [logged[e] for e in range(3)] == pytest.approx(result["concentration"], rel=1e-6)
    assert np.isfinite(result["concentration"]).all()
    # The maps under the strategy are those of the (mirrored) weights.
    assert result["max_abs_diff"] <= 1e-5 * result["scale"]


# ------------------------------------------------------------------ keras.distribution (JAX)


@pytest.mark.parametrize(
    "environ, chief",
    [
        ({}, True),
        ({"KERAS_DISTRIBUTION_PROCESS_ID": "0", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}, True),
        ({"KERAS_DISTRIBUTION_PROCESS_ID": "1", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}, False),
        # Process 0 of keras.distribution is not enough when TF_CONFIG names another chief.
        (
            {"KERAS_DISTRIBUTION_PROCESS_ID": "0", "TF_CONFIG": _tf_config(CLUSTER, "worker", 1)},
            False,
        ),
    ],
)
def test_is_chief_reads_the_keras_distribution_process_id(environ, chief):
    assert is_chief(environ) is chief


def test_keras_distribution_process_1_computes_the_same_numbers_and_writes_nothing(
    tmp_path, monkeypatch
):
    """Two processes of a keras.distribution run, as keras.distribution.initialize sees them."""
    x, y = tiny_data()
    model = tiny_cnn()
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "0")
    _, first_logs = _run_hooks(tmp_path / "p0", model, x, y)
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    other, other_logs = _run_hooks(tmp_path / "p1", model, x, y)
    np.testing.assert_equal(first_logs, other_logs)  # NaN equals NaN here
    assert all("saliency_concentration" in logs for logs in other_logs)
    assert not (tmp_path / "p1").exists() and other._writing.writer is None
    assert sorted(read_images(os.path.join(tmp_path, "p0", "saliency"), GRID_TAG)) == [0, 1, 2]


DATA_PARALLEL = textwrap.dedent(
    """
    import json, sys
    import jax
    import keras
    import numpy as np
    from keras_saliency_monitor import SaliencyMonitor, compute_saliency
    from tests.helpers import tiny_cnn, tiny_data

    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    x, y = tiny_data()
    model = tiny_cnn()
    monitor = SaliencyMonitor(sys.argv[1], (x, y), num_probes=6)
    calls = []
    explain = monitor.explainer.explain

    def counting(*args, **kwargs):
        calls.append(1)
        return explain(*args, **kwargs)

    monitor.explainer.explain = counting
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[monitor])
    last = explain(monitor.probes.x).maps
    kernel = model.layers[0].kernel.value
    print(json.dumps({
        "devices": len(devices),
        "kernel_devices": len(kernel.sharding.device_set),
        "explain_calls": len(calls),
        "traces": monitor.explainer.trace_count,
        "faults": sorted(monitor.faults),
        "concentration": history.history["saliency_concentration"],
        "max_abs_diff": float(np.abs(last - compute_saliency(model, monitor.probes.x)).max()),
        "scale": float(np.abs(last).max()),
    }))
    """
)


def test_jax_data_parallel_fit_logs_each_epoch_once(tmp_path):
    pytest.importorskip("jax", reason="the jax extra is not installed (pip install .[jax])")
    env = dict(
        os.environ,
        PYTHONPATH=REPO,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    done = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and result["kernel_devices"] == 2  # really replicated on 2
    assert result["faults"] == []
    assert result["explain_calls"] == 3 and result["traces"] == 1  # once per epoch, not per device
    run = os.path.join(tmp_path, "saliency")
    grids = read_images(run, GRID_TAG)
    assert {step: len(images) for step, images in grids.items()} == {0: 1, 1: 1, 2: 1}
    logged = read_scalars(run, "saliency/concentration")
    assert [logged[e] for e in range(3)] == pytest.approx(result["concentration"], rel=1e-6)
    assert result["max_abs_diff"] <= 1e-5 * result["scale"]

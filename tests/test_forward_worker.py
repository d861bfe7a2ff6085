"""The alarm's forward passes on the worker thread: the same numbers, and nothing left running.

``EpochNumbers`` sends object reliance's forward pass before the epoch's gradient and the
interventions' beside the numpy numbers (``monitor/epoch_numbers.py``). These tests drive the
monitor's hooks on a real model with masks and logs past the alarm's gate, so every forward pass
runs, and compare with the same epochs run with every pass made in line on the training thread.
"""

from __future__ import annotations

import threading
from concurrent import futures

import keras
import numpy as np
import pytest

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor.monitor import epoch_numbers

from .helpers import tiny_cnn, tiny_data

LEARNED = {"loss": 0.1, "accuracy": 0.99}  # past the alarm's gate: the interventions ask


class _InLine:
    """An executor that runs each call at once, on the calling thread."""

    def submit(self, fn, *args):
        done = futures.Future()
        done.set_result(fn(*args))
        return done


def _model():
    keras.utils.set_random_seed(0)
    return tiny_cnn(size=16)


def _monitor(tmp_path, model):
    x, _ = tiny_data(n=12, size=16)
    # Labelled with the model's own classes: every probe predicted right, so object reliance
    # and the interventions (over the probes predicted right) have probes to measure.
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    masks = np.zeros((12, 16, 16), bool)
    for i in range(12):
        masks[i, i % 5 : i % 5 + 8, 3:11] = True
    monitor = SaliencyMonitor(
        str(tmp_path), (x, y), num_probes=12, masks=masks, background=False, sanity_blocks=0
    )
    monitor.set_model(model)
    monitor.on_train_begin()
    return monitor


def _epochs(monitor, model, count=4):
    """Logged numbers of ``count`` epochs, the weights moved between them."""
    out = []
    for epoch in range(count):
        logs = dict(LEARNED)
        monitor.on_epoch_end(epoch, logs)
        out.append(logs)
        kernel = model.layers[0].kernel
        kernel.assign(kernel * 1.1 + 0.01)  # new weights, new maps next epoch
    monitor.on_train_end()
    return out


def test_the_worker_gives_the_numbers_of_the_passes_made_in_line(tmp_path, monkeypatch):
    model = _model()
    monitor = _monitor(tmp_path / "worker", model)
    threads = []
    logits = monitor.explainer.logits

    def recorded(images):
        threads.append(threading.current_thread().name)
        return logits(images)

    monitor.explainer.logits = recorded
    sent_before_gradient = []
    explain = monitor.explainer.explain

    def explain_and_look(*args):
        sent_before_gradient.append(monitor._measure._relied is not None)
        return explain(*args)

    monitor.explainer.explain = explain_and_look
    on_worker = _epochs(monitor, model)
    assert monitor.faults == {}
    # Reliance's and the interventions' pass every epoch, both on the worker thread.
    assert len(threads) == 2 * 4 and all(t.startswith("saliency-forward") for t in threads)
    # From the second epoch on (the first waits for the functions to be traced), reliance's
    # pass is on its way before the gradient is asked for.
    assert sent_before_gradient == [False, True, True, True]

    model = _model()
    monkeypatch.setattr(epoch_numbers, "_forward_worker", _InLine)
    in_line = _epochs(_monitor(tmp_path / "in_line", model), model)
    for worker_logs, line_logs in zip(on_worker, in_line):
        assert list(worker_logs) == list(line_logs)
        for key, value in worker_logs.items():  # bit for bit (NaN where not measured)
            assert value == line_logs[key] or (np.isnan(value) and np.isnan(line_logs[key])), key
    # Measured (the numbers themselves are checked in test_reliance.py, test_interventions.py).
    assert np.isfinite(on_worker[0]["saliency_object_reliance"])
    assert np.isfinite(on_worker[0]["saliency_band_lost"])


def test_a_failing_forward_pass_on_the_worker_is_a_fault_and_training_goes_on(tmp_path):
    model = _model()
    monitor = _monitor(tmp_path, model)
    logits = monitor.explainer.logits
    calls = []

    def fails_at_epoch_one(images):
        calls.append(len(images))
        if len(calls) in (3, 4):  # epoch 1: reliance's pass and the interventions'
            raise RuntimeError("the forward pass broke")
        return logits(images)

    monitor.explainer.logits = fails_at_epoch_one
    with pytest.warns(RuntimeWarning, match="the forward pass broke"):
        logs = _epochs(monitor, model, count=3)
    assert monitor.faults["compute"] == ["epoch 1"]
    assert "saliency_band_lost" not in logs[1]  # that epoch logged nothing of the monitor's
    assert "saliency_object_reliance" in logs[2]  # the next epoch measured again
    assert monitor._measure._relied is None and monitor._measure._painted is None


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failing_gradient_leaves_no_forward_pass_running(tmp_path, error):
    model = _model()
    monitor = _monitor(tmp_path, model)
    _epochs(monitor, model, count=1)  # traced: the next epoch sends reliance's pass early
    monitor.on_train_begin()
    monitor._measure._overlap = True
    release = threading.Event()
    logits = monitor.explainer.logits

    def slow(images):
        release.wait()  # still running when the gradient fails
        return logits(images)

    monitor.explainer.logits = slow
    sent = []

    def broken(*args):
        sent.append(monitor._measure._relied)
        assert sent[0] is not None and not sent[0].done()
        threading.Timer(0.05, release.set).start()
        raise error("the gradient broke")

    monitor.explainer.explain = broken
    if error is KeyboardInterrupt:  # not the monitor's to swallow: it goes on up to fit
        with pytest.raises(KeyboardInterrupt):
            monitor.on_epoch_end(1, dict(LEARNED))
    else:  # a fault: recorded, and training goes on
        with pytest.warns(RuntimeWarning, match="the gradient broke"):
            monitor.on_epoch_end(1, dict(LEARNED))
        assert monitor.faults["compute"] == ["epoch 1"]
    # Either way on_epoch_end returned only once the pass it had sent was over.
    assert sent[0].done() and monitor._measure._relied is None
    monitor.on_train_end()


def test_a_forked_child_gets_its_own_worker(monkeypatch):
    pool = epoch_numbers._forward_worker()
    assert epoch_numbers._forward_worker() is pool  # one per process
    monkeypatch.setattr(epoch_numbers, "_worker", (-1, pool))  # as a fork's copy sees it
    child = epoch_numbers._forward_worker()
    assert child is not pool and child.submit(sum, [1, 2]).result() == 3

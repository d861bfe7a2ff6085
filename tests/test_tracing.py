"""Traced once per run: 10 epochs of a real fit compile the gradient once, for every method.

Two independent counters: the explainer's own ``trace_count`` (a Python side effect of tracing)
and the backend's own count for every compiled function the explainer holds: TensorFlow's
``experimental_get_tracing_count()`` of a ``tf.function``, the number of compiled entries in a
``jax.jit`` function's cache. PyTorch runs eagerly: nothing is compiled, only the first count holds.
The probe count is not a multiple of ``batch_size``, so the last chunk has another size than the
others: a fixed ``input_signature`` with a free batch dimension must absorb that without a retrace.
"""

import os

import keras
import pytest

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor.attribution import methods
from keras_saliency_monitor.monitor.callback import GRID_TAG

from .helpers import read_images, tiny_cnn, tiny_data

EPOCHS = 10
NUM_PROBES = 10
BATCH_SIZE = 4  # chunks of 4, 4, 2: the last one differs
SMALL = 3  # samples / steps for methods that have them: cheap, still several passes


def _small_options(name):
    defaults = methods.METHODS[name].defaults
    return {key: SMALL for key in ("samples", "steps") if key in defaults}


BACKEND = keras.backend.backend()


def _count(fn):
    """The backend's own count of traces of a compiled function."""
    if hasattr(fn, "experimental_get_tracing_count"):  # tf.function
        return fn.experimental_get_tracing_count()
    return fn._cache_size()  # jax.jit: one compiled entry per trace


def _tf_functions(explainer):
    """Every compiled function (tf.function, jax.jit) the explainer holds, at most three
    attributes deep (not the model's)."""
    found = {}

    def visit(obj, path, depth):
        if hasattr(obj, "experimental_get_tracing_count") or hasattr(obj, "_cache_size"):
            found.setdefault(id(obj), (path, obj))
            return
        if depth == 0 or not hasattr(obj, "__dict__"):
            return
        for name, value in sorted(vars(obj).items(), key=lambda kv: kv[0].startswith("_")):
            if name in ("model", "_model", "_model_ref", "head", "_owner") or value is None:
                continue
            if isinstance(value, (int, float, str, bytes, tuple, list, dict)):
                continue
            visit(value, f"{path}.{name}", depth - 1)

    visit(explainer, "explainer", 3)
    return list(found.values())


class _Watch(keras.callbacks.Callback):
    """Placed after the monitor: what its explainer holds at each epoch end."""

    def __init__(self, monitor):
        super().__init__()
        self.monitor = monitor
        self.seen = []  # per epoch: (trace_count, {path: (id of the tf.function, its count)})

    def on_epoch_end(self, epoch, logs=None):
        explainer = self.monitor.explainer
        functions = {path: (id(fn), _count(fn)) for path, fn in _tf_functions(explainer)}
        self.seen.append((explainer.trace_count, functions))


@pytest.mark.parametrize("method", list(methods.METHODS))
def test_no_retracing_across_epochs_with_uneven_last_chunk(tmp_path, method):
    x, y = tiny_data(n=24)
    model = tiny_cnn()
    monitor = SaliencyMonitor(
        tmp_path,
        (x, y),
        num_probes=NUM_PROBES,
        method=method,
        batch_size=BATCH_SIZE,
        **_small_options(method),
    )
    assert NUM_PROBES % BATCH_SIZE != 0
    watch = _Watch(monitor)
    model.fit(x, y, epochs=EPOCHS, batch_size=24, verbose=0, callbacks=[monitor, watch])

    assert monitor.explainer.trace_count == 1
    # Traced at the first logged epoch, then never again, and never rebuilt: a fresh compiled
    # function per epoch would also count one trace, but would not be the same object.
    assert len(watch.seen) == EPOCHS
    assert all(trace_count == 1 for trace_count, _ in watch.seen), watch.seen

    # The backend's own count, independent of the package's counter.
    first = watch.seen[0][1]
    if BACKEND == "torch":
        assert not first  # eager: nothing compiled, nothing to retrace
    else:
        assert first, "found no compiled function on the explainer to count traces of"
    # A compiled function may first appear at a later epoch (the forward pass the alarm's
    # interventions use starts once the model has learned), but once there it stays the same
    # object with the same trace count: never rebuilt, never retraced.
    last = watch.seen[-1][1]
    assert all(first.items() <= functions.items() for _, functions in watch.seen), watch.seen
    for epoch, (_, functions) in enumerate(watch.seen):
        assert functions.items() <= last.items(), (epoch, functions, last)
    counts = {path: count for path, (_, count) in last.items()}
    assert all(c <= 1 for c in counts.values()), counts
    assert BACKEND == "torch" or sum(counts.values()) >= 1, counts

    # Nothing dropped: every epoch's grid is in the event file after on_train_end.
    grids = read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)
    assert sorted(grids) == list(range(EPOCHS))


def test_second_fit_reuses_the_compiled_gradient(tmp_path):
    x, y = tiny_data(n=24)
    model = tiny_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=NUM_PROBES, batch_size=BATCH_SIZE)
    model.fit(x, y, epochs=2, batch_size=24, verbose=0, callbacks=[monitor])
    model.fit(x, y, epochs=4, initial_epoch=2, batch_size=24, verbose=0, callbacks=[monitor])
    assert monitor.explainer.trace_count == 1
    counts = [_count(fn) for _, fn in _tf_functions(monitor.explainer)]
    assert BACKEND == "torch" or (counts and max(counts) == 1), counts
    grids = read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)
    assert sorted(grids) == [0, 1, 2, 3]


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch runs eagerly: nothing is traced")
def test_tracing_counter_is_the_backends():
    # Guards the independent check above: the counter exists and counts a retrace.
    import numpy as np

    if BACKEND == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda v: v * 2)
    else:
        import jax

        fn = jax.jit(lambda v: v * 2)
    for shape in ((1,), (3,), (1, 1)):
        fn(np.ones(shape, np.float32))
    assert _count(fn) >= 2

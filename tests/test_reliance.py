"""Object reliance: the forward-only logits, the painted-over inputs, the number, the callback."""

import keras
import numpy as np
import pytest

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor.attribution.explain import Explainer
from keras_saliency_monitor.signals import interventions, reliance

from .helpers import tiny_cnn, tiny_data
from .test_forward_worker import _model, _monitor


def _softmax_p(z, k):
    e = np.exp(np.asarray(z, np.float64))
    return e[:, k] / e.sum(axis=1)  # small logits here: no overflow


def test_explainer_logits_are_the_model_outputs_without_the_softmax():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    view = keras.Model(inputs, logits)  # the model's own logits tensor, independently
    explainer = Explainer(batch_size=4).bind(model, (6, 6, 2))
    x = np.random.default_rng(0).random((10, 6, 6, 2)).astype(np.float32)
    got = explainer.logits(x)  # 3 chunks: 4, 4, 2 rows
    assert got.shape == (10, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, view.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(explainer.logits(x[:3]), got[:3], rtol=1e-5, atol=1e-6)
    assert explainer._logits.trace_count == 1  # compiled once, whatever the chunk size
    # New weights are read, not baked in.
    model.layers[-2].kernel.assign(np.zeros((64, 3), np.float32))
    bias = model.layers[-2].get_weights()[1]
    np.testing.assert_allclose(explainer.logits(x[:2]), np.tile(bias, (2, 1)), atol=1e-6)
    assert explainer._logits.trace_count == 1


def test_logits_before_bind_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before bind"):
        Explainer().logits(np.zeros((1, 4, 4, 1), np.float32))


def test_reliance_inputs_paint_the_object_and_a_same_shape_patch_elsewhere():
    images = np.zeros((3, 4, 4, 1), np.float32)
    images[:, :, :, 0] = np.arange(16, dtype=np.float32).reshape(4, 4)
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 0, 0:2] = True  # top row, left
    masks[1, 0, 1:3] = True  # overlaps probe 0's mask
    masks[2, 3, 2:4] = True  # bottom row, right: overlaps neither
    without_object, without_control = reliance.reliance_inputs(images, masks)
    # Probe 0's object (pixels 0, 1) takes the mean of the other 14 pixels: (120 - 1) / 14.
    expected = images.copy()
    expected[0, 0, 0:2, 0] = 119 / 14
    expected[1, 0, 1:3, 0] = (120 - 3) / 14
    expected[2, 3, 2:4, 0] = (120 - 29) / 14
    np.testing.assert_allclose(without_object, expected, rtol=1e-6)
    # Controls: the least overlapping other mask, minus the probe's own mask. Probe 0 -> probe
    # 2's mask (pixels 14, 15); probe 1 -> probe 2's; probe 2 -> probe 0's (tie with 1: next).
    control = images.copy()
    control[0, 3, 2:4, 0] = (120 - 29) / 14
    control[1, 3, 2:4, 0] = (120 - 29) / 14
    control[2, 0, 0:2, 0] = 119 / 14
    np.testing.assert_allclose(without_control, control, rtol=1e-6)
    with pytest.raises(ValueError, match="`masks`.*2 probes"):
        reliance.reliance_inputs(images[:1], masks[:1])


def test_object_reliance_formula_on_known_logits():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    without_object = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # probe 0 falls to chance
    without_control = np.array([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    run, per_probe = reliance.object_reliance(logits, without_object, without_control)
    p0, p1 = _softmax_p(logits[:1], 0)[0], _softmax_p(logits[1:], 1)[0]
    pc1 = _softmax_p(without_control[1:], 1)[0]
    np.testing.assert_allclose(per_probe, [1.0, (pc1 - p1) / (p1 - 1 / 3)], rtol=1e-12)
    np.testing.assert_allclose(run, (p0 - 1 / 3 + pc1 - p1) / (p0 + p1 - 2 / 3), rtol=1e-12)
    # With labels, only the probes predicted right count: probe 1 (predicted 1) is labelled 2.
    run, again = reliance.object_reliance(logits, without_object, without_control, labels=[0, 2])
    assert run == pytest.approx(1.0) and np.array_equal(again, per_probe)
    assert np.isnan(reliance.object_reliance(logits, logits, logits, labels=[1, 2])[0])
    # One sigmoid unit: the probability of the side the intact probe is on; chance 1/2.
    z = np.array([[-2.0]])
    run, _ = reliance.object_reliance(z, np.array([[0.0]]), z, kind="sigmoid")
    assert run == pytest.approx(1.0)
    # A regression output has no confidence to lose.
    assert np.isnan(reliance.object_reliance(z, z, z, kind="linear")[0])


def _scene(n=12, size=12, seed=0):
    """Grey images, a 3x3 object (red, green or blue: the class) at a random place."""
    rng = np.random.default_rng(seed)
    x = np.full((n, size, size, 3), 0.3, np.float32)
    masks = np.zeros((n, size, size), bool)
    y = np.arange(n) % 3
    for i in range(n):
        r, c = rng.integers(0, size - 3, size=2)
        masks[i, r : r + 3, c : c + 3] = True
        x[i][masks[i]] = 0.0
        x[i][masks[i], y[i]] = 1.0
    return x, y, masks


def _pixel_model(kernel, pooling):
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(3, 1, use_bias=False),
            pooling(),
            keras.layers.Softmax(),
        ]
    )
    model.layers[0].kernel.assign(np.asarray(kernel, np.float32).reshape(1, 1, 3, 3))
    return model


def _reliance_of(model, x, masks):
    explainer = Explainer().bind(model, x.shape[1:])
    inputs = reliance.reliance_inputs(x, masks)
    return reliance.object_reliance(explainer.logits(x), *map(explainer.logits, inputs))


def test_a_model_that_reads_the_object_relies_on_it_fully():
    x, y, masks = _scene()
    # Colour contrast (10 on its own channel, -5 on the others) at its brightest pixel: grey
    # scores 0 everywhere, the object 10 on its class; without it every class scores 0.
    model = _pixel_model(15 * np.eye(3) - 5, keras.layers.GlobalMaxPooling2D)
    run, per_probe = _reliance_of(model, x, masks)
    # Painted over: grey (the rest's mean), so chance; the control patch is grey on grey.
    np.testing.assert_allclose(per_probe, 1.0, atol=1e-5)
    assert run == pytest.approx(1.0, abs=1e-5)


def test_a_model_that_reads_the_background_tint_does_not_rely_on_the_object():
    x, y, masks = _scene()
    tint = np.eye(3, dtype=np.float32)[(y + 1) % 3] * 0.2  # the class's shortcut: the tint
    background = 0.3 + tint
    # The object is the background plus the same amount on every channel: it shifts every
    # logit of a mean-colour model alike, which a softmax does not see.
    x = np.where(masks[..., None], background[:, None, None] + 0.5, background[:, None, None])
    x = x.astype(np.float32)
    model = _pixel_model(20 * np.eye(3), keras.layers.GlobalAveragePooling2D)
    run, per_probe = _reliance_of(model, x, masks)
    # Painting over the object (or a background patch) with the rest's mean colour shifts the
    # channels alike again: the prediction does not move, the reliance is 0.
    assert run == pytest.approx(0.0, abs=1e-4)
    np.testing.assert_allclose(per_probe, 0.0, atol=1e-4)
    # ...while the model is confident, in the tint's class (so the 0 is not a 0 / 0).
    logits = 20 * x.mean(axis=(1, 2), dtype=np.float64)
    assert np.all(np.argmax(logits, axis=1) == (y + 1) % 3)
    assert np.all(_softmax_p(logits, 0)[(y + 1) % 3 == 0] > 0.9)


def test_a_window_of_one_epoch_gives_object_reliance_bit_for_bit():
    # The monitor pools reliance with interventions.Window; over one epoch it is the formula.
    rng = np.random.default_rng(0)
    logits, without_object, without_control = rng.normal(0, 2, (3, 10, 4))
    labels = np.argmax(logits, axis=1)
    labels[:3] = (labels[:3] + 1) % 4  # some predicted wrong: not counted
    for kind, given in (("softmax", labels), ("softmax", None), ("sigmoid", None)):
        run, per_probe = reliance.object_reliance(
            logits, without_object, without_control, kind, given
        )
        window = interventions.Window(10, 1, reliance.SETS)
        painted = np.concatenate([without_object, without_control])
        lost, per = window.pool(np.arange(10), logits, painted, kind, given)
        assert lost["object"] - lost["control"] == run
        np.testing.assert_array_equal(per["object"] - per["control"], per_probe)


class _Recorder(keras.callbacks.Callback):
    """Before the monitor, at each epoch end: the model's own softmax output on every probe the
    reliance asks, intact and with each painted set (every probe, whatever its turn)."""

    def __init__(self, monitor, n):
        super().__init__()
        self.monitor, self.n, self.epochs = monitor, n, []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(_probabilities(self.model, self.monitor.probes, self.n))


def _probabilities(model, probes, n):
    x, masks = probes.x[:n], probes.masks[:n]
    return [model.predict(a, verbose=0) for a in (x, *reliance.reliance_inputs(x, masks))]


def _pooled(epochs, groups, labels, classes=3):
    """The logged reliance, computed here: each probe's values from the last epoch its group
    was asked, over the last 2 epochs (ratio of the sums over the probes predicted right)."""
    latest = {}
    for e, (p0, p_object, p_control) in enumerate(epochs):
        for i in groups[e % len(groups)]:
            c = int(np.argmax(p0[i]))
            latest[i] = (p0[i, c], p_object[i, c], p_control[i, c], c == labels[i], e)
    last = len(epochs) - 1
    counted = [v for v in latest.values() if v[4] >= last - 1 and v[3]]
    lost = sum(float(c) - float(o) for _, o, c, _, _ in counted)
    above = sum(float(p) - 1 / classes for p, _, _, _, _ in counted)
    return lost / above if counted else np.nan


def test_callback_logs_object_reliance_with_masks(tmp_path):
    x, y = tiny_data()
    masks = np.zeros(x.shape[:3], bool)
    for i in range(len(x)):
        r = 1 + 3 * y[i]
        masks[i, r : r + 3, 2:5] = True  # the bright square that makes the class
    model = tiny_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, masks=masks, background=False)
    recorder = _Recorder(monitor, 6)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[recorder, monitor])
    assert "saliency_object_reliance" in history.history
    # Independently, from the model's own softmax output on the painted probes: 6 probes take
    # turns in 2 groups, and each epoch pools its group with the other group's last epoch.
    groups = [[0, 1, 2], [3, 4, 5]]
    for epoch in range(3):
        expected = _pooled(recorder.epochs[: epoch + 1], groups, monitor.probes.labels)
        logged = monitor.history[epoch]["saliency_object_reliance"]
        np.testing.assert_allclose(logged, expected, atol=1e-4)
    monitor_without = SaliencyMonitor(tmp_path / "b", (x, y), num_probes=6, background=False)
    tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[monitor_without])
    assert "saliency_object_reliance" not in monitor_without.history[0]


@pytest.mark.filterwarnings("ignore:Saliency alarm")  # random weights: the alarm may fire
def test_reliance_takes_turns_pools_two_epochs_and_starts_over_on_a_new_run(tmp_path):
    # A real model with masks, probes labelled with its own classes (as the worker's tests).
    model = _model()
    monitor = _monitor(tmp_path, model)
    sent, per_probe = [], []
    logits = monitor.explainer.logits
    monitor.explainer.logits = lambda images: sent.append(images.copy()) or logits(images)
    check = monitor._check_alarm
    monitor._check_alarm = lambda e, numbers, per: per_probe.append(per) or check(e, numbers, per)
    probes = monitor.probes
    painted = reliance.reliance_inputs(probes.x, probes.masks)
    groups = [list(range(6)), list(range(6, 12))]  # 12 probes (< 16), 2 turns
    run, logged, expected = [], [], []
    for epoch in range(6):
        if epoch == 4:  # a new run: the turns start over
            monitor.on_train_begin()
            run = []
        before = len(sent)
        # Epoch 2: Keras's logs say the model has not learned, so the interventions' gate holds
        # them back (and empties their window); reliance is measured and pools on regardless.
        logs = {"loss": 1.1, "accuracy": 0.3} if epoch == 2 else {"loss": 0.1, "accuracy": 0.99}
        monitor.on_epoch_end(epoch, logs)
        assert np.isnan(logs["saliency_band_lost"]) == (epoch == 2)
        run.append(_probabilities(model, probes, 12))
        group = groups[(len(run) - 1) % 2]
        # Reliance's pass (the first of the epoch's calls): its group's 2 painted sets only.
        np.testing.assert_array_equal(
            sent[before], np.concatenate([painted[0][group], painted[1][group]])
        )
        # Per probe: the probes of the window, NaN elsewhere (a run's first epoch: its group).
        asked = np.isfinite(per_probe[-1]["object_reliance"])
        window = group if len(run) == 1 else range(12)
        assert asked.tolist() == [i in window for i in range(12)]
        logged.append(logs["saliency_object_reliance"])
        expected.append(_pooled(run, groups, probes.labels))
        kernel = model.layers[0].kernel
        kernel.assign(kernel * 1.1 + 0.01)  # new weights, new numbers next epoch
    monitor.on_train_end()
    assert monitor.faults == {}
    assert np.isfinite(expected).all() and len(set(np.round(expected, 6))) > 3  # weights moved
    np.testing.assert_allclose(logged, expected, atol=1e-4)


def test_reliance_asks_at_most_the_first_16_probes_in_two_kept_groups(tmp_path):
    from keras_saliency_monitor.monitor.epoch_numbers import RELIANCE_PROBES, RELIANCE_WINDOW

    x, y = tiny_data(n=48)
    masks = np.zeros(x.shape[:3], bool)
    masks[:, 2:6, 2:6] = True
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=20, masks=masks, background=False)
    tiny_cnn().fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
    assert RELIANCE_PROBES == 16 and RELIANCE_WINDOW == 2
    kept = monitor._measure._reliance_inputs
    assert [len(batch) for batch in kept] == [2 * 8, 2 * 8]  # 16 images an epoch, not 32
    painted = reliance.reliance_inputs(monitor.probes.x[:16], monitor.probes.masks[:16])
    for batch, group in zip(kept, (slice(0, 8), slice(8, 16))):
        np.testing.assert_array_equal(batch[:8], painted[0][group])
        np.testing.assert_array_equal(batch[8:], painted[1][group])
    assert monitor._measure._reliance_inputs is kept  # built once per monitor

"""Mixed precision: gradients in float32, maps finite and close to those of float32 weights.

Only model construction reads the global dtype policy, so the mixed models are built under
``mixed_float16`` and the policy is restored to float32 at once (in a ``finally``): other tests
never see it.
"""

import keras
import numpy as np
import pytest
from keras import layers

from keras_saliency_monitor import SaliencyMonitor, compute_saliency

from .helpers import tiny_data


def _cnn(head):
    parts = [
        keras.Input((12, 12, 3)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.Conv2D(8, 3, activation="relu"),
        layers.Flatten(),
    ]
    if head == "float32_dense":  # the documented recipe: a float32 output layer
        parts.append(layers.Dense(3, activation="softmax", dtype="float32"))
    elif head == "float32_activation":
        parts += [layers.Dense(3), layers.Activation("softmax", dtype="float32")]
    else:  # "float16_dense": softmax fused into a float16 Dense
        parts.append(layers.Dense(3, activation="softmax"))
    return keras.Sequential(parts)


def _mixed_and_float32_twins(head):
    keras.utils.set_random_seed(3)
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        mixed = _cnn(head)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reference = _cnn(head)
    reference.set_weights(mixed.get_weights())  # mixed models keep float32 variables
    return mixed, reference


@pytest.mark.parametrize("head", ["float32_dense", "float32_activation", "float16_dense"])
def test_mixed_float16_maps_are_finite_and_match_float32(tmp_path, head):
    x, y = tiny_data()
    mixed, reference = _mixed_and_float32_twins(head)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert mixed.layers[0].compute_dtype == "float16"
    assert reference.layers[0].compute_dtype == "float32"

    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, background=False)
    monitor.set_model(mixed)
    monitor.on_train_begin()
    logs = {}
    monitor.on_epoch_end(0, logs)
    monitor.on_train_end()
    assert monitor.faults == {} and np.isfinite(logs["saliency_concentration"])

    explanation = monitor.explainer.explain(monitor.probes.x)
    assert explanation.attributions.dtype == np.float32
    assert explanation.logits.dtype == np.float32
    got = explanation.maps
    want = compute_saliency(reference, monitor.probes.x)
    assert np.isfinite(got).all() and got.max() > 0
    # float16 activations carry ~3 significant digits: close, not equal.
    for g, w in zip(got, want):
        assert np.corrcoef(g.ravel(), w.ravel())[0, 1] > 0.99
        assert abs(np.linalg.norm(g) - np.linalg.norm(w)) < 0.05 * np.linalg.norm(w)
    assert not np.array_equal(got, want)  # the float16 path really ran
    # The explained class is the float32 model's.
    np.testing.assert_array_equal(
        explanation.classes, reference.predict(monitor.probes.x, verbose=0).argmax(1)
    )

"""Every kind of Keras model: subclassed, Sequential without Input, and the ones we refuse.

References are independent of the package: the logits written out by hand from the model's own
layers and weights, differentiated with the active backend's own autodiff
(:func:`tests.test_backends.reference_gradient`). Runs under every backend.
"""

import gc
import os
import warnings
import weakref

import keras
import numpy as np
import pytest
from keras import layers, ops

from keras_saliency_monitor import SaliencyMonitor, compute_attributions, compute_saliency
from keras_saliency_monitor.attribution.explain import _CACHE, CACHE_PER_MODEL, Explainer, explain
from keras_saliency_monitor.monitor.callback import GRID_TAG

from .helpers import read_images, tiny_data
from .test_backends import assert_close, reference_gradient, to_numpy

SHAPE = (8, 8, 3)


def _images(n=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype("float32")


class FusedNet(keras.Model):
    """Subclassed: conv, flatten, Dense with a softmax fused in (or another ending)."""

    def __init__(self, ending="fused", classes=3):
        super().__init__()
        self.ending = ending
        self.conv = layers.Conv2D(4, 3, activation="tanh", name="conv")
        self.flat = layers.Flatten()
        fused = "softmax" if ending == "fused" else None
        self.head = layers.Dense(classes, activation=fused, name="head")
        self.softmax = layers.Softmax(name="probs")

    def call(self, x):
        z = self.head(self.flat(self.conv(x)))
        if self.ending == "layer":
            return self.softmax(z)
        if self.ending == "op":
            return ops.softmax(z)  # not a layer: cannot be seen, hence not stripped
        return z

    def logits(self, x):
        """What the test differentiates: the head without its activation, by hand."""
        h = self.flat(self.conv(x, training=False))
        return ops.matmul(h, self.head.kernel) + self.head.bias


def _reference(net, x, classes):
    return np.stack(
        [
            reference_gradient(lambda t, c=int(c): net.logits(t)[0, c], xi[None])[0]
            for xi, c in zip(x, classes)
        ]
    )


def _untouched(net):
    """No instance attribute left behind by a temporary override."""
    for layer in (net, net.conv, net.flat, net.head, net.softmax):
        assert "call" not in layer.__dict__
    return net.head.activation


@pytest.mark.parametrize("ending", ["fused", "layer", "linear"])
def test_subclassed_model_exact_logit_saliency(ending):
    keras.utils.set_random_seed(1)
    net = FusedNet(ending)
    x = _images()
    net(x[:1])  # built, as after training
    activation = net.head.activation
    weights = [w.copy() for w in net.get_weights()]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "probabilities" warning: stripped
        result = explain(net, x, batch_size=2)
    logits = to_numpy(net.logits(x))
    np.testing.assert_allclose(result.logits, logits, rtol=1e-5, atol=1e-6)
    assert result.logits.shape == (5, 3)
    classes = logits.argmax(1)
    np.testing.assert_array_equal(result.classes, classes)
    assert_close(result.attributions, _reference(net, x, classes))
    assert _untouched(net) is activation
    for a, b in zip(net.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


def test_subclassed_model_ending_in_an_op_warns_that_probabilities_are_explained():
    keras.utils.set_random_seed(1)
    net = FusedNet("op")
    x = _images()
    with pytest.warns(UserWarning, match=r"probabilities.*Return logits from call\(\)"):
        result = explain(net, x)
    probs = to_numpy(net(x, training=False))
    np.testing.assert_allclose(result.logits, probs, rtol=1e-5, atol=1e-6)
    classes = probs.argmax(1)
    ref = np.stack(
        [
            reference_gradient(lambda t, c=int(c): net(t, training=False)[0, c], xi[None])[0]
            for xi, c in zip(x, classes)
        ]
    )
    assert_close(result.attributions, ref)


def test_subclassed_model_with_labels_fits_with_the_monitor(tmp_path):
    x, y = tiny_data(n=24, size=8)
    keras.utils.set_random_seed(0)
    net = FusedNet("fused")
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6, target="label")
    net.fit(x, y, epochs=2, batch_size=12, verbose=0, callbacks=[monitor])
    assert not monitor.faults, monitor.faults
    assert monitor.explainer.head.num_classes == 3
    assert sorted(monitor.history) == [0, 1]
    assert sorted(read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)) == [0, 1]
    maps = monitor.explainer.explain(monitor.probes.x, monitor.probes.labels).maps
    ref = _reference(net, monitor.probes.x, monitor.probes.labels)
    assert_close(maps, np.abs(ref).max(-1))


def test_labels_beyond_the_output_width_fail_before_training(tmp_path):
    x, y = tiny_data(n=24, size=8, classes=3)
    net = FusedNet("fused", classes=2)
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6)
    seen = []
    probe = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda *_: seen.append(1))
    with pytest.raises(ValueError, match=r"`probe_data`.*\[0, 2\].*2 classes"):
        net.fit(x, y, epochs=1, verbose=0, callbacks=[monitor, probe])
    assert not seen  # no batch trained


def _unbuilt_sequential():
    return keras.Sequential(
        [
            layers.Conv2D(4, 3, activation="tanh"),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ]
    )


def test_sequential_without_input_is_built_and_explained_exactly(tmp_path):
    x, y = tiny_data(n=24, size=8)
    keras.utils.set_random_seed(0)
    model = _unbuilt_sequential()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x, y, epochs=2, batch_size=12, verbose=0, callbacks=[monitor])
    assert not monitor.faults, monitor.faults
    assert monitor.explainer.head.kind == "softmax"  # stripped from the graph fit built
    head = model.layers[-1]
    trunk = keras.Model(model.inputs[0], head.input)

    def logit(t, c):
        return (ops.matmul(trunk(t, training=False), head.kernel) + head.bias)[0, c]

    probes = monitor.probes.x
    result = monitor.explainer.explain(probes)
    ref = np.stack(
        [
            reference_gradient(lambda t, c=int(c): logit(t, c), xi[None])[0]
            for xi, c in zip(probes, result.classes)
        ]
    )
    assert_close(result.attributions, ref)


@pytest.mark.parametrize("build", [_unbuilt_sequential, FusedNet])
def test_building_a_model_early_changes_no_trained_weight(tmp_path, build):
    """The monitor builds an unbuilt model at train begin; fit ends bit-identical."""
    x, y = tiny_data(n=24, size=8)
    finals = []
    for callbacks in ([], [SaliencyMonitor(tmp_path, (x, y), num_probes=4)]):
        keras.utils.set_random_seed(5)
        model = build()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=12, shuffle=False, verbose=0, callbacks=callbacks)
        finals.append(model.get_weights())
    for a, b in zip(*finals):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ Grad-CAM on subclassed models


def test_gradcam_on_a_subclassed_model_equals_the_reference():
    keras.utils.set_random_seed(2)
    net = FusedNet("fused")
    x = _images(4)
    result = explain(net, x, method="gradcam")
    assert result.extras["layer"] == "conv"
    # Reference: activations A by hand, d logit / d A with this backend's autodiff.
    a = to_numpy(net.conv(x, training=False))
    classes = result.classes

    def rest(t, c):
        return (ops.matmul(net.flat(t), net.head.kernel) + net.head.bias)[0, c]

    grads = np.stack(
        [
            reference_gradient(lambda t, c=int(c): rest(t, c), ai[None])[0]
            for ai, c in zip(a, classes)
        ]
    )
    alpha = grads.mean(axis=(1, 2))
    cam = np.maximum(np.einsum("nhwk,nk->nhw", a, alpha), 0.0)  # (N, 6, 6)
    from keras_saliency_monitor.attribution.methods import resize_bilinear

    assert cam.max() > 0
    assert_close(result.maps, resize_bilinear(cam, SHAPE[:2]))
    _untouched(net)


class SharedConv(keras.Model):
    """One conv layer used twice: its output cannot be captured from a single call."""

    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(3, 3, padding="same", name="twice")
        self.pool = layers.GlobalAveragePooling2D()
        self.head = layers.Dense(2)

    def call(self, x):
        return self.head(self.pool(self.conv(self.conv(x))))


def test_gradcam_on_a_layer_called_twice_says_what_to_do():
    net = SharedConv()
    with pytest.raises(ValueError, match=r"`layer`.*'twice' ran 2 times.*Functional API"):
        compute_saliency(net, _images(2), method="gradcam", layer="twice")
    with pytest.raises(ValueError, match=r"no layer with a 4-D.*'smoothgrad'"):
        compute_saliency(net, _images(2), method="gradcam")


# ------------------------------------------------------------------ refused before the first batch


def _channels_first_model():
    return keras.Sequential(
        [
            keras.Input((3, 8, 8)),
            layers.Conv2D(2, 3, data_format="channels_first"),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )


def test_channels_first_fails_before_training(tmp_path):
    model = _channels_first_model()
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 3, 8, 8), "float32")
    with pytest.raises(ValueError, match=r"`model`.*channels_first.*\(N, H, W, C\)"):
        compute_saliency(model, x)
    seen = []
    probe = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda *_: seen.append(1))
    monitor = SaliencyMonitor(tmp_path, x, num_probes=4)
    with pytest.raises(ValueError, match="channels_first"):
        model.fit(x, np.zeros((8, 3)), epochs=1, verbose=0, callbacks=[monitor, probe])
    assert not seen  # no batch trained


@pytest.mark.parametrize(
    "target, received",
    [
        (lambda z: z, r"\(2, 3\)"),  # all logits
        (lambda z: ops.sum(z), r"\(\)"),  # a scalar: the sum over the batch
        (lambda z: z[:, :1], r"\(2, 1\)"),
    ],
)
def test_callable_target_not_one_score_per_example_fails_at_bind(tmp_path, target, received):
    inp = keras.Input(SHAPE)
    model = keras.Model(inp, layers.Dense(3)(layers.Flatten()(inp)))
    with pytest.raises(ValueError, match=rf"`target`.*shape \(N,\).*{received}"):
        compute_saliency(model, _images(2), target=target)
    x, y = tiny_data(n=12, size=8)
    model.compile(optimizer="sgd", loss="mse")
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, target=target)
    with pytest.raises(ValueError, match="`target`"):
        model.fit(x, np.zeros((12, 3)), epochs=1, verbose=0, callbacks=[monitor])


def test_callable_target_that_raises_is_reported():
    inp = keras.Input(SHAPE)
    model = keras.Model(inp, layers.Dense(3)(layers.Flatten()(inp)))
    with pytest.raises(ValueError, match=r"`target`.*callable failed.*with \w+"):
        compute_saliency(model, _images(2), target=lambda z: z[:, :, 7])


def test_integer_input_models_fail_naming_the_model(tmp_path):
    inp = keras.Input((8, 8), dtype="int32")
    h = layers.Embedding(10, 3)(inp)
    model = keras.Model(inp, layers.Dense(2)(layers.Flatten()(h)))
    ids = np.random.default_rng(0).integers(0, 10, (6, 8, 8, 1))
    with pytest.raises(ValueError, match=r"`model`.*Embedding.*integer ids.*float image"):
        compute_saliency(model, ids)
    int_input = keras.Input(SHAPE, dtype="uint8")
    cast = layers.Rescaling(1 / 255)(int_input)
    model = keras.Model(int_input, layers.Dense(2)(layers.Flatten()(cast)))
    with pytest.raises(ValueError, match=r"`model`.*dtype uint8"):
        compute_saliency(model, _images(2))


# ------------------------------------------------------------------ the one-shot functions' cache


def test_repeated_calls_reuse_one_compiled_function_and_see_new_weights():
    keras.utils.set_random_seed(4)
    inp = keras.Input(SHAPE)
    model = keras.Model(inp, layers.Dense(3, activation="softmax")(layers.Flatten()(inp)))
    x = _images(6)
    first = compute_saliency(model, x, batch_size=4)
    (explainer,) = _CACHE[model].values()
    for seed in range(3):  # a loop over batches of another size
        compute_saliency(model, _images(3, seed), batch_size=4)
    assert list(_CACHE[model].values()) == [explainer] and explainer.trace_count == 1
    # Other options are another entry; the same ones, the same entry.
    compute_attributions(model, x, method="smoothgrad", samples=2)
    compute_attributions(model, x, method="smoothgrad", samples=2)
    assert len(_CACHE[model]) == 2
    # New weights are seen by the cached function: logit of class c is w[:, c] . x + b[c].
    kernel = np.random.default_rng(9).normal(size=(np.prod(SHAPE), 3)).astype("float32")
    model.layers[-1].kernel.assign(kernel)
    maps = compute_saliency(model, x, target=1, batch_size=4)
    np.testing.assert_allclose(maps[0], np.abs(kernel[:, 1]).reshape(SHAPE).max(-1), rtol=1e-6)
    assert not np.allclose(first, compute_saliency(model, x, batch_size=4))
    assert explainer.trace_count == 1


def test_the_cache_does_not_keep_a_model_alive():
    net = FusedNet("fused")
    compute_saliency(net, _images(2))
    compute_saliency(net, _images(2), method="gradcam")
    ref = weakref.ref(net)
    size = len(_CACHE)
    del net
    gc.collect()
    assert ref() is None
    assert len(_CACHE) < size  # its entry went with it


def test_explainer_binds_a_subclassed_model_with_a_sample():
    net = FusedNet("fused")
    explainer = Explainer().bind(net, SHAPE, sample=_images(1))
    assert explainer.head.num_outputs == 3 and explainer.model is net


def test_cache_keys_arrays_by_content_and_callables_by_identity():
    inp = keras.Input(SHAPE)
    model = keras.Model(inp, layers.Dense(3)(layers.Flatten()(inp)))
    x = _images(2)
    for _ in range(2):  # equal arrays, new objects: one entry
        compute_attributions(model, x, method="integrated_gradients", steps=2, baseline=np.zeros(3))
    compute_attributions(model, x, method="integrated_gradients", steps=2, baseline=np.ones(3))
    assert len(_CACHE[model]) == 2
    score = lambda z: z[:, 0]  # noqa: E731
    compute_saliency(model, x, target=score)
    compute_saliency(model, x, target=score)
    assert len(_CACHE[model]) == 3
    for _ in range(12):  # a new callable per call: bounded, oldest entries dropped
        compute_saliency(model, x, target=lambda z: z[:, 1])
    assert len(_CACHE[model]) == CACHE_PER_MODEL

"""compute_saliency / compute_attributions against gradients computed independently in the test.

Runs under every Keras backend: the reference gradients use the active backend's own autodiff.
"""

import keras
import numpy as np
import pytest
from keras import layers

from keras_saliency_monitor import compute_attributions, compute_saliency

from .test_backends import reference_gradient, to_numpy

RTOL = 1e-4


def _images(n=6, shape=(8, 8, 3), seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def _trunk(inp):
    h = layers.Conv2D(4, 3, activation="tanh")(inp)
    return layers.Flatten()(h)


def _tape_grad(fn, x, select):
    """Reference: d select(fn(x)) / dx with the backend's autodiff, per example (no batching)."""
    return np.stack(
        [
            reference_gradient(lambda t, i=i: select(fn(t), i), x[i : i + 1])[0]
            for i in range(len(x))
        ]
    )


def _assert_close(a, b):
    scale = np.max(np.abs(b))
    assert scale > 0
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * scale)


def test_linear_model_saliency_is_abs_weights():
    # logit_c = sum_hwk W[hwk, c] x[hwk] + b_c: d logit_c / dx = W[:, c] exactly.
    inp = keras.Input((5, 4, 3))
    model = keras.Model(inp, layers.Dense(3)(layers.Flatten()(inp)))
    w = model.layers[-1].get_weights()[0]  # (60, 3)
    x = _images(4, (5, 4, 3))
    maps = compute_saliency(model, x, target=2)
    expected = np.max(np.abs(w[:, 2].reshape(5, 4, 3)), axis=-1)
    for m in maps:
        np.testing.assert_allclose(m, expected, rtol=1e-6)
    attr = compute_attributions(model, x, method="gradient_x_input", target=1)
    np.testing.assert_allclose(attr, x * w[:, 1].reshape(5, 4, 3), rtol=1e-5, atol=1e-7)


def _fused_and_linear(activation, units):
    """Same weights twice: one model with the activation fused in Dense, one without."""
    inp = keras.Input((8, 8, 3))
    feats = _trunk(inp)
    fused = keras.Model(inp, layers.Dense(units, activation=activation)(feats))
    inp2 = keras.Input((8, 8, 3))
    linear = keras.Model(inp2, layers.Dense(units)(_trunk(inp2)))
    linear.set_weights(fused.get_weights())
    return fused, linear


def test_softmax_fused_into_dense_uses_logits():
    fused, linear = _fused_and_linear("softmax", 4)
    x = _images()
    logits = linear.predict(x, verbose=0)
    pred = logits.argmax(1)
    ref = _tape_grad(lambda t: linear(t, training=False), x, lambda z, i: z[0, pred[i]])
    _assert_close(compute_attributions(fused, x), ref)
    _assert_close(compute_saliency(fused, x), np.abs(ref).max(-1))
    # The stripping matters: the gradient of the probability is a different map.
    prob_ref = _tape_grad(lambda t: fused(t, training=False), x, lambda z, i: z[0, pred[i]])
    assert not np.allclose(np.abs(prob_ref).max(-1), np.abs(ref).max(-1), rtol=1e-2)


def test_separate_softmax_layer_is_stripped_and_model_untouched():
    inp = keras.Input((8, 8, 3))
    z = layers.Dense(4, name="logits")(_trunk(inp))
    model = keras.Model(inp, layers.Softmax()(z))
    n_layers, weights = len(model.layers), [w.copy() for w in model.get_weights()]
    logit_model = keras.Model(inp, z)
    x = _images()
    labels = np.array([0, 1, 2, 3, 0, 1])
    ref = _tape_grad(lambda t: logit_model(t, training=False), x, lambda z, i: z[0, labels[i]])
    _assert_close(compute_attributions(model, x, target="label", labels=labels), ref)
    assert len(model.layers) == n_layers
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    # An Activation("softmax") layer is stripped the same way.
    model2 = keras.Model(inp, layers.Activation("softmax")(z))
    _assert_close(compute_attributions(model2, x, target="label", labels=labels), ref)


def test_binary_sigmoid_uses_signed_logit():
    fused, linear = _fused_and_linear("sigmoid", 1)
    x = _images(8)
    logit = linear.predict(x, verbose=0)[:, 0]
    sign = np.where(logit > 0, 1.0, -1.0)  # predicted class 1 -> +logit, class 0 -> -logit
    ref = _tape_grad(lambda t: linear(t, training=False), x, lambda z, i: sign[i] * z[0, 0])
    _assert_close(compute_attributions(fused, x), ref)
    # target=1 always differentiates +logit.
    ref1 = _tape_grad(lambda t: linear(t, training=False), x, lambda z, i: z[0, 0])
    _assert_close(compute_attributions(fused, x, target=1), ref1)


def test_regression_output_is_used_as_is():
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, layers.Dense(1)(_trunk(inp)))
    x = _images()
    ref = _tape_grad(lambda t: model(t, training=False), x, lambda z, i: z[0, 0])
    _assert_close(compute_attributions(model, x), ref)


def test_multi_output_by_index_and_name():
    inp = keras.Input((8, 8, 3))
    feats = _trunk(inp)
    za = layers.Dense(3, name="a_logits")(feats)
    zb = layers.Dense(2, name="b_logits")(feats)
    model = keras.Model(inp, [layers.Softmax(name="a")(za), layers.Softmax(name="b")(zb)])
    view = keras.Model(inp, zb)
    x = _images()
    ref = _tape_grad(lambda t: view(t, training=False), x, lambda z, i: z[0, 1])
    _assert_close(compute_attributions(model, x, output=1, target=1), ref)
    _assert_close(compute_attributions(model, x, output="b", target=1), ref)
    with pytest.raises(ValueError, match="`output`"):
        compute_saliency(model, x)
    with pytest.raises(ValueError, match="no output named"):
        compute_saliency(model, x, output="c")


def test_sequential_with_batchnorm_and_dropout_in_inference_mode():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(3, activation="softmax"),
        ]
    )
    model.layers[1].moving_mean.assign(np.full(4, 0.3, "float32"))
    x = _images()
    before = [w.copy() for w in model.get_weights()]
    head = model.layers[-1]
    trunk = keras.Model(model.inputs[0], head.input)

    def logits(t):
        return trunk(t, training=False) @ head.kernel + head.bias

    pred = to_numpy(logits(x)).argmax(1)
    ref = _tape_grad(logits, x, lambda z, i: z[0, pred[i]])
    _assert_close(compute_attributions(model, x, batch_size=4), ref)  # chunked: 4 + 2
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_callable_target():
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, layers.Dense(3)(_trunk(inp)))
    x = _images()
    ref = _tape_grad(lambda t: model(t, training=False), x, lambda z, i: z[0, 0] - z[0, 2])
    attr = compute_attributions(model, x, target=lambda z: z[:, 0] - z[:, 2])
    _assert_close(attr, ref)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "nope"}, ValueError, "`method`"),
        ({"method": 3}, TypeError, "`method`"),
        ({"target": 7}, ValueError, "out of range"),
        ({"target": "best"}, ValueError, "`target`"),
        ({"target": "label"}, ValueError, "needs labels"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"steps": 3}, TypeError, "Unknown option"),
    ],
)
def test_errors_name_the_argument(kwargs, error, match):
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, layers.Dense(3, activation="softmax")(_trunk(inp)))
    with pytest.raises(error, match=match):
        compute_saliency(model, _images(2), **kwargs)


def test_image_shape_mismatch_is_clear():
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, layers.Dense(3)(_trunk(inp)))
    with pytest.raises(ValueError, match="do not match the model's input shape"):
        compute_saliency(model, _images(2, (9, 8, 3)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        compute_saliency(model, np.zeros((8, 8, 3), "float32"))

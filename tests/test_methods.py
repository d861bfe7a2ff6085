"""SmoothGrad, integrated gradients and Grad-CAM against independent computations.

Layers of tests: method axioms on analytic functions through a fake gradient function (no
network); the methods on small real models against a GradientTape reference written here; option
and layer-choice errors; one contract over every registered method.
"""

import keras
import numpy as np
import pytest
from keras import layers

from keras_saliency_monitor import compute_attributions, compute_saliency
from keras_saliency_monitor.attribution import methods
from keras_saliency_monitor.attribution.explain import Explainer, explain
from keras_saliency_monitor.attribution.gradients import GradientResult

from .test_backends import reference_gradient, to_numpy

SHAPE = (10, 10, 3)


def _images(n=5, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def _assert_close(a, b, rtol=1e-4):
    scale = np.max(np.abs(b))
    assert scale > 0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


class QuadraticGrad:
    """Fake gradient function of f(x) = sum(a * x**2 + b * x), recording every batch it sees."""

    def __init__(self, shape=SHAPE, batch_size=4, seed=1):
        rng = np.random.default_rng(seed)
        self.a = rng.normal(size=shape).astype("float32")
        self.b = rng.normal(size=shape).astype("float32")
        self.batch_size = batch_size
        self.batches = []

    def __call__(self, x, requested):
        x = np.asarray(x, np.float32)
        self.batches.append(x.copy())
        scores = np.sum(self.a * x**2 + self.b * x, axis=(1, 2, 3))
        grads = 2 * self.a * x + self.b
        return GradientResult(grads, scores[:, None], np.zeros(len(x), np.int32), scores)


def _conv_net(activation="tanh", size=10, pool=True):
    """A small conv net with a softmax fused into the head."""
    inp = keras.Input((size, size, 3))
    h = layers.Conv2D(6, 3, activation=activation, name="c1")(inp)
    h = layers.Conv2D(8, 3, activation=activation, name="c2")(h)
    h = layers.GlobalAveragePooling2D()(h) if pool else layers.Flatten()(h)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="head")(h))


@pytest.fixture(scope="module")
def conv_net():
    keras.utils.set_random_seed(3)
    return _conv_net()


# ------------------------------------------------------------------ SmoothGrad


def test_smoothgrad_on_analytic_function_equals_hand_computed_average():
    x, fake = _images(3), QuadraticGrad()
    first = fake(x, np.zeros(3, np.int32))
    samples, noise, seed = 7, 0.2, 5
    attr, _ = methods.METHODS["smoothgrad"].attribute(
        fake, x, first, samples=samples, noise=noise, seed=seed
    )
    eps = np.random.default_rng(seed).standard_normal((samples, *SHAPE), dtype=np.float32)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    expected = np.stack(
        [
            np.mean([np.abs(2 * fake.a * (x[i] + sigma[i] * e) + fake.b) for e in eps], axis=0)
            for i in range(len(x))
        ]
    )
    np.testing.assert_allclose(attr, expected, rtol=1e-5, atol=1e-6)
    # Every noisy image went through the gradient function, in whole chunks but the last.
    sent = np.concatenate(fake.batches[1:])
    assert len(sent) == samples * len(x)
    assert all(len(b) % fake.batch_size == 0 for b in fake.batches[1:-1])


def test_smoothgrad_of_a_linear_function_is_vanilla_for_any_noise():
    x, fake = _images(3), QuadraticGrad()
    fake.a[:] = 0  # constant gradient b
    first = fake(x, np.zeros(3, np.int32))
    attr, _ = methods.METHODS["smoothgrad"].attribute(fake, x, first, samples=5, noise=3.0, seed=0)
    np.testing.assert_allclose(attr, np.broadcast_to(np.abs(fake.b), x.shape), rtol=1e-6)


def test_smoothgrad_in_chunks_equals_one_chunk():
    x = _images(5)
    opts = dict(samples=6, noise=0.3, seed=2)
    whole = QuadraticGrad(batch_size=64)
    one_chunk = methods.METHODS["smoothgrad"].attribute(whole, x, whole(x, None), **opts)[0]
    fake = QuadraticGrad(batch_size=4)  # chunks straddle the samples' boundaries
    chunked = methods.METHODS["smoothgrad"].attribute(fake, x, fake(x, None), **opts)[0]
    np.testing.assert_array_equal(chunked, one_chunk)
    # Host memory is bounded: never more than one chunk of perturbed images at a time.
    assert [len(b) for b in whole.batches[1:]] == [30]
    assert max(len(b) for b in fake.batches[1:]) == 4 and len(fake.batches) == 1 + 8


def test_smoothgrad_without_noise_is_vanilla(conv_net):
    x = _images()
    vanilla = compute_saliency(conv_net, x)
    np.testing.assert_allclose(
        compute_saliency(conv_net, x, method="smoothgrad", samples=4, noise=0.0),
        vanilla,
        rtol=1e-5,
        atol=1e-7 * vanilla.max(),
    )
    near = compute_saliency(conv_net, x, method="smoothgrad", samples=4, noise=1e-6)
    _assert_close(near, vanilla, rtol=1e-3)


def test_smoothgrad_draws_are_fixed_by_the_seed(conv_net):
    x = _images()
    before = np.random.get_state()
    explainer = Explainer("smoothgrad", samples=6, seed=1).bind(conv_net, SHAPE)
    first, second = explainer.explain(x).maps, explainer.explain(x).maps
    np.testing.assert_array_equal(first, second)  # the same draws every epoch
    assert explainer.trace_count == 1
    same = compute_saliency(conv_net, x, method="smoothgrad", samples=6, seed=1)
    np.testing.assert_allclose(same, first, rtol=1e-5)
    other = compute_saliency(conv_net, x, method="smoothgrad", samples=6, seed=2)
    assert not np.allclose(other, first, rtol=1e-3)
    _assert_global_rng_untouched(before)


def _assert_global_rng_untouched(before):
    after = np.random.get_state()
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])


# ------------------------------------------------------------------ SmoothGrad-Squared, VarGrad


def test_noise_moment_methods_on_analytic_function_use_smoothgrads_draws_in_one_pass():
    """SmoothGrad-Squared (Hooker et al. 2019) and VarGrad (Adebayo et al. 2018), by hand: the
    mean of g**2 and the 1/n variance of g over the noisy copies x + sigma * eps_k."""
    x = _images(3)
    samples, noise, seed = 7, 0.2, 5
    eps = np.random.default_rng(seed).standard_normal((samples, *SHAPE), dtype=np.float32)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    opts = dict(samples=samples, noise=noise, seed=seed)
    sent = {}
    for name in ("smoothgrad", "smoothgrad_squared", "vargrad"):
        fake = QuadraticGrad()
        sent[name] = (fake, methods.METHODS[name].attribute(fake, x, fake(x, None), **opts))
    fake = sent["vargrad"][0]
    g = np.stack([[2 * fake.a * (x[i] + sigma[i] * e) + fake.b for e in eps] for i in range(3)])
    g = g.astype(np.float64)  # (N, samples, H, W, C)
    squared, squared_extras = sent["smoothgrad_squared"][1]
    variance, variance_extras = sent["vargrad"][1]
    _assert_close(squared, (g**2).mean(axis=1), rtol=1e-5)
    _assert_close(variance, ((g - g.mean(axis=1, keepdims=True)) ** 2).mean(axis=1), rtol=1e-5)
    # One pass gives both, and the draws are SmoothGrad's: the same images, in the same calls.
    np.testing.assert_array_equal(squared_extras["vargrad"], variance)
    np.testing.assert_array_equal(variance_extras["smoothgrad_squared"], squared)
    for name in ("smoothgrad_squared", "vargrad"):
        batches = sent[name][0].batches
        assert len(batches) == len(sent["smoothgrad"][0].batches)
        for a, b in zip(batches, sent["smoothgrad"][0].batches):
            np.testing.assert_array_equal(a, b)


def test_noise_moment_methods_without_noise():
    x, fake = _images(3), QuadraticGrad()
    first = fake(x, None)
    opts = dict(samples=4, noise=0.0, seed=0)
    squared, _ = methods.METHODS["smoothgrad_squared"].attribute(fake, x, first, **opts)
    variance, _ = methods.METHODS["vargrad"].attribute(fake, x, first, **opts)
    np.testing.assert_array_equal(variance, 0.0)
    np.testing.assert_allclose(squared, first.grads.astype(np.float64) ** 2, rtol=1e-6)


@pytest.mark.parametrize("method", ["smoothgrad_squared", "vargrad"])
def test_noise_moment_methods_equal_a_per_sample_autodiff_reference(conv_net, method):
    x = _images(3)
    samples, noise, seed = 5, 0.2, 3
    result = explain(conv_net, x, method=method, samples=samples, noise=noise, seed=seed)
    head = conv_net.get_layer("head")
    trunk = keras.Model(conv_net.inputs[0], head.input)
    eps = np.random.default_rng(seed).standard_normal((samples, *SHAPE), dtype=np.float32)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    expected = []
    for i, cls in enumerate(result.classes):

        def score(t, cls=int(cls)):
            return (trunk(t, training=False) @ head.kernel + head.bias)[0, cls]

        noisy = x[i] + sigma[i] * eps  # (samples, H, W, C)
        g = reference_gradient(score, noisy).astype(np.float64)
        expected.append((g**2).mean(0) if method == "smoothgrad_squared" else g.var(axis=0))
    _assert_close(result.attributions, np.stack(expected), rtol=1e-5)
    _assert_close(result.maps, np.stack(expected).max(axis=-1), rtol=1e-5)


# ------------------------------------------------------------------ integrated gradients


def test_ig_on_analytic_function_is_exact():
    # f = sum(a x^2 + b x): the gradient is linear along the path, so the midpoint rule is exact
    # and IG = a (x^2 - x'^2) + b (x - x'), with a zero completeness gap.
    x, fake = _images(3), QuadraticGrad(batch_size=5)
    base = np.float32(0.25)
    attr, extras = methods.METHODS["integrated_gradients"].attribute(
        fake, x, fake(x, None), steps=3, baseline=float(base)
    )
    expected = fake.a * (x**2 - base**2) + fake.b * (x - base)
    np.testing.assert_allclose(attr, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(extras["completeness_gap"], 0.0, atol=1e-3)
    f = lambda t: np.sum(fake.a * t**2 + fake.b * t, axis=(1, 2, 3))  # noqa: E731
    np.testing.assert_allclose(extras["score_delta"], f(x) - f(np.full_like(x, base)), rtol=1e-5)


def test_ig_on_linear_model_is_input_minus_baseline_times_weights():
    inp = keras.Input(SHAPE)
    model = keras.Model(inp, layers.Dense(3)(layers.Flatten()(inp)))
    w = model.layers[-1].get_weights()[0][:, 1].reshape(SHAPE)
    x = _images(4)
    for baseline, base in [
        (None, 0.0),
        (0.5, 0.5),
        (x[:1] * 0.3, x[:1] * 0.3),
        (lambda t: t[:, ::-1], x[:, ::-1]),
    ]:
        attr = compute_attributions(
            model, x, method="integrated_gradients", target=1, steps=5, baseline=baseline
        )
        np.testing.assert_allclose(attr, (x - base) * w, rtol=1e-5, atol=1e-6)


def test_ig_completeness_on_a_conv_net():
    keras.utils.set_random_seed(4)
    model = _conv_net("relu")
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-zero biases: a path with ReLU kinks to integrate over
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype("float32"))
    x = _images(4)
    result = explain(model, x, method="integrated_gradients", steps=256, batch_size=64)
    # Independent f(x) - f(0): the logits of a view built here.
    head = model.get_layer("head")
    trunk = keras.Model(model.inputs[0], head.input)

    def f(t):
        return to_numpy(trunk(t, training=False) @ head.kernel + head.bias)

    rows = np.arange(len(x))
    delta = f(x)[rows, result.classes] - f(np.zeros_like(x))[rows, result.classes]
    np.testing.assert_allclose(result.extras["score_delta"], delta, rtol=1e-4, atol=1e-6)
    total = result.attributions.reshape(len(x), -1).sum(axis=1)
    assert np.all(np.abs(total - delta) <= 0.01 * np.abs(delta))
    np.testing.assert_allclose(result.extras["completeness_gap"], total - delta, atol=1e-4)
    # The gap measures convergence: with 4 steps it is visibly larger.
    coarse = explain(model, x, method="integrated_gradients", steps=4, batch_size=64)
    gap = np.abs(result.extras["completeness_gap"]).mean()
    assert np.abs(coarse.extras["completeness_gap"]).mean() > 5 * gap


def test_ig_blur_baseline(conv_net):
    from scipy import ndimage

    x = _images(3)
    s = methods.blur_sigma(SHAPE[:2])
    blurred = ndimage.gaussian_filter(x, (0, s, s, 0), mode="nearest")
    opts = dict(method="integrated_gradients", steps=4)
    np.testing.assert_allclose(
        compute_attributions(conv_net, x, baseline="blur", **opts),
        compute_attributions(conv_net, x, baseline=blurred, **opts),
        rtol=1e-5,
        atol=1e-7,
    )


# ------------------------------------------------------------------ chunking, tracing


@pytest.mark.parametrize(
    "method, options",
    [
        ("smoothgrad", {"samples": 5}),
        ("integrated_gradients", {"steps": 6}),
        ("gradcam", {}),
    ],
)
def test_chunked_equals_unchunked(conv_net, method, options):
    x = _images(5)
    whole = Explainer(method, batch_size=64, **options).bind(conv_net, SHAPE)
    chunked = Explainer(method, batch_size=3, **options).bind(conv_net, SHAPE)
    a = whole.explain(x)
    b = chunked.explain(x)
    b = chunked.explain(x)  # a second call: same compiled function
    _assert_close(b.attributions, a.attributions, rtol=1e-5)
    assert whole.trace_count == 1 and chunked.trace_count == 1


# ------------------------------------------------------------------ Grad-CAM


def _flat_model():
    inp = keras.Input(SHAPE)
    h = layers.Conv2D(6, 3, activation="relu", name="c1")(inp)
    h = layers.Conv2D(8, 3, activation="relu", name="c2")(h)
    z = layers.Dense(3, name="logits")(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, layers.Softmax()(z))
    c1, c2, logits = (model.get_layer(n) for n in ("c1", "c2", "logits"))
    gap = model.layers[3]

    def split(x):  # (A, rest: A -> logits), by hand
        return c2(c1(x)), lambda a: logits(gap(a))

    return model, "c2", split


def _sequential_model():
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            layers.Conv2D(6, 3, activation="relu", name="c1"),
            layers.BatchNormalization(name="bn"),
            layers.Conv2D(8, 3, name="c2"),
            layers.Activation("relu", name="act"),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.get_layer("bn").moving_mean.assign(np.full(6, 0.2, "float32"))
    c1, bn, c2, act, flat, drop, head = model.layers

    def split(x):
        a = act(c2(bn(c1(x), training=False)))
        return a, lambda t: drop(flat(t), training=False) @ head.kernel + head.bias

    return model, "act", split


def _nested_model():
    """Transfer-learning shape: preprocessing, a frozen Functional backbone, a bypass branch."""
    binp = keras.Input(SHAPE)
    h = layers.Conv2D(6, 3, activation="relu", name="c1")(binp)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Conv2D(8, 3, activation="relu", name="c2")(h)
    backbone = keras.Model(binp, h, name="backbone")
    backbone.get_layer("bn").moving_variance.assign(np.full(6, 2.0, "float32"))
    backbone.trainable = False
    inp = keras.Input(SHAPE)
    scaled = layers.Rescaling(0.5, name="scale")(inp)
    f = layers.GlobalAveragePooling2D(name="gap")(backbone(scaled))
    side = layers.GlobalAveragePooling2D(name="side")(inp)
    merged = layers.Concatenate(name="merge")([f, side])
    out = layers.Dense(3, activation="softmax", name="head")(layers.Dropout(0.5)(merged))
    model = keras.Model(inp, out)
    get = model.get_layer
    c1, bn, c2 = (backbone.get_layer(n) for n in ("c1", "bn", "c2"))

    def split(x):
        a = c2(bn(c1(get("scale")(x)), training=False))

        def rest(t):
            merged = get("merge")([get("gap")(t), get("side")(x)])
            return merged @ get("head").kernel + get("head").bias

        return a, rest

    return model, "backbone/c2", split


def _nested_sequential_model():
    """A Sequential backbone ending in a pooling layer, inside a Sequential model."""
    backbone = keras.Sequential(
        [
            keras.Input(SHAPE),
            layers.Conv2D(6, 3, activation="relu", name="c1"),
            layers.MaxPooling2D(name="pool"),
        ],
        name="features",
    )
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            backbone,
            layers.GlobalAveragePooling2D(),
            layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    c1, pool = backbone.layers
    gap, head = model.layers[1:]

    def split(x):  # the trailing pooling layer is passed over: A is c1's output
        return c1(x), lambda a: gap(pool(a)) @ head.kernel + head.bias

    return model, "features/c1", split


def _reference_gradcam(split, x):
    """Grad-CAM written out on the hand-split model: the backend's autodiff, tf.image.resize."""
    import tensorflow as tf  # installed under every backend; only its resize is used

    cams = []
    for i in range(len(x)):
        a, rest = split(x[i : i + 1])
        cls = int(to_numpy(rest(a)).argmax(1)[0])
        grads = reference_gradient(lambda t, rest=rest, cls=cls: rest(t)[0, cls], to_numpy(a))
        alpha = grads.mean(axis=(1, 2), keepdims=True)
        cams.append(np.maximum((alpha * to_numpy(a)).sum(axis=-1, keepdims=True), 0.0))
    cam = np.concatenate(cams).astype(np.float32)
    return tf.image.resize(cam, x.shape[1:3], method="bilinear").numpy()[..., 0]


def _node_counts(model):
    counts = {}
    for layer in model.layers:
        counts[layer.name] = len(layer._inbound_nodes)
        if isinstance(layer, keras.Model):
            counts.update({f"{layer.name}/{k}": v for k, v in _node_counts(layer).items()})
    return counts


@pytest.mark.parametrize(
    "build", [_flat_model, _sequential_model, _nested_model, _nested_sequential_model]
)
def test_gradcam_equals_reference_and_picks_the_last_4d_layer(build):
    keras.utils.set_random_seed(7)
    model, expected_layer, split = build()
    x = _images(4)
    nodes, weights = _node_counts(model), [w.copy() for w in model.get_weights()]
    explainer = Explainer("gradcam", batch_size=3).bind(model, SHAPE)
    assert explainer.layer.name == expected_layer
    result = explainer.explain(x)
    reference = _reference_gradcam(split, x)
    assert reference.max() > 0
    _assert_close(result.maps, reference)
    assert result.attributions.shape == (*x.shape[:3], 1)
    assert result.extras["layer"] == expected_layer
    # Naming the layer gives the same map; the model is untouched (no new nodes, same weights).
    named = compute_saliency(model, x, method="gradcam", layer=expected_layer.split("/")[-1])
    _assert_close(named, result.maps, rtol=1e-5)
    assert _node_counts(model) == nodes
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


def _reference_gradcam_plus_plus(split, x):
    """Grad-CAM++ from the paper's general weights (Chattopadhay et al. 2018, eqs. 7 and 9):
    alpha = Y2 / (2 Y2 + sum_ab A_ab Y3), w_k = sum_ij alpha ReLU(Y1), with Y = exp(S) and Yn its
    n-th derivative with respect to each A_ij^k, taken by three nested GradientTapes (diagonals
    of full Jacobians); then divided by exp(S), the one positive factor per image that the
    implementation leaves out."""
    import tensorflow as tf

    cams = []
    for i in range(len(x)):
        a, rest = split(x[i : i + 1])
        a = tf.constant(to_numpy(a), tf.float64)
        cls = int(to_numpy(rest(tf.cast(a, tf.float32))).argmax(1)[0])

        def diagonal(jac, shape=a.shape):  # d f_m / d a_m of a Jacobian (*shape, *shape)
            size = int(np.prod(shape))
            return tf.reshape(tf.linalg.diag_part(tf.reshape(jac, (size, size))), shape)

        with tf.GradientTape(persistent=True) as t3:
            t3.watch(a)
            with tf.GradientTape(persistent=True) as t2:
                t2.watch(a)
                with tf.GradientTape() as t1:
                    t1.watch(a)
                    s = tf.cast(rest(tf.cast(a, tf.float32))[0, cls], tf.float64)
                    y = tf.exp(s)
                d1 = t1.gradient(y, a)
            d2 = diagonal(t2.jacobian(d1, a))
        d3 = diagonal(t3.jacobian(d2, a))
        a, d1, d2, d3 = (np.asarray(t) for t in (a, d1, d2, d3))
        denominator = 2 * d2 + a.sum(axis=(1, 2), keepdims=True) * d3
        alpha = np.divide(d2, denominator, out=np.zeros_like(d2), where=denominator != 0)
        w = (alpha * np.maximum(d1, 0)).sum(axis=(1, 2), keepdims=True)
        cams.append(np.maximum((w * a).sum(axis=-1, keepdims=True), 0) / np.exp(float(s)))
    cam = np.concatenate(cams).astype(np.float32)
    return tf.image.resize(cam, x.shape[1:3], method="bilinear").numpy()[..., 0]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="nested GradientTapes")
@pytest.mark.parametrize("build", [_flat_model, _nested_model])
def test_gradcam_plus_plus_equals_the_papers_formula_with_nested_tapes(build):
    keras.utils.set_random_seed(7)
    model, layer, split = build()
    x = _images(3)
    result = explain(model, x, method="gradcam_plus_plus", batch_size=2)
    assert result.extras["layer"] == layer
    reference = _reference_gradcam_plus_plus(split, x)
    assert reference.max() > 0
    _assert_close(result.maps, reference, rtol=1e-5)
    # Not Grad-CAM under another name: the maps differ.
    gradcam = compute_saliency(model, x, method="gradcam")
    assert not np.allclose(gradcam / gradcam.max(), result.maps / result.maps.max(), atol=1e-2)


def test_gradcam_plus_plus_equals_a_numpy_reference_under_every_backend():
    """The paper's eq. 19 (Y = exp(S), so the n-th derivative of Y is exp(S) g**n), in numpy on
    the gradients of the hand-split model taken with the backend's own autodiff."""
    import tensorflow as tf

    keras.utils.set_random_seed(8)
    model, _, split = _sequential_model()
    x = _images(3)
    cams = []
    for i in range(len(x)):
        a, rest = split(x[i : i + 1])
        cls = int(to_numpy(rest(a)).argmax(1)[0])
        g = reference_gradient(lambda t, rest=rest, cls=cls: rest(t)[0, cls], to_numpy(a))
        a = to_numpy(a).astype(np.float64)
        g = g.astype(np.float64)
        denominator = 2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3
        alpha = np.divide(g**2, denominator, out=np.zeros_like(g), where=denominator != 0)
        w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
        cams.append(np.maximum((w * a).sum(axis=-1, keepdims=True), 0))
    reference = tf.image.resize(np.concatenate(cams).astype(np.float32), SHAPE[:2]).numpy()
    maps = compute_saliency(model, x, method="gradcam_plus_plus")
    _assert_close(maps, reference[..., 0], rtol=1e-5)


def test_gradcam_bad_layer_lists_candidates():
    model, _, _ = _nested_model()
    with pytest.raises(ValueError, match=r"`layer`.*'nope'.*backbone/c2"):
        compute_saliency(model, _images(2), method="gradcam", layer="nope")
    with pytest.raises(ValueError, match=r"`layer`.*'head' has no 4-D.*backbone/c1"):
        compute_saliency(model, _images(2), method="gradcam", layer="head")


def test_gradcam_on_a_subclassed_model_finds_its_last_conv_layer():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(2, 3, name="first")
            self.conv2 = layers.Conv2D(2, 3, name="second")
            self.pool = layers.MaxPooling2D(name="pool")
            self.head = layers.Dense(2)

        def call(self, x):
            return self.head(layers.Flatten()(self.pool(self.conv2(self.conv(x)))))

    net = Net()
    result = explain(net, _images(2), method="gradcam")
    assert result.extras["layer"] == "second"  # the trailing pooling layer passed over
    assert result.maps.shape == (2, *SHAPE[:2])
    with pytest.raises(ValueError, match=r"no layer named 'nope'.*\['first', 'second', 'pool'\]"):
        compute_saliency(net, _images(2), method="gradcam", layer="nope")


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "method, options, error, match",
    [
        ("smoothgrad", {"samples": 0}, ValueError, r"option `samples` of method='smoothgrad'.*0"),
        ("smoothgrad", {"samples": 2.5}, TypeError, "option `samples`"),
        ("smoothgrad", {"noise": -0.1}, ValueError, "option `noise`"),
        ("smoothgrad", {"noise": "0.1"}, TypeError, "option `noise`"),
        ("smoothgrad", {"seed": -1}, ValueError, "option `seed`"),
        ("smoothgrad", {"steps": 3}, TypeError, r"Unknown option.*'steps'.*samples"),
        ("integrated_gradients", {"steps": 0}, ValueError, "option `steps`"),
        ("integrated_gradients", {"baseline": "mean"}, ValueError, "option `baseline`"),
        ("integrated_gradients", {"baseline": {}}, TypeError, "option `baseline`"),
        ("integrated_gradients", {"baseline": float("nan")}, ValueError, "option `baseline`"),
        ("gradcam", {"layer": 3}, TypeError, "option `layer`"),
        ("vargrad", {"noise": -1.0}, ValueError, r"option `noise` of method='vargrad'"),
        ("smoothgrad_squared", {"seed": 1.5}, TypeError, "option `seed` of method='smoothg"),
        ("gradcam_plus_plus", {"layer": ""}, ValueError, "option `layer` of method='gradcam_p"),
        ("gradcam", {"samples": 3}, TypeError, r"Unknown option.*'samples'.*layer"),
        ("vanilla", {"noise": 0.1}, TypeError, "Unknown option.*'noise'"),
    ],
)
def test_bad_options_fail_at_init_naming_the_option(method, options, error, match):
    with pytest.raises(error, match=match):
        Explainer(method, **options)


def test_baseline_of_the_wrong_shape_fails_at_bind(conv_net):
    explainer = Explainer("integrated_gradients", baseline=np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"option `baseline`.*\(4, 4, 3\)"):
        explainer.bind(conv_net, SHAPE)


# ------------------------------------------------------------------ contract over every method


@pytest.mark.parametrize("method", sorted(methods.METHODS))
def test_every_method_contract(conv_net, method):
    fast = {"integrated_gradients": {"steps": 4}}
    fast.update({m: {"samples": 3} for m in ("smoothgrad", "smoothgrad_squared", "vargrad")})
    x = _images(3)
    explainer = Explainer(method, batch_size=2, **fast.get(method, {})).bind(conv_net, SHAPE)
    first, second = explainer.explain(x), explainer.explain(x)
    maps = first.maps
    assert maps.shape == x.shape[:3] and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and np.all(maps >= 0) and maps.max() > 0
    assert first.attributions.dtype == np.float32 and first.attributions.shape[:3] == x.shape[:3]
    np.testing.assert_array_equal(second.maps, maps)
    assert explainer.trace_count == 1


def test_monitor_logs_the_relative_completeness_gap_of_integrated_gradients(tmp_path):
    """The callback's saliency_completeness_gap equals |gap| / |f(x) - f(x')| from explain()."""
    from keras_saliency_monitor import SaliencyMonitor
    from keras_saliency_monitor.attribution.explain import explain as explain_once

    from .helpers import tiny_cnn, tiny_data

    x, y = tiny_data()
    model = tiny_cnn()
    monitor = SaliencyMonitor(
        tmp_path, (x, y), num_probes=4, method="integrated_gradients", steps=16, background=False
    )
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
    ref = explain_once(model, monitor.probes.x, method="integrated_gradients", steps=16).extras
    expected = np.mean(np.abs(ref["completeness_gap"]) / np.abs(ref["score_delta"]))
    np.testing.assert_allclose(history.history["saliency_completeness_gap"][0], expected, rtol=1e-4)

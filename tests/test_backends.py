"""Every Keras backend: exact maps, a fit with the monitor, traced once, events without TensorFlow.

These tests run under whatever ``KERAS_BACKEND`` is set (CI runs this file under tensorflow, jax
and torch). Their references are independent of the package: numpy arithmetic written out here
(identical across backends, so the same weights give the same maps under each), and the active
backend's own autodiff (``tf.GradientTape``, ``jax.grad``, ``torch.autograd``) through
:func:`reference_gradient`.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

from keras_saliency_monitor import SaliencyMonitor, compute_attributions, compute_saliency
from keras_saliency_monitor.attribution.explain import Explainer, explain
from keras_saliency_monitor.monitor.callback import GRID_TAG

from .helpers import read_images, read_scalars, tiny_data

BACKEND = keras.backend.backend()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_gradient(score_fn, x):
    """d score_fn(x_i) / d x_i for each image alone, with the active backend's own autodiff.

    ``score_fn`` maps a backend tensor (1, H, W, C) to a scalar tensor.
    """
    out = []
    for i in range(len(x)):
        xi = np.asarray(x[i : i + 1], np.float32)
        if BACKEND == "tensorflow":
            import tensorflow as tf

            t = tf.constant(xi)
            with tf.GradientTape() as tape:
                tape.watch(t)
                score = score_fn(t)
            g = tape.gradient(score, t).numpy()
        elif BACKEND == "jax":
            import jax

            g = np.asarray(jax.grad(lambda t: score_fn(t))(xi))
        else:
            import torch

            t = torch.tensor(xi, requires_grad=True)
            (g,) = torch.autograd.grad(score_fn(t), [t])
            g = g.numpy()
        out.append(g[0])
    return np.stack(out)


def to_numpy(tensor):
    if BACKEND == "torch":
        return tensor.detach().cpu().numpy()
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def assert_close(a, b, rtol=1e-4):
    scale = np.max(np.abs(b))
    assert scale > 0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------ same weights, numpy reference

SIZE, K, CLASSES = 6, 4, 3


def _fixed_weights():
    rng = np.random.default_rng(42)
    return [
        rng.normal(0, 0.5, (1, 1, 3, K)).astype("float32"),  # 1x1 conv kernel
        rng.normal(0, 0.1, (K,)).astype("float32"),
        rng.normal(0, 0.3, (SIZE * SIZE * K, CLASSES)).astype("float32"),
        rng.normal(0, 0.1, (CLASSES,)).astype("float32"),
    ]


def _fixed_model():
    """Conv2D 1x1 (tanh) -> Flatten -> Dense softmax, with weights from a seeded numpy RNG."""
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            layers.Conv2D(K, 1, activation="tanh", name="conv"),
            layers.Flatten(),
            layers.Dense(CLASSES, activation="softmax", name="head"),
        ]
    )
    model.set_weights(_fixed_weights())
    return model


def _numpy_forward(x):
    """(hidden (N, H, W, K), logits (N, CLASSES)) written out in numpy, float64."""
    k, b, w, c = (v.astype(np.float64) for v in _fixed_weights())
    h = np.tanh(x.astype(np.float64) @ k[0, 0] + b)
    return h, h.reshape(len(x), -1) @ w + c


def _numpy_gradient(x, classes):
    """d logit_class / d x, by the chain rule: (W[:, c] * (1 - h**2)) @ K^T per pixel."""
    k, _, w, _ = (v.astype(np.float64) for v in _fixed_weights())
    h, _ = _numpy_forward(x)
    dh = w[:, classes].T.reshape(len(x), SIZE, SIZE, K) * (1.0 - h**2)
    return dh @ k[0, 0].T


def _images(n=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")


def test_same_weights_same_maps_as_numpy_chain_rule():
    model, x = _fixed_model(), _images()
    _, logits = _numpy_forward(x)
    classes = logits.argmax(1)
    result = explain(model, x)
    np.testing.assert_array_equal(result.classes, classes)
    np.testing.assert_allclose(result.logits, logits, rtol=1e-5, atol=1e-5)
    grads = _numpy_gradient(x, classes)
    assert_close(result.attributions, grads, rtol=1e-5)
    assert_close(result.maps, np.abs(grads).max(-1), rtol=1e-5)
    # gradient x input, and integrated gradients from the same numpy gradient (midpoint rule).
    assert_close(compute_attributions(model, x, method="gradient_x_input"), grads * x, 1e-5)
    steps = 8
    path = [_numpy_gradient(x * (k + 0.5) / steps, classes) for k in range(steps)]
    ig = compute_attributions(model, x, method="integrated_gradients", steps=steps)
    assert_close(ig, x * np.mean(path, axis=0), rtol=1e-4)


def test_gradcam_same_weights_as_numpy():
    model, x = _fixed_model(), _images()
    h, logits = _numpy_forward(x)
    classes = logits.argmax(1)
    w = _fixed_weights()[2].astype(np.float64)
    dlogit_dh = w[:, classes].T.reshape(len(x), SIZE, SIZE, K)
    alpha = dlogit_dh.mean(axis=(1, 2))  # (N, K)
    cam = np.maximum(np.einsum("nhwk,nk->nhw", h, alpha), 0.0)  # same size: no resize
    result = explain(model, x, method="gradcam")
    assert result.extras["layer"] == "conv"
    assert_close(result.maps, cam, rtol=1e-4)


# ------------------------------------------------------------------ this backend's own autodiff


def _conv_net(seed=3):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(6, 3, activation="tanh", name="c1")(inp)
    h = layers.Conv2D(5, 3, activation="relu", name="c2")(h)
    h = layers.GlobalAveragePooling2D()(h)
    z = layers.Dense(4, name="logits")(h)
    model = keras.Model(inp, layers.Softmax()(z))
    return model, keras.Model(inp, z)


def test_maps_equal_this_backends_autodiff():
    model, logit_model = _conv_net()
    x = np.random.default_rng(1).normal(size=(5, 8, 8, 3)).astype("float32")
    classes = to_numpy(logit_model(x, training=False)).argmax(1)

    ref = np.stack(
        [
            reference_gradient(lambda t, c=int(c): logit_model(t, training=False)[0, c], xi[None])[
                0
            ]
            for xi, c in zip(x, classes)
        ]
    )
    result = explain(model, x, batch_size=2)  # chunks of 2, 2, 1
    np.testing.assert_array_equal(result.classes, classes)
    assert_close(result.attributions, ref)
    assert_close(compute_saliency(model, x), np.abs(ref).max(-1))


# ------------------------------------------------------------------ the callback under this backend


def _tiny_cnn():
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            layers.Conv2D(4, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("method", ["vanilla", "smoothgrad", "gradcam"])
def test_fit_with_monitor_logs_every_epoch_traced_once(tmp_path, method):
    x, y = tiny_data(n=24)
    model = _tiny_cnn()
    options = {"samples": 3} if method == "smoothgrad" else {}
    monitor = SaliencyMonitor(
        tmp_path, (x, y), num_probes=10, method=method, batch_size=4, **options
    )
    history = model.fit(x, y, epochs=3, batch_size=12, verbose=0, callbacks=[monitor])
    assert not monitor.faults, monitor.faults
    assert monitor.explainer.trace_count == 1  # chunks 4, 4, 2 and three epochs: one trace
    run = os.path.join(tmp_path, "saliency")
    assert sorted(read_images(run, GRID_TAG)) == [0, 1, 2]
    logged = read_scalars(run, "saliency/concentration")
    assert [logged[e] for e in range(3)] == pytest.approx(
        history.history["saliency_concentration"], rel=1e-6
    )
    # The last epoch's maps are those of the final weights.
    fresh = compute_saliency(model, monitor.probes.x, method=method, **options)
    last = monitor.explainer.explain(monitor.probes.x).maps
    assert_close(last, fresh, rtol=1e-5)


def test_weight_updates_do_not_retrace_and_are_seen():
    model, _ = _conv_net()
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    explainer = Explainer(batch_size=2).bind(model, x.shape[1:], sample=x)
    before = explainer.explain(x).maps
    model.set_weights([w * 1.5 for w in model.get_weights()])
    after = explainer.explain(x).maps
    assert explainer.trace_count == 1
    assert not np.allclose(before, after)
    assert_close(after, Explainer().bind(model, x.shape[1:], sample=x).explain(x).maps, 1e-5)


def test_event_writing_does_not_import_tensorflow(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from keras_saliency_monitor.monitor import probes\n"
        "from keras_saliency_monitor.drawing import render\n"
        "from keras_saliency_monitor.signals import metrics\n"
        "from keras_saliency_monitor.storage.writer import EventWriter\n"
        "w = EventWriter(sys.argv[1]); w.add_scalar('a', 1.0, 0)\n"
        "w.add_images('g', np.zeros((4, 4, 3), np.uint8), 0); w.flush()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert read_scalars(str(tmp_path), "a") == {0: 1.0}

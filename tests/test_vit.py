"""A small vision transformer built from Keras layers: every method works on it, and Grad-CAM
reads a named block's tokens on the patch grid (class token dropped). Runs under every backend
(KERAS_BACKEND=jax / torch in CI)."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

from keras_saliency_monitor import compute_saliency, sanity_check
from keras_saliency_monitor.attribution import methods
from keras_saliency_monitor.attribution.explain import Explainer, explain

from .test_backends import reference_gradient, to_numpy

SIZE, PATCH, DIM = 16, 4, 16
SHAPE = (SIZE, SIZE, 3)
GRID = SIZE // PATCH  # 4 x 4 patches


class ClassToken(layers.Layer):
    """Prepends a learned class token: (N, T, d) -> (N, 1 + T, d)."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="random_normal")

    def call(self, x):
        token = ops.broadcast_to(self.token, (ops.shape(x)[0], 1, ops.shape(x)[-1]))
        return ops.concatenate([ops.cast(token, x.dtype), x], axis=1)


class AddPosition(layers.Layer):
    """Adds a learned position embedding per token."""

    def build(self, input_shape):
        self.position = self.add_weight(
            shape=(1, *input_shape[1:]), initializer="random_normal", name="position"
        )

    def call(self, x):
        return x + self.position


class FirstToken(layers.Layer):
    """The class token's final state: (N, 1 + T, d) -> (N, d)."""

    def call(self, x):
        return x[:, 0]


def vit(head="class_token", blocks=2, seed=0):
    """Patch embedding (a strided Conv2D), [class token], position embedding, pre-norm
    transformer blocks (MultiHeadAttention, MLP), and a class-token or mean-pooled head. Returns
    the model and its layers by name, to run parts of it by hand."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(SHAPE)
    patches = layers.Conv2D(DIM, PATCH, strides=PATCH, name="patch_embed")(inp)
    h = layers.Reshape((GRID * GRID, DIM), name="tokens")(patches)
    if head == "class_token":
        h = ClassToken(name="class_token")(h)
    h = AddPosition(name="position")(h)
    for i in range(1, blocks + 1):
        a = layers.LayerNormalization(name=f"ln{i}a")(h)
        a = layers.MultiHeadAttention(2, DIM // 2, name=f"attention{i}")(a, a)
        h = layers.Add(name=f"residual{i}")([h, a])
        m = layers.LayerNormalization(name=f"ln{i}b")(h)
        m = layers.Dense(2 * DIM, activation="gelu", name=f"mlp{i}a")(m)
        m = layers.Dense(DIM, name=f"mlp{i}b")(m)
        h = layers.Add(name=f"block{i}")([h, m])
    h = layers.LayerNormalization(name="ln_final")(h)
    if head == "class_token":
        h = FirstToken(name="take_class_token")(h)
    else:
        h = layers.GlobalAveragePooling1D(name="pool")(h)
    out = layers.Dense(3, activation="softmax", name="head")(h)
    model = keras.Model(inp, out)
    return model, {layer.name: layer for layer in model.layers}


def _rest(parts, head, start, t):
    """The logits from block ``start``'s output ``t`` on, by hand (the layers, not the model)."""
    blocks = sum(1 for n in parts if n.startswith("block"))
    h = t
    for i in range(start + 1, blocks + 1):
        a = parts[f"ln{i}a"](h)
        h = parts[f"residual{i}"]([h, parts[f"attention{i}"](a, a, training=False)])
        m = parts[f"mlp{i}b"](parts[f"mlp{i}a"](parts[f"ln{i}b"](h)))
        h = parts[f"block{i}"]([h, m])
    h = parts["ln_final"](h)
    h = h[:, 0] if head == "class_token" else ops.mean(h, axis=1)
    return ops.matmul(h, parts["head"].kernel) + parts["head"].bias


def _images(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype("float32")


FAST = {
    "smoothgrad": {"samples": 3},
    "smoothgrad_squared": {"samples": 3},
    "vargrad": {"samples": 3},
    "integrated_gradients": {"steps": 4},
    "gradcam": {"layer": "block1"},
    "gradcam_plus_plus": {"layer": "block1"},
}


@pytest.mark.parametrize("head", ["class_token", "pooled"])
@pytest.mark.parametrize("method", sorted(methods.METHODS))
def test_every_method_works_on_a_vit(method, head):
    model, _ = vit(head)
    x = _images()
    explainer = Explainer(method, batch_size=2, **FAST.get(method, {})).bind(model, SHAPE)
    first, second = explainer.explain(x), explainer.explain(x)
    maps = first.maps
    assert maps.shape == x.shape[:3] and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and np.all(maps >= 0) and maps.max() > 0
    np.testing.assert_array_equal(second.maps, maps)
    assert explainer.trace_count == 1
    if method.startswith("gradcam"):
        assert first.extras["layer"] == "block1"
        assert first.extras["dropped_tokens"] == (1 if head == "class_token" else 0)


@pytest.mark.parametrize("head, layer", [("class_token", "block1"), ("pooled", "block2")])
def test_gradcam_reads_the_blocks_tokens_on_the_patch_grid(head, layer):
    """Against Grad-CAM written out here: the block's tokens from a sub-model, the rest of the
    network by hand, the backend's own autodiff, the class token dropped, tf.image.resize."""
    import tensorflow as tf  # installed under every backend; only its resize is used

    model, parts = vit(head)
    x = _images(4)
    start = int(layer[-1])
    trunk = keras.Model(model.inputs[0], parts[layer].output)
    cams = []
    for i in range(len(x)):
        tokens = to_numpy(trunk(x[i : i + 1], training=False))  # (1, [1 +] 16, DIM)
        logits = to_numpy(_rest(parts, head, start, ops.convert_to_tensor(tokens)))
        cls = int(logits.argmax(1)[0])
        g = reference_gradient(lambda t, c=cls: _rest(parts, head, start, t)[0, c], tokens)
        extra = 1 if head == "class_token" else 0
        a = tokens[:, extra:].reshape(1, GRID, GRID, DIM)
        g = g[:, extra:].reshape(1, GRID, GRID, DIM)
        alpha = g.mean(axis=(1, 2), keepdims=True)
        cams.append(np.maximum((alpha * a).sum(axis=-1, keepdims=True), 0))
    reference = tf.image.resize(np.concatenate(cams), SHAPE[:2], method="bilinear").numpy()
    result = explain(model, x, method="gradcam", layer=layer)
    assert reference.max() > 0
    scale = reference.max()
    np.testing.assert_allclose(result.maps, reference[..., 0], rtol=1e-4, atol=1e-4 * scale)


def test_gradcam_on_the_last_block_of_a_class_token_vit_says_why_the_map_is_empty():
    model, _ = vit("class_token")
    with pytest.warns(UserWarning, match="class token only.*Name an earlier block"):
        maps = compute_saliency(model, _images(), method="gradcam", layer="block2")
    assert maps.max() == 0


def test_gradcam_layer_choice_on_a_vit():
    model, _ = vit("class_token")
    # Automatically: the last 4-D layer, the patch embedding (tokens are read when named).
    assert Explainer("gradcam").bind(model, SHAPE).layer.name == "patch_embed"
    with pytest.raises(ValueError, match=r"'take_class_token' has no 4-D.*nor \(N, tokens, d\)"):
        compute_saliency(model, _images(), method="gradcam", layer="take_class_token")


def test_token_grid():
    assert methods.token_grid(16, (16, 16)) == (0, 4, 4)
    assert methods.token_grid(17, (16, 16)) == (1, 4, 4)
    assert methods.token_grid(18, (16, 16)) == (2, 4, 4)
    assert methods.token_grid(1 + 8, (16, 32)) == (1, 2, 4)
    with pytest.raises(ValueError, match=r"13 tokens, which are not a patch grid.*16x16"):
        methods.token_grid(13, (16, 16))


def test_vit_trains_with_the_monitor(tmp_path):
    from keras_saliency_monitor import SaliencyMonitor

    model, _ = vit("pooled")
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _images(24, seed=1), np.arange(24) % 3
    monitor = SaliencyMonitor(
        tmp_path, (x, y), num_probes=6, method="gradcam", layer="block2", background=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[monitor])
    assert monitor.faults == {}
    assert np.isfinite(history.history["saliency_concentration"]).all()
    # The sanity check waits for probe skill, which a ViT on noise never reaches; it is checked
    # on the ViT directly: the copy (custom layers too) and the cascade work.
    result = sanity_check(model, x[:4], "gradcam", layer="block1", blocks=3, warn=False)
    assert result.blocks[0] == ("head",) and np.isfinite(result.rank_correlation).all()

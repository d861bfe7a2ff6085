"""The stored data (store.py): written with EventWriter / the callback, read back through
TensorBoard's own data provider (open_logdir), compared with numbers computed independently."""

import json
import os

import numpy as np
import pytest

from keras_saliency_monitor.storage import store
from keras_saliency_monitor.storage.writer import EventWriter


def _write_synthetic(run_dir, maps_by_step, images, masks=None, encoding="sqrt8"):
    rng = np.random.default_rng(0)
    n = images.shape[0]
    with EventWriter(run_dir) as w:
        for i, (step, maps) in enumerate(sorted(maps_by_step.items())):
            if i == 0:
                blobs = store.encode_probe_set(
                    images,
                    indices=list(range(10, 10 + n)),
                    labels=[k % 2 for k in range(n)],
                    class_names=["cat", "dog"],
                    masks=masks,
                    method="vanilla",
                )
                w.add_blob_sequence(store.PROBE_SET_TAG, blobs, step, store.PLUGIN_NAME)
            blobs = store.encode_maps(
                maps,
                step=step,
                classes=[1] * n,
                confidences=rng.uniform(0, 1, n).tolist(),
                per_probe={"focus": np.r_[np.nan, np.ones(n - 1)]},
                encoding=encoding,
                max_side=1000,
            )
            w.add_blob_sequence(store.MAPS_TAG, blobs, step, store.PLUGIN_NAME)
            w.add_scalar("saliency/focus", 0.5 + step, step)
        w.add_text(store.ALARM_TAG, "alarm!", 2)


@pytest.mark.parametrize("encoding", store.ENCODINGS)
def test_round_trip_through_tensorboard_data_provider(tmp_path, encoding):
    rng = np.random.default_rng(1)
    n, h, w = 3, 20, 16
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    masks = rng.uniform(size=(n, h, w)) > 0.5
    maps_by_step = {
        s: rng.gamma(1.0, 1e-3 * (s + 1), (n, h, w)).astype(np.float32) for s in range(3)
    }
    _write_synthetic(str(tmp_path / "a" / "saliency"), maps_by_step, images, masks, encoding)

    provider, ctx, eid = store.open_logdir(str(tmp_path))
    assert store.saliency_runs(provider, ctx, eid) == ["a/saliency"]
    index = store.read_run(provider, ctx, eid, "a/saliency")
    json.dumps(index, allow_nan=False)  # JSON-able, no NaN
    assert index["steps"] == [0, 1, 2]
    ps = index["probe_set"]
    assert ps["num_probes"] == n and (ps["height"], ps["width"]) == (h, w)
    assert [p["probe"] for p in ps["probes"]] == [0, 1, 2]
    assert [p["index"] for p in ps["probes"]] == [10, 11, 12]
    assert [p["label_name"] for p in ps["probes"]] == ["cat", "dog", "cat"]
    assert index["scalars"]["focus"] == [[0, 0.5], [1, 1.5], [2, 2.5]]
    assert index["alarm"] == {"step": 2, "text": "alarm!"}
    epoch = index["epochs"]["1"]
    assert epoch["per_probe"]["focus"][0] is None and epoch["encoding"] == encoding
    assert epoch["flat"] == [False] * n and epoch["non_finite"] == [False] * n

    got = store.decode_images(store.read_probe_images(provider, ctx, eid, "a/saliency"), n)
    np.testing.assert_array_equal(got, images)
    got_masks = store.decode_masks(store.read_masks(provider, ctx, eid, "a/saliency"), n)
    np.testing.assert_array_equal(got_masks, masks)
    for step, maps in maps_by_step.items():
        png = store.read_maps(provider, ctx, eid, "a/saliency", step)
        decoded = store.decode_maps(png, index["epochs"][str(step)])
        peak = maps.max(axis=(1, 2), keepdims=True)
        q = maps / peak
        # Independent bound on the 8-bit rounding error: half a level in q (linear) or in sqrt(q).
        if encoding == "linear8":
            bound = peak * 0.5 / 255
        else:
            bound = peak * (2 * np.sqrt(q) * 0.5 / 255 + (0.5 / 255) ** 2)
        assert np.all(np.abs(decoded - maps) <= bound * 1.0001 + 1e-12)
    assert store.read_masks(provider, ctx, eid, "a/saliency") is not None
    with pytest.raises(KeyError):
        store.read_maps(provider, ctx, eid, "a/saliency", 7)
    assert store.peek_probe_set(str(tmp_path / "a" / "saliency"))["num_probes"] == n


def test_no_masks_non_finite_and_flat_maps(tmp_path):
    n, h, w = 3, 8, 8
    images = np.zeros((n, h, w, 3), np.uint8)
    maps = np.ones((n, h, w), np.float32)
    maps[0] = 0.00259 + 0.00011 * np.random.default_rng(0).uniform(size=(h, w))  # flat
    maps[1, 0, 0] = np.nan  # non-finite
    maps[2] = np.arange(h * w).reshape(h, w)  # not flat
    _write_synthetic(str(tmp_path / "saliency"), {0: maps}, images)
    provider, ctx, eid = store.open_logdir(str(tmp_path))
    (run,) = store.saliency_runs(provider, ctx, eid)
    assert run == "saliency"
    index = store.read_run(provider, ctx, eid, run)
    epoch = index["epochs"]["0"]
    assert epoch["flat"] == [True, False, False]
    assert epoch["non_finite"] == [False, True, False]
    assert epoch["scale"][1] == 0
    assert store.read_masks(provider, ctx, eid, run) is None
    decoded = store.decode_maps(store.read_maps(provider, ctx, eid, run, 0), epoch)
    assert np.all(decoded[1] == 0)


def test_downsample_keeps_block_means():
    maps = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    small = store.downsample_maps(maps, 3)
    expected = maps.reshape(2, 3, 2, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(small, expected)
    assert store.downsample_maps(maps, 6) is not None and store.downsample_maps(maps, 6).shape == (
        2,
        6,
        4,
    )


def test_blob_sequence_is_not_in_the_images_dashboard(tmp_path):
    with EventWriter(str(tmp_path)) as w:
        w.add_blob_sequence("x/y", [b"1", b""], 0, "saliency")
    provider, ctx, eid = store.open_logdir(str(tmp_path))
    assert provider.list_blob_sequences(ctx, experiment_id=eid, plugin_name="images") == {}
    listing = provider.list_blob_sequences(ctx, experiment_id=eid, plugin_name="saliency")
    assert listing["."]["x/y"].max_length == 2
    assert os.path.isdir(tmp_path)


# --------------------------------------------------------------------------------------------------
# The callback's events, from a real fit
# --------------------------------------------------------------------------------------------------


def test_real_fit_round_trip(tmp_path):
    """Two fits of a tiny model into one run: probe_set once per fit, maps every logged epoch
    decoding to the monitor's own maps within the 8-bit quantisation error, numbers and classes
    as the callback computed them, and no per-probe image cards in the Images dashboard."""
    import keras

    from keras_saliency_monitor import SaliencyMonitor, compute_saliency

    from .helpers import tiny_cnn, tiny_data

    x, y = tiny_data()
    model = tiny_cnn()
    seen = {}

    class Grab(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probs = self.model.predict(monitor.probes.x, verbose=0)
            seen[epoch] = (compute_saliency(self.model, monitor.probes.x), probs)

    masks = np.zeros(x.shape[:3], np.float32)
    masks[:, 2:8, 2:8] = 1
    monitor = SaliencyMonitor(
        tmp_path,
        (x, y),
        num_probes=6,
        masks=masks,
        class_names=["a", "b", "c"],
        alarm_threshold=None,
    )
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[monitor, Grab()])
    model.fit(x, y, epochs=5, initial_epoch=3, batch_size=16, verbose=0, callbacks=[monitor])

    run_dir = os.path.join(tmp_path, "saliency")
    provider, ctx, eid = store.open_logdir(str(tmp_path))
    assert store.saliency_runs(provider, ctx, eid) == ["saliency"]
    index = store.read_run(provider, ctx, eid, "saliency")
    assert index["steps"] == [0, 1, 2, 3, 4]
    probe_set_steps = [
        d.step
        for d in provider.read_blob_sequences(
            ctx, experiment_id=eid, plugin_name="saliency", downsample=100
        )["saliency"][store.PROBE_SET_TAG]
    ]
    assert probe_set_steps == [0, 3]  # once per fit, at its first logged step
    ps = index["probe_set"]
    assert ps["num_probes"] == 6 and ps["method"] == "vanilla" and ps["regression"] is False
    assert [p["probe"] for p in ps["probes"]] == list(range(6))
    assert [p["index"] for p in ps["probes"]] == [int(i) for i in monitor.probes.indices]
    assert [p["label"] for p in ps["probes"]] == [int(c) for c in monitor.probes.labels]
    # The dashboard's chart reference lines: chance levels and the alarm's thresholds.
    assert ps["chance"]["focus_lift"] == 1.0 and ps["chance"]["border_ratio"] == 1.0
    assert "focus_lift" not in ps["thresholds"]  # alarm_threshold=None switches it off
    assert ps["thresholds"]["border_ratio"] == monitor.alarm.border_threshold
    assert ps["thresholds"]["shortcut"] == 1.0
    images = store.decode_images(store.read_probe_images(provider, ctx, eid, "saliency"), 6)
    np.testing.assert_array_equal(images, monitor._log.display)
    got_masks = store.decode_masks(store.read_masks(provider, ctx, eid, "saliency"), 6)
    np.testing.assert_array_equal(got_masks, monitor.probes.masks > 0.5)

    for epoch, (maps, probs) in seen.items():
        info = index["epochs"][str(epoch)]
        decoded = store.decode_maps(store.read_maps(provider, ctx, eid, "saliency", epoch), info)
        assert decoded.shape == maps.shape  # 12x12 maps are stored at full size
        peak = maps.max(axis=(1, 2), keepdims=True)
        # sqrt8: |scale * (r/255)^2 - m| <= peak * (2 sqrt(m/peak) e + e^2), e = 0.5/255.
        e = 0.5 / 255
        bound = peak * (2 * np.sqrt(maps / peak) * e + e * e) + 1e-6 * peak
        assert np.all(np.abs(decoded - maps) <= bound)
        assert info["classes"] == np.argmax(probs, 1).tolist()
        np.testing.assert_allclose(info["confidences"], probs.max(1), rtol=1e-4)
        focus = info["per_probe"]["focus"]
        expected = (maps * masks[monitor.probes.indices]).sum((1, 2)) / maps.sum((1, 2))
        np.testing.assert_allclose(focus, expected, rtol=1e-4)
        assert info["flat"] == [False] * 6 and info["non_finite"] == [False] * 6
        assert info["outputs"] is None
    history_focus = [monitor.history[e]["saliency_focus"] for e in range(5)]
    np.testing.assert_allclose([v for _, v in index["scalars"]["focus"]], history_focus, rtol=1e-6)

    # The Images dashboard holds only the grid; our data is under the plugin "saliency".
    images_tags = provider.list_blob_sequences(ctx, experiment_id=eid, plugin_name="images")
    assert list(images_tags["saliency"]) == ["saliency/overlays"]
    assert store.peek_probe_set(run_dir)["num_probes"] == 6


def test_flat_map_is_flagged_and_marked_in_the_grid(tmp_path):
    """A model whose saliency is constant: every map is flat; the JSON says so and the grid
    shows the FLAT MAP frame colour."""
    import keras

    from keras_saliency_monitor import SaliencyMonitor
    from keras_saliency_monitor.drawing.render import FLAT_COLOR
    from keras_saliency_monitor.monitor.callback import GRID_TAG

    from .helpers import read_images, tiny_data

    x, y = tiny_data()
    # Score = mean of the input: its gradient is the same at every pixel.
    model = keras.Sequential(
        [keras.Input((12, 12, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=4, background=False)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
    provider, ctx, eid = store.open_logdir(str(tmp_path))
    info = store.read_run(provider, ctx, eid, "saliency")["epochs"]["0"]
    assert info["flat"] == [True] * 4
    (grid,) = read_images(os.path.join(tmp_path, "saliency"), GRID_TAG)[0]
    frame = np.all(np.abs(grid.astype(int) - FLAT_COLOR) < 40, axis=-1)
    assert frame.sum() > 4 * 4 * 20  # a frame around each of the 4 overlays


def test_regression_model_stores_outputs_and_no_confidences(tmp_path):
    import keras

    from keras_saliency_monitor import SaliencyMonitor

    from .helpers import tiny_data

    x, _ = tiny_data()
    target = x.mean(axis=(1, 2, 3))
    model = keras.Sequential(
        [keras.Input((12, 12, 3)), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    monitor = SaliencyMonitor(tmp_path, (x, target), num_probes=4, background=False)
    model.fit(x, target, epochs=1, verbose=0, callbacks=[monitor])
    provider, ctx, eid = store.open_logdir(str(tmp_path))
    index = store.read_run(provider, ctx, eid, "saliency")
    assert index["probe_set"]["regression"] is True
    info = index["epochs"]["0"]
    assert info["confidences"] is None
    expected = model.predict(monitor.probes.x, verbose=0)[:, 0]
    np.testing.assert_allclose(info["outputs"], expected, rtol=1e-4, atol=1e-6)


def test_large_maps_are_stored_as_block_means_within_quantisation():
    rng = np.random.default_rng(3)
    maps = rng.gamma(1.0, 1.0, (2, 224, 224)).astype(np.float32)
    blobs = store.encode_maps(maps, step=0, classes=[0, 0])  # default: at most 112 px a side
    info = json.loads(blobs[0])
    assert (info["map_height"], info["map_width"]) == (112, 112)
    decoded = store.decode_maps(blobs[1], info)
    means = maps.astype(np.float64).reshape(2, 112, 2, 112, 2).mean(axis=(2, 4))
    peak = means.max(axis=(1, 2), keepdims=True)
    e = 0.5 / 255
    bound = peak * (2 * np.sqrt(means / peak) * e + e * e) + 1e-6 * peak
    assert np.all(np.abs(decoded - means) <= bound)


def test_group_epochs_by_fingerprint_then_by_step():
    sets = {0: {"fingerprint": "a"}, 2: {"fingerprint": "b"}, 4: {"fingerprint": "a"}}
    epochs = {s: {"probe_set": fp} for s, fp in enumerate("aabbaz")}  # "z": its set was lost
    assert store.group_epochs(sets, epochs) == {2: [2, 3], 4: [0, 1, 4]}
    # Written before fingerprints: an epoch goes with the latest probe set at or before it.
    assert store.group_epochs({0: {}, 3: {}}, {s: {} for s in range(5)}) == {
        0: [0, 1, 2],
        3: [3, 4],
    }
    assert store.group_epochs({}, {0: {}}) == {}


@pytest.mark.parametrize("second_seed, groups", [(0, [[0, 1, 2, 3]]), (1, [[0, 1], [2, 3]])])
def test_probe_sets_written_before_fingerprints_group_by_their_blobs(tmp_path, second_seed, groups):
    from .helpers import write_stored_run

    run_dir = str(tmp_path / "saliency")
    write_stored_run(run_dir, [0, 1], seed=0)  # no fingerprint in either probe set
    write_stored_run(run_dir, [2, 3], seed=second_seed)
    provider, ctx, eid = store.open_logdir(run_dir)
    index = store.read_run(provider, ctx, eid, ".")
    assert [g["steps"] for g in index["probe_sets"]] == groups
    assert index["steps"] == groups[-1]

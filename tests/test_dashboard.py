"""The SALIENCY dashboard's backend, served by a real `tensorboard` process on 127.0.0.1.

The log dir comes from real short fits with the real SaliencyMonitor: ``clean`` (12 epochs, more
than TensorBoard's default reservoir of 10, with object masks), ``shortcut`` (3 epochs, no masks)
and ``dead`` (2 epochs of a model whose ReLUs never fire, so every map is all zero: flat; its
probes have no labels).
TensorBoard is started with a plain command line, as a user would, so the plugin (and its flag
that keeps every epoch) comes from the package's entry point alone.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

import keras
import matplotlib
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_saliency_monitor import SaliencyMonitor
from keras_saliency_monitor.storage import store
from keras_saliency_monitor.views import launcher
from keras_saliency_monitor.views.dashboard import plugin

from .helpers import tiny_cnn, tiny_data

EPOCHS = {"clean": 12, "shortcut": 3, "dead": 2}
NUM_PROBES = 6
CLASS_NAMES = ["top", "middle", "bottom"]
RUNS = {name: f"{name}/saliency" for name in EPOCHS}
_TRAINED = {}


def train_dashboard_runs(tmp_path_factory):
    """Trains the three runs once per test session; returns ``{"logdir", "models", "x", ...}``."""
    if "logdir" not in _TRAINED:
        logdir = tmp_path_factory.mktemp("dashboard_runs")
        x, y = tiny_data()
        masks = np.zeros(x.shape[:3], bool)
        for i, label in enumerate(y):  # tiny_data's bright square
            r = 1 + 3 * label
            masks[i, r : r + 3, 2:5] = True
        models, monitors = {}, {}
        for name, epochs in EPOCHS.items():
            keras.utils.set_random_seed(0)
            model = tiny_cnn()
            if name == "dead":
                # A zero kernel and a negative bias: the ReLUs never fire, no gradient reaches
                # the input or the kernel, so every map stays all zero.
                kernel, bias = model.layers[0].get_weights()
                model.layers[0].set_weights([np.zeros_like(kernel), -np.ones_like(bias)])
            monitor = SaliencyMonitor(
                logdir / name, x if name == "dead" else (x, y),  # dead: no labels either
                num_probes=NUM_PROBES, class_names=CLASS_NAMES,
                masks=masks if name == "clean" else None,
            )  # fmt: skip
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="keras")
                warnings.filterwarnings("ignore", message="Saliency alarm")  # drawn on the charts
                model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[monitor])
            models[name], monitors[name] = model, monitor
        _TRAINED.update(logdir=str(logdir), models=models, monitors=monitors, x=x, masks=masks)
    return _TRAINED


def write_epochs(
    run_dir,
    steps,
    *,
    num_probes=4,
    side=16,
    class_names=("a", "b"),
    labels=None,
    bad_json=(),
    bad_png=(),
    bad_images=False,
    alarm=None,
    seed=0,
):
    """Writes epochs ``steps`` of one run with the monitor's real writer and encoders (a probe
    set with the first step), random maps; ``bad_json``/``bad_png`` steps get a corrupt JSON or
    maps PNG blob, ``bad_images`` a corrupt probe-images PNG. Returns the flush time of each
    step (``time.monotonic()``)."""
    from keras_saliency_monitor.storage.writer import EventWriter

    rng = np.random.default_rng(seed)
    writer = EventWriter(run_dir, fsync=False)
    written = {}
    fresh = not os.path.isdir(run_dir) or not os.listdir(run_dir)  # first call: the probe set
    labels = [k % len(class_names) for k in range(num_probes)] if labels is None else labels
    try:
        for i, step in enumerate(steps):
            if i == 0 and fresh:
                images = rng.integers(0, 255, (num_probes, side, side, 3), dtype=np.uint8)
                blobs = store.encode_probe_set(
                    images,
                    indices=list(range(num_probes)),
                    labels=labels,
                    class_names=list(class_names),
                )
                if bad_images:
                    blobs[1] = b"\x89PNG not really"
                writer.add_blob_sequence(store.PROBE_SET_TAG, blobs, step, store.PLUGIN_NAME)
            maps = rng.random((num_probes, side, side)).astype(np.float32)
            blobs = store.encode_maps(
                maps,
                step=step,
                classes=labels,
                confidences=[0.5] * num_probes,
                per_probe={"focus": rng.random(num_probes)},
            )
            if step in bad_json:
                blobs[0] = b"{not json"
            if step in bad_png:
                blobs[1] = b"\x89PNG\r\n\x1a\n broken"
            writer.add_blob_sequence(store.MAPS_TAG, blobs, step, store.PLUGIN_NAME)
            writer.add_scalar("saliency/focus", float(rng.random()), step)
            if alarm is not None and step == alarm[0]:
                writer.add_text(store.ALARM_TAG, alarm[1], step)
            writer.flush()
            written[step] = time.monotonic()
    finally:
        writer.close()
    return written


def start_tensorboard(logdir, *extra_flags):
    """A plain ``tensorboard --logdir`` on a free loopback port (no flag of ours)."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", "0",
               "--host", "127.0.0.1", *extra_flags]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, start_new_session=True,
    )  # fmt: skip
    handle = launcher.TensorBoardHandle(process, str(logdir), "127.0.0.1")
    try:
        handle.wait_until_ready(120)
    except BaseException:
        handle.stop()
        raise
    return handle


def get(board, route, expect=200, **query):
    """GET ``route`` (relative to the board's URL); returns (body bytes, content type)."""
    url = board.url + route + ("?" + urllib.parse.urlencode(query) if query else "")
    assert url.startswith("http://127.0.0.1:")  # loopback only
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status, body, kind = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        status, body, kind = err.code, err.read(), err.headers["Content-Type"]
    assert status == expect, (route, query, status, body[:300])
    return body, kind


def wait_for_run(board, run, epochs, timeout=90):
    """The run's index once TensorBoard has loaded all ``epochs`` steps (it loads in the
    background)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = json.loads(get(board, "data/plugin/saliency/runs")[0])
        if run in runs:
            index = json.loads(get(board, "data/plugin/saliency/run", run=run)[0])
            if len(index["steps"]) >= epochs and index["probe_set"] is not None:
                return index
        if time.monotonic() > deadline:
            raise AssertionError(f"{run} not fully loaded after {timeout} s: {board.output()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_dashboard_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def board(trained):
    handle = start_tensorboard(trained["logdir"])
    try:
        yield handle
    finally:
        handle.stop()


def _png(body):
    with Image.open(io.BytesIO(body)) as image:
        return np.asarray(image)


def test_plugins_listing_enables_saliency(board, trained):
    wait_for_run(board, RUNS["clean"], EPOCHS["clean"])
    listing = json.loads(get(board, "data/plugins_listing")[0])
    entry = listing["saliency"]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Saliency"
    # TensorBoard's reload reaches the page (experimental.DataReloaded): its button stays on.
    assert entry["disable_reload"] is False
    assert entry["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": "/data/plugin/saliency/static/index.js",
    }


def test_every_logged_epoch_is_served(board, trained):
    # clean has 12 logged epochs, more than TensorBoard's default reservoir (10) for a plugin it
    # does not know: the loader's samples_per_plugin default keeps all of them.
    runs = json.loads(get(board, "data/plugin/saliency/runs")[0])
    assert sorted(runs) == sorted(RUNS.values())
    for name, epochs in EPOCHS.items():
        index = wait_for_run(board, RUNS[name], epochs)
        assert index["steps"] == list(range(epochs))
        assert sorted(index["epochs"]) == sorted(str(s) for s in range(epochs))
        ps = index["probe_set"]
        assert ps["num_probes"] == NUM_PROBES and ps["class_names"] == CLASS_NAMES
        assert [p["probe"] for p in ps["probes"]] == list(range(NUM_PROBES))  # 0-based
        for step in index["steps"]:
            body, kind = get(board, "data/plugin/saliency/maps", run=RUNS[name], step=step)
            assert kind == "image/png"
            info = index["epochs"][str(step)]
            assert _png(body).shape == (NUM_PROBES * info["map_height"], info["map_width"])
    clean = wait_for_run(board, RUNS["clean"], EPOCHS["clean"])
    assert set(clean["scalars"]) >= {"focus", "focus_lift"}
    assert [s for s, _ in clean["scalars"]["focus_lift"]] == list(range(EPOCHS["clean"]))


def _logits_and_maps(model, images):
    """Pre-softmax logits and vanilla maps of the predicted class, by GradientTape, computed here
    from the layers' weights (tiny_cnn: Conv2D(relu) -> Flatten -> Dense(softmax))."""
    conv, _, dense = model.layers
    kernel, bias = (tf.constant(w) for w in dense.get_weights())
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        features = tf.reshape(conv(x), (x.shape[0], -1))
        logits = tf.matmul(features, kernel) + bias
        predicted = tf.argmax(logits, axis=1)
        score = tf.reduce_sum(tf.gather(logits, predicted, axis=1, batch_dims=1))
    grads = tape.gradient(score, x)
    return logits.numpy(), tf.reduce_max(tf.abs(grads), axis=-1).numpy()


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the expected gradient is a tf.GradientTape"
)
def test_last_epoch_maps_and_classes_match_an_independent_gradient(board, trained):
    # The fit ends right after the last epoch's maps were computed, so the final weights are the
    # ones behind the last logged step.
    name = "clean"
    index = wait_for_run(board, RUNS[name], EPOCHS[name])
    indices = [p["index"] for p in index["probe_set"]["probes"]]
    assert indices == [int(i) for i in trained["monitors"][name].probes.indices]
    logits, expected = _logits_and_maps(trained["models"][name], trained["x"][indices])
    step = index["steps"][-1]
    info = index["epochs"][str(step)]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert info["classes"] == logits.argmax(1).tolist()
    np.testing.assert_allclose(info["confidences"], probs.max(1), rtol=1e-4, atol=1e-6)
    body, _ = get(board, "data/plugin/saliency/maps", run=RUNS[name], step=step)
    # The storage contract's decoding, written out here: q = pixel / 255, value = scale * q**2
    # (sqrt8) or scale * q (linear8).
    h, w = info["map_height"], info["map_width"]
    assert (h, w) == expected.shape[1:]  # 12 x 12: stored without downsampling
    q = _png(body).reshape(NUM_PROBES, h, w).astype(np.float64) / 255
    scale = np.asarray(info["scale"], np.float64)[:, None, None]
    decoded = scale * (q**2 if info["encoding"] == "sqrt8" else q)
    np.testing.assert_allclose(scale[:, 0, 0], expected.reshape(NUM_PROBES, -1).max(1), rtol=1e-5)
    # One 8-bit step of sqrt(value / scale) moves the value by at most scale * (1/255 + 1/255**2).
    assert np.all(np.abs(decoded - expected) <= scale * (1 / 255 + 1 / 255**2) * 1.001 + 1e-9)


def test_maps_batch_holds_the_same_pngs_as_maps(board, trained):
    run = RUNS["clean"]
    wait_for_run(board, run, EPOCHS["clean"])
    steps = [0, 5, EPOCHS["clean"] - 1]
    body, kind = get(board, "data/plugin/saliency/maps_batch", run=run, steps="0,5,11")
    assert kind == "application/octet-stream"
    length = int.from_bytes(body[:4], "big")
    header = json.loads(body[4 : 4 + length])
    assert header["steps"] == steps
    offset = 4 + length
    for step, size in zip(steps, header["sizes"]):
        single, _ = get(board, "data/plugin/saliency/maps", run=run, step=step)
        assert body[offset : offset + size] == single
        offset += size
    assert offset == len(body)
    get(board, "data/plugin/saliency/maps_batch", expect=400, run=run, steps="")
    get(board, "data/plugin/saliency/maps_batch", expect=400, run=run, steps="1,x")
    get(board, "data/plugin/saliency/maps_batch", expect=400, run=run, steps=",".join(["0"] * 65))
    get(board, "data/plugin/saliency/maps_batch", expect=404, run=run, steps="0,999")


def test_images_and_masks_routes(board, trained):
    index = wait_for_run(board, RUNS["clean"], EPOCHS["clean"])
    ps = index["probe_set"]
    body, kind = get(board, "data/plugin/saliency/images", run=RUNS["clean"])
    assert kind == "image/png"
    assert _png(body).shape == (NUM_PROBES * ps["height"], ps["width"], 3)
    indices = [p["index"] for p in ps["probes"]]
    body, kind = get(board, "data/plugin/saliency/masks", run=RUNS["clean"])
    assert kind == "image/png"
    stacked = _png(body)
    expected = trained["masks"][indices].reshape(NUM_PROBES * ps["height"], ps["width"])
    np.testing.assert_array_equal(stacked > 127, expected)
    get(board, "data/plugin/saliency/masks", expect=404, run=RUNS["shortcut"])
    assert index["has_masks"] is True
    assert wait_for_run(board, RUNS["shortcut"], EPOCHS["shortcut"])["has_masks"] is False


def test_flat_maps_are_flagged(board, trained):
    index = wait_for_run(board, RUNS["dead"], EPOCHS["dead"])
    for info in index["epochs"].values():
        assert info["flat"] == [True] * NUM_PROBES
        assert info["scale"] == [0.0] * NUM_PROBES
    clean = wait_for_run(board, RUNS["clean"], EPOCHS["clean"])
    assert not any(clean["epochs"][str(EPOCHS["clean"] - 1)]["flat"])


def test_colormaps_route_matches_matplotlib(board):
    body, kind = get(board, "data/plugin/saliency/colormaps")
    assert kind.startswith("application/json")
    data = json.loads(body)
    assert data["names"][0] == "inferno" and "viridis" in data["names"]
    for name in data["names"]:
        lut = np.asarray(data["luts"][name]).reshape(256, 3)
        expected = matplotlib.colormaps[name](np.arange(256) / 255.0)[:, :3] * 255
        np.testing.assert_array_less(np.abs(lut - expected), 0.5 + 1e-9)


def test_bad_requests_get_clear_errors(board, trained):
    wait_for_run(board, RUNS["clean"], EPOCHS["clean"])
    get(board, "data/plugin/saliency/run", expect=404, run="nope/saliency")
    get(board, "data/plugin/saliency/run", expect=400)
    body, _ = get(board, "data/plugin/saliency/maps", expect=400, run=RUNS["clean"], step="x")
    assert b"step" in body
    get(board, "data/plugin/saliency/maps", expect=404, run=RUNS["clean"], step=999)
    get(board, "data/plugin/saliency/static/nope.js", expect=404)
    get(board, "data/plugin/saliency/static/..%2Fplugin.py", expect=404)


def test_static_frontend_is_local_es_modules(board):
    body, kind = get(board, "data/plugin/saliency/static/index.js")
    assert kind.startswith("text/javascript")
    assert b"export async function render" in body
    for name in ("index.js", "paint.js", "chart.js", "style.css"):
        text = get(board, f"data/plugin/saliency/static/{name}")[0].decode()
        # Nothing from elsewhere: no absolute URL is fetched or imported.
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text and "//cdn" not in text


def test_python_loader_keeps_every_epoch_too(trained):
    # --load_fast=false: TensorBoard's Python event loader instead of the Rust data server.
    handle = start_tensorboard(trained["logdir"], "--load_fast=false")
    try:
        index = wait_for_run(handle, RUNS["clean"], EPOCHS["clean"])
        assert index["steps"] == list(range(EPOCHS["clean"]))
    finally:
        handle.stop()


def test_loader_adds_keep_all_default_and_keeps_the_users_value():
    flags = argparse.Namespace(samples_per_plugin={"images": 5})
    plugin.SaliencyLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"images": 5, store.PLUGIN_NAME: 0}
    flags = argparse.Namespace(samples_per_plugin={store.PLUGIN_NAME: 3})
    plugin.SaliencyLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {store.PLUGIN_NAME: 3}


def test_run_route_is_incremental_and_skips_a_corrupt_epoch(tmp_path):
    """``run?after=S`` holds only the epochs past S; an epoch whose JSON is corrupt is named in
    ``errors`` (200, not 500) and the others are served."""
    logdir = tmp_path / "logs"
    write_epochs(str(logdir / "bad"), range(4), bad_json={1})
    handle = start_tensorboard(logdir)
    try:
        deadline = time.monotonic() + 90
        while True:
            runs = json.loads(get(handle, "data/plugin/saliency/runs")[0])
            if runs:
                index = json.loads(get(handle, "data/plugin/saliency/run", run="bad")[0])
                if index["steps"] == [0, 2, 3]:
                    break
            assert time.monotonic() < deadline, handle.output()
            time.sleep(0.5)
        assert sorted(index["epochs"]) == ["0", "2", "3"]
        assert [e["step"] for e in index["errors"]] == [1]
        assert "JSON" in index["errors"][0]["what"]
        assert index["probe_set"]["num_probes"] == 4
        later = json.loads(get(handle, "data/plugin/saliency/run", run="bad", after=2)[0])
        assert sorted(later["epochs"]) == ["3"] and later["steps"] == [0, 1, 2, 3]
        assert [p[0] for p in later["scalars"]["focus"]] == [3]
        assert later["errors"] == []  # epoch 1 lies before `after`: not read again
        assert "has_masks" not in later and index["has_masks"] is False  # not read on a poll
        get(handle, "data/plugin/saliency/run", expect=400, run="bad", after="x")
        # compact=1 (the page's index): per-probe numbers of the last epoch only, means for the
        # others; one probe's numbers over every epoch come from the probe route.
        compact = json.loads(get(handle, "data/plugin/saliency/run", run="bad", compact=1)[0])
        assert compact["epochs"]["3"]["per_probe"] == index["epochs"]["3"]["per_probe"]
        for step in ("0", "2"):
            focus = index["epochs"][step]["per_probe"]["focus"]
            assert "per_probe" not in compact["epochs"][step]
            assert compact["epochs"][step]["means"]["focus"] == pytest.approx(np.mean(focus))
        probe = json.loads(get(handle, "data/plugin/saliency/probe", run="bad", probe=2)[0])
        assert probe["numbers"]["focus"] == [
            [s, index["epochs"][str(s)]["per_probe"]["focus"][2]] for s in (0, 2, 3)
        ]
        get(handle, "data/plugin/saliency/probe", expect=400, run="bad", probe="-1")
    finally:
        handle.stop()

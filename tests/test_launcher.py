"""A real TensorBoard process, started by the launcher on loopback, serves every logged image."""

import io
import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from PIL import Image

from keras_saliency_monitor import cli
from keras_saliency_monitor.monitor.callback import GRID_TAG
from keras_saliency_monitor.views import launcher

from .helpers import read_images
from .test_report import EPOCHS, train_runs_once

RUN = "clean/saliency"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return train_runs_once(tmp_path_factory)


@pytest.fixture(scope="module")
def board(logdir):
    handle = launcher.launch(logdir, port=0, host="127.0.0.1", timeout=120)
    try:
        yield handle
    finally:
        handle.stop()
        assert handle.process.poll() is not None


def _get(board, path, **query):
    url = board.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    assert url.startswith("http://127.0.0.1:")  # loopback only
    with urllib.request.urlopen(url, timeout=20) as response:
        assert response.status == 200
        return response.read()


def _images(board, run, tag):
    return json.loads(_get(board, "data/plugin/images/images", run=run, tag=tag))


def test_tensorboard_serves_all_logged_images(board, logdir):
    assert board.url.startswith("http://127.0.0.1:") and board.port > 0
    tags = json.loads(_get(board, "data/plugin/images/tags"))
    assert list(tags[RUN]) == [GRID_TAG]  # the Images dashboard holds only the grid
    # The data server loads in the background: wait (bounded) until the run is complete.
    deadline = time.monotonic() + 60
    entries = _images(board, RUN, GRID_TAG)
    while len(entries) < EPOCHS and time.monotonic() < deadline:
        time.sleep(0.5)
        entries = _images(board, RUN, GRID_TAG)
    # TensorBoard's default would serve 10 of the 14 (reservoir sampling).
    assert [e["step"] for e in entries] == list(range(EPOCHS))
    logged = read_images(os.path.join(logdir, RUN), GRID_TAG)  # TensorBoard's reader, in-process
    for entry in entries:
        data = _get(board, "data/plugin/images/individualImage?" + entry["query"])
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG"  # the grid is stored as JPEG (see store.image_blobs)
            assert image.size[::-1] == logged[entry["step"]][0].shape[:2]


def test_ctrl_c_stops_tensorboard_cleanly(board):
    """serve_forever turns Ctrl-C (SIGINT to the caller) into TensorBoard's clean SIGTERM exit."""
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code = launcher.serve_forever(board, stream=io.StringIO())
    finally:
        timer.cancel()
    assert code == 0
    assert board.process.poll() is not None
    assert "caught SIGTERM" in board.output()
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(board.url + "data/logdir", timeout=5)


def test_launch_refuses_bad_arguments_without_starting(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        launcher.launch(tmp_path / "missing")
    with pytest.raises(ValueError, match="shows no image"):
        launcher.launch(tmp_path, max_images=0)
    with pytest.raises(ValueError, match="`port`"):
        launcher.launch(tmp_path, port=70000)


def test_command_keeps_every_image():
    command = launcher.tensorboard_command("runs/demo", 0)
    assert command[1:3] == ["-m", "tensorboard.main"]
    spec = dict(p.split("=") for p in command[command.index("--samples_per_plugin") + 1].split(","))
    assert int(spec["images"]) >= 10_000  # 0 would show none in TensorBoard 2.21
    assert spec["saliency"] == "0"  # every step of the SALIENCY dashboard's data


def test_cli_tensorboard_missing_log_dir(tmp_path, capsys):
    assert cli.main(["tensorboard", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-saliency-monitor tensorboard: error: ") and "Traceback" not in err


def test_busy_port_gives_one_line(logdir, capsys):
    """A taken port: one line naming it and the fix, none of TensorFlow's start-up noise."""
    with socket.socket() as taken:  # another program listening on loopback
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(launcher.LaunchError) as caught:
            launcher.launch(logdir, port=port, timeout=120)
        assert str(caught.value) == f"port {port} is already in use"
        assert cli.main(["tensorboard", str(logdir), "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"keras-saliency-monitor tensorboard: error: port {port} is already in use. "
        "Pass --port 0 for a free port."
    ]

"""The report command on event files of real fits: GIF, PNG filmstrip, HTML page, errors."""

import base64
import html.parser
import io
import os
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

from keras_saliency_monitor import SaliencyMonitor, cli
from keras_saliency_monitor.drawing import render
from keras_saliency_monitor.storage import store
from keras_saliency_monitor.storage.writer import EventWriter
from keras_saliency_monitor.views import report
from keras_saliency_monitor.views.report import drawing

from .helpers import tiny_cnn, tiny_data, write_stored_run

EPOCHS = 14
SHORT_EPOCHS = 4
NUM_PROBES = 6
CLASS_NAMES = ["top", "middle", "bottom"]
_TRAINED = {}


def train_runs_once(tmp_path_factory):
    """Two real runs in one log dir, trained once per test session (test_launcher uses it too).

    ``clean``: 14 epochs, object masks (so focus numbers are logged) and Keras's TensorBoard
    callback (loss and accuracy in train/ and validation/). ``shortcut``: 4 epochs, no masks: a
    second run with fewer logged epochs than the first.
    """
    if "logdir" not in _TRAINED:
        logdir = tmp_path_factory.mktemp("runs")
        x, y = tiny_data()
        masks = np.zeros(x.shape[:3], bool)
        for i, label in enumerate(y):  # tiny_data's bright square
            r = 1 + 3 * label
            masks[i, r : r + 3, 2:5] = True
        for name, epochs, run_masks in (("clean", EPOCHS, masks), ("shortcut", SHORT_EPOCHS, None)):
            keras.utils.set_random_seed(0)
            model = tiny_cnn()
            monitor = SaliencyMonitor(
                logdir / name, (x, y), num_probes=NUM_PROBES, masks=run_masks,
                class_names=CLASS_NAMES,
            )  # fmt: skip
            board = keras.callbacks.TensorBoard(log_dir=str(logdir / name), write_graph=False)
            with warnings.catch_warnings():
                # Keras 3.15's own validation loop on NumPy 2 (np.array(x) without `copy`).
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="keras")
                model.fit(
                    x, y, epochs=epochs, batch_size=16, verbose=0,
                    validation_data=(x[:12], y[:12]), callbacks=[board, monitor],
                )  # fmt: skip
        _TRAINED["logdir"] = str(logdir)
    return _TRAINED["logdir"]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return train_runs_once(tmp_path_factory)


def _report(capsys, *argv):
    """Runs the CLI; returns (exit code, stdout, stderr)."""
    code = cli.main(["report", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.img_src, self.h2, self.svg, self.scripts, self.links = [], [], 0, 0, 0
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.img_src.append(attrs.get("src", ""))
        self.svg += tag == "svg"
        self.scripts += tag == "script"
        self.links += tag == "link"
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data.strip())


def _decode_data_uri(src):
    header, payload = src.split(",", 1)
    assert header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


# --------------------------------------------------------------------------------------- GIF


def test_gif_has_one_frame_per_logged_epoch(logdir, tmp_path, capsys):
    out = tmp_path / "clean.gif"
    code, stdout, err = _report(capsys, logdir, "--out", out, "--runs", "clean")
    assert code == 0, err
    assert "14 logged epochs" in stdout
    with Image.open(out) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == EPOCHS
        single_width = gif.size[0]
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("RGB")))
    assert frames[0].std() > 20  # tiles, not an empty canvas
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])  # the maps evolve

    # Two runs side by side: the union of their epochs (the short run holds its last frame).
    both = tmp_path / "both.gif"
    code, _, err = _report(capsys, logdir, "--out", both)
    assert code == 0, err
    with Image.open(both) as gif:
        assert gif.n_frames == EPOCHS
        assert gif.size[0] > 2 * single_width - 20


# ---------------------------------------------------------------------------------- filmstrip


def test_png_filmstrip_has_the_expected_size_and_is_not_blank(logdir, tmp_path, capsys):
    out = tmp_path / "strip.png"
    code, _, err = _report(
        capsys, logdir, "--out", out, "--runs", "clean", "--probes", "0,3", "--max-epochs", "5"
    )
    assert code == 0, err
    th, tw = report.tile_display_size(12, 12)  # tiny_data's 12x12 images, enlarged
    assert (th, tw) == (72, 72)
    with Image.open(out) as image:
        assert image.format == "PNG"
        strip = np.asarray(image.convert("RGB"))
    assert strip.shape == (
        drawing.TITLE_HEIGHT + drawing.HEADER_HEIGHT + 2 * (th + drawing.SEP) + drawing.SEP,
        drawing.LABEL_WIDTH + drawing.SEP + 5 * (tw + drawing.SEP),
        3,
    )
    tiles = strip[drawing.TITLE_HEIGHT + drawing.HEADER_HEIGHT :, drawing.LABEL_WIDTH :]
    assert tiles.mean() > 30 and tiles.std() > 20  # overlays, not a blank or black canvas
    # Columns hold different epochs: the first and the last differ.
    first = tiles[:th, drawing.SEP : drawing.SEP + tw]
    last = tiles[:th, -tw:]
    assert not np.array_equal(first, last)


def test_filmstrip_stacks_runs_with_their_own_columns(logdir, tmp_path, capsys):
    out = tmp_path / "both.png"
    code, _, err = _report(capsys, logdir, "--out", out, "--max-epochs", "3")
    assert code == 0, err
    th, tw = report.tile_display_size(12, 12)
    block_h = drawing.TITLE_HEIGHT + drawing.HEADER_HEIGHT + NUM_PROBES * (th + drawing.SEP)
    block_h += drawing.SEP
    with Image.open(out) as image:
        assert image.size == (
            drawing.LABEL_WIDTH + drawing.SEP + 3 * (tw + drawing.SEP),
            2 * block_h,
        )


def test_sample_columns_keeps_first_and_last_evenly():
    steps = list(range(0, 100, 2))
    cols = report.sample_columns(steps, 7)
    assert len(cols) == 7 and cols[0] == 0 and cols[-1] == 98
    assert cols == sorted(set(cols))
    gaps = np.diff([steps.index(c) for c in cols])
    assert gaps.max() - gaps.min() <= 1
    assert report.sample_columns([3, 4, 5], 12) == [3, 4, 5]
    assert report.sample_columns(list(range(14)), 2) == [0, 13]


# --------------------------------------------------------------------------------------- HTML


def test_html_is_self_contained_and_shows_every_run(logdir, tmp_path, capsys):
    out = tmp_path / "report.html"
    code, _, err = _report(capsys, logdir, "--out", out)
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    for forbidden in ("http://", "https://", 'src="/', "<script src", "<link", "@import", "url("):
        assert forbidden not in text
    page = _Page()
    page.feed(text)
    page.close()
    assert page.scripts == 0 and page.links == 0
    assert page.img_src and all(src.startswith("data:") for src in page.img_src)
    formats = [_decode_data_uri(src).format for src in page.img_src]
    assert "GIF" in formats and formats.count("PNG") == 2  # animation + one filmstrip per run
    assert page.h2[1:] == ["clean", "shortcut"]  # runs side by side, in name order
    assert page.svg >= 4  # curves: saliency scalars, loss and accuracy
    for needle in ("saliency/focus", "saliency/concentration", "loss", "accuracy"):
        assert needle in text
    for name in CLASS_NAMES:  # the probes' labels, from saliency/probes_info
        assert f"<td>{name}</td>" in text


def test_html_runs_in_the_order_asked_and_probes_picked(logdir, tmp_path, capsys):
    out = tmp_path / "pick.html"
    code, _, err = _report(
        capsys, logdir, "--out", out, "--runs", "shortcut,clean", "--probes", "1"
    )
    assert code == 0, err
    page = _Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.h2[1:] == ["shortcut", "clean"]
    th, tw = report.tile_display_size(12, 12)
    strips = [_decode_data_uri(s) for s in page.img_src if s.startswith("data:image/png")]
    assert [s.size[1] for s in strips] == [
        drawing.TITLE_HEIGHT + drawing.HEADER_HEIGHT + th + 2 * drawing.SEP
    ] * 2


def test_report_without_probes_info_or_metrics(tmp_path, capsys):
    """Event files with only the stored probes and maps (no labels, scalars or Keras logs)."""
    write_stored_run(tmp_path / "logs" / "saliency", [0, 2, 4])
    out = tmp_path / "plain.html"
    code, _, err = _report(capsys, tmp_path / "logs", "--out", out)
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    assert "No probe labels logged" in text and "<h2>logs</h2>" in text
    code, _, err = _report(capsys, tmp_path / "logs", "--out", tmp_path / "plain.gif")
    assert code == 0, err
    with Image.open(tmp_path / "plain.gif") as gif:
        assert gif.n_frames == 3


# ----------------------------------------------------------------------------- progress bar


def test_progress_bar_draws_on_its_stream_only_after_the_delay(logdir, tmp_path):
    stream = io.StringIO()
    report.write_report(
        logdir, tmp_path / "a.png", progress=report.Progress(stream, delay=0.0, enabled=True)
    )
    drawn = stream.getvalue()
    assert "reading events" in drawn and "100%" in drawn and drawn.endswith("\n")
    quiet = io.StringIO()
    report.write_report(
        logdir, tmp_path / "b.png", progress=report.Progress(quiet, delay=3600, enabled=True)
    )
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------------------------ errors


def _one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("keras-saliency-monitor report: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_error_log_dir_without_saliency_events(logdir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _report(capsys, empty, "--out", tmp_path / "r.html")
    _one_line_error(code, err, "no saliency events", str(empty), "0 directories")
    # Keras's own logs but no saliency: says what it searched.
    train = os.path.join(logdir, "clean", "train")
    code, _, err = _report(capsys, train, "--out", tmp_path / "r.html")
    _one_line_error(code, err, "no saliency events", "1 directory with 1 event file")
    code, _, err = _report(capsys, tmp_path / "missing", "--out", tmp_path / "r.html")
    _one_line_error(code, err, "does not exist")
    assert not (tmp_path / "r.html").exists()


def test_error_unknown_extension_lists_the_valid_ones(logdir, tmp_path, capsys):
    code, _, err = _report(capsys, logdir, "--out", tmp_path / "r.jpg")
    _one_line_error(code, err, "'.jpg'", ".gif, .png, .html")
    code, _, err = _report(capsys, logdir, "--out", tmp_path / "report")
    _one_line_error(code, err, "(none)")


def test_error_unwritable_output(logdir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = _report(capsys, logdir, "--out", blocker / "r.html")
    _one_line_error(code, err, "cannot write", "not a directory")
    code, _, err = _report(capsys, logdir, "--out", blocker / "sub" / "r.png")
    _one_line_error(code, err, "cannot write", "not a directory")
    (tmp_path / "dir.html").mkdir()
    code, _, err = _report(capsys, logdir, "--out", tmp_path / "dir.html")
    _one_line_error(code, err, "cannot write", "is a directory")


def test_error_bad_run_probe_or_epochs(logdir, tmp_path, capsys):
    out = tmp_path / "r.png"
    code, _, err = _report(capsys, logdir, "--out", out, "--runs", "clean,nope")
    _one_line_error(code, err, "unknown run nope", "clean, shortcut")
    code, _, err = _report(capsys, logdir, "--out", out, "--probes", "0,6")
    _one_line_error(code, err, "probe 6 out of range", "6 probes (0-5)")
    code, _, err = _report(capsys, logdir, "--out", out, "--max-epochs", "1")
    _one_line_error(code, err, "--max-epochs")
    assert not out.exists()


def test_probe_out_of_range_fails_before_any_run_is_loaded(logdir, tmp_path, capsys, monkeypatch):
    """The probe count comes from the first probe set in the files: no run is loaded first."""

    def no_loading(*args, **kwargs):
        raise AssertionError("the runs were loaded before --probes was checked")

    monkeypatch.setattr(store, "open_logdir", no_loading)
    code, _, err = _report(capsys, logdir, "--out", tmp_path / "r.png", "--probes", "2,9")
    _one_line_error(code, err, "probe 9 out of range", "6 probes (0-5)")


def test_flat_and_broken_maps_are_framed_and_listed(tmp_path, capsys):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (2, 16, 16, 3), np.uint8)
    with EventWriter(tmp_path / "logs" / "saliency") as writer:
        blobs = store.encode_probe_set(images, indices=[0, 1])
        writer.add_blob_sequence(store.PROBE_SET_TAG, blobs, 0, store.PLUGIN_NAME)
        for step in (0, 1, 2):
            maps = rng.uniform(0, 1, (2, 16, 16)).astype(np.float32)
            if step >= 1:
                maps[0] = 0.0027  # constant: flat
            if step == 2:
                maps[1, 3, 3] = np.nan
            blobs = store.encode_maps(maps, step=step, classes=[0, 0])
            writer.add_blob_sequence(store.MAPS_TAG, blobs, step, store.PLUGIN_NAME)
    out = tmp_path / "marks.html"
    code, _, err = _report(capsys, tmp_path / "logs", "--out", out)
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    assert "flat map (blue frame): #0 at epochs 1-2" in text
    assert "NaN/inf map (red frame): #1 at epoch 2" in text
    (run,) = report.load_runs(tmp_path / "logs")
    tiles = run.probe_images(2)
    assert tuple(tiles[0, 0, 0]) == render.FLAT_COLOR
    assert tuple(tiles[1, 0, 0]) == render.FAULT_COLOR
    assert tuple(run.probe_images(0)[0, 0, 0]) != render.FLAT_COLOR

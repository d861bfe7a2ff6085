"""The demo's promise, checked on its own data with a fixed seed: the monitor tells the clean
model from the shortcut model by numbers alone."""

import inspect
import io
import os

import pytest

from keras_saliency_monitor import demo
from keras_saliency_monitor.monitor.callback import GRID_TAG

from .helpers import read_images


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    results = demo.run_demo(log_dir=str(log_dir), seed=0, verbose=0, out=out)
    return log_dir, results, out.getvalue()


def test_demo_uses_the_library_defaults_only():
    # No alarm argument is passed: the verdicts below are the defaults' verdicts.
    source = inspect.getsource(demo.run_demo)
    for argument in (
        "alarm_threshold",
        "alarm_border_threshold",
        "alarm_reliance_threshold",
        "alarm_patience",
        "alarm_warmup",
    ):
        assert argument not in source
    assert "ALARM" not in source


def test_alarm_fires_for_the_shortcut_run_only(demo_results):
    _, results, text = demo_results
    assert results["clean"]["alarm"] is None
    assert results["shortcut"]["alarm"] is not None
    # The verdict printed is the alarm's own text.
    assert f"verdict (shortcut): SHORTCUT SUSPECTED. {results['shortcut']['alarm']}" in text
    assert "verdict (clean): no alarm" in text
    # It says which signal fired: the watermark sits at the image's edge.
    assert "border_ratio" in results["shortcut"]["alarm"]


def test_numbers_behind_the_verdicts(demo_results):
    _, results, _ = demo_results
    clean, shortcut = results["clean"], results["shortcut"]
    # Border ratio: 1.0 = chance; the clean model looks inside the image, the other at its corner.
    assert clean["border_ratio"] < 0.5 < 2.0 < shortcut["border_ratio"]
    # Focus lift against the other probes' masks: the clean model follows its object more.
    assert clean["focus_lift"] > shortcut["focus_lift"]


def test_clean_model_learns_the_shape_shortcut_model_does_not(demo_results):
    _, results, _ = demo_results
    # Validation is on clean images: the shortcut model never learned the shape.
    assert results["clean"]["val_accuracy"] >= 0.8
    assert results["shortcut"]["val_accuracy"] < results["clean"]["val_accuracy"] - 0.2


def test_demo_leaves_event_files_with_images_and_prints_how_to_view(demo_results):
    log_dir, results, text = demo_results
    for run in ("clean", "shortcut"):
        grids = read_images(os.path.join(log_dir, run, "saliency"), GRID_TAG)
        assert sorted(grids) == list(range(len(results[run]["history"]["loss"])))
        assert os.path.isdir(os.path.join(log_dir, run, "train"))  # Keras's TensorBoard beside
    assert "keras-saliency-monitor tensorboard" in text

"""The demo's promise, checked on its own data with a fixed seed: the monitor tells the clean
model from the shortcut model by numbers alone."""

import io
import os

import pytest

from keras_saliency_monitor import demo
from keras_saliency_monitor.callback import GRID_TAG

from .helpers import read_images


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    results = demo.run_demo(log_dir=str(log_dir), seed=0, verbose=0, out=out)
    return log_dir, results, out.getvalue()


def test_shortcut_lift_at_most_half_the_clean_lift(demo_results):
    _, results, _ = demo_results
    clean, shortcut = results["clean"]["focus_lift"], results["shortcut"]["focus_lift"]
    assert shortcut <= 0.5 * clean, (clean, shortcut)


def test_alarm_fires_for_the_shortcut_run_only(demo_results):
    _, results, text = demo_results
    assert results["clean"]["alarm"] is None
    assert results["shortcut"]["alarm"] is not None
    assert "verdict (shortcut): SHORTCUT SUSPECTED" in text
    assert "verdict (clean): looks at the object" in text


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

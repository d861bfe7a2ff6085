"""Every script in examples/ runs, at a tiny size, in a subprocess, and writes what it says.

The docs include these files as they are (pymdownx.snippets), so a script that stops running
would leave the docs showing broken code; this keeps them honest. Each runs as a user would run
it (``python examples/<name>.py ...``), with this checkout first on the path.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_saliency_monitor.attribution.methods import METHODS
from keras_saliency_monitor.views.dashboard import browser as dashboard_browser

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# A generous bound, only so that a hang fails instead of blocking CI: each run takes well under a
# minute on a loaded 2-core machine.
TIMEOUT = 600


def run_example(name, *args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_example_is_tested_here():
    tested = {"quickstart.py", "method_gallery.py", "dashboard_screenshots.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_quickstart_logs_saliency_beside_keras_tensorboard(tmp_path):
    log_dir = tmp_path / "run"
    out = run_example(
        "quickstart.py", "--log-dir", str(log_dir), "--epochs", "1", "--train", "64", cwd=tmp_path
    )
    assert list((log_dir / "saliency").glob("events.out.tfevents.*"))
    assert list((log_dir / "train").glob("events.out.tfevents.*"))
    assert f"keras-saliency-monitor tensorboard {log_dir}" in out


def test_method_gallery_writes_one_picture_per_method(tmp_path):
    out_dir = tmp_path / "images"
    run_example(
        "method_gallery.py", "--out", str(out_dir), "--epochs", "1", "--probes", "2", cwd=tmp_path
    )
    for name in METHODS:
        path = out_dir / f"method_{name}.png"
        assert path.stat().st_size > 0, path


@pytest.mark.skipif(
    dashboard_browser.find_chromium() is None,
    reason="BROWSER EXAMPLE SKIPPED: no Chromium binary (.ci/run installs it)",
)
def test_dashboard_screenshots_on_a_one_epoch_demo(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="needs the [test] extra (playwright)")
    out_dir = tmp_path / "images"
    run_example(
        "dashboard_screenshots.py",
        "--log-dir",
        str(tmp_path / "demo"),
        "--out",
        str(out_dir),
        "--demo-epochs",
        "1",
        cwd=tmp_path,
    )
    for name in ("overview", "filmstrip", "detail"):
        assert (out_dir / f"dashboard_{name}.png").stat().st_size > 0, name

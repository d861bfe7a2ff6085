"""The installed command line, run as a user runs it: the console script and ``python -m``.

Each test starts a fresh interpreter, so TensorFlow's C++ start-up output (written straight to file
descriptor 2, before and outside Python) is seen exactly as a user sees it.
"""

import os
import re
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from keras_saliency_monitor import cli
from keras_saliency_monitor.storage import logdirs

from .helpers import write_stored_run

SCRIPT = Path(sys.executable).with_name("keras-saliency-monitor")
# What TensorFlow's C++ start-up prints: absl's log lines and its "before InitializeLog" banner.
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|cuda drivers|oneDNN", re.MULTILINE)


def _env(**extra):
    """The user's environment, with nothing TensorFlow-specific exported (conftest sets some)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP_", "CUDA_"))}
    env.update(extra)
    return env


def _run(*argv, module=False, timeout=120, **env):
    command = [sys.executable, "-m", "keras_saliency_monitor"] if module else [str(SCRIPT)]
    return subprocess.run(
        [*command, *map(str, argv)], capture_output=True, text=True, env=_env(**env),
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def saliency_logdir(tmp_path_factory):
    """A log dir holding one run's saliency events (3 logged steps), written without TF."""
    logdir = tmp_path_factory.mktemp("logs")
    write_stored_run(logdir / "run" / "saliency", [0, 1, 2], num_probes=2, size=8)
    return logdir


def test_console_script_is_installed():
    assert SCRIPT.exists(), f"{SCRIPT} missing: install the package (pip install -e '.[test]')"


@pytest.mark.parametrize("module", [False, True], ids=["script", "python-m"])
def test_version_matches_the_package_metadata(module):
    result = _run("--version", module=module)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"keras-saliency-monitor {metadata.version('keras-saliency-monitor')}\n"
    assert result.stderr == ""


@pytest.mark.parametrize("module", [False, True], ids=["script", "python-m"])
def test_help_lists_every_command_and_nothing_on_stderr(module):
    result = _run("--help", module=module)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in ("demo", "report", "tensorboard", "--version"))
    assert result.stderr == ""


def test_report_on_a_dir_without_saliency_events_is_one_error_line(tmp_path):
    result = _run("report", tmp_path, "--out", tmp_path / "out.gif")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no saliency events" in result.stderr
    assert not NOISE.search(result.stderr)
    assert not (tmp_path / "out.gif").exists()


def test_report_that_loads_tensorflow_prints_no_start_up_noise(saliency_logdir, tmp_path):
    """The event reader imports TensorFlow (6 C++ log lines in TF 2.21 without the filter)."""
    out = tmp_path / "out.gif"
    result = _run("report", saliency_logdir, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"wrote {out}: run, 3 logged epochs")


def test_tensorboard_warns_about_a_dir_without_saliency_events_and_still_serves(tmp_path):
    """One warning line; the real TensorBoard still starts (training may write there later)."""
    process = subprocess.Popen(
        [str(SCRIPT), "tensorboard", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        lines = []
        for line in process.stdout:  # until TensorBoard answers (the CLI prints its URL)
            lines.append(line)
            if line.startswith("TensorBoard: http://127.0.0.1:"):
                break
        assert lines and lines[-1].startswith("TensorBoard: http"), lines
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    ours = [line for line in err.splitlines() if line.startswith("keras-saliency-monitor")]
    assert ours == [
        f"keras-saliency-monitor tensorboard: warning: no saliency events under {str(tmp_path)!r} "
        "yet (SaliencyMonitor writes them to <log_dir>/saliency)"
    ]


# ------------------------------------------------------------------------- in-process units


def test_has_saliency_events_looks_for_event_files_in_a_saliency_dir(tmp_path):
    assert not logdirs.has_saliency_events(tmp_path / "missing")
    (tmp_path / "keras" / "train").mkdir(parents=True)
    (tmp_path / "keras" / "train" / "events.out.tfevents.1.host").write_bytes(b"x")
    (tmp_path / "a" / "saliency").mkdir(parents=True)
    (tmp_path / "a" / "saliency" / "events.out.tfevents.1.host.tmp").write_bytes(b"x")
    assert not logdirs.has_saliency_events(tmp_path)  # Keras's logs and a temp file only
    (tmp_path / "a" / "saliency" / "events.out.tfevents.2.host.ksm").write_bytes(b"x")
    assert logdirs.has_saliency_events(tmp_path)
    assert logdirs.has_saliency_events(tmp_path / "a" / "saliency")  # LOGDIR is the saliency dir
    assert not logdirs.has_saliency_events(tmp_path / "keras")


_INFO = b"I0000 00:00:1796032028.822061    9207 port.cc:153] oneDNN custom operations are on.\n"
_WARN = b"W0000 00:00:1796032028.822061    9207 x.cc:1] a warning\n"
_ERROR = b"E0000 00:00:1796032031.219170    9207 cuda_platform.cc:52] some other error\n"
_CUINIT = b"E0000 00:00:1.2    9207 cuda_platform.cc:52] failed call to cuInit: CUDA error (303)\n"


@pytest.mark.parametrize(
    "level, kept",
    [(1, [_WARN, _ERROR]), (2, [_ERROR]), (3, [])],
)
def test_start_up_lines_below_the_log_level_are_dropped_others_kept(level, kept):
    python = b"/x/y.py:3: UserWarning: kept whatever the level\n"
    lines = [_INFO, _WARN, _ERROR, python]
    assert [line for line in lines if cli._keep_line(line, level, False)] == [*kept, python]
    banner = b"WARNING: All log messages before absl::InitializeLog() is called are written to\n"
    assert not cli._keep_line(banner, level, False)


def test_failed_cuinit_is_dropped_only_when_no_cuda_driver_was_found():
    assert not cli._keep_line(_CUINIT, 2, no_driver=True)
    assert cli._keep_line(_CUINIT, 2, no_driver=False)  # a driver that fails is worth seeing

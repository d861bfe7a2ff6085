"""Nothing lost on a hard kill: SIGKILL a training process, then read its event files back.

A child process trains a tiny model with two monitors, one with ``durable=True`` and one with the
default policy whose disk is deliberately slow (each flush takes longer than an epoch, so its write
jobs would pile up without the monitor's wait), and a callback after them prints
``EPOCH_END <e>``. The parent kills the child with SIGKILL once it has seen epoch ``KILL_AFTER``
end, and then knows from the lines the child got out before dying the last epoch ``k`` whose
``on_epoch_end`` hooks all returned. The guarantee:

- default: every epoch < k is in the event files (the write of epoch k may be in flight);
- ``durable=True``: every epoch <= k is.
"""

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from keras_saliency_monitor.monitor.callback import GRID_TAG
from keras_saliency_monitor.storage import store

from .helpers import read_images, read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_AFTER = 5  # kill once this epoch has ended
SLOW_FLUSH_SECONDS = 0.25  # a slow disk: longer than an epoch of the tiny model
TIMEOUT_SECONDS = 240  # to see epoch KILL_AFTER end (TensorFlow starts in ~5-20 s)
# Ctrl-C with a hung write: the exit handler gives up after 3 s (the child's exit timeout), the
# lock wait after 1 s, then the interpreter tears down. Measured alone: 6.2-7.2 s (3 runs); under
# load 15.9 s was seen. Far below the hung sync's hour, and over 3x what it takes alone.
EXIT_BOUND_SECONDS = 60

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import keras, numpy as np
    from keras import layers
    from keras_saliency_monitor import SaliencyMonitor
    from keras_saliency_monitor.storage import writer

    log_dir, slow = sys.argv[1], float(sys.argv[2])
    flush = writer.EventWriter.flush

    def slow_flush(self):  # the default monitor's disk is slow (e.g. a network file system)
        if os.sep + "default" + os.sep in self.logdir:
            time.sleep(slow)
        flush(self)

    writer.EventWriter.flush = slow_flush
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    y = np.arange(64) % 4
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(4, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    # The durable monitor first, so that its wait does not give the default one's job extra time.
    monitors = [
        SaliencyMonitor(os.path.join(log_dir, "durable"), (x, y), num_probes=8, durable=True),
        SaliencyMonitor(os.path.join(log_dir, "default"), (x, y), num_probes=8),
    ]

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            os.write(1, f"EPOCH_END {epoch}\\n".encode())  # unbuffered: out before any kill

    model.fit(x, y, epochs=500, batch_size=32, verbose=0, callbacks=[*monitors, Report()])
    """
)


def _kill_after_epoch(proc, kill_after, timeout):
    """Read the child's output; SIGKILL it once it printed EPOCH_END kill_after.

    Returns:
        The last epoch the child reported before it died.
    """
    out = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while f"EPOCH_END {kill_after}\n".encode() not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"the child did not reach epoch {kill_after} in {timeout} s"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"the child exited early with {proc.wait()}"
            out += chunk
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    out += proc.stdout.read()  # whatever it wrote before dying
    epochs = [int(line.split()[1]) for line in out.decode().splitlines()]
    assert epochs == list(range(len(epochs)))
    return epochs[-1]


def test_sigkill_loses_no_finished_epoch(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(SLOW_FLUSH_SECONDS)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=str(tmp_path),
        )
    try:
        last = _kill_after_epoch(proc, KILL_AFTER, TIMEOUT_SECONDS)
    except AssertionError:
        print((tmp_path / "stderr.txt").read_text()[-3000:])
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    for mode, guaranteed in (("default", last), ("durable", last + 1)):
        run = str(tmp_path / mode / "saliency")
        grids = read_images(run, GRID_TAG)
        provider, ctx, eid = store.open_logdir(run)
        maps = store.read_run(provider, ctx, eid, ".")["epochs"]
        scalars = read_scalars(run, "saliency/concentration")
        print(
            f"{mode}: last epoch ended before the kill {last}, grids found {sorted(grids)}, "
            f"guaranteed 0..{guaranteed - 1}"
        )
        missing = [e for e in range(guaranteed) if e not in grids]
        assert missing == [], f"{mode}: finished epochs lost: {missing}"
        assert all(str(e) in maps and len(maps[str(e)]["classes"]) == 8 for e in range(guaranteed))
        assert all(e in scalars for e in range(guaranteed))
        assert all(grid[0].ndim == 3 for grid in grids.values())  # every PNG decodes


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s", "-q"]))


STUCK_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import keras, numpy as np
    from keras import layers
    from keras_saliency_monitor import SaliencyMonitor
    from keras_saliency_monitor.storage import writer

    writer._EXIT_TIMEOUT_SECONDS = 3.0  # the default is 30 s in all
    sync, calls = writer._sync, []

    def stuck(fd):  # a hung file system: the second sync never comes back
        calls.append(fd)
        if len(calls) == 2:
            time.sleep(3600)
        sync(fd)

    writer._sync = stuck
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    y = np.arange(64) % 4
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(4, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    monitor = SaliencyMonitor(sys.argv[1], (x, y), num_probes=8)  # WRITE_TIMEOUT_SECONDS = 60

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            os.write(1, f"EPOCH_END {epoch}\\n".encode())

    model.fit(x, y, epochs=500, batch_size=32, verbose=0, callbacks=[monitor, Report()])
    """
)


def test_ctrl_c_with_a_stuck_disk_exits_in_bounded_time(tmp_path):
    """Ctrl-C while a write hangs: on_train_end never runs, and the exit handler must not hang."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    script = tmp_path / "child.py"
    script.write_text(STUCK_CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out = b""
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while b"EPOCH_END 1\n" not in out:  # epoch 1's write is now stuck in its sync
            assert time.monotonic() < deadline, "the child did not reach epoch 1"
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"the child exited early with {proc.wait()}"
                out += chunk
        time.sleep(2.0)  # inside epoch 2's end, waiting (up to 60 s) for the stuck write
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=EXIT_BOUND_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the process did not exit within {EXIT_BOUND_SECONDS} s of SIGINT")
        took = time.monotonic() - start
        stderr = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    print(f"the process exited {took:.1f} s after SIGINT")
    assert code != 0 and "KeyboardInterrupt" in stderr
    # The event that bounds the exit: the handler gave up on the job (its sync sleeps an hour).
    assert "gave up on background jobs at exit" in stderr

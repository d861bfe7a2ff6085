"""Starts the real TensorBoard on a log directory so that every logged image stays reachable.

Why a launcher: TensorBoard keeps 10 images per tag by default (reservoir sampling), so after 50
epochs the step slider skips most of the evolution. ``--samples_per_plugin images=K`` raises the
cap, but ``images=0`` does *not* mean "all" in TensorBoard 2.21 (the Python loader keeps every
image with a reservoir of size 0, but the images plugin then asks its data provider for
``downsample=0`` samples, and ``_downsample(xs, 0)`` returns ``[]``
(tensorboard/plugins/image/images_plugin.py, tensorboard/backend/event_processing/
data_provider.py); the Rust data server used by default keeps no record at all for a reservoir of
capacity 0 (tensorboard/data/server/reservoir.rs)). So we pass a large finite K: reservoirs
allocate as records arrive, so a large cap costs nothing until images exist.

Example:
    >>> from keras_saliency_monitor.views.launcher import launch
    >>> board = launch("runs/demo")            # a free port on 127.0.0.1
    >>> print(board.url)                       # http://127.0.0.1:40123/
    >>> board.stop()
"""

from __future__ import annotations

import atexit
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref

__all__ = [
    "DEFAULT_MAX_IMAGES",
    "LaunchError",
    "TensorBoardHandle",
    "launch",
    "serve_forever",
    "tensorboard_command",
]

#: Images kept per tag (``--samples_per_plugin images=K``): one per logged epoch for 100k epochs.
DEFAULT_MAX_IMAGES = 100_000

# TensorBoard's own line once it listens: "TensorBoard 2.21.0 at http://127.0.0.1:6006/ (Press ..."
_SERVING = re.compile(r"TensorBoard \S+ at (https?://\S+?)/? \(Press CTRL\+C")
# Its line when the port is taken (tensorboard 2.21, program.py).
_PORT_IN_USE = re.compile(r"could not bind to port (\d+), it was already in use")
_LIVE = weakref.WeakSet()


class LaunchError(RuntimeError):
    """TensorBoard did not start (its last output lines are in the message)."""


def tensorboard_command(logdir, port=0, host="127.0.0.1", max_images=DEFAULT_MAX_IMAGES):
    """The command line that :func:`launch` runs (this interpreter's ``tensorboard.main``)."""
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        os.fspath(logdir),
        "--port",
        str(int(port)),
        "--host",
        host,
        "--samples_per_plugin",
        # saliency=0 keeps every step of the SALIENCY dashboard's data ("all" in 2.21's ingesters;
        # its reader asks for every step, unlike the images plugin). The plugin's loader sets the
        # same default for a plain `tensorboard` command.
        f"images={int(max_images)},saliency=0",
    ]


class TensorBoardHandle:
    """A running TensorBoard process.

    Attributes:
        url: where it serves, e.g. ``"http://127.0.0.1:6006/"``.
        process: the ``subprocess.Popen`` of TensorBoard.
        logdir: the log directory it reads.
    """

    def __init__(self, process, logdir, host):
        self.process = process
        self.logdir = logdir
        self.host = host
        # Set from TensorBoard's own "TensorBoard X at URL" line, never guessed: with a fixed
        # port, another server already listening there must not pass for ours.
        self.url = None
        self._lines = collections.deque(maxlen=200)
        self._ready = threading.Event()
        self._echo = None
        self._reader = threading.Thread(target=self._read_output, name="tensorboard-output")
        self._reader.daemon = True
        self._reader.start()

    @property
    def port(self) -> int | None:
        return urllib.parse.urlsplit(self.url).port if self.url else None

    def output(self) -> str:
        """TensorBoard's last output lines (stdout and stderr, merged)."""
        return "".join(self._lines)

    def echo_to(self, stream) -> None:
        """From now on, copies TensorBoard's output lines to ``stream`` (None: stop copying)."""
        self._echo = stream

    def _read_output(self):
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            self._lines.append(line)
            match = _SERVING.search(line)
            if match and self.url is None:
                self.url = match.group(1).rstrip("/") + "/"
                self._ready.set()
            echo = self._echo
            if echo is not None:
                try:
                    echo.write(line)
                    echo.flush()
                except (OSError, ValueError):
                    pass
        self.process.stdout.close()
        self._ready.set()  # the process ended: nobody waits forever

    def wait_until_ready(self, timeout: float) -> None:
        """Blocks until TensorBoard answers HTTP requests on its URL.

        Raises:
            LaunchError: it exited, or did not answer within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self._reader.join(2)
                busy = _PORT_IN_USE.search(self.output())
                if busy:  # one line: the tail would be TensorFlow's start-up noise around it
                    raise LaunchError(f"port {busy.group(1)} is already in use")
                raise LaunchError(
                    f"TensorBoard exited with code {self.process.returncode} before serving.\n"
                    + self._tail()
                )
            if self.url is not None and _answers(self.url + "data/logdir", timeout=2):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise LaunchError(
                    f"TensorBoard did not answer within {timeout:.0f} s; stopped it.\n"
                    + self._tail()
                )
            if self.url is None:
                self._ready.wait(0.2)  # returns at once when the URL line arrives
            else:
                time.sleep(0.1)

    def _tail(self, lines=15) -> str:
        kept = [line for line in self._lines if line.strip()]
        return "".join(kept[-lines:]).rstrip() or "(no output)"

    def stop(self, timeout: float = 10.0) -> int:
        """Stops TensorBoard: SIGTERM (its clean exit), then SIGKILL after ``timeout`` seconds.

        Idempotent. Returns the exit code.
        """
        if self.process.poll() is None:
            try:
                self.process.terminate()  # SIGTERM: TensorBoard runs its atexit cleanup
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._reader.join(2)
        _LIVE.discard(self)
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        return f"TensorBoardHandle(url={self.url!r}, pid={self.process.pid})"


def _answers(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# Not tensorboard.manager.start: it may reuse another TensorBoard; no process to stop or echo.
def launch(logdir, port=None, host="127.0.0.1", *, max_images=DEFAULT_MAX_IMAGES, timeout=90.0):
    """Starts ``python -m tensorboard.main`` on ``logdir`` and waits until it answers over HTTP.

    "Answers" means the web server is up; TensorBoard then loads the event files in the
    background (all of them within seconds for a demo, progressively for large logs).

    The process runs in its own session, so a Ctrl-C in the terminal reaches only the caller, who
    stops it with :meth:`TensorBoardHandle.stop`; processes still running at interpreter exit
    are stopped too.

    Args:
        logdir: directory to serve (e.g. ``"runs/demo"``: its runs are ``clean/saliency``...).
        port: port to listen on; ``0`` or None picks a free port. Defaults to None.
        host: address to bind. Defaults to ``"127.0.0.1"`` (this machine only).
        max_images: images kept per tag (``--samples_per_plugin images=K``), at least 1.
            Defaults to ``DEFAULT_MAX_IMAGES`` (one per epoch for 100k epochs).
        timeout: seconds to wait for the first HTTP answer (TensorBoard imports TensorFlow at
            start: 5-15 s on a busy machine). Defaults to 90.

    Returns:
        A :class:`TensorBoardHandle` with ``.url``, ``.process`` and ``.stop()``.

    Raises:
        ValueError: ``logdir`` is not a directory, or an argument is invalid.
        LaunchError: TensorBoard exited (e.g. port in use) or did not answer within ``timeout``.
    """
    logdir = os.fspath(logdir)
    if not os.path.isdir(logdir):
        raise ValueError(f"Invalid value for argument `logdir`: {logdir!r} is not a directory.")
    port = 0 if port is None else port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(
            f"Invalid value for argument `port`: expected 0..65535 or None, received {port!r}."
        )
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        # 0 would hide every image (see the module docstring), so it is refused.
        raise ValueError(
            "Invalid value for argument `max_images`: expected an int >= 1 (0 shows no image "
            f"in TensorBoard 2.21), received {max_images!r}."
        )
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorBoard imports TensorFlow: keep it quiet
    env.setdefault("CUDA_VISIBLE_DEVICES", "")  # it needs no GPU
    process = subprocess.Popen(
        tensorboard_command(logdir, port, host, max_images),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    handle = TensorBoardHandle(process, logdir, host)
    _LIVE.add(handle)
    handle.wait_until_ready(timeout)
    return handle


def serve_forever(handle, stream=sys.stdout) -> int:
    """Blocks until TensorBoard exits or the user presses Ctrl-C (or sends SIGTERM).

    Ctrl-C is forwarded to TensorBoard as SIGTERM, its clean-exit signal (a SIGINT makes it print
    a traceback). Returns 0 after a stop asked for by the user, else TensorBoard's exit code.
    """

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        code = handle.process.wait()
    except KeyboardInterrupt:
        stream.write("Stopping TensorBoard...\n")
        stream.flush()
        handle.stop()
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code


@atexit.register
def _stop_all():
    for handle in list(_LIVE):
        try:
            handle.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass

"""A cheap look at a log directory, before anything heavy is imported.

``SaliencyMonitor(log_dir)`` writes its event files to ``<log_dir>/saliency``; the command line uses
:func:`has_saliency_events` to warn when ``tensorboard`` is pointed at a tree without any, and to
import TensorFlow (which the event reader pulls in) only when ``report`` has something to read.
Names and directories only: no file is opened (``report`` checks the contents itself). The
callback's checks of its ``log_dir`` live here too: :func:`check_log_dir` before anything is
created, and the lock that keeps a second writer out of ``<log_dir>/saliency``.
"""

from __future__ import annotations

import os
import socket

try:
    import fcntl  # POSIX: one writer per events directory (see lock_events_dir)
except ImportError:  # pragma: no cover - Windows: no detection of a second writer
    fcntl = None

SALIENCY_DIR = "saliency"  # the callback's sub-directory of its log_dir
LOCK_NAME = ".writer.lock"  # in <log_dir>/saliency: held by the one monitor writing there


def is_event_file(name: str) -> bool:
    """Whether ``name`` is an event file's name (TensorBoard's ``*tfevents*``, not a temp file)."""
    return "tfevents" in name and not name.endswith((".tmp", ".lock"))


def has_saliency_events(logdir) -> bool:
    """Whether an event file lies in a directory named ``saliency`` under ``logdir`` (included).

    Args:
        logdir: a directory, searched recursively; ``logdir`` itself counts when it is the
            ``saliency`` directory.

    Returns:
        True at the first such file; False when there is none, or ``logdir`` is not a directory.
    """
    logdir = os.path.abspath(os.fspath(logdir))
    for dirpath, _, filenames in os.walk(logdir):
        if os.path.basename(dirpath) == SALIENCY_DIR and any(map(is_event_file, filenames)):
            return True
    return False


def check_log_dir(log_dir) -> str:
    """Fail fast when ``log_dir`` or ``<log_dir>/saliency`` is a file or cannot be created.

    Nothing is created here: the nearest existing ancestor of the events directory must be a
    writable directory. Returns the absolute path.
    """
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(
            "Invalid type for argument `log_dir`: expected a directory path (str or "
            f"os.PathLike), received {type(log_dir).__name__}."
        )
    log_dir = os.fspath(log_dir)
    if not log_dir:
        raise ValueError(
            "Invalid value for argument `log_dir`: expected a directory path, received an empty "
            'string. Pass e.g. log_dir="runs/exp1".'
        )
    if "://" in log_dir:
        raise ValueError(
            f"Invalid value for argument `log_dir`: {log_dir!r} is a URL; events are written "
            "with local file operations. Pass a local or mounted directory (and sync it to remote "
            "storage if needed)."
        )
    events_dir = os.path.join(log_dir, SALIENCY_DIR)
    for path in (log_dir, events_dir):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(
                f"Invalid value for argument `log_dir`: {path!r} is an existing file; pass a "
                "directory path."
            )
    existing = os.path.abspath(events_dir)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"Invalid value for argument `log_dir`: {log_dir!r} cannot be created because "
            f"{existing!r} is a file, not a directory. Pass a path under a writable directory."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"Invalid value for argument `log_dir`: {log_dir!r} cannot be created or written: no "
            f"write permission on {existing!r}. Pass a path under a writable directory."
        )
    # Absolute now: an os.chdir during training must not split the run into two directories.
    return os.path.abspath(log_dir)


def lock_events_dir(events_dir):
    """Refuse a second writer in ``events_dir``: another monitor, here or in another process.

    Two writers would put their events under the same tags and steps, indistinguishable. The lock
    (``flock`` on ``<log_dir>/saliency/.writer.lock``) lives from ``on_train_begin`` to
    ``on_train_end``; the kernel drops it when a process dies, so a killed run never blocks the
    next one. Where ``flock`` is missing or unsupported there is no detection.

    Returns:
        The open, locked file (pass it to :func:`unlock`), or None where nothing could be locked.

    Raises:
        ValueError: another writer holds the lock (the message names it).
    """
    if fcntl is None:
        return None
    path = os.path.join(events_dir, LOCK_NAME)
    try:
        lock_file = open(path, "a+")  # noqa: SIM115 - held open until on_train_end
    except OSError:
        return None  # could not even create the file: the writer will report the real problem
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read(200).strip() or "unknown"
        lock_file.close()
        raise ValueError(
            f"Invalid value for argument `log_dir`: {events_dir!r} is being written by another "
            f"SaliencyMonitor ({holder}); two writers in one directory would mix their "
            "images under the same tags and steps. Give each monitor its own log_dir (e.g. "
            "runs/exp1/vanilla and runs/exp1/gradcam), or let the other fit end first."
        ) from None
    except OSError:
        lock_file.close()  # a file system without locks (some network mounts)
        return None
    try:
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        lock_file.flush()
    except OSError:
        pass  # the holder's name is only for the message
    return lock_file


def unlock(lock_file) -> None:
    """Releases a lock from :func:`lock_events_dir` (None: nothing to do)."""
    if lock_file is not None:
        try:
            lock_file.close()  # closing drops the flock
        except OSError:
            pass

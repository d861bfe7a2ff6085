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
import threading
import warnings
import weakref

try:
    import fcntl  # POSIX: one writer per events directory (see lock_events_dir)
except ImportError:  # pragma: no cover - Windows: no detection of a second writer
    fcntl = None

SALIENCY_DIR = "saliency"  # the callback's sub-directory of its log_dir
LOCK_NAME = ".writer.lock"  # in <log_dir>/saliency: held by the one monitor writing there


def is_event_file(name: str) -> bool:
    """Whether ``name`` is an event file's name (TensorBoard's ``*tfevents*``, not a temp file)."""
    return "tfevents" in name and not name.endswith((".tmp", ".lock"))


def irregular_event_files(directory) -> list[str]:
    """Paths in ``directory`` named like event files that are not regular files (a FIFO, a
    device, a socket), found without opening them: TensorBoard's reader would wait on a FIFO for
    good. ``[]`` when ``directory`` cannot be listed."""
    try:
        with os.scandir(os.fspath(directory)) as entries:
            return sorted(e.path for e in entries if is_event_file(e.name) and not e.is_file())
    except OSError:
        return []


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


class EventsLock:
    """An ``flock`` this process holds on ``<events_dir>/.writer.lock`` (:func:`lock_events_dir`).

    Attributes:
        path: the lock file's path.
        owner: the object that took it (the monitor's writing state), or None.
    """

    def __init__(self, file, path, owner):
        self.file, self.path = file, path
        self._owner = None if owner is None else weakref.ref(owner)  # the lock must not keep it
        self._pid = os.getpid()  # a forked child closes its copy and never unlocks the parent's
        st = os.fstat(file.fileno())
        self._id = (st.st_dev, st.st_ino)

    @property
    def owner(self):
        return None if self._owner is None else self._owner()

    def is_current(self) -> bool:
        """Whether ``path`` is still the locked file: False once the directory was deleted (and
        maybe made again, by this writer or another one)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return not self.file.closed and (st.st_dev, st.st_ino) == self._id

    def release(self) -> None:
        """Unlocks and closes. Idempotent.

        ``LOCK_UN`` before closing: a process forked meanwhile shares the open file, and a close
        alone would leave the lock held until that child exits too.
        """
        with _HELD_GUARD:
            if _HELD.get(self.path) is self:
                del _HELD[self.path]
        if self._pid == os.getpid() and not self.file.closed:
            try:
                fcntl.flock(self.file, fcntl.LOCK_UN)
            except (OSError, ValueError):
                pass
        try:
            self.file.close()
        except OSError:
            pass

    def _close_in_child(self) -> None:
        try:
            self.file.close()  # only this process's descriptor: the parent keeps its lock
        except OSError:
            pass


# Locks held by this process, by lock path: a same-process conflict can name, or take over, the
# holder; a forked child closes its copies (os.register_at_fork below).
_HELD: dict = {}
_HELD_GUARD = threading.Lock()


def _close_all_in_child() -> None:
    for held in list(_HELD.values()):
        held._close_in_child()
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_all_in_child)


def _open_lock_file(path):
    """The lock file, opened for writing (to name the holder) or else read-only (``flock`` needs
    no write access: a read-only file left by another user or a chmod still locks)."""
    try:
        return open(path, "a+"), True  # noqa: SIM115 - held open until released
    except OSError:
        pass
    try:
        return open(path), False  # noqa: SIM115
    except OSError as err:
        raise ValueError(
            f"Invalid value for argument `log_dir`: cannot open the lock file {path!r} "
            f"({err.strerror or err}), so a second SaliencyMonitor writing there could not be "
            "detected. Another user may have left it: remove it (or make it readable for you), or "
            "pass another log_dir."
        ) from None


def lock_events_dir(events_dir, owner=None):
    """Refuse a second writer in ``events_dir``: another monitor, here or in another process.

    Two writers would put their events under the same tags and steps, indistinguishable. The lock
    (``flock`` on ``<log_dir>/saliency/.writer.lock``) lives from ``on_train_begin`` to
    ``on_train_end`` (or until the monitor is collected, or a later fit takes it over); the
    kernel drops it when a process dies, so a killed run never blocks the next one.

    Same process: a lock held by another owner is taken over when that owner says its fit is
    over (``holder.fit_is_over(owner)``: a fit that ended in an exception or Ctrl-C never ran
    ``on_train_end``); the holder's ``release_for_takeover()`` then lets it go.

    Args:
        events_dir: ``<log_dir>/saliency``, existing.
        owner: the object taking the lock (see above), or None.

    Returns:
        An :class:`EventsLock`, or None where ``flock`` is missing (Windows) or not supported
        by the file system (with a warning: a second writer goes undetected there).

    Raises:
        ValueError: another writer holds the lock (the message names it), or the lock file
            cannot be opened at all.
    """
    if fcntl is None:
        return None
    path = os.path.abspath(os.path.join(events_dir, LOCK_NAME))
    for attempt in (0, 1):
        lock_file, writable = _open_lock_file(path)
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read(200).strip() or "unknown"
            lock_file.close()
            with _HELD_GUARD:
                held = _HELD.get(path)
            if held is not None and not held.is_current():
                held = None  # ours was on a deleted file: the holder is someone else
            holder_owner = None if held is None else held.owner
            if holder_owner is not None and attempt == 0 and holder_owner.fit_is_over(owner):
                holder_owner.release_for_takeover()
                held.release()  # also when the holder never got it (a Ctrl-C during start-up)
                continue
            if holder_owner is not None:
                holder = (
                    f"in this process, in a fit on thread {holder_owner.fit_thread_name!r} that "
                    "has not ended"
                )
            raise ValueError(
                f"Invalid value for argument `log_dir`: {events_dir!r} is being written by "
                f"another SaliencyMonitor ({holder}); two writers in one directory would mix "
                "their images under the same tags and steps. Give each monitor its own log_dir "
                "(e.g. runs/exp1/vanilla and runs/exp1/gradcam), or let the other fit end first."
            ) from None
        except OSError as err:
            lock_file.close()  # a file system without locks (some network mounts)
            warnings.warn(
                f"SaliencyMonitor: cannot lock {path!r} ({err.strerror or err}): this file system "
                "does not support flock, so a second monitor writing to the same log_dir at the "
                "same time would not be detected. Give each monitor its own log_dir.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
    if writable:
        try:
            lock_file.seek(0)
            lock_file.truncate()
            lock_file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            lock_file.flush()
        except OSError:
            pass  # the holder's name is only for the message
    lock = EventsLock(lock_file, path, owner)
    with _HELD_GUARD:
        _HELD[path] = lock
    return lock


def unlock(lock) -> None:
    """Releases a lock from :func:`lock_events_dir` (None: nothing to do)."""
    if lock is not None:
        lock.release()

"""Where and when a monitor writes: its events directory, step numbers, event file and worker.

``open`` locks ``<log_dir>/saliency`` (one writer per directory), finds the last step logged
there (a later fit continues after it) and starts an event file and the background worker that
writes to it; these start-up reads run on a helper thread, waited for within the same bound as
the writes. The training thread ``wait``s for the worker within a bound (a job outliving it
has stalled: a hung network file system), and ``release`` closes the file on the worker thread.
A fit that ended without ``release`` (Ctrl-C, an exception: Keras skips ``on_train_end``) is
released by the next fit on its thread (``logdirs.lock_events_dir`` asks ``fit_is_over``), or
when the monitor is collected.

Durability: a logged epoch's write job runs while the next epoch trains; every epoch end first
waits for the job still running (a no-op when writing is faster than an epoch), so at most one
epoch's events are ever in flight (none with ``durable=True``: its epoch end waits for its own).
"""

from __future__ import annotations

import errno
import os
import threading
import time
import weakref

from keras_saliency_monitor.storage import arrays, logdirs
from keras_saliency_monitor.storage.writer import BackgroundWorker, EventWriter, last_step

__all__ = ["Writing"]


class Writing:
    """A monitor's writing state, across its fits."""

    def __init__(self):
        self.writer = self.worker = None  # the fit's EventWriter and BackgroundWorker (chief only)
        self.faults = None  # the run's Faults: write errors and stalls are recorded there
        self.last_step = None  # the largest step this monitor (or its log_dir) has logged
        self.stalled = False  # a write job outlived its wait: it is not waited for again
        self.wait_seconds = []  # time the training thread waited for write jobs, per wait
        self._lock = None  # logdirs.EventsLock on the events directory while a fit writes
        self._events_dir = None
        self._step_offset = None  # step - epoch in the current fit, fixed at its first epoch
        self._fit_thread = self._fit = None  # the thread and fit holding the lock
        self._finalizer = None  # releases the lock and the worker if this object is collected

    def open(self, faults, log_dir, background, timeout, fit=None):
        """Starts a fit; ``log_dir`` None in a process that does not write.

        ``fit`` identifies the fit (Keras gives every callback of one fit the same ``params``
        dict): a lock held in this process by a monitor of another fit that ended on this
        thread without ``on_train_end`` (Ctrl-C, an exception) is taken over; one held by a
        monitor of the same fit is refused.

        The start-up reads (directory, lock, last step) run on a helper thread and are waited
        for ``timeout`` s at most: a FIFO or a hung network disk under ``log_dir`` must not hold
        ``fit`` before its first batch. Past the bound, a "stalled" fault is recorded and this
        fit writes nothing (its numbers still reach ``logs``).

        Raises:
            ValueError: the events directory cannot be created, or another monitor writes there.
        """
        self.faults, self.stalled, self.wait_seconds, self._step_offset = faults, False, [], None
        if log_dir is None:
            return
        events_dir = os.path.join(log_dir, logdirs.SALIENCY_DIR)
        self._fit_thread, self._fit = threading.current_thread(), fit
        done, result = _bounded(lambda: self._start_up(events_dir, log_dir), timeout, _unlock_late)
        if not done:
            self.stalled = True
            faults.record(
                "stalled",
                "train begin",
                TimeoutError(
                    f"reading {events_dir!r} at the start of fit took over {timeout:g} s (a hung "
                    "file system?); this fit writes no events, its numbers still reach `logs`"
                ),
            )
            return
        self._lock, found = result
        # Continue after whatever this directory holds already (an earlier fit, a killed
        # process), so that no step is ever reused and no arrays file overwritten.
        self.last_step = max((s for s in (self.last_step, *found) if s is not None), default=None)
        # A new event file per fit: the previous fit closed its own. A deleted directory is made
        # again by the writer, which takes the lock again first (_relock).
        self.writer = EventWriter(events_dir, before_new_file=self._relock)
        self.worker = BackgroundWorker(synchronous=not background)
        self._events_dir = events_dir
        self._finalizer = weakref.finalize(self, _release_left, self._lock, self.worker)
        self._finalizer.atexit = False  # at exit, writer.py's handler finishes the pending jobs

    def _start_up(self, events_dir, log_dir):
        """The fit's first disk accesses (on a helper thread): directory, lock, last steps."""
        try:
            os.makedirs(events_dir, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"Invalid value for argument `log_dir`: cannot create {events_dir!r} ({err}). "
                "Pass a writable directory."
            ) from None
        lock = logdirs.lock_events_dir(events_dir, owner=self)
        try:
            return lock, (last_step(events_dir), arrays.last_saved_epoch(log_dir))
        except BaseException:
            logdirs.unlock(lock)
            raise

    def _relock(self):
        """Before a new event file: the directory deleted mid-fit lost its lock file, so take
        the lock again; another writer that took it meanwhile keeps it (this fit stops
        writing: OSError, a "write" fault)."""
        lock = self._lock
        if lock is None or lock.is_current():
            return
        try:
            self._lock = logdirs.lock_events_dir(self._events_dir, owner=self)
        except ValueError as err:
            raise OSError(
                errno.EBUSY, f"{err} (the directory was deleted during this fit)"
            ) from None
        finally:
            logdirs.unlock(lock)

    # Same-process takeover (see logdirs.lock_events_dir).
    def fit_is_over(self, other):
        """Whether this monitor's fit has ended without releasing, as seen by ``other`` (the
        Writing of a monitor starting a fit): not the same fit, and ``other``'s fit runs on the
        thread that ran this one (a thread runs one fit at a time), or that thread is gone."""
        thread = self._fit_thread
        if thread is None:
            return True
        if self._fit is getattr(other, "_fit", None):
            return False  # the same fit (or unknown: hooks called by hand) holds it
        return thread is getattr(other, "_fit_thread", None) or not thread.is_alive()

    @property
    def fit_thread_name(self):
        return getattr(self._fit_thread, "name", "?")

    def release_for_takeover(self):
        """A new fit takes the directory from this one, which ended in an exception or Ctrl-C."""
        try:
            self.release(1.0, "a later fit into the same log_dir")
        except Exception:  # noqa: BLE001, S110 - strict mode's errors belong to the old fit
            pass  # the lock is released whatever happens (release's finally)

    def step(self, epoch):
        """The TensorBoard step (and ``save_arrays`` file number) of ``epoch`` in this fit.

        ``epoch`` itself in a first fit (or with an ``initial_epoch`` after the last logged
        step); a later fit into the same directory that starts at an epoch already logged
        continues after the last logged step. Fixed at the fit's first epoch end.
        """
        if self._step_offset is None:
            last = self.last_step
            self._step_offset = 0 if last is None or epoch > last else last + 1 - epoch
        return epoch + self._step_offset

    def wait(self, timeout, where):
        """Wait (at most ``timeout`` s) until no write job runs; record the jobs' errors.

        Returns:
            False when a job is still running: the writer is stuck, and waiting for it again
            would hold training up every epoch.
        """
        if self.worker is None:
            return not self.stalled  # stalled at the start of fit: nothing is written
        start = time.perf_counter()
        idle = self.worker.wait(timeout)
        self.wait_seconds.append(time.perf_counter() - start)
        self.record_errors()
        if not idle and not self.stalled:
            self.faults.record(
                "stalled",
                f"epoch {where}" if isinstance(where, int) else where,
                TimeoutError(
                    f"a write job has been running for over {timeout:g} s; images are skipped "
                    "until it finishes"
                ),
            )
        self.stalled = not idle
        return idle

    def record_errors(self, worker=None):
        """Record the errors of finished write jobs as "write" faults (strict: raise the first)."""
        worker = self.worker if worker is None else worker
        if worker is not None:
            for name, err, tb in worker.take_errors():
                self.faults.record("write", name, err, tb)

    def finish(self, timeout, where):
        """Wait for the last jobs, then release: ``timeout`` s in all, whatever the disk does."""
        start = time.monotonic()
        try:
            self.wait(timeout, where)
        finally:
            self.release(max(0.0, timeout - (time.monotonic() - start)), where)

    def release(self, timeout, where):
        """Close the event file and stop the worker thread, waiting ``timeout`` s at most.

        The file is closed by a job on the worker thread, after the writes queued before it, so
        this thread never blocks on a file held by a stuck write. A worker that does not finish
        in time is abandoned (its daemon thread keeps its job; nothing waits for it, not even
        interpreter exit). Afterwards no thread of ours refers to the monitor, the model or
        the file, and the events directory is unlocked for the next writer.
        """
        worker, writer = self.worker, self.writer
        self.worker = self.writer = None
        try:
            if worker is None:
                return
            if writer is not None:
                worker.submit(writer.close, job_name=f"closing the event file at {where}")
            stopped = worker.shutdown(timeout)
            self.record_errors(worker)
            if not stopped and not self.stalled:
                self.stalled = True
                self.faults.record(
                    "stalled",
                    where,
                    TimeoutError(
                        f"writing has not finished after {timeout:g} s; the event file is left "
                        "to a background thread and closed if the disk comes back"
                    ),
                )
        finally:
            lock, self._lock, self._fit_thread, self._fit = self._lock, None, None, None
            logdirs.unlock(lock)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None


def _bounded(fn, timeout, on_late):
    """``(True, fn())`` if ``fn`` returns within ``timeout`` s on a helper thread, else
    ``(False, None)``; ``fn``'s exception is raised here. A result that comes too late is
    handed to ``on_late`` on the helper thread (the thread itself is a daemon, left alone)."""
    box, guard, done = {}, threading.Lock(), threading.Event()

    def run():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = err
        with guard:
            late = box.get("late", False)
            done.set()
        if late and "value" in box:
            on_late(box["value"])

    threading.Thread(target=run, name="keras-saliency-monitor-startup", daemon=True).start()
    if not done.wait(timeout):
        with guard:
            if not done.is_set():
                box["late"] = True
                return False, None
    if "error" in box:
        raise box.pop("error")
    return True, box["value"]


def _unlock_late(result):
    logdirs.unlock(result[0])


def _release_left(lock, worker):
    """A monitor collected while its fit held the directory (Keras skips ``on_train_end`` after
    an exception): unlock, and let the idle worker thread end."""
    logdirs.unlock(lock)
    worker.abandon()

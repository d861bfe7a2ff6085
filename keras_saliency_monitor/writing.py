"""Where and when a monitor writes: its events directory, step numbers, event file and worker.

``open`` locks ``<log_dir>/saliency`` (one writer per directory), finds the last step logged
there (a later fit continues after it) and starts an event file and the background worker that
writes to it. The training thread ``wait``s for the worker within a bound (a job outliving it
has stalled: a hung network file system), and ``release`` closes the file on the worker thread.

Durability: a logged epoch's write job runs while the next epoch trains; every epoch end first
waits for the job still running (a no-op when writing is faster than an epoch), so at most one
epoch's events are ever in flight (none with ``durable=True``: its epoch end waits for its own).
"""

from __future__ import annotations

import os
import time

from keras_saliency_monitor import arrays, logdirs
from keras_saliency_monitor.writer import BackgroundWorker, EventWriter, last_step

__all__ = ["Writing"]


class Writing:
    """A monitor's writing state, across its fits."""

    def __init__(self):
        self.writer = self.worker = None  # the fit's EventWriter and BackgroundWorker (chief only)
        self.faults = None  # the run's Faults: write errors and stalls are recorded there
        self.last_step = None  # the largest step this monitor (or its log_dir) has logged
        self.stalled = False  # a write job outlived its wait: it is not waited for again
        self.wait_seconds = []  # time the training thread waited for write jobs, per wait
        self._lock_file = None  # open, locked file in the events directory while a fit writes
        self._step_offset = None  # step - epoch in the current fit, fixed at its first epoch

    def open(self, faults, log_dir, background):
        """Starts a fit; ``log_dir`` None in a process that does not write.

        Raises:
            ValueError: the events directory cannot be created, or another monitor writes there.
        """
        self.faults, self.stalled, self.wait_seconds, self._step_offset = faults, False, [], None
        if log_dir is None:
            return
        events_dir = os.path.join(log_dir, logdirs.SALIENCY_DIR)
        try:
            os.makedirs(events_dir, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"Invalid value for argument `log_dir`: cannot create {events_dir!r} ({err}). "
                "Pass a writable directory."
            ) from None
        self._lock_file = logdirs.lock_events_dir(events_dir)
        # Continue after whatever this directory holds already (an earlier fit, a killed
        # process), so that no step is ever reused and no arrays file overwritten.
        found = (self.last_step, last_step(events_dir), arrays.last_saved_epoch(log_dir))
        self.last_step = max((s for s in found if s is not None), default=None)
        # A new event file per fit: the previous fit closed its own.
        self.writer = EventWriter(events_dir)
        self.worker = BackgroundWorker(synchronous=not background)

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
            return True
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
            lock_file, self._lock_file = self._lock_file, None
            logdirs.unlock(lock_file)

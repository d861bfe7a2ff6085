"""TensorBoard event writing without TensorFlow, and the background thread that runs it.

Why not `tf.summary`: with an integer `update_freq`, Keras's TensorBoard callback installs
`tf.summary.record_if(step % N == 0)` on the default writer, which silently drops epoch-end images
(tensorflow/tensorboard#4975). `EventWriter` therefore writes TensorBoard's event-file format
itself, with no TensorFlow ops and no TensorFlow summary state, so nothing can filter its writes and
it is safe to call from a background thread.

The tensors have exactly the layouts TF2's `tf.summary.*` ops write (scalars, text and histograms
are built by TensorBoard's own `*_pb` functions, numpy twins of those ops), so its dashboards and
`plugin_event_accumulator.EventAccumulator(...).Tensors(tag)` read them:

| method          | plugin         | tensor                                                      |
| --------------- | -------------- | ----------------------------------------------------------- |
| `add_images`    | `"images"`     | DT_STRING `[2 + k]`: width, height (decimal strings), PNGs  |
| `add_scalar`    | `"scalars"`    | DT_FLOAT rank 0                                             |
| `add_text`      | `"text"`       | DT_STRING rank 0                                            |
| `add_histogram` | `"histograms"` | DT_DOUBLE `[bins, 3]`: (left edge, right edge, count) rows  |

File layout: TFRecord framing (length, masked CRC32C of the length, payload, masked CRC32C of the
payload) around serialized `Event` protos; the first event of each file carries
`file_version="brain.Event:2"`.

`BackgroundWorker` is a single daemon thread with a bounded queue, so PNG encoding and disk writes
happen off the training thread without unbounded memory growth.
"""

from __future__ import annotations

import atexit
import io
import itertools
import operator
import os
import queue
import re
import socket
import stat
import struct
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import google_crc32c
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.util import tensor_util

__all__ = ["BackgroundWorker", "EventWriter", "JobError", "last_step"]

# PNG settings, measured on a 1024x1024 RGB grid of photo + heatmap overlays (CPU ms / MB, 2 busy
# cores): zlib level 6 (Pillow's default) 400 / 1.85; level 1 190 / 2.06; level 1 with the Z_RLE
# strategy 130-160 / 1.84; level 0 (stored) 86 / 3.15. RLE suits overlays (photographic, few long
# repeats); it is worse only on flat synthetic images, which are tiny anyway (0.2 MB vs 0.02 MB).
# `compress_type` is an old Pillow encoder option that Pillow ignores if it ever goes away.
_PNG_COMPRESS_LEVEL = 1
_PNG_ZLIB_STRATEGY = 3  # zlib.Z_RLE

# Process-wide counter in event file names: files must sort in creation order, because TensorBoard's
# DirectoryWatcher reads the files of a run in lexicographic order and never goes back.
_FILE_COUNTER = itertools.count()

# Longest wait at interpreter exit, for all workers together, before giving up with a warning: a
# stuck file system must not keep the process alive. Abandoned workers are not waited for at all.
_EXIT_TIMEOUT_SECONDS = 30.0
# Longest wait at interpreter exit for an event file's lock: a job stuck in a write holds it.
_EXIT_LOCK_SECONDS = 1.0

# fdatasync skips the timestamp update that fsync also writes; both wait for the data.
_sync = getattr(os, "fdatasync", os.fsync)


# --------------------------------------------------------------------------------------------------
# TFRecord framing, with a C CRC32C (Castagnoli) from `google-crc32c`: 0.14 ms per MB, against
# 8.3 ms/MB for the numpy one it replaced, 265 ms/MB for TensorBoard's pure-Python `masked_crc32c`
# (which its `RecordWriter` uses) and 0.65 ms/MB for `tf.io.TFRecordWriter`, which needs TensorFlow
# imported (3.7 s) whatever the Keras backend (benchmarks/README.md, "TFRecord framing").
# --------------------------------------------------------------------------------------------------

_crc32c = google_crc32c.value  # init and final xor 0xFFFFFFFF; b"123456789" -> 0xE3069283


def _masked_crc32c(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _tfrecord(payload: bytes) -> bytes:
    """One TFRecord: uint64 length, masked CRC of the length, payload, masked CRC of the payload."""
    header = struct.pack("<Q", len(payload))
    return b"".join(
        (
            header,
            struct.pack("<I", _masked_crc32c(header)),
            payload,
            struct.pack("<I", _masked_crc32c(payload)),
        )
    )


# --------------------------------------------------------------------------------------------------
# Tensors in the layouts of tf.summary.image / scalar / text / histogram.
# --------------------------------------------------------------------------------------------------


def _image_batch(images_u8: Any) -> np.ndarray:
    """Validates images and returns a (k, H, W, C) uint8 batch, C in {1, 2, 3, 4}."""
    arr = np.asarray(images_u8)
    if arr.dtype != np.uint8:
        raise TypeError(
            "Invalid value for argument `images_u8`: expected a uint8 array (render the maps to "
            f"uint8 RGB first), received dtype={arr.dtype}."
        )
    if arr.ndim == 2:  # (H, W) grayscale
        arr = arr[None, :, :, None]
    elif arr.ndim == 3:  # (H, W, C)
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 2, 3, 4) or 0 in arr.shape:
        raise ValueError(
            "Invalid value for argument `images_u8`: expected shape (H, W), (H, W, C) or "
            f"(k, H, W, C) with C in 1..4 and no zero dimension, received shape {arr.shape}."
        )
    return arr


def _encode_png(image: np.ndarray) -> bytes:
    """(H, W, C) uint8 -> PNG bytes."""
    if image.shape[-1] == 1:
        image = image[..., 0]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(
        out, format="PNG", compress_level=_PNG_COMPRESS_LEVEL, compress_type=_PNG_ZLIB_STRATEGY
    )
    return out.getvalue()


def _summary(tag: str, tensor: Any, meta: summary_pb2.SummaryMetadata) -> summary_pb2.Summary:
    # TF's writers repeat the metadata on every event; TensorBoard reads it from the first.
    return summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)]
    )


def _histogram(tag: str, values: Any, bins: int, description: str | None) -> summary_pb2.Summary:
    """TensorBoard's numpy twin of `tf.summary.histogram`, with non-finite values left out.

    (TF's buckets all turn to NaN when one value is NaN.) `errstate`: spans near the float64
    limits overflow, as in TF, and would warn from a background job. Its one-hot bucketing costs
    65 ms vs 13 ms for our bincount on 1M values, but the callback's histograms hold one value per
    probe: 0.54 ms per epoch either way (benchmarks/README.md, "Summaries").
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    with np.errstate(all="ignore"):
        return histogram_summary.histogram_pb(tag, data[np.isfinite(data)], bins, description)


def _histogram_buckets(values: Any, bins: int) -> np.ndarray:
    """The (bins, 3) rows of (left edge, right edge, count) that `add_histogram` writes (tests)."""
    return tensor_util.make_ndarray(_histogram("", values, bins, None).value[0].tensor)


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag:
        raise TypeError(
            f"Invalid value for argument `tag`: expected a non-empty str, received {tag!r}."
        )
    return tag


def _check_step(step: Any) -> int:
    if isinstance(step, bool):
        raise TypeError(f"Invalid value for argument `step`: expected an int, received {step!r}.")
    try:
        return operator.index(step)
    except TypeError:
        raise TypeError(
            f"Invalid value for argument `step`: expected an int, received {step!r}."
        ) from None


_VARINT = re.compile(rb"[\x80-\xff]{0,9}[\x00-\x7f]")  # up to 10 bytes, the last one below 0x80


def _event_step(payload_head: bytes) -> int | None:
    """The step of a serialized Event from its first bytes, or None for a file's header event.

    Proto serializers write fields in number order: wall_time (1, fixed64) then step (2, varint),
    so protobuf decodes the step from the bytes up to the end of its varint, without reading (or
    parsing) the image payload behind it.
    """
    pos = 9 if payload_head[:1] == b"\x09" else 0  # tag 1, wire type 1: 8 bytes of wall_time
    tag = payload_head[pos : pos + 1]
    if tag in (b"", b"\x1a"):  # nothing else, or file_version (3): the file's header event
        return None
    if tag != b"\x10":  # tag 2, wire type 0; proto3 leaves out a step of 0
        return 0
    varint = _VARINT.match(payload_head, pos + 1)
    if varint is None:
        raise IndexError("the step's varint goes on past the bytes given")
    return event_pb2.Event.FromString(payload_head[: varint.end()]).step


def _open_regular(path: str):
    """`path` opened for reading if it is a regular file, else None (FIFOs, devices, sockets).

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, for good.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except OSError:
        os.close(fd)
        return None


def _file_steps(f) -> list[tuple[int, int, int]]:
    """(step, payload offset, payload length) of each event of an open event file.

    Framing stops at the first record whose length fails its CRC (or that runs past the end: a
    killed writer); payload CRCs are left to `last_step`, which checks only the candidates.
    """
    size = os.fstat(f.fileno()).st_size
    found = []
    while True:
        header = f.read(12)
        if len(header) < 12:
            break
        length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
        if _masked_crc32c(length_bytes) != length_crc:
            break  # a corrupt length: nothing after it can be framed
        (length,) = struct.unpack("<Q", length_bytes)
        start = f.tell()
        if start + length + 4 > size:
            break
        head = f.read(min(length, 32))
        try:
            step = _event_step(head)
        except IndexError:  # a step varint longer than the head: parse the event
            f.seek(start)
            try:
                step = event_pb2.Event.FromString(f.read(length)).step
            except Exception:  # noqa: BLE001 - not an event: nothing to learn
                step = None
        if step is not None:
            found.append((step, start, length))
        f.seek(start + length + 4)
    return found


def _payload_ok(f, start: int, length: int) -> bool:
    """Whether the record at `start` matches its payload CRC (the bytes of the step included)."""
    f.seek(start)
    payload = f.read(length)
    trailer = f.read(4)
    return len(trailer) == 4 and _masked_crc32c(payload) == struct.unpack("<I", trailer)[0]


def last_step(logdir: str | os.PathLike) -> int | None:
    """The largest step of any intact event in the event files of `logdir`, or None when none.

    Reads each record's length (checked against its CRC) and the first bytes of its payload,
    seeking over images; then checks the payload CRC of the record with the largest step only
    (and of the next ones, largest first, while they fail), so one corrupt record cannot move
    every later step. A torn record at the end of a file (a killed writer) ends that file.
    Anything but a regular file named like an event file (a FIFO, a device) is skipped unopened.
    Hand-written because TensorBoard's `EventFileLoader` costs 70 ms vs our 6 ms on a 200-epoch
    61 MB log, plus a 3.5-5 s TensorFlow import (its stub reader, without TF: 7 s). The CRC
    checks cost 11 ms against 7 ms without them (median of 21, 1,800 records in 20 MB).
    """
    logdir = os.fspath(logdir)
    try:
        names = [n for n in os.listdir(logdir) if "tfevents" in n]
    except OSError:
        return None
    best = None
    for name in names:
        f = _open_regular(os.path.join(logdir, name))
        if f is None:
            continue
        try:
            with f:
                for step, start, length in sorted(_file_steps(f), reverse=True):
                    if best is not None and step <= best:
                        break
                    if _payload_ok(f, start, length):
                        best = step
                        break
        except OSError:
            continue
    return best


# --------------------------------------------------------------------------------------------------
# EventWriter
# --------------------------------------------------------------------------------------------------


class EventWriter:
    """Writes TensorBoard summaries to an event file in `logdir`, without TensorFlow.

    Nothing touches the disk until the first write: then the directory and a new event file are
    created. If the directory (or the file) disappears while the run goes on, the next write creates
    both again and continues in a new event file; TensorBoard reads all event files of a directory.
    Writes are buffered; `flush()` hands them to the operating system, after which they survive the
    process being killed (SIGKILL). Methods are thread-safe.

    Args:
        logdir: Directory for the event files, e.g. `"runs/exp1/saliency"`.
        fsync: Make `flush()` also wait until the data is on the disk (`fdatasync`), as TensorFlow's
            own event writer does, so a machine crash loses nothing flushed either. Costs about
            2 ms per flush of a 2 MB image on a local SSD; turn it off on network file systems
            where a sync is a slow round trip. Defaults to `True`.
        before_new_file: Called (with no argument) after the directory is made and before each
            new event file is created, e.g. to take the directory's lock again once it was
            deleted; an `OSError` it raises fails the write and creates nothing. Defaults to
            `None`.

    Example:
        >>> writer = EventWriter("runs/exp1/saliency")
        >>> writer.add_scalar("saliency/focus", 0.71, step=3)
        >>> writer.add_images("saliency/overlays", grid_u8, step=3)  # (H, W, 3) uint8
        >>> writer.flush()
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        *,
        fsync: bool = True,
        before_new_file: Callable[[], None] | None = None,
    ) -> None:
        try:
            self._logdir = os.fspath(logdir)
        except TypeError:
            raise TypeError(
                "Invalid value for argument `logdir`: expected a str or os.PathLike, "
                f"received {logdir!r}."
            ) from None
        self._fsync = bool(fsync)
        self._before_new_file = before_new_file
        self._lock = threading.Lock()
        self._file: io.BufferedWriter | None = None
        self._path: str | None = None
        _LIVE_WRITERS.add(self)

    @property
    def logdir(self) -> str:
        """The log directory, as given."""
        return self._logdir

    @property
    def path(self) -> str | None:
        """Path of the event file being written, or None before the first write."""
        return self._path

    def add_images(
        self, tag: str, images_u8: Any, step: int, description: str | None = None
    ) -> None:
        """Writes images at `step` as `tf.summary.image` does, one PNG per image.

        Args:
            tag: Summary tag, e.g. `"saliency/overlays"`.
            images_u8: uint8 array of shape (H, W, 3), (k, H, W, 3), or grayscale (H, W) or
                (H, W, 1); 2 and 4 channels (gray + alpha, RGBA) work too. All k images are kept
                (`tf.summary.image` keeps only `max_outputs=3` by default).
            step: Global step (the epoch, for the callback).
            description: Markdown shown in the dashboard. Defaults to `None`.

        Raises:
            TypeError: `images_u8` is not uint8.
            ValueError: `images_u8` has an unsupported shape.
            OSError: The directory or the file cannot be written.
        """
        tag, step = _check_tag(tag), _check_step(step)
        batch = _image_batch(images_u8)  # (k, H, W, C)
        height, width = batch.shape[1:3]
        pngs = [_encode_png(image) for image in batch]
        tensor = tensor_util.make_tensor_proto(
            [str(width).encode(), str(height).encode(), *pngs], dtype=np.object_
        )
        meta = image_metadata.create_summary_metadata(display_name=None, description=description)
        self._write(_summary(tag, tensor, meta), step)

    def add_blob_sequence(
        self,
        tag: str,
        blobs: Any,
        step: int,
        plugin_name: str,
        description: str | None = None,
    ) -> None:
        """Writes `blobs` at `step` as a blob sequence (DT_STRING rank 1) of plugin `plugin_name`.

        The data class is `DATA_CLASS_BLOB_SEQUENCE`, so TensorBoard's data provider serves the
        blobs through `read_blob_sequences` / `read_blob`; only `plugin_name`'s dashboard shows
        them.

        Args:
            tag: Summary tag, e.g. `"saliency/maps"`.
            blobs: A sequence of `bytes` (empty `b""` blobs are allowed).
            step: Global step.
            plugin_name: Name of the plugin that reads them, e.g. `"saliency"`.
            description: Markdown shown in dashboards. Defaults to `None`.

        Raises:
            TypeError: `blobs` is not a sequence of bytes, or `plugin_name` is not a str.
        """
        tag, step = _check_tag(tag), _check_step(step)
        if not isinstance(plugin_name, str) or not plugin_name:
            raise TypeError(
                "Invalid value for argument `plugin_name`: expected a non-empty str, "
                f"received {plugin_name!r}."
            )
        if isinstance(blobs, (bytes, str)) or not all(
            isinstance(b, (bytes, bytearray)) for b in blobs
        ):
            raise TypeError(
                "Invalid value for argument `blobs`: expected a list of bytes, received "
                f"{blobs!r:.100}."
            )
        tensor = tensor_util.make_tensor_proto([bytes(b) for b in blobs], dtype=np.object_)
        meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name),
            summary_description=description or "",
            data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
        )
        self._write(_summary(tag, tensor, meta), step)

    def add_scalar(self, tag: str, value: Any, step: int, description: str | None = None) -> None:
        """Writes one number at `step` as `tf.summary.scalar` does (float32).

        Raises:
            ValueError: `value` is not a single real number.
        """
        tag, step = _check_tag(tag), _check_step(step)
        try:  # it refuses all but one bool, int or float, which it writes as float32
            summary = scalar_summary.scalar_pb(tag, value, description)
        except Exception:
            raise ValueError(
                f"Invalid value for argument `value`: expected a real number, received {value!r}."
            ) from None
        self._write(summary, step)

    def add_histogram(
        self, tag: str, values: Any, step: int, bins: int = 30, description: str | None = None
    ) -> None:
        """Writes a histogram of all elements of `values` as `tf.summary.histogram` does.

        Args:
            tag: Summary tag.
            values: Array-like of any shape; NaN and infinite values are left out.
            step: Global step.
            bins: Number of uniform buckets between min and max. Defaults to `30`.
            description: Markdown shown in the dashboard. Defaults to `None`.
        """
        tag, step = _check_tag(tag), _check_step(step)
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(
                "Invalid value for argument `bins`: expected a positive int, "
                f"received bins={bins!r}."
            )
        self._write(_histogram(tag, values, int(bins), description), step)

    def add_text(self, tag: str, text: str, step: int, description: str | None = None) -> None:
        """Writes a (Markdown) string at `step` as `tf.summary.text` does."""
        tag, step = _check_tag(tag), _check_step(step)
        if not isinstance(text, (str, bytes)):
            raise TypeError(
                f"Invalid value for argument `text`: expected a str, received {text!r}."
            )
        self._write(text_summary.text_pb(tag, text, description), step)

    def flush(self, timeout: float | None = None) -> bool:
        """Hands all buffered events to the operating system (and to the disk, with `fsync`).

        Afterwards they survive the process being killed, even by SIGKILL.

        Args:
            timeout: Seconds to wait at most for another thread's write in progress (a write
                stuck on a hung file system holds the file). Defaults to `None` (no limit).

        Returns:
            True, or False when `timeout` passed first (nothing was done).

        Raises:
            OSError: The file cannot be written (disk full, ...). The next write opens a new file.
        """
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            self._flush_locked()
        finally:
            self._lock.release()
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flushes and closes the event file. Idempotent; a later write starts a new event file.

        Args:
            timeout: As in `flush`. Defaults to `None` (no limit).

        Returns:
            True, or False when `timeout` passed first (the file stays open).

        Raises:
            OSError: The last buffered events cannot be written (the file is closed anyway).
        """
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            self._flush_locked()
        finally:
            self._discard_file_locked()
            self._lock.release()
        return True

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventWriter(logdir={self._logdir!r})"

    # -- internals ---------------------------------------------------------------------------------

    def _write(self, summary: summary_pb2.Summary, step: int) -> None:
        event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
        record = _tfrecord(event.SerializeToString())  # encoded outside the lock
        with self._lock:
            self._ensure_file_locked()
            try:
                self._file.write(record)
            except OSError as exc:
                self._discard_file_locked()
                raise OSError(
                    exc.errno, f"Cannot write TensorBoard event file {self._path!r}: {exc}"
                ) from exc

    def _ensure_file_locked(self) -> None:
        # One stat per write: writes into a file whose directory was deleted would vanish silently.
        if self._file is not None and os.path.exists(self._path):
            return
        self._discard_file_locked()
        try:
            os.makedirs(self._logdir, exist_ok=True)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"Cannot create TensorBoard log directory {self._logdir!r}: {exc.strerror or exc}. "
                "Check that the path is a writable directory.",
            ) from exc
        if self._before_new_file is not None:
            self._before_new_file()
        # TF's pattern (events.out.tfevents.<seconds>.<host>...) plus pid and a zero-padded counter.
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_FILE_COUNTER):06d}.ksm"
        )
        path = os.path.join(self._logdir, name)
        try:
            file = open(path, "xb")  # kept open until close()
        except OSError as exc:
            raise OSError(
                exc.errno, f"Cannot create TensorBoard event file {path!r}: {exc.strerror or exc}."
            ) from exc
        header = event_pb2.Event(
            wall_time=time.time(),
            file_version="brain.Event:2",
            source_metadata=event_pb2.SourceMetadata(writer="keras_saliency_monitor"),
        )
        file.write(_tfrecord(header.SerializeToString()))
        self._file, self._path = file, path

    def _flush_locked(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            if self._fsync:
                _sync(self._file.fileno())
        except OSError as exc:
            self._discard_file_locked()
            raise OSError(
                exc.errno, f"Cannot write TensorBoard event file {self._path!r}: {exc}"
            ) from exc

    def _discard_file_locked(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError:
            pass  # its directory is gone or the disk failed; the caller reports or recovers
        self._file = None


# --------------------------------------------------------------------------------------------------
# BackgroundWorker
# --------------------------------------------------------------------------------------------------


class JobError(NamedTuple):
    """A job that raised, as reported by `BackgroundWorker.drain()`."""

    job_name: str  # the `job_name` given to submit(), else the function's qualified name
    exception: BaseException  # the exception object, with its __traceback__
    traceback: str  # the formatted traceback


_STOP = object()


# Not ThreadPoolExecutor: it joins threads at exit; one hung write: exit never (>15 s) vs ours 0.5 s
class BackgroundWorker:
    """Runs jobs one at a time, in submission order, on a single daemon thread.

    The queue is bounded: `submit` blocks while `maxsize` jobs wait (backpressure; nothing is ever
    dropped), so memory stays bounded when writing is slower than training. A job that raises does
    not stop the worker; the error is kept and returned by the next `drain()` (or, without waiting,
    `take_errors()`), so the caller can warn, or re-raise in strict mode. `wait()` waits for the
    jobs without taking their errors, e.g. to keep at most one job in flight. At interpreter exit,
    pending jobs of every live worker are run before the process ends. The thread starts on the
    first `submit`, and ends after `idle_seconds` without a job (the next `submit` starts one).

    Call `submit`, `wait`, `drain` and `close` from the thread that owns the worker (the training
    thread). A job may itself call `submit`; the nested job then runs inline.

    Args:
        maxsize: Jobs that may wait in the queue besides the running one. Defaults to `2`.
        synchronous: Run each job inline inside `submit` (for debugging and tests); errors are
            still captured and reported by `drain()`. Defaults to `False`.
        name: Thread name. Defaults to `"keras-saliency-monitor-writer"`.

    Example:
        >>> worker = BackgroundWorker()
        >>> worker.submit(writer.add_images, "saliency/overlays", grid_u8, epoch)
        >>> for job_name, exc, tb in worker.drain():
        ...     warnings.warn(f"{job_name} failed: {exc!r}")
    """

    # An idle thread ends after this long (the next submit starts another): a worker that its
    # owner forgot (a fit ended by Ctrl-C or an exception) leaves no thread behind for good.
    idle_seconds = 10.0

    def __init__(
        self,
        maxsize: int = 2,
        *,
        synchronous: bool = False,
        name: str = "keras-saliency-monitor-writer",
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(
                "Invalid value for argument `maxsize`: expected a positive int, "
                f"received maxsize={maxsize!r}."
            )
        self._synchronous = bool(synchronous)
        self._name = name
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._lifecycle = threading.Lock()  # serialises thread start/stop with enqueueing
        self._cond = threading.Condition()  # guards _pending and _errors
        self._pending = 0
        self._errors: list[JobError] = []
        self._thread: threading.Thread | None = None
        self._abandoned = False  # see abandon()
        _LIVE_WORKERS.add(self)

    @property
    def synchronous(self) -> bool:
        return self._synchronous

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet finished."""
        with self._cond:
            return self._pending

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, job_name: str | None = None, **kwargs: Any
    ) -> None:
        """Queues `fn(*args, **kwargs)`; blocks while the queue is full.

        Args:
            fn: The job.
            *args: Positional arguments for `fn`.
            job_name: Name used in error reports. Defaults to the function's qualified name.
            **kwargs: Keyword arguments for `fn`.
        """
        if not callable(fn):
            raise TypeError(
                f"Invalid value for argument `fn`: expected a callable, received {fn!r}."
            )
        name = job_name or getattr(fn, "__qualname__", None) or repr(fn)
        if self._synchronous or threading.current_thread() is self._thread:
            with self._cond:
                self._pending += 1
            self._run_job(name, fn, args, kwargs)
            return
        with self._lifecycle:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            with self._cond:
                self._pending += 1
            self._queue.put((name, fn, args, kwargs))  # blocks when full: backpressure

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until every submitted job has finished, leaving their errors in place.

        Args:
            timeout: Seconds to wait at most; 0 only checks. Defaults to `None` (no limit).

        Returns:
            True when no job is pending, False when jobs are still running after `timeout`.

        Raises:
            RuntimeError: Called from a job (it would wait for itself).
        """
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("A BackgroundWorker job cannot wait for its own worker's jobs.")
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def take_errors(self) -> list[JobError]:
        """Returns the errors of jobs that raised since the last call (or `drain()`), at once.

        Does not wait: a job still running reports its error to a later call.
        """
        with self._cond:
            errors, self._errors = self._errors, []
        return errors

    def drain(self, timeout: float | None = None) -> list[JobError]:
        """Waits until every submitted job has finished.

        Args:
            timeout: Seconds to wait at most. Defaults to `None` (no limit).

        Returns:
            The errors of jobs that raised since the last `drain()`, oldest first.

        Raises:
            TimeoutError: Jobs are still running after `timeout` seconds; their errors are kept
                for the next `drain()`.
            RuntimeError: Called from a job (it would wait for itself).
        """
        if not self.wait(timeout):
            raise TimeoutError(f"{self.pending} background job(s) still running after {timeout} s.")
        return self.take_errors()

    def close(self, timeout: float | None = None) -> list[JobError]:
        """Drains, then stops the thread. Idempotent; a later `submit` starts a new thread.

        Args:
            timeout: Seconds to wait for pending jobs at most. Defaults to `None` (no limit).

        Returns:
            The errors `drain()` returns.
        """
        errors = self.drain(timeout)
        self._stop_thread(timeout)
        return errors

    def __enter__(self) -> BackgroundWorker:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def abandon(self) -> None:
        """Gives up on the jobs still running or queued: they may finish later, or never.

        For a worker stuck on a hung file system: its daemon thread is left alone, nothing waits
        for it any more (neither `shutdown` nor interpreter exit), and the process can exit.
        """
        self._abandoned = True
        with self._lifecycle:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                try:  # the thread ends (and lets go of everything) once its jobs are done
                    self._queue.put_nowait(_STOP)
                except queue.Full:
                    pass

    def shutdown(self, timeout: float) -> bool:
        """Stops the thread if every job finishes within `timeout` seconds, else abandons it.

        Never waits longer than `timeout` (plus the thread's own exit) and never raises; the jobs'
        errors stay for `take_errors()`.

        Returns:
            True when the thread was stopped, False when it was abandoned.
        """
        if self._abandoned or not self.wait(timeout):
            self.abandon()
            return False
        self._stop_thread(timeout + 1.0)
        return True

    def _stop_thread(self, timeout: float | None) -> None:
        # Only once every job is done: the queue is empty, so the thread only has to return.
        with self._lifecycle:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lifecycle:  # submit enqueues under it: no job can slip in unseen
                    if self._queue.empty():
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                continue
            if item is _STOP:
                return
            self._run_job(*item)
            # An idle thread must not keep its last job (and so the callback and the model that
            # the job's bound method reaches) alive until the next job arrives.
            item = None

    def _run_job(self, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        try:
            fn(*args, **kwargs)
        except BaseException as exc:  # SystemExit too, or drain() would hang
            error = JobError(name, exc, traceback.format_exc())
            with self._cond:
                self._errors.append(error)
        finally:
            with self._cond:
                self._pending -= 1
                if self._pending == 0:
                    self._cond.notify_all()


# --------------------------------------------------------------------------------------------------
# Interpreter exit: finish queued jobs, then flush every writer.
# --------------------------------------------------------------------------------------------------

_LIVE_WORKERS: weakref.WeakSet[BackgroundWorker] = weakref.WeakSet()
_LIVE_WRITERS: weakref.WeakSet[EventWriter] = weakref.WeakSet()


def _finish_at_exit() -> None:
    deadline = time.monotonic() + _EXIT_TIMEOUT_SECONDS
    for worker in list(_LIVE_WORKERS):
        if worker._abandoned or (worker.pending == 0 and not worker._errors):
            continue
        try:
            errors = worker.drain(max(0.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            warnings.warn(
                f"keras_saliency_monitor: gave up on background jobs at exit: {exc}", stacklevel=1
            )
            continue
        for error in errors:
            warnings.warn(
                f"keras_saliency_monitor: background job {error.job_name} failed: "
                f"{error.exception!r}\n{error.traceback}",
                stacklevel=1,
            )
    for writer in list(_LIVE_WRITERS):
        try:
            if not writer.flush(timeout=_EXIT_LOCK_SECONDS):
                warnings.warn(
                    f"keras_saliency_monitor: gave up on flushing {writer!r} at exit: a write "
                    "is stuck (hung file system?)",
                    stacklevel=1,
                )
        except OSError as exc:
            warnings.warn(
                f"keras_saliency_monitor: could not flush {writer!r} at exit: {exc}", stacklevel=1
            )


atexit.register(_finish_at_exit)

"""Raw saliency maps on disk, one compressed ``.npz`` per logged epoch, for notebooks.

Layout: ``<log_dir>/saliency/arrays/epoch_0007.npz`` holds ``maps`` (N, H, W) and whatever else
was passed (class explained, logits, probe labels...), each a numpy array, plus ``epoch`` (0-d).

Why float32 and not float16: the maps are *raw* gradients (``compute_saliency`` does not
normalise), whose magnitudes vary over many orders of magnitude between models, layers and epochs
(1e-9 early in training is common). float16 flushes everything below ~6e-8 to zero and keeps only
~3 significant digits, so a notebook could not reproduce the logged numbers (focus, concentration,
stability) from the saved maps. float32 is what the monitor computed, bit for bit. Cost: 4 bytes
per pixel before compression, e.g. 16 probes at 64x64 = 256 KiB per epoch (zlib typically saves
10-30% on gradient maps); use ``every_n_epochs`` to thin out long runs.

Writes are atomic and never overwrite: the file is written under a temporary name in the same
directory, flushed to disk, then hard-linked to the final name (``os.link`` fails when that name
exists), so a process killed at any moment leaves no torn file, and an epoch file already there
(an earlier run into the same directory) is never replaced: ``save_epoch`` raises
``FileExistsError`` instead. Leftover temporary files (``.epoch_*.tmp``) of a killed writer are
ignored by :func:`load_arrays`.

Example:
    >>> from keras_saliency_monitor.storage.arrays import load_arrays
    >>> runs = load_arrays("runs/demo/clean")       # {epoch: {"maps": ..., "classes": ...}}
    >>> maps_last = runs[max(runs)]["maps"]           # (N, H, W) float32
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings

import numpy as np

__all__ = [
    "ARRAYS_SUBDIR",
    "arrays_dir",
    "atomic_file",
    "epoch_path",
    "last_saved_epoch",
    "load_arrays",
    "new_file_mode",
    "save_epoch",
]

ARRAYS_SUBDIR = os.path.join("saliency", "arrays")  # relative to the run's log_dir
_NAME = re.compile(r"^epoch_(\d+)\.npz$")
_RESERVED = ("maps", "epoch")

# fdatasync skips the timestamp update that fsync also writes; both wait for the data.
_sync = getattr(os, "fdatasync", os.fsync)


def arrays_dir(log_dir) -> str:
    """``<log_dir>/saliency/arrays``."""
    return os.path.join(os.fspath(log_dir), ARRAYS_SUBDIR)


def epoch_path(log_dir, epoch: int) -> str:
    """Path of one epoch's file, e.g. ``<log_dir>/saliency/arrays/epoch_0007.npz``."""
    return os.path.join(arrays_dir(log_dir), f"epoch_{int(epoch):04d}.npz")


def _check_epoch(epoch) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(
            f"Invalid value for argument `epoch`: expected an int >= 0, received {epoch!r}."
        )
    return int(epoch)


def save_epoch(log_dir, epoch: int, maps, /, **extra) -> str:
    """Saves one epoch's raw maps (and extra arrays) atomically as a compressed ``.npz``.

    Args:
        log_dir: the run's log directory (the ``log_dir`` given to ``SaliencyMonitor``); the file
            goes to ``<log_dir>/saliency/arrays/epoch_0007.npz``.
        epoch: the 0-based epoch, as logged (the TensorBoard step).
        maps: (N, H, W) real array of raw saliency maps; stored as float32.
        **extra: more arrays to store beside the maps, e.g. ``classes=(N,) int``,
            ``logits=(N, K)``, ``labels=(N,)``, ``indices=(N,)``. Stored as given (``np.asarray``);
            object arrays are refused, so files load without pickle. Names ``maps`` and
            ``epoch`` are reserved.

    Returns:
        The path of the written file.

    Raises:
        ValueError, TypeError: invalid ``epoch``, ``maps`` or extra arrays.
        FileExistsError: the epoch's file exists already (it is never overwritten).
        OSError: the directory or the file cannot be written (nothing is left behind).

    Example:
        >>> save_epoch("runs/exp1", 7, explanation.maps, classes=explanation.classes)
        'runs/exp1/saliency/arrays/epoch_0007.npz'
    """
    epoch = _check_epoch(epoch)
    arr = np.asarray(maps)
    if arr.ndim != 3 or arr.dtype.kind not in "biuf":
        raise ValueError(
            "Invalid value for argument `maps`: expected a real (N, H, W) array, received "
            f"shape {arr.shape} dtype {arr.dtype}."
        )
    payload = {"maps": arr.astype(np.float32, copy=False), "epoch": np.asarray(epoch, np.int64)}
    for name, value in extra.items():
        if name in _RESERVED:
            raise ValueError(f"Invalid extra array name {name!r}: {_RESERVED} are reserved.")
        value = np.asarray(value)
        if value.dtype.kind == "O":
            raise TypeError(
                f"Invalid value for extra array `{name}`: expected a numeric or string array, "
                "received dtype=object (it would need pickle to load)."
            )
        payload[name] = value

    final = epoch_path(os.fspath(log_dir), epoch)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    try:  # the permissions of the event files beside it (mkstemp alone would give 0600)
        with atomic_file(final, prefix=f".epoch_{epoch:04d}.", mode=new_file_mode()) as f:
            np.savez_compressed(f, **payload)  # a file object: numpy adds no ".npz" suffix
    except FileExistsError:
        raise FileExistsError(
            f"{final!r} exists already: saved arrays are never overwritten. Use a new log_dir "
            "or move the old run's arrays away."
        ) from None
    return final


@contextlib.contextmanager
def atomic_file(path: str, *, prefix: str, overwrite: bool = False, mode: int | None = None):
    """A binary file that becomes ``path`` only when the ``with`` block ends without an error.

    Written as ``prefix``...``.tmp`` in the same directory, flushed to disk, given permissions
    ``mode`` (None: 0600), then renamed over ``path`` (``overwrite``) or hard-linked to it, which
    raises ``FileExistsError`` instead of replacing. Whatever fails, no temporary file is left.
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            _sync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if not overwrite:
            try:
                os.link(tmp, path)  # atomic, and fails with FileExistsError instead of replacing
                return
            except OSError as err:  # or a file system without hard links: check, then rename
                if isinstance(err, FileExistsError) or os.path.exists(path):
                    raise FileExistsError(f"{path!r} exists already") from None
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # gone already once renamed; the link's twin otherwise


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file here: 0666 less the process's umask."""
    try:  # Linux: read it without changing it (os.umask would, for every thread, for a moment)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def load_arrays(log_dir) -> dict[int, dict[str, np.ndarray]]:
    """Loads every saved epoch of a run; a file that cannot be read is skipped with a warning.

    Args:
        log_dir: the run's log directory (as given to ``SaliencyMonitor``).

    Returns:
        ``{epoch: {"maps": (N, H, W) float32, "epoch": 0-d int64, **extra}}`` in epoch order;
        empty when nothing was saved.

    Warns:
        RuntimeWarning: naming each epoch file that is corrupt or unreadable (the others load).
    """
    directory = arrays_dir(log_dir)
    if not os.path.isdir(directory):
        return {}
    found = []
    for name in os.listdir(directory):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    out = {}
    for epoch, path in sorted(found):
        try:
            with np.load(path, allow_pickle=False) as data:
                out[epoch] = {key: data[key] for key in data.files}
        except Exception as err:  # noqa: BLE001 - zip, zlib, npy header and OS errors alike
            warnings.warn(
                f"load_arrays: skipped {path!r}, which cannot be read ({type(err).__name__}: "
                f"{err}); the other epochs are loaded.",
                RuntimeWarning,
                stacklevel=2,
            )
    return out


def last_saved_epoch(log_dir) -> int | None:
    """The largest epoch (step) saved under ``log_dir``, or None when nothing was saved."""
    try:
        names = os.listdir(arrays_dir(log_dir))
    except OSError:
        return None
    epochs = [int(m.group(1)) for m in map(_NAME.match, names) if m]
    return max(epochs, default=None)

"""The fixed probe set: drawn once from arrays, a tf.data.Dataset or a keras PyDataset.

Probes are sampled once, stratified by class where labels exist, with their own seeded
``numpy.random.Generator`` (NumPy's global RNG is never touched), and stay fixed for the run so that
a change in the picture is a change in the model. Masks (``(N, H, W)`` arrays, ``(N, 4)`` boxes or a
callable) are sampled with the same indices.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from keras_saliency_monitor.checks import positive_int

# How many examples we read from a dataset to sample probes from. Stratification needs labels of
# the pool, so a huge or infinite dataset is read only this far.
MAX_POOL = 4096


class ProbeSet(NamedTuple):
    """The probes of a run."""

    x: np.ndarray  # (N, H, W, C) float32, exactly what the model sees
    labels: np.ndarray | None  # (N,) int class ids, or None when there are no class labels
    masks: np.ndarray | None  # (N, H, W) float32 in [0, 1], or None
    indices: np.ndarray  # (N,) positions of the probes in the pool read from probe_data


def _bad(argument, expected, received):
    return ValueError(f"Invalid value for argument `{argument}`: expected {expected}, {received}.")


def _split(element):
    """(x, y), (x,), (x, y, w) or x -> (x, y or None)."""
    if isinstance(element, dict):
        raise TypeError(
            "Invalid type for argument `probe_data`: dict inputs are not supported; pass images "
            "as an array (N, H, W, C) or (x, y)."
        )
    if isinstance(element, (tuple, list)):
        if len(element) == 0:
            raise _bad("probe_data", "(x, y) or x", "received an empty tuple")
        return element[0], (element[1] if len(element) > 1 else None)
    return element, None


def _read_tf_dataset(ds):
    xs, ys = [], []
    count = 0
    for element in ds:
        x, y = _split(element)
        x = np.asarray(x)
        # An unbatched image dataset yields rank-3 elements; add the batch axis.
        batched = x.ndim == 4
        if not batched:
            x = x[None]
            y = None if y is None else np.asarray(y)[None]
        xs.append(x)
        ys.append(None if y is None else np.asarray(y))
        count += len(x)
        if count >= MAX_POOL:
            break
    return xs, ys


def _read_py_dataset(ds):
    xs, ys = [], []
    count = 0
    n = len(ds)
    for i in range(n if n is not None else 10**9):
        try:
            element = ds[i]
        except IndexError:
            break
        x, y = _split(element)
        xs.append(np.asarray(x))
        ys.append(None if y is None else np.asarray(y))
        count += len(xs[-1])
        if count >= MAX_POOL:
            break
    return xs, ys


def read_pool(probe_data):
    """Read probe_data into (x (M, ...), y (M, ...) or None) numpy arrays."""
    if probe_data is None:
        raise _bad(
            "probe_data",
            "images (N, H, W, C), (x, y), a tf.data.Dataset or a PyDataset",
            "received None",
        )
    if isinstance(probe_data, (str, bytes)):
        raise TypeError(
            "Invalid type for argument `probe_data`: expected images (N, H, W, C), (x, y), a "
            f"tf.data.Dataset or a keras PyDataset, received a string {probe_data[:40]!r}. Load "
            "the images into an array first."
        )
    kind = type(probe_data).__module__ + "." + type(probe_data).__name__
    if "tensorflow" in kind and hasattr(probe_data, "element_spec"):
        xs, ys = _read_tf_dataset(probe_data)
    elif hasattr(probe_data, "__getitem__") and hasattr(probe_data, "num_batches"):
        xs, ys = _read_py_dataset(probe_data)
    else:
        x, y = _split(probe_data)
        xs, ys = [np.asarray(x)], [None if y is None else np.asarray(y)]
    if not xs:
        raise _bad("probe_data", "at least one image", "received an empty dataset")
    if len(xs) == 1:  # an array given as is: no copy of what may be a large pool
        return xs[0], ys[0]
    try:
        x = np.concatenate(xs, axis=0)
    except ValueError as err:
        raise _bad("probe_data", "images of one shape", f"got {err}") from None
    has_y = all(y is not None for y in ys)
    y = np.concatenate(ys, axis=0) if has_y else None
    return x, y


def check_images(x, argument="probe_data") -> np.ndarray:
    """Validate an image batch and return it as float32 (N, H, W, C)."""
    return _as_float32(_check_image_pool(x, argument), argument)


def _check_image_pool(x, argument="probe_data") -> np.ndarray:
    """Validate an image pool without copying it: (N, H, W, C) in its own dtype.

    A large uint8 pool (say 10,000 validation images) is never converted to float32 as a whole:
    only the drawn probes are (see :func:`select_probes`).
    """
    if x.dtype.kind in "OSUV":
        raise TypeError(
            f"Invalid type for argument `{argument}`: expected numeric images, received an array "
            f"of dtype {x.dtype}."
        )
    if x.dtype.kind == "c":
        raise TypeError(
            f"Invalid type for argument `{argument}`: complex images are not supported."
        )
    if x.ndim == 3:
        # (N, H, W): grayscale without a channel axis.
        x = x[..., None]
    if x.ndim != 4:
        raise _bad(
            argument, "a batch of images (N, H, W, C) or (N, H, W)", f"received shape {x.shape}"
        )
    if len(x) == 0:
        raise _bad(argument, "at least one image", "received an empty array")
    if x.dtype.kind == "f":
        # Checked in slices of about 64 MB: the boolean mask of a whole pool can be large.
        step = max(1, (64 << 20) // max(1, x[0].nbytes))
        bad = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            finite = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
            bad.extend((np.flatnonzero(~finite) + start).tolist())
            if len(bad) >= 10:
                break
        if bad:
            raise _bad(
                argument, "finite pixel values", f"received NaN or inf in image(s) {bad[:10]}"
            )
    return x


def _as_float32(x, argument="probe_data") -> np.ndarray:
    out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(out)):  # float64 values beyond float32's range
        bad = np.flatnonzero(~np.isfinite(out).reshape(len(out), -1).all(axis=1))
        raise _bad(
            argument,
            "finite pixel values within float32's range",
            f"received values that overflow float32 in image(s) {bad[:10].tolist()}",
        )
    return out


def class_labels(y, n) -> np.ndarray | None:
    """Sparse (N,)/(N,1) or one-hot (N, K) labels -> (N,) int; None for non-class targets."""
    if y is None:
        return None
    y = np.asarray(y)
    if len(y) != n:
        raise _bad("probe_data", f"as many labels as images ({n})", f"received {len(y)} labels")
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1).astype(np.int64)  # one-hot (or soft) labels
    y = y.reshape(n, -1)[:, 0] if y.ndim > 1 else y
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.equal(np.mod(y, 1), 0))):
        return y.astype(np.int64)
    return None  # regression targets: no classes to stratify by


def stratified_indices(labels, pool_size, num_probes, seed) -> np.ndarray:
    """Seeded choice of ``num_probes`` indices, classes interleaved so each is represented.

    Within each class the order is a seeded permutation; probes are then taken round-robin over
    the classes (in class order), so with k classes and N probes each class gets N/k (+-1) when it
    has enough examples. Returned indices are sorted by class, then by draw.
    """
    rng = np.random.default_rng(seed)
    n = min(num_probes, pool_size)
    if labels is None:
        return np.sort(rng.permutation(pool_size)[:n])
    classes = np.unique(labels)
    queues = [list(rng.permutation(np.nonzero(labels == c)[0])) for c in classes]
    chosen = []
    while len(chosen) < n:
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop(0))
    chosen = np.asarray(chosen)
    return chosen[np.lexsort((np.arange(len(chosen)), labels[chosen]))]


def _mask_array(masks, x, y, idx, argument="masks"):
    """Masks of the probes ``idx`` as float32 (n, H, W), from arrays, boxes or a callable.

    Arrays and boxes are checked against the whole pool (one mask per image of probe_data); a
    callable is called for the drawn probes only.
    """
    m, h, w = x.shape[0], x.shape[1], x.shape[2]
    if callable(masks):
        out = np.stack(
            [
                np.asarray(masks(_as_float32(x[i : i + 1])[0], None if y is None else y[i]))
                for i in idx
            ]
        )
        expected = len(idx)
    else:
        out = np.asarray(masks)
        expected = m
    if out.ndim == 2 and out.shape[1] == 4 and not (out.shape == (h, w)):
        from keras_saliency_monitor import metrics

        out = metrics.masks_from_boxes(out, h, w, name=argument)
    if out.ndim == 4 and out.shape[-1] == 1:
        out = out[..., 0]
    if out.ndim != 3 or out.shape[1:] != (h, w):
        raise _bad(
            argument,
            f"masks shaped (N, H, W) = (N, {h}, {w}) or boxes (N, 4)",
            f"received shape {out.shape}",
        )
    if out.shape[0] != expected:
        raise _bad(argument, f"one mask per probe-data image ({m})", f"received {out.shape[0]}")
    if out.dtype.kind not in "biuf":
        raise TypeError(
            f"Invalid type for argument `{argument}`: expected boolean or numeric masks, "
            f"received dtype {out.dtype}."
        )
    low, high = out.min(), out.max()  # NaN fails both comparisons below
    if not (low >= 0 and high <= 1):
        raise _bad(
            argument,
            "boolean masks or floats in [0, 1]",
            f"received values in [{np.nanmin(out)}, {np.nanmax(out)}]",
        )
    chosen = out if callable(masks) else out[idx]
    return np.ascontiguousarray(chosen, dtype=np.float32)


def select_probes(probe_data, num_probes=16, seed=0, masks=None) -> ProbeSet:
    """Read ``probe_data`` and draw the fixed probe set.

    Args:
        probe_data: images (N, H, W, C) or (N, H, W); a tuple (x, y) with sparse or one-hot labels;
            a ``tf.data.Dataset`` of x or (x, y), batched or not; or a ``keras.utils.PyDataset``.
            At most ``MAX_POOL`` examples are read from a dataset.
        num_probes: how many probes. When fewer examples exist, all are used (with a warning).
        seed: seed of the draw.
        masks: optional object masks aligned with probe_data: (N, H, W) bool/float, (N, 4) boxes
            ``(y0, x0, y1, x1)`` in pixels, or a callable ``(x_i, y_i) -> (H, W)`` mask.

    Returns:
        A :class:`ProbeSet`.
    """
    num_probes = positive_int("num_probes", num_probes)
    x, y = read_pool(probe_data)
    x = _check_image_pool(x)  # validated in place; only the probes are converted to float32
    labels = class_labels(y, len(x))
    if len(x) < num_probes:
        warnings.warn(
            f"probe_data holds {len(x)} images, fewer than num_probes={num_probes}; all of them "
            "are used as probes.",
            stacklevel=3,
        )
    idx = stratified_indices(labels, len(x), num_probes, seed)
    return ProbeSet(
        x=_as_float32(x[idx]),
        labels=None if labels is None else labels[idx],
        masks=None if masks is None else _mask_array(masks, x, y, idx),
        indices=idx,
    )

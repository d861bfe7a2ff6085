"""The fixed probe set: drawn once from arrays, a tf.data.Dataset or a keras PyDataset.

Probes are sampled once, stratified by class where labels exist, with their own seeded
``numpy.random.Generator`` (NumPy's global RNG is never touched), and stay fixed for the run so that
a change in the picture is a change in the model. Masks (``(N, H, W)`` arrays, ``(N, 4)`` boxes or a
callable) are sampled with the same indices.
"""

from __future__ import annotations

import bisect
import inspect
import operator
import warnings
from typing import NamedTuple

import numpy as np

from keras_saliency_monitor.attribution import checks
from keras_saliency_monitor.attribution.checks import positive_int

# How many examples we read from a dataset to sample probes from. Stratification needs labels of
# the pool, so a huge or infinite dataset is read only this far (streamed: only the candidates
# for the draw are kept, at most `num_probes` images; see `_StreamDraw`).
MAX_POOL = 4096

# Above this many probes, warn: every logged epoch renders and writes each probe's tile (measured:
# 2,000 probes of 64x64 cost about 25 MB of events per epoch and +815 MB of memory).
MANY_PROBES = 256

_CHANNELS = (1, 2, 3, 4)  # plausible channel counts: gray, gray + alpha, RGB, RGBA


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
            "as an array (N, H, W, C) or (x, y), e.g. ds.map(lambda d: (d['image'], d['label']))."
        )
    if isinstance(element, (tuple, list)):
        if len(element) == 0:
            raise _bad("probe_data", "(x, y) or x", "received an empty tuple")
        x, y = element[0], (element[1] if len(element) > 1 else None)
        if isinstance(x, dict):
            raise TypeError(
                "Invalid type for argument `probe_data`: the inputs are a dict "
                f"({sorted(map(str, x))[:4]}); saliency needs a single image input. Map the data "
                "to (image, label) first, e.g. ds.map(lambda d, y: (d['image'], y))."
            )
        return x, y
    return element, None


def _images_in_a_list(data) -> bool:
    """Whether a list or tuple holds images one by one rather than (x, y).

    Same-shaped (H, W, C) arrays with a channel-like last axis, or a list of same-shaped (H, W)
    arrays, are images; (x, y) pairs have a batch and labels of other shapes.
    """
    if not isinstance(data, (list, tuple)) or len(data) < 2:
        return False
    shapes = {np.shape(item) for item in data}
    if len(shapes) != 1:
        return False
    (shape,) = shapes
    if len(shape) == 3:
        return shape[-1] in _CHANNELS
    return len(shape) == 2 and isinstance(data, list) and len(data) > 2


def _ragged_images(data) -> bool:
    """A list or tuple of single images (H, W, C) of different sizes, not (x, y)."""
    if not isinstance(data, (list, tuple)) or len(data) < 2:
        return False
    shapes = [np.shape(item) for item in data]
    return all(len(s) == 3 and s[-1] in _CHANNELS for s in shapes) and len(set(shapes)) > 1


def _is_tf_dataset(data) -> bool:
    """A tf.data.Dataset, told without importing TensorFlow."""
    return "tensorflow" in type(data).__module__ and hasattr(data, "element_spec")


def _is_iterator(data) -> bool:
    return hasattr(data, "__next__") or inspect.isgenerator(data)


def check_images(x, argument="probe_data") -> np.ndarray:
    """Validate an image batch and return it as float32 (N, H, W, C)."""
    return _as_float32(_check_image_pool(np.asarray(x), argument), argument)


def _check_dtype(x, argument):
    if x.dtype.kind in "OSUV":
        raise TypeError(
            f"Invalid type for argument `{argument}`: expected numeric images, received an array "
            f"of dtype {x.dtype}."
        )
    if x.dtype.kind == "c":
        raise TypeError(
            f"Invalid type for argument `{argument}`: complex images are not supported."
        )


def _nonfinite(x, start=0) -> list[int]:
    """Positions (offset by ``start``) of images holding NaN or inf, checked in ~64 MB slices."""
    if x.dtype.kind != "f":
        return []
    step = max(1, (64 << 20) // max(1, x[0].nbytes))
    bad = []
    for first in range(0, len(x), step):
        chunk = x[first : first + step]
        finite = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        bad.extend((np.flatnonzero(~finite) + first + start).tolist())
        if len(bad) >= 10:
            break
    return bad


def _check_image_pool(x, argument="probe_data") -> np.ndarray:
    """Validate an image pool without copying it: (N, H, W, C) in its own dtype.

    A large uint8 pool (say 10,000 validation images) is never converted to float32 as a whole:
    only the drawn probes are (see :func:`select_probes`).
    """
    _check_dtype(x, argument)
    if x.ndim == 3 and x.shape[-1] in _CHANNELS and x.shape[-1] < min(x.shape[:2]):
        raise _bad(
            argument,
            "a batch of images (N, H, W, C)",
            f"received a single image of shape {x.shape}. Pass a batch: x[None] for this one "
            "image, or several images stacked along a first axis",
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
    bad = _nonfinite(x)
    if bad:
        raise _bad(argument, "finite pixel values", f"received NaN or inf in image(s) {bad[:10]}")
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


class _Labels(NamedTuple):
    """Labels of a chunk of probe data, as class ids when they are class labels."""

    ids: np.ndarray | None  # (n,) int64 class ids, or None
    # "classes", "none" (no y), "values" (y that are not class ids, e.g. regression) or
    # "multi-hot" (rows of K values that do not name one class: several, or none)
    kind: str
    example: object  # one raw label, for messages


def _string_ids(y, class_names):
    flat = [v.decode() if isinstance(v, bytes) else str(v) for v in y.reshape(len(y), -1)[:, 0]]
    if class_names is None:
        raise ValueError(
            "Invalid value for argument `class_names`: probe_data has string labels (e.g. "
            f"{flat[0]!r}); pass class_names=[...] listing them in the model's class order, so "
            "that each label maps to the class index the model predicts."
        )
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({v for v in flat if v not in index})
    if unknown:
        raise ValueError(
            f"Invalid value for argument `class_names`: probe_data has labels {unknown[:5]} "
            f"that are not in class_names={list(class_names)[:10]}. List every class, in the "
            "model's class order."
        )
    return np.asarray([index[v] for v in flat], np.int64)


def _labels(y, n, class_names=None) -> _Labels:
    """Sparse (n,)/(n, 1), one-hot (n, K) or string labels -> class ids; other y -> "values"."""
    if y is None:
        return _Labels(None, "none", None)
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != n:
        count = "a scalar" if y.ndim == 0 else f"{len(y)} labels"
        raise _bad("probe_data", f"as many labels as images ({n})", f"received {count}")
    example = y.reshape(n, -1)[0, 0] if y.size else None
    example = example.item() if isinstance(example, np.generic) else example  # for messages
    if y.dtype.kind in "USO":
        return _Labels(_string_ids(y, class_names), "classes", example)
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "biuf":
        # One-hot (or smoothed) rows have one largest entry; multi-hot rows (several classes)
        # and all-zero rows (none) do not, and argmax would keep one class of them silently.
        top = y.max(axis=1, keepdims=True)
        one = ((y == top).sum(axis=1) == 1) & (top[:, 0] > 0)
        if not one.all():
            row = int(np.flatnonzero(~one)[0])
            return _Labels(None, "multi-hot", f"e.g. {y[row][:8].tolist()}")
        return _Labels(np.argmax(y, axis=1).astype(np.int64), "classes", example)  # one-hot
    if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1) or y.dtype.kind not in "biuf":
        return _Labels(None, "values", example)  # e.g. segmentation targets: not classes
    flat = y.reshape(n)
    if flat.dtype.kind in "iub" or (np.all(np.isfinite(flat)) and np.all(np.mod(flat, 1) == 0)):
        return _Labels(flat.astype(np.int64), "classes", example)
    return _Labels(None, "values", example)  # regression targets: no classes to stratify by


def class_labels(y, n, class_names=None) -> np.ndarray | None:
    """Sparse (N,)/(N,1), one-hot (N, K) or string labels -> (N,) int; None for non-class y."""
    return _labels(y, n, class_names).ids


def _draw_keys(labels, keys, num_probes) -> np.ndarray:
    """Positions drawn from a pool with one random key per example (see stratified_indices)."""
    n = min(num_probes, len(keys))
    if labels is None:
        return np.sort(np.argsort(keys, kind="stable")[:n])
    order = np.lexsort((keys, labels))  # by class, then by key: a seeded permutation per class
    sorted_labels = labels[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, counts)  # position within its class
    take = np.lexsort((sorted_labels, rank))[:n]  # round-robin: rank 0 of every class first
    take = take[np.lexsort((rank[take], sorted_labels[take]))]  # by class, then by draw
    return order[take]


def stratified_indices(labels, pool_size, num_probes, seed) -> np.ndarray:
    """Seeded choice of ``num_probes`` indices, classes interleaved so each is represented.

    Every example gets a key from ``np.random.default_rng(seed).random(pool_size)``; within each
    class the order by key is a seeded permutation, and probes are taken round-robin over the
    classes (in class order), so with k classes and N probes each class gets N/k (+-1) when it
    has enough examples. Without labels: the N examples with the smallest keys. Returned indices
    are sorted by class, then by draw (without labels: ascending). A stream of the same pool
    (:class:`_StreamDraw`) draws exactly the same indices.
    """
    keys = np.random.default_rng(seed).random(pool_size)
    return _draw_keys(None if labels is None else np.asarray(labels), keys, num_probes)


# Kept: pruning held images to _draw_keys' draw instead costs 169 ms vs ours 8 ms (4096, unbatched).
class _StreamDraw:
    """The draw of :func:`stratified_indices`, in one pass over a stream of chunks.

    Keeps only the examples that are among the first ``num_probes`` in the round-robin order
    (rank within class, then class) of what was seen this far: an example that falls out can
    never come back, since ranks only grow as examples arrive. So at most ``num_probes``
    images are held, whatever the pool's size or number of classes.
    """

    def __init__(self, num_probes, seed):
        self._rng = np.random.default_rng(seed)
        self._n = num_probes
        self._kept = {}  # class -> [(key, position, image, raw label)] sorted by key
        self._cut = {}  # class -> smallest key that fell out (later larger keys are out too)
        self._size = 0
        self.seen = 0

    def add(self, x, ids, y):
        """Offer a chunk: images (b, ...), class ids (b,) or None, raw labels (b, ...) or None."""
        keys = self._rng.random(len(x))  # the same stream of keys as one call for the pool
        for j, key in enumerate(keys.tolist()):
            c = 0 if ids is None else int(ids[j])
            if key >= self._cut.get(c, 2.0):
                continue
            entries = self._kept.setdefault(c, [])
            item = (key, self.seen + j, np.array(x[j]), None if y is None else np.array(y[j]))
            bisect.insort(entries, item, key=operator.itemgetter(0))
            self._size += 1
            if self._size > self._n:  # drop the last in (rank, class) order
                last = max(self._kept, key=lambda k: (len(self._kept[k]), k))
                dropped = self._kept[last].pop()
                self._cut[last] = min(self._cut.get(last, 2.0), dropped[0])
                self._size -= 1
        self.seen += len(x)

    def result(self, by_position):
        """(positions, images, raw labels or None, class ids) in stratified_indices' order.

        ``by_position``: order by position in the pool, as stratified_indices does without labels.
        """
        items = [(c, rank, e) for c, es in self._kept.items() for rank, e in enumerate(es)]
        items.sort(key=lambda t: (t[0], t[1]))
        if not items:
            return np.zeros(0, np.int64), None, None, None
        positions = np.asarray([e[1] for _, _, e in items], np.int64)
        if by_position:
            order = np.argsort(positions)
            items = [items[i] for i in order]
            positions = positions[order]
        x = np.stack([e[2] for _, _, e in items])
        y = None if items[0][2][3] is None else np.stack([e[3] for _, _, e in items])
        ids = np.asarray([c for c, _, _ in items], np.int64)
        return positions, x, y, ids


def _chunks(probe_data):
    """Yield (x, y) chunks of a tf.data.Dataset or keras PyDataset, x batched (b, ...)."""
    if _is_tf_dataset(probe_data):
        spec = probe_data.element_spec
        spec_x = spec[0] if isinstance(spec, (tuple, list)) and spec else spec
        spec_shape = getattr(spec_x, "shape", None)
        batched = None
        for element in probe_data:
            x, y = _split(element)
            x = np.asarray(x)
            y = None if y is None else np.asarray(y)
            if batched is None:
                batched = _is_batched(x, y, spec_shape)
            if not batched:
                x = x[None]
                y = None if y is None else y[None]
            yield x, y
    else:
        n = len(probe_data)
        for i in range(n if n is not None else 10**9):
            try:
                element = probe_data[i]
            except IndexError:
                break
            x, y = _split(element)
            yield np.asarray(x), None if y is None else np.asarray(y)


def _is_batched(x, y, spec_shape) -> bool:
    """Whether a tf.data element is a batch: (B, H, W, C), or (B, H, W) grayscale."""
    if x.ndim != 3:
        return x.ndim >= 4
    # (H, W, C) image or (B, H, W) grayscale batch: labels with one entry per row mean a batch.
    if y is not None:
        return y.ndim >= 1 and y.shape[0] == x.shape[0]
    leading_free = spec_shape is not None and spec_shape.rank and spec_shape[0] is None
    if leading_free and spec_shape[-1] is not None and spec_shape[-1] not in _CHANNELS:
        return True
    return x.shape[-1] not in _CHANNELS


def _stream_probes(probe_data, num_probes, seed, class_names, stratify=True):
    """One pass over a dataset: (positions, probe x, raw y, _Labels of the probes, pool size)."""
    draw = _StreamDraw(num_probes, seed)
    kind = None  # decided by the first chunk with labels, for the whole pool
    shape = None
    example = None
    for x, y in _chunks(probe_data):
        _check_dtype(x, "probe_data")
        if x.ndim == 3:
            x = x[..., None]  # (b, H, W) grayscale
        if x.ndim != 4:
            raise _bad(
                "probe_data",
                "batches of images (B, H, W, C) or (B, H, W)",
                f"received an element of shape {x.shape}",
            )
        if shape is None:
            shape = x.shape[1:]
        elif x.shape[1:] != shape:
            raise _bad(
                "probe_data",
                f"images of one shape {shape}",
                f"received a batch of shape {x.shape} after {draw.seen} images",
            )
        take = min(len(x), MAX_POOL - draw.seen)
        x = x[:take]
        y = None if y is None else y[:take]
        bad = _nonfinite(x, draw.seen)
        if bad:
            raise _bad(
                "probe_data", "finite pixel values", f"received NaN or inf in image(s) {bad}"
            )
        labels = _labels(y, len(x), class_names)
        if example is None:
            example = labels.example
        if kind is None:
            kind = labels.kind
        elif kind == "classes" and labels.kind in ("values", "multi-hot"):
            # Integer-valued floats (or one-hot rows) first, fractions (or multi-hot rows)
            # later: these are not classes after all. Draw again, over the same examples,
            # without stratifying.
            if stratify:
                return _stream_probes(probe_data, num_probes, seed, class_names, stratify=False)
            kind, example = labels.kind, labels.example
        draw.add(x, labels.ids if stratify and kind == "classes" else None, y)
        if draw.seen >= MAX_POOL:
            break
    if draw.seen == 0:
        raise _bad("probe_data", "at least one image", "received an empty dataset")
    positions, px, py, ids = draw.result(by_position=not (stratify and kind == "classes"))
    if kind != "classes" or not stratify:
        final = _Labels(None, "values" if kind == "classes" else kind, example)
    else:
        final = _Labels(ids, "classes", example)
    return positions, px, py, final, draw.seen


def _require_labels(labels: _Labels):
    if labels.kind == "multi-hot":
        raise ValueError(
            'Invalid value for argument `target`: target="label" needs one class per image, but '
            f"the labels in probe_data are multi-hot rows ({labels.example}: several classes, or "
            "none). Pass one class id (or one-hot row) per image, target=<class index> for one "
            'class, or target="predicted".'
        )
    if labels.kind == "none":
        raise ValueError(
            'Invalid value for argument `target`: target="label" needs class labels, and '
            'probe_data has none; pass probe_data=(x, y) or use target="predicted".'
        )
    if labels.kind == "values":
        raise ValueError(
            'Invalid value for argument `target`: target="label" needs class labels (int class '
            "ids, or one-hot rows), but the labels in probe_data are not class ids (e.g. "
            f"{labels.example!r}: regression targets?). Pass int class ids, or use "
            'target="predicted".'
        )


def _boxes_or_masks(out, h, w, argument):
    """(N, 4) boxes in pixels -> masks; normalised [0, 1] boxes are refused (1-pixel masks)."""
    if not (out.ndim == 2 and out.shape[1] == 4 and out.shape != (h, w)):
        return out
    from keras_saliency_monitor.signals import metrics

    if (
        out.dtype.kind == "f"
        and max(h, w) > 4
        and out.size
        and np.all(np.isfinite(out))
        and out.min() >= 0
        and out.max() <= 1
    ):
        raise _bad(
            argument,
            f"boxes (y0, x0, y1, x1) in pixels of the {h}x{w} images",
            "received boxes whose coordinates all lie in [0, 1]: normalised boxes, which would "
            f"become masks of about one pixel. Pass boxes * [{h}, {w}, {h}, {w}]",
        )
    return metrics.masks_from_boxes(out, h, w, name=argument)


def _mask_array(masks, px, py, idx, pool_size, argument="masks"):
    """Masks of the probes as float32 (n, H, W), from arrays, boxes or a callable.

    Arrays and boxes must hold one mask per example of probe_data (``pool_size``) and are indexed
    with the probes' positions ``idx``; a callable is called for the drawn probes only, with the
    probe images ``px`` and raw labels ``py``.
    """
    h, w = px.shape[1], px.shape[2]
    if callable(masks):
        out = []
        for k, i in enumerate(idx):
            try:
                mask = masks(_as_float32(px[k : k + 1])[0], None if py is None else py[k])
            except Exception as err:
                raise ValueError(
                    f"Invalid value for argument `{argument}`: the mask callable raised "
                    f"{type(err).__name__}: {err} for probe {k} (example {int(i)} of probe_data). "
                    "It is called as masks(x_i, y_i) with one image (H, W, C) and its label (or "
                    "None), and must return that image's (H, W) mask."
                ) from err
            out.append(np.asarray(mask))
        shapes = sorted({m.shape for m in out})
        if len(shapes) > 1:
            raise _bad(argument, f"(H, W) = ({h}, {w}) masks from the callable", f"got {shapes}")
        out = np.stack(out)
        expected = len(idx)
    else:
        out = _boxes_or_masks(np.asarray(masks), h, w, argument)
        expected = pool_size
    if out.ndim == 4 and out.shape[-1] == 1:
        out = out[..., 0]
    if out.ndim != 3 or out.shape[1:] != (h, w):
        raise _bad(
            argument,
            f"masks shaped (N, H, W) = (N, {h}, {w}) or boxes (N, 4)",
            f"received shape {out.shape}",
        )
    if out.shape[0] != expected:
        raise _bad(
            argument, f"one mask per probe-data image ({expected})", f"received {out.shape[0]}"
        )
    if out.dtype.kind not in "biuf":
        raise TypeError(
            f"Invalid type for argument `{argument}`: expected boolean or numeric masks, "
            f"received dtype {out.dtype}."
        )
    # Every mask given is checked (not only the drawn ones), in slices of about 64 MB.
    positions = idx if callable(masks) else np.arange(len(out))
    step = max(1, (64 << 20) // max(1, out[0].nbytes))
    low, high = np.inf, -np.inf
    for first in range(0, len(out), step):
        chunk = out[first : first + step].reshape(-1, h * w)
        if chunk.dtype.kind == "f":
            nan = np.flatnonzero(np.isnan(chunk).any(axis=1))
            if nan.size:
                raise _bad(
                    argument,
                    "boolean masks or floats in [0, 1] with no NaN",
                    f"received NaN in the masks of example(s) "
                    f"{positions[nan + first][:10].tolist()} of probe_data",
                )
        low, high = min(low, chunk.min()), max(high, chunk.max())
    if not (low >= 0 and high <= 1):
        raise _bad(
            argument, "boolean masks or floats in [0, 1]", f"received values in [{low}, {high}]"
        )
    chosen = out if callable(masks) else out[idx]
    chosen = np.ascontiguousarray(chosen, dtype=np.float32)
    flat = chosen.reshape(len(chosen), -1)
    empty = np.flatnonzero(flat.max(axis=1) == 0)
    if len(empty) == len(chosen):
        raise _bad(
            argument,
            "masks that mark each probe's object",
            f"received all-zero masks for every drawn probe (examples {idx[:10].tolist()}...): "
            "every mask-based number would be NaN. Check the masks' alignment with probe_data "
            "and their encoding (e.g. 255 for the object, or boxes in pixels)",
        )
    if len(empty):
        warnings.warn(
            f"The masks of {len(empty)} of {len(chosen)} probes are empty (examples "
            f"{idx[empty][:10].tolist()} of probe_data): their focus numbers are NaN and left "
            "out of the means.",
            UserWarning,
            stacklevel=4,
        )
    return chosen


def _array_probes(probe_data, num_probes, seed, class_names):
    """(positions, probe x, raw y, _Labels of the probes, pool size) from in-memory arrays."""
    if _images_in_a_list(probe_data):
        x, y = np.stack([np.asarray(item) for item in probe_data]), None
    elif _ragged_images(probe_data):
        shapes = sorted({np.shape(item) for item in probe_data})
        raise TypeError(
            "Invalid type for argument `probe_data`: received a list of images of different "
            f"shapes {shapes[:4]} (ragged). Resize them to one size and stack them into one "
            "array (N, H, W, C)."
        )
    else:
        x, y = _split(probe_data)
        if isinstance(x, (list, tuple)) and _images_in_a_list(x):
            x = np.stack([np.asarray(item) for item in x])
    if _is_iterator(x):
        raise TypeError(
            "Invalid type for argument `probe_data`: received an iterator or generator "
            f"({type(x).__name__}), which can be read only once. Pass arrays (x, y), a "
            "tf.data.Dataset (e.g. tf.data.Dataset.from_generator) or a keras PyDataset."
        )
    x = np.asarray(x)
    if x.dtype.kind == "O":
        raise TypeError(
            "Invalid type for argument `probe_data`: expected numeric images (N, H, W, C), "
            f"received objects of type {type(x.flat[0]).__name__ if x.size else 'unknown'} "
            "(ragged images or a nested structure?). Stack same-sized images into one array."
        )
    x = _check_image_pool(x)  # validated in place; only the probes are converted to float32
    labels = _labels(y, len(x), class_names)
    idx = stratified_indices(labels.ids, len(x), num_probes, seed)
    py = None if y is None else np.asarray(y)[idx]
    ids = None if labels.ids is None else labels.ids[idx]
    return idx, x[idx], py, labels._replace(ids=ids), len(x)


def select_probes(
    probe_data, num_probes=16, seed=0, masks=None, *, class_names=None, require_labels=False
) -> ProbeSet:
    """Read ``probe_data`` and draw the fixed probe set.

    Args:
        probe_data: images (N, H, W, C) or (N, H, W); a tuple (x, y) with sparse, one-hot or
            string labels (multi-hot rows, with several classes or none, are not class labels:
            a warning, and the probes are drawn as for x alone); a list of same-sized images; a
            ``tf.data.Dataset`` of x or (x, y), batched or not; or a ``keras.utils.PyDataset``.
            At most ``MAX_POOL`` examples are read from a dataset, in one streaming pass that
            holds at most ``num_probes`` images (plus the batch being read).
        num_probes: how many probes. When fewer examples exist, all are used (with a warning);
            above ``MANY_PROBES`` a warning tells the cost.
        seed: seed of the draw: an int >= 0, or None for a fresh draw.
        masks: optional object masks aligned with probe_data: (N, H, W) bool/float, (N, 4) boxes
            ``(y0, x0, y1, x1)`` in pixels, or a callable ``(x_i, y_i) -> (H, W)`` mask.
        class_names: names in class order; needed to map string labels to class ids.
        require_labels: raise unless probe_data has class labels (for target="label").

    Returns:
        A :class:`ProbeSet`.
    """
    num_probes = positive_int("num_probes", num_probes)
    seed = checks.seed("seed", seed)
    if num_probes > MANY_PROBES:
        warnings.warn(
            f"num_probes={num_probes} is more than {MANY_PROBES}: every logged epoch renders and "
            "writes each probe's tile (about 12 KB of events per 64x64 probe and epoch), and the "
            "grid shows only those that fit. Consider fewer probes or every_n_epochs.",
            UserWarning,
            stacklevel=3,
        )
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
    if isinstance(probe_data, dict):
        _split(probe_data)  # raises the dict message
    streamed = _is_tf_dataset(probe_data) or (
        hasattr(probe_data, "__getitem__") and hasattr(probe_data, "num_batches")
    )
    if streamed:
        idx, px, py, labels, pool = _stream_probes(probe_data, num_probes, seed, class_names)
    else:  # an iterator is refused there, before anything is read from it
        idx, px, py, labels, pool = _array_probes(probe_data, num_probes, seed, class_names)
    if require_labels:
        _require_labels(labels)
    if labels.kind == "multi-hot":
        warnings.warn(
            "The labels in probe_data are multi-hot rows, not one class per image "
            f"({labels.example}: several classes, or none); they are not used as class ids: "
            "the probes are drawn without stratifying by class, captions show no true class, "
            "and numbers that need the true class use the predictions instead. Pass one class "
            "id (or one-hot row) per image to use labels.",
            UserWarning,
            stacklevel=3,
        )
    if pool < num_probes:
        warnings.warn(
            f"probe_data holds {pool} images, fewer than num_probes={num_probes}; all of them "
            "are used as probes.",
            stacklevel=3,
        )
    return ProbeSet(
        x=_as_float32(px),
        labels=labels.ids,
        masks=None if masks is None else _mask_array(masks, px, py, idx, pool),
        indices=idx,
    )

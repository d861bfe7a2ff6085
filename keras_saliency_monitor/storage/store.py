"""The monitor's stored data: how the callback encodes it, and the one reader of it.

Two blob-sequence summaries, under the plugin name ``"saliency"`` (so the Images dashboard does
not show them), hold what the SALIENCY dashboard and the report need to re-render any overlay
with any colormap, clip percentile or opacity, without a re-run:

- ``saliency/probe_set`` (once per fit, at its first logged step): ``[JSON, PNG images, PNG masks
  or b""]``: which probes, their labels, and the display images stacked vertically.
- ``saliency/maps`` (every logged step): ``[JSON, PNG maps]``: the raw (>= 0) saliency maps,
  quantised to 8 bits per probe (``linear8`` or ``sqrt8``) and stacked vertically, plus the
  per-probe numbers, classes and confidences of that epoch.

The full layout is in ``docs/STORAGE.md`` of the repository; the writer
side here is numpy + Pillow, the reader side goes through a TensorBoard ``DataProvider`` only, so
the dashboard (inside ``tensorboard``) and the report (:func:`open_logdir`) share every line of
reading code.

Example:
    >>> provider, ctx, eid = open_logdir("runs/demo")
    >>> run = saliency_runs(provider, ctx, eid)[0]
    >>> index = read_run(provider, ctx, eid, run)
    >>> step = index["steps"][-1]
    >>> maps = decode_maps(read_maps(provider, ctx, eid, run, step), index["epochs"][str(step)])
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "ENCODINGS",
    "MAPS_TAG",
    "PLUGIN_NAME",
    "PROBE_SET_TAG",
    "VERSION",
    "decode_images",
    "decode_maps",
    "decode_masks",
    "downsample_maps",
    "encode_maps",
    "encode_probe_set",
    "group_epochs",
    "image_blobs",
    "open_logdir",
    "peek_probe_set",
    "quantize_maps",
    "read_maps",
    "read_masks",
    "read_probe_images",
    "read_run",
    "read_run_since",
    "saliency_runs",
]

PLUGIN_NAME = "saliency"
PROBE_SET_TAG = "saliency/probe_set"
MAPS_TAG = "saliency/maps"
ALARM_TAG = "saliency/alarm"
VERSION = 1
ENCODINGS = ("linear8", "sqrt8")
_SCALAR_PREFIX = "saliency/"

# Map storage, chosen with benchmarks/storage.py (16 maps of 224x224, MobileNetV2 untrained; see
# benchmarks/README.md). Overlays re-rendered from the stored maps differ from those of the float
# maps by 0.1-0.4 RGB levels on average (p99 <= 2) with either 8-bit encoding; sqrt8 is 3x more
# exact than linear8 on heavy-tailed maps (a few large gradients, the common case) and as small.
# 112 px a side: the grid's tile size, 1/4 of the bytes of 224 px. zlib level 1: level 6 saves
# about 10% on smooth maps at 5x the encoding time.
DEFAULT_ENCODING = "sqrt8"
DEFAULT_MAX_MAP_SIDE = 112
MAPS_PNG_LEVEL = 1
# The probe images are written once per fit: compress them harder.
IMAGES_PNG_LEVEL = 6
# JPEG quality of the labelled grid in the Images dashboard (see `image_blobs`).
GRID_JPEG_QUALITY = 90


# ==================================================================================================
# Writer side: numpy -> blobs
# ==================================================================================================


def _png(array_u8: np.ndarray, compress_level: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array_u8)).save(
        out, format="PNG", compress_level=compress_level
    )
    return out.getvalue()


def _json_value(value: Any) -> Any:
    """numpy scalars/arrays -> plain Python; NaN and infinities -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [
            _json_value(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)
        ]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _json_blob(obj: dict) -> bytes:
    return json.dumps(_json_value(obj), separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_probe_set(
    images_u8,
    *,
    indices: Sequence[int],
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    masks=None,
    method: str = "vanilla",
    regression: bool = False,
    extra: dict | None = None,
) -> list[bytes]:
    """The blobs of ``saliency/probe_set``: ``[JSON, PNG images, PNG masks or b""]``.

    Args:
        images_u8: ``(N, H, W, 3)`` uint8 display images (exactly as shown).
        indices: index of each probe in ``probe_data``.
        labels: true class of each probe, or None.
        class_names: names of the classes, or None.
        masks: ``(N, H, W)`` object masks (bool or float, > 0.5 is inside), or None.
        method: the saliency method's name.
        regression: whether the model is a regression (no classes).
        extra: more JSON fields to store (added fields only; the contract's fields win).

    Returns:
        Three ``bytes``.
    """
    images = np.asarray(images_u8)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            "Invalid value for argument `images_u8`: expected a (N, H, W, 3) uint8 array, "
            f"received shape {images.shape} dtype {images.dtype}."
        )
    n, h, w, _ = images.shape
    if len(indices) != n:
        raise ValueError(
            f"Invalid value for argument `indices`: expected {n} indices (one per probe), "
            f"received {len(indices)}."
        )
    names = None if class_names is None else [str(c) for c in class_names]
    probes = []
    for k in range(n):
        label = None if labels is None else int(labels[k])
        label_name = None
        if label is not None:
            label_name = names[label] if names is not None and 0 <= label < len(names) else None
        probes.append(
            {"probe": k, "index": int(indices[k]), "label": label, "label_name": label_name}
        )
    info = dict(extra or {})
    info.update(
        version=VERSION,
        num_probes=n,
        height=h,
        width=w,
        method=str(method),
        class_names=names,
        regression=bool(regression),
        probes=probes,
    )
    mask_png = b""
    if masks is not None:
        m = np.asarray(masks)
        if m.shape != (n, h, w):
            raise ValueError(
                f"Invalid value for argument `masks`: expected shape {(n, h, w)}, received "
                f"{m.shape}."
            )
        mask = np.where(m > 0.5, np.uint8(255), np.uint8(0)).reshape(n * h, w)
        mask_png = _png(mask, IMAGES_PNG_LEVEL)
    return [_json_blob(info), _png(images.reshape(n * h, w, 3), IMAGES_PNG_LEVEL), mask_png]


def image_blobs(image_u8, quality: int = GRID_JPEG_QUALITY) -> list[bytes]:
    """One RGB image as the blobs of TensorBoard's images plugin: ``[width, height, JPEG]``.

    The layout ``tf.summary.image`` writes (the plugin detects the format of the image bytes).
    JPEG, not PNG, for the labelled grid: photos and noisy overlays hardly compress losslessly
    (16 probes at 112 px: PNG 1.0 MB in 33 ms, JPEG quality 90 0.23 MB in 2 ms, captions still
    crisp; benchmarks/storage.py). The grid is for looking; the exact data are the stored maps.
    """
    image = np.asarray(image_u8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            "Invalid value for argument `image_u8`: expected a (H, W, 3) uint8 array, received "
            f"shape {image.shape} dtype {image.dtype}."
        )
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, format="JPEG", quality=int(quality))
    h, w = image.shape[:2]
    return [str(w).encode(), str(h).encode(), out.getvalue()]


def downsample_maps(maps, max_side: int) -> np.ndarray:
    """Block-mean downsampling of ``(N, H, W)`` maps by the smallest integer factor that brings
    the longer side to at most ``max_side`` (:func:`render.downscale_images`: Pillow).

    A block mean keeps the total mass (sum over pixels times the block area), so mass-based
    numbers computed from the stored maps stay close to those of the full maps. A block cut by
    the edge is the mean of the pixels it has. Non-finite values propagate into their block.
    """
    from keras_saliency_monitor.drawing import (
        render,  # render imports matplotlib: only when writing
    )

    maps = np.asarray(maps, dtype=np.float32)
    return render.downscale_images(maps, render.tile_factor(maps.shape[1:], max_side))


def quantize_maps(maps, encoding: str = DEFAULT_ENCODING) -> tuple[np.ndarray, np.ndarray]:
    """``(N, h, w)`` maps >= 0 -> (uint8 pixels, float32 scale per map).

    ``scale`` is each map's maximum; ``q = map / scale`` is stored as ``round(255 * q)``
    ("linear8") or ``round(255 * sqrt(q))`` ("sqrt8", finer steps near zero, where most of a
    gradient map lies). Negative values count as 0. A map that is all zero or holds a non-finite
    value is stored as zeros with scale 0.
    """
    if encoding not in ENCODINGS:
        raise ValueError(
            f"Invalid value for argument `encoding`: expected one of {ENCODINGS}, received "
            f"{encoding!r}."
        )
    maps = np.asarray(maps, dtype=np.float32)
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    finite = np.isfinite(flat).all(axis=1)
    flat = np.where(finite[:, None], np.maximum(flat, 0), np.float32(0))
    scale = flat.max(axis=1) if flat.shape[1] else np.zeros(n, np.float32)
    usable = scale > 0
    q = flat / np.where(usable, scale, 1)[:, None]
    if encoding == "sqrt8":
        np.sqrt(q, out=q)
    q *= 255
    q += 0.5
    pixels = np.clip(q, 0, 255).astype(np.uint8).reshape(maps.shape)
    return pixels, np.where(usable, scale, 0).astype(np.float32)


def encode_maps(
    maps,
    *,
    step: int,
    classes: Sequence[int],
    confidences: Sequence[float] | None = None,
    outputs: Sequence[float] | None = None,
    flat: Sequence[bool] | None = None,
    non_finite: Sequence[bool] | None = None,
    per_probe: dict | None = None,
    encoding: str = DEFAULT_ENCODING,
    max_side: int = DEFAULT_MAX_MAP_SIDE,
    compress_level: int = MAPS_PNG_LEVEL,
    extra: dict | None = None,
) -> list[bytes]:
    """The blobs of ``saliency/maps`` for one logged step: ``[JSON, PNG maps]``.

    Args:
        maps: ``(N, H, W)`` raw saliency maps (>= 0; non-finite maps are flagged and stored as
            zeros).
        step: the logged step (epoch, 0-based).
        classes: explained class per probe.
        confidences: probability of the explained class per probe, or None.
        outputs: model output per probe (regression), or None.
        flat: per-probe "flat map" flags (see ``render.flat_maps``); None computes them.
        non_finite: per-probe flags of a broken map (or output); None: maps holding NaN/inf.
        per_probe: ``{name: (N,) values}`` of the per-probe numbers of this epoch.
        encoding: "linear8" or "sqrt8".
        max_side: longest side of the stored maps; larger maps are block-mean downsampled.
        compress_level: zlib level of the PNG (0-9).
        extra: more JSON fields to store.

    Returns:
        Two ``bytes``.
    """
    from keras_saliency_monitor.drawing import (
        render,  # render imports matplotlib: only when writing
    )

    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(
            f"Invalid value for argument `maps`: expected (N, H, W), received shape {maps.shape}."
        )
    n = maps.shape[0]
    broken = ~np.isfinite(maps.reshape(n, -1)).all(axis=1)
    if non_finite is not None:
        broken |= np.asarray(non_finite, bool)
    if flat is None:
        flat = render.flat_maps(maps)
    small = downsample_maps(maps, max_side)
    pixels, scale = quantize_maps(small, encoding)
    h, w = small.shape[1:]
    info = dict(extra or {})
    info.update(
        version=VERSION,
        step=int(step),
        map_height=h,
        map_width=w,
        encoding=encoding,
        scale=scale,
        classes=[int(c) for c in classes],
        confidences=None if confidences is None else list(confidences),
        outputs=None if outputs is None else list(outputs),
        flat=[bool(f) for f in flat],
        non_finite=broken,
        per_probe={k: np.asarray(v, np.float64) for k, v in (per_probe or {}).items()},
    )
    return [_json_blob(info), _png(pixels.reshape(n * h, w), compress_level)]


# ==================================================================================================
# Decoding: blobs -> numpy
# ==================================================================================================


def _unstack(png: bytes, mode: str, num_probes: int, what: str) -> np.ndarray:
    """``(N, H, W[, 3])`` from N pictures stacked vertically in one PNG, in Pillow ``mode``
    ("L": grey, "RGB": alpha dropped, grey repeated)."""
    with Image.open(io.BytesIO(png)) as image:
        stacked = np.asarray(image.convert(mode))
    if num_probes < 1 or stacked.shape[0] % num_probes:
        raise ValueError(
            f"stored {what} have height {stacked.shape[0]}, not a multiple of "
            f"num_probes={num_probes}"
        )
    return stacked.reshape(num_probes, -1, *stacked.shape[1:])


def decode_maps(png: bytes, info: dict) -> np.ndarray:
    """The stored maps of one step as float32 ``(N, h, w)``, in the units of the raw maps.

    Args:
        png: blob [1] of a ``saliency/maps`` event (:func:`read_maps`).
        info: its JSON blob [0], decoded (``read_run(...)["epochs"][str(step)]``).
    """
    encoding = info.get("encoding")
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown map encoding {encoding!r}: expected one of {ENCODINGS}")
    h, w = int(info["map_height"]), int(info["map_width"])
    scale = np.array([0.0 if s is None else s for s in info["scale"]], np.float32)
    n = len(scale)
    pixels = _unstack(png, "L", n, "maps")
    if pixels.shape != (n, h, w):
        raise ValueError(f"stored maps have shape {pixels.shape}, their JSON says {(n, h, w)}")
    q = pixels.astype(np.float32) / np.float32(255)
    if encoding == "sqrt8":
        q *= q
    return q * scale[:, None, None]


def decode_images(png: bytes, num_probes: int) -> np.ndarray:
    """The probe display images, uint8 ``(N, H, W, 3)``, from blob [1] of ``saliency/probe_set``."""
    return _unstack(png, "RGB", num_probes, "probe images")


def decode_masks(png: bytes, num_probes: int) -> np.ndarray:
    """The probes' object masks, bool ``(N, H, W)``, from blob [2] of ``saliency/probe_set``."""
    return _unstack(png, "L", num_probes, "masks") > 127


# ==================================================================================================
# Reader side: a TensorBoard DataProvider -> plain Python
# ==================================================================================================


def _filter(run: str | None, tag: str | None):
    from tensorboard.data import provider as tb_provider

    return tb_provider.RunTagFilter(
        runs=None if run is None else [run], tags=None if tag is None else [tag]
    )


def _sequence(provider, ctx, experiment_id, run: str, tag: str) -> list:
    """``BlobSequenceDatum`` of every step of ``run``/``tag``, ascending (one per step)."""
    data = provider.read_blob_sequences(
        ctx,
        experiment_id=experiment_id,
        plugin_name=PLUGIN_NAME,
        downsample=_ALL,
        run_tag_filter=_filter(run, tag),
    )
    return list(data.get(run, {}).get(tag, []))


# read_blob_sequences keeps at most `downsample` steps; the data provider keeps every step itself
# when built by open_logdir, and TensorBoard's server one keeps what its size guidance kept.
_ALL = 10**9


def _blob(provider, ctx, datum, index: int) -> bytes:
    if index >= len(datum.values):
        return b""
    return provider.read_blob(ctx, blob_key=datum.values[index].blob_key)


def _json(provider, ctx, datum) -> dict:
    return json.loads(_blob(provider, ctx, datum, 0).decode("utf-8"))


def saliency_runs(provider, ctx, experiment_id) -> list[str]:
    """Names of the runs holding ``saliency/maps``, sorted."""
    listing = provider.list_blob_sequences(
        ctx,
        experiment_id=experiment_id,
        plugin_name=PLUGIN_NAME,
        run_tag_filter=_filter(None, MAPS_TAG),
    )
    return sorted(run for run, tags in listing.items() if MAPS_TAG in tags)


def _latest_probe_set(provider, ctx, experiment_id, run, probe_set=None):
    """The ``saliency/probe_set`` datum at step ``probe_set`` (a group's key, see
    :func:`group_epochs`), or the latest one when None."""
    data = _sequence(provider, ctx, experiment_id, run, PROBE_SET_TAG)
    if probe_set is None:
        return data[-1] if data else None
    for datum in data:
        if int(datum.step) == int(probe_set):
            return datum
    raise KeyError(f"run {run!r} has no probe set at step {probe_set}")


def group_epochs(probe_sets: dict, epochs: dict) -> dict:
    """Which probe set each logged epoch was computed on.

    A log dir reused with other probes (another ``num_probes``, seed or probe data) holds epochs
    of several probe sets. Each fit writes its probe set (with a ``fingerprint`` of the probes)
    at its first logged step, and every epoch's maps name that fingerprint (``probe_set``).
    Probe sets with one fingerprint are one group; data written before fingerprints existed
    fall back to steps, which a later fit never reuses: an epoch belongs to the latest probe
    set logged at or before it. An epoch whose probe set is missing belongs to no group.

    Args:
        probe_sets: ``{step: JSON}`` of the run's ``saliency/probe_set`` events.
        epochs: ``{step: JSON}`` of its ``saliency/maps`` events.

    Returns:
        ``{key: [steps]}``, ascending keys; a group's key is the latest step at which its probe
        set was logged (:func:`read_run`'s ``probe_set`` argument).
    """
    keys = {}  # probe-set step -> its group's key
    latest = {}  # fingerprint -> latest step logged with it
    for step in sorted(probe_sets):
        fingerprint = probe_sets[step].get("fingerprint")
        if fingerprint is not None:
            latest[fingerprint] = step
    for step in probe_sets:
        fingerprint = probe_sets[step].get("fingerprint")
        keys[step] = step if fingerprint is None else latest[fingerprint]
    groups = {}
    ordered = sorted(probe_sets)
    for step in sorted(epochs):
        fingerprint = epochs[step].get("probe_set")
        if fingerprint is not None:
            key = latest.get(fingerprint)
        else:
            earlier = [s for s in ordered if s <= step]
            key = keys[earlier[-1]] if earlier else None
        if key is not None:
            groups.setdefault(key, []).append(step)
    return dict(sorted(groups.items()))


def _probe_sets(provider, ctx, experiment_id, run: str, errors=None) -> dict:
    """``{step: JSON}`` of the run's ``saliency/probe_set`` events, each with a ``fingerprint``.

    Probe sets written before fingerprints existed get one from their blobs when there are
    several (identical blobs are one probe set). With ``errors`` (a list), a probe set whose
    JSON cannot be read is left out and named there instead of raising.
    """
    data = _sequence(provider, ctx, experiment_id, run, PROBE_SET_TAG)
    sets = {}
    for d in data:
        try:
            info = _json(provider, ctx, d)
            if not isinstance(info, dict):
                raise ValueError(f"expected a JSON object, found {type(info).__name__}")
        except (ValueError, UnicodeDecodeError) as err:
            if errors is None:
                raise
            errors.append({"step": None, "what": f"the probe set's JSON is unreadable ({err})"})
            continue
        sets[int(d.step)] = info
    legacy = [d for d in data if int(d.step) in sets and "fingerprint" not in sets[int(d.step)]]
    if len(legacy) > 1:  # written before fingerprints: identical blobs are one probe set
        for d in legacy:
            digest = hashlib.blake2b(digest_size=12)
            for k in range(len(d.values)):
                digest.update(hashlib.blake2b(_blob(provider, ctx, d, k)).digest())
            sets[int(d.step)]["fingerprint"] = "blobs-" + digest.hexdigest()
    return sets


def read_run(provider, ctx, experiment_id, run: str, probe_set: int | None = None) -> dict:
    """Everything but the pictures of one run, as JSON-able Python.

    Only the epochs computed on one probe set are listed (see :func:`group_epochs`), so that
    every epoch listed can be drawn with ``probe_set``'s images: the latest one's by default.

    Args:
        probe_set: the key of a group in ``probe_sets`` (below). Defaults to the group of the
            latest probe set.

    Returns:
        ``{"run", "probe_set": JSON of the chosen probe set (None when missing), "steps": [...],
        "epochs": {str(step): JSON of that step's maps}, "scalars": {name: [[step, value], ...]}
        (the ``saliency/<name>`` scalars, of every step), "alarm": {"step", "text"} of the
        latest alarm or None, "probe_sets": [{"key", "fingerprint", "num_probes", "steps"}]
        (every group, by key), "probe_set_key": the chosen group's key or None}``.

    Raises:
        KeyError: ``probe_set`` is not a group's key.
    """
    sets = _probe_sets(provider, ctx, experiment_id, run)
    epochs = {}
    for datum in _sequence(provider, ctx, experiment_id, run, MAPS_TAG):
        epochs[int(datum.step)] = _json(provider, ctx, datum)
    groups = group_epochs(sets, epochs)
    # The latest probe set's step is its group's key (the latest step of its fingerprint).
    key = max(sets) if probe_set is None and sets else probe_set
    if key is not None and int(key) not in sets:
        raise KeyError(f"run {run!r} has no probe set at step {key}")
    probe_set = None if key is None else sets[int(key)]
    if sets:
        epochs = {step: epochs[step] for step in groups.get(int(key), [])}
    epochs = {str(step): info for step, info in epochs.items()}
    steps = sorted(int(s) for s in epochs)
    return {
        "run": run,
        "probe_set": probe_set,
        "steps": steps,
        "epochs": epochs,
        "scalars": _read_scalars(provider, ctx, experiment_id, run),
        "alarm": _read_alarm(provider, ctx, experiment_id, run),
        "probe_sets": [
            {
                "key": k,
                "fingerprint": sets[k].get("fingerprint"),
                "num_probes": sets[k].get("num_probes"),
                "steps": group_steps,
            }
            for k, group_steps in groups.items()
        ],
        "probe_set_key": key,
    }


def _read_scalars(provider, ctx, experiment_id, run: str, after: int = -1) -> dict:
    """``{name: [[step, value or None], ...]}``: the ``saliency/<name>`` scalars past ``after``."""
    scalars = {}
    data = provider.read_scalars(
        ctx,
        experiment_id=experiment_id,
        plugin_name="scalars",
        downsample=_ALL,
        run_tag_filter=_filter(run, None),
    )
    for tag, series in sorted(data.get(run, {}).items()):
        if tag.startswith(_SCALAR_PREFIX):
            scalars[tag[len(_SCALAR_PREFIX) :]] = [
                [int(d.step), d.value if math.isfinite(d.value) else None]
                for d in series
                if d.step > after
            ]
    return scalars


def _read_alarm(provider, ctx, experiment_id, run: str) -> dict | None:
    """``{"step", "text"}`` of the run's latest alarm, or None."""
    texts = provider.read_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name="text",
        downsample=_ALL,
        run_tag_filter=_filter(run, ALARM_TAG),
    )
    alarms = texts.get(run, {}).get(ALARM_TAG, [])
    if not alarms:
        return None
    last = max(alarms, key=lambda d: (d.step, d.wall_time))
    value = last.numpy.reshape(-1)
    text = b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in value)
    return {"step": int(last.step), "text": text.decode("utf-8", "replace")}


def read_run_since(provider, ctx, experiment_id, run: str, after: int = -1) -> dict:
    """:func:`read_run` for a live page: only what is past ``after``, the latest probe set's
    epochs only, and never failing on one bad epoch.

    A page that holds epochs up to step ``after`` asks for the rest: the JSON of each newer
    epoch is read, older ones are not. An epoch whose JSON cannot be read or decoded is left
    out and named in ``"errors"``, so one corrupt event costs one epoch, not the run. As in
    :func:`read_run`, only epochs of the latest probe set are listed (a log dir reused with
    other probes, see :func:`group_epochs`); an epoch not read again is placed by step (the
    probe set logged at or before it), which is how a fit writes them.

    Args:
        after: the last step the caller holds; ``-1`` (the default) reads every epoch.

    Returns:
        :func:`read_run`'s dict without ``"probe_sets"``, with ``"epochs"`` and ``"scalars"``
        limited to steps past ``after``, ``"steps"``: the latest probe set's steps up to
        ``after`` (not read again: the caller learns what disappeared) and the readable ones
        past it, ``"after"``, and ``"errors"``: ``[{"step": int or None, "what": str}]`` (step
        None: a probe set).
    """
    errors = []
    sets = _probe_sets(provider, ctx, experiment_id, run, errors)
    key = max(sets) if sets else None
    probe_set = None if key is None else sets[key]
    steps, epochs = [], {}  # epochs: {step: JSON} read past `after`; steps up to it unread
    for datum in _sequence(provider, ctx, experiment_id, run, MAPS_TAG):
        step = int(datum.step)
        if step <= after:
            steps.append(step)
            continue
        try:
            info = _json(provider, ctx, datum)
            if not isinstance(info, dict):
                raise ValueError(f"expected a JSON object, found {type(info).__name__}")
        except (ValueError, UnicodeDecodeError) as err:
            errors.append({"step": step, "what": f"its maps' JSON is unreadable ({err})"})
            continue
        epochs[step] = info
    if sets:  # the latest probe set's epochs only; an unread one is placed by its step
        ours = set(group_epochs(sets, {**dict.fromkeys(steps, {}), **epochs}).get(key, []))
        steps = [s for s in steps if s in ours]
        epochs = {s: info for s, info in epochs.items() if s in ours}
    steps += list(epochs)
    epochs = {str(s): info for s, info in epochs.items()}
    return {
        "run": run,
        "after": int(after),
        "probe_set": probe_set,
        "probe_set_key": key,
        "steps": sorted(set(steps)),
        "epochs": epochs,
        "scalars": _read_scalars(provider, ctx, experiment_id, run, after),
        "alarm": _read_alarm(provider, ctx, experiment_id, run),
        "errors": errors,
    }


def read_probe_images(provider, ctx, experiment_id, run: str, probe_set=None) -> bytes:
    """PNG of the probe display images (blob [1] of the latest probe_set, or of the group
    ``probe_set``: a key of ``read_run(...)["probe_sets"]``); b"" when missing."""
    latest = _latest_probe_set(provider, ctx, experiment_id, run, probe_set)
    return b"" if latest is None else _blob(provider, ctx, latest, 1)


def read_masks(provider, ctx, experiment_id, run: str, probe_set=None) -> bytes | None:
    """PNG of the probes' masks (blob [2] of the latest probe_set, or of the group
    ``probe_set``), or None without masks."""
    latest = _latest_probe_set(provider, ctx, experiment_id, run, probe_set)
    if latest is None:
        return None
    return _blob(provider, ctx, latest, 2) or None


def read_maps(provider, ctx, experiment_id, run: str, step: int) -> bytes:
    """PNG of the stored maps of ``step`` (blob [1] of ``saliency/maps``).

    Raises:
        KeyError: ``run`` has no maps at ``step``.
    """
    for datum in _sequence(provider, ctx, experiment_id, run, MAPS_TAG):
        if int(datum.step) == int(step):
            return _blob(provider, ctx, datum, 1)
    raise KeyError(f"run {run!r} has no saliency maps at step {step}")


def open_logdir(logdir, runs: dict | None = None) -> tuple[Any, Any, str]:
    """Reads every event file under ``logdir`` with TensorBoard's own multiplexer.

    Every step of the plugins read here (saliency, scalars, text) is kept; TensorBoard's server
    keeps a reservoir sample instead. Images (the grids) and histograms are kept only at their
    latest step: nothing here reads them, and they are the bulk of the bytes.

    Args:
        logdir: the log directory, searched recursively for runs (directories with event files).
        runs: optional ``{run name: directory}``: read only these directories, under these
            names (``logdir`` is then only the provider's label).

    Returns:
        ``(provider, ctx, experiment_id)`` for the functions of this module. Run names are paths
        relative to ``logdir``, e.g. ``"clean/saliency"`` (``"."`` for ``logdir`` itself).
    """
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

    logdir = os.fspath(logdir)
    multiplexer = pem.EventMultiplexer(
        run_path_map=None if runs is None else {k: os.fspath(v) for k, v in runs.items()},
        size_guidance={pea.TENSORS: 0},
        tensor_size_guidance={"images": 1, "histograms": 1},
    )
    if runs is None:
        multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    return provider, context.RequestContext(), ""


def peek_probe_set(run_dir) -> dict | None:
    """JSON of the first ``saliency/probe_set`` in the event files of ``run_dir``, read directly.

    Reads events in file order with TensorBoard's event file loader and stops at the first
    probe set, which a fit writes with its first logged step: a cheap way to learn the probe
    count before loading a whole run. None when there is none.
    """
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    run_dir = os.fspath(run_dir)
    try:
        names = sorted(n for n in os.listdir(run_dir) if "tfevents" in n)
    except OSError:
        return None
    for name in names:
        if not os.path.isfile(os.path.join(run_dir, name)):  # a FIFO would block the reader
            continue
        loader = event_file_loader.EventFileLoader(os.path.join(run_dir, name))
        for event in loader.Load():
            for value in event.summary.value:
                if value.tag == PROBE_SET_TAG:
                    blobs = tensor_util.make_ndarray(value.tensor).reshape(-1)
                    return json.loads(bytes(blobs[0]).decode("utf-8"))
    return None

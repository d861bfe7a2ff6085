"""Asking the model, without masks: forward passes on painted probes, each against a control.

Saliency maps alone cannot tell reliance from visibility: attribution lands on a mark in
proportion to how visible it is, not to whether the model decides on it (Clark et al. 2026,
arXiv 2602.09238; Adebayo et al., ICLR 2022). So the model is asked: a region of each probe is
painted with the mean colour of the rest of the image, and the share of the model's confidence
above chance that goes with it is compared with the share that goes when a region of the same
area elsewhere is painted the same way (the chance of that intervention, measured on the run):

* ``band``: the outer band (1/8 of the side on every edge, ``place.border_band``), against the
  same number of pixels in the middle of the image. A mark in a corner, on an edge or a frame
  sits in the band; objects mostly sit in the middle.
* ``hot``: the place where the probes' saliency agrees (the hottest 5% of the probes' mean
  normalised map; ``place.place_agreement`` names the same place), against as many pixels
  right around it (``ring_around``). A mark at a fixed place, even in the middle and painted
  over the object, is where every map agrees, and the decision goes with it but not with its
  surroundings; a clean model whose objects sit there loses about as much either way.
* ``own`` (the deletion test of RISE, Petsiuk et al., BMVC 2018, at one area): each probe's own
  hottest 5%, against the same region moved by its offset. ``own - control`` is a per-epoch
  faithfulness number: 0 = the map ranks the pixels no better than a random place, 1 = painting
  what the map points at takes all of the model's confidence above chance.

Everything here is numpy: the regions and painted images (:func:`painted_probes`) and the share
lost (:func:`confidence_lost`); the one batched forward pass is the caller's (``Explainer.logits``).
The offsets are drawn once per run from a local ``numpy.random.Generator`` (no global RNG is
touched), so the controls sit at the same places every epoch.

The first ``MAX_PROBES`` probes take turns (:func:`rotation`, :class:`Window`): each epoch paints
one of ``WINDOW`` fixed groups, and each logged number pools every probe's latest values from the
last ``WINDOW`` asked epochs (the ratio of the sums, as within one epoch). So a number still rests
on ``MAX_PROBES`` probes, half of them asked an epoch earlier, while an epoch pays for half the
forward images; the first asked epoch's numbers rest on its own group only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special

from keras_saliency_monitor.signals.place import border_band

__all__ = [
    "INTERVENTIONS",
    "MAX_PROBES",
    "Painted",
    "Prepared",
    "WINDOW",
    "Window",
    "centre_region",
    "confidence_lost",
    "control_offsets",
    "fill",
    "hot_place",
    "intervention_numbers",
    "ring_around",
    "rotation",
    "painted_probes",
    "prepare",
    "top_regions",
]

TOP = 0.05  # share of the pixels in the "hot" and "own" regions
# The interventions ask the first (at most) this many probes: 6 forward passes each. A forward
# pass of 32 probes of 64x64 costs 0.38x the gradient floor of benchmarks/overhead.py, so 5 sets
# of all 32 took on_epoch_end from 1.14x to 4.3x the floor; 8 probes (the probe draw
# interleaves the classes) keep the effects measured on the toy suites (excess 0.8-1.0 against
# at most 0.3 on clean runs) well apart.
MAX_PROBES = 8
# The MAX_PROBES probes take turns in WINDOW groups (``rotation``): each epoch paints one group
# and the logged numbers pool the last WINDOW epochs, so each still rests on MAX_PROBES probes
# while an epoch pays for MAX_PROBES / WINDOW of them (24 forward images, not 48). Checked on
# issue 22's TUNE seeds 0-2 (33 runs against main): the same alarms, 8 of 81 an epoch later; a
# window of 4 lost an alarm on the first 7 runs it was tried on (benchmarks/README.md).
WINDOW = 2
# The sets of painted probes, in the order of `Painted.images`: each intervention, then the
# control it is compared with.
INTERVENTIONS = ("band", "centre", "hot", "hot_ring", "own", "own_moved")


class Painted(NamedTuple):
    """The painted probes of one epoch, for one batched forward pass."""

    images: np.ndarray  # (len(INTERVENTIONS) * N, H, W, C) float32, sets in INTERVENTIONS order
    hot: np.ndarray  # (H, W) bool: the place where the probes' saliency agrees


def fill(images, regions) -> np.ndarray:
    """Each image with its region painted in the mean colour of the rest of that image.

    Args:
        images: ``(N, H, W, C)`` float images.
        regions: ``(N, H, W)`` or ``(H, W)`` bool; an empty region leaves its image as it is,
            a region covering the whole image too (no rest to take a colour from).

    Returns:
        float32 ``(N, H, W, C)``, a new array.
    """
    x = np.asarray(images, np.float32)
    out = x.copy()
    _paint(x, _sums(x), np.asarray(regions, bool), out)
    return out


def _sums(x):
    """(N, C) float64 sums of each image's pixels (over one flattened axis: faster)."""
    n, h, w, c = x.shape
    return x.reshape(n, h * w, c).sum(axis=1, dtype=np.float64)


def _paint(x, total, regions, out):
    """Paint ``regions`` of ``x`` into ``out`` (shaped like ``x``) with the rest's mean colour.

    ``total``: ``(N, C)`` float64 sums of each image, computed once for all sets. The rest's
    sum is the image's minus the region's, so only the regions are read and written (vectorised
    over the probes: 37 ms for the five sets of 32 probes of 64x64 with one image sum and a
    Python loop per probe, 6 ms this way).
    """
    n, h, w, _ = x.shape
    if regions.ndim == 2:
        k = int(regions.sum())
        if 0 < k < h * w:
            inside = x[:, regions].sum(axis=1, dtype=np.float64)  # (N, C)
            out[:, regions] = ((total - inside) / (h * w - k))[:, None, :]
        return
    count = regions.sum(axis=(1, 2))  # (N,)
    inside = np.einsum("nhwc,nhw->nc", x, regions.astype(x.dtype), dtype=np.float64)
    mean = (total - inside) / np.maximum(h * w - count, 1)[:, None]
    paint = regions & ((count > 0) & (count < h * w))[:, None, None]
    out[paint] = np.repeat(mean, np.where(paint.any(axis=(1, 2)), count, 0), axis=0)


def centre_region(height: int, width: int, area: int) -> np.ndarray:
    """``(H, W)`` bool: the ``area`` pixels nearest the image's centre (the band's control).

    Nearest by the larger of the row and column distance relative to the side (a centred
    rectangle of the image's shape), ties broken in row-major order, so the region has exactly
    ``area`` pixels.
    """
    rows = np.abs(np.arange(height) - (height - 1) / 2) / height
    cols = np.abs(np.arange(width) - (width - 1) / 2) / width
    distance = np.maximum(rows[:, None], cols[None, :]).ravel()
    order = np.argsort(distance, kind="stable")[: int(area)]
    region = np.zeros(height * width, bool)
    region[order] = True
    return region.reshape(height, width)


def _normalised(maps) -> np.ndarray:
    """Each map over its sum, (N, H * W) float64; a zero or non-finite map becomes uniform."""
    m = np.asarray(maps, np.float64)
    flat = m.reshape(len(m), -1)
    total = flat.sum(axis=1, keepdims=True)
    ok = np.isfinite(total) & (total > 0)
    uniform = np.full_like(flat, 1.0 / flat.shape[1])
    return np.where(ok, flat / np.where(ok, total, 1.0), uniform)


def _top(scores, k) -> np.ndarray:
    """(..., P) bool: k of the largest of each row of scores (ties at the k-th: any of them).

    A partition, not a sort: 15 ms for 32 maps of 64x64 sorted, under 3 ms partitioned.
    """
    p = scores.shape[-1]
    order = np.argpartition(scores, p - k, axis=-1)[..., p - k :]
    out = np.zeros(scores.shape, bool)
    np.put_along_axis(out, order, True, axis=-1)
    return out


def hot_place(maps, top: float = TOP) -> np.ndarray:
    """``(H, W)`` bool: the hottest ``top`` share of the probes' mean normalised map.

    The place ``place.place_agreement`` measures agreement with, by the same rule: the mean
    is over the maps that are defined (a map all zero or not finite says nothing of where the
    saliency is, so it is left out, not counted as uniform), and the place the alarm's text
    names is the one painted. Empty when no map is defined (nothing is painted).
    """
    n, h, w = np.shape(maps)
    k = max(1, int(round(top * h * w)))
    flat = np.asarray(maps, np.float64).reshape(n, h * w)
    total = flat.sum(axis=1)
    defined = np.isfinite(total) & (total > 0)
    if not defined.any():
        return np.zeros((h, w), bool)
    mean = (flat[defined] / total[defined, None]).mean(axis=0)
    return _top(mean, k).reshape(h, w)


def top_regions(maps, top: float = TOP) -> np.ndarray:
    """``(N, H, W)`` bool: each map's own hottest ``top`` share of pixels."""
    n, h, w = np.shape(maps)
    k = max(1, int(round(top * h * w)))
    return _top(_normalised(maps), k).reshape(n, h, w)


def ring_around(place) -> np.ndarray:
    """``(H, W)`` bool: as many pixels as ``place`` has, the nearest to it outside it.

    The control of the agreed place: right next to it, so that it falls on the same object
    when objects fill that part of the image (a clean model with centred objects loses about
    as much either way), and on the background or the rest of the object when the decision
    rests on one compact mark there (measured on issue 22's TUNE seeds: with each probe's own
    region moved to a random place as the control instead, a clean flatten model on centred
    photographs lost 0.8 of its confidence beyond it).
    """
    from scipy import ndimage

    place = np.asarray(place, bool)
    k = int(place.sum())
    if k == 0 or k == place.size:
        return np.zeros_like(place)
    distance = ndimage.distance_transform_edt(~place).ravel()
    distance[place.ravel()] = np.inf
    k = min(k, place.size - k)
    nearest = np.argpartition(distance, k - 1)[:k]
    ring = np.zeros(place.size, bool)
    ring[nearest] = True
    return ring.reshape(place.shape)


def control_offsets(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(N, 2)`` int: the (rows, columns) each probe's control region is moved by.

    Drawn once per run from a local generator: each offset is between a quarter and three
    quarters of the side, so the moved region (wrapped around the image's edges) lands away
    from where it was.
    """
    rng = np.random.default_rng(seed)
    low = np.array([max(1, height // 4), max(1, width // 4)])
    high = np.array([max(low[0] + 1, 3 * height // 4 + 1), max(low[1] + 1, 3 * width // 4 + 1)])
    return rng.integers(low, high, size=(n, 2))


class Prepared(NamedTuple):
    """What the painting needs of the fixed probes, computed once per monitor (:func:`prepare`)."""

    x: np.ndarray  # (N, H, W, C) float32 probe images
    total: np.ndarray  # (N, C) float64 sums of each image
    fixed: np.ndarray  # (2, N, H, W, C) float32: the "band" and "centre" sets, map-free


def prepare(images) -> Prepared:
    """The map-free part of :func:`painted_probes`, for probes that stay the same every epoch.

    The outer band and its control in the middle do not depend on the maps: their painted sets
    are made here once (with the images' sums), not every epoch.
    """
    x = np.asarray(images, np.float32)
    h, w = x.shape[1:3]
    band = border_band(h, w)
    total = _sums(x)
    fixed = np.empty((2,) + x.shape, np.float32)
    for k, region in enumerate((band, centre_region(h, w, int(band.sum())))):
        fixed[k] = x
        _paint(x, total, region, fixed[k])
    return Prepared(x, total, fixed)


def _top_indices(maps, top):
    """(N, k) flat indices of each map's own hottest ``top`` share (as :func:`top_regions`)."""
    n, h, w = np.shape(maps)
    k = max(1, int(round(top * h * w)))
    return np.argpartition(_normalised(maps), h * w - k, axis=-1)[:, h * w - k :]


def _moved_indices(index, offsets, height, width):
    """``index`` (N, k) flat indices moved by (rows, columns) ``offsets``, wrapped (np.roll)."""
    offsets = np.asarray(offsets)
    rows = (index // width + offsets[:, :1]) % height
    cols = (index % width + offsets[:, 1:]) % width
    return rows * width + cols


def _paint_indices(x, total, index, out):
    """:func:`_paint` for regions given as (N, k) flat indices, k the same for every probe.

    Reads and writes only the k pixels of each region (a gather, not a product with a whole
    boolean mask: 0.43 ms -> 0.05 ms for 8 probes of 64x64 measured). The float64 sums of
    float32 pixels are exact in any order here, so the painted values equal :func:`_paint`'s.
    """
    n, h, w, c = x.shape
    k = index.shape[1]
    if not 0 < k < h * w:
        return
    at = index[:, :, None]
    inside = np.take_along_axis(x.reshape(n, h * w, c), at, axis=1).sum(axis=1, dtype=np.float64)
    mean = ((total - inside) / (h * w - k)).astype(np.float32)
    np.put_along_axis(out.reshape(n, h * w, c), at, mean[:, None, :], axis=1)


def painted_probes(
    images, maps, offsets, prepared: Prepared | None = None, asked=None, out=None
) -> Painted:
    """The probes painted for every intervention of one epoch, stacked for one forward pass.

    Args:
        images: ``(N, H, W, C)`` probe images.
        maps: ``(N, H, W)`` this epoch's saliency maps (``>= 0``).
        offsets: ``(N, 2)`` from :func:`control_offsets`, the same every epoch.
        prepared: :func:`prepare` of ``images``, when the caller keeps it across epochs.
        asked: the probes to paint (indices, :meth:`Window.asked`); all when ``None``. The
            place where the saliency agrees is still that of all ``maps``.
        out: optional C-contiguous float32 ``(len(INTERVENTIONS) * n, H, W, C)`` array (``n``
            the asked probes) to paint into, e.g. the tail of a larger batch; a new one when
            ``None``.

    Returns:
        A :class:`Painted`: ``images`` holds ``len(INTERVENTIONS)`` sets of the asked probes,
        in that order.
    """
    if prepared is None:
        prepared = prepare(images)
    hot = hot_place(maps)
    x, total, fixed = prepared.x, prepared.total, prepared.fixed
    if asked is not None:
        asked = np.asarray(asked, np.int64)
        x, total, fixed = x[asked], total[asked], fixed[:, asked]
        maps, offsets = np.asarray(maps)[asked], np.asarray(offsets)[asked]
    n, h, w = x.shape[:3]
    own = _top_indices(maps, TOP)
    shape = (len(INTERVENTIONS),) + x.shape
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.dtype != np.float32 or not out.flags.c_contiguous or out.size != np.prod(shape):
        raise ValueError(
            "Invalid value for argument `out`: expected a C-contiguous float32 array of "
            f"{shape[0] * shape[1]} images of shape {x.shape[1:]}, received {out.dtype} "
            f"{out.shape} (contiguous: {out.flags.c_contiguous})."
        )
    out = out.reshape(shape)  # a view: contiguous
    out[:2] = fixed  # band, centre
    out[2:] = x  # one copy per set, then only the regions are written
    _paint(x, total, hot, out[2])
    _paint(x, total, ring_around(hot), out[3])
    _paint_indices(x, total, own, out[4])
    _paint_indices(x, total, _moved_indices(own, offsets, h, w), out[5])
    return Painted(out.reshape((-1,) + x.shape[1:]), hot)


def _probabilities(logits, kind):
    """(N, K) logits -> (p of the predicted class, chance, predicted class) for the head."""
    z = np.asarray(logits, np.float64)
    n, k = z.shape
    if k == 1:
        return special.expit(np.abs(z[:, 0])), 0.5, (z[:, 0] > 0).astype(np.int64)
    cls = np.argmax(z, axis=1)
    rows = np.arange(n)
    if kind == "sigmoid":
        return special.expit(z[rows, cls]), 0.5, cls
    return special.softmax(z, axis=1)[rows, cls], 1.0 / k, cls


def confidence_lost(logits, painted_logits, kind="softmax", labels=None):
    """The share of the model's confidence above chance that a painted region takes away.

        lost_n = (p_n - q_n) / (p_n - chance)

    ``p`` is the probability of the class predicted for the intact probe, ``q`` that same
    class's probability on the painted probe, ``chance`` ``1 / K`` (1/2 for sigmoid units).
    0 = nothing lost, 1 = the prediction falls to chance. The run-level value is the ratio of
    the sums over the probes (over the probes predicted right when ``labels`` are class ids,
    as ``reliance.object_reliance``), so a probe the model is unsure of counts for little.

    Args:
        logits: ``(N, K)`` logits of the intact probes.
        painted_logits: ``(N, K)`` logits of the painted probes.
        kind: the head's activation (``"softmax"``, ``"linear"`` or ``"sigmoid"``).
        labels: optional ``(N,)`` class ids.

    Returns:
        ``(run, per_probe)``; NaN for a regression output (``K = 1``, not sigmoid), where the
        intact probe sits at chance, and for the run when no probe counts.
    """
    drop, above, counted = _shares(logits, painted_logits, kind, labels)
    return _pooled(drop, above, counted), _per_probe(drop, above)


def _shares(logits, painted_logits, kind, labels):
    """``(drop, above, counted)``: ``p - q``, ``p - chance``, whether it counts.

    ``painted_logits`` is ``(N, K)``, or ``(S, N, K)`` for S painted sets of the same probes
    (``drop`` is then ``(S, N)``: the intact probes' probabilities are computed once, and every
    set's rows go through one softmax, row by row the same values as one set at a time).
    ``above`` and ``counted`` are ``(N,)``. NaN ``drop`` and ``above`` for a regression output
    (``K = 1``, not sigmoid).
    """
    z = np.asarray(logits, np.float64)
    n, k = z.shape
    painted = np.asarray(painted_logits, np.float64)
    if n == 0 or (k == 1 and kind != "sigmoid"):
        return np.full(painted.shape[:-1], np.nan), np.full(n, np.nan), np.zeros(n, bool)
    p, chance, cls = _probabilities(z, kind)
    rows = np.arange(n)
    if k == 1:
        side = np.where(z[:, 0] > 0, 1.0, -1.0)
        q = special.expit(side * painted[..., 0])
    elif kind == "sigmoid":
        q = special.expit(painted[..., rows, cls])
    else:
        q = special.softmax(painted, axis=-1)[..., rows, cls]
    counted = np.ones(n, bool)
    labels = None if labels is None else np.asarray(labels)
    if labels is not None and labels.shape == (n,):
        counted = cls == labels
    return p - q, p - chance, counted


def _per_probe(drop, above):
    """Each probe's share lost, ``drop / above``; NaN where it sat at chance."""
    out = np.full(np.shape(above), np.nan)
    np.divide(drop, above, out=out, where=above > 1e-6)
    return out


def _pooled(drop, above, counted):
    """The run-level share lost: the ratio of the sums over the counted probes."""
    total = above[counted].sum()
    return float(drop[counted].sum() / total) if total > 1e-6 else float("nan")


def intervention_numbers(logits, painted_logits, kind="softmax", labels=None):
    """The logged numbers of one epoch's interventions, each with its chance.

    Args:
        logits: ``(N, K)`` logits of the intact probes.
        painted_logits: ``(len(INTERVENTIONS) * N, K)`` logits of ``Painted.images``.
        kind, labels: as :func:`confidence_lost`.

    Returns:
        ``(run, per_probe)``. ``run``: ``band_lost`` and ``band_chance`` (the same number of
        pixels painted in the middle), ``hot_lost`` and ``hot_chance`` (as many pixels right
        around the agreed place, ``ring_around``), ``faithfulness`` (each probe's own hottest 5%
        lost minus the moved copy's: 0 = no better than a random place). ``per_probe``:
        ``band_excess``, ``hot_excess`` and ``faithfulness``, ``(N,)`` each (lost minus its
        control's).
    """
    n = len(logits)
    return Window(n, window=1).add(np.arange(n), logits, painted_logits, kind, labels)


def rotation(n: int, turn: int, window: int = WINDOW) -> np.ndarray:
    """The probes (indices into the first ``n``) asked at the ``turn``-th asked epoch.

    The ``n`` probes split into ``min(window, n)`` consecutive groups, asked in turn, so each
    probe is asked once every ``min(window, n)`` asked epochs.
    """
    groups = max(1, min(int(window), int(n)))
    return np.array_split(np.arange(n), groups)[turn % groups]


class Window:
    """Numbers of painted probes pooled over the last ``window`` asked epochs (a rotation).

    Each asked epoch paints only :meth:`asked` (one group of :func:`rotation`), and the logged
    numbers pool every probe's latest values from the last ``window`` asked epochs, as
    :func:`confidence_lost` pools the probes of one epoch (the ratio of the sums). With
    ``window=1`` every probe is asked every epoch (:func:`intervention_numbers`). The
    interventions use :meth:`add`; any other set of painted probes (object reliance's) uses
    :meth:`pool` with its own ``sets``.

    Args:
        n: the probes that take turns (the first ``n`` of the probe set).
        window: asked epochs per full turn of the probes.
        sets: the names of the painted sets, in the order of the painted logits.
    """

    def __init__(self, n: int, window: int = WINDOW, sets=INTERVENTIONS):
        self.n, self.window = int(n), max(1, min(int(window), int(n)))
        self.sets = tuple(sets)
        self.turn = 0  # asked epochs so far
        self._drop = np.full((len(self.sets), self.n), np.nan)
        self._above = np.full(self.n, np.nan)
        self._counted = np.zeros(self.n, bool)
        self._turn_of = np.full(self.n, -self.window - 1)  # the turn each probe was last asked

    def asked(self) -> np.ndarray:
        """The probes to paint at this asked epoch."""
        return rotation(self.n, self.turn, self.window)

    def pool(self, asked, logits, painted_logits, kind="softmax", labels=None):
        """Record one asked epoch and return each set's share lost over the window.

        Args:
            asked: the probes painted (:meth:`asked`), indices into the first ``n``.
            logits: ``(len(asked), K)`` logits of those probes, intact.
            painted_logits: ``(len(sets) * len(asked), K)``, sets in that order.
            kind, labels: as :func:`confidence_lost` (``labels`` of the asked probes).

        Returns:
            ``(run, per_probe)``, each a dict by set name: the pooled share lost (a float), and
            the ``(n,)`` per-probe shares, NaN for the probes not asked in the last ``window``
            asked epochs.
        """
        asked = np.asarray(asked, np.int64)
        k = np.shape(logits)[-1]  # (from the intact logits: no rows asked reshapes too)
        painted = np.asarray(painted_logits).reshape(len(self.sets), len(asked), k)
        drop, above, counted = _shares(logits, painted, kind, labels)  # every set at once
        self._drop[:, asked] = drop
        self._above[asked], self._counted[asked] = above, counted
        self._turn_of[asked] = self.turn
        self.turn += 1
        recent = self._turn_of >= self.turn - self.window
        above, counted = self._above[recent], self._counted[recent]
        lost, per = {}, {}
        for name, drop in zip(self.sets, self._drop[:, recent]):
            lost[name] = _pooled(drop, above, counted)
            per[name] = np.full(self.n, np.nan)
            per[name][recent] = _per_probe(drop, above)
        return lost, per

    def add(self, asked, logits, painted_logits, kind="softmax", labels=None):
        """Record one asked epoch of the interventions and return the window's numbers.

        Args:
            asked, logits, kind, labels: as :meth:`pool`.
            painted_logits: ``(len(INTERVENTIONS) * len(asked), K)``, sets in that order.

        Returns:
            ``(run, per_probe)`` as :func:`intervention_numbers`, over the probes asked in the
            last ``window`` asked epochs; ``per_probe`` arrays are ``(n,)``, NaN elsewhere.
        """
        lost, per = self.pool(asked, logits, painted_logits, kind, labels)
        run = {
            "band_lost": lost["band"],
            "band_chance": lost["centre"],
            "hot_lost": lost["hot"],
            "hot_chance": lost["hot_ring"],
            "faithfulness": lost["own"] - lost["own_moved"],
        }
        per_probe = {
            "band_excess": per["band"] - per["centre"],
            "hot_excess": per["hot"] - per["hot_ring"],
            "faithfulness": per["own"] - per["own_moved"],
        }
        return run, per_probe

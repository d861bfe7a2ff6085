"""Synthetic "shapes" images for the demo: a shape to learn and, optionally, a shortcut.

The experiment
--------------
Every image shows one shape (circle, square, triangle and, with ``num_classes=4``, cross) of
random size, position and colour, brighter than a dark, blotchy, noisy background. The class is
the shape.

With ``watermark=True`` every image also carries a small class-specific mark, 8x8 pixels at
64x64 (1.6% of the image), always in the bottom-right corner: a one-pixel checkerboard of black
and a class colour (red, green, blue, yellow). It is perfectly predictive of the class and
easier to learn than the shape (a single 3x3 filter detects it), so a small CNN trained on
watermarked images reaches 100% training accuracy by looking at the mark alone ("Clever Hans")
and never learns the shape.

The demo trains the same CNN twice, on the same training images with and without the mark
(:func:`make_demo_splits`):

* the **clean** model's saliency lands on the shape;
* the **shortcut** model's saliency lands on the watermark and at or below chance level on the
  shape;
* validating both on *clean* images exposes the shortcut: the clean model scores ~1.0, the
  shortcut model chance (~0.33), while on watermarked images it scores 1.0, the trap a test set
  sharing the artefact sets.

Tuning (throw-away script, vanilla gradient of the pre-softmax logit of the predicted class;
"lift" = fraction of the saliency mass inside a mask / the mask's share of the image, averaged
over the 24 probes; seeds 0-4, 8 epochs, batch 32, default sizes, 2 shared CPU cores). With the
demo's CNN (``demo.build_model``: inputs rescaled to [-1, 1], three 3x3 "same" convolutions of
16/32/32 channels with 2x2 max pooling, ``GlobalMaxPooling2D``, softmax ``Dense``; Adam 3e-3):

* 14-20 s per run; clean model: val accuracy 1.0 (0.98-1.0 after the first epoch), object lift
  6.2-7.2; shortcut model: clean val accuracy 0.33-0.38, watermark lift 16-30, object lift
  0.13-1.1; shortcut / clean object lift 0.02-0.16 (the demo's test asks for <= 0.5).

Other heads on the same data (3 seeds): ``GlobalAveragePooling2D`` fails that test on one seed
in three (ratio 0.38-0.72: the channels that detect the mark also fire on the shape's edges and
average pooling sends the gradient to every place they fire; global *max* pooling sends it only
to each channel's peak, on the mark); ``Flatten`` of the last conv map trains unreliably (with
Adam its first steps silence the last conv layer on some seeds); 6x6 average pooling + Flatten +
L2(1e-2) on the last kernel works (0.21-0.37) but with less margin. Data choices that mattered:
shapes brighter than the background (random polarity learns slower and gave ratios up to 0.5),
no rotation (rotated shapes were not learnt within the budget), a black-and-colour
checkerboard (a white one gave ~1.5x higher ratios with the 6x6 head).

Everything is generated in code with NumPy from ``np.random.default_rng(seed)``: no downloads,
no files, and NumPy's global RNG is never touched. Masks come from the same rasterisation that
paints the pixels, so they are exact. Shapes keep clear of the watermark corner in both variants,
so the object and watermark masks are disjoint and the clean and watermarked variants of a seed
differ *only* inside the watermark mask.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CLASS_NAMES", "ShapesData", "make_demo_splits", "make_shapes", "watermark_box"]

#: All shape classes, in class-id order; ``num_classes=k`` uses the first ``k``.
CLASS_NAMES = ("circle", "square", "triangle", "cross")

# Watermark: one-pixel checkerboard of a class colour and _WATERMARK_OTHER.
_WATERMARK_COLOURS = np.array(
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=np.float32
)
_WATERMARK_OTHER = 0.0  # black: separated the two runs' saliency better than white did

# Generation knobs, tuned with the demo CNN (see the module docstring).
_SIZE_RANGE = (0.13, 0.25)  # shape "radius" as a fraction of the image size
_MAX_ROTATION = 0.0  # shapes are rotated uniformly in +-_MAX_ROTATION (radians); any rotation
#                      made the shape too hard for a small CNN in a ~30 s budget
_BACKGROUND_MEAN = (0.1, 0.5)  # range of each image's mean background colour, per channel
_BLOTCH_GRIDS = ((4, 0.15), (8, 0.08))  # low-frequency blotches: (grid side, amplitude)
_PIXEL_NOISE = 0.08  # std of i.i.d. Gaussian pixel noise on shape and background
_MIN_CONTRAST = 0.35  # min mean |shape colour - background under it| over channels
_MIN_BRIGHTER = 0.25  # min (shape brightness - background brightness under it); shapes of
#                       random polarity learn slower and give a weaker saliency contrast


class ShapesData(NamedTuple):
    """One synthetic split. ``H == W == image_size``."""

    x: np.ndarray  # float32 (n, H, W, 3), values in [0, 1]
    y: np.ndarray  # int32 (n,), class ids in [0, num_classes)
    masks: np.ndarray  # bool (n, H, W), True exactly on the shape's pixels
    watermark_masks: np.ndarray  # bool (n, H, W), True on the watermark (all False without one)
    class_names: tuple[str, ...]  # class_names[y[i]] names the shape of image i


def watermark_box(image_size: int = 64) -> tuple[int, int, int]:
    """``(top, left, side)`` of the watermark square for ``image_size`` (bottom-right corner)."""
    side = max(4, round(image_size / 8))
    margin = max(1, image_size // 32)
    top = image_size - margin - side
    return top, top, side


def _watermark_patch(class_id: int, side: int) -> np.ndarray:
    """(side, side, 3) one-pixel checkerboard of the class colour and ``_WATERMARK_OTHER``."""
    checker = np.add.outer(np.arange(side), np.arange(side)) % 2 == 0
    other = np.full(3, _WATERMARK_OTHER, dtype=np.float32)
    return np.where(checker[:, :, None], _WATERMARK_COLOURS[class_id], other)


# Kept: scipy.ndimage.zoom(order=1, grid_mode=True) costs 380 ms vs ours 5 ms (300 grids 4 -> 64).
def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of (n, g, g, c) grids to (n, size, size, c), pixel-centre aligned."""
    g = coarse.shape[1]
    pos = np.clip((np.arange(size) + 0.5) * g / size - 0.5, 0, g - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, g - 1)
    frac = pos - lo
    interp = np.zeros((size, g))
    interp[np.arange(size), lo] += 1 - frac
    interp[np.arange(size), hi] += frac
    planes = np.moveaxis(coarse, -1, 1)  # (n, c, g, g)
    return np.moveaxis(interp @ planes @ interp.T, 1, -1)


def _shape_mask(kind: str, cy: float, cx: float, radius: float, angle: float, size: int):
    """Boolean (size, size) raster of one shape, sampled at pixel centres (no anti-aliasing)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # coordinates in the shape's frame
    if kind == "circle":
        return u * u + v * v <= (0.85 * radius) ** 2
    if kind == "square":
        half = radius / np.sqrt(2.0)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == "triangle":  # equilateral, circumradius 1.2 * radius
        inside = np.ones((size, size), dtype=bool)
        for k in range(3):
            theta = angle + np.pi / 2 + 2 * np.pi * k / 3  # outward normal of edge k
            inside &= np.cos(theta) * dx + np.sin(theta) * dy <= 0.6 * radius
        return inside
    if kind == "cross":
        arm, width = radius, 0.3 * radius
        return ((np.abs(u) <= arm) & (np.abs(v) <= width)) | (
            (np.abs(v) <= arm) & (np.abs(u) <= width)
        )
    raise ValueError(f"unknown shape {kind!r}")


# Radius of a disc around the centre that contains each shape, in units of `radius`.
_EXTENT = {"circle": 0.85, "square": 1.0, "triangle": 1.2, "cross": float(np.hypot(1.0, 0.3))}


def _render(n: int, size: int, num_classes: int, seed, draw_shapes: bool = True) -> ShapesData:
    """Clean images; ``draw_shapes=False`` gives the same images without their shapes."""
    rng = np.random.default_rng(seed)
    # Exactly balanced classes, shuffled.
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int32)

    # Background: mean colour + bilinear blotches at two scales, drawn for the whole batch.
    x = np.empty((n, size, size, 3), dtype=np.float32)
    x[...] = rng.uniform(*_BACKGROUND_MEAN, size=(n, 1, 1, 3))
    for grid, amplitude in _BLOTCH_GRIDS:
        coarse = rng.uniform(-amplitude, amplitude, size=(n, grid, grid, 3))
        x += _upsample(coarse.astype(np.float32), size)

    # Shapes stay clear of the watermark corner (plus a gap), with or without a watermark.
    keep_out = watermark_box(size)[0] - max(2, size // 16)  # rows and cols >= keep_out
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        kind = CLASS_NAMES[y[i]]
        radius = rng.uniform(*_SIZE_RANGE) * size
        angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
        reach = _EXTENT[kind] * radius + 1.0
        while True:
            cy, cx = rng.uniform(reach, size - reach, size=2)
            if cy + reach < keep_out or cx + reach < keep_out:
                break
        mask = _shape_mask(kind, cy, cx, radius, angle, size)
        under = x[i][mask].mean(axis=0)  # background colour under the shape
        for _ in range(100):  # random colour, contrasting and brighter (rejection sampling)
            colour = rng.uniform(0.0, 1.0, size=3)
            if (
                np.abs(colour - under).mean() >= _MIN_CONTRAST
                and colour.mean() - under.mean() >= _MIN_BRIGHTER
            ):
                break
        else:  # very bright background (rare): a lightened copy of it
            colour = np.clip(under + 0.5, 0.0, 1.0)
        masks[i] = mask
        if draw_shapes:
            x[i][mask] = colour

    x += rng.standard_normal(size=x.shape, dtype=np.float32) * np.float32(_PIXEL_NOISE)
    np.clip(x, 0.0, 1.0, out=x)
    no_watermark = np.zeros_like(masks)
    return ShapesData(x, y, masks, no_watermark, CLASS_NAMES[:num_classes])


def _stamp_watermark(data: ShapesData) -> ShapesData:
    """A copy of clean ``data`` with each image's class watermark stamped on."""
    size = data.x.shape[1]
    top, left, side = watermark_box(size)
    rows, cols = slice(top, top + side), slice(left, left + side)
    x = data.x.copy()
    for c in range(len(data.class_names)):
        x[data.y == c, rows, cols] = _watermark_patch(c, side)
    watermark_masks = np.zeros_like(data.masks)
    watermark_masks[:, rows, cols] = True
    return data._replace(x=x, watermark_masks=watermark_masks)


def make_shapes(
    n: int,
    *,
    image_size: int = 64,
    num_classes: int = 3,
    watermark: bool = False,
    seed: int = 0,
) -> ShapesData:
    """Generate ``n`` shape images (see the module docstring).

    Deterministic in ``seed``. For a given seed the ``watermark=True`` images equal the
    ``watermark=False`` ones everywhere except inside ``watermark_masks``. Classes are exactly
    balanced (counts differ by at most one) and shuffled.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in [2, {len(CLASS_NAMES)}], got {num_classes!r}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size!r}")
    data = _render(int(n), int(image_size), int(num_classes), seed)
    return _stamp_watermark(data) if watermark else data


def make_demo_splits(
    *,
    n_train: int = 1500,
    n_val: int = 300,
    n_probes: int = 24,
    image_size: int = 64,
    num_classes: int = 3,
    seed: int = 0,
) -> dict[str, ShapesData]:
    """Data for the demo's two runs (clean and shortcut), as ``ShapesData`` values.

    Keys:

    * ``"train_clean"``: training images without watermark (the clean run).
    * ``"train_watermark"``: the *same* images and labels with the class watermark (the shortcut
      run), so the two runs differ only by the mark.
    * ``"val"``: clean held-out images; the shortcut model's accuracy drops here.
    * ``"val_watermark"``: the same held-out images with the mark (the shortcut model looks
      perfect on these: the trap a watermarked test set sets).
    * ``"probes_clean"`` / ``"probes_watermark"``: a further held-out set, class balanced, without
      / with the mark, for the monitor of the clean / shortcut run. Same images in both, so the
      two runs' saliency can be compared picture by picture; ``masks`` and ``watermark_masks``
      are the object and watermark masks to pass to the monitor.

    Each part is generated from its own stream derived from ``seed`` (so each is exactly class
    balanced, and parts are independent draws from the same distribution). With the default
    sizes each demo run trains in under ~20 s on 2 CPU cores (module docstring); 300
    validation images resolve accuracy to a few percent; 24 probes are 8 per class (6 with
    four classes), and a monitor can draw its probes from them.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_probes", n_probes)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    make_shapes(0, image_size=image_size, num_classes=num_classes)  # validates the arguments
    splits = {}
    for part, (name, n) in enumerate((("train", n_train), ("val", n_val), ("probes", n_probes))):
        stream = (seed, part)  # independent child stream per part
        clean = _render(n, image_size, num_classes, stream)
        marked = _stamp_watermark(clean)
        if name == "val":
            splits["val"], splits["val_watermark"] = clean, marked
        else:
            splits[f"{name}_clean"], splits[f"{name}_watermark"] = clean, marked
    return splits

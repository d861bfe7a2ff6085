"""The shortcut suite's images and models: a factory of cases, generated in code, nothing fetched.

A case (:class:`Case`) names a source of images, a size, a cue (or a control), the cue's
geometry, an architecture and a seed. :func:`make_images` draws images of a case with or without
its cue, together with exact object masks and the mask of where the cue was painted;
:func:`build_model` builds and compiles the case's model.

Sources:

* ``photos``: objects cut out of photographs that ship inside the scikit-image and scikit-learn
  wheels (a dahlia from sklearn's ``flower.jpg``, the cup and saucer of skimage's ``coffee``, the
  head of skimage's ``chelsea``: one class each) along an ellipse, jittered in place, scale,
  colour and mirror, pasted onto random crops of other shipped photographs and textures.
  The ellipse is the object mask.
* ``shapes``: the earlier suite's synthetic shapes (circle, square, triangle) on a dark, blotchy
  background; the mask is the rasterised shape.

Cues (perfectly predictive of the class in training; ``cue=False`` draws the artefact-free
split: same layout, no cue, or for backgrounds a class-independent one):

* ``corner``: a ``mark`` px checkerboard of the class colour and black, ``inset`` px in from the
  bottom-right corner; ``edge``: the same, centred on the right edge; ``stamp``: a black
  ``mark`` px box with the class's glyph in its colour, ``inset`` px in from a random corner of
  each image; ``frame``: a ``frame`` px border of the class colour.
* ``centre_on``: the mark at the image's centre, painted on the object (inside its mask);
  ``centre_off``: the mark at the centre with the object kept away from it.
* ``tint``: the background blended with the class colour; ``bgphoto``: each class's backgrounds
  are crops of one photograph (Waterbirds-style).

Controls (no class information outside the object): ``clean``; ``closeup`` (the object fills the
frame); ``texture`` (the class is a texture filling the frame: grass, gravel, brick; mask = the
whole image); ``logo`` (the same white-and-grey mark on every image of every class) and
``white_frame`` (the same white frame on every image).

Every draw comes from ``np.random.default_rng(seed)``; NumPy's global RNG is never touched.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np

NUM_CLASSES = 3
SIZES = (32, 64, 128)
SOURCES = ("photos", "shapes")
FIXED_PLACE = ("corner", "edge", "stamp", "frame")
CENTRED = ("centre_on", "centre_off")
BACKGROUNDS = ("tint", "bgphoto")
CUES = FIXED_PLACE + CENTRED + BACKGROUNDS
CONTROLS = ("clean", "closeup", "texture", "logo", "white_frame")
KINDS = CUES + CONTROLS
PHOTO_ONLY = ("bgphoto", "closeup", "texture")
ARCHS = (
    "valid_gap",
    "same_gap",
    "same_gmp",
    "same_flatten",
    "valid_flatten",
    "resnet",
    "mobilenetv2",
)
# Seeds: thresholds may be tuned on TUNE only; the README's figures come from HELD_OUT.
TUNE_SEEDS = (0, 1, 2, 3)
HELD_OUT_SEEDS = (4, 5, 6, 7)

COLOURS = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.2, 0.4, 1.0]], np.float32)
LOGO_COLOUR = np.array([0.95, 0.95, 0.95], np.float32)
# 3x5 glyphs, one per class ("T", "L", "X"-like), for the stamp.
GLYPHS = np.array(
    [
        [[1, 1, 1], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]],
        [[1, 0, 1], [1, 0, 1], [0, 1, 0], [1, 0, 1], [1, 0, 1]],
    ],
    bool,
)
SHAPE_NAMES = ("circle", "square", "triangle")
PHOTO_NAMES = ("flower", "cup", "cat")
TEXTURE_NAMES = ("grass", "gravel", "brick")


@dataclass(frozen=True)
class Case:
    """One configuration of the suite.

    Attributes:
        kind: a cue (``CUES``) or a control (``CONTROLS``).
        source: "photos" or "shapes".
        size: image side in pixels (32, 64 or 128).
        mark: side of the mark or stamp in pixels (4-12).
        inset: pixels between the mark and the image's edge (0-6).
        frame: frame width in pixels (1-3).
        arch: the model (``ARCHS``).
        seed: seed of the images, the model's initial weights and the draw of this case.
    """

    kind: str
    source: str = "photos"
    size: int = 64
    mark: int = 8
    inset: int = 2
    frame: int = 2
    arch: str = "same_gap"
    seed: int = 0

    def name(self) -> str:
        parts = [self.kind, self.source, str(self.size), self.arch, f"s{self.seed}"]
        if self.kind in ("corner", "edge", "stamp", "centre_on", "centre_off", "logo"):
            parts.insert(3, f"m{self.mark}i{self.inset}")
        if self.kind in ("frame", "white_frame"):
            parts.insert(3, f"f{self.frame}")
        return "-".join(parts)

    def as_dict(self) -> dict:
        return asdict(self)


class Images(NamedTuple):
    """Images of one case.

    Attributes:
        x: float32 (n, S, S, 3) in [0, 1].
        y: int32 (n,) classes.
        masks: bool (n, S, S), the object (with the mark, for ``centre_on``: it is painted on
            the object).
        cue: bool (n, S, S), the pixels the cue was painted on; all False without a cue and for
            background cues (whose cue is everywhere outside the object).
    """

    x: np.ndarray
    y: np.ndarray
    masks: np.ndarray
    cue: np.ndarray


def draw_cases(seed: int, kinds=KINDS) -> list[Case]:
    """One case per kind for ``seed``, every factor drawn at random (seeded by ``seed``).

    Sizes, architectures and sources are cycled in a seed-shuffled order, so that every seed
    covers each of them about equally; marks 4-12 px, insets 0-6 px, frames 1-3 px are drawn
    uniformly.
    """
    rng = np.random.default_rng(1_000 + seed)
    sizes = list(rng.permutation(len(SIZES)))
    archs = list(rng.permutation(len(ARCHS)))
    cases = []
    for k, kind in enumerate(kinds):
        source = "photos" if kind in PHOTO_ONLY else SOURCES[int(rng.integers(0, 2))]
        size = SIZES[sizes[(k + seed) % len(SIZES)]]
        arch = ARCHS[archs[(k + seed) % len(ARCHS)]]
        mark = int(rng.integers(4, 13))
        inset = int(rng.integers(0, 7))
        frame = int(rng.integers(1, 4))
        if kind in CENTRED:
            mark = max(mark, 6)  # a centred 4 px mark at 128 px is under 0.1% of the image
        mark = min(mark, size // 4)
        cases.append(Case(kind, source, size, mark, inset, frame, arch, seed))
    return cases


# --- photographs -----------------------------------------------------------------------------


def _as_float(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3].astype(np.float32) / 255.0


@functools.lru_cache(maxsize=1)
def photo_assets():
    """The shipped photographs: objects (image, ellipse (cy, cx, ry, rx) in pixels), background
    photos, class background photos and textures. Needs scikit-image and scikit-learn (the
    ``bench`` extra); both ship these files inside their wheels."""
    try:
        import skimage.data as sk
        from sklearn.datasets import load_sample_images
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The photo cases of the shortcut suite need scikit-image and scikit-learn: "
            "pip install 'keras-saliency-monitor[bench]'"
        ) from err
    china, flower = (_as_float(im) for im in load_sample_images().images)
    objects = [
        (flower, (220.0, 310.0, 136.0, 140.0)),  # the dahlia
        (_as_float(sk.coffee()), (211.0, 248.0, 164.0, 230.0)),  # cup and saucer
        (_as_float(sk.chelsea()), (155.0, 240.0, 141.0, 183.0)),  # the cat's head
    ]
    scenery = [
        _as_float(sk.rocket()),
        _as_float(sk.astronaut()),
        china,
        _as_float(sk.hubble_deep_field()),
        _as_float(sk.immunohistochemistry()),
        _as_float(sk.camera()),
        _as_float(sk.moon()),
    ]
    textures = [_as_float(sk.grass()), _as_float(sk.gravel()), _as_float(sk.brick())]
    return {
        "objects": objects,
        "backgrounds": scenery + textures,
        "class_backgrounds": [china, _as_float(sk.rocket()), _as_float(sk.astronaut())],
        "textures": textures,
    }


def _resize(image, out_h, out_w):
    from PIL import Image

    planes = [
        np.asarray(Image.fromarray(image[..., c]).resize((out_w, out_h), Image.BILINEAR))
        for c in range(image.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def _random_crop(photo, rng, size, lo=0.25, hi=0.6):
    h, w = photo.shape[:2]
    side = int(rng.uniform(lo, hi) * min(h, w))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = _resize(photo[y0 : y0 + side, x0 : x0 + side], size, size)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop


def _colour_jitter(image, rng):
    gain = rng.uniform(0.75, 1.25, size=3).astype(np.float32)
    return image * gain + np.float32(rng.uniform(-0.08, 0.08))


PAD = 512  # more than any object's box side (2 x 1.1 x its largest radius)


@functools.lru_cache(maxsize=NUM_CLASSES)
def _padded_object(cls):
    photo = photo_assets()["objects"][cls][0]
    return np.pad(photo, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge")


def _photo_object(cls, rng, diameter):
    """A (d, d, 3) cut-out of class ``cls``'s object and its (d, d) elliptical mask."""
    photo, (cy, cx, ry, rx) = photo_assets()["objects"][cls]
    scale = rng.uniform(0.9, 1.1)
    half = max(ry, rx) * scale
    cy += rng.uniform(-0.08, 0.08) * ry
    cx += rng.uniform(-0.08, 0.08) * rx
    y0, x0 = int(round(cy - half)), int(round(cx - half))
    side = int(round(2 * half))
    # Edge pixels where the box leaves the photo; the mask keeps only the ellipse.
    crop = _padded_object(cls)[y0 + PAD : y0 + PAD + side, x0 + PAD : x0 + PAD + side]
    d = int(diameter)
    cut = _resize(crop, d, d)
    yy, xx = np.mgrid[0:d, 0:d] + 0.5
    sy, sx = ry / (2 * half) * d, rx / (2 * half) * d
    oy, ox = (cy - y0) / side * d, (cx - x0) / side * d
    mask = ((yy - oy) / sy) ** 2 + ((xx - ox) / sx) ** 2 <= 1.0
    if rng.random() < 0.5:
        cut, mask = cut[:, ::-1], mask[:, ::-1]
    return _colour_jitter(cut, rng), mask


# --- geometry of the cues --------------------------------------------------------------------


def mark_box(case: Case, corner: int = 3):
    """(y0, x0, y1, x1) of the case's mark; for stamps, in corner 0-3 (TL, TR, BL, BR)."""
    s, m, i = case.size, case.mark, case.inset
    if case.kind in ("corner", "logo"):
        return (s - i - m, s - i - m, s - i, s - i)
    if case.kind == "edge":
        y0 = (s - m) // 2
        return (y0, s - i - m, y0 + m, s - i)
    if case.kind in CENTRED:
        y0 = (s - m) // 2
        return (y0, y0, y0 + m, y0 + m)
    if case.kind == "stamp":
        y0 = i if corner < 2 else s - i - m
        x0 = i if corner % 2 == 0 else s - i - m
        return (y0, x0, y0 + m, x0 + m)
    return None


def _keep_out(case: Case):
    """Boxes the object keeps clear of (the cue's place, grown by a pixel), in both splits."""
    s = case.size
    if case.kind in ("corner", "logo", "edge", "centre_off"):
        y0, x0, y1, x1 = mark_box(case)
        return [(y0 - 1, x0 - 1, y1 + 1, x1 + 1)]
    if case.kind == "stamp":
        boxes = [mark_box(case, k) for k in range(4)]
        return [(y0 - 1, x0 - 1, y1 + 1, x1 + 1) for y0, x0, y1, x1 in boxes]
    if case.kind in ("frame", "white_frame"):
        w = case.frame + 1
        return [(0, 0, w, s), (s - w, 0, s, s), (0, 0, s, w), (0, s - w, s, s)]
    return []


def _place(case: Case, rng, diameter):
    """Top-left corner of a (d, d) object box: fully inside and clear of the keep-out boxes."""
    s, d = case.size, diameter
    if case.kind == "centre_on":
        jitter = s / 16
        c = (s - d) / 2 + rng.uniform(-jitter, jitter, size=2)
        return int(round(c[0])), int(round(c[1]))
    if case.kind in ("closeup", "texture"):
        return (s - d) // 2 + int(rng.integers(-2, 3)), (s - d) // 2 + int(rng.integers(-2, 3))
    boxes = _keep_out(case)
    for _ in range(300):
        y0, x0 = (int(v) for v in rng.integers(0, s - d + 1, size=2))
        if all(y0 + d <= b0 or y0 >= b2 or x0 + d <= b1 or x0 >= b3 for b0, b1, b2, b3 in boxes):
            return y0, x0
    return None


def _checker(m):
    cell = max(1, m // 4)
    idx = np.arange(m) // cell
    return (np.add.outer(idx, idx) % 2 == 0)[:, :, None]


def _glyph(cls, m):
    """The class glyph, nearest-resized into an (m - 2) box: bool (m - 2, m - 2)."""
    inner = max(1, m - 2)
    rows = np.minimum((np.arange(inner) * 5) // inner, 4)
    width = max(1, round(inner * 3 / 5))
    cols = np.minimum((np.arange(inner) - (inner - width) // 2) * 3 // width, 2)
    valid = (np.arange(inner) >= (inner - width) // 2) & (cols >= 0)
    glyph = GLYPHS[cls][rows][:, np.clip(cols, 0, 2)]
    return glyph & valid[None, :]


def _draw_cue(case: Case, image, cue, cls, corner):
    """Paint the case's mark, stamp or frame on one image in place; mark ``cue`` where."""
    s = case.size
    kind = case.kind
    if kind in ("corner", "edge", "centre_on", "centre_off", "logo"):
        y0, x0, y1, x1 = mark_box(case)
        if kind == "logo":
            colour, ground = LOGO_COLOUR, np.float32(0.45)
        else:
            colour, ground = COLOURS[cls], np.float32(0.0)
        image[y0:y1, x0:x1] = np.where(_checker(case.mark), colour, ground)
        cue[y0:y1, x0:x1] = True
    elif kind == "stamp":
        y0, x0, y1, x1 = mark_box(case, corner)
        image[y0:y1, x0:x1] = 0.0
        inner = image[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
        inner[_glyph(cls, case.mark)] = COLOURS[cls]
        cue[y0:y1, x0:x1] = True
    elif kind in ("frame", "white_frame"):
        w = case.frame
        colour = LOGO_COLOUR if kind == "white_frame" else COLOURS[cls]
        band = np.zeros((s, s), bool)
        band[:w], band[-w:], band[:, :w], band[:, -w:] = True, True, True, True
        image[band] = colour
        cue |= band


# --- the images ------------------------------------------------------------------------------


def _shapes_background(rng, n, s):
    from keras_saliency_monitor.demo_data import _upsample

    x = np.empty((n, s, s, 3), np.float32)
    x[...] = rng.uniform(0.1, 0.45, size=(n, 1, 1, 3))
    for grid, amp in ((4, 0.15), (8, 0.08)):
        x += _upsample(rng.uniform(-amp, amp, size=(n, grid, grid, 3)).astype(np.float32), s)
    return x


def _diameter(case: Case, rng):
    s = case.size
    if case.kind == "closeup":
        return int(s * rng.uniform(1.2, 1.45))
    if case.kind == "texture":
        return s
    lo, hi = (0.4, 0.55) if case.source == "photos" else (0.35, 0.5)
    if case.kind == "centre_off":  # room beside the centre mark
        hi = min(hi, (s - case.mark) / 2 / s - 0.02)
        lo = min(lo, hi)
    return max(6, int(s * rng.uniform(lo, hi)))


def make_images(case: Case, n: int, seed: int, cue: bool = True) -> Images:
    """``n`` images of ``case``, classes balanced and shuffled.

    Args:
        case: the configuration.
        n: how many images.
        seed: seed of this draw (the caller gives training, probe and test draws their own).
        cue: False draws the artefact-free split: no mark, stamp or frame, and backgrounds that
            carry no class (a random class's tint or photo).

    Returns:
        Images(x, y, masks, cue).
    """
    if case.kind not in KINDS:
        raise ValueError(f"unknown kind {case.kind!r}; expected one of {KINDS}")
    if case.source == "shapes" and case.kind in PHOTO_ONLY:
        raise ValueError(f"kind {case.kind!r} exists only for source='photos'")
    rng = np.random.default_rng(seed)
    s = case.size
    y = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int32)
    masks = np.zeros((n, s, s), bool)
    cues = np.zeros((n, s, s), bool)
    with_cue = cue and case.kind in CUES + ("logo", "white_frame")
    # The class a background cue names: the image's own class, or a random one without the cue.
    # Drawn in both splits, so that a seed's two splits differ only where the cue is.
    random_class = rng.integers(0, NUM_CLASSES, n)
    named = y if cue else random_class
    if case.source == "shapes":
        x = _shapes_background(rng, n, s)
    else:
        assets = photo_assets()
        x = np.empty((n, s, s, 3), np.float32)
        for i in range(n):
            if case.kind == "bgphoto":
                photo = assets["class_backgrounds"][named[i]]
            else:
                pool = assets["backgrounds"]
                photo = pool[int(rng.integers(0, len(pool)))]
            x[i] = _colour_jitter(_random_crop(photo, rng, s), rng)
    if case.kind == "tint":
        x = 0.55 * x + 0.4 * COLOURS[named][:, None, None, :]
    for i in range(n):
        d = _diameter(case, rng)
        spot = _place(case, rng, d)
        while spot is None:  # too big to keep clear of the cue: shrink
            d = max(4, int(d * 0.85))
            spot = _place(case, rng, d)
        oy, ox = spot
        if case.kind == "texture":
            tex = photo_assets()["textures"][y[i]]
            x[i] = _colour_jitter(_random_crop(tex, rng, s, 0.15, 0.4), rng)
            masks[i] = True
            continue
        if case.source == "shapes":
            from keras_saliency_monitor.demo_data import _shape_mask

            local = _shape_mask(SHAPE_NAMES[y[i]], d / 2, d / 2, d / 2.4, 0.0, d)
            under = x[i, max(oy, 0) : oy + d, max(ox, 0) : ox + d].reshape(-1, 3).mean(axis=0)
            paint = np.broadcast_to(
                np.clip(under + rng.uniform(0.3, 0.6, size=3), 0.0, 1.0), (d, d, 3)
            ).astype(np.float32)
        else:
            paint, local = _photo_object(y[i], rng, d)
        # Clip the object's box to the image (close-ups overhang it).
        ty0, tx0 = max(oy, 0), max(ox, 0)
        ty1, tx1 = min(oy + d, s), min(ox + d, s)
        sub = local[ty0 - oy : ty1 - oy, tx0 - ox : tx1 - ox]
        region = x[i, ty0:ty1, tx0:tx1]
        region[sub] = paint[ty0 - oy : ty1 - oy, tx0 - ox : tx1 - ox][sub]
        masks[i, ty0:ty1, tx0:tx1] = sub
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.03)
    np.clip(x, 0.0, 1.0, out=x)
    corners = rng.integers(0, 4, n)  # the stamps' corners, drawn in both splits
    if with_cue:
        for i in range(n):
            _draw_cue(case, x[i], cues[i], y[i], int(corners[i]))
    if case.kind in ("frame", "white_frame"):
        masks &= ~_frame_band(case)  # the object keeps clear anyway; exact in both splits
    if case.kind == "centre_on":  # the mark is painted on the object: part of its mask
        y0, x0, y1, x1 = mark_box(case)
        masks[:, y0:y1, x0:x1] = True
    return Images(x.astype(np.float32), y, masks, cues)


def _frame_band(case):
    band = np.zeros((case.size, case.size), bool)
    w = case.frame
    band[:w], band[-w:], band[:, :w], band[:, -w:] = True, True, True, True
    return band


# --- models ----------------------------------------------------------------------------------


def build_model(case: Case):
    """The case's compiled model (softmax over 3 classes, inputs in [0, 1]).

    * ``valid_*``/``same_*``: three 3x3 convolutions (16, 32, 32 channels) with that padding,
      2x2 max pooling after the first two (and one more per doubling of the size above 32), then
      global average pooling (``gap``), global max pooling (``gmp``) or ``Flatten``.
    * ``resnet``: a conv stem and two residual blocks (conv-BN-ReLU-conv-BN + shortcut) with
      ``BatchNormalization`` at Keras's default momentum (0.99), global average pooling.
    * ``mobilenetv2``: ``keras.applications.MobileNetV2(alpha=0.35, weights=None)``, the
      images resized to 96 px inside the model when smaller.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(case.seed)
    s = case.size
    inputs = keras.Input((s, s, 3))
    h = layers.Rescaling(2.0, offset=-1.0)(inputs)
    lr = 3e-3
    extra = {32: 0, 64: 1, 128: 2}.get(s, 0)
    if case.arch == "mobilenetv2":
        side = max(s, 96)
        if side != s:
            h = layers.Resizing(side, side)(h)
        net = keras.applications.MobileNetV2(
            input_shape=(side, side, 3), alpha=0.35, weights=None, classes=NUM_CLASSES
        )
        outputs = net(h)
        lr = 1e-3
    elif case.arch == "resnet":
        h = layers.Conv2D(16, 3, padding="same", use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        for filters in (16, 32):
            for _ in range(1 + (extra if filters == 16 else 0)):
                h = layers.MaxPooling2D()(h)
            short = layers.Conv2D(filters, 1, use_bias=False)(h)
            r = layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
            r = layers.ReLU()(layers.BatchNormalization()(r))
            r = layers.Conv2D(filters, 3, padding="same", use_bias=False)(r)
            r = layers.BatchNormalization()(r)
            h = layers.ReLU()(layers.Add()([short, r]))
        h = layers.GlobalAveragePooling2D()(h)
        outputs = layers.Dense(NUM_CLASSES, activation="softmax")(h)
        lr = 1e-3
    else:
        padding, head = case.arch.split("_")
        for k, filters in enumerate((16, 32, 32)):
            h = layers.Conv2D(filters, 3, padding=padding, activation="relu")(h)
            if k < 2:
                h = layers.MaxPooling2D()(h)
        for _ in range(extra):
            h = layers.MaxPooling2D()(h)
        if head == "gap":
            h = layers.GlobalAveragePooling2D()(h)
        elif head == "gmp":
            h = layers.GlobalMaxPooling2D()(h)
        elif head == "flatten":
            h = layers.Flatten()(h)
        else:
            raise ValueError(f"unknown architecture {case.arch!r}; expected one of {ARCHS}")
        outputs = layers.Dense(NUM_CLASSES, activation="softmax")(h)
        if head == "flatten":
            lr = 1e-3
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


__all__ = [
    "ARCHS",
    "CENTRED",
    "CONTROLS",
    "CUES",
    "FIXED_PLACE",
    "HELD_OUT_SEEDS",
    "KINDS",
    "SIZES",
    "TUNE_SEEDS",
    "Case",
    "Images",
    "build_model",
    "draw_cases",
    "make_images",
    "mark_box",
    "replace",
]

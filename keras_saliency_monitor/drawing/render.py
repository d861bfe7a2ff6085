"""Rendering: float saliency maps and model inputs in, `uint8` RGB pictures out.

Pure numpy, plus matplotlib's colormap tables (never pyplot), `scipy.ndimage` for smoothing and
Pillow for caption text and block-mean downscaling. Nothing here computes gradients or writes files.

The pipeline used by the callback is::

    display, over = render_overlays(images, maps)         # (N, H, W, 3) uint8 each
    grid = make_grid(display, over, captions)              # (Hg, Wg, 3) uint8, Wg <= 1024

Shapes: `N` probes, `H x W` pixels, `C` channels.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import math
import numbers
import warnings
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Colormap
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = [
    "MAX_GRID_HEIGHT",
    "CAPTION_EM",
    "SEPARATOR",
    "TENSORBOARD_CARD_WIDTH",
    "FAULT_COLOR",
    "FLAT_COLOR",
    "FLAT_RANGE",
    "colorize",
    "downscale_images",
    "draw_text",
    "fit_text",
    "flat_maps",
    "frame_tiles",
    "heat_overlays",
    "load_font",
    "make_grid",
    "mark_tiles",
    "normalize_maps",
    "overlay",
    "render_overlays",
    "smooth_maps",
    "tile_factor",
    "to_display",
    "upscale_nearest",
]

# Hard cap on the height of a grid made by `make_grid`, in pixels. Rows past it are left out.
MAX_GRID_HEIGHT = 4096
# Width in pixels of the dark lines between cells, around the grid, and between a probe's image and
# its overlay.
SEPARATOR = 2

# Width of an image card in TensorBoard's Images dashboard at its default size (2.21, measured in
# headless Chromium at 1400x1000): every image is scaled to it unless "Show actual image size".
TENSORBOARD_CARD_WIDTH = 350
# Caption em size on screen, in pixels, that `make_grid(display_width=...)` aims for.
CAPTION_EM = 15

# Frames around overlay tiles: red for a broken (non-finite) map, a blue no colormap here uses
# for a flat one.
FAULT_COLOR = (255, 0, 0)
FLAT_COLOR = (0, 190, 255)

# Grey levels (R = G = B). Scalars, not RGB tuples: filling with a scalar is far faster in numpy.
_BACKGROUND = 16  # separators and empty cells
_STRIP = 40  # caption strip, a shade lighter so it reads as part of its cell
_TEXT = 235
_CAPTION_PAD = 3  # pixels between the strip's edges and the text
_MAX_CAPTION_LINES = 4
_MIN_GRID_WIDTH = 32
# A handful of names for error messages; all of `matplotlib.colormaps` are accepted.
_SUGGESTED_CMAPS = ("inferno", "magma", "viridis", "plasma", "cividis", "turbo", "jet", "gray")


# ----------------------------------------------------------------------------------------------
# Maps: smooth, normalise, colorise.
# ----------------------------------------------------------------------------------------------


def normalize_maps(maps, clip_percentile: float = 99.0) -> np.ndarray:
    """Scales each saliency map to [0, 1] by its own high percentile.

    Dividing by a high percentile rather than the maximum keeps a few extreme gradients from
    turning the rest of the map black; values above the percentile saturate at 1. Each image is
    scaled on its own, so the picture shows *where* a probe's saliency is, not how large it is
    compared with other probes (the magnitudes belong in the scalars).

    Args:
        maps: `(N, H, W)` array of non-negative saliency values. Negative values end up as 0;
            take `abs` of signed attributions first.
        clip_percentile: Percentile in (0, 100] of each map that becomes 1. If that percentile is
            0 (a map that is mostly zeros), the map's maximum is used instead. Defaults to 99.

    Returns:
        `(N, H, W)` float32 array in [0, 1]. A map that is all zeros, or that holds any NaN or
        infinity (a broken gradient, not a saliency pattern), comes out all zeros; the result
        never holds NaN.

    Raises:
        ValueError: If `clip_percentile` is not in (0, 100] or `maps` is not `(N, H, W)`.

    Example:
        >>> normalize_maps(np.array([[[0.0, 1.0, 4.0]]]), clip_percentile=100).tolist()
        [[[0.0, 0.25, 1.0]]]
    """
    if not _is_real(clip_percentile) or not 0 < clip_percentile <= 100:
        raise ValueError(
            "Invalid value for argument `clip_percentile`: expected a number in (0, 100], "
            f"received clip_percentile={clip_percentile!r}."
        )
    maps = _as_maps(maps, "maps")
    n = maps.shape[0]
    flat = maps.reshape(n, -1)  # (N, H*W)
    finite = np.isfinite(flat).all(axis=1)  # (N,)
    # Zero the broken maps before the percentile so NaN never reaches the arithmetic.
    flat = np.where(finite[:, None], flat, np.float32(0))
    scale = np.percentile(flat, clip_percentile, axis=1).astype(np.float32)  # (N,)
    scale = np.where(scale > 0, scale, flat.max(axis=1))
    usable = finite & (scale > 0)
    out = flat / np.where(usable, scale, np.float32(1))[:, None]
    out = np.where(usable[:, None], out, np.float32(0))
    return np.clip(out, 0, 1).astype(np.float32, copy=False).reshape(maps.shape)


# A map counts as flat when its whole range (max - min) is at most this fraction of its maximum:
# normalised by a high percentile, every pixel of it then lands in the top 10% of the colormap,
# a uniform saturated square that says nothing about where the model looks. The case that asked
# for it: an untrained backbone's Grad-CAM, 0.00259-0.00270 (a range of 4% of the maximum).
FLAT_RANGE = 0.1


def flat_maps(maps, max_range: float = FLAT_RANGE) -> np.ndarray:
    """Which maps are flat: nearly constant, so their picture is a uniform square.

    A map is flat when `max - min <= max_range * max` over its pixels; an all-zero map is flat
    too (no gradient at all). Maps holding NaN or infinity are not flat (they are broken, which
    the caller reports on its own).

    Args:
        maps: `(N, H, W)` array of non-negative saliency values.
        max_range: Largest range, as a fraction of the map's maximum, that still counts as flat.
            Defaults to `FLAT_RANGE` (0.1).

    Returns:
        `(N,)` bool array.

    Example:
        >>> flat_maps(np.array([[[0.00259, 0.00270]], [[0.0, 1.0]]])).tolist()
        [True, False]
    """
    if not _is_real(max_range) or not 0 <= max_range < 1:
        raise ValueError(
            "Invalid value for argument `max_range`: expected a number in [0, 1), "
            f"received max_range={max_range!r}."
        )
    maps = _as_maps(maps, "maps")
    flat = maps.reshape(maps.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1)
    safe = np.where(finite[:, None], flat, np.float32(0))
    hi, lo = safe.max(axis=1), safe.min(axis=1)
    return finite & (hi - lo <= np.float32(max_range) * np.abs(hi))


def smooth_maps(maps, sigma: float = 0.0) -> np.ndarray:
    """Gaussian-smooths each map over its spatial axes.

    Raw gradients are speckled at pixel scale; a little smoothing (sigma of 1-2 pixels) makes the
    region the model attends to easier to see. Probes are never mixed: there is no smoothing
    along the batch axis.

    Args:
        maps: `(N, H, W)` array.
        sigma: Standard deviation of the Gaussian, in pixels. 0 returns the maps unchanged.
            Defaults to 0.

    Returns:
        `(N, H, W)` float32 array. Borders are handled by reflection, so total mass is kept.

    Raises:
        ValueError: If `sigma` is negative or not finite, or `maps` is not `(N, H, W)`.
    """
    if not _is_real(sigma) or sigma < 0:
        raise ValueError(
            "Invalid value for argument `sigma`: expected a finite number >= 0 (pixels), "
            f"received sigma={sigma!r}."
        )
    maps = _as_maps(maps, "maps")
    if sigma == 0:
        return maps
    # sigma 0 on axis 0 keeps probes independent; one call smooths the whole batch.
    return ndimage.gaussian_filter(maps, sigma=(0.0, float(sigma), float(sigma)), mode="reflect")


def colorize(maps01, cmap: str | Colormap = "inferno") -> np.ndarray:
    """Turns maps in [0, 1] into RGB pictures through a matplotlib colormap.

    The colormap is sampled once into a 256-entry table (cached per name), indexed by
    `round(255 * x)` as the dashboard does. Not matplotlib's `cmap(x, bytes=True)`: 0.4 ms faster
    for 16 maps of 112 px, but it bins by `floor(256 * x)` and truncates (inferno's top comes out
    254, not 255): 91% of the pixels would differ from the dashboard's.

    Args:
        maps01: `(N, H, W)` array with values in [0, 1] (other shapes work too; the colour axis
            is appended). Values outside are clipped; NaN shows as 0.
        cmap: Name of a colormap in `matplotlib.colormaps`, or a `Colormap` instance. Defaults to
            "inferno", which is perceptually uniform and still readable in grayscale.

    Returns:
        `(N, H, W, 3)` uint8 array.

    Raises:
        ValueError: If `cmap` is not a known colormap name.
    """
    lut = _colormap_table(cmap) if isinstance(cmap, Colormap) else _cached_table(_cmap_name(cmap))
    values = np.array(maps01, dtype=np.float32)  # a copy, edited in place below
    np.nan_to_num(values, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(values, 0, 1, out=values)
    values *= 255
    values += 0.5  # round half up, then truncate
    return np.take(lut, values.astype(np.uint8), axis=0)  # (..., 3)


def _cmap_name(cmap) -> str:
    if not isinstance(cmap, str):
        raise ValueError(
            "Invalid value for argument `cmap`: expected a matplotlib colormap name or Colormap, "
            f"received cmap={cmap!r}."
        )
    if cmap not in matplotlib.colormaps:
        close = difflib.get_close_matches(cmap, list(matplotlib.colormaps), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Invalid value for argument `cmap`: unknown matplotlib colormap {cmap!r}.{hint} "
            f"Valid names include {', '.join(map(repr, _SUGGESTED_CMAPS))} "
            "(all names: `list(matplotlib.colormaps)`)."
        )
    return cmap


@functools.lru_cache(maxsize=16)
def _cached_table(name: str) -> np.ndarray:
    table = _colormap_table(matplotlib.colormaps[name])
    table.flags.writeable = False  # shared by every call; nobody may edit it
    return table


def _colormap_table(cmap: Colormap) -> np.ndarray:
    # Floats k/255: for a 256-colour map these land exactly on colour k, so index 0 and 255 are
    # the colormap's own end colours.
    rgba = cmap(np.linspace(0.0, 1.0, 256))  # (256, 4) floats in [0, 1]
    return np.rint(rgba[:, :3] * 255).astype(np.uint8)  # (256, 3)


# ----------------------------------------------------------------------------------------------
# Images: make model inputs displayable, blend.
# ----------------------------------------------------------------------------------------------


def to_display(images, display_fn: Callable | None = None) -> np.ndarray:
    """Turns model inputs of any value range into displayable RGB.

    Without `display_fn`, each image is min-max stretched on its own (over all its shown channels
    together, so colours keep their balance): inputs in [0, 1], [0, 255], [-1, 1] or standardised
    all come out spanning 0..255. A constant image becomes mid grey (128). Non-finite pixels show
    black. To show true colours instead (undo your own preprocessing), pass `display_fn`.

    Channels: 1 is repeated to grey RGB; 3 is used as is; 4 is taken as RGBA and the alpha
    dropped; any other count (2, or 5 and more, e.g. multispectral) is averaged over channels and
    shown in grey. `(N, H, W)` input (no channel axis) is grey.

    Args:
        images: `(N, H, W, C)` or `(N, H, W)` array, as fed to the model.
        display_fn: Optional callable taking the `(N, H, W[, C])` float32 batch (a copy) and
            returning an array of the same `N, H, W` with values in [0, 1] (float) or 0..255
            (uint8), and any channel count handled as above. Defaults to None (min-max).

    Returns:
        `(N, H, W, 3)` uint8 array.

    Raises:
        ValueError: If `images` or the output of `display_fn` has the wrong shape or range, or
            `display_fn` raises (its error is chained).
        TypeError: If `display_fn` is not callable.
    """
    x = _as_images(images, "images")  # (N, H, W[, C]) float32, a copy
    if display_fn is None:
        return _minmax_u8(_select_channels(x, "images"))
    if not callable(display_fn):
        raise TypeError(
            "Invalid value for argument `display_fn`: expected a callable or None, "
            f"received display_fn={display_fn!r}."
        )
    try:
        shown = display_fn(x)
    except Exception as err:  # noqa: BLE001 - the user's function; reported with its error
        raise ValueError(
            f"Invalid value for argument `display_fn`: it raised {type(err).__name__}: {err} "
            f"when called on the probes, a float32 batch of shape {x.shape}. Expected a "
            "function of that batch returning images in [0, 1] (float) or 0..255 (uint8) of "
            "the same N, H, W; fix it, or pass display_fn=None for a min-max stretch."
        ) from err
    shown01 = _check_display_output(shown, x.shape[:3])  # (N, H, W[, C']) in [0, 1]
    u8 = np.rint(_select_channels(shown01, "display_fn output") * 255).astype(np.uint8)
    return _gray_to_rgb(u8)


def _check_display_output(out, nhw: tuple[int, ...]) -> np.ndarray:
    out = np.asarray(out)
    if out.ndim not in (3, 4) or out.shape[:3] != nhw:
        raise ValueError(
            "`display_fn` must return an array shaped like its input, (N, H, W) or (N, H, W, C) "
            f"with N, H, W = {nhw}; it returned shape {out.shape}."
        )
    if out.dtype == np.uint8:
        return out.astype(np.float32) / 255
    if out.dtype.kind not in "biuf":
        raise ValueError(
            f"`display_fn` must return float values in [0, 1] or uint8; it returned dtype "
            f"{out.dtype}."
        )
    out = out.astype(np.float32)
    # A little slack for round-off in an undo-normalisation like x * std + mean.
    tol = 1e-3
    finite = bool(np.isfinite(out).all())
    lo, hi = (float(out.min()), float(out.max())) if out.size and finite else (0.0, 0.0)
    if not finite or lo < -tol or hi > 1 + tol:
        looks_255 = finite and lo >= -tol and 1 + tol < hi <= 255
        hint = " (values look like 0..255: divide by 255 or cast to uint8)" if looks_255 else ""
        raise ValueError(
            "`display_fn` must return float values in [0, 1] or uint8; it returned "
            f"{'non-finite values' if not finite else f'min={lo:g}, max={hi:g}'}, "
            f"dtype {out.dtype}{hint}."
        )
    return np.clip(out, 0, 1)


def _select_channels(x: np.ndarray, what: str) -> np.ndarray:
    """`(N, H, W[, C])` -> `(N, H, W, 1)` grey or `(N, H, W, 3)` RGB, per the rule in to_display."""
    if x.ndim == 3:
        return x[..., None]
    c = x.shape[-1]
    if c == 0:
        raise ValueError(f"{what} has no channels: shape {x.shape}.")
    if c in (1, 3):
        return x
    if c == 4:
        return x[..., :3]  # RGBA: alpha is not part of the picture
    return x.mean(axis=-1, keepdims=True)


def _minmax_u8(x: np.ndarray) -> np.ndarray:
    """Per-image min-max of `(N, H, W, C)` floats to `(N, H, W, 3)` uint8; constant -> 128."""
    n = x.shape[0]
    flat = x.reshape(n, -1)  # (N, H*W*C)
    finite = np.isfinite(flat)
    all_finite = bool(finite.all())
    if all_finite:  # the common case: skip the masking passes
        lo, hi = flat.min(axis=1), flat.max(axis=1)  # (N,)
    else:
        lo = np.where(finite, flat, np.inf).min(axis=1)
        hi = np.where(finite, flat, -np.inf).max(axis=1)
    span = hi.astype(np.float64) - lo  # float64: a huge float32 range must not overflow to inf
    stretch = span > 0  # False for constant images and images with no finite pixel
    scale = (255.0 / np.where(stretch, span, 1.0)).astype(np.float32)
    offset = np.where(stretch, lo, 0).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        out = flat - offset[:, None]
        out *= scale[:, None]
    if not all_finite:
        out[~finite] = 0
    np.clip(out, 0, 255, out=out)
    out += 0.5  # round half up, then truncate
    u8 = out.astype(np.uint8)
    u8[~stretch] = 128
    if not all_finite:
        u8[~finite] = 0  # again: a constant image's broken pixels stay black too
    return _gray_to_rgb(u8.reshape(x.shape))


def _gray_to_rgb(u8: np.ndarray) -> np.ndarray:
    if u8.shape[-1] == 1:
        return np.repeat(u8, 3, axis=-1)
    return np.ascontiguousarray(u8)


def overlay(display_u8, heat_u8, alpha: float = 0.5, maps01=None) -> np.ndarray:
    """Alpha-blends heatmaps over images.

    Args:
        display_u8: `(N, H, W, 3)` uint8 images (from `to_display`).
        heat_u8: `(N, H, W, 3)` uint8 heatmaps (from `colorize`).
        alpha: Opacity of the heatmap in [0, 1]: 0 shows the image, 1 the heatmap. Defaults to
            0.5.
        maps01: Optional `(N, H, W)` maps in [0, 1]. If given, each pixel's heatmap opacity is
            `alpha * maps01`, so low-saliency pixels show the plain image and the colour marks
            only where the model looks (with a dark-to-bright colormap a uniform blend would
            darken the whole image instead). Defaults to None (uniform `alpha`).

    Returns:
        `(N, H, W, 3)` uint8 array.

    Raises:
        ValueError: If `alpha` is not in [0, 1] or the shapes disagree.
    """
    if not _is_real(alpha) or not 0 <= alpha <= 1:
        raise ValueError(
            f"Invalid value for argument `alpha`: expected a number in [0, 1], received "
            f"alpha={alpha!r}."
        )
    display, heat = _rgb_pair(display_u8, heat_u8, "`heat_u8`", "`colorize`")
    weight = np.float32(alpha)
    if maps01 is not None:
        m = np.asarray(maps01, dtype=np.float32)
        if m.shape != display.shape[:3]:
            raise ValueError(
                f"`maps01` must be (N, H, W) = {display.shape[:3]}; received shape {m.shape}."
            )
        weight = weight * np.clip(np.nan_to_num(m, nan=0.0), 0, 1)  # (N, H, W)
    # Pillow's Image.composite is no faster (2.3 vs 2.1 ms, 16 tiles of 112 px) and 1 level off.
    # display + weight * (heat - display), in place on one float buffer. With weight in [0, 1] the
    # result stays between the two inputs, so no clipping is needed.
    base = display.astype(np.float32)
    out = heat.astype(np.float32)
    out -= base
    if np.ndim(weight):
        # One channel at a time: broadcasting (N, H, W, 1) over a last axis of 3 is several times
        # slower in numpy than three strided passes.
        for c in range(3):
            out[..., c] *= weight
    else:
        out *= weight
    out += base
    out += 0.5  # round half up, then truncate
    return out.astype(np.uint8)


def dim_grey(display_u8, low: float = 0.15, span: float = 0.6) -> np.ndarray:
    """A dimmed grey copy of display images: the backdrop a heatmap reads best on.

    Colour in the backdrop competes with the colormap, and a bright backdrop hides its dark end;
    grey luminance squeezed into ``[low, low + span]`` keeps the scene recognisable while the heat
    stands out. The original colours are shown beside the overlay in the grid.

    Args:
        display_u8: `(N, H, W, 3)` uint8 images.
        low: grey level of black, in [0, 1]. Defaults to 0.15.
        span: grey range the image's luminance is mapped to. Defaults to 0.6.

    Returns:
        `(N, H, W, 3)` uint8 array.
    """
    display = np.asarray(display_u8)
    if display.dtype != np.uint8 or display.ndim != 4 or display.shape[-1] != 3:
        raise ValueError(
            f"`display_u8` must be uint8 (N, H, W, 3); received {display.dtype} {display.shape}."
        )
    grey = display.mean(axis=-1, dtype=np.float32) * np.float32(span / 255.0) + np.float32(low)
    grey = np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def heat_overlays(
    backdrop_u8,
    maps,
    *,
    clip_percentile: float = 99.0,
    sigma: float = 0.0,
    cmap: str | Colormap = "inferno",
    alpha: float = 0.8,
) -> np.ndarray:
    """Overlays of raw maps on a fixed backdrop: smooth, normalise, colorise, blend per pixel.

    The one pipeline behind the callback's grid and the report's re-rendered overlays (from the
    stored maps), so both show the same picture for the same maps and options.

    Args:
        backdrop_u8: `(N, H, W, 3)` uint8 images the heat is drawn over (see `dim_grey`).
        maps: `(N, H, W)` raw non-negative saliency maps at the backdrop's resolution.
        clip_percentile: See `normalize_maps`. Defaults to 99.
        sigma: See `smooth_maps`, in pixels of `maps`. Defaults to 0.
        cmap: See `colorize`. Defaults to "inferno".
        alpha: Heatmap opacity at the most salient pixels. Defaults to 0.8.

    Returns:
        `(N, H, W, 3)` uint8 overlays.
    """
    maps01 = normalize_maps(smooth_maps(maps, sigma), clip_percentile)
    return overlay(backdrop_u8, colorize(maps01, cmap), alpha, maps01=maps01)


def tile_factor(hw: tuple[int, ...], max_side: int) -> int:
    """Smallest integer factor that brings the longer of `hw` to at most `max_side` pixels."""
    return max(1, math.ceil(max(hw) / max(1, int(max_side))))


def downscale_images(images_u8, factor: int) -> np.ndarray:
    """Block-mean downscale of `(N, H, W, 3)` uint8 images or `(N, H, W)` uint8/float32 maps by an
    integer `factor`, with Pillow's `Image.reduce` (a block cut by an edge: its pixels' mean)."""
    images = np.asarray(images_u8)
    rgb = images.ndim == 4 and images.shape[-1] == 3
    dtypes = (np.uint8,) if rgb else (np.uint8, np.float32)  # what Pillow's reduce takes
    if images.ndim != (4 if rgb else 3) or images.dtype not in dtypes:
        raise ValueError(
            "`images_u8` must be uint8 (N, H, W, 3), or uint8 or float32 (N, H, W); received "
            f"{images.dtype} {images.shape}."
        )
    if not _is_int(factor) or factor < 1:
        raise ValueError(
            f"Invalid value for argument `factor`: expected an int >= 1, received {factor!r}."
        )
    if factor == 1 or images.size == 0:  # Pillow refuses empty images
        return images[:, ::factor, ::factor]
    return np.stack([np.asarray(Image.fromarray(image).reduce(int(factor))) for image in images])


def frame_tiles(tiles_u8, which, color) -> np.ndarray:
    """Copy of `(N, H, W, 3)` uint8 tiles with a coloured frame around the tiles where `which`.

    The frame is 1/12 of the tile's shorter side wide (at least 1 pixel).
    """
    out = np.array(tiles_u8, copy=True)  # slices: 0.11 ms for 16 tiles, ImageDraw.rectangle 0.22
    t = max(1, min(out.shape[1:3]) // 12)
    c = np.asarray(color, np.uint8)
    which = np.asarray(which, bool)
    out[which, :t] = c
    out[which, -t:] = c
    out[which, :, :t] = c
    out[which, :, -t:] = c
    return out


def mark_tiles(overlays_u8, flat, non_finite) -> np.ndarray:
    """Overlays with the frames that say a map is flat (`FLAT_COLOR`) or broken (`FAULT_COLOR`).

    Args:
        overlays_u8: `(N, H, W, 3)` uint8 overlays.
        flat: `(N,)` bool, see `flat_maps`.
        non_finite: `(N,)` bool: maps (or outputs) holding NaN or infinity.

    Returns:
        The overlays themselves when nothing is marked, else a marked copy.
    """
    flat = np.asarray(flat, bool)
    non_finite = np.asarray(non_finite, bool)
    out = overlays_u8
    if (flat & ~non_finite).any():
        out = frame_tiles(out, flat & ~non_finite, FLAT_COLOR)
    if non_finite.any():
        out = frame_tiles(out, non_finite, FAULT_COLOR)
    return out


def render_overlays(
    images,
    maps,
    *,
    clip_percentile: float = 99.0,
    sigma: float = 0.0,
    cmap: str | Colormap = "inferno",
    alpha: float = 0.5,
    display_fn: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Renders images and their saliency overlays: smooth, normalise, colorise, blend.

    The blend is per pixel (`overlay(..., maps01=...)`): a pixel's heatmap opacity is `alpha`
    times its normalised saliency, so the image stays visible where the model does not look.

    Args:
        images: `(N, H, W, C)` or `(N, H, W)` model inputs; see `to_display`.
        maps: `(N, H, W)` raw non-negative saliency maps, aligned with `images`.
        clip_percentile: See `normalize_maps`. Defaults to 99.
        sigma: See `smooth_maps`. Defaults to 0.
        cmap: See `colorize`. Defaults to "inferno".
        alpha: Heatmap opacity at the most salient pixels, in [0, 1]. Defaults to 0.5.
        display_fn: See `to_display`. Defaults to None.

    Returns:
        `(display_u8, overlay_u8)`, each `(N, H, W, 3)` uint8, at the input resolution.

    Raises:
        ValueError: If an argument is invalid or `maps` does not match `images`' `N, H, W`.
    """
    images = np.asarray(images)
    maps = np.asarray(maps)
    if maps.ndim != 3 or images.ndim not in (3, 4) or images.shape[:3] != maps.shape:
        raise ValueError(
            "`maps` must be (N, H, W) matching `images` (N, H, W[, C]); received maps of shape "
            f"{maps.shape} and images of shape {images.shape}."
        )
    display = to_display(images, display_fn)
    heat = heat_overlays(
        display, maps, clip_percentile=clip_percentile, sigma=sigma, cmap=cmap, alpha=alpha
    )
    return display, heat


# ----------------------------------------------------------------------------------------------
# Grid: tiles side by side with captions.
# ----------------------------------------------------------------------------------------------


def upscale_nearest(tiles_u8, min_size: int = 96) -> np.ndarray:
    """Enlarges small images by an integer factor, nearest neighbour, so they are easy to see.

    The factor is the smallest integer that brings the longer side to at least `min_size`
    (28x28 -> 112x112 for 96); images already that large are returned as they are. Never
    downscales. Integer factors and repetition keep every pixel a crisp square.

    Args:
        tiles_u8: `(N, H, W, ...)` array, typically `(N, H, W, 3)` uint8.
        min_size: Target length in pixels of the longer side. Defaults to 96.

    Returns:
        `(N, f*H, f*W, ...)` array of the same dtype (the input itself when `f` is 1).

    Raises:
        ValueError: If `min_size` is negative or `tiles_u8` has fewer than 3 dimensions.
    """
    if not _is_int(min_size) or min_size < 0:
        raise ValueError(
            "Invalid value for argument `min_size`: expected an int >= 0, "
            f"received min_size={min_size!r}."
        )
    tiles = np.asarray(tiles_u8)
    if tiles.ndim < 3:
        raise ValueError(f"`tiles_u8` must be (N, H, W, ...); received shape {tiles.shape}.")
    return _repeat(tiles, _upscale_factor(tiles.shape[1:3], min_size))


def _upscale_factor(hw: tuple[int, ...], min_size: int) -> int:
    longest = max(hw)
    return max(1, math.ceil(min_size / longest)) if longest > 0 else 1


def _repeat(tiles: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return np.ascontiguousarray(tiles)
    # np.repeat: 0.14 ms for 16 tiles 28 -> 112 px; Image.resize(NEAREST) tile by tile: 0.60 ms.
    # Width first, while the array is small: repeating along W copies one pixel at a time,
    # repeating along H copies whole rows.
    return tiles.repeat(factor, axis=2).repeat(factor, axis=1)


def make_grid(
    display_u8,
    overlay_u8,
    captions: Sequence[str] | None,
    *,
    max_width: int = 1024,
    columns: int | None = None,
    min_tile: int = 96,
    display_width: int | None = None,
) -> np.ndarray:
    """Lays probes out in a labelled grid: per probe `[image | overlay]` over a caption strip.

    Layout, in this order:

    1. Tiles smaller than `min_tile` are enlarged by an integer factor (see `upscale_nearest`),
       but never so much that one cell would exceed `max_width`.
    2. If one cell is still wider than `max_width` (or a tile is taller than half of
       `MAX_GRID_HEIGHT`), tiles are shrunk by an integer factor, averaging pixel blocks.
    3. Columns: `columns`, else `ceil(sqrt(N))`, reduced until the grid fits `max_width`.
    4. Height: the grid is capped at `MAX_GRID_HEIGHT` (4096) pixels. If the rows do not fit,
       columns are first widened as far as `max_width` allows; if they still do not fit, the
       probes that do not fit are left out (the first ones are kept) with a warning. Split many
       probes over several grids to avoid this.

    Captions are drawn in light text on a dark strip with Pillow's default font. All strips share
    one height, enough for the longest caption, at most 4 lines. Lines too long for the cell end
    in "…" (see `fit_text`).

    Args:
        display_u8: `(N, H, W, 3)` uint8 images.
        overlay_u8: `(N, H, W, 3)` uint8 overlays, same shape.
        captions: One string per probe, may contain "\\n"; None for no captions.
        max_width: Maximum grid width in pixels. The default 1024 fits TensorBoard's image card
            without scaling. Defaults to 1024.
        columns: Number of probe cells per row. Defaults to None (`ceil(sqrt(N))`).
        min_tile: Tiles are enlarged until their longer side is at least this. Defaults to 96.
        display_width: Width in pixels the grid will be shown at, e.g. `TENSORBOARD_CARD_WIDTH`
            (TensorBoard scales every image to its card's width). Captions are then sized to be
            about `CAPTION_EM` pixels tall on screen. Defaults to None (sized for 100% zoom).

    Returns:
        `(Hg, Wg, 3)` contiguous uint8 array with `Wg <= max_width` and
        `Hg <= MAX_GRID_HEIGHT`.

    Raises:
        ValueError: If the shapes, the number of captions or an argument is invalid.
    """
    display, over = _rgb_pair(display_u8, overlay_u8, "`overlay_u8`", "`overlay`")
    n, h, w, _ = display.shape
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"Nothing to draw: `display_u8` has shape {display.shape}.")
    if captions is None:
        captions = [""] * n
    if isinstance(captions, str) or len(captions) != n:
        raise ValueError(
            f"Invalid value for argument `captions`: expected a list of {n} strings (one per "
            f"probe), received {captions!r:.200}."
        )
    if not _is_int(max_width) or max_width < _MIN_GRID_WIDTH:
        raise ValueError(
            f"Invalid value for argument `max_width`: expected an int >= {_MIN_GRID_WIDTH}, "
            f"received max_width={max_width!r}."
        )
    if columns is not None and (not _is_int(columns) or columns < 1):
        raise ValueError(
            "Invalid value for argument `columns`: expected a positive int or None, "
            f"received columns={columns!r}."
        )
    if not _is_int(min_tile) or min_tile < 0:
        raise ValueError(
            "Invalid value for argument `min_tile`: expected an int >= 0, "
            f"received min_tile={min_tile!r}."
        )

    sep = SEPARATOR

    def grid_width(cols: int, tile_w: int) -> int:
        return cols * (2 * tile_w + sep) + (cols + 1) * sep

    # 1-2. Tile size: enlarge small tiles, but keep one cell within max_width.
    up = _upscale_factor((h, w), min_tile)
    while up > 1 and grid_width(1, up * w) > max_width:
        up -= 1
    down = 1
    # Half the height cap leaves room for the caption strip in a one-row grid.
    while grid_width(1, -(-w // down)) > max_width or -(-h // down) > MAX_GRID_HEIGHT // 2:
        down += 1
    display = downscale_images(_repeat(display, up), down)  # (N, th, tw, 3)
    over = downscale_images(_repeat(over, up), down)
    th, tw = display.shape[1:3]
    cell_w = 2 * tw + sep

    # Captions: font size follows the cell width, within what reads well at 100% zoom; or, shown
    # scaled to `display_width`, big enough to be CAPTION_EM px tall on screen.
    if display_width is None:
        font_px = int(np.clip(round(cell_w / 18), 11, 16))
    else:
        max_cols = max(1, (max_width - sep) // (cell_w + sep))
        cols = min(columns if columns is not None else math.ceil(math.sqrt(n)), max_cols, n)
        scale = grid_width(cols, tw) / max(display_width, 1)
        font_px = int(np.clip(math.ceil(CAPTION_EM * max(scale, 1.0)), 11, cell_w // 8))
    font = load_font(max(font_px, 11))
    lines_per_probe = [_caption_lines(str(c), font, cell_w - 2 * _CAPTION_PAD) for c in captions]
    n_lines = max(len(lines) for lines in lines_per_probe)
    line_h = _line_height(font) + 1
    strip_h = n_lines * line_h + 2 * _CAPTION_PAD if n_lines else 0
    cell_h = th + strip_h

    # 3-4. Columns and rows within max_width and MAX_GRID_HEIGHT.
    max_cols = max(1, (max_width - sep) // (cell_w + sep))
    max_rows = max(1, (MAX_GRID_HEIGHT - sep) // (cell_h + sep))
    cols = min(columns if columns is not None else math.ceil(math.sqrt(n)), max_cols, n)
    if math.ceil(n / cols) > max_rows:
        cols = min(max_cols, n)
    shown = min(n, cols * max_rows)
    if shown < n:
        warnings.warn(
            f"make_grid: only {shown} of {n} probes fit in a {max_width}x{MAX_GRID_HEIGHT} grid "
            f"at {tw}x{th} px per tile; the last {n - shown} are left out. Split the probes "
            "over several grids to see them all.",
            stacklevel=2,
        )
    rows = math.ceil(shown / cols)

    grid = np.full((rows * (cell_h + sep) + sep, grid_width(cols, tw), 3), _BACKGROUND, np.uint8)
    for i in range(shown):
        r, c = divmod(i, cols)
        y, x = sep + r * (cell_h + sep), sep + c * (cell_w + sep)
        grid[y : y + th, x : x + tw] = display[i]
        grid[y : y + th, x + tw + sep : x + cell_w] = over[i]
        if strip_h:
            strip = Image.new("L", (cell_w, strip_h), _STRIP)  # light text on a dark grey strip
            draw = ImageDraw.Draw(strip)
            for k, line in enumerate(lines_per_probe[i]):
                draw.text((_CAPTION_PAD, _CAPTION_PAD + k * line_h), line, font=font, fill=_TEXT)
            level = np.asarray(strip)
            for channel in range(3):  # per channel: faster than broadcasting over RGB
                grid[y + th : y + cell_h, x : x + cell_w, channel] = level
    return grid


# ----------------------------------------------------------------------------------------------
# Text: Pillow's default font, drawn by Pillow; report.py draws its labels through these too.
# Pillow rasterises each line anew, ~0.11 ms a caption line: the 16-probe grid's 32 lines add
# ~2.5 ms to the write job's ~30 ms thread CPU per epoch (benchmarks/README.md, "Text").
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def load_font(size: int):
    """Pillow's default font at `size` px; its bitmap font on Pillow < 10.1 or without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # no `size` before 10.1; without FreeType it raises
        return ImageFont.load_default()


def _line_height(font) -> int:
    if hasattr(font, "getmetrics"):
        ascent, descent = font.getmetrics()
        return ascent + descent
    return font.getbbox("Agjy|")[3]


def fit_text(text: str, font, width: float, *, truncated: bool = False) -> str:
    """One line of `text` cut to fit `width` px, a cut marked with "…".

    With Pillow's bitmap fallback font the mark is "..", and characters outside Latin-1 (all it
    can encode: drawing others raises) become "?". `truncated` marks the line as cut anyway.
    """
    bitmap = not isinstance(font, ImageFont.FreeTypeFont)
    if bitmap:
        text = text.encode("latin-1", "replace").decode("latin-1")
    if not truncated and font.getlength(text) <= width:
        return text
    ellipsis = ".." if bitmap else "…"

    def marked(k):  # the first k characters with the mark
        return text[:k].rstrip() + ellipsis

    # The longest prefix that fits with the mark: widths grow with the prefix, so bisect over the
    # prefix lengths (only the ~log2(len) probed prefixes are ever built).
    fits = bisect.bisect_right(
        range(len(text) + 1), width, lo=1, key=lambda k: font.getlength(marked(k))
    )
    candidate = marked(fits - 1)
    return candidate if font.getlength(candidate) <= width else ""


def draw_text(draw: ImageDraw.ImageDraw, xy, text: str, font, width: float, fill) -> None:
    """Draws one line of `text` with its top left at `xy`, cut to `width` px (see `fit_text`)."""
    draw.text(xy, fit_text(text, font, width), font=font, fill=fill)


def one_line(text) -> str:
    """``text`` as one caption line: control characters (a newline, a tab) shown as escapes.

    For names that go into captions (class names): a newline in one would start a caption line
    of its own, which a reader takes for another field. ``"cat\\ndog"`` -> ``"cat\\\\ndog"``.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _caption_lines(caption: str, font, width: int) -> list[str]:
    """Splits a caption into at most `_MAX_CAPTION_LINES` lines, each fitting `width` px."""
    text = caption.replace("\r", "").replace("\t", "  ").rstrip()
    if not text:
        return []
    lines = text.split("\n")
    cut = len(lines) > _MAX_CAPTION_LINES
    lines = lines[:_MAX_CAPTION_LINES]
    return [
        fit_text(line, font, width, truncated=cut and k == len(lines) - 1)
        for k, line in enumerate(lines)
    ]


# ----------------------------------------------------------------------------------------------
# Validation helpers.
# ----------------------------------------------------------------------------------------------


def _is_real(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _rgb_pair(display_u8, other_u8, name: str, maker: str) -> tuple[np.ndarray, np.ndarray]:
    """`display_u8` and the tiles `name` as two uint8 `(N, H, W, 3)` arrays of the same shape."""
    display, other = np.asarray(display_u8), np.asarray(other_u8)
    if display.ndim != 4 or display.shape[-1] != 3 or other.shape != display.shape:
        raise ValueError(
            f"`display_u8` and {name} must both be (N, H, W, 3) of the same shape; received "
            f"{display.shape} and {other.shape}."
        )
    if display.dtype != np.uint8 or other.dtype != np.uint8:
        raise ValueError(
            f"`display_u8` and {name} must be uint8 (see `to_display` and {maker}); received "
            f"{display.dtype} and {other.dtype}."
        )
    return display, other


def _as_maps(maps, name: str) -> np.ndarray:
    """`maps` as a float32 `(N, H, W)` array with H, W > 0."""
    arr = np.asarray(maps)
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"`{name}` must be (N, H, W) with H, W > 0; received shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must hold real numbers; received dtype {arr.dtype}.")
    return arr.astype(np.float32, copy=False)


def _as_images(images, name: str) -> np.ndarray:
    """`images` as a float32 `(N, H, W[, C])` copy with H, W > 0."""
    arr = np.asarray(images)
    if arr.ndim not in (3, 4) or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(
            f"`{name}` must be (N, H, W, C) or (N, H, W) with H, W > 0; received shape {arr.shape}."
        )
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must hold real numbers; received dtype {arr.dtype}.")
    return np.array(arr, dtype=np.float32)  # a copy: display_fn may not edit the caller's batch

"""Tests for keras_saliency_monitor.drawing.render: numpy and matplotlib only, no TensorFlow."""

import matplotlib
import numpy as np
import pytest
from PIL import ImageFont

from keras_saliency_monitor.drawing import render

SEP = render.SEPARATOR


def _rng(seed=0):
    return np.random.default_rng(seed)


def _ref_color(cmap_name, value):
    """The colormap's own colour at `value` as uint8 RGB, computed without render.py."""
    rgba = matplotlib.colormaps[cmap_name](value)
    return np.rint(np.asarray(rgba[:3]) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Shapes and dtypes of every public function.
# ----------------------------------------------------------------------------------------------


def test_shapes_and_dtypes():
    rng = _rng()
    images = rng.normal(size=(5, 12, 10, 3)).astype(np.float32)
    maps = rng.random((5, 12, 10)).astype(np.float32)

    smoothed = render.smooth_maps(maps, 1.0)
    assert smoothed.shape == (5, 12, 10) and smoothed.dtype == np.float32
    maps01 = render.normalize_maps(maps)
    assert maps01.shape == (5, 12, 10) and maps01.dtype == np.float32
    heat = render.colorize(maps01)
    assert heat.shape == (5, 12, 10, 3) and heat.dtype == np.uint8
    display = render.to_display(images)
    assert display.shape == (5, 12, 10, 3) and display.dtype == np.uint8
    blended = render.overlay(display, heat, 0.5, maps01=maps01)
    assert blended.shape == (5, 12, 10, 3) and blended.dtype == np.uint8
    d, o = render.render_overlays(images, maps)
    assert d.shape == o.shape == (5, 12, 10, 3) and d.dtype == o.dtype == np.uint8
    up = render.upscale_nearest(d, min_size=24)
    assert up.shape == (5, 24, 20, 3) and up.dtype == np.uint8
    grid = render.make_grid(d, o, [f"probe {i}" for i in range(5)])
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.dtype == np.uint8
    assert grid.flags.c_contiguous


def test_inputs_are_not_modified():
    rng = _rng()
    images = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    maps = rng.random((3, 8, 8)).astype(np.float32)
    images_before, maps_before = images.copy(), maps.copy()
    d, o = render.render_overlays(images, maps, sigma=1.0)
    render.make_grid(d, o, ["a", "b", "c"])
    np.testing.assert_array_equal(images, images_before)
    np.testing.assert_array_equal(maps, maps_before)


# ----------------------------------------------------------------------------------------------
# normalize_maps
# ----------------------------------------------------------------------------------------------


def test_normalize_known_percentile():
    # Values 0, 1, ..., 100: with linear interpolation the 90th percentile is exactly 90.
    values = np.arange(101, dtype=np.float32)
    out = render.normalize_maps(values.reshape(1, 1, 101), clip_percentile=90)
    np.testing.assert_allclose(out[0, 0], np.minimum(values / 90, 1), rtol=1e-6)
    assert out[0, 0, 45] == pytest.approx(0.5)
    assert (out[0, 0, 90:] == 1).all()


def test_normalize_percentile_100_is_max_and_images_are_independent():
    a = np.array([[[0.0, 1.0], [2.0, 4.0]]], dtype=np.float32)
    out = render.normalize_maps(np.concatenate([a, 1000 * a]), clip_percentile=100)
    np.testing.assert_allclose(out[0], [[0, 0.25], [0.5, 1]])
    np.testing.assert_allclose(out[1], out[0])  # each map scaled by its own percentile


def test_normalize_zero_percentile_falls_back_to_max():
    m = np.zeros((1, 10, 10), dtype=np.float32)
    m[0, 3, 4] = 5.0  # the median is 0
    out = render.normalize_maps(m, clip_percentile=50)
    assert out[0, 3, 4] == 1.0
    assert out.sum() == 1.0


def test_normalize_all_zero_and_non_finite_maps_become_zero():
    maps = _rng().random((4, 6, 6)).astype(np.float32)
    maps[0] = 0
    maps[1, 2, 2] = np.nan
    maps[2, 0, 0] = np.inf
    out = render.normalize_maps(maps)
    assert np.isfinite(out).all()
    assert (out[:3] == 0).all()
    assert out[3].max() == 1.0  # the healthy map is untouched by its neighbours
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("bad", [0, -1, 100.5, float("nan"), "99", True, None])
def test_normalize_rejects_bad_percentile(bad):
    with pytest.raises(ValueError, match="clip_percentile"):
        render.normalize_maps(np.ones((1, 2, 2)), clip_percentile=bad)


def test_normalize_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        render.normalize_maps(np.ones((2, 2)))


# ----------------------------------------------------------------------------------------------
# smooth_maps
# ----------------------------------------------------------------------------------------------


def test_smooth_sigma_zero_is_identity_as_float32():
    maps = _rng().random((2, 5, 7))  # float64 in
    out = render.smooth_maps(maps, 0.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, maps.astype(np.float32))


def test_smooth_keeps_mass_of_interior_delta_and_spreads_it():
    maps = np.zeros((2, 41, 41), dtype=np.float32)
    maps[0, 20, 20] = 1.0
    out = render.smooth_maps(maps, 2.0)
    assert out[0].sum() == pytest.approx(1.0, abs=1e-4)
    assert out[0, 20, 20] < 0.1  # the peak spread out ...
    assert out[0, 20, 22] > 0.01 and out[0, 22, 20] > 0.01  # ... to its neighbours
    assert np.unravel_index(out[0].argmax(), (41, 41)) == (20, 20)
    assert (out[1] == 0).all()  # no smoothing across the batch axis


@pytest.mark.parametrize("bad", [-0.5, float("inf"), "1"])
def test_smooth_rejects_bad_sigma(bad):
    with pytest.raises(ValueError, match="sigma"):
        render.smooth_maps(np.ones((1, 3, 3)), bad)


# ----------------------------------------------------------------------------------------------
# colorize
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["inferno", "viridis", "gray"])
def test_colorize_end_colors_match_matplotlib(name):
    maps01 = np.array([[[0.0, 1.0]]], dtype=np.float32)
    out = render.colorize(maps01, name)
    np.testing.assert_array_equal(out[0, 0, 0], _ref_color(name, 0.0))
    np.testing.assert_array_equal(out[0, 0, 1], _ref_color(name, 1.0))


def test_colorize_default_is_inferno_and_clips_out_of_range_and_nan():
    maps01 = np.array([[[-3.0, np.nan, 7.0, 0.5]]], dtype=np.float32)
    out = render.colorize(maps01)
    zero, one = _ref_color("inferno", 0.0), _ref_color("inferno", 1.0)
    np.testing.assert_array_equal(out[0, 0, 0], zero)
    np.testing.assert_array_equal(out[0, 0, 1], zero)
    np.testing.assert_array_equal(out[0, 0, 2], one)
    # Mid value: within one table step of the colormap's own colour.
    assert np.abs(out[0, 0, 3].astype(int) - _ref_color("inferno", 0.5)).max() <= 3


def test_colorize_accepts_colormap_instance():
    maps01 = _rng().random((2, 4, 4))
    by_name = render.colorize(maps01, "magma")
    by_object = render.colorize(maps01, matplotlib.colormaps["magma"])
    np.testing.assert_array_equal(by_name, by_object)


def test_colorize_unknown_cmap_lists_valid_names():
    with pytest.raises(ValueError, match="cmap") as info:
        render.colorize(np.zeros((1, 2, 2)), "infernoo")
    message = str(info.value)
    assert "'infernoo'" in message and "'viridis'" in message
    assert "Did you mean 'inferno'" in message


# ----------------------------------------------------------------------------------------------
# to_display
# ----------------------------------------------------------------------------------------------


def _spans_full_range(u8):
    return all(img.min() == 0 and img.max() == 255 for img in u8)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.uniform(0, 255, (3, 8, 8, 3)),  # 0..255 floats
        lambda r: r.uniform(-1, 1, (3, 8, 8, 3)),  # [-1, 1]
        lambda r: r.normal(size=(3, 8, 8, 3)),  # standardised
        lambda r: r.uniform(0.2, 0.3, (3, 8, 8, 3)),  # a narrow [0, 1] range is stretched
        lambda r: r.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8),
    ],
)
def test_to_display_stretches_any_range_to_full_range(make):
    x = make(_rng())
    out = render.to_display(x)
    assert out.shape == (3, 8, 8, 3) and out.dtype == np.uint8
    assert _spans_full_range(out)


def test_to_display_is_monotone_and_exact_on_0_255():
    x = np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1)
    out = render.to_display(x)
    np.testing.assert_array_equal(out[..., 0], x[..., 0].astype(np.uint8))


@pytest.mark.parametrize("shape", [(2, 6, 6, 1), (2, 6, 6)])
def test_to_display_grayscale_gives_three_identical_channels(shape):
    out = render.to_display(_rng().random(shape))
    assert out.shape == (2, 6, 6, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert _spans_full_range(out)


def test_to_display_constant_image_is_mid_grey():
    x = np.full((2, 5, 5, 3), 0.7, dtype=np.float32)
    x[1] = _rng().random((5, 5, 3))
    out = render.to_display(x)
    assert (out[0] == 128).all()
    assert _spans_full_range(out[1:])  # its neighbour is stretched as usual


def test_to_display_rgba_drops_alpha_and_many_channels_average():
    rng = _rng()
    rgb = rng.random((2, 5, 5, 3))
    alpha = rng.uniform(-100, 100, (2, 5, 5, 1))
    np.testing.assert_array_equal(
        render.to_display(np.concatenate([rgb, alpha], axis=-1)), render.to_display(rgb)
    )
    five = rng.random((2, 5, 5, 5))
    np.testing.assert_array_equal(
        render.to_display(five), render.to_display(five.mean(axis=-1, keepdims=True))
    )


def test_to_display_non_finite_pixels_are_black():
    x = _rng().random((1, 4, 4, 1)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    out = render.to_display(x)
    assert (out[0, 0, 0] == 0).all()
    assert out.max() == 255


def test_to_display_with_display_fn_float_and_uint8():
    x = _rng().uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
    expected = np.rint((x + 1) / 2 * 255).astype(np.uint8)
    out = render.to_display(x, display_fn=lambda b: (b + 1) / 2)
    np.testing.assert_array_equal(out, expected)
    out_u8 = render.to_display(x, display_fn=lambda b: expected)
    np.testing.assert_array_equal(out_u8, expected)


def test_to_display_fn_gets_a_float32_copy():
    x = np.ones((1, 3, 3, 1), dtype=np.float64)

    def fn(batch):
        assert batch.dtype == np.float32
        batch[...] = 0  # must not reach the caller's array
        return batch

    render.to_display(x, display_fn=fn)
    assert (x == 1).all()


def test_to_display_fn_errors_are_clear():
    x = np.zeros((2, 4, 4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"display_fn.*\[0, 1\].*divide by 255"):
        render.to_display(x, display_fn=lambda b: b + 200.0)
    with pytest.raises(ValueError, match="display_fn.*non-finite"):
        render.to_display(x, display_fn=lambda b: b * np.nan)
    with pytest.raises(ValueError, match="display_fn.*shape"):
        render.to_display(x, display_fn=lambda b: b[:1])
    with pytest.raises(TypeError, match="display_fn"):
        render.to_display(x, display_fn="not callable")


def test_to_display_rejects_wrong_rank():
    with pytest.raises(ValueError, match="images"):
        render.to_display(np.zeros((4, 4)))


# ----------------------------------------------------------------------------------------------
# overlay
# ----------------------------------------------------------------------------------------------


def _pair(seed=0, shape=(2, 5, 5, 3)):
    rng = _rng(seed)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)


def test_overlay_alpha_zero_is_image_and_one_is_heat():
    display, heat = _pair()
    np.testing.assert_array_equal(render.overlay(display, heat, alpha=0.0), display)
    np.testing.assert_array_equal(render.overlay(display, heat, alpha=1.0), heat)


def test_overlay_uniform_half_is_the_rounded_mean():
    display, heat = _pair()
    out = render.overlay(display, heat, alpha=0.5).astype(int)
    mean = (display.astype(int) + heat.astype(int)) / 2
    assert np.abs(out - mean).max() <= 0.5


def test_overlay_per_pixel_weight_follows_maps():
    display, heat = _pair()
    maps01 = np.zeros((2, 5, 5), dtype=np.float32)
    maps01[:, 2, 2] = 1.0
    out = render.overlay(display, heat, alpha=1.0, maps01=maps01)
    np.testing.assert_array_equal(out[:, 2, 2], heat[:, 2, 2])  # fully salient: heat
    mask = maps01 == 0
    np.testing.assert_array_equal(out[mask], display[mask])  # not salient: the image


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_overlay_rejects_bad_alpha(bad):
    display, heat = _pair()
    with pytest.raises(ValueError, match="alpha"):
        render.overlay(display, heat, alpha=bad)


def test_overlay_rejects_mismatched_shapes():
    display, _ = _pair()
    _, heat = _pair(shape=(2, 5, 4, 3))
    with pytest.raises(ValueError, match="same shape"):
        render.overlay(display, heat)


# ----------------------------------------------------------------------------------------------
# render_overlays
# ----------------------------------------------------------------------------------------------


def test_render_overlays_marks_the_salient_pixel():
    images = np.full((1, 9, 9, 3), 0.5, dtype=np.float32)
    images[0, 0, 0] = 0.0  # not constant, so the stretch is defined
    maps = np.zeros((1, 9, 9), dtype=np.float32)
    maps[0, 4, 4] = 3.0
    display, over = render.render_overlays(images, maps, alpha=1.0, cmap="gray")
    np.testing.assert_array_equal(display, render.to_display(images))
    np.testing.assert_array_equal(over[0, 4, 4], [255, 255, 255])  # gray(1) at full weight
    np.testing.assert_array_equal(over[0, 1, 1], display[0, 1, 1])  # zero saliency: the image


def test_render_overlays_rejects_misaligned_maps():
    with pytest.raises(ValueError, match="maps"):
        render.render_overlays(np.zeros((2, 8, 8, 3)), np.zeros((2, 4, 4)))


# ----------------------------------------------------------------------------------------------
# upscale_nearest
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"), [(28, 112), (32, 96), (48, 96), (96, 96), (100, 100), (300, 300)]
)
def test_upscale_sizes(size, expected):
    tiles = np.zeros((2, size, size, 3), dtype=np.uint8)
    assert render.upscale_nearest(tiles, min_size=96).shape == (2, expected, expected, 3)


def test_upscale_repeats_pixels():
    tiles = _rng().integers(0, 256, (1, 28, 28, 3), dtype=np.uint8)
    up = render.upscale_nearest(tiles, min_size=96)
    np.testing.assert_array_equal(up[0, ::4, ::4], tiles[0])
    np.testing.assert_array_equal(up[0, 3::4, 3::4], tiles[0])


def test_upscale_uses_the_longer_side():
    tiles = np.zeros((1, 20, 50, 3), dtype=np.uint8)
    assert render.upscale_nearest(tiles, min_size=96).shape == (1, 40, 100, 3)


# ----------------------------------------------------------------------------------------------
# make_grid
# ----------------------------------------------------------------------------------------------


def _tiles(n, h, w, seed=0):
    return _pair(seed, (n, h, w, 3))


def test_make_grid_places_image_and_overlay_of_probe_0():
    display, over = _tiles(4, 96, 96)
    grid = render.make_grid(display, over, ["a", "b", "c", "d"], min_tile=96)
    # Cell 0 starts one separator in from the top-left corner: [image | sep | overlay].
    np.testing.assert_array_equal(grid[SEP : SEP + 96, SEP : SEP + 96], display[0])
    x = SEP + 96 + SEP
    np.testing.assert_array_equal(grid[SEP : SEP + 96, x : x + 96], over[0])
    # 4 probes -> 2 columns: probe 1's image starts after cell 0 and a separator.
    x1 = SEP + (2 * 96 + SEP) + SEP
    np.testing.assert_array_equal(grid[SEP : SEP + 96, x1 : x1 + 96], display[1])
    assert grid.shape[1] == 2 * (2 * 96 + SEP) + 3 * SEP


def test_make_grid_upscales_tiny_tiles():
    display, over = _tiles(2, 28, 28)
    grid = render.make_grid(display, over, ["a", "b"], min_tile=96)
    x = SEP + 112 + SEP
    np.testing.assert_array_equal(
        grid[SEP : SEP + 112, x : x + 112], render.upscale_nearest(over, 96)[0]
    )


def test_make_grid_caption_is_drawn():
    display, over = _tiles(1, 96, 96)
    grid = render.make_grid(display, over, ["true: cat  pred: dog 0.93"])
    strip = grid[SEP + 96 : -SEP, SEP : SEP + 2 * 96 + SEP]  # below the tiles of cell 0
    assert strip.shape[0] > 8
    levels = np.unique(strip)
    assert len(levels) > 10  # anti-aliased text, not a flat strip
    assert strip.max() > 180 and np.median(strip) < 80  # light text on a dark strip


def test_make_grid_without_captions_has_no_strip():
    display, over = _tiles(1, 96, 96)
    grid = render.make_grid(display, over, None)
    assert grid.shape == (96 + 2 * SEP, 2 * 96 + 3 * SEP, 3)


@pytest.mark.parametrize(
    ("n", "size", "max_width"),
    [(1, 96, 1024), (16, 28, 1024), (32, 64, 1024), (9, 224, 1024), (3, 700, 1024), (5, 64, 300)],
)
def test_make_grid_respects_max_width(n, size, max_width):
    display, over = _tiles(n, size, size)
    grid = render.make_grid(display, over, ["x" * 80] * n, max_width=max_width)
    assert grid.shape[1] <= max_width
    assert grid.shape[0] <= render.MAX_GRID_HEIGHT
    assert grid.dtype == np.uint8 and grid.flags.c_contiguous


def test_make_grid_downscales_cells_wider_than_max_width():
    display = np.full((1, 50, 800, 3), 200, dtype=np.uint8)
    grid = render.make_grid(display, display.copy(), ["wide"], max_width=1024)
    assert grid.shape[1] <= 1024
    assert grid[SEP, SEP].tolist() == [200, 200, 200]  # averaging keeps a flat tile flat


def test_make_grid_columns_argument_and_width_cap():
    display, over = _tiles(6, 96, 96)
    one_column = render.make_grid(display, over, None, columns=1)
    assert one_column.shape[1] == 2 * 96 + 3 * SEP
    too_many = render.make_grid(display, over, None, columns=6, max_width=500)
    assert too_many.shape[1] <= 500


def test_make_grid_caps_height_with_a_warning():
    display, over = _tiles(400, 96, 96)
    with pytest.warns(UserWarning, match="left out"):
        grid = render.make_grid(display, over, ["p"] * 400)
    assert grid.shape[0] <= render.MAX_GRID_HEIGHT and grid.shape[1] <= 1024


def test_make_grid_truncates_long_caption_lines():
    font = render.load_font(12)
    lines = render._caption_lines("word " * 100 + "\n" + "second", font, 150)
    assert len(lines) == 2
    assert lines[0].endswith("…") and font.getlength(lines[0]) <= 150
    assert lines[1] == "second"
    many = render._caption_lines("\n".join(f"line {i}" for i in range(10)), font, 150)
    assert len(many) == 4 and many[-1].endswith("…")


def test_make_grid_with_bitmap_font_fallback(monkeypatch):
    if not hasattr(ImageFont, "load_default_imagefont"):
        pytest.skip("Pillow < 10.1 has no separate bitmap default font")
    monkeypatch.setattr(render, "load_font", lambda size: ImageFont.load_default_imagefont())
    display, over = _tiles(2, 32, 32)
    # Non-Latin-1 text and an ellipsis would make the bitmap font raise if passed through.
    grid = render.make_grid(display, over, ["猫 " * 60, "pred: café 0.93…"])
    assert grid.dtype == np.uint8 and grid.shape[1] <= 1024
    lines = render._caption_lines("x" * 200, ImageFont.load_default_imagefont(), 100)
    assert lines[0].endswith("..")


def test_make_grid_validates_arguments():
    display, over = _tiles(2, 8, 8)
    with pytest.raises(ValueError, match="captions"):
        render.make_grid(display, over, ["only one"])
    with pytest.raises(ValueError, match="max_width"):
        render.make_grid(display, over, None, max_width=4)
    with pytest.raises(ValueError, match="columns"):
        render.make_grid(display, over, None, columns=0)
    with pytest.raises(ValueError, match="uint8"):
        render.make_grid(display.astype(np.float32), over, None)
    with pytest.raises(ValueError, match="same shape"):
        render.make_grid(display, over[:1], None)


def test_dim_grey_maps_luminance_into_the_dimmed_range():
    from keras_saliency_monitor.drawing.render import dim_grey

    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[0, 0, 0] = 255  # white
    img[0, 1, 1] = (255, 0, 0)  # red: luminance taken as the channel mean, 85
    out = dim_grey(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert (out[..., 0] == out[..., 2]).all()  # grey
    np.testing.assert_array_equal(out[0, 0, 0], [int(0.75 * 255 + 0.5)] * 3)  # 0.15 + 0.6
    np.testing.assert_array_equal(out[0, 0, 1], [int(0.15 * 255 + 0.5)] * 3)  # black -> 0.15
    np.testing.assert_array_equal(out[0, 1, 1], [int((0.15 + 0.6 / 3) * 255 + 0.5)] * 3)


# ----------------------------------------------------------------------------------------------
# Flat maps, frames, and the grid as TensorBoard shows it.
# ----------------------------------------------------------------------------------------------


def test_flat_maps_flags_the_near_constant_gradcam_of_the_issue():
    rng = _rng()
    gradcam = rng.uniform(0.00259, 0.00270, (1, 7, 7))  # an untrained backbone's Grad-CAM
    gradcam[0, 0, 0], gradcam[0, -1, -1] = 0.00259, 0.00270
    zeros = np.zeros((1, 7, 7))
    peaked = np.zeros((1, 7, 7))
    peaked[0, 3, 3] = 1.0
    wide = rng.uniform(0.85, 1.0, (1, 7, 7))  # a 15% range: still a picture
    wide[0, 0, 0], wide[0, 1, 1] = 0.85, 1.0
    broken = np.ones((1, 7, 7))
    broken[0, 0, 0] = np.nan
    maps = np.concatenate([gradcam, zeros, peaked, wide, broken])
    assert render.flat_maps(maps).tolist() == [True, True, False, False, False]
    # The bound: range <= max_range * max.
    edge = np.array([[[0.905, 1.0]], [[0.895, 1.0]]])
    assert render.flat_maps(edge, 0.1).tolist() == [True, False]
    with pytest.raises(ValueError, match="max_range"):
        render.flat_maps(maps, 1.5)


def test_mark_tiles_frames_flat_in_blue_and_broken_in_red():
    tiles = np.full((3, 24, 24, 3), 100, np.uint8)
    marked = render.mark_tiles(tiles, [True, False, True], [False, False, True])
    assert tuple(marked[0, 0, 0]) == render.FLAT_COLOR
    assert tuple(marked[0, 12, 12]) == (100, 100, 100)  # inside the frame: untouched
    assert (marked[1] == 100).all()
    assert tuple(marked[2, -1, 5]) == render.FAULT_COLOR  # broken wins over flat
    assert (tiles == 100).all()  # the input is not edited
    assert render.mark_tiles(tiles, [False] * 3, [False] * 3) is tiles


def test_heat_overlays_marks_only_the_salient_pixel():
    backdrop = np.full((1, 5, 5, 3), 60, np.uint8)
    maps = np.zeros((1, 5, 5), np.float32)
    maps[0, 2, 2] = 3.0
    out = render.heat_overlays(backdrop, maps, clip_percentile=100, alpha=0.5)
    top = _ref_color("inferno", 1.0).astype(float)
    np.testing.assert_array_equal(out[0, 2, 2], np.floor(60 + 0.5 * (top - 60) + 0.5))
    assert (np.delete(out.reshape(25, 3), 12, axis=0) == 60).all()


def test_downscale_images_is_a_block_mean():
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    small = render.downscale_images(images, 2)
    expected = images.reshape(2, 2, 2, 2, 2, 3).astype(float).mean(axis=(2, 4))
    np.testing.assert_array_equal(small, np.floor(expected + 0.5))
    assert render.tile_factor((224, 224), 112) == 2 and render.tile_factor((225, 100), 112) == 3
    assert render.tile_factor((12, 12), 112) == 1


def test_downscale_images_averages_the_pixels_of_blocks_cut_by_the_edge():
    maps = _rng().random((2, 5, 7)).astype(np.float32)
    images = _rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    for x in (maps, images):
        small = render.downscale_images(x, 2)
        assert small.shape == (2, 3, 4, *x.shape[3:]) and small.dtype == x.dtype
        for i, j in np.ndindex(3, 4):
            block = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].astype(np.float64)
            mean = block.mean(axis=(1, 2))
            expected = mean if x.dtype == np.float32 else np.floor(mean + 0.5)
            np.testing.assert_allclose(small[:, i, j], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="images_u8"):
        render.downscale_images(images.astype(np.float32), 2)


def _first_caption_line_height(grid, tile):
    """Height in grid pixels of the ink of the first caption line of cell 0 (found by pixels)."""
    strip = grid[SEP + tile :, SEP : SEP + 2 * tile + SEP].max(axis=-1)
    ink = np.flatnonzero((strip > 150).any(axis=1))
    gaps = np.flatnonzero(np.diff(ink) > 1)
    last = ink[gaps[0]] if gaps.size else ink[-1]
    return last - ink[0] + 1


def test_grid_captions_are_readable_at_tensorboard_card_width():
    """16 probes of 112 px, 2 per row, as the callback draws them: shown scaled to the 350 px
    card, the first caption line ("#0 true cat", no descender) is at least 10 px tall; the old
    layout (4 per row, sized for 100% zoom) gave under 5 px."""
    display, over = _tiles(16, 112, 112)
    captions = [f"#{k} true cat\npred dog 0.93" for k in range(16)]
    grid = render.make_grid(
        display, over, captions, columns=2, display_width=render.TENSORBOARD_CARD_WIDTH
    )
    shown = render.TENSORBOARD_CARD_WIDTH / grid.shape[1]
    assert grid.shape[1] == 2 * (2 * 112 + SEP) + 3 * SEP
    assert _first_caption_line_height(grid, 112) * shown >= 10
    old = render.make_grid(display, over, captions)  # ceil(sqrt(16)) = 4 columns, 1024 px cap
    old_shown = render.TENSORBOARD_CARD_WIDTH / old.shape[1]
    assert _first_caption_line_height(old, 112) * old_shown < 5


# ----------------------------------------------------------------------------------------------
# Names in captions and a display_fn that raises (issue 19).
# ----------------------------------------------------------------------------------------------


def test_one_line_escapes_control_characters_and_keeps_the_rest():
    assert render.one_line("cat\ndog") == "cat\\ndog"
    assert render.one_line("a\tb\r\x00") == "a\\tb\\r\\x00"
    assert render.one_line("Größe 猫 x y") == "Größe 猫 x y"  # printable, spaces included
    assert render.one_line(7) == "7"
    lines = render._caption_lines(render.one_line("cat\nFLAT MAP"), render.load_font(12), 400)
    assert len(lines) == 1


def test_a_display_fn_that_raises_is_named_with_its_error():
    def broken(x):
        return x / np.zeros(3, int)[5]  # IndexError

    with pytest.raises(ValueError, match=r"`display_fn`: it raised IndexError.*\(2, 4, 4, 3\)"):
        render.to_display(np.zeros((2, 4, 4, 3), np.float32), broken)

"""The shortcut suite's factory (benchmarks/shortcut_data.py), at tiny sizes.

Positions are checked against boxes worked out here by hand from the case's numbers, not
against the factory's own ``mark_box``.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import shortcut_data as data  # noqa: E402

N = 12


def _draw(case, cue=True, seed=7, n=N):
    return data.make_images(case, n, seed, cue=cue)


def _box(s, y0, x0, y1, x1):
    out = np.zeros((s, s), bool)
    out[y0:y1, x0:x1] = True
    return out


@pytest.mark.parametrize("source", ["shapes", "photos"])
@pytest.mark.parametrize("size", [32, 64])
def test_shapes_ranges_and_balanced_classes(source, size):
    if source == "photos":
        pytest.importorskip("skimage")
        pytest.importorskip("sklearn")
    imgs = _draw(data.Case("corner", source, size, mark=6, inset=2))
    assert imgs.x.shape == (N, size, size, 3) and imgs.x.dtype == np.float32
    assert imgs.y.shape == (N,) and imgs.y.dtype == np.int32
    assert imgs.masks.shape == imgs.cue.shape == (N, size, size)
    assert imgs.x.min() >= 0.0 and imgs.x.max() <= 1.0
    assert np.bincount(imgs.y, minlength=3).tolist() == [N // 3] * 3
    # Every image shows an object of a sensible size (not empty, not the whole image).
    share = imgs.masks.mean(axis=(1, 2))
    assert share.min() > 0.03 and share.max() < 0.6


@pytest.mark.parametrize(
    "kind, size, mark, inset, box",
    [
        # bottom-right corner, `inset` px in: rows and columns s - inset - mark .. s - inset
        ("corner", 32, 6, 3, (23, 23, 29, 29)),
        ("corner", 64, 12, 0, (52, 52, 64, 64)),
        # centred on the right edge: rows (s - mark) // 2 ..
        ("edge", 32, 4, 6, (14, 22, 18, 26)),
        # the image's centre
        ("centre_on", 32, 8, 0, (12, 12, 20, 20)),
        ("centre_off", 64, 6, 0, (29, 29, 35, 35)),
    ],
)
def test_marks_are_where_the_case_says(kind, size, mark, inset, box):
    case = data.Case(kind, "shapes", size, mark=mark, inset=inset)
    imgs = _draw(case)
    expected = _box(size, *box)
    assert (imgs.cue == expected[None]).all()
    y0, x0, y1, x1 = box
    for i in range(N):
        patch = imgs.x[i, y0:y1, x0:x1].reshape(-1, 3)
        colour = data.COLOURS[imgs.y[i]]
        # A checkerboard of the class colour and black: exactly those two colours.
        is_colour = np.all(np.isclose(patch, colour), axis=1)
        is_black = np.all(patch == 0.0, axis=1)
        assert (is_colour | is_black).all() and is_colour.any() and is_black.any()


def test_stamps_sit_in_one_of_the_four_corners_with_the_class_colour():
    s, m, i = 32, 8, 2
    imgs = _draw(data.Case("stamp", "shapes", s, mark=m, inset=i), n=30)
    corners = [_box(s, y, x, y + m, x + m) for y in (i, s - i - m) for x in (i, s - i - m)]
    seen = set()
    for k in range(30):
        match = [c for c in range(4) if (imgs.cue[k] == corners[c]).all()]
        assert len(match) == 1
        seen.add(match[0])
        patch = imgs.x[k][imgs.cue[k]]
        assert np.all(np.isclose(patch, data.COLOURS[imgs.y[k]]) | (patch == 0.0))
    assert len(seen) >= 3  # random corners


@pytest.mark.parametrize("width", [1, 2, 3])
def test_frames_have_the_given_width(width):
    s = 32
    imgs = _draw(data.Case("frame", "shapes", s, frame=width))
    band = ~_box(s, width, width, s - width, s - width)
    assert (imgs.cue == band[None]).all()
    for k in range(N):
        assert np.allclose(imgs.x[k][band], data.COLOURS[imgs.y[k]])
    assert not (imgs.masks & band[None]).any()


@pytest.mark.parametrize(
    "kind", ["corner", "edge", "stamp", "frame", "centre_on", "centre_off", "logo", "white_frame"]
)
def test_the_artefact_free_split_differs_only_where_the_cue_was(kind):
    case = data.Case(kind, "shapes", 32, mark=6, inset=1, frame=2)
    marked, free = _draw(case, cue=True), _draw(case, cue=False)
    assert not free.cue.any()
    assert (marked.y == free.y).all() and (marked.masks == free.masks).all()
    differs = np.any(marked.x != free.x, axis=-1)
    assert not (differs & ~marked.cue).any()
    assert differs.any()
    # Masks are the object: clear of the cue, except the centred mark painted on the object.
    overlap = (marked.masks & marked.cue).sum(axis=(1, 2))
    if kind == "centre_on":
        assert (overlap == marked.cue.sum(axis=(1, 2))).all()
    else:
        assert (overlap == 0).all()


def test_background_cues_name_the_class_only_with_the_cue():
    n = 60
    case = data.Case("tint", "shapes", 32)
    for cue, agree in ((True, 1.0), (False, None)):
        imgs = data.make_images(case, n, 3, cue=cue)
        background = np.where(imgs.masks[..., None], np.nan, imgs.x)
        mean = np.nanmean(background, axis=(1, 2))  # (n, 3)
        named = np.argmax(mean - mean.mean(axis=0), axis=1)  # the strongest tint channel
        # COLOURS: red, green, blue-ish: the dominant channel names the class
        rate = np.mean(named == imgs.y)
        if agree:
            assert rate == agree
        else:
            assert rate < 0.6  # a random class's tint: about chance (1/3)


@pytest.mark.parametrize("kind", ["logo", "white_frame"])
def test_uninformative_controls_carry_no_class_information(kind):
    imgs = _draw(data.Case(kind, "shapes", 32, mark=8, inset=2, frame=2), n=30)
    # The same pixels in the same place on every image of every class.
    assert (imgs.cue == imgs.cue[0]).all() and imgs.cue[0].any()
    values = imgs.x[:, imgs.cue[0]]
    assert (values == values[0]).all()


def test_clean_controls_carry_no_cue():
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    for kind in ("clean", "closeup", "texture"):
        imgs = _draw(data.Case(kind, "photos", 32))
        assert not imgs.cue.any()
    closeup = _draw(data.Case("closeup", "photos", 32))
    assert closeup.masks.mean() > 0.6  # the object fills the frame
    assert _draw(data.Case("texture", "photos", 32)).masks.all()


def test_cases_cover_the_factors_and_the_seed_groups_are_disjoint():
    assert not set(data.TUNE_SEEDS) & set(data.HELD_OUT_SEEDS)
    cases = [c for s in data.TUNE_SEEDS + data.HELD_OUT_SEEDS for c in data.draw_cases(s)]
    assert {c.size for c in cases} == set(data.SIZES)
    assert {c.arch for c in cases} == set(data.ARCHS)
    assert {c.kind for c in cases} == set(data.KINDS)
    assert all(4 <= c.mark <= 12 and 0 <= c.inset <= 6 and 1 <= c.frame <= 3 for c in cases)
    assert data.draw_cases(5) == data.draw_cases(5)  # reproducible
    assert len({c.name() for c in cases}) == len(cases)


@pytest.mark.parametrize("arch", data.ARCHS)
def test_models_build_and_predict_three_classes(arch):
    import keras

    model = data.build_model(data.Case("clean", "shapes", 32, arch=arch))
    out = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert out.shape == (2, 3)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    if arch == "resnet":
        norms = [x for x in model.layers if isinstance(x, keras.layers.BatchNormalization)]
        assert norms and all(x.momentum == 0.99 for x in norms)  # Keras's default


def test_case_specs_and_seed_groups_of_the_runner():
    import shortcuts

    case = shortcuts.parse_case("logo:shapes:64:valid_gap:35:9:6")
    assert case == data.Case("logo", "shapes", 64, 9, 6, arch="valid_gap", seed=35)
    assert shortcuts.parse_case("frame:photos:32:same_gap:9:4:0:3").frame == 3
    with pytest.raises(ValueError, match="--case"):
        shortcuts.parse_case("logo:shapes:64:valid_gap:35:9")
    assert [shortcuts.group_of(s) for s in (0, 3, 4, 7, 8, 40)] == [
        "tune",
        "tune",
        "held_out",
        "held_out",
        "new",
        "new",
    ]

"""The SALIENCY dashboard in Debian's Chromium (headless, driven by Playwright), on a real
`tensorboard` process serving real short fits (see test_dashboard.py).

Every test also checks that no request left 127.0.0.1 (the page's requests go through a guard
that aborts and records any other host) and that the console showed no error.

Set KSM_DASHBOARD_SHOTS=<dir> to also save screenshots there (the README's come from
examples/dashboard_screenshots.py, which uses the same browser code on the demo's log dir).
"""

import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from keras_saliency_monitor import render
from keras_saliency_monitor.dashboard import browser as dashboard_browser

from .test_dashboard import (
    CLASS_NAMES,
    EPOCHS,
    NUM_PROBES,
    RUNS,
    get,
    start_tensorboard,
    train_dashboard_runs,
    wait_for_run,
)

try:
    import playwright.sync_api  # noqa: F401

    _NO_BROWSER = None
except ImportError:
    _NO_BROWSER = "the `playwright` package is not installed (pip install '.[test]')"
if _NO_BROWSER is None and dashboard_browser.find_chromium() is None:
    _NO_BROWSER = "no Chromium binary (apt-get install -y chromium, or set KSM_CHROMIUM)"

pytestmark = pytest.mark.skipif(
    _NO_BROWSER is not None,
    reason=f"BROWSER TESTS SKIPPED: {_NO_BROWSER}. CI installs both through .ci/run.",
)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    trained = train_dashboard_runs(tmp_path_factory)
    handle = start_tensorboard(trained["logdir"])
    try:
        indices = {name: wait_for_run(handle, RUNS[name], n) for name, n in EPOCHS.items()}
        handle.indices = indices
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def chromium():
    with dashboard_browser.DashboardBrowser(viewport=(1400, 1000)) as session:
        yield session


@pytest.fixture
def frame(board, chromium):
    """A fresh page on the SALIENCY tab, every run loaded and drawn."""
    chromium.new_page()
    chromium.errors.clear()
    chromium.external.clear()
    frame = chromium.open(board.url)
    chromium.wait_ready()
    yield frame
    assert chromium.external == [], "requests left 127.0.0.1"
    assert chromium.errors == [], "console errors"
    shots = os.environ.get("KSM_DASHBOARD_SHOTS")
    if shots:
        os.makedirs(shots, exist_ok=True)
        name = os.environ.get("PYTEST_CURRENT_TEST", "shot").split("::")[-1].split(" ")[0]
        chromium.page.screenshot(path=os.path.join(shots, f"dashboard_{name}.png"))


def _epochs_on_page(frame, run):
    return [
        int(s)
        for s in frame.locator(f"section.run[data-run='{run}'] th.epoch").evaluate_all(
            "ths => ths.map(th => th.dataset.step)"
        )
    ]


def test_tab_appears_and_shows_the_runs_side_by_side(board, chromium, frame):
    tabs = chromium.page.get_by_role("tab").all_inner_texts()
    assert any(t.strip().lower() == "saliency" for t in tabs), tabs
    runs = frame.locator("section.run").evaluate_all("s => s.map(x => x.dataset.run)")
    assert sorted(runs) == sorted(RUNS.values())
    boxes = [frame.locator(f"section.run[data-run='{r}']").bounding_box() for r in runs]
    assert len({round(b["y"]) for b in boxes}) == 1  # side by side: one row
    assert frame.locator("canvas.tile").count() > 0


def test_every_logged_epoch_of_every_run_is_reachable(board, frame):
    frame.select_option("#columns", "4")  # first, 2 middle epochs, last: paging needed
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    seen = {run: set() for run in RUNS.values()}
    for _ in range(20):
        for name, run in RUNS.items():
            steps = _epochs_on_page(frame, run)
            assert steps[0] == 0 and steps[-1] == EPOCHS[name] - 1  # first and last always
            seen[run].update(steps)
        nxt = frame.locator("#next")
        if nxt.is_disabled():
            break
        nxt.click()
        frame.wait_for_function("() => document.body.dataset.painted === '1'")
    for name, run in RUNS.items():
        assert seen[run] == set(range(EPOCHS[name])), run
    # Jumping to an epoch shows it.
    frame.fill("#goto", "6")
    frame.press("#goto", "Enter")
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    assert 6 in _epochs_on_page(frame, RUNS["clean"])


def test_captions_are_html_text(board, frame):
    index = board.indices["clean"]
    run = RUNS["clean"]
    last = index["steps"][-1]
    info = index["epochs"][str(last)]
    for p in index["probe_set"]["probes"]:
        k = p["probe"]
        row = frame.locator(f"section.run[data-run='{run}'] tr[data-probe='{k}']")
        caption = row.locator("th.caption").inner_text()
        assert f"probe {k}" in caption  # 0-based, as in the alarm and the report
        assert f"true: {CLASS_NAMES[p['label']]}" in caption
        cell = row.locator(f"canvas.tile[data-step='{last}']").locator("xpath=../..")
        expected = f"{CLASS_NAMES[info['classes'][k]]} {info['confidences'][k]:.2f}"
        assert cell.locator(".tcap").inner_text().strip() == expected
        # Readable at default zoom: at least 11 px text.
        size = cell.locator(".tcap").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        assert size >= 11


def test_flat_maps_are_marked(board, frame):
    run = RUNS["dead"]
    badges = frame.locator(f"section.run[data-run='{run}'] .badge.flat")
    steps = _epochs_on_page(frame, run)
    assert badges.count() == NUM_PROBES * len(steps)
    assert badges.first.inner_text() == "flat map"
    assert frame.locator(f"section.run[data-run='{RUNS['clean']}'] .badge.flat").count() == 0
    # Probes without labels: captions say what is known, nothing more.
    captions = frame.locator(f"section.run[data-run='{run}'] th.caption").all_inner_texts()
    assert len(captions) == NUM_PROBES and not any("true:" in c for c in captions)
    # The detail of an empty (all-zero) map: the image alone, said to be flat.
    frame.locator(f"canvas.tile[data-run='{run}'][data-probe='1']").first.click()
    frame.wait_for_selector("#detailbody[data-painted='1']")
    assert "flat map" in frame.locator("#detailcap").inner_text()
    assert frame.locator("#detailmask").count() == 0  # no masks in this run


def test_clicking_a_tile_opens_the_probe_detail(board, frame):
    run = RUNS["clean"]
    frame.locator(f"canvas.tile[data-run='{run}'][data-probe='2'][data-step='0']").click()
    detail = frame.locator("#detail")
    detail.wait_for(state="visible")
    assert re.search(r"probe 2\b", frame.locator("#detailbody h2").inner_text())
    rows = frame.locator("#detailbody table.numbers tbody tr")
    assert rows.count() == EPOCHS["clean"]  # that probe's numbers at every epoch
    header = frame.locator("#detailbody table.numbers thead").inner_text()
    assert "focus" in header and "focus_lift" in header and "confidence" in header
    assert frame.locator("#detailepoch").inner_text() == "epoch 0"
    frame.wait_for_selector("#detailbody[data-painted='1']")
    assert frame.locator("#detailmask").is_checked()  # clean has object masks: outline shown
    assert _pixels(frame, "#detailoverlay") != _pixels(frame, "#detailimage")
    frame.locator("button[aria-label='next epoch']").click()
    assert frame.locator("#detailepoch").inner_text() == "epoch 1"
    frame.locator("button.close").click()
    detail.wait_for(state="hidden")


def _png(body):
    with Image.open(io.BytesIO(body)) as image:
        return np.asarray(image)


def _pixels(frame, selector):
    return frame.locator(selector).evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )


def test_display_controls_recolour_without_reloading(board, chromium, frame):
    run = RUNS["clean"]
    tile = f"canvas.tile[data-run='{run}'][data-probe='0'][data-step='{EPOCHS['clean'] - 1}']"
    before = _pixels(frame, tile)
    requests = []
    chromium.page.on("request", lambda r: requests.append(r.url))
    current = frame.locator("#cmap").input_value()
    frame.select_option("#cmap", "gray" if current != "gray" else "viridis")
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    after = _pixels(frame, tile)
    assert after != before
    changed = sum(a != b for a, b in zip(before, after))
    assert changed > len(before) // 50, changed
    frame.fill("#clip", "90")
    frame.press("#clip", "Enter")
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    assert _pixels(frame, tile) != after
    # Opacity 0 shows the backdrop alone: every tile of a probe then looks the same.
    frame.locator("#opacity").evaluate(
        "e => { e.value = '0'; e.dispatchEvent(new Event('input')); }"
    )
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    first = _pixels(frame, f"canvas.tile[data-run='{run}'][data-probe='0'][data-step='0']")
    assert _pixels(frame, tile) == first
    # Recolouring needs no new maps: only the cached ones were used.
    assert not [u for u in requests if "/maps" in u], requests


def test_order_and_filter(board, frame):
    run = RUNS["clean"]
    index = board.indices["clean"]
    info = index["epochs"][str(index["steps"][-1])]
    labels = [p["label"] for p in index["probe_set"]["probes"]]

    def order():
        rows = frame.locator(f"section.run[data-run='{run}'] tbody tr")
        return [int(k) for k in rows.evaluate_all("rs => rs.map(r => r.dataset.probe)")]

    frame.select_option("#order", "focus")
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    focus = info["per_probe"]["focus"]
    expected = sorted(range(NUM_PROBES), key=lambda k: (focus[k] is None, focus[k] or 0, k))
    assert order() == expected
    frame.select_option("#order", "wrong")
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    wrong = [info["classes"][k] != labels[k] for k in range(NUM_PROBES)]
    assert order() == sorted(range(NUM_PROBES), key=lambda k: (not wrong[k], k))
    frame.select_option("#order", "change")
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    stability = info["per_probe"]["stability"]
    assert order() == sorted(
        range(NUM_PROBES), key=lambda k: (stability[k] is None, stability[k] or 0, k)
    )
    frame.select_option("#order", "class")
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    assert order() == sorted(range(NUM_PROBES), key=lambda k: (labels[k], k))
    frame.select_option("#classfilter", "1")
    frame.wait_for_function("() => document.body.dataset.painted === '1'")
    assert order() and all(labels[k] == 1 for k in order())


def test_charts_mark_the_alarm_and_chance(board, frame):
    run = RUNS["clean"]
    charts = frame.locator(f"section.run[data-run='{run}'] .charts figure.chart")
    titles = charts.locator("figcaption").all_inner_texts()
    assert "saliency/focus_lift" in titles
    lift = charts.nth(titles.index("saliency/focus_lift"))
    assert lift.locator("line.hline.chance").count() == 1
    # The border ratio's chance and alarm threshold are both 1.0: one line, one label.
    border = charts.nth(titles.index("saliency/border_ratio"))
    assert border.locator("line.hline").count() == 1
    assert "chance = alarm threshold" in border.locator("svg").text_content()
    alarm = board.indices["clean"]["alarm"]
    assert lift.locator("line.vmark.alarm").count() == (1 if alarm else 0)
    assert all(t.startswith("saliency/") for t in titles)  # every chart says what it shows


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_recolouring_matches_the_callbacks_renderer(board, frame, sigma):
    """The page's smoothing, normalisation and colormap (paint.js) against render.py, from the
    same stored maps (12 x 12: stored at full size, so map pixels are image pixels)."""
    run = RUNS["clean"]
    index = board.indices["clean"]
    step = index["steps"][-1]
    info = index["epochs"][str(step)]
    body, _ = get(board, "data/plugin/saliency/maps", run=run, step=step)
    h, w = info["map_height"], info["map_width"]
    q = _png(body).reshape(NUM_PROBES, h, w).astype(np.float32) / 255
    maps = np.asarray(info["scale"], np.float32)[:, None, None] * (q * q)
    assert info["encoding"] == "sqrt8"
    maps01 = render.normalize_maps(render.smooth_maps(maps, sigma), 99.0)
    heat = render.colorize(maps01, "inferno")
    layers = frame.evaluate(
        """async ([run, step, sigma]) => {
            const paint = await import("./static/paint.js");
            const cmaps = await (await fetch("colormaps")).json();
            const lut = Uint8Array.from(cmaps.luts.inferno);
            const response = await fetch("maps?" + new URLSearchParams({run, step}));
            const grey = paint.greyOf(await paint.decodePng(response));
            const info = (await (await fetch("run?" + new URLSearchParams({run}))).json())
                .epochs[String(step)];
            const out = [];
            for (let k = 0; k < info.scale.length; k++) {
                const layer = paint.heatLayer(grey, info, k, {lut, clip: 99, sigma});
                out.push(Array.from(layer.data));
            }
            return out;
        }""",
        [run, step, sigma],
    )
    rgba = np.asarray(layers, np.int32).reshape(NUM_PROBES, h, w, 4)
    alpha = np.floor(maps01 * 255 + 0.5)
    assert np.abs(rgba[..., 3] - alpha).max() <= 1
    # Colours: the same colormap entry, up to one step of float32 rounding.
    lut = np.asarray(render.colorize(np.linspace(0, 1, 256)[None], "inferno")[0], np.int32)
    off = np.abs(rgba[..., :3] - heat.astype(np.int32)).max(axis=-1)
    neighbour = np.abs(lut[1:] - lut[:-1]).max()
    assert off.max() <= neighbour
    assert (off == 0).mean() > 0.99

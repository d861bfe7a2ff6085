"""Driving the SALIENCY dashboard in a headless system Chromium (tests, screenshots, benchmark).

The browser tests, ``examples/dashboard_screenshots.py`` and ``benchmarks/dashboard.py`` share
this code. It needs the ``playwright`` package (the ``[test]`` extra) and a Chromium binary on the
machine (Debian: ``apt-get install chromium``); it never downloads a browser
(``playwright install`` is not used).

Every request the page makes goes through a guard: a request to any host other than the
TensorBoard under test is aborted and recorded, and console errors and uncaught page errors are
recorded, so callers can assert that there were none.

Example:
    >>> from keras_saliency_monitor.views import launcher
    >>> from keras_saliency_monitor.views.dashboard.browser import DashboardBrowser
    >>> board = launcher.launch("runs/demo")
    >>> with DashboardBrowser() as browser:
    ...     frame = browser.open(board.url)
    ...     browser.page.screenshot(path="saliency.png")
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.parse

__all__ = ["DashboardBrowser", "find_chromium"]

_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str | None:
    """Path of a system Chromium: ``$KSM_CHROMIUM``, then the usual Debian paths, then PATH."""
    env = os.environ.get("KSM_CHROMIUM")
    if env:
        return env if os.path.isfile(env) else None
    for path in _CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class DashboardBrowser:
    """A headless Chromium (through Playwright) pointed at a TensorBoard on loopback.

    Attributes:
        page: the Playwright page (TensorBoard's own window).
        frame: the SALIENCY dashboard's iframe, once :meth:`open` returned.
        external: URLs of requests that tried to leave the TensorBoard host (all aborted).
        errors: console errors and uncaught page errors, as text.
    """

    def __init__(self, viewport=(1600, 1000), executable_path=None):
        self.viewport = {"width": int(viewport[0]), "height": int(viewport[1])}
        self.executable_path = executable_path or find_chromium()
        if self.executable_path is None:
            raise FileNotFoundError(
                "No Chromium found (tried $KSM_CHROMIUM, /usr/bin/chromium, PATH); on Debian: "
                "apt-get install -y chromium"
            )
        self.external, self.errors = [], []
        self.page = self.frame = None
        self._host = None
        self._playwright = self._browser = self._context = None

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=self.executable_path,
                # Containers: /dev/shm is small; no GPU. Playwright already adds --no-sandbox
                # when its sandbox option is off (its default).
                args=["--disable-dev-shm-usage", "--disable-gpu"],
            )
            self.new_page()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        for thing in (self._context, self._browser):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - best effort while tearing down
                    pass
        if self._playwright is not None:
            self._playwright.stop()
        self._context = self._browser = self._playwright = None

    def new_page(self):
        """A fresh browser context (empty cache) and page, with the request guard installed."""
        if self._context is not None:
            self._context.close()
        self._context = self._browser.new_context(viewport=self.viewport)
        self._context.route("**/*", self._guard)
        self._context.on("console", self._on_console)
        self._context.on("weberror", lambda error: self.errors.append(f"page error: {error.error}"))
        self.page = self._context.new_page()
        self.frame = None
        return self.page

    def _guard(self, route):
        url = route.request.url
        host = urllib.parse.urlsplit(url).hostname
        if url.startswith(("data:", "blob:")) or (host is not None and host == self._host):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def _on_console(self, message):
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def open(self, url, timeout=60.0):
        """Opens TensorBoard's SALIENCY tab at ``url`` and returns the dashboard's frame once
        its first filmstrip tile is drawn."""
        self.navigate(url)
        return self.wait_first_tile(timeout)

    def navigate(self, url):
        """Starts loading TensorBoard's SALIENCY tab at ``url`` (returns once the navigation
        commits); requests to hosts other than ``url``'s are aborted from now on."""
        self._host = urllib.parse.urlsplit(url).hostname
        self.page.goto(url.rstrip("/") + "/#saliency", wait_until="commit")

    def wait_frame(self, timeout=60.0, selector="body[data-ready='1']"):
        """Waits until the dashboard's iframe exists and ``selector`` is in it (by default: the
        page has asked for every run once, even when there is none yet); returns the frame."""
        deadline = time.monotonic() + timeout
        iframe = self.page.locator("iframe[src*='plugin_entry.html?name=saliency']")
        iframe.wait_for(state="attached", timeout=timeout * 1000)
        self.frame = iframe.element_handle().content_frame()
        left = max(0.1, deadline - time.monotonic())
        self.frame.wait_for_selector(selector, timeout=left * 1000)
        return self.frame

    def wait_first_tile(self, timeout=60.0):
        """Waits until the dashboard's iframe exists and has drawn one tile; returns the frame."""
        return self.wait_frame(timeout, "canvas.tile[data-drawn]:not([data-drawn='failed'])")

    def wait_ready(self, timeout=60.0):
        """Waits until every run is loaded and every visible tile is drawn."""
        self.frame.wait_for_selector(
            "body[data-ready='1'][data-painted='1']", timeout=timeout * 1000
        )

    def wait_painted(self, timeout=30.0):
        """Waits for the repaint that follows a change of a control."""
        self.frame.wait_for_function(
            "() => document.body.dataset.painted === '1'", timeout=timeout * 1000
        )

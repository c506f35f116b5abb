"""The explain page as a person sees it: opened in headless Chromium (Debian's `chromium`),
every image decoded, no console error, no request beyond the page itself, and a full-page
screenshot taken. Under CI (`CI=true`) Chromium is installed with apt-get when missing and the
test fails if it cannot be had, so CI always opens the page; elsewhere it is skipped, with
the reason, where Chromium cannot be had."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image
from tests.integration.browser import Chromium, find_chromium

from seglab.cli.main import main
from seglab.explain.page import FIGURES

QUICK = "pooling,selective-search,unet"  # an animated GIF and PNGs, no training: seconds


@pytest.fixture(scope="module")
def chromium_binary():
    binary, why = find_chromium()
    if binary is None and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but no headless browser for the explain page: {why}")
    if binary is None:
        pytest.skip(f"headless browser test not run: {why}")
    return binary


def _open(binary, tmp_path, page):
    browser = Chromium(binary, tmp_path / "profile")
    try:
        return browser.load(page)
    finally:
        browser.close()


def _check(report, page, figures: int) -> None:
    assert len(report.images) == figures
    for image in report.images:
        assert image["complete"] and image["naturalWidth"] > 0, image
    assert report.errors == []
    assert report.requests == [page.resolve().as_uri()] or all(
        url == page.resolve().as_uri() or url.startswith("data:") for url in report.requests
    ), report.requests
    screenshot = Image.open(io.BytesIO(report.screenshot))
    assert screenshot.width >= 1000 and screenshot.height > 300 * figures  # the whole page
    darkest, lightest = screenshot.convert("L").getextrema()
    assert lightest - darkest > 100  # not blank


def test_quick_page_loads_whole_in_a_browser(chromium_binary, tmp_path):
    out = tmp_path / "page"
    assert main(["explain", "--only", QUICK, "--out", str(out), "-q"]) == 0
    report = _open(chromium_binary, tmp_path, out / "index.html")
    _check(report, out / "index.html", len(QUICK.split(",")))
    (tmp_path / "screenshot.png").write_bytes(report.screenshot)


@pytest.mark.slow  # ~40 s on 2 idle cores (trains the small models); the quick page checks the same
def test_full_page_loads_whole_in_a_browser(chromium_binary, tmp_path):
    out = tmp_path / "page"
    assert main(["explain", "--out", str(out), "-q"]) == 0
    report = _open(chromium_binary, tmp_path, out / "index.html")
    _check(report, out / "index.html", len(FIGURES))
    (tmp_path / "screenshot.png").write_bytes(report.screenshot)

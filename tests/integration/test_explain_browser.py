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
from seglab.explain.context import Context, generated_image
from seglab.explain.page import FIGURES, make_figures, select_figures, write_page
from seglab.explain.study_text import ANCHORS_ARE_REFERENCES, FPN_DIRECTION, SHARED_COMPUTATION

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


def test_single_map_rpn_and_the_study_texts_corrections_in_a_browser(chromium_binary, tmp_path):
    """The paper's single-map RPN drawn above FPN's, and each correction of the study text
    under the figure that illustrates its passage, as a reader sees them (the small models
    untrained: anchors, labels and the pyramid's shapes need no training; seconds)."""
    expected = {"faster-rcnn": SHARED_COMPUTATION, "anchors": ANCHORS_ARE_REFERENCES,
                "fpn": FPN_DIRECTION}  # fmt: skip
    specs = select_figures(list(expected))
    context = Context(generated_image(0))
    page = write_page(tmp_path / "page", specs, make_figures(context, specs), context)
    report = _open(chromium_binary, tmp_path, page)
    _check(report, page, len(specs))
    figures = {figure["id"]: figure for figure in report.figures}
    assert list(figures) == list(expected)
    for name in ("faster-rcnn", "anchors"):  # two rows: the paper's RPN, then FPN's
        assert figures[name]["image"]["height"] >= 2 * 400, figures[name]["image"]
    rpn = figures["faster-rcnn"]["caption"]
    assert "Top: the paper's RPN on one map" in rpn and "Bottom: FPN's RPN on its levels" in rpn
    assert "k = 9 anchors at each position, 3 sizes (55, 109, 218 px" in rpn
    assert "scaled by 256/600 as the image is drawn small" in rpn
    assert "(9 per position of its one map)" in figures["anchors"]["caption"]
    for name, correction in expected.items():
        (shown,) = figures[name]["corrections"]
        assert shown["quotes"] == [portuguese for portuguese, _ in correction.quotes]
        assert correction.correction in shown["text"] and shown["height"] > 20, shown


@pytest.mark.slow  # ~50 s on 2 idle cores (trains the small models); the quick page checks the same
def test_full_page_loads_whole_in_a_browser(chromium_binary, tmp_path):
    out = tmp_path / "page"
    assert main(["explain", "--out", str(out), "-q"]) == 0
    report = _open(chromium_binary, tmp_path, out / "index.html")
    _check(report, out / "index.html", len(FIGURES))
    (tmp_path / "screenshot.png").write_bytes(report.screenshot)

"""Figures 7 and 8 drawn for the paper's single-map RPN (9 anchors: 3 scales x 3 ratios,
Faster R-CNN §3.1.1) beside FPN's, and the study text's errors corrected under the figures
that illustrate them (each quote the study text's own words)."""

from __future__ import annotations

import html
import io
import math
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from tests.explain.conftest import SMALL_MASK_RCNN

import seglab
from seglab.cli.main import main
from seglab.explain.context import Context, generated_image
from seglab.explain.figure import Figure, Picture
from seglab.explain.page import FIGURES, make_figures, render_html, select_figures
from seglab.explain.rpn import (
    anchor_labels,
    anchors_at,
    faster_rcnn_figure,
    reference_box,
    shown_rpns,
)
from seglab.explain.study_text import (
    ANCHORS_ARE_REFERENCES,
    CORRECTIONS,
    FPN_DIRECTION,
    SHARED_COMPUTATION,
)
from seglab.explain.training import (
    PAPER_ANCHOR_SIZES,
    SINGLE_MAP_SIZE,
    paper_anchor_sizes,
)
from seglab.models.zoo import load_model

# CI runs a clone with the project's shared folder beside it (.ci/run); the study text is there
SEED_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "seed"


@pytest.fixture(scope="module")
def rpn_context() -> Context:
    return Context(generated_image(0))  # untrained small models: no training, seconds


@pytest.fixture(scope="module")
def rpn_figures(rpn_context) -> dict[str, Figure]:
    specs = select_figures(["faster-rcnn", "anchors", "fpn"])
    figures = make_figures(rpn_context, specs)
    return {spec.name: figure for spec, figure in zip(specs, figures, strict=True)}


def test_paper_anchor_sizes_scale_with_a_small_image():
    assert paper_anchor_sizes(600) == PAPER_ANCHOR_SIZES == (128, 256, 512)
    assert paper_anchor_sizes(1000) == (128, 256, 512)  # never larger than the paper's
    assert paper_anchor_sizes(300) == (64, 128, 256)
    assert paper_anchor_sizes(SINGLE_MAP_SIZE) == (55, 109, 218)  # 256 / 600 of each


def test_single_map_rpn_has_nine_anchors_per_position_of_one_stride_16_map(rpn_context):
    shown = shown_rpns(rpn_context)[0]
    assert shown.single_map and list(shown.run.features) == ["c4"]
    generator = shown.model.proposal_generator.anchor_generator
    assert generator.num_anchors_per_location() == [9]
    assert generator.sizes == (paper_anchor_sizes(SINGLE_MAP_SIZE),)
    assert shown.model.transform.min_size == (SINGLE_MAP_SIZE,)
    (level,) = anchors_at(shown.model, shown.run, (100.0, 120.0))
    assert level.stride == (16, 16) and level.position == (8, 6)  # round(120/16), round(100/16)
    centres = (level.boxes[:, :2] + level.boxes[:, 2:]) / 2
    assert torch.equal(centres, torch.tensor([[96.0, 128.0]] * 9))  # (column, row) * 16
    widths = level.boxes[:, 2] - level.boxes[:, 0]
    heights = level.boxes[:, 3] - level.boxes[:, 1]
    # the generator's order: ratio-major, then size; widths and heights rounded to even pixels
    ratios, sizes = (0.5, 1.0, 2.0), (55, 109, 218)
    assert widths.tolist() == [round(s / math.sqrt(r) / 2) * 2 for r in ratios for s in sizes]
    assert heights.tolist() == [round(s * math.sqrt(r) / 2) * 2 for r in ratios for s in sizes]
    assert level.sizes.tolist() == [s for _ in ratios for s in sizes]


def test_fpn_rpn_has_one_size_per_level(rpn_context):
    shown = shown_rpns(rpn_context)[1]
    assert not shown.single_map
    levels = anchors_at(shown.model, shown.run, (60.0, 60.0))
    assert [level.sizes.unique().tolist() for level in levels] == [[16], [32], [64], [128], [256]]
    assert all(len(level.boxes) == 3 for level in levels)


def test_anchor_sizes_follow_the_generators_order(rpn_context):
    shown = shown_rpns(rpn_context)[0]
    gt_box, _ = reference_box(rpn_context, shown.run)
    labels = anchor_labels(shown.model, shown.run, gt_box)
    widths, heights = (labels.anchors[:, 2:] - labels.anchors[:, :2]).unbind(dim=1)
    # each anchor's size is the square root of its area, up to the rounding of its sides
    relative = ((widths * heights).sqrt() - labels.size) / labels.size
    assert relative.abs().max() < 0.03
    assert (
        labels.size.bincount()[list(paper_anchor_sizes(SINGLE_MAP_SIZE))].tolist()
        == [16 * 16 * 3] * 3
    )
    assert labels.level.unique().tolist() == [0]


def test_user_models_show_the_kind_of_their_rpn():
    torch.manual_seed(0)
    fpn = seglab.build_model("mask_rcnn", **SMALL_MASK_RCNN).eval()
    single = seglab.build_model(
        "faster_rcnn", num_classes=4, backbone="resnet18", norm="bn", fpn=False,
        min_size=96, max_size=96, representation_size=32,
    ).eval()  # fmt: skip
    for user, kind in ((single, "faster_rcnn_single_map"), (fpn, "faster_rcnn")):
        context = Context(generated_image(0), user_model=user, user_model_path=Path("m"))
        other = "faster_rcnn" if kind == "faster_rcnn_single_map" else "faster_rcnn_single_map"
        assert context.model(kind) is user
        assert context.model(other) is not user  # a small model of the other layout
        assert context.note(context.model(other)).startswith("a small")


def test_a_single_map_model_file_takes_the_papers_row(tmp_path):
    model = seglab.build_model(
        "faster_rcnn", num_classes=4, backbone="resnet18", norm="bn", fpn=False,
        min_size=128, max_size=128, anchor_sizes=(32, 64, 128), representation_size=32,
    )  # fmt: skip
    path = tmp_path / "faster.safetensors"
    seglab.save_model(model, path, class_names=["circle", "square", "triangle"])
    out = tmp_path / "page"  # the anchors figure trains no small model: seconds
    assert main(["explain", "--model", str(path), "--only", "anchors", "--out", str(out),
                 "-q"]) == 0  # fmt: skip
    page = html.unescape((out / "index.html").read_text())
    assert f"Top: the paper's RPN on one map, of the model {path} (faster_rcnn)" in page
    assert "Bottom: FPN's RPN on its levels, of a small Mask R-CNN" in page
    # the Faster R-CNN figure (untrained small FPN model: seconds) says whose sizes they are
    context = Context(generated_image(0), user_model=load_model(path), user_model_path=path)
    caption = faster_rcnn_figure(context).caption
    assert f"Top: the paper's RPN on one map, of the model {path} (faster_rcnn)" in caption
    assert "3 sizes (32, 64, 128 px, the model's own (the paper's: 128, 256, 512 px" in caption


def test_faster_rcnn_figure_draws_the_papers_rpn_beside_fpns(rpn_figures, rpn_context):
    figure = rpn_figures["faster-rcnn"]
    single, fpn = shown_rpns(rpn_context)
    assert f"Top: the paper's RPN on one map, of {rpn_context.note(single.model)}" in (
        figure.caption
    )
    assert f"Bottom: FPN's RPN on its levels, of {rpn_context.note(fpn.model)}" in figure.caption
    assert "k = 9 anchors at each position, 3 sizes (55, 109, 218 px" in figure.caption
    assert "scaled by 256/600 as the image is drawn small" in figure.caption
    picture = Image.open(io.BytesIO(figure.picture.data))
    assert picture.height >= 2 * 400  # two rows of two panels, each row over 4 in at 100 dpi
    assert figure.corrections == (SHARED_COMPUTATION,)


def test_anchors_figure_labels_for_both_rpns(rpn_figures):
    figure = rpn_figures["anchors"]
    assert "of its 2304 anchors (9 per position of its one map)" in figure.caption  # 16x16x9
    assert re.search(r"of its \d+ anchors \(3 per position of each of its 5 levels\)",
                     figure.caption)  # fmt: skip
    picture = Image.open(io.BytesIO(figure.picture.data))
    assert picture.height >= 2 * 400
    assert figure.corrections == (ANCHORS_ARE_REFERENCES,)


def test_fpn_figure_corrects_the_reversed_paragraph(rpn_figures):
    assert rpn_figures["fpn"].corrections == (FPN_DIRECTION,)


def test_each_correction_is_rendered_under_its_figure():
    spec = FIGURES[0]
    figure = Figure("caption", Picture(b"png", "image/png"), corrections=CORRECTIONS)
    context = Context(generated_image(0))
    page = render_html([spec], [figure], context)
    for correction in CORRECTIONS:
        assert correction.html() in page
        for portuguese, english in correction.quotes:
            assert f'<q lang="pt">{portuguese}</q>' in page and english in page


def test_corrections_quote_the_study_text_exactly():
    if not SEED_DIR.is_dir():
        message = f"the study text is not at {SEED_DIR}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {message} (.ci/run clones beside the shared folder)")
        pytest.skip(message)
    sections = _sections(sorted(SEED_DIR.glob("*.md")))
    for correction in CORRECTIONS:
        for portuguese, _ in correction.quotes:  # in the section the correction names
            assert portuguese in sections[correction.section], portuguese


def _sections(paths: list[Path]) -> dict[str, str]:
    """Markdown heading title -> its text (whitespace collapsed), for every heading."""
    sections, current = {}, ""
    for path in paths:
        for line in path.read_text().splitlines():
            heading = re.match(r"#+\s+(.*)", line)
            if heading:
                current = heading.group(1).strip()
            else:
                sections[current] = " ".join((sections.get(current, "") + " " + line).split())
    return sections

"""`seglab explain`: --list, a quick --only subset written as a self-contained page, a
model file shown by the figures of its kind, and user mistakes as one line with exit
code 2."""

from __future__ import annotations

import re

import pytest

import seglab
from seglab.cli.main import main
from seglab.explain.page import FIGURES


def test_list_names_every_figure_in_the_study_texts_order(capsys):
    assert main(["explain", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == [spec.name for spec in FIGURES]
    assert [int(line.split()[0]) for line in lines] == list(range(1, len(FIGURES) + 1))


def test_only_writes_those_figures_embedded_and_beside_the_page(tmp_path, capsys):
    out = tmp_path / "page"
    assert main(["explain", "--only", "anchors,roi-align", "--only", "unet", "--out",
                 str(out), "-q"]) == 0  # fmt: skip
    page = (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert re.findall(r'<figure id="([^"]+)"', page) == ["anchors", "roi-align", "unet"]
    assert not re.search(r"<script|<link|https?://|@import|url\(", page)  # nothing to fetch
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "ancoras.png", "interpolacao.png", "unet.png"]  # fmt: skip
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--only", "nope", "--out", "{tmp}/x"], "--only nope: no such figure"),
        (["--only", "unet"], "--out DIR is required"),
        (["--model", "{tmp}/missing.safetensors", "--out", "{tmp}/x"], "missing.safetensors"),
        (["--image", "{tmp}/missing.png", "--out", "{tmp}/x"], "missing.png"),
    ],
)
def test_user_mistakes_are_one_line(tmp_path, capsys, arguments, message):
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    assert main(["explain", *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("arch", "figure", "picture", "arguments"),
    [
        ("rcnn", "rcnn", "rcnn.png", dict(min_size=96, max_size=96, warp_size=32,
                                          context_padding=2, box_roi_size=2)),
        ("fast_rcnn", "fast-rcnn", "fast-r-cnn.png", dict(min_size=192, max_size=192)),
    ],
)  # fmt: skip
def test_model_file_is_the_one_its_figure_shows(tmp_path, capsys, arch, figure, picture,
                                                arguments):  # fmt: skip
    model = seglab.build_model(arch, num_classes=4, backbone="resnet18", norm="bn", fpn=False,
                               max_proposals=40, representation_size=32,
                               **arguments)  # fmt: skip
    path = tmp_path / f"{arch}.safetensors"
    seglab.save_model(model, path, class_names=["circle", "square", "triangle"])
    out = tmp_path / "page"
    assert main(["explain", "--model", str(path), "--only", figure, "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert f"the model {path} ({arch})" in page
    assert sorted(p.name for p in (out / "images").iterdir()) == [picture]
    assert "training" not in capsys.readouterr().out  # no small model was trained


def test_each_figure_says_when_it_starts_and_what_it_took(tmp_path, capsys):
    """A figure can take minutes (some train a model): the line comes before it is drawn."""
    assert main(["explain", "--only", "anchors,unet", "--out", str(tmp_path / "p"), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    titles = {spec.name: spec.title for spec in FIGURES}
    assert lines[0] == f"[1/2] anchors: {titles['anchors']} ..."
    assert re.fullmatch(r"\[1/2\] anchors: \d+\.\d s", lines[1])
    assert lines[2] == f"[2/2] unet: {titles['unet']} ..."
    assert re.fullmatch(r"\[2/2\] unet: \d+\.\d s", lines[3])

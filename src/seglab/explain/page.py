"""The explain page: the study text's figures in its order, written as one HTML file.

`FIGURES` lists the figures in the order of the study text (a Portuguese walk from the CNN
to U-Net that these figures illustrate), each with the
file name the study text gives it, the section it belongs to, the function that makes it
and the models it needs. `write_page` writes `DIR/index.html` with every picture embedded
as a data URI (the page needs nothing else: no script, no font, no request), and each
picture again under `DIR/images/` with the study text's file name.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import seglab
from seglab.errors import UserError
from seglab.explain import cnn, fast_rcnn, mask_rcnn, proposals, roi_align, rpn, unet
from seglab.explain.context import QUICK_FOR_KIND, Context
from seglab.explain.figure import Figure
from seglab.files import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the page.

    Attributes:
        name: what `--only` takes.
        title: what the figure shows, in a line.
        file_name: the study text's name for the picture (its `../images/` link).
        section: the study text's section, as (English, Portuguese) titles.
        make: draws the figure from the page's context.
        models: (kind, needs learned weights) of each model the figure shows.
    """

    name: str
    title: str
    file_name: str
    section: tuple[str, str]
    make: Callable[[Context], Figure]
    models: tuple[tuple[str, bool], ...] = ()


_CNN = ("CNN (convolutional neural networks)", "CNN (Redes Neurais Convolucionais)")
_RCNN = ("R-CNN (region-based CNN)", "R-CNN (Region-based Convolutional Neural Network)")
_FAST = ("Fast R-CNN", "Fast R-CNN")
_FASTER = ("Faster R-CNN", "Faster R-CNN")
_BACKBONE = ("Mask R-CNN: backbone and FPN", "Mask R-CNN · Redes Backbone")
_ROI_ALIGN = ("Mask R-CNN: RoIAlign", "ROIAlign")
_MASK_HEAD = ("Mask R-CNN: mask head", "Mask Head")
_MASK_RCNN = ("Mask R-CNN: the whole network", "Mask R-CNN")
_UNET = ("U-Net", "U-NET")

FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("convolution", "Convolution: a kernel slides over the image", "convolucao2.gif",
               _CNN, cnn.convolution_figure, (("cnn", False),)),
    FigureSpec("pooling", "Pooling: 2 x 2 max pooling halves the map", "pooling.gif", _CNN,
               cnn.pooling_figure, (("cnn", False),)),
    FigureSpec("cnn", "CNN: the classifier's layers and the shape after each",
               "Convolutional-Neural-Networks-CNN-1.png", _CNN, cnn.cnn_figure,
               (("cnn", True),)),
    FigureSpec("rcnn", "R-CNN: region proposals, each warped and classified by a CNN",
               "rcnn.png", _RCNN, proposals.rcnn_figure, (("rcnn", True),)),
    FigureSpec("selective-search", "Selective search: hierarchical grouping, step by step",
               "busca-seletiva.png", _RCNN, proposals.selective_search_figure),
    FigureSpec("fast-rcnn", "Fast R-CNN: one feature map, RoI max pooling to 7 x 7",
               "fast-r-cnn.png", _FAST, fast_rcnn.fast_rcnn_figure, (("fast_rcnn", True),)),
    FigureSpec("faster-rcnn", "Faster R-CNN: anchors and top proposals of the paper's "
               "one-map RPN and of FPN's", "faster-r-cnn.png", _FASTER,
               rpn.faster_rcnn_figure, (("faster_rcnn_single_map", True),
                                        ("faster_rcnn", True))),
    FigureSpec("anchors", "Anchors: positive, negative and ignored for one box, on one map and "
               "on FPN's levels", "ancoras.png", _FASTER, rpn.anchors_figure,
               (("faster_rcnn_single_map", False), ("faster_rcnn", False))),
    FigureSpec("fpn", "FPN: the pyramid levels P2-P6 of a real image", "fpn.png", _BACKBONE,
               mask_rcnn.fpn_figure, (("mask_rcnn", True),)),
    FigureSpec("roi-align", "RoIAlign vs RoIPool: where each reads the feature map",
               "interpolacao.png", _ROI_ALIGN, roi_align.roi_align_figure,
               (("mask_rcnn", False),)),
    FigureSpec("mask-head", "Mask head: the 28 x 28 mask of one RoI, pasted into the image",
               "mask-head.png", _MASK_HEAD, mask_rcnn.mask_head_figure, (("mask_rcnn", True),)),
    FigureSpec("mask-rcnn", "Mask R-CNN: every stage and its tensor shape", "mask-r-cnn.png",
               _MASK_RCNN, mask_rcnn.mask_rcnn_figure, (("mask_rcnn", True),)),
    FigureSpec("unet", "U-Net: the paper's shapes, overlap-tile and the border weight map",
               "unet.png", _UNET, unet.unet_figure),
)  # fmt: skip


def select_figures(names: list[str] | None) -> list[FigureSpec]:
    """The figures named (all of them for None), in the page's order."""
    if not names:
        return list(FIGURES)
    known = {spec.name for spec in FIGURES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(
            f"--only {unknown[0]}: no such figure; `seglab explain --list` names them "
            f"({', '.join(spec.name for spec in FIGURES)})"
        )
    return [spec for spec in FIGURES if spec.name in names]


def models_to_train(specs: list[FigureSpec]) -> frozenset[str]:
    """Small models that some figure of `specs` shows with learned weights."""
    return frozenset(QUICK_FOR_KIND[kind] for spec in specs for kind, learned in spec.models
                     if learned)  # fmt: skip


def make_figures(
    context: Context,
    specs: list[FigureSpec],
    on_figure: Callable[[FigureSpec, float], None] = lambda spec, seconds: None,
) -> list[Figure]:
    """Draw each figure; `on_figure(spec, seconds)` after each."""
    figures = []
    for spec in specs:
        start = time.perf_counter()
        figures.append(spec.make(context))
        on_figure(spec, time.perf_counter() - start)
    return figures


def write_page(
    out_dir: Path, specs: list[FigureSpec], figures: list[Figure], context: Context
) -> Path:
    """Write `out_dir/images/*` and then `out_dir/index.html` (each atomically)."""
    for spec, figure in zip(specs, figures, strict=True):
        atomic_write_bytes(out_dir / "images" / _file_name(spec, figure), figure.picture.data)
    return atomic_write_text(out_dir / "index.html", render_html(specs, figures, context))


def _file_name(spec: FigureSpec, figure: Figure) -> str:
    """The study text's name, with the extension of the picture actually written."""
    return f"{Path(spec.file_name).stem}.{figure.picture.extension}"


def render_html(specs: list[FigureSpec], figures: list[Figure], context: Context) -> str:
    """The whole page: header, then one section per study-text section, figures inside."""
    body, current = [], None
    for number, (spec, figure) in enumerate(zip(specs, figures, strict=True), start=1):
        if spec.section != current:
            if current is not None:
                body.append("</section>")
            current = spec.section
            body.append(f'<section><h2>{html.escape(current[0])} <span class="pt">'
                        f"{html.escape(current[1])}</span></h2>")  # fmt: skip
        body.append(_figure_html(number, spec, figure))
    if current is not None:
        body.append("</section>")
    return _PAGE.format(
        style=_STYLE,
        version=html.escape(seglab.__version__),
        image=html.escape(context.page_image.description),
        body="\n".join(body),
    )


def _figure_html(number: int, spec: FigureSpec, figure: Figure) -> str:
    data = base64.b64encode(figure.picture.data).decode("ascii")
    return (
        f'<figure id="{spec.name}">'
        f"<h3>{number}. {html.escape(spec.title)}</h3>"
        f'<img src="data:{figure.picture.mime};base64,{data}" alt="{html.escape(spec.title)}">'
        f"<figcaption>{html.escape(figure.caption)}"
        f' <span class="file">(study text: images/{html.escape(spec.file_name)};'
        f" seglab explain --only {spec.name})</span>"
        f"{''.join(correction.html() for correction in figure.corrections)}"
        "</figcaption></figure>"
    )


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 980px; padding: 1.5em; color: #222; background: #fff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h2 .pt { font-weight: normal; color: #777; font-size: 0.7em; margin-left: 0.5em; }
h3 { font-size: 1.05em; margin: 0 0 0.5em 0; }
figure { margin: 1.5em 0; padding: 1em; border: 1px solid #e4e4e4; border-radius: 6px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: 0.7em; font-size: 0.95em; }
figcaption .file { color: #888; font-size: 0.85em; }
p.correction { margin: 0.7em 0 0 0; padding: 0.5em 0.8em; background: #fff6e0;
               border-left: 4px solid #e0a000; }
p.lead { color: #555; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>seglab explain</title>
<style>{style}</style>
</head>
<body>
<h1>Deep-learning architectures for segmentation, drawn by seglab</h1>
<p class="lead">The figures of the study text, each computed by the code seglab itself runs
(seglab {version}) on {image}. Captions say which model each figure shows, and where the
study text misstates a paper, what the paper says.</p>
{body}
</body>
</html>
"""

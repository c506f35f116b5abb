"""Where the study text errs, quoted in its words and corrected from the papers.

The page's figures follow the study text (Portuguese; `seed/` of the project's shared
folder). Where a figure illustrates a passage that misstates a paper, its caption carries a
`Correction`: the passage quoted exactly (so a reader finds it), a translation, and what the
paper says, with its section.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Correction:
    """A passage of the study text that errs, and what the papers say instead.

    Attributes:
        section: the study text's section (its Portuguese title) the passage is in.
        quotes: (Portuguese words of the study text, exactly; their English translation).
        correction: what the papers say, with their sections (English).
    """

    section: str
    quotes: tuple[tuple[str, str], ...]
    correction: str

    def text(self) -> str:
        """The correction as plain text (what the page shows, without its markup)."""
        quoted = " and ".join(f'"{pt}" ("{en}")' for pt, en in self.quotes)
        return f"Where the study text errs: its {self.section} section says {quoted}. " + (
            self.correction
        )

    def html(self) -> str:
        """The correction as an HTML paragraph (the quotes marked as Portuguese)."""
        quoted = " and ".join(
            f'<q lang="pt">{html.escape(pt)}</q> (&ldquo;{html.escape(en)}&rdquo;)'
            for pt, en in self.quotes
        )
        return (
            f'<p class="correction"><strong>Where the study text errs:</strong> its '
            f"{html.escape(self.section)} section says {quoted}. "
            f"{html.escape(self.correction)}</p>"
        )


SHARED_COMPUTATION = Correction(
    section="Fast R-CNN",
    quotes=(
        (
            "O Faster R-CNN compartilha computações (ou seja, cálculos de camada convolucional) "
            "em todas as propostas",
            "Faster R-CNN shares computations (that is, convolutional-layer computations) "
            "across all proposals",
        ),
    ),
    correction="Sharing an image's convolutional features among all its proposals is Fast "
    "R-CNN's idea, not Faster R-CNN's (Fast R-CNN §2: the whole image goes through the "
    "convolutional layers once and every RoI is pooled from that one map, where R-CNN ran the "
    "CNN on each warped region). Faster R-CNN shares those features further, with the proposal "
    "network (Faster R-CNN §3: the RPN is a few layers on the detector's own convolutional map, "
    "as drawn above, so its proposals cost about 10 ms where selective search takes 2 s).",
)

FPN_DIRECTION = Correction(
    section="Redes Backbone",
    quotes=(
        (
            "de recursos de alta resolução com informações semânticas ricas a recursos de "
            "baixa resolução com detalhes espaciais mais precisos",
            "from high-resolution features with rich semantic information to low-resolution "
            "features with more precise spatial detail",
        ),
        (
            "O nível superior da pirâmide contém as feições de maior resolução",
            "the top level of the pyramid holds the highest-resolution features",
        ),
    ),
    correction="Both are reversed (FPN, Lin et al. 2017, §3): a backbone's coarse, "
    "low-resolution maps carry the strong semantics and its fine, high-resolution maps the "
    "precise localisation. FPN's top-down pathway carries the strong semantics from the "
    "coarse maps down to the fine ones (upsampling 2x per level), and its lateral 1 x 1 "
    "connections bring in the high-resolution detail of the backbone's stages. The top of the "
    "pyramid is its coarsest level (P6 in the paper, stride 64; the pool level here), the "
    "bottom its finest (P2, stride 4).",
)

ANCHORS_ARE_REFERENCES = Correction(
    section="Faster R-CNN",
    quotes=(
        (
            "diversos bounding boxes espalhados que ao juntar a interseção deles é apresentado "
            "a caixa",
            "several scattered bounding boxes, and joining their intersection gives the box "
            "[that best fits the object]",
        ),
    ),
    correction="Anchors are not intersected, and no box is made from an intersection. They "
    "are reference boxes of fixed scales and aspect ratios centred at every position of the "
    "feature map (Faster R-CNN §3.1.1: 3 scales x 3 ratios, 9 per position), so neighbouring "
    "anchors overlap each other by construction. In training each anchor is labelled by its IoU "
    "with the ground truth (§3.1.2: positive above 0.7 or the best one for a box, negative "
    "below 0.3, as drawn here); the RPN's regressor predicts for every anchor the offsets "
    "(t_x, t_y, t_w, t_h) from it to the object's box (§3.1.2), its classifier whether the anchor "
    "holds an object, and the proposals are the anchors so moved, the best kept by NMS.",
)

CORRECTIONS = (SHARED_COMPUTATION, FPN_DIRECTION, ANCHORS_ARE_REFERENCES)

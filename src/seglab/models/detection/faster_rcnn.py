"""Faster R-CNN (Ren et al., 2015): one backbone shared by a Region Proposal Network and
the Fast R-CNN detector, trained jointly (§3.2, "approximate joint training").

What it changed from Fast R-CNN is the proposal generator: the RPN (`rpn.py`, anchors in
`ops/anchors.py`) replaces selective search and shares the detector's features, so that
proposals cost almost nothing (§3: "nearly cost-free region proposals"). The wiring is
`builders.build_faster_rcnn`.
"""

from __future__ import annotations

from seglab.models.detection.two_stage import TwoStageDetector


class FasterRCNN(TwoStageDetector):
    """Two-stage detector whose proposal generator is the RPN (see `TwoStageDetector`)."""

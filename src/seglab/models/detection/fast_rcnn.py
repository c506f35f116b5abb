"""Fast R-CNN (Girshick, 2015): the CNN once per image, regions pooled from its map.

The whole image goes through the CNN once; each selective-search region is RoI max pooled
from the last feature map to a fixed 7 x 7 grid (§2.1, `ops/roi_pool.MultiScaleRoIPool`);
fc6 and fc7 follow, then two sibling outputs: softmax probabilities over K + 1 classes and
class-specific box deltas (§2, `box_head.py`), trained together with the multi-task loss
of eq. (1). Mini-batches are sampled hierarchically (§2.3): 2 images, 64 RoIs from each,
25% foreground (IoU >= 0.5), background with IoU in [0.1, 0.5) (`roi_heads.py`,
`ops/matcher.py`). At test time fc6 and fc7 may be replaced by their truncated SVD (§3.1,
`box_head.TwoMLPHead`, option `fc_svd_ranks`). The wiring is `builders.build_fast_rcnn`.

Sharing the CNN between the regions of an image is what made it faster than R-CNN (§4.4,
Table 4: 146x at test with VGG16, 213x with truncated SVD, proposals excluded); the
proposals still come from selective search, which Faster R-CNN replaced.
"""

from __future__ import annotations

from seglab.models.detection.selective_search import SelectiveSearchDetector


class FastRCNN(SelectiveSearchDetector):
    """Two-stage detector whose RoI features are pooled from one CNN pass over the image,
    its proposals given by selective search (see `TwoStageDetector`)."""

"""Detection operators: RoI pooling and RoIAlign, NMS, anchors, matching and sampling.

Each op with a compiled torchvision kernel has a readable plain-PyTorch reference
(`*_reference`) that the tests hold equal to the kernel.
"""

from seglab.ops.anchors import AnchorGenerator
from seglab.ops.matcher import Matcher
from seglab.ops.nms import batched_nms, nms, nms_reference
from seglab.ops.roi_align import MultiScaleRoIAlign, roi_align, roi_align_reference
from seglab.ops.roi_levels import boxes_to_rois
from seglab.ops.roi_pool import MultiScaleRoIPool, roi_pool, roi_pool_reference
from seglab.ops.sampler import BalancedPositiveNegativeSampler

__all__ = [
    "AnchorGenerator",
    "BalancedPositiveNegativeSampler",
    "Matcher",
    "MultiScaleRoIAlign",
    "MultiScaleRoIPool",
    "batched_nms",
    "boxes_to_rois",
    "nms",
    "nms_reference",
    "roi_align",
    "roi_align_reference",
    "roi_pool",
    "roi_pool_reference",
]

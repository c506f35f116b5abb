"""The CNN stage of R-CNN and Fast R-CNN at the papers' scale, measured on the same image with
the same trained backbone.

R-CNN (§2.1) warps about 2000 selective-search regions of a test image to a fixed square and
runs the CNN on each; Fast R-CNN (§2, §4.4: 146x faster at test with VGG16) runs it once on
the image, its shorter side scaled to 600 px. The lineage's recipes work at a CPU's scale
(a few dozen regions warped to 64 px, 256-384 px images), where the two differ by a few
times; this module times both at the papers' scale, so the claim is measured, not computed.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.models.detection.rcnn import WarpedRegionCNN

PAPER_REGIONS = 2000  # R-CNN §2.1: ~2000 regions per test image
PAPER_WARP = 224  # the warped side (227 for AlexNet in the paper; 224 for the ResNets)
PAPER_CONTEXT = 16  # R-CNN appendix A: p = 16 pixels of context at the warped size
PAPER_SHORT_SIDE = 600  # Fast R-CNN §4: single-scale testing, shorter side 600 px


def paper_scale_features(
    rcnn: nn.Module, fast_rcnn: nn.Module, image: Tensor, *, regions: int = PAPER_REGIONS
) -> dict[str, float]:
    """Seconds of each model's CNN stage on `image` at the papers' scale.

    Args:
        rcnn: a trained R-CNN (its region CNN is `roi_heads.box_roi_pool.cnn`).
        fast_rcnn: a trained Fast R-CNN (its CNN is `backbone`).
        image: (3, H, W) float in [0, 1]; scaled so that its shorter side is 600 px.
        regions: R-CNN's regions: random boxes (seeded) in the scaled image, as many as
            selective search gives a photograph; the time does not depend on where they are.

    Returns:
        {"rcnn_features_s": warping `regions` regions to 224 px and running the CNN on each,
        "fast_rcnn_features_s": the CNN once on the scaled image, "regions", "image_size"}.
    """
    scaled = _shorter_side_to(image, PAPER_SHORT_SIDE)[None]  # (1, 3, H', W')
    region_cnn = rcnn.roi_heads.box_roi_pool
    paper_warp = WarpedRegionCNN(
        region_cnn.cnn, warp_size=PAPER_WARP, context_padding=PAPER_CONTEXT,
        output_size=region_cnn.output_size, crops_per_batch=region_cnn.crops_per_batch,
    ).eval()  # fmt: skip
    boxes = random_boxes(regions, scaled.shape[-2:])
    with torch.no_grad():
        paper_warp({"image": scaled}, [boxes[:2]], [])  # first-call allocations: not counted
        rcnn_s = _seconds(lambda: paper_warp({"image": scaled}, [boxes], []))
        fast_rcnn.backbone(scaled)
        fast_s = _seconds(lambda: fast_rcnn.backbone(scaled))
    return {"rcnn_features_s": rcnn_s, "fast_rcnn_features_s": fast_s, "regions": regions,
            "image_size": list(scaled.shape[-2:])}  # fmt: skip


def random_boxes(count: int, size: tuple[int, int], seed: int = 0) -> Tensor:
    """(count, 4) xyxy boxes inside an image of `size` = (H, W), sides 8 px to the whole."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    corners = torch.rand(count, 2, 2, generator=generator) * torch.tensor([width, height])
    low, high = corners.min(dim=1).values, corners.max(dim=1).values  # (count, 2) each
    high = torch.maximum(high, low + 8)
    return torch.cat([low, high], dim=1).clamp(max=torch.tensor([width, height] * 2) - 1)


def _shorter_side_to(image: Tensor, side: int) -> Tensor:
    scale = side / min(image.shape[-2:])
    size = [round(length * scale) for length in image.shape[-2:]]
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def _seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started

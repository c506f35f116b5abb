"""The pair that `seglab bench detection --peer torchvision` compares, and what it feeds them.

torchvision's Mask R-CNN R50-FPN is built as its COCO detectors are (FrozenBatchNorm in the
ResNet, the last 3 stages trainable) from a fixed seed, and its state dict is converted
with `seglab convert`'s code: both models hold the same numbers, so any difference in time
or memory is the code's.
"""

from __future__ import annotations

import skimage.data
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from seglab.models.detection.convert import convert_torchvision

ARCH = "mask_rcnn_resnet50_fpn"
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea")
NUM_CLASSES = 91  # COCO's 90 classes + background: the class-dependent layers at full size


def photographs(long_side: int | None = None) -> list[Tensor]:
    """scikit-image's photographs as float (3, H, W) in [0, 1]; their own size when
    `long_side` is None, else resized (bilinear) so that the long side is `long_side`."""
    images = []
    for name in PHOTOGRAPHS:
        image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
        if long_side is not None:
            scale = long_side / max(image.shape[-2:])
            image = F.interpolate(image[None], scale_factor=scale, mode="bilinear")[0]
        images.append(image.contiguous())
    return images


def training_batch(size: int, batch: int = 2) -> tuple[list[Tensor], list[dict]]:
    """`batch` photographs cropped square and resized to `size` px, each with 3 objects
    (an ellipse mask and its box, classes 1..3), the same on every call."""
    images = [
        F.interpolate(_square(image)[None], size=(size, size), mode="bilinear")[0]
        for image in photographs()[:batch]
    ]
    targets = [_ellipses(size, shift=index) for index in range(batch)]
    return images, targets


def _square(image: Tensor) -> Tensor:
    side = min(image.shape[-2:])
    return image[:, :side, :side]


def _ellipses(size: int, *, shift: int) -> dict:
    """Three axis-aligned ellipses of different sizes: boxes (3, 4) xyxy, masks (3, H, W)."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    masks, boxes = [], []
    for index, (cx, cy, rx, ry) in enumerate([(0.3, 0.3, 0.15, 0.1), (0.65, 0.4, 0.2, 0.25),
                                              (0.45, 0.75, 0.08, 0.12)]):  # fmt: skip
        cx, cy = (cx + 0.05 * shift) * size, (cy + 0.03 * index) * size
        rx, ry = rx * size, ry * size
        masks.append((((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1).to(torch.uint8))
        boxes.append([cx - rx, cy - ry, cx + rx, cy + ry])
    return {
        "boxes": torch.tensor(boxes).clamp(0, size),
        "labels": torch.tensor([1, 2, 3]),
        "masks": torch.stack(masks),
    }


def torchvision_mask_rcnn(
    *, min_size: int, max_size: int, detections: int, rois: int, seed: int = 0
) -> nn.Module:
    """torchvision's Mask R-CNN R50-FPN, built as `maskrcnn_resnet50_fpn` builds it around
    ImageNet weights (FrozenBatchNorm2d, trainable_layers=3), with random weights;
    `detections` per image at most, `rois` training RoIs per image."""
    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    return MaskRCNN(
        backbone, num_classes=NUM_CLASSES, min_size=min_size, max_size=max_size,
        box_detections_per_img=detections, box_batch_size_per_image=rois,
    )  # fmt: skip


def spread_class_scores(model: nn.Module, images: list[Tensor]) -> None:
    """Make a randomly initialised torchvision detector detect objects (in place).

    Random ReLU features share one large mean direction, so every RoI scores about
    1/num_classes, under the 0.05 score threshold: no detection, no mask head, no pasting,
    which is not the work a trained model does. Removing that direction from the class
    weights lets each RoI's own features decide, and the scores spread out.
    """
    features = []
    hook = model.roi_heads.box_head.register_forward_hook(lambda m, i, out: features.append(out))
    with torch.no_grad():
        model.eval()(images[:1])
        hook.remove()
        mean = features[0].mean(dim=0)  # (1024,)
        class_weights = model.roi_heads.box_predictor.cls_score.weight  # (91, 1024)
        class_weights.sub_((class_weights @ mean)[:, None] * mean[None] / mean.dot(mean))
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(4.0)


def model_pair(
    *, min_size: int, max_size: int, images: list[Tensor], detections: int = 100, rois: int = 512
) -> dict[str, nn.Module]:
    """{"torchvision": theirs, "seglab": ours converted from theirs}, both in eval mode."""
    theirs = torchvision_mask_rcnn(
        min_size=min_size, max_size=max_size, detections=detections, rois=rois
    )
    spread_class_scores(theirs, images)
    ours = convert_torchvision(
        theirs.state_dict(), ARCH, frozen_bn_eps=1e-5, min_size=min_size, max_size=max_size,
        detections_per_img=detections, box_batch_size_per_image=rois,
    )  # fmt: skip
    return {"torchvision": theirs.eval(), "seglab": ours.eval()}

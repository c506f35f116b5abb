"""R-CNN: each region dilated by 16 warped pixels of context and warped to a square, the
CNN run on the warped regions in batches, pool5 + fc6 + fc7 + softmax and class-specific
boxes, fine-tuning samples (25% foreground at IoU >= 0.5, the rest background), empty
images, eval-mode loss, overfitting one batch, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
import torchvision
from tests.models.detection.conftest import empty_image, square_image, train_on
from tests.models.detection.test_fast_rcnn import with_proposals

import seglab
from seglab.models.detection.rcnn import ImagePixels, WarpedRegionCNN
from seglab.structures.boxes import box_iou

# 96 px images, 48 px warps through ResNet-18 up to C4 (a 3 x 3 map), GroupNorm (the same
# in train and eval mode).
TINY_RCNN = {
    "backbone": "resnet18", "norm": "gn", "trainable_stages": 5, "min_size": 96,
    "max_size": 96, "warp_size": 48, "box_roi_size": 3, "representation_size": 64,
    "box_score_thresh": 0.0, "max_proposals": 100, "box_batch_size_per_image": 16,
}  # fmt: skip
LOSSES = {"loss_classifier", "loss_box_reg"}


def tiny_rcnn(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return seglab.build_model("rcnn", num_classes=3, **{**TINY_RCNN, **overrides})


def test_wiring_is_the_papers():
    model = seglab.build_model("rcnn", num_classes=21, representation_size=32)
    assert isinstance(model.backbone, ImagePixels)  # no shared computation
    warp = model.roi_heads.box_roi_pool
    assert isinstance(warp, WarpedRegionCNN)
    assert (warp.warp_size, warp.context_padding, warp.output_size) == (224, 16, 7)
    assert warp.cnn.level_names == ["conv5"]  # VGG16's conv5_3: 14 x 14 for 224 px
    assert model.roi_heads.box_head.fc6.in_features == 512 * 7 * 7  # pool5 of VGG16
    assert model.roi_heads.box_predictor.box_deltas.out_features == 21 * 4
    heads = model.roi_heads
    assert (heads.sampler.batch_size_per_image, heads.sampler.positive_fraction) == (64, 0.25)
    assert (heads.matcher.high_threshold, heads.matcher.low_threshold) == (0.5, 0.5)
    assert heads.matcher.background_floor == 0.0 and heads.nms_thresh == 0.3


def test_warp_keeps_16_pixels_of_context_around_the_region():
    """Appendix A: dilate the box so that at the warped size there are exactly p = 16
    pixels of context around it. A 20 x 30 region warped to 64 x 64: its content fills the
    central 32 x 32, the context the 16-pixel border."""
    warp = WarpedRegionCNN(ImagePixels(1), warp_size=64, context_padding=16, output_size=4)
    image = torch.zeros(1, 1, 80, 80)
    image[0, 0, 30:60, 20:40] = 1.0  # the region (x 20..40, y 30..60), on a dark background
    region = torch.tensor([[20.0, 30.0, 40.0, 60.0]])
    assert torch.equal(warp.with_context(region), torch.tensor([[10.0, 15.0, 50.0, 75.0]]))
    rois = torch.cat([torch.zeros(1, 1), warp.with_context(region)], dim=1)
    crop = warp.warp(image, rois)[0, 0]  # (64, 64)
    assert crop.shape == (64, 64)
    assert torch.all(crop[17:47, 17:47] == 1)  # inside (one pixel of bilinear edge aside)
    assert torch.all(crop[:15] == 0) and torch.all(crop[49:] == 0)  # context rows
    assert torch.all(crop[:, :15] == 0) and torch.all(crop[:, 49:] == 0)  # context columns


def test_regions_in_batches_give_the_same_features():
    model = tiny_rcnn().eval()
    image, target = with_proposals(square_image(), count=50)
    features = model.backbone(model.transform([image])[0].tensors)
    one_call = model.roi_heads.box_roi_pool
    pooled = one_call(features, [target["proposals"]], [(96, 96)])
    one_call.crops_per_batch = 7
    torch.testing.assert_close(one_call(features, [target["proposals"]], [(96, 96)]), pooled)
    assert pooled.shape == (50, 256, 3, 3)  # ResNet-18 C4 of a 48 px warp


def test_each_image_of_a_batch_gives_its_own_regions():
    """Two images in one batch: every region is cut from its own image (the roi's batch
    index), never from image 0. Flat images of two values make each crop one value."""
    warp = WarpedRegionCNN(ImagePixels(1), warp_size=32, context_padding=8, output_size=2)
    images = torch.stack([torch.full((1, 64, 64), 0.25), torch.full((1, 64, 64), 0.75)])
    proposals = [torch.tensor([[20.0, 20.0, 40.0, 44.0]]),
                 torch.tensor([[16.0, 24.0, 40.0, 40.0], [24.0, 20.0, 36.0, 36.0]])]  # fmt: skip
    pooled = warp({"image": images}, proposals, [(64, 64), (64, 64)])  # context stays inside
    assert pooled.shape == (3, 1, 2, 2)
    assert torch.all(pooled[0] == 0.25) and torch.all(pooled[1:] == 0.75)


def test_warp_samples_2_x_2_points_per_pixel_as_the_reference_op():
    """The warp is RoIAlign with 2 x 2 bilinear samples per output pixel (half-pixel
    aligned), whatever the region's size: equal to torchvision's kernel with
    sampling_ratio=2 within float32 summation order (8 taps of weights adding up to 1)."""
    warp = WarpedRegionCNN(ImagePixels(3), warp_size=24, context_padding=4, output_size=2)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 80, 96, generator=generator)  # high-frequency: density shows
    rois = torch.tensor([[0.0, 5.0, 7.0, 15.0, 12.0],  # smaller than the warp
                         [1.0, 3.5, 2.0, 90.0, 70.0],  # over 2 x the warp: 3 x 3 adaptive
                         [1.0, 20.0, 10.0, 60.0, 37.5]])  # fmt: skip
    expected = torchvision.ops.roi_align(image, rois, (24, 24), 1.0, 2, True)
    bound = (4 * 2 * 2 + 1) * 2.0**-24 * float(image.abs().max())
    assert (warp.warp(image, rois) - expected).abs().max() <= bound
    coarser = torchvision.ops.roi_align(image, rois, (24, 24), 1.0, 1, True)
    assert (coarser - expected).abs().max() > 100 * bound  # the comparison can tell them apart


def test_fine_tuning_samples_a_quarter_of_foreground():
    """§2.3: regions with IoU >= 0.5 are positives for their box's class, the rest
    background (even those that hardly touch an object: no [0.1, 0.5) floor here)."""
    heads = tiny_rcnn(box_batch_size_per_image=64).roi_heads
    samples = [
        with_proposals(square_image(), count=600, seed=1),
        with_proposals(square_image(box=(50, 10, 90, 40), label=2), count=600, seed=2),
    ]
    targets = [target for _, target in samples]
    rois = heads.sample_rois([target["proposals"] for target in targets], targets)
    far_background = 0
    for image_rois, target in zip(rois, targets, strict=True):
        proposals, labels = image_rois.proposals, image_rois.labels
        best_iou = box_iou(target["boxes"], proposals).max(dim=0).values
        assert len(labels) == 64 and int((labels > 0).sum()) == 16
        assert torch.equal(labels > 0, best_iou >= 0.5)
        assert torch.all(labels[labels > 0] == target["labels"][0])
        far_background += int((best_iou < 0.1).sum())
    assert far_background > 0


def test_eval_output_on_any_image():
    model = tiny_rcnn().eval()
    image, _ = square_image()
    with torch.no_grad():
        (output,) = model([image[:, :, :72]])  # proposals by selective search on the fly
    count = len(output["boxes"])
    assert count > 0 and output["boxes"].shape == (count, 4) and output["scores"].shape == (count,)
    assert set(output["labels"].tolist()) <= {1, 2}
    assert output["boxes"][:, 0::2].max() <= 72 and output["boxes"][:, 1::2].max() <= 96


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_image_without_objects(mode):
    model = tiny_rcnn().train(mode == "train")
    images, targets = zip(with_proposals(empty_image()), with_proposals(empty_image(), seed=3),
                          strict=True)  # fmt: skip
    outputs, losses = model.forward_with_losses(list(images), list(targets))
    assert set(losses) == LOSSES
    assert losses["loss_box_reg"] == 0 and losses["loss_classifier"] > 0
    sum(losses.values()).backward()
    if mode == "eval":
        assert all("boxes" in output for output in outputs)


def test_eval_mode_loss_is_the_training_loss():
    model = tiny_rcnn()
    image, target = with_proposals(square_image())
    losses = {}
    for mode in ("train", "eval"):
        torch.manual_seed(3)
        with torch.no_grad():
            model.train(mode == "train")
            outputs, losses[mode] = model.forward_with_losses([image], [target])
    assert outputs[0]["boxes"].shape[0] > 0 and losses["train"]["loss_box_reg"] > 0
    for name in LOSSES:
        torch.testing.assert_close(losses["eval"][name], losses["train"][name])


def blue_object(box=(50, 10, 90, 40)):
    """A second class that looks different: R-CNN sees a region without its surroundings
    and warps away its aspect ratio, so the two classes must differ inside their boxes."""
    image, target = square_image(box=box, label=2)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = torch.tensor([0.1, 0.3, 0.9])[:, None, None]
    return image, target


def test_overfits_one_batch():
    model = tiny_rcnn(trainable_stages=3).train()
    batch = [with_proposals(square_image()), with_proposals(blue_object(), seed=5)]
    images, targets = [b[0] for b in batch], [b[1] for b in batch]
    totals = train_on(model, images, targets, steps=20, lr=3e-3)
    assert sum(totals[-3:]) / 3 < 0.7 * totals[0], totals
    model.eval()
    with torch.no_grad():
        outputs = model(images, targets)
    for output, target in zip(outputs, targets, strict=True):
        assert output["labels"][0] == target["labels"][0]
        assert float(box_iou(output["boxes"][:1], target["boxes"])[0, 0]) > 0.5


def test_checkpoint_round_trip(tmp_path):
    model = tiny_rcnn().eval()
    image, target = with_proposals(square_image())
    with torch.no_grad():
        before = model([image], [target])[0]
    seglab.save_model(model, tmp_path / "model.safetensors", class_names=["a", "b"])
    loaded = seglab.load_model(tmp_path / "model.safetensors")
    assert loaded.card.arch == "rcnn" and isinstance(loaded.roi_heads.box_roi_pool, WarpedRegionCNN)
    with torch.no_grad():
        after = loaded([image], [target])[0]
    assert len(before["boxes"]) > 0
    for key in ("boxes", "labels", "scores"):
        torch.testing.assert_close(after[key], before[key])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fpn": True}, "R-CNN runs the CNN on each warped region"),
        ({"warp_size": 32}, "no room for 16 px of context"),
        ({"roi_pool": "max"}, "R-CNN pools no RoIs"),
        ({"anchor_sizes": [32]}, "anchor_sizes"),
    ],
)
def test_options_rcnn_does_not_have(options, message):
    with pytest.raises(seglab.UserError, match=message):
        seglab.build_model("rcnn", num_classes=3, **{**TINY_RCNN, **options})


@pytest.mark.parametrize("name", ["rcnn", "fast_rcnn"])
def test_no_regions_give_no_detections(name):
    """Every region may be filtered out (proposal_min_size) or none found: no detections."""
    from tests.models.detection.test_fast_rcnn import tiny_fast_rcnn

    model = (tiny_rcnn() if name == "rcnn" else tiny_fast_rcnn()).eval()
    image, _ = square_image()
    with torch.no_grad():
        (output,) = model.detect_with_proposals([image], [torch.zeros(0, 4)])
    assert output["boxes"].shape == (0, 4) and output["scores"].shape == (0,)
    assert output["labels"].shape == (0,)

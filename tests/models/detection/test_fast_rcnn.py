"""Fast R-CNN: hierarchical sampling (64 RoIs per image, 25% foreground, background IoU in
[0.1, 0.5)), RoI max pooling from one map, proposals given by the data or computed on the
fly, empty images, eval-mode loss, overfitting one batch, checkpoint round trip (with
truncated SVD of fc6 / fc7, §3.1, whose own tests are in test_box_head.py)."""

from __future__ import annotations

import pytest
import torch
from tests.models.detection.conftest import empty_image, square_image, train_on

import seglab
from seglab.models.detection.options import FastRCNNOptions
from seglab.ops.roi_pool import MultiScaleRoIPool
from seglab.ops.selective_search import selective_search
from seglab.structures.boxes import box_iou

# Small enough for a unit test: 96 px images, ResNet-18 C4 (stride 16), narrow fc layers.
# GroupNorm behaves the same in train and eval mode, so the two modes' losses compare.
TINY_FAST = {
    "backbone": "resnet18", "norm": "gn", "trainable_stages": 5, "min_size": 96,
    "max_size": 96, "representation_size": 64, "box_score_thresh": 0.0, "max_proposals": 200,
}  # fmt: skip
LOSSES = {"loss_classifier", "loss_box_reg"}


def tiny_fast_rcnn(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return seglab.build_model("fast_rcnn", num_classes=3, **{**TINY_FAST, **overrides})


def with_proposals(image_and_target, count: int = 60, seed: int = 0):
    """The target with `count` proposals: half jittered around its objects, half anywhere
    (what the data gives a selective-search detector)."""
    image, target = image_and_target
    generator = torch.Generator().manual_seed(seed)
    size = image.shape[-1]
    boxes = target["boxes"] if len(target["boxes"]) else torch.tensor([[20.0, 20.0, 50.0, 50.0]])
    near = (
        boxes.repeat(count // 2, 1)[: count // 2]
        + torch.randn(count // 2, 4, generator=generator) * 6
    )
    corner = torch.rand(count - count // 2, 2, generator=generator) * (size - 20)
    anywhere = torch.cat([corner, corner + 8 + torch.rand(len(corner), 2) * 40], dim=1)
    return image, {**target, "proposals": torch.cat([near, anywhere]).clamp(0, size)}


def test_wiring_is_the_papers():
    assert FastRCNNOptions(num_classes=21).representation_size == 4096  # fc6, fc7 of VGG16
    model = seglab.build_model("fast_rcnn", num_classes=21, representation_size=16)
    heads = model.roi_heads
    assert isinstance(heads.box_roi_pool, MultiScaleRoIPool)
    assert heads.box_roi_pool.featmap_names == ["conv5"]  # VGG16's conv5_3, stride 16
    assert heads.box_roi_pool.output_size == (7, 7)
    assert heads.box_head.fc6.in_features == 512 * 7 * 7  # VGG16 by default
    assert heads.box_predictor.class_logits.out_features == 21
    assert heads.box_predictor.box_deltas.out_features == 21 * 4  # class-specific boxes
    assert (heads.sampler.batch_size_per_image, heads.sampler.positive_fraction) == (64, 0.25)
    assert (heads.matcher.high_threshold, heads.matcher.low_threshold) == (0.5, 0.5)
    assert heads.matcher.background_floor == 0.1 and heads.box_loss_beta == 1.0  # eq. 3
    assert model.transform.min_size == (600,) and model.transform.max_size == 1000
    assert model.proposal_generator.settings.max_proposals == 2000


def test_hierarchical_sampling_proportions_and_background_range():
    """§2.3: 64 RoIs from each of the 2 images, 25% with IoU >= 0.5, the rest with IoU in
    [0.1, 0.5); RoIs below 0.1 are never drawn."""
    heads = seglab.build_model("fast_rcnn", num_classes=3, **TINY_FAST).roi_heads
    samples = [
        with_proposals(square_image(), count=600, seed=1),
        with_proposals(square_image(box=(50, 10, 90, 40), label=2), count=600, seed=2),
    ]
    targets = [target for _, target in samples]
    rois = heads.sample_rois([target["proposals"] for target in targets], targets)
    for image_rois, target in zip(rois, targets, strict=True):
        proposals, labels = image_rois.proposals, image_rois.labels
        best_iou = box_iou(target["boxes"], proposals).max(dim=0).values
        foreground = labels > 0
        assert len(labels) == 64 and int(foreground.sum()) == 16
        assert torch.all(best_iou[foreground] >= 0.5)
        background_iou = best_iou[~foreground]
        assert torch.all((background_iou >= 0.1) & (background_iou < 0.5))
        candidates = torch.cat([target["proposals"], target["boxes"]])
        below = box_iou(target["boxes"], candidates).max(dim=0).values < 0.1
        assert int(below.sum()) > 48  # there were easy negatives to draw from: none was


def test_given_proposals_are_resized_with_the_image_and_computed_when_absent():
    model = tiny_fast_rcnn(min_size=192, max_size=192).eval()  # the 96 px image is doubled
    image, target = with_proposals(square_image())
    no_proposals = {key: value for key, value in target.items() if key != "proposals"}
    batch, resized_targets = model.transform([image, image], [target, no_proposals])
    proposals, losses = model.proposal_generator(batch, {}, resized_targets)
    assert losses == {}
    torch.testing.assert_close(proposals[0], target["proposals"] * 2)
    # no proposals in the target: selective search on the image as given, mapped to the batch
    expected = selective_search(image, max_proposals=200) * 2
    expected = expected[(expected[:, 2:] - expected[:, :2] > 1e-3).all(dim=1)]
    torch.testing.assert_close(proposals[1], expected)


def test_eval_output_on_any_image():
    """`predict` on an image without a target: proposals come from selective search."""
    model = tiny_fast_rcnn().eval()
    image, _ = square_image()
    with torch.no_grad():
        (output,) = model([image[:, :80]])
    count = len(output["boxes"])
    assert count > 0 and output["boxes"].shape == (count, 4) and output["scores"].shape == (count,)
    assert output["labels"].dtype == torch.int64 and set(output["labels"].tolist()) <= {1, 2}
    assert output["boxes"][:, 0::2].max() <= 96 and output["boxes"][:, 1::2].max() <= 80


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_image_without_objects(mode):
    model = tiny_fast_rcnn().train(mode == "train")
    images, targets = zip(with_proposals(empty_image()), with_proposals(empty_image(), seed=3),
                          strict=True)  # fmt: skip
    outputs, losses = model.forward_with_losses(list(images), list(targets))
    assert set(losses) == LOSSES
    assert losses["loss_box_reg"] == 0 and losses["loss_classifier"] > 0  # all background
    sum(losses.values()).backward()
    if mode == "eval":
        assert all("boxes" in output for output in outputs)


def test_eval_mode_loss_is_the_training_loss():
    model = tiny_fast_rcnn()
    batch = [with_proposals(square_image()), with_proposals(empty_image(), seed=4)]
    images, targets = [b[0] for b in batch], [b[1] for b in batch]
    losses = {}
    for mode in ("train", "eval"):
        torch.manual_seed(3)
        with torch.no_grad():
            outputs, losses[mode] = model.train(mode == "train").forward_with_losses(
                images, targets
            )
    assert outputs[0]["boxes"].shape[0] > 0 and losses["train"]["loss_box_reg"] > 0
    for name in LOSSES:
        torch.testing.assert_close(losses["eval"][name], losses["train"][name])


def test_overfits_one_batch():
    model = tiny_fast_rcnn(box_batch_size_per_image=32, trainable_stages=3).train()
    batch = [with_proposals(square_image()),
             with_proposals(square_image(box=(50, 10, 90, 40), label=2), seed=5)]  # fmt: skip
    images, targets = [b[0] for b in batch], [b[1] for b in batch]
    totals = train_on(model, images, targets, steps=20, lr=3e-3)
    # each step draws other RoIs, so the loss is noisy: compare the last steps' mean
    assert sum(totals[-3:]) / 3 < 0.7 * totals[0], totals  # measured: 0.51
    model.eval()
    with torch.no_grad():
        outputs = model(images, targets)
    for output, target in zip(outputs, targets, strict=True):
        assert output["labels"][0] == target["labels"][0]  # the best detection is the object
        assert float(box_iou(output["boxes"][:1], target["boxes"])[0, 0]) > 0.5  # 0.68, 0.81


def test_checkpoint_round_trip(tmp_path):
    model = tiny_fast_rcnn(fc_svd_ranks=[16, 8]).eval()
    image, target = with_proposals(square_image())
    with torch.no_grad():
        before = model([image], [target])[0]
    seglab.save_model(model, tmp_path / "model.safetensors", class_names=["a", "b"])
    loaded = seglab.load_model(tmp_path / "model.safetensors")
    assert loaded.card.arch == "fast_rcnn" and loaded.roi_heads.box_head.svd_ranks == (16, 8)
    with torch.no_grad():
        after = loaded([image], [target])[0]
    assert len(before["boxes"]) > 0
    for key in ("boxes", "labels", "scores"):
        torch.testing.assert_close(after[key], before[key])

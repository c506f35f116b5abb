"""The oracle: a torchvision Faster / Mask R-CNN checkpoint, converted with
`seglab convert torchvision`, gives the same detections as torchvision on real photographs.

torchvision's random initialisation (fixed seed) scores every RoI near 1/num_classes; the
class weights are made to depend on each RoI's features and the box deltas scaled up, so
that scores spread out (0.3-0.98) over all classes and the detections (labels, order,
boxes, scores, masks) are a sharp test of every part: transform, backbone, FPN, anchors,
RPN, RoIAlign, box head, NMS, mask head and mask pasting.
"""

from __future__ import annotations

import pytest
import skimage.data
import torch
import torch.nn.functional as F
from torchvision.models import detection

import seglab
from seglab.bench.peer import BOX_ROUNDING, steepest_step
from seglab.cli.main import main

PHOTOGRAPHS = ("astronaut", "coffee", "chelsea")
SIZE = 320  # both models resize the short side to 320 (long side capped at 320)
# float32 rounding of ~60 convs summed in another order by the fast paths (bench/peer.py)
BOX_ATOL = max(1e-2, BOX_ROUNDING * SIZE)


def photograph(name: str) -> torch.Tensor:
    """A scikit-image photograph as float CHW in [0, 1], its long side ~320 px."""
    image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
    scale = 320 / max(image.shape[-2:])
    return F.interpolate(image[None], scale_factor=scale, mode="bilinear")[0]


def torchvision_model(arch: str, images: list[torch.Tensor]) -> torch.nn.Module:
    torch.manual_seed(0)
    builder = {
        "faster_rcnn_resnet50_fpn": detection.fasterrcnn_resnet50_fpn,
        "mask_rcnn_resnet50_fpn": detection.maskrcnn_resnet50_fpn,
        "faster_rcnn_resnet50_fpn_v2": detection.fasterrcnn_resnet50_fpn_v2,
        "mask_rcnn_resnet50_fpn_v2": detection.maskrcnn_resnet50_fpn_v2,
    }[arch]
    model = builder(
        weights=None, weights_backbone=None, num_classes=5, min_size=SIZE, max_size=SIZE,
        box_score_thresh=0.3, box_detections_per_img=30,
    ).eval()  # fmt: skip
    # Random ReLU features share one large mean direction, so one class wins every RoI:
    # remove that direction from the class weights to let the RoI's own features decide.
    features = []
    hook = model.roi_heads.box_head.register_forward_hook(lambda m, i, out: features.append(out))
    with torch.no_grad():
        model(images[:1])
        hook.remove()
        mean = features[0].mean(dim=0)  # (1024,)
        class_weights = model.roi_heads.box_predictor.cls_score.weight  # (5, 1024)
        class_weights.sub_((class_weights @ mean)[:, None] * mean[None] / mean.dot(mean))
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(4.0)
    return model


@pytest.mark.parametrize(
    "arch",
    [
        # each Faster R-CNN is its Mask R-CNN without the mask head: the Mask R-CNN cases
        # convert and compare the same backbone, FPN, RPN and box head (20-40 s each)
        pytest.param("faster_rcnn_resnet50_fpn", marks=pytest.mark.slow),
        "mask_rcnn_resnet50_fpn",
        pytest.param("faster_rcnn_resnet50_fpn_v2", marks=pytest.mark.slow),
        # v2's heads (4 conv + 1 fc box head, 2-conv RPN head, GroupNorm): 35 s, test-all
        pytest.param("mask_rcnn_resnet50_fpn_v2", marks=pytest.mark.slow),
    ],
)
def test_converted_checkpoint_reproduces_torchvision(arch, tmp_path):
    images = [photograph(name) for name in PHOTOGRAPHS]
    reference = torchvision_model(arch, images)
    checkpoint = tmp_path / "torchvision.pth"
    torch.save(reference.state_dict(), checkpoint)
    converted = tmp_path / "converted.safetensors"
    overrides = [
        "frozen_bn_eps=1e-5",
        "min_size=320",
        "max_size=320",
        "box_score_thresh=0.3",
        "detections_per_img=30",
    ]
    argv = ["convert", "torchvision", str(checkpoint), str(converted), "--arch", arch]
    assert main(argv + [a for o in overrides for a in ("--set", o)]) == 0
    ours = seglab.load_model(converted)
    assert ours.card.class_names == ("1", "2", "3", "4")

    logits = []  # the largest |class logit| over the RoIs of the reference's forward
    predictor = reference.roi_heads.box_predictor.cls_score
    hook = predictor.register_forward_hook(lambda m, i, out: logits.append(out.abs().max()))
    with torch.no_grad():
        expected = reference(images)
        actual = ours(images)
    hook.remove()
    # A logit moves by about BOX_ROUNDING of its size, as the boxes do; a softmax probability
    # moves by at most a quarter of the change of a difference of two logits.
    score_atol = max(1e-4, 0.25 * 2 * BOX_ROUNDING * float(max(logits)))
    total = 0
    for name, want, got in zip(PHOTOGRAPHS, expected, actual, strict=True):
        total += len(want["labels"])
        assert torch.equal(got["labels"], want["labels"]), name
        torch.testing.assert_close(got["boxes"], want["boxes"], atol=BOX_ATOL, rtol=0)
        torch.testing.assert_close(got["scores"], want["scores"], atol=score_atol, rtol=0)
        if "masks" in want:
            assert got["masks"].shape == want["masks"].shape
            # a mask pasted into a box moved by BOX_ATOL moves with it: its probabilities
            # change by up to that shift times their steepest step between two pixels
            torch.testing.assert_close(
                got["masks"], want["masks"], atol=1e-3 + BOX_ATOL * steepest_step(want["masks"]),
                rtol=0,
            )  # fmt: skip
            assert (want["masks"] > 0.5).any()  # the masks are not trivially empty
    assert total >= 15  # enough detections, of several classes, to make the test sharp
    assert len(torch.cat([o["labels"] for o in expected]).unique()) >= 3


def test_convert_rejects_bad_input(tmp_path, capsys):
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("hello")
    out = str(tmp_path / "out.safetensors")
    base = ["convert", "torchvision"]
    assert (
        main(base + [str(tmp_path / "missing.pth"), out, "--arch", "mask_rcnn_resnet50_fpn"]) == 2
    )
    assert "missing.pth: torchvision checkpoint not found" in capsys.readouterr().err
    assert main(base + [str(not_a_checkpoint), out, "--arch", "mask_rcnn_resnet50_fpn"]) == 2
    assert "notes.pth: not a PyTorch checkpoint" in capsys.readouterr().err
    wrong = tmp_path / "wrong.pth"
    torch.save({"some.weight": torch.zeros(3)}, wrong)
    assert main(base + [str(wrong), out, "--arch", "faster_rcnn_resnet50_fpn"]) == 2
    assert "not a torchvision faster_rcnn_resnet50_fpn" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(base + [str(wrong), out, "--arch", "yolo"])
    assert exit_info.value.code == 2

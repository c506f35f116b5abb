import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from seglab.data import DataConfig
from seglab.data.transforms import RandomRot90, RandomScaleCrop, build_transforms
from seglab.errors import UserError
from seglab.structures.masks import masks_to_boxes


def _sample(height=40, width=60):
    """A uint8 image with three rectangular objects whose boxes are tight around masks."""
    rectangles = [(3, 5, 20, 15), (30, 10, 58, 38), (10, 25, 18, 31)]  # x0, y0, x1, y1
    masks = torch.zeros((3, height, width), dtype=torch.uint8)
    for index, (x0, y0, x1, y1) in enumerate(rectangles):
        masks[index, y0:y1, x0:x1] = 1
    image = torch.randint(
        0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(rectangles, dtype=torch.float32),
            format="XYXY",
            canvas_size=(height, width),
        ),
        "labels": torch.tensor([1, 2, 3]),
        "masks": tv_tensors.Mask(masks),
        "image_id": 4,
    }
    return tv_tensors.Image(image), target


def _plain(tensor):
    return tensor.as_subclass(torch.Tensor)


@pytest.mark.parametrize(
    "transform", [v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(1.0)], ids=["h", "v"]
)
def test_flip_twice_is_identity_and_boxes_follow_masks(transform):
    image, target = _sample()
    flipped_image, flipped = transform(image, target)
    assert torch.equal(masks_to_boxes(flipped["masks"]), _plain(flipped["boxes"]))
    assert not torch.equal(flipped_image, image)
    back_image, back = transform(flipped_image, flipped)
    assert torch.equal(back_image, image) and torch.equal(back["masks"], target["masks"])
    assert torch.equal(_plain(back["boxes"]), _plain(target["boxes"]))


class _QuarterTurn(RandomRot90):
    def make_params(self, flat_inputs):
        return {**super().make_params(flat_inputs), "turns": 1}


def test_rot90_quarter_turn_by_hand_and_four_turns_are_identity():
    image, target = _sample()
    turned_image, turned = _QuarterTurn()(image, target)
    # Counter-clockwise: pixel (x, y) goes to (y, W - 1 - x); the canvas becomes W x H.
    assert turned_image.shape == (3, 60, 40) and turned["boxes"].canvas_size == (60, 40)
    assert turned_image[0, 60 - 1 - 7, 3] == image[0, 3, 7]
    assert _plain(turned["boxes"])[0].tolist() == [5, 60 - 20, 15, 60 - 3]
    for _ in range(3):
        turned_image, turned = _QuarterTurn()(turned_image, turned)
    assert torch.equal(turned_image, image) and torch.equal(turned["masks"], target["masks"])
    assert torch.equal(_plain(turned["boxes"]), _plain(target["boxes"]))


def test_random_rot90_moves_boxes_with_masks():
    image, target = _sample()
    rotate = RandomRot90()
    torch.manual_seed(0)
    size_changed = set()
    for _ in range(12):
        before = image.shape
        image, target = rotate(image, target)
        assert target["boxes"].canvas_size == tuple(image.shape[-2:])
        assert torch.equal(masks_to_boxes(target["masks"]), _plain(target["boxes"]))
        size_changed.add(before[-2:] != image.shape[-2:])
    assert size_changed == {True, False}  # odd and even numbers of turns both happened


def test_scale_crop_clips_boxes_and_drops_those_that_leave():
    image, target = _sample()
    pipeline = v2.Compose(
        [RandomScaleCrop((2.0, 2.0)), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes()]
    )
    torch.manual_seed(0)
    kept_counts = set()
    for _ in range(10):
        out_image, out = pipeline(image, target)
        assert out_image.shape == image.shape  # large-scale jitter keeps the input size
        n = len(out["labels"])
        assert out["boxes"].shape == (n, 4) and out["masks"].shape == (n, 40, 60)
        boxes = _plain(out["boxes"])
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all()
        # Each box still matches its mask to within the resize rounding.
        assert torch.allclose(masks_to_boxes(out["masks"]), boxes, atol=1.0)
        kept_counts.add(n)
    assert min(kept_counts) < 3  # some objects left the 2x zoomed window and were dropped


def test_detection_pipeline_clips_and_drops_degenerate_boxes_with_labels_and_masks():
    image, target = _sample()
    boxes = torch.tensor([[3, 5, 20, 15], [50, 10, 75, 38], [10, 25, 10, 31]], dtype=torch.float32)
    target["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(40, 60))
    pipeline = build_transforms(DataConfig(root=".", hflip=0.0), task="instance", train=True)
    out_image, out = pipeline(image, target)
    assert out_image.dtype == torch.float32 and torch.allclose(out_image * 255, image.float())
    assert _plain(out["boxes"]).tolist() == [[3, 5, 20, 15], [50, 10, 60, 38]]
    assert out["labels"].tolist() == [1, 2]
    assert torch.equal(out["masks"], target["masks"][:2])
    assert out["image_id"] == 4


def test_semantic_pipelines_sizes_and_nearest_labels():
    image = tv_tensors.Image(torch.randint(0, 256, (3, 50, 80), dtype=torch.uint8))
    class_map = torch.zeros((50, 80), dtype=torch.int64)
    class_map[10:30, 20:60] = 2
    class_map[0:5, 0:5] = 255
    target = {"semantic_mask": tv_tensors.Mask(class_map), "image_id": 0}
    cfg = DataConfig(root=".", image_size=32, scale_jitter=(0.8, 1.5), rot90=True)
    torch.manual_seed(0)
    for _ in range(5):
        out_image, out = build_transforms(cfg, task="semantic", train=True)(image, target)
        assert out_image.shape == (3, 32, 32) and out["semantic_mask"].shape == (32, 32)
        assert set(out["semantic_mask"].unique().tolist()) <= {0, 2, 255}
    out_image, out = build_transforms(cfg, task="semantic", train=False)(image, target)
    assert out_image.shape == (3, 32, 51) and out["semantic_mask"].dtype == torch.int64


def _centroid(weights):
    ys, xs = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float64) for n in weights.shape), indexing="ij"
    )
    weights = weights.double()
    return torch.stack([(weights * ys).sum(), (weights * xs).sum()]) / weights.sum()


@pytest.mark.parametrize("train", [True, False], ids=["train", "val"])
def test_shrunk_masks_stay_centred_on_their_objects(train):
    # 256 -> 96 px: torchvision's "nearest" would shift every mask about 0.3 output pixels
    # up and left of its object in the image; sampling at pixel centres does not.
    cfg = DataConfig(root=".", image_size=96, hflip=0.0)
    pipeline = build_transforms(cfg, task="semantic", train=train)
    generator = torch.Generator().manual_seed(0)
    offsets = []
    for _ in range(20):
        y0, x0 = torch.randint(0, 200, (2,), generator=generator).tolist()
        height, width = torch.randint(10, 50, (2,), generator=generator).tolist()
        class_map = torch.zeros((256, 256), dtype=torch.int64)
        class_map[y0 : y0 + height, x0 : x0 + width] = 1
        image = tv_tensors.Image((class_map * 255).to(torch.uint8).expand(3, -1, -1))
        out_image, out = pipeline(image, {"semantic_mask": tv_tensors.Mask(class_map)})
        offsets.append(_centroid(out["semantic_mask"]) - _centroid(out_image[0]))
    mean_offset = torch.stack(offsets).mean(dim=0)
    assert mean_offset.abs().max() < 0.1, mean_offset


def test_photometric_jitter_on_a_grayscale_image():
    image = tv_tensors.Image(torch.full((1, 20, 20), 100, dtype=torch.uint8))
    cfg = DataConfig(root=".", image_size=16, photometric=True)
    out_image, _ = build_transforms(cfg, task="classification", train=True)(
        image, {"labels": torch.tensor(0), "image_id": 0}
    )
    assert out_image.shape == (1, 16, 16) and out_image.dtype == torch.float32


def test_unet_options_outside_semantic_are_user_errors():
    with pytest.raises(UserError, match="elastic"):
        build_transforms(DataConfig(root=".", elastic=True), task="instance", train=True)
    with pytest.raises(UserError, match="weight_map"):
        build_transforms(DataConfig(root=".", weight_map=True), task="classification", train=True)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"image_size": 0}, "data.image_size must be a positive"),
        ({"hflip": 1.5}, r"data.hflip is a probability in \[0, 1\]"),
        ({"scale_jitter": (1.5, 0.5)}, "data.scale_jitter must be"),
        ({"scale_jitter": (0.0, 1.0)}, "data.scale_jitter must be"),
    ],
)
def test_bad_augmentation_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        build_transforms(DataConfig(root=".", **options), task="semantic", train=True)

"""U-Net: the paper's golden shapes and parameter count, odd sizes, losses, training basics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import seglab
from seglab.errors import UserError
from seglab.models.segmentation.unet import (
    UNet,
    valid_input_size,
    valid_margin,
    valid_output_size,
)


def paper_unet(device: str | torch.device = "cpu") -> UNet:
    with torch.device(device):
        return UNet(
            in_channels=1,
            num_classes=2,
            base_channels=64,
            depth=4,
            padding="valid",
            norm="none",
            init="he",
        )


def test_paper_configuration_uses_he_initialisation():
    """Paper §3: weights from a Gaussian with std sqrt(2/N), N = incoming nodes of a neuron
    (k * k * C_in for a conv, C_in for the 2x2 stride-2 up-convolution), biases zero."""
    torch.manual_seed(0)
    model = paper_unet()
    checked = 0
    for module in model.modules():
        if not isinstance(module, nn.Conv2d | nn.ConvTranspose2d) or module.weight.numel() < 30_000:
            continue  # the std of fewer draws is too noisy to pin at 5 %
        if isinstance(module, nn.ConvTranspose2d):
            incoming = module.in_channels
        else:
            incoming = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        # 3e4+ draws: the sample std is within 1 % of the true one; PyTorch's default
        # (uniform, std sqrt(1/(3N))) is 0.41x and falls far outside
        assert module.weight.std().item() == pytest.approx((2 / incoming) ** 0.5, rel=0.05)
        assert module.bias is None or torch.all(module.bias == 0)
        checked += 1
    assert checked == 21  # 17 of the 18 3x3 convs (not the first: 576 weights) + 4 up-convs


def test_paper_configuration_golden_shapes_at_every_level():
    """Fig. 1 of the paper: 572 x 572 x 1 -> 388 x 388 x 2 (shapes only: meta tensors)."""
    model = paper_unet("meta")
    conv_outputs: list[tuple[int, int, int]] = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            module.register_forward_hook(
                lambda _m, _i, out: conv_outputs.append((out.shape[1], *out.shape[2:]))
            )
    logits = model.forward_logits(torch.empty(1, 1, 572, 572, device="meta"))
    assert tuple(logits.shape) == (1, 2, 388, 388)
    contracting = [(64, 570, 570), (64, 568, 568), (128, 282, 282), (128, 280, 280)]
    contracting += [(256, 138, 138), (256, 136, 136), (512, 66, 66), (512, 64, 64)]
    bottleneck = [(1024, 30, 30), (1024, 28, 28)]
    expansive = [(512, 56, 56), (512, 54, 54), (512, 52, 52)]  # up-conv, conv, conv
    expansive += [(256, 104, 104), (256, 102, 102), (256, 100, 100)]
    expansive += [(128, 200, 200), (128, 198, 198), (128, 196, 196)]
    expansive += [(64, 392, 392), (64, 390, 390), (64, 388, 388)]
    assert conv_outputs == contracting + bottleneck + expansive + [(2, 388, 388)]


def conv_params(kernel: int, in_channels: int, out_channels: int) -> int:
    return kernel * kernel * in_channels * out_channels + out_channels  # weights + biases


def test_paper_configuration_parameter_count():
    """Counted by hand from the architecture, independently of the module code."""
    widths = [64, 128, 256, 512, 1024]
    expected = conv_params(3, 1, 64) + conv_params(3, 64, 64)
    for lower, upper in zip(widths, widths[1:], strict=False):  # contracting + bottleneck
        expected += conv_params(3, lower, upper) + conv_params(3, upper, upper)
    for lower, upper in zip(widths, widths[1:], strict=False):  # expansive
        expected += conv_params(2, upper, lower)  # 2x2 up-convolution halving channels
        expected += conv_params(3, 2 * lower, lower) + conv_params(3, lower, lower)
    expected += conv_params(1, 64, 2)
    model = paper_unet("meta")
    assert expected == 31_030_658
    assert sum(parameter.numel() for parameter in model.parameters()) == expected


def test_valid_size_helpers():
    assert valid_output_size(572) == 388
    assert valid_margin(4) == 92 == (572 - 388) // 2
    assert valid_input_size(388) == 572
    assert valid_output_size(573) is None  # 569 before the first pooling: odd
    for depth in (1, 2, 3, 4):
        for size in range(8, 300):
            output = valid_output_size(size, depth)
            if output is not None:
                assert size - output == 2 * valid_margin(depth)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_valid_output_pixel_is_centred_on_input_pixel_plus_margin(depth):
    """Docstring claim: output pixel i sees input pixels centred on i + margin."""
    torch.manual_seed(0)
    model = UNet(in_channels=1, base_channels=4, depth=depth, padding="valid", norm="none")
    model = model.double()
    size = valid_input_size(12, depth)
    image = torch.rand(1, 1, size, size, dtype=torch.double, requires_grad=True)
    output_size = valid_output_size(size, depth)
    for index in (0, output_size // 2, output_size - 1):
        image.grad = None
        model.forward_logits(image)[0, 1, index, index].backward()
        rows = image.grad[0, 0].abs().sum(dim=1).nonzero().flatten()
        centre = (rows.min() + rows.max()).item() / 2
        assert abs(centre - (index + valid_margin(depth))) <= 2 ** (depth - 1)


def test_same_padding_keeps_any_size():
    model = UNet(base_channels=4, depth=3).eval()
    images = [torch.rand(3, 97, 203), torch.rand(3, 97, 203)]
    outputs = model(images)
    assert [tuple(output["logits"].shape) for output in outputs] == [(2, 97, 203)] * 2
    assert tuple(model([torch.rand(3, 5, 9)])[0]["logits"].shape) == (2, 5, 9)


def test_same_padding_crop_undoes_the_padding():
    """An odd-sized image gives the same logits as when embedded in its own mirror padding."""
    torch.manual_seed(0)
    model = UNet(base_channels=4, depth=2, norm="none").eval()
    image = torch.rand(1, 3, 13, 10)  # padded inside to 16 x 12: rows 1..13, columns 1..10
    padded = torch.nn.functional.pad(image, (1, 1, 1, 2), mode="reflect")
    with torch.no_grad():
        direct = model.forward_logits(image)
        by_hand = model.forward_logits(padded)[..., 1:14, 1:11]
    torch.testing.assert_close(direct, by_hand)


def test_valid_padding_rejects_sizes_where_a_pooling_sees_an_odd_size():
    model = UNet(base_channels=4, depth=4, padding="valid")
    with pytest.raises(UserError, match=r"input side 573 .*572 or 588"):
        model([torch.rand(3, 573, 572)])


@pytest.mark.parametrize(
    "kwargs",
    [{"padding": "sideways"}, {"norm": "layer"}, {"upsampling": "nearest"}, {"loss": "focal"}],
)
def test_unknown_options_are_user_errors(kwargs):
    with pytest.raises(UserError, match=next(iter(kwargs))):
        seglab.build_model("unet", **kwargs)


def test_class_index_beyond_the_model_is_a_user_error():
    model = UNet(num_classes=3, base_channels=4, depth=2)
    mask = torch.full((16, 16), 3)
    mask[0, 0] = 255  # ignored pixels are allowed
    with pytest.raises(UserError, match="class index 3 .* num_classes=3"):
        model.forward_with_losses([torch.rand(3, 16, 16)], [{"semantic_mask": mask}])


def test_valid_loss_centre_crops_the_target():
    torch.manual_seed(0)
    model = UNet(in_channels=1, base_channels=4, depth=2, padding="valid", norm="none")
    size = valid_input_size(8, 2)  # 48 -> 8, margin 20
    image = torch.rand(1, size, size)
    mask = torch.randint(0, 2, (size, size))
    outputs, losses = model.forward_with_losses([image], [{"semantic_mask": mask}])
    logits = outputs[0]["logits"]
    margin = valid_margin(2)
    cropped = mask[margin : margin + 8, margin : margin + 8]
    expected = nn.functional.cross_entropy(logits[None], cropped[None])
    torch.testing.assert_close(losses["loss_ce"], expected)


def test_weight_map_multiplies_the_pixel_losses():
    torch.manual_seed(0)
    model = UNet(base_channels=4, depth=2).eval()
    image, mask = torch.rand(3, 16, 16), torch.randint(0, 2, (16, 16))
    _, plain = model.forward_with_losses([image], [{"semantic_mask": mask}])
    target = {"semantic_mask": mask, "weight_map": torch.full((16, 16), 3.0)}
    _, weighted = model.forward_with_losses([image], [target])
    torch.testing.assert_close(weighted["loss_ce"], 3 * plain["loss_ce"])


@pytest.mark.parametrize(
    ("loss", "keys"),
    [("ce", {"loss_ce"}), ("dice", {"loss_dice"}), ("ce+dice", {"loss_ce", "loss_dice"})],
)
def test_loss_options(loss, keys):
    model = UNet(
        num_classes=3, base_channels=4, depth=2, loss=loss, norm="gn", upsampling="bilinear"
    )
    _, losses = model.forward_with_losses(
        [torch.rand(3, 16, 16)], [{"semantic_mask": torch.randint(0, 3, (16, 16))}]
    )
    assert set(losses) == keys
    assert all(torch.isfinite(value) for value in losses.values())


def square_batch(num_classes: int = 2, size: int = 32):
    image = torch.zeros(3, size, size)
    mask = torch.zeros(size, size, dtype=torch.int64)
    image[:, 8:20, 10:24] = 1.0
    mask[8:20, 10:24] = num_classes - 1
    return [image], [{"semantic_mask": mask}]


def test_empty_mask_image_gives_finite_losses_and_gradients():
    model = UNet(base_channels=4, depth=2, loss="ce+dice")
    image = torch.rand(3, 32, 32)
    target = {"semantic_mask": torch.zeros(32, 32, dtype=torch.int64)}
    _, losses = model.forward_with_losses([image], [target])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet(base_channels=4, depth=3, dropout=0.5)
    images, targets = square_batch()
    _, losses = model.forward_with_losses(images, targets)
    sum(losses.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = UNet(num_classes=3, base_channels=8, depth=2)
    images, targets = square_batch(num_classes=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        _, losses = model.forward_with_losses(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        prediction = model(images)[0]["logits"].argmax(dim=0)
    assert (prediction == targets[0]["semantic_mask"]).float().mean() == 1.0


def test_eval_mode_gives_outputs_and_validation_loss():
    model = UNet(base_channels=4, depth=2).eval()
    images, targets = square_batch()
    with torch.no_grad():
        outputs, losses = model.forward_with_losses(images, targets)
    assert tuple(outputs[0]["logits"].shape) == (2, 32, 32)
    assert losses["loss_ce"].item() > 0


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = seglab.build_model("unet", num_classes=3, base_channels=4, depth=2, norm="bn")
    images, targets = square_batch(num_classes=3)
    model.forward_with_losses(images, targets)  # updates the batch-norm running statistics
    model.eval()
    path = tmp_path / "unet.safetensors"
    seglab.save_model(model, path, class_names=["circle", "square"])
    loaded = seglab.load_model(path)
    assert loaded.card.class_names == ("circle", "square")
    assert loaded.padding == "same" and loaded.num_classes == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)[0]["logits"], model(images)[0]["logits"])


def test_bilinear_path_convolves_before_upsampling_with_the_same_result():
    """Docstring claim: a 1x1 convolution and bilinear upsampling commute."""
    torch.manual_seed(0)
    model = UNet(base_channels=4, depth=2, upsampling="bilinear")
    conv, upsample = model.expansive[0].up
    features = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(upsample(conv(features)), conv(upsample(features)))


@pytest.fixture(scope="module")
def tiny_semantic_shapes(tmp_path_factory):
    from seglab.data.shapes import generate_shapes

    root = tmp_path_factory.mktemp("shapes") / "semantic"
    return generate_shapes(root, task="semantic", train=2, val=1, size=64, seed=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.padding=sideways"], "padding='sideways' is not one of valid, same"),
        (
            ["model.padding=valid", "data.image_size=64", "data.crop_size=64"],
            "input side 64 makes a 2x2 pooling",
        ),  # fmt: skip
    ],
)
def test_bad_unet_settings_exit_2_with_one_error_line(
    tiny_semantic_shapes, tmp_path, capsys, overrides, message
):
    from seglab.cli.main import main

    arguments = ["train", "unet_shapes", "--out", str(tmp_path / "run")]
    for override in [f"data.root={tiny_semantic_shapes}", "train.max_steps=1", *overrides]:
        arguments += ["--set", override]
    assert main(arguments) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("seglab train: error: ")
    assert message in errors[0]

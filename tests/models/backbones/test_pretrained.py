"""model.backbone_weights: torchvision ResNet state dicts load into our ResNet backbones."""

import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import seglab
from seglab.errors import UserError
from seglab.models.backbones import FrozenBatchNorm2d, ResNetBackbone
from seglab.models.backbones.pretrained import (
    load_backbone_weights,
    read_state_dict,
    resnet_depth,
)


def _torchvision_resnet(depth: int, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised torchvision ResNet whose BatchNorms hold random statistics and
    affine parameters, as trained ones do (fresh ones are the identity)."""
    torch.manual_seed(seed)
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    for module in resnet.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return resnet.eval()


def _features(resnet: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """torchvision's stage outputs layer1..layer4 (C2..C5)."""
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
    outputs = []
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = stage(x)
        outputs.append(x)
    return outputs


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    resnet = _torchvision_resnet(18)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    return resnet, path


# 20 convolutions and 20 norms of 4 tensors; BatchNorm2d also counts its batches (+20)
@pytest.mark.parametrize(("norm", "tensors"), [("frozen_bn", 100), ("bn", 120)])
def test_torchvision_weights_give_torchvisions_features(resnet18_file, norm, tensors):
    resnet, path = resnet18_file
    ours = ResNetBackbone(18, norm=norm)
    (line,) = load_backbone_weights(ours, path)
    assert f"ResNet-18 weights, {tensors} tensors loaded into model;" in line
    assert "not used: fc.weight, fc.bias; missing: none" in line
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    # float64 on both sides: frozen BN is one scale and shift, torchvision's BN another
    # order of the same operations; what is left is float64 rounding through 18 layers
    ours, resnet = ours.double().eval(), resnet.double()
    with torch.no_grad():
        expected = _features(resnet, images.double())
        got = list(ours(images.double()).values())
    for level, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9, msg=f"C{level + 2}")
    resnet.float()


def test_safetensors_files_and_wrapped_state_dicts_read_alike(resnet18_file, tmp_path):
    resnet, path = resnet18_file
    state = resnet.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r18.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pt")
    for other in (tmp_path / "r18.safetensors", tmp_path / "ckpt.pt"):
        read = read_state_dict(other)
        assert read.keys() == state.keys()
        assert all(torch.equal(read[key], state[key]) for key in state)


def test_depth_is_read_from_the_blocks():
    for depth in (18, 34, 50, 101):
        model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        assert resnet_depth(model.state_dict()) == depth
    assert resnet_depth({"weight": torch.zeros(1)}) is None


def test_another_depth_is_refused_in_one_line(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(UserError) as error:
        load_backbone_weights(ResNetBackbone(18), tmp_path / "r34.pth")
    assert str(error.value) == (
        f"{tmp_path / 'r34.pth'}: ResNet-34 weights, but the model's backbone is resnet18; "
        "set model.backbone: resnet34, or give resnet18 weights"
    )


def test_other_files_are_refused_in_one_line(tmp_path):
    torch.save(torchvision.models.vgg11(weights=None).features.state_dict(), tmp_path / "v.pth")
    with pytest.raises(UserError, match=r"v.pth: not a torchvision ResNet state dict \(keys 0."):
        load_backbone_weights(ResNetBackbone(18), tmp_path / "v.pth")
    with open(tmp_path / "code.pth", "wb") as handle:  # a pickle that would build an object
        pickle.dump({"conv1.weight": Payload()}, handle, protocol=2)
    with pytest.raises(UserError, match="code.pth: not a state dict torch.load reads with weigh"):
        read_state_dict(tmp_path / "code.pth")
    with pytest.raises(UserError, match="nowhere.pth: weights file not found"):
        read_state_dict(tmp_path / "nowhere.pth")


class Payload:
    """Any class: unpickling it runs its module's code, which weights_only refuses."""


def test_groupnorm_takes_no_batchnorm_statistics(resnet18_file):
    with pytest.raises(UserError, match="use norm: frozen_bn \\(or bn\\) with backbone_weights"):
        load_backbone_weights(ResNetBackbone(18, norm="gn"), resnet18_file[1])


def test_a_gray_backbone_sees_a_gray_image_as_rgb_sees_it(resnet18_file, tmp_path):
    resnet, _ = resnet18_file
    path = tmp_path / "resnet18-float64.pth"  # so that the RGB sum is exact to float64 too
    torch.save(resnet.double().state_dict(), path)
    gray = ResNetBackbone(18, in_channels=1).double().eval()
    (line,) = load_backbone_weights(gray, path)
    assert line.endswith("; conv1 summed over RGB for 1 input channel")
    image = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = _features(resnet.double(), image.expand(1, 3, 64, 64))[-1]
        torch.testing.assert_close(gray(image)["c5"], expected, rtol=1e-9, atol=1e-9)
    resnet.float()


def test_detectors_take_them_and_keep_their_frozen_stages(resnet18_file):
    resnet, path = resnet18_file
    model = seglab.build_model("faster_rcnn", num_classes=3, backbone="resnet18", fpn=False)
    (line,) = load_backbone_weights(model, path)  # a C4 detector: layer4 is not built
    assert "loaded into backbone.body" in line and "not used: layer4.0.conv1.weight" in line
    body = model.backbone.body
    assert torch.equal(body.layer3[1].conv2.weight, resnet.layer3[1].conv2.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert torch.equal(body.bn1.running_var, resnet.bn1.running_var)
    trainable = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3"}  # trainable_stages=3 counts layer4 (C4 model)


def test_a_model_without_a_resnet_is_refused(resnet18_file):
    with pytest.raises(UserError, match="model cnn has no ResNet backbone"):
        load_backbone_weights(seglab.build_model("cnn", num_classes=3), resnet18_file[1])

"""ImageNet weights for the ResNet backbones: a local file, or a torchvision weight name.

`model.backbone_weights: PATH` names a state dict of torchvision's `resnet18/34/50/101` as
`torch.save(model.state_dict(), PATH)` writes it (`.pth`/`.pt`, read with
`torch.load(weights_only=True)`: no code runs) or as safetensors (`.safetensors`).
`model.backbone_weights: ResNet50_Weights.IMAGENET1K_V2` (any name torchvision's
`get_weight` knows, `.DEFAULT` included) or `imagenet` (the backbone depth's DEFAULT) is
read through torchvision's weights API from its cache, `$TORCH_HOME/hub/checkpoints/`
(`torch.hub.get_dir()`): a machine with internet downloads the file once, an offline one
reads it there, and an offline one without it gets one line naming the file and the folder
to put it in. `ResNetBackbone` keeps torchvision's parameter names, so the file's keys are
ours; the classifier (`fc.*`) and, in a model that ends at C4, `layer4.*` are not used.

With the weights in place, `norm: frozen_bn` and `trainable_stages` mean what they mean in
torchvision's and detectron2's detectors: the ImageNet BatchNorm statistics and affine
parameters become fixed scales and shifts, and only the last `trainable_stages` stages
train. A 1-channel model (`in_channels: 1`) takes `conv1` summed over the RGB filters (timm's
`adapt_input_conv`): a gray image x then gives what the RGB image (x, x, x) gave.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from seglab.errors import UserError, require_file
from seglab.models.backbones.resnet import ResNetBackbone
from seglab.models.weight_names import is_weight_name

# (blocks in layer1..layer4, bottleneck blocks) -> depth, as torchvision builds them
_DEPTHS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}
_BLOCK_KEY = re.compile(r"layer([1-4])\.(\d+)\.")
_SHOWN = 3  # keys named per kind in the report line


def weights_file(spec: str | Path, depth: int) -> Path:
    """The local file of `spec`: a path as given, or a torchvision weight name's file in
    torchvision's cache (`imagenet`: the DEFAULT ImageNet weights of ResNet-`depth`)."""
    if not is_weight_name(str(spec)):
        return Path(spec)
    name = f"ResNet{depth}_Weights.DEFAULT" if spec == "imagenet" else str(spec)
    example = f"ResNet{depth}_Weights.IMAGENET1K_V1, ResNet{depth}_Weights.DEFAULT or imagenet"
    return cached_weights(name, "model.backbone_weights", example)


def cached_weights(name: str, option: str, example: str) -> Path:
    """The file of torchvision's weight `name` (`MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1`)
    in torchvision's cache, `torch.hub.get_dir()/checkpoints` ($TORCH_HOME/hub): downloaded
    there by torchvision (hash checked) when missing and the network allows; a UserError
    naming `option`, the file, its URL and the folder otherwise."""
    import torchvision.models
    from torch.hub import get_dir, load_state_dict_from_url

    try:
        weights = torchvision.models.get_weight(name)
    except (KeyError, ValueError):
        raise UserError(
            f"{option}: {name!r} is no torchvision weight name; e.g. {example}"
        ) from None
    folder = Path(get_dir()) / "checkpoints"
    cached = folder / Path(weights.url).name
    if not cached.is_file():
        try:  # torchvision's own download into its cache (verified against the file's hash)
            load_state_dict_from_url(weights.url, model_dir=str(folder), check_hash=True)
        except (OSError, RuntimeError) as error:  # offline (URLError is an OSError), or bad
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(
                f"{option} {name}: {cached.name} is not in torchvision's cache and could not "
                f"be downloaded ({reason}); put {cached.name} from {weights.url} in {folder} "
                "(TORCH_HOME sets the folder), or give the file's path"
            ) from None
    return cached


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a `.safetensors` file or of a `torch.save`d state dict.

    A dict that wraps the state dict under `state_dict` or `model` (training scripts'
    checkpoints) is unwrapped, and DataParallel's `module.` prefix is dropped.
    """
    path = require_file(path, "weights file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise UserError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and zip errors of many types: all mean "not this"
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{path}: not a state dict torch.load reads with weights_only=True "
            f"({problem}); save it with torch.save(model.state_dict(), PATH)"
        ) from None
    return _tensors_of(state, path)


def _tensors_of(state, path: Path) -> dict[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(
            f"{path}: not a state dict (a mapping of names to tensors); save it "
            "with torch.save(model.state_dict(), PATH)"
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def resnet_depth(state: Mapping[str, Tensor]) -> int | None:
    """The depth (18, 34, 50, 101, 152) of the torchvision ResNet whose state dict this is,
    from its number of blocks per stage and their kind; None when it is no such ResNet."""
    blocks = [0, 0, 0, 0]
    for key in state:
        if match := _BLOCK_KEY.match(key):
            stage, index = int(match[1]) - 1, int(match[2])
            blocks[stage] = max(blocks[stage], index + 1)
    if "conv1.weight" not in state:
        return None
    return _DEPTHS.get((tuple(blocks), "layer1.0.conv3.weight" in state))


def load_backbone_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load the torchvision ResNet state dict at `path` (or of a torchvision weight name,
    `weights_file`) into every `ResNetBackbone` of `model`; return one report line per
    backbone (what was loaded, left out, missing).

    Raises:
        UserError: the model has no ResNet backbone, the file is another architecture
            (another depth, other shapes), or the backbone's norm cannot take BatchNorm
            statistics (GroupNorm).
    """
    backbones = [(name, m) for name, m in model.named_modules() if isinstance(m, ResNetBackbone)]
    if not backbones:
        arch = model.card.arch
        raise UserError(
            f"model.backbone_weights: model {arch} has no ResNet backbone; leave "
            "it out, or use a detector with backbone: resnet18/34/50/101"
        )
    path = weights_file(path, backbones[0][1].depth)
    state = read_state_dict(path)
    return [_load_into(backbone, name, state, path) for name, backbone in backbones]


def _load_into(backbone: ResNetBackbone, name: str, state: dict, path: Path) -> str:
    depth = resnet_depth(state)
    if depth is None:
        shown = ", ".join(list(state)[:_SHOWN])
        raise UserError(
            f"{path}: not a torchvision ResNet state dict (keys {shown}, ...); "
            "give resnet18/34/50/101 weights"
        )
    if depth != backbone.depth:
        raise UserError(
            f"{path}: ResNet-{depth} weights, but the model's backbone is "
            f"resnet{backbone.depth}; set model.backbone: resnet{depth}, or give "
            f"resnet{backbone.depth} weights"
        )
    if backbone.norm == "gn":
        raise UserError(
            f"{path}: ImageNet ResNets carry BatchNorm statistics, which GroupNorm "
            "has no place for; use norm: frozen_bn (or bn) with backbone_weights"
        )
    expected = backbone.state_dict()
    given, adapted = _fit_input_conv(dict(state), expected, path)
    _check_shapes(expected, given, path)
    usable = {key: value for key, value in given.items() if key in expected}
    backbone.load_state_dict(usable, strict=False)
    # BatchNorm's batch counter means nothing to a frozen norm: neither missing nor unused
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unused = [k for k in given if k not in expected and not k.endswith("num_batches_tracked")]
    return _report(path, name or "model", depth, len(usable), unused, missing, adapted)


def _fit_input_conv(state: dict, expected: dict, path: Path) -> tuple[dict, bool]:
    """`conv1` summed over its RGB filters for a 1-channel backbone (True when it was)."""
    wanted, given = expected["conv1.weight"].shape[1], state["conv1.weight"].shape[1]
    if wanted == given:
        return state, False
    if wanted != 1 or given != 3:
        raise UserError(
            f"{path}: conv1 takes {given} channels, the model {wanted}; set "
            "model.in_channels to 1 or 3"
        )
    # (64, 3, 7, 7) -> (64, 1, 7, 7): a gray x through the sum = RGB (x, x, x) through conv1
    state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    return state, True


def _check_shapes(expected: dict, given: dict, path: Path) -> None:
    resized = [
        f"{key} {tuple(given[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in given and given[key].shape != value.shape
    ]
    if resized:
        more = f" (+{len(resized) - 1} more)" if len(resized) > 1 else ""
        raise UserError(
            f"{path}: shapes saved vs expected differ: {resized[0]}{more}; the "
            "file is another variant of this ResNet (wide, ResNeXt?)"
        )


def _report(path, name, depth, loaded, unused, missing, adapted) -> str:
    def first(keys: list[str]) -> str:
        if not keys:
            return "none"
        return ", ".join(keys[:_SHOWN]) + (
            f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
        )

    line = (
        f"{path}: ResNet-{depth} weights, {loaded} tensors loaded into {name}; "
        f"not used: {first(unused)}; missing: {first(missing)}"
    )
    return line + ("; conv1 summed over RGB for 1 input channel" if adapted else "")

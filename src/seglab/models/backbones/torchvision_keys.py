"""Map a torchvision detection checkpoint's backbone and FPN keys onto ours.

torchvision's `BackboneWithFPN` stores the ResNet under `backbone.body.` with the very names
our `ResNetBackbone` keeps, and the FPN under `backbone.fpn.` with `inner_blocks` (our
`lateral_convs`) and `layer_blocks` (our `output_convs`). Nothing else changes: the same
tensors, the same shapes.

    backbone.body.<rest>               -> <backbone_prefix><rest>
    backbone.fpn.inner_blocks.<rest>   -> <fpn_prefix>lateral_convs.<rest>
    backbone.fpn.layer_blocks.<rest>   -> <fpn_prefix>output_convs.<rest>
"""

from __future__ import annotations

from torch import Tensor

_FPN_RENAMES = {"inner_blocks.": "lateral_convs.", "layer_blocks.": "output_convs."}


def rename_torchvision_backbone_key(
    key: str, *, backbone_prefix: str, fpn_prefix: str, source_prefix: str = "backbone."
) -> str | None:
    """Our key for one torchvision backbone/FPN key, or None when it is not one of those.

    Args:
        key: a torchvision state-dict key, e.g. `backbone.body.layer1.0.conv1.weight`.
        backbone_prefix: where our ResNetBackbone sits, e.g. `"backbone.body."`.
        fpn_prefix: where our FPN sits, e.g. `"backbone.fpn."`.
        source_prefix: where torchvision's BackboneWithFPN sits (`"backbone."` in detectors).
    """
    body, fpn = source_prefix + "body.", source_prefix + "fpn."
    if key.startswith(body):
        return backbone_prefix + key[len(body) :]
    if key.startswith(fpn):
        rest = key[len(fpn) :]
        for theirs, ours in _FPN_RENAMES.items():
            if rest.startswith(theirs):
                return fpn_prefix + ours + rest[len(theirs) :]
    return None


def convert_torchvision_backbone(
    state_dict: dict[str, Tensor],
    *,
    backbone_prefix: str,
    fpn_prefix: str,
    source_prefix: str = "backbone.",
) -> dict[str, Tensor]:
    """The backbone and FPN entries of a torchvision state dict, under our names.

    Keys that are not backbone/FPN (RPN, heads) are left out: map those separately.
    `num_batches_tracked` entries are kept; FrozenBatchNorm2d ignores them when loading.
    """
    converted = {}
    for key, tensor in state_dict.items():
        new_key = rename_torchvision_backbone_key(
            key, backbone_prefix=backbone_prefix, fpn_prefix=fpn_prefix, source_prefix=source_prefix
        )
        if new_key is not None:
            converted[new_key] = tensor
    return converted

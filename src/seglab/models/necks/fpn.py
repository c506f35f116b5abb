"""Feature Pyramid Network (Lin et al. 2017, §3): strong semantics at every scale.

Top-down pathway with lateral connections: each backbone stage C_l is projected to
`out_channels` by a 1x1 lateral conv, the coarser merged map is upsampled by 2 (nearest
neighbour) and added, and a 3x3 conv smooths the sum into P_l. P6 ("pool") is P5
subsampled by 2 (a max-pool of kernel 1, stride 2) for the RPN's largest anchors (§4.1).

Parameters are laid out like torchvision's `FeaturePyramidNetwork` (`inner_blocks` are our
`lateral_convs`, `layer_blocks` our `output_convs`), so the outputs are equal given the
same weights (to float rounding: a norm is folded into its conv, `layers.conv_norm_act`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from seglab.models.layers import check_norm, conv_norm, conv_norm_act

FPN_NORMS = ("none", "bn", "gn")  # None (YAML null) means "none"


class FPN(nn.Module):
    """FPN over backbone stages C2..C5 (or any list of consecutive stages).

    Args:
        in_channels_list: channels of the input maps, finest first (e.g. [64, 128, 256, 512]).
        out_channels: channels of every pyramid level (256 in the paper).
        extra_pool: add the "pool" level (P6) by subsampling the coarsest output.
        norm: "none" or None (convs with bias, the paper and torchvision v1), "bn" (torchvision's
            Mask R-CNN v2) or "gn", after each conv.

    Attributes:
        out_channels: channels of every output map.
    """

    def __init__(
        self,
        in_channels_list: list[int],
        out_channels: int = 256,
        *,
        extra_pool: bool = True,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        check_norm(norm, owner="fpn", allowed=FPN_NORMS)
        self.out_channels = out_channels
        self.extra_pool = extra_pool
        self.lateral_convs = nn.ModuleList(
            _conv_norm(channels, out_channels, 1, norm) for channels in in_channels_list
        )
        self.output_convs = nn.ModuleList(
            _conv_norm(out_channels, out_channels, 3, norm) for _ in in_channels_list
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

    def forward(self, features: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:
        """Build the pyramid.

        Args:
            features: backbone maps, finest first (`c2`..`c5`: strides 4..32), any names.

        Returns:
            OrderedDict `p2`.. (one per input, same sizes, `out_channels` each), then `pool`
            (half the size of the last) when `extra_pool`.
        """
        stages = list(features.values())
        merged = _conv(self.lateral_convs[-1], stages[-1])  # the top of the top-down pathway
        pyramid = [_conv(self.output_convs[-1], merged)]
        for index in range(len(stages) - 2, -1, -1):
            top_down = F.interpolate(merged, size=stages[index].shape[-2:], mode="nearest")
            # lateral + top_down, the sum done by the lateral conv (`conv_norm_act`)
            merged = _conv(self.lateral_convs[index], stages[index], residual=top_down)
            pyramid.insert(0, _conv(self.output_convs[index], merged))

        names = [f"p{level}" for level in range(2, 2 + len(pyramid))]
        if self.extra_pool:
            pyramid.append(F.max_pool2d(pyramid[-1], kernel_size=1, stride=2, padding=0))
            names.append("pool")
        return OrderedDict(zip(names, pyramid, strict=True))


def _conv(block: nn.Sequential, x: Tensor, residual: Tensor | None = None) -> Tensor:
    """block(x) (+ residual): the Sequential(conv, norm) of `_conv_norm`, norm folded."""
    return conv_norm_act(block[0], block[1], x, relu=False, residual=residual)


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str | None):
    """Sequential(conv, norm); the conv has a bias only without a norm (as torchvision)."""
    return nn.Sequential(
        *conv_norm(in_channels, out_channels, kernel_size, norm=norm, padding=kernel_size // 2)
    )

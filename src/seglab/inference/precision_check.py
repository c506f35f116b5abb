"""Whether a detector's bfloat16 detections are its float32 ones, within bfloat16's rounding.

bfloat16 keeps 8 significant bits: each value it holds is off by up to BF16_ROUNDING = 2^-8
of itself (float32: 2^-24). Under autocast every convolution and linear layer rounds its
inputs and weights so; the products' rounding errors have random signs, so one layer's
output is off by about that same fraction of its scale, and the errors of successive layers
add like a random walk: sqrt(L) * 2^-8 after L layers. The largest of N such values is
about sqrt(2 ln N) typical ones (the maximum of N Gaussians). `relative_gap` is that
product; the detections' tolerances follow from it:

- a box moves by its deltas times its size (Faster R-CNN eq. 2), and so does the proposal
  it came from: `relative_gap` of the box's longer side;
- a score is a softmax (or sigmoid) of logits of a few units, which moves by at most half
  of its logits' change: `relative_gap` as an absolute probability;
- a mask moves with its logits (`relative_gap`), and its paste moves with the box's corners:
  the mask's steepest step between pixels once per pixel of the box tolerance.

A part that kept bfloat16 coordinates (anchors, decoding, RoIAlign's sampling points) moves
boxes by whole bfloat16 steps of the coordinate instead (2 px between 256 and 512 px);
the tests of those parts compare them exactly (tests/ops/test_precision.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BF16_ROUNDING = 2**-8  # unit roundoff of bfloat16's 8-bit significand


def relative_gap(layers: int, values: int) -> float:
    """The largest relative gap expected between bfloat16-autocast and float32 outputs of
    `layers` layers in sequence, over `values` compared values (module docstring)."""
    return math.sqrt(layers) * BF16_ROUNDING * math.sqrt(2 * math.log(max(2, values)))


def layers_in(model: nn.Module) -> int:
    """Convolution and linear layers of `model`: an upper bound of the layers on any path
    (parallel branches counted too), so the tolerance errs on the loose side."""
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    return sum(isinstance(module, kinds) for module in model.modules())


def compare_detections(
    reference: list[dict[str, Tensor]], output: list[dict[str, Tensor]], layers: int
) -> dict:
    """Pair each float32 (`reference`) detection with a bfloat16 (`output`) one of its label
    and a score within the tolerance, the closest boxes first; report the largest gaps.

    Returns {"paired", "unpaired" (reference detections without a partner), "largest"
    (box px, score, mask gaps over paired detections), "tolerance" (score, box relative
    to its side), "within" (every paired gap within its tolerance)}.
    """
    values = sum(4 * len(image["scores"]) for image in reference)
    gap = relative_gap(layers, values)
    largest = dict.fromkeys(("boxes", "scores", "masks"), 0.0)
    paired, unpaired, within = 0, [], True
    for index, (want, got) in enumerate(zip(reference, output, strict=True)):
        for row, partner in enumerate(_partners(want, got, score_atol=gap)):
            if partner is None:
                unpaired.append({"image": index, "score": float(want["scores"][row])})
                continue
            paired += 1
            box = want["boxes"][row]
            box_gap = float((got["boxes"][partner] - box).abs().max())
            box_atol = gap * float((box[2:] - box[:2]).max())
            score_gap = float((got["scores"][partner] - want["scores"][row]).abs())
            mask_gap, mask_atol = 0.0, 0.0
            if "masks" in want:
                mask = want["masks"][row]
                mask_gap = float((got["masks"][partner] - mask).abs().max())
                mask_atol = gap + steepest_step(mask) * (math.ceil(box_atol) + 1)
            within &= box_gap <= box_atol and score_gap <= gap and mask_gap <= mask_atol
            gaps = {"boxes": box_gap, "scores": score_gap, "masks": mask_gap}
            largest = {key: max(largest[key], gaps[key]) for key in largest}
    return {
        "paired": paired,
        "unpaired": unpaired,
        "largest": largest,
        "tolerance": {"scores": gap, "boxes_per_px_of_side": gap},
        "within": within,
    }


def _partners(want: dict[str, Tensor], got: dict[str, Tensor], score_atol: float) -> list:
    """For each reference detection, the index of its output partner (None: none left of
    its label and a score within `score_atol`): the closest boxes pair first, over all
    pairs, each output detection once (so that a detection does not take its neighbour's
    partner because its own score is higher)."""
    if len(want["scores"]) == 0:
        return []
    # (N, 1, 4) - (1, M, 4) -> (N, M): the largest coordinate difference of every pair
    box_gaps = (want["boxes"][:, None] - got["boxes"][None]).abs().amax(-1)
    same_label = want["labels"][:, None] == got["labels"][None]
    close_score = (want["scores"][:, None] - got["scores"][None]).abs() <= score_atol
    box_gaps = torch.where(same_label & close_score, box_gaps, torch.inf)
    partners: list[int | None] = [None] * len(want["scores"])
    while box_gaps.numel() and bool(torch.isfinite(box_gaps).any()):
        row, column = divmod(int(box_gaps.argmin()), box_gaps.shape[1])
        partners[row] = column
        box_gaps[row, :] = torch.inf
        box_gaps[:, column] = torch.inf
    return partners


def steepest_step(mask: Tensor) -> float:
    """The largest change of mask probability between two neighbouring pixels."""
    if mask.numel() == 0:
        return 0.0
    return max(float(mask.diff(dim=-1).abs().max()), float(mask.diff(dim=-2).abs().max()))

"""onnxruntime against PyTorch on one image: the same outputs within stated tolerances,
and the time each takes.

Tolerances, both float32 on the CPU: onnxruntime's kernels (convolution, matrix products,
resize, RoIAlign) sum in other orders than PyTorch's, about one rounding (1e-7 relative)
per operation, growing with depth. Measured on the seglab models (docs/benchmarks.md,
"ONNX export"): logits 2e-7 relative to their largest value, boxes 8e-5 px, scores 4e-6,
masks 9e-5. The tolerances leave a factor of 10 to 500 for deeper models, larger images
and other CPUs. Detections must be as many, and pair one to one: the same label, a score
within SCORE_ATOL, a box within BOX_ATOL (the order of near-equal scores may differ);
then the masks of each pair within MASK_ATOL.

Near-ties: RoI max pooling (Fast R-CNN) snaps each region to the feature cells, so two
overlapping proposals that snap alike get the same features, and scores equal to the last
bit or two; which of the two boxes NMS keeps is then decided by rounding, by each engine
its own way; so is which of several equal scores takes the last place under the
`detections_per_img` cut. A detection without a counterpart is accepted as such a tie when
onnxruntime kept, in its place, a box of the same label with a score within TIE_SCORE_ATOL
(10x the engines' score differences) that overlaps it (IoU >= TIE_MIN_IOU) or sits at the
cut (the lowest score kept); ties must stay rare (at most one, or a tenth of the
detections): a systematic difference is not a tie.

R-CNN and Fast R-CNN: both engines run with the same selective-search proposals, computed
once (and timed apart: the same OpenCV call for either), so the graphs are compared alone;
that `OnnxModel` finds the same proposals as the PyTorch model is tested on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress

import torch
from torch import Tensor, nn

from seglab.structures.boxes import box_iou

LOGITS_RTOL = 1e-4  # of the largest |logit| (at least 1)
BOX_ATOL = 0.01  # pixels
SCORE_ATOL = 1e-4
MASK_ATOL = 1e-3  # mask probabilities
TIE_SCORE_ATOL = 1e-6
TIE_MIN_IOU = 0.5


@dataclass
class CheckResult:
    """One image: what was compared, the largest differences, the times, what failed."""

    size_hw: tuple[int, int]
    summary: str  # "3 detections", "logits (1, 4)"
    differences: dict[str, float]  # output name -> largest |difference|
    tolerances: dict[str, float]
    torch_ms: float
    onnx_ms: float
    problems: list[str] = field(default_factory=list)
    search_ms: float | None = None  # R-CNN, Fast R-CNN: selective search, outside both
    detections: int | None = None  # detectors: how many were compared (0: nothing was)

    def line(self) -> str:
        compared = ", ".join(
            f"{name} {value:.1e} (tol {self.tolerances[name]:.0e})"
            for name, value in self.differences.items()
        )
        height, width = self.size_hw
        search = "" if self.search_ms is None else (
            f" (+ selective search {self.search_ms:.1f} ms for either)")  # fmt: skip
        times = f"PyTorch {self.torch_ms:.1f} ms, onnxruntime {self.onnx_ms:.1f} ms{search}"
        return f"{height}x{width}: {self.summary}, max |difference| {compared or '-'}; {times}"


def compare_outputs(model: nn.Module, exported, image: Tensor) -> CheckResult:
    """Run `model` (PyTorch, eval mode) and `exported` (`OnnxModel`) on a (C, H, W) image."""
    proposals, search_ms = _proposals(model, image)
    with torch.no_grad():
        reference, torch_ms = _timed(lambda: _run(model, image, proposals))
    output, onnx_ms = _timed(lambda: _run(exported, image, proposals))
    size_hw = (int(image.shape[-2]), int(image.shape[-1]))
    if "logits" in reference:
        result = _compare_logits(reference["logits"], output["logits"])
    else:
        result = _compare_detections(reference, output)
    summary, differences, tolerances, problems = result
    problems = [f"{size_hw[0]}x{size_hw[1]} image: {problem}" for problem in problems]
    detections = None if "logits" in reference else len(reference["scores"])
    return CheckResult(
        size_hw,
        summary,
        differences,
        tolerances,
        torch_ms,
        onnx_ms,
        problems,
        search_ms,
        detections,
    )


def detection_count(model: nn.Module, image: Tensor) -> int:
    """How many detections PyTorch's `model` (eval mode) gives on a (C, H, W) image."""
    with_proposals = hasattr(model, "detect_with_proposals")  # R-CNN, Fast R-CNN
    proposals = model.proposal_generator.search(image) if with_proposals else None
    with torch.no_grad():
        return len(_run(model, image, proposals)["scores"])


def _proposals(model: nn.Module, image: Tensor) -> tuple[Tensor | None, float | None]:
    """R-CNN, Fast R-CNN: the image's selective-search proposals and the time they took;
    None for the other models."""
    if not hasattr(model, "detect_with_proposals"):
        return None, None
    return _timed(lambda: model.proposal_generator.search(image))


def _run(engine, image: Tensor, proposals: Tensor | None) -> dict[str, Tensor]:
    """The outputs of a PyTorch model or `OnnxModel` on one image (with these proposals)."""
    if proposals is None:
        return engine([image])[0]
    return engine.detect_with_proposals([image], [proposals])[0]


def _timed(run: Callable[[], object], repeats: int = 2) -> tuple[object, float]:
    """The result of `run` and its best time in milliseconds after one warm-up run."""
    result = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return result, 1000 * min(times)


def _compare_logits(reference: Tensor, output: Tensor):
    summary = f"logits {tuple(reference.shape)}"
    if output.shape != reference.shape:
        return summary, {}, {}, [f"logits of shape {tuple(output.shape)} in onnxruntime, "
                                 f"{tuple(reference.shape)} in PyTorch"]  # fmt: skip
    tolerance = LOGITS_RTOL * max(1.0, float(reference.abs().max()))
    difference = float((output - reference).abs().max())
    problems = [] if difference <= tolerance else [
        f"logits differ by up to {difference:.2e} (tolerance {tolerance:.1e})"
    ]  # fmt: skip
    return summary, {"logits": difference}, {"logits": tolerance}, problems


def _compare_detections(reference: dict[str, Tensor], output: dict[str, Tensor]):
    count, exported_count = len(reference["scores"]), len(output["scores"])
    summary = f"{count} detections"
    if exported_count != count:
        return summary, {}, {}, [
            f"{exported_count} detections in onnxruntime, {count} in PyTorch (scores "
            f"{_score_range(output)} vs {_score_range(reference)})"
        ]  # fmt: skip
    matched, gaps = pair_detections(reference, output)
    unmatched = [index for index, gap in enumerate(gaps) if gap > BOX_ATOL]
    ties = [index for index in unmatched if _is_tie(reference, output, index, matched[index])]
    if len(ties) > max(1, count // 10):
        return summary, {}, {}, [
            f"{len(ties)} of {count} detections kept another box of the same label and score "
            "in onnxruntime: more than ties explain"
        ]  # fmt: skip
    unmatched = [index for index in unmatched if index not in ties]
    if unmatched:
        first = unmatched[0]
        return summary, {}, {}, [
            f"{len(unmatched)} of {count} detections have no counterpart in onnxruntime (same "
            f"label, score within {SCORE_ATOL:.0e}, box within {BOX_ATOL} px); the first: "
            f"label {int(reference['labels'][first])}, score "
            f"{float(reference['scores'][first]):.4f}, nearest box {gaps[first]:.3g} px away"
        ]  # fmt: skip
    if ties:
        summary += f" ({len(ties)} near-tie{'s' if len(ties) > 1 else ''}: another box kept)"
    paired = torch.tensor([index not in ties for index in range(count)], dtype=torch.bool)
    matched = matched[paired]  # the ties' boxes (and masks) are not the same object's
    differences = {"boxes": max(compress(gaps, paired.tolist()), default=0.0)}
    differences["scores"] = largest_gap(reference["scores"][paired], output["scores"][matched])
    tolerances = {"boxes": BOX_ATOL, "scores": SCORE_ATOL}
    if "masks" in reference:
        differences["masks"] = largest_gap(reference["masks"][paired], output["masks"][matched])
        tolerances["masks"] = MASK_ATOL
    problems = [
        f"{name} differ by up to {value:.2e} (tolerance {tolerances[name]:.0e})"
        for name, value in differences.items()
        if value > tolerances[name]
    ]
    return summary, differences, tolerances, problems


def _is_tie(reference: dict, output: dict, index: int, partner: Tensor) -> bool:
    """Did onnxruntime keep, instead of reference detection `index`, a box of the same label
    (its partner) with a score tied within rounding, overlapping it or at the cut (see the
    module's notes)?"""
    score = float(reference["scores"][index])
    score_gap = abs(score - float(output["scores"][partner]))
    overlap = box_iou(reference["boxes"][index : index + 1], output["boxes"][partner][None])
    at_cut = score - float(reference["scores"].min()) <= TIE_SCORE_ATOL
    return score_gap <= TIE_SCORE_ATOL and (at_cut or float(overlap) >= TIE_MIN_IOU)


def pair_detections(
    reference: dict[str, Tensor], output: dict[str, Tensor]
) -> tuple[Tensor, list[float]]:
    """Pair each reference detection with an output one of the same label and a score
    within SCORE_ATOL, the nearest box first (the order of equal scores is arbitrary).

    Returns the index of each one's partner (N,) and the largest coordinate difference of
    their boxes (inf when none has its label and score).
    """
    # (N, 1, 4) - (1, N, 4) -> (N, N): the largest coordinate difference of every pair
    box_gaps = (reference["boxes"][:, None] - output["boxes"][None]).abs().amax(-1)
    same_label = reference["labels"][:, None] == output["labels"][None]
    close_score = (reference["scores"][:, None] - output["scores"][None]).abs() <= SCORE_ATOL
    box_gaps = torch.where(same_label & close_score, box_gaps, torch.inf)
    partners, gaps = [], []
    for row in box_gaps:
        row = row.clone()
        row[partners] = torch.inf  # each exported detection pairs once
        partner = int(row.argmin())
        partners.append(partner)
        gaps.append(float(row[partner]))
    return torch.tensor(partners, dtype=torch.int64), gaps


def largest_gap(reference: Tensor, output: Tensor) -> float:
    """The largest absolute difference of two tensors of one shape (0 when empty)."""
    return float((output - reference).abs().max()) if reference.numel() else 0.0


def _score_range(detections: dict[str, Tensor]) -> str:
    scores = detections["scores"]
    return f"{float(scores.min()):.4f}..{float(scores.max()):.4f}" if len(scores) else "none"

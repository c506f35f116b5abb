"""Selective search as the proposal generator of R-CNN and Fast R-CNN (R-CNN §2.1).

The proposals are not learned: about 2000 regions per image from `ops.selective_search`,
computed on the image as given to the model (its own pixels, not the network's resized and
normalised input) and mapped to the resized frame the RoI heads work in.

Computing them costs far more than a training step, so training and evaluation read them
from the targets: `target["proposals"]` (N, 4) xyxy in the pixels of the image given to the
model, computed once per image by `seglab.data.proposals` with the same settings
(`seglab.ops.selective_search.ProposalSettings`), moved with the image by the data
augmentation, resized with it by the model's transform. An image that comes without them
(`predict` on any image, or targets made by hand) gets them computed here; the result is
the same as the cache's for the same image.

`SelectiveSearchDetector.detect_with_proposals` takes the proposals from its caller instead,
in the pixels of each image: what the ONNX graph of R-CNN and Fast R-CNN computes
(`seglab.inference.export`), selective search (OpenCV, no tensor operation) running outside
it, in `seglab.inference.onnx_model.OnnxModel` with these same settings.
"""

from __future__ import annotations

from torch import Tensor, nn

from seglab.models.detection.transform import ImageBatch
from seglab.models.detection.two_stage import TwoStageDetector
from seglab.ops.selective_search import ProposalSettings, selective_search
from seglab.structures.boxes import clip_boxes, remove_small_boxes


class SelectiveSearchProposals(nn.Module):
    """Proposals of each image: given in its target, else computed by selective search.

    Args:
        settings: mode, search scale, minimum size and maximum count of the proposals.
    """

    min_box_size = 1e-3  # as the RPN: a proposal of (almost) no area is no region

    def __init__(self, settings: ProposalSettings):
        super().__init__()
        self.settings = settings

    def forward(
        self, batch: ImageBatch, features: dict[str, Tensor], targets: list[dict] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Per image (P_i, 4) proposals in the resized frame, clipped; no losses."""
        proposals = []
        for index in range(len(batch.image_sizes)):
            given = targets[index].get("proposals") if targets is not None else None
            if given is None:
                boxes = batch.to_resized_frame(self.search(batch.original_images[index]), index)
            else:  # already resized with the image by the transform
                boxes = given
            proposals.append(self._regions(boxes, batch, index))
        return proposals, {}

    def given(self, batch: ImageBatch, boxes_per_image: list[Tensor]) -> list[Tensor]:
        """Proposals from the caller, per image (N_i, 4) xyxy in its pixels (as `search`
        returns them) -> per image (P_i, 4) in the resized frame, as `forward` returns them."""
        return [
            self._regions(batch.to_resized_frame(boxes, index), batch, index)
            for index, boxes in enumerate(boxes_per_image)
        ]

    def _regions(self, boxes: Tensor, batch: ImageBatch, index: int) -> Tensor:
        """(N, 4) boxes in the resized frame of image `index` -> clipped, tiny ones dropped."""
        boxes = clip_boxes(boxes.to(batch.tensors), batch.image_sizes[index])
        return boxes[remove_small_boxes(boxes, self.min_box_size)]

    def search(self, image: Tensor) -> Tensor:
        """(C, H, W) float image in [0, 1] -> (N, 4) xyxy proposals in its pixels."""
        return selective_search(image, **self.settings.search_arguments())

    def extra_repr(self) -> str:
        return self.settings.describe()


class SelectiveSearchDetector(TwoStageDetector):
    """R-CNN and Fast R-CNN: a `TwoStageDetector` whose proposal generator is
    `SelectiveSearchProposals`, and which also detects with proposals given by its caller."""

    def detect_with_proposals(self, images: list[Tensor], proposals: list[Tensor]) -> list[dict]:
        """Eval mode: `forward`'s detections with these regions instead of selective search's.

        Args:
            images: float (C, H, W) images in [0, 1].
            proposals: per image (N_i, 4) float xyxy in its pixels.

        Returns:
            One dict per image as `forward` (boxes, labels, scores), equal to `forward`'s
            when the proposals are `proposal_generator.search(image)`.
        """
        if self.training:
            raise ValueError("detect_with_proposals runs in eval mode: call model.eval()")
        batch, _ = self.transform(images)
        features = self.backbone(batch.tensors)
        regions = self.proposal_generator.given(batch, proposals)
        detections, _ = self.roi_heads(features, regions, batch.image_sizes)
        return self._postprocess(detections, batch.image_sizes, batch.original_sizes)

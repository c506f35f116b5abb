"""Selective search as the proposal generator of R-CNN and Fast R-CNN (R-CNN §2.1).

The proposals are not learned: about 2000 regions per image from `ops.selective_search`,
computed on the image as given to the model (its own pixels, not the network's resized and
normalised input) and mapped to the resized frame the RoI heads work in.

Computing them costs far more than a training step, so training and evaluation read them
from the targets: `target["proposals"]` (N, 4) xyxy in the pixels of the image given to the
model, computed once per image by `seglab.data.proposals` with the same settings
(`ProposalSettings`), moved with the image by the data augmentation, resized with it by the
model's transform. An image that comes without them (`predict` on any image, or targets made
by hand) gets them computed here; the result is the same as the cache's for the same image.
"""

from __future__ import annotations

from torch import Tensor, nn

from seglab.data.proposals import ProposalSettings
from seglab.models.detection.transform import ImageBatch
from seglab.ops.selective_search import selective_search
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
        for index, image_size in enumerate(batch.image_sizes):
            given = targets[index].get("proposals") if targets is not None else None
            if given is None:
                boxes = batch.to_resized_frame(self.search(batch.original_images[index]), index)
            else:  # already resized with the image by the transform
                boxes = given
            boxes = clip_boxes(boxes.to(batch.tensors), image_size)
            proposals.append(boxes[remove_small_boxes(boxes, self.min_box_size)])
        return proposals, {}

    def search(self, image: Tensor) -> Tensor:
        """(C, H, W) float image in [0, 1] -> (N, 4) xyxy proposals in its pixels."""
        settings = self.settings
        return selective_search(
            image, mode=settings.mode, scale=settings.scale, min_size=settings.min_size,
            max_proposals=settings.max_proposals,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return self.settings.describe()

"""The box head's fc6 and fc7 replaced at test time by their truncated SVD (Fast R-CNN
§3.1): exact at full rank, thinner and approximate below it, recomputed when the weights
change, never used in training. (Its loss and outputs against torchvision: test_heads.py.)"""

from __future__ import annotations

import torch

from seglab.models.detection.box_head import TwoMLPHead, postprocess_boxes, truncated_svd
from seglab.structures.boxes import BoxCoder


def test_truncated_svd_at_full_rank_equals_the_dense_layers():
    torch.manual_seed(0)
    pooled = torch.randn(10, 4, 3, 3)
    dense = TwoMLPHead(36, 20)
    full = TwoMLPHead(36, 20, svd_ranks=(20, 20))
    full.load_state_dict(dense.state_dict())
    dense.eval(), full.eval()
    expected = dense(pooled)
    # fp32 SVD reconstructs W to ~1e-6 of its norm; outputs are O(1)
    torch.testing.assert_close(full(pooled), expected, rtol=1e-5, atol=1e-5)
    first, second = truncated_svd(dense.fc6.weight.detach(), rank=5)
    assert first.shape == (5, 36) and second.shape == (20, 5)  # 36*20 -> 5*(36+20) weights
    low = TwoMLPHead(36, 20, svd_ranks=(5, 5))
    low.load_state_dict(dense.state_dict())
    assert not torch.allclose(low.eval()(pooled), expected, atol=1e-3)  # truncation shows
    assert torch.equal(low.train()(pooled), dense.train()(pooled))  # training: dense layers


def test_truncated_svd_follows_the_weights():
    torch.manual_seed(0)
    head = TwoMLPHead(12, 6, svd_ranks=(6, 6)).eval()
    pooled = torch.randn(3, 12)
    head(pooled)
    with torch.no_grad():
        head.fc7.weight.mul_(2)  # e.g. an optimizer step or a loaded checkpoint
    dense = torch.relu(head.fc7(torch.relu(head.fc6(pooled))))
    torch.testing.assert_close(head(pooled), dense, rtol=1e-5, atol=1e-5)


def test_nms_runs_per_class():
    """Post-processing suppresses overlapping boxes of one class only (per-class NMS, as
    R-CNN §2.2 and torchvision): a box of another class that overlaps a better one stays."""
    proposals = torch.tensor([[10.0, 10.0, 50.0, 50.0],  # class 1, the best
                              [12.0, 12.0, 52.0, 52.0],  # class 2, IoU 0.82 with the first
                              [11.0, 11.0, 51.0, 51.0]])  # class 1 again: a duplicate  # fmt: skip
    class_logits = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 4.5], [0.0, 4.0, 0.0]])
    box_deltas = torch.zeros(3, 3 * 4)  # the detections are the proposals themselves
    boxes, scores, labels = postprocess_boxes(
        class_logits, box_deltas, proposals, (64, 64), box_coder=BoxCoder(),
        score_thresh=0.5, nms_thresh=0.5, detections_per_img=10,
    )  # fmt: skip
    assert labels.tolist() == [1, 2]
    torch.testing.assert_close(boxes, proposals[:2])
    assert scores[0] > scores[1] > 0.5

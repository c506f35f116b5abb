"""Time the readable plain-PyTorch references of the detection ops against torchvision's
compiled kernels (the fast paths the models use).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ops_reference_vs_kernel.py

Prints one line per op: median milliseconds of each and the ratio reference / kernel.
"""

from __future__ import annotations

import statistics
import time

import torch

from seglab.ops import (
    nms,
    nms_reference,
    roi_align,
    roi_align_reference,
    roi_pool,
    roi_pool_reference,
)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    # One FPN level of a batch of 2 images at stride 4 (200 px), 256 RoIs, as in a box head.
    features = torch.randn(2, 256, 50, 50)
    top_left = torch.rand(256, 2) * 150
    boxes = torch.cat((top_left, top_left + torch.rand(256, 2) * 80 + 4), dim=1)
    rois = torch.cat((torch.randint(0, 2, (256, 1)).float(), boxes), dim=1)
    # RPN-sized NMS: 2000 boxes.
    corners = torch.rand(2000, 2) * 500
    nms_boxes = torch.cat((corners, corners + torch.rand(2000, 2) * 100 + 5), dim=1)
    scores = torch.rand(2000)

    cases = [
        (
            "roi_align 256 RoIs, C=256, 7x7, ratio 2",
            lambda: roi_align(features, rois, 7, 0.25, 2, False),
            lambda: roi_align_reference(features, rois, 7, 0.25, 2, False),
        ),
        (
            "roi_pool 256 RoIs, C=256, 7x7",
            lambda: roi_pool(features, rois, 7, 0.25),
            lambda: roi_pool_reference(features, rois, 7, 0.25),
        ),
        (
            "nms 2000 boxes, IoU 0.7",
            lambda: nms(nms_boxes, scores, 0.7),
            lambda: nms_reference(nms_boxes, scores, 0.7),
        ),
    ]
    print(f"{'op':<40} {'kernel ms':>10} {'reference ms':>13} {'ratio':>7}")
    for name, kernel, reference in cases:
        kernel_ms, reference_ms = median_ms(kernel, 5), median_ms(reference, 3)
        print(
            f"{name:<40} {kernel_ms:>10.1f} {reference_ms:>13.1f} {reference_ms / kernel_ms:>6.1f}x"
        )


if __name__ == "__main__":
    main()

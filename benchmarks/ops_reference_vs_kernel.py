"""Time the readable plain-PyTorch references of the detection ops against torchvision's
compiled kernels, and RoIAlign's CPU path (`roi_align_sparse`, what the models run on a
CPU) against the kernel, forward and forward + backward.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ops_reference_vs_kernel.py

Prints one line per op: median milliseconds of each and the ratio.
"""

from __future__ import annotations

import statistics
import time

import torch
import torchvision

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
            lambda: torchvision.ops.roi_align(features, rois, (7, 7), 0.25, 2, False),
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
    print()
    print(f"{'RoIAlign, one FPN level (2 x 256 x 128 x 128)':<48} {'kernel ms':>10} "
          f"{'sparse ms':>10} {'ratio':>7}")  # fmt: skip
    for name, kernel, sparse in sparse_cases():
        kernel_ms, sparse_ms = median_ms(kernel, 5), median_ms(sparse, 5)
        print(f"{name:<48} {kernel_ms:>10.1f} {sparse_ms:>10.1f} {sparse_ms / kernel_ms:>6.2f}x")


def sparse_cases() -> list[tuple[str, object, object]]:
    """RoIAlign of 512 random regions (4-64 px) from a stride-4 level of 2 images, ratio 2
    (torchvision's detectors), forward alone and forward + backward to the features."""
    features = torch.randn(2, 256, 128, 128).contiguous(memory_format=torch.channels_last)
    top_left = torch.rand(512, 2) * 400
    boxes = torch.cat((top_left, top_left + torch.rand(512, 2) * 60 + 4), dim=1)
    rois = torch.cat((torch.randint(0, 2, (512, 1)).float(), boxes), dim=1)
    trainable = features.clone().requires_grad_(True)
    upstream = torch.randn(512, 256, 7, 7)

    def kernel() -> torch.Tensor:
        return torchvision.ops.roi_align(trainable, rois, (7, 7), 0.25, 2, False)

    def sparse() -> torch.Tensor:
        return roi_align(trainable, rois, 7, 0.25, 2, False)  # the CPU path

    def with_backward(align):
        return lambda: torch.autograd.grad(align(), trainable, upstream)

    return [
        ("512 RoIs, 7x7, ratio 2: forward", lambda: kernel().detach(), lambda: sparse().detach()),
        ("512 RoIs, 7x7, ratio 2: forward + backward", with_backward(kernel),
         with_backward(sparse)),
    ]  # fmt: skip


if __name__ == "__main__":
    main()

"""Inference speed of our Faster / Mask R-CNN against torchvision's, on the same weights.

Rerun: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detection_vs_torchvision.py`.
Builds torchvision's R50-FPN model (random init, fixed seed), converts its state dict with
`seglab.models.detection.convert`, checks that both give the same detections, then times
eval-mode forwards on three scikit-image photographs (320 px), alternating the two models
so that a change of machine load hits both. Prints the median seconds per batch, the ratio
ours / torchvision (below 1 = we are faster), and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import skimage.data
import torch
import torch.nn.functional as F
from torchvision.models import detection

from seglab.models.detection.convert import convert_torchvision

BUILDERS = {
    "faster_rcnn_resnet50_fpn": detection.fasterrcnn_resnet50_fpn,
    "mask_rcnn_resnet50_fpn": detection.maskrcnn_resnet50_fpn,
}


def photographs(size: int) -> list[torch.Tensor]:
    images = []
    for name in ("astronaut", "coffee", "chelsea"):
        image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
        scale = size / max(image.shape[-2:])
        images.append(F.interpolate(image[None], scale_factor=scale, mode="bilinear")[0])
    return images


def time_pair(arch: str, images: list[torch.Tensor], repeats: int, size: int) -> dict:
    torch.manual_seed(0)
    reference = BUILDERS[arch](
        weights=None, weights_backbone=None, num_classes=5, min_size=size, max_size=size
    ).eval()
    ours = convert_torchvision(
        reference.state_dict(), arch, frozen_bn_eps=1e-5, min_size=size, max_size=size
    )
    timings: dict[str, list[float]] = {"torchvision": [], "seglab": []}
    with torch.no_grad():
        expected, actual = reference(images), ours(images)
        for want, got in zip(expected, actual, strict=True):
            assert torch.equal(want["labels"], got["labels"]), "outputs differ"
        for _ in range(repeats):
            for name, model in (("torchvision", reference), ("seglab", ours)):
                started = time.perf_counter()
                model(images)
                timings[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    return {**medians, "ratio": medians["seglab"] / medians["torchvision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    images = photographs(args.size)
    load_before = os.getloadavg()[0]
    rows = {arch: time_pair(arch, images, args.repeats, args.size) for arch in BUILDERS}
    load_after = os.getloadavg()[0]
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cores {os.cpu_count()}, "
          f"load average before {load_before:.2f}, after {load_after:.2f}")  # fmt: skip
    print(f"{'model':28s} {'torchvision s':>14s} {'seglab s':>10s} {'seglab / torchvision':>21s}")
    for arch, row in rows.items():
        print(f"{arch:28s} {row['torchvision']:14.3f} {row['seglab']:10.3f} {row['ratio']:21.2f}")


if __name__ == "__main__":
    main()

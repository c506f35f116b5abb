"""Time the shapes generator and COCO item loading against torchvision's COCO dataset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_loading.py [--images 1000] [--out DIR]

1. `generate_shapes` (instance task, 256 px): seconds per 1,000 images (wall and CPU time).
2. Reading every training item with masks decoded, no augmentation: seglab's `CocoDataset`
   (eval pipeline) against the peer `torchvision.datasets.CocoDetection` wrapped with
   `wrap_dataset_for_transforms_v2` (boxes, labels, masks, image_id), images per second.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import torch
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from seglab.data import DataConfig, build_dataset
from seglab.data.shapes import generate_shapes


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _read_all(dataset) -> int:
    objects = 0
    for index in range(len(dataset)):
        _, target = dataset[index]
        # torchvision's wrapper leaves out "labels" for an image without annotations.
        objects += len(target.get("labels", ()))
    return objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--out", default=None, help="folder for the data (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(args.out or temporary) / "shapes"
        _, wall, cpu = _timed(lambda: generate_shapes(root, train=args.images, val=0, size=256))
        per_1000 = 1000 / args.images
        print(
            f"generate_shapes: {args.images} images in {wall:.1f} s wall, {cpu:.1f} s CPU "
            f"({wall * per_1000:.1f} s wall per 1,000)"
        )

        ours = build_dataset(DataConfig(root=str(root)), "train", task="instance", train=False)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress prints
            coco = CocoDetection(
                str(root / "train"),
                str(root / "train.json"),
                transforms=v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]),
            )
        peer = wrap_dataset_for_transforms_v2(
            coco, target_keys=("boxes", "labels", "masks", "image_id")
        )
        ours_objects, ours_wall, _ = _timed(lambda: _read_all(ours))
        peer_objects, peer_wall, _ = _timed(lambda: _read_all(peer))
        assert ours_objects == peer_objects, (ours_objects, peer_objects)
        print(
            f"read {len(ours)} items ({ours_objects} objects): seglab {len(ours) / ours_wall:.0f}"
            f" img/s, torchvision {len(ours) / peer_wall:.0f} img/s, "
            f"seglab / torchvision time {ours_wall / peer_wall:.2f}"
        )


if __name__ == "__main__":
    main()

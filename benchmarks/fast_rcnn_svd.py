"""Truncated SVD of fc6 and fc7 at test time (Fast R-CNN §3.1): its speed gain and AP cost.

Rerun: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fast_rcnn_svd.py RUN/model.safetensors
--data DATA [--ranks 64,32 32,16 ...]` with a Fast R-CNN trained by `seglab train
fast_rcnn_r18_c4_shapes` (its proposals cached beside DATA). For the dense model and each
(fc6 rank, fc7 rank): the val box AP (seglab's evaluation, pycocotools), the seconds per
image of the fc layers alone (`roi_heads.box_head`, timed with forward hooks) and of the
whole forward, and the fc layers' weights. The paper keeps 1024 of fc6's and 256 of fc7's
singular values with VGG16 (25088 x 4096 and 4096 x 4096): -0.3 mAP, 30% less detection
time, the fc layers being 45% of it. Here fc6 is small (C4 x 7 x 7 -> 256), so the layers it
thins are a small part of the time: the ratio of fc seconds shows the gain the paper
describes, the ratio of total seconds what it buys here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

import seglab
from seglab.data import DataConfig, build_dataset
from seglab.evaluation import evaluate
from seglab.models.zoo import build_from_card, data_proposals


def with_svd(path: str, ranks: tuple[int, int] | None) -> torch.nn.Module:
    """The saved model rebuilt with `fc_svd_ranks=ranks` (same weights)."""
    dense = seglab.load_model(path)
    arguments = {**dense.card.arch_args, "fc_svd_ranks": ranks}
    model = build_from_card(dataclasses.replace(dense.card, arch_args=arguments))
    model.load_state_dict(dense.state_dict())
    return model.eval()


class StopWatch:
    """Seconds spent in a module's forwards, from a pre-hook and a hook."""

    def __init__(self, module: torch.nn.Module):
        self.seconds, self._start = 0.0, 0.0
        module.register_forward_pre_hook(self._begin)
        module.register_forward_hook(self._end)

    def _begin(self, *_) -> None:
        self._start = time.perf_counter()

    def _end(self, *_) -> None:
        self.seconds += time.perf_counter() - self._start


def timed(model: torch.nn.Module, dataset, images: int) -> tuple[float, float]:
    """Seconds per image of the fc layers and of the whole forward, over `images` images."""
    fc_layers = StopWatch(model.roi_heads.box_head)
    total = 0.0
    with torch.no_grad():
        for index in range(images):
            image, target = dataset[index]
            begin = time.perf_counter()
            model([image], [target])
            total += time.perf_counter() - begin
    return fc_layers.seconds / images, total / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--ranks", nargs="*", default=["128,64", "64,32", "32,16", "16,8"])
    parser.add_argument("--timed-images", type=int, default=50)
    args = parser.parse_args()
    dense = seglab.load_model(args.model)
    proposals = data_proposals(dense.card.arch, dense.card.arch_args)
    dataset = build_dataset(DataConfig(root=args.data), "val", task="detection", train=False,
                            proposals=proposals)  # fmt: skip
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| fc6, fc7 ranks | fc weights | box AP | fc s/image | total s/image |")
    print("|---|---|---|---|---|")
    for ranks in [None] + [tuple(int(r) for r in text.split(",")) for text in args.ranks]:
        model = with_svd(args.model, ranks)
        fc6, fc7 = model.roi_heads.box_head.fc6, model.roi_heads.box_head.fc7
        weights = sum(
            layer.weight.numel() if rank is None else rank * sum(layer.weight.shape)
            for layer, rank in zip((fc6, fc7), ranks or (None, None), strict=True)
        )
        box_ap = evaluate(model, dataset, batch_size=4)["bbox"]["AP"]
        fc_s, total_s = timed(model, dataset, args.timed_images)
        label = "dense" if ranks is None else f"{ranks[0]}, {ranks[1]}"
        print(f"| {label} | {weights:,} | {box_ap:.3f} | {fc_s:.5f} | {total_s:.4f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

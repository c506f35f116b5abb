"""`seglab proposals`: precompute the selective-search cache of a COCO split (R-CNN, Fast R-CNN).

seglab proposals DATA --split train [--mode fast|quality|single --scale PX --min-size PX
                                     --max N --workers N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from seglab.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "proposals",
        help="precompute selective-search proposals of a COCO split (R-CNN, Fast R-CNN)",
        description="Run selective search on every image of DATA's split that is not cached "
        "yet, in parallel over images, and keep the boxes in "
        "DATA/proposals/<split>-<settings>.npz (what R-CNN and Fast R-CNN read). Prints the "
        "mean number of proposals per image and their recall of the ground-truth boxes at "
        "IoU 0.5 and 0.7: the most a detector that scores them can find.",
    )
    parser.add_argument("data", metavar="DATA", help="COCO dataset root (DATA/<split>.json)")
    parser.add_argument("--split", default="train", help="split (default: train)")
    parser.add_argument(
        "--mode",
        choices=("fast", "quality", "single"),
        default="fast",
        help="selective search strategy (default: fast, R-CNN's)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        metavar="PX",
        help="resize each image to this short side before the search (default: as it is)",
    )
    parser.add_argument(
        "--min-size", type=float, default=0.0, metavar="PX", help="drop smaller boxes (0)"
    )
    parser.add_argument(
        "--max", type=int, default=2000, metavar="N", help="proposals kept per image (2000; 0: all)"
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="processes (default: one per CPU core)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.data.proposals import proposal_recall, read_split, update_cache
    from seglab.files import check_output_folder
    from seglab.ops.selective_search import ProposalSettings

    root = Path(args.data)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    check_output_folder(root / "proposals", "DATA")  # where the cache goes: before any work
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers {args.workers}: must be >= 0")
    settings = ProposalSettings(
        mode=args.mode, scale=args.scale, min_size=args.min_size, max_proposals=args.max or None
    )
    split = read_split(root, args.split)
    started = time.perf_counter()
    update = update_cache(root, args.split, None, settings, workers=args.workers)
    seconds = time.perf_counter() - started
    counts = [len(boxes) for boxes in update.proposals.values()]
    recall = proposal_recall(update.proposals, split.gt_boxes, iou=(0.5, 0.7))
    objects = sum(len(boxes) for boxes in split.gt_boxes.values())
    print(
        f"{args.split}: {len(counts)} images, {update.computed} computed, "
        f"{len(counts) - update.computed} from the cache, {seconds:.1f} s "
        f"({settings.describe()})"
    )
    print(f"cache: {update.cache_path}")
    print(
        f"proposals per image: {sum(counts) / len(counts):.1f} mean "
        f"(min {min(counts)}, max {max(counts)})"
    )
    print(
        f"recall of {objects} ground-truth boxes: {_fraction(recall[0.5])} at IoU 0.5, "
        f"{_fraction(recall[0.7])} at IoU 0.7"
    )
    return 0


def _fraction(value: float) -> str:
    return "n/a" if value < 0 else f"{value:.3f}"

"""Time `seglab.evaluation.coco.evaluate_coco` (in-memory dicts) against pycocotools run the
standard way (results written to JSON, `COCO(file)`, `loadRes(file)`, `COCOeval`), on the
same random prediction set, and check that the two give the same numbers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_coco_vs_pycocotools.py [--images 300]

Prints, per IoU type, the median seconds of each path, their ratio, and the largest
difference between the six AP numbers (must be 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "evaluation"))
from synthetic_coco import make_gt, make_predictions, pycocotools_stats, write_json  # noqa: E402

from seglab.evaluation.coco import AP_NAMES, evaluate_coco  # noqa: E402


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt = make_gt(0, num_images=args.images, image_size=(256, 256))
    predictions = make_predictions(gt, 0, masks=True)
    print(f"{args.images} images, {len(gt['annotations'])} objects, {len(predictions)} results")
    print(f"{'iou':<6}{'pycocotools s':>15}{'seglab s':>10}{'seglab/peer':>13}{'max |diff|':>12}")
    with tempfile.TemporaryDirectory() as folder:
        # The peer reads the results from the file it is given, as users run it.
        gt_path, pred_path = write_json(Path(folder), gt, predictions)
        for iou_type in ("bbox", "segm"):
            peer = partial(pycocotools_stats, gt_path, pred_path, iou_type)
            peer_s, reference = median_seconds(peer, args.repeats)
            ours_s, ours = median_seconds(
                partial(evaluate_coco, gt, predictions, iou_type), args.repeats
            )
            ours = [ours[name] for name in AP_NAMES]
            difference = max(abs(a - b) for a, b in zip(ours, reference, strict=True))
            print(
                f"{iou_type:<6}{peer_s:>15.3f}{ours_s:>10.3f}{ours_s / peer_s:>13.2f}"
                f"{difference:>12.1e}"
            )


if __name__ == "__main__":
    main()

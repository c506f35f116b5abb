"""`seglab rcnn-svm`: R-CNN's second stage as the paper trains it, after the CNN (§2.3,
appendix C): per-class linear SVMs on fc7 with hard-negative mining and ridge box
regressors on pool5, fitted on the training split and written into a copy of the model.

seglab rcnn-svm RUN/model.safetensors --out SVM.safetensors [--data DIR] [--split train]
                [--max-images N]

The model must have been built with `model.second_stage: svm` (the `rcnn_*_paper` recipe);
its detections then come from the SVMs (`seglab eval SVM.safetensors`).
"""

from __future__ import annotations

import argparse
import time


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rcnn-svm",
        help="fit R-CNN's SVMs and box regressors after the CNN (the paper's second stage)",
        description="Fit R-CNN's per-class linear SVMs on fc7 features (positives: the "
        "ground-truth boxes; negatives: regions of IoU < 0.3, hard-negative mined) and its "
        "class-specific ridge box regressors on pool5 features (regions of IoU > 0.6), on "
        "the training split, and write the model with them. The model needs "
        "model.second_stage: svm (rcnn_r18_c4_shapes_paper).",
    )
    parser.add_argument("model", metavar="MODEL", help="a trained R-CNN (model.safetensors)")
    parser.add_argument("--out", required=True, metavar="FILE", help="model file to write")
    parser.add_argument("--data", metavar="DIR", help="dataset (default: the model's own)")
    parser.add_argument("--split", default="train", help="split to fit on (default: train)")
    parser.add_argument(
        "--max-images", type=int, metavar="N", help="fit on the first N images (default: all)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.data import build_dataset
    from seglab.errors import UserError, require_file
    from seglab.evaluation.saved import model_data_config
    from seglab.models.detection.rcnn_svm import fit_rcnn_svms
    from seglab.models.zoo import data_proposals, load_model, save_model
    from seglab.progress import progress, status

    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images {args.max_images}: must be >= 1")
    model = load_model(args.model)
    card = model.card
    if card.arch != "rcnn" or getattr(model.roi_heads, "box_svm", None) is None:
        raise UserError(f"{args.model}: not an R-CNN built with model.second_stage: svm; "
                        "train one (rcnn_r18_c4_shapes_paper) or set it")  # fmt: skip
    root = require_file(args.data, "data folder") if args.data is not None else None
    data_config = model_data_config(card.config, root, args.split, args.model)
    dataset = build_dataset(data_config, args.split, task=model.task, train=False,
                            proposals=data_proposals(card.arch, card.arch_args))  # fmt: skip
    count = min(len(dataset), args.max_images or len(dataset))
    started = time.perf_counter()
    status(f"rcnn-svm: fc7 and pool5 of every region of {count} images, then per-class SVMs "
           "(hard-negative mining) and ridge box regressors: minutes")  # fmt: skip
    samples = progress((dataset[index] for index in range(count)), desc="features",
                       total=count, unit="image")  # fmt: skip
    summary = fit_rcnn_svms(model, samples)
    save_model(model, args.out)
    print(f"fitted on {summary['images']} images, {summary['regions']} regions, "
          f"{summary['regression_pairs']} regression pairs in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    for label, name in enumerate(card.class_names or [], start=1):
        print(f"  {name}: {summary[f'class_{label}_positives']} positives, "
              f"{summary[f'class_{label}_negatives_cached']} hard negatives cached")  # fmt: skip
    print(f"wrote {args.out}")
    return 0

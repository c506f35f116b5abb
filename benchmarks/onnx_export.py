"""ONNX export of each shipped recipe's model: export time, and onnxruntime against PyTorch.

Rerun: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/onnx_export.py [--out DIR]
[--recipes NAME ...]`. Each recipe's `model:` section is built with fresh weights (3 object
classes), exported with
`seglab.inference.export.export_onnx` (which checks onnxruntime against PyTorch on a
synthetic image at the recipe's `data.image_size` (256 px, the shapes data's size, for the
detectors, which resize inside) and on that image resized by 0.75 x 1.25)
and its report printed: export seconds, the largest differences, and the best of two runs
of each engine per image (after a warm-up), on the CPU, one thread. Untrained detectors keep
up to `detections_per_img` low-score boxes, more than a trained one, so their post-processing
(NMS, mask pasting) is timed at its heaviest. R-CNN and Fast R-CNN: both engines run with
the same selective-search proposals (the graph's second input), whose time is printed apart.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import yaml

import seglab
from seglab.engine.config import recipes_dir
from seglab.inference.export import export_onnx, synthetic_image

# The detector recipes' `auto` options as `seglab train` plans them on the shapes
# (seglab.data.box_fingerprint): a model built without data needs numbers.
SHAPES_PLAN = {
    "min_size": 192, "max_size": 192, "anchor_sizes": [16, 32, 64, 128, 256],
    "aspect_ratios": [0.5, 1.0, 2.0], "detections_per_img": 100, "box_batch_size_per_image": 128,
    "rpn_post_nms_top_n_train": 300,
}  # fmt: skip
RECIPES = {
    "cnn_shapes": {},
    "unet_shapes": {},
    "unet_shapes (valid padding)": {"padding": "valid", "depth": 4},
    "faster_rcnn_r18_fpn_shapes": {**SHAPES_PLAN, "rpn_post_nms_top_n_test": 150},
    "mask_rcnn_r18_fpn_shapes": {**SHAPES_PLAN, "rpn_post_nms_top_n_test": 300},
    "rcnn_r18_c4_shapes": {},
    "fast_rcnn_r18_c4_shapes": {},
}


def build(recipe: str, overrides: dict) -> tuple[torch.nn.Module, int]:
    """The recipe's model with fresh weights, and its data's image size."""
    config = yaml.safe_load((recipes_dir() / f"{recipe.split()[0]}.yaml").read_text())
    arguments = {key: value for key, value in config["model"].items() if key != "name"}
    name = config["model"]["name"]
    arguments["num_classes"] = 3 if name == "cnn" else 4  # 3 shapes (+ background)
    torch.manual_seed(0)
    model = seglab.build_model(name, **{**arguments, **overrides})
    return model.eval(), int(config["data"].get("image_size", 256))  # shapes: 256 px


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the .onnx files here")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), metavar="NAME",
                        help="only these (default: all): " + ", ".join(RECIPES))  # fmt: skip
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp())
    for recipe in args.recipes or RECIPES:
        overrides = RECIPES[recipe]
        model, size = build(recipe, overrides)
        image = synthetic_image(model.card.in_channels, (size, size * 4 // 3))
        path = folder / f"{recipe.split()[0]}{'_valid' if overrides else ''}.onnx"
        report = export_onnx(model, path, image=image)
        print(f"## {recipe}")
        print("\n".join(report.lines()))


if __name__ == "__main__":
    main()

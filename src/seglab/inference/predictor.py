"""`seglab predict`: run a saved model on image files and write what it sees.

Dispatch on `model.task`:

- classification: the top-k classes of each image (printed) -> `predictions.json`, a list of
  `{"file_name", "top_k": [{"label", "class", "score"}, ...]}`;
- detection / instance: `predictions.json` in the COCO results format (a list of
  `{"image_id", "category_id", "bbox" [x, y, w, h], "score"[, "segmentation" RLE]}`, ready
  for `seglab eval --pred`), where `image_id` is the image's running index in the order
  given, or, with a COCO ground truth (`gt_image_ids`), the id of its file there;
  `images.json` maps those ids to files (`[{"id", "file_name", "height", "width"}]`);
  `overlays/` holds the images with their boxes (and masks) drawn;
- semantic: the image is resized as in the model's evaluation (shortest side
  `data.image_size`), predicted tile by tile (`seglab.predict_tiled`, so any size fits in
  bounded memory; an image no larger than a tile goes whole), and the class probabilities
  are resized back to the image's size; then either
  - `masks/` holds one class-index PNG per image (0 background, the argmax of the class
    probabilities; a palette PNG, so viewers show the classes in colour), `overlays/` the
    class maps over the images, `predictions.json` the pixel
    share of each class; or, with `instances` ("components" or "watershed"),
  - the foreground probabilities are split into object instances
    (`seglab.inference.instances`) and written exactly as a detector's: COCO results in
    `predictions.json` (image ids as above, `gt_image_ids` included), `images.json`, and
    `overlays/` with the instances drawn, so that `seglab eval --gt --pred --iou-type segm`
    scores a U-Net on the same instance AP as Mask R-CNN.

Output files are named `<stem>.png` after their image; a stem seen before gets `-2`, `-3`,
... (`output_names`), so that equal names from different folders do not collide. Every
file is written atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import PIL.Image
import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from seglab.data.config import DataConfig
from seglab.data.images import IMAGE_SUFFIXES, load_image
from seglab.data.transforms import ResizeShortSide, build_transforms
from seglab.errors import UserError, read_json
from seglab.files import atomic_write_json
from seglab.progress import progress

DEFAULT_TILE_SIZE = 256  # semantic models: side of the tiles (`predict_tiled`'s default)
DEFAULT_OVERLAP = 32  # pixels shared by neighbouring tiles (same padding)


@dataclass
class Inputs:
    """The images to predict, and the files of the given folders that were skipped."""

    images: list[Path] = field(default_factory=list)
    explicit: set[Path] = field(default_factory=set)  # files named on the command line
    skipped: list[str] = field(default_factory=list)  # "<path>: <why>"


def collect_inputs(paths: list[str | Path]) -> Inputs:
    """Files and folders (searched recursively) -> image files; non-images are skipped in a
    folder but refused when named explicitly."""
    inputs = Inputs()
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path}: not found; give image files or folders")
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                known = ", ".join(sorted(IMAGE_SUFFIXES))
                raise UserError(f"{path}: not an image file (known suffixes: {known})")
            inputs.images.append(path)
            inputs.explicit.add(path)
            continue
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                inputs.images.append(file)
            else:
                inputs.skipped.append(f"{file}: not an image, skipped")
    if not inputs.images:
        raise UserError(f"{', '.join(map(str, paths))}: no image files found")
    return inputs


def gt_image_ids(gt_path: str | Path, images: list[Path]) -> list[int]:
    """The id of each of `images` in the COCO ground truth `gt_path`.

    An image matches the entry whose `file_name` (relative to the split folder in the COCO
    layout, e.g. `000001.png` or `sub/x.png`) ends its path; failing that, the one entry with
    its base name. An image that matches no entry is a UserError.
    """
    entries = _gt_images(gt_path)
    by_parts = {PurePosixPath(e["file_name"]).parts: e["id"] for e in entries}
    by_name: dict[str, list[int]] = {}
    for entry in entries:
        by_name.setdefault(PurePosixPath(entry["file_name"]).name, []).append(entry["id"])
    ids = []
    for path in images:
        suffixes = (path.parts[-n:] for n in range(len(path.parts), 0, -1))
        found = next((by_parts[tail] for tail in suffixes if tail in by_parts), None)
        if found is None and len(by_name.get(path.name, [])) == 1:
            found = by_name[path.name][0]
        if found is None and path.name in by_name:
            raise UserError(f"{path}: several images of the ground truth {gt_path} are named "
                            f"{path.name!r}; keep the folders of their 'file_name's in the "
                            "paths given")  # fmt: skip
        if found is None:
            raise UserError(f"{path}: not an image of the ground truth {gt_path} (no "
                            f"'file_name' ends with {path.name!r}); predict only its images "
                            "or leave out --gt")  # fmt: skip
        ids.append(found)
    return ids


def _gt_images(gt_path: str | Path) -> list[dict]:
    """The `images` entries of a COCO ground-truth file, each with `id` and `file_name`."""
    path = Path(gt_path)
    gt = read_json(path, "ground-truth file")
    entries = gt.get("images") if isinstance(gt, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "id" in e and isinstance(e.get("file_name"), str) for e in entries
    ):
        raise UserError(f"{path}: not a COCO ground truth (needs an 'images' list whose "
                        "entries have 'id' and 'file_name')")  # fmt: skip
    return entries


def read_image(
    path: Path, channels: int, inputs: Inputs, intensity: tuple[float, float] | None = None
) -> Tensor | None:
    """The image as datasets load it (`seglab.data.images`: EXIF orientation, 16-bit and
    float values to [0, 1], or the training data's `intensity` range, converted to the
    model's `channels`), (C, H, W) uint8 or float32; None (noted as skipped) for a broken
    file found in a folder."""
    try:
        return load_image(path, channels, intensity)
    except UserError:  # load_image names the file and the problem
        if path in inputs.explicit:
            raise
        inputs.skipped.append(f"{path}: not a readable image, skipped")
        return None


def preprocessor(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """Loaded image (uint8, or float32 in [0, 1]) -> the float (C, H, W) the model takes.

    A classifier gets the evaluation transform of its training data (resize to S x S), so
    `seglab predict` and `seglab eval` see the same pixels; detectors resize inside the
    model; semantic models resize (and tile) in `_segment`, which maps the result back.
    """
    data = _training_data(model)
    if model.task == "classification" and data:
        transform = build_transforms(DataConfig(**data), task="classification", train=False)
        return lambda image: transform(image).as_subclass(Tensor)
    return lambda image: TF.to_dtype(image, torch.float32, scale=True).as_subclass(Tensor)


@dataclass
class Prediction:
    """What one image gave: a line to print and its entries for the output files."""

    path: Path
    line: str
    record: Any = None  # the image's entry (classification, semantic) or COCO results


@dataclass(frozen=True)
class Job:
    """One image to predict: where it came from, its running index, id and output name."""

    path: Path
    index: int
    image_id: int  # the running index, or the image's id in the COCO ground truth
    out_dir: Path
    top_k: int
    score_threshold: float
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    instances: str | None = None  # semantic models: "components" / "watershed", or class maps
    name: str = ""  # output files' stem: the image's, "-2", "-3", ... after a repeated stem


def predict_files(
    model: nn.Module,
    inputs: Inputs,
    out_dir: Path,
    *,
    top_k: int = 3,
    score_threshold: float = 0.5,
    device: torch.device | str = "cpu",
    image_ids: list[int] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    instances: str | None = None,
    batch_size: int = 4,
) -> list[Prediction]:
    """Predict every image of `inputs`, write the outputs under `out_dir`, return the lines.

    Classifiers and detectors run `batch_size` images per forward pass (consecutive images
    of one size: a detector's padded batch then holds no padding that a single image would
    not have, so batching does not change its detections); semantic models batch the tiles
    of each image (`seglab.predict_tiled`).

    `image_ids` (one per image of `inputs`, see `gt_image_ids`) replace the running index as
    the COCO `image_id` of detectors and of `instances`. Semantic models only: `tile_size`
    (default 256) and `overlap` (default 32) as in `seglab.predict_tiled`; `instances`
    ("components" or "watershed") writes COCO instance results instead of class maps.
    """
    check_options(model, tile_size=tile_size, overlap=overlap, instances=instances,
                  gt=image_ids is not None)  # fmt: skip
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --out is a file; give a folder")
    tile_size = DEFAULT_TILE_SIZE if tile_size is None else tile_size
    overlap = min(DEFAULT_OVERLAP, tile_size // 4) if overlap is None else overlap
    image_ids = image_ids if image_ids is not None else list(range(len(inputs.images)))
    model = model.to(device).eval()
    channels = model.card.in_channels
    intensity = _training_intensity(model)  # the training data's range, if it had one
    prepare, names = preprocessor(model), output_names(inputs.images)
    predictions: list[Prediction] = []
    batch: list[tuple[Tensor, Job]] = []
    with torch.inference_mode():  # no autograd bookkeeping (no_grad still counts versions)
        for index, path in enumerate(progress(inputs.images, desc="predict", unit="image")):
            image = read_image(path, channels, inputs, intensity)
            if image is None:
                continue
            image = prepare(image).to(device)
            if batch and (len(batch) == batch_size or batch[0][0].shape != image.shape):
                predictions += _predict_batch(model, batch)
                batch = []
            batch.append((image, Job(path, index, image_ids[index], out_dir, top_k,
                                     score_threshold, tile_size, overlap, instances,
                                     names[index])))  # fmt: skip
        predictions += _predict_batch(model, batch)
    _write_summary(predictions, out_dir, coco=model.task != "classification" and
                   (model.task != "semantic" or instances is not None))  # fmt: skip
    return predictions


def check_options(
    model: nn.Module,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    instances: str | None = None,
    gt: bool = False,
) -> None:
    """Refuse options that do not fit the model's task (UserError, before any work)."""
    from seglab.inference.instances import METHODS

    task = model.task
    if instances is not None and task != "semantic":
        raise UserError(f"--instances: only semantic models (U-Net) are split into instances; "
                        f"this model's task is {task}, so leave out --instances")  # fmt: skip
    if instances is not None and instances not in METHODS:
        raise UserError(f"--instances {instances}: not one of {', '.join(METHODS)}")
    if (tile_size is not None or overlap is not None) and task != "semantic":
        raise UserError(f"--tile-size/--overlap: only semantic models are predicted in tiles; "
                        f"this model's task is {task}, so leave them out")  # fmt: skip
    size = DEFAULT_TILE_SIZE if tile_size is None else tile_size
    if size < 1 or (overlap is not None and not 0 <= overlap < size):
        raise UserError(f"--tile-size {size} --overlap {overlap}: need a tile size >= 1 and "
                        "0 <= overlap < tile size")  # fmt: skip
    if gt and task not in ("detection", "instance") and instances is None:
        hint = " (or add --instances)" if task == "semantic" else ""
        raise UserError(f"--gt: only detectors and --instances write COCO results; this "
                        f"model's task is {task}, so leave out --gt{hint}")  # fmt: skip


def output_names(images: list[Path]) -> list[str]:
    """The stem of each image's output files: its own, then `stem-2`, `stem-3`, ... for
    the next images of the same stem (from other folders or with other suffixes)."""
    seen: dict[str, int] = {}
    names = []
    for path in images:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names


def _predict_batch(model: nn.Module, batch: list[tuple[Tensor, Job]]) -> list[Prediction]:
    """One forward pass for the batch's images (semantic models: one image at a time)."""
    if model.task == "semantic":
        return [_segment(model, image, job) for image, job in batch]
    outputs = model([image for image, _ in batch]) if batch else []
    write = _PREDICTORS[model.task]
    pairs = zip(batch, outputs, strict=True)
    return [write(model, image, output, job) for (image, job), output in pairs]


def _classify(model: nn.Module, image: Tensor, output: dict[str, Tensor], job: Job) -> Prediction:
    probabilities = output["logits"].float().softmax(0)
    scores, labels = probabilities.topk(min(job.top_k, len(probabilities)))
    top = [
        {"label": int(label), "class": _class_name(model, int(label)), "score": float(score)}
        for score, label in zip(scores, labels, strict=True)
    ]
    line = ", ".join(f"{entry['class']} {entry['score']:.3f}" for entry in top)
    return Prediction(job.path, f"{job.path}: {line}", {"file_name": str(job.path), "top_k": top})


def _detect(model: nn.Module, image: Tensor, output: dict[str, Tensor], job: Job) -> Prediction:
    output = {key: value.cpu() for key, value in output.items()}
    return _detections(model, image, output, job)


def _detections(
    model: nn.Module, image: Tensor, output: dict[str, Tensor], job: Job, noun: str = "detections"
) -> Prediction:
    """COCO results, overlay and line of detector-style `output` (a detector's or instances)."""
    from seglab.data.coco_results import to_coco_results
    from seglab.inference.visualize import draw_detections, save_image

    results = to_coco_results([output], [job.image_id], _category_ids(model))
    overlay = draw_detections(
        image.cpu(), output, list(model.card.class_names), score_threshold=job.score_threshold
    )
    save_image(overlay, job.out_dir / "overlays" / f"{job.name}.png")
    kept = [result for result in results if result["score"] >= job.score_threshold]
    found = ", ".join(f"{_label_of(model, r)} {r['score']:.2f}" for r in kept[:10])
    line = f"{job.path}: {len(kept)} {noun} >= {job.score_threshold}"
    height, width = image.shape[-2:]
    entry = {"id": job.image_id, "file_name": str(job.path), "height": height, "width": width}
    return Prediction(
        job.path, f"{line} ({found})" if found else line, {"results": results, "image": entry}
    )


def _segment(model: nn.Module, image: Tensor, job: Job) -> Prediction:
    from seglab.inference.instances import instances_from_probabilities
    from seglab.inference.tiling import predict_tiled, resize_probabilities
    from seglab.inference.visualize import draw_semantic, save_image

    # At the scale of the model's training and evaluation (shortest side data.image_size),
    # then back to the image's size. One tile when the image fits in it; a valid-padding
    # U-Net is always tiled (its output is smaller than its input), with the tile rounded
    # down to an allowed input size.
    side = _training_short_side(model)
    scaled = image if side is None else ResizeShortSide(side)(image)
    probabilities = predict_tiled(model, scaled, tile_size=job.tile_size, overlap=job.overlap)
    probabilities = resize_probabilities(probabilities, image.shape[-2:])
    if job.instances is not None:
        output = instances_from_probabilities(probabilities, method=job.instances)
        return _detections(model, image, output, job, noun="instances")
    class_map = probabilities.argmax(0).to(torch.uint8)  # (H, W), 0 background
    save_image(palette_mask(class_map), job.out_dir / "masks" / f"{job.name}.png")
    overlay = draw_semantic(image.cpu(), class_map, list(model.card.class_names))
    save_image(overlay, job.out_dir / "overlays" / f"{job.name}.png")
    counts = torch.bincount(class_map.flatten().long(), minlength=probabilities.shape[0])
    shares = {
        (_class_name(model, label - 1) if label else "background"): count / class_map.numel()
        for label, count in enumerate(counts.tolist())
        if count
    }
    found = ", ".join(f"{n} {share:.1%}" for n, share in shares.items() if n != "background")
    record = {"file_name": str(job.path), "mask": f"masks/{job.name}.png", "class_share": shares}
    return Prediction(job.path, f"{job.path}: {found or 'background only'}", record)


def palette_mask(class_map: Tensor) -> PIL.Image.Image:
    """(H, W) uint8 class indices as a palette PNG: the pixel values are the classes, and
    viewers show them in the overlays' colours (background black, 255 "ignored" white)."""
    from seglab.inference.visualize import class_colour

    mask = PIL.Image.fromarray(class_map.cpu().numpy(), mode="P")
    colours = [(0, 0, 0), *(class_colour(label) for label in range(1, 255)), (255, 255, 255)]
    mask.putpalette([channel for colour in colours for channel in colour])
    return mask


_PREDICTORS = {  # how one image's output is written (semantic models: `_segment`)
    "classification": _classify,
    "detection": _detect,
    "instance": _detect,
}


def _write_summary(predictions: list[Prediction], out_dir: Path, *, coco: bool) -> None:
    if coco:
        results = [result for p in predictions for result in p.record["results"]]
        atomic_write_json(out_dir / "predictions.json", results)
        atomic_write_json(out_dir / "images.json", [p.record["image"] for p in predictions])
    else:
        atomic_write_json(out_dir / "predictions.json", [p.record for p in predictions])


def _training_data(model: nn.Module) -> dict | None:
    """The `data:` section the model was trained with; None for converted weights."""
    return model.card.data or None


def _training_intensity(model: nn.Module) -> tuple[float, float] | None:
    """The stored-value range the training images were read with (`data.intensity_range`,
    or the one measured from `data.intensity_percentiles`), or None."""
    data = _training_data(model)
    value = data.get("intensity_range") if data else None
    return tuple(value) if value is not None else None


def _training_short_side(model: nn.Module) -> int | None:
    """The shortest side a semantic model's images were resized to (`data.image_size`), or
    None for a model without its training config (converted weights: the image as it is)."""
    data = _training_data(model)
    return int(data["image_size"]) if data and "image_size" in data else None


def _class_name(model: nn.Module, index: int) -> str:
    names = model.card.class_names
    return names[index] if 0 <= index < len(names) else str(index)


def _category_ids(model: nn.Module) -> list[int]:
    """COCO category id of each label 1..K (the identity when not trained on COCO data)."""
    return model.card.label_category_ids()


def _label_of(model: nn.Module, result: dict) -> str:
    return _class_name(model, _category_ids(model).index(result["category_id"]))

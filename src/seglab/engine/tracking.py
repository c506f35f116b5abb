"""TensorBoard event files of a run (`train.tensorboard: true`), in `RUN/tensorboard/`.

What `metrics.jsonl` holds, as TensorBoard shows it: every training log line's losses (the
total and each component), learning rate and images/s under `train/`; every evaluation's
metrics under `val/` (`val/loss`, `val/bbox/AP`, ...) and the predictions drawn on the
first `OVERLAYS` validation images (`val/overlay/0`, ...). Open it with
`tensorboard --logdir RUN/tensorboard`. A resumed run drops the events its interrupted
session wrote after the checkpoint (`purge_step`), as `metrics.jsonl` drops those lines.
The writer is torch's (`torch.utils.tensorboard`), which needs the `tensorboard` package
(the `tensorboard` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seglab.errors import UserError
from seglab.inference.visualize import draw_detections, draw_semantic
from seglab.ops.windows import center_crop

TENSORBOARD_DIR = "tensorboard"
OVERLAYS = 3  # validation images drawn at each evaluation


class TensorBoardLog:
    """Scalars and images of one run, written as TensorBoard event files.

    Args:
        run_dir: the run folder; events go to `run_dir/tensorboard/`.
        start_step: the step the session starts from (events after it are dropped).
    """

    def __init__(self, run_dir: Path, start_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer imports the tensorboard package
            raise UserError(
                "train.tensorboard: true needs the tensorboard package; pip install "
                "'seglab[tensorboard]' or set train.tensorboard=false"
            ) from None
        purge = start_step + 1 if start_step > 0 else None
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=purge)

    def train(self, record: dict[str, Any]) -> None:
        """A `metrics.jsonl` training line: losses, `lr`, `images_per_s`."""
        for name, value in record.items():
            if name not in ("step", "split", "elapsed_s") and isinstance(value, int | float):
                self.writer.add_scalar(f"train/{name}", value, record["step"])
        self.writer.flush()

    def validation(self, step: int, metrics: dict[str, Any]) -> None:
        """Every number of an evaluation, nested names joined by `/` (`val/bbox/AP`)."""
        for name, value in _scalars(metrics):
            self.writer.add_scalar(f"val/{name}", value, step)
        self.writer.flush()

    def overlays(self, step: int, model: nn.Module, dataset: Any) -> None:
        """The model's predictions drawn on the first validation images (eval mode)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            for index in range(min(OVERLAYS, len(dataset))):
                image = dataset[index][0].as_subclass(torch.Tensor)
                drawn = _draw(model, image, model([image.to(device)])[0])
                if drawn is not None:
                    pixels = np.asarray(drawn)  # (H, W, 3) uint8
                    self.writer.add_image(f"val/overlay/{index}", pixels, step,
                                          dataformats="HWC")  # fmt: skip
        model.train(was_training)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _draw(model: nn.Module, image: torch.Tensor, output: dict[str, torch.Tensor]):
    """Detections or the class map over the image; None for a classifier (no overlay)."""
    names = list(model.card.class_names)
    output = {key: value.float().cpu() for key, value in output.items()}
    if model.task in ("detection", "instance"):
        return draw_detections(image.cpu(), output, names)
    if model.task == "semantic":
        logits = output["logits"]
        class_map = logits.argmax(0)  # (K, h, w) -> (h, w); a valid U-Net's h, w are smaller
        # a valid U-Net's output frame is the image's centre
        return draw_semantic(center_crop(image.cpu(), class_map.shape), class_map, names)
    return None


def _scalars(metrics: dict[str, Any], prefix: str = ""):
    """(name, number) pairs of nested metrics; lists, None and -1 (COCO's undefined) skipped."""
    for name, value in metrics.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool) and value != -1:
            yield f"{prefix}{name}", value

"""Our U-Net against segmentation_models_pytorch's `Unet`, at the same budget and loss.

Ours (`--ours`): `recipe` (default) is the `unet_shapes` recipe's model and data settings
(depth 5, base 8, `data.image_size: auto` planned from the training masks, 96 px crops, its
learning rate); `matched` is a U-Net of `--depth` poolings whose base is chosen to match smp's
parameter count (below). smp's model trains on the same batches, loss and schedule.

Two figures, ours and theirs measured in the same run:
- training throughput: forward + loss + backward images/s at 256 x 256 (`--size`), the two
  models measured in alternating rounds (median of the rounds), so both see the same load;
- accuracy: val mIoU after training each model for the same compute budget (`--minutes` of
  its own step time) on the same data, batches, loss (CE + Dice as in the recipe;
  `--weight-map` weights the CE by the paper's weight map), optimiser and
  time-based cosine schedule; the two trainings alternate step by step, again to share the
  load.

smp is a benchmark-only dependency (never imported by seglab):
    .venv/bin/pip install segmentation-models-pytorch
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/unet_vs_smp.py --out runs/unet_vs_smp.json

`--ours matched`: `--depth` poolings (default 6), `base_channels` chosen so that our
parameter count is closest to smp's whole model (encoder without pretrained weights,
`encoder_weights=None`). At a fixed parameter count a U-Net's cost per pixel falls with depth
(parameters grow as 4**depth * base**2, compute as (depth + 1) * base**2): depth 6 with
base 11 matches smp's resnet18 Unet (13.7M vs 14.3M parameters); depth 5 needs base 22.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from seglab.data import DataConfig, build_dataset, collate, plan_image_size
from seglab.data.shapes import generate_shapes
from seglab.engine.config import load_config
from seglab.evaluation import evaluate
from seglab.files import atomic_write_json
from seglab.models.inputs import Normalize
from seglab.models.segmentation.losses import segmentation_losses
from seglab.models.segmentation.unet import UNet
from seglab.ops.precision import autocast, full_precision

RECIPE = "unet_shapes"


class SmpSemantic(nn.Module):
    """smp's Unet behind seglab's semantic-model interface (same normalisation and loss)."""

    task = "semantic"

    def __init__(self, net: nn.Module, *, loss: str) -> None:
        super().__init__()
        self.net, self.loss = net, loss
        self.normalize = Normalize(3)

    def _logits(self, images) -> Tensor:
        """smp's encoders take sides divisible by 32: mirror-pad to that, crop back (as our
        same-padding U-Net does inside)."""
        batch = self.normalize(torch.stack([image.as_subclass(Tensor) for image in images]))
        height, width = batch.shape[-2:]
        pad_h, pad_w = -height % 32, -width % 32
        padded = F.pad(batch, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2),
                       mode="reflect")  # fmt: skip
        logits = full_precision(self.net(padded))  # float32 loss under bf16, as our U-Net
        return logits[..., pad_h // 2 : pad_h // 2 + height, pad_w // 2 : pad_w // 2 + width]

    def forward(self, images, targets=None):
        return [{"logits": logits} for logits in self._logits(images)]

    def forward_with_losses(self, images, targets):
        logits = self._logits(images)
        masks = torch.stack([target["semantic_mask"] for target in targets]).long()
        weight_maps = None
        if all("weight_map" in target for target in targets):
            weight_maps = torch.stack([target["weight_map"] for target in targets]).float()
        losses = segmentation_losses(logits, masks, weight_maps, kind=self.loss)
        return [{"logits": per_image} for per_image in logits], losses


def count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def build_pair(args, num_classes: int) -> tuple[nn.Module, nn.Module, dict]:
    import segmentation_models_pytorch as smp

    torch.manual_seed(args.seed)
    net = smp.Unet(encoder_name=args.encoder, encoder_weights=None, classes=num_classes)
    theirs = SmpSemantic(net, loss="ce+dice")
    target = count(theirs)
    if args.ours == "recipe":
        torch.manual_seed(args.seed)
        recipe_args = load_config(RECIPE).model.args
        ours = UNet(num_classes=num_classes, **recipe_args)
        settings = " ".join(f"{key}={value}" for key, value in recipe_args.items())
        info = {
            "ours": f"seglab UNet of the {RECIPE} recipe: {settings}",
            "theirs": f"smp.Unet encoder={args.encoder} (encoder_weights=None)",
            "params_ours": count(ours),
            "params_theirs": target,
            "params_theirs_encoder": count(net.encoder),
        }
        return ours, theirs, info

    def ours_with(base: int) -> UNet:
        return UNet(
            num_classes=num_classes, base_channels=base, depth=args.depth,
            upsampling=args.upsampling, norm="bn", loss="ce+dice",
        )  # fmt: skip

    base = min(range(4, 129), key=lambda b: abs(count(ours_with(b)) - target))
    torch.manual_seed(args.seed)
    ours = ours_with(base)
    info = {
        "ours": f"seglab UNet depth={args.depth} base_channels={base} {args.upsampling}",
        "theirs": f"smp.Unet encoder={args.encoder} (encoder_weights=None)",
        "params_ours": count(ours),
        "params_theirs": target,
        "params_theirs_encoder": count(net.encoder),
    }
    return ours, theirs, info


def throughput(models: dict, args) -> dict[str, float]:
    """Median images/s of forward + loss + backward, the models measured in alternating rounds."""
    images = [torch.rand(3, args.size, args.size) for _ in range(args.batch_size)]
    targets = [{"semantic_mask": torch.randint(0, 4, (args.size, args.size))} for _ in images]
    rates: dict[str, list[float]] = {name: [] for name in models}

    def step(model):
        model.zero_grad(set_to_none=True)
        with autocast(args.precision, "cpu"):
            _, losses = model.forward_with_losses(images, targets)
        sum(losses.values()).backward()

    for model in models.values():
        model.train()
        step(model)  # warm-up: allocations, kernel selection
    for _ in range(args.rounds):
        for name, model in models.items():
            started = time.perf_counter()
            for _ in range(args.iterations):
                step(model)
            rates[name].append(args.iterations * args.batch_size / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def train_same_budget(models: dict, train_set, args) -> dict[str, int]:
    """Train every model for `args.minutes` of its own step time on the same batches."""
    budget = 60 * args.minutes
    loader = DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, collate_fn=collate, drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
        for name, model in models.items()
    }
    spent = dict.fromkeys(models, 0.0)
    steps = dict.fromkeys(models, 0)
    while min(spent.values()) < budget:
        for images, targets in loader:
            if min(spent.values()) >= budget:
                break
            for name, model in models.items():
                if spent[name] >= budget:
                    continue
                started = time.perf_counter()
                _train_step(model, optimizers[name], images, targets, spent[name] / budget, args)
                spent[name] += time.perf_counter() - started
                steps[name] += 1
    return steps


def _train_step(model, optimizer, images, targets, progress: float, args) -> None:
    warmup = min(1.0, (progress * 60 * args.minutes) / 10)  # 10 s linear warm-up
    for group in optimizer.param_groups:
        group["lr"] = args.lr * warmup * 0.5 * (1 + math.cos(math.pi * progress))
    model.train()
    with autocast(args.precision, "cpu"):  # float32 master weights and losses
        _, losses = model.forward_with_losses(images, targets)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()


def data_root(args) -> Path:
    if args.data:
        return Path(args.data)
    root = Path(tempfile.mkdtemp(prefix="unet_vs_smp_")) / "shapes"
    return generate_shapes(root, task="semantic", train=args.train, val=args.val, seed=args.seed)


def data_config(args, root: Path) -> DataConfig:
    """The data pipeline both models train on: the recipe's (its image size planned from
    the training masks when `auto`, its crop and augmentations), or `--crop` for both."""
    if args.ours != "recipe":
        return DataConfig(
            root=str(root), layout="masks", image_size=args.crop, vflip=0.5, rot90=True,
            weight_map=args.weight_map,
        )  # fmt: skip
    recipe = load_config(RECIPE, [f"data.root={root}"]).data
    cfg = dataclasses.replace(recipe, weight_map=args.weight_map, cache_mb=1024)
    if cfg.image_size == "auto":
        plan = plan_image_size(cfg)
        print(plan.reason)
        cfg = dataclasses.replace(cfg, image_size=plan.image_size)
    return cfg


def print_table(rows: list[tuple[str, float, float]], info: dict) -> None:
    print(f"ours:   {info['ours']}\ntheirs: {info['theirs']}")
    print(f"{'metric':<34}{'ours':>12}{'theirs':>12}{'ours/theirs':>13}")
    for name, ours, theirs in rows:
        ratio = ours / theirs if theirs else float("nan")
        print(f"{name:<34}{ours:>12.4g}{theirs:>12.4g}{ratio:>13.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="semantic shapes root (masks layout); default: generate")
    parser.add_argument("--train", type=int, default=600, help="generated training images")
    parser.add_argument("--val", type=int, default=100, help="generated validation images")
    parser.add_argument(
        "--ours", choices=("recipe", "matched"), default="recipe",
        help="our model and data: the unet_shapes recipe's, or matched parameters at --crop",
    )  # fmt: skip
    parser.add_argument("--encoder", default="resnet18", help="smp encoder (no weights)")
    parser.add_argument("--depth", type=int, default=6, help="our number of poolings")
    parser.add_argument("--upsampling", default="bilinear", choices=("bilinear", "transpose"))
    parser.add_argument("--size", type=int, default=256, help="throughput image side")
    parser.add_argument("--crop", type=int, default=64, help="matched: training crop / val resize")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3, help="steps per throughput round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per model")
    parser.add_argument(
        "--lr", type=float, help="AdamW lr for both (default: the recipe's, 3e-3 for matched)"
    )
    parser.add_argument(
        "--weight-map",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="CE weighted by the paper's weight map, for both models (the recipe: off)",
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="both models' weights in channels_last"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="both models' training forward (bf16: bfloat16 autocast; evaluation in fp32)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    if args.lr is None:
        args.lr = load_config(RECIPE).train.lr if args.ours == "recipe" else 3e-3

    root = data_root(args)
    cfg = data_config(args, root)
    print(f"data: image_size {cfg.image_size}, crop_size {cfg.crop_size}, lr {args.lr:g}")
    train_set = build_dataset(cfg, "train", task="semantic", train=True)
    val_set = build_dataset(cfg, "val", task="semantic", train=False)
    ours, theirs, info = build_pair(args, len(train_set.class_names) + 1)
    models = {"ours": ours, "theirs": theirs}
    if args.channels_last:
        for model in models.values():
            model.to(memory_format=torch.channels_last)

    rates = throughput(models, args)
    torch.manual_seed(args.seed)
    steps = train_same_budget(models, train_set, args)
    miou = {name: evaluate(model, val_set, batch_size=8)["mIoU"] for name, model in models.items()}

    rows = [
        ("parameters", info["params_ours"], info["params_theirs"]),
        (f"train images/s at {args.size}px (fwd+bwd)", rates["ours"], rates["theirs"]),
        (f"training steps in {args.minutes:g} min", steps["ours"], steps["theirs"]),
        (f"val mIoU after {args.minutes:g} min", miou["ours"], miou["theirs"]),
    ]
    print_table(rows, info)
    if args.out:
        result = {
            **info,
            "images_per_s": rates,
            "images_per_s_ratio": rates["ours"] / rates["theirs"],
            "train_steps": steps,
            "val_mIoU": miou,
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()

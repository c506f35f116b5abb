"""Which part of a detector loses accuracy in bfloat16 training? Two tools (issue 23, part 1).

`grads`: the gradients of one model on training batches, float32 against bfloat16
autocast, part by part. The bf16 passes replay the float32 pass's proposals and sampled
anchors and RoIs (the sampling is discrete: bf16's proposals would sample other RoIs and
every gradient would differ for that reason alone). Per parameter group: the relative
deviation |g_bf16 - g_fp32| / |g_fp32| and the projection <g_bf16 - g_fp32, g_fp32> /
|g_fp32|^2 (summed over the batches; negative: bf16 shrinks that gradient, positive: grows
it). A variant may keep modules in float32 (`bf16:fp32=backbone.body`, `bf16:fp32=BN` for
every BatchNorm2d), to see how much of the deviation each part causes:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bf16_parts.py grads RUN/model.safetensors \
        --config RUN/config.yaml --batches 6 --variant bf16 --variant bf16:fp32=backbone.body

`train`: `seglab train` with one change to the model it builds: modules kept in float32
under autocast (`--ablation fp32=backbone.body`, several comma-separated, `fp32=BN`), or, a
control, the initial weights multiplied by 1 + eps * N(0, 1) (`--ablation perturb=1e-6`,
its own seed, whatever the precision): how far two float32 runs of one seed end apart.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bf16_parts.py train --ablation perturb=1e-6 \
        -- mask_rcnn_r18_fpn_shapes --out RUN --set data.root=DIR --set train.precision=fp32 \
        --set train.planned_steps=857 --set train.max_minutes=200 -q

A module kept in float32 runs its forward outside autocast on float32 copies of its
tensor inputs. It must be called as a module (`module(x)`): the ResNet's stages and the
FPN's convolutions are run by `conv_norm_act` from their parent, so name the parent
(`backbone.body`, `backbone.fpn`) or the leaf modules called (the BatchNorm2d layers).
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn

import seglab
import seglab.engine.trainer as trainer
from seglab.cli.main import main as seglab_main
from seglab.data.datasets import build_training_datasets, collate
from seglab.engine.config import load_config
from seglab.models.detection.rpn import RegionProposalNetwork
from seglab.models.zoo import data_proposals
from seglab.ops.sampler import BalancedPositiveNegativeSampler


def float_inputs(value):
    """Floating tensors (also inside lists, tuples, dicts) as float32; the rest unchanged."""
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(float_inputs(item) for item in value)
    if isinstance(value, dict):
        return {key: float_inputs(item) for key, item in value.items()}
    return value


def keep_float32(module: nn.Module) -> Callable[[], None]:
    """Run `module`'s forward outside autocast on float32 inputs; returns the undo."""
    forward = module.forward

    def float32_forward(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return forward(*float_inputs(args), **float_inputs(kwargs))

    module.forward = float32_forward
    return lambda: setattr(module, "forward", forward)


def module_names(model: nn.Module, spec: str) -> list[str]:
    """`BN` -> every BatchNorm2d's name; else the comma-separated names themselves."""
    if spec == "BN":
        return [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return spec.split(",")


class SamplingTape:
    """Records the RPN's proposals and every balanced sampling of one pass, replays them.

    Patches `RegionProposalNetwork._select_proposals` and
    `BalancedPositiveNegativeSampler.__call__` (the only places a pass's discrete choices
    are made) for the life of the process.
    """

    def __init__(self) -> None:
        self.recording, self.calls = True, []
        select, sample = (
            RegionProposalNetwork._select_proposals,
            BalancedPositiveNegativeSampler.__call__,
        )
        RegionProposalNetwork._select_proposals = self._taped(select)
        BalancedPositiveNegativeSampler.__call__ = self._taped(sample)

    def _taped(self, function):
        def taped(*args, **kwargs):
            if self.recording:
                self.calls.append(function(*args, **kwargs))
                return self.calls[-1]
            return self._replay.pop(0)

        return taped

    def record(self) -> None:
        self.recording, self.calls = True, []

    def replay(self) -> None:
        self.recording, self._replay = False, list(self.calls)


def gradients(model: nn.Module, images, targets, variant: str) -> dict[str, Tensor]:
    """Every parameter's gradient of the summed losses: `fp32`, `bf16` or `bf16:fp32=...`."""
    model.zero_grad(set_to_none=True)
    precision, _, kept = variant.partition(":fp32=")
    undo = [keep_float32(model.get_submodule(n)) for n in module_names(model, kept)] if kept else []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        _, losses = model.forward_with_losses(images, targets)
    sum(losses.values()).backward()
    for restore in undo:
        restore()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def group_name(model: nn.Module, parameter: str) -> str:
    """`backbone.body.layer2`, `backbone.fpn.lateral_convs.0`, `roi_heads.box_head.fc6`
    ..., with the module type and weight / bias: the rows of the table."""
    parts = parameter.split(".")
    depth = 3 if parts[:2] == ["backbone", "body"] else 4 if parts[0] == "backbone" else 3
    module = model.get_submodule(parameter.rsplit(".", 1)[0])
    return f"{'.'.join(parts[:depth])} {type(module).__name__}.{parts[-1]}"


def run_grads(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    train_set, _ = build_training_datasets(
        config.data, task="instance", in_channels=3,
        proposals=data_proposals(config.model.name, config.model.args),
    )  # fmt: skip
    model = seglab.load_model(args.model).train()
    tape = SamplingTape()
    # per variant and group: sums of <d, g>, |g|^2 and |d|^2 over parameters and batches
    sums = {v: collections.defaultdict(lambda: [0.0, 0.0, 0.0]) for v in args.variant}
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(args.seed))
    for batch in range(args.batches):
        torch.manual_seed(batch)  # the data's flips
        items = [train_set[int(i)] for i in order[4 * batch : 4 * batch + 4]]
        images, targets = collate(items)
        tape.record()
        reference = gradients(model, images, targets, "fp32")
        for variant in args.variant:
            tape.replay()
            for name, grad in gradients(model, images, targets, variant).items():
                row = sums[variant][group_name(model, name)]
                difference, fp32 = grad - reference[name], reference[name]
                row[0] += (difference * fp32).sum().item()
                row[1] += fp32.pow(2).sum().item()
                row[2] += difference.pow(2).sum().item()
    print(f"{args.batches} batches of 4; per variant: projection, relative deviation")
    print(f"{'group':62s}" + "".join(f"{v[:26]:>28s}" for v in args.variant))
    for group in sums[args.variant[0]]:
        cells = []
        for variant in args.variant:
            dot, norm2, diff2 = sums[variant][group]
            cells.append(f"{dot / norm2:+9.4f} {(diff2 / norm2) ** 0.5:8.4f}".rjust(28))
        print(f"{group:62s}" + "".join(cells))


def run_train(args: argparse.Namespace) -> int:
    build = trainer._build_model

    def build_with_ablation(config, train_set, device):
        model = build(config, train_set, device)
        kind, _, value = args.ablation.partition("=")
        if kind == "fp32":
            for name in module_names(model, value):
                keep_float32(model.get_submodule(name))
        elif kind == "perturb":
            generator = torch.Generator().manual_seed(12345)
            with torch.no_grad():
                for parameter in model.parameters():
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.mul_(1 + float(value) * noise)
        else:
            raise SystemExit(f"--ablation {args.ablation!r}: use fp32=MODULES or perturb=EPS")
        print(f"ablation: {args.ablation}", file=sys.stderr)
        return model

    trainer._build_model = build_with_ablation  # the model the trainer builds, then trains
    return seglab_main(["train", *args.seglab_args])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    grads = commands.add_parser("grads", help="gradients, fp32 against bf16 variants")
    grads.add_argument("model", help="a Mask R-CNN model file (RUN/model.safetensors)")
    grads.add_argument("--config", required=True, help="its RUN/config.yaml (the data)")
    grads.add_argument("--batches", type=int, default=6)
    grads.add_argument("--seed", type=int, default=1, help="the order of the images")
    grads.add_argument("--variant", action="append", default=None,
                       help="bf16, bf16:fp32=MODULE[,MODULE] or bf16:fp32=BN (repeat)")  # fmt: skip
    train = commands.add_parser("train", help="seglab train with an ablation")
    train.add_argument(
        "--ablation", required=True, help="fp32=MODULE[,MODULE], fp32=BN, perturb=EPS"
    )
    train.add_argument("seglab_args", nargs=argparse.REMAINDER, help="-- then seglab train's")
    args = parser.parse_args(argv)
    if args.command == "grads" and not args.variant:
        args.variant = ["bf16"]
    if args.command == "train" and args.seglab_args[:1] == ["--"]:
        args.seglab_args = args.seglab_args[1:]
    return args


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(run_grads(arguments) if arguments.command == "grads" else run_train(arguments))

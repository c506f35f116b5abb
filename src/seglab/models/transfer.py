"""Starting a model from another's weights (`train.init: PATH`).

The file is a seglab model (`save_model`): a previous run, or a torchvision COCO detector
converted with `seglab convert`. Every tensor of the new model whose name and shape are in
the file is taken from it; the others keep their fresh initialisation. When the number of
classes differs, exactly the class-dependent layers differ in shape (the box predictor's
class scores and per-class box deltas, the mask predictor's per-class logits, a
classifier's last layer, U-Net's output convolution) and are re-initialised, which is what
torchvision's fine-tuning tutorial does by hand when it replaces `roi_heads.box_predictor`
with a new `FastRCNNPredictor(in_features, num_classes)`.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from seglab.errors import UserError
from seglab.models.zoo import MODEL_SPECS, read_card

_SHOWN = 4  # names per list in a report line
# BatchNorm2d's count of batches seen: nothing to a frozen norm, nor to one that trains with
# a momentum; neither missing nor unused when a model moves between the two
_COUNTER = "num_batches_tracked"


@dataclass
class InitReport:
    """What `init_from` took from the file.

    Attributes:
        source: the file.
        arch, classes: the file's architecture and class names (background excluded).
        kept: names of the model's tensors taken from the file.
        reinitialised: `(name, shape in the file, shape in the model)` of the tensors both
            have in another shape: left as initialised.
        not_in_file: the model's tensors the file lacks (left as initialised).
        unused: the file's tensors the model has no place for (BatchNorm's batch counters
            left out of both).
        options: `(name, the file's value, the model's)` of builder arguments that differ
            (besides num_classes): the kept weights were trained with the file's.
    """

    source: Path
    arch: str
    classes: list[str]
    kept: list[str] = field(default_factory=list)
    reinitialised: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    not_in_file: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    options: list[tuple[str, object, object]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report: what was kept (by module), what was re-initialised, what else."""
        groups = Counter(".".join(name.split(".")[:2]) for name in self.kept)
        kept = ", ".join(f"{group} ({count})" for group, count in groups.items())
        lines = [
            f"{self.source}: {self.arch} with {len(self.classes)} classes; kept "
            f"{len(self.kept)} tensors: {kept}"
        ]
        changed = [f"{name} {tuple(old)} -> {tuple(new)}" for name, old, new in self.reinitialised]
        lines.append(f"re-initialised (other shape): {_first(changed)}")
        if self.not_in_file or self.unused:
            lines.append(
                f"not in the file: {_first(self.not_in_file)}; "
                f"in the file, unused: {_first(self.unused)}"
            )
        if self.options:
            changes = [f"{name} {old!r} -> {new!r}" for name, old, new in self.options]
            lines.append(f"model options that differ from the file's: {_first(changes)}")
        return lines


def _first(items: list[str]) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def init_from(model: nn.Module, path: str | Path) -> InitReport:
    """Copy into `model` every tensor of the seglab model file at `path` whose name and
    shape fit; return what was kept and what was not.

    Raises:
        UserError: `path` is not a seglab model file, or no tensor of it fits `model`.
    """
    path = Path(path)
    card = read_card(path)
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    expected = model.state_dict()
    report = InitReport(path, card.arch, list(card.class_names))
    for name, tensor in expected.items():
        if name not in state:
            if not name.endswith(_COUNTER):
                report.not_in_file.append(name)
        elif state[name].shape != tensor.shape:
            report.reinitialised.append((name, tuple(state[name].shape), tuple(tensor.shape)))
        else:
            report.kept.append(name)
    report.unused = [n for n in state if n not in expected and not n.endswith(_COUNTER)]
    if not report.kept:
        raise UserError(
            f"{path}: no tensor of this {card.arch} model fits model "
            f"{model.card.arch}; start from a model "
            "of the same architecture and backbone"
        )
    report.options = _differing_options(
        card.arch, card.arch_args, model.card.arch, model.card.arch_args
    )
    with torch.no_grad():
        model.load_state_dict({name: state[name] for name in report.kept}, strict=False)
    return report


def _differing_options(
    saved_arch: str, saved: dict, arch: str, built: dict
) -> list[tuple[str, object, object]]:
    """Builder arguments both models have whose values differ, defaults included
    (num_classes aside)."""
    saved, built = _effective(saved_arch, saved), _effective(arch, built)
    names = sorted((saved.keys() & built.keys()) - {"num_classes"})
    return [(n, saved[n], built[n]) for n in names if _plain(saved[n]) != _plain(built[n])]


def _effective(arch: str, arguments: dict) -> dict:
    """The defaults of `arch`'s builder arguments, updated with the ones it was given."""
    if arch not in MODEL_SPECS:
        return dict(arguments)
    _, options = MODEL_SPECS[arch].parts()  # the class whose keyword arguments it takes
    parameters = inspect.signature(options).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **arguments}


def _plain(value):
    """Tuples and lists alike (JSON metadata holds lists where builders got tuples)."""
    return [_plain(item) for item in value] if isinstance(value, list | tuple) else value

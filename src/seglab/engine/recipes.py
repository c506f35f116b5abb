"""`seglab train --list`: the shipped recipes, one line each, from their own files.

What a line says is read from the recipe and nothing else: the model (`model.name`,
`model.backbone`), the data (`data.layout`, `data.root`), the budget (`train.max_minutes`,
`train.max_steps`) and, when the recipe's header records one, the measured result (its
`# Measured ...` comment, up to the first `;` or sentence end). A recipe without such a
comment says "no result recorded in the recipe" rather than borrowing a number from
elsewhere. No torch: the list answers at once.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from seglab.engine.config import recipe_names, recipes_dir

MEASURED = re.compile(r"^#\s*Measured\b\s*(\([^)]*\))?:?\s*", re.IGNORECASE)


def recipe_lines() -> list[str]:
    """A heading, then one line per shipped recipe: `NAME  model, data, budget; measured`."""
    names = recipe_names()
    width = max((len(name) for name in names), default=0)
    lines = [f"shipped recipes ({recipes_dir()}); train one with "
             "`seglab train NAME --out RUN --set data.root=DIR`:"]  # fmt: skip
    for name in names:
        lines.append(f"  {name:<{width}}  {describe_recipe(recipes_dir() / f'{name}.yaml')}")
    return lines


def describe_recipe(path: Path) -> str:
    """`mask_rcnn resnet18; coco data/shapes; 10 min (<= 5000 steps); measured: ...`."""
    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    model, data, train = (raw.get(key) or {} for key in ("model", "data", "train"))
    parts = [
        " ".join(str(model[key]) for key in ("name", "backbone") if model.get(key)),
        f"{data.get('layout', 'coco')} {data.get('root') or '(data.root unset)'}",
        _budget(train),
    ]
    measured = measured_result(text)
    parts.append(f"measured: {measured}" if measured else "no result recorded in the recipe")
    return "; ".join(parts)


def _budget(train: dict) -> str:
    steps = train.get("max_steps", 5000)  # TrainConfig's default
    if train.get("max_minutes") is None:
        return f"{steps} steps"
    budget = f"{train['max_minutes']:g} min (<= {steps} steps)"
    if train.get("patience") is not None:
        budget += f", or converged (patience {train['patience']})"
    return budget


def measured_result(text: str) -> str | None:
    """The recipe's `# Measured (source): ...` comment, joined over its lines, up to the
    first `;` or full stop; None when the recipe records no result."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if MEASURED.match(line):
            paragraph = [MEASURED.sub("", line)]
            for following in lines[index + 1 :]:
                body = following.lstrip("#").strip()
                if not following.startswith("#") or not body:
                    break
                paragraph.append(body)
            sentence = re.split(r";|\.(?:\s|$)", " ".join(paragraph), maxsplit=1)[0]
            source = MEASURED.match(line).group(1)
            return sentence.strip() + (f" {source}" if source else "")
    return None

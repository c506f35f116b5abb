"""`seglab data`: dataset utilities. `seglab data shapes OUT` and `seglab data cells OUT`
write the synthetic datasets; `seglab data check ROOT` reads every file of a dataset and
prints what training would make of it (exit 2 when training would fail or learn nothing)."""

from __future__ import annotations

import argparse

from seglab.errors import UserError

_PLACES_SHOWN = 3  # first places named per problem in the table


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="dataset utilities (synthetic data, checks)")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _add_shapes(actions)
    _add_cells(actions)
    _add_check(actions)


def _add_shapes(actions) -> None:
    shapes = actions.add_parser(
        "shapes",
        help="write the built-in synthetic shapes dataset",
        description="Write RGB scenes of circles, squares and triangles (overlap, occlusion, "
        "noise, empty scenes): COCO layout for --task instance, mask folders for semantic, "
        "image folders of single-object crops for classify. Deterministic for a seed.",
    )
    _add_generator_options(shapes, ("instance", "semantic", "classify"))
    shapes.set_defaults(func=run_shapes)


def _add_cells(actions) -> None:
    cells = actions.add_parser(
        "cells",
        help="write the built-in synthetic cell-nuclei dataset (grayscale, touching objects)",
        description="Write grayscale microscopy-like images of cell nuclei (one class): "
        "irregular ellipses with textured interiors in clusters where neighbours touch, "
        "object size varying from image to image, uneven illumination, blur and noise. "
        "COCO layout for --task instance, mask folders for semantic. Images have 1 channel: "
        "train with --set model.in_channels=1. Deterministic for a seed.",
    )
    _add_generator_options(cells, ("instance", "semantic"))
    cells.set_defaults(func=run_cells)


def _add_generator_options(parser, tasks: tuple[str, ...]) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder")
    parser.add_argument(
        "--task",
        choices=tasks,
        default="instance",
        help="layout to write (default: instance = COCO)",
    )
    parser.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    parser.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run_shapes(args: argparse.Namespace) -> int:
    from seglab.data.shapes import generate_shapes_summary

    _report(args, generate_shapes_summary(args.out, **_generator_options(args)))
    return 0


def run_cells(args: argparse.Namespace) -> int:
    from seglab.data.cells import generate_cells_summary

    _report(args, generate_cells_summary(args.out, **_generator_options(args)))
    print("images are grayscale (1 channel): train with --set model.in_channels=1")
    return 0


def _generator_options(args: argparse.Namespace) -> dict:
    return {"task": args.task, "train": args.train, "val": args.val, "size": args.size,
            "seed": args.seed}  # fmt: skip


def _report(args: argparse.Namespace, summary) -> None:
    classes = f"{summary.classes} class{'' if summary.classes == 1 else 'es'}"
    print(
        f"wrote {summary.out_dir} ({args.task}): {summary.images} images "
        f"({args.train} train, {args.val} val), {summary.objects} objects, "
        f"{classes}, {summary.seconds:.1f} s"
    )


def _add_check(actions) -> None:
    check = actions.add_parser(
        "check",
        help="read every image, mask and annotation of a dataset; exit 2 on problems",
        description="Read every image, mask and annotation of every split of ROOT (or of the "
        "data: section of a training CONFIG, for COCO files anywhere) once, as "
        "training reads them, and print the images, objects per class, image sizes and bit "
        "depths of each split, and the problems found by kind with their first files. "
        "Exit 2 when training would fail or learn nothing, 0 otherwise (problems that "
        "training handles, such as boxes clipped to their image, are listed with what is "
        "done about them).",
    )
    check.add_argument(
        "root", metavar="ROOT|CONFIG", help="data folder (data.root), or a YAML training config"
    )
    check.add_argument(
        "--layout",
        choices=("coco", "masks", "folders"),
        help="data.layout (default: detected from the files)",
    )
    check.add_argument(
        "--mask-values",
        type=int,
        nargs="+",
        metavar="V",
        help="masks layout: data.mask_values, the stored value of the background and of "
        "each class (e.g. 0 255)",
    )
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from seglab.data.check import check_data

    mask_values = tuple(args.mask_values) if args.mask_values else None
    if _is_config(args.root):
        report = _check_config_file(args)
    else:
        report = check_data(args.root, args.layout, mask_values=mask_values)
    for line in report_lines(report):
        print(line)
    stopping = [f for findings in _every_findings(report) for f in findings.stopping()]
    if stopping:
        kinds = ", ".join(dict.fromkeys(f.kind for f in stopping))
        raise UserError(f"{report.root}: training would fail or learn nothing ({kinds}); "
                        "fix the files listed above")  # fmt: skip
    print(f"{report.root}: training can start")
    return 0


def _is_config(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


def _check_config_file(args: argparse.Namespace):
    """The data a training config names, checked as `seglab train` would read it."""
    from seglab.data.check import check_config
    from seglab.engine.config import load_config

    for option, value in (("--layout", args.layout), ("--mask-values", args.mask_values)):
        if value is not None:
            raise UserError(f"{option}: with a CONFIG, set data.{option[2:].replace('-', '_')} "
                            "in it")  # fmt: skip
    return check_config(load_config(args.root).data)


def _every_findings(report) -> list:
    return [report.general, *(split.findings for split in report.splits)]


def report_lines(report) -> list[str]:
    """The summary table, then the problems table, of a `DataReport`."""
    from seglab.data.check import UNREAD_SPLIT

    count, names = len(report.class_names), ", ".join(report.class_names) or "none"
    classes = f"{count} class{'' if count == 1 else 'es'} ({names})"
    lines = [f"{report.root}: {report.layout} layout, {classes}"]
    if report.intensity_range is not None:
        low, high = report.intensity_range
        lines.append(f"intensity: stored values {low:g}..{high:g} read as 0..1")
    if report.splits:
        lines += _table(["", *(split.name for split in report.splits)], _summary_rows(report))
    problems = _problem_rows(report)
    lines += report.notes
    if problems:
        header = ["problem", "what happens", *(s.name for s in report.splits), "first places"]
        lines += ["", *_table(header, problems, left=(0, 1, len(header) - 1))]
    else:
        lines.append("problems: none")
    for split in report.splits:  # the table names the split; the reason is in the message
        unread = split.findings.by_kind.get(UNREAD_SPLIT)
        if unread is not None:
            lines.append(f"{split.name} split cannot be read: {unread.message}")
    return lines


def _summary_rows(report) -> list[list[str]]:
    splits = report.splits
    rows = [["images", *(str(split.images) for split in splits)]]
    for mode in sorted({mode for split in splits for mode in split.modes}):
        rows.append([f"  {mode}", *(str(split.modes[mode]) for split in splits)])
    if any(split.left_out for split in splits):  # not among the images: see the problems
        rows.append(["left out (problems)", *(str(split.left_out) for split in splits)])
    rows.append(["sizes (w x h)", *(_sizes(split.sizes) for split in splits)])
    if report.layout == "masks":  # an image holds several classes: no meaningful total
        rows.append(["images holding each class", *("" for _ in splits)])
    else:
        counted = "objects" if report.layout == "coco" else "images per class"
        rows.append([counted, *(str(sum(split.class_counts)) for split in splits)])
    for index, name in enumerate(report.class_names):
        counts = [split.class_counts[index] if index < len(split.class_counts) else 0
                  for split in splits]  # fmt: skip
        rows.append([f"  {name}", *(str(count) for count in counts)])
    return rows


def _sizes(sizes) -> str:
    if not sizes:
        return "-"
    heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
    if len(sizes) == 1:
        return f"{widths[0]}x{heights[0]}"
    return f"{min(widths)}x{min(heights)}..{max(widths)}x{max(heights)}"


def _problem_rows(report) -> list[list[str]]:
    """One row per kind of problem, stopping ones first: counts per split, first places."""
    kinds: dict[str, list] = {}
    for findings in _every_findings(report):
        for finding in findings.by_kind.values():
            kinds.setdefault(finding.kind, []).append(finding)
    rows = []
    for kind, findings in sorted(kinds.items(), key=lambda item: not item[1][0].stops):
        counts = [str(_count(report, split, kind)) for split in report.splits]
        places = [_relative(place, report.root) for f in findings for place in f.places]
        shown = ", ".join(places[:_PLACES_SHOWN]) + (", ..." if len(places) > _PLACES_SHOWN else "")
        rows.append([kind, findings[0].action, *counts, shown])
    return rows


def _count(report, split, kind: str) -> int:
    """Occurrences of `kind` in `split`: its own, and the general ones that name it."""
    own, general = split.findings.by_kind.get(kind), report.general.by_kind.get(kind)
    return (len(own.places) if own else 0) + (general.places.count(split.name) if general else 0)


def _relative(place: str, root) -> str:
    prefix = f"{root}/"
    return place[len(prefix) :] if place.startswith(prefix) else place


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> list[str]:
    """Columns padded to their widest cell; the `left` ones left-aligned, the others right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return [line(header), *(line(row) for row in rows)]

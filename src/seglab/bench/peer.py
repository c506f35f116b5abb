"""seglab's Mask R-CNN against torchvision's on the same weights: time, memory, stages.

Both models run in one process, interleaved (theirs then ours in one repetition, ours then
theirs in the next), so that a change of machine load hits both; the figure is the median
over repetitions of the per-repetition ratio ours / theirs (below 1: seglab is faster).

- inference: eval mode, the photographs at their own size, resized by each model to
  `min_size` (800 by default, as torchvision's and our defaults);
- training step: forward with losses, backward and an SGD step, a batch of 2 photographs
  of `train_size` px with 3 objects each;
- peak memory: how much the resident set size (RSS) grows during one call, sampled every
  millisecond by a thread, after freed memory was handed back to the system (malloc_trim);
- stages: seconds per inference call spent in each part (forward hooks, `stages.py`).
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import Tensor, nn

from seglab.bench.peer_models import model_pair, photographs, training_batch
from seglab.bench.stages import ForwardTimer
from seglab.inference.onnx_check import largest_gap, pair_detections
from seglab.ops.precision import autocast

PEERS = ("torchvision", "seglab")
# seglab's fast paths (norms folded into their convs, oneDNN's sum + ReLU inside the conv,
# channels-last) compute torchvision's arithmetic in another order. float32 rounding of one
# conv of `fan_in` products moves a value by about sqrt(fan_in) * 2^-24 of the largest one,
# compounding over the layers: ResNet-50 + FPN + RPN + box head is ~60 convs of up to
# 3 x 3 x 256 products, 60 * 48 * 2^-24 = 1.7e-4 of a box coordinate (0.055 px at 320 px).
# A converted weight in the wrong place, a wrong eps or a missing layer moves boxes by pixels.
BOX_ROUNDING = 60 * (3 * 3 * 256) ** 0.5 * 2**-24
# stage -> the submodules whose forward time it is, in each peer; "post-processing" is the
# rest of the call (box decoding, NMS, mapping back to the image, mask pasting)
STAGE_MODULES = {
    "resize": {"torchvision": ("transform",), "seglab": ("transform",)},
    "backbone": {"torchvision": ("backbone.body",), "seglab": ("backbone.body",)},
    "FPN": {"torchvision": ("backbone.fpn",), "seglab": ("backbone.fpn",)},
    "RPN": {"torchvision": ("rpn",), "seglab": ("proposal_generator",)},
    "RoI heads": {
        peer: ("roi_heads.box_roi_pool", "roi_heads.box_head", "roi_heads.box_predictor")
        for peer in PEERS
    },
    "mask head": {
        peer: ("roi_heads.mask_roi_pool", "roi_heads.mask_head", "roi_heads.mask_predictor")
        for peer in PEERS
    },
}


@dataclass(frozen=True)
class PeerOptions:
    """min_size / max_size: inference resizing; train_size: side of the training images;
    detections: at most per image (100, both libraries' default: a COCO model at score
    0.05 gives about that many); rois: training RoIs per image (512, both defaults);
    precision: seglab's (torchvision runs in float32): with bf16 the ratios are seglab's
    bfloat16 autocast against torchvision's float32, and seglab's float32 is timed in the
    same run beside them (`ratio_fp32`)."""

    min_size: int = 800
    max_size: int = 1333
    train_size: int = 512
    repeats: int = 5
    detections: int = 100
    rois: int = 512
    precision: str = "fp32"  # seglab's; bf16 also times seglab in fp32 ("seglab_fp32")


def run_peer_benchmark(options: PeerOptions, log: Callable[[str], None] = print) -> dict:
    """Measure both peers; returns the report (see `docs/benchmarks.md` for its table)."""
    report: dict = {"options": asdict(options), "machine": machine(), "load_before": _load()}
    images = photographs()
    sizes = {"detections": options.detections, "rois": options.rois, "images": images}
    models = model_pair(min_size=options.min_size, max_size=options.max_size, **sizes)
    log(f"inference: {len(images)} photographs, min_size {options.min_size}")
    report["outputs"] = compare_outputs(models, images)
    precisions = {"torchvision": "fp32", "seglab": options.precision}
    if options.precision != "fp32":
        # no comparison of the outputs here: random weights give near-equal scores, which
        # bfloat16's rounding reorders (tests/inference/test_precision_check.py pairs a
        # trained model's detections)
        precisions["seglab_fp32"] = "fp32"
    runs = {name: models[name.removesuffix("_fp32")] for name in precisions}
    inference = {name: partial(_infer, runs[name], images, precisions[name]) for name in runs}
    report["inference"] = _measure(inference, options.repeats, log)
    report["stages"] = _profile(models, images, options.precision)
    del models, runs
    train_images, targets = training_batch(options.train_size)
    models = model_pair(min_size=options.train_size, max_size=options.train_size, **sizes)
    steps = {
        name: training_step(models[name.removesuffix("_fp32")], train_images, targets,
                            precisions[name])
        for name in precisions
    }  # fmt: skip
    log(f"training step: batch {len(train_images)} x {options.train_size} px")
    report["training"] = _measure(steps, options.repeats, log)
    report["load_after"] = _load()
    return report


def _infer(model: nn.Module, images: list[Tensor], precision: str = "fp32") -> None:
    with torch.no_grad(), autocast(precision, "cpu"):
        model(images)


def training_step(
    model: nn.Module, images: list[Tensor], targets: list[dict], precision: str = "fp32"
) -> Callable:
    """A function doing one step: losses (train mode, the forward under `precision`'s
    autocast), backward, SGD update."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=1e-5, momentum=0.9)
    forward = getattr(model, "forward_with_losses", None)

    def step() -> None:
        model.train()
        torch.manual_seed(0)  # the same RoI sampling in both peers
        copies = [{key: value.clone() for key, value in t.items()} for t in targets]
        with autocast(precision, "cpu"):
            losses = forward(images, copies)[1] if forward else model(images, copies)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    return step


def _measure(calls: dict[str, Callable[[], None]], repeats: int, log) -> dict:
    """Seconds per call of each peer (interleaved repetitions), the median ratio, and the
    peak RSS growth of one call."""
    for call in calls.values():
        call()  # first call: lazy allocations and caches are not a per-call cost
    memory = {name: peak_rss_growth(call) for name, call in calls.items()}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for repeat in range(repeats):
        order = list(calls) if repeat % 2 == 0 else list(reversed(calls))
        for name in order:
            started = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - started)
        log(f"  {repeat + 1}/{repeats}: " + ", ".join(f"{n} {seconds[n][-1]:.2f} s" for n in calls))
    result = {
        "seconds": seconds,
        "median_s": {name: statistics.median(values) for name, values in seconds.items()},
        "ratio": _median_ratio(seconds["seglab"], seconds["torchvision"]),
        "peak_rss_mib": memory,
        "memory_ratio": _ratio(memory["seglab"], memory["torchvision"]),
    }
    if "seglab_fp32" in calls:  # --precision bf16: our float32 beside, from the same run
        result["ratio_fp32"] = _median_ratio(seconds["seglab_fp32"], seconds["torchvision"])
        result["memory_ratio_fp32"] = _ratio(memory["seglab_fp32"], memory["torchvision"])
    return result


def _median_ratio(ours: list[float], theirs: list[float]) -> float:
    """The median over repetitions of ours / theirs (each pair timed back to back)."""
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else ours / theirs


def _profile(
    models: dict[str, nn.Module], images: list[Tensor], precision: str = "fp32"
) -> dict[str, dict]:
    """Seconds per inference call in each stage of each peer (one timed call each; seglab
    in `precision`)."""
    stages: dict[str, dict] = {}
    for name, model in models.items():
        parts = {stage: modules[name] for stage, modules in STAGE_MODULES.items()}
        timer = ForwardTimer(model, {m for modules in parts.values() for m in modules})
        try:
            started = time.perf_counter()
            _infer(model, images, precision if name == "seglab" else "fp32")
            total = time.perf_counter() - started
        finally:
            timer.remove()
        row = {stage: sum(timer.seconds[m] for m in modules) for stage, modules in parts.items()}
        row["post-processing"] = total - sum(row.values())
        row["total"] = total
        stages[name] = row
    return stages


def compare_outputs(models: dict[str, nn.Module], images: list[Tensor]) -> dict:
    """Whether both give the same detections: as many per image, each of torchvision's paired
    with one of ours of the same label and a score within 1e-4 (`pair_detections`: two
    detections whose scores tie within rounding may come in either order), boxes within
    `BOX_ROUNDING` of the image side, masks within 1e-3 plus one pixel's shift (the mask's
    steepest step between two pixels): both pastes round box corners to whole pixels, and a
    corner within rounding of the cut moves the pasted mask by one (seen at --quick's 128 px;
    the equivalence test at 320 px holds masks to the box's shift alone)."""
    with torch.no_grad():
        theirs, ours = (models[name](images) for name in PEERS)
    counts = [len(o["labels"]) for o in ours]
    if counts != [len(t["labels"]) for t in theirs]:
        return {"equal": False, "detections": counts}
    largest, equal = dict.fromkeys(("boxes", "scores", "masks"), 0.0), True
    for image, want, got in zip(images, theirs, ours, strict=True):
        partners, gaps = pair_detections(want, got)
        if any(gap == float("inf") for gap in gaps):
            return {"equal": False, "detections": counts, "unpaired": True}
        box_atol = BOX_ROUNDING * max(image.shape[-2:])  # relative: any resize keeps it
        differences = {key: largest_gap(want[key], got[key][partners])
                       for key in largest if key in want}  # fmt: skip
        mask_atol = 1e-3 + steepest_step(want["masks"]) if "masks" in want else 0
        equal &= differences["boxes"] <= box_atol and differences["scores"] <= 1e-4
        equal &= differences.get("masks", 0.0) <= mask_atol
        largest = {key: max(largest[key], differences.get(key, 0.0)) for key in largest}
    return {"equal": equal, "largest_difference": largest, "detections": counts}


def steepest_step(masks: Tensor) -> float:
    """The largest change of mask probability between two neighbouring pixels."""
    if masks.numel() == 0:
        return 0.0
    return max(float(masks.diff(dim=-1).abs().max()), float(masks.diff(dim=-2).abs().max()))


def peak_rss_growth(call: Callable[[], None], interval_s: float = 0.001) -> float | None:
    """MiB by which the resident set grows during `call()` at its highest (None where the
    RSS cannot be read: Linux's /proc only)."""
    if _rss_bytes() is None:
        return None
    gc.collect()
    _malloc_trim()
    baseline = _rss_bytes()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        call()
    finally:
        done.set()
        sampler.join()
    return (peak - baseline) / 2**20


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _malloc_trim() -> None:
    """Give freed heap memory back (glibc), so that reusing it during the call counts."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def machine() -> dict:
    """The CPU, cores, threads and library versions that the figures belong to."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import torchvision

    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def peer_table(report: dict) -> str:
    """Markdown: time and peak memory per call, the stages of inference, ratios last."""
    lines = ["| | torchvision | seglab | seglab / torchvision |", "|---|---:|---:|---:|"]
    for mode, label in (("inference", "inference"), ("training", "training step")):
        row = report[mode]
        theirs, ours = (row["median_s"][name] for name in PEERS)
        lines.append(f"| {label} s (median) | {theirs:.3f} | {ours:.3f} | {row['ratio']:.2f} |")
        if "ratio_fp32" in row:
            fp32 = row["median_s"]["seglab_fp32"]
            lines.append(f"| {label} s, seglab fp32 | {theirs:.3f} | {fp32:.3f} | "
                         f"{row['ratio_fp32']:.2f} |")  # fmt: skip
        memory = row["peak_rss_mib"]
        if memory["seglab"] is not None:
            ratio = row["memory_ratio"]
            lines.append(
                f"| {label} peak RSS growth MiB | {memory['torchvision']:.0f} | "
                f"{memory['seglab']:.0f} | {'-' if ratio is None else f'{ratio:.2f}'} |"
            )
    stages = report["stages"]
    for stage in stages["seglab"]:
        theirs, ours = stages["torchvision"][stage], stages["seglab"][stage]
        ratio = f"{ours / theirs:.2f}" if theirs > 0 else "-"
        lines.append(f"| stage: {stage} s | {theirs:.3f} | {ours:.3f} | {ratio} |")
    outputs = report["outputs"]
    same = "equal" if outputs.get("equal") else "DIFFERENT"
    lines.append(f"\noutputs (float32): {same} (detections per image {outputs['detections']})")
    precision = report.get("options", {}).get("precision", "fp32")
    if precision == "fp32":
        lines.append(
            f"median ratios seglab / torchvision: inference {report['inference']['ratio']:.2f}, "
            f"training step {report['training']['ratio']:.2f}"
        )
        return "\n".join(lines) + "\n"
    inference, training = report["inference"], report["training"]
    lines.append(
        f"median ratios seglab {precision} / torchvision fp32: inference "
        f"{inference['ratio']:.2f}, training step {training['ratio']:.2f} (seglab fp32 in the "
        f"same run: {inference['ratio_fp32']:.2f}, {training['ratio_fp32']:.2f})"
    )
    return "\n".join(lines) + "\n"

"""Where the memory of a Mask R-CNN R50-FPN training step goes: seglab against torchvision.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_memory.py [--size 512] [--rois 512]
        [--sites 15] [--no-memray] [--no-profiler] [--peer seglab|torchvision]
        [--without joint-pooling|fc6-in-pooling|rpn-level-node ...]

Builds the pair `seglab bench detection --peer torchvision` compares (same weights, same
batch: `seglab.bench.peer_models`), runs one warm-up step of each (`peer.training_step`:
forward with losses, backward, SGD) and then, for each model, one step under each of:

1. saved-tensor hooks: the bytes autograd keeps for the backward (the activations), per
   part of the model (the benchmark's stages), each storage counted
   once, the parameters themselves apart (saving a parameter costs nothing) and the tensors
   computed from a parameter (a weight computed in the forward, e.g. a frozen norm folded
   into its convolution) apart;
2. torch.profiler (`profile_memory=True`): the tensors alive at the step's peak by
   torch's categories (activation, temporary, gradient, parameter, optimizer state, ...;
   its categories are guesses from the data flow: seglab's own autograd functions' saved
   tensors come out "uncategorised") and by the line or autograd node that made them;
3. memray (if installed: `pip install memray`, or the `profile` extra): the allocation
   sites alive at the step's high-water mark, grouped by the innermost line of the models'
   code (seglab's or torchvision's) that asked for them;

and the peak RSS growth of one step, the figure the benchmark reports (`peer.py`), which
also counts what glibc keeps of freed blocks. All figures are MiB; none depends on the
machine's load (a step takes 5-50 s, the profiler's analysis minutes).

`--without` runs seglab without one of its training-memory measures (docs/benchmarks.md,
"Training memory"), to measure what each gives: `joint-pooling` pools the box and mask RoIs
in separate nodes (`roi_align.pool_jointly` declines), `fc6-in-pooling` runs fc6 in its own
node, `rpn-level-node` runs the RPN head's modules (`rpn._RPNLevel` unused).
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from seglab.bench.peer import PEERS, STAGE_MODULES, peak_rss_growth, training_step
from seglab.bench.peer_models import model_pair, photographs, training_batch

MIB = 2**20


def ablate(measures: list[str]) -> None:
    """Turn off seglab's training-memory measures named in `measures` (for this process)."""
    from seglab.models.detection import roi_heads, rpn

    if "joint-pooling" in measures:
        roi_heads.pool_jointly = lambda *args, **kwargs: None
    if "fc6-in-pooling" in measures:  # the RoI heads hand fc6 over only outside autocast
        roi_heads.autocast_dtype = lambda device_type="cpu": torch.float32
    if "rpn-level-node" in measures:
        rpn.RPNHead._lean_backward = lambda self, feature: False


ABLATIONS = ("joint-pooling", "fc6-in-pooling", "rpn-level-node")


def part_of(peer: str, module: str) -> str:
    """The part of `peer`'s model a submodule belongs to: a benchmark stage (`STAGE_MODULES`)
    or "other" (the detector's own forward: losses, matching, sampling). seglab's ResNet
    runs its blocks without calling them (`resnet._run_block`): its stages are one part."""
    for stage, modules in STAGE_MODULES.items():
        if any(module == name or module.startswith(name + ".") for name in modules[peer]):
            return stage
    return "other"


@contextmanager
def module_stack(model: nn.Module) -> Iterator[list[str]]:
    """The qualified names of the submodules whose forward is running, innermost last."""
    stack: list[str] = []

    def leave(module: nn.Module, inputs, output) -> None:  # None: the output stays as it is
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: stack.append(n)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def _storage(tensor: Tensor) -> tuple[int, int]:
    """(address, bytes) of the memory a tensor holds (a sparse one: its index and value
    arrays, keyed by the values' address)."""
    if tensor.layout == torch.sparse_csr:
        parts = (tensor.crow_indices(), tensor.col_indices(), tensor.values())
        return tensor.values().data_ptr(), sum(p.untyped_storage().nbytes() for p in parts)
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # an opaque layout (oneDNN's): no storage
        return id(tensor), tensor.numel() * tensor.element_size()
    return storage.data_ptr(), storage.nbytes()


def _computed_from_a_parameter(tensor: Tensor) -> bool:
    """Whether the op that made `tensor` read a trainable leaf of its shape (`weight *
    scale`: a frozen norm folded into a convolution's weight in the forward)."""
    node = tensor.grad_fn
    return node is not None and any(
        hasattr(child, "variable") and child.variable.shape == tensor.shape
        for child, _ in node.next_functions
    )  # AccumulateGrad nodes hold the parameter they feed (`variable`)


def saved_for_backward(peer: str, model: nn.Module, step: Callable[[], None]) -> dict:
    """MiB that autograd saves for the backward in one step, by part of the model, and by
    kind: "activations", "computed from a parameter" (a weight computed in the forward),
    and "parameters" (saved as they are, no memory of their own)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    by_part: collections.Counter = collections.Counter()
    by_kind: collections.Counter = collections.Counter()

    with module_stack(model) as stack:

        def pack(tensor: Tensor) -> Tensor:
            address, size = _storage(tensor)
            if address not in seen:
                seen.add(address)
                if address in parameters:
                    kind = "parameters"
                elif _computed_from_a_parameter(tensor):
                    kind = "computed from a parameter"
                else:
                    kind = "activations"
                by_kind[kind] += size
                if kind != "parameters":
                    by_part[part_of(peer, stack[-1] if stack else "")] += size
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            step()
    return {
        "by_part": {part: size / MIB for part, size in by_part.items()},
        "by_kind": {kind: size / MIB for kind, size in by_kind.items()},
    }


def profiler_peak(step: Callable[[], None], sites: int) -> dict:
    """MiB of the tensors the step allocated that are alive at its peak, by torch.profiler's
    categories (activation, temporary, gradient, ...: its memory timeline follows each
    tensor from allocation to release) and by the code that allocated them."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, TensorKey

    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
        with_stack=True,
    ) as profiler:  # fmt: skip
        step()
    memory = profiler._memory_profile()
    live: dict = {}  # key -> (version, bytes) of what the step allocated and holds
    total = peak = 0
    at_peak: dict = {}
    for _, action, (key, version), size in memory.timeline:
        if not isinstance(key, TensorKey):  # memory no tensor is known to own (rare)
            continue
        if action == Action.CREATE:
            live[key], total = (version, size), total + size
        elif action == Action.INCREMENT_VERSION and key in live:
            live[key] = (version + 1, live[key][1])
        elif action == Action.DESTROY and key in live:
            total -= live.pop(key)[1]
        if total > peak:
            peak, at_peak = total, dict(live)
    by_category: collections.Counter = collections.Counter()
    by_site: collections.Counter = collections.Counter()
    allocated_by = _allocating_code(memory)
    for key, (version, size) in at_peak.items():
        category = memory._categories.get(key, version)
        name = category.name.lower() if category else "uncategorised"
        by_category[name] += size
        by_site[f"{allocated_by.get(key, '?')} ({name})"] += size
    return {
        "peak": peak / MIB,
        "by_category": {name: size / MIB for name, size in by_category.items()},
        "sites": {site: size / MIB for site, size in by_site.most_common(sites)},
    }


def _allocating_code(memory) -> dict:
    """TensorKey -> where it was allocated: the innermost line of the models' code, or in
    the backward the autograd node (`ConvolutionBackward0`), with the operator."""
    from torch._C._profiler import _EventType
    from torch.profiler._memory_profiler import TensorKey

    where = {}
    for event in memory._op_tree.dfs():
        if event.typed[0] != _EventType.Allocation or event.typed[1].alloc_size <= 0:
            continue
        key = TensorKey.from_allocation(event.typed[1])
        operator, place = None, None
        parent = event.parent
        while parent is not None and place is None:
            name = parent.name
            if operator is None and name.startswith("aten::"):
                operator = name
            if name.startswith("autograd::engine::evaluate_function: "):
                place = "backward " + name.split(": ", 1)[1]
            elif parent.typed[0] == _EventType.PyCall and _in_models(name):
                place = name.split("site-packages/")[-1].split("src/")[-1]
            parent = parent.parent
        if key is not None:
            where[key] = f"{place or '?'} [{operator or '-'}]"
    return where


def _in_models(filename: str) -> bool:
    return ("seglab/" in filename and "/bench/" not in filename) or "torchvision/" in filename


def memray_sites(step: Callable[[], None], sites: int) -> dict | None:
    """MiB allocated at the step's high-water mark per allocating line of the models' code
    (seglab's, torchvision's), largest first; None without memray."""
    try:
        import memray
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "step.bin")
        with memray.Tracker(path):
            step()
        reader = memray.FileReader(path)
        by_site: collections.Counter = collections.Counter()
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            by_site[_site(record.stack_trace(max_stacks=64))] += record.size
        peak = reader.metadata.peak_memory / MIB  # of what the step allocated
    top = by_site.most_common(sites)
    return {"peak": peak, "sites": {site: size / MIB for site, size in top}}


def _site(stack: list[tuple[str, str, int]]) -> str:
    """The innermost frame in the models' code (`file:line function`), or the step's part
    that runs outside it: the backward (autograd's engine allocates there, the module
    unknown to Python) or the optimizer's step."""
    for function, filename, line in stack:
        if "torch/autograd/" in filename:
            return "(backward: autograd's engine)"
        if "torch/optim/" in filename:
            return "(optimizer step)"
        if _in_models(filename):
            root = "seglab/" if "seglab/" in filename else "torchvision/"
            return f"{root}{filename.rsplit(root, 1)[1]}:{line} {function}"
    return "(elsewhere)"


def measure(
    size: int,
    rois: int,
    sites: int,
    *,
    use_memray: bool = True,
    use_profiler: bool = True,
    peers: tuple[str, ...] = PEERS,
) -> dict[str, dict]:
    """Every figure for both peers, the models built and fed as the benchmark does."""
    images = photographs()
    models = model_pair(min_size=size, max_size=size, images=images, rois=rois)
    train_images, targets = training_batch(size)
    report: dict[str, dict] = {}
    for peer in peers:
        step = training_step(models[peer], train_images, targets)
        step()  # the optimizer's state and lazy caches: not a per-step cost
        gc.collect()
        row = {"rss_growth": peak_rss_growth(step)}
        row["saved"] = saved_for_backward(peer, models[peer], step)
        if use_profiler:
            row["profiler"] = profiler_peak(step, sites)
        if use_memray:
            row["memray"] = memray_sites(step, sites)
        report[peer] = row
    return report


def print_report(report: dict[str, dict]) -> None:
    """Tables with a column per peer measured (torchvision, seglab), then the sites."""
    peers = [peer for peer in PEERS if peer in report]

    def table(title: str, rows: dict[str, list[float]]) -> None:
        print(f"\n{title}")
        print(f"{'':44s}" + "".join(f"{peer:>13s}" for peer in peers))
        for name, values in rows.items():
            print(f"{name:44s}" + "".join(f"{value:13.1f}" for value in values))

    def rows(key: Callable[[dict], dict]) -> dict[str, list[float]]:
        found = [key(report[peer]) for peer in peers]
        names = list(dict.fromkeys(name for values in found for name in values))
        return {name: [values.get(name, 0.0) for values in found] for name in names}

    table("MiB, one training step", {
        "peak RSS growth (the benchmark's figure)":
            [report[peer]["rss_growth"] or 0.0 for peer in peers],
        "torch.profiler: tensors alive at the peak": [
            report[peer].get("profiler", {}).get("peak", 0.0) for peer in peers],
        "memray: allocations alive at the peak": [
            (report[peer].get("memray") or {}).get("peak", 0.0) for peer in peers],
    })  # fmt: skip
    table("torch.profiler: tensors alive at the peak, by category",
          rows(lambda row: row.get("profiler", {}).get("by_category", {})))  # fmt: skip
    table("saved for the backward, by kind", rows(lambda row: row["saved"]["by_kind"]))
    table("saved for the backward (not parameters), by part",
          rows(lambda row: row["saved"]["by_part"]))  # fmt: skip
    for peer in peers:
        print(f"\ntorch.profiler, {peer}: the tensors alive at the peak by where they were made:")
        for site, size in report[peer].get("profiler", {}).get("sites", {}).items():
            print(f"  {size:8.1f}  {site}")
    for peer in peers:
        found = report[peer].get("memray")
        if found is not None:
            print(f"\nmemray, {peer}: {found['peak']:.1f} MiB at the high-water mark; top sites:")
            for site, size in found["sites"].items():
                print(f"  {size:8.1f}  {site}")
    if any("memray" in report[peer] and report[peer]["memray"] is None for peer in peers):
        print("\n(memray is not installed: `pip install memray` for the allocation sites)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="training image side (px)")
    parser.add_argument("--rois", type=int, default=512, help="training RoIs per image")
    parser.add_argument("--sites", type=int, default=15, help="memray sites shown per peer")
    parser.add_argument("--no-memray", action="store_true", help="skip the allocation sites")
    parser.add_argument(
        "--no-profiler",
        action="store_true",
        help="skip torch.profiler's categories (its analysis takes minutes)",
    )
    parser.add_argument("--peer", choices=PEERS, help="measure only this one")
    parser.add_argument(
        "--without", nargs="+", choices=ABLATIONS, default=[],
        help="seglab without these training-memory measures",
    )  # fmt: skip
    options = parser.parse_args()
    ablate(options.without)
    peers = (options.peer,) if options.peer else PEERS
    report = measure(
        options.size, options.rois, options.sites, use_memray=not options.no_memray,
        use_profiler=not options.no_profiler, peers=peers,
    )  # fmt: skip
    print_report(report)


if __name__ == "__main__":
    main()

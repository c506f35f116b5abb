"""int8 ONNX against float32 ONNX and PyTorch: time per image, interleaved, and file sizes.

Rerun on a quiet machine (the three files of one model: `seglab export MODEL --out F.onnx`
and `seglab export MODEL --out I.onnx --quantize int8`):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/onnx_int8.py RUN/model.safetensors \
        --onnx F.onnx --int8 I.onnx --images DATA/val --count 20 --rounds 5 [--threads 1] \
        [--out R.json]

Each engine runs the same images, one at a time, as `seglab predict` runs them: PyTorch in
eval mode under `no_grad`, onnxruntime through `OnnxModel` (CPU provider, its default
graph optimisations, which fuse the int8 file's QuantizeLinear / DequantizeLinear pairs
into int8 kernels). One warm-up pass, then `--rounds` passes; within a pass the engines
take turns on each image, in an order that rotates from image to image and pass to pass,
so that a change in the machine's load falls on the three alike. Per engine: the median
over passes of each image's time, averaged over the images. Threads: torch and onnxruntime
both get `--threads` (onnxruntime otherwise takes every core, whatever OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

import seglab
from seglab.data.images import load_image
from seglab.inference.onnx_model import OnnxModel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def onnx_engine(path: Path, threads: int) -> OnnxModel:
    """`OnnxModel` whose onnxruntime session uses `threads` threads."""
    import onnxruntime

    engine = OnnxModel(path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    engine.session = onnxruntime.InferenceSession(str(path), options,
                                                  providers=["CPUExecutionProvider"])  # fmt: skip
    return engine


def read_images(source: Path, count: int, channels: int) -> list[torch.Tensor]:
    """The first `count` images of a folder (sorted by name), or the image file, as float
    (C, H, W) in [0, 1]."""
    files = [source] if source.is_file() else sorted(
        path for path in source.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
    images = []
    for path in files[:count]:
        loaded = load_image(path, channels)
        images.append(TF.to_dtype(loaded, torch.float32, scale=True).as_subclass(torch.Tensor))
    return images


def interleaved_times(engines: dict, images: list, rounds: int) -> dict[str, list[list[float]]]:
    """Seconds of each engine on each image in each pass: engine -> [image][pass]."""
    names = list(engines)
    times = {name: [[] for _ in images] for name in names}
    for round_index in range(rounds + 1):  # pass 0 warms up
        for image_index, image in enumerate(images):
            shift = (round_index + image_index) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                with torch.no_grad():
                    engines[name]([image])
                if round_index:
                    times[name][image_index].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[list[float]]], sizes: dict[str, int]) -> dict:
    """Per engine: mean over images of the median per image (ms), its ratio to PyTorch's
    and to ONNX float32's, the file's size (MB)."""
    ms = {name: 1000 * statistics.fmean(statistics.median(each) for each in per_image)
          for name, per_image in times.items()}  # fmt: skip
    return {
        name: {"ms_per_image": ms[name], "vs_pytorch": ms[name] / ms["PyTorch float32"],
               "vs_onnx_float32": ms[name] / ms["ONNX float32"], "MB": sizes[name] / 1e6}
        for name in times
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="RUN/model.safetensors")
    parser.add_argument("--onnx", type=Path, required=True, help="its float32 export")
    parser.add_argument("--int8", type=Path, required=True, help="its int8 export")
    parser.add_argument("--images", type=Path, required=True, help="an image or a folder")
    parser.add_argument("--count", type=int, default=20, help="images (the first, by name)")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over the images")
    parser.add_argument("--threads", type=int, default=1, help="for torch and onnxruntime")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = seglab.load_model(args.model).eval()
    engines = {"PyTorch float32": model, "ONNX float32": onnx_engine(args.onnx, args.threads),
               "ONNX int8": onnx_engine(args.int8, args.threads)}  # fmt: skip
    sizes = {"PyTorch float32": args.model.stat().st_size, "ONNX float32":
             args.onnx.stat().st_size, "ONNX int8": args.int8.stat().st_size}  # fmt: skip
    images = read_images(args.images, args.count, model.card.in_channels)
    results = summarise(interleaved_times(engines, images, args.rounds), sizes)
    print(f"{len(images)} images, {args.rounds} passes, {args.threads} thread(s), torch "
          f"{torch.__version__}")  # fmt: skip
    print(f"{'engine':<16} {'ms/image':>9} {'vs PyTorch':>10} {'vs ONNX fp32':>12} {'MB':>7}")
    for name, row in results.items():
        print(f"{name:<16} {row['ms_per_image']:>9.1f} {row['vs_pytorch']:>10.3f} "
              f"{row['vs_onnx_float32']:>12.3f} {row['MB']:>7.1f}")  # fmt: skip
    if args.out:
        record = {"images": len(images), "rounds": args.rounds, "threads": args.threads,
                  "engines": results}  # fmt: skip
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""How long the `seglab` command takes to answer when it needs no tensors (issue 22).

Rerun: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cli_startup.py [--repeats 5]`.
Each case is a fresh process, as a user starts it: `seglab --help`, `seglab --version`,
`seglab train --help`, `seglab train --list`, and a config with a typo (`train.lrr`) that
must be refused before any tensor exists; the peer is `python -c "import torch"`, the
least any command that imports torch can take. The cases are run in turn `--repeats`
times (so load changes affect all of them alike) and the medians reported, with each
case's ratio to the peer (the target: at most 0.2). `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 0.2


def cases(folder: Path) -> dict[str, list[str]]:
    """Case name -> argv (after the Python executable)."""
    config = folder / "typo.yaml"
    config.write_text("seed: 0\nmodel: {name: cnn}\ndata: {root: ., layout: folders}\n"
                      "train: {lrr: 0.1}\n")  # fmt: skip
    seglab = ["-m", "seglab"]
    return {
        'python -c "import torch"': ["-c", "import torch"],
        "seglab --help": [*seglab, "--help"],
        "seglab --version": [*seglab, "--version"],
        "seglab train --help": [*seglab, "train", "--help"],
        "seglab train --list": [*seglab, "train", "--list"],
        "seglab train typo.yaml (config typo, exit 2)": [
            *seglab,
            "train",
            str(config),
            "--out",
            str(folder / "run"),
        ],  # fmt: skip
    }


def seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        named = cases(Path(folder))
        times: dict[str, list[float]] = {name: [] for name in named}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for name, argv in named.items():
                times[name].append(seconds(argv))
        load_after = os.getloadavg()[0]
    medians = {name: statistics.median(values) for name, values in times.items()}
    peer = medians['python -c "import torch"']
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load_before:.1f} -> {load_after:.1f}, "
          f"median of {args.repeats}")  # fmt: skip
    print("| command | median s | / import torch |")
    print("|---|---:|---:|")
    for name, median in medians.items():
        print(f"| `{name}` | {median:.3f} | {median / peer:.3f} |")
    worst = max(m / peer for name, m in medians.items() if name.startswith("seglab"))
    verdict = "within" if worst <= TARGET_RATIO else "OVER"
    print(f"worst seglab case: {worst:.3f} x import torch ({verdict} the {TARGET_RATIO} target)")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians_s": medians, "peer_s": peer}, indent=2))


if __name__ == "__main__":
    main()

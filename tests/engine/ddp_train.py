"""`seglab train` as torchrun runs it, for tests/engine/test_distributed.py: the command
line's own entry point, and each process's weights after its last optimizer step saved to
OUT/rank<RANK>.pt (the run's files are rank 0's alone).

    torchrun --standalone --nproc_per_node 2 tests/engine/ddp_train.py OUT train CONFIG ...
"""

from __future__ import annotations

import os
import sys

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from seglab.cli.main import main

out, argv = sys.argv[1], sys.argv[2:]
last: dict[str, list[torch.Tensor]] = {}


def keep_weights(optimizer, args, kwargs) -> None:
    last["weights"] = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]


register_optimizer_step_post_hook(keep_weights)
code = main(argv)
torch.save(last["weights"], os.path.join(out, f"rank{os.environ['RANK']}.pt"))
sys.exit(code)

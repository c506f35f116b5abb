"""ddp_train.py (`seglab train` under torchrun, each rank's last weights saved to
OUT/rank<RANK>.pt) for tests/engine/test_multinode.py, where one node can be lost: with
LOSE_NODE_AT_STEP=K in its environment, the process of rank LOSE_RANK (default 1) kills its
node, the torchrun agent that started it and then itself, with SIGKILL (no handler runs, as
when a machine goes down), once it has taken its K-th optimizer step of the session.

    torchrun --nnodes 2 ... tests/engine/multinode_train.py OUT train CONFIG --out RUN
"""

from __future__ import annotations

import os
import runpy
import signal
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook

steps_taken = 0


def lose_node(optimizer, args, kwargs) -> None:
    global steps_taken
    steps_taken += 1
    if steps_taken == int(os.environ["LOSE_NODE_AT_STEP"]):
        os.kill(os.getppid(), signal.SIGKILL)  # the torchrun agent of this node (its parent)
        os.kill(os.getpid(), signal.SIGKILL)


if "LOSE_NODE_AT_STEP" in os.environ and os.environ["RANK"] == os.environ.get("LOSE_RANK", "1"):
    register_optimizer_step_post_hook(lose_node)
runpy.run_path(str(Path(__file__).with_name("ddp_train.py")), run_name="__main__")

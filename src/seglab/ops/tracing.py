"""Whether the code runs under a tracer (ONNX export, torch.export, torch.compile, TorchScript).

The fast paths (folded norms, oneDNN's fused kernels, channels-last layouts, the sparse
RoIAlign) are eager CPU tricks: under a tracer the modules run as written, so that the
exported or compiled graph holds the plain operators its backend knows.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    return (
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
    )

"""seglab: CNN, R-CNN, Fast/Faster/Mask R-CNN and U-Net, from the papers, in readable PyTorch.

`import seglab` imports no torch: the public functions below are imported on first use
(PEP 562 module `__getattr__`), so that `seglab --help`, `seglab --version` and a config
mistake answer before PyTorch's seconds of start-up (issue 22).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.errors import UserError

__version__ = "0.1.0"

__all__ = [
    "MODEL_BUILDERS",
    "UserError",
    "build_model",
    "load_model",
    "predict_tiled",
    "save_model",
]

# public name -> the module that defines it, imported when the name is first read
_LAZY = {
    "MODEL_BUILDERS": "seglab.models.zoo",
    "build_model": "seglab.models.zoo",
    "load_model": "seglab.models.zoo",
    "save_model": "seglab.models.zoo",
    "predict_tiled": "seglab.inference.tiling",
}

if TYPE_CHECKING:  # what editors and type checkers see
    from seglab.inference.tiling import predict_tiled
    from seglab.models.zoo import MODEL_BUILDERS, build_model, load_model, save_model


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'seglab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

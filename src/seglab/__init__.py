"""seglab: CNN, R-CNN, Fast/Faster/Mask R-CNN and U-Net, from the papers, in readable PyTorch."""

from seglab.errors import UserError
from seglab.models.zoo import MODEL_BUILDERS, build_model, load_model, save_model

__version__ = "0.1.0"

__all__ = ["MODEL_BUILDERS", "UserError", "build_model", "load_model", "save_model"]


def __getattr__(name: str):
    # predict_tiled pulls in the U-Net inference code; import it only when asked for.
    if name == "predict_tiled":
        from seglab.inference.tiling import predict_tiled

        return predict_tiled
    raise AttributeError(f"module 'seglab' has no attribute {name!r}")

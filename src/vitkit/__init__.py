"""vitkit: the Vision Transformer of Dosovitskiy et al. (2020), numerically the official model."""

from .checkpoints import CheckpointError, load_model, save_model
from .evaluate.fewshot_lsr import fewshot
from .models import ViTConfig, create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ViTConfig", "create_model", "fewshot", "list_models", "load_model", "save_model", "__version__",
]

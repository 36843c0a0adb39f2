"""The network: ViT, hybrids, the BiT ResNet, and the registry of named configs."""

from .arch import arch_diff
from .bit import BiTResNet
from .config import ResNetConfig, ViTConfig
from .posemb import resample_grid, resample_posemb
from .registry import build_model, canonical_name, create_model, get_config, list_models
from .vit import Intermediates, VisionTransformer

__all__ = [
    "BiTResNet", "Intermediates", "arch_diff", "ResNetConfig", "ViTConfig", "VisionTransformer", "build_model",
    "canonical_name", "create_model", "get_config", "list_models", "resample_grid", "resample_posemb",
]

"""Training: one typed config tree, presets, and the loop behind ``vitkit train``.

>>> from vitkit.train import get_preset, apply_overrides, train
>>> cfg = apply_overrides(get_preset("default"), ["out=runs/digits", "optim.lr=0.001"])
>>> summary = train(cfg)            # writes config.yaml, metrics.jsonl, tb/, summary.json, model.safetensors
"""

from .config import TrainConfig, apply_overrides, load_yaml, save_yaml
from .guard import TrainingDiverged
from .loop import train
from .presets import PRESETS, get_preset

__all__ = ["PRESETS", "TrainConfig", "TrainingDiverged", "apply_overrides", "get_preset", "load_yaml", "save_yaml",
           "train"]

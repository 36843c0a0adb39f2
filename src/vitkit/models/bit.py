"""The BiT ResNet alone as a classifier (the paper's ResNet baseline, ``BiT-R50x1`` etc.).

It is the hybrid stem of :mod:`vitkit.models.resnet` (same units, padding and weight
standardisation), followed by global average pooling and a zero-initialised head.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ViTConfig
from .init import zero_head
from .model_api import ModelApi
from .resnet import ResNetStem


class BiTResNet(ModelApi, nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if cfg.transformer or cfg.resnet is None:
            raise ValueError("BiTResNet needs transformer=False and a resnet config")
        self.config = cfg
        self.resnet = ResNetStem(cfg.resnet, cfg.in_chans)
        self.head = zero_head(self.resnet.out_channels, cfg.num_classes, cfg.head_bias_init)

    def reset_head(self, num_classes: int, representation_size: int | None = None, head_bias_init: float = 0.0) -> None:
        if representation_size:
            raise ValueError("a BiT ResNet has no representation layer")
        self.config = self.config.replace(num_classes=num_classes, head_bias_init=head_bias_init, class_names=None)
        self.head = zero_head(self.resnet.out_channels, num_classes, head_bias_init)

    def set_image_size(self, image_size: int | tuple[int, int], method: str | None = None) -> None:
        self.config = self.config.replace(image_size=image_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_chans or not x.is_floating_point():
            raise ValueError(f"input images must be float (N, {cfg.in_chans}, H, W); got {x.dtype} {tuple(x.shape)}")
        return self.resnet(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_attention_maps(self, x: torch.Tensor, layers=None) -> list[torch.Tensor]:  # noqa: ANN001
        raise TypeError(f"{self.config.name} is a ResNet and has no attention maps")

"""The convolutional stem of Xiao et al. 2021 ("Early Convolutions Help Transformers See Better", ViT_C).

A few 3x3 convolutions, each followed by BatchNorm and ReLU, replace the first steps of the patch
embedding; the model's 1x1 ``embedding`` then plays the paper's final 1x1 convolution. It is not in the
official code (its checkpoints have no such stem), so only vitkit's own files hold it. Why it is here: on
small images it trains much faster than the patchify stem or the BiT root (``cifar10_cpu``'s docstring has
the measurements).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import eager_cpu


class BatchNorm2d(nn.Module):
    """``nn.BatchNorm2d`` (momentum 0.1, eps 1e-5) without the integer ``num_batches_tracked`` counter.

    Written out because that counter is an int64 tensor in the state dict, and vitkit's loaders refuse
    non-floating tensors in untrusted files (``checkpoints/validate.py``); with a fixed momentum PyTorch never
    reads it. Same arithmetic as ``nn.BatchNorm2d``: ``F.batch_norm`` on the same buffers.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)


class ConvBNReLU(nn.Module):
    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        # PyTorch's default (kaiming-uniform) init: BatchNorm follows, so only the weights' scale relative to
        # AdamW's steps matters, and this is the scale the preset was measured with.
        self.conv = nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)
        self.norm = BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ConvStem(nn.Module):
    """(N, C, H, W) -> (N, channels[-1], H / prod(strides), W / prod(strides))."""

    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...], in_chans: int = 3):
        super().__init__()
        ins = (in_chans, *channels[:-1])
        self.layers = nn.Sequential(*(ConvBNReLU(i, o, s) for i, o, s in zip(ins, channels, strides)))
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if eager_cpu(x):  # oneDNN's CPU convolutions and BatchNorm run on channels-last without reorders
            x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x)

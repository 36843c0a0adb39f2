"""The BiT ResNet of ``vit_jax/models_resnet.py``: the hybrid stem and the paper's baseline.

Two details decide whether the numbers match the official model:

* Flax convolutions and max-pooling use TensorFlow's ``SAME`` padding, which for stride 2 pads
  *asymmetrically* (less before than after). PyTorch's symmetric ``padding=k//2`` shifts the
  sampling grid by one pixel, so we pad explicitly.
* Weight standardisation is ``(w - mean) / (std + 1e-5)`` (population std, epsilon added to the
  std, not the variance), per output channel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ResNetConfig
from .init import lecun_normal_


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow/Flax ``SAME`` padding (before, after) for one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_pads(x: torch.Tensor, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """``SAME`` padding of ``x``'s last two dimensions in ``F.pad`` order: (left, right, top, bottom)."""
    return (*same_padding(x.shape[-1], kernel, stride), *same_padding(x.shape[-2], kernel, stride))


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    pads = _same_pads(x, kernel, stride)
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class StdConv2d(nn.Conv2d):
    """Weight-standardised convolution with Flax ``SAME`` padding and no bias."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, eps: float = 1e-5):
        super().__init__(in_chans, out_chans, kernel_size, stride=stride, padding=0, bias=False)
        self.eps = eps
        lecun_normal_(self.weight)

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        dims = (1, 2, 3)
        mean = w.mean(dim=dims, keepdim=True)
        std = w.std(dim=dims, keepdim=True, unbiased=False)
        return (w - mean) / (std + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.standardized_weight(), None, self.stride)


def group_norm(channels: int, zero_init: bool = False) -> nn.GroupNorm:
    # Flax nn.GroupNorm defaults: 32 groups, epsilon 1e-6.
    gn = nn.GroupNorm(32, channels, eps=1e-6)
    if zero_init:
        nn.init.zeros_(gn.weight)
    return gn


class _PadChannelsLast(torch.autograd.Function):
    """``F.pad`` with a constant whose result is channels-last, in one copy; the gradient goes back contiguous.

    Written out because ``pad`` then ``.contiguous(memory_format=...)`` copies twice, and autograd would hand the
    gradient back in channels-last, where the ops before it (the root block's ReLU backward) run a ~5x slower
    mixed-layout kernel.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, pads: tuple[int, int, int, int],
                value: float) -> torch.Tensor:
        left, right, top, bottom = pads
        n, c, h, w = x.shape
        out = torch.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        out.fill_(value)
        out[:, :, top:top + h, left:left + w] = x
        ctx.pads = pads
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        left, right, top, bottom = ctx.pads
        h, w = grad.shape[-2] - top - bottom, grad.shape[-1] - left - right
        return grad[:, :, top:top + h, left:left + w].contiguous(), None, None


def eager_cpu(x: torch.Tensor) -> bool:
    """Whether ``x`` runs through eager CPU kernels: where a memory-layout trick pays. Tracers (ONNX, TorchScript)
    and inductor get the plain graph."""
    return (x.device.type == "cpu" and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and not torch.compiler.is_compiling())


def _channels_last_pool_pays(x: torch.Tensor) -> bool:
    """Whether :func:`max_pool_same` should take the channels-last path for ``x``.

    PyTorch's CPU max-pool is 3-5x faster on channels-last memory, forward (measured, 2 threads: 128x128x16x16
    19 -> 4-6 ms, 8x64x112x112 30 -> 5-7 ms, fp32 or bf16). With a gradient the two layout copies weigh more:
    forward+backward still gains in bf16 at every size measured (1.1-1.75x) and in fp32 up to ~4M elements
    (1.08-1.35x), but fp32 loses on larger maps (12x64x112x112: 0.71x), so those keep the plain path.
    """
    if not eager_cpu(x) or x.dim() != 4 or not x.is_contiguous():
        return False
    if not (x.requires_grad and torch.is_grad_enabled()):
        return True
    return x.dtype != torch.float32 or x.numel() <= 1 << 22


def max_pool_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Flax ``max_pool(padding='SAME')``: pads with -inf, so padding never wins the max."""
    if _channels_last_pool_pays(x):
        # Same values and gradients as the plain path; only the memory layout of the pooled input differs.
        x = _PadChannelsLast.apply(x, _same_pads(x, kernel, stride), float("-inf"))
        # Back to channels-first: the stage's GroupNorms run several times slower on channels-last input.
        return F.max_pool2d(x, kernel, stride).contiguous()
    return F.max_pool2d(pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)


class ResidualUnit(nn.Module):
    """Bottleneck unit (post-activation, stride on the 3x3 conv) as in the official code."""

    def __init__(self, in_chans: int, features: int, stride: int = 1):
        super().__init__()
        out = features * 4
        self.needs_projection = in_chans != out or stride != 1
        if self.needs_projection:
            self.conv_proj = StdConv2d(in_chans, out, 1, stride=stride)
            self.gn_proj = group_norm(out)
        self.conv1 = StdConv2d(in_chans, features, 1)
        self.gn1 = group_norm(features)
        self.conv2 = StdConv2d(features, features, 3, stride=stride)
        self.gn2 = group_norm(features)
        self.conv3 = StdConv2d(features, out, 1)
        self.gn3 = group_norm(out, zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        if self.needs_projection:
            residual = self.gn_proj(self.conv_proj(x))
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return F.relu(residual + y)


class ResNetStage(nn.Sequential):
    def __init__(self, in_chans: int, block_size: int, nout: int, first_stride: int):
        units = [ResidualUnit(in_chans, nout, stride=first_stride)]
        units += [ResidualUnit(nout * 4, nout) for _ in range(1, block_size)]
        super().__init__(*units)


class ResNetStem(nn.Module):
    """Root block plus stages; output is a (N, C, H/r, W/r) feature map."""

    def __init__(self, cfg: ResNetConfig, in_chans: int = 3):
        super().__init__()
        width = cfg.width
        self.conv_root = StdConv2d(in_chans, width, 7, stride=2)
        self.gn_root = group_norm(width)
        self.stages = nn.ModuleList()
        chans = width
        for i, block_size in enumerate(cfg.num_layers):
            nout = width * 2**i
            self.stages.append(ResNetStage(chans, block_size, nout, first_stride=1 if i == 0 else 2))
            chans = nout * 4
        self.out_channels = chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gn_root(self.conv_root(x)))
        x = max_pool_same(x, 3, 2)
        for stage in self.stages:
            x = stage(x)
        return x

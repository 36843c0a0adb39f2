"""Masked patch prediction: the paper's self-supervised pre-training (Section 4.6, Appendix B.1.2).

50% of the patch embeddings are corrupted: of those, 80% are replaced by a learnable [mask] embedding, 10% by a
random other patch embedding of the batch, 10% are left as they are. The encoder then predicts, from each
corrupted patch's output token through one linear head, the patch's 3-bit mean colour (512 classes; the paper's
reported setting). The other targets the paper tried fit the same code: ``downsized`` (the 4x4 downsized patch in
3-bit colours, 16 predictions of 512 classes) and ``pixels`` (L2 regression on the full patch). The loss counts the
corrupted patches only.

The corruption is drawn from a generator seeded with (seed, the model's own step counter, rank): the counter is a
buffer, so it is in every training checkpoint and a resumed run corrupts exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..image_size import as_hw
from .vit import VisionTransformer

MPP_TARGETS = ("mean_color", "downsized", "pixels")


def _patches(pixels: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) -> (N, patches, 3, P, P) in row-major patch order."""
    ph, pw = as_hw(patch_size, "patch_size")
    n, c, h, w = pixels.shape
    if h % ph or w % pw:
        raise ValueError(f"image {h}x{w} is not divisible into {ph}x{pw} patches")
    p = pixels.reshape(n, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(n, (h // ph) * (w // pw), c, ph, pw)


def _color_class(means: torch.Tensor, bits: int) -> torch.Tensor:
    """(..., 3) channel means in [0, 1] -> class ``r * 2**(2*bits) + g * 2**bits + b``."""
    levels = 2**bits
    q = torch.clamp(torch.floor(means * levels), max=levels - 1).long()
    return q[..., 0] * levels * levels + q[..., 1] * levels + q[..., 2]


def mean_color_targets(pixels: torch.Tensor, patch_size: int | tuple[int, int], bits: int = 3) -> torch.Tensor:
    """The paper's target: each patch's mean colour in ``bits`` bits per channel, as one class.

    ``pixels`` (N, 3, H, W) in [0, 1] -> (N, patches) int64, patches in row-major order; per channel the patch mean
    is binned as ``min(floor(mean * 2**bits), 2**bits - 1)``, class = ``r * 2**(2*bits) + g * 2**bits + b``."""
    return _color_class(_patches(pixels.float(), patch_size).mean(dim=(3, 4)), bits)


def downsized_color_targets(pixels: torch.Tensor, patch_size: int | tuple[int, int], bits: int = 3,
                            size: int = 4) -> torch.Tensor:
    """Each patch downsized to ``size`` x ``size`` (area average), each cell's colour as a class:
    (N, patches, size * size) int64."""
    p = _patches(pixels.float(), patch_size)
    n, k, c, ph, pw = p.shape
    cells = F.adaptive_avg_pool2d(p.reshape(n * k, c, ph, pw), size)  # (n*k, 3, size, size)
    return _color_class(cells.permute(0, 2, 3, 1), bits).reshape(n, k, size * size)


def pixel_targets(pixels: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """The full patch for L2 regression: (N, patches, 3 * P * P) float32."""
    p = _patches(pixels.float(), patch_size)
    return p.reshape(p.shape[0], p.shape[1], -1)


@dataclass
class Corruption:
    """Which patches are corrupted and how (``action``: 0 kept, 1 [mask], 2 another patch, whose flat batch index
    is ``source``)."""

    corrupted: torch.Tensor  # (N, patches) bool
    action: torch.Tensor  # (N, patches) int64
    source: torch.Tensor  # (N, patches) int64 into the flattened (N * patches) embeddings


def draw_corruption(n: int, patches: int, generator: torch.Generator, ratio: float = 0.5, mask: float = 0.8,
                    other: float = 0.1) -> Corruption:
    """Per patch: corrupted with probability ``ratio``; a corrupted one is masked (``mask``), replaced by a random
    other patch of the batch (``other``) or kept (the rest). Drawn on the CPU from ``generator``."""
    corrupted = torch.rand(n, patches, generator=generator) < ratio
    if not corrupted.any():  # a tiny batch with nothing corrupted would have no loss: corrupt one patch
        corrupted.view(-1)[torch.randint(0, n * patches, (1,), generator=generator)] = True
    u = torch.rand(n, patches, generator=generator)
    action = torch.where(u < mask, 1, torch.where(u < mask + other, 2, 0)) * corrupted
    total = n * patches
    # uniformly among the other total - 1 patch embeddings of the batch
    pick = torch.randint(0, max(total - 1, 1), (n, patches), generator=generator)
    own = torch.arange(total).reshape(n, patches)
    source = pick + (pick >= own).long() if total > 1 else own
    return Corruption(corrupted, action.long(), source)


@dataclass
class MaskedOutput:
    """The predictions for the corrupted patches and their targets (what :func:`masked_patch_loss` compares)."""

    predictions: torch.Tensor  # (M, classes) / (M, cells, classes) / (M, values)
    targets: torch.Tensor  # (M,) int64 / (M, cells) int64 / (M, values) float32
    target: str


class MaskedPatchModel(nn.Module):
    """A ViT encoder with the [mask] embedding and the patch-prediction head; ``forward(images)`` (normalised as the
    encoder's config says) corrupts, encodes, and returns a :class:`MaskedOutput`."""

    def __init__(self, encoder: VisionTransformer, target: str = "mean_color", bits: int = 3, ratio: float = 0.5,
                 mask: float = 0.8, other: float = 0.1, seed: int = 0, rank: int = 0):
        super().__init__()
        if target not in MPP_TARGETS:
            raise ValueError(f"target={target!r}; expected one of {MPP_TARGETS}")
        if not isinstance(encoder, VisionTransformer):
            raise ValueError("masked patch prediction pre-trains a ViT (not a BiT ResNet)")
        self.encoder, self.target, self.bits = encoder, target, bits
        self.ratio, self.mask_p, self.other_p, self.seed, self.rank = ratio, mask, other, seed, rank
        d = encoder.config.hidden_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.mask_token, std=0.02)
        classes = 2 ** (3 * bits)
        p = self.pixel_patch
        out = {"mean_color": classes, "downsized": 16 * classes, "pixels": encoder.config.in_chans * p[0] * p[1]}
        self.head = nn.Linear(d, out[target])
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("corruption_step", torch.zeros((), dtype=torch.int64))

    @property
    def config(self):  # noqa: ANN201 - the encoder's ViTConfig
        return self.encoder.config

    @property
    def pixel_patch(self) -> tuple[int, int]:
        """The patch size in input pixels (the stem's stride times the embedding's)."""
        return self.encoder.config.stride

    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        mixed = self.seed * 0x9E3779B1 + int(self.corruption_step) * 0x85EBCA77 + self.rank * 0xC2B2AE3D
        g.manual_seed(mixed % 2**63)
        return g

    def _targets(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.encoder.config
        mean = torch.tensor(cfg.mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(cfg.std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
        pixels = (x.float() * std + mean).clamp(0, 1)  # the model's normalisation undone
        if self.target == "mean_color":
            return mean_color_targets(pixels, self.pixel_patch, self.bits)
        if self.target == "downsized":
            return downsized_color_targets(pixels, self.pixel_patch, self.bits)
        return pixel_targets(pixels, self.pixel_patch)

    def forward(self, x: torch.Tensor, corruption: Corruption | None = None) -> MaskedOutput:
        holder: dict[str, Corruption] = {}

        def corrupt(tokens: torch.Tensor) -> torch.Tensor:
            n, k, d = tokens.shape
            c = corruption or draw_corruption(n, k, self._generator(), self.ratio, self.mask_p, self.other_p)
            holder["c"] = c
            action = c.action.to(tokens.device).unsqueeze(-1)
            other = tokens.reshape(n * k, d)[c.source.to(tokens.device).reshape(-1)].reshape(n, k, d)
            out = torch.where(action == 1, self.mask_token.to(tokens.dtype).expand(n, k, d), tokens)
            return torch.where(action == 2, other, out)

        enc = self.encoder
        h = enc._final_norm(enc._encode(enc.embed(x, corrupt=corrupt)))[:, enc.config.num_prefix_tokens:]
        if self.training and corruption is None:
            self.corruption_step += 1
        sel = holder["c"].corrupted.to(x.device)
        targets = self._targets(x)[sel]
        pred = self.head(h[sel])
        if self.target == "downsized":
            pred = pred.reshape(pred.shape[0], 16, -1)
        return MaskedOutput(pred, targets, self.target)


def masked_patch_loss(out: MaskedOutput, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the corrupted patches (mean over them; ``downsized``: over their 16 cells), or the mean
    squared error for ``pixels``. ``labels`` are ignored: the pre-training uses no labels."""
    if out.target == "pixels":
        return F.mse_loss(out.predictions.float(), out.targets)
    if out.target == "downsized":
        return F.cross_entropy(out.predictions.float().reshape(-1, out.predictions.shape[-1]), out.targets.reshape(-1))
    return F.cross_entropy(out.predictions.float(), out.targets)

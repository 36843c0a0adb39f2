"""Mixup / CutMix with label smoothing (batch mode, the DeiT/timm recipe), driven by an explicit generator.

Each call draws one lambda for the whole batch and mixes every sample with the batch in reverse order (as the
official ViT input pipeline does for mixup). With probability ``switch_prob`` CutMix is used instead of Mixup (when
both are enabled); with probability ``1 - prob`` nothing is mixed (targets are only smoothed). Beta samples come from
numpy seeded by a draw of the torch generator, because torch's Beta sampler cannot take a generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UserError


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with ``smoothing`` spread evenly: off = s/K, on = 1 - s + s/K (each row sums to 1)."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


class Mixup:
    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, num_classes: int = 1000):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise UserError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1 or not 0 <= label_smoothing < 1:
            raise UserError("prob and switch_prob must be in [0, 1] and label_smoothing in [0, 1)")
        if num_classes <= 0:
            raise UserError(f"num_classes must be positive, got {num_classes}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.label_smoothing, self.num_classes = float(label_smoothing), int(num_classes)

    def _params(self, generator: torch.Generator) -> tuple[float, bool, np.random.Generator]:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        rng = np.random.default_rng(seed)
        if rng.random() >= self.prob or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return 1.0, False, rng
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix, rng

    @staticmethod
    def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """Box (y0, y1, x0, x1) covering ~(1 - lam) of the image, centre uniform, clipped to the image."""
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        return (max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[0] != labels.shape[0]:
            raise UserError(f"mixup: {images.shape[0]} images but {labels.shape[0]} labels")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(f"mixup: labels must be in [0, {self.num_classes})")
        lam, use_cutmix, rng = self._params(generator)
        target = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        if lam == 1.0:
            return images, target
        flipped = images.flip(0)
        if use_cutmix:
            h, w = images.shape[-2:]
            y0, y1, x0, x1 = self.cutmix_box(h, w, lam, rng)
            images = images.clone()
            images[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)  # the area actually pasted
        else:
            images = images * lam + flipped * (1.0 - lam)
        return images, target * lam + target.flip(0) * (1.0 - lam)

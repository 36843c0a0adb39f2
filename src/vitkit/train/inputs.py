"""What feeds the training step: the next micro-batches from the loader (across epoch ends), on the device,
with progressive resizing, mixup and the per-(step, micro-batch, rank) random seeds.

Reproducibility: every random draw of a step (dropout, stochastic depth, mixup) comes from a generator re-seeded
from (seed, step, rank, micro-batch), so the step number *is* the random state and a resume continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..data import Loader, Mixup
from ..errors import UserError
from .config import TrainConfig
from .dist import DistInfo


def step_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    # Distinct, reproducible streams per (seed, step, micro-batch, rank); fits in 63 bits.
    return (seed * 1_000_003 + step * 7919 + micro * 104_729 + rank * 15_485_863) % (2**63 - 1)


class StepInputs:
    """Micro-batches for one step at a time; ``epoch`` is the loader's epoch of the last batch taken."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo, device: torch.device, loader: Loader, mixup: Mixup | None,
                 low_res: tuple[int, int] | None, micro: int, accum: int, epoch: int = 0):
        self.cfg, self.dist, self.device, self.loader, self.mixup = cfg, dist, device, loader, mixup
        self.low_res, self.micro, self.accum, self.epoch = low_res, micro, accum, epoch
        self._it = iter(loader)
        self._empty_epoch = False

    def _next(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            try:
                batch = next(self._it)
                self._empty_epoch = False
                return batch
            except StopIteration:
                # The loader moves itself to the next epoch at the end of one (and says which).
                self.epoch = self.loader.epoch
                self._it = iter(self.loader)
                if self._empty_epoch:
                    raise UserError(f"data.train={self.cfg.data.train!r}: the loader yielded no batch of "
                                     f"{self.micro} images") from None
                self._empty_epoch = True

    def for_step(self, step: int, done: float, count: Callable[[int], None]) -> Iterator[tuple[torch.Tensor, Any]]:
        """Step ``step``'s ``accum`` micro-batches of (images, targets); ``done``: the fraction of training done
        (steps or time), which decides the progressive-resizing phase; ``count(n)`` is told the images used."""
        cfg, d = self.cfg, self.dist
        for micro in range(self.accum):
            images, labels = self._next()
            torch.manual_seed(step_seed(cfg.seed, step, d.rank, micro))
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            images = self._resize_for_phase(images, done)
            targets = labels
            if self.mixup is not None:
                gen = torch.Generator().manual_seed(step_seed(cfg.seed + 1, step, d.rank, micro))
                images, targets = self.mixup(images, labels, gen)
                targets = targets.to(self.device)
            count(images.shape[0] * d.world_size)
            yield images, targets

    def _resize_for_phase(self, images: torch.Tensor, done: float) -> torch.Tensor:
        """Progressive resizing (``data.progressive_resize``): downsample the batch while in the
        low-resolution phase. Done here rather than in the loader so that the phase can change at
        any step (the workers keep their prefetched batches) and resumes stay exact."""
        pr = self.cfg.data.progressive_resize
        if pr is None or self.low_res is None or done >= pr[1]:
            return images
        # Antialiased bilinear: the same filter family as the loader's resize of the decoded image.
        return F.interpolate(images, size=self.low_res, mode="bilinear", antialias=True, align_corners=False)

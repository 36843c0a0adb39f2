"""The training step: the one function ``vitkit train``, ``vitkit bench --mode train`` and the
benchmarks run (tests/train/test_train_step.py checks that they do).

One optimisation step is: forward under the precision's autocast, loss, backward (scaled for
fp16) over the micro-batches of gradient accumulation, optional unscale and global-norm
clipping, decoupled weight decay where the optimiser asks for it (SGD), the optimiser's update,
and zeroing the gradients. Everything that is not the step itself (the learning-rate schedule,
data and augmentation, the random seeds, EMA, logging) stays with the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..perf import autocast
from .optim import apply_decoupled_wd

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepResult:
    """What one step leaves behind, as tensors on the device (reading them waits for it)."""

    loss: torch.Tensor  # mean loss over the micro-batches, float64, before the update
    grad_norm: torch.Tensor | None  # global gradient norm before clipping (None: clipping off)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of integer labels, computed in float32 (the benchmarks' loss)."""
    return F.cross_entropy(logits.float(), targets)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    loss_fn: LossFn,
    precision: str,
    accum: int = 1,
    clip_norm: float = 0.0,
    params: Iterable[torch.Tensor] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    no_sync: Callable[[], AbstractContextManager[object]] | None = None,
    after_backward: Callable[[torch.Tensor], None] | None = None,
) -> StepResult:
    """One optimisation step over ``accum`` micro-batches of ``(images, targets)`` (on the device).

    ``model``: what runs the forward (the bare model, or its DDP/FSDP/compiled wrapper);
    ``params``: the parameters to clip (default ``model.parameters()``); ``precision``: a resolved
    precision for :func:`vitkit.perf.autocast`; each micro-batch's loss is divided by ``accum``.
    ``no_sync``: DDP's ``no_sync`` (used for every micro-batch but the last); ``scaler``: the fp16
    gradient scaler; ``after_backward(mean_loss)``: called once the gradients are complete and
    before the update (the trainer reads its divergence and stop flags there).
    """
    loss_sum: torch.Tensor | None = None
    n = 0
    for xb, yb in micro_batches:
        n += 1
        sync = no_sync is None or n == accum
        with contextlib.nullcontext() if sync else no_sync():  # type: ignore[misc]
            with autocast(precision, xb.device):
                logits = model(xb)
            loss = loss_fn(logits, yb)
            scaled = loss / accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        # Stays on the device: no sync per micro-batch.
        loss_sum = loss.detach().double() if loss_sum is None else loss_sum + loss.detach().double()
    if n != accum or loss_sum is None:
        raise ValueError(f"train_step: got {n} micro-batches, expected accum={accum}")
    mean = loss_sum / accum
    if after_backward is not None:
        after_backward(mean)
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = None
    if clip_norm > 0:
        # Kept as a tensor: reading it (a device sync on GPU) is left to the caller.
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters() if params is None else params, clip_norm)
    apply_decoupled_wd(optimizer)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(mean, grad_norm)


def fixed_batch_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                     precision: str, micro_batch: int | None = None, clip_norm: float = 1.0,
                     loss_fn: LossFn = cross_entropy) -> Callable[[], StepResult]:
    """A step over one fixed batch (split into micro-batches of ``micro_batch``), repeated by the
    benchmarks: :func:`train_step` with the model in training mode."""
    mb = micro_batch or x.shape[0]
    accum = -(-x.shape[0] // mb)
    model.train()

    def step() -> StepResult:
        return train_step(model, optimizer, zip(x.split(mb), y.split(mb)), loss_fn=loss_fn, precision=precision,
                          accum=accum, clip_norm=clip_norm)

    return step

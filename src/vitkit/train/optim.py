"""The optimiser factory (one for ``vitkit train``, ``vitkit bench`` and the benchmarks),
learning-rate schedule and EMA of the weights."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..models.model_api import NO_WEIGHT_DECAY
from .config import OptimConfig, ScheduleConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay for matrices and kernels; none for biases, norms and the parameters of
    :data:`~vitkit.models.model_api.NO_WEIGHT_DECAY` (the models' ``no_weight_decay()``; big_vision decays only
    ``kernel``s). Matched by the parameter's leaf name, so a wrapped model (DDP, FSDP, compiled) gets the same."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.split(".")[-1]
        if p.ndim <= 1 or leaf in NO_WEIGHT_DECAY or name.endswith("bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def adamw(params: Iterable[Any], *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0) -> torch.optim.AdamW:
    """``torch.optim.AdamW``, fused (one kernel over all parameters) where torch has it for the
    parameters' device (CPU, CUDA), else ``foreach``.

    The default on CPU is a Python loop over the parameters; the fused kernel computes the same
    update (measured: within 2.4e-7 after 3 steps on 32M parameters) about 9x faster here and
    without the full-size temporaries of ``foreach=True``. ``params``: tensors or param-group
    dicts, as for any torch optimiser.
    """
    params = list(params)
    kwargs: dict[str, Any] = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    if tensors and all(p.device.type in ("cpu", "cuda") for p in tensors):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # a dtype or tensor subclass fused does not take
            pass
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` over ``model``'s trainable parameters: AdamW (:func:`adamw`, fused)
    or SGD (decoupled weight decay applied by :func:`apply_decoupled_wd`, which the training step
    calls). Parameters that are never decayed (biases, norms, position embedding, class token)
    go to a group with ``weight_decay=0``."""
    wd = cfg.weight_decay
    if cfg.wd_mode == "schedule":
        # torch applies lr_t * wd; lr_t = lr * mult_t, so wd / lr gives a decay of wd * mult_t.
        wd = wd / cfg.lr
    groups = param_groups(model, wd)
    if cfg.name in ("adam", "adamw"):
        # Adam with decoupled weight decay is AdamW; ``adam`` with wd=0 is plain Adam.
        return adamw(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=wd)
    if cfg.name == "sgd":
        if wd:
            # SGD's own weight_decay is L2 (added to the gradient); decoupled decay is applied by
            # the trainer (``apply_decoupled_wd``) instead.
            for g in groups:
                g["decoupled_wd"] = g.pop("weight_decay")
                g["weight_decay"] = 0.0
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    raise ValueError(f"optim.name={cfg.name!r}; expected one of adam, adamw, sgd")


@torch.no_grad()
def apply_decoupled_wd(opt: torch.optim.Optimizer) -> None:
    """Decoupled weight decay for SGD: p -= lr * wd * p (before the gradient step, as AdamW)."""
    for g in opt.param_groups:
        wd = g.get("decoupled_wd", 0.0)
        if wd:
            for p in g["params"]:
                p.mul_(1.0 - g["lr"] * wd)


def lr_multiplier(step: int, cfg: ScheduleConfig, total_steps: int, progress: float | None = None) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based): linear warm-up from 0,
    then linear or cosine decay towards ``end_lr_ratio``. ``progress`` (0..1) overrides the
    step-based position in the decay (time-budgeted runs)."""
    warm = cfg.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.decay == "constant":
        return 1.0
    if progress is None:
        span = max(total_steps - warm, 1)
        progress = (step - warm) / span
    progress = min(max(progress, 0.0), 1.0)
    end = cfg.end_lr_ratio
    if cfg.decay == "linear":
        return end + (1.0 - end) * (1.0 - progress)
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of parameters and buffers (float copies)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in _full_state(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = _full_state(model)
        keys = [k for k in self.shadow if state[k].is_floating_point()]
        torch._foreach_lerp_([self.shadow[k] for k in keys], [state[k].detach().float() for k in keys],
                             1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(sd)
        if missing:
            raise ValueError(f"EMA state is missing {sorted(missing)[:5]}")
        for k, v in self.shadow.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise ValueError(f"EMA state {k!r} has shape {tuple(sd[k].shape)}, the model {tuple(v.shape)}")
        # Checkpoints are read onto the CPU: the shadow goes back where the model is (a GPU, say).
        self.shadow = {k: sd[k].detach().to(v.device, torch.float32, copy=True) for k, v in self.shadow.items()}


def _full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()}

"""The trainer's state in explicit parts, each built once when the :class:`~vitkit.train.loop.Trainer` is made.

* :class:`~vitkit.train.build.DataPlan`: what the data decides (classes, loss kind, batch arithmetic, run length);
* :class:`Feed`: the loaders, mixup and progressive-resizing size that feed the steps;
* :class:`Learner`: the model (bare, wrapped, compiled), the optimiser, EMA, grad scaler and precision;
* :class:`RunRecord`: where the run stands across resumes (step, times, checkpoints, the loss watch);
* :class:`Progress`: this process's loop between two steps (log window, pending flags, why it stopped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Loader, Mixup
from ..errors import UserError
from ..models.config import ViTConfig
from .build import DataPlan, build_loaders, build_mixup, grad_scaler, low_resolution
from .config import TrainConfig
from .dist import DistInfo, wrap_model
from .health import LossWatch
from .optim import EMA, build_optimizer


@dataclass
class Feed:
    """What feeds the steps and the evaluations."""

    train_loader: Loader
    test_loader: Loader | None  # None: no evaluation
    eval_sharded: bool  # each process evaluates its share of the test set (else all of it)
    mixup: Mixup | None
    low_res: tuple[int, int] | None  # the progressive-resizing phase's input size


def build_feed(cfg: TrainConfig, plan: DataPlan, model_config: ViTConfig, dist: DistInfo,
               device: torch.device) -> Feed:
    train_loader, test_loader, sharded = build_loaders(cfg, plan, model_config, dist,
                                                       pin_memory=device.type == "cuda")
    return Feed(train_loader, test_loader, sharded, build_mixup(cfg, plan.num_classes),
                low_resolution(cfg, model_config))


@dataclass
class Learner:
    """The model and everything that updates it. ``model`` is the bare module (state dicts, saving), ``ddp_model``
    it wrapped for the processes (DDP, FSDP; itself on one process), ``fwd_model`` what the step calls (compiled
    or ``ddp_model``)."""

    model: nn.Module
    ddp_model: nn.Module
    fwd_model: nn.Module
    opt: torch.optim.Optimizer
    ema: EMA | None
    scaler: torch.amp.GradScaler | None
    precision: str
    fsdp: bool


def build_learner(cfg: TrainConfig, model: nn.Module, dist: DistInfo, device: torch.device) -> Learner:
    """Wrap, compile and give an optimiser to ``model`` (already on ``device``)."""
    from ..perf import resolve_precision

    fsdp = dist.enabled and cfg.dist.strategy == "fsdp"
    if fsdp and cfg.objective == "masked_patch":
        raise UserError("dist.strategy=fsdp does not shard masked patch prediction yet; use dist.strategy=ddp")
    if fsdp and (cfg.ema or cfg.activation_checkpointing and cfg.compile):
        raise UserError("dist.strategy=fsdp does not support ema (nor compile with activation_checkpointing); "
                         "use dist.strategy=ddp")
    precision = resolve_precision(cfg.precision, device)
    scaler = grad_scaler(precision, device)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    ddp_model = wrap_model(model, dist, device, fsdp=fsdp)
    # dynamic=False: a new input shape (progressive resizing's second resolution, an evaluation
    # batch) gets its own static graph. With the default, the second shape starts a dynamic-shape
    # compile that ran for over 10 minutes on the CIFAR preset here (a static one: ~30 s).
    fwd_model = torch.compile(ddp_model, dynamic=False) if cfg.compile else ddp_model
    return Learner(model, ddp_model, fwd_model, build_optimizer(model, cfg.optim), ema, scaler, precision, fsdp)


@dataclass
class RunRecord:
    """Where the run stands; what a checkpoint's ``meta`` restores and ``summary.json`` reports."""

    step: int
    total_steps: int
    epoch: int  # the training loader's epoch when this process started (StepInputs follows it from there)
    train_time: float  # seconds of training steps, over every process that worked on the run
    time_before: float  # wall time of the processes that ran this run before (resumes)
    t_start: float  # perf_counter() when this process started its part
    last_ckpt: Path | None  # the newest checkpoint (the one resumed from, until this process saves)
    last_good_ckpt: Path | None  # the newest one that is good by train.health's rule
    loss_watch: LossWatch = field(default_factory=LossWatch)
    grad_norm: torch.Tensor | None = None  # of the last step (None: not clipped, or no step yet)


@dataclass
class Progress:
    """The running loop's bookkeeping between steps, for this process."""

    end: int
    t_start: float
    train_time_start: float
    window_t: float
    window_loss: float = 0.0
    window_n: int = 0
    window_img: int = 0
    start_step: int = 0  # the step this process started at
    images_seen: int = 0
    last_loss: float = float("nan")
    pending: tuple[int, torch.Tensor] | None = None  # (step, flags) not yet read (CUDA)
    stopping: bool = False
    stopped_by: str | None = None
    eval_res: dict[str, Any] | None = None

    def count_images(self, n: int) -> None:
        self.images_seen += n

"""The run's resumable state (model, optimiser, EMA, grad scaler, RNG, data position), with or without FSDP.

File handling (atomic writes, naming, ``keep_last``) is :mod:`vitkit.training_checkpoint`'s; this module decides
*what* a checkpoint holds and how it goes back into the live objects. Under FSDP every rank takes part in
gathering and scattering the full state dicts (collectives), only rank 0 writes.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Loader
from ..errors import UserError
from ..training_checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, to_dict
from .dist import DistInfo, barrier
from .health import LossWatch, checkpoint_health
from .optim import EMA


class RunState:
    """Gathers and restores everything a resume needs. ``fsdp``: the model is ``fully_shard``-ed."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo, *, model: nn.Module, opt: torch.optim.Optimizer,
                 ema: EMA | None, scaler: torch.amp.GradScaler | None, train_loader: Loader,
                 fsdp: bool):
        self.cfg, self.dist, self.fsdp = cfg, dist, fsdp
        self.model, self.opt, self.ema, self.scaler, self.train_loader = model, opt, ema, scaler, train_loader
        self.model_config = model.config
        self.out = Path(cfg.out or ".")

    def model_state(self) -> dict[str, torch.Tensor]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def optim_state(self) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.opt,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.opt.state_dict()

    def state(self, step: int, epoch: int, total_steps: int, train_time: float, time_s: float = 0.0) -> dict[str, Any]:
        st: dict[str, Any] = {
            "model": self.model_state(),
            "optimizer": self.optim_state(),
            "rng": rng_state(),
            "data": self.train_loader.state_dict(),
            "meta": {"step": step, "epoch": int(getattr(self.train_loader, "epoch", epoch)),
                     "total_steps": total_steps, "train_time_s": train_time, "time_s": time_s,
                     "world_size": self.dist.world_size, "config": json.dumps(to_dict(self.cfg)),
                     "model_config": self.model_config.to_json()},
        }
        if self.ema is not None:
            st["ema"] = self.ema.state_dict()
        if self.scaler is not None:
            st["scaler"] = self.scaler.state_dict()
        return st

    def save(self, step: int, epoch: int, total_steps: int, train_time: float, watch: LossWatch, *,
             time_s: float = 0.0) -> tuple[Path, bool]:
        """Write a checkpoint (collective under FSDP): (the path it has on rank 0, whether it is good by the
        good-checkpoint rule of :mod:`vitkit.train.health`). ``time_s``: the run's wall time so far, over every
        process that worked on it (resumes)."""
        st = self.state(step, epoch, total_steps, train_time, time_s)
        good, why = checkpoint_health(st, watch)
        st["meta"].update(good=good, health=why, loss_watch=watch.state_dict())
        if not good and self.dist.is_main:
            logging.getLogger("vitkit").warning(f"vitkit train: note: the checkpoint of step {step} is not good: {why}")
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.out, step, st, self.cfg.keep_last)
        barrier()
        return path or checkpoint_path(self.out, step), good

    def load(self, path: Path, st: dict[str, Any] | None = None) -> dict[str, Any]:
        """Restore every live object from ``path`` (already read: ``st``); returns the checkpoint's ``meta``."""
        st = load_checkpoint(path) if st is None else st
        meta = st["meta"]
        if meta.get("world_size", 1) != self.dist.world_size and self.dist.is_main:
            logging.getLogger("vitkit").warning(
                f"vitkit train: note: {path.name} was written by {meta.get('world_size')} process(es), resuming "
                f"on {self.dist.world_size}; the data order will differ from an uninterrupted run")
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(self.model, self.opt, model_state_dict=st["model"], optim_state_dict=st["optimizer"],
                           options=StateDictOptions(full_state_dict=True))
        else:
            from ..checkpoints.errors import check_state_dict

            check_state_dict(str(path), self.model.state_dict(), st["model"])
            self.model.load_state_dict(st["model"])
            self.opt.load_state_dict(st["optimizer"])
        if self.ema is not None:
            if "ema" not in st:
                raise UserError(f"{path}: ema={self.cfg.ema} but the checkpoint holds no EMA weights")
            self.ema.load_state_dict(st["ema"])
        if self.scaler is not None and "scaler" in st:
            self.scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        self.train_loader.load_state_dict(st["data"])
        return meta

    def final_model(self) -> nn.Module | None:
        """The trained model as a plain module (gathered from the shards under FSDP; None on other ranks)."""
        if not self.fsdp:
            return getattr(self.model, "encoder", self.model)  # masked patch prediction: its encoder
        from .. import create_model

        state = self.model_state()  # collective: every rank takes part, rank 0 gets the full tensors
        if not self.dist.is_main:
            return None
        cfg = self.model_config
        m = create_model(cfg.name, **{k: v for k, v in cfg.to_dict().items() if k != "name"})
        m.load_state_dict(state)
        return m

    def ema_model(self) -> nn.Module:
        """A copy of the model holding the EMA weights."""
        assert self.ema is not None
        m = copy.deepcopy(self.model)
        m.load_state_dict({k: v.to(dtype=m.state_dict()[k].dtype) for k, v in self.ema.state_dict().items()})
        return getattr(m, "encoder", m)

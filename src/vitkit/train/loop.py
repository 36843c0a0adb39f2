"""The training loop behind ``vitkit train``: the orchestration of one run.

One function, :func:`train`, runs a :class:`TrainConfig` on one process or under ``torchrun``
(DDP or FSDP2), writing ``config.yaml``, ``metrics.jsonl``, TensorBoard logs (``tb/``),
``summary.json``, ``model.safetensors`` and resumable checkpoints to ``cfg.out``.

Who decides what: :mod:`~vitkit.train.build` (data description, run length, model, loaders),
:mod:`~vitkit.train.inputs` (the step's micro-batches and random seeds), :mod:`~vitkit.train.state`
(what a checkpoint holds, FSDP included), :mod:`~vitkit.train.metrics` (metrics.jsonl, TensorBoard,
summary), :mod:`~vitkit.train.guard` (divergence, signals), :func:`vitkit.evaluate.score` (the
evaluation), and this module (the order of things, and the step until ``vitkit.train.step`` lands).

Reproducibility: the data order and augmentation are functions of (seed, epoch, index) in
``vitkit.data``, and every other random draw comes from (seed, step, rank) (``inputs.py``), so
``--resume`` continues bit for bit (on CPU; ``deterministic=true`` on GPU).
"""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data as data_api
from ..evaluate.metrics import compute_loss
from ..training_checkpoint import last_good_checkpoint, load_checkpoint
from . import step as step_api  # looked up per call: the one step (tests count its calls)
from .build import (
    build_loaders,
    build_mixup,
    build_train_model,
    grad_scaler,
    low_resolution,
    plan_data,
    prepare_process,
    resume_model,
)
from .config import TrainConfig, copy_config, save_yaml, validate
from .dist import DistInfo, all_reduce_, barrier, init_distributed, resolve_device, wrap_model
from .guard import StopRequests, TrainingDiverged, read_flags, step_flags
from .health import LossWatch
from .inputs import StepInputs
from .metrics import RunLog, last_eval, run_summary
from .optim import EMA, build_optimizer, lr_multiplier
from .state import RunState

__all__ = ["Trainer", "TrainingDiverged", "build_train_model", "compute_loss", "train"]

logger = logging.getLogger("vitkit")


@dataclass
class _Progress:
    """The running loop's bookkeeping between steps (what used to be closure variables)."""

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


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: bool = True):
        validate(cfg)
        if not cfg.out:
            raise ValueError("no output directory: pass --out DIR (or out=DIR)")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.resume = resume
        self.progress = progress
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(cfg.dist.backend, self.device)
        self.loss_watch = LossWatch()  # the good-checkpoint rule (train.health)
        self.last_good_ckpt: Path | None = None
        self.data = data_api  # the data package (build_loader, dataset_info, Mixup)

    def _log(self, msg: str, level: int = logging.INFO) -> None:
        if self.dist.is_main:
            logger.log(level, msg)

    # .. set-up ...............................................................
    def setup(self) -> None:
        cfg, d = self.cfg, self.dist
        self.ckpt_path = prepare_process(cfg, d, self.out, self.resume)
        plan = plan_data(cfg, d, self.data)  # checked before anything heavy
        self.plan = plan
        self.num_classes, self.class_names, self.loss_kind = plan.num_classes, plan.class_names, plan.loss_kind
        self.micro, self.accum, self.total_steps = plan.micro, plan.accum, plan.total_steps

        # A resume rebuilds the model from the training checkpoint's own record of it (its weights are loaded
        # below): model.init is not read again (it may be a download, or gone).
        resumed = load_checkpoint(self.ckpt_path) if self.ckpt_path is not None else None
        model = build_train_model(cfg, self.num_classes, self.class_names) if resumed is None else \
            resume_model(resumed, self.ckpt_path, cfg, self.num_classes)
        self.model_config = model.config
        self.low_res = low_resolution(cfg, model.config)
        model.to(self.device)
        if cfg.activation_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ValueError(f"activation_checkpointing=true: {type(model).__name__} ({model.config.name}) "
                                 "does not support it; set activation_checkpointing=false")
            model.set_grad_checkpointing(True)
        self.model = model  # the bare module (state dicts, saving)
        self.ema = EMA(model, cfg.ema) if cfg.ema else None
        self.train_loader, self.test_loader, self.eval_sharded = build_loaders(
            cfg, plan, model.config, d, self.data, pin_memory=self.device.type == "cuda")
        self.mixup = build_mixup(cfg, self.num_classes, self.data)

        self.fsdp = d.enabled and cfg.dist.strategy == "fsdp"
        if self.fsdp and (cfg.ema or cfg.activation_checkpointing and cfg.compile):
            raise ValueError("dist.strategy=fsdp does not support ema (nor compile with activation_checkpointing); "
                             "use dist.strategy=ddp")
        self.ddp_model = wrap_model(model, d, self.device, fsdp=self.fsdp)
        # dynamic=False: a new input shape (progressive resizing's second resolution, an evaluation
        # batch) gets its own static graph. With the default, the second shape starts a dynamic-shape
        # compile that ran for over 10 minutes on the CIFAR preset here (a static one: ~30 s).
        self.fwd_model = torch.compile(self.ddp_model, dynamic=False) if cfg.compile else self.ddp_model

        self.opt = build_optimizer(model, cfg.optim)
        from ..perf import resolve_precision

        self.precision = resolve_precision(cfg.precision, self.device)
        self.scaler = grad_scaler(self.precision, self.device)

        self.state = RunState(cfg, d, model=model, opt=self.opt, ema=self.ema, scaler=self.scaler,
                              train_loader=self.train_loader, fsdp=self.fsdp)
        self.step, self.epoch, self.train_time = 0, 0, 0.0
        self.time_before = 0.0  # wall time of the processes that ran this run before (resumes)
        self.t_start = time.perf_counter()
        self.budget = cfg.schedule.time_budget_s
        # Read each step's loss/stop flags one step late on GPUs (see run()); tests set it on CPU.
        self.lagged_flags = self.device.type == "cuda"
        if resumed is not None:
            meta = self.state.load(self.ckpt_path, resumed)
            self.step, self.epoch = int(meta["step"]), int(meta["epoch"])
            self.train_time = float(meta.get("train_time_s", 0.0))
            self.time_before = float(meta.get("time_s", 0.0))  # wall time of the processes before this one
            self.loss_watch.load_state_dict(meta.get("loss_watch", {}))
            self.last_good_ckpt = last_good_checkpoint(self.out)
            self._log(f"vitkit train: resumed from {self.ckpt_path} (step {self.step})")

    # .. checkpoints and evaluation ...................................................
    def save(self) -> Path:
        self.last_ckpt, good = self.state.save(self.step, self.inputs.epoch, self.total_steps, self.train_time,
                                               self.loss_watch, time_s=self.time_s())
        if good:
            self.last_good_ckpt = self.last_ckpt
        return self.last_ckpt

    def evaluate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Loss and top-1/top-5 (and flip scores) on the test loader, through :func:`vitkit.evaluate.score`."""
        from ..evaluate.core import score

        assert self.test_loader is not None
        return score(model if model is not None else self.ddp_model, self.test_loader, loss=self.loss_kind,
                     flip=self.cfg.eval_flip, precision=self.precision, device=self.device,
                     reduce=all_reduce_ if self.eval_sharded else None, inference=False)

    def time_s(self) -> float:
        """Wall time of the run so far, across resumes (``run_time_s``: this process's part)."""
        return self.time_before + time.perf_counter() - self.t_start

    def _eval_and_log(self, log: RunLog, t_start: float) -> dict[str, Any]:
        res: dict[str, Any] = dict(self.evaluate())
        if self.ema is not None:
            ema = self.evaluate(self.state.ema_model())
            res.update({f"ema_{k}": v for k, v in ema.items() if k != "examples"})
        rec = {"step": self.step, **{f"eval/{k}": v for k, v in res.items()}, "time_s": self.time_s(),
               "run_time_s": time.perf_counter() - t_start}
        log.write(rec, None)
        top = f"top-1 {res['top1']:.4f} top-5 {res['top5']:.4f}"
        self._log(f"vitkit train: step {self.step}: eval {top} loss {res['loss']:.4f}")
        return res

    # .. the step ...................................................................................
    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ls = self.cfg.data.label_smoothing if self.mixup is None else 0.0  # mixup's targets carry the smoothing
        return compute_loss(logits, targets, self.loss_kind, ls)

    def _settle_into(self, p: _Progress, item: tuple[int, torch.Tensor]) -> None:
        p.last_loss, stop_req = read_flags(item, self.dist.world_size, self.last_good_ckpt)
        self.loss_watch.add(p.last_loss)
        p.window_loss, p.window_n = p.window_loss + p.last_loss, p.window_n + 1
        p.stopping = p.stopping or stop_req

    # .. the loop ...................................................................................
    def _one_step(self, p: _Progress, stop: StopRequests) -> None:
        t_step = time.perf_counter()
        progress = self.train_time / self.budget if self.budget else None
        mult = lr_multiplier(self.step, self.cfg.schedule, self.total_steps, progress)
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.optim.lr * mult

        done = progress if progress is not None else self.step / max(self.total_steps, 1)
        micro_batches = self.inputs.for_step(self.step, done, p.count_images)

        def after_backward(loss: torch.Tensor) -> None:
            flags = step_flags(loss, stop.signal is not None, self.dist)
            # On CUDA the flags of step N are read while step N+1 runs (reading them waits for the GPU), so the
            # host never idles the GPU; on CPU they are read at once - before the update, so a NaN never lands.
            ready, p.pending = (p.pending, (self.step + 1, flags)) if self.lagged_flags else \
                ((self.step + 1, flags), None)
            if ready is not None:
                self._settle_into(p, ready)

        self.grad_norm = step_api.train_step(
            self.fwd_model, self.opt, micro_batches, loss_fn=self._loss, precision=self.precision,
            accum=self.accum, clip_norm=self.cfg.optim.clip_norm, params=self.model.parameters(), scaler=self.scaler,
            no_sync=self.ddp_model.no_sync if self.dist.enabled and not self.fsdp else None,
            after_backward=after_backward).grad_norm
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.train_time += time.perf_counter() - t_step
        p.window_img += self.cfg.data.batch_size

    def _after_step(self, p: _Progress, log: RunLog, stop: StopRequests) -> bool:
        """Logging, evaluation and checkpoints at a step boundary; False when the run stops here."""
        cfg = self.cfg
        boundary = (self.step % cfg.log_every == 0 or self.step == p.end or p.stopping
                    or bool(cfg.eval_every) and self.step % cfg.eval_every == 0
                    or bool(cfg.checkpoint_every) and self.step % cfg.checkpoint_every == 0)
        if p.pending is not None and boundary:  # nothing is logged or saved unchecked
            self._settle_into(p, p.pending)
            p.pending = None
        postfix: dict[str, str] = {}
        if self.step % cfg.log_every == 0 or self.step == p.end:
            now = time.perf_counter()
            ips = p.window_img / max(now - p.window_t, 1e-9)
            rec = {"step": self.step, "epoch": self.inputs.epoch, "loss": p.window_loss / max(p.window_n, 1),
                   "lr": self.opt.param_groups[0]["lr"], "images_per_s": ips, "time_s": self.time_s(),
                   "run_time_s": now - p.t_start}
            if self.grad_norm is not None:
                rec["grad_norm"] = float(self.grad_norm)
            log.write(rec, "train")
            postfix = {"loss": f"{rec['loss']:.4f}", "lr": f"{rec['lr']:.2e}", "img_s": f"{ips:.0f}"}
            if log.pbar is None:  # no progress bar (--no-progress, not a terminal): a line per log step
                self._log(f"vitkit train: step {self.step}/{'?' if self.budget else p.end} loss {rec['loss']:.4f} "
                          f"lr {rec['lr']:.2e} {ips:.1f} img/s ETA {self._eta(p, now)}")
            p.window_loss, p.window_n, p.window_t, p.window_img = 0.0, 0, now, 0
        log.progress(1, **postfix)
        t_side = time.perf_counter()  # evaluation and checkpoints do not count as training speed
        if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < p.end and \
                self.test_loader is not None and not p.stopping:
            p.eval_res = self._eval_and_log(log, p.t_start)
        if p.stopping:
            p.stopped_by = signal.Signals(stop.signal).name if stop.signal else "a signal on another rank"
            self.save()
            return False
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < p.end:
            self.save()
        p.window_t += time.perf_counter() - t_side
        return True

    def _eta(self, p: _Progress, now: float) -> str:
        """Time left at this process's pace (evaluations included), or of the time budget."""
        if self.budget:
            left = max(self.budget - self.train_time, 0.0)
        else:
            done = self.step - p.start_step
            left = (now - p.t_start) / max(done, 1) * max(p.end - self.step, 0)
        m, sec = divmod(int(round(left)), 60)
        return f"{m // 60}:{m % 60:02d}:{sec:02d}"

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps`` (or ``stop_at``, for tests); returns the summary."""
        self.setup()
        cfg, d = self.cfg, self.dist
        if d.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, self.out / "config.yaml")
        log = RunLog(self.out, enabled=d.is_main, start_step=self.step, progress=self.progress,
                     total=None if self.budget else self.total_steps)
        self.last_ckpt = self.ckpt_path
        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        if self.budget:
            end = stop_at if stop_at is not None else 2**62  # the clock ends the run
        now = time.perf_counter()
        self.t_start = now
        p = _Progress(end=end, t_start=now, train_time_start=self.train_time, window_t=now, start_step=self.step)
        self.inputs = StepInputs(cfg, d, self.device, self.train_loader, self.mixup, self.low_res, self.micro,
                                 self.accum, self.epoch)
        self.grad_norm = None
        self.ddp_model.train()
        try:
            with StopRequests() as stop:
                while self.step < p.end:
                    if self.budget and self.train_time >= self.budget:
                        self.total_steps = p.end = self.step
                        break
                    self._one_step(p, stop)
                    if not self._after_step(p, log, stop):
                        break
                if p.pending is not None:  # the clock ended the run between boundaries
                    self._settle_into(p, p.pending)
        finally:
            log.close_progress()
        elapsed = time.perf_counter() - p.t_start
        if p.stopped_by:
            self._log(f"vitkit train: stopped by {p.stopped_by} at step {self.step}; checkpoint {self.last_ckpt}; "
                      f"continue with: vitkit train --out {self.out} --resume")
        elif self.step >= p.end and stop_at is None and self.step == p.start_step:
            # --resume of a finished run: nothing ran, so nothing is saved or evaluated again (metrics.jsonl would
            # hold its final evaluation twice); the summary repeats the logged one.
            self._log(f"vitkit train: {self.out} finished at step {self.step} already; nothing to do")
            p.eval_res = last_eval(self.out / "metrics.jsonl")
        elif self.step >= p.end and stop_at is None:
            self.save()
            if self.test_loader is not None:
                p.eval_res = self._eval_and_log(log, p.t_start)
        elif stop_at is not None:
            self.save()
        try:
            return self._finish(p, elapsed, stop_at)
        finally:
            log.close()

    def _finish(self, p: _Progress, elapsed: float, stop_at: int | None) -> dict[str, Any]:
        from .. import save_model

        final = self.state.final_model() if (p.stopped_by is None and stop_at is None) else None
        summary = run_summary(self, p, elapsed)
        if self.dist.is_main:
            if final is not None:
                summary["model"] = str(save_model(final.eval(), self.out / "model.safetensors"))
                if self.ema is not None:
                    summary["model_ema"] = str(save_model(self.state.ema_model().eval(),
                                                          self.out / "model_ema.safetensors"))
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        barrier()
        return summary


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          stop_at: int | None = None) -> dict[str, Any]:
    """Run one training job; see the module docstring. Returns the summary (also in summary.json)."""
    from ..perf.allocator import tune_cpu_allocator

    tune_cpu_allocator()  # freed activations stay in the process: 5-13% per CPU step (perf.allocator)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    cfg = copy_config(cfg)
    trainer = None
    try:
        trainer = Trainer(cfg, resume=resume, progress=progress)
        return trainer.run(stop_at=stop_at)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
        if trainer is not None and trainer.dist.initialized_here:
            import gc

            import torch.distributed as dist

            # DDP's reducer and FSDP's state keep the process group alive after
            # destroy_process_group(); were they left to interpreter exit, gloo's worker threads
            # would be torn down during finalisation, where they can abort the process (SIGABRT,
            # "terminate called without an active exception", seen in the 2-process tests under
            # load; pytorch/pytorch#179291). Drop them first so the group really ends here.
            trainer.__dict__.clear()
            trainer = None
            gc.collect()
            dist.destroy_process_group()

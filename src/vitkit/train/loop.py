"""The training loop behind ``vitkit train``: the orchestration of one run.

One function, :func:`train`, runs a :class:`TrainConfig` on one process or under ``torchrun``
(DDP or FSDP2), writing ``config.yaml``, ``metrics.jsonl``, TensorBoard logs (``tb/``),
``summary.json``, ``model.safetensors`` and resumable checkpoints to ``cfg.out``.

Who decides what: :mod:`~vitkit.train.build` (data description, run length, model, loaders),
:mod:`~vitkit.train.inputs` (the step's micro-batches and random seeds), :mod:`~vitkit.train.state`
(what a checkpoint holds, FSDP included), :mod:`~vitkit.train.metrics` (metrics.jsonl, TensorBoard,
summary), :mod:`~vitkit.train.guard` (divergence, signals), :func:`vitkit.evaluate.score` (the
evaluation), :func:`vitkit.train.step.train_step` (the one training step, shared with ``vitkit bench``), and this
module (the order of things).

Reproducibility: the data order and augmentation are functions of (seed, epoch, index) in
``vitkit.data``, and every other random draw comes from (seed, step, rank) (``inputs.py``), so
``--resume`` continues bit for bit (on CPU; ``deterministic=true`` on GPU).
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.spec import DataSource
from ..errors import UserError
from ..evaluate.metrics import compute_loss
from ..fileio import atomic_write_text, writing
from ..models.masked import masked_patch_loss
from ..training_checkpoint import last_good_checkpoint, load_checkpoint
from .build import DataPlan, build_train_model, plan_data, prepare_process, resume_model
from .config import TrainConfig, copy_config, save_yaml, validate
from .dist import DistInfo, all_reduce_, barrier, init_distributed, resolve_device
from .guard import StopRequests, read_flags, step_flags
from .inputs import StepInputs
from .masked import masked_patch_scores
from .metrics import RunLog, data_notes, last_eval, run_summary
from .optim import lr_multiplier
from .options import to_dict
from .parts import Progress, RunRecord, build_feed, build_learner
from .runlock import run_lock
from .state import RunState
from .step import train_step
from .trackers import parse_loggers

__all__ = ["Trainer", "train"]

logger = logging.getLogger("vitkit")


def reads_flags_late(device: torch.device) -> bool:
    """Whether each step's loss/stop flags are read one step late (see :meth:`Trainer.run`): on GPUs, so the host
    never waits for the GPU mid-loop. Tests make it true on CPU."""
    return device.type == "cuda"


def _run_model(cfg: TrainConfig, plan: DataPlan, device: torch.device, resumed: dict[str, Any] | None,
               ckpt_path: Path | None) -> nn.Module:
    """The model of the run on ``device``: fresh or from ``model.init``, or, on a resume, rebuilt from the training
    checkpoint's own record of it (its weights are loaded later, with the rest of the state): ``model.init`` is not
    read again (it may be a download, or gone)."""
    if resumed is None:
        model = build_train_model(cfg, plan.num_classes, plan.class_names)
    else:
        assert ckpt_path is not None
        model = resume_model(resumed, ckpt_path, cfg, plan.num_classes)
    model.to(device)
    if cfg.activation_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise UserError(f"activation_checkpointing=true: {type(model).__name__} ({model.config.name}) "
                             "does not support it; set activation_checkpointing=false")
        model.set_grad_checkpointing(True)
    return model


class Trainer:
    """One run on this process, every part built here: the :class:`~vitkit.train.build.DataPlan` (``plan``), the
    loaders (``feed``), the model and optimiser (``learner``), what a checkpoint holds (``state``), where the run
    stands (``record``) and the step's inputs (``inputs``); see :mod:`vitkit.train.parts`. A resume restores them
    from the newest checkpoint of ``cfg.out``. ``dist``: from :func:`~vitkit.train.dist.init_distributed`, whose
    process group the caller ends (:func:`train`)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dist: DistInfo, *, resume: bool = False,
                 progress: bool = True, train_data: DataSource | None = None, test_data: DataSource | None = None):
        self.cfg, self.device, self.dist = cfg, device, dist
        self.out = Path(cfg.out or ".")
        self.progress = progress
        self.budget = cfg.schedule.time_budget_s
        self.lagged_flags = reads_flags_late(device)
        ckpt_path = prepare_process(cfg, dist, self.out, resume)
        # checked before anything heavy; train_data/test_data: data objects in place of data.train/data.test
        self.plan = plan_data(cfg, dist, train_data, test_data)
        resumed = load_checkpoint(ckpt_path) if ckpt_path is not None else None
        model = _run_model(cfg, self.plan, device, resumed, ckpt_path)
        self.feed = build_feed(cfg, self.plan, model.config, dist, device)
        self.learner = lrn = build_learner(cfg, model, dist, device)
        self.state = RunState(cfg, dist, model=model, opt=lrn.opt, ema=lrn.ema, scaler=lrn.scaler,
                              train_loader=self.feed.train_loader, fsdp=lrn.fsdp)
        self.record = RunRecord(step=0, total_steps=self.plan.total_steps, epoch=0, train_time=0.0,
                                time_before=0.0, t_start=time.perf_counter(), last_ckpt=ckpt_path, last_good_ckpt=None)
        if resumed is not None:
            assert ckpt_path is not None
            meta, rec = self.state.load(ckpt_path, resumed), self.record
            rec.step, rec.epoch = int(meta["step"]), int(meta["epoch"])
            rec.train_time = float(meta.get("train_time_s", 0.0))
            rec.time_before = float(meta.get("time_s", 0.0))  # wall time of the processes before this one
            rec.loss_watch.load_state_dict(meta.get("loss_watch", {}))
            rec.last_good_ckpt = last_good_checkpoint(self.out)
        self.inputs = StepInputs(cfg, dist, device, self.feed.train_loader, self.feed.mixup, self.feed.low_res,
                                 self.plan.micro, self.plan.accum, self.record.epoch)
        if resumed is not None:
            self._log(f"vitkit train: resumed from {ckpt_path} (step {self.record.step})")

    def _log(self, msg: str, level: int = logging.INFO) -> None:
        if self.dist.is_main:
            logger.log(level, msg)

    # .. checkpoints and evaluation ...................................................
    def save(self) -> Path:
        rec = self.record
        rec.last_ckpt, good = self.state.save(rec.step, self.inputs.epoch, rec.total_steps, rec.train_time,
                                              rec.loss_watch, time_s=self.time_s())
        if good:
            rec.last_good_ckpt = rec.last_ckpt
        return rec.last_ckpt

    def evaluate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Loss and top-1/top-5 (and flip scores) on the test loader, through :func:`vitkit.evaluate.score`."""
        from ..evaluate.core import score

        assert self.feed.test_loader is not None
        if self.cfg.objective == "masked_patch":
            return masked_patch_scores(model if model is not None else self.learner.model, self.feed.test_loader,
                                       precision=self.learner.precision, device=self.device,
                                       reduce=all_reduce_ if self.feed.eval_sharded else None)
        return score(model if model is not None else self.learner.ddp_model, self.feed.test_loader,
                     loss=self.plan.loss_kind, flip=self.cfg.eval_flip, precision=self.learner.precision,
                     device=self.device, reduce=all_reduce_ if self.feed.eval_sharded else None, inference=False,
                     num_classes=self.plan.num_classes, classes=self.plan.test_classes)

    def time_s(self) -> float:
        """Wall time of the run so far, across resumes (``run_time_s``: this process's part)."""
        return self.record.time_before + time.perf_counter() - self.record.t_start

    def _eval_and_log(self, log: RunLog, t_start: float) -> dict[str, Any]:
        res: dict[str, Any] = dict(self.evaluate())
        if self.learner.ema is not None:
            ema = self.evaluate(self.state.ema_model())
            res.update({f"ema_{k}": v for k, v in ema.items() if k != "examples"})
        step = self.record.step
        rec = {"step": step, **{f"eval/{k}": v for k, v in res.items()}, "time_s": self.time_s(),
               "run_time_s": time.perf_counter() - t_start}
        log.write(rec, None)
        top = f"top-1 {res['top1']:.4f} top-5 {res['top5']:.4f}"
        self._log(f"vitkit train: step {step}: eval {top} loss {res['loss']:.4f}")
        return res

    # .. the step ...................................................................................
    def _loss(self, logits: Any, targets: torch.Tensor) -> torch.Tensor:
        if self.cfg.objective == "masked_patch":
            return masked_patch_loss(logits)  # the labels are unused
        # mixup's targets carry the smoothing
        ls = self.cfg.data.label_smoothing if self.feed.mixup is None else 0.0
        return compute_loss(logits, targets, self.plan.loss_kind, ls)

    def _settle_into(self, p: Progress, item: tuple[int, torch.Tensor]) -> None:
        p.last_loss, stop_req = read_flags(item, self.dist.world_size, self.record.last_good_ckpt)
        self.record.loss_watch.add(p.last_loss)
        p.window_loss, p.window_n = p.window_loss + p.last_loss, p.window_n + 1
        p.stopping = p.stopping or stop_req

    # .. the loop ...................................................................................
    def _one_step(self, p: Progress, stop: StopRequests) -> None:
        t_step = time.perf_counter()
        rec, lrn = self.record, self.learner
        progress = rec.train_time / self.budget if self.budget else None
        mult = lr_multiplier(rec.step, self.cfg.schedule, rec.total_steps, progress)
        for g in lrn.opt.param_groups:
            g["lr"] = self.cfg.optim.lr * mult

        done = progress if progress is not None else rec.step / max(rec.total_steps, 1)
        micro_batches = self.inputs.for_step(rec.step, done, p.count_images)

        def after_backward(loss: torch.Tensor) -> None:
            flags = step_flags(loss, stop.signal is not None, self.dist)
            # On CUDA the flags of step N are read while step N+1 runs (reading them waits for the GPU), so the
            # host never idles the GPU; on CPU they are read at once - before the update, so a NaN never lands.
            ready, p.pending = (p.pending, (rec.step + 1, flags)) if self.lagged_flags else \
                ((rec.step + 1, flags), None)
            if ready is not None:
                self._settle_into(p, ready)

        rec.grad_norm = train_step(
            lrn.fwd_model, lrn.opt, micro_batches, loss_fn=self._loss, precision=lrn.precision,
            accum=self.plan.accum, clip_norm=self.cfg.optim.clip_norm, params=lrn.model.parameters(),
            scaler=lrn.scaler, no_sync=lrn.ddp_model.no_sync if self.dist.enabled and not lrn.fsdp else None,
            after_backward=after_backward).grad_norm
        if lrn.ema is not None:
            lrn.ema.update(lrn.model)
        rec.step += 1
        rec.train_time += time.perf_counter() - t_step
        p.window_img += self.cfg.data.batch_size

    def _after_step(self, p: Progress, log: RunLog, stop: StopRequests) -> bool:
        """Logging, evaluation and checkpoints at a step boundary; False when the run stops here."""
        cfg, step = self.cfg, self.record.step
        boundary = (step % cfg.log_every == 0 or step == p.end or p.stopping
                    or bool(cfg.eval_every) and step % cfg.eval_every == 0
                    or bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0)
        if p.pending is not None and boundary:  # nothing is logged or saved unchecked
            self._settle_into(p, p.pending)
            p.pending = None
        postfix: dict[str, str] = {}
        if step % cfg.log_every == 0 or step == p.end:
            now = time.perf_counter()
            ips = p.window_img / max(now - p.window_t, 1e-9)
            rec = {"step": step, "epoch": self.inputs.epoch, "loss": p.window_loss / max(p.window_n, 1),
                   "lr": self.learner.opt.param_groups[0]["lr"], "images_per_s": ips, "time_s": self.time_s(),
                   "run_time_s": now - p.t_start}
            if self.record.grad_norm is not None:
                rec["grad_norm"] = float(self.record.grad_norm)
            log.write(rec, "train")
            postfix = {"loss": f"{rec['loss']:.4f}", "lr": f"{rec['lr']:.2e}", "img_s": f"{ips:.0f}"}
            if log.pbar is None:  # no progress bar (--no-progress, not a terminal): a line per log step
                self._log(f"vitkit train: step {step}/{'?' if self.budget else p.end} loss {rec['loss']:.4f} "
                          f"lr {rec['lr']:.2e} {ips:.1f} img/s ETA {self._eta(p, now)}")
            p.window_loss, p.window_n, p.window_t, p.window_img = 0.0, 0, now, 0
        log.progress(1, **postfix)
        t_side = time.perf_counter()  # evaluation and checkpoints do not count as training speed
        if cfg.eval_every and step % cfg.eval_every == 0 and step < p.end and \
                self.feed.test_loader is not None and not p.stopping:
            p.eval_res = self._eval_and_log(log, p.t_start)
        if p.stopping:
            p.stopped_by = signal.Signals(stop.signal).name if stop.signal else "a signal on another rank"
            self.save()
            return False
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < p.end:
            self.save()
        p.window_t += time.perf_counter() - t_side
        return True

    def _eta(self, p: Progress, now: float) -> str:
        """Time left at this process's pace (evaluations included), or of the time budget."""
        if self.budget:
            left = max(self.budget - self.record.train_time, 0.0)
        else:
            done = self.record.step - p.start_step
            left = (now - p.t_start) / max(done, 1) * max(p.end - self.record.step, 0)
        m, sec = divmod(int(round(left)), 60)
        return f"{m // 60}:{m % 60:02d}:{sec:02d}"

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps`` (or ``stop_at``, for tests); returns the summary."""
        cfg, d, rec = self.cfg, self.dist, self.record
        if d.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, self.out / "config.yaml")
        log = RunLog(self.out, enabled=d.is_main, start_step=rec.step, progress=self.progress,
                     total=None if self.budget else rec.total_steps, loggers=parse_loggers(cfg.logger),
                     config=to_dict(cfg))
        end = rec.total_steps if stop_at is None else min(stop_at, rec.total_steps)
        if self.budget:
            end = stop_at if stop_at is not None else 2**62  # the clock ends the run
        now = time.perf_counter()
        rec.t_start = now
        p = Progress(end=end, t_start=now, train_time_start=rec.train_time, window_t=now, start_step=rec.step)
        self.learner.ddp_model.train()
        try:
            with StopRequests() as stop:
                while rec.step < p.end:
                    if self.budget and rec.train_time >= self.budget:
                        rec.total_steps = p.end = rec.step
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
            pass  # the caller says how to continue (vitkit train: --resume; vitkit demo: run it again)
        elif rec.step >= p.end and stop_at is None and rec.step == p.start_step:
            # --resume of a finished run: nothing ran, so nothing is saved or evaluated again (metrics.jsonl would
            # hold its final evaluation twice); the summary repeats the logged one.
            self._log(f"vitkit train: {self.out} finished at step {rec.step} already; nothing to do")
            p.eval_res = last_eval(self.out / "metrics.jsonl")
        elif rec.step >= p.end and stop_at is None:
            self.save()
            if self.feed.test_loader is not None:
                p.eval_res = self._eval_and_log(log, p.t_start)
        elif stop_at is not None:
            self.save()
        try:
            summary = self._finish(p, elapsed, stop_at)
            log.finish(summary)
            return summary
        finally:
            log.close()

    def _finish(self, p: Progress, elapsed: float, stop_at: int | None) -> dict[str, Any]:
        from .. import save_model

        final = self.state.final_model() if (p.stopped_by is None and stop_at is None) else None
        summary = run_summary(self.record, p, elapsed, plan=self.plan, feed=self.feed, dist=self.dist,
                              device=self.device, precision=self.learner.precision,
                              batch_size=self.cfg.data.batch_size)
        for note in data_notes(self.feed):
            self._log(note, logging.WARNING)
        if self.dist.is_main:
            if final is not None:
                with writing(self.out / "model.safetensors"):
                    summary["model"] = str(save_model(final.eval(), self.out / "model.safetensors"))
                if self.learner.ema is not None:
                    with writing(self.out / "model_ema.safetensors"):
                        summary["model_ema"] = str(save_model(self.state.ema_model().eval(),
                                                              self.out / "model_ema.safetensors"))
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1, default=str))
        barrier()
        return summary


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, stop_at: int | None = None,
          train_data: DataSource | None = None, test_data: DataSource | None = None) -> dict[str, Any]:
    """Run one training job; see the module docstring. Returns the summary (also in summary.json).

    ``train_data`` / ``test_data``: the data in place of ``data.train`` / ``data.test``: a spec, or the user's own
    ``torch.utils.data.Dataset`` or ``datasets.Dataset``/``DatasetDict`` (:mod:`vitkit.data.objects`). The test
    data must have the training data's classes. Without test data there is no evaluation, unless the training data
    has a test split (a spec, a DatasetDict). ``config.yaml`` records an object by its description; such a run
    resumes from Python, with the objects passed again."""
    from ..data.spec import is_data_object, record_of
    from ..perf.allocator import tune_cpu_allocator

    cfg = copy_config(cfg)
    if isinstance(train_data, str):  # a spec: it is data.train
        cfg.data.train, train_data = train_data, None
    if isinstance(test_data, str):
        cfg.data.test, test_data = test_data, None
    if is_data_object(train_data):
        cfg.data.train = record_of(train_data)
    if is_data_object(test_data):
        cfg.data.test = record_of(test_data)
    validate(cfg)
    if not cfg.out:
        raise UserError("no output directory: pass --out DIR (or out=DIR)")
    tune_cpu_allocator()  # freed activations stay in the process: 5-13% per CPU step (perf.allocator)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    device = resolve_device(cfg.device)
    dist = init_distributed(cfg.dist.backend, device)
    trainer = None
    try:
        with run_lock(cfg.out, enabled=dist.is_main):  # one process per run folder (rank 0 for all ranks)
            trainer = Trainer(cfg, device, dist, resume=resume, progress=progress, train_data=train_data,
                              test_data=test_data)
            return trainer.run(stop_at=stop_at)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
        if dist.initialized_here:
            _end_process_group(trainer)


def _end_process_group(trainer: Trainer | None) -> None:
    """Destroy the process group ``train`` started, after dropping what still holds it."""
    import gc
    import sys
    import traceback

    import torch.distributed as tdist

    # DDP's reducer and FSDP's state keep the process group alive after
    # destroy_process_group(); were they left to interpreter exit, gloo's worker threads
    # would be torn down during finalisation, where they can abort the process (SIGABRT,
    # "terminate called without an active exception", seen in the 2-process tests under
    # load; pytorch/pytorch#179291). Drop them first so the group really ends here: the trainer's
    # parts, and, when its construction failed, the locals of the frames the exception holds.
    if trainer is not None:
        trainer.__dict__.clear()
    failing = sys.exc_info()[1]
    if failing is not None:
        traceback.clear_frames(failing.__traceback__)
    gc.collect()
    tdist.destroy_process_group()

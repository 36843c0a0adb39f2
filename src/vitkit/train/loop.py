"""The training loop behind ``vitkit train``.

One function, :func:`train`, runs a :class:`TrainConfig` on one process or under ``torchrun``
(DDP or FSDP2), writing ``config.yaml``, ``metrics.jsonl``, TensorBoard logs (``tb/``),
``summary.json``, ``model.safetensors`` and resumable checkpoints to ``cfg.out``.

Reproducibility: the data order and augmentation are functions of (seed, epoch, index) in
``vitkit.data``, and every other random draw (dropout, stochastic depth, mixup) comes from a
generator re-seeded from (seed, step, rank) at each step, so the step number *is* the random
state and ``--resume`` continues bit for bit (on CPU; ``deterministic=true`` on GPU).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.config import ResNetConfig
from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ModelConfig, TrainConfig, copy_config, save_yaml, to_dict, validate
from .dist import DistInfo, all_reduce_, barrier, init_distributed, resolve_device
from .health import LossWatch, checkpoint_health, last_good_checkpoint
from .optim import EMA, build_optimizer, lr_multiplier


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _data_module() -> types.ModuleType:
    import vitkit.data as data

    return data


def _step_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    # Distinct, reproducible streams per (seed, step, micro-batch, rank); fits in 63 bits.
    return (seed * 1_000_003 + step * 7919 + micro * 104_729 + rank * 15_485_863) % (2**63 - 1)


# -- model -----------------------------------------------------------------------------

_STRUCTURAL = ("patch_size", "hidden_size", "mlp_dim", "num_heads", "num_layers", "resnet_layers", "resnet_width",
               "classifier")
_REGULARISERS = ("dropout_rate", "attention_dropout_rate", "drop_path_rate")


def _resnet_stem(m: ModelConfig) -> ResNetConfig | None:
    """The hybrid stem asked for by ``model.resnet_layers``/``model.resnet_width`` (None: the named model's)."""
    if m.resnet_layers is None and m.resnet_width is None:
        return None
    from ..models.registry import get_config

    base = get_config(m.name).resnet or ResNetConfig(num_layers=())
    layers = base.num_layers if m.resnet_layers is None else m.resnet_layers
    width = base.width_factor if m.resnet_width is None else m.resnet_width
    return ResNetConfig(num_layers=layers, width_factor=width)


def build_train_model(cfg: TrainConfig, num_classes: int, class_names: list[str] | None) -> nn.Module:
    """A fresh model, or one fine-tuned from ``model.init`` with a zero head at the new size."""
    from .. import create_model, load_model

    m = cfg.model
    size = cfg.data.image_size
    reg = {k: getattr(m, k) for k in _REGULARISERS if getattr(m, k) is not None}
    rep = m.representation_size or None
    if m.init:
        given = [k for k in _STRUCTURAL if getattr(m, k) is not None and k != "classifier"]
        if given:
            unset = ", ".join("model." + k for k in given)
            raise ValueError(f"model.init={m.init!r}: the architecture comes from the checkpoint; unset {unset}")
        extra = {"classifier": m.classifier} if m.classifier else {}
        model = load_model(m.init, num_classes=num_classes, image_size=size, representation_size=rep, **extra, **reg)
    else:
        over = {k: getattr(m, k) for k in _STRUCTURAL if getattr(m, k) is not None and not k.startswith("resnet")}
        stem = _resnet_stem(m)
        if stem is not None:
            over["resnet"] = stem
        if m.representation_size is not None:
            over["representation_size"] = rep
        model = create_model(m.name, num_classes=num_classes, image_size=size, **over, **reg)
    if class_names and len(class_names) == num_classes:
        model.config = model.config.replace(class_names=tuple(class_names))
    return model.train()


# -- loss and metrics ----------------------------------------------------------------------

def compute_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str, label_smoothing: float) -> torch.Tensor:
    logits = logits.float()
    k = logits.shape[-1]
    if kind == "softmax":
        if targets.dtype in (torch.int64, torch.int32):
            return F.cross_entropy(logits, targets.long(), label_smoothing=label_smoothing)
        return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
    # sigmoid: per-class binary cross-entropy, summed over classes (big_vision's sigmoid_xent).
    if targets.dtype in (torch.int64, torch.int32):
        targets = F.one_hot(targets.long(), k).float()
        if label_smoothing:
            targets = targets * (1 - label_smoothing) + label_smoothing / k
    return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").sum(-1).mean()


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    if labels.dim() > 1:  # multi-hot: a hit when the top-k prediction is any positive label
        out = []
        for k in ks:
            idx = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
            out.append(int(labels.gather(1, idx).gt(0).any(1).sum()))
        return out
    maxk = min(max(ks), logits.shape[-1])
    pred = logits.topk(maxk, dim=-1).indices
    hit = pred.eq(labels.view(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(1).sum()) for k in ks]


# -- the trainer ---------------------------------------------------------------------------

class _Stop:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step boundary."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: bool = True):
        validate(cfg)
        if not cfg.out:
            raise ValueError("no output directory: pass --out DIR (or out=DIR)")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.resume = resume
        self.progress = progress
        self.loss_watch = LossWatch()  # the good-checkpoint rule (train.health)
        self.last_good_ckpt: Path | None = None
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(cfg.dist.backend, self.device)
        self.data = _data_module()

    # .. set-up ...............................................................
    def _log(self, msg: str) -> None:
        if self.dist.is_main:
            print(msg, file=sys.stderr, flush=True)

    def setup(self) -> None:
        cfg, d = self.cfg, self.dist
        if d.enabled and cfg.schedule.time_budget_s:
            # Each process reads its own clock: they would disagree on the step that ends the run
            # (or the progressive-resizing phase) and the next collective would hang.
            raise ValueError(f"schedule.time_budget_s={cfg.schedule.time_budget_s} is for single-process "
                             f"benchmarks; with {d.world_size} processes set schedule.steps (or epochs) instead")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            import os

            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        # The same seed on every rank: FSDP (unlike DDP) does not broadcast rank 0's initial weights.
        torch.manual_seed(cfg.seed)

        if d.is_main and (self.out / "checkpoints").is_dir():
            for stale in (self.out / "checkpoints").glob(".step_*.tmp*"):  # a save cut short by SIGKILL
                stale.unlink(missing_ok=True)
        if not self.resume and latest_checkpoint(self.out) is not None:
            raise ValueError(f"{self.out} already holds checkpoints; pass --resume to continue that run or choose "
                             "another --out")
        self.ckpt_path = latest_checkpoint(self.out) if self.resume else None
        if self.resume and self.ckpt_path is None:
            self._log(f"vitkit train: --resume: no checkpoint in {self.out / 'checkpoints'}; starting from step 0")

        # Data description: number of classes and their names, checked before anything heavy.
        dcfg = cfg.data
        info = self.data.dataset_info(dcfg.train, split=dcfg.train_split)
        self.info = info
        self.num_classes = int(info.num_classes)
        if self.num_classes < 1:
            raise ValueError(f"data.train={dcfg.train!r}: no classes found")
        self.class_names = list(info.class_names) if info.class_names else None
        self.test_spec = dcfg.test or dcfg.train
        self.has_test = True
        if not dcfg.test:
            # No test spec: evaluate on the training source's test split when it has one.
            try:
                self.data.dataset_info(dcfg.train, split=dcfg.test_split)
            except (ValueError, FileNotFoundError, KeyError):
                self.has_test = False
                self._log(f"vitkit train: no evaluation: {dcfg.train!r} has no {dcfg.test_split!r} split and "
                          "data.test is not set")
        if self.has_test:
            tinfo = self.data.dataset_info(self.test_spec, split=dcfg.test_split)
            if int(tinfo.num_classes) > self.num_classes:
                raise ValueError(f"data.test={self.test_spec!r} has {tinfo.num_classes} classes but the training "
                                 f"data has {self.num_classes}")
        self.loss_kind = cfg.loss if cfg.loss != "auto" else ("sigmoid" if info.multi_label else "softmax")

        # Batch arithmetic: global batch = micro x accumulation x processes.
        micro = dcfg.micro_batch_size or dcfg.batch_size // d.world_size
        if micro < 1 or dcfg.batch_size % (micro * d.world_size):
            raise ValueError(f"data.batch_size={dcfg.batch_size} is not a multiple of data.micro_batch_size={micro} x "
                             f"{d.world_size} process(es)")
        self.micro, self.accum = micro, dcfg.batch_size // (micro * d.world_size)
        if cfg.schedule.epochs > 0:
            if not info.num_examples:
                raise ValueError(f"schedule.epochs needs a data set of known size; {dcfg.train!r} is a stream: "
                                 "set schedule.steps instead")
            n = min(info.num_examples, dcfg.limit or info.num_examples)
            self.total_steps = max(1, math.ceil(cfg.schedule.epochs * n / dcfg.batch_size))
        else:
            self.total_steps = cfg.schedule.steps

        # Model.
        model = build_train_model(cfg, self.num_classes, self.class_names)
        self.model_config = model.config
        model.to(self.device)
        if cfg.activation_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ValueError(f"activation_checkpointing=true: {type(model).__name__} ({model.config.name}) "
                                 "does not support it; set activation_checkpointing=false")
            model.set_grad_checkpointing(True)
        self.model = model  # the bare module (state dicts, saving)
        if dcfg.progressive_resize is not None:
            low, stride = dcfg.progressive_resize[0], model.config.stride
            if low % stride[0] or low % stride[1]:
                raise ValueError(f"data.progressive_resize size {low} is not divisible by the model's stride "
                                 f"{stride} ({model.config.name}); choose a multiple of it")
        self.ema = EMA(model, cfg.ema) if cfg.ema else None

        mc = model.config
        common = dict(image_size=dcfg.image_size, mean=mc.mean, std=mc.std, in_chans=mc.in_chans,
                      num_workers=dcfg.num_workers, seed=cfg.seed, rank=d.rank, world_size=d.world_size,
                      pin_memory=self.device.type == "cuda")  # page-locked: the copies below are asynchronous
        self.train_loader = self.data.build_loader(
            dcfg.train, split=dcfg.train_split, train=True, batch_size=micro, randaugment=dcfg.randaugment,
            crop_area=dcfg.crop_area, flip=dcfg.flip, shuffle_buffer=dcfg.shuffle_buffer, drop_last=True,
            limit=dcfg.limit, **common)
        self.test_loader = None
        self.eval_sharded = True
        if self.has_test:
            test_kw = dict(split=dcfg.test_split, train=False, batch_size=dcfg.eval_batch_size,
                           eval_resize=dcfg.eval_resize, drop_last=False, limit=dcfg.eval_limit,
                           preprocess=dcfg.eval_preprocess)
            try:
                self.test_loader = self.data.build_loader(self.test_spec, **test_kw, **common)
            except ValueError:
                if not d.enabled:
                    raise
                # Too few shards to split the test set over the processes: each evaluates all of it.
                self.eval_sharded = False
                common_all = {**common, "rank": 0, "world_size": 1}
                self.test_loader = self.data.build_loader(self.test_spec, **test_kw, **common_all)
        self.mixup = None
        if dcfg.mixup_alpha > 0 or dcfg.cutmix_alpha > 0:
            self.mixup = self.data.Mixup(mixup_alpha=dcfg.mixup_alpha, cutmix_alpha=dcfg.cutmix_alpha,
                                         prob=dcfg.mixup_prob, switch_prob=dcfg.mixup_switch_prob,
                                         label_smoothing=dcfg.label_smoothing, num_classes=self.num_classes)

        # Parallel wrapper.
        self.fsdp = d.enabled and cfg.dist.strategy == "fsdp"
        if self.fsdp and (cfg.ema or cfg.activation_checkpointing and cfg.compile):
            raise ValueError("dist.strategy=fsdp does not support ema (nor compile with activation_checkpointing); "
                             "use dist.strategy=ddp")
        if self.fsdp:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.device.type, (d.world_size,))
            for block in model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            self.ddp_model = model
        elif d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DDP(model, device_ids=ids)
        else:
            self.ddp_model = model
        # dynamic=False: a new input shape (progressive resizing's second resolution, an evaluation
        # batch) gets its own static graph. With the default, the second shape starts a dynamic-shape
        # compile that ran for over 10 minutes on the CIFAR preset here (a static one: ~30 s).
        self.fwd_model = torch.compile(self.ddp_model, dynamic=False) if cfg.compile else self.ddp_model

        self.opt = build_optimizer(model, cfg.optim)
        from ..perf import resolve_precision

        self.precision = resolve_precision(cfg.precision, self.device)
        self.scaler = None
        if self.precision == "fp16":
            if self.device.type == "cpu":
                raise ValueError("precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
            self.scaler = torch.amp.GradScaler(self.device.type)

        self.step, self.epoch, self.train_time = 0, 0, 0.0
        self.budget = cfg.schedule.time_budget_s
        # Read each step's loss/stop flags one step late on GPUs (see run()); tests set it on CPU.
        self.lagged_flags = self.device.type == "cuda"
        if self.ckpt_path is not None:
            self._load(self.ckpt_path)

    # .. state ...................................................................
    def _model_state(self) -> dict[str, torch.Tensor]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def _optim_state(self) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.opt,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.opt.state_dict()

    def _state(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "model": self._model_state(),
            "optimizer": self._optim_state(),
            "rng": rng_state(),
            "data": self.train_loader.state_dict(),
            "meta": {"step": self.step, "epoch": int(getattr(self.train_loader, "epoch", self.epoch)),
                     "total_steps": self.total_steps, "train_time_s": self.train_time,
                     "world_size": self.dist.world_size, "config": json.dumps(to_dict(self.cfg)),
                     "model_config": self.model_config.to_json()},
        }
        if self.ema is not None:
            st["ema"] = self.ema.state_dict()
        if self.scaler is not None:
            st["scaler"] = self.scaler.state_dict()
        return st

    def _load(self, path: Path) -> None:
        st = load_checkpoint(path)
        meta = st["meta"]
        if meta.get("world_size", 1) != self.dist.world_size:
            self._log(f"vitkit train: note: {path.name} was written by {meta.get('world_size')} process(es), "
                      f"resuming on {self.dist.world_size}; the data order will differ from an uninterrupted run")
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
                raise ValueError(f"{path}: ema={self.cfg.ema} but the checkpoint holds no EMA weights")
            self.ema.load_state_dict(st["ema"])
        if self.scaler is not None and "scaler" in st:
            self.scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        self.loss_watch.load_state_dict(meta.get("loss_watch", {}))
        self.last_good_ckpt = last_good_checkpoint(self.out)
        self.step, self.epoch = int(meta["step"]), int(meta["epoch"])
        self.train_time = float(meta.get("train_time_s", 0.0))
        self.train_loader.load_state_dict(st["data"])
        self._log(f"vitkit train: resumed from {path} (step {self.step})")

    def save(self) -> Path | None:
        st = self._state()  # collective under FSDP: every rank takes part
        good, why = checkpoint_health(st, self.loss_watch)
        st["meta"].update(good=good, health=why, loss_watch=self.loss_watch.state_dict())
        if not good:
            self._log(f"vitkit train: note: the checkpoint of step {self.step} is not good: {why}")
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.out, self.step, st, self.cfg.keep_last)
        barrier()
        self.last_ckpt = path or self.out / "checkpoints" / f"step_{self.step:08d}.pt"
        if good:
            self.last_good_ckpt = self.last_ckpt
        return path

    # .. evaluation ..................................................................
    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        from ..perf import autocast

        assert self.test_loader is not None
        net = model if model is not None else self.ddp_model
        was_training = net.training
        net.eval()
        flip = self.cfg.eval_flip
        sums = torch.zeros(6, dtype=torch.float64)  # loss, top1, top5, count, flip top1, flip top5
        for images, labels in self.test_loader:
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            with autocast(self.precision, self.device):
                logits = net(images)
                mirrored = net(images.flip(-1)) if flip else None
            logits = logits.float()
            loss = compute_loss(logits, labels, self.loss_kind, 0.0)
            c1, c5 = topk_correct(logits, labels)
            f1, f5 = topk_correct((logits + mirrored.float()) / 2, labels) if mirrored is not None else (0, 0)
            n = labels.shape[0]
            sums += torch.tensor([float(loss) * n, c1, c5, n, f1, f5], dtype=torch.float64)
        if self.eval_sharded:
            all_reduce_(sums)
        net.train(was_training)
        n = max(sums[3].item(), 1.0)
        res = {"loss": sums[0].item() / n, "top1": sums[1].item() / n, "top5": sums[2].item() / n,
               "examples": int(sums[3].item())}
        if flip:
            res.update(flip_top1=sums[4].item() / n, flip_top5=sums[5].item() / n)
        return res

    def _ema_model(self) -> nn.Module:
        import copy

        m = copy.deepcopy(self.model)
        assert self.ema is not None
        m.load_state_dict({k: v.to(dtype=m.state_dict()[k].dtype) for k, v in self.ema.state_dict().items()})
        return m

    # .. the loop ...................................................................
    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            try:
                return next(self._it)
            except StopIteration:
                # The loader moves itself to the next epoch at the end of one (and says which).
                self.epoch = int(getattr(self.train_loader, "epoch", self.epoch + 1))
                self._it = iter(self.train_loader)
                if self._empty_epoch:
                    raise ValueError(f"data.train={self.cfg.data.train!r}: the loader yielded no batch of "
                                     f"{self.micro} images") from None
                self._empty_epoch = True

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps`` (or ``stop_at``, for tests); returns the summary."""
        self.setup()
        cfg, d = self.cfg, self.dist
        writer = None
        if d.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, self.out / "config.yaml")
            self._trim_metrics(self.step)
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step if self.step else None)
        self.last_ckpt = self.ckpt_path
        metrics_f = open(self.out / "metrics.jsonl", "a") if d.is_main else None
        from .step import train_step

        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        if self.budget:
            end = stop_at if stop_at is not None else 2**62  # the clock ends the run
        pbar = None
        if d.is_main and self.progress:
            from tqdm import tqdm

            pbar = tqdm(total=None if self.budget else self.total_steps, initial=self.step, desc="train", unit="step",
                        dynamic_ncols=True, file=sys.stderr)
        self._it = iter(self.train_loader)
        self._empty_epoch = False
        base_lrs = [cfg.optim.lr for _ in self.opt.param_groups]
        window_loss, window_n, window_t, window_img = 0.0, 0, time.perf_counter(), 0
        t_start, images_seen, last_loss = time.perf_counter(), 0, float("nan")
        train_time_start = self.train_time
        eval_res: dict[str, Any] = {}
        stopped_by: str | None = None
        pending: tuple[int, torch.Tensor] | None = None  # (step, flags) not yet read (CUDA)
        stopping = False

        def settle(item: tuple[int, torch.Tensor]) -> None:
            nonlocal last_loss, window_loss, window_n, stopping
            last_loss, stop_req = self._settle(item)
            window_loss, window_n, stopping = window_loss + last_loss, window_n + 1, stopping or stop_req

        ls = cfg.data.label_smoothing if self.mixup is None else 0.0

        def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return compute_loss(logits, targets, self.loss_kind, ls)

        def micro_batches(progress: float | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            nonlocal images_seen
            for micro in range(self.accum):
                images, labels = self._next_batch()
                self._empty_epoch = False
                torch.manual_seed(_step_seed(cfg.seed, self.step, d.rank, micro))
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                images = self._resize_for_phase(images, progress)
                targets = labels
                if self.mixup is not None:
                    gen = torch.Generator().manual_seed(_step_seed(cfg.seed + 1, self.step, d.rank, micro))
                    images, targets = self.mixup(images, labels, gen)
                    targets = targets.to(self.device)
                images_seen += images.shape[0] * d.world_size
                yield images, targets

        def after_backward(mean_loss: torch.Tensor) -> None:
            nonlocal pending
            flags = self._step_flags(mean_loss, stop.signal is not None)
            # On CUDA the flags of step N are read while step N+1 runs (reading them waits
            # for the GPU), so the host never idles the GPU; on CPU they are read at once.
            ready, pending = (pending, (self.step + 1, flags)) if self.lagged_flags else \
                ((self.step + 1, flags), None)
            if ready is not None:
                settle(ready)

        self.ddp_model.train()
        try:
            with _Stop() as stop:
                while self.step < end:
                    if self.budget and self.train_time >= self.budget:
                        self.total_steps = end = self.step
                        break
                    t_step = time.perf_counter()
                    progress = self.train_time / self.budget if self.budget else None
                    mult = lr_multiplier(self.step, cfg.schedule, self.total_steps, progress)
                    for g, lr in zip(self.opt.param_groups, base_lrs):
                        g["lr"] = lr * mult
                    grad_norm = train_step(
                        self.fwd_model, self.opt, micro_batches(progress), precision=self.precision, accum=self.accum,
                        loss_fn=loss_fn,
                        clip_norm=cfg.optim.clip_norm, params=self.model.parameters(), scaler=self.scaler,
                        no_sync=self.ddp_model.no_sync if d.enabled and not self.fsdp else None,
                        after_backward=after_backward).grad_norm
                    if self.ema is not None:
                        self.ema.update(self.model)
                    self.step += 1
                    self.train_time += time.perf_counter() - t_step
                    window_img += cfg.data.batch_size
                    boundary = (self.step % cfg.log_every == 0 or self.step == end or stopping
                                or bool(cfg.eval_every) and self.step % cfg.eval_every == 0
                                or bool(cfg.checkpoint_every) and self.step % cfg.checkpoint_every == 0)
                    if pending is not None and boundary:  # nothing is logged or saved unchecked
                        settle(pending)
                        pending = None

                    if self.step % cfg.log_every == 0 or self.step == end:
                        now = time.perf_counter()
                        ips = window_img / max(now - window_t, 1e-9)
                        rec = {"step": self.step, "epoch": self.epoch, "loss": window_loss / max(window_n, 1),
                               "lr": self.opt.param_groups[0]["lr"], "images_per_s": ips,
                               "time_s": now - t_start}
                        if grad_norm is not None:
                            rec["grad_norm"] = float(grad_norm)
                        self._write(metrics_f, writer, rec, "train")
                        if pbar is not None:
                            pbar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}", img_s=f"{ips:.0f}")
                        window_loss, window_n, window_t, window_img = 0.0, 0, now, 0
                    if pbar is not None:
                        pbar.update(1)
                    t_side = time.perf_counter()  # evaluation and checkpoints do not count as training speed
                    if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < end and \
                            self.test_loader is not None and not stopping:
                        eval_res = self._eval_and_log(metrics_f, writer, t_start)
                    if stopping:
                        stopped_by = signal.Signals(stop.signal).name if stop.signal else "a signal on another rank"
                        self.save()
                        break
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < end:
                        self.save()
                    window_t += time.perf_counter() - t_side
                if pending is not None:  # the clock ended the run between boundaries
                    settle(pending)
        finally:
            if pbar is not None:
                pbar.close()
        elapsed = time.perf_counter() - t_start
        if stopped_by:
            self._log(f"vitkit train: stopped by {stopped_by} at step {self.step}; checkpoint {self.last_ckpt}; "
                      f"continue with: vitkit train --out {self.out} --resume")
        elif self.step >= end and stop_at is None:
            self.save()
            if self.test_loader is not None:
                eval_res = self._eval_and_log(metrics_f, writer, t_start)
        elif stop_at is not None:
            self.save()
        summary = self._finish(eval_res, elapsed, images_seen, last_loss, stopped_by, stop_at,
                               self.train_time - train_time_start)
        if metrics_f is not None:
            metrics_f.close()
        if writer is not None:
            writer.close()
        return summary

    def _resize_for_phase(self, images: torch.Tensor, progress: float | None) -> torch.Tensor:
        """Progressive resizing (``data.progressive_resize``): downsample the batch while in the
        low-resolution phase. Done here rather than in the loader so that the phase can change at
        any step (the workers keep their prefetched batches) and resumes stay exact."""
        pr = self.cfg.data.progressive_resize
        if pr is None:
            return images
        size, frac = pr
        done = progress if progress is not None else self.step / max(self.total_steps, 1)
        if done >= frac:
            return images
        # Antialiased bilinear: the same filter family as the loader's resize of the decoded image.
        return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    def _step_flags(self, loss: torch.Tensor, stop_requested: bool) -> torch.Tensor:
        """[loss or 0, loss not finite, stop requested], summed over ranks (launched, not read)."""
        finite = torch.isfinite(loss)
        flags = torch.stack([torch.where(finite, loss, torch.zeros_like(loss)), (~finite).double(),
                             # full(), not tensor(): a fill kernel, not a synchronous host-to-device copy
                             torch.full((), float(stop_requested), dtype=torch.float64, device=loss.device)])
        if self.dist.enabled:
            # One small all-reduce per step: mean loss, divergence and stop requests agree on all ranks.
            all_reduce_(flags)
        return flags

    def _settle(self, item: tuple[int, torch.Tensor]) -> tuple[float, bool]:
        """Read one step's flags (a device sync on GPU): (mean loss, stop requested); raise if diverged."""
        step, flags = item
        loss, bad, stop = flags.tolist()
        if bad > 0:
            where = f"the last good checkpoint is {self.last_good_ckpt}" if self.last_good_ckpt else \
                "no good checkpoint was written yet"
            raise TrainingDiverged(f"loss is NaN or infinite at step {step} (on {int(bad)} of "
                                   f"{self.dist.world_size} processes); {where} (lower optim.lr, check the data, "
                                   "or use precision=fp32)")
        self.loss_watch.add(loss / self.dist.world_size)
        return loss / self.dist.world_size, stop > 0

    def _eval_and_log(self, f: Any, writer: Any, t_start: float) -> dict[str, Any]:
        res: dict[str, Any] = dict(self.evaluate())
        if self.ema is not None:
            ema = self.evaluate(self._ema_model())
            res.update({f"ema_{k}": v for k, v in ema.items() if k != "examples"})
        rec = {"step": self.step, **{f"eval/{k}": v for k, v in res.items()}, "time_s": time.perf_counter() - t_start}
        self._write(f, writer, rec, None)
        if self.dist.is_main:
            top = f"top-1 {res['top1']:.4f} top-5 {res['top5']:.4f}"
            self._log(f"vitkit train: step {self.step}: eval {top} loss {res['loss']:.4f}")
        return res

    def _write(self, f: Any, writer: Any, rec: dict[str, Any], prefix: str | None) -> None:
        if f is None:
            return
        f.write(json.dumps(rec) + "\n")
        f.flush()
        for k, v in rec.items():
            if k in ("step",) or not isinstance(v, (int, float)):
                continue
            writer.add_scalar(f"{prefix}/{k}" if prefix else k, v, rec["step"])

    def _trim_metrics(self, step: int) -> None:
        """On resume, drop log lines from beyond the checkpoint (they will be written again)."""
        p = self.out / "metrics.jsonl"
        if not p.exists():
            return
        if step == 0:
            p.unlink()
            return
        keep = []
        for line in p.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        p.write_text("".join(x + "\n" for x in keep))

    def _final_model(self) -> nn.Module | None:
        if not self.fsdp:
            return self.model
        from .. import create_model

        state = self._model_state()  # collective: every rank takes part, rank 0 gets the full tensors
        if not self.dist.is_main:
            return None
        cfg = self.model_config
        m = create_model(cfg.name, **{k: v for k, v in cfg.to_dict().items() if k != "name"})
        m.load_state_dict(state)
        return m

    def _finish(self, eval_res: dict[str, Any], elapsed: float, images_seen: int, last_loss: float,
                stopped_by: str | None, stop_at: int | None, train_s: float) -> dict[str, Any]:
        from .. import save_model

        final = self._final_model() if (stopped_by is None and stop_at is None) else None
        summary: dict[str, Any] = {
            "steps": self.step, "total_steps": self.total_steps, "finished": self.step >= self.total_steps,
            "stopped_by": stopped_by, "images_seen_this_run": images_seen, "time_s": elapsed,
            "train_time_s": train_s, "images_per_s": images_seen / max(train_s, 1e-9), "final_loss": last_loss,
            "eval": eval_res, "eval_top1": eval_res.get("top1"), "eval_top5": eval_res.get("top5"),
            "data": self.train_loader.stats.as_dict(),
            "eval_data": self.test_loader.stats.as_dict() if self.test_loader is not None else None,
            "eval_preprocess": getattr(self.test_loader, "preprocess", None),
            "world_size": self.dist.world_size, "rank": self.dist.rank, "precision": self.precision,
            "device": str(self.device),
            "batch_size": self.cfg.data.batch_size, "micro_batch_size": self.micro, "accumulation": self.accum,
            "num_classes": self.num_classes, "checkpoint": str(self.last_ckpt) if self.last_ckpt else None,
        }
        for what, ld in (("training", self.train_loader), ("test", self.test_loader)):
            st = getattr(ld, "stats", None)
            if st is not None and (getattr(st, "skipped_total", 0) or getattr(st, "converted_total", 0)):
                self._log(f"vitkit train: {what} data: {st}")
        if self.dist.is_main:
            if final is not None:
                summary["model"] = str(save_model(final.eval(), self.out / "model.safetensors"))
                if self.ema is not None:
                    summary["model_ema"] = str(save_model(self._ema_model().eval(), self.out / "model_ema.safetensors"))
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

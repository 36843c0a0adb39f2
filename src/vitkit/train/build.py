"""Set-up of a run: what the data is (classes, size, run length, batch arithmetic), the model, the loaders.

Everything here is decided before the first step and checked before anything heavy is allocated.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DatasetInfo, Loader, Mixup, build_loader, dataset_info
from ..data.sources import UNLABELLED
from ..data.spec import DataSource, describe_data, has_splits, is_data_object
from ..errors import UserError
from ..evaluate.core import ClassMatch, match_classes
from ..models.arch import ARCH_FIELDS, FLAT_RESNET, arch_diff, resnet_from_flat
from ..models.config import ViTConfig
from ..training_checkpoint import latest_checkpoint, remove_stale_temporaries
from .config import ARCHITECTURE, TrainConfig, image_hw
from .dist import DistInfo
from .presets import check_own_test_set


def _log(dist: DistInfo, msg: str) -> None:
    if dist.is_main:
        logging.getLogger("vitkit").warning(msg)  # notes the user should see even with --quiet


# -- process ---------------------------------------------------------------------------

def prepare_process(cfg: TrainConfig, d: DistInfo, out: Path, resume: bool) -> Path | None:
    """Process-wide settings (threads, determinism, seed), and the checkpoint (if any) the run continues from."""
    if d.enabled and cfg.schedule.time_budget_s:
        # Each process reads its own clock: they would disagree on the step that ends the run
        # (or the progressive-resizing phase) and the next collective would hang.
        raise UserError(f"schedule.time_budget_s={cfg.schedule.time_budget_s} is for single-process "
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
    if d.is_main:
        remove_stale_temporaries(out)
    if not resume and latest_checkpoint(out) is not None:
        raise UserError(f"{out} already holds checkpoints; pass --resume to continue that run or choose "
                         "another --out")
    ckpt_path = latest_checkpoint(out) if resume else None
    if resume and ckpt_path is None:
        _log(d, f"vitkit train: --resume: no checkpoint in {out / 'checkpoints'}; starting from step 0")
    return ckpt_path


# -- model -----------------------------------------------------------------------------

def model_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The ViTConfig fields ``model.*`` sets (``None`` fields keep the named model's / the checkpoint's)."""
    m = cfg.model
    over = {k: v for k, v in vars(m).items() if v is not None and k not in ("name", "init", *FLAT_RESNET)}
    if "representation_size" in over:
        over["representation_size"] = over["representation_size"] or None  # 0: no pre-logits layer
    if m.resnet_layers is not None or m.resnet_width is not None:
        from ..models.registry import get_config

        over["resnet"] = resnet_from_flat(m.resnet_layers, m.resnet_width, get_config(m.name).resnet)
    return over


def check_model_shape(cfg: TrainConfig) -> None:
    """The named model with ``model.*`` against ``data.image_size`` and the progressive-resizing size, before any
    data is read (a stride that divides neither is the user's to fix, and should not wait for the data sets to be
    opened). A model from ``model.init`` takes its architecture from the file: checked once it is loaded."""
    if cfg.model.init:
        return
    from ..errors import UnknownNameError
    from ..models.registry import get_config

    try:
        mc = get_config(cfg.model.name, **model_overrides(cfg), image_size=image_hw(cfg.data))
    except UnknownNameError:
        raise
    except ValueError as e:  # ViTConfig's field checks: the config is the user's
        raise UserError(f"model.name={cfg.model.name} with the model.* options and data.image_size="
                        f"{cfg.data.image_size}: {e}") from None
    low_resolution(cfg, mc)


def _check_against_checkpoint(cfg: TrainConfig, loaded: Any) -> None:
    """Architecture fields set explicitly with ``model.init`` must agree with the checkpoint."""
    m = cfg.model
    given = {k: getattr(m, k) for k in ARCHITECTURE if getattr(m, k) is not None}
    for k, want, have in arch_diff(given, loaded, ARCHITECTURE)[:1]:
        implied = _implied_by_name(m.name, k, want)
        raise UserError(f"model.{k}={getattr(m, k)!r}{implied} contradicts model.init={m.init!r}, "
                        f"which has {k}={have!r}; the architecture comes from the checkpoint: drop model.{k}"
                        f"{' / model.name' if implied else ''}")


def _implied_by_name(name: str, k: str, want: Any) -> str:
    """`` (implied by model.name=X)`` where ``want`` (a ``model.*`` value in the checked form: patch size as a
    pair, tuples) is the named model's (``config.name_shape``)."""
    from .config import NAME_SHAPE, name_shape

    if k not in NAME_SHAPE:
        return ""
    try:
        value = name_shape(name)[k]
    except KeyError:
        return ""
    return f" (implied by model.name={name})" if value is not None and value == want else ""


def build_train_model(cfg: TrainConfig, num_classes: int, class_names: list[str] | None) -> nn.Module:
    """A fresh model, or one fine-tuned from ``model.init`` with a zero head at the new size."""
    from .. import create_model, load_model

    size = image_hw(cfg.data)
    over = model_overrides(cfg)
    if cfg.model.init:
        # The file decides the architecture; explicit fields are checked against it after loading (some
        # formats need num_heads/classifier as hints to read at all, so they go in as given).
        arch = {k: over.pop(k) for k in list(over) if k in ARCH_FIELDS}
        hints = {k: arch[k] for k in ("classifier", "num_heads") if k in arch}
        rep = over.pop("representation_size", None)
        model = load_model(cfg.model.init, num_classes=num_classes, image_size=size, representation_size=rep,
                           **hints, **over)
        _check_against_checkpoint(cfg, model.config)
    else:
        model = create_model(cfg.model.name, num_classes=num_classes, image_size=size, **over)
    if class_names and len(class_names) == num_classes:
        model.config = model.config.replace(class_names=tuple(class_names))
    return masked_wrapper(cfg, model).train()


def masked_wrapper(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    """``objective=masked_patch``: the encoder (no head: ``num_classes=0``) inside the [mask] embedding and the
    patch-prediction head; otherwise ``model`` itself."""
    if cfg.objective != "masked_patch":
        return model
    from ..models.masked import MaskedPatchModel
    from ..models.vit import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise UserError(f"objective=masked_patch pre-trains a ViT; model.name={cfg.model.name!r} is a "
                        f"{type(model).__name__}")
    if model.config.num_classes:
        model.reset_head(0)
    m = cfg.mpp
    rank = int(os.environ.get("RANK", "0"))
    return MaskedPatchModel(model, target=m.target, bits=m.bits, ratio=m.corrupt, mask=m.mask, other=m.random,
                            seed=cfg.seed, rank=rank)


def resume_model(state: dict[str, Any], path: Path, cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model a training checkpoint was written from (architecture only: ``meta.model_config``); the data of
    the resumed run must still fit it (classes, image size)."""
    from ..models.config import ViTConfig
    from ..models.registry import build_model

    try:
        mc = ViTConfig.from_json(state["meta"]["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: the checkpoint does not record its model ({type(e).__name__}: {e})") from None
    if mc.num_classes != num_classes and not (cfg.objective == "masked_patch" and mc.num_classes == 0):
        raise UserError(f"--resume: {path} holds a model of {mc.num_classes} classes but "
                         f"data.train={cfg.data.train!r} has {num_classes}")
    if tuple(mc.image_size) != image_hw(cfg.data):
        raise UserError(f"--resume: {path} holds a model for image_size={tuple(mc.image_size)} but "
                         f"data.image_size={cfg.data.image_size}")
    # model.* options: weight-free ones (dropout, ...) apply; ones that decide the weights must agree.
    over = model_overrides(cfg)
    weights = {k: over.pop(k) for k in list(over) if k in ARCH_FIELDS or k == "representation_size"}
    for k, _, have in arch_diff(weights, mc, tuple(weights))[:1]:
        raise UserError(f"--resume: model.{k}={weights[k]!r} but {path} holds a model with {k}={have!r}")
    return masked_wrapper(cfg, build_model(mc.replace(**over) if over else mc)).train()


# -- data ------------------------------------------------------------------------------

@dataclass
class DataPlan:
    """What the data decides: classes, evaluation source, loss kind, batch arithmetic and run length."""

    num_classes: int
    class_names: list[str] | None
    test_spec: DataSource | None  # the evaluation data: a spec or a data object; None: no evaluation
    loss_kind: str
    micro: int  # images per forward pass per process
    accum: int  # micro-batches per optimiser step
    total_steps: int
    train_data: DataSource | None = None  # the training data: a spec or a data object (None: data.train)
    test_classes: ClassMatch | None = None  # how the test labels map to the training classes (None: the same)


def _same_classes(info: DatasetInfo, tinfo: DatasetInfo, train: str, test: str) -> ClassMatch | None:
    """The test data's classes must be the training data's: matched by ``vitkit eval``'s rule
    (:func:`vitkit.evaluate.core.match_classes`, the training data in the model's place): the same names (in any
    order: labels are remapped; a subset is scored among those classes), or, without names on both sides, the same
    number of classes. Returns the ClassMatch when labels need remapping, else None."""
    k, tk = int(info.num_classes), int(tinfo.num_classes)
    if not (info.class_names and tinfo.class_names) and k != tk:
        raise UserError(f"data.test={test} has {tk} classes but data.train={train} has {k} (and no class names on "
                        f"{'both sides' if not (info.class_names or tinfo.class_names) else 'one side'} to match "
                        "them by): the test set must hold the training data's classes")
    try:
        match = match_classes(info.class_names, tinfo.class_names, k, tk, model="the training data")
    except UserError as e:
        raise UserError(f"data.test={test} does not hold the classes of data.train={train} (the test set belongs "
                        f"to the run: set both, e.g. --data SPEC): {e}") from None
    return match if match.label_map is not None else None


def plan_data(cfg: TrainConfig, dist: DistInfo, train_data: DataSource | None = None,
              test_data: DataSource | None = None) -> DataPlan:
    """Read the data sets' descriptions (no images) and derive everything that depends on them. ``train_data`` /
    ``test_data``: data objects (or specs) in place of ``data.train`` / ``data.test``."""
    check_model_shape(cfg)  # before the data is opened
    dcfg = cfg.data
    check_own_test_set(cfg, train_data, test_data)
    train = dcfg.train if train_data is None else train_data
    test = (dcfg.test or None) if test_data is None else test_data
    name = describe_data(train)
    info = dataset_info(train, split=dcfg.train_split)
    num_classes = int(info.num_classes)
    if num_classes < 1:
        raise UserError(f"data.train={name}: no classes found")
    if cfg.objective == "classify" and list(info.class_names or ()) == [UNLABELLED]:
        raise UserError(f"data.train={name}: images without class sub-folders (unlabelled); classifying "
                         "needs ROOT/CLASS/IMAGE folders: pre-train on them with objective=masked_patch "
                         "(--preset mpp_pretrain)")
    test_spec: DataSource | None = train if test is None else test
    if test is None:
        # No test data: evaluate on the training source's test split when it has one (an object that is a single
        # split has none: it is not its own test set).
        try:
            if is_data_object(train) and not has_splits(train):
                raise FileNotFoundError(name)
            dataset_info(train, split=dcfg.test_split)
        except (ValueError, FileNotFoundError, KeyError):
            test_spec = None
            _log(dist, f"vitkit train: no evaluation: {name} has no {dcfg.test_split!r} split and "
                       + ("test_data is not given" if is_data_object(train) else "data.test is not set"))
    test_classes = None
    if test_spec is not None:
        tinfo = dataset_info(test_spec, split=dcfg.test_split)
        test_classes = _same_classes(info, tinfo, name, describe_data(test_spec))
    loss_kind = cfg.loss if cfg.loss != "auto" else ("sigmoid" if info.multi_label else "softmax")
    # Batch arithmetic: global batch = micro x accumulation x processes.
    micro = dcfg.micro_batch_size or dcfg.batch_size // dist.world_size
    if micro < 1 or dcfg.batch_size % (micro * dist.world_size):
        raise UserError(f"data.batch_size={dcfg.batch_size} is not a multiple of data.micro_batch_size={micro} x "
                         f"{dist.world_size} process(es)")
    if cfg.schedule.epochs > 0:
        if not info.num_examples:
            raise UserError(f"schedule.epochs needs a data set of known size; {name} is a stream: "
                             "set schedule.steps instead")
        n = min(info.num_examples, dcfg.limit or info.num_examples)
        total_steps = max(1, math.ceil(cfg.schedule.epochs * n / dcfg.batch_size))
    else:
        total_steps = cfg.schedule.steps
    if cfg.schedule.warmup_steps > total_steps:
        _log(dist, f"vitkit train: warning: schedule.warmup_steps={cfg.schedule.warmup_steps} is more than the "
                   f"run's {total_steps} steps: the learning rate never reaches optim.lr={cfg.optim.lr}")
    return DataPlan(num_classes, list(info.class_names) if info.class_names else None, test_spec, loss_kind,
                    micro, dcfg.batch_size // (micro * dist.world_size), total_steps, train_data=train,
                    test_classes=test_classes)


def build_loaders(cfg: TrainConfig, plan: DataPlan, model_config: ViTConfig, dist: DistInfo,
                  pin_memory: bool) -> tuple[Loader, Loader | None, bool]:
    """(training loader, test loader or None, whether evaluation is sharded over the processes)."""
    dcfg, mc = cfg.data, model_config
    # dcfg is the loader's options (a LoaderOptions): how images become batches comes from it, not from here
    common = dict(image_size=image_hw(dcfg), mean=mc.mean, std=mc.std, in_chans=mc.in_chans, seed=cfg.seed,
                  rank=dist.rank, world_size=dist.world_size,
                  pin_memory=pin_memory)  # page-locked: the copies to the GPU are asynchronous
    train = dcfg.train if plan.train_data is None else plan.train_data
    train_loader = build_loader(train, dcfg, split=dcfg.train_split, train=True, batch_size=plan.micro,
                                drop_last=True, limit=dcfg.limit, **common)
    if plan.test_spec is None:
        return train_loader, None, True
    test_kw = dict(split=dcfg.test_split, train=False, batch_size=dcfg.eval_batch_size, drop_last=False,
                   limit=dcfg.eval_limit)
    try:
        return train_loader, build_loader(plan.test_spec, dcfg, **test_kw, **common), True
    except ValueError:
        if not dist.enabled:
            raise
        # Too few shards to split the test set over the processes: each evaluates all of it.
        common_all = {**common, "rank": 0, "world_size": 1}
        return train_loader, build_loader(plan.test_spec, dcfg, **test_kw, **common_all), False


def build_mixup(cfg: TrainConfig, num_classes: int) -> Mixup | None:
    dcfg = cfg.data
    if dcfg.mixup_alpha <= 0 and dcfg.cutmix_alpha <= 0:
        return None
    return Mixup(mixup_alpha=dcfg.mixup_alpha, cutmix_alpha=dcfg.cutmix_alpha, prob=dcfg.mixup_prob,
                      switch_prob=dcfg.mixup_switch_prob, label_smoothing=dcfg.label_smoothing,
                      num_classes=num_classes)


def low_resolution(cfg: TrainConfig, model_config: ViTConfig) -> tuple[int, int] | None:
    """The progressive-resizing phase's input size, checked against the model's stride by ViTConfig (the one
    place that decides divisibility)."""
    pr = cfg.data.progressive_resize
    if pr is None:
        return None
    low = (pr[0], pr[0])
    try:
        model_config.replace(image_size=low)
    except ValueError as e:
        raise UserError(f"data.progressive_resize size {pr[0]}: {e}") from None
    return low


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (bf16 and fp32 do not); fp16 autocast exists on GPUs only."""
    if precision != "fp16":
        return None
    if device.type == "cpu":
        raise UserError("precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
    return torch.amp.GradScaler(device.type)

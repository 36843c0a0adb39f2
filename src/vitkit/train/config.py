"""One typed configuration tree for a training run, with ``key=value`` overrides.

Every option lives in a dataclass below; presets (``presets.py``) return a filled-in
:class:`TrainConfig` and the command line changes single fields with dotted keys
(``optim.lr=0.01 data.randaugment=2,10 ema=0.9999``). Unknown keys and values of the wrong
type are rejected with the valid choices listed (:mod:`vitkit.train.options`). The resolved tree is
written to ``OUT/config.yaml`` and read back by ``--resume``.

Vocabularies are not repeated here: the model options are :class:`~vitkit.models.ViTConfig`'s own fields,
the evaluation resize modes are the transform's, the precisions are ``vitkit.perf``'s and the split names
are ``vitkit.data.spec``'s, so ``--list-options`` offers exactly what the consumers accept.

Rules decided here (:func:`apply_overrides`):

* ``schedule.steps`` and ``schedule.epochs``: one sets the run length. Overriding one resets the other
  (a preset's ``epochs`` never silently beats an explicit ``steps=N``); setting both is an error.
* ``model.init=CKPT``: the architecture comes from the checkpoint. A preset's architecture fields
  (:data:`ARCHITECTURE`) are dropped; ones set explicitly are compared with the file when the model is built
  and a contradiction is an error naming both.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ..data.options import LoaderOptions
from ..data.spec import SPLIT_NAMES
from ..data.transforms import check_crop
from ..errors import UserError
from ..image_size import HW, as_hw
from ..models.arch import ARCH_FIELDS, FLAT_RESNET, SHAPE_FIELDS, arch_values, flat
from ..models.config import GELU_VARIANTS, POOLED_CLASSIFIERS, POSEMB_RESAMPLE, ViTConfig
from ..models.masked import MPP_TARGETS
from ..perf import PRECISIONS
from .options import from_dict_typed, set_option, to_dict
from .options import list_options as _list_options
from .trackers import parse_loggers

__all__ = ["ARCHITECTURE", "DataConfig", "DistConfig", "ModelConfig", "OptimConfig", "ScheduleConfig", "TrainConfig",
           "apply_layers",
           "apply_overrides", "copy_config", "from_dict", "list_options", "load_yaml", "save_yaml", "set_option",
           "to_dict", "validate"]

# ViTConfig fields that are not model.* options, because another value decides them: the data set decides
# num_classes and class_names, data.image_size the input size; the hybrid stem is given flat as
# model.resnet_layers / model.resnet_width (a nested config does not fit key=value); extra is free-form.
_DECIDED_ELSEWHERE = ("name", "num_classes", "class_names", "image_size", "resnet", "extra")
_VOCABULARIES = {"classifier": POOLED_CLASSIFIERS, "gelu": GELU_VARIANTS, "posemb_resample": POSEMB_RESAMPLE}
# Fields that decide which weights exist (ViTConfig's, the ResNet stem flat): with model.init they come from the
# checkpoint.
ARCHITECTURE = flat(ARCH_FIELDS)


def _override_type(name: str, tp: Any) -> Any:
    if name in _VOCABULARIES:
        return Optional[Literal[_VOCABULARIES[name]]]  # noqa: UP045 - a runtime type object, not an annotation
    if tp == tuple[int, int]:
        return Optional[int | tuple[int, int]]  # noqa: UP045 - "4" or "4,2"
    if tp == tuple[float, float, float]:
        return Optional[tuple[float, ...]]  # noqa: UP045 - mean/std: one entry per input channel (in_chans)
    return Optional[tp]  # noqa: UP045


def _model_config_fields() -> list[tuple[str, Any, Any]]:
    vit_types = typing.get_type_hints(ViTConfig)
    out: list[tuple[str, Any, Any]] = [("name", str, field(default="ViT-Ti_16")),
                                       ("init", Optional[str], field(default=None))]  # noqa: UP045
    for f in dataclasses.fields(ViTConfig):
        if f.name not in _DECIDED_ELSEWHERE:
            out.append((f.name, _override_type(f.name, vit_types[f.name]), field(default=None)))
    layers, width = FLAT_RESNET
    out += [(layers, Optional[tuple[int, ...]], field(default=None)),  # noqa: UP045
            (width, Optional[float], field(default=None))]  # noqa: UP045
    return out


# Generated from ViTConfig rather than written out, so the two cannot drift: a new model field is a new option.
ModelConfig = dataclasses.make_dataclass("ModelConfig", _model_config_fields(), namespace={"__doc__": """The network:
    ``name`` (a registered model) with any :class:`~vitkit.models.ViTConfig` field overridden; ``None`` keeps the
    named model's (or the checkpoint's) value. ``init``: fine-tune from a checkpoint (any format ``load_model``
    reads, any resolution: position embeddings are resampled, the head re-made zero-initialised).
    ``representation_size``: 0 = no pre-logits layer (a fresh task from ``init`` drops it unless set).
    ``resnet_layers``: bottleneck units per stage of a hybrid stem, ``()`` = the root block only;
    ``resnet_width``: its width factor, int(64 * width) root channels as the official ResNet (0.5, 1, 2, ...).
    ``stem_channels`` / ``stem_strides``: a convolutional stem instead (one 3x3 conv + BatchNorm + ReLU per entry,
    e.g. ``model.stem_channels=64,64,128,128,256 model.stem_strides=1,1,2,1,2``)."""})
ModelConfig.__module__ = __name__


@dataclass
class DataConfig(LoaderOptions):
    """Input pipeline. ``batch_size`` is the global batch of one optimiser step; each process
    runs ``micro_batch_size`` images per forward pass and accumulates gradients to reach it.
    How images become batches (``image_size``, ``crop_area``, ``flip``, ``eval_resize``, ...) and those
    options' defaults are :class:`vitkit.data.options.LoaderOptions`' fields, inherited."""

    train: str = "digits"
    test: str | None = None  # None: the train spec's test split, if it has one (else no evaluation)
    train_split: Literal[SPLIT_NAMES] = "train"
    test_split: Literal[SPLIT_NAMES] = "test"
    batch_size: int = 512
    micro_batch_size: int = 0  # 0: batch_size / world_size (no accumulation)
    eval_batch_size: int = 256
    # (size, fraction): progressive resizing. The first ``fraction`` of training (of the steps, or
    # of the time budget) runs on the batches downsampled to ``size`` x ``size`` px (a square
    # image_size only); the model resamples its position embeddings on the fly. Evaluation always
    # runs at ``image_size``.
    progressive_resize: tuple[int, float] | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0
    limit: int | None = None  # use only the first N training examples (quick checks)
    eval_limit: int | None = None


@dataclass
class MaskedConfig:
    """Masked patch prediction (``objective=masked_patch``; :mod:`vitkit.models.masked`): what is predicted, and
    the corruption (the paper's: 50% of the patches; of those 80% [mask], 10% another patch, 10% kept)."""

    target: Literal[MPP_TARGETS] = "mean_color"
    bits: int = 3
    corrupt: float = 0.5
    mask: float = 0.8
    random: float = 0.1


@dataclass
class OptimConfig:
    """Optimiser. ``weight_decay`` is decoupled from the gradient (AdamW style, never added to
    the loss); ``wd_mode="lr"`` scales it by the learning rate as ``torch.optim.AdamW`` does
    (the paper's Adam), ``"schedule"`` only by the schedule's multiplier as big_vision's
    ``config.wd``. Biases, norms, position embeddings and the class token are not decayed."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    wd_mode: Literal["lr", "schedule"] = "lr"
    clip_norm: float = 1.0  # global gradient norm; 0 = off


@dataclass
class ScheduleConfig:
    """Linear warm-up from 0, then decay to ``end_lr_ratio * lr``. The run length is ``steps`` or,
    when ``epochs > 0``, epochs of the training set (then ``steps`` must be 0): overriding one of
    them on the command line resets the other; setting both is an error."""

    steps: int = 1000
    epochs: float = 0.0
    warmup_steps: int = 100
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    end_lr_ratio: float = 0.0
    # > 0: train for this many seconds of training time (evaluation excluded) instead of ``steps``;
    # the decay then follows the elapsed time. For single-process fixed-time benchmarks; not bitwise
    # reproducible.
    time_budget_s: float = 0.0


@dataclass
class DistConfig:
    """Several processes (``torchrun``): DDP, or FSDP2 ``fully_shard`` per block."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    backend: Literal["auto", "gloo", "nccl"] = "auto"


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    loss: Literal["auto", "softmax", "sigmoid"] = "auto"  # auto: sigmoid for multi-label data
    # What the model learns: the labels, or the paper's self-supervised masked patch prediction (labels unused)
    objective: Literal["classify", "masked_patch"] = "classify"
    mpp: MaskedConfig = field(default_factory=MaskedConfig)
    precision: Literal[PRECISIONS] = "auto"
    device: str = "auto"  # auto: cuda if available (LOCAL_RANK's GPU), else cpu
    compile: bool = False
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.9999); 0 = off
    activation_checkpointing: bool = False
    eval_every: int = 0  # steps; 0 = only at the end
    # Also score each test image with its mirror image (mean of the two logits) and report that as
    # eval/flip_top1 and flip_top5 beside the single-view top1/top5; doubles evaluation cost.
    eval_flip: bool = False
    log_every: int = 50
    # Experiment trackers beside metrics.jsonl, comma-separated: tensorboard, mlflow, wandb (vitkit.train.trackers)
    logger: str = "tensorboard"
    checkpoint_every: int = 1000
    keep_last: int = 3
    seed: int = 0
    deterministic: bool = False
    threads: int | None = None  # torch CPU threads; None = torch's default
    out: str | None = None
    preset: str | None = None  # which preset this came from (informational)



def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings to a copy of ``cfg``."""
    return apply_layers(cfg, [overrides])


def apply_layers(cfg: TrainConfig, layers: list[list[str | tuple[str, Any]]]) -> TrainConfig:
    """Apply layers of options to a copy of ``cfg``, each layer over the ones before (``vitkit train``: config
    files, then flags, then ``key=value``). An item is a ``"key=value"`` string or a ``(key, value)`` pair (a YAML
    value). The run-length rule holds per layer: a layer that sets one of ``schedule.steps``/``schedule.epochs``
    resets the other; one that sets both must leave one at 0 (a run's own config.yaml does). With
    ``model.init``, architecture fields that no layer set are dropped (the checkpoint decides)."""
    cfg = copy_config(cfg)
    given_all: set[str] = set()
    for layer in layers:
        given: list[str] = []
        for item in layer:
            if isinstance(item, tuple):
                key, value = item
            elif "=" not in item:
                raise UserError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.01)")
            else:
                key, value = item.split("=", 1)
            set_option(cfg, key.strip(), value)
            given.append(key.strip())
        length = [k for k in ("schedule.steps", "schedule.epochs") if k in given]
        if len(length) == 2 and cfg.schedule.steps and cfg.schedule.epochs:
            raise UserError("schedule.steps and schedule.epochs both set: give one of them (the run length)")
        if length == ["schedule.steps"]:
            cfg.schedule.epochs = 0.0
        elif length == ["schedule.epochs"]:
            cfg.schedule.steps = 0
        given_all.update(given)
    if cfg.model.init:
        for k in ARCHITECTURE:  # the checkpoint decides; only explicit values are checked against it
            if f"model.{k}" not in given_all:
                setattr(cfg.model, k, None)
        if "model.name" in given_all:
            _shape_of_name(cfg.model, given_all)
    validate(cfg)
    return cfg



# The fields an explicit model.name implies with model.init (its shape; pooling and head are the fine-tune's).
NAME_SHAPE = flat(SHAPE_FIELDS)


def name_shape(name: str) -> dict[str, Any]:
    """The :data:`NAME_SHAPE` fields of a registered model, as ``model.*`` values (tuples; None: no ResNet stem)."""
    from ..models.registry import get_config

    return arch_values(get_config(name), NAME_SHAPE)


def _shape_of_name(m: ModelConfig, given: set[str]) -> None:
    """An explicit ``model.name`` with ``model.init``: the shape that name has becomes explicit (where no
    ``model.*`` field says otherwise), so building the model checks it against the file instead of ignoring it."""
    for k, v in name_shape(m.name).items():
        if f"model.{k}" not in given and v is not None:
            setattr(m, k, v)


def copy_config(cfg: TrainConfig) -> TrainConfig:
    return from_dict(to_dict(cfg))



def from_dict(d: dict[str, Any]) -> TrainConfig:
    return from_dict_typed(TrainConfig, d, "")



def save_yaml(cfg: TrainConfig, path: Path) -> None:
    from ..fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))  # whole or not at all (a full disk)



def load_yaml(path: Path) -> TrainConfig:
    d = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a mapping of options")
    cfg = from_dict(d)
    validate(cfg)
    return cfg



def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that a type alone cannot express."""
    checks = [
        (cfg.data.batch_size >= 1, f"data.batch_size={cfg.data.batch_size} must be >= 1"),
        (cfg.data.micro_batch_size >= 0, "data.micro_batch_size must be >= 0"),
        (min(image_hw(cfg.data)) >= 1, f"data.image_size={cfg.data.image_size} must be >= 1"),
        (cfg.optim.lr > 0, f"optim.lr={cfg.optim.lr} must be > 0"),
        (cfg.optim.clip_norm >= 0, "optim.clip_norm must be >= 0"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (cfg.schedule.steps >= 1 or cfg.schedule.epochs > 0, "schedule.steps must be >= 1 (or set schedule.epochs)"),
        (not (cfg.schedule.steps > 0 and cfg.schedule.epochs > 0), f"schedule.steps={cfg.schedule.steps} and "
         f"schedule.epochs={cfg.schedule.epochs} both set: the run length is one of them (set the other to 0)"),
        (cfg.schedule.steps >= 0 and cfg.schedule.epochs >= 0, "schedule.steps and schedule.epochs must be >= 0"),
        (cfg.schedule.warmup_steps >= 0, "schedule.warmup_steps must be >= 0"),
        (cfg.schedule.time_budget_s >= 0, "schedule.time_budget_s must be >= 0"),
        (0.0 <= cfg.ema < 1.0, f"ema={cfg.ema} must be in [0, 1)"),
        (cfg.keep_last >= 1, "keep_last must be >= 1"),
        (cfg.log_every >= 1, "log_every must be >= 1"),
        (cfg.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
        (cfg.eval_every >= 0, "eval_every must be >= 0"),
        (0.0 <= cfg.data.label_smoothing < 1.0, "data.label_smoothing must be in [0, 1)"),
        (cfg.data.mixup_alpha >= 0 and cfg.data.cutmix_alpha >= 0, "mixup/cutmix alphas must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    parse_loggers(cfg.logger)
    m = cfg.mpp
    if not (0 < m.corrupt <= 1 and 0 <= m.mask and 0 <= m.random and m.mask + m.random <= 1 and 1 <= m.bits <= 8):
        raise UserError(f"mpp: corrupt={m.corrupt} must be in (0, 1], mask={m.mask} and random={m.random} >= 0 with "
                        f"mask + random <= 1, bits={m.bits} in 1..8")
    if cfg.objective == "masked_patch" and (cfg.data.mixup_alpha or cfg.data.cutmix_alpha):
        raise UserError("objective=masked_patch uses no labels: set data.mixup_alpha=0 and data.cutmix_alpha=0")
    try:
        check_crop(cfg.data.crop_area, cfg.data.crop_padding)
    except UserError as e:
        raise UserError(f"data.{e}") from None
    if cfg.data.progressive_resize is not None:
        size, frac = cfg.data.progressive_resize
        h, w = image_hw(cfg.data)
        if h != w:
            raise UserError(f"data.progressive_resize needs a square data.image_size, got {cfg.data.image_size}")
        if not (1 <= size < h and 0 < frac < 1):
            raise UserError(f"data.progressive_resize={cfg.data.progressive_resize} must be (size, fraction) with "
                             f"1 <= size < data.image_size={h} and 0 < fraction < 1")




def image_hw(data: DataConfig) -> HW:
    """``data.image_size`` as the (h, w) pair every consumer gets."""
    return as_hw(data.image_size, "data.image_size")


def list_options(cfg: TrainConfig | None = None) -> list[tuple[str, str, Any]]:
    """(dotted key, type, current value) for every option, for ``--list-options``."""
    return _list_options(cfg or TrainConfig())

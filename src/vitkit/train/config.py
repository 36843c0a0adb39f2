"""One typed configuration tree for a training run, with ``key=value`` overrides.

Every option lives in a dataclass below; presets (``presets.py``) return a filled-in
:class:`TrainConfig` and the command line changes single fields with dotted keys
(``optim.lr=0.01 data.randaugment=2,10 ema=0.9999``). Unknown keys and values of the wrong
type are rejected with the valid choices listed. The resolved tree is written to
``OUT/config.yaml`` and read back by ``--resume``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..data.preprocess import PREPROCESSINGS


@dataclass
class ModelConfig:
    """The network. ``init``: fine-tune from a checkpoint (any format ``load_model`` reads,
    any resolution: position embeddings are resampled, the head re-made zero-initialised).
    ``None`` fields keep the named model's (or the checkpoint's) value."""

    name: str = "ViT-Ti_16"
    init: str | None = None
    patch_size: int | None = None
    hidden_size: int | None = None
    mlp_dim: int | None = None
    num_heads: int | None = None
    num_layers: int | None = None
    # Hybrid stem (the paper's ResNet + ViT): bottleneck units per ResNet stage, "()" = the root
    # block only (R+ViT-Ti); None keeps the named model's stem (none for a plain ViT).
    resnet_layers: tuple[int, ...] | None = None
    resnet_width: float | None = None  # int(64 * width) root channels, as the official ResNet (0.5, 1, 2, ...)
    classifier: Literal["token", "gap", None] = None
    # The paper's pre-logits layer: 0 = none, None = the model's default (a fresh task drops it).
    representation_size: int | None = None
    dropout_rate: float | None = None
    attention_dropout_rate: float | None = None
    drop_path_rate: float | None = None


@dataclass
class DataConfig:
    """Input pipeline. ``batch_size`` is the global batch of one optimiser step; each process
    runs ``micro_batch_size`` images per forward pass and accumulates gradients to reach it."""

    train: str = "digits"
    test: str | None = None  # None: the train spec's test split, if it has one (else no evaluation)
    train_split: str = "train"
    test_split: str = "test"
    image_size: int = 224
    batch_size: int = 512
    micro_batch_size: int = 0  # 0: batch_size / world_size (no accumulation)
    eval_batch_size: int = 256
    num_workers: int | None = None
    eval_resize: Literal["resize", "crop"] = "resize"
    # evaluation preprocessing (vitkit.data.preprocess): None = vit_jax for the official [-1, 1] normalisation, else pil
    eval_preprocess: Literal[(*PREPROCESSINGS, None)] = None
    crop_area: tuple[float, float] = (0.05, 1.0)
    flip: bool = True
    randaugment: tuple[int, int] | None = None  # (num_ops, magnitude)
    # (size, fraction): progressive resizing. The first ``fraction`` of training (of the steps, or
    # of the time budget) runs on the batches downsampled to ``size`` px; the model resamples its
    # position embeddings on the fly. Evaluation always runs at ``image_size``.
    progressive_resize: tuple[int, float] | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0
    shuffle_buffer: int = 2000
    limit: int | None = None  # use only the first N training examples (quick checks)
    eval_limit: int | None = None


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
    """Linear warm-up from 0, then decay to ``end_lr_ratio * lr``. ``epochs > 0`` sets
    ``steps`` from the training set size."""

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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"  # auto: cuda if available (LOCAL_RANK's GPU), else cpu
    compile: bool = False
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.9999); 0 = off
    activation_checkpointing: bool = False
    eval_every: int = 0  # steps; 0 = only at the end
    # Also score each test image with its mirror image (mean of the two logits) and report that as
    # eval/flip_top1 and flip_top5 beside the single-view top1/top5; doubles evaluation cost.
    eval_flip: bool = False
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_last: int = 3
    seed: int = 0
    deterministic: bool = False
    threads: int | None = None  # torch CPU threads; None = torch's default
    out: str | None = None
    preset: str | None = None  # which preset this came from (informational)


# -- overrides ----------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", "~", ""}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple of {_type_name(args[0])} (any length, e.g. '(1,2)' or '()')"
        return "tuple of " + ", ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _coerce(text: Any, tp: Any, key: str) -> Any:
    """Convert a command-line string (or a YAML value) to the declared type of ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (text is None or (isinstance(text, str) and text.strip().lower() in _NONE)):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(text, a, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{key}={text!r}: expected {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if text is None and None in choices:
            return None
        for c in choices:
            if c is None and isinstance(text, str) and text.lower() in _NONE:
                return None
            if c is not None and str(c) == str(text):
                return c
        raise ValueError(f"{key}={text!r}: expected {_type_name(tp)}")
    if origin is tuple:
        elems = typing.get_args(tp)
        if isinstance(text, str):
            parts = [p for p in text.strip().strip("()[]").split(",") if p.strip()]
        elif isinstance(text, (list, tuple)):
            parts = list(text)
        else:
            raise ValueError(f"{key}={text!r}: expected {_type_name(tp)}")
        if len(elems) == 2 and elems[1] is Ellipsis:
            elems = (elems[0],) * len(parts)
        if len(parts) != len(elems):
            raise ValueError(f"{key}={text!r}: expected {len(elems)} comma-separated values ({_type_name(tp)})")
        return tuple(_coerce(p.strip() if isinstance(p, str) else p, t, key) for p, t in zip(parts, elems))
    if tp is bool:
        if isinstance(text, bool):
            return text
        s = str(text).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ValueError(f"{key}={text!r}: expected a bool (true/false)")
    if tp is int:
        if isinstance(text, bool):
            raise ValueError(f"{key}={text!r}: expected an int")
        if isinstance(text, int):
            return text
        try:
            f = float(str(text).replace("_", ""))
        except ValueError:
            raise ValueError(f"{key}={text!r}: expected an int") from None
        if not f.is_integer():
            raise ValueError(f"{key}={text!r}: expected an int")
        return int(f)
    if tp is float:
        if isinstance(text, bool):
            raise ValueError(f"{key}={text!r}: expected a float")
        try:
            return float(str(text).replace("_", "")) if isinstance(text, str) else float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={text!r}: expected a float") from None
    if tp is str:
        if text is None:
            raise ValueError(f"{key}: expected a string")
        return str(text)
    raise TypeError(f"{key}: unsupported option type {tp}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def set_option(cfg: Any, key: str, value: Any) -> None:
    """Set one dotted option (``optim.lr``) in place, converting ``value`` to its declared type."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(node)]
        where = ".".join(parts[:i]) or "the top level"
        if part not in names:
            valid = ", ".join(
                f"{'.'.join(parts[:i] + [n])}" for n in names
            )
            raise ValueError(f"unknown option {key!r} (no {part!r} in {where}); valid options: {valid}")
        tp = _hints(type(node))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                sub = [f.name for f in dataclasses.fields(tp)]
                opts = ", ".join(f"{key}.{n}" for n in sub)
                raise ValueError(f"{key!r} is a section; set one of its options: {opts}")
            setattr(node, part, _coerce(value, tp, key))
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise ValueError(f"unknown option {key!r}: {'.'.join(parts[: i + 1])} is not a section")


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings to a copy of ``cfg``."""
    cfg = copy_config(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.01)")
        key, value = item.split("=", 1)
        set_option(cfg, key.strip(), value)
    validate(cfg)
    return cfg


def copy_config(cfg: TrainConfig) -> TrainConfig:
    return from_dict(to_dict(cfg))


def to_dict(cfg: Any) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(cfg))


def _from_dict(cls: type, d: dict[str, Any], prefix: str) -> Any:
    obj = cls()
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ValueError(f"unknown option {key!r}; valid options: " + ", ".join(f"{prefix}{n}" for n in names))
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, dict):
                raise ValueError(f"{key} must be a mapping")
            setattr(obj, k, _from_dict(tp, v, f"{key}."))
        else:
            setattr(obj, k, _coerce(v, tp, key))
    return obj


def from_dict(d: dict[str, Any]) -> TrainConfig:
    return _from_dict(TrainConfig, d, "")


def save_yaml(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_yaml(path: Path) -> TrainConfig:
    d = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping of options")
    cfg = from_dict(d)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that a type alone cannot express."""
    checks = [
        (cfg.data.batch_size >= 1, f"data.batch_size={cfg.data.batch_size} must be >= 1"),
        (cfg.data.micro_batch_size >= 0, "data.micro_batch_size must be >= 0"),
        (cfg.data.image_size >= 1, "data.image_size must be >= 1"),
        (cfg.optim.lr > 0, f"optim.lr={cfg.optim.lr} must be > 0"),
        (cfg.optim.clip_norm >= 0, "optim.clip_norm must be >= 0"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (cfg.schedule.steps >= 1 or cfg.schedule.epochs > 0, "schedule.steps must be >= 1"),
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
            raise ValueError(msg)
    lo, hi = cfg.data.crop_area
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"data.crop_area={cfg.data.crop_area} must satisfy 0 < min <= max <= 1")
    if cfg.data.progressive_resize is not None:
        size, frac = cfg.data.progressive_resize
        if not (1 <= size < cfg.data.image_size and 0 < frac < 1):
            raise ValueError(f"data.progressive_resize={cfg.data.progressive_resize} must be (size, fraction) with "
                             f"1 <= size < data.image_size={cfg.data.image_size} and 0 < fraction < 1")


def list_options(cfg: TrainConfig | None = None) -> list[tuple[str, str, Any]]:
    """(dotted key, type, current value) for every option, for ``--help-options``."""
    cfg = cfg or TrainConfig()
    out: list[tuple[str, str, Any]] = []

    def walk(node: Any, prefix: str) -> None:
        hints = _hints(type(node))
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, f"{prefix}{f.name}.")
            else:
                out.append((f"{prefix}{f.name}", _type_name(hints[f.name]), v))

    walk(cfg, "")
    return out

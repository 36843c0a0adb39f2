"""Typed, frozen model configuration.

The fields mirror the official ``vit_jax/configs/models.py`` ConfigDicts (``patches.size``,
``hidden_size``, ``transformer.*``, ``classifier``, ``representation_size``, ``resnet.*``) plus
the few things a PyTorch port must record explicitly because a checkpoint from another library
computes them differently (GELU variant, LayerNorm epsilon, where the final norm sits).
Which of the fields make up the architecture, how two architectures compare and the ResNet stem's config
(``ResNetConfig``, imported here for its users) are :mod:`vitkit.models.arch`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from ..data.preprocess import VIT_MEAN, VIT_STD
from ..errors import UserError
from ..image_size import as_hw
from .arch import ConfigFieldError, ResNetConfig, has_class_token, resnet_config

CLASSIFIERS = ("token", "gap", "unpooled", "token_unpooled")
# The classifiers that pool to one vector per image (the *_unpooled ones give a logit per token): what an image
# classification loss can train.
POOLED_CLASSIFIERS = ("token", "gap")
GELU_VARIANTS = ("tanh", "exact")
POSEMB_RESAMPLE = ("bilinear", "bicubic")

# Ranges of the integer fields (inclusive). Generous but finite: 10-100x beyond every published
# ViT (ViT-22B: hidden 6144, mlp 24576, 48 heads, 48 layers; JFT 18k / 21k classes), so that a
# config read from a file cannot ask for an absurd model. Loading a file additionally requires the
# config to describe exactly the file's tensors (checkpoints/validate.py) before anything is built.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, 65536), "mlp_dim": (0, 262144), "num_heads": (1, 65536), "num_layers": (0, 1024),
    "num_classes": (0, 2**24), "in_chans": (1, 4096), "representation_size": (1, 65536),
    "patch_size": (1, 4096), "image_size": (1, 65536), "stem_channels": (1, 65536), "stem_strides": (1, 4),
}
# Convolutions of a convolutional stem (``stem_channels``) a config may ask for.
MAX_STEM_LAYERS = 16
# Fractions (inclusive low, exclusive high) and other bounded floats.
FLOAT_LIMITS: dict[str, tuple[float, float]] = {
    "dropout_rate": (0.0, 1.0), "attention_dropout_rate": (0.0, 1.0), "drop_path_rate": (0.0, 1.0),
}
MAX_NAME_LEN = 1000


def _int_field(name: str, v: Any) -> int:
    """``v`` as an int in ``INT_LIMITS[name]``; bools, floats and strings are refused, not converted."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ConfigFieldError(name, f"{name}={v!r}: expected an integer, got {type(v).__name__}")
    lo, hi = INT_LIMITS[name]
    if not lo <= int(v) <= hi:
        raise ConfigFieldError(name, f"{name}={v!r}: expected an integer in [{lo}, {hi}]")
    return int(v)


def _float_field(name: str, v: Any) -> float:
    """``v`` as a finite float; ints are accepted (JSON writes 0.0 as 0), bools and strings not."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ConfigFieldError(name, f"{name}={v!r}: expected a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise ConfigFieldError(name, f"{name}={v!r}: expected a finite number")
    return f


def _pair_field(name: str, v: Any) -> tuple[int, int]:
    try:
        h, w = as_hw(v, name)  # the one "R or (H, W)" normaliser
    except UserError as e:
        raise ConfigFieldError(name, str(e)) from None
    return (_int_field(name, h), _int_field(name, w))


def _str_field(name: str, v: Any, max_len: int = MAX_NAME_LEN) -> str:
    if not isinstance(v, str):
        raise ConfigFieldError(name, f"{name}={v!r}: expected a string, got {type(v).__name__}")
    if len(v) > max_len:
        raise ConfigFieldError(name, f"{name}: a string of {len(v)} characters; at most {max_len} are allowed")
    return v


@dataclass(frozen=True)
class ViTConfig:
    """Everything needed to rebuild a model; stored in every vitkit checkpoint.

    ``transformer=False`` gives the plain BiT ResNet classifier (root + stages, global average
    pooling, head), the paper's baseline.
    """

    name: str = "custom"
    patch_size: tuple[int, int] = (16, 16)
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12
    num_layers: int = 12
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    classifier: str = "token"
    representation_size: int | None = None
    num_classes: int = 1000
    head_bias_init: float = 0.0
    image_size: tuple[int, int] = (224, 224)
    in_chans: int = 3
    resnet: ResNetConfig | None = None
    # A convolutional stem instead of the ResNet one (Xiao et al. 2021, "Early Convolutions Help Transformers See
    # Better"): per entry a 3x3 convolution with that many output channels and stride, BatchNorm and ReLU, before
    # the patch embedding. () = none. Not in the official code; only vitkit's own files can hold it.
    stem_channels: tuple[int, ...] = ()
    stem_strides: tuple[int, ...] = ()
    transformer: bool = True
    # Numerics that differ between the official code and other ports.
    layer_norm_eps: float = 1e-6
    gelu: str = "tanh"
    # timm's gap models apply the final LayerNorm after pooling ("fc_norm"); official: before.
    norm_after_pool: bool = False
    posemb_resample: str = "bilinear"
    # Input normalisation the weights expect: x = (pixel/255 - mean) / std. Official: [-1, 1] (the data package's).
    mean: tuple[float, float, float] = VIT_MEAN
    std: tuple[float, float, float] = VIT_STD
    class_names: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        self._check_types()
        self.validate()

    def _check_types(self) -> None:
        """Types and ranges of every field, normalised in place (pairs, tuples of floats).

        Strict on purpose: a config may come from an untrusted file, so ``"768"``, ``768.0``,
        ``True`` or ``NaN`` where an integer belongs is an error naming the field, never a guess.
        """
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        put("name", _str_field("name", self.name))
        for k in ("patch_size", "image_size"):
            put(k, _pair_field(k, getattr(self, k)))
        for k in ("hidden_size", "mlp_dim", "num_heads", "num_layers", "num_classes", "in_chans"):
            put(k, _int_field(k, getattr(self, k)))
        if self.representation_size is not None:
            put("representation_size", _int_field("representation_size", self.representation_size))
        for k, (lo, hi) in FLOAT_LIMITS.items():
            f = _float_field(k, getattr(self, k))
            if not lo <= f < hi:
                raise ConfigFieldError(k, f"{k}={f!r}: expected a number in [{lo}, {hi})")
            put(k, f)
        put("head_bias_init", _float_field("head_bias_init", self.head_bias_init))
        eps = _float_field("layer_norm_eps", self.layer_norm_eps)
        if not 0.0 < eps <= 1.0:
            raise ConfigFieldError("layer_norm_eps", f"layer_norm_eps={eps!r}: expected a number in (0, 1]")
        put("layer_norm_eps", eps)
        for k in ("transformer", "norm_after_pool"):
            if not isinstance(getattr(self, k), bool):
                raise ConfigFieldError(k, f"{k}={getattr(self, k)!r}: expected true or false")
        for k in ("classifier", "gelu", "posemb_resample"):
            _str_field(k, getattr(self, k))
        for k in ("mean", "std"):
            v = getattr(self, k)
            if not isinstance(v, (tuple, list)) or not 1 <= len(v) <= INT_LIMITS["in_chans"][1]:
                raise ConfigFieldError(k, f"{k}={v!r}: expected a list of per-channel numbers")
            put(k, tuple(_float_field(k, x) for x in v))
        if len(self.mean) != len(self.std):
            raise ConfigFieldError("mean", f"mean has {len(self.mean)} entries but std has {len(self.std)}")
        if any(x <= 0 for x in self.std):
            raise ConfigFieldError("std", f"std={self.std}: every entry must be > 0")
        for k in ("stem_channels", "stem_strides"):
            v = getattr(self, k)
            if not isinstance(v, (tuple, list)) or len(v) > MAX_STEM_LAYERS:
                raise ConfigFieldError(k, f"{k}={v!r}: expected a list of at most {MAX_STEM_LAYERS} integers")
            put(k, tuple(_int_field(k, x) for x in v))
        put("resnet", resnet_config(self.resnet, complete=False))
        if self.class_names is not None:
            if not isinstance(self.class_names, (tuple, list)):
                raise ConfigFieldError(
                    "class_names", f"class_names: expected a list of strings, got {type(self.class_names).__name__}"
                )
            put("class_names", tuple(_str_field("class_names", c) for c in self.class_names))
        if not isinstance(self.extra, dict):
            raise ConfigFieldError("extra", f"extra: expected a mapping, got {type(self.extra).__name__}")

    def validate(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ConfigFieldError("classifier", f"classifier={self.classifier!r}; expected one of {CLASSIFIERS}")
        if self.gelu not in GELU_VARIANTS:
            raise ConfigFieldError("gelu", f"gelu={self.gelu!r}; expected one of {GELU_VARIANTS}")
        if self.posemb_resample not in POSEMB_RESAMPLE:
            raise ConfigFieldError(
                "posemb_resample", f"posemb_resample={self.posemb_resample!r}; expected one of {POSEMB_RESAMPLE}"
            )
        if self.transformer and (self.num_layers < 1 or self.mlp_dim < 1):
            raise ConfigFieldError(
                "num_layers" if self.num_layers < 1 else "mlp_dim",
                f"num_layers={self.num_layers}, mlp_dim={self.mlp_dim}: a transformer needs at least one block "
                "with an MLP"
            )
        if self.transformer and self.hidden_size % self.num_heads:
            raise ConfigFieldError(
                "num_heads",
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.num_classes < 0:
            raise ConfigFieldError("num_classes", f"num_classes must be >= 0, got {self.num_classes}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigFieldError("mean", f"mean={self.mean} and std={self.std} need in_chans={self.in_chans} "
                                           "entries each")
        if not self.transformer and self.resnet is None:
            raise UserError("transformer=False (a plain ResNet) needs a resnet config")
        if len(self.stem_channels) != len(self.stem_strides):
            raise ConfigFieldError("stem_strides", f"stem_channels={self.stem_channels} has {len(self.stem_channels)} "
                                   f"entries but stem_strides={self.stem_strides} has {len(self.stem_strides)}: "
                                   "one stride per convolution")
        if self.stem_channels and (self.resnet is not None or not self.transformer):
            raise ConfigFieldError("stem_channels", f"stem_channels={self.stem_channels}: a convolutional stem "
                                   "replaces the ResNet stem, so it needs resnet=null and transformer=true")
        if self.class_names is not None and self.num_classes and len(self.class_names) != self.num_classes:
            raise ConfigFieldError(
                "class_names",
                f"class_names has {len(self.class_names)} entries but num_classes={self.num_classes}"
            )
        for dim, (size, step) in enumerate(zip(self.image_size, self.stride)):
            if size % step:
                raise ConfigFieldError(
                    "image_size",
                    f"image_size={self.image_size} is not divisible by the total stride {step} "
                    f"(patch {self.patch_size}"
                    + (f" x ResNet reduction {self.resnet.reduction}" if self.resnet else "")
                    + (f" x stem strides {self.stem_strides}" if self.stem_channels else "")
                    + f") along dimension {dim}"
                )

    # -- derived quantities -------------------------------------------------
    @property
    def has_class_token(self) -> bool:
        return self.transformer and has_class_token(self.classifier)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.has_class_token else 0

    @property
    def has_stem(self) -> bool:
        """Whether a stem (ResNet or convolutional) runs before the patch embedding: a hybrid in the paper's sense."""
        return self.resnet is not None or bool(self.stem_channels)

    @property
    def stem_reduction(self) -> int:
        """Spatial down-sampling before the patch embedding (the ResNet's or the convolutional stem's)."""
        if self.resnet is not None:
            return self.resnet.reduction
        return math.prod(self.stem_strides)

    @property
    def stem_out_channels(self) -> int:
        """Channels the patch embedding reads."""
        if self.resnet is not None:
            return self.resnet.out_channels
        return self.stem_channels[-1] if self.stem_channels else self.in_chans

    @property
    def stride(self) -> tuple[int, int]:
        """Pixels per token along each axis (patch size times the stem's reduction)."""
        r = self.stem_reduction
        if not self.transformer:
            return (1, 1)  # a plain ResNet takes any size (SAME padding)
        return (self.patch_size[0] * r, self.patch_size[1] * r)

    @property
    def grid_size(self) -> tuple[int, int]:
        s = self.stride
        return (self.image_size[0] // s[0], self.image_size[1] // s[1])

    @property
    def num_tokens(self) -> int:
        g = self.grid_size
        return g[0] * g[1] + self.num_prefix_tokens

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def feature_dim(self) -> int:
        """Width of what the head sees (the pre-logits representation)."""
        if not self.transformer:
            assert self.resnet is not None
            return self.resnet.out_channels
        return self.representation_size or self.hidden_size

    # -- (de)serialisation ---------------------------------------------------
    def replace(self, **changes: Any) -> ViTConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            valid = ", ".join(sorted(f.name for f in dataclasses.fields(self)))
            raise TypeError(f"unknown model option(s) {sorted(unknown)}; valid options: {valid}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not d["stem_channels"]:
            # Written only where there is a convolutional stem, so every other model's config reads the same as
            # before the field existed (and in versions from before it).
            del d["stem_channels"], d["stem_strides"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        if not isinstance(d, dict):
            raise UserError(f"model config: expected a mapping of fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UserError(f"model config has unknown fields {sorted(map(str, unknown))}")
        d = dict(d)
        d["resnet"] = resnet_config(d.get("resnet"))  # a file names both of the stem's fields
        for k in ("patch_size", "image_size", "mean", "std", "class_names", "stem_channels", "stem_strides"):
            if isinstance(d.get(k), list):  # JSON lists; anything else is left to the type checks
                d[k] = tuple(d[k])
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> ViTConfig:
        return cls.from_dict(json.loads(s))

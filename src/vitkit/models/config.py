"""Typed, frozen model configuration.

The fields mirror the official ``vit_jax/configs/models.py`` ConfigDicts (``patches.size``,
``hidden_size``, ``transformer.*``, ``classifier``, ``representation_size``, ``resnet.*``) plus
the few things a PyTorch port must record explicitly because a checkpoint from another library
computes them differently (GELU variant, LayerNorm epsilon, where the final norm sits).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

CLASSIFIERS = ("token", "gap", "unpooled", "token_unpooled")
GELU_VARIANTS = ("tanh", "exact")
POSEMB_RESAMPLE = ("bilinear", "bicubic")


@dataclass(frozen=True)
class ResNetConfig:
    """The BiT ResNet used as a hybrid stem (``config.resnet`` in the official code).

    ``num_layers`` is the number of bottleneck units per stage; ``()`` means only the root
    block (7x7/2 StdConv, GroupNorm, ReLU, 3x3/2 max-pool).
    """

    num_layers: tuple[int, ...] = (3, 4, 9)
    # Any positive float, as the official ``int(64 * width_factor)`` (0.5 -> 32 channels); integral values are
    # kept as int so configs written before read back equal.
    width_factor: int | float = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_layers", tuple(int(n) for n in self.num_layers))
        wf = self.width_factor
        if isinstance(wf, bool) or not isinstance(wf, (int, float)) or not math.isfinite(wf) or wf <= 0:
            raise ValueError(f"resnet.width_factor must be a positive number, got {wf!r}")
        object.__setattr__(self, "width_factor", int(wf) if float(wf).is_integer() else float(wf))
        if self.width < 32 or self.width % 32:
            # every ResNet GroupNorm has 32 groups (Flax's default), which must divide the channels
            raise ValueError(f"resnet.width_factor {wf} gives int(64 * {wf}) = {self.width} root channels; the "
                             "32-group GroupNorms need a positive multiple of 32 (width_factor 0.5, 1, 1.5, ...)")
        if any(n < 1 for n in self.num_layers):
            raise ValueError(f"resnet.num_layers must be positive, got {self.num_layers}")

    @property
    def width(self) -> int:
        return int(64 * self.width_factor)

    @property
    def reduction(self) -> int:
        """Total spatial down-sampling of the stem (root /4, each stage after the first /2)."""
        return 4 * 2 ** max(len(self.num_layers) - 1, 0)

    @property
    def out_channels(self) -> int:
        if not self.num_layers:
            return self.width
        return self.width * 2 ** (len(self.num_layers) - 1) * 4


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
    transformer: bool = True
    # Numerics that differ between the official code and other ports.
    layer_norm_eps: float = 1e-6
    gelu: str = "tanh"
    # timm's gap models apply the final LayerNorm after pooling ("fc_norm"); official: before.
    norm_after_pool: bool = False
    posemb_resample: str = "bilinear"
    # Input normalisation the weights expect: x = (pixel/255 - mean) / std. Official: [-1, 1].
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    class_names: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        as_pair = lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)  # noqa: E731
        object.__setattr__(self, "patch_size", as_pair(self.patch_size))
        object.__setattr__(self, "image_size", as_pair(self.image_size))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        if isinstance(self.resnet, dict):
            object.__setattr__(self, "resnet", ResNetConfig(**self.resnet))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        self.validate()

    def validate(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier={self.classifier!r}; expected one of {CLASSIFIERS}")
        if self.gelu not in GELU_VARIANTS:
            raise ValueError(f"gelu={self.gelu!r}; expected one of {GELU_VARIANTS}")
        if self.posemb_resample not in POSEMB_RESAMPLE:
            raise ValueError(f"posemb_resample={self.posemb_resample!r}; expected one of {POSEMB_RESAMPLE}")
        if self.transformer and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if not self.transformer and self.resnet is None:
            raise ValueError("transformer=False (a plain ResNet) needs a resnet config")
        if self.class_names is not None and self.num_classes and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries but num_classes={self.num_classes}"
            )
        for dim, (size, step) in enumerate(zip(self.image_size, self.stride)):
            if size % step:
                raise ValueError(
                    f"image_size={self.image_size} is not divisible by the total stride {step} "
                    f"(patch {self.patch_size}"
                    + (f" x ResNet reduction {self.resnet.reduction}" if self.resnet else "")
                    + f") along dimension {dim}"
                )

    # -- derived quantities -------------------------------------------------
    @property
    def has_class_token(self) -> bool:
        return self.transformer and self.classifier in ("token", "token_unpooled")

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.has_class_token else 0

    @property
    def stride(self) -> tuple[int, int]:
        """Pixels per token along each axis (patch size times the ResNet reduction)."""
        r = self.resnet.reduction if self.resnet is not None else 1
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
        if "resnet" in changes and isinstance(changes["resnet"], dict):
            changes["resnet"] = ResNetConfig(**changes["resnet"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"model config has unknown fields {sorted(unknown)}")
        d = dict(d)
        if d.get("resnet") is not None:
            r = d["resnet"]
            d["resnet"] = ResNetConfig(num_layers=tuple(r["num_layers"]), width_factor=r["width_factor"])
        for k in ("patch_size", "image_size", "mean", "std"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        if d.get("class_names") is not None:
            d["class_names"] = tuple(d["class_names"])
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> ViTConfig:
        return cls.from_dict(json.loads(s))

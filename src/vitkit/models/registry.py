"""Named model configurations: the model table of ``vit_jax/configs/models.py``.

``create_model(name, **overrides)`` is the one door to a fresh model. Names are those of the
official code (``ViT-B_16``) and the paper's spelling (``ViT-B/16``) is accepted too.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .arch import PLAIN_RESNET
from .bit import BiTResNet
from .config import ResNetConfig, ViTConfig
from .timm_names import TIMM_NAMES, split_tag, timm_config
from .vit import VisionTransformer

_REGISTRY: dict[str, ViTConfig] = {}


def register(cfg: ViTConfig) -> ViTConfig:
    _REGISTRY[cfg.name] = cfg
    return cfg


def _vit(name: str, hidden: int, mlp: int, heads: int, layers: int, patch: int, dropout: float = 0.0) -> ViTConfig:
    return register(ViTConfig(
        name=name, patch_size=(patch, patch), hidden_size=hidden, mlp_dim=mlp, num_heads=heads,
        num_layers=layers, dropout_rate=dropout, attention_dropout_rate=0.0,
        classifier="token", representation_size=None,
    ))


def _variant(base: ViTConfig, name: str, **changes: Any) -> ViTConfig:
    return register(base.replace(name=name, **changes))


# Plain ViTs (dropout rates as in the official configs).
TI16 = _vit("ViT-Ti_16", 192, 768, 3, 12, 16)
S16 = _vit("ViT-S_16", 384, 1536, 6, 12, 16)
B16 = _vit("ViT-B_16", 768, 3072, 12, 12, 16)
L16 = _vit("ViT-L_16", 1024, 4096, 16, 24, 16, dropout=0.1)
H14 = _vit("ViT-H_14", 1280, 5120, 16, 32, 14, dropout=0.1)
B8 = _variant(B16, "ViT-B_8", patch_size=(8, 8))
S32 = _variant(S16, "ViT-S_32", patch_size=(32, 32))
B32 = _variant(B16, "ViT-B_32", patch_size=(32, 32))
L32 = _variant(L16, "ViT-L_32", patch_size=(32, 32), dropout_rate=0.0)
for _base in (S16, B16, S32, B32):
    _variant(_base, f"{_base.name}-gap-norep", classifier="gap", representation_size=None)

# Hybrids: a BiT ResNet stem, then 1x1 (or 8x8) patches of its feature map.
_variant(TI16, "R+ViT-Ti_16", patch_size=(8, 8), resnet=ResNetConfig((), 1))
_variant(B16, "R50+ViT-B_16", patch_size=(1, 1), dropout_rate=0.1, resnet=ResNetConfig((3, 4, 9), 1))
_variant(B32, "R26+ViT-B_32", patch_size=(1, 1), resnet=ResNetConfig((2, 2, 2, 2), 1))
_variant(S16, "R26+ViT-S_32", patch_size=(1, 1), resnet=ResNetConfig((2, 2, 2, 2), 1))
_variant(L16, "R50+ViT-L_32", patch_size=(1, 1), resnet=ResNetConfig((3, 4, 6, 3), 1))

# The BiT ResNet alone (the paper's baseline): ResNet-{50,101,152} x {1,2,3,4}.
_BIT_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
for _depth, _layers in _BIT_DEPTHS.items():
    for _wf in (1, 2, 3, 4):
        register(ViTConfig(name=f"BiT-R{_depth}x{_wf}", resnet=ResNetConfig(_layers, _wf), **PLAIN_RESNET))


def canonical_name(name: str) -> str:
    """Map the paper's spelling (``ViT-B/16``, ``R50+ViT-B/16``) to the official names; a timm name
    (``vit_base_patch16_224``, a pretrained tag dropped) is its own canonical name."""
    if name in _REGISTRY:
        return name
    if timm_config(name) is not None:
        return split_tag(name)[0]
    candidate = name.replace("/", "_")
    if candidate in _REGISTRY:
        return candidate
    lowered = {k.lower(): k for k in _REGISTRY}
    if candidate.lower() in lowered:
        return lowered[candidate.lower()]
    from ..errors import unknown_name

    raise unknown_name("model name", name, [*list_models(), *TIMM_NAMES],
                       f"`vitkit models` lists the {len(list_models())} names (with parameters and GFLOPs); "
                       f"timm's names are accepted too (vitkit.list_models('vit_*'))")


def list_models() -> list[str]:
    """The official model names of this table, in table order (``vitkit.list_models`` adds timm's and filters)."""
    """The official names (vit_jax's model table and the BiT ResNets), in table order. The public
    :func:`vitkit.list_models` adds timm's names, patterns and the pretrained filter."""
    return list(_REGISTRY)


def get_config(name: str, **overrides: Any) -> ViTConfig:
    cfg = timm_config(name) or _REGISTRY[canonical_name(name)]
    return cfg.replace(**overrides) if overrides else cfg


def build_model(cfg: ViTConfig) -> nn.Module:
    """A freshly initialised model for a config (official initialisers)."""
    return VisionTransformer(cfg) if cfg.transformer else BiTResNet(cfg)


def create_model(name: str, num_classes: int | None = None, image_size: int | tuple[int, int] | None = None,
                 **overrides: Any) -> nn.Module:
    """Build a named architecture with fresh weights, e.g. ``create_model("ViT-B/16", num_classes=10,
    image_size=384)``. Any :class:`ViTConfig` field can be overridden (``classifier="gap"``,
    ``dropout_rate=0.1``). With weights: ``vitkit.create_model(..., pretrained=True|SOURCE)``, the
    public door, which reads them through ``vitkit.checkpoints`` (this module is below it)."""
    if "pretrained" in overrides:
        from ..errors import UserError

        raise UserError("vitkit.models.create_model builds fresh weights; for pre-trained ones call "
                        f"vitkit.create_model({name!r}, pretrained=...)")
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if image_size is not None:
        overrides["image_size"] = image_size
    return build_model(get_config(name, **overrides))

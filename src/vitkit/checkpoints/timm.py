"""timm ``vision_transformer`` state dicts (``.pth`` via ``torch.load(weights_only=True)``, or
``.safetensors`` without vitkit metadata): import and export.

timm's block layout is ours (fused ``qkv``), so the mapping is mostly renaming. What a state dict
cannot tell is filled with timm's defaults: exact-erf GELU and LayerNorm eps 1e-6, and
``num_heads = hidden / 64`` (every standard ViT; pass ``num_heads=`` otherwise). Pooling follows
the tensors: a class token without ``fc_norm`` is token pooling; no class token is average
pooling, with the final LayerNorm after pooling when the file has ``fc_norm`` (timm's default
for ``global_pool='avg'``) and before it when it has ``norm``. Files with ``pos_embed`` that
excludes the class token (``no_embed_class``) are read with a zero embedding for it, which
computes the same thing.

Not supported (a clear error): hybrids (``patch_embed.backbone``), register/distillation tokens,
layer scale, q/k norm, attention pooling, and class token *plus* average pooling.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..models.config import ViTConfig
from ..models.registry import build_model
from .errors import CheckpointError, _shape, check_state_dict
from .hf import TORCH_SUFFIXES, _peek_keys, read_tensor_file

_UNSUPPORTED = {
    "patch_embed.backbone.": "hybrid (ResNet) stems; load the official .npz instead",
    "reg_token": "register tokens", "dist_token": "distillation tokens", "head_dist.": "a distillation head",
    ".ls1.": "layer scale", ".ls2.": "layer scale", ".q_norm.": "q/k normalisation", ".k_norm.": "q/k normalisation",
    "attn_pool.": "attention pooling", "norm_pre.": "a pre-encoder LayerNorm", "mask_token": "a mask token",
}
_RENAME = {
    "patch_embed.proj.weight": "embedding.weight", "patch_embed.proj.bias": "embedding.bias",
    "cls_token": "cls", "pos_embed": "pos_embedding",
    "pre_logits.fc.weight": "pre_logits.weight", "pre_logits.fc.bias": "pre_logits.bias",
}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")


def looks_like_timm(keys: list[str]) -> bool:
    return any(k.startswith(("patch_embed.proj.", "patch_embed.backbone.")) for k in keys) and any(
        k.startswith("blocks.") for k in keys
    )


def is_timm(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return looks_like_timm(_peek_keys(path, strict=True))
    except CheckpointError:
        # An unreadable .pth/.safetensors: claim it so that reading reports why (refused pickle,
        # truncation) instead of "unknown format". Formats that recognise it come earlier.
        return path.suffix in (*TORCH_SUFFIXES, ".safetensors")


def timm_state_to_model(state: Mapping[str, torch.Tensor], source: str, **hints: Any) -> nn.Module:
    """Build the model a timm ViT state dict describes and load it strictly."""
    bad = sorted({why for k in state for pat, why in _UNSUPPORTED.items() if pat in k or k.startswith(pat)})
    if bad:
        raise CheckpointError(f"{source}: timm ViT with {', '.join(bad)}: not supported by vitkit")
    ours: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in state.items():
        if k in _RENAME:
            ours[_RENAME[k]] = v
        elif _BLOCK_RE.match(k) or k.split(".")[0] in ("norm", "fc_norm", "head"):
            ours[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(
            f"{source}: tensors with no place in a ViT: " + ", ".join(f"{k} {_shape(state[k])}" for k in unknown[:20])
        )
    for need in ("embedding.weight", "pos_embedding", "blocks.0.mlp.fc1.weight"):
        if need not in ours:
            raise CheckpointError(f"{source}: missing tensor {need} needed to infer the architecture")
    has_fc_norm = any(k.startswith("fc_norm.") for k in ours)
    has_norm = any(k.startswith("norm.") for k in ours)
    has_cls = "cls" in ours
    if has_fc_norm and has_norm:
        raise CheckpointError(f"{source}: both norm and fc_norm tensors; timm uses one of them")
    if has_fc_norm and has_cls:
        raise CheckpointError(
            f"{source}: a class token with average pooling (fc_norm) has no vitkit equivalent "
            "(vitkit's gap mode has no class token)"
        )
    if has_fc_norm:
        for leaf in ("weight", "bias"):
            ours[f"norm.{leaf}"] = ours.pop(f"fc_norm.{leaf}")
    proj, pos = ours["embedding.weight"], ours["pos_embedding"]
    hidden = int(proj.shape[0])
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != hidden:
        raise CheckpointError(f"{source}: pos_embed has shape {_shape(pos)}; expected (1, N, {hidden})")
    n = int(pos.shape[1])
    prefix = 1 if has_cls else 0
    side = int(round((n - prefix) ** 0.5))
    if side * side != n - prefix:
        side = int(round(n**0.5))
        if not has_cls or side * side != n:
            raise CheckpointError(
                f"{source}: {n} position embeddings do not form a square grid (+{prefix} class token)"
            )
        # no_embed_class: timm adds pos_embed before prepending the class token.
        ours["pos_embedding"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    heads = hints.pop("num_heads", None)
    if heads is None:
        if hidden % 64:
            raise CheckpointError(f"{source}: cannot tell the number of heads of hidden size {hidden}; pass num_heads=")
        heads = hidden // 64
    layers = len({k.split(".")[1] for k in ours if k.startswith("blocks.")})
    fields: dict[str, Any] = dict(
        name="timm-vit", patch_size=(int(proj.shape[2]), int(proj.shape[3])), hidden_size=hidden,
        mlp_dim=int(ours["blocks.0.mlp.fc1.weight"].shape[0]), num_heads=int(heads), num_layers=layers,
        classifier="token" if has_cls else "gap",
        representation_size=int(ours["pre_logits.weight"].shape[0]) if "pre_logits.weight" in ours else None,
        num_classes=int(ours["head.weight"].shape[0]) if "head.weight" in ours else 0,
        image_size=(side * int(proj.shape[2]), side * int(proj.shape[3])), in_chans=int(proj.shape[1]),
        layer_norm_eps=1e-6, gelu="exact", norm_after_pool=has_fc_norm,
    )
    fields.update(hints)
    try:
        cfg = ViTConfig(**fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot build a vitkit config: {e}") from e
    if cfg.has_class_token != has_cls:
        raise CheckpointError(
            f"{source}: classifier={cfg.classifier!r} {'needs' if cfg.has_class_token else 'has no'} class token, "
            f"but the file {'has one' if has_cls else 'has none'}"
        )
    model = build_model(cfg)
    check_state_dict(source, model.state_dict(), ours)
    model.load_state_dict(ours, strict=True)
    return model


def read_timm(path: str | os.PathLike[str], **hints: Any) -> nn.Module:
    return timm_state_to_model(read_tensor_file(path), str(path), **hints)


def to_timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our weights under timm's names. Build the timm model with ``act_layer='gelu_tanh'`` for an
    official (tanh-GELU) model, and ``global_pool='avg', fc_norm=False`` for an official gap model."""
    cfg: ViTConfig = model.config  # type: ignore[assignment]
    if not cfg.transformer or cfg.resnet is not None:
        raise CheckpointError(f"{cfg.name}: timm export covers plain ViTs; hybrids/ResNets have other timm layouts")
    if cfg.classifier not in ("token", "gap"):
        raise CheckpointError(f"{cfg.name}: classifier={cfg.classifier!r} has no timm vision_transformer equivalent")
    if cfg.gelu != "exact" or cfg.layer_norm_eps != 1e-6:
        warnings.warn(
            f"{cfg.name}: gelu={cfg.gelu!r}, layer_norm_eps={cfg.layer_norm_eps}: timm's default ViT computes exact "
            "GELU with eps 1e-6; build it with matching act_layer/norm_layer to compute the same logits",
            stacklevel=3,
        )
    rev = {v: k for k, v in _RENAME.items()}
    out = {}
    for k, v in model.state_dict().items():
        name = rev.get(k, k)
        if cfg.norm_after_pool and k.startswith("norm."):
            name = "fc_" + k
        out[name] = v.detach().to("cpu").contiguous()
    return out


def save_timm(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """``.safetensors`` (no vitkit metadata) or a ``torch.save`` of plain tensors (any other suffix)."""
    path = Path(path)
    state = to_timm_state_dict(model)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        save_file(state, str(tmp), metadata={"format": "pt"})
    else:
        torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _register() -> None:
    from .formats import Format, register_format

    register_format(Format(
        "timm", "timm vision_transformer state dict (.pth / .safetensors)", is_timm, read_timm, save_timm,
        (".pth", ".pt"),
    ))


_register()

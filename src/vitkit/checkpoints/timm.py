"""timm ``vision_transformer`` state dicts (``.pth`` via ``torch.load(weights_only=True)``, or
``.safetensors`` without vitkit metadata) and timm Hub folders (``config.json`` + weights): import and export.

timm's block layout is ours (fused ``qkv``), so the mapping is mostly renaming. A state dict does
not store the head count (nor the GELU variant): it comes from, in this order, ``num_heads=`` given
by the caller, the vitkit config that vitkit's own export writes beside the tensors (safetensors
metadata ``vitkit_config``, or ``NAME.json`` next to a ``.pth``), a timm ``config.json``
(``model_args.num_heads``, else the ``architecture`` looked up in :mod:`.timm_archs`); otherwise
loading is an error asking for ``num_heads=``. There is no ``hidden / 64`` guess: timm's
``vit_base_patch16_gap_224`` has 16 heads of 48 and ``vit_huge_patch14_224`` 16 of 80. GELU is
exact-erf and LayerNorm eps 1e-6 (timm's defaults) unless the architecture or ``model_args`` say
otherwise. Pooling follows the tensors: a class token without ``fc_norm`` is token pooling; no
class token is average pooling, with the final LayerNorm after pooling when the file has
``fc_norm`` (timm's default for ``global_pool='avg'``) and before it when it has ``norm``. Files
with ``pos_embed`` that excludes the class token (``no_embed_class``) are read with a zero
embedding for it, which computes the same thing.

Not supported (a clear error): hybrids (``patch_embed.backbone``), register/distillation tokens,
layer scale, q/k norm, attention pooling, and class token *plus* average pooling.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..models.arch import WEIGHT_FIELDS, arch_diff, class_token_mismatch, posemb_grid
from ..models.config import ViTConfig
from .errors import CheckpointError, _shape, num_heads_hint
from .hf import _dim
from .tensorfile import MAX_JSON_BYTES, TORCH_SUFFIXES, peek_keys, read_json, read_tensor_file
from .timm_archs import HEADS, SPECIAL
from .validate import build_checked, check_dtypes, parse_config

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
    if path.is_dir():
        return _is_timm_dir(path)
    if not path.is_file():
        return False
    try:
        return looks_like_timm(peek_keys(path, strict=True))
    except CheckpointError:
        # An unreadable .pth/.safetensors: claim it so that reading reports why (refused pickle,
        # truncation) instead of "unknown format". Formats that recognise it come earlier.
        return path.suffix in (*TORCH_SUFFIXES, ".safetensors")


# What vitkit's own export records and the reader takes back (the tensors tell the rest).
_FROM_VITKIT = ("name", "num_heads", "gelu", "layer_norm_eps", "mean", "std", "class_names", "classifier",
                "dropout_rate", "attention_dropout_rate", "head_bias_init")


def _told_by_config(cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Config fields a timm ``config.json`` states: heads/GELU/eps from ``model_args`` or the
    architecture table, normalisation and class names from ``pretrained_cfg`` / ``label_names``."""
    if not cfg:
        return {}
    told: dict[str, Any] = {}
    arch = str(cfg.get("architecture") or "").split(".")[0]
    args = cfg.get("model_args") or {}
    pre = cfg.get("pretrained_cfg") or {}
    for key, d in (("model_args", args), ("pretrained_cfg", pre)):
        if not isinstance(d, Mapping):
            raise CheckpointError(f"{source}: config.json {key}={d!r}: expected an object")
    if arch in SPECIAL:
        heads, gelu, eps = SPECIAL[arch]
        if gelu is None:
            raise CheckpointError(f"{source}: timm architecture {arch} uses an activation vitkit does not compute")
        told.update(num_heads=heads, gelu=gelu, layer_norm_eps=eps)
    elif arch in HEADS:
        told["num_heads"] = HEADS[arch]
    if "num_heads" in args:
        told["num_heads"] = args["num_heads"]  # checked as it is (an integer) by parse_config
    act = args.get("act_layer")
    if act is not None:
        if act not in ("gelu", "gelu_tanh"):
            raise CheckpointError(f"{source}: model_args.act_layer={act!r}; vitkit computes gelu and gelu_tanh")
        told["gelu"] = "exact" if act == "gelu" else "tanh"
    if arch:
        told["name"] = arch
    if pre.get("mean") is not None and pre.get("std") is not None:
        told["mean"], told["std"] = pre["mean"], pre["std"]
    names = cfg.get("label_names") or pre.get("label_names")
    k = cfg.get("num_classes")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
        raise CheckpointError(f"{source}: config.json num_classes={k!r}: expected an integer")
    if names is not None and not isinstance(names, list):
        raise CheckpointError(f"{source}: config.json label_names={names!r}: expected a list of class names")
    if names and (k is None or len(names) == k):
        told["class_names"] = names  # a list of strings, checked by parse_config
    return told


def timm_state_to_model(
    state: Mapping[str, torch.Tensor], source: str, *, timm_config: Mapping[str, Any] | None = None,
    vitkit_config: ViTConfig | None = None, verify: bool = True, **hints: Any,
) -> nn.Module:
    """Build the model a timm ViT state dict describes and load it strictly. ``timm_config``: a
    timm ``config.json``; ``vitkit_config``: what vitkit's export recorded; ``hints``: the caller's.
    Validated before anything is allocated (:mod:`.validate`)."""
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
    check_dtypes({k: v.dtype for k, v in ours.items()}, source)
    _dim(ours, "embedding.weight", 0, 4, source)
    _dim(ours, "blocks.0.mlp.fc1.weight", 0, 2, source)
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
    tc = timm_config or {}
    if not isinstance(tc.get("model_args") or {}, Mapping):
        raise CheckpointError(f"{source}: config.json model_args={tc.get('model_args')!r}: expected an object")
    pool = (tc.get("model_args") or {}).get("global_pool", tc.get("global_pool"))
    if pool not in (None, "", "token" if has_cls else "avg"):
        # e.g. a class token with global_pool='avg', fc_norm=False: the tensors alone would read as token pooling
        raise CheckpointError(f"{source}: config.json says global_pool={pool!r}, which vitkit cannot compute for a "
                              f"model {'with' if has_cls else 'without'} a class token")
    if has_fc_norm:
        for leaf in ("weight", "bias"):
            ours[f"norm.{leaf}"] = ours.pop(f"fc_norm.{leaf}")
    proj, pos = ours["embedding.weight"], ours["pos_embedding"]
    hidden = int(proj.shape[0])
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != hidden:
        raise CheckpointError(f"{source}: pos_embed has shape {_shape(pos)}; expected (1, N, {hidden})")
    try:
        side, cls_row = posemb_grid(int(pos.shape[1]), has_cls)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if has_cls and not cls_row:
        # no_embed_class: timm adds pos_embed before prepending the class token.
        ours["pos_embedding"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    told = _told_by_config(timm_config or {}, source)
    if vitkit_config is not None:
        told = {k: getattr(vitkit_config, k) for k in _FROM_VITKIT}
    if "num_heads" not in hints and "num_heads" not in told:
        raise CheckpointError(
            f"{source}: a timm state dict does not store its number of heads (hidden size {hidden}) and no config "
            "names it (no vitkit metadata, no timm config.json with model_args or a known architecture); "
            + num_heads_hint(source)
        )
    heads = hints.pop("num_heads", told.pop("num_heads", None))
    layers = len({k.split(".")[1] for k in ours if k.startswith("blocks.")})
    fields: dict[str, Any] = dict(
        name="timm-vit", patch_size=(int(proj.shape[2]), int(proj.shape[3])), hidden_size=hidden,
        mlp_dim=int(ours["blocks.0.mlp.fc1.weight"].shape[0]), num_heads=heads, num_layers=layers,
        classifier="token" if has_cls else "gap",
        representation_size=_dim(ours, "pre_logits.weight", 0, 2, source) if "pre_logits.weight" in ours else None,
        num_classes=_dim(ours, "head.weight", 0, 2, source) if "head.weight" in ours else 0,
        image_size=(side * int(proj.shape[2]), side * int(proj.shape[3])), in_chans=int(proj.shape[1]),
        layer_norm_eps=1e-6, gelu="exact", norm_after_pool=has_fc_norm,
    )
    fields.update(told)
    fields.update(hints)
    cfg = parse_config(fields, source, what="config of the timm state dict")
    if why := class_token_mismatch(cfg.classifier, has_cls):
        raise CheckpointError(f"{source}: {why}, but the file {'has one' if has_cls else 'has none'}")
    if vitkit_config is not None:  # the rest of what vitkit's export recorded must agree with the tensors
        for f, recorded, found in arch_diff(vitkit_config, cfg, (*WEIGHT_FIELDS, "norm_after_pool"))[:1]:
            raise CheckpointError(f"{source}: vitkit_config field {f}={recorded!r} contradicts the tensors, which "
                                  f"give {f}={found!r}")
    k = (timm_config or {}).get("num_classes")
    if k is not None and k != cfg.num_classes:
        raise CheckpointError(f"{source}: config.json says num_classes={k}, the head has {cfg.num_classes} outputs")
    return build_checked(cfg, ours, source, verify=verify)


_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _timm_config_json(path: Path) -> dict[str, Any] | None:
    """A timm ``config.json`` (it names an ``architecture``; HF's names a ``model_type``), or None."""
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None  # not a config; read_timm of a folder then says it is not a timm config
        d = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return d if isinstance(d, dict) and "architecture" in d and "model_type" not in d else None


def _is_timm_dir(path: Path) -> bool:
    return path.is_dir() and _timm_config_json(path / "config.json") is not None and any(
        (path / w).is_file() for w in _WEIGHTS)


def _vitkit_metadata(path: Path) -> ViTConfig | None:
    """The config vitkit's export wrote: safetensors metadata, or ``NAME.json`` beside a ``.pth``."""
    raw = None
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("vitkit_config")
        except (SafetensorError, OSError, ValueError):
            return None
    else:
        side = path.with_suffix(".json")
        if side.is_file():
            raw = read_json(side).get("vitkit_config")
            raw = json.dumps(raw) if isinstance(raw, dict) else raw
    if raw is None:
        return None
    try:
        fields = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: invalid vitkit_config recorded by vitkit's timm export ({e})") from e
    return parse_config(fields, str(path), what="vitkit_config recorded by vitkit's timm export")


def read_timm(path: str | os.PathLike[str], verify: bool = True, **hints: Any) -> nn.Module:
    path = Path(path)
    if path.is_dir():
        weights = next((path / w for w in _WEIGHTS if (path / w).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path}: a timm folder needs {' or '.join(_WEIGHTS)}")
        cfg_json = _timm_config_json(path / "config.json")
        if cfg_json is None:
            raise CheckpointError(f"{path / 'config.json'}: not a timm config (no 'architecture')")
        return timm_state_to_model(read_tensor_file(weights, verify=verify), str(weights), timm_config=cfg_json,
                                   verify=verify, **hints)
    cfg_json = _timm_config_json(path.parent / "config.json") or _timm_config_json(path.with_suffix(".json"))
    return timm_state_to_model(read_tensor_file(path, verify=verify), str(path), timm_config=cfg_json,
                               vitkit_config=_vitkit_metadata(path), verify=verify, **hints)


def to_timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our weights under timm's names. Build the timm model with ``act_layer='gelu_tanh'`` for an
    official (tanh-GELU) model, and ``global_pool='avg', fc_norm=False`` for an official gap model."""
    cfg: ViTConfig = model.config  # type: ignore[assignment]
    if not cfg.transformer or cfg.has_stem:
        raise CheckpointError(f"{cfg.name}: timm export covers plain ViTs; hybrids/ResNets/convolutional stems have "
                              "other timm layouts")
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


def timm_config_dict(cfg: ViTConfig) -> dict[str, Any]:
    """A timm-style ``config.json`` for our model (what ``timm.create_model`` needs: ``model_args``),
    with our own config under ``vitkit_config`` so that vitkit reads the file back exactly."""
    args: dict[str, Any] = dict(
        img_size=list(cfg.image_size), patch_size=cfg.patch_size[0], embed_dim=cfg.hidden_size, depth=cfg.num_layers,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_dim / cfg.hidden_size, class_token=cfg.has_class_token,
        global_pool="token" if cfg.has_class_token else "avg", fc_norm=cfg.norm_after_pool,
        act_layer="gelu" if cfg.gelu == "exact" else "gelu_tanh",
    )
    pre = {"input_size": [cfg.in_chans, *cfg.image_size], "mean": list(cfg.mean), "std": list(cfg.std),
           "num_classes": cfg.num_classes}
    # Not a timm-registered name (model_args carry the shape); vitkit reads vitkit_config back.
    out = {"architecture": "vitkit_" + re.sub(r"[^a-z0-9]+", "_", cfg.name.lower()).strip("_"),
           "num_classes": cfg.num_classes, "num_features": cfg.hidden_size, "model_args": args,
           "pretrained_cfg": pre, "vitkit_config": json.loads(cfg.to_json())}
    if cfg.class_names:
        out["label_names"] = list(cfg.class_names)
    return out


def save_timm(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """``.safetensors`` (our config in the metadata as ``vitkit_config``) or a ``torch.save`` of plain
    tensors (any other suffix) with a timm-style ``NAME.json`` beside it (``model_args`` + ``vitkit_config``)."""
    path = Path(path)
    state = to_timm_state_dict(model)
    cfg: ViTConfig = model.config  # type: ignore[assignment]
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        save_file(state, str(tmp), metadata={"format": "pt", "vitkit_config": cfg.to_json()})
    else:
        side = path.with_suffix(".json")
        side_tmp = side.with_name(side.name + ".tmp")
        side_tmp.write_text(json.dumps(timm_config_dict(cfg), indent=1) + "\n")
        os.replace(side_tmp, side)
        torch.save(state, tmp)
    os.replace(tmp, path)
    return path


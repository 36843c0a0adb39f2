"""Hugging Face transformers ViT (``ViTForImageClassification`` / ``ViTModel``): import and export.

Files: a ``save_pretrained`` directory (``config.json`` + ``model.safetensors``, sharded or not;
``pytorch_model.bin`` only through ``torch.load(weights_only=True)``), or a bare state-dict file.
In memory: :func:`from_hf` and :func:`to_hf`.

Key names come in two generations: the ones on disk (``encoder.layer.N.attention.attention.query``,
what every transformers version writes and reads) and the in-memory names of transformers >= 5
(``layers.N.attention.q_proj``). Both are read. HF computes exact-erf GELU with LayerNorm eps
1e-12 by default; both come along into the vitkit config so an imported model computes what its
source computed. HF's pooler (dense + tanh on the class token) is the paper's pre-logits layer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..models.arch import class_token_mismatch, posemb_grid
from ..models.config import ViTConfig
from .errors import CheckpointError, _shape, check_state_dict, num_heads_hint
from .tensorfile import MAX_JSON_BYTES, peek_keys, read_json, read_tensor_file
from .validate import build_checked, check_dtypes, parse_config

# transformers' ACT2FN names -> our GELU variant (gelu_new/gelu_fast are the same tanh formula).
_ACT = {"gelu": "exact", "gelu_python": "exact", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh",
        "gelu_python_tanh": "tanh", "gelu_fast": "tanh"}
_ACT_OUT = {"exact": "gelu", "tanh": "gelu_pytorch_tanh"}

_LAYER_RE = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
_LAYER_PARTS = {
    "attention.attention.query": "q", "attention.q_proj": "q",
    "attention.attention.key": "k", "attention.k_proj": "k",
    "attention.attention.value": "v", "attention.v_proj": "v",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "layernorm_before": "norm1", "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1", "mlp.fc1": "mlp.fc1",
    "output.dense": "mlp.fc2", "mlp.fc2": "mlp.fc2",
}
_TOP = {
    "embeddings.cls_token": "cls", "embeddings.position_embeddings": "pos_embedding",
    "embeddings.patch_embeddings.projection.weight": "embedding.weight",
    "embeddings.patch_embeddings.projection.bias": "embedding.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
    "pooler.dense.weight": "pre_logits.weight", "pooler.dense.bias": "pre_logits.bias",
    "classifier.weight": "head.weight", "classifier.bias": "head.bias",
}


# -- key mapping ------------------------------------------------------------------------------------
def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[4:] if k.startswith("vit.") else k): v for k, v in state.items()}


def canonical_key(key: str) -> str | None:
    """Our name for an HF key (``blocks.i.q`` etc. for the parts of the fused qkv), or None."""
    key = key[4:] if key.startswith("vit.") else key
    if key in _TOP:
        return _TOP[key]
    m = _LAYER_RE.match(key)
    if m and m.group(2) in _LAYER_PARTS:
        return f"blocks.{m.group(1)}.{_LAYER_PARTS[m.group(2)]}.{m.group(3)}"
    return None


def hf_state_to_ours(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    ours: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in state.items():
        c = canonical_key(k)
        if c is None:
            unknown.append(k)
        else:
            ours[c] = v
    if unknown:
        raise CheckpointError(
            f"{source}: tensors with no place in a ViT: " + ", ".join(f"{k} {_shape(state[k])}" for k in unknown[:20])
        )
    check_dtypes({k: v.dtype for k, v in ours.items()}, source)  # before torch.cat could promote them
    i = 0
    while f"blocks.{i}.q.weight" in ours or f"blocks.{i}.k.weight" in ours:
        for leaf in ("weight", "bias"):
            parts = [ours.pop(f"blocks.{i}.{t}.{leaf}", None) for t in "qkv"]
            if any(p is None for p in parts):
                missing = [f"layer {i} {t}.{leaf}" for t, p in zip("qkv", parts) if p is None]
                raise CheckpointError(f"{source}: missing tensors: {', '.join(missing)}")
            shapes = [tuple(p.shape) for p in parts]  # type: ignore[union-attr]
            if len(set(shapes)) != 1 or len(shapes[0]) != (2 if leaf == "weight" else 1):
                raise CheckpointError(
                    f"{source}: layer {i} query/key/value {leaf} shapes {shapes}; expected three equal "
                    f"{'(hidden, hidden)' if leaf == 'weight' else '(hidden,)'} tensors"
                )
            ours[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
        i += 1
    return ours


# Our config fields -> the names in an HF config.json (for messages that name the file's field).
HF_ALIASES = {
    "hidden_size": "hidden_size", "mlp_dim": "intermediate_size", "num_heads": "num_attention_heads",
    "num_layers": "num_hidden_layers", "dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob", "image_size": "image_size", "patch_size": "patch_size",
    "in_chans": "num_channels", "layer_norm_eps": "layer_norm_eps", "name": "vitkit_name",
    "class_names": "id2label", "mean": "image_mean", "std": "image_std",
}


def _dim(state: Mapping[str, torch.Tensor], key: str, axis: int, ndim: int, source: str) -> int:
    t = state[key]
    if t.dim() != ndim:
        raise CheckpointError(f"{source}: {key} has shape {_shape(t)}; expected {ndim} dimensions")
    return int(t.shape[axis])


def _class_names(hf: Mapping[str, Any], num_classes: int, source: str) -> tuple[str, ...] | None:
    id2label = hf.get("id2label") or {}
    if not isinstance(id2label, Mapping):
        raise CheckpointError(f"{source}: id2label={id2label!r}: expected a mapping of class index to name")
    if not (num_classes and len(id2label) == num_classes):
        return None
    names = [id2label.get(str(i), id2label.get(i, "")) for i in range(num_classes)]
    if not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{source}: id2label holds names that are not strings: {names[:5]!r}")
    return tuple(names) if names != [f"LABEL_{i}" for i in range(num_classes)] else None


def config_from_hf(
    hf: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: str,
    preprocessor: Mapping[str, Any] | None = None, **hints: Any,
) -> ViTConfig:
    """Our config for an HF ViT config (dict) and its (our-named) state dict.

    Values are passed on as they are, never converted: ``"768"`` or ``768.5`` for a size is an
    error naming the config.json field (:func:`validate.parse_config`).
    """
    act = hf.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in _ACT:
        raise CheckpointError(f"{source}: hidden_act={act!r} is not a GELU variant vitkit computes ({sorted(_ACT)})")
    qkv_bias = hf.get("qkv_bias", True)
    if qkv_bias is not True:
        raise CheckpointError(f"{source}: qkv_bias={qkv_bias!r}; the ViT of the paper has query/key/value biases")
    has_pooler = "pre_logits.weight" in state
    num_classes = _dim(state, "head.weight", 0, 2, source) if "head.weight" in state else 0
    if has_pooler and num_classes:
        raise CheckpointError(f"{source}: both a pooler and a classifier; HF's classifier does not use the pooler")
    if has_pooler and hf.get("pooler_act", "tanh") != "tanh":
        raise CheckpointError(f"{source}: pooler_act={hf.get('pooler_act')!r}; the representation layer is tanh")
    fields: dict[str, Any] = dict(
        name=hf.get("vitkit_name") or hf.get("_name_or_path") or "hf-vit",
        patch_size=hf.get("patch_size", 16), hidden_size=hf.get("hidden_size", 768),
        mlp_dim=hf.get("intermediate_size", 3072), num_heads=hf.get("num_attention_heads", 12),
        num_layers=hf.get("num_hidden_layers", 12), dropout_rate=hf.get("hidden_dropout_prob", 0.0),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.0), classifier="token",
        representation_size=_dim(state, "pre_logits.weight", 0, 2, source) if has_pooler else None,
        num_classes=num_classes, image_size=hf.get("image_size", 224), in_chans=hf.get("num_channels", 3),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), gelu=_ACT[act],
        class_names=_class_names(hf, num_classes, source),
    )
    if preprocessor and preprocessor.get("do_normalize", True):
        if "image_mean" in preprocessor and "image_std" in preprocessor:
            fields["mean"], fields["std"] = preprocessor["image_mean"], preprocessor["image_std"]
    fields.update(hints)
    if isinstance(fields["name"], str) and "/" in fields["name"] and "name" not in hints:
        fields["name"] = fields["name"].rstrip("/").rsplit("/", 1)[-1]
    cfg = parse_config(fields, source, aliases=HF_ALIASES, what="Hugging Face config")
    if why := class_token_mismatch(cfg.classifier, True):
        raise CheckpointError(f"{source}: {why}, but an HF ViT always has one")
    return cfg


def _infer_hf_dict(state: Mapping[str, torch.Tensor], source: str, hints: Mapping[str, Any]) -> dict[str, Any]:
    """An HF config for a bare state dict (no config.json): shapes, HF defaults, hints."""
    for need in ("embedding.weight", "pos_embedding", "blocks.0.mlp.fc1.weight"):
        if need not in state:
            raise CheckpointError(f"{source}: missing tensor {need} needed to infer the architecture")
    proj, pos = state["embedding.weight"], state["pos_embedding"]
    _dim(state, "embedding.weight", 0, 4, source)
    _dim(state, "pos_embedding", 1, 3, source)
    fc1 = state["blocks.0.mlp.fc1.weight"]
    _dim(state, "blocks.0.mlp.fc1.weight", 0, 2, source)
    hidden = int(proj.shape[0])
    layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    try:
        grid, _ = posemb_grid(int(pos.shape[1]), class_token=True, cls_row_optional=False)  # HF's always has one
    except ValueError as e:
        raise CheckpointError(f"{source}: position embeddings {_shape(pos)}: {e}") from None
    if "num_heads" not in hints:  # no hidden // 64 guess: ViT-H/14 has 16 heads of 80
        raise CheckpointError(f"{source}: a state dict without config.json does not store its number of heads "
                              f"(hidden size {hidden}); {num_heads_hint(source)}")
    heads = hints["num_heads"]  # checked as it is (an integer) by parse_config
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=int(fc1.shape[0]), patch_size=[int(proj.shape[2]), int(proj.shape[3])],
                image_size=[grid * int(proj.shape[2]), grid * int(proj.shape[3])], num_channels=int(proj.shape[1]))


def build_from_state(
    hf_config: Mapping[str, Any] | None, state: Mapping[str, torch.Tensor], source: str,
    preprocessor: Mapping[str, Any] | None = None, verify: bool = True, **hints: Any,
) -> nn.Module:
    """A vitkit model from an HF state dict (either naming) and its config (None: infer from shapes), the config
    validated and compared with the tensors' shapes before anything is allocated (:mod:`.validate`)."""
    ours = hf_state_to_ours(_strip_prefix(state), source)
    if hf_config is None:
        hf_config = _infer_hf_dict(ours, source, hints)
    cfg = config_from_hf(hf_config, ours, source, preprocessor, **hints)
    return build_checked(cfg, ours, source, aliases=HF_ALIASES, verify=verify)


# -- the format: files and directories ---------------------------------------------------------------
def _is_hf_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file()):
        return False
    try:
        if cfg.stat().st_size > MAX_JSON_BYTES:
            return True  # claimed, so that reading says what is wrong with it
        return json.loads(cfg.read_text()).get("model_type") == "vit"
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, AttributeError):
        # An unreadable config.json: claim the directory so that reading reports why, instead of
        # "unknown checkpoint format". A readable one of another model_type is not ours.
        return True


def looks_like_hf(keys: list[str]) -> bool:
    return any(k.startswith(("vit.embeddings.patch_embeddings.", "embeddings.patch_embeddings.")) for k in keys)


def is_hf(path: Path) -> bool:
    if path.is_dir():
        return _is_hf_dir(path)
    return path.is_file() and looks_like_hf(peek_keys(path))


def _dir_weights(path: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.is_file():
        return read_tensor_file(single)
    if index.is_file():
        wmap = read_json(index).get("weight_map")
        if not isinstance(wmap, dict) or not wmap:
            raise CheckpointError(f"{index}: no weight_map (a mapping of tensor name to shard file)")
        shards = sorted(set(wmap.values()))
        # Shards are files in this directory: a path elsewhere ("../x", "/etc/x") is refused.
        bad = [s for s in shards if not isinstance(s, str) or Path(s).name != s or s in ("", ".", "..")]
        if bad:
            raise CheckpointError(f"{index}: weight_map names shards outside the directory: {bad[:5]!r}")
        state: dict[str, torch.Tensor] = {}
        for s in shards:
            state.update(read_tensor_file(path / s))
        return state
    if (path / "pytorch_model.bin").is_file():
        return read_tensor_file(path / "pytorch_model.bin", verify=verify)
    raise CheckpointError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def read_hf(path: str | os.PathLike[str], verify: bool = True, **hints: Any) -> nn.Module:
    path = Path(path)
    if path.is_dir():
        hf_config = read_json(path / "config.json")
        pre = path / "preprocessor_config.json"
        preprocessor = read_json(pre) if pre.is_file() else None
        return build_from_state(hf_config, _dir_weights(path, verify), str(path), preprocessor, verify, **hints)
    state = read_tensor_file(path, verify=verify)
    # A weights file inside a save_pretrained directory: use its config.
    sibling = path.parent / "config.json"
    hf_config = read_json(sibling) if _is_hf_dir(path.parent) else None
    return build_from_state(hf_config, state, str(path), verify=verify, **hints)


def hf_config_dict(cfg: ViTConfig) -> dict[str, Any]:
    """The transformers ``ViTConfig`` fields of a vitkit config (raises if HF cannot express it)."""
    problems = []
    if not cfg.transformer or cfg.has_stem:
        problems.append("hybrid/ResNet/convolutional-stem models have no HF ViT form")
    if cfg.classifier != "token":  # gap, unpooled, token_unpooled (logits for every token)
        problems.append(f"classifier={cfg.classifier!r} (HF ViT always pools the class token, and scores it only)")
    if cfg.norm_after_pool:
        problems.append("the final LayerNorm is applied after pooling (timm fc_norm)")
    if cfg.representation_size and cfg.num_classes:
        problems.append("a representation layer under a classifier (HF's classifier head bypasses the pooler)")
    if problems:
        raise CheckpointError(f"{cfg.name}: cannot express as a Hugging Face ViT: " + "; ".join(problems))
    size = cfg.image_size[0] if cfg.image_size[0] == cfg.image_size[1] else list(cfg.image_size)
    patch = cfg.patch_size[0] if cfg.patch_size[0] == cfg.patch_size[1] else list(cfg.patch_size)
    d: dict[str, Any] = dict(
        model_type="vit", architectures=["ViTForImageClassification" if cfg.num_classes else "ViTModel"],
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_dim, hidden_act=_ACT_OUT[cfg.gelu], layer_norm_eps=cfg.layer_norm_eps,
        hidden_dropout_prob=cfg.dropout_rate, attention_probs_dropout_prob=cfg.attention_dropout_rate,
        image_size=size, patch_size=patch, num_channels=cfg.in_chans, qkv_bias=True,
        encoder_stride=cfg.patch_size[0], pooler_output_size=cfg.representation_size or cfg.hidden_size,
        pooler_act="tanh", initializer_range=0.02, vitkit_name=cfg.name,
    )
    if cfg.num_classes:
        names = cfg.class_names or tuple(f"LABEL_{i}" for i in range(cfg.num_classes))
        d["id2label"] = {str(i): n for i, n in enumerate(names)}
        d["label2id"] = {n: i for i, n in enumerate(names)}
    return d


def _hf_names(state: Mapping[str, torch.Tensor], cfg: ViTConfig, legacy: bool, prefix: str) -> dict[str, torch.Tensor]:
    """Our state dict in HF names (``legacy``: the on-disk names; else transformers >= 5 in-memory)."""
    rev_top = {v: k for k, v in _TOP.items()}
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k in rev_top:
            name = rev_top[k]
            out[name if name.startswith(("pooler.", "classifier.")) else prefix + name] = v
            continue
        m = re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$", k)
        if not m:
            raise CheckpointError(f"no Hugging Face name for parameter {k}")
        i, part, leaf = m.groups()
        layer = f"{prefix}encoder.layer.{i}." if legacy else f"{prefix}layers.{i}."
        if part == "attn.qkv":
            for t, chunk in zip("qkv", v.chunk(3, dim=0)):
                sub = {"q": "query", "k": "key", "v": "value"}[t]
                out[layer + (f"attention.attention.{sub}" if legacy else f"attention.{t}_proj") + f".{leaf}"] = chunk
            continue
        names = {
            "attn.proj": ("attention.output.dense", "attention.o_proj"), "norm1": ("layernorm_before",) * 2,
            "norm2": ("layernorm_after",) * 2, "mlp.fc1": ("intermediate.dense", "mlp.fc1"),
            "mlp.fc2": ("output.dense", "mlp.fc2"),
        }[part]
        out[layer + names[0 if legacy else 1] + f".{leaf}"] = v
    return out


def to_hf(model: nn.Module) -> nn.Module:
    """A transformers ``ViTForImageClassification`` (``ViTModel`` when ``num_classes=0``) with our weights."""
    import transformers

    cfg: ViTConfig = model.config  # type: ignore[assignment]
    d = hf_config_dict(cfg)
    d.pop("model_type")
    d.pop("architectures")
    hf_cfg = transformers.ViTConfig(**d)
    if cfg.num_classes:
        hf = transformers.ViTForImageClassification(hf_cfg)
        prefix = "vit."
    else:
        hf = transformers.ViTModel(hf_cfg, add_pooling_layer=bool(cfg.representation_size))
        prefix = ""
    target = hf.state_dict()
    legacy = any(".encoder.layer." in k or k.startswith("encoder.layer.") for k in target)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    named = _hf_names(state, cfg, legacy, prefix)
    check_state_dict(f"{cfg.name} -> transformers", target, named)
    hf.load_state_dict(named, strict=True)
    return hf.eval()


def from_hf_state_dict(state: Mapping[str, torch.Tensor], config: Any = None, **hints: Any) -> nn.Module:
    """A vitkit model from an HF ViT state dict (on-disk or in-memory names) and its config
    (a ``transformers.ViTConfig``, a dict as in ``config.json``, or None to infer from shapes)."""
    if config is not None and not isinstance(config, Mapping):
        config = config.to_dict()
    return build_from_state(config, state, "state dict", **hints).eval()


def from_hf(hf_model: nn.Module, **hints: Any) -> nn.Module:
    """A vitkit model computing what a transformers ViT computes (in eval mode)."""
    hf_config = hf_model.config.to_dict()
    state = hf_model.state_dict()
    return build_from_state(hf_config, state, type(hf_model).__name__, **hints).eval()


def save_hf(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write a ``save_pretrained``-style directory (config.json, model.safetensors, preprocessor)."""
    cfg: ViTConfig = model.config  # type: ignore[assignment]
    path = Path(path)
    d = hf_config_dict(cfg)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: exists and is not a directory (a Hugging Face checkpoint is a directory)")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    named = {k: v.contiguous() for k, v in _hf_names(state, cfg, True, "vit." if cfg.num_classes else "").items()}
    tmp = path / "model.safetensors.tmp"
    save_file(named, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    pre = {
        "image_processor_type": "ViTImageProcessor", "do_resize": True,
        "size": {"height": cfg.image_size[0], "width": cfg.image_size[1]}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(cfg.mean), "image_std": list(cfg.std),
    }
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    return path


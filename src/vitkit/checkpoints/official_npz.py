"""The official ``.npz`` checkpoints of google-research/vision_transformer (and big_vision).

An ``.npz`` holds the flattened Flax parameter tree (``Transformer/encoderblock_0/...``) in
Flax layouts: conv kernels HWIO, dense kernels (in, out), attention kernels
(D, heads, head_dim) and (heads, head_dim, D). The architecture is read from the shapes.

Two naming generations exist for the modules inside an encoder block. The released files were
written by pre-Linen Flax, which numbered submodules in call order across classes
(``LayerNorm_0``, ``MultiHeadDotProductAttention_1``, ``LayerNorm_2``, ``MlpBlock_3``); Linen and
big_vision number per class (``LayerNorm_0``, ``MultiHeadDotProductAttention_0``,
``LayerNorm_1``, ``MlpBlock_0``). Both are read (ordering by the number, as
``flax.training.checkpoints.convert_pre_linen`` does); the writer produces the released
naming by default, which ``vit_jax.checkpoint.load`` converts on load.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..models.arch import (
    PLAIN_RESNET,
    SHAPE_FIELDS,
    ResNetConfig,
    arch_diff,
    class_token_mismatch,
    posemb_grid,
    resnet_config,
)
from ..models.config import ViTConfig
from ..models.registry import get_config, list_models
from .errors import CheckpointError, _shape, check_state_dict
from .npz_layout import POSEMB, from_flax, layout_rules, official_shapes, to_flax
from .sidecar import read_class_names, write_class_names
from .validate import check_dtypes, check_finite, check_npz_members, materialise, meta_model, parse_config

RELEASED = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
NAMINGS = {"released": RELEASED, "linen": LINEN}
_GN_RE = re.compile(r"(^|/)gn(\d+|_root|_proj)/(scale|bias)$")


# -- reading the archive -------------------------------------------------------------------
def is_npz(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix == ".npz":
        return True
    # An .npz under another name: a zip archive of .npy members.
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def read_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (never unpickling); errors name the file and the member."""
    path = Path(path)
    check_npz_members(path)  # headers first: NumPy allocates whatever shape a header declares
    try:
        archive = np.load(path, allow_pickle=False)
    # zipfile raises NotImplementedError for a damaged version or compression-method field.
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
        raise CheckpointError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: a single .npy array, not an .npz archive of named parameters")
    out: dict[str, np.ndarray] = {}
    # Released files reach 2.5 GB: show progress for big ones.
    big = path.stat().st_size > 200 * 2**20
    with archive:
        for key in tqdm(archive.files, desc=f"reading {path.name}", unit="tensor", disable=not big, leave=False):
            try:
                out[key] = np.asarray(archive[key])
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise CheckpointError(
                        f"{path}: tensor {key!r} holds pickled Python objects; refusing to unpickle (it could run "
                        "code), and a model parameter is never an object array"
                    ) from e
                raise CheckpointError(f"{path}: tensor {key!r} is corrupt or truncated (ValueError: {e})") from e
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError) as e:
                raise CheckpointError(
                    f"{path}: tensor {key!r} is corrupt or truncated ({type(e).__name__}: {e})"
                ) from e
    if not out:
        raise CheckpointError(f"{path}: empty .npz archive")
    return out


def _normalise_keys(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Strip wrapper prefixes and unstack scanned (big_vision ``scan=True``) encoder blocks."""
    for prefix in ("opt/target/", "params/"):
        if any(k.startswith(prefix) for k in arrays) and not any(
            k.startswith(("embedding/", "Transformer/", "conv_root/")) for k in arrays
        ):
            # Optimizer state outside the prefix is not model weights.
            arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    scanned = {k: v for k, v in arrays.items() if k.startswith("Transformer/encoderblock/")}
    if scanned:
        depths = {v.shape[0] if v.ndim else -1 for v in scanned.values()}
        if len(depths) != 1 or -1 in depths:
            raise CheckpointError(f"{source}: scanned encoder block tensors disagree on the depth: "
                                  + ", ".join(f"{k} {_shape(v)}" for k, v in scanned.items()))
        depth = depths.pop()
        arrays = {k: v for k, v in arrays.items() if k not in scanned}
        for k, v in scanned.items():
            rest = k[len("Transformer/encoderblock/"):]
            for i in range(depth):
                arrays[f"Transformer/encoderblock_{i}/{rest}"] = v[i]
    return arrays


# -- architecture inference --------------------------------------------------------------------
def _need(arrays: Mapping[str, np.ndarray], key: str, source: str, ndim: int) -> np.ndarray:
    if key not in arrays:
        raise CheckpointError(f"{source}: missing tensor {key!r}, needed to infer the architecture")
    a = arrays[key]
    if a.ndim != ndim:
        raise CheckpointError(f"{source}: tensor {key!r} has shape {_shape(a)}; expected {ndim} dimensions")
    return a


def _block_names(arrays: Mapping[str, np.ndarray], source: str) -> tuple[str, str, str, str]:
    """(LayerNorm before attention, attention, LayerNorm before MLP, MLP) names in block 0."""
    subs = {k.split("/")[2] for k in arrays if k.startswith("Transformer/encoderblock_0/")}

    def numbered(cls: str) -> list[str]:
        found = [s for s in subs if re.fullmatch(rf"{cls}_\d+", s)]
        return sorted(found, key=lambda s: int(s.rsplit("_", 1)[1]))

    ln, mha, mlp = numbered("LayerNorm"), numbered("MultiHeadDotProductAttention"), numbered("MlpBlock")
    if len(ln) != 2 or len(mha) != 1 or len(mlp) != 1:
        raise CheckpointError(
            f"{source}: Transformer/encoderblock_0 holds modules {sorted(subs)}; expected two LayerNorm_*, "
            "one MultiHeadDotProductAttention_* and one MlpBlock_* (a standard ViT encoder block)"
        )
    return ln[0], mha[0], ln[1], mlp[0]


def _infer_resnet(arrays: Mapping[str, np.ndarray], source: str) -> ResNetConfig | None:
    if "conv_root/kernel" not in arrays:
        return None
    root = _need(arrays, "conv_root/kernel", source, 4)
    width = root.shape[3]
    if width < 32 or width % 32:
        raise CheckpointError(
            f"{source}: conv_root/kernel {_shape(root)} has {width} output channels; the official ResNet's "
            "32-group GroupNorms need a positive multiple of 32"
        )
    units: dict[int, set[int]] = {}
    for k in arrays:
        m = re.match(r"block(\d+)/unit(\d+)/", k)
        if m:
            units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = sorted(units)
    if stages != list(range(1, len(stages) + 1)):
        raise CheckpointError(f"{source}: ResNet stages {stages} are not numbered block1..blockN")
    layers = []
    for s in stages:
        u = sorted(units[s])
        if u != list(range(1, len(u) + 1)):
            raise CheckpointError(f"{source}: block{s} has units {u}, not numbered unit1..unitN")
        layers.append(len(u))
    # width / 64 is exact in binary floating point, so the official int(64 * width_factor) gives `width` back
    return resnet_config({"num_layers": layers, "width_factor": width / 64})


def _known_name(cfg: ViTConfig) -> str:
    # Name the model after the official table when the architecture is one of them.
    matches = [n for n in list_models() if not arch_diff(get_config(n), cfg, SHAPE_FIELDS)]
    for n in matches:
        if get_config(n).classifier == cfg.classifier:
            return n
    return matches[0] if matches else "custom"


def infer_config(arrays: Mapping[str, np.ndarray], source: str, **hints: Any) -> ViTConfig:
    """The :class:`ViTConfig` an official parameter tree describes; ``hints`` fill in the rest."""
    resnet = _infer_resnet(arrays, source)
    has_tf = any(k.startswith("Transformer/") for k in arrays)
    classifier = hints.pop("classifier", None)
    head_k = arrays.get("head/kernel")
    if head_k is not None and head_k.ndim != 2:
        raise CheckpointError(f"{source}: head/kernel has shape {_shape(head_k)}; expected (features, classes)")
    num_classes = int(head_k.shape[1]) if head_k is not None else 0
    if "embedding/kernel" not in arrays and not has_tf:
        if resnet is None:
            some = ", ".join(sorted(arrays)[:8])
            raise CheckpointError(
                f"{source}: not an official ViT/BiT .npz: no embedding/kernel, Transformer/* or conv_root/kernel "
                f"(found {len(arrays)} tensors: {some}{', ...' if len(arrays) > 8 else ''})"
            )
        in_chans = int(arrays["conv_root/kernel"].shape[2])
        told = dict(transformer=False, resnet=resnet, num_classes=num_classes, in_chans=in_chans)
        return _config(told, {**PLAIN_RESNET, "name": "custom"}, hints, source)

    emb = _need(arrays, "embedding/kernel", source, 4)
    ph, pw, _, hidden = (int(s) for s in emb.shape)
    in_chans = int(arrays["conv_root/kernel"].shape[2]) if resnet is not None else int(emb.shape[2])
    blocks = sorted({int(m.group(1)) for k in arrays if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
    if not blocks:
        raise CheckpointError(f"{source}: no Transformer/encoderblock_* tensors; not a ViT checkpoint")
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"{source}: encoder blocks {blocks} are not numbered 0..N-1 (missing blocks?)")
    _, mha, _, mlp = _block_names(arrays, source)
    q = _need(arrays, f"Transformer/encoderblock_0/{mha}/query/kernel", source, 3)
    heads = int(q.shape[1])
    if q.shape[0] != hidden or q.shape[1] * q.shape[2] != hidden:
        raise CheckpointError(
            f"{source}: query kernel {_shape(q)} does not fit hidden size {hidden} "
            "(vitkit needs heads x head_dim == hidden size)"
        )
    mlp_dim = int(_need(arrays, f"Transformer/encoderblock_0/{mlp}/Dense_0/kernel", source, 2).shape[1])

    has_cls = "cls" in arrays
    if classifier is None:
        classifier = "token" if has_cls else "gap"
    elif why := class_token_mismatch(classifier, has_cls):
        raise CheckpointError(
            f"{source}: {why}, but the file {'has one (cls)' if has_cls else 'has none (no cls tensor)'}"
        )
    rep = int(arrays["pre_logits/kernel"].shape[1]) if "pre_logits/kernel" in arrays else None

    pos = arrays.get(POSEMB, arrays.get("pos_embedding"))
    if pos is None:
        raise CheckpointError(f"{source}: missing tensor {POSEMB!r} (learned position embeddings)")
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != hidden:
        raise CheckpointError(f"{source}: position embeddings have shape {_shape(pos)}; expected (1, N, {hidden})")
    try:
        side, _ = posemb_grid(int(pos.shape[1]), has_cls)  # a class token's row may be absent (big_vision)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    reduction = resnet.reduction if resnet is not None else 1
    image = (side * ph * reduction, side * pw * reduction)
    told = dict(
        patch_size=(ph, pw), hidden_size=hidden, mlp_dim=mlp_dim, num_heads=heads, num_layers=len(blocks),
        representation_size=rep, num_classes=num_classes, image_size=image, in_chans=in_chans, resnet=resnet,
    )
    return _config(told, dict(name="custom", classifier=classifier), hints, source)


def _config(told: dict[str, Any], rest: dict[str, Any], hints: Mapping[str, Any], source: str) -> ViTConfig:
    """Config from what the file tells, the reader's choices (``rest``) and hints; a hint may not contradict the
    file."""
    for k, _, _ in arch_diff(hints, told, [k for k in hints if k in told])[:1]:
        raise CheckpointError(f"{source}: {k}={hints[k]!r} contradicts the checkpoint, which has {k}={told[k]!r}")
    fields = {**rest, **told, **hints}
    cfg = parse_config(fields, source, what="config inferred from the .npz")
    return cfg if "name" in hints else cfg.replace(name=_known_name(cfg))


def params_to_model(arrays: Mapping[str, np.ndarray], source: str, verify: bool = True, **hints: Any) -> nn.Module:
    """Build the model an official parameter tree describes and load it (strictly).

    The architecture is inferred from the shapes and checked against every array on the ``meta``
    device; memory is only allocated for the converted weights (``verify``: also refuse NaN/inf).
    """
    arrays = _normalise_keys(dict(arrays), source)
    check_dtypes({k: v.dtype for k, v in arrays.items()}, source)
    cfg = infer_config(arrays, source, **hints)
    if "pos_embedding" in arrays and POSEMB not in arrays:
        arrays[POSEMB] = arrays.pop("pos_embedding")
    if cfg.has_class_token and POSEMB in arrays:
        pos = arrays[POSEMB]
        if pos.shape[1] == cfg.num_tokens - 1:
            # big_vision adds position embeddings before prepending the class token: a zero row
            # for the class token computes the same thing.
            arrays[POSEMB] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    naming = _block_names(arrays, source) if cfg.transformer else RELEASED
    model = meta_model(cfg)
    ours = model.state_dict()
    rules = layout_rules(cfg, list(ours), naming)
    heads = cfg.num_heads
    expected: dict[str, tuple[int, ...]] = {}
    for k, (kind, names) in rules.items():
        for name, shape in zip(names, official_shapes(kind, tuple(ours[k].shape), heads)):
            expected[name] = shape

    def file_shape(name: str) -> tuple[int, ...]:
        a = arrays[name]
        # GroupNorm parameters are stored as (C,) or (1, 1, 1, C) depending on the Flax version.
        return (a.size,) if _GN_RE.search(name) and a.ndim == 4 and a.shape[:3] == (1, 1, 1) else tuple(a.shape)

    check_state_dict(
        source, expected, {n: file_shape(n) for n in arrays},
        header=f"checkpoint does not match the architecture inferred from it ({cfg.name}: "
               f"hidden {cfg.hidden_size}, {cfg.num_layers} blocks, {cfg.num_heads} heads, mlp {cfg.mlp_dim})",
    )

    state = {}
    for k, (kind, names) in rules.items():
        arrs = [arrays[n].reshape(expected[n]) for n in names]
        state[k] = torch.from_numpy(np.ascontiguousarray(from_flax(kind, arrs))).to(ours[k].dtype)
    if verify:
        check_finite(state, source)
    return materialise(model, state, source)


def model_to_params(model: nn.Module, naming: str = "released") -> dict[str, np.ndarray]:
    """The official parameter tree of ``model`` (flattened, ``/``-separated), as float32 NumPy."""
    if naming not in NAMINGS:
        raise ValueError(f"naming={naming!r}; expected one of {sorted(NAMINGS)}")
    cfg: ViTConfig = model.config  # type: ignore[assignment]
    if cfg.norm_after_pool:
        raise CheckpointError(
            f"{cfg.name}: the final LayerNorm is applied after pooling (a timm fc_norm model); the official "
            "model applies it before pooling, so this model has no exact official .npz form"
        )
    if cfg.gelu != "tanh" or cfg.layer_norm_eps != 1e-6:
        raise CheckpointError(
            f"{cfg.name}: gelu={cfg.gelu!r}, layer_norm_eps={cfg.layer_norm_eps}; the official model computes "
            "tanh GELU with LayerNorm eps 1e-6, so an .npz of these weights would compute something else"
        )
    if cfg.stem_channels:
        raise CheckpointError(
            f"{cfg.name}: stem_channels={cfg.stem_channels}: the official model has no convolutional stem, so an "
            ".npz of these weights would be read back as a different network: save as .safetensors"
        )
    state = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in model.state_dict().items()}
    rules = layout_rules(cfg, list(state), NAMINGS[naming])
    out: dict[str, np.ndarray] = {}
    for k, (kind, names) in rules.items():
        for name, arr in zip(names, to_flax(kind, state[k], cfg.num_heads)):
            out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


# -- format entry points -----------------------------------------------------------------------
def read_npz(path: str | os.PathLike[str], verify: bool = True, **hints: Any) -> nn.Module:
    model = params_to_model(read_arrays(path), str(path), verify, **hints)
    names = None if hints.get("class_names") else read_class_names(path, model.config.num_classes)
    if names:
        model.config = model.config.replace(class_names=names)
    return model


def save_npz(model: nn.Module, path: str | os.PathLike[str], naming: str = "released") -> Path:
    """Write ``model`` as an official ``.npz`` (atomically). ``naming``: ``released`` or ``linen``."""
    path = Path(path)
    params = model_to_params(model, naming)
    buf = io.BytesIO()
    np.savez(buf, **params)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    write_class_names(path, model.config.class_names)  # the .npz has no place for them
    return path


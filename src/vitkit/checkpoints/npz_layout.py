"""The mapping between vitkit's state dict and the official Flax parameter tree: which official arrays each of
our tensors becomes (:func:`layout_rules`), their shapes, and the layout changes both ways (conv kernels OIHW
<-> HWIO, dense (out, in) <-> (in, out), the fused qkv <-> per-head query/key/value). Pure array code, shared
by the ``.npz`` reader and writer (:mod:`.official_npz`)."""

from __future__ import annotations

import numpy as np

from ..models.config import ViTConfig
from .errors import CheckpointError

POSEMB = "Transformer/posembed_input/pos_embedding"


def layout_rules(
    cfg: ViTConfig, our_keys: list[str], naming: tuple[str, str, str, str]
) -> dict[str, tuple[str, list[str]]]:
    """our key -> (kind, official keys). Kinds: conv, dense, vec, raw, qkv_w, qkv_b, out_w."""
    ln1, mha, ln2, mlp = naming
    norm_leaf = {"weight": "scale", "bias": "bias"}
    rules: dict[str, tuple[str, list[str]]] = {}
    for k in our_keys:
        parts = k.split(".")
        leaf = parts[-1]
        if parts[0] == "resnet":
            if parts[1] in ("conv_root", "gn_root"):
                base = parts[1]
            else:  # resnet.stages.S.U.name.leaf
                base = f"block{int(parts[2]) + 1}/unit{int(parts[3]) + 1}/{parts[4]}"
            if base.rsplit("/", 1)[-1].startswith("conv"):
                rules[k] = ("conv", [f"{base}/kernel"])
            else:
                rules[k] = ("vec", [f"{base}/{norm_leaf[leaf]}"])
        elif k == "embedding.weight":
            rules[k] = ("conv", ["embedding/kernel"])
        elif k == "embedding.bias":
            rules[k] = ("vec", ["embedding/bias"])
        elif k == "cls":
            rules[k] = ("raw", ["cls"])
        elif k == "pos_embedding":
            rules[k] = ("raw", [POSEMB])
        elif parts[0] == "blocks":
            b = f"Transformer/encoderblock_{int(parts[1])}"
            sub = ".".join(parts[2:-1])
            if sub in ("norm1", "norm2"):
                rules[k] = ("vec", [f"{b}/{ln1 if sub == 'norm1' else ln2}/{norm_leaf[leaf]}"])
            elif sub == "attn.qkv":
                kind, name = ("qkv_w", "kernel") if leaf == "weight" else ("qkv_b", "bias")
                rules[k] = (kind, [f"{b}/{mha}/{t}/{name}" for t in ("query", "key", "value")])
            elif sub == "attn.proj":
                if leaf == "weight":
                    rules[k] = ("out_w", [f"{b}/{mha}/out/kernel"])
                else:
                    rules[k] = ("vec", [f"{b}/{mha}/out/bias"])
            elif sub in ("mlp.fc1", "mlp.fc2"):
                d = f"{b}/{mlp}/Dense_{0 if sub == 'mlp.fc1' else 1}"
                rules[k] = ("dense", [f"{d}/kernel"]) if leaf == "weight" else ("vec", [f"{d}/bias"])
            else:
                raise CheckpointError(f"no official .npz name for parameter {k}")
        elif parts[0] == "norm":
            rules[k] = ("vec", [f"Transformer/encoder_norm/{norm_leaf[leaf]}"])
        elif parts[0] in ("pre_logits", "head"):
            rules[k] = ("dense", [f"{parts[0]}/kernel"]) if leaf == "weight" else ("vec", [f"{parts[0]}/bias"])
        else:
            raise CheckpointError(f"no official .npz name for parameter {k}")
    return rules


def official_shapes(kind: str, shape: tuple[int, ...], heads: int) -> list[tuple[int, ...]]:
    if kind == "conv":
        o, i, h, w = shape
        return [(h, w, i, o)]
    if kind == "dense":
        return [(shape[1], shape[0])]
    if kind == "out_w":
        d, hd = shape[0], shape[1] // heads
        return [(heads, hd, d)]
    if kind == "qkv_w":
        d = shape[1]
        return [(d, heads, d // heads)] * 3
    if kind == "qkv_b":
        d = shape[0] // 3
        return [(heads, d // heads)] * 3
    return [tuple(shape)]


def to_flax(kind: str, t: np.ndarray, heads: int) -> list[np.ndarray]:
    if kind == "conv":
        return [t.transpose(2, 3, 1, 0)]
    if kind == "dense":
        return [t.T]
    if kind == "out_w":
        d = t.shape[0]
        return [t.T.reshape(heads, d // heads, d)]
    if kind == "qkv_w":
        d = t.shape[1]
        return [t[i * d:(i + 1) * d].T.reshape(d, heads, d // heads) for i in range(3)]
    if kind == "qkv_b":
        d = t.shape[0] // 3
        return [t[i * d:(i + 1) * d].reshape(heads, d // heads) for i in range(3)]
    return [t]


def from_flax(kind: str, arrs: list[np.ndarray]) -> np.ndarray:
    a = arrs[0]
    if kind == "conv":
        return a.transpose(3, 2, 0, 1)
    if kind == "dense":
        return a.T
    if kind == "out_w":
        return a.reshape(-1, a.shape[-1]).T
    if kind == "qkv_w":
        return np.concatenate([x.reshape(x.shape[0], -1).T for x in arrs], axis=0)
    if kind == "qkv_b":
        return np.concatenate([x.reshape(-1) for x in arrs], axis=0)
    return a

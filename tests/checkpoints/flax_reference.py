"""An independent NumPy (float64) re-implementation of the official Flax ViT forward pass.

It works directly on the flattened parameter tree of an official ``.npz`` (NHWC activations,
Flax kernel layouts), written from ``vit_jax/models_vit.py`` and ``vit_jax/models_resnet.py``,
sharing no code with vitkit. It lets the tests check the numerical contract without JAX.

Also here: ``make_official_params``, which writes a random parameter tree in the official
layout straight from the module structure of the Flax code (again without vitkit), in either
naming generation, so the readers are tested on files vitkit did not write.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.ndimage

# -- the parameter tree --------------------------------------------------------------------------


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.asarray(value, dtype=np.float64)
    return tree


def convert_pre_linen(tree: dict) -> dict:
    """Renumber ``Class_N`` submodules per class in natural order (as flax's convert_pre_linen)."""
    if not isinstance(tree, dict):
        return tree

    def natural(s: str) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]

    out, counters = {}, {}
    for name in sorted(tree, key=natural):
        m = re.fullmatch(r"(.*)_\d+", name)
        new = name
        if m:
            cls = m.group(1)
            new = f"{cls}_{counters.get(cls, 0)}"
            counters[cls] = counters.get(cls, 0) + 1
        out[new] = convert_pre_linen(tree[name])
    return out


# -- layers ----------------------------------------------------------------------------------------


def layer_norm(x: np.ndarray, p: dict, eps: float = 1e-6) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def dense(x: np.ndarray, p: dict) -> np.ndarray:
    return x @ p["kernel"] + p["bias"]


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    # lax 'SAME': output ceil(size / s); the extra padding goes after.
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def conv(x: np.ndarray, kernel: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """NHWC x HWIO convolution (no bias)."""
    kh, kw = kernel.shape[:2]
    if padding == "SAME":
        x = np.pad(x, ((0, 0), _same_pads(x.shape[1], kh, stride), _same_pads(x.shape[2], kw, stride), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", win, kernel, optimize=True)


def max_pool_same(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
    x = np.pad(x, ((0, 0), _same_pads(x.shape[1], k, s), _same_pads(x.shape[2], k, s), (0, 0)),
               constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win.max(axis=(-2, -1))


def std_conv(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    w = kernel - kernel.mean(axis=(0, 1, 2))
    w = w / (w.std(axis=(0, 1, 2)) + 1e-5)
    return conv(x, w, stride, "SAME")


def group_norm(x: np.ndarray, p: dict, groups: int = 32, eps: float = 1e-6) -> np.ndarray:
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mu = g.mean(axis=(1, 2, 4), keepdims=True)
    var = ((g - mu) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    g = (g - mu) / np.sqrt(var + eps)
    return g.reshape(n, h, w, c) * p["scale"].reshape(-1) + p["bias"].reshape(-1)


def residual_unit(x: np.ndarray, p: dict, stride: int) -> np.ndarray:
    features = p["conv1"]["kernel"].shape[-1]
    residual = x
    if x.shape[-1] != features * 4 or stride != 1:
        residual = group_norm(std_conv(x, p["conv_proj"]["kernel"], stride), p["gn_proj"])
    y = np.maximum(group_norm(std_conv(x, p["conv1"]["kernel"], 1), p["gn1"]), 0)
    y = np.maximum(group_norm(std_conv(y, p["conv2"]["kernel"], stride), p["gn2"]), 0)
    y = group_norm(std_conv(y, p["conv3"]["kernel"], 1), p["gn3"])
    return np.maximum(residual + y, 0)


def attention(x: np.ndarray, p: dict) -> np.ndarray:
    q = np.einsum("btd,dhk->bthk", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("btd,dhk->bthk", x, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("btd,dhk->bthk", x, p["value"]["kernel"]) + p["value"]["bias"]
    q = q / np.sqrt(q.shape[-1])
    logits = np.einsum("bqhk,bthk->bhqt", q, k)
    logits = logits - logits.max(-1, keepdims=True)
    w = np.exp(logits)
    w = w / w.sum(-1, keepdims=True)
    out = np.einsum("bhqt,bthk->bqhk", w, v)
    return np.einsum("bqhk,hkd->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


# -- the model -------------------------------------------------------------------------------------


def forward(flat_params: dict[str, np.ndarray], images_nhwc: np.ndarray, classifier: str) -> np.ndarray:
    """Logits of the official ``VisionTransformer`` (inference) for a flat official tree."""
    p = convert_pre_linen(unflatten(flat_params))
    x = np.asarray(images_nhwc, dtype=np.float64)
    if "conv_root" in p:
        x = std_conv(x, p["conv_root"]["kernel"], 2)
        x = np.maximum(group_norm(x, p["gn_root"]), 0)
        x = max_pool_same(x)
        s = 1
        while f"block{s}" in p:
            stage = p[f"block{s}"]
            u = 1
            while f"unit{u}" in stage:
                x = residual_unit(x, stage[f"unit{u}"], (1 if s == 1 else 2) if u == 1 else 1)
                u += 1
            s += 1
    patch = p["embedding"]["kernel"].shape[0]  # square patches: kernel = stride = patch size
    x = conv(x, p["embedding"]["kernel"], patch, "VALID") + p["embedding"]["bias"]
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c)
    if classifier in ("token", "token_unpooled"):
        x = np.concatenate([np.tile(p["cls"], (n, 1, 1)), x], axis=1)
    t = p["Transformer"]
    x = x + t["posembed_input"]["pos_embedding"]
    i = 0
    while f"encoderblock_{i}" in t:
        b = t[f"encoderblock_{i}"]
        y = attention(layer_norm(x, b["LayerNorm_0"]), b["MultiHeadDotProductAttention_0"])
        x = x + y
        y = layer_norm(x, b["LayerNorm_1"])
        y = dense(gelu_tanh(dense(y, b["MlpBlock_0"]["Dense_0"])), b["MlpBlock_0"]["Dense_1"])
        x = x + y
        i += 1
    x = layer_norm(x, t["encoder_norm"])
    if classifier == "token":
        x = x[:, 0]
    elif classifier == "gap":
        x = x.mean(axis=1)
    if "pre_logits" in p:
        x = np.tanh(dense(x, p["pre_logits"]))
    if "head" in p:
        x = dense(x, p["head"])
    return x


def resample_posemb_official(posemb: np.ndarray, num_prefix: int, gs_new: int) -> np.ndarray:
    """``load_pretrained``'s position-embedding resize (scipy zoom, order 1)."""
    tok, grid = posemb[:, :num_prefix], posemb[0, num_prefix:]
    gs_old = int(np.sqrt(len(grid)))
    grid = grid.reshape(gs_old, gs_old, -1)
    grid = scipy.ndimage.zoom(grid, (gs_new / gs_old, gs_new / gs_old, 1), order=1)
    return np.concatenate([tok, grid.reshape(1, gs_new * gs_new, -1)], axis=1)


# -- random official parameter trees --------------------------------------------------------------

RELEASED = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")


def make_official_params(
    seed: int = 0, *, hidden: int = 32, layers: int = 2, heads: int = 4, mlp: int = 64, patch: int = 4,
    in_chans: int = 3, grid: int = 4, classifier: str = "token", rep: int | None = None, num_classes: int = 5,
    resnet: tuple[int, ...] | None = None, width: int = 64, naming: str = "released", gn_4d: bool = False,
) -> dict[str, np.ndarray]:
    """Random float32 parameters with the names and shapes the official Flax modules create."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}

    def kern(key: str, shape: tuple[int, ...], fan_in: int) -> None:
        out[key] = rng.normal(0, 1 / np.sqrt(fan_in), shape).astype(np.float32)

    def vec(key: str, shape: tuple[int, ...], mean: float = 0.0, std: float = 0.1) -> None:
        out[key] = (mean + rng.normal(0, std, shape)).astype(np.float32)

    def gn(key: str, c: int) -> None:
        shape = (1, 1, 1, c) if gn_4d else (c,)
        vec(f"{key}/scale", shape, 1.0)
        vec(f"{key}/bias", shape)

    c = in_chans
    if resnet is not None:
        kern("conv_root/kernel", (7, 7, c, width), 49 * c)
        gn("gn_root", width)
        c = width
        for s, units in enumerate(resnet, 1):
            f = width * 2 ** (s - 1)
            for u in range(1, units + 1):
                pre = f"block{s}/unit{u}"
                if u == 1:
                    kern(f"{pre}/conv_proj/kernel", (1, 1, c, 4 * f), c)
                    gn(f"{pre}/gn_proj", 4 * f)
                kern(f"{pre}/conv1/kernel", (1, 1, c, f), c)
                gn(f"{pre}/gn1", f)
                kern(f"{pre}/conv2/kernel", (3, 3, f, f), 9 * f)
                gn(f"{pre}/gn2", f)
                kern(f"{pre}/conv3/kernel", (1, 1, f, 4 * f), f)
                gn(f"{pre}/gn3", 4 * f)
                c = 4 * f
    kern("embedding/kernel", (patch, patch, c, hidden), patch * patch * c)
    vec("embedding/bias", (hidden,))
    prefix = 1 if classifier in ("token", "token_unpooled") else 0
    if prefix:
        vec("cls", (1, 1, hidden), std=0.5)
    vec("Transformer/posembed_input/pos_embedding", (1, grid * grid + prefix, hidden), std=0.3)
    ln1, mha, ln2, mlpb = RELEASED if naming == "released" else LINEN
    hd = hidden // heads
    for i in range(layers):
        b = f"Transformer/encoderblock_{i}"
        vec(f"{b}/{ln1}/scale", (hidden,), 1.0)
        vec(f"{b}/{ln1}/bias", (hidden,))
        for t in ("query", "key", "value"):
            kern(f"{b}/{mha}/{t}/kernel", (hidden, heads, hd), hidden)
            vec(f"{b}/{mha}/{t}/bias", (heads, hd))
        kern(f"{b}/{mha}/out/kernel", (heads, hd, hidden), hidden)
        vec(f"{b}/{mha}/out/bias", (hidden,))
        vec(f"{b}/{ln2}/scale", (hidden,), 1.0)
        vec(f"{b}/{ln2}/bias", (hidden,))
        kern(f"{b}/{mlpb}/Dense_0/kernel", (hidden, mlp), hidden)
        vec(f"{b}/{mlpb}/Dense_0/bias", (mlp,))
        kern(f"{b}/{mlpb}/Dense_1/kernel", (mlp, hidden), mlp)
        vec(f"{b}/{mlpb}/Dense_1/bias", (hidden,))
    vec("Transformer/encoder_norm/scale", (hidden,), 1.0)
    vec("Transformer/encoder_norm/bias", (hidden,))
    feat = hidden
    if rep:
        kern("pre_logits/kernel", (hidden, rep), hidden)
        vec("pre_logits/bias", (rep,))
        feat = rep
    if num_classes:
        kern("head/kernel", (feat, num_classes), feat)
        vec("head/bias", (num_classes,))
    return out

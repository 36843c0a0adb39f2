"""``vitkit analyze --html``: the Section 4.5 analyses as one self-contained, interactive HTML page.

The numbers come from the same functions as the PNG figures (:func:`collect_attention_stats` for the rollout
and the mean attention distance, :func:`posemb_similarity`, :func:`embedding_pca`); this module only packs
them for the page: the page's markup and script are package data (``explorer.html``, ``explorer.js``) and the
data goes inline as JSON, so the file opens from disk with no network.

Size: a ViT-B/16 at 224 px has 12 layers x 12 heads x 197 x 196 attention weights per image. Each query's map
(one head, one layer, one image) is stored as uint8 scaled to its own maximum (the page shows every map
relative to its maximum anyway) plus that maximum as float32 and the weight on the class token as uint8.
Without ``layers``, as many layers as fit in ``max_bytes`` are kept, spread over the depth and always with the
last one; the page and the returned summary say which.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .figures import (
    _to_display,
    check_analyzable,
    check_images,
    collect_attention_stats,
    embedding_pca,
    filters_rgb,
    posemb_similarity,
)

MAX_BYTES = 10_000_000  # the page's budget: ViT-B/16 at 224 px with 4 images must fit (issue 33)
TOP_K = 5
COLORMAP = "viridis"  # the PNG figures' colour map for the attention distance and posemb similarity


def _b64(a: np.ndarray) -> str:
    # Little-endian as the page's typed arrays read it on every machine a browser runs on.
    dtype = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _b64_len(nbytes: int) -> int:
    return 4 * math.ceil(nbytes / 3)


def _png(rgb: np.ndarray) -> str:
    """(H, W, 3) in [0, 1] -> a PNG data URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(rgb * 255).clip(0, 255).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_layers(text: str, num_layers: int) -> list[int]:
    """``--layers``: "all" or comma-separated 1-based layer numbers (ranges "3-5" allowed) -> sorted 0-based."""
    if text.strip().lower() == "all":
        return list(range(num_layers))
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise UserError(f"--layers {text!r}: expected 'all' or numbers like 1,6,12 or 10-12") from None
        if not 1 <= a <= b <= num_layers:
            raise UserError(f"--layers {text!r}: layers are numbered 1 to {num_layers} for this model")
        out.update(range(a - 1, b))
    return sorted(out)


def spread_layers(num_layers: int, count: int) -> list[int]:
    """``count`` 0-based layers spread evenly over the depth, the last always among them."""
    count = min(count, num_layers)
    if count <= 1:
        return [num_layers - 1] if count == 1 else []
    return sorted({round(i * (num_layers - 1) / (count - 1)) for i in range(count)})


def _quantise(att: torch.Tensor, prefix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, heads, T, T) probabilities -> uint8 maps over the patch keys scaled to each row's maximum, that maximum
    (float32) and the weight on the prefix (class) tokens (uint8, of 1), all per (image, head, query)."""
    patches = att[..., prefix:].double()
    scale = patches.amax(dim=-1, keepdim=True).clamp_min(1e-30)
    q = torch.round(patches / scale * 255).to(torch.uint8).numpy()
    to_prefix = torch.round(att[..., :prefix].double().sum(-1) * 255).clamp(0, 255).to(torch.uint8).numpy()
    return q, scale[..., 0].float().numpy(), to_prefix


def _class_name(cfg: Any, k: int) -> str:
    names = cfg.class_names
    return str(names[k]) if names and 0 <= k < len(names) else str(k)


@torch.no_grad()
def explorer_data(
    model: nn.Module,
    images: torch.Tensor,
    *,
    labels: Sequence[str | None] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """The page's data for ``images`` ((N, C, H, W), normalised as the model expects): ``layers`` are 0-based
    layer indices whose per-head attention is stored (None: as many as fit in ``max_bytes``)."""
    from ..evaluate.core import predict_probabilities

    check_analyzable(model)
    cfg = model.config
    check_images(images, labels)
    model.eval()
    num_layers, heads = len(model.blocks), cfg.num_heads
    prefix, side = cfg.num_prefix_tokens, cfg.grid_size[0]
    tokens, patches = prefix + side * side, side * side
    shown = _to_display(images, cfg.mean, cfg.std)
    data: dict[str, Any] = {
        "model": cfg.name, "image_size": list(images.shape[-2:]), "grid": side, "prefix": prefix,
        "pixels_per_token": list(cfg.stride), "num_layers": num_layers, "heads": heads, "notes": [],
    }
    probs = None if cfg.num_classes <= 0 else torch.cat([  # fp32: the precision of the analyses' forward passes
        predict_probabilities(model, images[s : s + batch_size], precision="fp32")
        for s in range(0, len(images), batch_size)])
    data["images"] = []
    for i in range(len(images)):
        entry: dict[str, Any] = {"src": _png(shown[i]), "true": None if labels is None else labels[i]}
        if probs is not None:
            vals, idx = probs[i].topk(min(TOP_K, probs.shape[1]))
            entry["top"] = [{"name": _class_name(cfg, int(k)), "p": round(float(v), 5)} for v, k in zip(vals, idx)]
        data["images"].append(entry)

    sim = posemb_similarity(model).numpy()
    data["posemb"] = _b64(np.round((sim.clip(-1, 1) + 1) / 2 * 255).astype(np.uint8))
    try:
        comps, ratio = embedding_pca(model)
    except UserError as e:
        data["filters"] = {"skipped": str(e)}
    else:
        rgb = filters_rgb(comps.numpy())
        data["filters"] = {"k": int(rgb.shape[0]), "h": int(rgb.shape[1]), "w": int(rgb.shape[2]),
                           "rgb": _b64(np.round(rgb * 255).astype(np.uint8)),
                           "ratio": [round(float(r), 5) for r in ratio]}
    from matplotlib import colormaps

    data["cmap"] = _b64(np.round(colormaps[COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8))

    per_layer = len(images) * heads * tokens
    layer_bytes = _b64_len(per_layer * patches) + _b64_len(per_layer * 4) + _b64_len(per_layer)
    if layers is None:
        rest = len(_template()) + len(json.dumps(data)) + 100_000  # the numbers still to add (rollout, distance)
        layers = spread_layers(num_layers, (max_bytes - rest) // layer_bytes)
        if len(layers) < num_layers:
            data["notes"].append(f"per-head attention of {len(layers)} of {num_layers} layers (the ones that fit "
                                 f"in {max_bytes / 1e6:.0f} MB); choose others with --layers")
    keep = sorted(set(int(i) for i in layers))
    if any(not 0 <= i < num_layers for i in keep):
        raise UserError(f"layers {[i + 1 for i in keep]}: this model's layers are numbered 1 to {num_layers}")
    data["layers"] = [i + 1 for i in keep]
    # (image, stored layer, head, query[, key]) arrays, filled one chunk of images at a time by the same forward
    # pass that gives the rollout and the attention distance.
    q = np.zeros((len(images), len(keep), heads, tokens, patches), np.uint8)
    scale = np.zeros((len(images), len(keep), heads, tokens), np.float32)
    to_prefix = np.zeros((len(images), len(keep), heads, tokens), np.uint8)
    start = 0

    def store(atts: list[torch.Tensor]) -> None:
        nonlocal start
        n = atts[0].shape[0]
        for j, layer in enumerate(keep):
            qj, sj, pj = _quantise(atts[layer], prefix)
            q[start : start + n, j], scale[start : start + n, j], to_prefix[start : start + n, j] = qj, sj, pj
        start += n

    rollout, dist = collect_attention_stats(model, images, batch_size, on_batch=store)
    data["attention"] = {"q": _b64(q), "scale": _b64(scale), "prefix": _b64(to_prefix)}
    for entry, r in zip(data["images"], rollout.numpy()):
        entry["rollout"] = [float(f"{v:.5g}") for v in r]
    data["distance"] = [[round(float(v), 3) for v in row] for row in dist.numpy()]
    return data


def _template() -> str:
    pkg = resources.files("vitkit.analysis")
    html = pkg.joinpath("explorer.html").read_text(encoding="utf-8")
    return html.replace("/*EXPLORER_JS*/", pkg.joinpath("explorer.js").read_text(encoding="utf-8"))


def render_html(data: dict[str, Any]) -> str:
    """The page for ``data`` (from :func:`explorer_data`): markup, script and data in one string."""
    # "</" inside a <script> would end it early (a class name could hold "</script>"); "<\/" is the same JSON.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _template().replace("/*EXPLORER_DATA*/", payload)


def write_explorer(
    model: nn.Module,
    images: torch.Tensor,
    path: str | Path,
    *,
    labels: Sequence[str | None] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """Write the explorer page to ``path``; return ``{"html", "bytes", "layers", "notes"}`` (layers 1-based)."""
    data = explorer_data(model, images, labels=labels, layers=layers, batch_size=batch_size, max_bytes=max_bytes)
    text = render_html(data)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    size = len(text.encode("utf-8"))
    notes = list(data["notes"])
    if size > max_bytes:
        notes.append(f"{size / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB budget: store fewer layers "
                     "(--layers) or images (--num-images)")
    return {"html": str(out), "bytes": size, "layers": data["layers"], "notes": notes}

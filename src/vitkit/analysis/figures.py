"""The paper's Section 4.5 analyses as PNG files plus the numbers behind them as JSON.

* ``rollout.png``: attention rollout shown over the input images (Figure 6);
* ``attention_distance.png``: mean attention distance per head against depth (Figure 7, right);
* ``posemb_similarity.png``: cosine similarity of each position embedding with all others,
  one small map per patch position (Figure 7, centre);
* ``embedding_filters.png``: the first principal components of the patch-embedding filters
  (Figure 7, left). Not applicable to hybrids, whose embedding is a 1x1 convolution over ResNet
  channels rather than a filter over pixels; that figure is skipped with a message.

Figures are drawn with matplotlib's object API (``Figure``; no pyplot, no global backend state).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .attention import attention_rollout, mean_attention_distance


def check_images(images: torch.Tensor, labels: Sequence[str] | None) -> None:
    """The analyses' input: a non-empty (N, C, H, W) batch, and one true label per image when labels are given."""
    if images.dim() != 4 or images.shape[0] == 0:
        raise UserError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    if labels is not None and len(labels) != len(images):
        raise UserError(f"labels: {len(labels)} given for {len(images)} images")


def check_analyzable(model: nn.Module) -> None:
    """ValueError with a clear message unless ``model`` is a ViT/hybrid with a square patch grid."""
    cfg = model.config
    if not cfg.transformer or not hasattr(model, "get_attention_maps") or not hasattr(model, "pos_embedding"):
        raise UserError(
            f"model {cfg.name!r} is a ResNet (BiT) without attention: attention rollout, attention distance, "
            "position embeddings and patch-embedding filters are only defined for ViT and hybrid models"
        )
    gh, gw = cfg.grid_size
    if gh != gw:
        raise UserError(f"the analyses need a square patch grid; model {cfg.name!r} has a {gh}x{gw} grid")


@torch.no_grad()
def collect_attention_stats(
    model: nn.Module, images: torch.Tensor, batch_size: int = 8,
    on_batch: Callable[[list[torch.Tensor]], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rollout (N, patches), mean attention distance (layers, heads)) over ``images``.

    Processed in chunks so that the per-layer (B, heads, T, T) maps of large models fit in memory;
    the distance is averaged over all images (each chunk weighted by its size). ``on_batch`` sees each chunk's
    per-layer maps (the HTML explorer keeps them, quantised, from the same forward pass).
    """
    check_analyzable(model)
    cfg = model.config
    model.eval()
    rollouts, dist_sum, n = [], None, 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        atts = [a.float() for a in model.get_attention_maps(x)]
        if on_batch is not None:
            on_batch(atts)
        rollouts.append(attention_rollout(atts, cfg.num_prefix_tokens))
        d = mean_attention_distance(atts, cfg.stride, cfg.num_prefix_tokens).double() * len(x)
        dist_sum = d if dist_sum is None else dist_sum + d
        n += len(x)
    assert dist_sum is not None
    return torch.cat(rollouts), (dist_sum / n).float()


def posemb_similarity(model: nn.Module) -> torch.Tensor:
    """(patches, patches) cosine similarity between the patch position embeddings."""
    check_analyzable(model)
    pos = model.pos_embedding.detach()[0, model.config.num_prefix_tokens :].double()
    pos = F.normalize(pos, dim=-1)
    return (pos @ pos.T).float()


def embedding_pca(model: nn.Module, num_components: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """The first principal components of the patch-embedding filters and their explained variance ratio.

    Each of the D filters (C, p, p) is one sample; the samples are centred (standard PCA) and the
    eigenvectors of their covariance, largest eigenvalue first, are the components, returned as
    (k, C, p, p) (each defined up to sign).
    """
    check_analyzable(model)
    cfg = model.config
    if cfg.has_stem:
        stem = "a BiT ResNet stem (a hybrid)" if cfg.resnet is not None else \
            f"a convolutional stem of {len(cfg.stem_channels)} 3x3 convolutions"
        ph, pw = cfg.patch_size
        raise UserError(f"not applicable to {cfg.name}: its {ph}x{pw} patch embedding reads the output channels of "
                        f"{stem}, not pixels")
    w = model.embedding.weight.detach().double()  # (D, C, ph, pw)
    x = w.reshape(w.shape[0], -1).cpu().numpy()
    x = x - x.mean(axis=0, keepdims=True)
    # Eigen-decomposition of the smaller Gram matrix, in numpy: its LAPACK is several times faster
    # than torch's SVD on CPU for the 768x768 problem of ViT-B/16.
    n, d = x.shape
    if n >= d:
        evals, evecs = np.linalg.eigh(x.T @ x)
        evals, comps = evals[::-1], evecs[:, ::-1].T
    else:
        evals, u = np.linalg.eigh(x @ x.T)
        evals, u = evals[::-1], u[:, ::-1]
        comps = (x.T @ u / np.sqrt(np.maximum(evals, 1e-300))).T
    evals = np.maximum(evals, 0.0)
    k = min(num_components, int(np.count_nonzero(evals > evals[0] * 1e-12)) if evals[0] > 0 else 0, d)
    ratio = evals / max(evals.sum(), np.finfo(np.float64).tiny)
    comps = torch.from_numpy(np.ascontiguousarray(comps[:k])).reshape(k, *w.shape[1:])
    return comps.float(), torch.from_numpy(ratio[:k].copy()).float()


# -- drawing -----------------------------------------------------------------


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100)


def _to_display(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Normalised (N, C, H, W) -> displayable (N, H, W, 3) in [0, 1]."""
    c = images.shape[1]
    m = torch.tensor(mean[:c], dtype=torch.float32).view(1, c, 1, 1)
    s = torch.tensor(std[:c], dtype=torch.float32).view(1, c, 1, 1)
    x = (images.float() * s + m).clamp(0, 1)
    if c == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.permute(0, 2, 3, 1).numpy()


def _mosaic(tiles: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """(n, h, w[, c]) tiles -> one image with NaN gaps (drawn blank), ``cols`` tiles per row."""
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / cols)
    extra = tiles.shape[3:]
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *extra), np.nan, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[i]
    return out


def draw_rollout(images: np.ndarray, maps: np.ndarray, path: Path, titles: list[str] | None = None) -> Any:
    """Figure 6: each input image above the image multiplied by its rollout mask, with a colourbar for the
    mask (the rollout scaled to its maximum per image) and, per column, ``titles[i]`` (predicted / true class).
    Returns the figure (tests measure its layout)."""
    import textwrap

    n = len(images)
    h, w = images.shape[1:3]
    # Laid out in inches, not left to matplotlib: a 1.6 in cell per image in both rows (so both rows have the same
    # size), a left margin for the row labels, the colourbar in a column of its own beside the second row (it
    # overlaps no image), room above for the titles, wrapped to the cell, at 8 pt (readable at 100 dpi).
    titles = None if titles is None else ["\n".join(textwrap.fill(line, 24) for line in t.split("\n")) for t in titles]
    lines = max((t.count("\n") + 1 for t in titles), default=0) if titles else 0
    cell, gap, left, bar, right, row_gap = 1.6, 0.08, 0.35, 0.12, 0.75, 0.3
    top = 0.15 + 0.16 * lines
    cell_h = cell * h / w
    width, height = left + n * cell + (n - 1) * gap + 0.1 + bar + right, top + 2 * cell_h + row_gap + 0.1
    fig = _figure(width, height)

    def box(x: float, row: int, wide: float) -> tuple[float, float, float, float]:
        y = height - top - (row + 1) * cell_h - row * row_gap
        return x / width, y / height, wide / width, cell_h / height

    axes = [[fig.add_axes(box(left + i * (cell + gap), row, cell)) for i in range(n)] for row in range(2)]
    for i in range(n):
        m = torch.from_numpy(maps[i]).double()[None, None]
        m = m / m.max().clamp_min(1e-12)
        mask = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
        axes[0][i].imshow(images[i], interpolation="nearest")
        axes[1][i].imshow(images[i] * mask[..., None], interpolation="nearest")
        if titles is not None:
            axes[0][i].set_title(titles[i], fontsize=8)
        for ax in (axes[0][i], axes[1][i]):
            ax.set_axis_off()
    for row, label in enumerate(("input", "attention rollout")):
        axes[row][0].text(-0.04, 0.5, label, fontsize=8, rotation=90, ha="right", va="center",
                          transform=axes[row][0].transAxes)
    # The mask multiplies each pixel's brightness: the colourbar maps the rollout (scaled to its per-image
    # maximum) to that factor, black (no attention) to full brightness.
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = fig.add_axes(box(left + n * cell + (n - 1) * gap + 0.1, 1, bar))
    colourbar = fig.colorbar(ScalarMappable(Normalize(0, 1), "gray"), cax=cax)
    colourbar.set_label("rollout / its max", fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    fig.savefig(path)
    return fig


def draw_attention_distance(dist: np.ndarray, image_size: tuple[int, int], patch_size: tuple[int, int],
                            path: Path) -> None:
    """Figure 7 (right): one dot per head at each depth; the title states the image and patch size behind the
    pixel scale (the distances are in input pixels, so they scale with both); ``patch_size``: input pixels per
    token."""
    layers, heads = dist.shape
    fig = _figure(4.5, 3.8)
    ax = fig.subplots()
    for h in range(heads):
        ax.scatter(np.arange(1, layers + 1), dist[:, h], s=12, label=f"head {h + 1}")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_title(f"{image_size[0]}x{image_size[1]} px images, {patch_size[0]}x{patch_size[1]} px patches",
                 fontsize=8)
    ax.set_ylim(0, max(float(dist.max()) * 1.05, max(image_size) / 2))
    ax.set_xticks(np.arange(1, layers + 1))
    if heads <= 16:
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def draw_posemb_similarity(sim: np.ndarray, grid: tuple[int, int], path: Path) -> None:
    """Figure 7 (centre): one small map per patch position, laid out on the patch grid."""
    gh, gw = grid
    tiles = sim.reshape(gh * gw, gh, gw)
    mosaic = _mosaic(tiles, gw)
    fig = _figure(5.2, 4.4)
    ax = fig.subplots()
    im = ax.imshow(mosaic, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.set_xticks([(gw + 1) * j + gw / 2 - 0.5 for j in range(gw)], [str(j + 1) for j in range(gw)], fontsize=6)
    ax.set_yticks([(gh + 1) * i + gh / 2 - 0.5 for i in range(gh)], [str(i + 1) for i in range(gh)], fontsize=6)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    fig.tight_layout()
    fig.savefig(path)


def filters_rgb(components: np.ndarray) -> np.ndarray:
    """(k, C, p, p) principal components -> (k, p, p, 3) images in [0, 1], each component scaled to its own range;
    not RGB: the first input channel in grey."""
    k = len(components)
    comp = components.transpose(0, 2, 3, 1)  # (k, p, p, C)
    lo = comp.reshape(k, -1).min(axis=1).reshape(k, 1, 1, 1)
    hi = comp.reshape(k, -1).max(axis=1).reshape(k, 1, 1, 1)
    comp = (comp - lo) / np.maximum(hi - lo, 1e-12)
    if comp.shape[-1] != 3:
        comp = np.repeat(comp[..., :1], 3, axis=-1)
    return comp


def draw_filters(components: np.ndarray, path: Path) -> None:
    """Figure 7 (left): each principal component scaled to [0, 1] and shown as an image."""
    k = len(components)
    comp = filters_rgb(components)
    cols = min(7, k)
    mosaic = _mosaic(comp, cols)
    mosaic = np.where(np.isnan(mosaic), 1.0, mosaic)  # white gaps
    fig = _figure(1.0 + 0.8 * cols, 0.6 + 0.8 * math.ceil(k / cols))
    ax = fig.subplots()
    ax.imshow(mosaic, interpolation="nearest")
    kind = "RGB" if components.shape[1] == 3 else "grey (first channel)"
    ax.set_title(f"{kind} embedding filters (first principal components)", fontsize=8)
    ax.set_axis_off()
    fig.savefig(path)


@torch.no_grad()
def _class_titles(
    model: nn.Module, images: torch.Tensor, labels: Sequence[str | None] | None,
) -> tuple[list[str] | None, list[int] | None]:
    """("pred: NAME" / "true: NAME" lines per image, predicted indices); (None, None) for a model without a head
    and no labels. A label of None (unknown for that image) adds no line."""
    cfg = model.config
    names = cfg.class_names

    def name(i: int) -> str:
        return str(names[i]) if names and 0 <= i < len(names) else str(i)

    predicted = model(images).argmax(-1).tolist() if cfg.num_classes > 0 else None
    if predicted is None and labels is None:
        return None, None
    titles = []
    for i in range(len(images)):
        lines = [] if predicted is None else [f"pred: {name(predicted[i])}"]
        if labels is not None and labels[i] is not None:
            lines.append(f"true: {labels[i]}")
        titles.append("\n".join(lines))
    return titles, predicted


def write_figures(
    model: nn.Module,
    images: torch.Tensor,
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    num_components: int = 28,
    max_shown: int = 8,
    labels: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Write the four figures and ``analysis.json`` to ``out_dir``; return what the JSON holds.

    ``images``: (N, C, H, W) float, normalised as the model expects (``config.mean``/``std``) and at
    the model's resolution. The first ``max_shown`` images appear in the rollout figure; all are used
    for the attention distance. Each shown image is titled with the model's predicted class (its name when the
    checkpoint stores class names) and, given ``labels`` (true class names, one per image), the true one.
    The returned dict has ``figures`` (name -> PNG path) and ``skipped`` (name -> reason) besides the numbers.
    """
    check_analyzable(model)
    cfg = model.config
    check_images(images, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    result: dict[str, Any] = {
        "model": cfg.name, "image_size": list(images.shape[-2:]), "num_images": int(images.shape[0]),
        "grid_size": list(cfg.grid_size), "pixels_per_token": list(cfg.stride), "figures": {}, "skipped": {},
    }

    rollout, dist = collect_attention_stats(model, images, batch_size)
    side = math.isqrt(rollout.shape[1])
    shown = images[:max_shown]
    p = out / "rollout.png"
    titles, predicted = _class_titles(model, shown, None if labels is None else list(labels)[:max_shown])
    draw_rollout(_to_display(shown, cfg.mean, cfg.std), rollout[: len(shown)].reshape(-1, side, side).numpy(), p,
                 titles)
    if predicted is not None:
        result["rollout_predicted"] = predicted
    result["figures"]["attention_rollout"] = str(p)
    result["attention_rollout"] = rollout.reshape(-1, side, side).tolist()

    p = out / "attention_distance.png"
    # cfg.stride: input pixels per token (a hybrid's patch is in ResNet feature-map cells, not pixels).
    draw_attention_distance(dist.numpy(), tuple(images.shape[-2:]), tuple(cfg.stride), p)
    result["figures"]["mean_attention_distance"] = str(p)
    result["mean_attention_distance"] = {
        "pixels": dist.tolist(), "layers": int(dist.shape[0]), "heads": int(dist.shape[1]),
        "class_token_excluded": True, "renormalized_over_patches": True,
    }

    sim = posemb_similarity(model)
    p = out / "posemb_similarity.png"
    draw_posemb_similarity(sim.numpy(), cfg.grid_size, p)
    result["figures"]["posemb_similarity"] = str(p)
    result["posemb_similarity"] = sim.reshape(*cfg.grid_size, *cfg.grid_size).tolist()

    try:
        comps, ratio = embedding_pca(model, num_components)
    except ValueError as e:
        result["skipped"]["embedding_filters"] = str(e)
    else:
        p = out / "embedding_filters.png"
        draw_filters(comps.numpy(), p)
        result["figures"]["embedding_filters"] = str(p)
        result["embedding_filters"] = {
            "num_components": int(comps.shape[0]), "explained_variance_ratio": ratio.tolist(),
        }

    (out / "analysis.json").write_text(json.dumps(result))
    result["json"] = str(out / "analysis.json")
    return result

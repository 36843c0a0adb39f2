"""Resampling the grid of position embeddings to a new token grid.

The official ``load_pretrained`` uses ``scipy.ndimage.zoom(grid, zoom, order=1)``. With scipy's
default ``grid_mode=False`` that maps output index ``i`` to input coordinate
``i * (n_in - 1) / (n_out - 1)``: the *corner* samples of both grids coincide. That is exactly
PyTorch's bilinear interpolation with ``align_corners=True``; computing it in float64 reproduces
scipy to the last bit of float32. ``bicubic`` (``align_corners=False``, as timm does) is offered
as an option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_grid(
    grid: torch.Tensor, new_size: tuple[int, int], method: str = "bilinear"
) -> torch.Tensor:
    """Resample a (gh, gw, D) grid of embeddings to (new_h, new_w, D)."""
    if grid.dim() != 3:
        raise ValueError(f"expected a (gh, gw, D) grid, got shape {tuple(grid.shape)}")
    if tuple(grid.shape[:2]) == tuple(new_size):
        return grid
    x = grid.permute(2, 0, 1).unsqueeze(0).to(torch.float64)
    if method == "bilinear":
        x = F.interpolate(x, size=tuple(new_size), mode="bilinear", align_corners=True)
    elif method == "bicubic":
        x = F.interpolate(x, size=tuple(new_size), mode="bicubic", align_corners=False)
    else:
        raise ValueError(f"unknown position-embedding resampling {method!r}; use 'bilinear' or 'bicubic'")
    return x[0].permute(1, 2, 0).to(grid.dtype)


def resample_posemb(
    posemb: torch.Tensor,
    old_grid: tuple[int, int] | None,
    new_grid: tuple[int, int],
    num_prefix_tokens: int,
    method: str = "bilinear",
) -> torch.Tensor:
    """Resample (1, prefix + gh*gw, D) position embeddings; the prefix (class token) is kept.

    ``old_grid=None`` assumes a square grid, as the official code does.
    """
    if posemb.dim() != 3 or posemb.shape[0] != 1:
        raise ValueError(f"expected position embeddings of shape (1, N, D), got {tuple(posemb.shape)}")
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    n = grid.shape[0]
    if old_grid is None:
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(
                f"position embeddings hold {n} grid tokens (after {num_prefix_tokens} prefix "
                "token(s)), which is not a square grid; pass the grid size explicitly"
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"grid {old_grid} does not match {n} position-embedding tokens")
    grid = resample_grid(grid.reshape(old_grid[0], old_grid[1], -1), new_grid, method)
    return torch.cat([prefix, grid.reshape(1, new_grid[0] * new_grid[1], -1)], dim=1)

"""Resampling the grid of position embeddings to a new token grid.

The official ``load_pretrained`` uses ``scipy.ndimage.zoom(grid, zoom, order=1)``. With scipy's
default ``grid_mode=False`` that maps output index ``i`` to input coordinate
``i * (n_in - 1) / (n_out - 1)``: the *corner* samples of both grids coincide (PyTorch's
``align_corners=True``). :func:`zoom_order1` writes scipy's arithmetic out in float64 - its
weights ``1 - t`` and ``1 - (1 - t)`` (not ``t``), its products ``(v * wy) * wx`` summed in C order,
and the final cast - because ``F.interpolate(align_corners=True)`` (weights ``1 - t``, ``t``, another
summation order) differs from scipy by one float32 ulp on ~0.01-0.02% of the entries. ``bicubic``
(``align_corners=False``, as timm does) is offered as an option.
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
    if method == "bilinear":
        return zoom_order1(grid, new_size)
    if method != "bicubic":
        raise ValueError(f"unknown position-embedding resampling {method!r}; use 'bilinear' or 'bicubic'")
    x = grid.permute(2, 0, 1).unsqueeze(0).to(torch.float64)
    x = F.interpolate(x, size=tuple(new_size), mode="bicubic", align_corners=False)
    return x[0].permute(1, 2, 0).to(grid.dtype)


def _zoom_axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scipy's per-axis tables for order 1, ``grid_mode=False``, mode 'constant': (first index, second index,
    first weight, second weight). The second index of a sample on the last row is mirrored (its weight is 0).
    Where ``i * zoom`` overshoots the last input sample in float64 (e.g. 22 -> 20 or 24 -> 22 grids), scipy's
    'constant' mode takes the sample as outside the input and writes 0 (cval) for that whole output row or
    column; the official ``load_pretrained`` gets those zeros, so both weights are 0 there too."""
    zoom = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0  # scipy: (in - 1) / (out - 1), 1 where out == 1
    cc = torch.arange(n_out, dtype=torch.float64) * zoom
    start = torch.floor(cc)
    w0 = 1.0 - (cc - start)
    w1 = 1.0 - w0  # scipy makes the weights sum to one this way
    outside = cc > n_in - 1
    w0, w1 = w0.masked_fill(outside, 0.0), w1.masked_fill(outside, 0.0)
    i0 = start.long().clamp(0, n_in - 1)
    i1 = i0 + 1
    i1 = torch.where(i1 >= n_in, (2 * (n_in - 1) - i1).clamp(min=0), i1)  # mirror, as scipy's edge offsets
    return i0, i1, w0, w1


def zoom_order1(grid: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """``scipy.ndimage.zoom(grid, (new_h / gh, new_w / gw, 1), order=1)`` for a (gh, gw, D) grid, bit for bit
    (float64 arithmetic in scipy's order, then rounded to the grid's dtype)."""
    y0, y1, wy0, wy1 = _zoom_axis(grid.shape[0], int(new_size[0]))
    x0, x1, wx0, wx1 = _zoom_axis(grid.shape[1], int(new_size[1]))
    g = grid.to(torch.float64)
    wy0, wy1 = wy0[:, None, None], wy1[:, None, None]
    wx0, wx1 = wx0[None, :, None], wx1[None, :, None]
    r0, r1 = g[y0], g[y1]
    # t = 0 + (v00*wy0)*wx0 + (v01*wy0)*wx1 + (v10*wy1)*wx0 + (v11*wy1)*wx1, left to right (the D axis' own
    # weights are exactly 1 and 0 and change nothing)
    t = (r0[:, x0] * wy0) * wx0
    t = t + (r0[:, x1] * wy0) * wx1
    t = t + (r1[:, x0] * wy1) * wx0
    t = t + (r1[:, x1] * wy1) * wx1
    return t.to(grid.dtype)


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

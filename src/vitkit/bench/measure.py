"""Throughput, FLOP rate, matmul peak and memory, measured side by side.

The machine this was written on is shared, so absolute rates are noisy. Every comparison here
runs the candidates *alternately* in one process (A, B, A, B, ...) and reports medians, so a
burst of load from elsewhere hits both sides alike and the ratio stays meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..kernels import mkldnn_linear_available
from ..perf import autocast
from .memory import peak_memory_bytes, reset_peak_memory, rss_bytes, trim_heap


@dataclass
class Samples:
    """Seconds per call of one candidate."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict[str, Callable[[], Any]], steps: int, warmup: int, device: torch.device | str = "cpu",
              progress: Callable[[str], None] | None = None) -> dict[str, Samples]:
    """Time each callable ``steps`` times, interleaved round by round, after ``warmup`` rounds."""
    dev = torch.device(device)
    out = {k: Samples() for k in fns}
    for r in range(warmup + steps):
        for k, fn in fns.items():
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            if r >= warmup:
                out[k].seconds.append(time.perf_counter() - t0)
        if progress is not None:
            progress(f"round {r + 1}/{warmup + steps}")
    return out


def matmul_candidates(dtype: torch.dtype, n: int = 2048,
                      device: torch.device | str = "cpu") -> dict[str, Callable[[], Any]]:
    """n x n x n matmuls through the path the fast model uses and through ``torch.mm``.

    CPU: the packed oneDNN linear (what :class:`vitkit.kernels.Linear` runs) and the default
    BLAS (``torch.mm``, what ``nn.Linear`` runs; MKL in the PyPI wheels).
    """
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    fns: dict[str, Callable[[], Any]] = {"torch.mm": lambda: torch.mm(a, b)}
    if dev.type == "cpu" and mkldnn_linear_available(dtype):
        packed = torch.ops.mkldnn._reorder_linear_weight(b, n)
        fns["oneDNN packed linear"] = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
    return fns


def peak_from_samples(samples: dict[str, Samples], n: int, dtype: torch.dtype) -> dict[str, Any]:
    flops = 2.0 * n**3
    rates = {k: flops / v.median / 1e9 for k, v in samples.items()}
    best = max(rates, key=lambda k: rates[k])
    dt = str(dtype).replace("torch.", "")
    return {"n": n, "dtype": dt, "gflops": rates, "peak_gflops": rates[best], "path": best}


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5, device: torch.device | str = "cpu") -> dict[str, Any]:
    """GFLOP/s of :func:`matmul_candidates` (median of ``reps``) and the best of them."""
    with torch.no_grad():
        t = alternate(matmul_candidates(dtype, n, device), reps, 1, device)
    return peak_from_samples(t, n, dtype)



def infer_step(model: nn.Module, x: torch.Tensor, precision: str) -> Callable[[], torch.Tensor]:
    """``model(x)`` under ``inference_mode`` and the precision's autocast, as the commands run it
    (and as a user's own loop would)."""
    dev = x.device

    def step() -> torch.Tensor:
        with torch.inference_mode(), autocast(precision, dev):
            return model(x)

    return step


def max_output_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def memory_of(fn: Callable[[], Any], device: torch.device | str = "cpu") -> dict[str, int]:
    """Peak memory while running ``fn`` once: absolute and above the memory in use before."""
    dev = torch.device(device)
    if dev.type == "cpu":
        trim_heap()
    before = rss_bytes() if dev.type == "cpu" else int(torch.cuda.memory_allocated(dev))
    reset_peak_memory(dev)
    fn()
    peak = peak_memory_bytes(dev)
    return {"peak_bytes": peak, "before_bytes": before, "increase_bytes": max(peak - before, 0)}

"""The memory probe of the benchmarks (vitkit.bench.memory)."""

from __future__ import annotations

import torch

from vitkit.bench.memory import peak_memory_bytes, reset_peak_memory, rss_bytes


def test_peak_memory_sees_a_large_allocation() -> None:
    reset_peak_memory("cpu")
    before = rss_bytes()
    big = torch.ones(64 * 2**20 // 4 * 4)  # 64 MiB written, so resident
    del big
    assert peak_memory_bytes("cpu") >= before + 48 * 2**20

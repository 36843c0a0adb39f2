"""Device copies of batches and the memory probe (vitkit.perf.device, vitkit.perf.memory)."""

from __future__ import annotations

from collections import namedtuple

import torch

from vitkit.perf import peak_memory_bytes, pin_batch, reset_peak_memory, to_device
from vitkit.perf.memory import rss_bytes


def test_to_device_keeps_structure() -> None:
    Pair = namedtuple("Pair", "x y")
    t = torch.zeros(2)
    batch = {"a": (t, [t, 3]), "b": Pair(t, "s")}
    out = to_device(batch, "cpu")
    assert out["a"][0] is t and out["a"][1][1] == 3 and isinstance(out["b"], Pair) and out["b"].y == "s"
    out = to_device(torch.zeros(2, dtype=torch.float64), torch.device("meta"))
    assert out.device.type == "meta"
    if not torch.cuda.is_available():
        assert pin_batch(batch) is batch


def test_peak_memory_sees_a_large_allocation() -> None:
    reset_peak_memory("cpu")
    before = rss_bytes()
    big = torch.ones(64 * 2**20 // 4 * 4)  # 64 MiB written, so resident
    del big
    assert peak_memory_bytes("cpu") >= before + 48 * 2**20

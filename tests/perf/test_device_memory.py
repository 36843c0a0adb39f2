"""Device copies of batches (vitkit.perf.device)."""

from __future__ import annotations

from collections import namedtuple

import torch

from vitkit.perf import pin_batch, to_device


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

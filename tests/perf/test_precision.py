"""The precision policy and what inference_model does (the model's own kernels: nothing to copy)."""

from __future__ import annotations

import pytest
import torch

from vitkit.kernels import mkldnn_linear_available
from vitkit.models.config import ViTConfig
from vitkit.models.registry import build_model
from vitkit.perf import autocast, inference_model, resolve_precision


def test_precision_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp64")
    assert resolve_precision("fp32") == "fp32"
    monkeypatch.setenv("VITKIT_CPU_AUTO_PRECISION", "fp32")
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.delenv("VITKIT_CPU_AUTO_PRECISION")
    expected = "bf16" if mkldnn_linear_available(torch.bfloat16) else "fp32"
    assert resolve_precision("auto", "cpu") == expected


def test_inference_model_is_the_model_in_eval_mode() -> None:
    cfg = ViTConfig(name="tiny", patch_size=8, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=2,
                    num_classes=3, image_size=16)
    model = build_model(cfg).train()
    assert inference_model(model, "fp32") is model and not model.training
    m = torch.nn.Sequential()
    assert inference_model(m, "bf16") is m
    with pytest.raises(ValueError, match="precision"):
        inference_model(model, "fp8")
    with torch.inference_mode(), autocast("fp32"):
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 3)

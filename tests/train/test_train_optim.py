import math

import pytest
import torch
from torch import nn

from vitkit.train.config import OptimConfig, ScheduleConfig
from vitkit.train.optim import EMA, apply_decoupled_wd, build_optimizer, lr_multiplier


def test_schedule_warmup_then_decay():
    s = ScheduleConfig(steps=110, warmup_steps=10, decay="cosine")
    assert lr_multiplier(0, s, 110) == pytest.approx(0.1)
    assert lr_multiplier(9, s, 110) == pytest.approx(1.0)
    assert lr_multiplier(10, s, 110) == pytest.approx(1.0)
    assert lr_multiplier(60, s, 110) == pytest.approx(0.5)
    assert lr_multiplier(35, s, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    lin = ScheduleConfig(steps=110, warmup_steps=10, decay="linear")
    assert lr_multiplier(35, lin, 110) == pytest.approx(0.75)
    assert lr_multiplier(110, lin, 110) == pytest.approx(0.0)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.pos_embedding = nn.Parameter(torch.ones(1, 2, 3))


def _manual_adamw(p, g, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    # One Adam step from zero moments (bias-corrected: m_hat = g, v_hat = g^2) plus decoupled decay.
    return p * (1 - lr * wd) - lr * g / (g.abs() + eps)


@pytest.mark.parametrize("mode, expected_decay", [("lr", 0.1 * 0.01), ("schedule", 0.001)])
def test_weight_decay_modes(mode, expected_decay):
    torch.manual_seed(0)
    m = Tiny()
    wd = 0.1 if mode == "lr" else 0.001
    opt = build_optimizer(m, OptimConfig(name="adamw", lr=0.01, weight_decay=wd, wd_mode=mode))
    w0, b0, pe0 = m.fc.weight.detach().clone(), m.fc.bias.detach().clone(), m.pos_embedding.detach().clone()
    m.fc.weight.grad = torch.full_like(w0, 0.5)
    m.fc.bias.grad = torch.full_like(b0, 0.5)
    m.pos_embedding.grad = torch.full_like(pe0, 0.5)
    opt.step()
    # Kernels decay by lr*wd (torch) = expected; biases and position embeddings never decay.
    torch.testing.assert_close(m.fc.weight, w0 * (1 - expected_decay) - 0.01 * 0.5 / (0.5 + 1e-8))
    torch.testing.assert_close(m.fc.bias, _manual_adamw(b0, torch.full_like(b0, 0.5), 0.01, 0.0))
    torch.testing.assert_close(m.pos_embedding, _manual_adamw(pe0, torch.full_like(pe0, 0.5), 0.01, 0.0))


def test_sgd_decoupled_weight_decay():
    m = Tiny()
    opt = build_optimizer(m, OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.01))
    w0 = m.fc.weight.detach().clone()
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    apply_decoupled_wd(opt)
    opt.step()
    torch.testing.assert_close(m.fc.weight, w0 * (1 - 0.1 * 0.01) - 0.1)


def test_ema_matches_closed_form():
    m = Tiny()
    ema = EMA(m, 0.9)
    w0 = m.fc.weight.detach().clone()
    with torch.no_grad():
        m.fc.weight.add_(1.0)
    ema.update(m)
    ema.update(m)
    # e1 = 0.9 w0 + 0.1 (w0+1); e2 = 0.9 e1 + 0.1 (w0+1) = w0 + 0.19
    torch.testing.assert_close(ema.state_dict()["fc.weight"], w0 + 0.19)


def test_ema_state_goes_back_to_the_models_device_and_dtype():
    m = torch.nn.Linear(3, 2)
    ema = EMA(m, 0.9)
    ema.shadow = {k: torch.empty_like(v, device="meta") for k, v in ema.shadow.items()}  # stands in for a GPU
    sd = {k: v.double() for k, v in m.state_dict().items()}  # as read from a checkpoint, on the CPU
    ema.load_state_dict(sd)
    assert all(v.device.type == "meta" and v.dtype == torch.float32 for v in ema.shadow.values())
    with pytest.raises(ValueError, match="weight.*shape"):
        ema.load_state_dict({**sd, "weight": torch.zeros(5, 5)})


def test_more_processes_than_gpus_is_refused(monkeypatch):
    from vitkit.train.dist import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    for name in ("auto", "cuda"):
        with pytest.raises(ValueError, match="2 processes on this node but 1 GPU.*nproc_per_node=1.*device=cpu"):
            resolve_device(name)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")

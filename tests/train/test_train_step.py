"""The one training step and optimiser factory: `vitkit train` and `vitkit bench --mode train` run
the same function with the same optimiser construction."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vitkit.cli.main import main
from vitkit.models.config import ViTConfig
from vitkit.models.registry import build_model
from vitkit.train import loop, step
from vitkit.train.config import OptimConfig, apply_overrides
from vitkit.train.optim import adamw, build_optimizer
from vitkit.train.presets import get_preset


def _tiny() -> torch.nn.Module:
    cfg = ViTConfig(name="tiny", patch_size=8, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=2,
                    num_classes=5, image_size=16)
    torch.manual_seed(0)
    m = build_model(cfg)
    with torch.no_grad():
        m.head.weight.normal_(std=0.1)
    return m


def test_adamw_is_fused_and_matches_the_reference() -> None:
    torch.manual_seed(0)
    ref_params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    params = [torch.nn.Parameter(p.detach().clone()) for p in ref_params]
    opt = adamw([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}], lr=0.1, weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"]
    ref_opt = torch.optim.AdamW([{"params": ref_params[:1]}, {"params": ref_params[1:], "weight_decay": 0.0}],
                                lr=0.1, weight_decay=0.01, foreach=False)
    for _ in range(3):
        for p, q in zip(params, ref_params):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p.data, q.data, rtol=1e-6, atol=1e-6)
    meta = adamw([torch.nn.Parameter(torch.zeros(2, device="meta"))], lr=0.1)
    assert not meta.defaults["fused"] and meta.defaults["foreach"]  # no fused kernel there


def test_train_step_is_the_written_out_update() -> None:
    model = _tiny()
    ref = copy.deepcopy(model)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    opt = build_optimizer(model, OptimConfig(lr=0.01, weight_decay=0.1))
    res = step.fixed_batch_step(model, opt, x, y, precision="fp32", micro_batch=2, clip_norm=0.5)()
    # By hand: two micro-batches of 2, mean loss, clip to 0.5, one AdamW step.
    ref_opt = torch.optim.AdamW([{"params": [p for n, p in ref.named_parameters() if p.ndim > 1 and
                                             n.split(".")[-1] not in ("pos_embedding", "cls")], "weight_decay": 0.1},
                                 {"params": [p for n, p in ref.named_parameters() if p.ndim <= 1 or
                                             n.split(".")[-1] in ("pos_embedding", "cls")], "weight_decay": 0.0}],
                                lr=0.01, foreach=False)
    losses = []
    for xb, yb in zip(x.split(2), y.split(2)):
        loss = F.cross_entropy(ref(xb), yb)
        (loss / 2).backward()
        losses.append(loss.item())
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    ref_opt.step()
    assert res.loss.dtype == torch.float64 and res.loss.item() == pytest.approx(sum(losses) / 2, rel=1e-6)
    assert res.grad_norm is not None and float(res.grad_norm) == pytest.approx(float(norm), rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
        assert p.grad is None  # zeroed (set to None) after the update
    with pytest.raises(ValueError, match="micro-batches"):
        step.train_step(model, opt, [(x, y)], loss_fn=step.cross_entropy, precision="fp32", accum=2)


def test_bench_and_train_run_the_same_step_and_optimiser(tmp_path, monkeypatch, capsys) -> None:
    calls: list[tuple[str, torch.optim.Optimizer]] = []
    real = step.train_step

    def counting(model, optimizer, *args, **kwargs):
        calls.append((type(model).__name__, optimizer))
        return real(model, optimizer, *args, **kwargs)

    assert loop.train_step is step.train_step  # the loop runs the one step itself (bench: step.fixed_batch_step)
    monkeypatch.setattr(step, "train_step", counting)
    monkeypatch.setattr(loop, "train_step", counting)
    assert main(["bench", "--model", "ViT-Ti_16", "--mode", "train", "--batch", "2", "--image-size", "32",
                 "--num-classes", "3", "--steps", "1", "--warmup", "0", "--peak-size", "64", "--dtype", "fp32"]) == 0
    assert "vitkit.train.step.train_step" in capsys.readouterr().out
    bench_calls = len(calls)
    assert bench_calls >= 2  # the memory probe and the timed step
    cfg = apply_overrides(get_preset("default"), [
        "model.patch_size=4", "model.hidden_size=32", "model.mlp_dim=64", "model.num_heads=2", "model.num_layers=1",
        "data.train=digits", "data.image_size=8", "data.batch_size=16", "data.num_workers=0", "threads=1",
        "precision=fp32", "schedule.steps=2", "schedule.warmup_steps=1", f"out={tmp_path / 'r'}"])
    loop.train(cfg, progress=False)
    assert len(calls) == bench_calls + 2  # one call per training step
    optimisers = {id(opt): opt for _, opt in calls}.values()
    assert len(optimisers) == 2  # bench's and train's, built by the same factory: fused AdamW
    for opt in optimisers:
        assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"]
        assert [g["weight_decay"] for g in opt.param_groups][1:] == [0.0]  # biases/norms undecayed

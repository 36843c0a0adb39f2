"""The good-checkpoint rule (train.health): finite state, loss not diverging; the newest good one is kept."""

import json

import pytest
import torch

from vitkit.train import loop
from vitkit.train.config import apply_overrides
from vitkit.train.guard import TrainingDiverged
from vitkit.train.health import WINDOW, LossWatch, checkpoint_health
from vitkit.train.presets import get_preset
from vitkit.training_checkpoint import last_good_checkpoint, list_checkpoints, save_checkpoint

TINY = ["model.patch_size=4", "model.hidden_size=32", "model.mlp_dim=64", "model.num_heads=2",
        "model.num_layers=2", "data.train=digits", "data.image_size=8", "data.batch_size=16",
        "data.num_workers=0", "data.crop_area=0.6,1", "data.flip=false", "optim.lr=0.003",
        "schedule.warmup_steps=2", "log_every=2", "threads=1", "precision=fp32", "eval_every=0"]


def test_loss_watch_rule():
    w = LossWatch()
    for _ in range(WINDOW - 1):
        w.add(100.0)  # before a full window the loss part of the rule does not apply
        assert w.diverging() is None
    g = torch.Generator().manual_seed(0)
    for i in range(200):  # a falling, noisy loss (noise +-30%) is never diverging
        w.add((2.3 * 0.98**i) * (1 + 0.3 * (2 * torch.rand((), generator=g).item() - 1)) + 0.01)
        assert w.diverging() is None, i
    best = w.best
    assert best is not None and best < 0.1
    for _ in range(WINDOW):
        w.add(best + 1.5)  # a climb of more than max(2 x best, best + 1)
    assert "above" in (w.diverging() or "")
    w2 = LossWatch()
    w2.load_state_dict(w.state_dict())
    assert w2.diverging() == w.diverging() and w2.best == w.best


def test_checkpoint_health_names_the_non_finite_tensor():
    w = LossWatch()
    st = {"model": {"a": torch.ones(3)},
          "optimizer": {"state": {0: {"exp_avg": torch.ones(2), "step": torch.tensor(3)}}}}
    assert checkpoint_health(st, w)[0]
    st["optimizer"]["state"][0]["exp_avg"][1] = float("inf")
    good, why = checkpoint_health(st, w)
    assert not good and "optimizer.state.0.exp_avg" in why and "1 NaN or infinite" in why
    st["optimizer"]["state"][0]["exp_avg"][1] = 0
    st["model"]["a"][0] = float("nan")
    assert "model.a" in checkpoint_health(st, w)[1]


def test_newest_good_checkpoint_survives_keep_last(tmp_path):
    for step, good in ((1, True), (2, True), (3, False), (4, False)):
        save_checkpoint(tmp_path, step, {"meta": {"good": good}, "x": torch.zeros(1)}, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    assert last_good_checkpoint(tmp_path).name == "step_00000002.pt"
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["good"] is False


def test_diverging_run_names_the_last_good_checkpoint(tmp_path, monkeypatch):
    # The loss is multiplied by 100 from step 13 (finite, but climbing) and is NaN at step 17.
    real, calls = loop.compute_loss, {"n": 0}

    def climbing(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 17 else out * 100 if calls["n"] > 12 else out

    monkeypatch.setattr(loop, "compute_loss", climbing)
    cfg = apply_overrides(get_preset("default"), [*TINY, f"out={tmp_path / 'r'}", "schedule.steps=30",
                                                  "checkpoint_every=2", "keep_last=1"])
    with pytest.raises(TrainingDiverged) as e:
        loop.train(cfg, progress=False)
    assert "step 17" in str(e.value) and "the last good checkpoint is" in str(e.value)
    assert str(e.value).split("the last good checkpoint is ")[1].split(" ")[0].endswith("step_00000012.pt")
    # keep_last=1 kept the newest (step 16, not good) and the newest good one (step 12).
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [12, 16]
    latest = json.loads((tmp_path / "r" / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 16 and latest["good"] is False and "diverging" in latest["health"]

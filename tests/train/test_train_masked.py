"""objective=masked_patch through vitkit train: the preset on unlabelled images, exact resume, fine-tuning."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vitkit
from vitkit.errors import UserError
from vitkit.train import loop
from vitkit.train.config import apply_overrides
from vitkit.train.presets import get_preset

TINY = ["model.patch_size=4", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2", "model.num_layers=1",
        "data.image_size=8", "data.batch_size=16", "data.num_workers=0", "data.eval_limit=32", "data.limit=96",
        "data.flip=false", "schedule.warmup_steps=1", "log_every=2", "threads=1", "precision=fp32",
        "deterministic=true"]


def _cfg(out, *more, preset="default"):
    return apply_overrides(get_preset(preset), [*TINY, "data.train=digits", "objective=masked_patch", f"out={out}",
                                                *more])


def test_resuming_a_masked_patch_run_is_bitwise_the_same(tmp_path):
    whole = _cfg(tmp_path / "a", "schedule.steps=6", "checkpoint_every=3", "eval_every=0")
    loop.train(whole, progress=False)
    split = _cfg(tmp_path / "b", "schedule.steps=6", "checkpoint_every=3", "eval_every=0")
    loop.train(split, progress=False, stop_at=3)
    loop.train(split, resume=True, progress=False)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith(("mask_token", "encoder.")) for k in a)  # the saved model is the encoder


def test_the_run_is_an_encoder_that_fine_tunes(tmp_path):
    run = tmp_path / "mpp"
    summary = loop.train(_cfg(run, "schedule.steps=4", "eval_every=2"), progress=False)
    assert summary["eval"]["examples"] == 32 and 0 <= summary["eval"]["top1"] <= 1
    enc = vitkit.load_model(run)
    assert enc.config.num_classes == 0 and enc(torch.zeros(1, 3, 8, 8)).shape == (1, 16)
    ft = apply_overrides(get_preset("default"), [*TINY, "data.train=digits", f"model.init={run}",
                                                 "schedule.steps=2", f"out={tmp_path / 'ft'}"])
    res = loop.train(ft, progress=False)
    model = vitkit.load_model(tmp_path / "ft")
    assert model.config.num_classes == 10 and res["eval_top1"] is not None
    trained = load_file(run / "model.safetensors")
    # the encoder's weights started the fine-tuning: its embedding moved only by the two steps
    assert (model.embedding.weight - trained["embedding.weight"]).abs().max() < 0.05


def _unlabelled(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_the_preset_pre_trains_on_a_folder_without_classes(tmp_path):
    data = _unlabelled(tmp_path / "photos")
    cfg = apply_overrides(get_preset("mpp_pretrain"), [
        f"data.train=folder:{data}", f"data.test=folder:{data}", "model.stem_channels=8", "model.stem_strides=2",
        "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2", "model.num_layers=1", "data.image_size=8",
        "data.batch_size=8", "data.num_workers=0", "data.eval_limit=8", "data.progressive_resize=null",
        "schedule.steps=2", "schedule.warmup_steps=1", "threads=1", "precision=fp32", f"out={tmp_path / 'r'}"])
    summary = loop.train(cfg, progress=False)
    assert summary["steps"] == 2 and vitkit.load_model(tmp_path / "r").config.num_classes == 0
    with pytest.raises(UserError, match="unlabelled"):
        loop.train(apply_overrides(cfg, ["objective=classify", f"out={tmp_path / 'c'}"]), progress=False)

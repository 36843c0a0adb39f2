"""Local sources: a run folder and its training checkpoints (eval/predict after an interrupted run),
model.init= from them, create_model(pretrained=...), and bare HF state dicts without a head count."""

import json

import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit.checkpoints import CheckpointError
from vitkit.checkpoints.sources import resolve
from vitkit.cli.main import main
from vitkit.train import loop
from vitkit.train.config import apply_overrides
from vitkit.train.presets import get_preset

TINY = ["model.patch_size=4", "model.hidden_size=32", "model.mlp_dim=64", "model.num_heads=2",
        "model.num_layers=2", "data.train=digits", "data.image_size=8", "data.batch_size=16",
        "data.eval_batch_size=128", "data.num_workers=0", "data.flip=false", "optim.lr=0.003",
        "schedule.warmup_steps=1", "threads=1", "precision=fp32", "eval_every=0"]


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A run stopped at step 4 of 8: checkpoints, no model.safetensors."""
    out = tmp_path_factory.mktemp("run") / "r"
    cfg = apply_overrides(get_preset("default"), [*TINY, f"out={out}", "schedule.steps=8", "checkpoint_every=2"])
    loop.train(cfg, progress=False, stop_at=4)
    assert not (out / "model.safetensors").exists()
    return out


def test_run_folder_and_its_checkpoint_load_the_newest_weights(interrupted_run):
    step4 = interrupted_run / "checkpoints" / "step_00000004.pt"
    assert resolve(interrupted_run).path == step4
    a, b = vitkit.load_model(interrupted_run), vitkit.load_model(step4)
    assert a.config.class_names == tuple(str(i) for i in range(10)) and a.config.image_size == (8, 8)
    state = torch.load(step4, weights_only=True)["model"]
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, state[k], atol=0, rtol=0)
        torch.testing.assert_close(v, b.state_dict()[k], atol=0, rtol=0)


def test_eval_takes_a_run_folder_or_a_step_checkpoint(interrupted_run, tmp_path, capsys):
    results = []
    for i, src in enumerate([interrupted_run, interrupted_run / "checkpoints" / "step_00000004.pt"]):
        assert main(["eval", "--model", str(src), "--data", "digits", "--limit", "64", "--out", str(tmp_path / str(i)),
                     "--precision", "fp32"]) == 0
        results.append(json.loads((tmp_path / str(i) / "eval.json").read_text()))
    assert results[0]["top1"] == results[1]["top1"] and results[0]["num_examples"] == 64
    assert results[0]["classes"]["matched"].startswith("by name")
    capsys.readouterr()
    assert main(["predict", "--model", str(interrupted_run), "digits", "--limit", "2"]) == 0
    assert "(label " in capsys.readouterr().out


def test_model_init_takes_a_training_checkpoint(interrupted_run, tmp_path):
    cfg = apply_overrides(get_preset("default"), [
        *TINY, f"out={tmp_path / 'ft'}", "schedule.steps=1", "data.image_size=12",
        f"model.init={interrupted_run / 'checkpoints' / 'step_00000004.pt'}", "model.patch_size=none",
        "model.hidden_size=none", "model.mlp_dim=none", "model.num_heads=none", "model.num_layers=none"])
    loop.train(cfg, progress=False)
    ft = vitkit.load_model(tmp_path / "ft")  # a finished run folder: its model.safetensors
    assert ft.config.image_size == (12, 12) and ft.config.hidden_size == 32


def test_a_run_folder_prefers_model_safetensors_and_refuses_an_empty_one(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("out: run\n")
    with pytest.raises(CheckpointError, match="run folder without model.safetensors"):
        vitkit.load_model(run)
    m = vitkit.create_model("ViT-Ti_16", num_classes=2, image_size=8, patch_size=4, num_layers=1, hidden_size=32,
                            num_heads=2, mlp_dim=64)
    vitkit.save_model(m, run / "model.safetensors")
    assert resolve(run).path == run / "model.safetensors"


def test_create_model_pretrained_source_checks_the_architecture(tmp_path, monkeypatch):
    tiny = dict(image_size=16, patch_size=4, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64)
    src = vitkit.create_model("ViT-Ti_16", num_classes=5, **tiny)
    vitkit.save_model(src, tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="another architecture: patch_size"):
        vitkit.create_model("ViT-B/16", pretrained=str(tmp_path / "w.npz"))
    m = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=24, pretrained=str(tmp_path / "w.npz"),
                            **{k: v for k, v in tiny.items() if k != "image_size"})
    assert m.config.num_classes == 3 and m.config.image_size == (24, 24) and not m.head.weight.any()
    torch.testing.assert_close(m.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight, atol=0, rtol=0)
    monkeypatch.setenv("VITKIT_OFFLINE", "1")
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=r"imagenet21k/ViT-B_16\.npz -- download it by hand"):
        vitkit.create_model("ViT-B/16", pretrained=True)  # the paper's ImageNet-21k checkpoint
    with pytest.raises(CheckpointError, match="no official checkpoint of ViT-S_16-gap-norep"):
        vitkit.create_model("ViT-S_16-gap-norep", pretrained=True)


def test_bare_hf_state_dict_needs_num_heads(tmp_path):
    m = vitkit.create_model("ViT-Ti_16", num_classes=2, image_size=8, patch_size=4, num_layers=1, hidden_size=128,
                            num_heads=4, mlp_dim=64, gelu="exact", layer_norm_eps=1e-12)
    from vitkit.checkpoints.hf import to_hf

    save_file({k: v.contiguous() for k, v in to_hf(m).state_dict().items()}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CheckpointError, match="does not store its number of heads.*pass num_heads="):
        vitkit.load_model(tmp_path / "bare.safetensors")
    assert vitkit.load_model(tmp_path / "bare.safetensors", num_heads=4).config.num_heads == 4


def test_the_command_line_way_for_a_file_without_its_head_count(tmp_path, capsys):
    # Only `vitkit convert` takes --num-heads; the error every other command gives says so, and following it works.
    pytest.importorskip("transformers")
    from vitkit.checkpoints.hf import to_hf
    from vitkit.cli.main import main

    m = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=8, patch_size=4, num_layers=1, hidden_size=128,
                            num_heads=4, mlp_dim=64, gelu="exact", layer_norm_eps=1e-12)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in to_hf(m).state_dict().items()}, str(bare))
    assert main(["eval", "--model", str(bare), "--data", "digits", "--limit", "4"]) == 2
    err = capsys.readouterr().err
    assert f"vitkit convert --model {bare} --num-heads N --out FILE.safetensors" in err and "Traceback" not in err
    fixed = tmp_path / "fixed.safetensors"
    assert main(["convert", "--model", str(bare), "--num-heads", "4", "--out", str(fixed)]) == 0
    assert main(["eval", "--model", str(fixed), "--data", "digits", "--limit", "4", "--image-size", "8"]) == 0

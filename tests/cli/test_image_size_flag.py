"""``--image-size`` takes ``R`` or ``HxW`` in every command that has it, and a non-square size reaches the model,
the records and the file names (not collapsed to one side)."""

import argparse
import json

import pytest
import torch

import vitkit
from vitkit.cli.common import image_size, size_label
from vitkit.cli.main import main


@pytest.mark.parametrize("text,want", [("384", 384), ("384x256", (384, 256)), ("32X32", 32), ("48,64", (48, 64))])
def test_image_size_values(text, want):
    assert image_size(text) == want


@pytest.mark.parametrize("text", ["0", "3x", "ax4", "1x2x3", "-4", "16x0"])
def test_image_size_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        image_size(text)


def test_a_bad_size_is_a_one_line_argument_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["models", "--image-size", "224x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--image-size" in err and "HxW" in err and "Traceback" not in err


def test_models_counts_tokens_of_a_non_square_size(capsys):
    assert main(["models", "--filter", "ViT-B_16", "--image-size", "384x256", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ViT-B_16"]["tokens"] == 24 * 16 + 1
    assert main(["models", "--filter", "ViT-B_16", "--image-size", "384x256"]) == 0
    assert "GFLOPs@384x256" in capsys.readouterr().out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=16, patch_size=4, num_layers=1,
                                hidden_size=16, num_heads=2, mlp_dim=32)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return str(vitkit.save_model(model, tmp_path_factory.mktemp("ckpt") / "m.safetensors"))


def test_eval_at_a_non_square_size(ckpt, tmp_path, capsys):
    assert main(["eval", "--model", ckpt, "--data", "digits", "--limit", "8", "--image-size", "16x24",
                 "--out", str(tmp_path)]) == 0
    assert "at 16x24" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval.json").read_text())["image_size"] == [16, 24]


def test_bench_at_a_non_square_size(tmp_path, capsys):
    assert main(["bench", "--model", "ViT-Ti_16", "--image-size", "32x48", "--batch", "2", "--num-classes", "10",
                 "--steps", "1", "--warmup", "0", "--peak-size", "64", "--dtype", "fp32", "--json",
                 "--out", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["image_size"] == [32, 48]
    assert [p.name for p in tmp_path.glob("bench-*.json")] == ["bench-infer-ViT-Ti_16-fp32-b2-r32x48.json"]


def test_bench_of_a_file_measures_at_its_resolution_and_records_its_classes(tmp_path, capsys):
    """Issue 29: no --image-size: the file's own resolution (not 224), and the record says its class count."""
    import vitkit

    model = vitkit.create_model("ViT-Ti_16", num_classes=7, image_size=(16, 24), patch_size=4, hidden_size=16,
                                mlp_dim=32, num_heads=2, num_layers=1)
    vitkit.save_model(model, tmp_path / "m.safetensors")
    common = ["bench", "--model", str(tmp_path / "m.safetensors"), "--batch", "2", "--steps", "1", "--warmup", "0",
              "--peak-size", "64", "--precision", "fp32", "--json"]
    for extra, size in (([], [16, 24]), (["--image-size", "32"], [32, 32])):
        capsys.readouterr()
        assert main([*common, *extra]) == 0
        res = json.loads(capsys.readouterr().out)
        assert (res["image_size"], res["num_classes"]) == (size, 7)


def test_train_flag_sets_a_non_square_data_size(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", "--image-size", "8x12", "schedule.steps=1",
                 "eval_every=0", "model.num_layers=1", "model.hidden_size=16", "model.mlp_dim=32",
                 "model.num_heads=2", "model.patch_size=4", "data.batch_size=8", "schedule.warmup_steps=0",
                 "data.num_workers=0", "threads=1"]) == 0
    assert tuple(vitkit.load_model(out / "model.safetensors").config.image_size) == (8, 12)


def test_size_label():
    assert size_label(224) == "224" and size_label((384, 256)) == "384x256" and size_label((32, 32)) == "32"

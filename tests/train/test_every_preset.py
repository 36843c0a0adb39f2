"""Every preset of ``vitkit train --list-presets`` runs end to end from the command line: 2 steps on a tiny image
folder with tiny model overrides (the fine-tuning presets from a tiny checkpoint through ``model.init``), then
``--resume`` continues the run for one more step."""

import json
import re

import numpy as np
import pytest
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.train.presets import PRESETS, get_preset

# Presets that fine-tune: they start from model.init (vit_finetune's placeholder, or what the demo passes).
FINETUNE = {"vit_finetune", "demo_finetune"}
TINY_MODEL = ["model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2", "model.num_layers=1"]
# 16 px: one 16x16 patch for the plain ViTs, a 4x4 grid for the hybrid (ResNet /4, 1x1 patches).
TINY_RUN = ["data.image_size=16", "data.batch_size=4", "data.micro_batch_size=2", "data.eval_batch_size=4",
            "data.num_workers=0", "data.test=none", "schedule.steps=2", "schedule.warmup_steps=1",
            "checkpoint_every=1", "eval_every=0", "log_every=1", "threads=1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """ImageFolder layout, 2 classes, 4 training and 2 test images each, 20x24 RGB."""
    root = tmp_path_factory.mktemp("tiny_folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model = vitkit.create_model("ViT-Ti_16", num_classes=5, image_size=32, patch_size=8, hidden_size=16, mlp_dim=32,
                                num_heads=2, num_layers=1, representation_size=16)
    return vitkit.save_model(model, tmp_path_factory.mktemp("ckpt") / "pre.safetensors")


def test_every_finetune_preset_is_known():
    assert FINETUNE <= set(PRESETS)
    assert {n for n in PRESETS if "finetune" in n} == FINETUNE


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_trains_two_steps_and_resumes(name, folder, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "run"
    over = [f"data.train=folder:{folder}", *TINY_RUN]
    if name in FINETUNE:
        over.append(f"model.init={tiny_checkpoint}")  # the architecture comes from the file
    else:
        over += TINY_MODEL
    if get_preset(name).data.progressive_resize is not None:
        over.append("data.progressive_resize=8,0.5")  # the low-resolution phase below the tiny 16 px
    assert main(["train", "--preset", name, "--out", str(out), "--no-progress", *over]) == 0, capsys.readouterr().err
    first = json.loads((out / "summary.json").read_text())
    assert first["steps"] == 2 and first["finished"] and first["eval"]["examples"] == 4
    assert first["accumulation"] == 2 and (out / "checkpoints" / "step_00000002.pt").is_file()

    assert main(["train", "--out", str(out), "--resume", "--no-progress", "schedule.steps=3"]) == 0
    err = capsys.readouterr().err
    assert f"resumed from {out / 'checkpoints' / 'step_00000002.pt'} (step 2)" in err
    again = json.loads((out / "summary.json").read_text())
    assert again["steps"] == 3 and again["images_seen_this_run"] == 4  # one step of 4 images, not three
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3]
    model = vitkit.load_model(out / "model.safetensors")
    if get_preset(name).objective == "masked_patch":  # the saved model is the pre-trained encoder: no classes
        assert model.config.num_classes == 0 and model.config.class_names is None
    else:
        assert model.config.num_classes == 2 and model.config.class_names == ("cat", "dog")
    assert model.config.image_size == (16, 16)
    if name in FINETUNE:
        assert model.config.hidden_size == 16 and model.config.patch_size == (8, 8)  # from the checkpoint
    assert get_preset(name).preset == name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_docstring_is_recipe_result_and_cost_in_ten_lines(name):
    # The lab notebook (dated runs, what was tried) lives in benchmarks/results/README.md, not here.
    doc = (PRESETS[name].__doc__ or "").strip().splitlines()
    assert len(doc) <= 10, f"{name}: a {len(doc)}-line docstring; move measurements to benchmarks/results/"
    text = " ".join(doc)
    assert "%" in text, f"{name}: no expected result"
    assert re.search(r"\d\s*(s|min|minutes|h|hours)\b|\bdays?\b", text), f"{name}: no cost"

"""ReaL top-1 (the paper's "ImageNet ReaL" column): a prediction is right when it is in the image's label set;
images with an empty set are left out and counted. Checked on its own and through `vitkit eval`."""

import json
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.cli.main import main
from vitkit.errors import UserError
from vitkit.evaluate.core import ClassMatch, real_top1

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_imagenet import REAL, VAL, WNIDS, make_imagenet  # noqa: E402


def test_real_top1_counts_set_membership_and_leaves_empty_sets_out():
    preds = torch.tensor([2, 1, 0, 0, 0, 1])
    res = real_top1(preds, REAL)  # sets [2] [0,1] [] [1] [2,0] []: hit, hit, -, miss, hit, -
    assert res == {"real_top1": 3 / 4, "real_examples": 4, "real_left_out": 2}
    # data label 0 is model index 2 and the other way round: sets are mapped as the evaluation maps labels
    swapped = ClassMatch((2, 1, 0), None, "by name (another order)")
    assert real_top1(torch.tensor([0, 1, 0, 0, 2, 1]), REAL, swapped)["real_top1"] == 3 / 4
    with pytest.raises(UserError, match="by position"):
        real_top1(preds[:5], REAL)


def test_vitkit_eval_reports_real_top1(tmp_path, capsys):
    root = make_imagenet(tmp_path / "in", "folders")
    (root / "real.json").write_text(json.dumps(REAL))
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=8, num_layers=1,
                                hidden_size=16, num_heads=2, mlp_dim=32, class_names=WNIDS)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # always class 1
    ckpt = vitkit.save_model(model, tmp_path / "m.safetensors")
    rc = main(["eval", "--model", str(ckpt), "--data", f"imagenet:{root}?labels=real", "--split", "val", "--json",
               "--batch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    assert res["real_examples"] == 4 and res["real_left_out"] == 2
    assert res["real_top1"] == sum(1 in s for s in REAL if s) / 4  # [0,1] and [1]: 0.5
    assert res["top1"] == VAL.count(1) / 6
    rc = main(["eval", "--model", str(ckpt), "--data", f"imagenet:{root}?labels=real", "--split", "val",
               "--limit", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "ReaL top-1" in out and "left out" in out

"""`vitkit eval` matches the data's classes to the checkpoint's by name: another order, a subset, unknown names."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.evaluate.core import match_classes

STORED = ("zebra", "ant", "mole")  # the checkpoint's order; a folder's classes are sorted: ant, mole, zebra


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two checkpoints computing the same classifier (M1: classes in STORED order; M2: rows permuted to
    the sorted order) and 24 images, each filed under the class M1 predicts for it."""
    d = tmp_path_factory.mktemp("classes")
    torch.manual_seed(3)
    m1 = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=1, hidden_size=32,
                             num_heads=2, mlp_dim=64, class_names=STORED).eval()
    torch.nn.init.normal_(m1.head.weight, std=2.0)
    vitkit.save_model(m1, d / "m1.safetensors")
    order = [STORED.index(n) for n in sorted(STORED)]
    m2 = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=1, hidden_size=32,
                             num_heads=2, mlp_dim=64, class_names=tuple(sorted(STORED))).eval()
    state = m1.state_dict()
    state["head.weight"], state["head.bias"] = state["head.weight"][order], state["head.bias"][order]
    m2.load_state_dict(state)
    vitkit.save_model(m2, d / "m2.safetensors")
    rng = np.random.default_rng(0)
    pool = d / "pool"
    pool.mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(pool / f"{i:02d}.png")
    return d, m1


def _file_by_prediction(d, capsys, keep=STORED):
    assert main(["predict", "--model", str(d / "m1.safetensors"), str(d / "pool"), "--json", "--top-k", "1"]) == 0
    preds = json.loads(capsys.readouterr().out)["predictions"]
    folder = d / ("by_pred_" + "_".join(keep))
    for p in preds:
        name = p["top_k"][0]["name"]
        if name in keep:
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / p["image"].split("/")[-1]).write_bytes(open(p["image"], "rb").read())
    assert sorted(q.name for q in folder.iterdir()) == sorted(keep), "every class needs an image"
    return folder


def _eval(model, folder, out):
    assert main(["eval", "--model", str(model), "--data", f"folder:{folder}",
                 "--precision", "fp32", "--out", str(out)]) == 0
    return json.loads((out / "eval.json").read_text())


def test_classes_in_another_order_are_remapped_by_name(setup, tmp_path, capsys):
    d, _ = setup
    folder = _file_by_prediction(d, capsys)
    other = _eval(d / "m1.safetensors", folder, tmp_path / "m1")  # folder order differs from the checkpoint's
    stored = _eval(d / "m2.safetensors", folder, tmp_path / "m2")  # folder order is the checkpoint's
    assert other["top1"] == stored["top1"] == 1.0 and other["top5"] == stored["top5"]
    assert other["classes"]["matched"] == "by name (another order)"
    assert stored["classes"]["matched"] == "by name (same order)"
    assert "another order" in capsys.readouterr().out


def test_a_subset_of_the_classes_is_evaluated_over_that_subset(setup, tmp_path, capsys):
    d, _ = setup
    folder = _file_by_prediction(d, capsys, keep=("ant", "zebra"))
    res = _eval(d / "m1.safetensors", folder, tmp_path / "sub")
    assert res["top1"] == 1.0 and res["classes"]["evaluated_classes"] == 2 and res["classes"]["model_classes"] == 3
    assert res["k_used"]["top5"] == 2
    assert "2 of the model's 3 classes" in capsys.readouterr().out


def test_names_the_model_does_not_have_are_an_error_listing_them(setup, tmp_path, capsys):
    d, _ = setup
    for name in ("ant", "unicorn"):
        (tmp_path / "bad" / name).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "bad" / name / "x.png")
    assert main(["eval", "--model", str(d / "m1.safetensors"), "--data", f"folder:{tmp_path / 'bad'}"]) == 2
    err = capsys.readouterr().err
    assert "unicorn" in err and "ant," not in err.split("(it has")[0] and len(err.strip().splitlines()) == 1


def test_match_classes_without_names_needs_equal_counts():
    assert match_classes(None, ["a", "b"], 2, 2).label_map is None
    with pytest.raises(ValueError, match="3 classes but the model's head has 2"):
        match_classes(None, None, 2, 3)
    m = match_classes(["a", "b", "c"], ["c", "a"], 3, 2)
    assert m.label_map == (2, 0) and m.subset == (0, 2)

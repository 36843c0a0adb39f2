"""An exported ONNX file as a model: its metadata, load_model, and vitkit eval / predict / fewshot on it."""

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.checkpoints import CheckpointError
from vitkit.checkpoints.onnx_model import OnnxModel
from vitkit.cli.main import main
from vitkit.errors import UserError
from vitkit.export import export_onnx

NAMES = tuple(str(i) for i in range(10))  # the digits data set's class names


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_model")
    torch.manual_seed(0)
    model = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=16, patch_size=4, num_layers=1,
                                hidden_size=16, num_heads=2, mlp_dim=32, class_names=NAMES)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    ckpt = vitkit.save_model(model, root / "m.safetensors")
    export_onnx(model, root / "m.onnx")
    png = root / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(png)
    return {"model": model, "ckpt": str(ckpt), "onnx": str(root / "m.onnx"), "png": str(png)}


def test_the_export_states_what_the_input_must_be(files):
    props = {p.key: p.value for p in onnx.load(files["onnx"]).metadata_props}
    assert json.loads(props["class_names"]) == list(NAMES)
    assert json.loads(props["mean"]) == [0.5] * 3 and json.loads(props["image_size"]) == [16, 16]
    assert props["preprocessing"] == "vit_jax"
    assert vitkit.ViTConfig.from_json(props["vitkit_config"]) == files["model"].config


def test_load_model_runs_the_onnx_file(files):
    m = vitkit.load_model(files["onnx"])
    assert isinstance(m, OnnxModel) and m.config == files["model"].config
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x), files["model"](x), rtol=1e-4, atol=1e-4)
        feats = files["model"].forward_head(files["model"].forward_features(x), pre_logits=True)
        torch.testing.assert_close(m.forward_head(m.forward_features(x), pre_logits=True), feats, rtol=1e-4,
                                   atol=1e-4)
    with pytest.raises(UserError, match="fixed at its export resolution 16x16"):
        m.set_image_size((32, 32))
    with pytest.raises(UserError, match="cannot be changed"):
        vitkit.load_model(files["onnx"], num_classes=3)


def _run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_eval_predict_and_fewshot_take_the_onnx_file(files, tmp_path, capsys):
    results = {}
    for kind in ("ckpt", "onnx"):
        d = tmp_path / kind
        fp32 = ["--precision", "fp32"]  # the PyTorch file as exported: the ONNX graph runs in float32
        _run(["eval", "--model", files[kind], "--data", "digits", "--limit", "64", "--out", str(d), *fp32], capsys)
        ev = json.loads((d / "eval.json").read_text())
        pred = json.loads(_run(["predict", "--model", files[kind], files["png"], "--json", *fp32], capsys))
        _run(["fewshot", "--model", files[kind], "--train", "digits", "--test", "digits", "--shots", "2",
              "--seeds", "1", "--train-limit", "100", "--test-limit", "32", "--out", str(d), *fp32], capsys)
        results[kind] = (ev, pred, json.loads((d / "fewshot.json").read_text()))
    (ev_pt, pred_pt, fs_pt), (ev_ox, pred_ox, fs_ox) = results["ckpt"], results["onnx"]
    top1 = next(k for k in ev_pt if "top1" in k or "top-1" in k)
    assert ev_ox[top1] == ev_pt[top1] and ev_ox["precision"] == "fp32"
    assert main(["eval", "--model", files["onnx"], "--data", "digits", "--limit", "8", "--precision", "bf16"]) == 2
    assert "runs in fp32 (an exported graph)" in capsys.readouterr().err
    top = [[(p["index"], round(p["probability"], 4)) for p in r["predictions"][0]["top_k"]] for r in (pred_ox, pred_pt)]
    assert top[0] == top[1] and pred_ox["precision"] == "fp32"
    assert fs_ox["accuracy"] == fs_pt["accuracy"] and fs_ox["feature_dim"] == fs_pt["feature_dim"] == 16


def test_an_onnx_file_without_vitkit_metadata_is_refused(files, tmp_path):
    bare = onnx.load(files["onnx"])
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(CheckpointError, match="without vitkit's metadata"):
        vitkit.load_model(tmp_path / "bare.onnx")

"""Smoke tests of eval / fewshot / analyze / predict / export through vitkit.cli.main.main."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import main


def _save_tiny(path, num_classes=3, class_names=None):
    model = vitkit.create_model("ViT-Ti_16", num_classes=num_classes, image_size=16, patch_size=4, num_layers=2,
                                hidden_size=32, num_heads=2, mlp_dim=64)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    if class_names:
        model.config = model.config.replace(class_names=tuple(class_names))
    return vitkit.save_model(model, path)


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(d / "sub" / "grey.jpg")
    (d / "broken.jpg").write_bytes(b"this is not a jpeg")
    return d


def test_predict_files_folders_json_and_bad_input(tmp_path, images, capsys):
    ckpt = _save_tiny(tmp_path / "m.safetensors", class_names=["cat", "dog", "eel"])
    assert main(["predict", "--model", str(ckpt), str(images), str(tmp_path / "missing.png"), "--json",
                 "--top-k", "2", "--batch-size", "2"]) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert len(res["predictions"]) == 4  # 3 PNGs + the grey JPEG; the broken file and the missing one skipped
    assert {s["image"].split("/")[-1] for s in res["skipped"]} == {"broken.jpg", "missing.png"}
    for p in res["predictions"]:
        probs = [t["probability"] for t in p["top_k"]]
        assert len(probs) == 2 and probs[0] >= probs[1]
        assert all(t["name"] == ["cat", "dog", "eel"][t["index"]] for t in p["top_k"])
    assert "broken.jpg" in out.err


def test_predict_without_class_names_says_so(tmp_path, images, capsys):
    ckpt = _save_tiny(tmp_path / "m.safetensors")
    assert main(["predict", "--model", str(ckpt), str(images / "0.png")]) == 0
    out = capsys.readouterr()
    assert "no class names" in out.err and "0.png" in out.out


def test_predict_empty_folder_is_one_line_error(tmp_path, capsys):
    ckpt = _save_tiny(tmp_path / "m.safetensors")
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no image files" in err and "Traceback" not in err


def test_analyze_writes_figures(tmp_path, images, capsys):
    ckpt = _save_tiny(tmp_path / "m.safetensors")
    out = tmp_path / "fig"
    assert main(["analyze", "--model", str(ckpt), "--images", str(images), "--out", str(out),
                 "--num-images", "3"]) == 0
    for name in ("rollout", "attention_distance", "posemb_similarity", "embedding_filters"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "analysis.json").read_text())["num_images"] == 3


def test_analyze_on_bit_is_a_clear_message(tmp_path, images, capsys):
    model = vitkit.create_model("BiT-R50x1", num_classes=3, image_size=32, resnet={"num_layers": (1,)})
    ckpt = vitkit.save_model(model, tmp_path / "bit.safetensors")
    assert main(["analyze", "--model", str(ckpt), "--images", str(images), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "without attention" in err and "Traceback" not in err


def test_export_prints_the_difference(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    ckpt = _save_tiny(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(ckpt), "--format", "onnx", "--image-size", "24",
                 "--exporter", "torchscript", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "max abs diff" in text
    diff = float(text.split("max abs diff")[1].split()[0])
    assert diff <= 1e-4


def test_eval_and_fewshot_on_digits(tmp_path, capsys):
    pytest.importorskip("vitkit.data", reason="needs the data package")
    ckpt = _save_tiny(tmp_path / "m.safetensors", num_classes=10)
    assert main(["eval", "--model", str(ckpt), "--data", "digits", "--limit", "64", "--batch-size", "32",
                 "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert res["num_examples"] == 64 and 0 <= res["top1"] <= res["top5"] <= 1
    assert main(["eval", "--model", str(ckpt), "--data", "digits", "--limit", "64", "--flip",
                 "--out", str(tmp_path / "evf")]) == 0
    flipped = json.loads((tmp_path / "evf" / "eval.json").read_text())
    assert flipped["top1"] == res["top1"] and 0 <= flipped["flip_top1"] <= flipped["flip_top5"] <= 1
    assert "flip-averaged: top-1" in capsys.readouterr().out
    assert main(["fewshot", "--model", str(ckpt), "--train", "digits", "--test", "digits", "--shots", "1,5",
                 "--seeds", "2", "--train-limit", "200", "--test-limit", "64", "--out", str(tmp_path / "fs")]) == 0
    fs = json.loads((tmp_path / "fs" / "fewshot.json").read_text())
    assert set(fs["accuracy"]) == {"1", "5"} and len(fs["accuracy_per_seed"]["5"]) == 2
    assert fs["feature_dim"] == 32 and fs["num_test"] == 64
    # Data specs also feed analyze and predict.
    assert main(["analyze", "--model", str(ckpt), "--images", "digits", "--num-images", "3",
                 "--out", str(tmp_path / "an")]) == 0
    assert json.loads((tmp_path / "an" / "analysis.json").read_text())["num_images"] == 3
    capsys.readouterr()
    assert main(["predict", "--model", str(ckpt), "digits", "--limit", "4", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)["predictions"]
    assert len(preds) == 4 and all(0 <= p["label"] < 10 for p in preds)


def test_eval_rejects_a_head_of_the_wrong_size(tmp_path, capsys):
    pytest.importorskip("vitkit.data", reason="needs the data package")
    ckpt = _save_tiny(tmp_path / "m.safetensors", num_classes=3)
    assert main(["eval", "--model", str(ckpt), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "10 classes" in err and "Traceback" not in err


def test_eval_reports_unreadable_images_by_name(tmp_path, capsys):
    pytest.importorskip("vitkit.data", reason="needs the data package")
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in ("a", "b", "c"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / c / f"{i}.png")
    (tmp_path / "data" / "test" / "b" / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ckpt = _save_tiny(tmp_path / "m.safetensors", num_classes=3)
    assert main(["eval", "--model", str(ckpt), "--data", f"folder:{tmp_path / 'data'}",
                 "--out", str(tmp_path / "ev")]) == 0
    assert "corrupt.jpg" in capsys.readouterr().err
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert res["num_examples"] == 6 and res["loader"]["skipped_total"] == 1

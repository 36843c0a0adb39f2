"""load_image / load_images and the commands under the named preprocessings, against TensorFlow's arrays
(tests/data/tf_reference, written by scripts/make_tf_reference.py; TensorFlow is not imported here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import vitkit
from vitkit.cli.main import main
from vitkit.data.preprocess import PREPROCESSINGS
from vitkit.evaluate import load_image, load_images

REF = Path(__file__).resolve().parents[1] / "data" / "tf_reference"
Z = np.load(REF / "reference.npz")
REFUSED = json.loads(bytes(Z["tf_refused"]).decode())
DECODABLE = sorted(p.name for p in (REF / "images").iterdir() if p.name not in REFUSED)
HALF = (0.5, 0.5, 0.5)


def _hwc(t: torch.Tensor, size: int) -> np.ndarray:
    a = t.numpy().transpose(1, 2, 0)
    if size == 48:
        return a
    p = Z[f"positions/{size}"]
    return a[p[:, 0], p[:, 1]]


@pytest.mark.parametrize("size", [48, 224, 384])
def test_load_image_default_is_the_official_pipeline_within_1e5(size: int) -> None:
    # the acceptance test: load_image(path, size, mean, std) with the official normalisation
    for name in DECODABLE:
        got = _hwc(load_image(REF / "images" / name, size, HALF, HALF), size)
        np.testing.assert_allclose(got, Z[f"{name}/vit_jax/{size}"], atol=1e-5, rtol=0, err_msg=name)


def test_load_image_big_vision_and_precise() -> None:
    for name in DECODABLE:
        for pp in ("big_vision", "big_vision_precise"):
            key = f"{name}/{pp}/224"
            if key in Z.files:
                got = _hwc(load_image(REF / "images" / name, 224, HALF, HALF, preprocess=pp), 224)
                np.testing.assert_allclose(got, Z[key].astype(np.float32) / 255 * 2 - 1, atol=1e-5, rtol=0)


def test_pil_is_not_the_official_pipeline_on_real_jpegs() -> None:
    # the control: Pillow's accurate IDCT misses TensorFlow's pixels by far more than the tolerance
    worst = 0.0
    for name in (n for n in DECODABLE if n.startswith(("cifar10_", "imagenette_"))):
        got = _hwc(load_image(REF / "images" / name, 48, HALF, HALF, preprocess="pil"), 48)
        worst = max(worst, float(np.abs(got - Z[f"{name}/vit_jax/48"]).max()))
    assert worst > 1e-3


def test_other_normalisations_default_to_pil_and_any_name_can_be_asked_for() -> None:
    jpg = REF / "images" / "imagenette_val_n03417042_n03417042_5221.jpg"
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    default = load_image(jpg, 32, mean, std)
    torch.testing.assert_close(default, load_image(jpg, 32, mean, std, preprocess="pil"), rtol=0, atol=0)
    assert not torch.equal(default, load_image(jpg, 32, mean, std, preprocess="vit_jax"))
    with pytest.raises(ValueError, match="unknown preprocessing 'tf'"):
        load_images([jpg], 32, HALF, HALF, preprocess="tf")


def test_files_tensorflow_refuses_are_skipped_by_name_under_vit_jax(capsys) -> None:
    paths = [REF / "images" / n for n in sorted(REFUSED)] + [REF / "images" / "jpeg_420.jpg"]
    x, ok, skipped = load_images(paths, 16, HALF, HALF)
    assert len(x) == 1 and ok == paths[-1:]
    assert all("TensorFlow" in why and Path(p).name in why for p, why in skipped)
    assert "warning: skipped" in capsys.readouterr().err
    x, ok, _ = load_images(paths, 16, HALF, HALF, preprocess="pil")
    assert len(ok) == len(paths)


def _tiny_checkpoint(path: Path, num_classes: int = 2, mean: tuple[float, ...] = HALF) -> Path:
    model = vitkit.create_model("ViT-Ti_16", num_classes=num_classes, image_size=16, patch_size=8, num_layers=1,
                                hidden_size=16, num_heads=2, mlp_dim=16, mean=mean, std=HALF)
    with torch.no_grad():
        model.head.weight.normal_()
    vitkit.save_model(model, path)
    return path


def _folder(tmp_path: Path) -> Path:
    for i, n in enumerate(["jpeg_420.jpg", "png_rgba.png", "gif_still.gif", "bmp_rgb.bmp"]):
        d = tmp_path / "ds" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(REF / "images" / n, d / n)
    return tmp_path / "ds"


def test_eval_and_fewshot_record_the_preprocessing(tmp_path: Path, capsys) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "m.safetensors")
    spec = f"folder:{_folder(tmp_path)}"
    for pp in (None, "big_vision_precise"):
        out = tmp_path / f"out_{pp}"
        args = ["eval", "--model", str(ckpt), "--data", spec, "--out", str(out), "--num-workers", "0"]
        assert main(args + (["--preprocess", pp] if pp else [])) == 0
        rec = json.loads((out / "eval.json").read_text())
        assert rec["preprocess"] == (pp or "vit_jax")
        assert f"preprocessing {pp or 'vit_jax'}" in capsys.readouterr().out
    out = tmp_path / "fs"
    assert main(["fewshot", "--model", str(ckpt), "--train", spec, "--test", spec, "--shots", "1", "--seeds", "1",
                 "--preprocess", "pil", "--out", str(out), "--num-workers", "0"]) == 0
    assert json.loads((out / "fewshot.json").read_text())["preprocess"] == "pil"


def test_predict_and_analyze_take_the_choice(tmp_path: Path, capsys) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "m.safetensors")
    folder = _folder(tmp_path)
    assert main(["predict", "--model", str(ckpt), str(folder), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["preprocess"] == "vit_jax" and len(rec["predictions"]) == 4
    assert main(["predict", "--model", str(ckpt), str(folder), "--json", "--preprocess", "big_vision"]) == 0
    assert json.loads(capsys.readouterr().out)["preprocess"] == "big_vision"
    assert main(["analyze", "--model", str(ckpt), "--images", str(folder), "--out", str(tmp_path / "an"),
                 "--num-images", "2", "--preprocess", "pil"]) == 0
    assert "preprocessing: pil" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "fewshot", "predict", "analyze"])
def test_every_command_offers_exactly_the_registered_names(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--preprocess NAME" in text and "vit_jax for checkpoints normalised to [-1, 1]" in text
    with pytest.raises(SystemExit):
        main([command, "--preprocess", "nope"])
    err = capsys.readouterr().err
    assert all(name in err for name in PREPROCESSINGS)


@pytest.mark.parametrize("preprocess", PREPROCESSINGS)
@pytest.mark.parametrize(("name", "data"), [("notes.jpg", b"not an image"), ("cut.png", b"\x89PNG\r\n\x1a\ngarbage")])
def test_an_unreadable_image_names_the_file_and_the_reason(tmp_path, preprocess, name, data):
    """Issue 29: the message names the file and why the decoder refused it, not Pillow's in-memory buffer."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(vitkit.UserError) as e:
        load_image(path, 8, HALF, HALF, preprocess=preprocess)
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot read the image (") and "BytesIO" not in msg and "0x" not in msg, msg
    assert "Pillow recognises no" in msg or "decode_image reads JPEG, PNG" in msg, msg

"""``vitkit analyze --html``: the explorer page beside the PNGs; ``--layers`` chooses its stored layers."""

import json

import numpy as np
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import main


def _setup(tmp_path):
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=3,
                                hidden_size=32, num_heads=2, mlp_dim=64)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    ckpt = vitkit.save_model(model, tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    return str(ckpt), str(tmp_path / "a.png")


def test_html_page_with_chosen_layers(tmp_path, capsys):
    ckpt, png = _setup(tmp_path)
    page = tmp_path / "page" / "explorer.html"
    assert main(["analyze", "--model", ckpt, png, "--out", str(tmp_path / "f"), "--html", str(page),
                 "--layers", "1,3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["explorer"]["html"] == str(page) and res["explorer"]["layers"] == [1, 3]
    assert res["explorer"]["bytes"] == page.stat().st_size and (tmp_path / "f" / "rollout.png").exists()
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and '"layers":[1,3]' in text
    # Default: every layer of a small model fits; the text output says where the page is.
    assert main(["analyze", "--model", ckpt, png, "--out", str(tmp_path / "f"), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {page}" in out and "layers 1, 2, 3" in out and "open it in a browser" in out


def test_layer_errors_are_one_line_user_errors(tmp_path, capsys):
    ckpt, png = _setup(tmp_path)
    out = str(tmp_path / "f")
    assert main(["analyze", "--model", ckpt, png, "--out", out, "--layers", "1"]) == 2
    assert "give --html" in capsys.readouterr().err
    assert main(["analyze", "--model", ckpt, png, "--out", out, "--html", str(tmp_path / "p.html"),
                 "--layers", "4"]) == 2
    assert "numbered 1 to 3" in capsys.readouterr().err
    assert not (tmp_path / "p.html").exists()

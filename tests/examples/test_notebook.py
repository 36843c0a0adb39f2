"""examples/finetune.ipynb runs, cell by cell, on tiny data (nbclient), so the tutorial cannot rot."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "finetune.ipynb"


def _folder(root: Path) -> Path:
    """my_images/{train,test}/{red,blue}/*.png: two colour classes a few steps can tell apart."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls, channel in (("red", 0), ("blue", 2)):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 80, (20, 20, 3), dtype=np.uint8)
                a[:, :, channel] += 150
                Image.fromarray(a).save(d / f"{i}.png")
    return root


def test_the_tutorial_runs(tmp_path):
    torch.manual_seed(0)
    pretrained = vitkit.create_model("ViT-Ti_16", num_classes=5, image_size=32, patch_size=8, num_layers=2,
                                     hidden_size=32, num_heads=2, mlp_dim=64, representation_size=32)
    src = vitkit.save_model(pretrained, tmp_path / "pretrained.safetensors")
    data = _folder(tmp_path / "my_images")
    out = tmp_path / "run"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    params[0].source = (f"PRETRAINED = {str(src)!r}\nDATA = 'folder:{data}'\nOUT = {str(out)!r}\nIMAGE_SIZE = 32\n"
                        "STEPS = 3\nBATCH = 8\nLR = 0.01")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "same top-1: True" in text and "test top-1" in text
    assert (out / "model.safetensors").is_file() and (out / "model.onnx").is_file()
    assert (out / "rollout.png").stat().st_size > 1000 and (out / "hub" / "config.json").is_file()
    assert vitkit.load_model(out).config.class_names == ("blue", "red")

"""The README's "Your own data objects" example runs: the block as written, with a tiny checkpoint in place of the
catalogue name (no download), a small image size and run length, and a tiny ``datasets`` DatasetDict as ``pets``."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit

README = Path(__file__).resolve().parents[1] / "README.md"


def _block() -> str:
    text = README.read_text()
    section = text[text.index("### Your own data objects"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_fine_tunes_on_a_datasets_dataset(tmp_path: Path, monkeypatch, capsys) -> None:
    datasets = pytest.importorskip("datasets", reason="the optional extra vitkit[hf] is not installed")
    datasets.disable_progress_bars()
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    tiny = vitkit.create_model("ViT-Ti_16", num_classes=5, image_size=16, patch_size=4, num_layers=1,
                               hidden_size=32, num_heads=2, mlp_dim=64)
    vitkit.save_model(tiny, tmp_path / "pretrained.safetensors")
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "hamster"]

    def split(n: int):
        labels = np.arange(n) % 3
        images = []
        for k in labels:  # a class is a colour, with noise
            a = np.clip(rng.normal(80 * k + 40, 30, (20, 24, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            images.append({"bytes": buf.getvalue(), "path": None})
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        return datasets.Dataset.from_dict({"image": images, "label": labels.tolist()}, features=feats)

    datasets.DatasetDict(train=split(48), test=split(12)).save_to_disk("pets")
    code = _block()
    for old, new in {"model.init=augreg/Ti_16": "model.init=pretrained.safetensors",
                     "data.image_size=224": "data.image_size=16",
                     '"data.batch_size=64"': '"data.batch_size=8", "data.micro_batch_size=8", "data.num_workers=0"',
                     "schedule.steps=500": "schedule.steps=2"}.items():
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    exec(compile(code, "README.md", "exec"), {})
    top1, again = capsys.readouterr().out.split()
    assert top1 == again  # the run's own evaluation and evaluate_accuracy on the saved model agree
    model = vitkit.load_model(tmp_path / "runs" / "pets")
    assert list(model.config.class_names) == names and model.config.num_classes == 3

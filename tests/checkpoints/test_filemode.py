"""Checkpoints are written with the mode the umask gives, in every format (safetensors alone wrote 0600)."""

import os
import stat

import pytest

import vitkit
from vitkit.checkpoints.filemode import current_umask


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


@pytest.mark.parametrize("name,fmt", [("m.safetensors", None), ("m.npz", None), ("m.pth", None), ("hf", "hf")])
def test_written_files_follow_the_umask(tmp_path, name, fmt, umask_027):
    assert current_umask() == 0o027
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=1,
                                hidden_size=16, num_heads=2, mlp_dim=32)
    out = vitkit.save_model(model, tmp_path / name, format=fmt)
    files = [out] if out.is_file() else [f for f in out.iterdir() if f.is_file()]
    assert files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f

"""Class names survive a round trip through an official .npz (which cannot hold them) in NAME.classes.json."""

import json

import pytest

import vitkit
from vitkit.checkpoints.errors import CheckpointError
from vitkit.cli.main import main

NAMES = ("cat", "dog", "emu")


def _model(names=NAMES):
    m = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=8, patch_size=4, hidden_size=16, mlp_dim=32,
                            num_heads=2, num_layers=1)
    if names:
        m.config = m.config.replace(class_names=names)
    return m


def test_npz_keeps_class_names_beside_it(tmp_path):
    path = tmp_path / "vit.npz"
    vitkit.save_model(_model(), path)
    assert json.loads((tmp_path / "vit.classes.json").read_text())["class_names"] == list(NAMES)
    assert vitkit.load_model(path).config.class_names == NAMES
    # a new head (another number of classes): the names were the old head's
    assert vitkit.load_model(path, num_classes=5).config.class_names is None
    # saved again without names: the stale file goes, it would name another model's classes
    vitkit.save_model(_model(names=None), path)
    assert not (tmp_path / "vit.classes.json").exists()
    assert vitkit.load_model(path).config.class_names is None


def test_a_broken_class_name_file_is_named(tmp_path):
    path = tmp_path / "vit.npz"
    vitkit.save_model(_model(), path)
    (tmp_path / "vit.classes.json").write_text('{"class_names": [1, 2, 3]}')
    with pytest.raises(CheckpointError, match="vit.classes.json: class_names must be a list of strings"):
        vitkit.load_model(path)


def test_convert_to_npz_says_where_the_names_went(tmp_path, capsys):
    src = tmp_path / "m.safetensors"
    vitkit.save_model(_model(), src)
    assert main(["convert", "--model", str(src), "--out", str(tmp_path / "m.npz")]) == 0
    assert f"wrote   {tmp_path / 'm.classes.json'} (the 3 class names" in capsys.readouterr().out
    assert vitkit.load_model(tmp_path / "m.npz").config.class_names == NAMES

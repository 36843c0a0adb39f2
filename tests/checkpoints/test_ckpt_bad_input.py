"""Bad checkpoints: clear errors naming the file/tensor and the mismatch; nothing is unpickled."""

import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from flax_reference import make_official_params

import vitkit
from vitkit.checkpoints import CheckpointError
from vitkit.cli.main import main


@pytest.fixture
def good_npz(tmp_path):
    path = tmp_path / "good.npz"
    np.savez(path, **make_official_params())
    return path


def test_truncated_npz(tmp_path, good_npz):
    data = good_npz.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        vitkit.load_model(bad)


def test_corrupt_npz_member(tmp_path, good_npz):
    data = bytearray(good_npz.read_bytes())
    # Flip bytes inside a stored array: the zip CRC check must catch it, naming the tensor.
    i = data.index(b"Transformer/encoderblock_1/LayerNorm_2/scale.npy") + 200
    data[i:i + 8] = bytes(8)
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt.npz.*(corrupt|truncated)"):
        vitkit.load_model(bad)


@pytest.mark.parametrize("name,content", [
    # Seeded bytes: the same test ids in every pytest-xdist worker.
    ("random.bin", random.Random(1).randbytes(4096)), ("notes.txt", b"hello, I am not a model\n"),
    ("random.npz", random.Random(2).randbytes(4096)), ("random.safetensors", random.Random(3).randbytes(4096)),
], ids=["random.bin", "notes.txt", "random.npz", "random.safetensors"])
def test_unknown_or_garbage_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        vitkit.load_model(path)


def test_unknown_format_lists_known_formats(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="unknown checkpoint format") as e:
        vitkit.load_model(path)
    assert all(f"{name}:" in str(e.value) for name in ("vitkit", "npz", "hf", "timm"))


def test_missing_and_misshaped_tensors_are_listed_with_shapes(tmp_path):
    params = make_official_params()
    del params["Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"]
    params["Transformer/encoderblock_0/LayerNorm_2/scale"] = np.ones(7, np.float32)
    params["Transformer/extra/kernel"] = np.ones((2, 3), np.float32)
    path = tmp_path / "other.npz"
    np.savez(path, **params)
    with pytest.raises(CheckpointError) as e:
        vitkit.load_model(path)
    msg = str(e.value)
    assert "other.npz" in msg
    assert "missing tensors: Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias (32,)" in msg
    assert "unexpected tensors: Transformer/extra/kernel (2, 3)" in msg
    assert "shape mismatch for Transformer/encoderblock_0/LayerNorm_2/scale: checkpoint (7,), expected (32,)" in msg


def test_not_a_vit_npz(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, a=np.zeros(3), b=np.ones(2))
    with pytest.raises(CheckpointError, match="not an official ViT"):
        vitkit.load_model(path)


def test_object_arrays_in_npz_are_not_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, embedding=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="objects.npz"):
        vitkit.load_model(path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if unpickled


@pytest.mark.parametrize("suffix", [".pth", ".bin"])
def test_pickles_are_refused_not_executed(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    torch.save({"patch_embed.proj.weight": torch.zeros(1), "payload": _Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        vitkit.load_model(path)
    assert not marker.exists()
    raw = tmp_path / f"raw{suffix}"
    raw.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(CheckpointError, match=r"raw\.|refusing"):
        vitkit.load_model(raw)
    assert not marker.exists()


def test_hf_directory_of_another_architecture(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                 image_size=16, patch_size=4, num_labels=3)
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "hf")
    cfg_file = tmp_path / "hf" / "config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"intermediate_size": 64', '"intermediate_size": 48'))
    with pytest.raises(CheckpointError, match=r"shape mismatch for blocks\.0\.mlp\.fc1\.weight: checkpoint \(64, 32\)"):
        vitkit.load_model(tmp_path / "hf")


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, good_npz):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 garbage")
    cases = [
        ([str(tmp_path / "missing.npz"), str(tmp_path / "o.safetensors")], "not found"),
        ([str(bad), str(tmp_path / "o.safetensors")], "bad.npz"),
        ([str(good_npz), str(tmp_path / "o.xyz")], "cannot tell the output format"),
        ([str(good_npz), str(tmp_path / "o.npz"), "--format", "nope"], "unknown checkpoint format 'nope'"),
    ]
    for argv, expect in cases:
        assert main(["convert", *argv]) == 2
        err = capsys.readouterr().err
        assert expect in err, err
        assert err.startswith("vitkit convert: error:") and "Traceback" not in err
        assert not any((tmp_path / n).exists() for n in ("o.safetensors", "o.xyz", "o.npz"))


def test_cli_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(os.urandom(100))
    r = subprocess.run([sys.executable, "-m", "vitkit", "convert", str(bad), str(tmp_path / "o.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "garbage.pth" in r.stderr

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
    # The message names the config.json field and the tensor that contradicts it.
    with pytest.raises(CheckpointError, match=r"hf: config field intermediate_size \(vitkit mlp_dim\)=48 does not fit "
                                              r"the weights: blocks\.0\.mlp\.fc1\.weight has shape \(64, 32\)"):
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


# -- issue 20: integrity, verify=False, old files, what a loaded model is ---------------------------------
def _tiny_model():
    torch.manual_seed(0)
    m = vitkit.create_model("ViT-Ti_16", num_layers=2, hidden_size=32, mlp_dim=64, num_heads=2, patch_size=4,
                            image_size=8, num_classes=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_flipped_tensor_byte_is_caught_unless_verify_false(tmp_path):
    from safetensors import safe_open

    m = _tiny_model()
    path = vitkit.save_model(m, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert len(f.metadata()["content_sha256"]) == 64
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # inside the last tensor's data
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flipped\.safetensors: the tensors and config do not match the "
                                              r"content_sha256"):
        vitkit.load_model(bad)
    loaded = vitkit.load_model(bad, verify=False)  # the escape for huge files: loads what is there
    assert not _same(loaded, m)
    assert _same(vitkit.load_model(path), m)


def test_nan_weights_are_refused_naming_the_tensor(tmp_path):
    m = _tiny_model()
    with torch.no_grad():
        m.blocks[1].mlp.fc2.weight[0, 0] = float("nan")
    path = vitkit.save_model(m, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: NaN or infinite values in "
                                              r"blocks\.1\.mlp\.fc2\.weight \(1 of 2048 values\)"):
        vitkit.load_model(path)
    assert torch.isnan(vitkit.load_model(path, verify=False).blocks[1].mlp.fc2.weight[0, 0])


def test_vitkit_files_of_version_1_without_a_hash_still_load(tmp_path):
    from safetensors.torch import save_file

    m = _tiny_model()
    path = tmp_path / "old.safetensors"  # what vitkit wrote before format version 2
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path),
              metadata={"format": "vitkit", "format_version": "1", "config": m.config.to_json()})
    assert _same(vitkit.load_model(path), m)


def test_loaded_parameters_are_trainable_and_not_tied(tmp_path):
    # Loading assigns the file's tensors to a meta-built model: they must be ordinary, separate parameters.
    m = _tiny_model()
    for path in (vitkit.save_model(m, tmp_path / "m.safetensors"), vitkit.save_model(m, tmp_path / "m.npz")):
        loaded = vitkit.load_model(path)
        params = list(loaded.parameters())
        assert params and all(p.requires_grad and p.is_leaf and p.device.type == "cpu" for p in params)
        ptrs = [p.untyped_storage().data_ptr() for p in params]
        assert len(set(ptrs)) == len(ptrs)
        assert not any(t.is_meta for t in [*params, *loaded.buffers()])
        loaded.train()(torch.rand(2, 3, 8, 8)).sum().backward()
        assert all(p.grad is not None for p in params if p is not loaded.head.weight)


def test_hostile_sizes_are_refused_by_field_before_building(tmp_path, monkeypatch):
    # A config that would need ~200 GB (10**6 blocks) or 1.6 PB (10**7 px) is refused by its field,
    # and nothing is built: no model is constructed at all, not even on the meta device.
    import json as _json

    from safetensors.torch import save_file

    from vitkit.checkpoints import validate

    m = _tiny_model()
    built = []
    monkeypatch.setattr(validate, "build_model", lambda cfg: built.append(cfg))
    for field, value, expect in (("num_layers", 10**6, r"num_layers=1000000: expected an integer in \[0, 1024\]"),
                                 ("image_size", 10**7, r"image_size=10000000: expected an integer in \[1, 65536\]"),
                                 ("num_layers", 1000, r"num_layers=1000 does not fit the weights: the file holds 2 "
                                                      r"encoder blocks"),
                                 ("image_size", 60000, r"image_size=\(60000, 60000\) does not fit the weights")):
        cfg = {**m.config.to_dict(), field: value}
        path = tmp_path / f"{field}.safetensors"
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path),
                  metadata={"format": "vitkit", "format_version": "1", "config": _json.dumps(cfg)})
        with pytest.raises(CheckpointError, match=rf"{field}\.safetensors: .*{expect}"):
            vitkit.load_model(path)
    assert built == []

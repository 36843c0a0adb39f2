"""``vitkit convert`` between formats: the logits survive every hop."""

import numpy as np
import pytest
import torch
from flax_reference import forward, make_official_params

import vitkit
from vitkit.checkpoints.official_npz import read_arrays
from vitkit.cli.main import main


def _logits(path, x, **kw):
    with torch.no_grad():
        return vitkit.load_model(path, **kw)(x).numpy()


def test_convert_chain_npz_vitkit_hf_timm_npz(tmp_path, capsys):
    pytest.importorskip("transformers")
    params = make_official_params(num_classes=4)
    src = tmp_path / "src.npz"
    np.savez(src, **params)
    x_nhwc = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3))
    x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).float().contiguous()
    want = forward(params, x_nhwc, "token")

    assert main(["convert", str(src), str(tmp_path / "a.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "src.npz (npz)" in out and "a.safetensors (vitkit)" in out and "4 classes" in out
    assert main(["convert", str(tmp_path / "a.safetensors"), str(tmp_path / "hf"), "--format", "hf"]) == 0
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "b.pth")]) == 0
    assert main(["convert", str(tmp_path / "b.pth"), str(tmp_path / "c.npz"), "--num-heads", "4",
                 "--gelu", "tanh", "--npz-naming", "linen"]) == 0
    capsys.readouterr()
    for p, kw in [("a.safetensors", {}), ("hf", {}), ("b.pth", {"num_heads": 4, "gelu": "tanh"}), ("c.npz", {})]:
        np.testing.assert_allclose(_logits(tmp_path / p, x, **kw), want, atol=1e-5, err_msg=p)
    final = read_arrays(tmp_path / "c.npz")
    assert any("MlpBlock_0" in k for k in final)
    assert set(final) != set(params)  # linen names, yet the same values under the released names:
    np.testing.assert_array_equal(final["Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel"],
                                  params["Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"])


def test_convert_adapts_for_a_new_task(tmp_path, capsys):
    src = tmp_path / "src.npz"
    np.savez(src, **make_official_params(rep=16, num_classes=4, grid=4, patch=4))
    assert main(["convert", str(src), str(tmp_path / "ft.npz"), "--num-classes", "7", "--image-size", "24"]) == 0
    assert "num_classes=7" in capsys.readouterr().out
    arrays = read_arrays(tmp_path / "ft.npz")
    assert "pre_logits/kernel" not in arrays and arrays["head/kernel"].shape == (32, 7)
    assert not arrays["head/kernel"].any()
    assert arrays["Transformer/posembed_input/pos_embedding"].shape == (1, 37, 32)
    # Refuses to overwrite without --force.
    assert main(["convert", str(src), str(tmp_path / "ft.npz")]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("out,fmt", [("new/sub/x.safetensors", []), ("new/hf_dir", ["--format", "hf"])])
def test_convert_makes_the_output_folder(tmp_path, capsys, out, fmt):
    if fmt:
        pytest.importorskip("transformers")
    src = tmp_path / "src.npz"
    np.savez(src, **make_official_params(num_classes=4))
    assert main(["convert", "--model", str(src), "--out", str(tmp_path / out), *fmt]) == 0, capsys.readouterr().err
    assert vitkit.load_model(tmp_path / out).config.num_classes == 4

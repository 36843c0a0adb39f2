"""int8 ONNX (onnxruntime quantization): the graph is quantized and its logits stay close to PyTorch's fp32."""

import collections

import numpy as np
import pytest
import torch

import vitkit
from vitkit.cli.main import main
from vitkit.export import export_onnx_int8

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _tiny(**kw):
    torch.manual_seed(0)
    args = dict(num_classes=5, image_size=16, patch_size=4, num_layers=2, hidden_size=32, num_heads=2, mlp_dim=64)
    model = vitkit.create_model("ViT-Ti_16", **{**args, **kw}).eval()
    torch.nn.init.normal_(model.head.weight)  # a zero head would make every logit the bias
    return model


def _ops(path):
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _agreement(path, model, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    return float(np.mean(got.argmax(1) == want.argmax(1))), float(np.abs(got - want).max() / np.ptp(want))


def test_dynamic_int8_quantizes_the_weight_products_and_keeps_top1(tmp_path):
    model = _tiny()
    res = export_onnx_int8(model, tmp_path / "q.onnx")
    assert res.method == "dynamic" and res.checked_on == "random images" and res.image_size == (16, 16)
    ops = _ops(tmp_path / "q.onnx")
    # qkv, projection, two MLP layers per block: int8 products with weights quantized ahead of time
    assert sum(ops[k] for k in ("MatMulInteger", "DynamicQuantizeMatMul")) >= 4 * 2, ops
    assert ops["MatMul"] >= 2 * 2  # attention's activation x activation products stay fp32
    # Independent inputs (a new seed and batch size): top-1 agrees, logits within a loose tolerance.
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    agree, rel = _agreement(tmp_path / "q.onnx", model, x)
    assert agree >= 0.9 and rel < 0.1, (agree, rel)


def test_static_int8_with_calibration_images_on_the_hybrid(tmp_path):
    from vitkit.models.config import ResNetConfig

    torch.manual_seed(0)
    model = vitkit.create_model("R+ViT-Ti_16", num_classes=5, image_size=32, patch_size=1, num_layers=1,
                                hidden_size=32, num_heads=2, mlp_dim=64,
                                resnet=ResNetConfig(num_layers=(1,), width_factor=1)).eval()
    torch.nn.init.normal_(model.head.weight)
    calib = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    res = export_onnx_int8(model, tmp_path / "q.onnx", calibration=calib)
    assert res.method == "static" and res.checked_on == "calibration images" and res.bytes < res.fp32_bytes
    ops = _ops(tmp_path / "q.onnx")
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0, ops
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    agree, rel = _agreement(tmp_path / "q.onnx", model, x)
    assert agree >= 0.8 and rel < 0.2, (agree, rel)


def test_bad_calibration_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"calibration images have shape \(4, 3, 8, 8\); expected \(N, 3, 16, 16\)"):
        export_onnx_int8(_tiny(), tmp_path / "q.onnx", calibration=torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="static int8 quantization needs calibration images"):
        export_onnx_int8(_tiny(), tmp_path / "q.onnx", method="static")
    assert not (tmp_path / "q.onnx").exists()


def test_cli_int8_dynamic_and_static_from_a_data_spec(tmp_path, capsys):
    model = _tiny(image_size=8, num_classes=10)
    ckpt = vitkit.save_model(model, tmp_path / "m.safetensors")
    assert main(["export", "--model", str(ckpt), "--quantize", "int8", str(tmp_path / "d.onnx")]) == 0
    out = capsys.readouterr().out
    assert "int8, dynamic" in out and "top-1 agreement" in out
    assert main(["export", "--model", str(ckpt), "--quantize", "int8", "--calibration", "digits",
                 "--calibration-images", "32", str(tmp_path / "s.onnx")]) == 0
    out = capsys.readouterr().out
    assert "int8, static, 32 calibration images" in out and "on 8 calibration images" in out
    assert _ops(tmp_path / "s.onnx")["QuantizeLinear"] > 0
    # --calibration without --quantize: one line naming the missing option
    assert main(["export", "--model", str(ckpt), "--calibration", "digits", str(tmp_path / "x.onnx")]) == 2
    assert "--quantize int8" in capsys.readouterr().err

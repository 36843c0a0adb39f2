"""ONNX round trip: onnxruntime reproduces PyTorch's logits at the export resolution."""

import numpy as np
import pytest
import torch

import vitkit
from vitkit.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _tiny():
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=2,
                                hidden_size=32, num_heads=2, mlp_dim=64).eval()
    torch.nn.init.normal_(model.head.weight)  # a zero head would make every logit the bias
    return model


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_round_trip_at_a_new_resolution(tmp_path, exporter):
    model = _tiny()
    res = export_onnx(model, tmp_path / "m.onnx", 24, exporter=exporter)
    assert res.exporter == exporter and res.image_size == (24, 24) and res.max_abs_diff <= 1e-4
    assert res.input_dependent  # the random head makes the logits depend on the image
    # The original model is untouched; the graph holds the resampled embeddings (no resize op).
    assert model.config.image_size == (16, 16)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert not {n.op_type for n in graph.node} & {"Resize", "Upsample"}
    # Independent check with a batch size not used at export time.
    ref = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=2,
                              hidden_size=32, num_heads=2, mlp_dim=64)
    ref.load_state_dict(model.state_dict())
    ref.set_image_size(24)
    ref.eval()
    x = torch.randn(3, 3, 24, 24)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = ref(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_bad_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not divisible"):
        export_onnx(_tiny(), tmp_path / "m.onnx", 18, exporter="torchscript")


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_hybrid_round_trip(tmp_path, exporter):
    # The hybrid stem's max-pool has an eager-only fast path (a custom autograd function) that
    # tracers must not see: both exporters get the plain pad + max-pool.
    from vitkit.models.config import ResNetConfig

    model = vitkit.create_model("R+ViT-Ti_16", num_classes=3, image_size=32, patch_size=1, num_layers=1,
                                hidden_size=32, num_heads=2, mlp_dim=64,
                                resnet=ResNetConfig(num_layers=(1,), width_factor=1)).eval()
    torch.nn.init.normal_(model.head.weight)
    res = export_onnx(model, tmp_path / "m.onnx", exporter=exporter)
    assert res.exporter == exporter and res.max_abs_diff <= 1e-4 and res.input_dependent

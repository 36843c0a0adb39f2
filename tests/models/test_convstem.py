"""The convolutional stem (Xiao et al. 2021): against torch.nn's own layers, in configs, files and exports."""

import json

import pytest
import torch
from torch import nn

import vitkit
from vitkit.checkpoints.errors import CheckpointError
from vitkit.models.config import ConfigFieldError, ViTConfig
from vitkit.models.convstem import ConvStem

STEM = dict(patch_size=1, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=1, stem_channels=(8, 16, 16),
            stem_strides=(1, 2, 2))


def _tiny(**kw):
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, **{**STEM, **kw})
    torch.nn.init.normal_(model.head.weight)  # a zero head would make every logit the bias
    return model


def _reference(stem: ConvStem) -> nn.Sequential:
    """The same stem from torch.nn's Conv2d / BatchNorm2d / ReLU, with the stem's weights and statistics."""
    layers = []
    for unit in stem.layers:
        conv = nn.Conv2d(unit.conv.in_channels, unit.conv.out_channels, 3, unit.conv.stride, 1, bias=False)
        bn = nn.BatchNorm2d(unit.conv.out_channels)
        conv.weight.data.copy_(unit.conv.weight)
        for name in ("weight", "bias"):
            getattr(bn, name).data.copy_(torch.randn_like(getattr(bn, name)))
            getattr(unit.norm, name).data.copy_(getattr(bn, name))
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        unit.norm.running_mean.copy_(bn.running_mean)
        unit.norm.running_var.copy_(bn.running_var)
        layers += [conv, bn, nn.ReLU()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("train", [True, False])
def test_stem_is_torch_conv_batchnorm_relu(train):
    torch.manual_seed(0)
    stem = ConvStem((8, 16), (1, 2), 3)
    ref = _reference(stem)
    stem.train(train), ref.train(train)
    x = torch.randn(4, 3, 12, 12, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = stem(x), ref(x_ref)
    assert y.shape == (4, 16, 6, 6)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stem.layers[0].conv.weight.grad, ref[0].weight.grad, atol=1e-4, rtol=1e-4)
    # Training updates the running statistics as nn.BatchNorm2d does (momentum 0.1, unbiased variance).
    torch.testing.assert_close(stem.layers[1].norm.running_var, ref[4].running_var)
    torch.testing.assert_close(stem.layers[1].norm.running_mean, ref[4].running_mean)


def test_state_dict_holds_only_floating_tensors():
    # nn.BatchNorm2d would add an int64 num_batches_tracked, which the loaders refuse in untrusted files.
    sd = _tiny().state_dict()
    assert {k for k in sd if k.startswith("conv_stem.")} >= {"conv_stem.layers.2.norm.running_var"}
    assert all(v.is_floating_point() for v in sd.values())


def test_config_fields():
    cfg = _tiny().config
    assert cfg.stem_reduction == 4 and cfg.stride == (4, 4) and cfg.num_tokens == 16 + 1
    assert ViTConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["stem_channels"] == [8, 16, 16]
    # Models without the stem write configs without its fields, as before the fields existed.
    assert "stem_channels" not in json.loads(ViTConfig().to_json())
    with pytest.raises(ConfigFieldError, match="one stride per convolution"):
        ViTConfig(stem_channels=(8, 16), stem_strides=(2,))
    with pytest.raises(ConfigFieldError, match="needs resnet=null"):
        vitkit.models.get_config("R+ViT-Ti_16").replace(stem_channels=(8,), stem_strides=(2,))
    with pytest.raises(ConfigFieldError, match="stem_strides=.*expected an integer in \\[1, 4\\]"):
        ViTConfig(stem_channels=(8,), stem_strides=(0,))
    with pytest.raises(ConfigFieldError, match="stem_channels=.*expected an integer, got str"):
        ViTConfig(stem_channels=("8",), stem_strides=(2,))
    with pytest.raises(ConfigFieldError, match="stem strides \\(1, 2, 2\\)"):
        _tiny().config.replace(image_size=18)


def test_forward_at_other_sizes_and_in_bf16():
    model = _tiny().eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", torch.bfloat16):
            half = model(x)
    assert full.shape == (2, 3)
    torch.testing.assert_close(half.float(), full, atol=0.1, rtol=0.05)


def test_safetensors_round_trip_and_mismatched_files(tmp_path):

    model = _tiny().eval()
    path = tmp_path / "m.safetensors"
    vitkit.save_model(model, path)
    back = vitkit.load_model(path).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    # The same tensors under a config with one stem convolution fewer, or none: refused, naming the field
    # (check_fits is the step every reader takes before building anything).
    from vitkit.checkpoints.validate import check_fits

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fewer = model.config.replace(stem_channels=(8, 16), stem_strides=(2, 2))
    with pytest.raises(CheckpointError, match=r"m.safetensors: config field stem_channels=\(8, 16\) does not fit "
                                              r"the weights: the file's convolutional stem has output channels "
                                              r"\(8, 16, 16\)"):
        check_fits(fewer, shapes, "m.safetensors")
    with pytest.raises(CheckpointError, match="stem_channels=\\(\\) does not fit the weights: the file's conv"):
        check_fits(model.config.replace(stem_channels=(), stem_strides=(), image_size=4), shapes, "m.safetensors")
    plain = {k: v for k, v in shapes.items() if not k.startswith("conv_stem.")}
    with pytest.raises(CheckpointError, match="the file has no convolutional stem"):
        check_fits(model.config, plain, "m.safetensors")


def test_formats_without_a_stem_refuse_it(tmp_path):
    from vitkit.checkpoints.hf import hf_config_dict
    from vitkit.checkpoints.official_npz import model_to_params
    from vitkit.checkpoints.timm import to_timm_state_dict

    model = _tiny()
    with pytest.raises(CheckpointError, match="no convolutional stem.*save as .safetensors"):
        model_to_params(model)
    with pytest.raises(CheckpointError, match="convolutional stems"):
        to_timm_state_dict(model)
    with pytest.raises(CheckpointError, match="convolutional-stem models have no HF ViT form"):
        hf_config_dict(model.config)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_onnx_round_trip(tmp_path, exporter):
    pytest.importorskip("onnxruntime")
    from vitkit.export import export_onnx

    res = export_onnx(_tiny().eval(), tmp_path / "m.onnx", exporter=exporter)
    assert res.max_abs_diff <= 1e-4 and res.input_dependent

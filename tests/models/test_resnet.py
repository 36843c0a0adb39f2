"""The hybrid stem's max-pool: the channels-last fast path must be the plain one, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from vitkit.models.resnet import max_pool_same, pad_same


def _reference(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), 3, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(16, 16), (17, 12), (7, 9)])
def test_max_pool_same_matches_plain_pool_and_gradient(dtype: torch.dtype, size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    # ReLU output: many exact ties at zero, where the gradient must still go to the same single element.
    base = torch.randn(3, 5, *size, generator=g).relu().to(dtype)
    upstream = torch.randn(3, 5, (size[0] + 1) // 2, (size[1] + 1) // 2, generator=g).to(dtype)
    outs, grads = [], []
    for fn in (max_pool_same, _reference):
        x = base.clone().requires_grad_(True)
        y = fn(x, 3, 2) if fn is max_pool_same else fn(x)
        y.backward(upstream)
        assert y.is_contiguous() and x.grad is not None and x.grad.is_contiguous()
        outs.append(y.detach())
        grads.append(x.grad)
    assert outs[0].shape == outs[1].shape
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0], grads[1])


def test_max_pool_same_keeps_channels_last_input_on_the_plain_path() -> None:
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    assert torch.equal(max_pool_same(x, 3, 2), _reference(x))


def test_channels_last_pool_is_chosen_where_it_measured_faster() -> None:
    from vitkit.models.resnet import _channels_last_pool_pays

    small = torch.zeros(2, 4, 8, 8)
    big = torch.zeros(1, 1, 2049, 2049)  # > 4M elements
    assert _channels_last_pool_pays(small)
    assert _channels_last_pool_pays(big)  # no gradient: forward only
    assert _channels_last_pool_pays(small.clone().requires_grad_(True))
    assert not _channels_last_pool_pays(big.clone().requires_grad_(True))
    assert _channels_last_pool_pays(big.to(torch.bfloat16).requires_grad_(True))
    with torch.no_grad():
        assert _channels_last_pool_pays(big.clone().requires_grad_(True))
    assert not _channels_last_pool_pays(small.contiguous(memory_format=torch.channels_last))
    assert not _channels_last_pool_pays(small[:, :, :, :7])  # not contiguous


# -- non-integer width factors, as the official ResNetStage computes them: int(64 * width_factor) -----------------

def _flax_reference():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
    import flax_reference

    return flax_reference


def test_half_width_official_hybrid_loads_and_matches_the_flax_reference(tmp_path) -> None:
    import numpy as np

    import vitkit

    ref = _flax_reference()
    params = ref.make_official_params(seed=7, resnet=(1, 1), width=32, patch=1)  # width_factor 0.5
    path = tmp_path / "r_half.npz"
    np.savez(path, **params)
    model = vitkit.load_model(path)
    assert model.config.resnet.width_factor == 0.5 and model.config.resnet.width == 32
    x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3))
    want = ref.forward(params, x, "token")
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2).float().contiguous()).numpy()
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor,width", [(0.5, 32), (1.5, 96), (2, 128)])
def test_create_model_takes_float_width_factors(factor: float, width: int) -> None:
    import vitkit

    model = vitkit.create_model("R50+ViT-B_16", num_classes=3, hidden_size=32, num_heads=2, mlp_dim=32, num_layers=1,
                                resnet={"num_layers": (1,), "width_factor": factor}, image_size=32)
    assert model.resnet.conv_root.weight.shape[0] == width
    assert model.resnet.out_channels == width * 4
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    again = type(model.config).from_json(model.config.to_json())
    assert again == model.config


@pytest.mark.parametrize("factor", [0.25, 0.75, 0, -1, float("nan")])
def test_width_factors_the_group_norms_cannot_take_are_refused(factor: float) -> None:
    from vitkit.models.config import ResNetConfig

    with pytest.raises(ValueError, match="width_factor"):
        ResNetConfig(num_layers=(1,), width_factor=factor)

"""Rollout and mean attention distance on hand-made attention, against independent loops."""

import math

import numpy as np
import pytest
import torch

import vitkit
from vitkit.analysis import attention_rollout, mean_attention_distance


def _uniform(b, h, t):
    return torch.full((b, h, t, t), 1.0 / t)


def _loop_rollout(atts, has_cls):
    """Abnar & Zuidema written out with plain Python loops over numpy arrays."""
    b, _, t, _ = atts[0].shape
    out = []
    for n in range(b):
        joint = None
        for a in atts:
            a = a[n].double().numpy()
            heads = a.shape[0]
            m = np.zeros((t, t))
            for i in range(t):
                for j in range(t):
                    m[i, j] = sum(a[k, i, j] for k in range(heads)) / heads + (1.0 if i == j else 0.0)
                m[i] /= m[i].sum()
            joint = m if joint is None else m @ joint
        if has_cls:
            out.append(joint[0, 1:])
        else:
            out.append(np.array([sum(joint[i, j] for i in range(t)) / t for j in range(t)]))
    return np.stack(out)


def test_uniform_attention_gives_a_uniform_map():
    for t in (17, 16):  # with and without class token
        r = attention_rollout([_uniform(2, 3, t)] * 3)
        assert r.shape == (2, 16)
        np.testing.assert_allclose(r.numpy(), r[0, 0].item(), rtol=1e-6)


def test_attention_to_one_patch_peaks_there():
    t, target = 17, 1 + 6  # patch 6 (token 7)
    a = torch.zeros(1, 2, t, t)
    a[..., target] = 1.0
    r = attention_rollout([a, a])[0]
    assert int(r.argmax()) == 6
    assert torch.all(r[torch.arange(16) != 6] == 0)


@pytest.mark.parametrize("t,has_cls", [(10, True), (9, False)])
def test_rollout_matches_a_loop_implementation(t, has_cls):
    g = torch.Generator().manual_seed(1)
    atts = [torch.rand(2, 3, t, t, generator=g).softmax(-1) for _ in range(3)]
    np.testing.assert_allclose(attention_rollout(atts).numpy(), _loop_rollout(atts, has_cls), rtol=1e-5, atol=1e-7)


def test_rollout_on_model_attention():
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=2,
                                hidden_size=32, num_heads=2, mlp_dim=64).eval()
    with torch.no_grad():
        atts = model.get_attention_maps(torch.randn(2, 3, 16, 16))
    r = attention_rollout(atts, model.config.num_prefix_tokens)
    np.testing.assert_allclose(r.numpy(), _loop_rollout(atts, True), rtol=1e-5, atol=1e-7)


def test_only_self_attention_has_zero_distance():
    for t in (17, 16):  # with and without class token
        a = torch.eye(t).expand(2, 3, t, t).clone()
        d = mean_attention_distance([a, a], patch_size=16)
        assert d.shape == (2, 3)
        assert torch.all(d == 0)


def test_all_to_the_corner_patch_gives_the_hand_computed_distance():
    # 2x2 grid of 16-px patches, no class token; every query attends only to patch (0, 0):
    # distances 0, 16, 16, 16*sqrt(2) -> mean 8 + 4*sqrt(2).
    a = torch.zeros(1, 1, 4, 4)
    a[..., 0] = 1.0
    d = mean_attention_distance([a], patch_size=16)
    assert d.item() == pytest.approx(8 + 4 * math.sqrt(2), rel=1e-6)


def test_neighbour_pattern_with_class_token_renormalised_or_not():
    # 3x3 grid, patch 4 px; each patch query: 0.2 to the class token, 0.4 to itself, 0.4 to its horizontal
    # neighbour (right, or left in the last column): distance 4 px with weight 0.4.
    side, p = 3, 4
    t = side * side + 1
    a = torch.zeros(1, 1, t, t)
    a[0, 0, 0, :] = 1.0 / t  # class-token query: excluded
    for r in range(side):
        for c in range(side):
            q = 1 + r * side + c
            n = 1 + r * side + (c + 1 if c + 1 < side else c - 1)
            a[0, 0, q, 0] = 0.2
            a[0, 0, q, q] = 0.4
            a[0, 0, q, n] = 0.4
    renorm = mean_attention_distance([a], patch_size=p)
    raw = mean_attention_distance([a], patch_size=p, renormalize=False)
    assert renorm.item() == pytest.approx(0.5 * 4, rel=1e-6)
    assert raw.item() == pytest.approx(0.4 * 4, rel=1e-6)


def test_bad_token_counts_are_reported():
    with pytest.raises(ValueError, match="neither a square"):
        attention_rollout([_uniform(1, 1, 7)])
    with pytest.raises(ValueError, match="empty"):
        mean_attention_distance([], 16)

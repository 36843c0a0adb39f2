import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitkit.models import ViTConfig, create_model, get_config, list_models, resample_posemb
from vitkit.models.flops import count_params
from vitkit.models.resnet import same_padding

TINY = dict(hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, patch_size=4, image_size=16, num_classes=5)


def tiny(**kw):
    cfg = dict(TINY)
    cfg.update(kw)
    return create_model("ViT-B_16", **cfg)


def official_param_count(cfg: ViTConfig) -> int:
    """Parameter count from the shapes of the official Flax parameter tree, written out by hand."""
    d, mlp, L = cfg.hidden_size, cfg.mlp_dim, cfg.num_layers
    n = 0
    c_in = cfg.in_chans
    if cfg.resnet is not None:
        w = 64 * cfg.resnet.width_factor
        n += 7 * 7 * c_in * w + 2 * w  # conv_root + gn_root
        chans = w
        for i, units in enumerate(cfg.resnet.num_layers):
            f = w * 2**i
            for u in range(units):
                if u == 0:  # conv_proj + gn_proj
                    n += chans * 4 * f + 2 * 4 * f
                n += chans * f + 2 * f + 9 * f * f + 2 * f + f * 4 * f + 2 * 4 * f
                chans = 4 * f
        c_in = chans
    p = cfg.patch_size
    n += p[0] * p[1] * c_in * d + d  # embedding
    n += d if cfg.classifier == "token" else 0  # cls
    n += cfg.num_tokens * d  # pos_embedding
    block = 2 * 2 * d + 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    n += L * block + 2 * d  # blocks + encoder_norm
    feat = d
    if cfg.representation_size:
        n += d * cfg.representation_size + cfg.representation_size
        feat = cfg.representation_size
    n += feat * cfg.num_classes + cfg.num_classes
    return n


PUBLISHED = {  # parameter counts at 224 px with 1000 classes, as published for the official models
    "ViT-B_16": 86_567_656, "ViT-L_16": 304_326_632, "ViT-H_14": 632_045_800,
}


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith("BiT")])
def test_param_count_matches_official_layout(name):
    cfg = get_config(name, num_classes=1000, image_size=224)
    assert count_params(cfg) == official_param_count(cfg)
    if name in PUBLISHED:
        assert count_params(cfg) == PUBLISHED[name]


def test_paper_spelling_and_errors():
    assert get_config("ViT-B/16") == get_config("ViT-B_16")
    assert get_config("R50+ViT-B/16").resnet is not None
    with pytest.raises(KeyError, match="unknown model name"):
        get_config("ViT-Q/3")
    with pytest.raises(TypeError, match="unknown model option"):
        get_config("ViT-B_16", hiden_size=3)


def test_official_initialisers():
    m = create_model("ViT-B_16", num_classes=10, head_bias_init=-2.0)
    assert torch.count_nonzero(m.head.weight) == 0
    assert torch.all(m.head.bias == -2.0)
    assert torch.count_nonzero(m.cls) == 0
    assert abs(m.pos_embedding.std().item() - 0.02) < 0.001
    b = m.blocks[0]
    assert b.mlp.fc1.bias.abs().max() < 1e-5 and b.mlp.fc1.bias.std() > 1e-7
    limit = math.sqrt(6 / (768 + 768))
    q = b.attn.qkv.weight[:768]
    assert q.abs().max() <= limit and q.abs().max() > 0.95 * limit
    assert torch.count_nonzero(b.attn.qkv.bias) == 0
    # lecun_normal (truncated) for the patch embedding: std = sqrt(1 / fan_in).
    fan_in = 3 * 16 * 16
    assert abs(m.embedding.weight.std().item() - math.sqrt(1 / fan_in)) < 0.1 * math.sqrt(1 / fan_in)
    assert m.embedding.weight.abs().max() <= 2 * math.sqrt(1 / fan_in) / 0.87962566103423978 + 1e-6
    assert m.blocks[0].norm1.eps == 1e-6 and m.blocks[0].mlp.approximate == "tanh"


def manual_forward(m, x):
    """The ViT equations written out directly (no module calls), as a second implementation."""
    cfg = m.config
    p = cfg.patch_size[0]
    n, c, h, w = x.shape
    patches = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, p * p * c)
    kernel = m.embedding.weight.permute(0, 2, 3, 1).reshape(cfg.hidden_size, -1)
    t = patches @ kernel.T + m.embedding.bias
    if cfg.has_class_token:
        t = torch.cat([m.cls.expand(n, -1, -1), t], 1)
    t = t + m.pos_embedding
    for b in m.blocks:
        y = F.layer_norm(t, (cfg.hidden_size,), b.norm1.weight, b.norm1.bias, 1e-6)
        qkv = y @ b.attn.qkv.weight.T + b.attn.qkv.bias
        q, k, v = qkv.chunk(3, -1)
        hd = cfg.head_dim
        split = lambda z, hd=hd: z.reshape(n, -1, cfg.num_heads, hd).transpose(1, 2)
        a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(hd), -1)
        o = (a @ split(v)).transpose(1, 2).reshape(n, -1, cfg.hidden_size)
        t = t + o @ b.attn.proj.weight.T + b.attn.proj.bias
        y = F.layer_norm(t, (cfg.hidden_size,), b.norm2.weight, b.norm2.bias, 1e-6)
        hdn = y @ b.mlp.fc1.weight.T + b.mlp.fc1.bias
        hdn = 0.5 * hdn * (1 + torch.tanh(math.sqrt(2 / math.pi) * (hdn + 0.044715 * hdn**3)))
        t = t + hdn @ b.mlp.fc2.weight.T + b.mlp.fc2.bias
    t = F.layer_norm(t, (cfg.hidden_size,), m.norm.weight, m.norm.bias, 1e-6)
    if cfg.classifier == "token":
        t = t[:, 0]
    elif cfg.classifier == "gap":
        t = t.mean(1)
    if m.pre_logits is not None:
        t = torch.tanh(t @ m.pre_logits.weight.T + m.pre_logits.bias)
    return t @ m.head.weight.T + m.head.bias


@pytest.mark.parametrize("classifier", ["token", "gap", "unpooled", "token_unpooled"])
@pytest.mark.parametrize("rep", [None, 24])
def test_forward_matches_written_out_equations(classifier, rep):
    m = tiny(classifier=classifier, representation_size=rep).eval()
    with torch.no_grad():
        torch.nn.init.normal_(m.head.weight, std=0.1)
        x = torch.randn(2, 3, 16, 16)
        ref = manual_forward(m, x)
        out = m(x)
    expected_tokens = {"token": None, "gap": None, "unpooled": 16, "token_unpooled": 17}[classifier]
    assert out.shape == ((2, 5) if expected_tokens is None else (2, expected_tokens, 5))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_features_and_head_and_zero_classes():
    m = tiny().eval()
    x = torch.randn(2, 3, 16, 16)
    feats = m.forward_features(x)
    assert feats.shape == (2, 17, 32)
    torch.testing.assert_close(m.forward_head(feats), m(x))
    assert m.forward_head(feats, pre_logits=True).shape == (2, 32)
    assert tiny(num_classes=0).eval()(x).shape == (2, 32)


def test_attention_probabilities_sum_to_one_and_reproduce_fast_path():
    m = tiny().eval()
    x = torch.randn(2, 3, 16, 16)
    res = m.forward_intermediates(x, blocks=[0, -1], attentions=[0, 1])
    assert set(res.attentions) == {0, 1} and set(res.tokens) == {0, 1}
    for a in res.attentions.values():
        assert a.shape == (2, 4, 17, 17)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 17))
    torch.testing.assert_close(res.output, m(x), atol=1e-5, rtol=1e-5)
    maps = m.get_attention_maps(x)
    assert len(maps) == 2
    with pytest.raises(IndexError, match="out of range"):
        m.get_attention_maps(x, layers=[5])


def test_any_resolution_and_bad_inputs():
    m = tiny().eval()
    assert m(torch.randn(1, 3, 24, 32)).shape == (1, 5)
    with pytest.raises(ValueError, match="not divisible"):
        m(torch.randn(1, 3, 18, 16))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        m(torch.randn(1, 1, 16, 16))
    with pytest.raises(TypeError, match="float"):
        m(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_set_image_size_equals_on_the_fly_resampling():
    m = tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        on_the_fly = m(x)
        m.set_image_size(32)
        assert m.pos_embedding.shape == (1, 65, 32)
        torch.testing.assert_close(m(x), on_the_fly)


def test_posemb_resampling_matches_scipy_zoom_order1():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for gs_old, gs_new in [(14, 24), (7, 12), (24, 14), (3, 5)]:
        posemb = rng.standard_normal((1, 1 + gs_old * gs_old, 8)).astype(np.float32)
        grid = posemb[0, 1:].reshape(gs_old, gs_old, -1)
        ref = scipy_ndimage.zoom(grid, (gs_new / gs_old, gs_new / gs_old, 1), order=1)
        ref = np.concatenate([posemb[:, :1], ref.reshape(1, gs_new * gs_new, -1)], axis=1)
        out = resample_posemb(torch.from_numpy(posemb), None, (gs_new, gs_new), 1).numpy()
        np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)
        assert np.array_equal(out[:, 0], posemb[:, 0])  # class token kept


def test_bicubic_option_differs_but_keeps_shape():
    pe = torch.randn(1, 1 + 49, 4)
    a = resample_posemb(pe, None, (10, 10), 1, "bilinear")
    b = resample_posemb(pe, None, (10, 10), 1, "bicubic")
    assert a.shape == b.shape == (1, 101, 4) and not torch.allclose(a, b)


def test_tf_same_padding():
    # TensorFlow's documented rule: out = ceil(in / stride), pad_total = max((out-1)*stride + k - in, 0),
    # and the extra pixel goes after.
    assert same_padding(224, 7, 2) == (2, 3)
    assert same_padding(112, 3, 2) == (0, 1)
    assert same_padding(56, 1, 2) == (0, 0)
    assert same_padding(57, 3, 1) == (1, 1)


def test_hybrid_and_bit_shapes():
    m = create_model("R+ViT-Ti_16", num_classes=3, image_size=64, num_layers=1).eval()
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert m.config.grid_size == (2, 2)
    bit = create_model("BiT-R50x1", num_classes=3).eval()
    assert bit(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(TypeError, match="no attention"):
        bit.get_attention_maps(torch.randn(1, 3, 64, 64))


def test_models_create_model_points_to_the_door_for_weights():
    # vitkit.models builds architectures only (models/ never imports checkpoints/); weights go through the
    # public door, vitkit.create_model, which the error names.
    from vitkit.errors import UserError

    with pytest.raises(UserError, match=r"vitkit.create_model\('ViT-Ti_16', pretrained=...\)"):
        create_model("ViT-Ti_16", pretrained=True)

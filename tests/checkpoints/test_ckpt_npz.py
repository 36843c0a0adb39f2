"""Official .npz files: the numerical contract against an independent NumPy Flax reference."""

import numpy as np
import pytest
import torch
from flax_reference import forward, make_official_params, resample_posemb_official

import vitkit
from vitkit.checkpoints import CheckpointError
from vitkit.checkpoints.official_npz import read_arrays, save_npz

TOL = 1e-5


def _write(tmp_path, params, name="ckpt.npz"):
    path = tmp_path / name
    np.savez(path, **params)
    return path


def _images(size, n=2, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3))


def _ours(model, x_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).float().contiguous()).numpy()


CASES = {
    # name: (make_official_params kwargs, image size)
    "token": (dict(), 16),
    "token-rep": (dict(rep=16), 16),
    "gap": (dict(classifier="gap"), 16),
    "gap-rep": (dict(classifier="gap", rep=12), 16),
    "unpooled": (dict(classifier="unpooled"), 16),
    "unpooled-rep": (dict(classifier="unpooled", rep=8), 16),
    "token_unpooled": (dict(classifier="token_unpooled"), 16),
    "token_unpooled-rep": (dict(classifier="token_unpooled", rep=8), 16),
    "features": (dict(num_classes=0, rep=16), 16),
    "r-ti": (dict(resnet=(), patch=2), 32),  # R+ViT-Ti style: root block only
    "r-1stage-gn4d": (dict(resnet=(1,), patch=2, rep=16, gn_4d=True), 32),
    "r-2stages-gap": (dict(resnet=(1, 1), patch=1, classifier="gap"), 32),
}


@pytest.mark.parametrize("naming", ["released", "linen"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_flax_reference(tmp_path, case, naming):
    kw, size = CASES[case]
    params = make_official_params(seed=list(CASES).index(case), naming=naming, **kw)
    classifier = kw.get("classifier", "token")
    hints = {"classifier": classifier} if "unpooled" in classifier else {}
    model = vitkit.load_model(_write(tmp_path, params), **hints)
    assert model.config.classifier == classifier
    assert model.config.representation_size == kw.get("rep")
    x = _images(size)
    want = forward(params, x, classifier)
    got = _ours(model, x)
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.1  # a meaningful comparison, not two zero vectors
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_inferred_architecture(tmp_path):
    params = make_official_params(hidden=48, heads=6, mlp=96, layers=3, patch=8, grid=3, rep=20, num_classes=7)
    cfg = vitkit.load_model(_write(tmp_path, params)).config
    assert (cfg.hidden_size, cfg.num_heads, cfg.mlp_dim, cfg.num_layers) == (48, 6, 96, 3)
    assert cfg.patch_size == (8, 8) and cfg.image_size == (24, 24)
    assert (cfg.representation_size, cfg.num_classes, cfg.classifier) == (20, 7, "token")
    assert cfg.gelu == "tanh" and cfg.layer_norm_eps == 1e-6

    hyb = make_official_params(resnet=(1, 1), patch=1, grid=4)
    cfg = vitkit.load_model(_write(tmp_path, hyb, "h.npz")).config
    assert cfg.resnet.num_layers == (1, 1) and cfg.resnet.width_factor == 1
    assert cfg.image_size == (32, 32)


def test_official_model_name_recognised(tmp_path):
    # A ViT-Ti_16 layout (small enough to build) is named after the official table.
    params = make_official_params(hidden=192, heads=3, mlp=768, layers=12, patch=16, grid=2, num_classes=3)
    model = vitkit.load_model(_write(tmp_path, params))
    assert model.config.name == "ViT-Ti_16"


@pytest.mark.parametrize("naming", ["released", "linen"])
@pytest.mark.parametrize("kw", [dict(rep=16), dict(classifier="gap"), dict(resnet=(1,), patch=2)])
def test_export_has_official_layout_and_reads_back(tmp_path, kw, naming):
    # The writer's keys and shapes are those the Flax modules create (independent generator).
    params = make_official_params(naming=naming, **kw)
    model = vitkit.load_model(_write(tmp_path, params, "in.npz"))
    out = save_npz(model, tmp_path / "out.npz", naming=naming)
    written = read_arrays(out)
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in params.items()}
    for k in params:
        np.testing.assert_array_equal(written[k], params[k], err_msg=k)
    x = _images(model.config.image_size[0])
    np.testing.assert_allclose(forward(written, x, kw.get("classifier", "token")), _ours(model, x), atol=TOL)
    # save_model picks the format from the suffix and writes the released naming by default.
    vitkit.save_model(model, tmp_path / "default.npz")
    assert any("MlpBlock_3" in k for k in read_arrays(tmp_path / "default.npz"))


def test_new_task_and_resolution_as_load_pretrained(tmp_path):
    params = make_official_params(rep=16, grid=4, patch=4)
    path = _write(tmp_path, params)
    model = vitkit.load_model(path, num_classes=3, image_size=24)
    cfg = model.config
    assert cfg.num_classes == 3 and cfg.representation_size is None and model.pre_logits is None
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    want = resample_posemb_official(params["Transformer/posembed_input/pos_embedding"].astype(np.float64), 1, 6)
    np.testing.assert_allclose(model.pos_embedding.detach().numpy(), want, atol=1e-6, rtol=0)
    # The resampled model is the reference model with resampled embeddings, pre-logits dropped.
    ref = {k: v for k, v in params.items() if not k.startswith(("pre_logits", "head"))}
    ref["Transformer/posembed_input/pos_embedding"] = want
    x = _images(24)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2).float()),
                                   pre_logits=True).numpy()
    np.testing.assert_allclose(feats, forward(ref, x, "token"), atol=TOL)
    kept = vitkit.load_model(path, num_classes=3, representation_size=16)
    assert kept.config.representation_size == 16
    np.testing.assert_array_equal(kept.pre_logits.weight.detach().numpy(), params["pre_logits/kernel"].T)


def test_gap_resolution_change_matches_scipy(tmp_path):
    params = make_official_params(classifier="gap", grid=3, patch=4)
    model = vitkit.load_model(_write(tmp_path, params), image_size=28)
    want = resample_posemb_official(params["Transformer/posembed_input/pos_embedding"].astype(np.float64), 0, 7)
    np.testing.assert_allclose(model.pos_embedding.detach().numpy(), want, atol=1e-6, rtol=0)


def test_big_vision_layouts(tmp_path):
    # Top-level pos_embedding without a class-token row, params/ prefix, scanned blocks.
    params = make_official_params(naming="linen", rep=None)
    pos = params.pop("Transformer/posembed_input/pos_embedding")
    bv = {"params/" + k: v for k, v in params.items()}
    bv["params/pos_embedding"] = pos[:, 1:]
    blocks = [k for k in bv if "/encoderblock_" in k]
    for k in {b.split("/encoderblock_")[1].split("/", 1)[1] for b in blocks}:
        bv[f"params/Transformer/encoderblock/{k}"] = np.stack(
            [bv.pop(f"params/Transformer/encoderblock_{i}/{k}") for i in range(2)]
        )
    model = vitkit.load_model(_write(tmp_path, bv))
    ref = dict(params)
    ref["Transformer/posembed_input/pos_embedding"] = np.concatenate([np.zeros_like(pos[:, :1]), pos[:, 1:]], 1)
    x = _images(16)
    np.testing.assert_allclose(_ours(model, x), forward(ref, x, "token"), atol=TOL)


def test_hints(tmp_path):
    path = _write(tmp_path, make_official_params())
    m = vitkit.load_model(path, classifier="token_unpooled", name="mine")
    assert m.config.classifier == "token_unpooled" and m.config.name == "mine"
    with pytest.raises(CheckpointError, match="class token"):
        vitkit.load_model(path, classifier="gap")
    with pytest.raises(CheckpointError, match="num_heads=2 contradicts"):
        vitkit.load_model(path, num_heads=2)


def test_plain_bit_resnet_round_trip(tmp_path):
    model = vitkit.create_model("BiT-R50x1", num_classes=4, resnet={"num_layers": (1,), "width_factor": 1})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_npz(model, tmp_path / "bit.npz")
    keys = set(read_arrays(tmp_path / "bit.npz"))
    assert {"conv_root/kernel", "block1/unit1/conv_proj/kernel", "head/kernel"} <= keys
    back = vitkit.load_model(tmp_path / "bit.npz")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), atol=1e-6, rtol=0)


def test_export_refuses_models_official_code_cannot_compute(tmp_path):
    m = vitkit.create_model("ViT-B_16", hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, patch_size=4,
                            image_size=16, num_classes=3, gelu="exact")
    with pytest.raises(CheckpointError, match="tanh GELU"):
        save_npz(m, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()

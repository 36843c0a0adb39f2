"""timm vision_transformer state dicts, against a small re-implementation of timm's forward pass."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import vitkit
from vitkit.checkpoints import CheckpointError
from vitkit.checkpoints.timm import to_timm_state_dict

TOL = 1e-5
D, HEADS, MLP, DEPTH, PATCH, GRID = 64, 1, 128, 2, 4, 4  # a state dict does not store the head count: passed


def timm_state(*, class_token=True, fc_norm=False, no_embed_class=False, rep=None, num_classes=5, seed=0):
    """Random tensors named and shaped as timm's VisionTransformer creates them."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.2: torch.randn(*s, generator=g) * std  # noqa: E731
    sd = {"patch_embed.proj.weight": r(D, 3, PATCH, PATCH), "patch_embed.proj.bias": r(D)}
    if class_token:
        sd["cls_token"] = r(1, 1, D, std=0.5)
    n = GRID * GRID + (1 if class_token and not no_embed_class else 0)
    sd["pos_embed"] = r(1, n, D, std=0.3)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
               b + "attn.qkv.bias": r(3 * D), b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
               b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D), b + "mlp.fc1.weight": r(MLP, D),
               b + "mlp.fc1.bias": r(MLP), b + "mlp.fc2.weight": r(D, MLP), b + "mlp.fc2.bias": r(D)}
    norm = "fc_norm" if fc_norm else "norm"
    sd |= {f"{norm}.weight": 1 + r(D), f"{norm}.bias": r(D)}
    feat = D
    if rep:
        sd |= {"pre_logits.fc.weight": r(rep, D), "pre_logits.fc.bias": r(rep)}
        feat = rep
    if num_classes:
        sd |= {"head.weight": r(num_classes, feat), "head.bias": r(num_classes)}
    return sd


def timm_forward(sd, x, heads, *, global_pool, no_embed_class=False):
    """timm's VisionTransformer.forward (inference), written from its source: exact GELU, eps 1e-6."""
    ln = lambda t, name: F.layer_norm(t, (t.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], 1e-6)  # noqa: E731
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    cls = sd.get("cls_token")
    if no_embed_class:
        x = x + sd["pos_embed"]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], 1)
    else:
        if cls is not None:
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], 1)
        x = x + sd["pos_embed"]
    b, n, c = x.shape
    for i in range(DEPTH):
        p = f"blocks.{i}."
        qkv = F.linear(ln(x, p + "norm1"), sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, c)
        x = x + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.gelu(F.linear(ln(x, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    if "norm.weight" in sd:
        x = ln(x, "norm")
    prefix = 1 if cls is not None else 0
    x = x[:, 0] if global_pool == "token" else x[:, prefix:].mean(1)
    if "fc_norm.weight" in sd:
        x = ln(x, "fc_norm")
    if "pre_logits.fc.weight" in sd:
        x = torch.tanh(F.linear(x, sd["pre_logits.fc.weight"], sd["pre_logits.fc.bias"]))
    return F.linear(x, sd["head.weight"], sd["head.bias"]) if "head.weight" in sd else x


CASES = {
    "token": (dict(), "token"),
    "token-rep": (dict(rep=16), "token"),
    "avg-fc_norm": (dict(class_token=False, fc_norm=True), "avg"),
    "avg-norm": (dict(class_token=False), "avg"),
    "no_embed_class": (dict(no_embed_class=True), "token"),
}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("case", list(CASES))
def test_timm_import_matches_timm_forward(tmp_path, case, suffix):
    kw, pool = CASES[case]
    sd = timm_state(**kw)
    path = tmp_path / f"model{suffix}"
    torch.save(sd, path) if suffix == ".pth" else save_file(sd, str(path))
    m = vitkit.load_model(path, format=None, num_heads=HEADS)
    assert m.config.gelu == "exact" and m.config.layer_norm_eps == 1e-6 and m.config.num_heads == HEADS
    assert m.config.norm_after_pool == kw.get("fc_norm", False)
    x = torch.randn(2, 3, GRID * PATCH, GRID * PATCH)
    with torch.no_grad():
        torch.testing.assert_close(m(x), timm_forward(sd, x, HEADS, global_pool=pool,
                                                      no_embed_class=kw.get("no_embed_class", False)),
                                   atol=TOL, rtol=0)


def test_num_heads_hint_and_export_round_trip(tmp_path):
    sd = timm_state(class_token=False, fc_norm=True)
    torch.save(sd, tmp_path / "in.pth")
    m = vitkit.load_model(tmp_path / "in.pth", num_heads=4)
    assert m.config.num_heads == 4
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x), timm_forward(sd, x, 4, global_pool="avg"), atol=TOL, rtol=0)
    exported = to_timm_state_dict(m)
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: tuple(v.shape) for k, v in sd.items()}
    for k in sd:
        torch.testing.assert_close(exported[k], sd[k], atol=0, rtol=0)
    vitkit.save_model(m, tmp_path / "out.pth")  # .pth -> timm
    assert set(torch.load(tmp_path / "out.pth", weights_only=True)) == set(sd)


def test_unsupported_timm_variants_are_refused(tmp_path):
    sd = timm_state()
    sd["blocks.0.ls1.gamma"] = torch.ones(D)
    torch.save(sd, tmp_path / "ls.pth")
    with pytest.raises(CheckpointError, match="layer scale"):
        vitkit.load_model(tmp_path / "ls.pth")
    sd = timm_state(fc_norm=True)  # class token + average pooling
    torch.save(sd, tmp_path / "clsavg.pth")
    with pytest.raises(CheckpointError, match="class token with average pooling"):
        vitkit.load_model(tmp_path / "clsavg.pth", num_heads=1)


def test_bare_state_dict_without_a_head_count_is_refused_never_guessed(tmp_path):
    # Width 64 would be one head of 64 by the old hidden // 64 rule; nothing in the file says so.
    torch.save(timm_state(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="does not store its number of heads.*pass num_heads="):
        vitkit.load_model(tmp_path / "bare.pth")


@pytest.mark.parametrize("source", ["architecture", "model_args"])
def test_timm_config_json_beside_the_weights_gives_the_head_count(tmp_path, source):
    # vit_base_patch16_gap_224 has 16 heads of 48 (not 768 / 64 = 12); here a width-64 stand-in with 2 heads
    # named through model_args, or 16 heads of 4 through the architecture table.
    sd = timm_state(class_token=False, fc_norm=True)
    heads = 2 if source == "model_args" else 16
    cfg = {"architecture": "vit_base_patch16_gap_224" if source == "architecture" else "vit_custom",
           "num_classes": 5, "model_args": {"num_heads": 2} if source == "model_args" else {}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(sd, str(tmp_path / "model.safetensors"))
    for src in (tmp_path, tmp_path / "model.safetensors"):  # the folder, or the file with config.json beside it
        m = vitkit.load_model(src)
        assert m.config.num_heads == heads
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(m(x), timm_forward(sd, x, heads, global_pool="avg"), atol=TOL, rtol=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_vitkit_timm_export_of_width_96_reads_back(tmp_path, suffix):
    m = vitkit.create_model("ViT-Ti_16", num_classes=4, image_size=16, patch_size=4, num_layers=2, hidden_size=96,
                            num_heads=3, mlp_dim=64, class_names=("a", "b", "c", "d"))
    torch.nn.init.normal_(m.head.weight, std=0.5)
    with pytest.warns(UserWarning, match="exact GELU"):  # our tanh-GELU model in timm needs act_layer=gelu_tanh
        vitkit.save_model(m, tmp_path / f"out{suffix}", format="timm")
    back = vitkit.load_model(tmp_path / f"out{suffix}")
    assert back.config == m.config
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back(x), m.eval()(x), atol=0, rtol=0)


def test_config_pooling_that_the_tensors_cannot_show_is_refused(tmp_path):
    # A class token, no fc_norm, but global_pool='avg': read as token pooling it would give other logits.
    save_file(timm_state(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_x", "model_args": {
        "num_heads": 1, "global_pool": "avg", "fc_norm": False}}))
    with pytest.raises(CheckpointError, match="global_pool='avg'"):
        vitkit.load_model(tmp_path)

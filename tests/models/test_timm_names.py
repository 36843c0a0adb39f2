"""timm's model names: the architecture timm builds under each, its numerics, its pretrained tags, list_models."""

import pytest
import torch
import torch.nn.functional as F

import vitkit
from vitkit.checkpoints import catalogue, pretrained
from vitkit.checkpoints.timm import to_timm_state_dict
from vitkit.checkpoints.timm_tags import TAGS, known_tags, tag_source
from vitkit.errors import UserError
from vitkit.models import get_config
from vitkit.models.timm_names import TIMM_NAMES, timm_config

# Parameter counts with timm's 1000-class head, as timm's results tables list them (86.57M, 304.33M, ...).
PARAMS = {
    "vit_tiny_patch16_224": 5_717_416, "vit_small_patch16_224": 22_050_664, "vit_small_patch32_384": 22_915_432,
    "vit_base_patch16_224": 86_567_656, "vit_large_patch16_224": 304_326_632, "vit_huge_patch14_224": 632_045_800,
    "vit_base_r50_s16_384": 98_950_952, "vit_small_r26_s32_224": 36_431_912, "vit_tiny_r_s16_p8_224": 6_337_704,
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_timm_names_build_timms_architecture(name):
    with torch.device("meta"):
        model = vitkit.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    res = int(name.rsplit("_", 1)[1])
    assert model.config.image_size == (res, res)
    assert model.config.gelu == "exact" and model.config.layer_norm_eps == 1e-6
    assert model.config.representation_size is None and model.config.dropout_rate == 0.0


def test_hybrid_names_use_the_bit_stems_of_the_official_hybrids():
    assert timm_config("vit_base_r50_s16_384").resnet == get_config("R50+ViT-B_16").resnet
    assert timm_config("vit_small_r26_s32_224").resnet == get_config("R26+ViT-S_32").resnet
    tiny = timm_config("vit_tiny_r_s16_p8_224")
    assert tiny.resnet == get_config("R+ViT-Ti_16").resnet and tiny.patch_size == (8, 8)


def _timm_forward(sd: dict, x: torch.Tensor, heads: int) -> torch.Tensor:
    """timm's VisionTransformer.forward (token pooling, no pre-logits), written from its source: exact GELU,
    LayerNorm eps 1e-6, fused qkv."""
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(len(t), -1, -1), t], 1) + sd["pos_embed"]
    d = t.shape[-1]
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    for i in blocks:
        p = f"blocks.{i}."
        h = F.layer_norm(t, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(len(t), -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(-1) @ v
        t = t + F.linear(a.transpose(1, 2).reshape(len(t), -1, d), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(t, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        t = t + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    t = F.layer_norm(t, (d,), sd["norm.weight"], sd["norm.bias"], 1e-6)
    return F.linear(t[:, 0], sd["head.weight"], sd["head.bias"])


def test_a_fresh_timm_named_model_computes_as_timms_does():
    model = vitkit.create_model("vit_tiny_patch16_224", num_classes=7, image_size=48, num_layers=2).eval()
    torch.nn.init.normal_(model.head.weight)  # the zero head would hide every difference
    model.set_fast_paths(False)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        got, want = model(x), _timm_forward(to_timm_state_dict(model), x, heads=3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the official spelling of the same architecture computes the official tanh GELU: a measurable difference
    official = vitkit.create_model("ViT-Ti/16", num_classes=7, image_size=48, num_layers=2).eval()
    official.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (official.set_fast_paths(False)(x) - want).abs().max() > 1e-4


def _arch(cfg):
    return (cfg.patch_size, cfg.hidden_size, cfg.mlp_dim, cfg.num_heads, cfg.num_layers, cfg.resnet)


@pytest.mark.parametrize("arch", sorted(TAGS))
def test_every_mapped_tag_names_weights_of_that_architecture(arch):
    want = timm_config(arch)
    assert want is not None, f"{arch} has tags but no architecture"
    for tag, source in TAGS[arch]:
        if source.startswith("hf-hub:"):
            assert source == f"hf-hub:timm/{arch}.{tag}"
            continue
        entry = catalogue.lookup(source)
        assert entry is not None, f"{arch}.{tag}: {source} is not a catalogue name"
        assert _arch(get_config(entry.model)) == _arch(want), f"{arch}.{tag} -> {entry.model}"
        if "ft_in1k" in tag or tag.endswith("in1k"):
            assert entry.resolution in (None, want.image_size[0]), f"{arch}.{tag}: {entry.resolution} px"


def test_tags_resolve_as_timm_lists_them():
    assert tag_source("vit_base_patch16_224", None) == "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
    assert tag_source("vit_base_patch16_224", "orig_in21k") == "imagenet21k/ViT-B_16"
    assert tag_source("vit_base_patch16_384", "orig_in21k_ft_in1k") == "imagenet21k+imagenet2012/ViT-B_16"
    assert tag_source("vit_base_r50_s16_384", "orig_in21k_ft_in1k") == "imagenet21k+imagenet2012/R50+ViT-B_16"
    assert tag_source("vit_base_patch16_224", "sam_in1k") == "sam/ViT-B_16"
    assert tag_source("vit_small_patch16_224", "augreg_in21k").startswith("augreg/S_16-i21k-300ep")


def test_pretrained_tag_loads_the_mapped_source(monkeypatch):
    calls = []

    def fake_load(source, **kw):
        calls.append((source, kw))
        with torch.device("meta"):
            return vitkit.create_model("ViT-B_16", num_classes=kw["num_classes"] or 1000)

    monkeypatch.setattr(pretrained, "load_model", fake_load)
    model = vitkit.create_model("vit_base_patch16_224.orig_in21k", pretrained=True)
    assert calls[-1] == ("imagenet21k/ViT-B_16", {"num_classes": 0, "image_size": (224, 224)})
    assert model.config.name == "ViT-B_16"  # numerics follow the weights: the official file's
    vitkit.create_model("vit_base_patch16_384.augreg_in21k_ft_in1k", pretrained=True, num_classes=3)
    assert calls[-1][0].endswith("--imagenet2012-steps_20k-lr_0.01-res_384")
    assert calls[-1][1] == {"num_classes": 3, "image_size": (384, 384)}


def test_an_unmapped_tag_is_one_line_listing_the_known_ones():
    with pytest.raises(UserError) as e:
        vitkit.create_model("vit_base_patch16_224.dino", pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg and "'dino'" in msg
    assert all(t in msg for t in known_tags("vit_base_patch16_224"))
    with pytest.raises(UserError, match="maps no tag of vit_large_patch14_224"):
        vitkit.create_model("vit_large_patch14_224", pretrained=True)


def test_list_models_takes_timm_patterns():
    every = vitkit.list_models()
    assert every == sorted(every) and "ViT-B_16" in every and "vit_base_patch16_224" in every
    assert set(TIMM_NAMES) <= set(every)
    assert vitkit.list_models("vit_tiny*") == ["vit_tiny_patch16_224", "vit_tiny_patch16_384",
                                               "vit_tiny_r_s16_p8_224", "vit_tiny_r_s16_p8_384"]
    assert vitkit.list_models(["*r50*", "R50*", "ViT-B_3*"]) == [
        "R50+ViT-B_16", "R50+ViT-L_32", "ViT-B_32", "ViT-B_32-gap-norep", "vit_base_r50_s16_224",
        "vit_base_r50_s16_384", "vit_large_r50_s32_224", "vit_large_r50_s32_384"]
    assert "vit_base_patch16_384" not in vitkit.list_models("vit_base*", exclude_filters="*384")
    tagged = vitkit.list_models("vit_base_patch16_224*", pretrained=True)
    assert tagged == sorted(f"vit_base_patch16_224.{t}" for t in known_tags("vit_base_patch16_224"))
    untagged = vitkit.list_models(pretrained=True, include_tags=False)
    assert "vit_large_patch14_224" not in untagged and "ViT-B_16" in untagged and "BiT-R50x1" not in untagged
    assert vitkit.list_models.__doc__


def test_a_misspelt_timm_name_suggests_the_right_one():
    with pytest.raises(UserError, match="did you mean vit_base_patch16_224"):
        vitkit.create_model("vit_base_patch16_244")

"""hf-hub: sources from hand-built Hugging Face cache folders (HF_HUB_OFFLINE=1, no network):
a transformers ViT repo and a timm repo with 80-wide heads, against transformers' logits."""

import hashlib
import json

import pytest
import torch
import transformers

import vitkit
from vitkit.checkpoints import CheckpointError

TOL = 1e-5
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "vitkit"))
    return cache


def make_repo(cache, repo_id, files):
    """The Hub cache layout: blobs named by git/LFS hash, snapshots/<commit>/ symlinks, refs/main."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    for name, data in files.items():
        lfs = name.endswith((".safetensors", ".bin"))
        digest = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = root / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../blobs/{digest}")
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    return root


def _hf_model(tmp_path, **kw):
    cfg = transformers.ViTConfig(**kw)
    torch.manual_seed(1)
    m = transformers.ViTForImageClassification(cfg).eval()
    with torch.no_grad():  # transformers initialises the head at zero std; make the logits informative
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    m.save_pretrained(tmp_path / "saved")
    return m


def test_transformers_repo_gives_transformers_logits(tmp_path, hub):
    names = {0: "ant", 1: "bee", 2: "cat"}
    ref = _hf_model(tmp_path, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                    image_size=16, patch_size=4, num_labels=3, id2label=names,
                    label2id={v: k for k, v in names.items()})
    files = {f.name: f.read_bytes() for f in (tmp_path / "saved").iterdir() if f.is_file()}
    make_repo(hub, "some-org/tiny-vit", files)
    model = vitkit.load_model("hf-hub:some-org/tiny-vit")
    assert model.config.class_names == ("ant", "bee", "cat") and model.config.num_heads == 3
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(pixel_values=x).logits, atol=TOL, rtol=0)
    assert vitkit.load_model(f"hf-hub:some-org/tiny-vit@{COMMIT}").config.num_heads == 3


def _hf_to_timm(sd, layers):
    """transformers ViT tensor names -> timm's (written here from both libraries' module layouts)."""
    out = {"cls_token": sd["vit.embeddings.cls_token"], "pos_embed": sd["vit.embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd["vit.embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["vit.embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["vit.layernorm.weight"], "norm.bias": sd["vit.layernorm.bias"],
           "head.weight": sd["classifier.weight"], "head.bias": sd["classifier.bias"]}
    for i in range(layers):
        h, t = f"vit.encoder.layer.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            out[t + f"attn.qkv.{leaf}"] = torch.cat([sd[h + f"attention.attention.{n}.{leaf}"]
                                                     for n in ("query", "key", "value")])
            out[t + f"attn.proj.{leaf}"] = sd[h + f"attention.output.dense.{leaf}"]
            out[t + f"norm1.{leaf}"] = sd[h + f"layernorm_before.{leaf}"]
            out[t + f"norm2.{leaf}"] = sd[h + f"layernorm_after.{leaf}"]
            out[t + f"mlp.fc1.{leaf}"] = sd[h + f"intermediate.dense.{leaf}"]
            out[t + f"mlp.fc2.{leaf}"] = sd[h + f"output.dense.{leaf}"]
    return {k: v.contiguous() for k, v in out.items()}


def test_timm_repo_with_80_wide_heads_gives_the_reference_logits(tmp_path, hub):
    # vit_huge_patch14_224: 16 heads of 80 (width 1280). One block and mlp_ratio 1 keep it small; the
    # reference is transformers' ViT (exact GELU, eps 1e-6, as timm) with the same weights.
    ref = _hf_model(tmp_path, hidden_size=1280, num_hidden_layers=1, num_attention_heads=16, intermediate_size=1280,
                    image_size=28, patch_size=14, num_labels=4, layer_norm_eps=1e-6, hidden_act="gelu")
    from safetensors.torch import load_file, save

    on_disk = load_file(tmp_path / "saved" / "model.safetensors")  # the names every transformers version writes
    weights = save(_hf_to_timm(on_disk, 1), metadata={"format": "pt"})
    config = {"architecture": "vit_huge_patch14_224", "num_classes": 4, "num_features": 1280, "global_pool": "token",
              "model_args": {"depth": 1, "mlp_ratio": 1.0, "img_size": 28},
              "pretrained_cfg": {"tag": "test", "input_size": [3, 28, 28], "mean": [0.5] * 3, "std": [0.5] * 3}}
    root = make_repo(hub, "timm/vit_huge_tiny", {"config.json": json.dumps(config).encode(),
                                                  "model.safetensors": weights})
    model = vitkit.load_model("hf-hub:timm/vit_huge_tiny")
    assert (model.config.num_heads, model.config.hidden_size, model.config.gelu) == (16, 1280, "exact")
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        want = ref(pixel_values=x).logits
        torch.testing.assert_close(model(x), want, atol=TOL, rtol=0)
        # The same file read as a bare state dict is refused, and the hidden // 64 = 20 guess would be wrong.
        bare = tmp_path / "bare.safetensors"
        bare.write_bytes(weights)
        with pytest.raises(CheckpointError, match="pass num_heads="):
            vitkit.load_model(bare)
        assert (vitkit.load_model(bare, num_heads=20)(x) - want).abs().max() > 1e-3
    # Later corruption of the Hub cache is detected against the LFS SHA-256.
    blob = next(p for p in (root / "blobs").iterdir() if len(p.name) == 64)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        vitkit.load_model("hf-hub:timm/vit_huge_tiny")


def test_hub_offline_and_not_cached_is_a_clear_error(hub):
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache.*offline"):
        vitkit.load_model("hf-hub:nobody/nothing")
    with pytest.raises(CheckpointError, match="expected hf-hub:ORG/NAME"):
        vitkit.load_model("hf-hub:no-slash")

"""Hugging Face transformers' ViT with the same architecture and weights, the speed reference.

Uses ``vitkit.checkpoints.hf.to_hf`` when that exists; until then the mapping below (which
follows whichever key layout the installed transformers uses: ``vit.layers.N.attention.q_proj``
in 5.x, ``vit.encoder.layer.N.attention.attention.query`` before).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _hf_config(cfg: Any) -> Any:
    import transformers

    if cfg.resnet is not None or not cfg.transformer:
        raise ValueError(f"--compare hf needs a plain ViT; {cfg.name} has a ResNet stem")
    if cfg.classifier != "token" or cfg.representation_size or cfg.norm_after_pool:
        raise ValueError(
            f"--compare hf needs a class-token ViT without pre-logits; {cfg.name} has classifier={cfg.classifier!r}, "
            f"representation_size={cfg.representation_size}"
        )
    if cfg.image_size[0] != cfg.image_size[1] or cfg.patch_size[0] != cfg.patch_size[1]:
        raise ValueError("--compare hf needs square images and patches")
    return transformers.ViTConfig(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_dim, hidden_act="gelu_pytorch_tanh" if cfg.gelu == "tanh" else "gelu",
        layer_norm_eps=cfg.layer_norm_eps, image_size=cfg.image_size[0], patch_size=cfg.patch_size[0],
        num_channels=cfg.in_chans, num_labels=max(cfg.num_classes, 1), qkv_bias=True,
        hidden_dropout_prob=cfg.dropout_rate, attention_probs_dropout_prob=cfg.attention_dropout_rate,
    )


def _map_state(model: nn.Module, hf_keys: set[str]) -> dict[str, torch.Tensor]:
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    cfg = model.config
    d = cfg.hidden_size
    new5 = "vit.layers.0.attention.q_proj.weight" in hf_keys
    out = {
        "vit.embeddings.cls_token": sd["cls"],
        "vit.embeddings.position_embeddings": sd["pos_embedding"],
        "vit.embeddings.patch_embeddings.projection.weight": sd["embedding.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["embedding.bias"],
        "vit.layernorm.weight": sd["norm.weight"],
        "vit.layernorm.bias": sd["norm.bias"],
        "classifier.weight": sd["head.weight"],
        "classifier.bias": sd["head.bias"],
    }
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        if new5:
            q = f"vit.layers.{i}."
            names = {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
                     "o": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
        else:
            q = f"vit.encoder.layer.{i}."
            names = {"q": "attention.attention.query", "k": "attention.attention.key",
                     "v": "attention.attention.value", "o": "attention.output.dense",
                     "fc1": "intermediate.dense", "fc2": "output.dense"}
        for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
            for t in ("weight", "bias"):
                out[f"{q}{theirs}.{t}"] = sd[f"{p}{ours}.{t}"]
        for t in ("weight", "bias"):
            fused = sd[f"{p}attn.qkv.{t}"]
            for j, part in enumerate("qkv"):
                out[f"{q}{names[part]}.{t}"] = fused[j * d:(j + 1) * d]
            out[f"{q}{names['o']}.{t}"] = sd[f"{p}attn.proj.{t}"]
            out[f"{q}{names['fc1']}.{t}"] = sd[f"{p}mlp.fc1.{t}"]
            out[f"{q}{names['fc2']}.{t}"] = sd[f"{p}mlp.fc2.{t}"]
    return out


def hf_model_like(model: nn.Module) -> nn.Module:
    """``transformers.ViTForImageClassification`` computing the same function as ``model``.

    Its forward returns the logits tensor (not a ModelOutput) so both run through the same code.
    """
    try:
        from ..checkpoints.hf import to_hf  # type: ignore[attr-defined]
    except ImportError:
        to_hf = None
    if to_hf is not None:
        hf = to_hf(model)
    else:
        import transformers

        hf = transformers.ViTForImageClassification(_hf_config(model.config))
        state = _map_state(model, set(hf.state_dict()))
        hf.load_state_dict(state, strict=True)
    hf = hf.to(next(model.parameters()).device)
    return _LogitsOnly(hf)


class _LogitsOnly(nn.Module):
    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=x).logits

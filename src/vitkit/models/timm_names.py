"""timm's ViT architecture names (``vit_base_patch16_224``): the architecture timm builds under each name.

Read from huggingface/pytorch-image-models at aa4b585 (2026-08-08): ``model_args`` of the ``@register_model``
functions in ``timm/models/vision_transformer.py`` whose only arguments are patch size, width, depth, heads and MLP
ratio (the plain ViTs), and in ``vision_transformer_hybrid.py`` those whose backbone is the BiT ResNet-V2
(``_resnetv2(layers)``; hybrids default to 1x1 patches there). The image size is the one timm's pretrained config
gives the name (its ``_224``/``_384`` suffix). Names with parts vitkit does not build (register tokens, layer scale,
pre-norm, CLIP/SigLIP heads, ...) are not here.

A fresh model under a timm name computes as timm's does: exact (erf) GELU, LayerNorm eps 1e-6, no pre-logits
layer, no dropout. Weights loaded into it follow their file, as everywhere in vitkit (an official ``.npz`` brings
the official tanh GELU). The ResNet stem of a hybrid keeps vitkit's official weight standardisation and GroupNorm
epsilons (timm: 1e-8 and 1e-5), so a fresh timm-named hybrid differs from timm's there by ~1e-5.
"""

from __future__ import annotations

from .config import ResNetConfig, ViTConfig

# size -> (width, MLP width, heads, depth): timm's embed_dim, embed_dim * mlp_ratio, num_heads, depth.
_SIZES = {
    "tiny": (192, 768, 3, 12), "small": (384, 1536, 6, 12), "base": (768, 3072, 12, 12),
    "large": (1024, 4096, 16, 24), "huge": (1280, 5120, 16, 32),
    "giant": (1408, 6144, 16, 40),  # mlp_ratio 48/11
    "gigantic": (1664, 8192, 16, 48),  # mlp_ratio 64/13
}
# plain ViTs: name -> (size, patch, image size)
_PLAIN = {
    "vit_tiny_patch16_224": ("tiny", 16, 224), "vit_tiny_patch16_384": ("tiny", 16, 384),
    "vit_small_patch32_224": ("small", 32, 224), "vit_small_patch32_384": ("small", 32, 384),
    "vit_small_patch16_224": ("small", 16, 224), "vit_small_patch16_384": ("small", 16, 384),
    "vit_small_patch8_224": ("small", 8, 224),
    "vit_base_patch32_224": ("base", 32, 224), "vit_base_patch32_384": ("base", 32, 384),
    "vit_base_patch16_224": ("base", 16, 224), "vit_base_patch16_384": ("base", 16, 384),
    "vit_base_patch8_224": ("base", 8, 224),
    "vit_large_patch32_224": ("large", 32, 224), "vit_large_patch32_384": ("large", 32, 384),
    "vit_large_patch16_224": ("large", 16, 224), "vit_large_patch16_384": ("large", 16, 384),
    "vit_large_patch14_224": ("large", 14, 224), "vit_huge_patch14_224": ("huge", 14, 224),
    "vit_giant_patch14_224": ("giant", 14, 224), "vit_gigantic_patch14_224": ("gigantic", 14, 224),
}
# hybrids: name -> (size, ResNet-V2 stage depths, patch on the feature map, image size)
_HYBRID = {
    "vit_tiny_r_s16_p8_224": ("tiny", (), 8, 224), "vit_tiny_r_s16_p8_384": ("tiny", (), 8, 384),
    "vit_small_r26_s32_224": ("small", (2, 2, 2, 2), 1, 224), "vit_small_r26_s32_384": ("small", (2, 2, 2, 2), 1, 384),
    "vit_base_r26_s32_224": ("base", (2, 2, 2, 2), 1, 224),
    "vit_base_r50_s16_224": ("base", (3, 4, 9), 1, 224), "vit_base_r50_s16_384": ("base", (3, 4, 9), 1, 384),
    "vit_large_r50_s32_224": ("large", (3, 4, 6, 3), 1, 224),
    "vit_large_r50_s32_384": ("large", (3, 4, 6, 3), 1, 384),
}
TIMM_NAMES: tuple[str, ...] = tuple(sorted({**_PLAIN, **_HYBRID}))


def split_tag(name: str) -> tuple[str, str | None]:
    """``"vit_base_patch16_224.augreg_in21k"`` -> ``("vit_base_patch16_224", "augreg_in21k")``; no tag: None.
    Official names (``ViT-B_16``, ``R50+ViT-B_16``) have no dot."""
    arch, dot, tag = name.partition(".")
    return arch, (tag if dot else None)


def timm_config(name: str) -> ViTConfig | None:
    """The config timm builds under ``name`` (a pretrained tag is ignored), or None for a name that is not one
    of :data:`TIMM_NAMES`."""
    arch = split_tag(name)[0]
    if arch in _PLAIN:
        size, patch, res = _PLAIN[arch]
        resnet = None
    elif arch in _HYBRID:
        size, layers, patch, res = _HYBRID[arch]
        resnet = ResNetConfig(layers, 1)
    else:
        return None
    width, mlp, heads, depth = _SIZES[size]
    return ViTConfig(name=arch, patch_size=(patch, patch), hidden_size=width, mlp_dim=mlp, num_heads=heads,
                     num_layers=depth, image_size=(res, res), resnet=resnet, classifier="token",
                     representation_size=None, gelu="exact", layer_norm_eps=1e-6, num_classes=1000)

# ruff: noqa: E501 (the AugReg file names are the bucket's, longer than a line)
"""timm's pretrained tags (``vit_base_patch16_224.augreg_in21k``) -> the source holding the same weights.

Source: ``default_cfgs`` of ``timm/models/vision_transformer.py`` and ``vision_transformer_hybrid.py``
(huggingface/pytorch-image-models at aa4b585, 2026-08-08), in timm's order, so the first tag of a name is the one
``timm.create_model(name, pretrained=True)`` loads. Each tag's ``url`` there names the official file:

- ``https://storage.googleapis.com/vit_models/FILE.npz`` -> the catalogue name ``FILE`` (``augreg/...``, ``sam/...``);
- timm's ``jx_*.pth`` conversions of the official files (``jx_vit_base_p16_224`` -> ``imagenet21k+imagenet2012/
  ViT-B_16-224``, ``jx_vit_base_p16_384`` -> ``.../ViT-B_16``, ``jx_vit_large_p32_384`` -> ``.../ViT-L_32``,
  ``jx_vit_base_resnet50_384`` -> ``.../R50+ViT-B_16``);
- ``orig_in21k`` (timm's url commented out: ``jx_vit_*_in21k``, the paper's ImageNet-21k files with head and
  pre-logits removed, ``num_classes=0``) -> ``imagenet21k/MODEL``, loaded with ``num_classes=0`` as timm does;
- ``augreg2_in21k_ft_in1k``: timm's own re-fine-tuning, published only in its Hub repo -> ``hf-hub:timm/NAME.TAG``.

Tags whose weights are not the paper's family (``dino``, ``mae``, ``untrained``) are not mapped.
"""

from __future__ import annotations

TAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "vit_base_patch16_224": (
        ("augreg2_in21k_ft_in1k", "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"),
        ("augreg_in21k_ft_in1k", "augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224"),
        ("orig_in21k_ft_in1k", "imagenet21k+imagenet2012/ViT-B_16-224"),
        ("augreg_in1k", "augreg/B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224"),
        ("orig_in21k", "imagenet21k/ViT-B_16"),
        ("augreg_in21k", "augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"),
        ("sam_in1k", "sam/ViT-B_16"),
    ),
    "vit_base_patch8_224": (
        ("augreg2_in21k_ft_in1k", "hf-hub:timm/vit_base_patch8_224.augreg2_in21k_ft_in1k"),
        ("augreg_in21k_ft_in1k", "augreg/B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224"),
        ("augreg_in21k", "augreg/B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"),
    ),
    "vit_tiny_patch16_224": (
        ("augreg_in21k_ft_in1k", "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224"),
        ("augreg_in21k", "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"),
    ),
    "vit_tiny_patch16_384": (
        ("augreg_in21k_ft_in1k", "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384"),
    ),
    "vit_small_patch32_224": (
        ("augreg_in21k_ft_in1k", "augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224"),
        ("augreg_in21k", "augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0"),
    ),
    "vit_small_patch32_384": (
        ("augreg_in21k_ft_in1k", "augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384"),
    ),
    "vit_small_patch16_224": (
        ("augreg_in21k_ft_in1k", "augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224"),
        ("augreg_in1k", "augreg/S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224"),
        ("augreg_in21k", "augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0"),
    ),
    "vit_small_patch16_384": (
        ("augreg_in21k_ft_in1k", "augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384"),
        ("augreg_in1k", "augreg/S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384"),
    ),
    "vit_base_patch32_224": (
        ("augreg_in21k_ft_in1k", "augreg/B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224"),
        ("augreg_in1k", "augreg/B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224"),
        ("orig_in21k", "imagenet21k/ViT-B_32"),
        ("augreg_in21k", "augreg/B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0"),
        ("sam_in1k", "sam/ViT-B_32"),
    ),
    "vit_base_patch32_384": (
        ("augreg_in21k_ft_in1k", "augreg/B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384"),
        ("augreg_in1k", "augreg/B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384"),
    ),
    "vit_base_patch16_384": (
        ("augreg_in21k_ft_in1k", "augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384"),
        ("orig_in21k_ft_in1k", "imagenet21k+imagenet2012/ViT-B_16"),
        ("augreg_in1k", "augreg/B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384"),
    ),
    "vit_large_patch16_224": (
        ("augreg_in21k_ft_in1k", "augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224"),
        ("orig_in21k", "imagenet21k/ViT-L_16"),
        ("augreg_in21k", "augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1"),
    ),
    "vit_large_patch16_384": (
        ("augreg_in21k_ft_in1k", "augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384"),
    ),
    "vit_large_patch32_384": (
        ("orig_in21k_ft_in1k", "imagenet21k+imagenet2012/ViT-L_32"),
    ),
    "vit_large_patch32_224": (
        ("orig_in21k", "imagenet21k/ViT-L_32"),
    ),
    "vit_huge_patch14_224": (
        ("orig_in21k", "imagenet21k/ViT-H_14"),
    ),
    "vit_tiny_r_s16_p8_224": (
        ("augreg_in21k_ft_in1k", "augreg/R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224"),
        ("augreg_in21k", "augreg/R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"),
    ),
    "vit_tiny_r_s16_p8_384": (
        ("augreg_in21k_ft_in1k", "augreg/R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384"),
    ),
    "vit_small_r26_s32_224": (
        ("augreg_in21k_ft_in1k", "augreg/R26_S_32-i21k-300ep-lr_0.001-aug_light0-wd_0.03-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.03-res_224"),
        ("augreg_in21k", "augreg/R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0"),
    ),
    "vit_small_r26_s32_384": (
        ("augreg_in21k_ft_in1k", "augreg/R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384"),
    ),
    "vit_base_r50_s16_384": (
        ("orig_in21k_ft_in1k", "imagenet21k+imagenet2012/R50+ViT-B_16"),
    ),
    "vit_large_r50_s32_224": (
        ("augreg_in21k_ft_in1k", "augreg/R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224"),
        ("augreg_in21k", "augreg/R50_L_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0"),
    ),
    "vit_large_r50_s32_384": (
        ("augreg_in21k_ft_in1k", "augreg/R50_L_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384"),
    ),
    "vit_base_r50_s16_224": (
        ("orig_in21k", "imagenet21k/R50+ViT-B_16"),
    ),
}

# Tags timm loads without a classifier (its pretrained_cfg num_classes=0).
FEATURES_ONLY = ("orig_in21k",)


def known_tags(arch: str) -> tuple[str, ...]:
    """The tags vitkit maps for a timm architecture name, timm's default first."""
    return tuple(tag for tag, _ in TAGS.get(arch, ()))


def tag_source(arch: str, tag: str | None) -> str | None:
    """The source of ``arch.tag`` (``tag`` None: timm's default tag), or None when vitkit does not map it."""
    pairs = TAGS.get(arch, ())
    if tag is None:
        return pairs[0][1] if pairs else None
    return dict(pairs).get(tag)

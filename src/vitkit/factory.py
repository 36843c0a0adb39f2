"""``vitkit.create_model``: the one door to a model, with fresh or pre-trained weights (as timm's
``create_model``). It sits above ``models`` (the architectures) and ``checkpoints`` (the weights), so
neither has to import the other upwards."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from torch import nn


def create_model(name: str, num_classes: int | None = None, image_size: int | tuple[int, int] | None = None,
                 *, pretrained: bool | str = False, **overrides: Any) -> nn.Module:
    """Build a named model, e.g. ``create_model("ViT-B/16", num_classes=10, image_size=384)``.

    Any :class:`~vitkit.models.ViTConfig` field can be overridden (``classifier="gap"``, ``dropout_rate=0.1``).
    ``pretrained=True`` loads the official weights of that model: the paper's ImageNet-21k
    checkpoint (catalogue ``imagenet21k/NAME``), or for models released only with AugReg the
    README's recommended one (``augreg/Ti_16``); ``pretrained=SOURCE`` loads any source
    ``load_model`` takes (a catalogue name, file, URL, ``hf-hub:...``), which must hold this
    architecture. With ``num_classes`` the head is re-made (zero-initialised, pre-logits dropped) and
    ``image_size`` resamples the position embeddings, as the official ``load_pretrained`` does.
    """
    if pretrained is not False and pretrained is not None:
        from .checkpoints.pretrained import create_pretrained

        return create_pretrained(name, num_classes, image_size, pretrained, overrides)
    from .models.registry import create_model as create_fresh

    return create_fresh(name, num_classes, image_size, **overrides)


def list_models(filter: str | Sequence[str] = "", pretrained: bool = False,
                exclude_filters: str | Sequence[str] = "", include_tags: bool | None = None) -> list[str]:
    """The model names ``create_model`` takes, sorted, as timm's ``list_models`` returns them.

    Both vocabularies: the official names (``ViT-B_16``, ``R50+ViT-B_16``, ``BiT-R50x1``; the paper's ``ViT-B/16``
    is accepted by ``create_model`` too) and timm's (``vit_base_patch16_224``). ``filter`` and ``exclude_filters``:
    one fnmatch pattern or a list (``'*vit_base*'``); ``pretrained=True``: only names with released weights
    (``create_model(name, pretrained=True)`` loads them); ``include_tags`` (default: ``pretrained``): timm names
    with each pretrained tag vitkit maps (``vit_base_patch16_224.augreg_in21k``), as timm lists them.

    >>> list_models("vit_tiny*")
    ['vit_tiny_patch16_224', 'vit_tiny_patch16_384', 'vit_tiny_r_s16_p8_224', 'vit_tiny_r_s16_p8_384']
    """
    from .checkpoints.catalogue import default_for_model
    from .checkpoints.timm_tags import known_tags
    from .models.registry import list_models as official_names
    from .models.timm_names import TIMM_NAMES

    tags = pretrained if include_tags is None else include_tags
    names = [n for n in official_names() if not pretrained or default_for_model(n) is not None]
    for arch in TIMM_NAMES:
        arch_tags = known_tags(arch)
        if pretrained and not arch_tags:
            continue
        names.extend(f"{arch}.{t}" for t in arch_tags) if tags else names.append(arch)

    def patterns(p: str | Sequence[str]) -> list[str]:
        return [p] if isinstance(p, str) else list(p)

    if patterns(filter) and filter != "":
        names = sorted({n for p in patterns(filter) for n in fnmatch.filter(names, p)})
    for p in patterns(exclude_filters) if exclude_filters else []:
        names = [n for n in names if not fnmatch.fnmatchcase(n, p)]
    return sorted(names)

"""``vitkit.create_model``: the one door to a model, with fresh or pre-trained weights (as timm's
``create_model``). It sits above ``models`` (the architectures) and ``checkpoints`` (the weights), so
neither has to import the other upwards."""

from __future__ import annotations

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

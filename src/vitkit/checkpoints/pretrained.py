"""The weights behind ``vitkit.create_model(name, pretrained=True|SOURCE)``: the catalogue's official checkpoint
of that architecture, or any source ``load_model`` reads, checked to be that architecture."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..models.registry import get_config
from .api import load_model
from .catalogue import default_for_model, list_entries
from .errors import CheckpointError

_ARCH_FIELDS = ("transformer", "resnet", "stem_channels", "stem_strides", "patch_size", "hidden_size", "mlp_dim",
                "num_heads", "num_layers")


def create_pretrained(name: str, num_classes: int | None, image_size: int | tuple[int, int] | None,
                      pretrained: bool | str, overrides: dict[str, Any]) -> nn.Module:
    """``vitkit.create_model(name, ..., pretrained=...)``: see :func:`vitkit.factory.create_model`."""
    want = get_config(name)
    if pretrained is True:
        entry = default_for_model(want.name)
        if entry is None:
            have = sorted({e.model for e in list_entries()})
            raise CheckpointError(f"create_model({name!r}, pretrained=True): no official checkpoint of {want.name}; "
                                  f"models with one: {', '.join(have)} (or pass pretrained=SOURCE)")
        source = entry.name
    elif isinstance(pretrained, str) or hasattr(pretrained, "__fspath__"):
        source = pretrained
    else:
        raise TypeError(f"pretrained must be True, False or a source (str), got {type(pretrained).__name__}")
    model = load_model(source, num_classes=num_classes, image_size=image_size, **overrides)
    got = model.config
    diff = [f"{k} {getattr(got, k)} (wanted {getattr(want, k)})" for k in _ARCH_FIELDS
            if getattr(got, k) != getattr(want, k) and k not in overrides]
    if diff:
        raise CheckpointError(f"create_model({name!r}, pretrained={source!r}): the weights are another "
                              f"architecture: {', '.join(diff)}")
    return model

"""The weights behind ``vitkit.create_model(name, pretrained=True|SOURCE)``: the catalogue's official checkpoint
of that architecture, or any source ``load_model`` reads, checked to be that architecture."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UserError
from ..models.arch import SHAPE_FIELDS, arch_diff
from ..models.registry import get_config
from ..models.timm_names import split_tag, timm_config
from .api import load_model
from .catalogue import default_for_model, list_entries
from .errors import CheckpointError
from .timm_tags import FEATURES_ONLY, known_tags, tag_source


def create_pretrained(name: str, num_classes: int | None, image_size: int | tuple[int, int] | None,
                      pretrained: bool | str, overrides: dict[str, Any]) -> nn.Module:
    """``vitkit.create_model(name, ..., pretrained=...)``: see :func:`vitkit.factory.create_model`."""
    want = get_config(name)
    if pretrained is True and timm_config(name) is not None:
        source, num_classes = _timm_pretrained(name, num_classes)
        image_size = want.image_size if image_size is None else image_size
    elif pretrained is True:
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
    # The named model's shape; pooling, input channels and what the caller overrides are the caller's.
    diff = [f"{k} {have} (wanted {wanted})"
            for k, have, wanted in arch_diff(model.config, want, [k for k in SHAPE_FIELDS if k not in overrides])]
    if diff:
        raise CheckpointError(f"create_model({name!r}, pretrained={source!r}): the weights are another "
                              f"architecture: {', '.join(diff)}")
    return model


def _timm_pretrained(name: str, num_classes: int | None) -> tuple[str, int | None]:
    """The source of a timm name's pretrained tag (timm's default tag when none is given) and the class count timm
    gives it (``orig_in21k``: none, the features)."""
    arch, tag = split_tag(name)
    source = tag_source(arch, tag)
    if source is None:
        tags = known_tags(arch)
        known = f"the tags vitkit maps for {arch}: {', '.join(tags)}" if tags else f"vitkit maps no tag of {arch}"
        what = f"tag {tag!r}" if tag else "a pretrained tag"
        raise UserError(f"create_model({name!r}, pretrained=True): {what} is not one vitkit can map to official "
                        f"weights; {known} (or pass pretrained=SOURCE)")
    if num_classes is None and (tag or known_tags(arch)[0]) in FEATURES_ONLY:
        num_classes = 0
    return source, num_classes

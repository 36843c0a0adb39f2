"""Adapting a loaded model to a new task or resolution, as the official ``load_pretrained`` does.

Its own module (not ``api``) because the format readers call it too: they sit below ``api``, which
imports them, so they must not import ``api`` back.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..models.config import ConfigFieldError
from ..models.registry import build_model
from .errors import CheckpointError, check_state_dict

_UNSET: Any = object()


def adapt_model(
    model: nn.Module,
    *,
    num_classes: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    representation_size: int | None = _UNSET,
    **config_overrides: Any,
) -> nn.Module:
    """Adapt a loaded model as the official ``load_pretrained`` does.

    ``num_classes=K``: a new task. The head becomes a zero-initialised D x K layer and the
    pre-logits layer is dropped unless ``representation_size`` is given. ``image_size``:
    position embeddings resampled on the 2D grid (class token kept). Other keyword arguments
    override config fields that the file cannot tell (``classifier="token_unpooled"``,
    ``dropout_rate=0.1``).
    """
    cfg = model.config
    if config_overrides:
        try:
            new_cfg = cfg.replace(**config_overrides)
        except ConfigFieldError as e:  # e.g. num_heads=12 given for a file of width 64: the caller's value
            given = ", ".join(f"{k}={v!r}" for k, v in sorted(config_overrides.items()))
            raise CheckpointError(f"{cfg.name}: the given {given} does not fit the checkpoint: {e}") from None
        if new_cfg.has_class_token != cfg.has_class_token:
            raise CheckpointError(
                f"classifier={new_cfg.classifier!r} needs "
                f"{'a' if new_cfg.has_class_token else 'no'} class token, but the checkpoint "
                f"{'has' if cfg.has_class_token else 'has none'}"
            )
        changed = {k for k in config_overrides if getattr(cfg, k) != getattr(new_cfg, k)}
        rebuilt = build_model(new_cfg)
        state = model.state_dict()
        check_state_dict(f"override {sorted(changed)}", rebuilt.state_dict(), state)
        rebuilt.load_state_dict(state)
        model = rebuilt
    if num_classes is not None:
        rep = None if representation_size is _UNSET else representation_size
        model.reset_head(num_classes, rep, model.config.head_bias_init)
    elif representation_size is not _UNSET and representation_size != model.config.representation_size:
        raise CheckpointError("representation_size can only be changed together with num_classes (a new head)")
    if image_size is not None:
        model.set_image_size(image_size)
    return model

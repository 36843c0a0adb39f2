"""The model methods timm users call, on every vitkit model (``VisionTransformer``, ``BiTResNet``).

``num_features``, ``get_classifier``, ``reset_classifier``, ``no_weight_decay`` and ``pretrained_cfg`` as timm's
models have them (``forward_features`` / ``forward_head(x, pre_logits=)`` and ``set_grad_checkpointing`` are the
models' own). Everything is read from the model's :class:`~vitkit.models.ViTConfig`, the one owner.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import UserError

# Parameters that are never weight-decayed (big_vision decays only ``kernel``s): the position embeddings and the
# class token; the optimiser (vitkit.train.optim) asks :meth:`ModelApi.no_weight_decay`.
NO_WEIGHT_DECAY = ("pos_embedding", "cls")
# timm's global_pool values -> vitkit's classifier modes
_POOLS = {"token": "token", "avg": "gap", "gap": "gap"}


class ModelApi:
    """Mixin for vitkit's nn.Modules (they have ``config`` and ``head`` and ``reset_head``)."""

    @property
    def num_features(self) -> int:
        """Width of what the classifier sees (``forward_head(x, pre_logits=True)``)."""
        return self.config.feature_dim  # type: ignore[attr-defined]

    @property
    def num_classes(self) -> int:
        return self.config.num_classes  # type: ignore[attr-defined]

    def get_classifier(self) -> nn.Module:
        return self.head  # type: ignore[attr-defined]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new zero-initialised head for ``num_classes`` (0: none, the model returns features), as timm's.

        Only the head changes (a pre-logits layer stays; ``reset_head`` is vitkit's fine-tuning reset, which drops
        it as the official code does). ``global_pool`` may name the pooling the model has; changing it would
        change the architecture."""
        cfg = self.config  # type: ignore[attr-defined]
        if global_pool is not None and _POOLS.get(global_pool) != cfg.classifier:
            raise UserError(f"reset_classifier(global_pool={global_pool!r}): {cfg.name} pools with "
                            f"classifier={cfg.classifier!r}; pooling is part of the architecture (pass "
                            "global_pool=None, or create the model with classifier=...)")
        self.reset_head(num_classes, representation_size=cfg.representation_size)  # type: ignore[attr-defined]

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that are not weight-decayed (timm's set; vitkit's optimiser uses it)."""
        return {n for n, _ in self.named_parameters() if n in NO_WEIGHT_DECAY}  # type: ignore[attr-defined]

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg``: what the input must be. ``preprocessing`` names vitkit's evaluation pipeline
        (:data:`vitkit.data.preprocess.PREPROCESSINGS`), which :func:`vitkit.data.create_transform` runs: the whole
        image resized (``crop_pct`` 1.0), bilinear, then ``(x / 255 - mean) / std``."""
        from ..data.preprocess import default_preprocess

        cfg = self.config  # type: ignore[attr-defined]
        first_conv = next((n for n, m in self.named_modules() if isinstance(m, nn.Conv2d)), "")  # type: ignore
        return {
            "architecture": cfg.name, "input_size": (cfg.in_chans, *cfg.image_size), "fixed_input_size": False,
            "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center", "mean": tuple(cfg.mean),
            "std": tuple(cfg.std), "num_classes": cfg.num_classes, "first_conv": first_conv, "classifier": "head",
            "label_names": list(cfg.class_names) if cfg.class_names else None,
            "preprocessing": default_preprocess(cfg.mean, cfg.std, cfg.in_chans),
        }

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name for :attr:`pretrained_cfg`."""
        return self.pretrained_cfg

    # -- Hugging Face Hub verbs: facades over vitkit.checkpoints.hub, where the file formats live. The one import
    # from models/ up into checkpoints/ (lazy; tests/test_architecture.py names it): HF and timm users call these
    # on the model, so they must be methods of it.
    def save_pretrained(self, save_directory: str | os.PathLike[str], *,
                        card: Mapping[str, Any] | None = None) -> Any:
        """A Hub-ready folder: transformers' layout where it has the architecture, else vitkit's; with a model
        card (``card``: data, result, license). See :func:`vitkit.checkpoints.hub.save_pretrained`."""
        from ..checkpoints.hub import save_pretrained

        return save_pretrained(self, save_directory, card=card)  # type: ignore[arg-type]

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload :meth:`save_pretrained`'s folder to the Hub (``private``, ``token``, ``commit_message``,
        ``card``, ``revision``). See :func:`vitkit.checkpoints.hub.push_to_hub`."""
        from ..checkpoints.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], **overrides: Any) -> Any:
        """A saved folder, any ``load_model`` source, or a Hub repository id (``ORG/NAME``); ``overrides`` as
        ``load_model`` takes them (``num_classes=``, ``image_size=``)."""
        from ..checkpoints.hub import from_pretrained

        model = from_pretrained(source, **overrides)
        if not isinstance(model, cls):
            raise UserError(f"{source}: holds a {type(model).__name__}, not a {cls.__name__} "
                            "(vitkit.load_model reads any kind)")
        return model

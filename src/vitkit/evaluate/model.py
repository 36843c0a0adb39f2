"""The model the commands run: a checkpoint in eval mode, at the resolution asked for."""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..image_size import as_hw


def load_for_inference(path: str, image_size: int | tuple[int, int] | None = None) -> Any:
    """A checkpoint in eval mode, with position embeddings resampled to ``image_size`` (R or (H, W)) if given."""
    from ..checkpoints import load_model

    model = load_model(path)
    if image_size is not None:
        hw = as_hw(image_size, "--image-size")
        if min(hw) < 1:
            raise UserError(f"--image-size must be positive (R or HxW), got {image_size}")
        if tuple(model.config.image_size) != hw:
            try:
                model.set_image_size(hw)
            except ValueError as e:  # the model's stride does not divide it: the user's value
                raise UserError(f"--image-size {image_size}: {e}; choose a multiple of the model's stride") from None
    return model.eval()

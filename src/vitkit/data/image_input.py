"""A user's image -> the model's input: ``create_transform`` (timm's name) and the one path behind it.

``vitkit predict``, ``load_image`` and ``create_transform(model)`` all run :class:`ImageTransform`, which runs the
data loader's own per-sample :class:`~vitkit.data.transforms.Preprocess` and then the collate's float32
normalisation ``(x / 255 - mean) / std``: an image given as a file, as bytes, as a PIL image or as an array becomes
the same tensor the evaluation pipeline makes of it.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .preprocess import check_preprocess, default_preprocess
from .transforms import BadImage, Preprocess

ImageLike = Any  # str | os.PathLike | bytes | PIL.Image.Image | np.ndarray | torch.Tensor (uint8)


def as_raw(image: ImageLike) -> bytes | np.ndarray:
    """What :class:`Preprocess` takes: encoded bytes (a path's contents, bytes) or a uint8 (H, W[, 1 or 3]) array.

    A PIL image in mode RGB or L is its array (what decoding its lossless file gives); CMYK is Pillow's plain
    conversion to RGB, as the decoder does; any other mode (transparency, palette, 16-bit) is encoded as PNG and
    decoded as a file is, so those images follow the decoder's one set of rules. A tensor must be uint8, (C, H, W).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            return path.read_bytes()
        except OSError as e:
            raise UserError(f"{path}: cannot read the file ({e.strerror or e})") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, Image.Image):
        if image.mode in ("RGB", "L"):
            return np.asarray(image)
        if image.mode == "CMYK":
            return np.asarray(image.convert("RGB"))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() not in (2, 3):
            raise UserError(f"an image tensor must be uint8 (C, H, W) with values 0-255; got {image.dtype} "
                            f"{tuple(image.shape)} (a float tensor's value range is ambiguous: pass uint8 or a PIL "
                            "image)")
        image = image.numpy() if image.dim() == 2 else image.permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        ok = image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3)))
        if not ok:
            raise UserError(f"an image array must be uint8 (H, W) or (H, W, 1 or 3); got {image.dtype} {image.shape}")
        return np.ascontiguousarray(image)
    raise UserError(f"cannot read an image from a {type(image).__name__}: pass a file path, bytes, a PIL image, "
                    "or a uint8 array/tensor")


def _describe(image: ImageLike) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"the {type(image).__name__} image"


class ImageTransform:
    """Callable: an image (:func:`as_raw`'s kinds) -> float32 (C, H, W) normalised as the model expects.

    Evaluation (``training=False``): the named preprocessing (default: the model's, see
    :func:`~vitkit.data.preprocess.default_preprocess`), the whole image resized. Training: the training
    augmentation of the data loader (Inception crop, flip), drawn from a generator seeded with ``seed``.
    """

    def __init__(self, *, image_size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                 in_chans: int = 3, preprocess: str | None = None, training: bool = False, seed: int | None = None):
        if in_chans not in (1, 3):
            raise UserError(f"image files can be fed to 1- or 3-channel models only; this model takes {in_chans}")
        self.preprocess = check_preprocess(default_preprocess(mean, std, in_chans) if preprocess is None
                                           else preprocess, in_chans)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.in_chans = in_chans
        self.training = training
        self._pre = Preprocess(train=training, image_size=self.image_size, in_chans=in_chans,
                               preprocess=self.preprocess if not training else "pil")
        self._rng = random.Random(seed) if training else None
        # Same float32 arithmetic as the data loader's collate: (x / 255 - mean) / std.
        self._mean = np.asarray(mean[:in_chans], dtype=np.float32)
        self._std = np.asarray(std[:in_chans], dtype=np.float32)

    def __call__(self, image: ImageLike) -> torch.Tensor:
        raw = as_raw(image)
        try:
            arr = self._pre(raw, self._rng, {})
        except BadImage as e:
            raise UserError(f"{_describe(image)}: cannot read the image ({e})") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.shape[2] != self.in_chans:
            raise UserError(f"{_describe(image)}: decoded {arr.shape[2]} channels but the model takes "
                            f"{self.in_chans}")
        x = arr.astype(np.float32) / np.float32(255.0)
        return torch.from_numpy(((x - self._mean) / self._std).transpose(2, 0, 1).copy())

    def __repr__(self) -> str:
        return (f"ImageTransform(image_size={self.image_size}, preprocess={self.preprocess!r}, "
                f"training={self.training}, mean={tuple(map(float, self._mean))}, std={tuple(map(float, self._std))})")


def create_transform(model_or_config: Any, training: bool = False, *, preprocess: str | None = None,
                     seed: int | None = None) -> ImageTransform:
    """timm's ``create_transform`` for a vitkit model (or its :class:`~vitkit.models.ViTConfig`): PIL image, array,
    bytes or path -> the model's input tensor, exactly as vitkit's evaluation preprocessing makes it.

    >>> tf = create_transform(model)
    >>> logits = model(tf(Image.open("cat.jpg")).unsqueeze(0))
    """
    cfg = getattr(model_or_config, "config", model_or_config)
    if not hasattr(cfg, "image_size") or not hasattr(cfg, "mean"):
        raise UserError(f"create_transform takes a vitkit model or ViTConfig, got {type(model_or_config).__name__}")
    return ImageTransform(image_size=cfg.image_size, mean=cfg.mean, std=cfg.std, in_chans=cfg.in_chans,
                          preprocess=preprocess, training=training, seed=seed)

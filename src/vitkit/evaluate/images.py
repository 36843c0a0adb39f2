"""Plain image files for ``predict`` and ``analyze``: find them, decode them, normalise them.

Decoding is the eval pipeline's (:class:`vitkit.data.transforms.Preprocess`, ``eval_resize="resize"``) under a
named preprocessing (:data:`vitkit.data.preprocess.PREPROCESSINGS`; default
:func:`~vitkit.data.preprocess.default_preprocess`: ``vit_jax``, TensorFlow's decode and resize exactly, for
checkpoints normalised to [-1, 1], ``pil`` otherwise), then scaled to [0, 1] and normalised with
``config.mean`` / ``config.std``. So ``vitkit predict`` on a file sees what ``vitkit eval`` sees.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.image_input import ImageLike, ImageTransform
from ..data.preprocess import IMAGE_SUFFIXES, check_preprocess, default_preprocess
from ..errors import UserError
from ..image_size import as_hw

__all__ = ["IMAGE_SUFFIXES", "ImageList", "find_images", "load_image", "load_images"]


@dataclass
class ImageList:
    """Image paths found on disk, and what was skipped (with the reason)."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def find_images(inputs: Iterable[str | Path]) -> ImageList:
    """Files as given, folders searched recursively for image suffixes (sorted).

    A path that does not exist is recorded as skipped; an image folder with no images in it is
    an error naming the folder.
    """
    found = ImageList()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"{p}: the folder contains no image files ({', '.join(IMAGE_SUFFIXES)})")
            found.paths.extend(files)
        elif p.is_file():
            found.paths.append(p)
        else:
            found.skipped.append((str(p), "no such file or folder"))
    return found


def resolve_preprocess(preprocess: str | None, mean: Sequence[float], std: Sequence[float], in_chans: int) -> str:
    """The preprocessing that runs: ``preprocess``, or the default for this normalisation; checked."""
    return check_preprocess(default_preprocess(mean, std, in_chans) if preprocess is None else preprocess, in_chans)


def load_image(
    image: ImageLike, image_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], in_chans: int = 3,
    preprocess: str | None = None,
) -> torch.Tensor:
    """One image (a file path, bytes, a PIL image or a uint8 array) as a normalised float32 (C, H, W) tensor, as
    :func:`vitkit.data.create_transform` makes it. Raises :class:`~vitkit.errors.UserError` if unreadable.

    ``preprocess``: a name of :data:`vitkit.data.preprocess.PREPROCESSINGS`; None: ``vit_jax`` when
    mean = std = 0.5 (the official [-1, 1] normalisation), else ``pil``.
    """
    return _transform(image_size, mean, std, in_chans, preprocess)(image)


def _transform(image_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], in_chans: int,
               preprocess: str | None) -> ImageTransform:
    return ImageTransform(image_size=as_hw(image_size), mean=mean, std=std, in_chans=in_chans, preprocess=preprocess)


def load_images(
    paths: Sequence[Path], image_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float],
    in_chans: int = 3, warn: bool = True, preprocess: str | None = None,
) -> tuple[torch.Tensor, list[Path], list[tuple[str, str]]]:
    """Decode ``paths`` (``preprocess`` as in :func:`load_image`); unreadable files are reported by name on stderr
    and skipped.

    Returns (images (N, C, H, W), the paths decoded, [(path, reason)] skipped).
    """
    transform = _transform(image_size, mean, std, in_chans, preprocess)  # a bad name fails once, not once per file
    tensors, ok, skipped = [], [], []
    for p in paths:
        try:
            tensors.append(transform(p))
            ok.append(p)
        except ValueError as e:
            skipped.append((str(p), str(e)))
            if warn:
                print(f"warning: skipped {e}", file=sys.stderr)
    if not tensors:
        return torch.empty(0, in_chans, *transform.image_size), ok, skipped
    return torch.stack(tensors), ok, skipped

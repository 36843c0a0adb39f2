"""The input pipeline's options and their defaults, decided once.

:class:`LoaderOptions` owns the defaults of how images become batches (size, crop, flip, evaluation resize and
preprocessing, shuffle buffer, workers). Everything else asks it: ``vitkit.train``'s ``DataConfig`` inherits these
fields (they are its ``data.*`` options), :func:`~vitkit.data.build_loader` takes a ``LoaderOptions`` (a
``DataConfig`` is one) and fills what its caller leaves out from it, and the transform's own defaults are its.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .preprocess import PREPROCESSINGS

# Evaluation resize modes, decided here (the training config offers exactly these): "resize" squashes the image
# to the model's size (TF-exact bilinear, the official ViT eval); "resize_crop" resizes by 1/crop_fraction and takes
# the centre crop (Inception/DeiT/big_vision style).
EVAL_RESIZE = ("resize", "resize_crop")


@dataclass
class LoaderOptions:
    """How images become batches; the defaults here are the only ones."""

    # (h, w) or one number for a square; divisibility by the model's stride is checked by ViTConfig.
    image_size: int | tuple[int, int] = 224
    num_workers: int | None = None  # None: 0 for a small in-memory data set, else one per CPU but one (at most 8)
    eval_resize: Literal[EVAL_RESIZE] = "resize"
    # evaluation preprocessing (vitkit.data.preprocess): None = vit_jax for the official [-1, 1] normalisation, else pil
    eval_preprocess: Literal[(*PREPROCESSINGS, None)] = None
    crop_area: tuple[float, float] = (0.05, 1.0)
    # > 0: the training crop is a window of the image's own size in the image reflect-padded by this many pixels
    # (the CIFAR ResNets' crop) instead of an inception crop; needs crop_area=1,1.
    crop_padding: int = 0
    flip: bool = True
    randaugment: tuple[int, int] | None = None  # (num_ops, magnitude)
    shuffle_buffer: int = 2000  # samples per stream (wds: sources)


LOADER_DEFAULTS = LoaderOptions()
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(LoaderOptions))


def loader_options(options: LoaderOptions | None, fields: dict[str, Any]) -> LoaderOptions:
    """``options`` (default: :data:`LOADER_DEFAULTS`) with the ``fields`` a caller gave by name; another name is a
    TypeError naming the valid ones, as Python's own for an unknown keyword."""
    unknown = sorted(set(fields) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"build_loader() got unexpected keyword argument(s) {', '.join(unknown)}; the loader "
                        f"options are {', '.join(OPTION_NAMES)}")
    base = LOADER_DEFAULTS if options is None else options
    # only LoaderOptions' own fields: a DataConfig (a subclass) brings its training fields along otherwise
    return LoaderOptions(**{k: fields[k] if k in fields else getattr(base, k) for k in OPTION_NAMES})

"""Data: sources named by one string, the official ViT preprocessing, deterministic resumable loaders.

>>> from vitkit.data import build_loader, dataset_info
>>> info = dataset_info("digits")                     # 10 classes, 1438 training images
>>> loader = build_loader("digits", image_size=16, batch_size=64)
>>> images, labels = next(iter(loader))               # float32 (64, 3, 16, 16) in [-1, 1], int64 (64,)

Specs: ``digits``, ``folder:PATH``, ``mnist:PATH``, ``cifar:PATH``, ``hf:PATH``, ``wds:PATTERN[?num_classes=K]``;
see :mod:`vitkit.data.spec`. In place of a spec, Python callers may pass their own ``torch.utils.data.Dataset`` of
``(image, label)`` items or a Hugging Face ``datasets.Dataset``/``DatasetDict`` (:mod:`vitkit.data.objects`).
Determinism and bad-data handling: :mod:`vitkit.data.loader`; how images become batches, and those options'
defaults: :class:`~vitkit.data.options.LoaderOptions` (``build_loader(spec, options, ...)``).
"""

from .catalogue import dataset_info, validate_dataset
from .image_input import ImageTransform, create_transform
from .loader import Loader, LoaderStats, build_loader
from .mixup import Mixup, smooth_one_hot
from .options import LoaderOptions
from .pickles import RestrictedUnpickler, safe_load_pickle
from .preprocess import IMAGE_SUFFIXES, PREPROCESSINGS, default_preprocess
from .spec import SPLIT_NAMES, DatasetInfo, parse_spec
from .transforms import MAX_IMAGE_PIXELS, Preprocess, decode_image, randaugment
from .wds import write_wds_shards

__all__ = [
    "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "PREPROCESSINGS", "SPLIT_NAMES", "DatasetInfo", "ImageTransform", "Loader",
    "LoaderOptions", "LoaderStats", "Mixup", "Preprocess", "RestrictedUnpickler", "build_loader", "create_transform",
    "dataset_info", "decode_image", "default_preprocess", "parse_spec", "randaugment", "safe_load_pickle",
    "smooth_one_hot", "validate_dataset", "write_wds_shards",
]

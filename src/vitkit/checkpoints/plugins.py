"""Imports every format module so each registers itself in ``formats.FORMATS``."""

from . import hf, official_npz, timm, training  # noqa: F401

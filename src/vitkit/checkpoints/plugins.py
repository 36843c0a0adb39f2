"""Imports every format module so each registers itself in ``formats.FORMATS``."""

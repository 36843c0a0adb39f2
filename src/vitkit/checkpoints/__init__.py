"""Checkpoint readers and writers, one module per format, behind ``load_model``/``save_model``.

The formats are listed in :data:`.formats.FORMATS`, in detection order; ``load_model`` detects
the format from the file, builds the architecture it describes and adapts it the way the
official ``load_pretrained`` does.
"""

from .api import adapt_model, detect_format, load_model, save_model
from .errors import CheckpointError

__all__ = ["CheckpointError", "adapt_model", "detect_format", "load_model", "save_model"]

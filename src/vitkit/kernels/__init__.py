"""Kernels the model chooses between per call: plain PyTorch ops or faster CPU paths.

The lowest layer of vitkit: it imports only torch. :mod:`vitkit.models` builds its layers from
these functions and modules, so the speed-ups are part of the model (one ``forward``), not
something applied to it from outside. Every fast path computes the function of the plain op
(bit for bit, or within the dtype's rounding where the summation order differs) and falls back
to the plain op wherever it does not apply (GPUs, ``torch.compile``/export tracing, small
layers, missing oneDNN).
"""

from .common import mkldnn_linear_available, tracing
from .linear import Linear

# The functions live in modules of their names (``kernels.gelu.gelu``, ``kernels.attention.attention``).
__all__ = ["Linear", "mkldnn_linear_available", "tracing"]

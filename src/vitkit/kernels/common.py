"""What every kernel asks before taking a fast path."""

from __future__ import annotations

from functools import cache

import torch


@cache  # a property of this torch build and CPU; asked on every linear's call
def mkldnn_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN packed linear layers work here for ``dtype`` (CPU builds with oneDNN)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    if dtype == torch.bfloat16:
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return dtype == torch.float32


def tracing() -> bool:
    """Whether the model is being traced (torch.compile, torch.export, ONNX, TorchScript): then the
    plain ops are used, so that the graph holds portable ops that the compiler can fuse itself."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def cpu_autocast_dtype() -> torch.dtype | None:
    """The CPU autocast dtype in effect, or None."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

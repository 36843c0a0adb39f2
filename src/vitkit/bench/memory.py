"""Peak memory of this process.

``tracemalloc`` does not see PyTorch's allocations, so on CPU the peak is the kernel's resident-set
high-water mark (``VmHWM`` in ``/proc/self/status``), which :func:`reset_peak_rss` resets by
writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0). On CUDA the caching allocator's
``max_memory_allocated`` is used instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Current resident set size (0 if unknown on this OS)."""
    kib = _status_kib("VmRSS")
    return 0 if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """Resident-set high-water mark since start or the last :func:`reset_peak_rss`."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru if sys.platform == "darwin" else ru * 1024  # macOS reports bytes, Linux KiB


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that RSS counts what is live."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS; False where the OS does not allow it.

    Freed heap memory is trimmed first, otherwise memory reused from earlier steps would be
    invisible to the next high-water mark.
    """
    trim_heap()
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_memory_method(device: torch.device | str = "cpu") -> str:
    """How :func:`peak_memory_bytes` measures, for reports."""
    if torch.device(device).type == "cuda":
        return "torch.cuda.max_memory_allocated"
    if _status_kib("VmHWM") is not None:
        return "process RSS high-water mark (VmHWM, /proc/self/status), reset via /proc/self/clear_refs"
    return "getrusage ru_maxrss (not resettable: includes everything before)"


def reset_peak_memory(device: torch.device | str = "cpu") -> None:
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        reset_peak_rss()


def peak_memory_bytes(device: torch.device | str = "cpu") -> int:
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    return peak_rss_bytes()

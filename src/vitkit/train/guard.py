"""What stops a run: a diverged loss (NaN/inf on any process) and SIGTERM/SIGINT (checkpoint, then stop).

Each step launches one small flags tensor (loss, non-finite, stop requested), all-reduced over processes so
every rank takes the same decision at the same step; reading it is the only host sync of a step.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import torch

from .dist import DistInfo, all_reduce_


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopRequests:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step boundary."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def step_flags(loss: torch.Tensor, stop_requested: bool, dist: DistInfo) -> torch.Tensor:
    """[loss or 0, loss not finite, stop requested], summed over ranks (launched, not read)."""
    finite = torch.isfinite(loss)
    flags = torch.stack([torch.where(finite, loss, torch.zeros_like(loss)), (~finite).double(),
                         # full(), not tensor(): a fill kernel, not a synchronous host-to-device copy
                         torch.full((), float(stop_requested), dtype=torch.float64, device=loss.device)])
    if dist.enabled:
        # One small all-reduce per step: mean loss, divergence and stop requests agree on all ranks.
        all_reduce_(flags)
    return flags


def read_flags(item: tuple[int, torch.Tensor], world_size: int, last_good: Path | None) -> tuple[float, bool]:
    """Read one step's flags (a device sync on GPU): (mean loss, stop requested); raise if diverged, naming the
    last good checkpoint (:mod:`vitkit.train.health`)."""
    step, flags = item
    loss, bad, stop = flags.tolist()
    if bad > 0:
        where = f"the last good checkpoint is {last_good}" if last_good else "no good checkpoint was written yet"
        raise TrainingDiverged(f"loss is NaN or infinite at step {step} (on {int(bad)} of "
                               f"{world_size} processes); {where} (lower optim.lr, check the data, "
                               "or use precision=fp32)")
    return loss / world_size, stop > 0

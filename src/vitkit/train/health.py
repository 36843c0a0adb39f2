"""When a training checkpoint counts as *good* (issue 20).

The rule: a checkpoint is good when

1. every parameter, every floating tensor of the optimiser state (moments, ...) and of the EMA
   weights is finite (no NaN, no infinity), and
2. the recent loss is not diverging: the mean loss of the last ``WINDOW`` (10) steps is at most
   ``max(2 x best, best + 1)``, where ``best`` is the lowest such 10-step mean seen earlier in the
   run. (Noise, warm-up and label smoothing stay far below that; a run that blows up crosses it
   within a few steps. Before the first full window the loss part of the rule does not apply.)

A step whose loss is NaN or infinite stops the run at once (``TrainingDiverged``); this rule
covers what comes before that: weights that have grown to 1e16 while the loss was still finite,
or a loss that has started to climb. Every checkpoint records ``good`` and the reason in its
``meta`` (and in ``checkpoints/latest.json``); the newest good one is named in
``checkpoints/good.json`` and kept even when ``keep_last`` would delete it. The loss window is
saved with each checkpoint, so a resumed run judges by the same history.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from ..checkpoints.validate import all_finite

WINDOW = 10
FACTOR, MARGIN = 2.0, 1.0


class LossWatch:
    """The recent per-step losses and the best ``WINDOW``-step mean so far."""

    def __init__(self, window: int = WINDOW):
        self.recent: deque[float] = deque(maxlen=window)
        self.best: float | None = None

    def add(self, loss: float) -> None:
        self.recent.append(float(loss))
        if len(self.recent) == self.recent.maxlen:
            m = self.mean()
            if math.isfinite(m):
                # best is updated after the check in diverging() would have used the earlier value:
                # a climbing loss never lowers it.
                self.best = m if self.best is None else min(self.best, m)

    def mean(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else float("nan")

    def diverging(self) -> str | None:
        """Why the recent loss counts as diverging, or None."""
        if len(self.recent) < (self.recent.maxlen or 0):
            return None
        m = self.mean()
        if not math.isfinite(m):
            return f"the mean loss of the last {len(self.recent)} steps is {m}"
        if self.best is not None and m > max(FACTOR * self.best, self.best + MARGIN):
            return (f"the mean loss of the last {len(self.recent)} steps, {m:.4g}, is above "
                    f"max({FACTOR:g} x {self.best:.4g}, {self.best:.4g} + {MARGIN:g}) (the best 10-step mean so far)")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "best": self.best}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.recent.clear()
        self.recent.extend(float(x) for x in st.get("recent", []))
        self.best = None if st.get("best") is None else float(st["best"])


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")


def checkpoint_health(state: dict[str, Any], watch: LossWatch) -> tuple[bool, str]:
    """(good, why) for a training checkpoint ``state`` (model, optimizer, ema) by the module's rule."""
    for part in ("model", "optimizer", "ema"):
        for name, t in _tensors(state.get(part, {}), part):
            if t.is_floating_point() and not all_finite(t):
                n = int((~torch.isfinite(t)).sum())
                return False, f"{name} holds {n} NaN or infinite values"
    why = watch.diverging()
    if why:
        return False, f"the loss is diverging: {why}"
    return True, "finite parameters and optimiser state; the loss is not diverging"

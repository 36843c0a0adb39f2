"""The run's set-up (train/build.py): a warm-up longer than the run is said, once, as a warning."""

import logging

from vitkit.train import config as C
from vitkit.train.build import plan_data
from vitkit.train.dist import DistInfo
from vitkit.train.presets import get_preset


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _plan(*overrides):
    cfg = C.apply_layers(get_preset("default"), [[tuple(o.split("=", 1)) for o in overrides]])
    handler, log = _Lines(), logging.getLogger("vitkit")
    log.addHandler(handler)
    try:
        plan = plan_data(cfg, DistInfo())
    finally:
        log.removeHandler(handler)
    return plan, [line for line in handler.lines if "warmup" in line]


def test_warmup_longer_than_the_run_is_a_warning():
    plan, lines = _plan("schedule.steps=20", "schedule.warmup_steps=50")
    assert plan.total_steps == 20
    assert len(lines) == 1 and "schedule.warmup_steps=50 is more than the run's 20 steps" in lines[0]
    assert _plan("schedule.steps=20", "schedule.warmup_steps=20")[1] == []

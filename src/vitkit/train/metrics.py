"""What a run reports: ``metrics.jsonl`` (one JSON record per log or evaluation step), TensorBoard scalars
(``tb/``) and the progress bar. Only the main process writes."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any


class RunLog:
    """Open for the run; on resume, records from beyond the checkpoint's step are dropped first (they will be
    written again), so ``metrics.jsonl`` never holds a step twice."""

    def __init__(self, out: Path, *, enabled: bool, start_step: int, progress: bool, total: int | None):
        self.out, self.enabled = Path(out), enabled
        self.f: Any = None
        self.writer: Any = None
        self.pbar: Any = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        trim_metrics(self.out / "metrics.jsonl", start_step)
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard drops the points at steps >= it when it reads the logs (written by an earlier
        # process that ran past the checkpoint). The checkpoint's own step was logged before it was saved, and
        # stays: a resume purges from the step after it (a no-op resume of a finished run purges nothing).
        self.writer = SummaryWriter(str(self.out / "tb"), purge_step=start_step + 1 if start_step else None)
        self.f = open(self.out / "metrics.jsonl", "a")
        from ..progress import bars_allowed

        if progress and bars_allowed():  # elsewhere the loop logs a line every log_every steps
            from tqdm import tqdm

            self.pbar = tqdm(total=total, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                             file=sys.stderr)

    def write(self, rec: dict[str, Any], prefix: str | None) -> None:
        """One record to metrics.jsonl and its numbers to TensorBoard (under ``prefix/``, if given)."""
        if self.f is None:
            return
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        for k, v in rec.items():
            if k == "step" or not isinstance(v, (int, float)):
                continue
            self.writer.add_scalar(f"{prefix}/{k}" if prefix else k, v, rec["step"])

    def progress(self, n: int = 1, **postfix: str) -> None:
        if self.pbar is not None:
            if postfix:
                self.pbar.set_postfix(**postfix)
            self.pbar.update(n)

    def close_progress(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None

    def close(self) -> None:
        for x in (self.pbar, self.f, self.writer):
            if x is not None:
                x.close()
        self.pbar = self.f = self.writer = None


def last_eval(path: Path) -> dict[str, Any] | None:
    """The last evaluation logged in ``metrics.jsonl`` (``eval/`` keys without the prefix), or None."""
    if not path.exists():
        return None
    found = None
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if any(k.startswith("eval/") for k in rec):
            found = {k[len("eval/"):]: v for k, v in rec.items() if k.startswith("eval/")}
    return found


def trim_metrics(path: Path, step: int) -> None:
    """Drop the records of ``path`` from beyond ``step`` (all of them for step 0)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    path.write_text("".join(x + "\n" for x in keep))


def run_summary(t: Any, p: Any, elapsed: float) -> dict[str, Any]:
    """``summary.json``'s content from the trainer ``t`` and its loop record ``p``; says what the loaders skipped."""
    eval_res = p.eval_res or {}
    train_s = t.train_time - p.train_time_start
    summary: dict[str, Any] = {
        "steps": t.step, "total_steps": t.total_steps, "finished": t.step >= t.total_steps,
        "stopped_by": p.stopped_by, "images_seen_this_run": p.images_seen, "time_s": t.time_before + elapsed,
        "run_time_s": elapsed,
        "train_time_s": train_s, "images_per_s": p.images_seen / max(train_s, 1e-9), "final_loss": p.last_loss,
        "eval": eval_res, "eval_top1": eval_res.get("top1"), "eval_top5": eval_res.get("top5"),
        "data": t.train_loader.stats.as_dict(),
        "eval_data": t.test_loader.stats.as_dict() if t.test_loader is not None else None,
        "eval_preprocess": getattr(t.test_loader, "preprocess", None),
        "world_size": t.dist.world_size, "rank": t.dist.rank, "precision": t.precision,
        "device": str(t.device),
        "batch_size": t.cfg.data.batch_size, "micro_batch_size": t.micro, "accumulation": t.accum,
        "num_classes": t.num_classes, "checkpoint": str(t.last_ckpt) if t.last_ckpt else None,
    }
    for what, ld in (("training", t.train_loader), ("test", t.test_loader)):
        st = getattr(ld, "stats", None)
        if st is not None and (getattr(st, "skipped_total", 0) or getattr(st, "converted_total", 0)):
            t._log(f"vitkit train: {what} data: {st}", logging.WARNING)
    return summary

"""What a run reports: ``metrics.jsonl`` (one JSON record per log or evaluation step), TensorBoard scalars
(``tb/``), the trackers of ``logger=`` (:mod:`vitkit.train.trackers`) and the progress bar.
Only the main process writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..fileio import DiskFull, atomic_write_text, is_disk_full, writing
from .build import DataPlan
from .dist import DistInfo
from .parts import Feed, Progress, RunRecord
from .trackers import Trackers


class RunLog:
    """Open for the run; on resume, records from beyond the checkpoint's step are dropped first (they will be
    written again), so ``metrics.jsonl`` never holds a step twice."""

    def __init__(self, out: Path, *, enabled: bool, start_step: int, progress: bool, total: int | None,
                 loggers: tuple[str, ...] = ("tensorboard",), config: dict[str, Any] | None = None):
        self.out, self.enabled = Path(out), enabled
        self.f: Any = None
        self.writer: Any = None
        self.pbar: Any = None
        self.trackers: Trackers | None = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        trim_metrics(self.out / "metrics.jsonl", start_step)
        self.trackers = Trackers(loggers, self.out, config or {})
        if "tensorboard" in loggers:
            self._open_tensorboard(start_step)
        self.f = open(self.out / "metrics.jsonl", "a")
        from ..progress import bars_allowed

        if progress and bars_allowed():  # elsewhere the loop logs a line every log_every steps
            from tqdm import tqdm

            self.pbar = tqdm(total=total, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                             file=sys.stderr)

    def _open_tensorboard(self, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        _quiet_disk_full_in_threads()
        # purge_step: TensorBoard drops the points at steps >= it when it reads the logs (written by an earlier
        # process that ran past the checkpoint). The checkpoint's own step was logged before it was saved, and
        # stays: a resume purges from the step after it (a no-op resume of a finished run purges nothing).
        self.writer = SummaryWriter(str(self.out / "tb"), purge_step=start_step + 1 if start_step else None)

    def write(self, rec: dict[str, Any], prefix: str | None) -> None:
        """One record to metrics.jsonl and its numbers to TensorBoard (under ``prefix/``, if given)."""
        if self.f is None:
            return
        try:
            with writing(self.out / "metrics.jsonl"):
                self.f.write(json.dumps(rec) + "\n")
                self.f.flush()  # a line cut by a full disk is dropped by trim_metrics on --resume
            if self.writer is not None:
                with writing(self.out / "tb"):  # the writer's thread's error, raised by the next call
                    for k, v in rec.items():
                        if k == "step" or not isinstance(v, (int, float)):
                            continue
                        self.writer.add_scalar(f"{prefix}/{k}" if prefix else k, v, rec["step"])
        except DiskFull:
            self.close(quiet=True)  # no second error from these files when the failed run ends
            raise
        if self.trackers is not None:
            self.trackers.log(rec, prefix)

    def finish(self, summary: dict[str, Any]) -> None:
        """The run's end: the trackers record the final model (when this run wrote one) and the summary."""
        if self.trackers is not None:
            model = summary.get("model")
            self.trackers.finish(Path(model) if model else None, summary)

    def progress(self, n: int = 1, **postfix: str) -> None:
        if self.pbar is not None:
            if postfix:
                self.pbar.set_postfix(**postfix)
            self.pbar.update(n)

    def close_progress(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None

    def close(self, *, quiet: bool = False) -> None:
        """Close everything; ``quiet``: after a failure, errors of closing (a full disk's, again) are dropped."""
        parts = ((self.pbar, "."), (self.f, "metrics.jsonl"), (self.writer, "tb"), (self.trackers, "."))
        self.pbar = self.f = self.writer = self.trackers = None
        for x, name in parts:
            if x is None:
                continue
            try:
                with writing(self.out / name):
                    x.close()
            except Exception:
                if not quiet:
                    raise


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
    atomic_write_text(path, "".join(x + "\n" for x in keep))  # a full disk leaves the file as it was


def _quiet_disk_full_in_threads() -> None:
    """TensorBoard writes in a thread; a full disk ends it with a traceback on stderr, while the same error reaches
    the run through the writer's next call (RunLog.write: one line naming tb/). Keep the thread's copy quiet."""
    import threading

    hook = threading.excepthook
    if getattr(hook, "_vitkit", False):
        return

    def quiet(args: Any) -> None:
        if not is_disk_full(args.exc_value):
            hook(args)

    quiet._vitkit = True  # type: ignore[attr-defined]
    threading.excepthook = quiet


def run_summary(rec: RunRecord, p: Progress, elapsed: float, *, plan: DataPlan, feed: Feed, dist: DistInfo,
                device: torch.device, precision: str, batch_size: int) -> dict[str, Any]:
    """``summary.json``'s content: where the run stands (``rec``), this process's loop (``p``, ``elapsed`` seconds),
    the batch arithmetic (``plan``), what the loaders read and skipped (``feed``) and where it ran."""
    eval_res = p.eval_res or {}
    train_s = rec.train_time - p.train_time_start
    test = feed.test_loader
    return {
        "steps": rec.step, "total_steps": rec.total_steps, "finished": rec.step >= rec.total_steps,
        "stopped_by": p.stopped_by, "images_seen_this_run": p.images_seen, "time_s": rec.time_before + elapsed,
        "run_time_s": elapsed,
        "train_time_s": train_s, "images_per_s": p.images_seen / max(train_s, 1e-9), "final_loss": p.last_loss,
        "eval": eval_res, "eval_top1": eval_res.get("top1"), "eval_top5": eval_res.get("top5"),
        "data": feed.train_loader.stats.as_dict(),
        "eval_data": test.stats.as_dict() if test is not None else None,
        "eval_preprocess": test.preprocess if test is not None else None,
        "world_size": dist.world_size, "rank": dist.rank, "precision": precision,
        "eval_precision": precision,  # the evaluation's (Trainer.evaluate); `vitkit eval RUN` uses it by default
        "device": str(device),
        "batch_size": batch_size, "micro_batch_size": plan.micro, "accumulation": plan.accum,
        "num_classes": plan.num_classes, "checkpoint": str(rec.last_ckpt) if rec.last_ckpt else None,
    }


def data_notes(feed: Feed) -> list[str]:
    """One line per loader that skipped or converted samples, for the log."""
    return [f"vitkit train: {what} data: {ld.stats}" for what, ld in (("training", feed.train_loader),
                                                                       ("test", feed.test_loader))
            if ld is not None and (ld.stats.skipped_total or ld.stats.converted_total)]

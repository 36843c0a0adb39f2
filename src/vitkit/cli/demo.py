"""``vitkit demo``: the paper's method end to end on a fresh machine, with no download.

1. Pre-train a small ViT (patch 4, tanh representation layer) on scikit-learn's bundled 8x8
   digits upsampled to 16 px (``demo_pretrain`` preset).
2. Fine-tune it at twice the resolution, 32 px: position embeddings interpolated in 2D, the
   representation layer dropped and a fresh zero-initialised head, SGD with momentum
   (``demo_finetune`` preset), evaluate.

Each step writes everything ``vitkit train`` writes (``OUT/pretrain``, ``OUT/finetune``);
``OUT/summary.json`` holds both test top-1 accuracies. Stopped (Ctrl-C, SIGTERM) and run again with the same
``--out`` and settings, the demo continues where it stopped: a finished step is not run again, an interrupted one
resumes from its checkpoint; with other settings it starts again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import add_command, add_json, add_no_progress, add_out, log, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", help="pre-train on digits, fine-tune at 2x resolution, evaluate (no download)",
                    description=__doc__.split("\n\n", 1)[1], examples=[
                        "vitkit demo --out runs/demo_quick pretrain.schedule.steps=100 finetune.schedule.steps=50",
                        "vitkit demo --out runs/demo",
                        "vitkit demo --out runs/demo_seed1 seed=1 --no-progress"])
    add_out(p, what="folder for pretrain/, finetune/, figures/ and summary.json", default="runs/demo")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (this model is too small to gain from more)")
    add_no_progress(p)
    add_json(p, what="the summary")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides for both steps, e.g. seed=1; prefix with pretrain. or finetune. for one step")
    p.set_defaults(func=run)


def _split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    pre, fine = [], []
    for o in overrides:
        if o.startswith("pretrain."):
            pre.append(o[len("pretrain."):])
        elif o.startswith("finetune."):
            fine.append(o[len("finetune."):])
        else:
            pre.append(o)
            fine.append(o)
    return pre, fine


def _fresh(folder: Path) -> None:
    """Re-running the demo with other settings replaces its own previous runs (and nothing else)."""
    from ..train.runlock import LOCK_FILES

    if folder.exists():
        if not (folder / "config.yaml").is_file() and any(p.name not in LOCK_FILES for p in folder.iterdir()):
            raise UserError(f"{folder} exists and is not a vitkit run; choose another --out")
        shutil.rmtree(folder)


def _left_by_earlier_demo(cfg: Any) -> str | None:
    """What an earlier demo left in this stage's folder with the same settings (``--threads`` aside): "finished",
    "started" (checkpoints to resume from), or None (nothing, or other settings: the stage starts again)."""
    from ..train.config import load_yaml, to_dict
    from ..training_checkpoint import latest_checkpoint

    folder = Path(cfg.out)
    if not (folder / "config.yaml").is_file():
        return None
    try:
        before = to_dict(load_yaml(folder / "config.yaml"))
    except ValueError:  # an unreadable config.yaml: start the stage again
        return None
    if {**before, "threads": None} != {**to_dict(cfg), "threads": None}:
        log.info(f"vitkit demo: {folder} was made with other settings; starting it again")
        return None
    try:
        done = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        done = {}
    if done.get("finished") and not done.get("stopped_by") and (folder / "model.safetensors").is_file():
        return "finished"
    return "started" if latest_checkpoint(folder) is not None else None


def _stage(cfg: Any, what: str, *, reuse: bool, progress: bool, again: str) -> tuple[dict[str, Any], bool]:
    """Run one step of the demo in ``cfg.out``, continuing what an interrupted demo left there: a finished stage
    is not run again, a started one resumes from its checkpoint. Returns (its summary, whether it was reused)."""
    from ..train.loop import train
    from .stop import Stopped

    folder = Path(cfg.out)
    left = _left_by_earlier_demo(cfg) if reuse else None
    if left == "finished":
        log.info(f"vitkit demo: {what}: finished earlier in {folder}; not run again")
        return json.loads((folder / "summary.json").read_text()), True
    if left is None:
        _fresh(folder)
    else:
        log.info(f"vitkit demo: {what}: continuing the interrupted run in {folder}")
    summary = train(cfg, resume=left == "started", progress=progress)
    if summary.get("stopped_by"):
        import signal

        signum = signal.SIGINT if summary["stopped_by"] == "SIGINT" else signal.SIGTERM
        raise Stopped(signum, f"kept {what} at step {summary['steps']} of {summary['total_steps']} "
                              f"({summary['checkpoint']}); continue with: {again}")
    return summary, left is not None


def continue_command(out: Path | str, threads: int | None, overrides: list[str] | None) -> str:
    """The command line that continues an interrupted demo: the same --out, --threads and overrides."""
    import shlex

    parts = ["vitkit", "demo", "--out", str(out)]
    if threads not in (None, 1):
        parts += ["--threads", str(threads)]
    return shlex.join([*parts, *(overrides or [])])


def kept_on_stop(args: argparse.Namespace) -> str:
    """What a demo stopped outside the training steps leaves (main: stop.report)."""
    return f"finished steps in {args.out} are kept; continue with: " \
           f"{continue_command(args.out, args.threads, args.overrides)}"


def _write_figures(model_path: Path, out: Path, num_images: int = 8) -> dict[str, str]:
    """The four Section 4.5 figures of the fine-tuned model, on digits test images."""
    from ..analysis import write_figures
    from ..checkpoints import load_model
    from ..evaluate.data import gather_images

    model = load_model(model_path)
    images = gather_images(model.config, ["digits"], num_images)
    return dict(write_figures(model, images, out)["figures"])


def run_demo(out: Path, *, threads: int | None = 1, progress: bool = True,
             overrides: list[str] | None = None) -> dict[str, Any]:
    """Pre-train on digits at 16 px, fine-tune at 32 px; returns (and writes) the summary."""
    from ..train.runlock import run_lock

    out = Path(out)
    with run_lock(out):  # one demo per folder: another one's steps must not be replaced under it
        return _run_demo(out, threads, progress, list(overrides or []))


def _run_demo(out: Path, threads: int | None, progress: bool, overrides: list[str]) -> dict[str, Any]:
    from ..train.config import apply_overrides
    from ..train.presets import get_preset

    pre_over, fine_over = _split_overrides(overrides)
    again = continue_command(out, threads, overrides)

    pre_cfg = apply_overrides(get_preset("demo_pretrain"), pre_over)
    pre_cfg.out, pre_cfg.threads = str(out / "pretrain"), threads or pre_cfg.threads
    log.info("vitkit demo: 1/2 pre-training on digits at 16 px")
    pre, reused = _stage(pre_cfg, "the pre-training", reuse=True, progress=progress, again=again)

    fine_cfg = apply_overrides(get_preset("demo_finetune"), fine_over)
    fine_cfg.model.init = pre["model"]
    fine_cfg.out, fine_cfg.threads = str(out / "finetune"), threads or fine_cfg.threads
    log.info(f"vitkit demo: 2/2 fine-tuning at {fine_cfg.data.image_size} px (position embeddings interpolated, "
             "new zero head)")
    # Only from the pre-trained model it started from: a pre-training run again invalidates it.
    fine, _ = _stage(fine_cfg, "the fine-tuning", reuse=reused, progress=progress, again=again)
    log.info("vitkit demo: writing the paper's analysis figures (Fig. 6, Fig. 7)")
    t0 = time.perf_counter()
    figures = _write_figures(Path(fine["model"]), out / "figures")
    # Each step's wall time across the processes that ran it (an interrupted demo continued), from its summary.
    t_pre, t_fine = float(pre["time_s"]), float(fine["time_s"])
    total = t_pre + t_fine + time.perf_counter() - t0

    summary = {
        "pretrain_top1": pre["eval_top1"], "pretrain_top5": pre["eval_top5"],
        "finetune_top1": fine["eval_top1"], "finetune_top5": fine["eval_top5"],
        "pretrain_image_size": pre_cfg.data.image_size, "finetune_image_size": fine_cfg.data.image_size,
        "pretrain_time_s": t_pre, "finetune_time_s": t_fine, "total_time_s": total,
        "figures": figures,
        "pretrain_model": pre["model"], "finetune_model": fine["model"],
        "pretrain": str(out / "pretrain"), "finetune": str(out / "finetune"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def run(args: argparse.Namespace) -> int:
    s = run_demo(Path(args.out), threads=args.threads, progress=not args.no_progress, overrides=args.overrides)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"vitkit demo: digits test top-1: pre-trained at {s['pretrain_image_size']} px {s['pretrain_top1']:.4f}, "
          f"fine-tuned at {s['finetune_image_size']} px {s['finetune_top1']:.4f} ({s['total_time_s']:.0f} s); "
          f"wrote {args.out}/summary.json")
    return 0

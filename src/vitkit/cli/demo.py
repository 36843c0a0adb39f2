"""``vitkit demo``: the paper's method end to end on a fresh machine, with no download.

1. Pre-train a small ViT (patch 4, tanh representation layer) on scikit-learn's bundled 8x8
   digits upsampled to 16 px (``demo_pretrain`` preset).
2. Fine-tune it at twice the resolution, 32 px: position embeddings interpolated in 2D, the
   representation layer dropped and a fresh zero-initialised head, SGD with momentum
   (``demo_finetune`` preset), evaluate.

Each step writes everything ``vitkit train`` writes (``OUT/pretrain``, ``OUT/finetune``);
``OUT/summary.json`` holds both test top-1 accuracies.
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
    """Re-running the demo replaces its own previous runs (and nothing else)."""
    if folder.exists():
        if not (folder / "config.yaml").is_file():
            raise UserError(f"{folder} exists and is not a vitkit run; choose another --out")
        shutil.rmtree(folder)


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
    from ..train.config import apply_overrides
    from ..train.loop import train
    from ..train.presets import get_preset

    out = Path(out)
    pre_over, fine_over = _split_overrides(list(overrides or []))
    t0 = time.perf_counter()

    pre_cfg = apply_overrides(get_preset("demo_pretrain"), pre_over)
    pre_cfg.out, pre_cfg.threads = str(out / "pretrain"), threads or pre_cfg.threads
    _fresh(out / "pretrain")
    log.info("vitkit demo: 1/2 pre-training on digits at 16 px")
    pre = train(pre_cfg, progress=progress)
    t_pre = time.perf_counter() - t0

    fine_cfg = apply_overrides(get_preset("demo_finetune"), fine_over)
    fine_cfg.model.init = pre["model"]
    fine_cfg.out, fine_cfg.threads = str(out / "finetune"), threads or fine_cfg.threads
    _fresh(out / "finetune")
    log.info(f"vitkit demo: 2/2 fine-tuning at {fine_cfg.data.image_size} px (position embeddings interpolated, "
             "new zero head)")
    fine = train(fine_cfg, progress=progress)
    t_fine = time.perf_counter() - t0
    log.info("vitkit demo: writing the paper's analysis figures (Fig. 6, Fig. 7)")
    figures = _write_figures(Path(fine["model"]), out / "figures")
    total = time.perf_counter() - t0

    summary = {
        "pretrain_top1": pre["eval_top1"], "pretrain_top5": pre["eval_top5"],
        "finetune_top1": fine["eval_top1"], "finetune_top5": fine["eval_top5"],
        "pretrain_image_size": pre_cfg.data.image_size, "finetune_image_size": fine_cfg.data.image_size,
        "pretrain_time_s": t_pre, "finetune_time_s": t_fine - t_pre, "total_time_s": total,
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

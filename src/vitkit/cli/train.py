"""``vitkit train``: train or fine-tune a ViT from a preset plus ``key=value`` overrides.

Examples::

    vitkit train --preset cifar10_cpu --out runs/c10 data.train=wds:... data.test=wds:...
    vitkit train --preset vit_finetune --out runs/ft model.init=imagenet21k/ViT-B_16 optim.lr=0.003
    vitkit train --out runs/c10 --resume
    torchrun --nproc_per_node=2 -m vitkit.cli.main train --preset default --out runs/ddp
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
_PARSER: argparse.ArgumentParser | None = None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train or fine-tune a model (presets + key=value overrides)",
        description="Train or fine-tune a ViT. Options are set with dotted key=value pairs "
                    "(optim.lr=0.01 data.batch_size=256); --list-options shows them all.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default=None, help="starting configuration (see --list-presets); default: 'default'")
    p.add_argument("--out", default=None, help="output directory (required unless given as out=DIR)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--list-options", action="store_true", help="list every option with its type and value and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # REMAINDER so that options and key=value pairs may be interleaved; flags found among them are
    # parsed again in run().
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                   help="option overrides, e.g. optim.lr=0.01")
    p.set_defaults(func=run)
    global _PARSER
    _PARSER = p


def _split_remainder(args: argparse.Namespace) -> argparse.Namespace:
    items = list(args.overrides or [])
    pairs = [x for x in items if _OVERRIDE.match(x)]
    flags = [x for x in items if not _OVERRIDE.match(x)]
    if flags and _PARSER is not None:
        args = _PARSER.parse_args(flags, namespace=args)
        stray = [x for x in args.overrides or [] if x in flags]
        if stray:
            raise ValueError(f"{' '.join(stray)}: expected key=value overrides (e.g. optim.lr=0.01); "
                             "see vitkit train --list-options")
    args.overrides = pairs
    return args


def run(args: argparse.Namespace) -> int:
    from ..train import config as C
    from ..train.presets import PRESETS, describe, get_preset

    args = _split_remainder(args)
    if args.list_presets:
        for name in PRESETS:
            print(f"{name:20s} {describe(name)}")
        return 0
    out = args.out
    if args.resume:
        if not out:
            raise ValueError("--resume needs --out DIR (the run to continue)")
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: {saved} not found; is {out} a vitkit training run?")
        cfg = C.load_yaml(saved)
        if args.preset and args.preset != cfg.preset:
            raise ValueError(f"--resume continues {out} (preset {cfg.preset!r}); drop --preset {args.preset}")
        if args.overrides:
            print(f"vitkit train: note: applying {' '.join(args.overrides)} on top of {saved}", file=sys.stderr)
    else:
        cfg = get_preset(args.preset or "default")
    cfg = C.apply_overrides(cfg, list(args.overrides))
    if out:
        cfg.out = out
    if args.list_options:
        for key, tp, value in C.list_options(cfg):
            print(f"{key:34s} {value!r:40s} {tp}")
        return 0
    from ..train.loop import TrainingDiverged, train

    try:
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as e:
        print(f"vitkit train: error: {e}", file=sys.stderr)
        return 3
    if summary.get("eval_top1") is not None and summary.get("rank", 0) == 0:
        print(f"vitkit train: {summary['steps']} steps, eval top-1 {summary['eval_top1']:.4f} "
              f"top-5 {summary['eval_top5']:.4f}; wrote {cfg.out}", file=sys.stderr)
    return interrupted_exit_code(summary.get("stopped_by"))


def interrupted_exit_code(stopped_by: str | None) -> int:
    """0 for a finished run; 128 + the signal number for one stopped (after saving a resumable
    checkpoint) by SIGINT (130) or SIGTERM (143), as a shell reports a signal-killed process, so
    ``vitkit train ... && vitkit eval ...`` does not go on. A rank stopped because another rank
    got the signal reports 143: the launcher (torchrun) forwards its SIGINT/SIGTERM as SIGTERM."""
    if stopped_by is None:
        return 0
    return 128 + (signal.SIGINT if stopped_by == "SIGINT" else signal.SIGTERM)

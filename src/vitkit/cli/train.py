"""``vitkit train``: train or fine-tune a ViT from a preset, config files, flags and ``key=value`` overrides.

Sources, later ones overriding earlier ones: the preset (``--preset``; else the config file's ``preset:``; else
``default``) < each ``--config FILE.yaml`` in order < the shared flags (``--data``, ``--batch-size``, ...) <
``key=value`` overrides. A config file is a run's own ``config.yaml`` or a hand-written subset of it, with the same
keys as the overrides; unknown keys are errors.

Config library: the home-made typed tree of :mod:`vitkit.train.config` is kept, not OmegaConf. It already reads
YAML with the same dotted keys, rejects unknown keys and wrong types with the valid choices, and takes its
vocabularies (precisions, split names, classifiers) from the code that consumes them as ``Literal`` types;
OmegaConf 2.3 (the current release) supports no ``Literal`` hints (they arrive in 2.4) nor ``int | tuple`` unions,
pins ``antlr4-python3-runtime==4.9.*``, and would still need vitkit's own rules (``schedule.steps`` vs
``schedule.epochs``, ``model.init`` dropping the preset's architecture) on top of its merge.

Examples::

    vitkit train --preset cifar10_cpu --out runs/c10 --data wds:... data.test=wds:...
    vitkit train --config runs/c10/config.yaml --out runs/c10_seed1 seed=1
    vitkit train --out runs/c10 --resume
    torchrun --nproc_per_node=2 -m vitkit.cli.main train --preset default --out runs/ddp
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import (
    add_batch_size,
    add_command,
    add_data,
    add_image_size,
    add_json,
    add_no_progress,
    add_num_workers,
    add_out,
    add_precision,
    add_preprocess,
    check_out,
    log,
)

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
_PARSER: argparse.ArgumentParser | None = None

# shared flag (argparse dest) -> the training option it sets
FLAG_OPTIONS = {"data": "data.train", "batch_size": "data.batch_size", "precision": "precision",
                "num_workers": "data.num_workers", "image_size": "data.image_size",
                "preprocess": "data.eval_preprocess"}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "train", help="train or fine-tune a model (presets, config files, key=value overrides)",
        description="Train or fine-tune a ViT. Options are dotted keys (optim.lr=0.01 data.batch_size=256); "
                    "--list-options shows them all. Later sources override earlier ones: preset < --config files < "
                    "flags < key=value.",
        examples=["vitkit train --preset default --out runs/digits --batch-size 32 schedule.steps=100",
                  "vitkit train --config runs/digits/config.yaml --out runs/digits_seed1 seed=1",
                  "vitkit train --preset vit_finetune --out runs/ft --data folder:pets/train "
                  "model.init=imagenet21k/ViT-B_16"])
    p.add_argument("--preset", default=None,
                   help="starting configuration (see --list-presets); default: the config file's, else 'default'")
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                   help="options from a YAML file (a run's config.yaml or a subset); repeatable, later files win")
    add_out(p, what="the run folder (required unless given as out=DIR or in a --config file)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    add_data(p, required=False, extra="; the data of the run: trains on its train split and tests on its test "
                                      "split (= data.train=SPEC data.test=none; data.test=OTHER after it to test "
                                      "elsewhere)")
    add_batch_size(p, default=None, extra=" (= data.batch_size; default: the preset's)")
    add_precision(p, default=None, extra=" (= precision; default: the preset's)")
    add_num_workers(p)
    add_image_size(p, default=None, extra=" (= data.image_size; default: the preset's)")
    add_preprocess(p)
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--list-options", action="store_true", help="list every option with its type and value and exit")
    add_no_progress(p)
    add_json(p, what="the run's summary")
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
            raise UserError(f"{' '.join(stray)}: expected key=value overrides (e.g. optim.lr=0.01); "
                            "see vitkit train --list-options")
    args.overrides = pairs
    return args


def _flatten(node: Any, d: dict[str, Any], prefix: str, where: str) -> list[tuple[str, Any]]:
    """A YAML mapping as (dotted key, value) pairs, descending only into the config's sections (a dict-valued
    option stays one value)."""
    out: list[tuple[str, Any]] = []
    for key, value in d.items():
        sub = getattr(node, str(key), None) if node is not None else None
        if isinstance(value, dict) and dataclasses.is_dataclass(sub):
            out += _flatten(sub, value, f"{prefix}{key}.", where)
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _config_layer(path: str, cfg: Any) -> list[tuple[str, Any]]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if d is None:
        return []
    if not isinstance(d, dict):
        raise UserError(f"--config {path}: expected a mapping of options (key: value), got {type(d).__name__}")
    return [(k, v) for k, v in _flatten(cfg, d, "", path) if k != "preset"]


def _preset_of(paths: list[str]) -> str | None:
    import yaml

    for path in reversed(paths):
        try:
            d = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue  # reported with the file's name when the layer is read
        if isinstance(d, dict) and d.get("preset"):
            return str(d["preset"])
    return None


def _print_presets() -> None:
    from ..train.presets import PRESETS, describe

    width = shutil.get_terminal_size((100, 20)).columns
    pad = max(len(n) for n in PRESETS) + 2
    for name in PRESETS:
        lines = textwrap.wrap(describe(name), width=max(40, width - pad), break_on_hyphens=False) or [""]
        print(f"{name:<{pad}}{lines[0]}")
        for line in lines[1:]:
            print(" " * pad + line)


def build_config(args: argparse.Namespace) -> Any:
    """The training configuration from preset < --config files < flags < key=value (one decider: here)."""
    from ..train import config as C
    from ..train.presets import get_preset

    out = args.out
    if args.resume:
        if not out:
            raise UserError("--resume needs --out DIR (the run to continue)")
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: {saved} not found; is {out} a vitkit training run?")
        if args.config:
            raise UserError(f"--resume continues {out} with its own {saved}; drop --config")
        cfg = C.load_yaml(saved)
        if args.preset and args.preset != cfg.preset:
            raise UserError(f"--resume continues {out} (preset {cfg.preset!r}); drop --preset {args.preset}")
        base, layers = cfg, []
    else:
        preset = args.preset or _preset_of(args.config) or "default"
        base = get_preset(preset)
        layers = [_config_layer(path, base) for path in args.config]
    flags = [(key, getattr(args, dest)) for dest, key in FLAG_OPTIONS.items() if getattr(args, dest, None) is not None]
    if getattr(args, "data", None) is not None:
        flags.append(("data.test", None))  # --data X sets both splits: the test set is X's own (data.test=Y after)
    cli = [tuple(item.split("=", 1)) for item in args.overrides]
    if args.resume and (flags or cli):
        log.info("vitkit train: note: applying %s on top of %s", " ".join(f"{k}={v}" for k, v in flags + cli),
                 Path(out) / "config.yaml")
    cfg = C.apply_layers(base, [*layers, flags + cli])
    if out:
        cfg.out = out
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..train import config as C

    args = _split_remainder(args)
    if args.list_presets:
        _print_presets()
        return 0
    cfg = build_config(args)
    if args.list_options:
        for key, tp, value in C.list_options(cfg):
            print(f"{key:34s} {value!r:40s} {tp}")
        return 0
    if not cfg.out:
        raise UserError("where should the run go? pass --out DIR (or out=DIR)")
    check_out(cfg.out, folder=True)
    from ..fileio import DiskFull
    from ..train.guard import TrainingDiverged
    from ..train.loop import train

    try:
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as e:
        log.error("vitkit train: error: %s", e)
        return 3
    except DiskFull as e:  # the checkpoints written before, and good.json, are whole (atomic writes)
        raise DiskFull(e.path, e.reason, f"the checkpoints before it are kept: free some space, then continue "
                                         f"with: vitkit train --out {cfg.out} --resume") from e
    code = interrupted_exit_code(summary.get("stopped_by"))
    if summary.get("rank", 0) != 0:
        return code
    if code:
        log.warning("vitkit train: stopped by %s at step %d; kept checkpoint %s; continue with: vitkit train --out %s "
                    "--resume", summary["stopped_by"], summary["steps"], summary["checkpoint"], cfg.out)
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    elif summary.get("eval_top1") is not None and code == 0:
        log.info("vitkit train: %d steps, eval top-1 %.4f top-5 %.4f; wrote %s", summary["steps"],
                 summary["eval_top1"], summary["eval_top5"], cfg.out)
    return code


def kept_on_stop(args: argparse.Namespace) -> str:
    """What a run stopped outside the steps (set-up, the final evaluation, a second Ctrl-C) leaves: the checkpoints
    written so far (main: stop.report)."""
    from ..training_checkpoint import latest_checkpoint

    last = latest_checkpoint(Path(args.out)) if args.out else None
    if last is None:
        return "no checkpoint was written yet; run the same command again"
    return f"kept checkpoint {last}; continue with: vitkit train --out {args.out} --resume"


def interrupted_exit_code(stopped_by: str | None) -> int:
    """0 for a finished run; 128 + the signal number for one stopped (after saving a resumable
    checkpoint) by SIGINT (130) or SIGTERM (143), as a shell reports a signal-killed process, so
    ``vitkit train ... && vitkit eval ...`` does not go on. A rank stopped because another rank
    got the signal reports 143: the launcher (torchrun) forwards its SIGINT/SIGTERM as SIGTERM."""
    import signal

    if stopped_by is None:
        return 0
    return 128 + (signal.SIGINT if stopped_by == "SIGINT" else signal.SIGTERM)

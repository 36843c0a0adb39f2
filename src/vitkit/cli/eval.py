"""``vitkit eval``: top-1 / top-5 accuracy of a checkpoint on a data spec."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from .common import (
    add_batch_size,
    add_command,
    add_data,
    add_device,
    add_image_size,
    add_json,
    add_limit,
    add_model,
    add_no_progress,
    add_num_workers,
    add_out,
    add_precision,
    add_preprocess,
    add_split,
    check_out,
    load_command_model,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "eval", help="top-1 and top-5 accuracy on a data set",
                    description="Top-1 / top-5 accuracy of a checkpoint on a data spec; eval.json records what ran "
                                "(split read, precision, device, preprocessing, number of examples).",
                    examples=["vitkit eval --model vit.safetensors --data digits --limit 100 --out runs/eval",
                              "vitkit eval --model imagenet21k+imagenet2012/ViT-B_16 --data folder:imagenet/val "
                              "--batch-size 128 --flip",
                              "vitkit eval --model runs/c10 --data wds:cifar10/test-{000000..000009}.tar --json"])
    add_model(p)
    add_data(p)
    add_split(p)
    add_limit(p)
    add_image_size(p)
    add_preprocess(p)
    add_batch_size(p, default=64)
    add_precision(p, default=None, extra="; default: the precision a vitkit train run folder evaluated in (its "
                  "summary.json), else auto")
    add_device(p)
    add_num_workers(p)
    p.add_argument("--flip", action="store_true",
                   help="also score the mean logits of each image and its mirror image (flip_top1, flip_top5)")
    add_out(p, what="folder to write eval.json into")
    add_no_progress(p)
    add_json(p, what="the record (eval.json's content)")
    p.set_defaults(func=run)


def kept_on_stop(args: argparse.Namespace) -> str:
    """main: stop.report."""
    return "nothing was written (eval.json is written at the end); run the same command again"


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_accuracy
    from ..evaluate.core import match_classes, real_sets
    from ..evaluate.data import loader_stats, open_loader, report_skipped
    from .main import write_report

    if args.out:
        check_out(args.out, folder=True)
    precision_from = "--precision"
    if args.precision is None:
        args.precision, precision_from = run_eval_precision(args.model) or ("auto", "default")
    model, device, precision = load_command_model(args, no_head="; use `vitkit fewshot` instead")
    cfg = model.config
    h, w = cfg.image_size  # the model's, after --image-size resampled it
    loader, info, batches = open_loader(
        args.data, cfg, split=args.split, batch_size=args.batch_size, limit=args.limit,
        num_workers=args.num_workers, preprocess=args.preprocess,
    )
    try:
        classes = match_classes(cfg.class_names, getattr(info, "class_names", None), cfg.num_classes,
                                info.num_classes)
    except ValueError as e:
        raise UserError(f"{args.data}: {e}") from None
    res = evaluate_accuracy(model, loader, precision=precision, device=device, total=batches, flip=args.flip,
                            classes=classes, progress=True, real=real_sets(loader))
    # What ran: the split actually read (a data set without `test` is evaluated on its validation split), the
    # resolved precision, the device, the preprocessing, the number of examples (exactly --limit when given).
    split = str(getattr(info, "split", None) or args.split)
    res.update({"model": str(args.model), "data": args.data, "split": split, "image_size": [h, w],
                "precision": precision, "precision_from": precision_from, "device": str(device),
                "preprocess": loader.preprocess,
                "limit": args.limit, "loader": loader_stats(loader), "classes": classes.as_dict(cfg.num_classes)})
    if split != args.split:
        res["requested_split"] = args.split
    report_skipped(res["loader"], args.data)
    if args.out:
        write_report(args.out, "eval.json", res, quiet=args.quiet)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%  ({res['num_examples']} images of "
          f"{args.data} ({split}) at {h}x{w}, {precision}, preprocessing {loader.preprocess})")
    if precision_from not in ("--precision", "default"):
        print(f"note: precision {precision}: {precision_from} (--precision chooses another)")
    if "real_top1" in res:
        print(f"ReaL top-1 {100 * res['real_top1']:.2f}%  ({res['real_examples']} images with a ReaL label; "
              f"{res['real_left_out']} with an empty label set left out)")
    if args.flip:
        print(f"flip-averaged: top-1 {100 * res['flip_top1']:.2f}%  top-5 {100 * res['flip_top5']:.2f}%")
    if classes.label_map is not None:
        note = (f"evaluated over the data's {len(classes.subset)} of the model's {cfg.num_classes} classes "
                "(predictions among those)" if classes.subset else "the data's classes are the model's in another "
                "order")
        print(f"note: classes matched by name; {note}")
    if res["k_used"]["top5"] < 5:
        print(f"note: {res['k_used']['top5']} classes are scored, so top-5 is top-{res['k_used']['top5']}")
    return 0


def run_eval_precision(model: str) -> tuple[str, str] | None:
    """(precision, where it comes from) when ``--model`` is a ``vitkit train`` run folder or a file in one (its
    model.safetensors, a checkpoints/step_N.pt): the precision the run evaluated in, from its summary.json, so that
    ``vitkit eval`` reproduces the run's own number by default. None for anything else."""
    from pathlib import Path

    p = Path(model)
    for folder in (p, p.parent, p.parent.parent):
        summary = folder / "summary.json"
        if (folder / "config.yaml").is_file() and summary.is_file():
            try:
                record = json.loads(summary.read_text())
                ran = record.get("eval_precision") or record.get("precision")
            except (OSError, ValueError, AttributeError):
                return None  # an unreadable summary: the default applies, as for any other file
            return (str(ran), f"the run's own, from {summary}") if ran else None
    return None

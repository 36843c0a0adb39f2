"""``vitkit eval``: top-1 / top-5 accuracy of a checkpoint on a data spec."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..evaluate.data import add_common_arguments

    p = sub.add_parser("eval", help="top-1 and top-5 accuracy on a data set")
    add_common_arguments(p)
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="data spec: digits, folder:PATH, wds:PATTERN, mnist:PATH, cifar:PATH")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")
    p.add_argument("--flip", action="store_true",
                   help="also score the mean logits of each image and its mirror image (flip_top1, flip_top5)")
    p.add_argument("--out", default=None, metavar="DIR", help="write DIR/eval.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_accuracy
    from ..evaluate.core import match_classes
    from ..evaluate.data import check_batch_size, load_for_inference, loader_stats, open_loader, report_skipped
    from .main import write_report

    check_batch_size(args.batch_size)
    model = load_for_inference(args.model, args.image_size)
    cfg = model.config
    h, w = cfg.image_size  # the model's, after --image-size resampled it
    loader, info, batches = open_loader(
        args.data, cfg, split=args.split, batch_size=args.batch_size, limit=args.limit,
        num_workers=args.num_workers, preprocess=args.preprocess,
    )
    if cfg.num_classes < 1:
        raise ValueError(f"{args.model}: the model has no classification head; use `vitkit fewshot` instead")
    try:
        classes = match_classes(cfg.class_names, getattr(info, "class_names", None), cfg.num_classes,
                                info.num_classes)
    except ValueError as e:
        raise ValueError(f"{args.data}: {e}") from None
    res = evaluate_accuracy(model, loader, precision=args.precision, device=args.device, total=batches,
                            flip=args.flip, classes=classes)
    res.update({"model": str(args.model), "data": args.data, "split": args.split, "image_size": [h, w],
                "precision": args.precision, "preprocess": loader.preprocess, "loader": loader_stats(loader),
                "classes": classes.as_dict(cfg.num_classes)})
    report_skipped(res["loader"], args.data)
    print(f"top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%  "
          f"({res['num_examples']} images at {h}x{w}, preprocessing {loader.preprocess})")
    if args.flip:
        print(f"flip-averaged: top-1 {100 * res['flip_top1']:.2f}%  top-5 {100 * res['flip_top5']:.2f}%")
    if classes.label_map is not None:
        note = (f"evaluated over the data's {len(classes.subset)} of the model's {cfg.num_classes} classes "
                "(predictions among those)" if classes.subset else "the data's classes are the model's in another "
                "order")
        print(f"note: classes matched by name; {note}")
    if res["k_used"]["top5"] < 5:
        print(f"note: {res['k_used']['top5']} classes are scored, so top-5 is top-{res['k_used']['top5']}")
    if args.out:
        write_report(args.out, "eval.json", res)
    return 0

"""``vitkit models``: the named models with parameter counts and GFLOPs; ``--pretrained``: the
official checkpoints (catalogue names for ``--model``, ``load_model`` and ``vitkit download``)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named models with parameters and GFLOPs")
    p.add_argument("--image-size", type=int, default=224, help="resolution for the FLOP count (default 224)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--filter", default="", help="only names containing this text")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--pretrained", action="store_true",
                   help="list the official checkpoints (resolution, pre-training / fine-tuning data, published "
                        "top-1, whether cached) instead")
    p.set_defaults(func=run)


def _pretrained(args: argparse.Namespace) -> int:
    from ..checkpoints.catalogue import list_entries
    from ..checkpoints.download import cache_dir, cache_path

    rows = []
    for e in list_entries():
        if args.filter.lower() not in e.name.lower() and args.filter.lower() not in e.model.lower():
            continue
        rows.append({**e.as_dict(), "cached": cache_path(e.url).is_file()})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    # The name last: AugReg names are ~110 characters long.
    print(f"{'model':<13}{'res':>4}  {'pre-training':<19}{'fine-tuning':<13}{'top-1':>7} {'cached':<7}name")
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}%"
        print(f"{r['model']:<13}{r['resolution'] or '?':>4}  {r['pretrain']:<19}{r['finetune'] or '-':<13}{acc:>7} "
              f"{'yes' if r['cached'] else '-':<7}{r['name']}")
    print(f"{len(rows)} checkpoints; top-1: ImageNet-2012 as published in google-research/vision_transformer's "
          "README. Other AugReg files: augreg/<file name> (naming scheme). Cache: "
          f"{cache_dir()} (VITKIT_CACHE); server: VITKIT_WEIGHTS_URL.")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _pretrained(args)
    from ..models import get_config, list_models
    from ..models.flops import count_flops, count_params

    rows = []
    for name in list_models():
        if args.filter.lower() not in name.lower():
            continue
        cfg = get_config(name, num_classes=args.num_classes, image_size=args.image_size)
        rows.append({
            "name": name,
            "params": count_params(cfg),
            "gflops": round(count_flops(cfg) / 1e9, 2),
            "tokens": cfg.num_tokens if cfg.transformer else None,
            "image_size": args.image_size,
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<22}{'params':>14}{'GFLOPs@' + str(args.image_size):>14}{'tokens':>8}")
    for r in rows:
        tok = "-" if r["tokens"] is None else str(r["tokens"])
        print(f"{r['name']:<22}{r['params']:>14,}{r['gflops']:>14.2f}{tok:>8}")
    return 0

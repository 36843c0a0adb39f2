"""``vitkit models``: the named models with parameter counts and GFLOPs."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named models with parameters and GFLOPs")
    p.add_argument("--image-size", type=int, default=224, help="resolution for the FLOP count (default 224)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--filter", default="", help="only names containing this text")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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

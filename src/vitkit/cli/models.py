"""``vitkit models``: the named models with parameter counts and GFLOPs; ``--pretrained``: the
official checkpoints (catalogue names for ``--model``, ``load_model`` and ``vitkit download``)."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from .common import add_command, add_image_size, add_json, positive_int, size_label


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "models", help="list the named models with parameters and GFLOPs",
                    description="The named architectures (for --model, create_model and model.name=) with their "
                                "parameters, GFLOPs and tokens per image; --pretrained: the official checkpoints.",
                    examples=["vitkit models --filter B_16 --image-size 384",
                              "vitkit models --pretrained --filter imagenet21k/",
                              "vitkit models --filter Ti_16 --json"])
    add_image_size(p, default=224, extra=" for the FLOP and token counts")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classes of the head (parameter count)")
    p.add_argument("--filter", default="", help="only names containing this text (case-insensitive); no match is "
                   "an error")
    add_json(p, what="the rows")
    p.add_argument("--pretrained", action="store_true",
                   help="list the official checkpoints (resolution, pre-training / fine-tuning data, published "
                        "top-1, whether cached; a cached file is re-hashed and its architecture compared) instead")
    p.set_defaults(func=run)


def _none_match(args: argparse.Namespace, names: list[str]) -> UserError:
    from ..errors import did_you_mean

    what = "official checkpoint" if args.pretrained else "model name"
    return UserError(f"--filter {args.filter!r}: no {what} contains it{did_you_mean(args.filter, names)}; "
                     f"`vitkit models{' --pretrained' if args.pretrained else ''}` lists them all")


def _pretrained(args: argparse.Namespace) -> int:
    from ..checkpoints.catalogue import list_entries
    from ..checkpoints.verify import check_entry_file
    from ..download import cache_dir, cache_path

    rows = []
    for e in list_entries():
        if args.filter.lower() not in e.name.lower() and args.filter.lower() not in e.model.lower():
            continue
        path = cache_path(e.official_url)  # where it is cached, whichever server (VITKIT_WEIGHTS_URL) it came from
        problem = check_entry_file(e, path) if path.is_file() else None  # re-hashed, architecture compared
        rows.append({**e.as_dict(), "cached": path.is_file(), "problem": problem})
    if not rows:
        raise _none_match(args, [e.name for e in list_entries()])
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    # The name last: AugReg names are ~110 characters long.
    print(f"{'model':<13}{'res':>4}  {'pre-training':<19}{'fine-tuning':<13}{'top-1':>7} {'cached':<7}name")
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}%"
        print(f"{r['model']:<13}{r['resolution'] or '?':>4}  {r['pretrain']:<19}{r['finetune'] or '-':<13}{acc:>7} "
              f"{('BAD' if r['problem'] else 'yes') if r['cached'] else '-':<7}{r['name']}")
    print(f"{len(rows)} checkpoints; top-1: ImageNet-2012 as published in google-research/vision_transformer's "
          "README. Other AugReg files: augreg/<file name> (naming scheme). Cache: "
          f"{cache_dir()} (VITKIT_CACHE); server: VITKIT_WEIGHTS_URL.")
    for r in rows:
        if r["problem"]:
            print(f"BAD: {r['problem']}")
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
    if not rows:
        raise _none_match(args, list_models())
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<22}{'params':>14}{'GFLOPs@' + size_label(args.image_size):>14}{'tokens':>8}")
    for r in rows:
        tok = "-" if r["tokens"] is None else str(r["tokens"])
        print(f"{r['name']:<22}{r['params']:>14,}{r['gflops']:>14.2f}{tok:>8}")
    return 0
